//! Modbus TCP and RTU acquisition: request planning, register decoding, polling with timeouts,
//! backoff and per-device counters, and typed writes.

pub mod codec;
pub mod link;
pub mod plan;
pub mod poller;
pub mod write;

pub use link::{Data, Endpoint, Fault};
pub use poller::{lines, Line, Lines, PollEvent, Unit};
pub use write::DeviceWriter;
