//! Wire encoders: the one place that decides what a record looks like on the wire (its topics,
//! bytes and QoS), and what the session's births, will and farewell say.
//!
//! Stages and the outbox deal in typed [`Report`](crate::records::Report)s; the uplink session asks
//! its encoder for each record's messages when it sends it, so the topics in force are those of the
//! session, not those of the moment the record was made. An encoder may keep session state (the
//! Sparkplug sequence numbers, births, the primary host's state); the session calls it from one
//! task only.

pub mod sparkplug;
pub mod uns;

use std::time::SystemTime;

use rumqttc::QoS;

use crate::sample::Value;
use crate::store::Record;

pub use sparkplug::Sparkplug;
pub use uns::{timestamp, Topics, UnsJson, PAYLOAD_SCHEMA};

/// One MQTT publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub qos: QoS,
}

/// Who this agent is, for births and wills.
#[derive(Debug, Clone)]
pub struct Identity {
    pub agent: String,
    pub version: String,
    pub config_hash: String,
}

/// A write a host asked for, allowed by the configuration: the session carries it out and tells
/// the encoder how it went ([`Encoder::written`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TagWrite {
    /// The Modbus device's index in the plan (its writer's).
    pub device: usize,
    pub tag: firmware_config::Tag,
    pub value: Value,
}

/// What an incoming publish asked of the session.
#[derive(Debug, Default)]
pub struct Incoming {
    /// To publish (births after a rebirth request or the host's return, command results).
    pub publish: Vec<Message>,
    pub writes: Vec<TagWrite>,
    /// End the session (after the farewell) and connect again: the primary host went offline.
    pub reconnect: bool,
}

/// A wire format: one session's view of it.
pub trait Encoder: Send {
    /// Topic filters subscribed on every connection.
    fn subscriptions(&self) -> Vec<String>;
    /// The last will of the next connection; called once per connection attempt.
    fn will(&mut self, identity: &Identity, now: SystemTime) -> Message;
    /// Published first on every connection.
    fn connected(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message>;
    /// Whether records may be sent now (Sparkplug: not before the births).
    fn ready(&self) -> bool {
        true
    }
    /// The messages of a stored record; none when this format does not carry its kind.
    fn encode(&mut self, record: &Record, agent: &str) -> Vec<Message>;
    /// The topic a record is sent on, for logs and the dead letters.
    fn topic(&self, record: &Record) -> String;
    /// A publish on one of [`Encoder::subscriptions`].
    fn incoming(
        &mut self,
        _identity: &Identity,
        _topic: &str,
        _payload: &[u8],
        _now: SystemTime,
    ) -> Incoming {
        Incoming::default()
    }
    /// Called about once a second: what changed meanwhile (devices that went down or came back).
    fn tick(&mut self, _now: SystemTime) -> Vec<Message> {
        Vec::new()
    }
    /// How a write asked for by [`Encoder::incoming`] went.
    fn written(
        &mut self,
        _write: &TagWrite,
        _result: Result<(), String>,
        _now: SystemTime,
    ) -> Vec<Message> {
        Vec::new()
    }
    /// Published on a clean shutdown, in place of the will.
    fn farewell(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message>;
}

/// UNS JSON and Sparkplug B over one connection. The will is Sparkplug's NDEATH (a connection has
/// one will, and Sparkplug hosts depend on theirs); each record's Sparkplug messages go before its
/// UNS message, whose PUBACK then also confirms them.
pub struct Both {
    pub uns: UnsJson,
    pub sparkplug: Sparkplug,
}

impl Encoder for Both {
    fn subscriptions(&self) -> Vec<String> {
        let mut all = self.uns.subscriptions();
        all.extend(self.sparkplug.subscriptions());
        all
    }

    fn will(&mut self, identity: &Identity, now: SystemTime) -> Message {
        self.sparkplug.will(identity, now)
    }

    fn connected(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message> {
        let mut out = self.uns.connected(identity, now);
        out.extend(self.sparkplug.connected(identity, now));
        out
    }

    fn ready(&self) -> bool {
        self.sparkplug.ready()
    }

    fn encode(&mut self, record: &Record, agent: &str) -> Vec<Message> {
        let mut out = self.sparkplug.encode(record, agent);
        out.extend(Encoder::encode(&mut self.uns, record, agent));
        out
    }

    fn topic(&self, record: &Record) -> String {
        self.uns.topic(record)
    }

    fn incoming(
        &mut self,
        identity: &Identity,
        topic: &str,
        payload: &[u8],
        now: SystemTime,
    ) -> Incoming {
        self.sparkplug.incoming(identity, topic, payload, now)
    }

    fn tick(&mut self, now: SystemTime) -> Vec<Message> {
        self.sparkplug.tick(now)
    }

    fn written(
        &mut self,
        write: &TagWrite,
        result: Result<(), String>,
        now: SystemTime,
    ) -> Vec<Message> {
        self.sparkplug.written(write, result, now)
    }

    fn farewell(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message> {
        let mut out = self.sparkplug.farewell(identity, now);
        out.push(self.uns.farewell(identity, now));
        out
    }
}
