//! Sparkplug B 3.0: the gateway is the edge node `spBv1.0/{group}/…/{edge_node}`, and each Modbus
//! device, OPC UA endpoint, asset, production line and quality station is one of its devices.
//!
//! Invariants (each has a test below or in `tests/tests/sparkplug.rs`):
//! - **bdSeq.** Every connection attempt takes the next `bdSeq` (0–255, wrapping), saved to
//!   `data_dir/sparkplug/bdseq.json` (write, fsync, rename) *before* the connection is attempted;
//!   the will (NDEATH, QoS 1, not retained) and the NBIRTHs of that connection carry it. A restart
//!   or a power cut therefore never reuses a value a host has seen.
//! - **seq.** NBIRTH carries `seq` 0; every later NDATA/DBIRTH/DDATA/DDEATH the next, wrapping
//!   at 255. NDEATH carries none.
//! - **Births first.** Nothing but births goes out before the NBIRTH of the connection, and a
//!   device's DDATA only after its DBIRTH (sent just before, when the device had none in force).
//!   With a primary host configured, the NBIRTH waits for its STATE to say online; a STATE saying
//!   offline (not older than the last online) ends the session with an NDEATH and a new one begins,
//!   which again waits. Records stay in the outbox meanwhile.
//! - **History is marked.** A record made before the connection's NBIRTH (held while the broker
//!   or the host was away) is sent with every metric `is_historical = true` and its own
//!   timestamps, after the births.
//! - **Aliases** come from the configuration alone ([`catalog`]); births carry names, aliases,
//!   datatypes and current values; DDATA carries aliases only.
//! - **Writes only where allowed.** A DCMD reaches a tag only when `[mqtt.sparkplug] writable`
//!   names it; anything else is refused, logged, and answered with `Command/Result`.

pub mod catalog;
pub mod proto;
pub mod values;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prost::Message as _;
use rumqttc::QoS;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{Encoder, Identity, Incoming, Message, TagWrite};
use crate::records::Report;
use crate::sample::{Quality, TagId, Value};
use crate::sources::DeviceStats;
use crate::store::{Payload as Stored, Record};
use catalog::{Catalog, DeviceKind, Origin};
use proto::{DataType, Metric, MetricValue, Payload, PropertySet, PropertyValueKind};

/// The Sparkplug B topic namespace.
pub const NAMESPACE: &str = "spBv1.0";

/// A value as the node last knew it.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub value: Option<Value>,
    pub quality: Quality,
    pub at: SystemTime,
}

/// The latest value of every tag, kept by the changes stage for births (which carry current
/// values, whatever is still queued).
#[derive(Debug, Default)]
pub struct LiveTags {
    tags: Mutex<Vec<Option<Current>>>,
}

impl LiveTags {
    pub fn new(tags: usize) -> Arc<LiveTags> {
        Arc::new(LiveTags {
            tags: Mutex::new(vec![None; tags]),
        })
    }

    /// Records the latest values.
    pub fn update(&self, latest: impl IntoIterator<Item = (TagId, Current)>) {
        let mut tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        for (TagId(id), current) in latest {
            if let Some(slot) = tags.get_mut(id as usize) {
                *slot = Some(current);
            }
        }
    }

    fn get(&self, TagId(id): TagId) -> Option<Current> {
        let tags = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        tags.get(id as usize).cloned().flatten()
    }
}

/// The primary host application's last STATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Host {
    online: bool,
    /// Of the last STATE that said online.
    online_since: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedBdSeq {
    bd_seq: u8,
}

/// What the node needs besides its configuration.
pub struct NodeParts {
    pub live: Arc<LiveTags>,
    /// Each source's counters (its `online` flag decides DBIRTH and DDEATH).
    pub sources: Vec<(String, Arc<DeviceStats>)>,
    pub data_dir: PathBuf,
}

/// One edge node's session state.
pub struct Sparkplug {
    group: String,
    node: String,
    primary_host: Option<String>,
    catalog: Catalog,
    live: Arc<LiveTags>,
    /// Per catalog device: its source's counters (`None` for assets, lines and stations).
    online: Vec<Option<Arc<DeviceStats>>>,
    bd_seq_file: PathBuf,
    bd_seq: u8,
    seq: u8,
    /// When the NBIRTH in force was sent; `None` before it.
    born_at: Option<SystemTime>,
    /// Per device: whether its DBIRTH is in force.
    device_born: Vec<bool>,
    host: Host,
    /// Per alias: the type fixed at its first birth.
    datatypes: Vec<Option<DataType>>,
    /// Per alias: the latest value of derived metrics (figures, command results).
    derived: Vec<Option<Current>>,
    /// Per alias: the quality last sent, so a return to good is said once.
    sent_quality: Vec<Quality>,
}

impl Sparkplug {
    pub fn new(
        plan: &firmware_config::Plan,
        config: &firmware_config::Sparkplug,
        parts: NodeParts,
    ) -> Sparkplug {
        let catalog = Catalog::new(plan, config);
        let online = catalog
            .devices
            .iter()
            .map(|d| {
                parts
                    .sources
                    .iter()
                    .find(|(name, _)| *name == d.name)
                    .filter(|_| matches!(d.kind, DeviceKind::Modbus | DeviceKind::Opcua))
                    .map(|(_, stats)| Arc::clone(stats))
            })
            .collect();
        let n = catalog.metrics.len();
        Sparkplug {
            group: config.group_id.clone(),
            node: config.edge_node.clone(),
            primary_host: config.primary_host.clone(),
            datatypes: catalog.metrics.iter().map(|m| m.datatype).collect(),
            device_born: vec![false; catalog.devices.len()],
            catalog,
            live: parts.live,
            online,
            bd_seq_file: parts.data_dir.join("sparkplug").join("bdseq.json"),
            bd_seq: 0,
            seq: 0,
            born_at: None,
            host: Host::default(),
            derived: vec![None; n],
            sent_quality: vec![Quality::Good; n],
        }
    }

    /// `spBv1.0/{group}/{kind}/{node}[/{device}]`.
    pub fn topic(&self, kind: &str, device: Option<&str>) -> String {
        match device {
            Some(device) => format!("{NAMESPACE}/{}/{kind}/{}/{device}", self.group, self.node),
            None => format!("{NAMESPACE}/{}/{kind}/{}", self.group, self.node),
        }
    }

    fn state_topic(&self) -> Option<String> {
        self.primary_host
            .as_ref()
            .map(|host| format!("{NAMESPACE}/STATE/{host}"))
    }

    /// The bdSeq of the current connection.
    pub fn bd_seq(&self) -> u8 {
        self.bd_seq
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        u64::from(seq)
    }

    fn message(
        &mut self,
        kind: &str,
        device: Option<&str>,
        metrics: Vec<Metric>,
        now: SystemTime,
    ) -> Message {
        let seq = (kind != "NDEATH").then(|| self.next_seq());
        let payload = Payload {
            timestamp: Some(values::millis(now)),
            metrics,
            seq,
            uuid: None,
            body: None,
        };
        Message {
            topic: self.topic(kind, device),
            payload: payload.encode_to_vec(),
            retain: false,
            // Sparkplug 3.0: births and data at QoS 0; only the NDEATH (a will) at QoS 1.
            qos: if kind == "NDEATH" {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            },
        }
    }

    fn ndeath(&mut self, now: SystemTime) -> Message {
        let bd_seq = Metric {
            name: Some(catalog::BD_SEQ.into()),
            datatype: Some(DataType::UInt64 as u32),
            timestamp: Some(values::millis(now)),
            value: Some(MetricValue::LongValue(u64::from(self.bd_seq))),
            ..Metric::default()
        };
        self.message("NDEATH", None, vec![bd_seq], now)
    }

    /// The NBIRTH and the DBIRTH of every device that is up; `seq` starts again at 0.
    fn births(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message> {
        self.seq = 0;
        // A rebirth does not move the line between history and live data.
        self.born_at.get_or_insert(now);
        let node_values = [
            Value::U64(u64::from(self.bd_seq)),
            Value::Bool(false),
            Value::Text(identity.version.clone()),
            Value::Text(identity.config_hash.clone()),
        ];
        let metrics = self
            .catalog
            .node
            .clone()
            .zip(node_values)
            .map(|(alias, value)| {
                let current = Current {
                    value: Some(value),
                    quality: Quality::Good,
                    at: now,
                };
                self.metric(alias, &current, true, false)
            })
            .collect();
        let mut out = vec![self.message("NBIRTH", None, metrics, now)];
        for device in 0..self.catalog.devices.len() {
            self.device_born[device] = false;
            if self.is_up(device) {
                out.push(self.dbirth(device, now));
            }
        }
        info!(
            bd_seq = self.bd_seq,
            devices = out.len() - 1,
            "Sparkplug births published"
        );
        out
    }

    fn is_up(&self, device: usize) -> bool {
        self.online[device]
            .as_ref()
            .is_none_or(|stats| stats.online.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn current(&self, alias: usize) -> Option<Current> {
        match &self.catalog.metrics[alias].origin {
            Origin::Tag { id, .. } => self.live.get(*id),
            Origin::Node | Origin::Derived => self.derived[alias].clone(),
        }
    }

    fn dbirth(&mut self, device: usize, now: SystemTime) -> Message {
        self.device_born[device] = true;
        let metrics = self.catalog.devices[device]
            .aliases
            .clone()
            .into_iter()
            .map(|alias| {
                // Not read yet: null, and marked as not to be trusted.
                let current = self.current(alias).unwrap_or(Current {
                    value: None,
                    quality: Quality::Stale,
                    at: now,
                });
                self.metric(alias, &current, true, false)
            })
            .collect();
        let name = self.catalog.devices[device].name.clone();
        self.message("DBIRTH", Some(&name), metrics, now)
    }

    /// One metric: with its name, datatype and properties in a birth, by alias otherwise.
    fn metric(&mut self, alias: usize, current: &Current, birth: bool, historical: bool) -> Metric {
        let datatype = *self.datatypes[alias].get_or_insert_with(|| {
            current
                .value
                .as_ref()
                .map_or(DataType::Double, values::datatype_of)
        });
        let def = &self.catalog.metrics[alias];
        let value = current
            .value
            .as_ref()
            .and_then(|v| values::encode(datatype, v));
        let mut properties = PropertySet::default();
        if birth {
            if let Some(unit) = &def.unit {
                properties.push(
                    "engUnit",
                    DataType::String,
                    PropertyValueKind::StringValue(unit.clone()),
                );
            }
            if let Some((scale, offset)) = def.scaling {
                properties.push(
                    "scale",
                    DataType::Double,
                    PropertyValueKind::DoubleValue(scale),
                );
                properties.push(
                    "offset",
                    DataType::Double,
                    PropertyValueKind::DoubleValue(offset),
                );
            }
        }
        let quality_changed = self.sent_quality[alias] != current.quality;
        let node_metric = def.origin == Origin::Node;
        if !node_metric && (birth || quality_changed || !current.quality.is_good()) {
            properties.push(
                "Quality",
                DataType::Int32,
                PropertyValueKind::IntValue(values::quality_code(current.quality)),
            );
        }
        self.sent_quality[alias] = current.quality;
        Metric {
            name: birth.then(|| def.name.clone()),
            alias: Some(alias as u64),
            timestamp: Some(values::millis(current.at)),
            datatype: birth.then_some(datatype as u32),
            is_historical: historical.then_some(true),
            is_transient: None,
            is_null: value.is_none().then_some(true),
            properties: (!properties.keys.is_empty()).then_some(properties),
            value,
        }
    }

    /// A device's DDATA of `values` (by alias), after its DBIRTH when none is in force.
    fn ddata(
        &mut self,
        device: usize,
        values: Vec<(usize, Current)>,
        historical: bool,
        now: SystemTime,
    ) -> Vec<Message> {
        if values.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.device_born[device] && self.is_up(device) {
            out.push(self.dbirth(device, now));
        }
        let metrics = values
            .iter()
            .map(|(alias, current)| self.metric(*alias, current, false, historical))
            .collect();
        let name = self.catalog.devices[device].name.clone();
        out.push(self.message("DDATA", Some(&name), metrics, now));
        out
    }

    /// The device and the `(alias, value)`s a report carries; derived values are remembered for
    /// later births.
    fn values_of(
        &mut self,
        report: &Report,
        at: SystemTime,
    ) -> Option<(usize, Vec<(usize, Current)>)> {
        let device_name = device_of(report)?;
        let figures = match report {
            Report::Changes(changes) => {
                let device = *self.catalog.by_device.get(device_name)?;
                let values = changes
                    .changes
                    .iter()
                    .filter_map(|c| {
                        let alias = self.catalog.alias(device, &c.tag)?;
                        Some((
                            alias,
                            Current {
                                value: c.value.clone(),
                                quality: c.quality,
                                at: c.at,
                            },
                        ))
                    })
                    .collect();
                return Some((device, values));
            }
            Report::Assessment(a) => figures::asset(a),
            Report::Production(r) => figures::line(r),
            Report::Quality(q) => figures::station(q),
            Report::Part(p) => figures::part(p),
            _ => return None,
        };
        let device = *self.catalog.by_device.get(device_name)?;
        let values: Vec<(usize, Current)> = figures
            .into_iter()
            .filter_map(|(name, value)| {
                let alias = self.catalog.alias(device, &name)?;
                Some((
                    alias,
                    Current {
                        value,
                        quality: Quality::Good,
                        at,
                    },
                ))
            })
            .collect();
        for (alias, current) in &values {
            self.derived[*alias] = Some(current.clone());
        }
        Some((device, values))
    }

    fn on_state(&mut self, identity: &Identity, payload: &[u8], now: SystemTime) -> Incoming {
        let Some((online, timestamp)) = parse_state(payload) else {
            warn!(payload = %String::from_utf8_lossy(payload).escape_debug(), "primary host STATE not understood; ignored");
            return Incoming::default();
        };
        let mut incoming = Incoming::default();
        if online {
            if timestamp >= self.host.online_since {
                self.host = Host {
                    online: true,
                    online_since: timestamp,
                };
                if self.born_at.is_none() {
                    info!("primary host online: publishing births");
                    incoming.publish = self.births(identity, now);
                }
            }
        } else if timestamp >= self.host.online_since && self.host.online {
            self.host.online = false;
            // Nothing more is sent, not even what the session's close would drain.
            if self.born_at.take().is_some() {
                warn!("primary host offline: NDEATH, then a new session that waits for it; data stays in the outbox");
                incoming.reconnect = true;
            }
        }
        incoming
    }

    fn on_ncmd(&mut self, identity: &Identity, payload: &[u8], now: SystemTime) -> Incoming {
        let Ok(command) = Payload::decode(payload) else {
            warn!("NCMD is not a Sparkplug B payload; ignored");
            return Incoming::default();
        };
        let rebirth = command.metrics.iter().any(|m| {
            let named = m.name.as_deref() == Some(catalog::REBIRTH) || m.alias == Some(1);
            named && m.value == Some(MetricValue::BooleanValue(true))
        });
        let mut incoming = Incoming::default();
        if rebirth && self.born_at.is_some() {
            info!("rebirth requested (NCMD)");
            incoming.publish = self.births(identity, now);
        } else if !rebirth {
            warn!(
                metrics = command.metrics.len(),
                "NCMD without a rebirth request; nothing else is supported"
            );
        }
        incoming
    }

    fn on_dcmd(&mut self, device_name: &str, payload: &[u8], now: SystemTime) -> Incoming {
        let mut incoming = Incoming::default();
        let Some(device) = self.catalog.by_device.get(device_name).copied() else {
            warn!(device = %device_name.escape_debug(), "DCMD for a device this node does not have; refused");
            return incoming;
        };
        let Ok(command) = Payload::decode(payload) else {
            incoming.publish = self.result(
                device,
                "refused: the DCMD is not a Sparkplug B payload".into(),
                now,
            );
            return incoming;
        };
        let mut refused = Vec::new();
        for metric in &command.metrics {
            match self.write_of(device, metric) {
                Ok(write) => incoming.writes.push(write),
                Err(why) => refused.push(why),
            }
        }
        if !refused.is_empty() {
            let text = format!("refused: {}", refused.join("; "));
            warn!(device = %device_name, reason = %text, "DCMD refused; nothing written");
            incoming.publish = self.result(device, text, now);
        }
        incoming
    }

    /// The write a DCMD metric asks for, or why it is refused.
    fn write_of(&self, device: usize, metric: &Metric) -> Result<TagWrite, String> {
        let def = &self.catalog.devices[device];
        let alias = match (&metric.name, metric.alias) {
            (Some(name), _) => def.by_name.get(name).copied(),
            (None, Some(alias)) => usize::try_from(alias)
                .ok()
                .filter(|a| def.aliases.contains(a)),
            (None, None) => None,
        };
        let shown = metric
            .name
            .clone()
            .unwrap_or_else(|| format!("alias {}", metric.alias.unwrap_or(0)));
        let Some(alias) = alias else {
            return Err(format!("{shown:?} is not a metric of {}", def.name));
        };
        let Origin::Tag {
            write: Some((index, tag)),
            ..
        } = &self.catalog.metrics[alias].origin
        else {
            return Err(format!(
                "{shown:?} is not writable (not in [mqtt.sparkplug] writable)"
            ));
        };
        let datatype = self.datatypes[alias].unwrap_or(DataType::Double);
        let value = metric
            .value
            .as_ref()
            .and_then(|v| values::decode(datatype, v))
            .ok_or_else(|| format!("{shown:?} needs a {datatype:?} value"))?;
        Ok(TagWrite {
            device: *index,
            tag: (**tag).clone(),
            value,
        })
    }

    /// A DDATA of the device's `Command/Result`.
    fn result(&mut self, device: usize, text: String, now: SystemTime) -> Vec<Message> {
        let Some(alias) = self.catalog.alias(device, catalog::COMMAND_RESULT) else {
            return Vec::new();
        };
        let current = Current {
            value: Some(Value::Text(text)),
            quality: Quality::Good,
            at: now,
        };
        self.derived[alias] = Some(current.clone());
        if self.born_at.is_none() {
            return Vec::new();
        }
        self.ddata(device, vec![(alias, current)], false, now)
    }
}

/// The Sparkplug device a report is data of; `None` for what Sparkplug does not carry.
fn device_of(report: &Report) -> Option<&str> {
    match report {
        Report::Changes(c) => Some(&c.device),
        Report::Assessment(a) => Some(&a.asset),
        Report::Production(r) => Some(&r.line),
        Report::Quality(q) => Some(&q.station),
        Report::Part(p) => Some(&p.station),
        _ => None,
    }
}

/// `{"online": bool, "timestamp": ms}` (3.0), or `ONLINE`/`OFFLINE` (2.2, taken as now).
fn parse_state(payload: &[u8]) -> Option<(bool, u64)> {
    #[derive(Deserialize)]
    struct State {
        online: bool,
        #[serde(default)]
        timestamp: u64,
    }
    if let Ok(state) = serde_json::from_slice::<State>(payload) {
        return Some((state.online, state.timestamp));
    }
    match payload {
        b"ONLINE" => Some((true, u64::MAX)),
        b"OFFLINE" => Some((false, u64::MAX)),
        _ => None,
    }
}

impl Encoder for Sparkplug {
    fn subscriptions(&self) -> Vec<String> {
        let mut topics = vec![self.topic("NCMD", None), self.topic("DCMD", Some("+"))];
        topics.extend(self.state_topic());
        topics
    }

    fn will(&mut self, _identity: &Identity, now: SystemTime) -> Message {
        let last =
            crate::files::restore_state::<SavedBdSeq>(&self.bd_seq_file, "the Sparkplug bdSeq");
        self.bd_seq = last.map_or(0, |saved| saved.bd_seq.wrapping_add(1));
        if let Err(error) = crate::files::save_state(
            &self.bd_seq_file,
            &SavedBdSeq {
                bd_seq: self.bd_seq,
            },
        ) {
            warn!(%error, path = %self.bd_seq_file.display(), "cannot save the Sparkplug bdSeq; a restart may reuse it");
        }
        self.ndeath(now)
    }

    fn connected(&mut self, identity: &Identity, now: SystemTime) -> Vec<Message> {
        self.born_at = None;
        self.device_born.fill(false);
        match self.primary_host {
            // The retained STATE arrives after the subscription and decides.
            Some(_) => Vec::new(),
            None => self.births(identity, now),
        }
    }

    fn ready(&self) -> bool {
        self.born_at.is_some()
    }

    fn encode(&mut self, record: &Record, _agent: &str) -> Vec<Message> {
        let Stored::Report(report) = &record.payload else {
            return Vec::new();
        };
        let created = record.created();
        let Some((device, values)) = self.values_of(report, created) else {
            return Vec::new();
        };
        let historical = self.born_at.is_some_and(|born| created < born);
        let now = self.born_at.map_or(created, |born| born.max(created));
        self.ddata(device, values, historical, now)
    }

    fn topic(&self, record: &Record) -> String {
        let device = match &record.payload {
            Stored::Report(report) => device_of(report),
            Stored::Raw { .. } => None,
        };
        self.topic("DDATA", device)
    }

    fn incoming(
        &mut self,
        identity: &Identity,
        topic: &str,
        payload: &[u8],
        now: SystemTime,
    ) -> Incoming {
        if Some(topic) == self.state_topic().as_deref() {
            return self.on_state(identity, payload, now);
        }
        if topic == self.topic("NCMD", None) {
            return self.on_ncmd(identity, payload, now);
        }
        let dcmd = self.topic("DCMD", None);
        if let Some(device) = topic
            .strip_prefix(dcmd.as_str())
            .and_then(|t| t.strip_prefix('/'))
        {
            let device = device.to_string();
            return self.on_dcmd(&device, payload, now);
        }
        Incoming::default()
    }

    fn tick(&mut self, now: SystemTime) -> Vec<Message> {
        if self.born_at.is_none() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for device in 0..self.catalog.devices.len() {
            match (self.device_born[device], self.is_up(device)) {
                (true, false) => {
                    self.device_born[device] = false;
                    let name = self.catalog.devices[device].name.clone();
                    info!(device = %name, "device down: DDEATH");
                    out.push(self.message("DDEATH", Some(&name), Vec::new(), now));
                }
                (false, true) => out.push(self.dbirth(device, now)),
                _ => {}
            }
        }
        out
    }

    fn written(
        &mut self,
        write: &TagWrite,
        result: Result<(), String>,
        now: SystemTime,
    ) -> Vec<Message> {
        let Some(device) =
            self.catalog.devices.iter().position(|d| {
                d.kind == DeviceKind::Modbus && d.by_name.contains_key(&write.tag.name)
            })
        else {
            return Vec::new();
        };
        let text = match result {
            Ok(()) => format!("ok: {} = {}", write.tag.name, write.value),
            Err(error) => format!("failed: {} = {}: {error}", write.tag.name, write.value),
        };
        self.result(device, text, now)
    }

    fn farewell(&mut self, _identity: &Identity, now: SystemTime) -> Vec<Message> {
        vec![self.ndeath(now)]
    }
}

mod figures;

#[cfg(test)]
mod tests;
