//! The wire formats of `[mqtt]` (`format`) and the Sparkplug B edge node (`[mqtt.sparkplug]`).
//!
//! A Sparkplug device is a Modbus device, an OPC UA endpoint, an asset, a production line or a
//! quality station: their names become topic levels (`spBv1.0/{group}/DDATA/{node}/{device}`),
//! so with Sparkplug on they must be valid Sparkplug ids (no `/`, `+`, `#`). Things of different
//! kinds with one name (a line named after its press's PLC) are one Sparkplug device with the
//! metrics of both, as long as no metric name is taken twice. Writes from the host (DCMD) reach
//! only the tags `writable` names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Deserialize;

use crate::modbus::Checker;
use crate::names::{self, TopicUse};
use crate::source::Seg;
use crate::{words, HumanDuration, Table};

/// `format = "uns"`, `"sparkplug"` or `["uns", "sparkplug"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum FormatConfig {
    One(String),
    Many(Vec<String>),
}

impl Default for FormatConfig {
    fn default() -> Self {
        FormatConfig::One("uns".into())
    }
}

/// The Sparkplug B 3.0 edge node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// The Sparkplug group id (`spBv1.0/{group_id}/…`).
    pub group_id: String,
    /// The edge node id; default: the agent's name.
    pub edge_node: Option<String>,
    /// The primary host application's id: births wait for its `spBv1.0/STATE/{id}` to say online,
    /// and data stays in the outbox while it is offline.
    pub primary_host: Option<String>,
    /// At most one DDATA per device per this interval (report by exception, batched).
    #[serde(default = "default_data_interval")]
    pub data_interval: HumanDuration,
    /// A numeric tag is reported when it moved more than this (engineering units) since it was
    /// last reported; 0 reports every change.
    #[serde(default)]
    pub deadband: f64,
    /// Per-tag deadbands, overriding `deadband`: `{ "pump-1/flow" = 0.5 }`.
    #[serde(default)]
    pub deadbands: BTreeMap<String, f64>,
    /// The tags a host may write with DCMD (Modbus holding registers and coils). Empty: none.
    #[serde(default)]
    pub writable: Vec<String>,
}

fn default_data_interval() -> HumanDuration {
    HumanDuration::from_millis(1000)
}

/// The metrics of an asset, from its assessments.
pub const ASSET_METRICS: [&str; 6] = [
    "health",
    "failure_probability",
    "action",
    "priority",
    "remaining_life_hours",
    "reason",
];

/// The metrics an asset with a waveform adds, from its assessments' vibration report: velocity
/// (mm/s) and acceleration (m/s²) RMS, crest factor, kurtosis, the strongest bearing defect's dB
/// above its noise floor, and the first diagnosis (empty when nothing is suspected).
pub const VIBRATION_METRICS: [&str; 6] = [
    "vibration/velocity_rms",
    "vibration/acceleration_rms",
    "vibration/crest_factor",
    "vibration/kurtosis",
    "vibration/bearing_defect_db",
    "vibration/diagnosis",
];

/// The metrics of a production line, from its running reports.
pub const LINE_METRICS: [&str; 9] = [
    "oee",
    "availability",
    "performance",
    "quality",
    "total",
    "good",
    "reject",
    "state",
    "shift",
];

/// The metrics of a quality station, from its reports and parts; `cpk/{characteristic}` follow.
pub const STATION_METRICS: [&str; 9] = [
    "parts",
    "pass",
    "review",
    "reject",
    "reject_rate",
    "mean_score",
    "part/id",
    "part/decision",
    "part/score",
];

/// The metric reporting the last DCMD write of a device with writable tags.
pub const COMMAND_RESULT: &str = "Command/Result";

/// A validated Sparkplug section.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparkplug {
    pub group_id: String,
    pub edge_node: String,
    pub primary_host: Option<String>,
    pub data_interval: Duration,
    pub deadband: f64,
    pub deadbands: HashMap<String, f64>,
    /// Tag names, each a writable Modbus tag.
    pub writable: HashSet<String>,
}

impl Sparkplug {
    /// The deadband of `tag`.
    pub fn deadband(&self, tag: &str) -> f64 {
        self.deadbands.get(tag).copied().unwrap_or(self.deadband)
    }
}

/// Which formats the uplink speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Formats {
    pub uns: bool,
    pub sparkplug: Option<Sparkplug>,
}

/// The formats and the Sparkplug section as written, before the tags are known.
pub(crate) fn validate_formats(
    check: &mut Checker<'_, '_>,
    format: &FormatConfig,
    sparkplug: Option<&SparkplugConfig>,
    agent_name: &str,
) -> Option<Formats> {
    let before = check.errors.len();
    let at = [Seg::Key("mqtt"), Seg::Key("format")];
    let names: Vec<&str> = match format {
        FormatConfig::One(name) => vec![name.as_str()],
        FormatConfig::Many(names) => names.iter().map(String::as_str).collect(),
    };
    if names.is_empty() {
        check.err(
            &at,
            "mqtt",
            "format lists no format: give \"uns\", \"sparkplug\" or both",
        );
    }
    let mut unknown = false;
    for name in &names {
        if !matches!(*name, "uns" | "sparkplug") {
            unknown = true;
            check.err(
                &at,
                "mqtt",
                format!(
                    "unknown format {}; known: \"uns\", \"sparkplug\"",
                    words::quote(name)
                ),
            );
        }
    }
    let wants_sparkplug = names.contains(&"sparkplug");
    let sparkplug = match (wants_sparkplug, sparkplug) {
        (true, Some(config)) => validate_node(check, config, agent_name),
        (true, None) => {
            check.err(
                &at,
                "mqtt",
                "format \"sparkplug\" needs a [mqtt.sparkplug] section with at least group_id",
            );
            None
        }
        // A misspelt format was meant to be one of them: one error is enough.
        (false, Some(_)) if unknown => None,
        (false, Some(_)) => {
            check.err_key(
                &[Seg::Key("mqtt"), Seg::Key("sparkplug")],
                "mqtt",
                "[mqtt.sparkplug] is given but format does not include \"sparkplug\"",
            );
            None
        }
        (false, None) => None,
    };
    (check.errors.len() == before).then(|| Formats {
        uns: names.contains(&"uns"),
        sparkplug,
    })
}

fn validate_node(
    check: &mut Checker<'_, '_>,
    config: &SparkplugConfig,
    agent_name: &str,
) -> Option<Sparkplug> {
    let at = |key| [Seg::Key("mqtt"), Seg::Key("sparkplug"), Seg::Key(key)];
    let edge_node = config
        .edge_node
        .clone()
        .unwrap_or_else(|| agent_name.to_string());
    let ids = [
        ("group_id", Some(&config.group_id)),
        ("edge_node", Some(&edge_node)),
        ("primary_host", config.primary_host.as_ref()),
    ];
    for (key, id) in ids {
        if let Some(problem) = id.and_then(|id| id_problem(&format!("sparkplug {key}"), id)) {
            check.err(&at(key), "mqtt", problem);
        }
    }
    if config.data_interval.get() < Duration::from_millis(10) {
        check.err(
            &at("data_interval"),
            "mqtt",
            "data_interval must be at least 10ms",
        );
    }
    let deadbands = std::iter::once(("deadband", config.deadband))
        .chain(config.deadbands.values().map(|d| ("deadbands", *d)));
    for (key, deadband) in deadbands {
        if !(deadband.is_finite() && deadband >= 0.0) {
            check.err(
                &at(key),
                "mqtt",
                format!("a deadband must be a finite number ≥ 0, found {deadband}"),
            );
        }
    }
    Some(Sparkplug {
        group_id: config.group_id.clone(),
        edge_node,
        primary_host: config.primary_host.clone(),
        data_interval: config.data_interval.get(),
        deadband: config.deadband,
        deadbands: config.deadbands.clone().into_iter().collect(),
        writable: config.writable.iter().cloned().collect(),
    })
}

/// Why `id` cannot be a Sparkplug group, node or device id.
fn id_problem(what: &str, id: &str) -> Option<String> {
    names::topic_name_error(what, id, TopicUse::Level)
}

/// One thing that becomes (part of) a Sparkplug device.
pub(crate) struct DeviceName<'a> {
    pub kind: &'static str,
    /// Its table in the file and its index there, for errors.
    pub table: &'static str,
    pub index: usize,
    pub name: &'a str,
    /// The metrics it brings.
    pub metrics: Vec<String>,
}

/// What the Sparkplug checks need of the rest of the plan.
pub(crate) struct DeviceNames<'a> {
    /// Modbus devices, OPC UA endpoints, assets, lines, quality stations.
    pub devices: Vec<DeviceName<'a>>,
    /// Every tag name with its Modbus table (`None` for OPC UA tags).
    pub tags: HashMap<&'a str, Option<Table>>,
}

/// The checks that need the plan's devices and tags.
pub(crate) fn validate_plan(check: &mut Checker<'_, '_>, node: &Sparkplug, plan: &DeviceNames<'_>) {
    // Per device id: each metric and the kind that brought it.
    let mut seen: HashMap<&str, HashMap<&str, &str>> = HashMap::new();
    for device in &plan.devices {
        let key = if device.table == "assets" {
            "id"
        } else {
            "name"
        };
        let at = [
            Seg::Key(device.table),
            Seg::Index(device.index),
            Seg::Key(key),
        ];
        let what = format!("{} name (a Sparkplug device id)", device.kind);
        if let Some(problem) = id_problem(&what, device.name) {
            check.err(&at, "mqtt", problem);
        }
        let metrics = seen.entry(device.name).or_default();
        for metric in &device.metrics {
            if let Some(other) = metrics.insert(metric, device.kind) {
                check.err(
                    &at,
                    "mqtt",
                    format!(
                        "the {other} and the {} named {} are one Sparkplug device, and both have a metric {}: rename one",
                        device.kind,
                        words::quote(device.name),
                        words::quote(metric)
                    ),
                );
                break;
            }
        }
    }
    let at = |key| [Seg::Key("mqtt"), Seg::Key("sparkplug"), Seg::Key(key)];
    for tag in node.deadbands.keys() {
        if !plan.tags.contains_key(tag.as_str()) {
            check.err(
                &at("deadbands"),
                "mqtt",
                format!("deadbands names {}, which is not a tag", words::quote(tag)),
            );
        }
    }
    let mut writable: Vec<&String> = node.writable.iter().collect();
    writable.sort();
    for tag in writable {
        let problem = match plan.tags.get(tag.as_str()) {
            None => "is not a tag".to_string(),
            Some(None) => "is an OPC UA tag; DCMD writes reach Modbus tags only".to_string(),
            Some(Some(Table::HoldingRegister | Table::Coil)) => continue,
            Some(Some(table)) => format!("is in the {} table, which is read-only", table.name()),
        };
        check.err(
            &at("writable"),
            "mqtt",
            format!("writable names {}, which {problem}", words::quote(tag)),
        );
    }
}
