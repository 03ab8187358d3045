//! Wire encoders: the one place that decides what a record looks like on the wire (its topic and
//! its bytes), and what the session's birth and last will say.
//!
//! Stages and the outbox deal in typed [`Report`](crate::records::Report)s; the uplink session asks
//! its encoder for each record's message when it sends it, so the topics in force are those of the
//! session, not those of the moment the record was made.

pub mod uns;

use std::time::SystemTime;

use crate::store::Record;

pub use uns::{timestamp, Topics, UnsJson, PAYLOAD_SCHEMA};

/// One MQTT publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Who this agent is, for births and wills.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent: String,
    pub version: String,
    pub config_hash: String,
}

/// A wire format.
pub trait Encoder: Send + Sync {
    /// Published first on every connection.
    fn birth(&self, identity: &Identity, now: SystemTime) -> Message;
    /// Left with the broker at connect, published by it when the connection is lost.
    fn will(&self, identity: &Identity, now: SystemTime) -> Message;
    /// Published on a clean shutdown, in place of the will.
    fn farewell(&self, identity: &Identity, now: SystemTime) -> Message;
    /// The message of a stored record.
    fn encode(&self, record: &Record, agent: &str) -> Message;
}
