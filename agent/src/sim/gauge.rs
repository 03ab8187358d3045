//! A simulated gauging station: parts at a fixed cycle, each with its id and its measurements,
//! deterministic by seed and part number (nothing is stepped: part `n`'s values are a function of
//! `n`), so that the quality stage has a process to judge.
//!
//! Each measurement is `nominal + drift_per_part × (parts since the last tool change) + noise`,
//! which is how tool wear moves a turned diameter: the mean creeps towards a spec limit and jumps
//! back at every `tool_change_every` parts. Now and then (`defect_rate`) a part carries a gross
//! defect of `defect_size` on one measurement.
//!
//! Points serve it with `signal = { gauge = "count" }`, `{ gauge = "part_id" }` or
//! `{ gauge = { measurement = 0 } }`. The registers show the last completed part, so one read of
//! a contiguous block sees a part's count, id and values together.

use std::time::Duration;

use firmware_config::HumanDuration;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaugeSimConfig {
    /// One part per cycle.
    #[serde(default = "default_cycle")]
    pub cycle: HumanDuration,
    /// The first part's id.
    #[serde(default = "default_first_id")]
    pub first_id: u64,
    #[serde(default)]
    pub measurements: Vec<MeasurementSim>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementSim {
    pub nominal: f64,
    /// Standard deviation of part-to-part noise.
    #[serde(default)]
    pub sigma: f64,
    /// Tool wear: the mean moves this much per part…
    #[serde(default)]
    pub drift_per_part: f64,
    /// …until a tool change, every this many parts (0: never).
    #[serde(default)]
    pub tool_change_every: u64,
    /// The share of parts with a gross defect on this measurement.
    #[serde(default)]
    pub defect_rate: f64,
    #[serde(default)]
    pub defect_size: f64,
}

fn default_cycle() -> HumanDuration {
    HumanDuration::from_millis(1_000)
}
fn default_first_id() -> u64 {
    1_000
}

/// What a point of a simulated gauge serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaugeOutput {
    /// Parts completed (a 16-bit counter rolls over at 65,536 by the register's width).
    Count,
    PartId,
    Measurement(usize),
}

pub struct GaugeSim {
    config: GaugeSimConfig,
    seed: u64,
}

impl GaugeSim {
    pub fn new(config: GaugeSimConfig, seed: u64) -> GaugeSim {
        GaugeSim { config, seed }
    }

    /// Parts completed by `elapsed`.
    pub fn parts(&self, elapsed: Duration) -> u64 {
        let cycle = self.config.cycle.get().as_nanos().max(1);
        (elapsed.as_nanos() / cycle) as u64
    }

    /// The value of `output` at `elapsed` (the last completed part's).
    pub fn value(&self, output: GaugeOutput, elapsed: Duration) -> f64 {
        let parts = self.parts(elapsed);
        match output {
            GaugeOutput::Count => (parts % 65_536) as f64,
            GaugeOutput::PartId => (self.config.first_id + parts) as f64,
            GaugeOutput::Measurement(m) => self.measurement(m, parts),
        }
    }

    /// Measurement `m` of part `n` (counted from 1; part 0 is the one before the first).
    pub fn measurement(&self, m: usize, n: u64) -> f64 {
        let Some(c) = self.config.measurements.get(m) else {
            return 0.0;
        };
        let mut rng = fastrand::Rng::with_seed(self.seed ^ n.rotate_left(17) ^ (m as u64) << 56);
        let worn = match c.tool_change_every {
            0 => n,
            every => n % every,
        };
        let noise = c.sigma * normal(&mut rng);
        let defect = if rng.f64() < c.defect_rate {
            c.defect_size
        } else {
            0.0
        };
        c.nominal + c.drift_per_part * worn as f64 + noise + defect
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(f64::MIN_POSITIVE);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(text: &str) -> GaugeSim {
        GaugeSim::new(toml::from_str(text).expect("config"), 7)
    }

    #[test]
    fn parts_come_at_the_cycle_with_their_id() {
        let g = gauge("cycle = \"500ms\"\nfirst_id = 10\n");
        assert_eq!(
            g.value(GaugeOutput::Count, Duration::from_millis(2_499)),
            4.0
        );
        assert_eq!(
            g.value(GaugeOutput::PartId, Duration::from_millis(2_500)),
            15.0
        );
    }

    #[test]
    fn tool_wear_drifts_the_mean_and_a_tool_change_resets_it() {
        let g = gauge(
            "[[measurements]]\nnominal = 25.0\nsigma = 0.001\ndrift_per_part = 0.0005\ntool_change_every = 100\n",
        );
        let mean = |from: u64| (from..from + 10).map(|n| g.measurement(0, n)).sum::<f64>() / 10.0;
        assert!((mean(0) - 25.00225).abs() < 0.002, "{}", mean(0));
        assert!((mean(90) - 25.04725).abs() < 0.002, "{}", mean(90));
        assert!(
            (mean(100) - 25.00225).abs() < 0.002,
            "back after the change"
        );
        assert_eq!(g.measurement(0, 42), g.measurement(0, 42), "deterministic");
    }
}
