//! `[[assets]]` and `[scoring]`: the equipment whose health the agent scores, its signals by role
//! (each mapped to a tag) and its nameplate; and how often and over how much history it is scored.
//!
//! Validation resolves every role to the tag's index in plan order (devices in file order, their
//! tags in file order — the agent's `TagId`), checks that the tag is numeric and that its unit fits
//! the role, and that the nameplate holds what the role's rule needs (a vibration signal needs the
//! ISO 10816-3 group and foundation, a winding temperature the insulation class, and so on).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::duration::HumanDuration;
use crate::modbus::{Checker, DataType, Device};
use crate::names::{self, TopicUse};
use crate::opcua::OpcuaEndpoint;
use crate::source::Seg;
use crate::vibration::{self, Bearing, BearingConfig, Waveform, WaveformConfig, WaveformSource};

/// The most samples a signal window can hold; windows are fixed-capacity arrays of this size.
pub const MAX_WINDOW: usize = 256;

/// How the agent scores assets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    /// How often every asset is assessed.
    #[serde(default = "default_assess_interval")]
    pub assess_interval: HumanDuration,
    /// Samples kept per asset and signal (at most 256); features are computed over them.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Failure probability above which the action is `immediate_maintenance` (priority high).
    #[serde(default = "default_immediate")]
    pub immediate_above: f64,
    /// Failure probability above which the action is `scheduled_maintenance` (priority medium).
    #[serde(default = "default_scheduled")]
    pub scheduled_above: f64,
    /// How far the probability must fall back below a threshold before the action steps down, so a
    /// value hovering at a threshold does not flap.
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    /// ONNX models by asset type (`pump = "models/pump.onnx"`), and `default` for every type
    /// without its own. Each needs its manifest beside it (same name, `.toml`). Relative paths are
    /// relative to this configuration file. No model: the rules alone decide.
    #[serde(default)]
    pub models: BTreeMap<String, PathBuf>,
}

impl Default for ScoringConfig {
    fn default() -> Self {
        ScoringConfig {
            assess_interval: default_assess_interval(),
            window: default_window(),
            immediate_above: default_immediate(),
            scheduled_above: default_scheduled(),
            hysteresis: default_hysteresis(),
            models: BTreeMap::new(),
        }
    }
}

fn default_assess_interval() -> HumanDuration {
    HumanDuration::from_millis(10_000)
}
fn default_window() -> usize {
    120
}
fn default_immediate() -> f64 {
    0.7
}
fn default_scheduled() -> f64 {
    0.5
}
fn default_hysteresis() -> f64 {
    0.05
}

/// ISO 10816-3 machine group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(try_from = "u8")]
pub enum IsoGroup {
    /// Large machines: 300 kW to 50 MW, or shaft height ≥ 315 mm.
    Group1,
    /// Medium machines: 15 kW to 300 kW.
    Group2,
}

impl TryFrom<u8> for IsoGroup {
    type Error = String;
    fn try_from(group: u8) -> Result<Self, String> {
        match group {
            1 => Ok(IsoGroup::Group1),
            2 => Ok(IsoGroup::Group2),
            other => Err(format!(
                "iso_group {other}: ISO 10816-3 has group 1 (>300 kW) and group 2 (15–300 kW)"
            )),
        }
    }
}

impl IsoGroup {
    pub fn number(self) -> u8 {
        match self {
            IsoGroup::Group1 => 1,
            IsoGroup::Group2 => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Foundation {
    Rigid,
    Flexible,
}

impl Foundation {
    pub fn name(self) -> &'static str {
        match self {
            Foundation::Rigid => "rigid",
            Foundation::Flexible => "flexible",
        }
    }
}

/// Motor insulation class (IEC 60085 / NEMA MG 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum InsulationClass {
    A,
    B,
    F,
    H,
}

impl InsulationClass {
    /// The class's maximum winding (hot-spot) temperature in °C.
    pub fn limit_celsius(self) -> f64 {
        match self {
            InsulationClass::A => 105.0,
            InsulationClass::B => 130.0,
            InsulationClass::F => 155.0,
            InsulationClass::H => 180.0,
        }
    }
}

/// An asset's signals by role; each value is a tag name.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SignalsConfig {
    /// Broadband vibration velocity RMS on a bearing housing, mm/s.
    pub vibration: Option<String>,
    /// Bearing temperature, °C.
    pub bearing_temperature: Option<String>,
    /// Winding temperature, °C.
    pub winding_temperature: Option<String>,
    /// Ambient temperature, °C (for temperature rise).
    pub ambient_temperature: Option<String>,
    /// Motor phase currents, A: one tag, or three (L1, L2, L3) for unbalance.
    #[serde(default)]
    pub currents: Vec<String>,
    /// Process pressure (discharge pressure of a pump or compressor), in the tag's unit.
    pub pressure: Option<String>,
    /// Shaft speed, rpm or Hz.
    pub speed: Option<String>,
    /// Electrical or shaft power, kW or W.
    pub power: Option<String>,
}

/// What the rules need to know about the machine.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NameplateConfig {
    /// ISO 10816-3 group: 1 (>300 kW) or 2 (15–300 kW). Needed for `vibration`.
    pub iso_group: Option<IsoGroup>,
    /// Foundation: rigid or flexible. Needed for `vibration`.
    pub foundation: Option<Foundation>,
    /// Insulation class A, B, F or H. Needed for `winding_temperature`.
    pub insulation_class: Option<InsulationClass>,
    /// Rated (full-load) current in A; enables the overload rule for `currents`.
    pub rated_current: Option<f64>,
    /// Normal operating pressure range `[low, high]` in the pressure tag's unit. Needed for `pressure`.
    pub pressure_range: Option<[f64; 2]>,
    /// Bearing temperature alarm limit, °C (default 95, a common rolling-bearing alarm level).
    pub bearing_temperature_limit: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Unique id, used in logs and topics.
    pub id: String,
    /// pump, motor, compressor, conveyor, fan, gearbox, or your own (lowercase) type; selects the model.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub signals: SignalsConfig,
    #[serde(default)]
    pub nameplate: NameplateConfig,
    /// Acceleration waveforms for spectra, envelope and bearing diagnosis.
    pub waveform: Option<WaveformConfig>,
    /// Rolling bearings whose defect frequencies the diagnosis looks for.
    #[serde(default)]
    pub bearings: Vec<BearingConfig>,
}

/// Asset types millwright knows; others are accepted and scored by the default model and the rules.
pub const KNOWN_ASSET_TYPES: [&str; 6] =
    ["pump", "motor", "compressor", "conveyor", "fan", "gearbox"];

/// A validated signal role: the tag's index in plan order.
pub type TagIndex = u32;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signals {
    pub vibration: Option<TagIndex>,
    pub bearing_temperature: Option<TagIndex>,
    pub winding_temperature: Option<TagIndex>,
    pub ambient_temperature: Option<TagIndex>,
    pub currents: Vec<TagIndex>,
    pub pressure: Option<TagIndex>,
    pub speed: Option<TagIndex>,
    pub power: Option<TagIndex>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Nameplate {
    pub vibration_class: Option<(IsoGroup, Foundation)>,
    pub insulation_class: Option<InsulationClass>,
    pub rated_current: Option<f64>,
    pub pressure_range: Option<(f64, f64)>,
    pub bearing_temperature_limit: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub id: String,
    pub kind: String,
    pub signals: Signals,
    pub nameplate: Nameplate,
    pub waveform: Option<Waveform>,
    pub bearings: Vec<Bearing>,
}

/// The validated `[scoring]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Scoring {
    pub assess_interval: Duration,
    pub window: usize,
    pub immediate_above: f64,
    pub scheduled_above: f64,
    pub hysteresis: f64,
    /// Model files by asset type or `default`, resolved against the configuration's directory.
    pub models: BTreeMap<String, PathBuf>,
}

#[derive(Clone, Copy)]
enum Role {
    Vibration,
    BearingTemperature,
    WindingTemperature,
    AmbientTemperature,
    Current,
    Pressure,
    Speed,
    Power,
}

impl Role {
    fn key(self) -> &'static str {
        match self {
            Role::Vibration => "vibration",
            Role::BearingTemperature => "bearing_temperature",
            Role::WindingTemperature => "winding_temperature",
            Role::AmbientTemperature => "ambient_temperature",
            Role::Current => "currents",
            Role::Pressure => "pressure",
            Role::Speed => "speed",
            Role::Power => "power",
        }
    }

    /// Units accepted for the role, compared case-insensitively; the first is the one to suggest.
    fn units(self) -> &'static [&'static str] {
        match self {
            Role::Vibration => &["mm/s"],
            Role::BearingTemperature | Role::WindingTemperature | Role::AmbientTemperature => {
                &["°C", "degC", "C", "celsius"]
            }
            Role::Current => &["A", "amp", "amps"],
            Role::Pressure => &["bar", "mbar", "kPa", "MPa", "Pa", "psi"],
            Role::Speed => &["rpm", "1/min", "Hz"],
            Role::Power => &["kW", "W"],
        }
    }
}

/// A tag's index in plan order, its unit, and why it is not numeric.
pub(crate) type TagEntry<'p> = (TagIndex, Option<&'p str>, Option<&'static str>);

/// Tags by name: plan-order index, unit, and why the tag cannot be numeric (a Modbus bool or
/// string); built from the validated sources. OPC UA nodes declare no type in the configuration:
/// a non-numeric value is found at run time (and feeds no feature).
pub(crate) struct TagDirectory<'p> {
    tags: HashMap<&'p str, TagEntry<'p>>,
    shapes: HashMap<&'p str, TagShape>,
    /// Names of tags that exist in the file but failed validation (no second error for them).
    invalid: HashSet<String>,
}

impl<'p> TagDirectory<'p> {
    pub fn new(
        devices: &'p [Device],
        endpoints: &'p [OpcuaEndpoint],
        all_names: HashSet<String>,
    ) -> TagDirectory<'p> {
        let mut tags = HashMap::new();
        let mut shapes = HashMap::new();
        let mut index = 0;
        for device in devices {
            for tag in device.tags.iter() {
                shapes.insert(tag.name.as_str(), TagShape::of(tag));
                let not_numeric = match tag.data_type {
                    _ if tag.is_block() => Some("a block of values"),
                    _ if tag.bit.is_some() => Some("bool"),
                    DataType::Bool | DataType::String => Some(tag.data_type.name()),
                    _ => None,
                };
                tags.insert(tag.name.as_str(), (index, tag.unit.as_deref(), not_numeric));
                index += 1;
            }
        }
        for endpoint in endpoints {
            for tag in &endpoint.tags {
                tags.insert(tag.name.as_str(), (index, tag.unit.as_deref(), None));
                index += 1;
            }
        }
        let invalid = all_names
            .into_iter()
            .filter(|n| !tags.contains_key(n.as_str()))
            .collect();
        TagDirectory {
            tags,
            shapes,
            invalid,
        }
    }
}

/// What values a tag can carry, as far as the configuration tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagShape {
    Bool,
    Integer,
    Real,
    Text,
    /// A Modbus block (`count`): an array of numbers, a waveform or a spectrum.
    Block,
    /// An OPC UA node: its type is known at run time only.
    Untyped,
}

impl TagShape {
    fn of(tag: &crate::modbus::Tag) -> TagShape {
        match tag.data_type {
            _ if tag.is_block() => TagShape::Block,
            _ if tag.bit.is_some() => TagShape::Bool,
            DataType::Bool => TagShape::Bool,
            DataType::String => TagShape::Text,
            DataType::F32 | DataType::F64 => TagShape::Real,
            _ if tag.scaling.is_some() => TagShape::Real,
            _ => TagShape::Integer,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            TagShape::Bool => "a bool",
            TagShape::Integer => "an integer",
            TagShape::Real => "a real number (a float type or scaled)",
            TagShape::Text => "a string",
            TagShape::Block => "a block of values",
            TagShape::Untyped => "untyped",
        }
    }
}

impl TagDirectory<'_> {
    /// A tag's index and shape; the error as for [`TagDirectory::lookup`].
    pub fn shape(&self, name: &str) -> Result<(TagIndex, TagShape), Option<String>> {
        let (index, _, _) = self.lookup(name)?;
        Ok((
            index,
            self.shapes.get(name).copied().unwrap_or(TagShape::Untyped),
        ))
    }

    /// A tag's index, unit and why it is not numeric; the error is `None` when the tag exists but
    /// failed validation (reported already).
    pub fn lookup(&self, name: &str) -> Result<TagEntry<'_>, Option<String>> {
        match self.tags.get(name) {
            Some(&found) => Ok(found),
            None if self.invalid.contains(name) => Err(None),
            None => Err(Some(format!(
                "no tag named {name:?} in [[devices.tags]] or [[opcua.tags]]"
            ))),
        }
    }
}

pub(crate) fn validate_scoring(
    check: &mut Checker<'_, '_>,
    scoring: &ScoringConfig,
    config_dir: &Path,
) -> Scoring {
    let at = |key| [Seg::Key("scoring"), Seg::Key(key)];
    if scoring.window < 2 || scoring.window > MAX_WINDOW {
        check.err(
            &at("window"),
            "scoring",
            format!("window must be between 2 and {MAX_WINDOW} samples"),
        );
    }
    if scoring.assess_interval.get() < Duration::from_millis(100) {
        check.err(
            &at("assess_interval"),
            "scoring",
            "assess_interval must be at least 100ms",
        );
    }
    for (key, value) in [
        ("immediate_above", scoring.immediate_above),
        ("scheduled_above", scoring.scheduled_above),
    ] {
        if !(0.0..1.0).contains(&value) {
            check.err(&at(key), "scoring", format!("{key} must be in 0..1"));
        }
    }
    if scoring.scheduled_above >= scoring.immediate_above {
        check.err(
            &at("scheduled_above"),
            "scoring",
            "scheduled_above must be below immediate_above",
        );
    }
    if !(0.0..0.5).contains(&scoring.hysteresis) {
        check.err(&at("hysteresis"), "scoring", "hysteresis must be in 0..0.5");
    }
    for (kind, path) in &scoring.models {
        if path.extension().is_none_or(|e| e != "onnx") {
            check.err(
                &[Seg::Key("scoring"), Seg::Key("models"), Seg::Key(kind)],
                "scoring",
                format!("model for {kind:?} must be an .onnx file"),
            );
        }
    }
    Scoring {
        assess_interval: scoring.assess_interval.get(),
        window: scoring.window,
        immediate_above: scoring.immediate_above,
        scheduled_above: scoring.scheduled_above,
        hysteresis: scoring.hysteresis,
        models: scoring
            .models
            .iter()
            .map(|(kind, path)| (kind.clone(), config_dir.join(path)))
            .collect(),
    }
}

pub(crate) fn validate_assets(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    assets: &[(usize, AssetConfig)],
    config_dir: &Path,
) -> Vec<Asset> {
    let mut seen = HashSet::new();
    let mut captured = HashSet::new();
    let mut valid = Vec::new();
    for (index, config) in assets {
        let before = check.errors.len();
        let component = format!("asset {:?}", config.id);
        let base = [Seg::Key("assets"), Seg::Index(*index)];
        let at = |keys: &[&'static str]| -> Vec<Seg<'static>> {
            base.iter()
                .cloned()
                .chain(keys.iter().map(|k| Seg::Key(k)))
                .collect()
        };
        if let Some(problem) = names::topic_name_error("asset id", &config.id, TopicUse::Level) {
            check.err(&at(&["id"]), &component, problem);
        } else if !seen.insert(config.id.clone()) {
            check.err(&at(&["id"]), &component, "another asset has this id");
        }
        let kind_ok = !config.kind.is_empty()
            && config
                .kind
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !kind_ok {
            check.err(
                &at(&["type"]),
                &component,
                format!(
                    "type must be a lowercase name such as {}",
                    KNOWN_ASSET_TYPES.join(", ")
                ),
            );
        }

        let role = |check: &mut Checker<'_, '_>, role: Role, name: &str, path: Vec<Seg<'_>>| {
            resolve_role(check, tags, &component, role, name, &path)
        };
        let s = &config.signals;
        let signals = Signals {
            vibration: s
                .vibration
                .as_ref()
                .and_then(|n| role(check, Role::Vibration, n, at(&["signals", "vibration"]))),
            bearing_temperature: s.bearing_temperature.as_ref().and_then(|n| {
                role(
                    check,
                    Role::BearingTemperature,
                    n,
                    at(&["signals", "bearing_temperature"]),
                )
            }),
            winding_temperature: s.winding_temperature.as_ref().and_then(|n| {
                role(
                    check,
                    Role::WindingTemperature,
                    n,
                    at(&["signals", "winding_temperature"]),
                )
            }),
            ambient_temperature: s.ambient_temperature.as_ref().and_then(|n| {
                role(
                    check,
                    Role::AmbientTemperature,
                    n,
                    at(&["signals", "ambient_temperature"]),
                )
            }),
            currents: s
                .currents
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let mut path = at(&["signals", "currents"]);
                    path.push(Seg::Index(i));
                    role(check, Role::Current, n, path)
                })
                .collect(),
            pressure: s
                .pressure
                .as_ref()
                .and_then(|n| role(check, Role::Pressure, n, at(&["signals", "pressure"]))),
            speed: s
                .speed
                .as_ref()
                .and_then(|n| role(check, Role::Speed, n, at(&["signals", "speed"]))),
            power: s
                .power
                .as_ref()
                .and_then(|n| role(check, Role::Power, n, at(&["signals", "power"]))),
        };

        let plate = &config.nameplate;
        let signals_path = at(&["signals"]);
        let any_signal = s.vibration.is_some()
            || s.bearing_temperature.is_some()
            || s.winding_temperature.is_some()
            || !s.currents.is_empty()
            || s.pressure.is_some()
            || config.waveform.is_some();
        if !any_signal {
            check.err_key(
                &signals_path,
                &component,
                "no signal to score: map at least one of vibration, bearing_temperature, winding_temperature, currents or pressure, or give [assets.waveform]",
            );
        }
        if !matches!(s.currents.len(), 0 | 1 | 3) {
            check.err(
                &at(&["signals", "currents"]),
                &component,
                "currents takes one tag, or three (L1, L2, L3)",
            );
        }
        let vibration_class = match (plate.iso_group, plate.foundation) {
            (Some(group), Some(foundation)) => Some((group, foundation)),
            _ => None,
        };
        if s.vibration.is_some() && vibration_class.is_none() {
            check.err(
                &at(&["signals", "vibration"]),
                &component,
                "vibration needs nameplate.iso_group (1 or 2) and nameplate.foundation (rigid or flexible) to judge ISO 10816-3 zones",
            );
        }
        if config.waveform.is_some() && vibration_class.is_none() {
            check.err(
                &at(&["waveform"]),
                &component,
                "a waveform needs nameplate.iso_group (1 or 2) and nameplate.foundation (rigid or flexible): its velocity is judged in ISO 10816-3 zones",
            );
        }
        if s.winding_temperature.is_some() && plate.insulation_class.is_none() {
            check.err(
                &at(&["signals", "winding_temperature"]),
                &component,
                "winding_temperature needs nameplate.insulation_class (A, B, F or H)",
            );
        }
        if let Some(rated) = plate.rated_current {
            if !(rated > 0.0 && rated.is_finite()) {
                check.err(
                    &at(&["nameplate", "rated_current"]),
                    &component,
                    "rated_current must be a positive number of amperes",
                );
            }
        }
        let pressure_range = plate.pressure_range.map(|[low, high]| (low, high));
        match pressure_range {
            Some((low, high)) if !(low < high && low.is_finite() && high.is_finite()) => {
                check.err(
                    &at(&["nameplate", "pressure_range"]),
                    &component,
                    "pressure_range is [low, high] with low < high",
                );
            }
            None if s.pressure.is_some() => check.err(
                &at(&["signals", "pressure"]),
                &component,
                "pressure needs nameplate.pressure_range = [low, high] in the pressure tag's unit",
            ),
            _ => {}
        }
        let speed = signals.speed.zip(s.speed.as_deref()).map(|(index, name)| {
            let unit = tags.lookup(name).ok().and_then(|(_, unit, _)| unit);
            (
                index,
                unit.is_none_or(|u| !u.trim().eq_ignore_ascii_case("Hz")),
            )
        });
        let under = |keys: &[Seg<'static>]| -> Vec<Seg<'static>> {
            base.iter().cloned().chain(keys.iter().cloned()).collect()
        };
        let (waveform, bearings) = vibration::validate(
            check,
            tags,
            &component,
            &under,
            (config.waveform.as_ref(), &config.bearings),
            speed,
            config_dir,
        );
        if let Some(WaveformSource::Iio(iio)) = waveform.as_ref().map(|w| &w.source) {
            if !captured.insert(iio.device.clone()) {
                check.err(
                    &at(&["waveform", "iio"]),
                    &component,
                    "another asset captures this IIO device: one capture at a time per device",
                );
            }
        }
        if check.errors.len() == before {
            valid.push(Asset {
                id: config.id.clone(),
                kind: config.kind.clone(),
                signals,
                nameplate: Nameplate {
                    vibration_class,
                    insulation_class: plate.insulation_class,
                    rated_current: plate.rated_current,
                    pressure_range,
                    bearing_temperature_limit: plate.bearing_temperature_limit.unwrap_or(95.0),
                },
                waveform,
                bearings,
            });
        }
    }
    valid
}

fn resolve_role(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    component: &str,
    role: Role,
    name: &str,
    path: &[Seg<'_>],
) -> Option<TagIndex> {
    let Some(&(index, unit, not_numeric)) = tags.tags.get(name) else {
        if !tags.invalid.contains(name) {
            check.err(
                path,
                component,
                format!(
                    "{}: no tag named {name:?} in [[devices.tags]] or [[opcua.tags]]",
                    role.key()
                ),
            );
        }
        return None;
    };
    if let Some(kind) = not_numeric {
        check.err(
            path,
            component,
            format!("{}: tag {name:?} is not numeric ({kind})", role.key()),
        );
        return None;
    }
    let accepted = role.units();
    match unit {
        None => {
            check.err(
                path,
                component,
                format!(
                    "{}: tag {name:?} has no unit; set unit = {:?} on the tag (accepted: {})",
                    role.key(),
                    accepted[0],
                    accepted.join(", ")
                ),
            );
            None
        }
        Some(unit) if !accepted.iter().any(|a| a.eq_ignore_ascii_case(unit.trim())) => {
            check.err(
                path,
                component,
                format!(
                    "{}: tag {name:?} is in {unit:?}, which does not fit the role (accepted: {})",
                    role.key(),
                    accepted.join(", ")
                ),
            );
            None
        }
        Some(_) => Some(index),
    }
}
