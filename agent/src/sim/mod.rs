//! The plant simulator behind `millwright simulate` and the demo: machines whose signals follow
//! realistic models, served over Modbus TCP and RTU. Only in builds with the `sim` feature.
//!
//! The simulator's file reuses the agent's tag schema for its points (plus a `signal` table), so
//! a point is checked exactly like a tag, with `file:line:col` errors.

pub mod dataset;
pub mod gauge;
pub mod line;
pub mod opcua;
pub mod plant;
pub mod server;
pub mod signal;
pub mod waveform;

use std::path::Path;
use std::time::Duration;

use firmware_config::source::{Document, Seg};
use firmware_config::{
    Addressing, ByteOrder, ConfigErrors, Parity, TagConfig, TagContext, WordOrder,
    MAX_BITS_PER_READ, MAX_REGISTERS_PER_READ,
};
use serde::Deserialize;

pub use plant::{Machine, Plant, Point};
pub use signal::{FaultConfig, LoadConfig, SignalConfig};

/// The simulator's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Modbus TCP listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Also serve Modbus RTU on this serial device.
    pub serial: Option<SerialConfig>,
    /// Seed of every random process; the same seed serves the same values.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub machines: Vec<MachineConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    pub path: String,
    #[serde(default = "default_baud")]
    pub baud: u32,
    #[serde(default)]
    pub parity: Parity,
}

/// Kinds of machine; the kind chooses nothing yet beyond labels, later issues give each kind its
/// degradation profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineKind {
    Pump,
    Motor,
    Compressor,
    Conveyor,
    Fan,
    Gearbox,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub name: String,
    pub kind: MachineKind,
    pub unit_id: u8,
    /// How the points' addresses are written (default: zero_based).
    #[serde(default = "default_addressing")]
    pub addressing: Addressing,
    #[serde(default)]
    pub word_order: WordOrder,
    #[serde(default)]
    pub byte_order: ByteOrder,
    /// Answer "illegal data address" for any read that touches an unmapped address, as many
    /// real devices do.
    #[serde(default)]
    pub strict: bool,
    #[serde(default)]
    pub load: LoadConfig,
    /// A run-to-failure profile (none: a healthy machine).
    pub fault: Option<FaultConfig>,
    /// A production line's state machine and counters, served by points with `signal = { line =
    /// "state" | "reason" | "total" | "good" | "reject" | "energy" | "power" | "material" }`.
    pub line: Option<line::LineSimConfig>,
    /// A gauging station's parts and measurements, served by points with `signal = { gauge =
    /// "count" | "part_id" | { measurement = N } }`.
    pub gauge: Option<gauge::GaugeSimConfig>,
    /// An accelerometer's waveforms, served over OPC UA (as `<name>.waveform`, a Float array) and,
    /// with `registers`, over Modbus as a block of i16 input registers.
    pub waveform: Option<waveform::WaveformSimConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:5020".into()
}
fn default_baud() -> u32 {
    19_200
}
fn default_addressing() -> Addressing {
    Addressing::ZeroBased
}

/// Reads a simulator file and builds its plant.
pub fn load(path: &Path) -> Result<(SimConfig, Plant), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors::unreadable(path, &e))?;
    load_str(path, &text)
}

/// Parses simulator configuration text (`file` names it in errors).
pub fn load_str(file: &Path, text: &str) -> Result<(SimConfig, Plant), ConfigErrors> {
    let doc = Document::parse(file, text)?;
    let mut errors = Vec::new();
    let config: Option<SimConfig> = doc
        .deserialize_root(&["machines"])
        .map_err(|e| errors.extend(e))
        .ok();
    let mut machines = Vec::new();
    let mut unit_ids = std::collections::HashSet::new();
    for (i, value) in doc
        .elements(&[Seg::Key("machines")], &mut errors)
        .into_iter()
        .enumerate()
    {
        let component = format!("machines[{i}]");
        let Ok(machine) = doc
            .deserialize::<MachineConfig>(value, &["points"], &component)
            .map_err(|e| errors.extend(e))
        else {
            continue;
        };
        let mut machine = machine;
        if let Some(camera) = machine.gauge.as_mut().and_then(|g| g.camera.as_mut()) {
            camera.folder = file
                .parent()
                .unwrap_or_else(|| Path::new(""))
                .join(&camera.folder);
        }
        let component = format!("machine {:?}", machine.name);
        if !unit_ids.insert(machine.unit_id) {
            errors.push(doc.error(
                &[Seg::Key("machines"), Seg::Index(i), Seg::Key("unit_id")],
                &component,
                "another machine has this unit_id",
            ));
        }
        if let Some(problem) = machine.waveform.as_ref().and_then(|w| w.check().err()) {
            errors.push(doc.error(
                &[Seg::Key("machines"), Seg::Index(i), Seg::Key("waveform")],
                &component,
                problem,
            ));
        }
        let context = TagContext {
            addressing: machine.addressing,
            word_order: machine.word_order,
            byte_order: machine.byte_order,
            poll_interval: Duration::from_secs(1),
            max_registers_per_request: MAX_REGISTERS_PER_READ,
            max_bits_per_request: MAX_BITS_PER_READ,
            forbidden: &[],
        };
        let mut points = Vec::new();
        let point_path = [Seg::Key("machines"), Seg::Index(i), Seg::Key("points")];
        for (j, value) in doc
            .elements(&point_path, &mut errors)
            .into_iter()
            .enumerate()
        {
            let here = |key| {
                [
                    Seg::Key("machines"),
                    Seg::Index(i),
                    Seg::Key("points"),
                    Seg::Index(j),
                    Seg::Key(key),
                ]
            };
            let point_component = format!("{component} points[{j}]");
            let tag: Result<TagConfig, _> = doc.deserialize(value, &["signal"], &point_component);
            let signal_value = value.get_ref().as_table().and_then(|t| t.get("signal"));
            let signal: Result<SignalConfig, _> = match signal_value {
                Some(v) => doc.deserialize(v, &[], &point_component),
                None => Ok(SignalConfig::default()),
            };
            match (tag, signal) {
                (Ok(tag), Ok(signal)) => match firmware_config::modbus::resolve_tag(&context, &tag)
                {
                    Ok(tag) => points.push(Point { tag, signal }),
                    Err(issues) => errors.extend(issues.into_iter().map(|issue| {
                        doc.error(
                            &here(issue.field),
                            &format!("{component} point {:?}", tag.name),
                            issue.message,
                        )
                    })),
                },
                (tag, signal) => errors.extend(tag.err().into_iter().chain(signal.err()).flatten()),
            }
        }
        machines.push((machine, points));
    }
    match config {
        Some(config) if errors.is_empty() => {
            let plant = Plant::new(config.seed, machines);
            Ok((config, plant))
        }
        _ => {
            errors.sort_by_key(|e| e.position);
            Err(ConfigErrors(errors))
        }
    }
}
