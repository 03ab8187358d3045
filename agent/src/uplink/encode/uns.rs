//! UNS JSON: one topic per device, asset and agent under `{enterprise}/{site}/{area}/{line}`, each
//! record in the envelope `{"schema":1,"id":…,"kind":…,"agent":…,"time":…,"data":…}` (documented
//! field by field in the README's payload section).
//!
//! Records stored by releases before typed records ([`Payload::Raw`]) keep the topic and body they
//! were stored with, so an upgraded agent sends them exactly as the old one would have.

use std::time::SystemTime;

use rumqttc::QoS;
use serde::Serialize;
use serde_json::{json, value::RawValue};

use super::{Encoder, Identity, Message};
use crate::decisions::lifecycle::{Origin, State, Transition};
use crate::records::{Event, Last, Report, TagStats, TagSummary};
use crate::sample::{Quality, Value};
use crate::status::AlertStatus;
use crate::store::{Payload, Record};

/// Version of every JSON payload the agent publishes; bumped on incompatible changes.
pub const PAYLOAD_SCHEMA: u32 = 1;

/// RFC 3339 UTC with milliseconds, the one timestamp format of every payload.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// The topic layout: `{enterprise}/{site}/{area}/{line}` then the asset, device or agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    agent: String,
}

impl Topics {
    pub fn new(prefix: &str, agent: &str) -> Topics {
        Topics {
            prefix: prefix.to_string(),
            agent: agent.to_string(),
        }
    }

    /// Per-device tag summaries.
    pub fn tags(&self, device: &str) -> String {
        format!("{}/{device}/tags", self.prefix)
    }

    /// Per-asset assessments.
    pub fn health(&self, asset: &str) -> String {
        format!("{}/{asset}/health", self.prefix)
    }

    /// Per-asset (or per-tag) alerts; the agent's own health alerts on the agent's.
    pub fn alert(&self, source: &str) -> String {
        format!("{}/{source}/alert", self.prefix)
    }

    /// The agent's events (device up/down, start/stop, configuration, outbox).
    pub fn events(&self) -> String {
        format!("{}/{}/events", self.prefix, self.agent)
    }

    /// Retained birth (`online`) and last will (`offline`).
    pub fn status(&self) -> String {
        format!("{}/{}/status", self.prefix, self.agent)
    }

    pub fn commands(&self) -> String {
        format!("{}/{}/cmd/#", self.prefix, self.agent)
    }

    /// The command name of a topic under [`Topics::commands`].
    pub fn command_name<'t>(&self, topic: &'t str) -> Option<&'t str> {
        topic
            .strip_prefix(&self.prefix)?
            .strip_prefix('/')?
            .strip_prefix(&self.agent)?
            .strip_prefix("/cmd/")
    }

    pub fn reply(&self, command: &str) -> String {
        format!("{}/{}/reply/{command}", self.prefix, self.agent)
    }

    /// The topic of a report.
    pub fn of(&self, report: &Report) -> String {
        match report {
            Report::TagSummary(summary) => self.tags(&summary.device),
            Report::Assessment(assessment) => self.health(&assessment.asset),
            Report::AlertTransition(transition) => {
                let alert = &transition.alert;
                if alert.origin == Origin::Health {
                    self.alert(&self.agent)
                } else {
                    self.alert(&alert.source)
                }
            }
            Report::Event(_) => self.events(),
            Report::Production(report) => format!("{}/{}/oee", self.prefix, report.line),
            Report::Downtime(downtime) => format!("{}/{}/downtime", self.prefix, downtime.line),
            Report::Part(part) => format!("{}/{}/part", self.prefix, part.station),
            Report::Quality(report) => format!("{}/{}/quality", self.prefix, report.station),
            Report::Changes(changes) => format!("{}/{}/changes", self.prefix, changes.device),
        }
    }
}

/// The UNS JSON encoder of one agent's topics.
#[derive(Debug, Clone)]
pub struct UnsJson {
    pub topics: Topics,
}

impl UnsJson {
    fn status(
        &self,
        identity: &Identity,
        status: &str,
        reason: Option<&str>,
        now: SystemTime,
    ) -> Message {
        let payload = json!({
            "schema": PAYLOAD_SCHEMA,
            "status": status,
            "agent": identity.agent,
            "version": identity.version,
            "config_hash": identity.config_hash,
            "reason": reason,
            "time": timestamp(now),
        });
        Message {
            topic: self.topics.status(),
            payload: payload.to_string().into_bytes(),
            retain: true,
            qos: QoS::AtLeastOnce,
        }
    }
}

impl UnsJson {
    /// The retained `online` status.
    pub fn birth(&self, identity: &Identity, now: SystemTime) -> Message {
        self.status(identity, "online", None, now)
    }

    /// The retained `offline` status the broker publishes when the connection is lost.
    pub fn will(&self, identity: &Identity, now: SystemTime) -> Message {
        self.status(identity, "offline", Some("connection lost"), now)
    }

    /// The retained `offline` status of a clean shutdown.
    pub fn farewell(&self, identity: &Identity, now: SystemTime) -> Message {
        self.status(identity, "offline", Some("shutdown"), now)
    }

    /// A record's message; `None` for what UNS does not carry (Sparkplug's changes).
    pub fn encode(&self, record: &Record, agent: &str) -> Option<Message> {
        let (topic, data) = match &record.payload {
            Payload::Report(Report::Changes(_)) => return None,
            Payload::Report(report) => (self.topics.of(report), data(report)),
            Payload::Raw { topic, body, .. } => (topic.clone(), raw_data(body)),
        };
        Some(Message {
            topic,
            payload: envelope(record, agent, &data),
            retain: false,
            qos: QoS::AtLeastOnce,
        })
    }
}

impl Encoder for UnsJson {
    fn subscriptions(&self) -> Vec<String> {
        vec![self.topics.commands()]
    }

    fn will(&mut self, identity: &Identity, now: SystemTime) -> Message {
        UnsJson::will(self, identity, now)
    }

    fn connected(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message> {
        vec![self.birth(identity, now)]
    }

    fn encode(&mut self, record: &Record, agent: &str) -> Vec<Message> {
        UnsJson::encode(self, record, agent).into_iter().collect()
    }

    fn topic(&self, record: &Record) -> String {
        match &record.payload {
            Payload::Report(report) => self.topics.of(report),
            Payload::Raw { topic, .. } => topic.clone(),
        }
    }

    fn farewell(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message> {
        vec![UnsJson::farewell(self, identity, now)]
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    schema: u32,
    id: u64,
    kind: &'a str,
    agent: &'a str,
    time: String,
}

/// The published form of a record around its `data`, which is JSON text: this encoder's own
/// serialization, or a stored body [`raw_data`] checked. `data` goes last, appended as it is,
/// rather than parsed again to be embedded (at 1,000 tags a second that parse was a tenth of the
/// agent's CPU).
fn envelope(record: &Record, agent: &str, data: &str) -> Vec<u8> {
    let head = Envelope {
        schema: PAYLOAD_SCHEMA,
        id: record.id,
        kind: record.payload.kind(),
        agent,
        time: timestamp(record.created()),
    };
    let Ok(mut out) = serde_json::to_vec(&head) else {
        return Vec::new();
    };
    out.pop(); // the closing brace
    out.reserve(data.len() + 10);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    out
}

/// A stored body as `data`: as it is when it is JSON, else (never written by this agent) as a
/// string rather than lost.
fn raw_data(body: &[u8]) -> String {
    match std::str::from_utf8(body) {
        Ok(text) if serde_json::from_str::<&RawValue>(text).is_ok() => text.to_string(),
        _ => json!(String::from_utf8_lossy(body)).to_string(),
    }
}

/// A report's `data` (JSON text). An assessment keeps its fields in their declared order.
pub fn data(report: &Report) -> String {
    match report {
        Report::TagSummary(summary) => summary_json(summary),
        Report::Assessment(assessment) => serde_json::to_string(assessment).unwrap_or_default(),
        Report::AlertTransition(transition) => transition_json(transition).to_string(),
        Report::Event(event) => event_json(event).to_string(),
        Report::Production(report) => production_json(report).to_string(),
        Report::Downtime(downtime) => downtime_json(downtime).to_string(),
        Report::Part(part) => part_json(part).to_string(),
        Report::Quality(report) => quality_json(report).to_string(),
        Report::Changes(changes) => serde_json::to_string(changes).unwrap_or_default(),
    }
}

/// A number for JSON: NaN and infinities (not JSON) as null, rounded to what is meaningful.
fn number(v: f64, decimals: i32) -> serde_json::Value {
    let scale = 10f64.powi(decimals);
    if v.is_finite() {
        json!((v * scale).round() / scale)
    } else {
        serde_json::Value::Null
    }
}

fn fraction(v: Option<f64>) -> serde_json::Value {
    v.map_or(serde_json::Value::Null, |v| number(v, 4))
}

fn part_json(p: &crate::quality::station::PartDecision) -> serde_json::Value {
    let values: serde_json::Map<String, serde_json::Value> = p
        .values
        .iter()
        .map(|(name, v)| {
            (
                name.clone(),
                v.map_or(serde_json::Value::Null, |v| number(v, 6)),
            )
        })
        .collect();
    json!({
        "station": p.station,
        "part_id": p.part_id,
        "time": timestamp(p.at),
        "values": values,
        "score": number(p.score, 4),
        "types": p.types,
        "decision": p.decision.name(),
        "action_required": p.decision.action(),
        "violations": p.violations,
        "model_score": p.model_score.map(|s| number(s, 4)),
        "image": p.image,
        "image_score": p.image_score.map(|s| number(s, 4)),
    })
}

pub fn quality_json(r: &crate::quality::station::QualityReport) -> serde_json::Value {
    let optional =
        |v: Option<f64>, decimals| v.map_or(serde_json::Value::Null, |v| number(v, decimals));
    let characteristics: serde_json::Map<String, serde_json::Value> = r
        .characteristics
        .iter()
        .map(|c| {
            let violations: serde_json::Map<String, serde_json::Value> =
                c.violations.iter().map(|(rule, n)| (rule.clone(), json!(n))).collect();
            let figures = json!({
                "unit": c.unit,
                "n": c.n,
                "mean": optional(c.mean, 6),
                "sigma_within": optional(c.sigma_within, 6),
                "sigma_overall": optional(c.sigma_overall, 6),
                "cp": optional(c.capability.cp, 3),
                "cpk": optional(c.capability.cpk, 3),
                "pp": optional(c.capability.pp, 3),
                "ppk": optional(c.capability.ppk, 3),
                "limits": c.limits.map(|l| json!({ "center": number(l.center, 6), "sigma": number(l.sigma, 6) })),
                "violations": violations,
            });
            (c.name.clone(), figures)
        })
        .collect();
    json!({
        "station": r.station,
        "line": r.line,
        "shift": r.shift,
        "closing": r.closing,
        "from": timestamp(r.from),
        "to": timestamp(r.to),
        "parts": r.parts,
        "pass": r.pass,
        "review": r.review,
        "reject": r.reject,
        "missed": r.missed,
        "unmatched_images": r.unmatched_images,
        "reject_rate": fraction(r.reject_rate()),
        "mean_score": fraction(r.mean_score),
        "characteristics": characteristics,
    })
}

fn production_json(r: &crate::production::line::LineReport) -> serde_json::Value {
    let (t, f) = (&r.tally, &r.figures);
    let breakdowns: f64 = t.breakdowns.values().sum();
    let losses: Vec<serde_json::Value> = f
        .losses
        .iter()
        .map(|l| {
            json!({
                "category": l.category.name(),
                "reason": l.reason,
                "seconds": number(l.seconds, 1),
                "estimated_improvement": number(l.oee_points, 2),
            })
        })
        .collect();
    let materials: serde_json::Map<String, serde_json::Value> = t
        .materials
        .iter()
        .map(|(name, amount)| {
            let per_good = f.material_per_good_unit.get(name).copied();
            (name.clone(), json!({ "amount": number(*amount, 3), "per_good_unit": per_good.map(|v| number(v, 6)) }))
        })
        .collect();
    json!({
        "line": r.line,
        "shift": r.shift,
        "shift_start": timestamp(r.shift_start),
        "shift_end": timestamp(r.shift_end),
        "closing": r.closing,
        "state": r.state.map(|s| s.name()),
        "product": r.product,
        "times": {
            "planned_busy_time": number(f.planned_busy_time, 1),
            "actual_production_time": number(f.actual_production_time, 1),
            "running": number(t.running, 1),
            "micro_stops": number(t.micro_stops, 1),
            "unplanned_downtime": number(f.unplanned_downtime, 1),
            "breakdowns": number(breakdowns, 1),
            "setup": number(t.setup, 1),
            "planned_downtime": number(f.planned_downtime, 1),
            "unaccounted": number(t.unaccounted, 1),
        },
        "parts": {
            "total": number(f.total, 3),
            "good": number(f.good, 3),
            "reject": number(f.reject, 3),
            "startup_rejects": number(f.startup_rejects, 3),
        },
        "availability": fraction(f.availability),
        "performance": fraction(f.performance),
        "quality": fraction(f.quality),
        "oee": fraction(f.oee),
        "throughput_per_hour": f.throughput_per_hour.map(|v| number(v, 1)),
        "energy_kwh": t.energy_kwh.map(|v| number(v, 3)),
        "energy_per_good_unit": f.energy_per_good_unit.map(|v| number(v, 6)),
        "materials": materials,
        "losses": losses,
        "recommendation": r.recommendation,
        "counter_anomalies": t.anomalies,
    })
}

fn downtime_json(d: &crate::production::line::Downtime) -> serde_json::Value {
    json!({
        "line": d.line,
        "state": d.state.name(),
        "reason": d.reason,
        "start": timestamp(d.start),
        "end": timestamp(d.end),
        "seconds": number(d.seconds, 1),
        "category": d.category.map(|c| c.name()),
    })
}

/// The quality's short name in payloads.
pub fn quality_code(quality: Quality) -> &'static str {
    match quality {
        Quality::Good => "good",
        Quality::Uncertain(_) => "uncertain",
        Quality::Bad(_) => "bad",
        Quality::Stale => "stale",
        Quality::Exception(_) => "exception",
        Quality::Malformed => "malformed",
        Quality::Timeout => "timeout",
        Quality::Transport => "transport",
    }
}

/// A value as JSON: a DateTime as RFC 3339 text, an array as an array; NaN and infinities (not
/// JSON) as null.
struct ValueJson<'a>(&'a Value);

impl Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::I64(v) => serializer.serialize_i64(*v),
            Value::U64(v) => serializer.serialize_u64(*v),
            Value::F64(v) => serializer.serialize_f64(*v),
            Value::Text(s) => serializer.serialize_str(s),
            Value::Time(t) => serializer.serialize_str(&timestamp(*t)),
            Value::Array(items) => serializer.collect_seq(items.iter().map(ValueJson)),
        }
    }
}

/// A summary's `data`. Written by hand around serde_json's values: the object keys are constants
/// that need no escaping, and a derived `Serialize` escaped nine of them per tag, which was a
/// third of the agent's instructions at 1,000 tags a second. The keys are in alphabetical order,
/// the order the release before typed records had (consumers may have compared bytes).
fn summary_json(summary: &TagSummary) -> String {
    let mut out = Vec::with_capacity(96 + 128 * summary.tags.len());
    out.extend_from_slice(b"{\"device\":");
    json_str(&mut out, &summary.device);
    out.extend_from_slice(b",\"from\":");
    json_str(&mut out, &timestamp(summary.from));
    out.extend_from_slice(b",\"online\":");
    json(&mut out, &summary.online);
    out.extend_from_slice(b",\"tags\":{");
    // The summaries stage writes them in name order; older records may not be.
    let mut sorted: Vec<&TagStats> = summary.tags.iter().collect();
    if !summary.tags.is_sorted_by(|a, b| a.name < b.name) {
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|a, b| a.name == b.name);
    }
    for (i, stats) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(&mut out, &stats.name);
        out.push(b':');
        tag_json(&mut out, stats);
    }
    out.extend_from_slice(b"},\"to\":");
    json_str(&mut out, &timestamp(summary.to));
    out.push(b'}');
    // Only whole strings and serde_json's output went in: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// One tag of a summary (see [`summary_json`]).
fn tag_json(out: &mut Vec<u8>, stats: &TagStats) {
    let (exception_code, status_code) = match stats.worst {
        Some(Quality::Exception(code)) => (Some(code), None),
        Some(Quality::Uncertain(code) | Quality::Bad(code)) => (None, Some(code)),
        _ => (None, None),
    };
    out.extend_from_slice(b"{\"bad\":");
    json(out, &stats.bad);
    out.extend_from_slice(b",\"count\":");
    json(out, &stats.count);
    if let Some(code) = exception_code {
        out.extend_from_slice(b",\"exception_code\":");
        json(out, &code);
    }
    out.extend_from_slice(b",\"last\":");
    match &stats.last {
        Some(Last::Value(value)) => json(out, &ValueJson(value)),
        Some(Last::ArrayLength(length)) => {
            out.extend_from_slice(b"{\"array_length\":");
            json(out, length);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"max\":");
    json(out, &stats.max);
    out.extend_from_slice(b",\"mean\":");
    json(out, &stats.mean);
    out.extend_from_slice(b",\"min\":");
    json(out, &stats.min);
    out.extend_from_slice(b",\"quality\":\"");
    out.extend_from_slice(stats.worst.map_or("none", quality_code).as_bytes());
    out.push(b'"');
    if let Some(code) = status_code {
        out.extend_from_slice(b",\"status\":");
        json_str(out, &crate::sample::status_name(code));
        out.extend_from_slice(b",\"status_code\":");
        json(out, &code);
    }
    if let Some(unit) = &stats.unit {
        out.extend_from_slice(b",\"unit\":");
        json_str(out, unit);
    }
    out.push(b'}');
}

/// A value as serde_json writes it (numbers, `null` for `None` and for NaN and infinities).
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing to a Vec cannot fail, and these values serialise without error.
    let _ = serde_json::to_writer(out, value);
}

/// A JSON string. Names and units rarely hold anything to escape: those are copied as they are,
/// anything else goes through serde_json's escaping.
fn json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        json(out, text);
    }
}

fn event_json(event: &Event) -> serde_json::Value {
    let mut body = serde_json::Map::new();
    body.insert("event".into(), json!(event.name));
    body.extend(event.fields());
    serde_json::Value::Object(body)
}

/// The name of an alert state in payloads (`normal` once it is back to normal).
pub fn state_name(state: Option<State>) -> &'static str {
    match state {
        None => "normal",
        Some(State::ActiveUnacknowledged) => "active_unacknowledged",
        Some(State::ActiveAcknowledged) => "active_acknowledged",
        Some(State::ClearedUnacknowledged) => "cleared_unacknowledged",
    }
}

fn transition_json(transition: &Transition) -> serde_json::Value {
    let mut body = serde_json::to_value(AlertStatus::of(&transition.alert)).unwrap_or_default();
    body["state"] = json!(state_name(transition.state));
    body["transition"] = json!(transition.change);
    body["at"] = json!(timestamp(transition.at));
    if let Some(by) = &transition.by {
        body["by"] = json!(by);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Class;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    fn record(id: u64, report: Report) -> Record {
        Record {
            id,
            class: report.class(),
            created_ms: 1_700_000_020_000,
            payload: Payload::Report(report),
        }
    }

    #[test]
    fn topics_follow_the_namespace() {
        let topics = Topics::new("acme/plant1/packaging/line3", "gw-1");
        assert_eq!(topics.tags("plc"), "acme/plant1/packaging/line3/plc/tags");
        assert_eq!(
            topics.health("P-1"),
            "acme/plant1/packaging/line3/P-1/health"
        );
        assert_eq!(topics.status(), "acme/plant1/packaging/line3/gw-1/status");
        assert_eq!(topics.commands(), "acme/plant1/packaging/line3/gw-1/cmd/#");
        assert_eq!(
            topics.command_name("acme/plant1/packaging/line3/gw-1/cmd/ack-alert"),
            Some("ack-alert")
        );
        assert_eq!(
            topics.command_name("acme/plant1/packaging/line3/gw-2/cmd/x"),
            None
        );
        assert_eq!(
            topics.reply("status"),
            "acme/plant1/packaging/line3/gw-1/reply/status"
        );
    }

    /// The exact bytes the release before typed records published for the same summary.
    #[test]
    fn a_typed_summary_is_published_byte_for_byte_as_before() {
        let uns = UnsJson {
            topics: Topics::new("e/s/a/l", "gw"),
        };
        let summary = TagSummary {
            device: "plc".into(),
            online: Some(true),
            from: at(1_700_000_010),
            to: at(1_700_000_020),
            tags: vec![
                TagStats {
                    name: "speed".into(),
                    unit: Some("rpm".into()),
                    count: 4,
                    bad: 1,
                    worst: Some(Quality::Exception(2)),
                    last: Some(Last::Value(Value::F64(5.0))),
                    min: Some(1.0),
                    max: Some(5.0),
                    mean: Some(3.0),
                },
                TagStats {
                    name: "wave".into(),
                    unit: None,
                    count: 0,
                    bad: 0,
                    worst: None,
                    last: Some(Last::ArrayLength(4096)),
                    min: None,
                    max: None,
                    mean: None,
                },
            ],
        };
        let message = uns
            .encode(&record(7, Report::TagSummary(summary)), "gw")
            .expect("a message");
        assert_eq!(message.topic, "e/s/a/l/plc/tags");
        assert!(!message.retain);
        assert_eq!(
            String::from_utf8(message.payload).expect("utf-8"),
            r#"{"schema":1,"id":7,"kind":"tags","agent":"gw","time":"2023-11-14T22:13:40.000Z","data":{"device":"plc","from":"2023-11-14T22:13:30.000Z","online":true,"tags":{"speed":{"bad":1,"count":4,"exception_code":2,"last":5.0,"max":5.0,"mean":3.0,"min":1.0,"quality":"exception","unit":"rpm"},"wave":{"bad":0,"count":0,"last":{"array_length":4096},"max":null,"mean":null,"min":null,"quality":"none"}},"to":"2023-11-14T22:13:40.000Z"}}"#
        );
        let event = Report::Event(Event::new("device_down", json!({"device": "plc"})));
        let message = uns.encode(&record(8, event), "gw").expect("a message");
        assert_eq!(message.topic, "e/s/a/l/gw/events");
        assert_eq!(
            String::from_utf8(message.payload).expect("utf-8"),
            r#"{"schema":1,"id":8,"kind":"event","agent":"gw","time":"2023-11-14T22:13:40.000Z","data":{"device":"plc","event":"device_down"}}"#
        );
    }

    /// What needs escaping is escaped, what is out of order is sorted and deduplicated, and a
    /// number JSON cannot hold is null: the hand-written summary is the JSON a parser reads back.
    #[test]
    fn a_summary_with_awkward_names_and_values_is_valid_json() {
        let stats = |name: &str, unit: Option<&str>, worst, last, mean| TagStats {
            name: name.into(),
            unit: unit.map(Into::into),
            count: 2,
            bad: 1,
            worst,
            last,
            min: Some(-1.5),
            max: Some(2e21),
            mean,
        };
        let summary = TagSummary {
            device: "line \"3\"".into(),
            online: None,
            from: at(1_700_000_010),
            to: at(1_700_000_020),
            tags: vec![
                stats(
                    "z\\tag\u{1}",
                    Some("°C"),
                    Some(Quality::Uncertain(0x4092_0000)),
                    Some(Last::Value(Value::Text("say \"hi\"\n".into()))),
                    Some(f64::NAN),
                ),
                stats("a", None, Some(Quality::Good), None, Some(0.25)),
                stats("a", None, None, None, None),
            ],
        };
        let text = data(&Report::TagSummary(summary));
        let parsed: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let status = crate::sample::status_name(0x4092_0000);
        assert_eq!(
            parsed,
            json!({
                "device": "line \"3\"",
                "from": "2023-11-14T22:13:30.000Z",
                "online": null,
                "tags": {
                    "a": {"bad": 1, "count": 2, "last": null, "max": 2e21, "mean": 0.25,
                          "min": -1.5, "quality": "good"},
                    "z\\tag\u{1}": {"bad": 1, "count": 2, "last": "say \"hi\"\n", "max": 2e21,
                                 "mean": null, "min": -1.5, "quality": "uncertain",
                                 "status": status, "status_code": 0x4092_0000_u32, "unit": "°C"},
                },
                "to": "2023-11-14T22:13:40.000Z",
            })
        );
        assert_eq!(
            text.matches("\"a\":").count(),
            1,
            "one entry per name: {text}"
        );
    }

    #[test]
    fn an_alert_transition_is_published_byte_for_byte_as_before() {
        use crate::decisions::lifecycle::{Book, Condition};
        let uns = UnsJson {
            topics: Topics::new("e/s/a/l", "gw"),
        };
        let mut book = Book::default();
        let raised = book
            .condition(
                Condition {
                    id: "temp/hi".into(),
                    source: "temp".into(),
                    origin: Origin::Limit,
                    severity: firmware_config::Severity::Medium,
                    latching: false,
                    active: true,
                    value: Some(81.5),
                    reason: "temp 81.5°C above hi limit 80°C".into(),
                },
                at(1_700_000_000),
            )
            .expect("raised");
        let message = uns
            .encode(&record(9, Report::AlertTransition(raised)), "gw")
            .expect("a message");
        assert_eq!(message.topic, "e/s/a/l/temp/alert");
        assert_eq!(
            String::from_utf8(message.payload).expect("utf-8"),
            r#"{"schema":1,"id":9,"kind":"alert","agent":"gw","time":"2023-11-14T22:13:40.000Z","data":{"acknowledged_by":null,"alert_id":"temp/hi","at":"2023-11-14T22:13:20.000Z","origin":"limit","raised":"2023-11-14T22:13:20.000Z","reason":"temp 81.5°C above hi limit 80°C","severity":"medium","shelved_until":null,"source":"temp","state":"active_unacknowledged","transition":"raised","value":81.5}}"#
        );
    }

    #[test]
    fn raw_records_keep_their_topic_and_a_body_that_is_not_json_becomes_a_string() {
        let uns = UnsJson {
            topics: Topics::new("new/prefix", "gw"),
        };
        let raw = |body: &[u8]| Record {
            id: 3,
            class: Class::Alert,
            created_ms: 1_700_000_003_000,
            payload: Payload::Raw {
                topic: "old/prefix/P-1/alert".into(),
                kind: "alert".into(),
                body: body.to_vec(),
            },
        };
        let message = uns.encode(&raw(br#"{"n":3}"#), "gw-1").expect("a message");
        assert_eq!(message.topic, "old/prefix/P-1/alert");
        assert_eq!(
            message.payload,
            br#"{"schema":1,"id":3,"kind":"alert","agent":"gw-1","time":"2023-11-14T22:13:23.000Z","data":{"n":3}}"#
        );
        let message = uns
            .encode(&raw(b"\xffnot json"), "gw-1")
            .expect("a message");
        let json: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
        assert_eq!(json["data"], "\u{fffd}not json");
    }

    #[test]
    fn birth_will_and_farewell_share_the_retained_status_topic() {
        let uns = UnsJson {
            topics: Topics::new("e/s/a/l", "gw"),
        };
        let identity = Identity {
            agent: "gw".into(),
            version: "1.2.3".into(),
            config_hash: "abcd".into(),
        };
        let now = at(1_700_000_000);
        for (message, status, reason) in [
            (uns.birth(&identity, now), "online", serde_json::Value::Null),
            (
                uns.will(&identity, now),
                "offline",
                json!("connection lost"),
            ),
            (uns.farewell(&identity, now), "offline", json!("shutdown")),
        ] {
            assert_eq!(message.topic, "e/s/a/l/gw/status");
            assert!(message.retain);
            let json: serde_json::Value = serde_json::from_slice(&message.payload).expect("json");
            assert_eq!(json["status"], status);
            assert_eq!(json["reason"], reason);
            assert_eq!(json["time"], "2023-11-14T22:13:20.000Z");
            assert_eq!(json["config_hash"], "abcd");
        }
    }
}
