//! [`Report`]: the typed records every stage emits, the one currency between the stages, the
//! outbox and the uplink.
//!
//! A report says what happened, never where it goes or how it is written: the outbox stores it
//! (see [`crate::store`], format version 3), and the uplink session's encoder
//! ([`crate::uplink::encode`]) decides its topic and bytes when it is sent. A configuration reload
//! that changes the topics therefore moves every record still queued as well.
//!
//! Invariants:
//! - a report's variant fixes its outbox [`Class`] (alerts first, events, then summaries);
//! - reports are stored with postcard, so a variant or a field is only ever added at the end; a
//!   change that old stored records cannot be read by needs a new store record version.

use std::time::SystemTime;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::decisions::lifecycle::Transition;
use crate::health::assess::Assessment;
use crate::production::line::{Downtime, LineReport};
use crate::quality::station::{Decision, PartDecision, QualityReport};
use crate::sample::{Quality, Value};
use crate::store::Class;

/// What a stage reports upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Report {
    /// One device's tags over one summary interval.
    TagSummary(TagSummary),
    /// One asset's condition.
    Assessment(Assessment),
    /// One change of one alert.
    AlertTransition(Transition),
    /// Something that happened to the agent (device up/down, start/stop, configuration, outbox).
    Event(Event),
    /// A production line's OEE and losses: the running report of a shift, or its closing one.
    Production(Box<LineReport>),
    /// A stop of a production line that was not a micro-stop, once it ended.
    Downtime(Downtime),
    /// One part's quality decision.
    Part(Box<PartDecision>),
    /// A quality station's figures over a report interval or a shift.
    Quality(Box<QualityReport>),
    /// One device's tags that changed beyond their deadband (Sparkplug report by exception).
    Changes(Box<DeviceChanges>),
}

impl Report {
    /// The outbox stream it travels in.
    pub fn class(&self) -> Class {
        match self {
            Report::AlertTransition(_) => Class::Alert,
            // A shift's closing report and its downtime are what the fleet side counts on: kept
            // like events when the outbox fills, before the running figures.
            Report::Event(_) | Report::Downtime(_) => Class::Event,
            Report::Production(report) if report.closing => Class::Event,
            // A part that was not passed is traceability the plant must keep; so is a shift.
            Report::Part(part) if part.decision != Decision::Pass => Class::Event,
            Report::Quality(report) if report.closing => Class::Event,
            Report::TagSummary(_)
            | Report::Assessment(_)
            | Report::Production(_)
            | Report::Part(_)
            | Report::Quality(_)
            | Report::Changes(_) => Class::Summary,
        }
    }

    /// Its short name: the envelope's `kind` in UNS JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Report::TagSummary(_) => "tags",
            Report::Assessment(_) => "health",
            Report::AlertTransition(_) => "alert",
            Report::Event(_) => "event",
            Report::Production(_) => "oee",
            Report::Downtime(_) => "downtime",
            Report::Part(_) => "part",
            Report::Quality(_) => "quality",
            Report::Changes(_) => "changes",
        }
    }
}

/// One device's tags that changed since they were last reported, in tag order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceChanges {
    pub device: String,
    pub changes: Vec<Change>,
}

/// A tag's new value (or its new quality: a bad sample is reported, never dropped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub tag: Arc<str>,
    pub at: SystemTime,
    pub value: Option<Value>,
    pub quality: Quality,
}

/// One device's tags over one interval, in name order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagSummary {
    pub device: String,
    /// Whether the device answered at the end of the interval; `None` before its first attempt.
    pub online: Option<bool>,
    pub from: SystemTime,
    pub to: SystemTime,
    pub tags: Vec<TagStats>,
}

/// One tag over one interval. `min`, `max` and `mean` cover the good, finite numeric samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TagStats {
    /// Shared with the summaries stage's own copy: a summary round allocates no names.
    pub name: Arc<str>,
    pub unit: Option<Arc<str>>,
    pub count: u32,
    /// Samples whose quality was not good.
    pub bad: u32,
    /// The worst quality seen; `None` when no sample came.
    pub worst: Option<Quality>,
    pub last: Option<Last>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

/// The last good value of a tag in a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Last {
    Value(Value),
    /// An array too long to carry whole (a waveform): its length only, so that one waveform tag
    /// cannot push its device's summary past the MQTT packet limit.
    ArrayLength(u32),
}

/// Arrays up to this many elements are carried whole in summaries.
pub const SUMMARY_ARRAY_LIMIT: usize = 256;

impl Last {
    pub fn of(value: &Value) -> Last {
        match value {
            Value::Array(items) if items.len() > SUMMARY_ARRAY_LIMIT => {
                Last::ArrayLength(u32::try_from(items.len()).unwrap_or(u32::MAX))
            }
            other => Last::Value(other.clone()),
        }
    }
}

/// An event of the agent: its name and details. The details are a JSON object (each event has
/// its own few fields, documented in the README), kept as text because the stored form is not
/// self-describing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub name: String,
    /// A JSON object (`{}` when there is nothing to add).
    pub detail: String,
}

impl Event {
    /// An event with `detail`'s fields (anything but an object adds none).
    pub fn new(name: &str, detail: serde_json::Value) -> Event {
        let detail = match detail {
            serde_json::Value::Object(fields) => serde_json::Value::Object(fields).to_string(),
            _ => "{}".to_string(),
        };
        Event {
            name: name.to_string(),
            detail,
        }
    }

    /// The details as JSON fields (none when they cannot be read).
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(&self.detail) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_report_has_its_class_and_name() {
        let event = Report::Event(Event::new(
            "device_down",
            serde_json::json!({"device": "plc"}),
        ));
        assert_eq!((event.class(), event.kind()), (Class::Event, "event"));
        let Report::Event(inner) = &event else {
            unreachable!()
        };
        assert_eq!(inner.fields()["device"], "plc");
        assert_eq!(
            Event::new("x", serde_json::json!(3)).fields(),
            serde_json::Map::new()
        );
    }

    #[test]
    fn long_arrays_are_summarised_by_their_length() {
        let short: Vec<Value> = (0..3).map(Value::U64).collect();
        assert_eq!(
            Last::of(&Value::Array(short.clone().into())),
            Last::Value(Value::Array(short.into()))
        );
        let long: Vec<Value> = (0..4096).map(Value::U64).collect();
        assert_eq!(
            Last::of(&Value::Array(long.into())),
            Last::ArrayLength(4096)
        );
    }
}
