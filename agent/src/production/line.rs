//! One line's core: samples in, shift tallies, downtime events and reports out.
//!
//! `observe` takes the line's samples as they come (counters are read at once, so a count is
//! never missed between two steps); `step` runs once a second with the wall time (for shift
//! boundaries only) and the monotonic time (for every duration). Invariants:
//! - a second of shift time lands in exactly one bucket of the shift's [`Tally`];
//! - a state must hold `debounce` before it counts; both edges of a stop are delayed alike, so a
//!   stop's measured length is its true length;
//! - a stop shorter than `micro_stop` is a micro-stop (performance); once it reaches the
//!   threshold, all of it is a breakdown (availability) and it becomes a downtime event;
//! - [`Persisted`] holds everything a restart needs: the shift's tally and the counters'
//!   baselines, so counts survive a SIGKILL and only the attribution since the last save is lost.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use firmware_config::{Energy, Line, MachineState, ShiftInstance, StateSource};
use serde::{Deserialize, Serialize};

use firmware_config::Severity;

use super::counter::{Counter, Step};
use super::tally::{Figures, LossCategory, Tally};
use crate::decisions::lifecycle::{Condition, Origin};
use crate::sample::Sample;

/// A shift under way and what it has accumulated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveShift {
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub tally: Tally,
}

/// A period the line was not running, from its accepted start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stop {
    pub state: State,
    pub reason: Option<String>,
    pub since: SystemTime,
    /// Seconds of the stop so far (all shifts).
    pub elapsed: f64,
    /// Seconds of it in the current shift not yet put in a bucket (a stop below the threshold).
    pub pending: f64,
}

/// The machine state, as persisted and reported.
pub type State = MachineState;

/// What survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub shift: Option<ActiveShift>,
    pub total: Counter,
    pub good: Counter,
    pub reject: Counter,
    pub energy: Counter,
    pub materials: BTreeMap<String, Counter>,
    pub state: Option<State>,
    pub stop: Option<Stop>,
    pub saved_at: Option<SystemTime>,
    /// The time since the last shift ended, while no shift is under way: what the line did then
    /// (weekend overtime) is reported when the next shift begins, not lost.
    #[serde(default)]
    pub unscheduled: Option<ActiveShift>,
}

/// The name the time between shifts is reported under.
pub use firmware_config::calendar::UNSCHEDULED;

impl Persisted {
    /// The period being tallied: the shift under way, or the unscheduled time between shifts.
    fn period(&mut self) -> Option<&mut ActiveShift> {
        self.shift.as_mut().or(self.unscheduled.as_mut())
    }
}

/// A downtime event: a stop that was not a micro-stop, once it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Downtime {
    pub line: String,
    pub state: State,
    pub reason: Option<String>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub seconds: f64,
    /// Breakdowns or setup/changeover; `None` for a planned stop.
    pub category: Option<LossCategory>,
}

/// A line's report: the running one for the shift so far, or the closing one at its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineReport {
    pub line: String,
    pub shift: String,
    pub shift_start: SystemTime,
    pub shift_end: SystemTime,
    pub closing: bool,
    pub state: Option<State>,
    pub product: Option<i64>,
    pub tally: Tally,
    pub figures: Figures,
    pub recommendation: Option<String>,
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Report(Box<LineReport>),
    Downtime(Downtime),
    /// A counter reading that could not be explained (for the log and the event stream).
    Anomaly(String),
}

/// A reject rate over fewer parts than this (at a shift's start) raises no alert.
pub const MIN_PARTS_FOR_REJECT_RATE: f64 = 20.0;

/// The ids of the alerts `line` can raise.
pub fn alert_ids(line: &Line) -> Vec<String> {
    let a = &line.alerts;
    [
        a.stopped_longer_than.map(|_| "stopped"),
        a.oee_below.map(|_| "oee"),
        a.reject_rate_above.map(|_| "rejects"),
    ]
    .into_iter()
    .flatten()
    .map(|what| format!("{}/{what}", line.name))
    .collect()
}

/// The latest good reading of a tag, or none (bad or not seen).
type Latest = Option<f64>;

pub struct LineCore {
    line: Line,
    kept: Persisted,
    /// Latest readings of the state, reason, product and power tags.
    latest: BTreeMap<u32, Latest>,
    candidate: Option<(State, Duration)>,
    last_step: Option<Duration>,
    /// When production last (re)started, for start-up rejects.
    production_start: Option<Duration>,
    /// Last good reading time of each counter tag, for the plausibility bound.
    counted_at: BTreeMap<u32, Duration>,
    /// Counted since the last step: total, good, reject.
    step_parts: [Option<f64>; 3],
    anomalies: Vec<String>,
    /// The shift instance under way and the next, from the calendar.
    current: Option<ShiftInstance>,
    /// Whether each configured alert condition was last sent active (None: not sent yet).
    alerted: BTreeMap<String, bool>,
}

impl LineCore {
    pub fn new(line: Line, restored: Option<Persisted>) -> LineCore {
        LineCore {
            line,
            kept: restored.unwrap_or_default(),
            latest: BTreeMap::new(),
            candidate: None,
            last_step: None,
            production_start: None,
            counted_at: BTreeMap::new(),
            step_parts: [None; 3],
            anomalies: Vec::new(),
            current: None,
            alerted: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.line.name
    }

    pub fn persisted(&self) -> &Persisted {
        &self.kept
    }

    /// Every tag the line reads.
    pub fn tags(&self) -> Vec<u32> {
        self.line.tags()
    }

    /// Parts a quality station rejected, for a line whose rejects come from its decisions (a
    /// line with a reject counter of its own ignores them).
    pub fn rejected(&mut self, parts: f64) {
        if self.line.rejects_from_quality {
            *self.step_parts[2].get_or_insert(0.0) += parts;
        }
    }

    /// Takes one of the line's samples. Counters are read at once.
    pub fn observe(&mut self, sample: &Sample, mono: Duration) {
        let tag = sample.tag.0;
        let value = sample
            .value
            .as_ref()
            .filter(|_| sample.quality.is_good())
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite());
        self.latest.insert(tag, value);
        let Some(value) = value else { return };
        let counters = [self.line.total, self.line.good, self.line.reject];
        for (i, spec) in counters.iter().enumerate() {
            if let Some(spec) = spec.filter(|s| s.tag == tag) {
                let most = self.most_parts(tag, mono, sample.timestamp);
                let counter = match i {
                    0 => &mut self.kept.total,
                    1 => &mut self.kept.good,
                    _ => &mut self.kept.reject,
                };
                if let Some(amount) = read(
                    counter,
                    &spec,
                    value,
                    Some(most),
                    &mut self.anomalies,
                    &self.line.name,
                ) {
                    *self.step_parts[i].get_or_insert(0.0) += amount;
                }
            }
        }
        if let Some(Energy::Counter(spec)) = self
            .line
            .energy
            .filter(|e| matches!(e, Energy::Counter(c) if c.tag == tag))
        {
            if let Some(kwh) = read(
                &mut self.kept.energy,
                &spec,
                value,
                None,
                &mut self.anomalies,
                &self.line.name,
            ) {
                self.add_energy(kwh);
            }
        }
        for material in self.line.materials.iter().filter(|m| m.counter.tag == tag) {
            let counter = self
                .kept
                .materials
                .entry(material.name.clone())
                .or_default();
            if let Some(amount) = read(
                counter,
                &material.counter,
                value,
                None,
                &mut self.anomalies,
                &self.line.name,
            ) {
                if let Some(shift) = self.kept.period() {
                    *shift
                        .tally
                        .materials
                        .entry(material.name.clone())
                        .or_default() += amount;
                }
            }
        }
        self.counted_at.insert(tag, mono);
    }

    /// The most parts the line can have made since the counter's last good reading: twice the
    /// fastest ideal rate, and a hundred more for counters that report in bursts.
    fn most_parts(&self, tag: u32, mono: Duration, read_at: SystemTime) -> f64 {
        let since = match self.counted_at.get(&tag) {
            Some(at) => mono.saturating_sub(*at).as_secs_f64(),
            // The first reading after a restart: since the last save, on the wall clock (the
            // monotonic one restarted with the process).
            None => self.kept.saved_at.map_or(0.0, |saved| {
                read_at
                    .duration_since(saved)
                    .unwrap_or_default()
                    .as_secs_f64()
            }),
        };
        let fastest = self.line.fastest_cycle().as_secs_f64().max(1e-3);
        2.0 * since / fastest + 100.0
    }

    fn add_energy(&mut self, kwh: f64) {
        if let Some(shift) = self.kept.period() {
            *shift.tally.energy_kwh.get_or_insert(0.0) += kwh;
        }
    }

    /// The machine state the tags say now; `None` when they are bad or not read yet.
    fn raw_state(&self) -> Option<State> {
        let latest = |tag: u32| self.latest.get(&tag).copied().flatten();
        match &self.line.state {
            StateSource::Tag { tag, map, other } => {
                let value = latest(*tag)?;
                let code = value.round() as i64;
                map.get(&code).copied().or(*other).or(Some(State::Fault))
            }
            StateSource::Flags {
                running,
                fault,
                planned,
            } => {
                let on = |tag: &Option<u32>| tag.and_then(latest).is_some_and(|v| v != 0.0);
                if on(&Some(*running)) {
                    latest(*running)?;
                    Some(State::Running)
                } else if on(fault) {
                    Some(State::Fault)
                } else if on(planned) {
                    Some(State::PlannedStop)
                } else {
                    latest(*running).map(|_| State::Idle)
                }
            }
        }
    }

    fn reason(&self) -> Option<String> {
        let (tag, codes) = self.line.reason.as_ref()?;
        let code = self.latest.get(tag).copied().flatten()?.round() as i64;
        if code == 0 {
            return None;
        }
        Some(
            codes
                .get(&code)
                .cloned()
                .unwrap_or_else(|| format!("code {code}")),
        )
    }

    fn product(&self) -> Option<i64> {
        let (tag, _) = self.line.product.as_ref()?;
        Some(self.latest.get(tag).copied().flatten()?.round() as i64)
    }

    fn ideal_cycle(&self) -> f64 {
        let by_product = self
            .line
            .product
            .as_ref()
            .and_then(|(_, cycles)| cycles.get(&self.product()?));
        by_product
            .copied()
            .unwrap_or(self.line.ideal_cycle)
            .as_secs_f64()
    }

    /// Advances the line to `wall` / `mono`.
    pub fn step(&mut self, wall: SystemTime, mono: Duration) -> Vec<Output> {
        if let Some(shift) = &mut self.kept.shift {
            shift.tally.anomalies += u32::try_from(self.anomalies.len()).unwrap_or(u32::MAX);
        }
        let mut out: Vec<Output> = self.anomalies.drain(..).map(Output::Anomaly).collect();
        let first = self.last_step.is_none();
        let dt = self
            .last_step
            .map_or(0.0, |last| mono.saturating_sub(last).as_secs_f64());
        self.last_step = Some(mono);
        // The second just past belongs to the shift it was in: booked before a boundary closes it.
        self.accrue(dt, wall);
        self.settle_parts(mono);
        self.power(dt);
        self.follow_calendar(wall, mono, first, &mut out);
        self.debounce(wall, mono, &mut out);
        out
    }

    /// Opens and closes shifts as the wall clock crosses their boundaries. On the `first` step
    /// after a restart, the time since the last save went unseen: unaccounted.
    fn follow_calendar(
        &mut self,
        wall: SystemTime,
        mono: Duration,
        first: bool,
        out: &mut Vec<Output>,
    ) {
        let unseen_since = self.kept.saved_at.filter(|_| first);
        let Ok(now) = jiff::Timestamp::try_from(wall) else {
            return;
        };
        let inside = |i: &ShiftInstance| i.start <= now && now < i.end;
        if !self.current.as_ref().is_some_and(inside) {
            self.current = self.line.calendar.current(now);
        }
        let current = self
            .current
            .as_ref()
            .map(|i| (i.name.clone(), system_time(i.start), system_time(i.end)));
        let same = match (&self.kept.shift, &current) {
            (Some(active), Some((name, start, _))) => {
                active.name == *name && active.start == *start
            }
            (None, None) => true,
            _ => false,
        };
        if same {
            if current.is_none() {
                self.track_unscheduled(wall, wall);
            }
            if let (Some(active), Some(saved)) = (&mut self.kept.shift, unseen_since) {
                active.tally.unaccounted += wall
                    .duration_since(saved.max(active.start))
                    .unwrap_or_default()
                    .as_secs_f64();
            }
            return;
        }
        let mut unscheduled_from = wall;
        if let Some(mut active) = self.kept.shift.take() {
            unscheduled_from = active.end.min(wall);
            if let Some(stop) = &mut self.kept.stop {
                settle_stop(&mut active.tally, stop, self.line.micro_stop.as_secs_f64());
            }
            if let Some(saved) = unseen_since {
                active.tally.unaccounted += active
                    .end
                    .duration_since(saved)
                    .unwrap_or_default()
                    .as_secs_f64();
            }
            out.push(Output::Report(Box::new(self.report_of(&active, true))));
        }
        let Some((name, start, end)) = current else {
            self.track_unscheduled(unscheduled_from, wall);
            return;
        };
        self.close_unscheduled(start, out);
        let mut tally = Tally::default();
        self.track_counters(&mut tally);
        // Started in the middle of the shift: the part before was not seen. (At a boundary
        // crossed while running, the step's own second covers it.)
        if first {
            let seen_from = unseen_since.filter(|s| *s > start).unwrap_or(start);
            tally.unaccounted += wall
                .duration_since(seen_from)
                .unwrap_or_default()
                .as_secs_f64();
        }
        self.kept.shift = Some(ActiveShift {
            name,
            start,
            end,
            tally,
        });
        self.production_start = Some(mono);
    }

    /// Starts the unscheduled period at `from` if none is under way, and extends it to `wall`.
    fn track_unscheduled(&mut self, from: SystemTime, wall: SystemTime) {
        if self.kept.unscheduled.is_none() {
            let mut tally = Tally::default();
            self.track_counters(&mut tally);
            self.kept.unscheduled = Some(ActiveShift {
                name: UNSCHEDULED.to_string(),
                start: from,
                end: wall,
                tally,
            });
        }
        if let Some(unscheduled) = &mut self.kept.unscheduled {
            unscheduled.end = wall;
        }
    }

    /// Ends the unscheduled period at `at` (the shift's start); reports it when the line ran,
    /// counted or consumed anything in it (idle time between shifts is no news).
    fn close_unscheduled(&mut self, at: SystemTime, out: &mut Vec<Output>) {
        let Some(mut period) = self.kept.unscheduled.take() else {
            return;
        };
        if let Some(stop) = &mut self.kept.stop {
            settle_stop(&mut period.tally, stop, self.line.micro_stop.as_secs_f64());
        }
        period.end = at.max(period.start);
        let t = &period.tally;
        let counted = [t.total, t.good, t.reject, t.energy_kwh]
            .into_iter()
            .flatten()
            .chain(t.materials.values().copied())
            .any(|v| v > 0.0);
        if counted || t.running > 0.0 {
            out.push(Output::Report(Box::new(self.report_of(&period, true))));
        }
    }

    /// Which counters the tally tracks (a line without a reject counter derives rejects).
    fn track_counters(&self, tally: &mut Tally) {
        tally.total = self.line.total.map(|_| 0.0);
        tally.good = self.line.good.map(|_| 0.0);
        tally.reject =
            (self.line.reject.is_some() || self.line.rejects_from_quality).then_some(0.0);
        if self.line.energy.is_some() {
            tally.energy_kwh = Some(0.0);
        }
    }

    /// Puts `dt` seconds into the bucket of the state held over them.
    fn accrue(&mut self, dt: f64, wall: SystemTime) {
        let micro = self.line.micro_stop.as_secs_f64();
        // Judged at the start of the interval: its last second is still inside a break ending at
        // the step's time.
        let began = wall
            .checked_sub(Duration::from_secs_f64(dt))
            .unwrap_or(wall);
        let in_break = self
            .current
            .as_ref()
            .is_some_and(|i| jiff::Timestamp::try_from(began).is_ok_and(|at| i.in_break(at)));
        let Persisted {
            shift,
            unscheduled,
            stop,
            state,
            ..
        } = &mut self.kept;
        // Between shifts the line is not expected to run: a stop there is no loss.
        let scheduled = shift.is_some();
        let Some(period) = shift.as_mut().or(unscheduled.as_mut()) else {
            return;
        };
        let tally = &mut period.tally;
        // Setup and planned stops are timed whole for their downtime event; an unplanned stop
        // only outside breaks (its length decides micro-stop or breakdown).
        if let Some(stop) = stop.as_mut().filter(|s| !s.state.is_unplanned_stop()) {
            stop.elapsed += dt;
        }
        match *state {
            None => tally.unaccounted += dt,
            Some(State::Running) => tally.running += dt,
            Some(State::PlannedStop) => tally.planned_downtime += dt,
            Some(_) if in_break || !scheduled => tally.planned_downtime += dt,
            Some(state) if state.is_setup() => tally.setup += dt,
            Some(_) => {
                if let Some(stop) = stop {
                    stop.elapsed += dt;
                    if stop.elapsed >= micro {
                        // A breakdown: what was pending goes with it.
                        let reason = stop.reason.clone().unwrap_or_default();
                        *tally.breakdowns.entry(reason).or_default() += stop.pending + dt;
                        stop.pending = 0.0;
                    } else {
                        stop.pending += dt;
                    }
                }
            }
        }
    }

    /// Adds the parts counted since the last step to the shift, at the current ideal cycle.
    fn settle_parts(&mut self, mono: Duration) {
        let [total, good, reject] = std::mem::take(&mut self.step_parts);
        if total.is_none() && good.is_none() && reject.is_none() {
            return;
        }
        let ideal = self.ideal_cycle();
        let in_startup = self
            .production_start
            .is_some_and(|at| mono.saturating_sub(at) < self.line.startup_window);
        let Some(period) = self.kept.period() else {
            return;
        };
        let tally = &mut period.tally;
        let (t, g, r) = (
            total.unwrap_or(0.0),
            good.unwrap_or(0.0),
            reject.unwrap_or(0.0),
        );
        for (slot, amount) in [
            (&mut tally.total, t),
            (&mut tally.good, g),
            (&mut tally.reject, r),
        ] {
            if let Some(sum) = slot {
                *sum += amount;
            }
        }
        let (made, bad) = match (self.line.total, self.line.good, self.line.reject) {
            (None, _, _) => (g + r, r),
            (Some(_), Some(_), None) => (t, (t - g).max(0.0)),
            (Some(_), _, _) => (t, r),
        };
        tally.ideal_total += ideal * made;
        if in_startup {
            tally.startup_rejects += bad;
        }
    }

    /// Integrates a power reading over the last `dt` seconds.
    fn power(&mut self, dt: f64) {
        if let Some(Energy::Power(tag)) = self.line.energy {
            if let Some(kw) = self.latest.get(&tag).copied().flatten() {
                self.add_energy(kw * dt / 3600.0);
            }
        }
    }

    /// Accepts a new state once it has held for `debounce`.
    fn debounce(&mut self, wall: SystemTime, mono: Duration, out: &mut Vec<Output>) {
        let raw = self.raw_state();
        if raw == self.kept.state {
            self.candidate = None;
            self.note_reason();
            return;
        }
        let Some(raw) = raw else {
            // Bad state tag: unaccounted from now, no debounce (the value is unknown, not new).
            self.change_state(None, wall, mono, out);
            return;
        };
        match self.candidate {
            Some((state, since)) if state == raw => {
                if mono.saturating_sub(since) >= self.line.debounce {
                    self.change_state(Some(raw), wall, mono, out);
                }
            }
            _ => {
                self.candidate = Some((raw, mono));
                if self.line.debounce.is_zero() || self.kept.state.is_none() {
                    self.change_state(Some(raw), wall, mono, out);
                }
            }
        }
    }

    /// A downtime reason given during a stop names the stop.
    fn note_reason(&mut self) {
        let reason = self.reason();
        if let (Some(stop), Some(reason)) = (&mut self.kept.stop, reason) {
            if stop.reason.is_none() && stop.pending > 0.0 {
                stop.reason = Some(reason);
            }
        }
    }

    fn change_state(
        &mut self,
        to: Option<State>,
        wall: SystemTime,
        mono: Duration,
        out: &mut Vec<Output>,
    ) {
        self.candidate = None;
        let micro = self.line.micro_stop.as_secs_f64();
        if let Some(mut stop) = self.kept.stop.take() {
            if let Some(shift) = &mut self.kept.shift {
                settle_stop(&mut shift.tally, &mut stop, micro);
            }
            let long = stop.elapsed >= micro || !stop.state.is_unplanned_stop();
            if long {
                out.push(Output::Downtime(Downtime {
                    line: self.line.name.clone(),
                    state: stop.state,
                    reason: stop.reason.clone(),
                    start: stop.since,
                    end: wall,
                    seconds: stop.elapsed,
                    category: category_of(stop.state),
                }));
                if to == Some(State::Running) && stop.state != State::PlannedStop {
                    self.production_start = Some(mono);
                }
            }
        }
        if let Some(state) = to.filter(|s| *s != State::Running) {
            self.kept.stop = Some(Stop {
                state,
                reason: self.reason(),
                since: wall,
                elapsed: 0.0,
                pending: 0.0,
            });
        }
        self.kept.state = to;
    }

    /// The running report of the shift under way.
    pub fn report(&self) -> Option<LineReport> {
        let active = self.kept.shift.as_ref()?;
        let mut provisional = active.clone();
        if let Some(stop) = &self.kept.stop {
            // A stop still below the threshold counts as a micro-stop for now.
            provisional.tally.micro_stops += stop.pending;
        }
        Some(self.report_of(&provisional, false))
    }

    fn report_of(&self, active: &ActiveShift, closing: bool) -> LineReport {
        let figures = active.tally.figures();
        let period = if closing {
            "in this shift"
        } else {
            "so far this shift"
        };
        LineReport {
            line: self.line.name.clone(),
            shift: active.name.clone(),
            shift_start: active.start,
            shift_end: active.end,
            closing,
            state: self.kept.state,
            product: self.product(),
            recommendation: figures.recommendation(period),
            tally: active.tally.clone(),
            figures,
        }
    }

    /// The line's alert conditions whose activity changed since they were last taken (all of
    /// them the first time, so that an alert left active before a restart is cleared).
    pub fn conditions(&mut self) -> Vec<Condition> {
        let current = self.evaluate();
        let changed: Vec<Condition> = current
            .into_iter()
            .filter(|c| self.alerted.get(&c.id) != Some(&c.active))
            .collect();
        for c in &changed {
            self.alerted.insert(c.id.clone(), c.active);
        }
        changed
    }

    /// A condition the decisions stage could not take: sent again next time.
    pub fn unsent(&mut self, id: &str) {
        self.alerted.remove(id);
    }

    fn evaluate(&self) -> Vec<Condition> {
        let alerts = &self.line.alerts;
        let name = &self.line.name;
        let condition = |what: &str, severity, active, value, reason: String| Condition {
            id: format!("{name}/{what}"),
            source: name.clone(),
            origin: Origin::Production,
            severity,
            latching: false,
            active,
            value,
            reason,
        };
        let mut out = Vec::new();
        let figures = self.kept.shift.as_ref().map(|s| s.tally.figures());
        if let Some(limit) = alerts.stopped_longer_than {
            let stop = self
                .kept
                .stop
                .as_ref()
                .filter(|s| s.state != State::PlannedStop);
            let minutes = stop.map_or(0.0, |s| s.elapsed / 60.0);
            let active = stop.is_some_and(|s| s.elapsed >= limit.as_secs_f64());
            let why = stop.map_or(String::new(), |s| match &s.reason {
                Some(reason) => format!(" ({}: {reason})", s.state.name()),
                None => format!(" ({})", s.state.name()),
            });
            out.push(condition(
                "stopped",
                Severity::High,
                active,
                Some(minutes),
                format!(
                    "line {name} stopped{why} for {minutes:.0} min (limit {})",
                    humantime::format_duration(limit)
                ),
            ));
        }
        if let Some(target) = alerts.oee_below {
            let busy = figures.as_ref().map_or(0.0, |f| f.planned_busy_time);
            let oee = figures.as_ref().and_then(|f| f.oee);
            let active = busy >= alerts.oee_after.as_secs_f64() && oee.is_some_and(|o| o < target);
            out.push(condition(
                "oee",
                Severity::Medium,
                active,
                oee,
                format!(
                    "line {name}: OEE {:.0} % this shift, below the target {:.0} %",
                    100.0 * oee.unwrap_or(0.0),
                    100.0 * target
                ),
            ));
        }
        if let Some(limit) = alerts.reject_rate_above {
            let (total, reject) = figures.as_ref().map_or((0.0, 0.0), |f| (f.total, f.reject));
            let rate = (total > 0.0).then(|| reject / total);
            let active = total >= MIN_PARTS_FOR_REJECT_RATE && rate.is_some_and(|r| r > limit);
            out.push(condition("rejects", Severity::Medium, active, rate, format!("line {name}: {:.1} % rejects this shift ({reject:.0} of {total:.0}), above the limit {:.1} %", 100.0 * rate.unwrap_or(0.0), 100.0 * limit)));
        }
        out
    }

    /// Marks the state as saved at `wall` and returns it for storing.
    pub fn save(&mut self, wall: SystemTime) -> &Persisted {
        self.kept.saved_at = Some(wall);
        &self.kept
    }
}

/// Reads a counter; an anomaly is noted and counts nothing.
fn read(
    counter: &mut Counter,
    spec: &firmware_config::CounterSpec,
    value: f64,
    most: Option<f64>,
    anomalies: &mut Vec<String>,
    line: &str,
) -> Option<f64> {
    match counter.read(spec, value, most) {
        Step::Counted(amount) => Some(amount),
        Step::Anomaly { from, to } => {
            anomalies.push(format!(
                "line {line:?}: counter tag #{} went from {from} to {to}, which neither a roll-over nor a reset explains; counting resumes from {to}",
                spec.tag
            ));
            None
        }
    }
}

/// Puts a stop's pending seconds in a bucket: micro-stops below the threshold.
fn settle_stop(tally: &mut Tally, stop: &mut Stop, micro: f64) {
    if stop.pending > 0.0 {
        if stop.elapsed < micro {
            tally.micro_stops += stop.pending;
        } else {
            *tally
                .breakdowns
                .entry(stop.reason.clone().unwrap_or_default())
                .or_default() += stop.pending;
        }
        stop.pending = 0.0;
    }
}

fn category_of(state: State) -> Option<LossCategory> {
    match state {
        State::PlannedStop | State::Running => None,
        State::Changeover | State::Setup => Some(LossCategory::SetupChangeover),
        _ => Some(LossCategory::Breakdowns),
    }
}

fn system_time(at: jiff::Timestamp) -> SystemTime {
    SystemTime::from(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality, TagId, Value};

    const PRESS: &str = include_str!("../../tests/fixtures/line-press.toml");
    const STATE: u32 = 0;
    const REASON: u32 = 1;
    const TOTAL: u32 = 2;
    const GOOD: u32 = 3;
    const RECIPE: u32 = 4;
    const POWER: u32 = 5;

    fn press() -> Line {
        let mut plan = firmware_config::load_str(std::path::Path::new("line-press.toml"), PRESS)
            .expect("the fixture is valid");
        plan.lines.remove(0)
    }

    /// A line driven second by second on a manual clock.
    struct Run {
        core: LineCore,
        wall: SystemTime,
        mono: Duration,
        outputs: Vec<Output>,
    }

    impl Run {
        fn at(wall: &str, restored: Option<Persisted>) -> Run {
            Run {
                core: LineCore::new(press(), restored),
                wall: humantime::parse_rfc3339(wall).expect("time"),
                mono: Duration::from_secs(1_000),
                outputs: Vec::new(),
            }
        }

        fn set(&mut self, tag: u32, value: f64) {
            self.sample(tag, Some(Value::F64(value)), Quality::Good);
        }

        fn sample(&mut self, tag: u32, value: Option<Value>, quality: Quality) {
            let sample = Sample {
                tag: TagId(tag),
                timestamp: self.wall,
                server_timestamp: None,
                value,
                quality,
            };
            self.core.observe(&sample, self.mono);
        }

        fn step(&mut self) {
            let out = self.core.step(self.wall, self.mono);
            self.outputs.extend(out);
        }

        /// `seconds` steps of one second; `each(run, t)` sets the tags before each step.
        fn run(&mut self, seconds: u64, mut each: impl FnMut(&mut Run, u64)) {
            for t in 1..=seconds {
                self.wall += Duration::from_secs(1);
                self.mono += Duration::from_secs(1);
                each(self, t);
                self.step();
            }
        }

        fn tally(&self) -> Tally {
            self.core
                .persisted()
                .shift
                .as_ref()
                .expect("a shift")
                .tally
                .clone()
        }

        /// The closing reports sent so far.
        fn closing(&self) -> Vec<&LineReport> {
            self.outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Report(r) if r.closing => Some(r.as_ref()),
                    _ => None,
                })
                .collect()
        }

        fn downtimes(&self) -> Vec<&Downtime> {
            self.outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Downtime(d) => Some(d),
                    _ => None,
                })
                .collect()
        }
    }

    /// Starts a running press at `wall` with both counters at `count`.
    fn running(wall: &str, count: f64) -> Run {
        let mut run = Run::at(wall, None);
        run.set(STATE, 1.0);
        run.set(TOTAL, count);
        run.set(GOOD, count);
        run.set(POWER, 50.0);
        run.step();
        run
    }

    #[test]
    fn a_line_without_a_reject_counter_takes_rejects_from_quality_decisions() {
        // The press with its total counter only; a quality station rejects one part in 20.
        let mut line = press();
        line.good = None;
        line.rejects_from_quality = true;
        let mut run = Run {
            core: LineCore::new(line, None),
            wall: humantime::parse_rfc3339("2026-11-23T07:00:00Z").expect("time"),
            mono: Duration::from_secs(1_000),
            outputs: Vec::new(),
        };
        run.set(STATE, 1.0);
        run.set(TOTAL, 0.0);
        run.step();
        // 200 s at one part every 2 s (the ideal cycle): 100 parts, 5 rejected.
        run.run(200, |run, t| {
            if t % 2 == 0 {
                run.set(TOTAL, (t / 2) as f64);
                if t % 40 == 0 {
                    run.core.rejected(1.0);
                }
            }
        });
        let tally = run.tally();
        assert_eq!((tally.total, tally.reject), (Some(100.0), Some(5.0)));
        let quality = tally.figures().quality.expect("quality");
        assert!((quality - 0.95).abs() < 1e-9, "{quality}");
        // A line that counts its own rejects ignores the station's.
        let mut own = LineCore::new(press(), None);
        own.rejected(3.0);
        assert_eq!(own.step_parts[2], None);
    }

    #[test]
    fn an_hour_of_the_day_shift_worked_by_hand() {
        // 06:00 Monday: 4 parts every 10 s (the ideal is 5: 2 s cycle), one reject every 100 s.
        let mut run = running("2026-11-30T06:00:00Z", 100.0);
        let (mut total, mut good) = (100.0, 100.0);
        run.run(3600, |run, t| {
            if t % 10 == 0 {
                total += 4.0;
                good += if t % 100 == 0 { 3.0 } else { 4.0 };
                run.set(TOTAL, total);
                run.set(GOOD, good);
            }
        });
        let tally = run.tally();
        // 360 rounds of 4 parts = 1,440; 36 rejects, 5 of them (t = 100..500 s) inside the
        // 10-minute start-up window.
        assert_eq!((tally.total, tally.good), (Some(1_440.0), Some(1_404.0)));
        assert_eq!(tally.startup_rejects, 5.0);
        assert_eq!((tally.running, tally.unaccounted), (3_600.0, 0.0));
        let f = tally.figures();
        // A = 3600/3600; P = 2 s × 1,440 / 3,600 s = 0.8; Q = 1,404 / 1,440 = 0.975; OEE = 0.78.
        assert_eq!(f.availability, Some(1.0));
        assert!((f.performance.expect("p") - 0.8).abs() < 1e-12);
        assert!((f.quality.expect("q") - 0.975).abs() < 1e-12);
        assert!((f.oee.expect("oee") - 0.78).abs() < 1e-12);
        // 50 kW for an hour.
        assert!((tally.energy_kwh.expect("energy") - 50.0).abs() < 1e-9);
        assert_eq!(f.throughput_per_hour, Some(1_440.0));
    }

    #[test]
    fn a_stop_just_under_the_threshold_is_a_micro_stop_and_one_at_it_a_breakdown() {
        let mut run = running("2026-11-30T07:00:00Z", 0.0);
        // Fault for 299 s, running 100 s, fault with "jam at infeed" for 300 s, running.
        run.run(900, |run, t| match t {
            100 => run.set(STATE, 3.0),
            399 => run.set(STATE, 1.0),
            499 => {
                run.set(REASON, 12.0);
                run.set(STATE, 3.0);
            }
            799 => {
                run.set(STATE, 1.0);
                run.set(REASON, 0.0);
            }
            _ => {}
        });
        let tally = run.tally();
        assert_eq!(tally.micro_stops, 299.0, "debounce delays both edges alike");
        assert_eq!(
            tally.breakdowns,
            BTreeMap::from([("jam at infeed".to_string(), 300.0)])
        );
        assert_eq!(tally.running, 900.0 - 599.0);
        let downtimes = run.downtimes();
        assert_eq!(downtimes.len(), 1, "the micro-stop is no downtime event");
        assert_eq!(downtimes[0].reason.as_deref(), Some("jam at infeed"));
        assert_eq!(
            (downtimes[0].seconds, downtimes[0].state),
            (300.0, State::Fault)
        );
    }

    #[test]
    fn a_flicker_shorter_than_the_debounce_changes_nothing() {
        let mut run = running("2026-11-30T07:00:00Z", 0.0);
        run.run(60, |run, t| match t {
            10 => run.set(STATE, 3.0),
            11 => run.set(STATE, 1.0),
            _ => {}
        });
        let tally = run.tally();
        assert_eq!((tally.running, tally.micro_stops), (60.0, 0.0));
        assert!(run.downtimes().is_empty());
    }

    #[test]
    fn roll_over_and_a_bad_spell_neither_invent_nor_lose_parts() {
        let mut run = running("2026-11-30T07:00:00Z", 65_500.0);
        // One part a second; the counters are bad from 20 s to 80 s; they roll over at 65,535.
        run.run(120, |run, t| {
            let count = (65_500 + t) % 65_536;
            if (20..80).contains(&t) {
                run.sample(TOTAL, None, Quality::Timeout);
                run.sample(GOOD, None, Quality::Timeout);
            } else {
                run.set(TOTAL, count as f64);
                run.set(GOOD, count as f64);
            }
        });
        let tally = run.tally();
        assert_eq!((tally.total, tally.good), (Some(120.0), Some(120.0)));
        assert_eq!(tally.anomalies, 0);
    }

    #[test]
    fn a_counter_going_back_without_explanation_is_an_anomaly_not_negative_production() {
        let mut run = running("2026-11-30T07:00:00Z", 500.0);
        run.run(3, |run, t| {
            if t == 2 {
                run.set(TOTAL, 450.0);
            }
        });
        assert_eq!(run.tally().total, Some(0.0));
        assert_eq!(run.tally().anomalies, 1);
        assert!(run.outputs.iter().any(
            |o| matches!(o, Output::Anomaly(text) if text.contains("500") && text.contains("450"))
        ));
    }

    #[test]
    fn a_restart_mid_shift_keeps_the_counts_and_books_the_gap_as_unaccounted() {
        let mut run = running("2026-11-30T08:00:00Z", 0.0);
        run.run(600, |run, t| {
            if t % 2 == 0 {
                run.set(TOTAL, (t / 2) as f64);
                run.set(GOOD, (t / 2) as f64);
            }
        });
        let saved = serde_json::to_vec(run.core.save(run.wall)).expect("json");
        // Killed; back 120 s later (a new process: its monotonic clock starts anew), and the
        // press made 60 more parts meanwhile.
        let restored: Persisted = serde_json::from_slice(&saved).expect("json");
        let mut again = Run::at("2026-11-30T08:12:00Z", Some(restored));
        again.mono = Duration::from_secs(3);
        again.set(STATE, 1.0);
        again.set(TOTAL, 360.0);
        again.set(GOOD, 360.0);
        again.step();
        let tally = again.tally();
        assert_eq!(tally.total, Some(360.0), "300 before, 60 while down");
        // Unaccounted: 06:00–08:00 before the first start, and the 120 s it was down.
        assert_eq!((tally.running, tally.unaccounted), (600.0, 7_200.0 + 120.0));
    }

    #[test]
    fn a_wall_clock_step_creates_no_production_time() {
        let mut run = running("2026-11-30T08:00:00Z", 0.0);
        run.run(100, |_, _| {});
        // NTP steps the clock 30 minutes forward; one real second passes.
        run.wall += Duration::from_secs(1_800);
        run.run(1, |_, _| {});
        assert_eq!(run.tally().running, 101.0);
    }

    #[test]
    fn the_break_is_planned_downtime_and_the_shift_closes_at_its_end() {
        let mut run = running("2026-11-30T09:55:00Z", 0.0);
        // Running until the break, stopped (idle) through it, running after it until 14:00.
        run.run(4 * 3600 + 5 * 60, |run, t| match t {
            300 => run.set(STATE, 2.0),
            1200 => run.set(STATE, 1.0),
            _ => {}
        });
        let closing = run.closing();
        assert_eq!(closing.len(), 1);
        let tally = &closing[0].tally;
        // Idle from 10:00:02 to 10:15:02 (debounced): 898 s inside the break, 2 s after it.
        assert_eq!(tally.planned_downtime, 898.0);
        assert_eq!(
            tally.micro_stops, 2.0,
            "the 2 s after the break were an unplanned stop"
        );
        // The gateway started at 09:55: the shift's first 3 h 55 min were not seen.
        assert_eq!(tally.unaccounted, (3 * 3600 + 55 * 60) as f64);
        assert_eq!(run.core.persisted().shift, None, "no shift after 14:00");
    }

    #[test]
    fn overtime_after_the_shift_is_reported_when_the_next_shift_begins() {
        // Running at the ideal 2 s cycle from 13:50 (Monday) to 14:30, then idle overnight.
        let mut run = running("2026-11-30T13:50:00Z", 0.0);
        let mut count = 0.0;
        run.run(40 * 60, |run, t| {
            if t % 2 == 0 {
                count += 1.0;
                run.set(TOTAL, count);
                run.set(GOOD, count);
            }
        });
        run.set(STATE, 2.0);
        // Until Tuesday 06:00:05, when the next day shift has begun.
        run.run(15 * 3600 + 30 * 60 + 5, |_, _| {});
        let closing = run.closing();
        assert_eq!(closing.len(), 2, "the day shift, then the time after it");
        let overtime = closing[1];
        assert_eq!(overtime.shift, UNSCHEDULED);
        let day = |t: &str| humantime::parse_rfc3339(t).expect("time");
        assert_eq!(overtime.shift_start, day("2026-11-30T14:00:00Z"));
        assert_eq!(overtime.shift_end, day("2026-12-01T06:00:00Z"));
        // 14:00–14:30 running (and 3 s more: idle is taken after the 2 s debounce, counted from
        // the first step that saw it), 900 parts, none lost to the boundary.
        let f = &overtime.figures;
        assert_eq!(overtime.tally.running, 1803.0);
        assert_eq!(f.total, 900.0);
        assert_eq!(closing[0].figures.total + f.total, count);
        // Idle between shifts is no loss: planned downtime, availability stays whole.
        assert_eq!(f.availability, Some(1.0));
        assert!(overtime.tally.planned_downtime > 15.0 * 3600.0);
        assert_eq!(
            run.core.persisted().shift.as_ref().map(|s| s.name.as_str()),
            Some("day")
        );
        assert_eq!(run.core.persisted().unscheduled, None);
    }

    #[test]
    fn idle_time_between_shifts_is_not_reported() {
        // Saturday: no shift all weekend; idle until Monday's shift begins.
        let mut run = Run::at("2026-11-28T12:00:00Z", None);
        run.set(STATE, 2.0);
        run.set(TOTAL, 5.0);
        run.set(GOOD, 5.0);
        run.run(42 * 3600 + 5, |_, _| {});
        assert!(
            !run.outputs
                .iter()
                .any(|o| matches!(o, Output::Report(r) if r.shift == UNSCHEDULED)),
            "no parts, no running: nothing to report"
        );
        assert!(run.core.persisted().shift.is_some(), "Monday's day shift");
    }

    #[test]
    fn parts_follow_the_products_ideal_cycle() {
        let mut run = running("2026-11-30T07:00:00Z", 0.0);
        run.set(RECIPE, 7.0); // 1 s ideal cycle
        run.run(100, |run, t| {
            run.set(TOTAL, t as f64);
            run.set(GOOD, t as f64);
        });
        let f = run.tally().figures();
        assert!(
            (f.performance.expect("p") - 1.0).abs() < 1e-12,
            "one part a second at a 1 s ideal"
        );
    }

    #[test]
    fn alert_conditions_follow_the_stop_the_oee_and_the_rejects() {
        let mut run = running("2026-11-30T07:00:00Z", 0.0);
        let first: Vec<(String, bool)> = run
            .core
            .conditions()
            .into_iter()
            .map(|c| (c.id, c.active))
            .collect();
        assert_eq!(
            first,
            [
                ("press-1/stopped".to_string(), false),
                ("press-1/oee".to_string(), false),
                ("press-1/rejects".to_string(), false)
            ],
            "all sent once, inactive, so a restart clears what was left active"
        );
        // A fault with a reason: the stop alert after 10 minutes, not before.
        run.run(9 * 60, |run, t| {
            if t == 1 {
                run.set(REASON, 12.0);
                run.set(STATE, 3.0);
            }
        });
        assert!(run.core.conditions().is_empty(), "nothing changed yet");
        run.run(2 * 60, |_, _| {});
        let raised = run.core.conditions();
        assert_eq!(raised.len(), 1);
        assert_eq!(
            (raised[0].id.as_str(), raised[0].active),
            ("press-1/stopped", true)
        );
        assert!(
            raised[0].reason.contains("fault: jam at infeed"),
            "{}",
            raised[0].reason
        );
        // Running again, slowly (one part every 4 s: performance 0.5) with 10 % rejects: after
        // 30 minutes of busy time the OEE and reject alerts stand, and the stop alert clears.
        let mut count = 0.0;
        run.run(25 * 60, |run, t| {
            if t == 1 {
                run.set(STATE, 1.0);
            }
            if t % 4 == 0 {
                count += 1.0;
                run.set(TOTAL, count);
                let good = count - (count / 10.0).floor();
                run.set(GOOD, good);
            }
        });
        let mut changed: Vec<(String, bool)> = run
            .core
            .conditions()
            .into_iter()
            .map(|c| (c.id, c.active))
            .collect();
        changed.sort();
        assert_eq!(
            changed,
            [
                ("press-1/oee".to_string(), true),
                ("press-1/rejects".to_string(), true),
                ("press-1/stopped".to_string(), false)
            ]
        );
    }

    #[test]
    fn a_changeover_is_setup_time_and_a_downtime_event_with_its_length() {
        let mut run = running("2026-11-30T07:00:00Z", 0.0);
        run.run(1_000, |run, t| match t {
            100 => {
                run.set(REASON, 20.0);
                run.set(STATE, 4.0);
            }
            700 => run.set(STATE, 1.0),
            _ => {}
        });
        assert_eq!(run.tally().setup, 600.0);
        let downtimes = run.downtimes();
        assert_eq!(downtimes.len(), 1);
        assert_eq!(
            (downtimes[0].state, downtimes[0].seconds),
            (State::Changeover, 600.0)
        );
        assert_eq!(downtimes[0].reason.as_deref(), Some("die change"));
        assert_eq!(downtimes[0].category, Some(LossCategory::SetupChangeover));
    }
}
