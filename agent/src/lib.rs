//! millwright: the edge agent for industrial gateways. Everything testable lives in this library;
//! `main.rs` is a thin command-line front end.

pub mod allocator;
pub mod app;
pub mod backoff;
pub mod bus;
pub mod changes;
pub mod clock;
pub mod commands;
pub mod control;
pub mod decisions;
pub mod files;
pub mod health;
pub mod http;
pub mod liveness;
pub mod memory;
pub mod outputs;
pub mod pipeline;
pub mod production;
pub mod quality;
pub mod records;
pub mod replay;
pub mod reports;
pub mod sample;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sources;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod uplink;
pub mod vibration;
