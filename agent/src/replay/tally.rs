//! What a replay amounts to, per asset: when each maintenance action was first reached, how many
//! alerts were raised, and — against recorded failures — how long before each failure the agent
//! warned, and how often it warned when nothing failed.
//!
//! An **episode** is a stretch during which an asset's action is above routine monitoring (from
//! the change up, to the change back). An episode **warns of** a failure of its asset when it
//! starts no later than the failure and at most `horizon` before it. A failure's **lead time**
//! runs from the start of the earliest episode that warns of it; a failure no episode warns of is
//! **missed**. An episode that warns of no failure is a **false alarm**; false alarms are given
//! per asset-month (30.44 days) of assessed time.
//!
//! Per production line: every closed shift's figures, and the figures of all closed shifts
//! together (their tallies summed), to set beside what the MES reported for the same period. A
//! shift still open when the recording ends is not counted.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::Finding;
use crate::health::assess::Action;
use crate::production::line::{LineReport, Output, UNSCHEDULED};
use crate::production::tally::{Figures, Tally as ShiftTally};
use crate::uplink::timestamp;

const MONTH: f64 = 30.44 * 86_400.0;

/// One asset's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssetTally {
    pub assessments: u64,
    pub first_assessed: Option<SystemTime>,
    pub last_assessed: Option<SystemTime>,
    /// The first time each action above routine monitoring was reached.
    pub first_reached: BTreeMap<Action, SystemTime>,
    /// Alerts raised about this asset (maintenance) or its tags' limits are counted by source.
    pub alerts_raised: u64,
    /// Start and (once back to routine) end of each maintenance episode.
    pub episodes: Vec<(SystemTime, Option<SystemTime>)>,
}

/// One closed shift of a line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShiftOutcome {
    pub shift: String,
    pub start: String,
    pub end: String,
    pub oee: Option<f64>,
    pub availability: Option<f64>,
    pub performance: Option<f64>,
    pub quality: Option<f64>,
    pub good: f64,
    pub reject: f64,
    /// Time in the shift the recording did not cover (it began or ended inside the shift).
    pub unaccounted_minutes: f64,
    pub top_loss: Option<String>,
}

impl ShiftOutcome {
    fn of(report: &LineReport) -> ShiftOutcome {
        let f = &report.figures;
        ShiftOutcome {
            shift: report.shift.clone(),
            start: timestamp(report.shift_start),
            end: timestamp(report.shift_end),
            oee: f.oee,
            availability: f.availability,
            performance: f.performance,
            quality: f.quality,
            good: f.good,
            reject: f.reject,
            unaccounted_minutes: report.tally.unaccounted / 60.0,
            top_loss: report.recommendation.clone(),
        }
    }
}

/// One line's closed shifts, and their sum.
#[derive(Debug, Clone, Default)]
pub struct LineTally {
    pub shifts: Vec<ShiftOutcome>,
    pub sum: ShiftTally,
    pub downtime_events: u64,
    /// The reported periods between shifts (the line ran or counted then), summed apart.
    pub unscheduled_periods: u64,
    pub unscheduled: ShiftTally,
}

/// What a line made between its shifts (in no shift's OEE).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutsideShifts {
    pub periods: u64,
    pub running_hours: f64,
    pub total: f64,
    pub good: f64,
    pub reject: f64,
}

/// A line over every shift it closed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineOutcome {
    pub line: String,
    pub downtime_events: u64,
    /// The figures of all closed shifts together.
    pub figures: Figures,
    pub top_loss: Option<String>,
    pub shifts: Vec<ShiftOutcome>,
    pub outside_shifts: Option<OutsideShifts>,
}

/// Sums findings up as they come.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub assets: BTreeMap<String, AssetTally>,
    pub lines: BTreeMap<String, LineTally>,
    /// Alerts raised, by source (asset, or tag for limits).
    pub alerts_by_source: BTreeMap<String, u64>,
}

impl Tally {
    pub fn add(&mut self, finding: &Finding) {
        match finding {
            Finding::Assessment(assessment) => {
                let asset = self.assets.entry(assessment.asset.clone()).or_default();
                asset.assessments += 1;
                let at = humantime::parse_rfc3339_weak(&assessment.timestamp).ok();
                asset.first_assessed = asset.first_assessed.or(at);
                asset.last_assessed = at.or(asset.last_assessed);
            }
            Finding::ActionChange {
                asset,
                from,
                to,
                at,
            } => {
                let asset = self.assets.entry(asset.clone()).or_default();
                if *to != Action::RoutineMonitoring {
                    asset.first_reached.entry(*to).or_insert(*at);
                }
                match (
                    *from == Action::RoutineMonitoring,
                    *to == Action::RoutineMonitoring,
                ) {
                    (true, false) => asset.episodes.push((*at, None)),
                    (false, true) => {
                        if let Some((_, end @ None)) = asset.episodes.last_mut() {
                            *end = Some(*at);
                        }
                    }
                    _ => {}
                }
            }
            Finding::Production { output, .. } => self.production(output),
            // A station's figures over the recording come from the engine at the end.
            Finding::Quality { .. } | Finding::LimitsLearned { .. } => {}
            Finding::Alert(transition) => {
                if transition.change == crate::decisions::lifecycle::Change::Raised {
                    let source = &transition.alert.source;
                    *self.alerts_by_source.entry(source.clone()).or_default() += 1;
                    if let Some(asset) = self.assets.get_mut(source) {
                        asset.alerts_raised += 1;
                    }
                }
            }
        }
    }
}

impl Tally {
    fn production(&mut self, output: &Output) {
        match output {
            Output::Report(report) if report.closing => {
                let line = self.lines.entry(report.line.clone()).or_default();
                if report.shift == UNSCHEDULED {
                    line.unscheduled_periods += 1;
                    line.unscheduled.absorb(&report.tally);
                } else {
                    line.shifts.push(ShiftOutcome::of(report));
                    line.sum.absorb(&report.tally);
                }
            }
            Output::Downtime(downtime) => {
                self.lines
                    .entry(downtime.line.clone())
                    .or_default()
                    .downtime_events += 1;
            }
            _ => {}
        }
    }
}

/// A recorded failure.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub asset: String,
    pub at: SystemTime,
}

/// How the agent did against one failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureOutcome {
    pub asset: String,
    pub failed: String,
    /// When the warning began (`None`: missed).
    pub warned: Option<String>,
    pub lead_time_hours: Option<f64>,
}

/// One asset against its failures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssetOutcome {
    pub asset: String,
    pub assessments: u64,
    pub first_scheduled_maintenance: Option<String>,
    pub first_immediate_maintenance: Option<String>,
    pub alerts_raised: u64,
    pub episodes: usize,
    pub false_alarms: usize,
    pub asset_months: f64,
    pub false_alarms_per_asset_month: Option<f64>,
}

/// Everything the summary says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub assets: Vec<AssetOutcome>,
    pub lines: Vec<LineOutcome>,
    pub failures: Vec<FailureOutcome>,
}

fn hours(d: Duration) -> f64 {
    (d.as_secs_f64() / 3600.0 * 100.0).round() / 100.0
}

/// Judges the tally against the recorded failures.
pub fn judge(tally: &Tally, failures: &[Failure], horizon: Duration) -> Outcome {
    let warns = |start: SystemTime, failure: &Failure| {
        start <= failure.at && failure.at.duration_since(start).unwrap_or_default() <= horizon
    };
    let mut outcomes = Vec::new();
    for failure in failures {
        let episodes = tally
            .assets
            .get(&failure.asset)
            .map(|a| a.episodes.as_slice())
            .unwrap_or_default();
        let warned = episodes
            .iter()
            .map(|(start, _)| *start)
            .filter(|start| warns(*start, failure))
            .min();
        outcomes.push(FailureOutcome {
            asset: failure.asset.clone(),
            failed: timestamp(failure.at),
            warned: warned.map(timestamp),
            lead_time_hours: warned
                .map(|w| hours(failure.at.duration_since(w).unwrap_or_default())),
        });
    }
    let assets = tally
        .assets
        .iter()
        .map(|(id, asset)| {
            let false_alarms = asset
                .episodes
                .iter()
                .filter(|(start, _)| !failures.iter().any(|f| f.asset == *id && warns(*start, f)))
                .count();
            let span = asset
                .first_assessed
                .zip(asset.last_assessed)
                .and_then(|(first, last)| last.duration_since(first).ok())
                .unwrap_or_default();
            let months = span.as_secs_f64() / MONTH;
            AssetOutcome {
                asset: id.clone(),
                assessments: asset.assessments,
                first_scheduled_maintenance: asset
                    .first_reached
                    .get(&Action::ScheduledMaintenance)
                    .copied()
                    .map(timestamp),
                first_immediate_maintenance: asset
                    .first_reached
                    .get(&Action::ImmediateMaintenance)
                    .copied()
                    .map(timestamp),
                alerts_raised: asset.alerts_raised,
                episodes: asset.episodes.len(),
                false_alarms,
                asset_months: (months * 1000.0).round() / 1000.0,
                false_alarms_per_asset_month: (months > 0.0)
                    .then(|| (false_alarms as f64 / months * 100.0).round() / 100.0),
            }
        })
        .collect();
    Outcome {
        assets,
        lines: lines(tally),
        failures: outcomes,
    }
}

fn lines(tally: &Tally) -> Vec<LineOutcome> {
    tally
        .lines
        .iter()
        .map(|(name, line)| {
            let figures = line.sum.figures();
            LineOutcome {
                line: name.clone(),
                downtime_events: line.downtime_events,
                top_loss: figures.recommendation("over these shifts"),
                figures,
                shifts: line.shifts.clone(),
                outside_shifts: (line.unscheduled_periods > 0).then(|| {
                    let (total, good, reject) = line.unscheduled.parts();
                    OutsideShifts {
                        periods: line.unscheduled_periods,
                        running_hours: line.unscheduled.running / 3600.0,
                        total,
                        good,
                        reject,
                    }
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn day(d: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + d * 86_400)
    }

    fn change(from: Action, to: Action, d: u64) -> Finding {
        Finding::ActionChange {
            asset: "P-1".into(),
            from,
            to,
            at: day(d),
        }
    }

    #[test]
    fn lead_times_missed_failures_and_false_alarms_per_asset_month() {
        use Action::*;
        let mut tally = Tally::default();
        // Assessed from day 0 to day 61 (two asset-months).
        for d in [0, 61] {
            let mut a = crate::health::assess::tests::assessment("P-1", RoutineMonitoring);
            a.timestamp = timestamp(day(d));
            tally.add(&Finding::Assessment(a));
        }
        for finding in [
            change(RoutineMonitoring, ScheduledMaintenance, 2), // false alarm
            change(ScheduledMaintenance, RoutineMonitoring, 3),
            change(RoutineMonitoring, ScheduledMaintenance, 20), // warns of day 30
            change(ScheduledMaintenance, ImmediateMaintenance, 28),
            change(ImmediateMaintenance, RoutineMonitoring, 31),
        ] {
            tally.add(&finding);
        }
        let failures = [
            Failure {
                asset: "P-1".into(),
                at: day(30),
            },
            Failure {
                asset: "P-1".into(),
                at: day(55),
            },
        ];
        let outcome = judge(&tally, &failures, Duration::from_secs(14 * 86_400));
        assert_eq!(outcome.failures[0].lead_time_hours, Some(240.0));
        assert_eq!(outcome.failures[0].warned, Some(timestamp(day(20))));
        assert_eq!(outcome.failures[1].warned, None, "missed");
        let asset = &outcome.assets[0];
        assert_eq!(asset.episodes, 2);
        assert_eq!(asset.false_alarms, 1);
        assert_eq!(asset.first_scheduled_maintenance, Some(timestamp(day(2))));
        assert_eq!(asset.first_immediate_maintenance, Some(timestamp(day(28))));
        assert_eq!(asset.false_alarms_per_asset_month, Some(0.5));
        // A short horizon: the day-20 episode began too early to count as a warning.
        let strict = judge(&tally, &failures, Duration::from_secs(5 * 86_400));
        assert_eq!(strict.failures[0].warned, None);
        assert_eq!(strict.assets[0].false_alarms, 2);
    }
}
