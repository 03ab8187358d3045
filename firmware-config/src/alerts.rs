//! Local alerting: `[alerts]` (lifecycle and agent-health settings, the acknowledge input, the
//! gateway profile), `[[limits]]` (hi-hi / hi / lo / lo-lo per tag), `[[outputs]]` (LEDs, GPIO
//! lines, Modbus coils or registers) and `[[indications]]` (which alerts light which output in
//! which pattern).
//!
//! Gateway profiles (`firmware-config/gateways/*.toml`) are built in: `[alerts] gateway = "NAME"`
//! adds the profile's outputs, which the file's own `[[outputs]]` may then use by name or replace.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::assets::TagDirectory;
use crate::modbus::{resolve_address, Checker, Device, Table};
use crate::source::Seg;
use crate::{HumanDuration, TagIndex};

/// ISA-18.2 style priority of an alert, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// How an output shows an indication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Off,
    Steady,
    /// 1 Hz: 500 ms on, 500 ms off.
    SlowBlink,
    /// 4 Hz: 125 ms on, 125 ms off.
    FastBlink,
}

impl Pattern {
    pub const ALL: [Pattern; 4] = [
        Pattern::Off,
        Pattern::Steady,
        Pattern::SlowBlink,
        Pattern::FastBlink,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Pattern::Off => "off",
            Pattern::Steady => "steady",
            Pattern::SlowBlink => "slow_blink",
            Pattern::FastBlink => "fast_blink",
        }
    }

    /// Half period of a blink: time on, then the same time off.
    pub fn half_period(self) -> Option<Duration> {
        match self {
            Pattern::Off | Pattern::Steady => None,
            Pattern::SlowBlink => Some(Duration::from_millis(500)),
            Pattern::FastBlink => Some(Duration::from_millis(125)),
        }
    }
}

/// `[alerts]` as written.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// A built-in LED/GPIO profile whose outputs become available by name (see
    /// `firmware-config/gateways/`).
    pub gateway: Option<String>,
    /// A digital input (a tag) wired to an acknowledge button: its rising edge (false → true, 0 →
    /// non-zero) acknowledges every unacknowledged alert.
    pub acknowledge_tag: Option<String>,
    /// Maintenance alerts raised from assessments stay until acknowledged even once the asset is
    /// back to routine monitoring.
    #[serde(default = "yes")]
    pub maintenance_latching: bool,
    /// Longest time an alert may be shelved.
    #[serde(default = "default_max_shelve")]
    pub max_shelve: HumanDuration,
    /// A device (or OPC UA endpoint) offline this long raises an agent-health alert.
    #[serde(default = "default_device_down_after")]
    pub device_down_after: HumanDuration,
    /// The outbox this full (percent of `max_size`) raises an agent-health alert.
    #[serde(default = "default_outbox_filling_percent")]
    pub outbox_filling_percent: u8,
    /// The broker unreachable this long raises an agent-health alert (only with `[mqtt]`).
    #[serde(default = "default_broker_unreachable_after")]
    pub broker_unreachable_after: HumanDuration,
    /// Where LED-class devices live; tests point this at a directory shaped like sysfs.
    #[serde(default = "default_led_class_dir")]
    pub led_class_dir: PathBuf,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            gateway: None,
            acknowledge_tag: None,
            maintenance_latching: true,
            max_shelve: default_max_shelve(),
            device_down_after: default_device_down_after(),
            outbox_filling_percent: default_outbox_filling_percent(),
            broker_unreachable_after: default_broker_unreachable_after(),
            led_class_dir: default_led_class_dir(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_max_shelve() -> HumanDuration {
    HumanDuration::from_millis(8 * 3_600_000)
}
fn default_device_down_after() -> HumanDuration {
    HumanDuration::from_millis(30_000)
}
fn default_outbox_filling_percent() -> u8 {
    80
}
fn default_broker_unreachable_after() -> HumanDuration {
    HumanDuration::from_millis(300_000)
}
fn default_led_class_dir() -> PathBuf {
    "/sys/class/leds".into()
}

/// `[[limits]]` as written: alarm limits on one numeric tag, or a discrete alarm (`alarm_when`) on
/// a bool tag.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub tag: String,
    pub hi_hi: Option<f64>,
    pub hi: Option<f64>,
    pub lo: Option<f64>,
    pub lo_lo: Option<f64>,
    /// A discrete alarm, raised while the tag is true (or false); a number counts as true when it
    /// is not zero. Instead of the four limits.
    pub alarm_when: Option<bool>,
    /// Severity of the discrete alarm (default high).
    pub severity: Option<Severity>,
    /// How far the value must come back inside a limit before its alert clears (engineering
    /// units), so that a value hovering at the limit does not chatter.
    #[serde(default)]
    pub deadband: f64,
    /// How long the value must stay beyond a limit before the alert is raised.
    #[serde(default = "zero")]
    pub on_delay: HumanDuration,
    /// How long the value must stay back (inside by more than the deadband) before the alert
    /// clears, so that a value dipping back for a moment does not clear and raise it again.
    #[serde(default = "zero")]
    pub off_delay: HumanDuration,
    /// Alerts stay (cleared-unacknowledged) until acknowledged.
    #[serde(default)]
    pub latching: bool,
    /// Severity of hi_hi and lo_lo alerts.
    #[serde(default = "high")]
    pub severity_hi_hi: Severity,
    /// Severity of hi and lo alerts.
    #[serde(default = "medium")]
    pub severity_hi: Severity,
}

fn zero() -> HumanDuration {
    HumanDuration::from_millis(0)
}
fn high() -> Severity {
    Severity::High
}
fn medium() -> Severity {
    Severity::Medium
}

/// Which limit of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    HiHi,
    Hi,
    Lo,
    LoLo,
    /// A discrete alarm; its [`Limit::value`] is the alarm state, 1 (true) or 0 (false).
    Alarm,
}

impl LimitKind {
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::HiHi => "hi_hi",
            LimitKind::Hi => "hi",
            LimitKind::Lo => "lo",
            LimitKind::LoLo => "lo_lo",
            LimitKind::Alarm => "alarm",
        }
    }

    /// Whether the alert is raised above the limit (else below).
    pub fn is_high(self) -> bool {
        matches!(self, LimitKind::HiHi | LimitKind::Hi)
    }
}

/// One validated limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub kind: LimitKind,
    pub value: f64,
    pub severity: Severity,
}

/// A validated `[[limits]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TagLimits {
    pub tag: String,
    pub tag_index: TagIndex,
    pub unit: Option<String>,
    pub limits: Vec<Limit>,
    pub deadband: f64,
    pub on_delay: Duration,
    pub off_delay: Duration,
    pub latching: bool,
}

/// `[[outputs]]` as written: exactly one of `led`, `gpio`, `modbus`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub name: String,
    /// A Linux LED-class device: its name under `led_class_dir` (`/sys/class/leds/<led>`).
    pub led: Option<String>,
    pub gpio: Option<GpioConfig>,
    pub modbus: Option<ModbusOutputConfig>,
    /// Pattern while no indication applies (`steady` for an "all is well" green light).
    #[serde(default = "off")]
    pub idle: Pattern,
    /// Pattern set when the agent stops.
    #[serde(default = "off")]
    pub on_shutdown: Pattern,
}

fn off() -> Pattern {
    Pattern::Off
}

/// A GPIO line, by chip and offset or by its line name.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct GpioConfig {
    /// `/dev/gpiochipN` or `gpiochipN`; required with `line`.
    pub chip: Option<String>,
    /// Line offset on the chip.
    pub line: Option<u32>,
    /// Line name as the device tree gives it (found on any chip); instead of chip + line.
    pub name: Option<String>,
    #[serde(default)]
    pub active_low: bool,
}

/// A coil or holding register of a configured Modbus device.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ModbusOutputConfig {
    /// A `[[devices]]` name.
    pub device: String,
    /// In the device's addressing convention.
    pub address: u32,
    /// `coil` or `holding_register` (implied by Modicon addresses).
    pub table: Option<Table>,
    /// For a register: the value written for each pattern (the PLC does the blinking). Default
    /// off = 0, steady = 1, slow_blink = 2, fast_blink = 3. A coil blinks by being rewritten.
    pub values: Option<PatternValues>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PatternValues {
    pub off: u16,
    pub steady: u16,
    pub slow_blink: u16,
    pub fast_blink: u16,
}

impl Default for PatternValues {
    fn default() -> Self {
        PatternValues {
            off: 0,
            steady: 1,
            slow_blink: 2,
            fast_blink: 3,
        }
    }
}

impl PatternValues {
    pub fn of(&self, pattern: Pattern) -> u16 {
        match pattern {
            Pattern::Off => self.off,
            Pattern::Steady => self.steady,
            Pattern::SlowBlink => self.slow_blink,
            Pattern::FastBlink => self.fast_blink,
        }
    }
}

/// A validated output.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub name: String,
    pub target: OutputTarget,
    pub idle: Pattern,
    pub on_shutdown: Pattern,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputTarget {
    /// The LED's directory (`<led_class_dir>/<name>`).
    Led(PathBuf),
    Gpio {
        line: GpioLine,
        active_low: bool,
    },
    ModbusCoil {
        device: usize,
        address: u16,
    },
    ModbusRegister {
        device: usize,
        address: u16,
        values: PatternValues,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum GpioLine {
    Offset { chip: PathBuf, offset: u32 },
    Named(String),
}

/// Which alerts an indication matches by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StateFilter {
    /// Active or cleared, not yet acknowledged.
    Unacknowledged,
    /// Active and acknowledged.
    Acknowledged,
    /// Active, acknowledged or not.
    Active,
    /// Cleared but latched until acknowledged.
    ClearedUnacknowledged,
    /// Any alert that is not shelved.
    #[default]
    Any,
}

/// `[[indications]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct IndicationConfig {
    pub output: String,
    /// Severities matched (all when absent).
    #[serde(default)]
    pub severity: Vec<Severity>,
    #[serde(default)]
    pub state: StateFilter,
    pub pattern: Pattern,
}

/// A validated indication; for each output the first matching indication in file order wins.
#[derive(Debug, Clone, PartialEq)]
pub struct Indication {
    pub output: usize,
    pub severities: Vec<Severity>,
    pub state: StateFilter,
    pub pattern: Pattern,
}

/// Everything local alerting runs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerting {
    pub acknowledge_tag: Option<(String, TagIndex)>,
    pub maintenance_latching: bool,
    pub max_shelve: Duration,
    pub device_down_after: Duration,
    pub outbox_filling_percent: u8,
    pub broker_unreachable_after: Duration,
    pub limits: Vec<TagLimits>,
    pub outputs: Vec<Output>,
    pub indications: Vec<Indication>,
}

impl Alerting {
    /// Whether alerting reads samples (limits or an acknowledge input).
    pub fn needs_samples(&self) -> bool {
        !self.limits.is_empty() || self.acknowledge_tag.is_some()
    }
}

/// A built-in gateway profile: its name, what it is, and its `[[outputs]]` in TOML.
pub struct GatewayProfile {
    pub name: &'static str,
    pub text: &'static str,
}

pub const GATEWAY_PROFILES: &[GatewayProfile] = &[
    GatewayProfile {
        name: "raspberry-pi",
        text: include_str!("../gateways/raspberry-pi.toml"),
    },
    GatewayProfile {
        name: "siemens-iot2050",
        text: include_str!("../gateways/siemens-iot2050.toml"),
    },
    GatewayProfile {
        name: "beaglebone-black",
        text: include_str!("../gateways/beaglebone-black.toml"),
    },
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    outputs: Vec<OutputConfig>,
}

/// A profile's outputs (the profiles are tested to parse).
pub fn profile_outputs(name: &str) -> Option<Vec<OutputConfig>> {
    let profile = GATEWAY_PROFILES.iter().find(|p| p.name == name)?;
    toml::from_str::<ProfileFile>(profile.text)
        .ok()
        .map(|f| f.outputs)
}

pub(crate) struct AlertParts<'a> {
    pub alerts: &'a AlertsConfig,
    pub limits: &'a [(usize, LimitConfig)],
    pub outputs: &'a [(usize, OutputConfig)],
    pub indications: &'a [(usize, IndicationConfig)],
}

/// Where an output came from, for error positions.
enum Origin {
    File(usize),
    Profile,
}

pub(crate) fn validate(
    check: &mut Checker<'_, '_>,
    parts: &AlertParts<'_>,
    tags: &TagDirectory<'_>,
    devices: &[Device],
) -> Alerting {
    let alerts = parts.alerts;
    let at = |key| vec![Seg::Key("alerts"), Seg::Key(key)];
    let component = "alerts";
    let acknowledge_tag =
        alerts
            .acknowledge_tag
            .as_ref()
            .and_then(|name| match tags.lookup(name) {
                Ok((index, _, _)) => Some((name.clone(), index)),
                Err(Some(message)) => {
                    check.err(&at("acknowledge_tag"), component, message);
                    None
                }
                Err(None) => None,
            });
    if !(1..=100).contains(&alerts.outbox_filling_percent) {
        check.err(
            &at("outbox_filling_percent"),
            component,
            "outbox_filling_percent must be 1–100",
        );
    }
    for (key, value) in [
        ("max_shelve", alerts.max_shelve),
        ("device_down_after", alerts.device_down_after),
        ("broker_unreachable_after", alerts.broker_unreachable_after),
    ] {
        if value.get() < Duration::from_secs(1) {
            check.err(&at(key), component, format!("{key} must be at least 1s"));
        }
    }

    let mut limited = HashSet::new();
    let mut limits = Vec::new();
    for (i, limit) in parts.limits {
        // One entry per tag: its limits are judged together (the deadband and on-delay are per
        // tag), and a second entry would otherwise replace the first.
        if !limited.insert(limit.tag.as_str()) {
            check.err(
                &[Seg::Key("limits"), Seg::Index(*i), Seg::Key("tag")],
                &format!("limits for {:?}", limit.tag),
                "another [[limits]] entry has this tag; give all its limits in one entry",
            );
            continue;
        }
        limits.extend(validate_limit(check, *i, limit, tags));
    }

    // Profile outputs first, so that the file's own outputs of the same name replace them.
    let mut written: Vec<(Origin, &OutputConfig)> = Vec::new();
    let profile = alerts.gateway.as_ref().and_then(|name| {
        let outputs = profile_outputs(name);
        if outputs.is_none() {
            let known: Vec<&str> = GATEWAY_PROFILES.iter().map(|p| p.name).collect();
            check.err(
                &at("gateway"),
                component,
                format!("unknown gateway {name:?}; built in: {}", known.join(", ")),
            );
        }
        outputs
    });
    let own: HashSet<&str> = parts.outputs.iter().map(|(_, o)| o.name.as_str()).collect();
    if let Some(profile) = &profile {
        written.extend(
            profile
                .iter()
                .filter(|o| !own.contains(o.name.as_str()))
                .map(|o| (Origin::Profile, o)),
        );
    }
    written.extend(parts.outputs.iter().map(|(i, o)| (Origin::File(*i), o)));
    let mut names = HashSet::new();
    let mut outputs = Vec::new();
    let mut invalid_outputs = HashSet::new();
    for (origin, config) in written {
        let base = match origin {
            Origin::File(i) => vec![Seg::Key("outputs"), Seg::Index(i)],
            Origin::Profile => vec![Seg::Key("alerts"), Seg::Key("gateway")],
        };
        let component = format!("output {:?}", config.name);
        let before = check.errors.len();
        if config.name.trim().is_empty() {
            check.err(&key(&base, "name"), &component, "name must not be empty");
        } else if !names.insert(config.name.clone()) {
            check.err(
                &key(&base, "name"),
                &component,
                "another output has this name",
            );
        }
        let target = validate_target(
            check,
            &base,
            &component,
            config,
            &alerts.led_class_dir,
            devices,
        );
        match target {
            Some(target) if check.errors.len() == before => outputs.push(Output {
                name: config.name.clone(),
                target,
                idle: config.idle,
                on_shutdown: config.on_shutdown,
            }),
            _ => {
                invalid_outputs.insert(config.name.clone());
            }
        }
    }

    let by_name: HashMap<&str, usize> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();
    let mut indications = Vec::new();
    for (i, config) in parts.indications {
        let base = [Seg::Key("indications"), Seg::Index(*i)];
        let component = format!("indication for {:?}", config.output);
        match by_name.get(config.output.as_str()) {
            Some(&output) => indications.push(Indication {
                output,
                severities: config.severity.clone(),
                state: config.state,
                pattern: config.pattern,
            }),
            None if invalid_outputs.contains(&config.output) => {}
            None => {
                let mut known: Vec<&str> = by_name.keys().copied().collect();
                known.sort_unstable();
                check.err(
                    &key(&base, "output"),
                    &component,
                    format!(
                        "no output named {:?} (outputs: {})",
                        config.output,
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        if config.pattern == Pattern::Off {
            check.err(
                &key(&base, "pattern"),
                &component,
                "pattern off lights nothing; remove the indication or set the output's idle pattern",
            );
        }
    }

    Alerting {
        acknowledge_tag,
        maintenance_latching: alerts.maintenance_latching,
        max_shelve: alerts.max_shelve.get(),
        device_down_after: alerts.device_down_after.get(),
        outbox_filling_percent: alerts.outbox_filling_percent,
        broker_unreachable_after: alerts.broker_unreachable_after.get(),
        limits,
        outputs,
        indications,
    }
}

fn key<'a>(base: &[Seg<'a>], key: &'a str) -> Vec<Seg<'a>> {
    let mut path = base.to_vec();
    path.push(Seg::Key(key));
    path
}

fn validate_limit(
    check: &mut Checker<'_, '_>,
    index: usize,
    config: &LimitConfig,
    tags: &TagDirectory<'_>,
) -> Option<TagLimits> {
    let base = [Seg::Key("limits"), Seg::Index(index)];
    let component = format!("limits for {:?}", config.tag);
    let before = check.errors.len();
    let discrete = config.alarm_when;
    let found = match tags.lookup(&config.tag) {
        Ok((index, unit, None)) => Some((index, unit)),
        Ok((index, unit, Some("bool"))) if discrete.is_some() => Some((index, unit)),
        Ok((_, _, Some(kind))) => {
            let hint = if kind == "bool" {
                "; for a discrete alarm give alarm_when = true (or false)"
            } else {
                ""
            };
            check.err(
                &key(&base, "tag"),
                &component,
                format!("tag {:?} is not numeric ({kind}){hint}", config.tag),
            );
            None
        }
        Err(message) => {
            if let Some(message) = message {
                check.err(&key(&base, "tag"), &component, message);
            }
            None
        }
    };
    let mut limits = Vec::new();
    if let Some(when) = discrete {
        limits.push(Limit {
            kind: LimitKind::Alarm,
            value: f64::from(u8::from(when)),
            severity: config.severity.unwrap_or(Severity::High),
        });
        let analog = [
            ("hi_hi", config.hi_hi),
            ("hi", config.hi),
            ("lo", config.lo),
            ("lo_lo", config.lo_lo),
        ];
        for (name, _) in analog.iter().filter(|(_, value)| value.is_some()) {
            check.err(
                &key(&base, name),
                &component,
                "a discrete alarm (alarm_when) takes no hi_hi, hi, lo or lo_lo; give them in a [[limits]] entry of a numeric tag",
            );
        }
        if config.deadband != 0.0 {
            check.err(
                &key(&base, "deadband"),
                &component,
                "a discrete alarm (alarm_when) has no deadband",
            );
        }
    } else if config.severity.is_some() {
        check.err(
            &key(&base, "severity"),
            &component,
            "severity applies to a discrete alarm (alarm_when); limits take severity_hi and severity_hi_hi",
        );
    }
    for (kind, value, severity) in [
        (LimitKind::HiHi, config.hi_hi, config.severity_hi_hi),
        (LimitKind::Hi, config.hi, config.severity_hi),
        (LimitKind::Lo, config.lo, config.severity_hi),
        (LimitKind::LoLo, config.lo_lo, config.severity_hi_hi),
    ] {
        if let Some(value) = value {
            if !value.is_finite() {
                check.err(
                    &key(&base, kind.name()),
                    &component,
                    "limit must be a finite number",
                );
            }
            limits.push(Limit {
                kind,
                value,
                severity,
            });
        }
    }
    if limits.is_empty() {
        check.err(
            &base,
            &component,
            "give at least one of hi_hi, hi, lo, lo_lo (or alarm_when for a discrete alarm)",
        );
    }
    let value_of = |kind| {
        limits
            .iter()
            .find(|l: &&Limit| l.kind == kind)
            .map(|l| l.value)
    };
    let order = [
        LimitKind::LoLo,
        LimitKind::Lo,
        LimitKind::Hi,
        LimitKind::HiHi,
    ];
    let present: Vec<(LimitKind, f64)> = order
        .iter()
        .filter_map(|&k| value_of(k).map(|v| (k, v)))
        .collect();
    for pair in present.windows(2) {
        if pair[0].1 >= pair[1].1 {
            check.err(
                &key(&base, pair[1].0.name()),
                &component,
                format!(
                    "{} ({}) must be above {} ({})",
                    pair[1].0.name(),
                    pair[1].1,
                    pair[0].0.name(),
                    pair[0].1
                ),
            );
        }
    }
    if !(config.deadband.is_finite() && config.deadband >= 0.0) {
        check.err(
            &key(&base, "deadband"),
            &component,
            "deadband must be zero or positive",
        );
    }
    let (tag_index, unit) = found?;
    (check.errors.len() == before).then(|| TagLimits {
        tag: config.tag.clone(),
        tag_index,
        unit: unit.map(str::to_string),
        limits,
        deadband: config.deadband,
        on_delay: config.on_delay.get(),
        off_delay: config.off_delay.get(),
        latching: config.latching,
    })
}

fn validate_target(
    check: &mut Checker<'_, '_>,
    base: &[Seg<'_>],
    component: &str,
    config: &OutputConfig,
    led_class_dir: &std::path::Path,
    devices: &[Device],
) -> Option<OutputTarget> {
    let given = [
        config.led.is_some(),
        config.gpio.is_some(),
        config.modbus.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        check.err(
            &key(base, "name"),
            component,
            "give exactly one of led, gpio, modbus",
        );
        return None;
    }
    if let Some(led) = &config.led {
        let valid = !led.is_empty() && led != "." && led != ".." && !led.contains('/');
        if !valid {
            check.err(
                &key(base, "led"),
                component,
                format!("{led:?} is not an LED name (the directory name under /sys/class/leds, such as \"green:status\")"),
            );
            return None;
        }
        return Some(OutputTarget::Led(led_class_dir.join(led)));
    }
    if let Some(gpio) = &config.gpio {
        let gpio_at = key(base, "gpio");
        let line = match (&gpio.chip, gpio.line, &gpio.name) {
            (Some(chip), Some(offset), None) => {
                let path = if chip.starts_with('/') {
                    PathBuf::from(chip)
                } else {
                    PathBuf::from("/dev").join(chip)
                };
                let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
                if !file.starts_with("gpiochip") || chip.ends_with('/') {
                    check.err(
                        &gpio_at,
                        component,
                        format!("chip {chip:?} is not a GPIO character device (/dev/gpiochipN or gpiochipN)"),
                    );
                    return None;
                }
                GpioLine::Offset { chip: path, offset }
            }
            (None, None, Some(name)) if !name.is_empty() => GpioLine::Named(name.clone()),
            _ => {
                check.err(
                    &gpio_at,
                    component,
                    "give chip and line (offset), or the line's name",
                );
                return None;
            }
        };
        return Some(OutputTarget::Gpio {
            line,
            active_low: gpio.active_low,
        });
    }
    let modbus = config.modbus.as_ref()?;
    let modbus_at = key(base, "modbus");
    let Some(device) = devices.iter().position(|d| d.name == modbus.device) else {
        check.err(
            &modbus_at,
            component,
            format!("no Modbus device named {:?} in [[devices]]", modbus.device),
        );
        return None;
    };
    match resolve_address(devices[device].addressing, modbus.table, modbus.address) {
        Ok((Table::Coil, address)) => {
            if modbus.values.is_some() {
                check.err(
                    &modbus_at,
                    component,
                    "values applies to a holding register; a coil is on or off and blinks by being rewritten",
                );
            }
            Some(OutputTarget::ModbusCoil { device, address })
        }
        Ok((Table::HoldingRegister, address)) => Some(OutputTarget::ModbusRegister {
            device,
            address,
            values: modbus.values.unwrap_or_default(),
        }),
        Ok((table, _)) => {
            check.err(
                &modbus_at,
                component,
                format!(
                    "{} tables are read-only; use a coil or a holding register",
                    table.name()
                ),
            );
            None
        }
        Err(message) => {
            check.err(&modbus_at, component, message);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gateway_profile_parses_and_names_its_outputs_uniquely() {
        for profile in GATEWAY_PROFILES {
            let outputs = profile_outputs(profile.name)
                .unwrap_or_else(|| panic!("profile {} does not parse", profile.name));
            assert!(!outputs.is_empty(), "{}", profile.name);
            let names: HashSet<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
            assert_eq!(names.len(), outputs.len(), "{}", profile.name);
        }
    }
}
