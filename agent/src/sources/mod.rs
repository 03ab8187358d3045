//! Acquisition: protocol clients that turn devices into [`Sample`](crate::sample::Sample)s.

pub mod modbus;
