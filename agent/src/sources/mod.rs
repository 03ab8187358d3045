//! Acquisition: protocol clients that turn devices into [`Sample`](crate::sample::Sample)s.

pub mod folder;
pub mod iio;
pub mod modbus;
pub mod opcua;
pub mod recordings;
pub mod stats;

pub use stats::{DeviceStats, StatsSnapshot};
