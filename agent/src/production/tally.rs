//! One shift's accumulated times and counts, and the figures computed from them in the terms of
//! ISO 22400-2.
//!
//! Time buckets (seconds of the agent's monotonic clock, never of the wall clock, so an NTP step
//! neither creates nor deletes production time):
//! - planned downtime: planned stops, and breaks while the line is not running;
//! - running, and micro-stops (stops shorter than the line's `micro_stop`): together the actual
//!   production time (APT);
//! - breakdowns (unplanned stops at least `micro_stop` long, by reason) and setup/changeover: the
//!   unplanned downtime;
//! - planned busy time (PBT) = APT + unplanned downtime;
//! - unaccounted: time in the shift the agent did not see (it was not running, or the state tag
//!   was bad); outside PBT, reported so that nobody mistakes it for production.
//!
//! Availability = APT / PBT; performance = ideal cycle × produced / APT; quality = good /
//! produced; OEE = A × P × Q, which equals ideal cycle × good / PBT. The six big losses, in
//! seconds, add up with the fully productive time (ideal × good) to PBT, so each loss's share of
//! PBT is the OEE points that removing it alone would recover.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One shift's accumulation; persisted in `data_dir` between reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub running: f64,
    pub micro_stops: f64,
    /// Unplanned stops at least `micro_stop` long, by reason ("" when none was given).
    pub breakdowns: BTreeMap<String, f64>,
    pub setup: f64,
    pub planned_downtime: f64,
    pub unaccounted: f64,
    /// Counted parts per counter (None: the line has no such counter).
    pub total: Option<f64>,
    pub good: Option<f64>,
    pub reject: Option<f64>,
    /// The rejects made within the start-up window (derived per step when there is no reject
    /// counter).
    pub startup_rejects: f64,
    /// Ideal seconds for the parts produced, each part at the ideal cycle of the product being
    /// made when it was counted.
    pub ideal_total: f64,
    pub energy_kwh: Option<f64>,
    /// Material name → amount consumed.
    pub materials: BTreeMap<String, f64>,
    /// Counter readings that could not be explained (see `counter`).
    pub anomalies: u32,
}

/// The six big losses, as OEE practitioners name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossCategory {
    Breakdowns,
    SetupChangeover,
    MicroStops,
    ReducedSpeed,
    StartupRejects,
    ProductionRejects,
}

impl LossCategory {
    pub fn name(self) -> &'static str {
        match self {
            LossCategory::Breakdowns => "breakdowns",
            LossCategory::SetupChangeover => "setup_changeover",
            LossCategory::MicroStops => "micro_stops",
            LossCategory::ReducedSpeed => "reduced_speed",
            LossCategory::StartupRejects => "startup_rejects",
            LossCategory::ProductionRejects => "production_rejects",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            LossCategory::Breakdowns => "unplanned downtime",
            LossCategory::SetupChangeover => "setup and changeover",
            LossCategory::MicroStops => "micro-stops",
            LossCategory::ReducedSpeed => "running below the ideal rate",
            LossCategory::StartupRejects => "start-up rejects",
            LossCategory::ProductionRejects => "production rejects",
        }
    }
}

/// One loss, ranked by the OEE points removing it would recover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    pub category: LossCategory,
    /// For breakdowns: the downtime reason, when the line reports one.
    pub reason: Option<String>,
    pub seconds: f64,
    /// OEE points (0..100) this loss costs: its share of the planned busy time.
    pub oee_points: f64,
}

/// The figures of a tally.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub planned_busy_time: f64,
    pub actual_production_time: f64,
    pub unplanned_downtime: f64,
    pub planned_downtime: f64,
    pub total: f64,
    pub good: f64,
    pub reject: f64,
    pub startup_rejects: f64,
    /// None while the denominator is zero (no planned busy time yet, nothing produced).
    pub availability: Option<f64>,
    pub performance: Option<f64>,
    pub quality: Option<f64>,
    pub oee: Option<f64>,
    /// Parts produced per hour of actual production time.
    pub throughput_per_hour: Option<f64>,
    pub energy_per_good_unit: Option<f64>,
    pub material_per_good_unit: BTreeMap<String, f64>,
    /// Largest first.
    pub losses: Vec<Loss>,
}

impl Tally {
    /// Adds `other` into this tally: every bucket and count is a sum, so the figures of the sum
    /// are the figures of the combined period (several shifts, a week).
    pub fn absorb(&mut self, other: &Tally) {
        let add = |a: &mut Option<f64>, b: Option<f64>| {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0.0) + b);
            }
        };
        self.running += other.running;
        self.micro_stops += other.micro_stops;
        for (reason, s) in &other.breakdowns {
            *self.breakdowns.entry(reason.clone()).or_default() += s;
        }
        self.setup += other.setup;
        self.planned_downtime += other.planned_downtime;
        self.unaccounted += other.unaccounted;
        add(&mut self.total, other.total);
        add(&mut self.good, other.good);
        add(&mut self.reject, other.reject);
        self.startup_rejects += other.startup_rejects;
        self.ideal_total += other.ideal_total;
        add(&mut self.energy_kwh, other.energy_kwh);
        for (name, amount) in &other.materials {
            *self.materials.entry(name.clone()).or_default() += amount;
        }
        self.anomalies = self.anomalies.saturating_add(other.anomalies);
    }

    /// Produced, good and rejected parts, each from its counter or from the other two.
    pub fn parts(&self) -> (f64, f64, f64) {
        match (self.total, self.good, self.reject) {
            (Some(t), Some(g), Some(r)) => (t, g, r),
            (Some(t), Some(g), None) => (t, g, (t - g).max(0.0)),
            (Some(t), None, Some(r)) => (t, (t - r).max(0.0), r),
            (None, Some(g), Some(r)) => (g + r, g, r),
            // Validation asks for two of the three.
            (t, g, r) => (t.unwrap_or(0.0), g.unwrap_or(0.0), r.unwrap_or(0.0)),
        }
    }

    pub fn figures(&self) -> Figures {
        let apt = self.running + self.micro_stops;
        let breakdowns: f64 = self.breakdowns.values().sum();
        let unplanned = breakdowns + self.setup;
        let pbt = apt + unplanned;
        let (total, good, reject) = self.parts();
        let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
        let availability = ratio(apt, pbt);
        let performance = ratio(self.ideal_total, apt);
        let quality = ratio(good, total);
        let oee = match (availability, performance, quality) {
            (Some(a), Some(p), Some(q)) => Some(a * p * q),
            // Nothing produced over busy time: OEE is zero, not unknown.
            (Some(_), _, _) if total == 0.0 && pbt > 0.0 => Some(0.0),
            _ => None,
        };
        Figures {
            planned_busy_time: pbt,
            actual_production_time: apt,
            unplanned_downtime: unplanned,
            planned_downtime: self.planned_downtime,
            total,
            good,
            reject,
            startup_rejects: self.startup_rejects.min(reject),
            availability,
            performance,
            quality,
            oee,
            throughput_per_hour: ratio(total * 3600.0, apt),
            energy_per_good_unit: self.energy_kwh.and_then(|e| ratio(e, good)),
            material_per_good_unit: self
                .materials
                .iter()
                .filter_map(|(name, amount)| Some((name.clone(), ratio(*amount, good)?)))
                .collect(),
            losses: self.losses(pbt, total, reject),
        }
    }

    fn losses(&self, pbt: f64, total: f64, reject: f64) -> Vec<Loss> {
        if pbt <= 0.0 {
            return Vec::new();
        }
        let ideal_cycle = if total > 0.0 {
            self.ideal_total / total
        } else {
            0.0
        };
        let apt = self.running + self.micro_stops;
        let startup = self.startup_rejects.min(reject);
        let mut losses: Vec<Loss> = self
            .breakdowns
            .iter()
            .map(|(reason, s)| {
                (
                    LossCategory::Breakdowns,
                    (!reason.is_empty()).then(|| reason.clone()),
                    *s,
                )
            })
            .chain([
                (LossCategory::SetupChangeover, None, self.setup),
                (LossCategory::MicroStops, None, self.micro_stops),
                (
                    LossCategory::ReducedSpeed,
                    None,
                    (apt - self.ideal_total - self.micro_stops).max(0.0),
                ),
                (LossCategory::StartupRejects, None, startup * ideal_cycle),
                (
                    LossCategory::ProductionRejects,
                    None,
                    (reject - startup) * ideal_cycle,
                ),
            ])
            .filter(|(_, _, seconds)| *seconds > 0.0)
            .map(|(category, reason, seconds)| Loss {
                category,
                reason,
                seconds,
                oee_points: 100.0 * seconds / pbt,
            })
            .collect();
        losses.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        losses
    }
}

impl Figures {
    /// The one-line answer to "where is the biggest win": the largest loss, what it cost, and the
    /// OEE removing it alone would give.
    pub fn recommendation(&self, period: &str) -> Option<String> {
        let top = self.losses.first()?;
        let oee = self.oee? * 100.0;
        let what = match &top.reason {
            Some(reason) => format!("{reason}: "),
            None => String::new(),
        };
        Some(format!(
            "{what}{} min of {} {period}; removing it would raise OEE from {:.0} % to {:.0} %",
            format_minutes(top.seconds),
            top.category.describe(),
            oee,
            (oee + top.oee_points).min(100.0)
        ))
    }
}

fn format_minutes(seconds: f64) -> String {
    let minutes = seconds / 60.0;
    if minutes >= 10.0 {
        format!("{minutes:.0}")
    } else {
        format!("{minutes:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn two_shifts_absorbed_weigh_each_by_its_busy_time() {
        // Shift 1: two hours running at the ideal 2 s cycle, 3,600 parts, all good: OEE 1.
        let first = Tally {
            running: 7200.0,
            total: Some(3600.0),
            good: Some(3600.0),
            ideal_total: 7200.0,
            energy_kwh: Some(10.0),
            ..Tally::default()
        };
        // Shift 2: half an hour running (900 parts, 810 good), half an hour jammed: OEE 0.45.
        let second = Tally {
            running: 1800.0,
            breakdowns: [("jam".to_string(), 1800.0)].into(),
            total: Some(900.0),
            good: Some(810.0),
            ideal_total: 1800.0,
            ..Tally::default()
        };
        let mut sum = Tally::default();
        sum.absorb(&first);
        sum.absorb(&second);
        let f = sum.figures();
        // PBT 10,800 s, APT 9,000 s: A = 0.8333; P = 9,000 / 9,000 = 1; Q = 4,410 / 4,500 = 0.98;
        // OEE = 2 s × 4,410 / 10,800 s = 0.8167 — not the mean of the shifts' OEE (0.725).
        assert!(close(f.availability.unwrap(), 9000.0 / 10800.0));
        assert!(close(f.performance.unwrap(), 1.0));
        assert!(close(f.quality.unwrap(), 0.98));
        assert!(close(f.oee.unwrap(), 2.0 * 4410.0 / 10800.0));
        assert_eq!(sum.energy_kwh, Some(10.0));
        assert_eq!(sum.breakdowns["jam"], 1800.0);
    }

    /// An 8 h shift with a 30 min planned break:
    /// - planned busy time 450 min = 27,000 s;
    /// - breakdowns 42 min ("jam at infeed") + 18 min (no reason) = 3,600 s; setup 20 min = 1,200 s;
    /// - APT = 27,000 − 4,800 = 22,200 s, of which micro-stops 600 s (running 21,600 s);
    /// - ideal cycle 2 s, 9,000 parts produced: net operating time 18,000 s;
    /// - 8,700 good, 300 rejects of which 100 at start-up.
    ///
    /// A = 22,200 / 27,000 = 0.822…; P = 18,000 / 22,200 = 0.8108…; Q = 8,700 / 9,000 = 0.9667;
    /// OEE = A·P·Q = 17,400 / 27,000 = 0.6444 (ideal × good / PBT).
    /// Losses (s): breakdowns 2,520 + 1,080, setup 1,200, micro-stops 600, reduced speed
    /// 22,200 − 18,000 − 600 = 3,600, start-up rejects 100 × 2 = 200, production rejects 400;
    /// they add up with 17,400 to 27,000.
    fn worked_shift() -> Tally {
        Tally {
            running: 21_600.0,
            micro_stops: 600.0,
            breakdowns: BTreeMap::from([
                ("jam at infeed".into(), 2_520.0),
                (String::new(), 1_080.0),
            ]),
            setup: 1_200.0,
            planned_downtime: 1_800.0,
            total: Some(9_000.0),
            good: Some(8_700.0),
            startup_rejects: 100.0,
            ideal_total: 18_000.0,
            ..Tally::default()
        }
    }

    #[test]
    fn a_hand_worked_shift() {
        let f = worked_shift().figures();
        assert!(close(f.planned_busy_time, 27_000.0));
        assert!(close(f.availability.expect("a"), 22_200.0 / 27_000.0));
        assert!(close(f.performance.expect("p"), 18_000.0 / 22_200.0));
        assert!(close(f.quality.expect("q"), 8_700.0 / 9_000.0));
        assert!(close(f.oee.expect("oee"), 17_400.0 / 27_000.0));
        assert!(close(f.reject, 300.0), "derived from total and good");
        assert!(close(
            f.throughput_per_hour.expect("rate"),
            9_000.0 * 3600.0 / 22_200.0
        ));
        let seconds: Vec<(LossCategory, f64)> =
            f.losses.iter().map(|l| (l.category, l.seconds)).collect();
        assert_eq!(
            seconds,
            [
                (LossCategory::ReducedSpeed, 3_600.0),
                (LossCategory::Breakdowns, 2_520.0),
                (LossCategory::SetupChangeover, 1_200.0),
                (LossCategory::Breakdowns, 1_080.0),
                (LossCategory::MicroStops, 600.0),
                (LossCategory::ProductionRejects, 400.0),
                (LossCategory::StartupRejects, 200.0),
            ]
        );
        let lost: f64 = f.losses.iter().map(|l| l.oee_points).sum();
        assert!(
            close(lost + 100.0 * f.oee.expect("oee"), 100.0),
            "losses and OEE add up to 100 points"
        );
    }

    #[test]
    fn the_recommendation_names_the_biggest_loss_and_the_oee_without_it() {
        let mut tally = worked_shift();
        tally.breakdowns.insert("jam at infeed".into(), 4_000.0);
        tally.running -= 1_480.0; // the longer jam came out of running time
        tally.ideal_total = 18_000.0;
        let f = tally.figures();
        let text = f.recommendation("this shift").expect("a loss");
        // PBT 27,000 s; OEE = 17,400 / 27,000 = 64 %; the jam is 4,000 / 27,000 = 14.8 points.
        assert_eq!(
            text,
            "jam at infeed: 67 min of unplanned downtime this shift; removing it would raise OEE from 64 % to 79 %"
        );
    }

    #[test]
    fn nothing_produced_over_busy_time_is_zero_oee_and_no_time_is_unknown() {
        let idle = Tally {
            breakdowns: BTreeMap::from([(String::new(), 600.0)]),
            total: Some(0.0),
            good: Some(0.0),
            ..Tally::default()
        };
        assert_eq!(idle.figures().oee, Some(0.0));
        assert_eq!(idle.figures().availability, Some(0.0));
        assert_eq!(Tally::default().figures().oee, None);
        assert!(Tally::default().figures().recommendation("now").is_none());
    }
}
