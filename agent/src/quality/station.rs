//! One quality station's core: parts from the trigger, a decision per part, the characteristics'
//! charts, and the running and per-shift reports. Pure: samples and times in, outputs out.
//!
//! A part is complete when the trigger counter increments (a jump of several counts is one part
//! decided and the rest counted as missed: their values were never seen) or the part-done flag
//! rises. Its characteristics are the values current `settle` after the trigger; its part id the
//! one current at the trigger. Invariants: a part is decided exactly once; a characteristic with
//! no good value at decision time sends the part to review, never to pass; the charts see every
//! measured part, whatever its decision.

use std::time::{Duration, SystemTime};

use firmware_config::quality::{Characteristic, ControlLimits, Station, Trigger};
use serde::{Deserialize, Serialize};

use super::spc::{self, Capability, ControlChart, Plotted, Spread, Violation};
use crate::decisions::lifecycle::{Condition, Origin};
use crate::sample::{Sample, Value};
use firmware_config::Severity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Pass,
    Review,
    Reject,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::Pass => "pass",
            Decision::Review => "review",
            Decision::Reject => "reject",
        }
    }

    pub fn action(self) -> &'static str {
        match self {
            Decision::Pass => "continue_production",
            Decision::Review => "manual_inspection",
            Decision::Reject => "remove_from_line",
        }
    }
}

/// One part's decision: the record every part gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartDecision {
    pub station: String,
    pub part_id: Option<String>,
    pub at: SystemTime,
    /// Each characteristic's value at the decision (`None`: not measured).
    pub values: Vec<(String, Option<f64>)>,
    pub score: f64,
    pub types: Vec<String>,
    pub decision: Decision,
    /// Run-rule violations the part's values completed.
    pub violations: Vec<String>,
    /// The station's defect model's probability, when it has one and every input was measured.
    pub model_score: Option<f64>,
    /// The camera image's file name and the image model's probability.
    pub image: Option<String>,
    pub image_score: Option<f64>,
}

/// One characteristic over a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharacteristicFigures {
    pub name: String,
    pub unit: Option<String>,
    pub n: u64,
    pub mean: Option<f64>,
    pub sigma_within: Option<f64>,
    pub sigma_overall: Option<f64>,
    pub capability: Capability,
    /// The chart's frozen limits; `None` while they are learned.
    pub limits: Option<ControlLimits>,
    /// Violations by rule, in the order first seen.
    pub violations: Vec<(String, u32)>,
}

/// A station's quality over a report interval (running) or a shift (closing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    pub station: String,
    pub line: Option<String>,
    pub shift: Option<String>,
    pub closing: bool,
    pub from: SystemTime,
    pub to: SystemTime,
    pub parts: u64,
    pub pass: u64,
    pub review: u64,
    pub reject: u64,
    /// Counts the trigger moved past without a decision (a counter that jumped).
    pub missed: u64,
    /// Camera images that found no part (moved to `unmatched/`).
    pub unmatched_images: u64,
    pub mean_score: Option<f64>,
    pub characteristics: Vec<CharacteristicFigures>,
}

impl QualityReport {
    pub fn reject_rate(&self) -> Option<f64> {
        (self.parts > 0).then(|| self.reject as f64 / self.parts as f64)
    }
}

/// What the core asks its loop to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Part(Box<PartDecision>),
    Report(Box<QualityReport>),
    Condition(Condition),
    /// Limits were learned for characteristic `index`: save them.
    Learned(usize, ControlLimits),
    /// Move a camera image to the subfolder named `to` (pass, review, reject, unmatched).
    MoveImage {
        file: std::path::PathBuf,
        to: &'static str,
    },
}

/// Figures accumulated over one report (interval or shift).
#[derive(Debug, Clone, Default)]
struct Tally {
    from: Option<SystemTime>,
    parts: u64,
    decided: [u64; 3],
    missed: u64,
    unmatched_images: u64,
    score_sum: f64,
    spreads: Vec<Spread>,
    violations: Vec<Vec<(String, u32)>>,
}

impl Tally {
    fn fresh(characteristics: usize, from: SystemTime) -> Tally {
        Tally {
            from: Some(from),
            spreads: vec![Spread::default(); characteristics],
            violations: vec![Vec::new(); characteristics],
            ..Tally::default()
        }
    }

    fn count(&mut self, decision: Decision, score: f64) {
        self.parts += 1;
        self.score_sum += score;
        self.decided[decision as usize] += 1;
    }

    fn violated(&mut self, index: usize, rule: &str) {
        let list = &mut self.violations[index];
        match list.iter_mut().find(|(r, _)| r == rule) {
            Some((_, n)) => *n += 1,
            None => list.push((rule.to_string(), 1)),
        }
    }
}

/// A part waiting for its settle time.
#[derive(Debug, Clone)]
struct Pending {
    due: Duration,
    part_id: Option<String>,
    /// When the part was seen: an image is waited for until `triggered + wait`.
    triggered: Duration,
    /// The trigger sample's time, for images linked by time.
    at: SystemTime,
    image: Option<ImageVerdict>,
}

/// A camera image of a part, scored (or why not).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageVerdict {
    pub file: std::path::PathBuf,
    /// When the file was written (its modification time), for images linked by time.
    pub written: Option<SystemTime>,
    pub score: Result<f64, String>,
}

impl ImageVerdict {
    fn name(&self) -> String {
        self.file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string())
    }

    /// Whether the file name holds `id` as a whole token (between non-alphanumerics).
    fn names(&self, id: &str) -> bool {
        let stem = self
            .file
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().to_string());
        stem.split(|c: char| !c.is_ascii_alphanumeric())
            .any(|t| t == id)
    }
}

/// Images that came before their part, at most this many (the oldest go to `unmatched/`).
const UNLINKED: usize = 16;

/// The latest good value of a characteristic.
type Latest = Option<f64>;

pub struct StationCore {
    station: Station,
    model: Option<std::sync::Arc<super::model::PartModel>>,
    charts: Vec<ControlChart>,
    values: Vec<Latest>,
    part_id: Option<String>,
    /// The trigger's last reading (counter value, or flag state as 0/1).
    trigger_last: Option<i64>,
    pending: std::collections::VecDeque<Pending>,
    /// Images that came before their part, with when they came.
    unlinked: std::collections::VecDeque<(Duration, ImageVerdict)>,
    interval: Tally,
    since_start: Tally,
    shift: Option<(String, SystemTime, Tally)>,
    next_report: Option<Duration>,
    /// Whether each characteristic's SPC alert is up, and the station's other alerts.
    spc_active: Vec<bool>,
    raised: std::collections::HashMap<String, bool>,
}

/// The longest a part may wait for its settle time before it is decided anyway (a settle
/// longer than this is refused by nobody, but a queue of parts must stay bounded).
const MAX_PENDING: usize = 64;

impl StationCore {
    /// `learned`: limits saved for each characteristic (by index) from an earlier run.
    pub fn new(station: Station, learned: &[Option<ControlLimits>], now: SystemTime) -> Self {
        let charts: Vec<ControlChart> = station
            .characteristics
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let limits = c.limits.or(learned.get(i).copied().flatten());
                ControlChart::new(c.chart, c.rules.clone(), limits, c.baseline)
            })
            .collect();
        let count = station.characteristics.len();
        StationCore {
            model: None,
            charts,
            values: vec![None; count],
            part_id: None,
            trigger_last: None,
            pending: std::collections::VecDeque::new(),
            unlinked: std::collections::VecDeque::new(),
            interval: Tally::fresh(count, now),
            since_start: Tally::fresh(count, now),
            shift: None,
            next_report: Some(station.report_interval),
            spc_active: vec![false; count],
            raised: std::collections::HashMap::new(),
            station,
        }
    }

    pub fn station(&self) -> &Station {
        &self.station
    }

    /// Scores parts with `model` too (the higher score counts).
    pub fn with_model(mut self, model: Option<std::sync::Arc<super::model::PartModel>>) -> Self {
        self.model = model;
        self
    }

    pub fn limits(&self) -> Vec<Option<ControlLimits>> {
        self.charts.iter().map(ControlChart::limits).collect()
    }

    /// Forgets characteristic `name`'s learned limits (given ones stay); whether it was found.
    pub fn relearn(&mut self, name: &str) -> bool {
        let found = self
            .station
            .characteristics
            .iter()
            .position(|c| c.name == name);
        if let Some(i) = found {
            if self.station.characteristics[i].limits.is_none() {
                self.charts[i].relearn();
            }
        }
        found.is_some()
    }

    /// Takes one sample (`mono`: the monotonic time of the stage).
    pub fn observe(&mut self, sample: &Sample, mono: Duration) {
        let tag = sample.tag.0;
        let good = sample.quality.is_good();
        for (i, c) in self.station.characteristics.iter().enumerate() {
            if c.tag == tag {
                self.values[i] = good
                    .then(|| sample.value.as_ref().and_then(Value::as_f64))
                    .flatten()
                    .filter(|x| x.is_finite());
            }
        }
        if self.station.part_id == Some(tag) {
            self.part_id = good.then(|| sample.value.as_ref().map(id_text)).flatten();
        }
        let (Trigger::Counter(trigger) | Trigger::PartDone(trigger)) = self.station.trigger;
        if trigger == tag && good {
            if let Some(reading) = sample.value.as_ref().and_then(trigger_reading) {
                self.trigger(reading, mono, sample.timestamp);
            }
        }
    }

    fn trigger(&mut self, reading: i64, mono: Duration, at: SystemTime) {
        let last = self.trigger_last.replace(reading);
        let parts = match (self.station.trigger, last) {
            // The first reading after a start is where counting begins.
            (_, None) => 0,
            (Trigger::Counter(_), Some(last)) if reading > last => reading - last,
            // A reset (or a roll-over, which costs the one part that rolled it): counting
            // starts again from the new value.
            (Trigger::PartDone(_), Some(0)) if reading != 0 => 1,
            _ => 0,
        };
        if parts == 0 {
            return;
        }
        let missed = (parts - 1) as u64 + u64::from(self.pending.len() >= MAX_PENDING);
        self.tallies().for_each(|t| t.missed += missed);
        if self.pending.len() >= MAX_PENDING {
            return;
        }
        let mut part = Pending {
            due: mono + self.station.settle,
            part_id: self.part_id.clone(),
            triggered: mono,
            at,
            image: None,
        };
        part.image = self.take_unlinked(&part);
        self.pending.push_back(part);
    }

    /// When the next waiting part is due: its settle time, and with images, its image or the
    /// end of the wait for it (parts are decided in order).
    pub fn next_due(&self) -> Option<Duration> {
        let part = self.pending.front()?;
        match &self.station.images {
            Some(images) if part.image.is_none() => {
                Some(part.due.max(part.triggered + images.wait))
            }
            _ => Some(part.due),
        }
    }

    /// How well `verdict` fits `part`: `None` not at all; else the distance (0 by id or by
    /// arrival, the time between the trigger and the file's writing by time).
    fn fit(&self, part: &Pending, verdict: &ImageVerdict) -> Option<Duration> {
        use firmware_config::quality::ImageLink;
        let images = self.station.images.as_ref()?;
        match images.link {
            ImageLink::Arrival => Some(Duration::ZERO),
            ImageLink::PartId => part
                .part_id
                .as_deref()
                .is_some_and(|id| verdict.names(id))
                .then_some(Duration::ZERO),
            ImageLink::Time => {
                let written = verdict.written?;
                let apart = written
                    .duration_since(part.at)
                    .or_else(|e| Ok::<_, ()>(e.duration()))
                    .unwrap_or_default();
                (apart <= images.wait).then_some(apart)
            }
        }
    }

    /// A camera image, scored: linked to its part (by id in its name, by time or in order of
    /// arrival), or kept until its part comes.
    pub fn image(&mut self, verdict: ImageVerdict, mono: Duration, out: &mut Vec<Output>) {
        let best = self
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.image.is_none())
            .filter_map(|(i, p)| Some((self.fit(p, &verdict)?, i)))
            .min();
        match best.and_then(|(_, i)| self.pending.get_mut(i)) {
            Some(part) => part.image = Some(verdict),
            None => {
                if self.unlinked.len() == UNLINKED {
                    if let Some((_, oldest)) = self.unlinked.pop_front() {
                        self.unmatched(oldest, out);
                    }
                }
                self.unlinked.push_back((mono, verdict));
            }
        }
    }

    /// The image kept for a part that just came: the best fit (the oldest of equals).
    fn take_unlinked(&mut self, part: &Pending) -> Option<ImageVerdict> {
        let (_, at) = self
            .unlinked
            .iter()
            .enumerate()
            .filter_map(|(i, (_, v))| Some((self.fit(part, v)?, i)))
            .min()?;
        self.unlinked.remove(at).map(|(_, v)| v)
    }

    /// Images kept longer than two waits found no part: set aside.
    fn expire_unlinked(&mut self, mono: Duration, out: &mut Vec<Output>) {
        let Some(wait) = self.station.images.as_ref().map(|i| i.wait) else {
            return;
        };
        while self
            .unlinked
            .front()
            .is_some_and(|(at, _)| mono.saturating_sub(*at) > wait * 2)
        {
            if let Some((_, verdict)) = self.unlinked.pop_front() {
                self.unmatched(verdict, out);
            }
        }
    }

    fn unmatched(&mut self, verdict: ImageVerdict, out: &mut Vec<Output>) {
        self.tallies().for_each(|t| t.unmatched_images += 1);
        out.push(Output::MoveImage {
            file: verdict.file,
            to: "unmatched",
        });
    }

    /// Decides every part due by `mono`, and sends reports that are due.
    pub fn step(&mut self, mono: Duration, now: SystemTime, out: &mut Vec<Output>) {
        while self.next_due().is_some_and(|due| due <= mono) {
            let Some(part) = self.pending.pop_front() else {
                break;
            };
            self.decide(part, now, out);
        }
        self.expire_unlinked(mono, out);
        let every = self.station.report_interval;
        let due = *self.next_report.get_or_insert(mono + every);
        if mono >= due {
            self.next_report = Some(mono + every);
            let tally = std::mem::replace(
                &mut self.interval,
                Tally::fresh(self.station.characteristics.len(), now),
            );
            let report = self.report(&tally, now, None, false);
            self.judge(&report, out);
            out.push(Output::Report(Box::new(report)));
        }
    }

    /// Moves to the shift under way at `now` (`None` between shifts): the shift that ended gets
    /// its closing report.
    pub fn shift(&mut self, current: Option<&str>, now: SystemTime, out: &mut Vec<Output>) {
        if self.shift.as_ref().map(|(name, ..)| name.as_str()) == current {
            return;
        }
        if let Some((name, _, tally)) = self.shift.take() {
            out.push(Output::Report(Box::new(self.report(
                &tally,
                now,
                Some(name),
                true,
            ))));
        }
        self.shift = current.map(|name| {
            (
                name.to_string(),
                now,
                Tally::fresh(self.station.characteristics.len(), now),
            )
        });
    }

    /// Every tally a part counts in: the running report's, the shift's, and the one since start.
    fn tallies(&mut self) -> impl Iterator<Item = &mut Tally> {
        [Some(&mut self.interval), Some(&mut self.since_start)]
            .into_iter()
            .chain([self.shift.as_mut().map(|(_, _, tally)| tally)])
            .flatten()
    }

    /// The station's figures since it started (the whole recording, in replay).
    pub fn overall(&self, now: SystemTime) -> QualityReport {
        self.report(&self.since_start, now, None, false)
    }

    fn decide(&mut self, part: Pending, now: SystemTime, out: &mut Vec<Output>) {
        let (mut score, mut types, mut decision, model_score) = self.judge_part();
        let image_score = self.judge_image(&part, &mut score, &mut types, &mut decision);
        let violations = self.chart(out);
        self.tallies().for_each(|t| t.count(decision, score));
        out.push(Output::Part(Box::new(PartDecision {
            station: self.station.name.clone(),
            part_id: part.part_id,
            at: now,
            values: self
                .station
                .characteristics
                .iter()
                .zip(&self.values)
                .map(|(c, v)| (c.name.clone(), *v))
                .collect(),
            score,
            types,
            decision,
            violations,
            model_score,
            image: part.image.as_ref().map(ImageVerdict::name),
            image_score,
        })));
        if let Some(image) = part.image {
            out.push(Output::MoveImage {
                file: image.file,
                to: decision.name(),
            });
        }
    }

    /// Folds the part's camera image into its score, types and decision: a defect seen raises
    /// the score; an image missing or unreadable sends the part to review at least.
    fn judge_image(
        &self,
        part: &Pending,
        score: &mut f64,
        types: &mut Vec<String>,
        decision: &mut Decision,
    ) -> Option<f64> {
        self.station.images.as_ref()?;
        let (image_score, problem) = match part.image.as_ref().map(|i| &i.score) {
            Some(Ok(p)) => (Some(*p), None),
            Some(Err(_)) => (None, Some("image_unreadable")),
            None => (None, Some("image_missing")),
        };
        if let Some(p) = image_score {
            if p > self.station.review_above {
                types.push("image_defect".into());
            }
            *score = score.max(p);
            *decision = self.decision_of(*score).max(*decision);
        }
        if let Some(problem) = problem {
            types.push(problem.into());
            *decision = (*decision).max(Decision::Review);
        }
        image_score
    }

    fn decision_of(&self, score: f64) -> Decision {
        if score > self.station.reject_above {
            Decision::Reject
        } else if score > self.station.review_above {
            Decision::Review
        } else {
            Decision::Pass
        }
    }

    /// The part's defect score, its defect types, the decision and the model's own score, from
    /// the current values.
    fn judge_part(&self) -> (f64, Vec<String>, Decision, Option<f64>) {
        let station = &self.station;
        let mut score: f64 = 0.0;
        let mut types = Vec::new();
        let mut unmeasured = false;
        for (c, value) in station.characteristics.iter().zip(&self.values) {
            match value {
                None => {
                    unmeasured = true;
                    types.push(format!("{}_not_measured", c.name));
                }
                Some(x) => {
                    let (s, kind) = spec_score(c, *x, station.score_at_spec);
                    score = score.max(s);
                    if s > station.review_above {
                        types.extend(kind.map(|k| format!("{}_{k}", c.name)));
                    }
                }
            }
        }
        let model_score = match self.model.as_ref().and_then(|m| m.score(&self.values)) {
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                // Judged by its spec limits alone; the type says why the model is missing.
                types.push("model_failed".into());
                None
            }
            None => None,
        };
        if let Some(p) = model_score {
            if p > station.review_above {
                types.push("model_defect".into());
            }
            score = score.max(p);
        }
        let mut decision = if score > station.reject_above {
            Decision::Reject
        } else if score > station.review_above {
            Decision::Review
        } else {
            Decision::Pass
        };
        if unmeasured && decision == Decision::Pass {
            decision = Decision::Review;
        }
        (score, types, decision, model_score)
    }

    /// Plots the part's values on the charts; the violations they completed.
    fn chart(&mut self, out: &mut Vec<Output>) -> Vec<String> {
        let mut texts = Vec::new();
        for i in 0..self.charts.len() {
            let Some(x) = self.values[i] else { continue };
            let chart = self.charts[i].chart();
            let plotted = self.charts[i].add(x);
            let point = match &plotted {
                Plotted::Point(point, _) => Some(*point),
                _ => None,
            };
            self.tallies()
                .for_each(|t| t.spreads[i].add(x, point.as_ref(), chart));
            match plotted {
                Plotted::Learning(Some(limits)) => out.push(Output::Learned(i, limits)),
                Plotted::Point(_, violations) => {
                    self.violations(i, &violations, out);
                    texts.extend(violations.into_iter().map(|v| v.text));
                }
                Plotted::Pending | Plotted::Learning(None) => {}
            }
        }
        texts
    }

    fn violations(&mut self, i: usize, violations: &[Violation], out: &mut Vec<Output>) {
        for v in violations {
            self.tallies().for_each(|t| t.violated(i, &v.rule));
        }
        let active = !violations.is_empty();
        if !self.station.alerts.run_rules || self.spc_active[i] == active {
            return;
        }
        self.spc_active[i] = active;
        let c = &self.station.characteristics[i];
        let reason = match violations.first() {
            Some(v) => format!(
                "{} {}: {} chart, {}",
                self.station.name, c.name, v.chart, v.text
            ),
            None => format!("{} {}: back in control", self.station.name, c.name),
        };
        out.push(Output::Condition(self.condition(
            &format!("{}/spc", c.name),
            active,
            None,
            reason,
        )));
    }

    fn condition(&self, what: &str, active: bool, value: Option<f64>, reason: String) -> Condition {
        Condition {
            id: format!("{}/{what}", self.station.name),
            source: self.station.name.clone(),
            origin: Origin::Quality,
            severity: Severity::Medium,
            latching: false,
            active,
            value,
            reason,
        }
    }

    /// Cpk and reject-rate alerts on a running report with enough parts.
    fn judge(&mut self, report: &QualityReport, out: &mut Vec<Output>) {
        let alerts = self.station.alerts;
        if report.parts < u64::from(alerts.min_parts) {
            return;
        }
        let mut judged = Vec::new();
        if let Some(min) = alerts.cpk_below {
            for (c, figures) in self
                .station
                .characteristics
                .iter()
                .zip(&report.characteristics)
            {
                if let (true, Some(cpk)) = (c.has_spec(), figures.capability.cpk) {
                    let reason = format!(
                        "{} {}: Cpk {cpk:.2} (minimum {min})",
                        self.station.name, c.name
                    );
                    judged.push((format!("{}/cpk", c.name), cpk < min, Some(cpk), reason));
                }
            }
        }
        if let (Some(limit), Some(rate)) = (alerts.reject_rate_above, report.reject_rate()) {
            let reason = format!(
                "{}: {} of {} parts rejected ({:.1} %, limit {:.1} %)",
                self.station.name,
                report.reject,
                report.parts,
                rate * 100.0,
                limit * 100.0
            );
            judged.push(("reject_rate".to_string(), rate > limit, Some(rate), reason));
        }
        for (what, active, value, reason) in judged {
            if self.raised.get(&what).copied().unwrap_or(false) == active {
                continue;
            }
            self.raised.insert(what.clone(), active);
            out.push(Output::Condition(
                self.condition(&what, active, value, reason),
            ));
        }
    }

    fn report(
        &self,
        tally: &Tally,
        now: SystemTime,
        shift: Option<String>,
        closing: bool,
    ) -> QualityReport {
        let characteristics = self
            .station
            .characteristics
            .iter()
            .zip(&tally.spreads)
            .zip(&self.charts)
            .zip(&tally.violations)
            .map(|(((c, spread), chart), violations)| figures(c, spread, chart, violations))
            .collect();
        QualityReport {
            station: self.station.name.clone(),
            line: self.station.line.as_ref().map(|(name, _)| name.clone()),
            shift,
            closing,
            from: tally.from.unwrap_or(now),
            to: now,
            parts: tally.parts,
            pass: tally.decided[Decision::Pass as usize],
            review: tally.decided[Decision::Review as usize],
            reject: tally.decided[Decision::Reject as usize],
            missed: tally.missed,
            unmatched_images: tally.unmatched_images,
            mean_score: (tally.parts > 0).then(|| tally.score_sum / tally.parts as f64),
            characteristics,
        }
    }
}

fn figures(
    c: &Characteristic,
    spread: &Spread,
    chart: &ControlChart,
    violations: &[(String, u32)],
) -> CharacteristicFigures {
    let sigma_within = spread.within.sigma(c.chart);
    let sigma_overall = spread.sigma_overall();
    let mean = (spread.n > 0).then_some(spread.mean);
    CharacteristicFigures {
        name: c.name.clone(),
        unit: c.unit.clone(),
        n: spread.n,
        mean,
        sigma_within,
        sigma_overall,
        capability: mean.map_or_else(Capability::default, |m| {
            spc::capability(m, sigma_within, sigma_overall, c.lsl, c.usl)
        }),
        limits: chart.limits(),
        violations: violations.to_vec(),
    }
}

/// A characteristic's defect score for value `x`: 0 on target, `at_spec` at a spec limit,
/// linear in between and beyond (capped at 1); and which way it is off when it is off.
pub fn spec_score(c: &Characteristic, x: f64, at_spec: f64) -> (f64, Option<&'static str>) {
    let Some(target) = c.target else {
        return (0.0, None);
    };
    let (limit, out, near) = if x >= target {
        (c.usl, "above_usl", "near_usl")
    } else {
        (c.lsl, "below_lsl", "near_lsl")
    };
    let Some(limit) = limit else {
        return (0.0, None);
    };
    let distance = (x - target) / (limit - target);
    let beyond = if x >= target { x > limit } else { x < limit };
    let score = (distance * at_spec).clamp(0.0, 1.0);
    (score, Some(if beyond { out } else { near }))
}

/// A trigger's reading as an integer (a bool as 0 or 1).
fn trigger_reading(value: &Value) -> Option<i64> {
    match value {
        Value::Bool(b) => Some(i64::from(*b)),
        Value::I64(v) => Some(*v),
        Value::U64(v) => i64::try_from(*v).ok(),
        Value::F64(v) if v.is_finite() => Some(*v as i64),
        _ => None,
    }
}

fn id_text(value: &Value) -> String {
    match value {
        Value::Text(s) => s.to_string(),
        Value::I64(v) => v.to_string(),
        Value::U64(v) => v.to_string(),
        Value::F64(v) => v.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Quality, TagId};

    const GAUGE: &str = include_str!("../../tests/fixtures/quality-gauge.toml");

    /// The gauge station with its bore on an I-MR chart with given limits (centre 25.000, σ
    /// 0.005 mm) and Nelson rules, without its weight characteristic; `edits` change the text.
    fn station_with(edits: &[(&str, &str)]) -> Station {
        let mut text = GAUGE.replace(
            "baseline = 25\n",
            "limits = { center = 25.0, sigma = 0.005 }\n",
        );
        for (from, to) in edits {
            text = text.replace(from, to);
        }
        let mut plan =
            firmware_config::load_str(std::path::Path::new("gauge.toml"), &text).expect("valid");
        let mut station = plan.quality.remove(0);
        station.characteristics.truncate(1);
        station
    }

    fn sample(tag: u32, value: Value) -> Sample {
        Sample {
            tag: TagId(tag),
            server_timestamp: None,
            timestamp: SystemTime::UNIX_EPOCH,
            value: Some(value),
            quality: Quality::Good,
        }
    }

    /// Runs parts through the core: each (bore) value is one counter increment; the outputs.
    fn parts(core: &mut StationCore, bores: &[f64]) -> Vec<Output> {
        let mut out = Vec::new();
        let t0 = SystemTime::UNIX_EPOCH;
        core.observe(&sample(0, Value::U64(100)), Duration::ZERO);
        for (i, bore) in bores.iter().enumerate() {
            let mono = Duration::from_millis(100 * (i as u64 + 1));
            core.observe(&sample(1, Value::U64(5000 + i as u64)), mono);
            core.observe(&sample(0, Value::U64(101 + i as u64)), mono);
            core.observe(&sample(2, Value::F64(*bore)), mono);
            core.step(mono, t0 + mono, &mut out);
        }
        out
    }

    fn decisions(out: &[Output]) -> Vec<(Decision, f64)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Part(p) => Some((p.decision, p.score)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn decisions_at_the_thresholds() {
        // Spec 24.95..25.05 around 25.00: the score is 0.8 × distance / 0.05.
        // 25.03125 scores exactly 0.5 (pass: review is *above* 0.5); 25.0313 review;
        // 25.05 at the limit scores 0.8 (review: reject is above 0.8); 25.0501 reject;
        // 24.93 beyond the lower limit scores 1.0 (capped at 1.12).
        let mut core = StationCore::new(station_with(&[]), &[], SystemTime::UNIX_EPOCH);
        let got = decisions(&parts(
            &mut core,
            &[25.03125, 25.0313, 25.05, 25.0501, 24.93],
        ));
        let kinds: Vec<Decision> = got.iter().map(|(d, _)| *d).collect();
        assert_eq!(
            kinds,
            [
                Decision::Pass,
                Decision::Review,
                Decision::Review,
                Decision::Reject,
                Decision::Reject
            ]
        );
        assert!((got[0].1 - 0.5).abs() < 1e-9);
        assert!((got[2].1 - 0.8).abs() < 1e-9);
        assert_eq!(got[4].1, 1.0);
    }

    #[test]
    fn a_part_records_its_id_types_and_action() {
        let mut core = StationCore::new(station_with(&[]), &[], SystemTime::UNIX_EPOCH);
        let out = parts(&mut core, &[25.06]);
        let Some(Output::Part(part)) = out.iter().find(|o| matches!(o, Output::Part(_))) else {
            panic!("a part")
        };
        assert_eq!(part.part_id.as_deref(), Some("5000"));
        assert_eq!(part.types, ["bore_above_usl"]);
        assert_eq!(part.decision.action(), "remove_from_line");
        assert_eq!(part.values, [("bore".to_string(), Some(25.06))]);
    }

    #[test]
    fn a_part_without_a_measurement_goes_to_review() {
        let mut core = StationCore::new(station_with(&[]), &[], SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        core.observe(&sample(0, Value::U64(1)), Duration::ZERO);
        core.observe(&sample(0, Value::U64(2)), Duration::from_secs(1));
        core.step(Duration::from_secs(1), SystemTime::UNIX_EPOCH, &mut out);
        let got = decisions(&out);
        assert_eq!(got, [(Decision::Review, 0.0)]);
    }

    #[test]
    fn a_counter_that_jumps_is_one_part_and_the_rest_missed() {
        let mut core = StationCore::new(station_with(&[]), &[], SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        core.observe(&sample(2, Value::F64(25.0)), Duration::ZERO);
        core.observe(&sample(0, Value::U64(10)), Duration::ZERO);
        core.observe(&sample(0, Value::U64(13)), Duration::from_secs(1));
        // A reset to 0 is no part.
        core.observe(&sample(0, Value::U64(0)), Duration::from_secs(2));
        core.step(Duration::from_secs(61), SystemTime::UNIX_EPOCH, &mut out);
        let Some(Output::Report(report)) = out.iter().find(|o| matches!(o, Output::Report(_)))
        else {
            panic!("the running report")
        };
        assert_eq!((report.parts, report.missed), (1, 2));
    }

    #[test]
    fn settle_reads_the_values_current_after_the_delay() {
        let mut core = StationCore::new(
            station_with(&[("settle = \"0s\"", "settle = \"200ms\"")]),
            &[],
            SystemTime::UNIX_EPOCH,
        );
        let mut out = Vec::new();
        core.observe(&sample(0, Value::U64(1)), Duration::ZERO);
        core.observe(&sample(2, Value::F64(25.06)), Duration::ZERO);
        core.observe(&sample(0, Value::U64(2)), Duration::from_millis(100));
        core.step(Duration::from_millis(100), SystemTime::UNIX_EPOCH, &mut out);
        assert!(decisions(&out).is_empty(), "not before the settle time");
        assert_eq!(core.next_due(), Some(Duration::from_millis(300)));
        core.observe(&sample(2, Value::F64(25.0)), Duration::from_millis(250));
        core.step(Duration::from_millis(300), SystemTime::UNIX_EPOCH, &mut out);
        assert_eq!(
            decisions(&out),
            [(Decision::Pass, 0.0)],
            "the value at 250 ms"
        );
    }

    #[test]
    fn a_slow_drift_raises_nelson_2_before_the_first_part_out_of_spec() {
        // Centre 25.000, σ 0.005: the bore grows 0.5 µm a part (tool wear) from on target, 0.1σ
        // a part. No single part is beyond 3σ (25.015) before part 30, none out of spec (25.05)
        // before part 100; the ninth part in a row above the centre line is part 9, and 4 of 5
        // beyond 1σ (Nelson 6) comes at part 14. (Nelson 3, a steady rise, would see a pure
        // ramp at part 6; a real gauge's noise hides it, so it is off here.)
        let station =
            station_with(&[("nelson = [1, 2, 3, 4, 5, 6, 7, 8]", "nelson = [1, 2, 5, 6]")]);
        let mut core = StationCore::new(station, &[], SystemTime::UNIX_EPOCH);
        let bores: Vec<f64> = (1..=120).map(|i| 25.0 + 0.0005 * f64::from(i)).collect();
        let out = parts(&mut core, &bores);
        let first_alert = out
            .iter()
            .position(
                |o| matches!(o, Output::Condition(c) if c.active && c.id == "gauge-1/bore/spc"),
            )
            .expect("an SPC alert");
        let Output::Condition(alert) = &out[first_alert] else {
            unreachable!()
        };
        assert!(alert.reason.contains("Nelson 2"), "{}", alert.reason);
        let parts_before = out[..first_alert]
            .iter()
            .filter(|o| matches!(o, Output::Part(_)))
            .count();
        let first_reject = decisions(&out)
            .iter()
            .position(|(d, _)| *d == Decision::Reject)
            .expect("a reject");
        assert!(
            parts_before < first_reject,
            "alert at part {parts_before}, reject at {first_reject}"
        );
        // The ninth part's values complete the pattern: the alert comes before its record.
        assert_eq!(parts_before, 8);
    }

    #[test]
    fn cpk_and_reject_rate_alerts_judge_a_running_report() {
        let mut core = StationCore::new(station_with(&[]), &[], SystemTime::UNIX_EPOCH);
        // Alternating 24.99/25.01 around 25.00: MR 0.02 → σ within 0.02/1.128 = 0.0177;
        // Cpk = 0.05 / (3 × 0.0177) = 0.94 < 1.33.
        let bores: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 24.99 } else { 25.01 })
            .collect();
        let mut out = parts(&mut core, &bores);
        core.step(Duration::from_secs(61), SystemTime::UNIX_EPOCH, &mut out);
        let cpk = out
            .iter()
            .find_map(|o| match o {
                Output::Condition(c) if c.id == "gauge-1/bore/cpk" => Some(c.clone()),
                _ => None,
            })
            .expect("a Cpk alert");
        assert!(cpk.active);
        let value = cpk.value.expect("the Cpk");
        assert!(
            (value - 0.05 / (3.0 * 0.02 / 1.128)).abs() < 1e-3,
            "{value}"
        );
        assert!(
            !out.iter().any(
                |o| matches!(o, Output::Condition(c) if c.id == "gauge-1/reject_rate" && c.active)
            ),
            "no rejects"
        );
    }

    #[test]
    fn a_shift_closes_with_its_own_report_and_pp_ppk() {
        let mut core = StationCore::new(station_with(&[]), &[], SystemTime::UNIX_EPOCH);
        let mut out = Vec::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(6 * 3600);
        core.shift(Some("day@06:00"), start, &mut out);
        assert!(out.is_empty(), "nothing closes when the first shift starts");
        // 24.99, 25.01 alternating: σ overall 0.01026 (n − 1), MR 0.02 → σ within 0.01773.
        let bores: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 24.99 } else { 25.01 })
            .collect();
        parts(&mut core, &bores);
        let end = start + Duration::from_secs(8 * 3600);
        core.shift(None, end, &mut out);
        let Some(Output::Report(report)) = out.last() else {
            panic!("the shift's closing report")
        };
        assert!(report.closing);
        assert_eq!(report.shift.as_deref(), Some("day@06:00"));
        assert_eq!((report.from, report.to, report.parts), (start, end, 40));
        let bore = &report.characteristics[0];
        let sigma = (40.0 * 0.01f64.powi(2) / 39.0).sqrt();
        let ppk = bore.capability.ppk.expect("Ppk");
        assert!((ppk - 0.05 / (3.0 * sigma)).abs() < 1e-9, "{ppk}");
        assert!((bore.capability.cpk.expect("Cpk") - 0.05 / (3.0 * 0.02 / 1.128)).abs() < 1e-9);
        core.shift(None, end + Duration::from_secs(60), &mut out);
        assert_eq!(out.len(), 1, "between shifts nothing more closes");
    }

    fn with_images(link: &str) -> StationCore {
        let images = format!(
            "settle = \"0s\"\nimages = {{ folder = \"camera\", model = \"surface.onnx\", link = \"{link}\", wait = \"1s\" }}"
        );
        StationCore::new(
            station_with(&[("settle = \"0s\"", images.as_str())]),
            &[],
            SystemTime::UNIX_EPOCH,
        )
    }

    fn verdict(name: &str, score: Result<f64, String>) -> ImageVerdict {
        ImageVerdict {
            file: std::path::PathBuf::from("/camera").join(name),
            written: None,
            score,
        }
    }

    /// A part (id, in-spec bore) at `at` seconds.
    fn part(core: &mut StationCore, count: u64, id: u64, at: u64) {
        let mono = Duration::from_secs(at);
        core.observe(&sample(1, Value::U64(id)), mono);
        core.observe(&sample(2, Value::F64(25.0)), mono);
        core.observe(&sample(3, Value::F64(120.0)), mono);
        core.observe(&sample(0, Value::U64(count)), mono);
    }

    fn parts_out(out: &[Output]) -> Vec<(Option<String>, Decision, Vec<String>)> {
        out.iter()
            .filter_map(|o| match o {
                Output::Part(p) => Some((p.image.clone(), p.decision, p.types.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_part_waits_for_its_image_by_id_and_the_image_decides_it() {
        let mut core = with_images("part_id");
        let mut out = Vec::new();
        part(&mut core, 1, 4000, 0);
        part(&mut core, 2, 4001, 10);
        part(&mut core, 3, 4002, 10);
        core.step(Duration::from_secs(10), SystemTime::UNIX_EPOCH, &mut out);
        assert!(parts_out(&out).is_empty(), "waiting for the images");
        // The second part's image comes first: parts are still decided in order.
        core.image(
            verdict("cam_4002_a.png", Ok(0.95)),
            Duration::from_millis(10_300),
            &mut out,
        );
        core.step(
            Duration::from_millis(10_300),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        assert!(parts_out(&out).is_empty());
        core.image(
            verdict("cam_4001_a.png", Ok(0.1)),
            Duration::from_millis(10_400),
            &mut out,
        );
        core.step(
            Duration::from_millis(10_400),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        let decided = parts_out(&out);
        assert_eq!(decided.len(), 2);
        assert_eq!(
            decided[0],
            (Some("cam_4001_a.png".into()), Decision::Pass, vec![])
        );
        assert_eq!(decided[1].1, Decision::Reject, "the image saw a defect");
        assert!(decided[1].2.contains(&"image_defect".to_string()));
        let moves: Vec<&'static str> = out
            .iter()
            .filter_map(|o| match o {
                Output::MoveImage { to, .. } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(moves, ["pass", "reject"]);
    }

    #[test]
    fn without_its_image_a_part_is_reviewed_after_the_wait_and_a_bad_image_too() {
        let mut core = with_images("part_id");
        let mut out = Vec::new();
        part(&mut core, 1, 7, 0);
        part(&mut core, 2, 8, 5);
        core.step(
            Duration::from_millis(5_900),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        assert!(parts_out(&out).is_empty(), "within its 1 s wait");
        assert_eq!(core.next_due(), Some(Duration::from_secs(6)));
        core.step(Duration::from_secs(6), SystemTime::UNIX_EPOCH, &mut out);
        let decided = parts_out(&out);
        assert_eq!(decided[0].1, Decision::Review);
        assert_eq!(decided[0].2, ["image_missing"]);
        part(&mut core, 3, 9, 7);
        core.image(
            verdict("9.jpg", Err("not a readable PNG or JPEG image".into())),
            Duration::from_secs(7),
            &mut out,
        );
        core.step(Duration::from_secs(7), SystemTime::UNIX_EPOCH, &mut out);
        let decided = parts_out(&out);
        assert_eq!(
            (decided[1].1, decided[1].2.clone()),
            (Decision::Review, vec!["image_unreadable".to_string()])
        );
    }

    #[test]
    fn by_arrival_an_early_image_waits_for_its_part_and_a_stray_one_is_set_aside() {
        let mut core = with_images("arrival");
        let mut out = Vec::new();
        part(&mut core, 1, 1, 0);
        core.image(
            verdict("img-a.png", Ok(0.2)),
            Duration::from_secs(1),
            &mut out,
        );
        part(&mut core, 2, 2, 1);
        core.step(Duration::from_secs(1), SystemTime::UNIX_EPOCH, &mut out);
        assert_eq!(
            parts_out(&out)[0].0.as_deref(),
            Some("img-a.png"),
            "the image came first"
        );
        core.image(
            verdict("img-b.png", Ok(0.2)),
            Duration::from_secs(5),
            &mut out,
        );
        core.step(Duration::from_secs(8), SystemTime::UNIX_EPOCH, &mut out);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::MoveImage {
                    to: "unmatched",
                    ..
                }
            )),
            "no part for it within two waits"
        );
        core.step(Duration::from_secs(70), SystemTime::UNIX_EPOCH, &mut out);
        let Some(Output::Report(report)) =
            out.iter().rev().find(|o| matches!(o, Output::Report(_)))
        else {
            panic!("a report")
        };
        assert_eq!(report.unmatched_images, 1);
    }

    #[test]
    fn by_time_the_part_triggered_nearest_the_images_writing_takes_it() {
        let mut core = with_images("time");
        let mut out = Vec::new();
        let wall = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        let trigger = |core: &mut StationCore, count: u64, ms: u64| {
            let mono = Duration::from_millis(ms);
            let mut s = sample(0, Value::U64(count));
            s.timestamp = wall(ms);
            core.observe(&sample(2, Value::F64(25.0)), mono);
            core.observe(&sample(3, Value::F64(120.0)), mono);
            core.observe(&s, mono);
        };
        trigger(&mut core, 1, 0);
        trigger(&mut core, 2, 10_000);
        trigger(&mut core, 3, 10_400);
        // Written 350 ms after the second part and 50 ms before the third: the third's.
        let mut image = verdict("IMG_0001.png", Ok(0.9));
        image.written = Some(wall(10_350));
        core.image(image, Duration::from_millis(10_450), &mut out);
        // One written long after any part waits, then finds none.
        let mut stray = verdict("IMG_0002.png", Ok(0.1));
        stray.written = Some(wall(30_000));
        core.image(stray, Duration::from_millis(10_460), &mut out);
        core.step(
            Duration::from_millis(11_500),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        let decided = parts_out(&out);
        assert_eq!(
            decided[0].2,
            ["image_missing"],
            "the second part had no image"
        );
        assert_eq!(decided[1].0.as_deref(), Some("IMG_0001.png"));
        assert_eq!(decided[1].1, Decision::Reject);
        core.step(
            Duration::from_millis(14_000),
            SystemTime::UNIX_EPOCH,
            &mut out,
        );
        assert!(out.iter().any(|o| matches!(o, Output::MoveImage { to: "unmatched", file } if file.ends_with("IMG_0002.png"))));
    }
}
