//! From features to an [`Assessment`]: rule findings per dimension, failure probability (rules and,
//! when present, a model), the maintenance action with hysteresis, and the remaining-life estimate
//! from the asset's health trend.
//!
//! Invariants:
//! - The failure probability is never below the rule probability of a critical finding (zone D,
//!   over the limit, single phasing): no model can talk the agent out of a damaging condition.
//! - The action escalates as soon as the probability crosses a threshold and steps down only once
//!   it is `hysteresis` below it, so a value hovering at a threshold does not flap.
//! - Remaining life is only extrapolated from enough history ([`MIN_TREND_POINTS`] assessments)
//!   and a falling trend; otherwise the assessment says why there is no estimate.

use std::time::{Duration, SystemTime};

use firmware_config::{Asset, Scoring};
use heapless::Deque;
use serde::{Deserialize, Serialize};

use super::features::{self, Point};
use super::rules::{self, Dimension, Finding, CRITICAL_HEALTH};
use crate::vibration::VibrationReport;

/// Version of the [`Assessment`] JSON; bumped on any incompatible change.
pub const ASSESSMENT_SCHEMA: u32 = 1;

/// Assessments kept per asset for the health trend.
pub const TREND_CAPACITY: usize = 64;
/// Fewest assessments a remaining-life estimate is extrapolated from.
pub const MIN_TREND_POINTS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    RoutineMonitoring,
    ScheduledMaintenance,
    ImmediateMaintenance,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::RoutineMonitoring => "routine_monitoring",
            Action::ScheduledMaintenance => "scheduled_maintenance",
            Action::ImmediateMaintenance => "immediate_maintenance",
        }
    }

    pub fn priority(self) -> Priority {
        match self {
            Action::RoutineMonitoring => Priority::Low,
            Action::ScheduledMaintenance => Priority::Medium,
            Action::ImmediateMaintenance => Priority::High,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    Medium,
    High,
}

/// Health per dimension; `None` where the asset has no signal for it (or no data yet).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DimensionHealth {
    pub vibration: Option<f64>,
    pub thermal: Option<f64>,
    pub electrical: Option<f64>,
    pub pressure: Option<f64>,
}

impl DimensionHealth {
    fn set(&mut self, dimension: Dimension, health: f64) {
        let slot = match dimension {
            Dimension::Vibration => &mut self.vibration,
            Dimension::Thermal => &mut self.thermal,
            Dimension::Electrical => &mut self.electrical,
            Dimension::Pressure => &mut self.pressure,
        };
        *slot = Some(slot.map_or(health, |h: f64| h.min(health)));
    }

    fn present(&self) -> impl Iterator<Item = f64> {
        [self.vibration, self.thermal, self.electrical, self.pressure]
            .into_iter()
            .flatten()
    }
}

/// One asset's condition at one moment: the stable, versioned record later stages store, publish
/// and display (documented field by field in the README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub schema: u32,
    pub asset: String,
    pub asset_type: String,
    /// RFC 3339 UTC with milliseconds.
    pub timestamp: String,
    pub health: DimensionHealth,
    /// 0..1: the worst dimension weighted 60 %, the mean of all 40 %.
    pub overall_health: f64,
    /// 0..1, rules and model combined.
    pub failure_probability: f64,
    pub rule_probability: f64,
    pub model_probability: Option<f64>,
    pub action: Action,
    pub priority: Priority,
    /// When to act: now for immediate maintenance, else where the health trend reaches the critical
    /// level. `None` with `remaining_life_note` saying why.
    pub maintenance_due: Option<String>,
    /// Hours until the health trend reaches zero.
    pub remaining_life_hours: Option<f64>,
    pub remaining_life_note: Option<String>,
    /// One sentence per rule finding, worst first.
    pub reasons: Vec<String>,
    /// The model's inputs at this moment, so that a fleet can retrain the model on its own
    /// run-to-failure history. Added last (records are stored with postcard): a record stored
    /// before it existed reads with none (see [`stored_without`]).
    /// Boxed: the nine options would double the size of every report in flight.
    #[serde(default, deserialize_with = "features_unless_stored_without")]
    pub features: Box<Features>,
    /// What the asset's latest waveform showed (assets with `[assets.waveform]`): time features,
    /// ISO velocity, the peak table and the diagnoses. Added after `features`, the same way.
    #[serde(default, deserialize_with = "vibration_unless_stored_without")]
    pub vibration: Option<Box<VibrationReport>>,
}

/// The model features (named as in the model manifests and `models/train.py`), `None` where the
/// asset has no fresh data or no configuration for one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    pub vibration_severity: Option<f64>,
    pub vibration_trend: Option<f64>,
    pub bearing_temperature_ratio: Option<f64>,
    pub bearing_temperature_trend: Option<f64>,
    pub winding_temperature_ratio: Option<f64>,
    pub current_unbalance: Option<f64>,
    pub current_load: Option<f64>,
    pub pressure_deviation: Option<f64>,
    pub pressure_fluctuation: Option<f64>,
}

/// What an assessment read from the store lacks because it was stored by an older release:
/// postcard has no field names, so the reader is told by the store format's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StoredWithout {
    /// The current format.
    Nothing,
    /// Store format 3: before `vibration`.
    Vibration,
    /// Store format 2: before `features` (and `vibration`).
    Features,
}

thread_local! {
    static STORED_WITHOUT: std::cell::Cell<StoredWithout> =
        const { std::cell::Cell::new(StoredWithout::Nothing) };
}

/// Reads assessments stored by an older release: within `read`, the fields `missing` names (and
/// the ones added after them) are not read but left empty.
pub fn stored_without<T>(missing: StoredWithout, read: impl FnOnce() -> T) -> T {
    STORED_WITHOUT.set(missing);
    let value = read();
    STORED_WITHOUT.set(StoredWithout::Nothing);
    value
}

fn features_unless_stored_without<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Box<Features>, D::Error> {
    if STORED_WITHOUT.get() >= StoredWithout::Features {
        Ok(Box::default())
    } else {
        Features::deserialize(deserializer).map(Box::new)
    }
}

fn vibration_unless_stored_without<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Box<VibrationReport>>, D::Error> {
    if STORED_WITHOUT.get() >= StoredWithout::Vibration {
        Ok(None)
    } else {
        Option::<Box<VibrationReport>>::deserialize(deserializer)
    }
}

/// What an assessment is made from: the rules' findings, the model's inputs and its output.
pub struct Evidence {
    pub found: Vec<Finding>,
    pub features: Features,
    pub model_probability: Option<f64>,
    pub vibration: Option<Box<VibrationReport>>,
}

/// What an asset's windows show at one moment. `None`/empty where a signal is not mapped or has
/// no fresh data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// RMS over the window, mm/s.
    pub vibration: Option<f64>,
    /// Trend of the vibration, mm/s per hour.
    pub vibration_per_hour: Option<f64>,
    pub bearing_temperature: Option<f64>,
    /// Trend of the bearing temperature, K per hour.
    pub bearing_rise_per_hour: Option<f64>,
    pub winding_temperature: Option<f64>,
    pub ambient_temperature: Option<f64>,
    /// Mean per phase.
    pub currents: heapless::Vec<f64, 3>,
    pub pressure_mean: Option<f64>,
    /// Standard deviation over mean.
    pub pressure_fluctuation: Option<f64>,
    /// The latest waveform's analysis, while fresh.
    pub waveform: Option<std::sync::Arc<VibrationReport>>,
}

impl Observed {
    pub fn is_empty(&self) -> bool {
        *self == Observed::default()
    }
}

/// The rules the asset's signals and nameplate allow, applied to what was observed.
pub fn findings(asset: &Asset, observed: &Observed) -> Vec<Finding> {
    let plate = &asset.nameplate;
    let mut found = Vec::new();
    if let (Some(v), Some((group, foundation))) = (observed.vibration, plate.vibration_class) {
        found.push(rules::vibration(v, group, foundation));
    }
    if let (Some(t), Some(class)) = (observed.winding_temperature, plate.insulation_class) {
        found.push(rules::winding_temperature(t, class));
    }
    if let Some(t) = observed.bearing_temperature {
        found.push(rules::bearing_temperature(
            t,
            plate.bearing_temperature_limit,
            observed.ambient_temperature,
            observed.bearing_rise_per_hour,
        ));
    }
    if let Some(finding) = rules::currents(&observed.currents, plate.rated_current) {
        found.push(finding);
    }
    if let (Some(p), Some((low, high))) = (observed.pressure_mean, plate.pressure_range) {
        found.push(rules::pressure(p, observed.pressure_fluctuation, low, high));
    }
    if let Some(report) = &observed.waveform {
        found.extend(report.diagnoses.iter().map(|d| Finding {
            dimension: Dimension::Vibration,
            health: d.health,
            reason: d.reason.clone(),
        }));
    }
    found
}

/// What an asset carries from one assessment to the next.
#[derive(Debug, Clone)]
pub struct AssetState {
    action: Action,
    trend: Deque<Point, TREND_CAPACITY>,
}

impl Default for AssetState {
    fn default() -> Self {
        AssetState {
            action: Action::RoutineMonitoring,
            trend: Deque::new(),
        }
    }
}

/// Combines findings (and a model's probability) into an assessment, updating the asset's action
/// and trend. `now` is seconds on the scorer's monotonic time line; `timestamp` the wall clock.
/// `None` when there is nothing to judge yet.
pub fn assess(
    asset: &Asset,
    evidence: Evidence,
    scoring: &Scoring,
    state: &mut AssetState,
    now: f64,
    timestamp: SystemTime,
) -> Option<Assessment> {
    let Evidence {
        mut found,
        features,
        model_probability,
        vibration,
    } = evidence;
    if found.is_empty() {
        return None;
    }
    found.sort_by(|a, b| a.health.total_cmp(&b.health));
    let mut health = DimensionHealth::default();
    for finding in &found {
        health.set(finding.dimension, finding.health);
    }
    let worst = found[0].health;
    let present: Vec<f64> = health.present().collect();
    let mean = present.iter().sum::<f64>() / present.len() as f64;
    let overall_health = (0.6 * worst + 0.4 * mean).clamp(0.0, 1.0);

    let rule_probability = 1.0 - worst;
    let combined = match model_probability {
        Some(model) => 0.5 * rule_probability + 0.5 * model.clamp(0.0, 1.0),
        None => rule_probability,
    };
    let failure_probability = if found[0].critical() {
        combined.max(rule_probability)
    } else {
        combined
    };

    state.action = next_action(state.action, failure_probability, scoring);
    if state.trend.len() == TREND_CAPACITY {
        state.trend.pop_front();
    }
    let _ = state.trend.push_back(Point {
        t: now,
        value: overall_health,
    });
    let life = remaining_life(&state.trend, state.action);

    // Checked: a date past what the clock can say is no date (never a panic in the scorer).
    let at = |hours: f64| {
        let ahead = Duration::try_from_secs_f64(hours * 3600.0).ok()?;
        let due = timestamp.checked_add(ahead)?;
        Some(humantime::format_rfc3339_millis(due).to_string())
    };
    Some(Assessment {
        schema: ASSESSMENT_SCHEMA,
        asset: asset.id.clone(),
        asset_type: asset.kind.clone(),
        timestamp: humantime::format_rfc3339_millis(timestamp).to_string(),
        health,
        overall_health,
        failure_probability,
        rule_probability,
        model_probability,
        action: state.action,
        priority: state.action.priority(),
        maintenance_due: life.due_in_hours.and_then(at),
        remaining_life_hours: life.remaining_hours,
        remaining_life_note: life.note,
        reasons: found.into_iter().map(|f| f.reason).collect(),
        features: Box::new(features),
        vibration,
    })
}

/// The action for `probability`, escalating at once and stepping down only below the threshold
/// minus the hysteresis.
pub fn next_action(current: Action, probability: f64, scoring: &Scoring) -> Action {
    let raw = if probability > scoring.immediate_above {
        Action::ImmediateMaintenance
    } else if probability > scoring.scheduled_above {
        Action::ScheduledMaintenance
    } else {
        Action::RoutineMonitoring
    };
    if raw >= current {
        return raw;
    }
    let threshold_of_current = match current {
        Action::ImmediateMaintenance => scoring.immediate_above,
        Action::ScheduledMaintenance => scoring.scheduled_above,
        Action::RoutineMonitoring => return raw,
    };
    if probability < threshold_of_current - scoring.hysteresis {
        // Step down, but re-check the lower threshold with the same hysteresis.
        next_action(
            match current {
                Action::ImmediateMaintenance => Action::ScheduledMaintenance,
                _ => Action::RoutineMonitoring,
            },
            probability,
            scoring,
        )
    } else {
        current
    }
}

struct Life {
    due_in_hours: Option<f64>,
    remaining_hours: Option<f64>,
    note: Option<String>,
}

fn remaining_life(trend: &Deque<Point, TREND_CAPACITY>, action: Action) -> Life {
    let points: Vec<Point> = trend.iter().copied().collect();
    let now_due = (action == Action::ImmediateMaintenance).then_some(0.0);
    if points.len() < MIN_TREND_POINTS {
        return Life {
            due_in_hours: now_due,
            remaining_hours: None,
            note: Some(format!(
                "too little history for a trend: {} of {MIN_TREND_POINTS} assessments",
                points.len()
            )),
        };
    }
    let current = points.last().map_or(1.0, |p| p.value);
    // A fall so slow it reaches the critical level only after this many hours is no fall: a flat
    // health's rounding noise gives slopes of 1e-17 per second, and dates centuries away.
    const HORIZON_HOURS: f64 = 10.0 * 8760.0;
    match features::trend_slope(&points) {
        Some(slope)
            if slope < 0.0 && (current - CRITICAL_HEALTH).max(0.0) / -slope / 3600.0 < HORIZON_HOURS =>
        {
            let hours = |target: f64| ((current - target).max(0.0) / -slope) / 3600.0;
            Life {
                due_in_hours: now_due.or(Some(hours(CRITICAL_HEALTH))),
                remaining_hours: Some(hours(0.0)),
                note: None,
            }
        }
        _ => Life {
            due_in_hours: now_due,
            remaining_hours: None,
            note: Some(
                "health is not falling (or reaches the critical level only after 10 years at this rate): no end of life in sight from the trend"
                    .into(),
            ),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use firmware_config::{Foundation, InsulationClass, IsoGroup, Nameplate, Signals};

    /// An assessment of `asset` with `action` and nothing else of note.
    pub fn assessment(asset: &str, action: Action) -> Assessment {
        Assessment {
            schema: ASSESSMENT_SCHEMA,
            asset: asset.into(),
            asset_type: "pump".into(),
            timestamp: String::new(),
            health: DimensionHealth::default(),
            overall_health: 0.5,
            failure_probability: 0.8,
            rule_probability: 0.8,
            model_probability: None,
            action,
            priority: action.priority(),
            maintenance_due: None,
            remaining_life_hours: None,
            remaining_life_note: None,
            reasons: Vec::new(),
            features: Box::default(),
            vibration: None,
        }
    }

    fn scoring() -> Scoring {
        Scoring {
            assess_interval: Duration::from_secs(10),
            window: 60,
            immediate_above: 0.7,
            scheduled_above: 0.5,
            hysteresis: 0.05,
            models: Default::default(),
        }
    }

    fn pump() -> Asset {
        Asset {
            id: "P-101".into(),
            kind: "pump".into(),
            signals: Signals::default(),
            nameplate: Nameplate {
                vibration_class: Some((IsoGroup::Group2, Foundation::Rigid)),
                insulation_class: Some(InsulationClass::F),
                rated_current: Some(40.0),
                pressure_range: Some((3.0, 6.0)),
                bearing_temperature_limit: 95.0,
            },
            waveform: None,
            bearings: Vec::new(),
        }
    }

    fn observed(vibration: f64) -> Observed {
        Observed {
            vibration: Some(vibration),
            bearing_temperature: Some(55.0),
            currents: heapless::Vec::from_slice(&[30.0, 30.2, 29.9]).expect("3"),
            pressure_mean: Some(4.5),
            ..Observed::default()
        }
    }

    fn run(
        asset: &Asset,
        state: &mut AssetState,
        vibration: f64,
        t: f64,
        model: Option<f64>,
    ) -> Assessment {
        assess(
            asset,
            Evidence {
                found: findings(asset, &observed(vibration)),
                features: Features::of(asset, &observed(vibration)),
                model_probability: model,
                vibration: None,
            },
            &scoring(),
            state,
            t,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        )
        .expect("assessment")
    }

    #[test]
    fn actions_follow_the_seed_thresholds() {
        let asset = pump();
        for (vibration, action, priority) in [
            (1.0, Action::RoutineMonitoring, Priority::Low),
            (3.6, Action::ScheduledMaintenance, Priority::Medium),
            (5.1, Action::ImmediateMaintenance, Priority::High),
        ] {
            let a = run(&asset, &mut AssetState::default(), vibration, 0.0, None);
            assert_eq!((a.action, a.priority), (action, priority), "{a:#?}");
        }
    }

    #[test]
    fn an_optimistic_model_cannot_overrule_zone_d() {
        let asset = pump();
        let a = run(&asset, &mut AssetState::default(), 5.1, 0.0, Some(0.01));
        assert_eq!(a.action, Action::ImmediateMaintenance);
        assert!(a.failure_probability >= a.rule_probability);
        assert!(
            a.reasons[0].contains("zone D for group 2 rigid"),
            "{:?}",
            a.reasons
        );
        // Outside zone D the model does move the probability.
        let b = run(&asset, &mut AssetState::default(), 1.0, 0.0, Some(0.9));
        assert!(b.failure_probability > b.rule_probability);
    }

    #[test]
    fn hysteresis_prevents_flapping_at_a_threshold() {
        let s = scoring();
        let mut action = Action::RoutineMonitoring;
        let mut changes = 0;
        for i in 0..100 {
            let p = 0.5 + if i % 2 == 0 { 0.01 } else { -0.01 };
            let next = next_action(action, p, &s);
            changes += usize::from(next != action);
            action = next;
        }
        assert_eq!(changes, 1, "escalates once, then holds");
        assert_eq!(next_action(action, 0.44, &s), Action::RoutineMonitoring);
        assert_eq!(
            next_action(Action::ImmediateMaintenance, 0.6, &s),
            Action::ScheduledMaintenance
        );
        assert_eq!(
            next_action(Action::ImmediateMaintenance, 0.2, &s),
            Action::RoutineMonitoring
        );
    }

    #[test]
    fn remaining_life_needs_history_and_a_falling_trend() {
        let asset = pump();
        let mut state = AssetState::default();
        let first = run(&asset, &mut state, 1.0, 0.0, None);
        assert!(first.remaining_life_hours.is_none());
        assert!(first
            .remaining_life_note
            .as_deref()
            .is_some_and(|n| n.contains("1 of 6")));
        // Vibration climbing 0.2 mm/s per hour.
        let mut last = first;
        for hour in 1..8 {
            last = run(
                &asset,
                &mut state,
                1.0 + 0.2 * f64::from(hour),
                f64::from(hour) * 3600.0,
                None,
            );
        }
        let remaining = last.remaining_life_hours.expect("estimate");
        assert!(remaining > 1.0 && remaining < 100.0, "{remaining}");
        assert!(last.maintenance_due.is_some());
        assert!(last.timestamp.ends_with('Z') && last.timestamp.contains('.'));

        let mut steady = AssetState::default();
        let mut flat = run(&asset, &mut steady, 1.0, 0.0, None);
        for hour in 1..8 {
            flat = run(&asset, &mut steady, 1.0, f64::from(hour) * 3600.0, None);
        }
        assert!(flat.remaining_life_hours.is_none());
        assert!(flat
            .remaining_life_note
            .is_some_and(|n| n.contains("not falling")));
    }

    #[test]
    fn a_flat_health_with_rounding_noise_has_no_end_of_life() {
        // Found end to end: a constant health's trend had a slope of about -1e-15 per second,
        // a due date millions of years away, and the date's conversion panicked the scorer.
        let mut trend = Deque::new();
        for i in 0..TREND_CAPACITY.min(20) {
            let i = i as f64;
            let _ = trend.push_back(Point {
                t: i * 2.0,
                value: 0.59 - i * 1e-15,
            });
        }
        let life = remaining_life(&trend, Action::ScheduledMaintenance);
        assert_eq!((life.due_in_hours, life.remaining_hours), (None, None));
        assert!(life.note.is_some_and(|n| n.contains("not falling")));
    }

    #[test]
    fn the_assessment_serializes_with_its_schema_version() {
        let a = run(&pump(), &mut AssetState::default(), 3.6, 0.0, None);
        let json = serde_json::to_value(&a).expect("json");
        assert_eq!(json["schema"], 1);
        assert_eq!(json["action"], "scheduled_maintenance");
        assert_eq!(json["priority"], "medium");
        assert!(json["health"]["vibration"].as_f64().is_some());
        assert!(json["health"]["pressure"].as_f64().is_some());
    }
}
