//! `[[lines]]`: production lines, judged by OEE in the terms of ISO 22400-2.
//!
//! A line names the tags it is judged from (machine state, part counters, ideal cycle time,
//! optionally downtime reasons, the product, energy and material), its shift calendar in an IANA
//! time zone read from the gateway's tzdata, and its loss thresholds. Validation resolves every
//! tag to its index in plan order and checks that it can carry what it stands for (a counter must
//! be an integer, a running flag a bool or an integer), that the state map leaves no value
//! unmapped, that shifts do not overlap and breaks lie inside their shift, and that the time zone
//! exists. [`crate::calendar`] turns the calendar into shift instances.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::assets::{TagDirectory, TagIndex, TagShape};
use crate::calendar::Calendar;
use crate::duration::HumanDuration;
use crate::modbus::Checker;
use crate::names::{self, TopicUse};
use crate::source::Seg;

/// One production line as written.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LineConfig {
    /// The line's name: a topic level and the name in reports.
    pub name: String,
    /// Machine state from one tag: `state = { tag = "press.state", map = { "1" = "running",
    /// "2" = "idle", "3" = "fault" }, other = "fault" }`.
    pub state: Option<StateTagConfig>,
    /// Machine state from flags instead: the running flag (a bool or an integer, nonzero = running)…
    pub running: Option<String>,
    /// …and optionally a fault flag (an unplanned stop)…
    pub fault: Option<String>,
    /// …and a planned-stop flag.
    pub planned: Option<String>,
    /// Downtime reason codes: `reason = { tag = "press.reason", codes = { "12" = "jam at infeed" } }`.
    pub reason: Option<ReasonConfig>,
    /// Part counters: at least two of total, good and reject.
    pub total: Option<CounterConfig>,
    pub good: Option<CounterConfig>,
    pub reject: Option<CounterConfig>,
    /// The ideal cycle time of one part (or `ideal_rate`, parts per hour).
    pub ideal_cycle: Option<HumanDuration>,
    pub ideal_rate: Option<f64>,
    /// Ideal cycle times per product: `product = { tag = "press.recipe", ideal_cycle = { "1" =
    /// "1.2s", "2" = "900ms" } }`; a product not listed runs at the line's ideal cycle.
    pub product: Option<ProductConfig>,
    /// An energy meter: a kWh counter or a kW power reading (integrated over time).
    pub energy: Option<EnergyConfig>,
    /// Material consumption counters (kg of resin, m of wire…).
    #[serde(default)]
    pub materials: Vec<MaterialConfig>,
    /// The IANA time zone of the shift calendar, e.g. "Europe/Berlin" (from the gateway's tzdata).
    pub time_zone: String,
    #[serde(default)]
    pub shifts: Vec<ShiftConfig>,
    /// Plant holidays (`"2026-12-25"`): no shift starts on them.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// Stops shorter than this are micro-stops: a performance loss, not an availability loss.
    #[serde(default = "default_micro_stop")]
    pub micro_stop: HumanDuration,
    /// A state must hold this long before it counts (flicker of the state tag is ignored).
    #[serde(default = "default_debounce")]
    pub debounce: HumanDuration,
    /// Rejects within this time of production starting (shift start, after a changeover or a long
    /// stop) are start-up rejects; later ones are production rejects.
    #[serde(default = "default_startup_window")]
    pub startup_window: HumanDuration,
    /// How often the running report of the current shift is sent.
    #[serde(default = "default_report_interval")]
    pub report_interval: HumanDuration,
    #[serde(default)]
    pub alerts: LineAlertsConfig,
}

fn default_micro_stop() -> HumanDuration {
    HumanDuration::from_millis(5 * 60_000)
}
fn default_debounce() -> HumanDuration {
    HumanDuration::from_millis(2_000)
}
fn default_startup_window() -> HumanDuration {
    HumanDuration::from_millis(10 * 60_000)
}
fn default_report_interval() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct StateTagConfig {
    pub tag: String,
    /// Value → state (running, idle, starved, blocked, planned_stop, changeover, setup, fault).
    pub map: BTreeMap<String, String>,
    /// The state of every value not in `map`; without it, the map must cover every value from
    /// its lowest to its highest.
    pub other: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonConfig {
    pub tag: String,
    /// Code → reason name; a code not listed is reported as "code N".
    #[serde(default)]
    pub codes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CounterConfig {
    pub tag: String,
    /// Roll-over width in bits (16 or 32); or give `max`.
    pub width: Option<u8>,
    /// The highest value before the counter rolls over to 0 (e.g. 32767).
    pub max: Option<u64>,
    /// The PLC may reset the counter to zero (at a shift or a batch); without roll-over settings
    /// this is the counter's only way back.
    #[serde(default)]
    pub reset: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    pub tag: String,
    pub ideal_cycle: BTreeMap<String, HumanDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct EnergyConfig {
    pub tag: String,
    /// `counter` (kWh, with `width`/`max`/`reset` as for part counters) or `power` (kW).
    pub kind: EnergyKindConfig,
    pub width: Option<u8>,
    pub max: Option<u64>,
    #[serde(default)]
    pub reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EnergyKindConfig {
    Counter,
    Power,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MaterialConfig {
    pub name: String,
    pub tag: String,
    /// The counter's unit (kg, m, pcs…).
    pub unit: String,
    pub width: Option<u8>,
    pub max: Option<u64>,
    #[serde(default)]
    pub reset: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ShiftConfig {
    pub name: String,
    /// Local start time, "06:00".
    pub start: String,
    /// Local end time; an end at or before the start ends the next day (a night shift).
    pub end: String,
    /// Days the shift starts on ("mon".."sun"); every day when absent.
    pub days: Option<Vec<String>>,
    /// Planned breaks (planned downtime), local times inside the shift.
    #[serde(default)]
    pub breaks: Vec<BreakConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BreakConfig {
    pub start: String,
    pub end: String,
}

/// Alerts about the line (through the alert lifecycle and its outputs).
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct LineAlertsConfig {
    /// The line stopped (not planned) longer than this.
    pub stopped_longer_than: Option<HumanDuration>,
    /// The running shift's OEE below this fraction (0..1)…
    pub oee_below: Option<f64>,
    /// …once the shift has run this long (default 1h).
    pub oee_after: Option<HumanDuration>,
    /// The running shift's reject rate above this fraction (0..1).
    pub reject_rate_above: Option<f64>,
}

/// What a machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Running,
    Idle,
    Starved,
    Blocked,
    PlannedStop,
    Changeover,
    Setup,
    Fault,
}

impl MachineState {
    pub const ALL: [MachineState; 8] = [
        MachineState::Running,
        MachineState::Idle,
        MachineState::Starved,
        MachineState::Blocked,
        MachineState::PlannedStop,
        MachineState::Changeover,
        MachineState::Setup,
        MachineState::Fault,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MachineState::Running => "running",
            MachineState::Idle => "idle",
            MachineState::Starved => "starved",
            MachineState::Blocked => "blocked",
            MachineState::PlannedStop => "planned_stop",
            MachineState::Changeover => "changeover",
            MachineState::Setup => "setup",
            MachineState::Fault => "fault",
        }
    }

    pub fn parse(text: &str) -> Option<MachineState> {
        MachineState::ALL.into_iter().find(|s| s.name() == text)
    }

    /// An unplanned stop: a micro-stop or a breakdown by its length.
    pub fn is_unplanned_stop(self) -> bool {
        matches!(
            self,
            MachineState::Fault
                | MachineState::Idle
                | MachineState::Starved
                | MachineState::Blocked
        )
    }

    pub fn is_setup(self) -> bool {
        matches!(self, MachineState::Changeover | MachineState::Setup)
    }
}

/// Where the machine state comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum StateSource {
    Tag {
        tag: TagIndex,
        map: BTreeMap<i64, MachineState>,
        other: Option<MachineState>,
    },
    Flags {
        running: TagIndex,
        fault: Option<TagIndex>,
        planned: Option<TagIndex>,
    },
}

/// How a counter comes back to a lower value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSpec {
    pub tag: TagIndex,
    /// The value after which it rolls over to 0.
    pub max: Option<u64>,
    /// The PLC may reset it to zero.
    pub reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Energy {
    /// kWh, counting up.
    Counter(CounterSpec),
    /// kW, integrated over time.
    Power(TagIndex),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Material {
    pub name: String,
    pub unit: String,
    pub counter: CounterSpec,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LineAlerts {
    pub stopped_longer_than: Option<Duration>,
    pub oee_below: Option<f64>,
    pub oee_after: Duration,
    pub reject_rate_above: Option<f64>,
}

/// A validated line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub state: StateSource,
    pub reason: Option<(TagIndex, BTreeMap<i64, String>)>,
    pub total: Option<CounterSpec>,
    pub good: Option<CounterSpec>,
    pub reject: Option<CounterSpec>,
    pub ideal_cycle: Duration,
    pub product: Option<(TagIndex, BTreeMap<i64, Duration>)>,
    pub energy: Option<Energy>,
    pub materials: Vec<Material>,
    pub calendar: Calendar,
    pub micro_stop: Duration,
    pub debounce: Duration,
    pub startup_window: Duration,
    pub report_interval: Duration,
    pub alerts: LineAlerts,
    /// Rejects come from a quality station's decisions (a line with a total counter only).
    pub rejects_from_quality: bool,
}

impl Line {
    /// The shortest ideal cycle of any product: the fastest the line can make parts.
    pub fn fastest_cycle(&self) -> Duration {
        self.product
            .iter()
            .flat_map(|(_, cycles)| cycles.values().copied())
            .chain([self.ideal_cycle])
            .min()
            .unwrap_or(self.ideal_cycle)
    }

    /// Every tag the line reads.
    pub fn tags(&self) -> Vec<TagIndex> {
        let mut tags = match &self.state {
            StateSource::Tag { tag, .. } => vec![*tag],
            StateSource::Flags {
                running,
                fault,
                planned,
            } => [Some(*running), *fault, *planned]
                .into_iter()
                .flatten()
                .collect(),
        };
        tags.extend(self.reason.as_ref().map(|(tag, _)| *tag));
        tags.extend(
            [self.total, self.good, self.reject]
                .iter()
                .flatten()
                .map(|c| c.tag),
        );
        tags.extend(self.product.as_ref().map(|(tag, _)| *tag));
        tags.extend(self.energy.map(|e| match e {
            Energy::Counter(c) => c.tag,
            Energy::Power(tag) => tag,
        }));
        tags.extend(self.materials.iter().map(|m| m.counter.tag));
        tags
    }
}

/// What a tag must be able to carry for its role in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any value (an id).
    Any,
    Integer,
    Flag,
    Number,
}

/// `inspected`: the lines a quality station names (their rejects may come from its decisions).
pub(crate) fn validate_lines(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    lines: &[(usize, LineConfig)],
    inspected: &HashSet<String>,
) -> Vec<Line> {
    let mut seen = HashSet::new();
    let mut valid = Vec::new();
    for (index, config) in lines {
        let before = check.errors.len();
        let mut v = SectionCheck::new(
            check,
            tags,
            format!("line {:?}", config.name),
            vec![Seg::Key("lines"), Seg::Index(*index)],
        );
        if let Some(problem) = names::topic_name_error("line name", &config.name, TopicUse::Level) {
            v.err(&["name"], problem);
        } else if !seen.insert(config.name.clone()) {
            v.err(&["name"], "another line has this name");
        }
        let line = v.line(config, inspected.contains(&config.name));
        if check.errors.len() == before {
            valid.extend(line);
        }
    }
    valid
}

/// Validation of one element of a section (a line, a quality station): where its keys are and
/// what it is called in errors.
pub(crate) struct SectionCheck<'c, 'a, 'b, 't> {
    check: &'c mut Checker<'a, 'b>,
    tags: &'c TagDirectory<'t>,
    component: String,
    base: Vec<Seg<'static>>,
}

impl<'c, 'a, 'b, 't> SectionCheck<'c, 'a, 'b, 't> {
    pub(crate) fn new(
        check: &'c mut Checker<'a, 'b>,
        tags: &'c TagDirectory<'t>,
        component: String,
        base: Vec<Seg<'static>>,
    ) -> Self {
        SectionCheck {
            check,
            tags,
            component,
            base,
        }
    }

    pub(crate) fn err(&mut self, keys: &[&str], message: impl Into<String>) {
        let segs: Vec<Seg<'_>> = keys.iter().map(|k| Seg::Key(k)).collect();
        self.err_at(&segs, message);
    }

    /// An error at `path` below the line.
    pub(crate) fn err_at(&mut self, path: &[Seg<'_>], message: impl Into<String>) {
        let mut full = self.base.clone();
        full.extend(path.iter().cloned());
        let component = self.component.clone();
        self.check.err(&full, &component, message);
    }

    fn line(&mut self, c: &LineConfig, inspected: bool) -> Option<Line> {
        let state = self.state(c);
        let reason = c.reason.as_ref().and_then(|r| {
            let tag = self.tag(&["reason", "tag"], &r.tag, Need::Integer)?;
            Some((tag, self.codes(&["reason", "codes"], &r.codes)?))
        });
        let total = self.counter(&["total"], c.total.as_ref());
        let good = self.counter(&["good"], c.good.as_ref());
        let reject = self.counter(&["reject"], c.reject.as_ref());
        let counted = [&c.total, &c.good, &c.reject]
            .iter()
            .filter(|c| c.is_some())
            .count();
        let rejects_from_quality = inspected && counted == 1 && c.total.is_some();
        if counted < 2 && !rejects_from_quality {
            self.err(&["name"], "a line needs at least two of the part counters total, good and reject (the third follows from them), or a `total` counter and a [[quality]] station that names the line (its rejects count)");
        }
        let ideal_cycle = self.ideal_cycle(c);
        let product = c.product.as_ref().and_then(|p| self.product(p));
        let energy = c.energy.as_ref().and_then(|e| self.energy(e));
        let materials = self.materials(&c.materials);
        let calendar =
            crate::calendar::validate(&mut |path, message| self.err_at(path, message), c);
        let alerts = self.alerts(&c.alerts);
        if c.debounce.get() >= c.micro_stop.get() {
            self.err(
                &["debounce"],
                "debounce must be shorter than micro_stop (a micro-stop would never be seen)",
            );
        }
        if c.report_interval.get() < Duration::from_secs(1) {
            self.err(&["report_interval"], "report_interval must be at least 1s");
        }
        Some(Line {
            name: c.name.clone(),
            state: state?,
            reason,
            total: total?,
            good: good?,
            reject: reject?,
            ideal_cycle: ideal_cycle?,
            product,
            energy,
            materials: materials?,
            calendar: calendar?,
            micro_stop: c.micro_stop.get(),
            debounce: c.debounce.get(),
            startup_window: c.startup_window.get(),
            report_interval: c.report_interval.get(),
            alerts,
            rejects_from_quality,
        })
    }

    fn state(&mut self, c: &LineConfig) -> Option<StateSource> {
        match (&c.state, &c.running) {
            (Some(_), Some(_)) | (None, None) => {
                self.err(&["name"], "give the machine state either as `state = { tag, map }` or as a `running` flag (with optional `fault` and `planned`), not both");
                None
            }
            (Some(state), None) => {
                if c.fault.is_some() || c.planned.is_some() {
                    self.err(
                        &["state"],
                        "`fault` and `planned` flags go with `running`, not with a state tag",
                    );
                }
                let tag = self.tag(&["state", "tag"], &state.tag, Need::Integer);
                let (map, other) = self.state_map(state)?;
                Some(StateSource::Tag {
                    tag: tag?,
                    map,
                    other,
                })
            }
            (None, Some(running)) => {
                let running = self.tag(&["running"], running, Need::Flag);
                let fault = c
                    .fault
                    .as_ref()
                    .map(|t| self.tag(&["fault"], t, Need::Flag));
                let planned = c
                    .planned
                    .as_ref()
                    .map(|t| self.tag(&["planned"], t, Need::Flag));
                Some(StateSource::Flags {
                    running: running?,
                    fault: fault.map(|f| f.ok_or(())).transpose().ok()?,
                    planned: planned.map(|p| p.ok_or(())).transpose().ok()?,
                })
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn state_map(
        &mut self,
        state: &StateTagConfig,
    ) -> Option<(BTreeMap<i64, MachineState>, Option<MachineState>)> {
        let names = MachineState::ALL.map(MachineState::name).join(", ");
        let mut map = BTreeMap::new();
        let mut ok = true;
        for (value, name) in &state.map {
            let Ok(code) = value.trim().parse::<i64>() else {
                self.err(
                    &["state", "map"],
                    format!("state map key {value:?} is not an integer"),
                );
                ok = false;
                continue;
            };
            match MachineState::parse(name) {
                Some(s) => {
                    map.insert(code, s);
                }
                None => {
                    self.err(
                        &["state", "map"],
                        format!("unknown state {name:?} for value {code}; states are {names}"),
                    );
                    ok = false;
                }
            }
        }
        let other = match state.other.as_deref().map(|o| (o, MachineState::parse(o))) {
            Some((_, Some(s))) => Some(s),
            Some((o, None)) => {
                self.err(
                    &["state", "other"],
                    format!("unknown state {o:?}; states are {names}"),
                );
                return None;
            }
            None => None,
        };
        if map.is_empty() && ok {
            self.err(&["state", "map"], "the state map is empty");
            return None;
        }
        if other.is_none() {
            let (lo, hi) = (*map.keys().next()?, *map.keys().next_back()?);
            let gaps: Vec<i64> = (lo..=hi).filter(|v| !map.contains_key(v)).take(5).collect();
            if !gaps.is_empty() {
                self.err(&["state", "map"], format!("the state map leaves {} unmapped between {lo} and {hi}: map them or set `other = \"<state>\"` for every value not listed", gaps.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")));
                return None;
            }
        }
        if !map.values().any(|s| *s == MachineState::Running) {
            self.err(&["state", "map"], "no value maps to \"running\"");
            return None;
        }
        ok.then_some((map, other))
    }

    fn codes(
        &mut self,
        keys: &[&str],
        codes: &BTreeMap<String, String>,
    ) -> Option<BTreeMap<i64, String>> {
        let mut out = BTreeMap::new();
        for (code, name) in codes {
            match code.trim().parse::<i64>() {
                Ok(n) => {
                    out.insert(n, name.clone());
                }
                Err(_) => {
                    self.err(keys, format!("code {code:?} is not an integer"));
                    return None;
                }
            }
        }
        Some(out)
    }

    pub(crate) fn tag(&mut self, keys: &[&str], name: &str, need: Need) -> Option<TagIndex> {
        let path: Vec<Seg<'_>> = keys.iter().map(|k| Seg::Key(k)).collect();
        self.tag_at(&path, name, need)
    }

    /// A tag by name at `path` below the element, checked for what it must carry.
    pub(crate) fn tag_at(&mut self, path: &[Seg<'_>], name: &str, need: Need) -> Option<TagIndex> {
        let (index, shape) = match self.tags.shape(name) {
            Ok(found) => found,
            Err(Some(problem)) => {
                self.err_at(path, problem);
                return None;
            }
            Err(None) => return None,
        };
        let problem = match (need, shape) {
            (_, TagShape::Untyped) | (Need::Any, _) => None,
            (Need::Integer, TagShape::Integer) => None,
            (Need::Integer, other) => Some(format!(
                "tag {name:?} is {} but must be an integer (a counter or a code)",
                other.describe()
            )),
            (Need::Flag, TagShape::Bool | TagShape::Integer) => None,
            (Need::Flag, other) => Some(format!(
                "tag {name:?} is {} but must be a bool or an integer flag",
                other.describe()
            )),
            (Need::Number, TagShape::Text | TagShape::Bool | TagShape::Block) => Some(format!(
                "tag {name:?} is {} but must be numeric",
                shape.describe()
            )),
            (Need::Number, _) => None,
        };
        match problem {
            Some(problem) => {
                self.err_at(path, problem);
                None
            }
            None => Some(index),
        }
    }

    /// A counter's spec; `Some(None)` when absent, `None` when invalid.
    fn counter(&mut self, key: &[&str], c: Option<&CounterConfig>) -> Option<Option<CounterSpec>> {
        let Some(c) = c else { return Some(None) };
        let mut keys = key.to_vec();
        keys.push("tag");
        let tag = self.tag(&keys, &c.tag, Need::Integer);
        let max = self.rollover(key, c.width, c.max)?;
        Some(Some(CounterSpec {
            tag: tag?,
            max,
            reset: c.reset,
        }))
    }

    /// The roll-over maximum from `width` or `max` (not both).
    fn rollover(
        &mut self,
        key: &[&str],
        width: Option<u8>,
        max: Option<u64>,
    ) -> Option<Option<u64>> {
        match (width, max) {
            (Some(_), Some(_)) => {
                self.err(key, "give `width` or `max`, not both");
                None
            }
            (Some(16), None) => Some(Some(u64::from(u16::MAX))),
            (Some(32), None) => Some(Some(u64::from(u32::MAX))),
            (Some(w), None) => {
                self.err(
                    key,
                    format!("width {w} is not a counter width: 16 or 32 (or give `max`)"),
                );
                None
            }
            (None, Some(0)) => {
                self.err(key, "max must be at least 1");
                None
            }
            (None, max) => Some(max),
        }
    }

    fn ideal_cycle(&mut self, c: &LineConfig) -> Option<Duration> {
        match (c.ideal_cycle, c.ideal_rate) {
            (Some(_), Some(_)) => {
                self.err(&["ideal_rate"], "give ideal_cycle or ideal_rate, not both");
                None
            }
            (Some(cycle), None) if !cycle.get().is_zero() => Some(cycle.get()),
            (None, Some(rate)) if rate.is_finite() && rate > 0.0 && rate <= 3_600_000.0 => {
                Some(Duration::from_secs_f64(3600.0 / rate))
            }
            (Some(_), None) => {
                self.err(&["ideal_cycle"], "ideal_cycle must be more than zero");
                None
            }
            (None, Some(_)) => {
                self.err(
                    &["ideal_rate"],
                    "ideal_rate must be a positive number of parts per hour",
                );
                None
            }
            (None, None) => {
                self.err(&["name"], "a line needs its ideal cycle time: ideal_cycle = \"1.2s\" or ideal_rate = 3000 (parts per hour)");
                None
            }
        }
    }

    fn product(&mut self, p: &ProductConfig) -> Option<(TagIndex, BTreeMap<i64, Duration>)> {
        let tag = self.tag(&["product", "tag"], &p.tag, Need::Integer);
        let mut cycles = BTreeMap::new();
        for (code, cycle) in &p.ideal_cycle {
            let Ok(code) = code.trim().parse::<i64>() else {
                self.err(
                    &["product", "ideal_cycle"],
                    format!("product code {code:?} is not an integer"),
                );
                return None;
            };
            if cycle.get().is_zero() {
                self.err(
                    &["product", "ideal_cycle"],
                    format!("product {code}: ideal cycle must be more than zero"),
                );
                return None;
            }
            cycles.insert(code, cycle.get());
        }
        Some((tag?, cycles))
    }

    fn energy(&mut self, e: &EnergyConfig) -> Option<Energy> {
        match e.kind {
            EnergyKindConfig::Counter => {
                let tag = self.tag(&["energy", "tag"], &e.tag, Need::Number);
                let max = self.rollover(&["energy"], e.width, e.max)?;
                Some(Energy::Counter(CounterSpec {
                    tag: tag?,
                    max,
                    reset: e.reset,
                }))
            }
            EnergyKindConfig::Power => {
                if e.width.is_some() || e.max.is_some() || e.reset {
                    self.err(&["energy"], "width, max and reset are for a kWh counter (kind = \"counter\"), not a power reading");
                }
                Some(Energy::Power(self.tag(
                    &["energy", "tag"],
                    &e.tag,
                    Need::Number,
                )?))
            }
        }
    }

    fn materials(&mut self, materials: &[MaterialConfig]) -> Option<Vec<Material>> {
        let mut out = Vec::new();
        let mut names = HashSet::new();
        let mut ok = true;
        for m in materials {
            if !names.insert(m.name.as_str()) {
                self.err(
                    &["materials"],
                    format!("material {:?} is listed twice", m.name),
                );
                ok = false;
            }
            let tag = self.tag(&["materials"], &m.tag, Need::Number);
            let max = self.rollover(&["materials"], m.width, m.max);
            match (tag, max) {
                (Some(tag), Some(max)) => out.push(Material {
                    name: m.name.clone(),
                    unit: m.unit.clone(),
                    counter: CounterSpec {
                        tag,
                        max,
                        reset: m.reset,
                    },
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn alerts(&mut self, a: &LineAlertsConfig) -> LineAlerts {
        for (key, fraction) in [
            ("oee_below", a.oee_below),
            ("reject_rate_above", a.reject_rate_above),
        ] {
            if fraction.is_some_and(|f| !(0.0..=1.0).contains(&f)) {
                self.err(
                    &["alerts", key],
                    format!("{key} is a fraction between 0 and 1 (0.6 for 60 %)"),
                );
            }
        }
        LineAlerts {
            stopped_longer_than: a.stopped_longer_than.map(HumanDuration::get),
            oee_below: a.oee_below,
            oee_after: a
                .oee_after
                .map_or(Duration::from_secs(3600), HumanDuration::get),
            reject_rate_above: a.reject_rate_above,
        }
    }
}
