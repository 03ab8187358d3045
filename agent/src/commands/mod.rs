//! What the subcommands do, kept out of `main.rs` so that tests can call them.
//! One file per command family; `main.rs` only routes to them.

mod agent;
mod check;
#[cfg(feature = "sim")]
mod demo;
mod opcua;
mod read;
mod replay;
#[cfg(feature = "sim")]
mod sim;
mod spectrum;

pub use agent::*;
pub use check::*;
#[cfg(feature = "sim")]
pub use demo::*;
pub use opcua::*;
pub use read::*;
pub use replay::*;
#[cfg(feature = "sim")]
pub use sim::*;
pub use spectrum::*;

/// Process exit codes (documented in the README).
pub mod exit {
    pub const OK: u8 = 0;
    /// A runtime failure (cannot bind, cannot start).
    pub const FAILURE: u8 = 1;
    /// Wrong command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The configuration is invalid; every mistake was printed.
    pub const CONFIG: u8 = 3;
    /// `read` finished but at least one tag has no good value.
    pub const READ_INCOMPLETE: u8 = 4;
}
