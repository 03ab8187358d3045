//! Control charts, run rules and process capability: pure functions and fixed-size state.
//!
//! A [`ControlChart`] takes one characteristic's values a part at a time. Shewhart charts (I-MR,
//! X̄-R, X̄-S) plot a point per part or per full subgroup and test the run rules on the points'
//! distance from the centre in σ of the point (σ/√n for X̄); their dispersion chart (MR, R, S)
//! is tested against its upper limit. EWMA and CUSUM charts signal by their own limits. Until
//! limits are known (given, or learned from the first `baseline` subgroups and then frozen), the
//! chart learns and tests nothing.
//!
//! Invariants: memory is fixed per chart (the last [`HISTORY`] points and one subgroup); a value
//! that is not finite is never plotted; learned limits change only by [`ControlChart::relearn`].

use firmware_config::quality::{Chart, ControlLimits, Rule};
use serde::{Deserialize, Serialize};

/// Points kept for the run rules (Nelson 7 looks at 15).
pub const HISTORY: usize = 15;

/// d2 and d3 for subgroups of 2 to 25 (ASTM STP 15D): R̄/d2 estimates σ, d3/d2 the spread of R.
const D2: [f64; 24] = [
    1.128, 1.693, 2.059, 2.326, 2.534, 2.704, 2.847, 2.970, 3.078, 3.173, 3.258, 3.336, 3.407,
    3.472, 3.532, 3.588, 3.640, 3.689, 3.735, 3.778, 3.819, 3.858, 3.895, 3.931,
];
const D3: [f64; 24] = [
    0.853, 0.888, 0.880, 0.864, 0.848, 0.833, 0.820, 0.808, 0.797, 0.787, 0.778, 0.770, 0.763,
    0.756, 0.750, 0.744, 0.739, 0.734, 0.729, 0.724, 0.720, 0.716, 0.712, 0.708,
];

/// d2 of a subgroup of `n` (2..=25).
pub fn d2(n: u32) -> f64 {
    D2[(n.clamp(2, 25) - 2) as usize]
}

fn d3(n: u32) -> f64 {
    D3[(n.clamp(2, 25) - 2) as usize]
}

/// c4 of a subgroup of `n`: √(2/(n−1))·Γ(n/2)/Γ((n−1)/2), by the recurrence of the Γ ratio.
pub fn c4(n: u32) -> f64 {
    let mut ratio = 1.0 / std::f64::consts::PI.sqrt(); // Γ(1)/Γ(1/2), for n = 2
    for m in 2..n.max(2) {
        ratio = (f64::from(m) - 1.0) / 2.0 / ratio;
    }
    (2.0 / (f64::from(n.max(2)) - 1.0)).sqrt() * ratio
}

/// Where a chart's point fell: the point and, for Shewhart charts, its dispersion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// What is plotted: the value, the subgroup mean, the EWMA or the larger CUSUM (in σ).
    pub value: f64,
    /// MR, R or S, when there is one.
    pub dispersion: Option<f64>,
}

/// A violated rule or a chart's own signal, named as a quality engineer would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// "I", "MR", "X̄", "R", "S", "EWMA" or "CUSUM".
    pub chart: String,
    /// "Nelson 2", "Western Electric 1", "EWMA limit", "CUSUM h".
    pub rule: String,
    pub text: String,
}

/// What one value did to the chart.
#[derive(Debug, Clone, PartialEq)]
pub enum Plotted {
    /// Not a point yet (a subgroup filling up).
    Pending,
    /// Part of the baseline; `Some` with the limits when this value completed it.
    Learning(Option<ControlLimits>),
    Point(Point, Vec<Violation>),
}

/// Running sums that estimate the centre and σ within (MR̄/d2, R̄/d2 or S̄/c4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Within {
    pub points: u64,
    pub sum: f64,
    pub dispersions: u64,
    pub dispersion_sum: f64,
}

impl Within {
    fn add(&mut self, point: f64, dispersion: Option<f64>) {
        self.points += 1;
        self.sum += point;
        if let Some(d) = dispersion {
            self.dispersions += 1;
            self.dispersion_sum += d;
        }
    }

    /// σ of one part, for a chart of this kind.
    pub fn sigma(&self, chart: Chart) -> Option<f64> {
        if self.dispersions == 0 {
            return None;
        }
        let mean = self.dispersion_sum / self.dispersions as f64;
        let sigma = match chart {
            Chart::XbarS { n } => mean / c4(n),
            Chart::XbarR { n } => mean / d2(n),
            Chart::Imr | Chart::Ewma { .. } | Chart::Cusum { .. } => mean / d2(2),
        };
        Some(sigma)
    }

    fn limits(&self, chart: Chart) -> Option<ControlLimits> {
        let sigma = self.sigma(chart).filter(|s| *s > 0.0 && s.is_finite())?;
        Some(ControlLimits {
            center: self.sum / self.points as f64,
            sigma,
        })
    }
}

/// One characteristic's chart.
#[derive(Debug, Clone)]
pub struct ControlChart {
    chart: Chart,
    rules: Vec<Rule>,
    limits: Option<ControlLimits>,
    /// Subgroups to learn from while `limits` is `None`.
    baseline: u32,
    learning: Within,
    subgroup: Vec<f64>,
    last_value: Option<f64>,
    /// Recent points in σ of the point from the centre, newest last.
    history: heapless::Deque<f64, HISTORY>,
    ewma: Option<(f64, u32)>,
    cusum: (f64, f64),
}

impl ControlChart {
    pub fn new(
        chart: Chart,
        rules: Vec<Rule>,
        limits: Option<ControlLimits>,
        baseline: u32,
    ) -> Self {
        ControlChart {
            chart,
            rules,
            limits,
            baseline: baseline.max(2),
            learning: Within::default(),
            subgroup: Vec::with_capacity(chart.subgroup() as usize),
            last_value: None,
            history: heapless::Deque::new(),
            ewma: None,
            cusum: (0.0, 0.0),
        }
    }

    pub fn limits(&self) -> Option<ControlLimits> {
        self.limits
    }

    pub fn chart(&self) -> Chart {
        self.chart
    }

    /// Subgroups learned so far, while learning.
    pub fn learned(&self) -> Option<(u64, u32)> {
        self.limits
            .is_none()
            .then_some((self.learning.points, self.baseline))
    }

    /// Forgets the limits and learns them again from the next `baseline` subgroups.
    pub fn relearn(&mut self) {
        *self = ControlChart::new(self.chart, self.rules.clone(), None, self.baseline);
    }

    /// Plots one part's value.
    pub fn add(&mut self, x: f64) -> Plotted {
        if !x.is_finite() {
            return Plotted::Pending;
        }
        let Some(point) = self.point(x) else {
            return Plotted::Pending;
        };
        match self.limits {
            None => {
                self.learning.add(point.value, point.dispersion);
                if self.learning.points < u64::from(self.baseline) {
                    return Plotted::Learning(None);
                }
                self.limits = self.learning.limits(self.chart);
                if self.limits.is_none() {
                    // No spread at all in the baseline: keep learning rather than divide by 0.
                    self.learning = Within::default();
                }
                Plotted::Learning(self.limits)
            }
            Some(limits) => {
                let (plotted, violations) = self.test(point, limits);
                Plotted::Point(plotted, violations)
            }
        }
    }

    /// The Shewhart point of `x` (a value with its moving range, or a completed subgroup).
    fn point(&mut self, x: f64) -> Option<Point> {
        match self.chart {
            Chart::Imr | Chart::Ewma { .. } | Chart::Cusum { .. } => {
                let moving_range = self.last_value.map(|last| (x - last).abs());
                self.last_value = Some(x);
                Some(Point {
                    value: x,
                    dispersion: moving_range,
                })
            }
            Chart::XbarR { n } | Chart::XbarS { n } => {
                self.subgroup.push(x);
                if self.subgroup.len() < n as usize {
                    return None;
                }
                let values = std::mem::take(&mut self.subgroup);
                let count = values.len() as f64;
                let mean = values.iter().sum::<f64>() / count;
                let dispersion = if matches!(self.chart, Chart::XbarR { .. }) {
                    let (lo, hi) = values
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(*v), h.max(*v)));
                    hi - lo
                } else {
                    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (count - 1.0)).sqrt()
                };
                self.subgroup = values;
                self.subgroup.clear();
                Some(Point {
                    value: mean,
                    dispersion: Some(dispersion),
                })
            }
        }
    }

    fn test(&mut self, point: Point, limits: ControlLimits) -> (Point, Vec<Violation>) {
        match self.chart {
            Chart::Ewma { lambda, l } => {
                let (previous, i) = self.ewma.unwrap_or((limits.center, 0));
                let z = lambda * point.value + (1.0 - lambda) * previous;
                let i = i.saturating_add(1);
                self.ewma = Some((z, i));
                let width = l
                    * limits.sigma
                    * (lambda / (2.0 - lambda) * (1.0 - (1.0 - lambda).powi(2 * i as i32))).sqrt();
                let mut out = Vec::new();
                if (z - limits.center).abs() > width {
                    out.push(Violation {
                        chart: "EWMA".into(),
                        rule: "EWMA limit".into(),
                        text: format!(
                            "EWMA {z:.4} beyond its {l}σ limit {:.4}",
                            limits.center + width.copysign(z - limits.center)
                        ),
                    });
                }
                (Point { value: z, ..point }, out)
            }
            Chart::Cusum { k, h } => {
                let d = (point.value - limits.center) / limits.sigma;
                // Capped at 2h so that a process back on target clears within 2h/k parts.
                let up = (self.cusum.0 + d - k).clamp(0.0, 2.0 * h);
                let down = (self.cusum.1 - d - k).clamp(0.0, 2.0 * h);
                self.cusum = (up, down);
                let mut out = Vec::new();
                if up > h || down > h {
                    let (side, sum) = if up > h {
                        ("upper", up)
                    } else {
                        ("lower", down)
                    };
                    out.push(Violation {
                        chart: "CUSUM".into(),
                        rule: "CUSUM h".into(),
                        text: format!("{side} CUSUM {sum:.2}σ above its decision interval {h}σ"),
                    });
                }
                (
                    Point {
                        value: up.max(down),
                        ..point
                    },
                    out,
                )
            }
            Chart::Imr | Chart::XbarR { .. } | Chart::XbarS { .. } => {
                let n = f64::from(self.chart.subgroup());
                let z = (point.value - limits.center) / (limits.sigma / n.sqrt());
                if self.history.is_full() {
                    self.history.pop_front();
                }
                let _always_room = self.history.push_back(z);
                let mut out = self.run_rules(point.value);
                out.extend(self.dispersion_violation(point, limits));
                (point, out)
            }
        }
    }

    fn run_rules(&self, value: f64) -> Vec<Violation> {
        let z: Vec<f64> = self.history.iter().copied().collect();
        let chart = if self.chart.subgroup() > 1 {
            "X̄"
        } else {
            "I"
        };
        self.rules
            .iter()
            .filter(|rule| broken(**rule, &z))
            .map(|rule| Violation {
                chart: chart.into(),
                rule: rule.label(),
                text: format!("{} ({}) at {value:.4}", rule.label(), rule.describe()),
            })
            .collect()
    }

    /// The dispersion chart's point above its upper limit (or below a lower limit above 0),
    /// when rule 1 is applied.
    fn dispersion_violation(&self, point: Point, limits: ControlLimits) -> Option<Violation> {
        let applies = self
            .rules
            .iter()
            .any(|r| matches!(r, Rule::Nelson(1) | Rule::WesternElectric(1)));
        let d = point.dispersion.filter(|_| applies)?;
        let (name, lcl, ucl) = dispersion_limits(self.chart, limits.sigma);
        (d > ucl || d < lcl).then(|| Violation {
            chart: name.into(),
            rule: "limit".into(),
            text: format!(
                "{name} {d:.4} outside its limits {lcl:.4}..{ucl:.4} (the spread changed)"
            ),
        })
    }
}

/// The dispersion chart of a Shewhart chart: its name and limits for part σ `sigma`.
pub fn dispersion_limits(chart: Chart, sigma: f64) -> (&'static str, f64, f64) {
    match chart {
        Chart::XbarS { n } => {
            let c = c4(n);
            let spread = 3.0 * (1.0 - c * c).sqrt();
            ("S", ((c - spread) * sigma).max(0.0), (c + spread) * sigma)
        }
        Chart::XbarR { n } => {
            let (d2, d3) = (d2(n), d3(n));
            (
                "R",
                ((d2 - 3.0 * d3) * sigma).max(0.0),
                (d2 + 3.0 * d3) * sigma,
            )
        }
        Chart::Imr | Chart::Ewma { .. } | Chart::Cusum { .. } => {
            ("MR", 0.0, (d2(2) + 3.0 * d3(2)) * sigma)
        }
    }
}

/// Whether the newest point (last of `z`, in σ of the point from the centre) completes `rule`.
pub fn broken(rule: Rule, z: &[f64]) -> bool {
    let last_n = |n: usize| (z.len() >= n).then(|| &z[z.len() - n..]);
    let Some(&newest) = z.last() else {
        return false;
    };
    let one_side =
        |points: &[f64]| points.iter().all(|v| *v > 0.0) || points.iter().all(|v| *v < 0.0);
    // k of the last m beyond `at` σ on the newest point's side, the newest among them.
    let k_of_m = |k: usize, m: usize, at: f64| {
        newest.abs() > at
            && last_n(m).is_some_and(|pts| {
                pts.iter()
                    .filter(|v| v.abs() > at && v.signum() == newest.signum())
                    .count()
                    >= k
            })
    };
    match rule {
        Rule::Nelson(1) | Rule::WesternElectric(1) => newest.abs() > 3.0,
        Rule::Nelson(2) => last_n(9).is_some_and(one_side),
        Rule::WesternElectric(4) => last_n(8).is_some_and(one_side),
        Rule::Nelson(3) => last_n(6).is_some_and(|pts| {
            pts.windows(2).all(|w| w[1] > w[0]) || pts.windows(2).all(|w| w[1] < w[0])
        }),
        Rule::Nelson(4) => last_n(14).is_some_and(|pts| {
            let steps: Vec<f64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
            steps.iter().all(|s| *s != 0.0)
                && steps.windows(2).all(|s| s[0].signum() != s[1].signum())
        }),
        Rule::Nelson(5) | Rule::WesternElectric(2) => k_of_m(2, 3, 2.0),
        Rule::Nelson(6) | Rule::WesternElectric(3) => k_of_m(4, 5, 1.0),
        Rule::Nelson(7) => last_n(15).is_some_and(|pts| pts.iter().all(|v| v.abs() < 1.0)),
        Rule::Nelson(8) => last_n(8).is_some_and(|pts| {
            pts.iter().all(|v| v.abs() > 1.0)
                && pts.iter().any(|v| *v > 0.0)
                && pts.iter().any(|v| *v < 0.0)
        }),
        Rule::Nelson(_) | Rule::WesternElectric(_) => false,
    }
}

/// Welford's running mean and variance of the parts themselves (σ overall), beside the within
/// estimate: what Cp/Cpk and Pp/Ppk are computed from over a report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub n: u64,
    pub mean: f64,
    m2: f64,
    pub within: Within,
    last: Option<f64>,
}

impl Spread {
    /// One part's value; `point` is the chart's Shewhart point when the value completed one.
    pub fn add(&mut self, x: f64, point: Option<&Point>, chart: Chart) {
        if !x.is_finite() {
            return;
        }
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        match chart {
            Chart::XbarR { .. } | Chart::XbarS { .. } => {
                if let Some(p) = point {
                    self.within.add(p.value, p.dispersion);
                }
            }
            Chart::Imr | Chart::Ewma { .. } | Chart::Cusum { .. } => {
                let moving_range = self.last.map(|l| (x - l).abs());
                self.last = Some(x);
                self.within.add(x, moving_range);
            }
        }
    }

    pub fn sigma_overall(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).sqrt())
    }
}

/// Process capability over a set of parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Capability {
    pub cp: Option<f64>,
    pub cpk: Option<f64>,
    pub pp: Option<f64>,
    pub ppk: Option<f64>,
}

/// Cp = (USL − LSL)/6σ, Cpk = min(USL − μ, μ − LSL)/3σ with σ within; Pp/Ppk the same with σ
/// overall. One-sided specs have no Cp/Pp and a Cpk/Ppk of the side given.
pub fn capability(
    mean: f64,
    sigma_within: Option<f64>,
    sigma_overall: Option<f64>,
    lsl: Option<f64>,
    usl: Option<f64>,
) -> Capability {
    let index = |sigma: Option<f64>| {
        let sigma = sigma.filter(|s| *s > 0.0 && s.is_finite())?;
        let p = match (lsl, usl) {
            (Some(l), Some(u)) => Some((u - l) / (6.0 * sigma)),
            _ => None,
        };
        let sides = [usl.map(|u| u - mean), lsl.map(|l| mean - l)];
        let k = sides
            .into_iter()
            .flatten()
            .map(|d| d / (3.0 * sigma))
            .reduce(f64::min);
        Some((p, k))
    };
    let (cp, cpk) = index(sigma_within).unwrap_or((None, None));
    let (pp, ppk) = index(sigma_overall).unwrap_or((None, None));
    Capability { cp, cpk, pp, ppk }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds z-scores (centre 0, σ 1) to an individuals chart with one rule.
    fn fires(rule: Rule, z: &[f64]) -> bool {
        broken(rule, z)
    }

    #[test]
    fn each_nelson_rule_fires_on_its_pattern_and_not_on_the_near_miss() {
        let nine_above = [0.5; 9];
        assert!(fires(Rule::Nelson(2), &nine_above));
        assert!(
            !fires(Rule::Nelson(2), &nine_above[..8]),
            "8 in a row is not 9"
        );
        let mut broken_run = [0.5; 9];
        broken_run[0] = -0.1;
        assert!(!fires(Rule::Nelson(2), &broken_run));

        assert!(fires(Rule::Nelson(1), &[3.01]));
        assert!(!fires(Rule::Nelson(1), &[2.99]));

        let rising = [-1.0, -0.5, 0.0, 0.2, 0.4, 0.9];
        assert!(fires(Rule::Nelson(3), &rising));
        assert!(!fires(Rule::Nelson(3), &rising[1..]), "5 rising is not 6");
        let flat_step = [-1.0, -0.5, 0.0, 0.0, 0.4, 0.9];
        assert!(
            !fires(Rule::Nelson(3), &flat_step),
            "a tie breaks the trend"
        );

        let alternating: Vec<f64> = (0..14)
            .map(|i| if i % 2 == 0 { 0.3 } else { -0.3 })
            .collect();
        assert!(fires(Rule::Nelson(4), &alternating));
        assert!(!fires(Rule::Nelson(4), &alternating[1..]), "13 is not 14");

        assert!(fires(Rule::Nelson(5), &[2.1, 0.0, 2.5]));
        assert!(!fires(Rule::Nelson(5), &[2.1, 0.0, -2.5]), "opposite sides");
        assert!(
            !fires(Rule::Nelson(5), &[2.1, 2.5, 1.9]),
            "the newest is not beyond"
        );
        assert!(!fires(Rule::Nelson(5), &[1.9, 0.0, 2.5]));

        assert!(fires(Rule::Nelson(6), &[1.1, 1.2, 0.0, 1.5, 1.3]));
        assert!(
            !fires(Rule::Nelson(6), &[1.1, 0.9, 0.0, 1.5, 1.3]),
            "3 of 5"
        );

        let hugging = [0.5; 15];
        assert!(fires(Rule::Nelson(7), &hugging));
        assert!(!fires(Rule::Nelson(7), &hugging[..14]));
        let mut one_out = hugging;
        one_out[3] = 1.2;
        assert!(!fires(Rule::Nelson(7), &one_out));

        let mixture = [1.5, -1.5, 1.2, -1.1, 1.3, -1.4, 1.6, -1.2];
        assert!(fires(Rule::Nelson(8), &mixture));
        assert!(!fires(Rule::Nelson(8), &mixture[1..]), "7 is not 8");
        assert!(
            !fires(Rule::Nelson(8), &[1.5; 8]),
            "one side only is not a mixture"
        );
    }

    #[test]
    fn western_electric_four_is_eight_on_one_side() {
        let eight = [-0.2; 8];
        assert!(fires(Rule::WesternElectric(4), &eight));
        assert!(!fires(Rule::WesternElectric(4), &eight[..7]));
        assert!(!fires(Rule::Nelson(2), &eight), "Nelson wants 9");
    }

    #[test]
    fn subgroup_constants_match_the_tables() {
        assert!((c4(2) - 0.7979).abs() < 1e-4);
        assert!((c4(5) - 0.9400).abs() < 1e-4);
        assert!((c4(25) - 0.9896).abs() < 1e-4);
        let (_, lcl, ucl) = dispersion_limits(Chart::XbarR { n: 5 }, 1.0);
        // D3·d2 and D4·d2 for n = 5: 0 and 2.114·2.326.
        assert_eq!(lcl, 0.0);
        assert!((ucl - 2.114 * 2.326).abs() < 0.01, "{ucl}");
    }

    #[test]
    fn capability_against_a_hand_calculation() {
        // μ 25.01, σ within 0.01, σ overall 0.0125, spec 24.95..25.05:
        // Cp = 0.10 / 0.06 = 1.667; Cpk = min(0.04, 0.06) / 0.03 = 1.333;
        // Pp = 0.10 / 0.075 = 1.333; Ppk = 0.04 / 0.0375 = 1.067.
        let c = capability(25.01, Some(0.01), Some(0.0125), Some(24.95), Some(25.05));
        let near = |a: Option<f64>, b: f64| (a.expect("value") - b).abs() < 1e-3;
        assert!(near(c.cp, 1.667), "{c:?}");
        assert!(near(c.cpk, 1.333), "{c:?}");
        assert!(near(c.pp, 1.333), "{c:?}");
        assert!(near(c.ppk, 1.067), "{c:?}");
        let upper_only = capability(10.0, Some(1.0), Some(1.0), None, Some(16.0));
        assert_eq!(upper_only.cp, None);
        assert!(near(upper_only.cpk, 2.0));
    }

    #[test]
    fn spread_estimates_sigma_within_from_moving_ranges() {
        // Values 10, 12, 11, 13: MR 2, 1, 2 → MR̄ 5/3, σ within 5/3/1.128 = 1.4775.
        // Mean 11.5, sample σ √(5/3) = 1.2910.
        let mut s = Spread::default();
        for x in [10.0, 12.0, 11.0, 13.0] {
            s.add(x, None, Chart::Imr);
        }
        assert!((s.mean - 11.5).abs() < 1e-12);
        assert!((s.within.sigma(Chart::Imr).expect("σ") - 1.4775).abs() < 1e-4);
        assert!((s.sigma_overall().expect("σ") - 1.2910).abs() < 1e-4);
    }

    #[test]
    fn limits_are_learned_from_the_baseline_then_frozen() {
        let mut chart = ControlChart::new(Chart::Imr, vec![Rule::Nelson(1)], None, 4);
        assert_eq!(chart.add(10.0), Plotted::Learning(None));
        assert_eq!(chart.add(12.0), Plotted::Learning(None));
        assert_eq!(chart.add(11.0), Plotted::Learning(None));
        let Plotted::Learning(Some(limits)) = chart.add(13.0) else {
            panic!("learned at the fourth value")
        };
        assert!((limits.center - 11.5).abs() < 1e-12);
        assert!((limits.sigma - 1.4775).abs() < 1e-4);
        // 11.5 + 3 × 1.4775 = 15.93: 15.9 is inside, 16.0 beyond.
        assert!(matches!(chart.add(15.9), Plotted::Point(_, v) if v.is_empty()));
        let Plotted::Point(_, violations) = chart.add(16.0) else {
            panic!("a point")
        };
        assert_eq!(violations[0].rule, "Nelson 1");
        assert_eq!(chart.limits(), Some(limits), "frozen");
        chart.relearn();
        assert_eq!(chart.limits(), None);
    }

    #[test]
    fn an_xbar_r_chart_plots_a_point_per_subgroup() {
        let limits = ControlLimits {
            center: 120.0,
            sigma: 0.4,
        };
        let mut chart = ControlChart::new(
            Chart::XbarR { n: 5 },
            Rule::WESTERN_ELECTRIC.to_vec(),
            Some(limits),
            25,
        );
        for x in [120.1, 119.9, 120.2, 119.8] {
            assert_eq!(chart.add(x), Plotted::Pending);
        }
        let Plotted::Point(point, violations) = chart.add(120.0) else {
            panic!("the fifth part completes the subgroup")
        };
        assert!((point.value - 120.0).abs() < 1e-9);
        assert!((point.dispersion.expect("R") - 0.4).abs() < 1e-9);
        assert!(violations.is_empty());
        // X̄ limits are 120 ± 3 × 0.4/√5 = ±0.537: a subgroup mean of 120.6 is beyond.
        for x in [120.6; 5] {
            chart.add(x);
        }
        let z = chart.history.back().copied().expect("a point");
        assert!((z - 0.6 / (0.4 / 5f64.sqrt())).abs() < 1e-9);
    }

    #[test]
    fn ewma_and_cusum_catch_a_small_shift_that_no_single_point_shows() {
        let limits = ControlLimits {
            center: 0.0,
            sigma: 1.0,
        };
        let mut ewma = ControlChart::new(
            Chart::Ewma {
                lambda: 0.2,
                l: 3.0,
            },
            vec![],
            Some(limits),
            25,
        );
        let mut cusum =
            ControlChart::new(Chart::Cusum { k: 0.5, h: 5.0 }, vec![], Some(limits), 25);
        let signalled = |chart: &mut ControlChart| {
            (1..=40).find(|_| matches!(chart.add(1.5), Plotted::Point(_, v) if !v.is_empty()))
        };
        // A 1.5σ shift, no single part beyond 3σ. EWMA (λ 0.2, L 3): z = 1.5(1 − 0.8ⁱ) against
        // √(1 − 0.64ⁱ): 0.886 < 0.912 at the 4th part, 1.008 > 0.945 at the 5th. CUSUM (k 0.5,
        // h 5) gains 1.0 a part: 5 at the 5th is not above h, 6 at the 6th is.
        assert_eq!(signalled(&mut ewma), Some(5));
        assert_eq!(signalled(&mut cusum), Some(6));
    }
}
