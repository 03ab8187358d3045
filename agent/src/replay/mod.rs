//! `millwright replay`: recorded tag values through the agent's own stages (windows, features,
//! rules, model, limits, alert lifecycle) under the recording's clock, as fast as the CPU allows.
//!
//! The stage cores come from [`pipeline::cores`], the builder the running agent's stages come
//! from. The [`Timeline`] is the one piece that runs the scorer on simulated time (assessment
//! rounds on the `assess_interval` grid from the first sample), shared with `millwright dataset`.
//! The [`Engine`] adds the decisions core, an alert book of its own and the production lines
//! (started fresh, stepped every recorded second), and says what the running agent would have
//! said as [`Finding`]s; [`tally`] sums them up.
//!
//! Invariants:
//! - memory does not grow with the input: rows are streamed, windows and trends are bounded, and
//!   the tally keeps a few figures per asset plus one entry per maintenance episode and one per
//!   closed shift of each line;
//! - time never runs backwards: a row slightly late (within one `assess_interval` of the latest
//!   time) is taken at the latest time and counted as out of order; one later than that is
//!   skipped with its line number;
//! - across a gap longer than the scorer's staleness horizon the timeline jumps rather than
//!   running empty rounds; each such gap is counted.

pub mod input;
pub mod run;
pub mod tally;

use std::time::{Duration, SystemTime};

use crate::app::Loaded;
use crate::decisions::conditions::Conditions;
use crate::decisions::lifecycle::{Book, Condition, Transition};
use crate::health::assess::{Action, Assessment};
use crate::health::scorer::Scorer;
use crate::pipeline::{self, Cores};
use crate::production::{line::Output, Production};
use crate::quality::Quality;
use crate::sample::Sample;
use input::RowError;

/// How often limits are judged without a new value (as the running agent does).
const TICK: Duration = Duration::from_secs(1);

/// The scorer on simulated time: feeds samples and runs the assessment rounds that fall due.
pub struct Timeline {
    pub scorer: Scorer,
    every: Duration,
    origin: Option<SystemTime>,
    next_round: SystemTime,
}

impl Timeline {
    pub fn new(scorer: Scorer, every: Duration) -> Timeline {
        Timeline {
            scorer,
            every,
            origin: None,
            next_round: SystemTime::UNIX_EPOCH,
        }
    }

    /// Seconds since the first sample, the scorer's time line.
    fn t(&self, at: SystemTime) -> f64 {
        self.origin
            .and_then(|o| at.duration_since(o).ok())
            .map_or(0.0, |d| d.as_secs_f64())
    }

    /// Starts the time line at `at` if it has not started.
    fn start(&mut self, at: SystemTime) {
        if self.origin.is_none() {
            self.origin = Some(at);
            self.next_round = at + self.every;
        }
    }

    /// When the next round is due.
    pub fn next_round(&self) -> Option<SystemTime> {
        self.origin.map(|_| self.next_round)
    }

    /// Runs the round due now: `round` gets the scorer, its time line and the time.
    pub fn run_round<T>(&mut self, round: impl FnOnce(&mut Scorer, f64, SystemTime) -> T) -> T {
        let at = self.next_round;
        let t = self.t(at);
        self.next_round += self.every;
        round(&mut self.scorer, t, at)
    }

    /// Moves the next round to the first grid point after `at` (across a gap).
    fn skip_past(&mut self, at: SystemTime) {
        if let Some(origin) = self.origin {
            let since = at.duration_since(origin).unwrap_or_default().as_secs_f64();
            let rounds = (since / self.every.as_secs_f64()).floor() + 1.0;
            self.next_round = self.next_round.max(origin + self.every.mul_f64(rounds));
        }
    }

    /// Feeds a sample taken at `at` (the time line starts at the first one).
    pub fn observe(&mut self, sample: &Sample, at: SystemTime) {
        self.start(at);
        let t = self.t(at);
        self.scorer.observe(sample, t);
    }
}

/// What the agent would have said.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    Assessment(Assessment),
    /// An asset's maintenance action changed (every asset starts at routine monitoring).
    ActionChange {
        asset: String,
        from: Action,
        to: Action,
        at: SystemTime,
    },
    Alert(Transition),
    /// A production line's report, downtime event or counter anomaly.
    Production {
        output: Output,
        at: SystemTime,
    },
    /// A quality station's part decision or report.
    Quality {
        output: crate::quality::station::Output,
        at: SystemTime,
    },
    /// A characteristic's control limits, learned from its baseline.
    LimitsLearned {
        station: String,
        characteristic: String,
        limits: firmware_config::quality::ControlLimits,
        at: SystemTime,
    },
}

/// Rows that were not taken as they were, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub samples: u64,
    /// Taken at the latest time: slightly late.
    pub out_of_order: u64,
    /// Skipped: more than one `assess_interval` behind the latest time.
    pub too_late: u64,
    /// Silences longer than the staleness horizon.
    pub gaps: u64,
}

/// The scoring and decisions stages of one configuration on simulated time.
pub struct Engine {
    timeline: Timeline,
    conditions: Conditions,
    book: Book,
    production: Production,
    quality: Quality,
    stations: Vec<firmware_config::quality::Station>,
    quality_models: Vec<crate::quality::model::StationModels>,
    /// The first sample's time: the production stage's monotonic clock starts there.
    origin: Option<SystemTime>,
    actions: Vec<Action>,
    tolerance: Duration,
    stale_after: Duration,
    latest: Option<SystemTime>,
    next_tick: SystemTime,
    pub counts: Counts,
}

impl Engine {
    pub fn new(loaded: &Loaded) -> Engine {
        let plan = &loaded.plan;
        let Cores { scorer, conditions } = pipeline::cores(loaded);
        let stale_after = scorer.stale_after();
        Engine {
            timeline: Timeline::new(scorer, plan.scoring.assess_interval),
            conditions,
            book: Book::default(),
            production: Production::fresh(&plan.lines),
            quality: Quality::fresh(&plan.quality, SystemTime::UNIX_EPOCH),
            stations: plan.quality.clone(),
            quality_models: loaded.quality_models.clone(),
            origin: None,
            actions: vec![Action::RoutineMonitoring; plan.assets.len()],
            tolerance: plan.scoring.assess_interval,
            stale_after,
            latest: None,
            next_tick: SystemTime::UNIX_EPOCH,
            counts: Counts::default(),
        }
    }

    /// Feeds one recorded sample; what it (and the rounds and ticks due before it) decided goes
    /// to `found`, in time order. A sample too far behind the latest time is refused.
    pub fn feed(
        &mut self,
        sample: &Sample,
        found: &mut impl FnMut(Finding),
    ) -> Result<(), RowError> {
        let at = match self.latest {
            Some(latest) if sample.timestamp < latest => {
                let behind = latest.duration_since(sample.timestamp).unwrap_or_default();
                if behind > self.tolerance {
                    self.counts.too_late += 1;
                    return Err(RowError::Late {
                        behind: Duration::from_millis(behind.as_millis() as u64),
                        tolerance: self.tolerance,
                    });
                }
                self.counts.out_of_order += 1;
                latest
            }
            Some(latest) => {
                if sample.timestamp.duration_since(latest).unwrap_or_default() > self.stale_after {
                    self.counts.gaps += 1;
                }
                if sample.timestamp > latest {
                    // Every sample of the earlier time is in: its parts can be decided.
                    self.decide_parts(latest, found);
                }
                self.advance(sample.timestamp, found);
                sample.timestamp
            }
            None => {
                self.next_tick = sample.timestamp + TICK;
                self.origin = Some(sample.timestamp);
                self.quality = Quality::fresh(&self.stations, sample.timestamp)
                    .with_models(&self.quality_models);
                sample.timestamp
            }
        };
        self.latest = Some(at);
        self.counts.samples += 1;
        self.timeline.observe(sample, at);
        let mono = self.mono(at);
        self.production.observe(sample, mono);
        self.quality.observe(sample, mono);
        let decided = self.conditions.sample(sample, at);
        if let Some(by) = decided.acknowledge_all_by {
            self.book
                .acknowledge_all(&by, at)
                .into_iter()
                .for_each(|t| found(Finding::Alert(t)));
        }
        self.apply(decided.conditions, at, found);
        Ok(())
    }

    /// Runs the rounds and ticks due up to and including `until`, in time order. Once a round
    /// finds nothing fresh, none before the next sample can: the time line jumps past `until`
    /// (and so do the ticks, when no limit is configured).
    pub fn advance(&mut self, until: SystemTime, found: &mut impl FnMut(Finding)) {
        while let Some(round) = self.timeline.next_round().filter(|r| *r <= until) {
            while self.next_tick < round {
                let at = self.next_tick;
                self.tick(at, found);
                self.next_tick = at + TICK;
            }
            if self.round(found) == 0 {
                self.timeline.skip_past(until);
                if !self.conditions.needs_samples()
                    && self.production.is_empty()
                    && self.quality.is_empty()
                {
                    self.next_tick = self.next_tick.max(until);
                }
            }
        }
        while self.next_tick <= until {
            let at = self.next_tick;
            self.tick(at, found);
            self.next_tick = at + TICK;
        }
    }

    /// Decides the parts due by `at` (the recording's end included: see [`Engine::finish`]).
    fn decide_parts(&mut self, at: SystemTime, found: &mut impl FnMut(Finding)) {
        if self.quality.is_empty() {
            return;
        }
        let outputs = self.quality.step(self.mono(at), at);
        self.quality_outputs(outputs, at, found);
    }

    fn quality_outputs(
        &mut self,
        outputs: Vec<(usize, crate::quality::station::Output)>,
        at: SystemTime,
        found: &mut impl FnMut(Finding),
    ) {
        use crate::quality::station::Output as Q;
        for (station, output) in outputs {
            match output {
                Q::Condition(condition) => self.apply(vec![condition], at, found),
                // Replay reads recorded values only: no camera folder.
                Q::MoveImage { .. } => {}
                Q::Learned(c, limits) => {
                    let (station, characteristic) = self.quality.names(station, c);
                    found(Finding::LimitsLearned {
                        station: station.to_string(),
                        characteristic: characteristic.to_string(),
                        limits,
                        at,
                    });
                }
                output => {
                    if let Q::Part(part) = &output {
                        if part.decision == crate::quality::station::Decision::Reject {
                            if let Some((line, _)) = &self.stations[station].line {
                                self.production.rejected(line);
                            }
                        }
                    }
                    found(Finding::Quality { output, at })
                }
            }
        }
    }

    /// Decides the parts still waiting when the recording ends.
    pub fn finish(&mut self, found: &mut impl FnMut(Finding)) {
        if let Some(latest) = self.latest {
            let end = latest
                + self
                    .stations
                    .iter()
                    .map(|s| s.settle)
                    .max()
                    .unwrap_or_default();
            self.decide_parts(end, found);
        }
    }

    /// Each quality station's figures over the whole recording.
    pub fn quality_overall(&self) -> Vec<crate::quality::station::QualityReport> {
        self.quality
            .overall(self.latest.unwrap_or(SystemTime::UNIX_EPOCH))
    }

    fn tick(&mut self, at: SystemTime, found: &mut impl FnMut(Finding)) {
        let conditions = self.conditions.tick(at);
        self.apply(conditions, at, found);
        if !self.quality.is_empty() {
            let shifts = self.quality.shifts(at);
            self.quality_outputs(shifts, at, found);
            self.decide_parts(at, found);
        }
        if self.production.is_empty() {
            return;
        }
        let (outputs, _) = self.production.step(at, self.mono(at));
        for output in outputs {
            found(Finding::Production { output, at });
        }
        let conditions = self.production.conditions();
        self.apply(conditions, at, found);
    }

    /// Recorded time since the first sample.
    fn mono(&self, at: SystemTime) -> Duration {
        self.origin
            .and_then(|origin| at.duration_since(origin).ok())
            .unwrap_or_default()
    }

    /// One assessment round; how many assets it assessed.
    fn round(&mut self, found: &mut impl FnMut(Finding)) -> usize {
        let (assessments, at) = self
            .timeline
            .run_round(|scorer, t, at| (scorer.assess_all(t, at), at));
        let count = assessments.len();
        for assessment in assessments {
            let index = self
                .timeline
                .scorer
                .index_of(&assessment.asset)
                .unwrap_or_default();
            if let Some(previous) = self.actions.get_mut(index) {
                if *previous != assessment.action {
                    found(Finding::ActionChange {
                        asset: assessment.asset.clone(),
                        from: *previous,
                        to: assessment.action,
                        at,
                    });
                    *previous = assessment.action;
                }
            }
            let condition = self.conditions.assessment(&assessment);
            found(Finding::Assessment(assessment));
            self.apply(vec![condition], at, found);
        }
        count
    }

    fn apply(
        &mut self,
        conditions: Vec<Condition>,
        at: SystemTime,
        found: &mut impl FnMut(Finding),
    ) {
        for condition in conditions {
            if let Some(transition) = self.book.condition(condition, at) {
                found(Finding::Alert(transition));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decisions::lifecycle::{Change, Origin};
    use crate::sample::{Quality, TagId, Value};
    use std::time::UNIX_EPOCH;

    const PUMP: &str = include_str!("../../tests/fixtures/replay-pump.toml");
    const VIBRATION: TagId = TagId(0);
    const PRESSURE: TagId = TagId(1);

    /// One pump: tags `pump.vibration` (0) and `pump.pressure` (1), asset P-1, a pressure limit.
    pub fn loaded() -> Loaded {
        let plan = firmware_config::load_str(std::path::Path::new("replay-pump.toml"), PUMP)
            .unwrap_or_else(|e| panic!("{e}"));
        Loaded::new(plan).unwrap_or_else(|e| panic!("{e}"))
    }

    fn engine() -> Engine {
        Engine::new(&loaded())
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn sample(tag: TagId, s: u64, value: f64) -> Sample {
        Sample {
            tag,
            timestamp: at(s),
            server_timestamp: None,
            value: Some(Value::F64(value)),
            quality: Quality::Good,
        }
    }

    fn feed(engine: &mut Engine, samples: &[Sample]) -> Vec<Finding> {
        let mut found = Vec::new();
        for s in samples {
            engine.feed(s, &mut |f| found.push(f)).expect("fed");
        }
        found
    }

    #[test]
    fn assessments_fall_on_the_interval_grid_and_a_rough_pump_escalates() {
        let mut engine = engine();
        // Zone D vibration (11 mm/s, group 2 rigid) at 1 Hz for two minutes.
        let samples: Vec<Sample> = (0..120)
            .flat_map(|s| [sample(VIBRATION, s, 11.0), sample(PRESSURE, s, 4.5)])
            .collect();
        let found = feed(&mut engine, &samples);
        let times: Vec<String> = found
            .iter()
            .filter_map(|f| match f {
                Finding::Assessment(a) => Some(a.timestamp.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(times.len(), 11, "rounds at 10 s … 110 s: {times:?}");
        assert_eq!(times[0], crate::uplink::timestamp(at(10)));
        let change = found.iter().find_map(|f| match f {
            Finding::ActionChange { to, at, .. } => Some((*to, *at)),
            _ => None,
        });
        assert_eq!(change, Some((Action::ImmediateMaintenance, at(10))));
        let raised = found.iter().find_map(|f| match f {
            Finding::Alert(t) if t.alert.origin == Origin::Maintenance => Some(t.change),
            _ => None,
        });
        assert_eq!(raised, Some(Change::Raised));
    }

    #[test]
    fn a_limit_raises_after_its_on_delay_in_recorded_time() {
        let mut engine = engine();
        let mut found = feed(
            &mut engine,
            &[sample(PRESSURE, 0, 4.0), sample(PRESSURE, 1, 7.0)],
        );
        // Only sent on change: the on-delay runs out between samples, at a tick.
        found.extend(feed(&mut engine, &[sample(PRESSURE, 30, 7.0)]));
        let raised: Vec<SystemTime> = found
            .iter()
            .filter_map(|f| match f {
                Finding::Alert(t) if t.alert.origin == Origin::Limit => Some(t.at),
                _ => None,
            })
            .collect();
        assert_eq!(raised, [at(6)]);
    }

    #[test]
    fn late_rows_are_taken_or_refused_and_gaps_are_counted() {
        let mut engine = engine();
        feed(&mut engine, &[sample(PRESSURE, 100, 4.0)]);
        feed(&mut engine, &[sample(PRESSURE, 95, 4.0)]);
        assert_eq!(engine.counts.out_of_order, 1);
        let refused = engine.feed(&sample(PRESSURE, 50, 4.0), &mut |_| {});
        assert!(refused
            .expect_err("too late")
            .to_string()
            .contains("time goes back by 50s"));
        assert_eq!(engine.counts.too_late, 1);
        // A day of silence: counted, and crossed without running thousands of empty rounds.
        feed(&mut engine, &[sample(PRESSURE, 86_500, 4.0)]);
        assert_eq!(engine.counts.gaps, 1);
        assert_eq!(engine.counts.samples, 3);
    }
}
