//! A simulated production line: a state machine stepped once a simulated second, deterministic by
//! seed, so that the production stage has something real to judge.
//!
//! The line runs at `speed` × its ideal rate and is interrupted by micro-stops (idle), jams (fault,
//! with a reason code), changeovers and planned stops, each starting at random with its mean
//! interval and lasting about its mean length. Parts are counted on 16-bit (or `counter_max`)
//! counters that roll over; rejects rise with `reject_drift_per_hour` (a process drifting out of
//! tolerance). An energy meter counts kWh and a material counter the material used.
//!
//! State codes served: 0 planned stop, 1 running, 2 idle, 3 fault, 4 changeover (the map in
//! `firmware-config/examples/sim/demo.toml`'s line and `agent/tests/fixtures/line-press.toml`).

use std::sync::Mutex;
use std::time::Duration;

use firmware_config::HumanDuration;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineSimConfig {
    #[serde(default = "default_ideal_cycle")]
    pub ideal_cycle: HumanDuration,
    /// The fraction of the ideal rate the line runs at.
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default = "default_reject_rate")]
    pub reject_rate: f64,
    #[serde(default)]
    pub reject_drift_per_hour: f64,
    #[serde(default = "default_micro_every")]
    pub micro_stop_every: HumanDuration,
    #[serde(default = "default_micro_length")]
    pub micro_stop_length: HumanDuration,
    #[serde(default = "default_jam_every")]
    pub jam_every: HumanDuration,
    #[serde(default = "default_jam_length")]
    pub jam_length: HumanDuration,
    /// Reason codes of jams, drawn in turn at random.
    #[serde(default = "default_jam_reasons")]
    pub jam_reasons: Vec<u16>,
    #[serde(default = "default_changeover_every")]
    pub changeover_every: HumanDuration,
    #[serde(default = "default_changeover_length")]
    pub changeover_length: HumanDuration,
    /// The reason code shown during a changeover.
    #[serde(default = "default_changeover_reason")]
    pub changeover_reason: u16,
    /// The highest counter value before it rolls over to 0.
    #[serde(default = "default_counter_max")]
    pub counter_max: u64,
    /// Where the counters start (near the top shows a roll-over early).
    #[serde(default)]
    pub counter_start: u64,
    #[serde(default = "default_power_running")]
    pub power_running_kw: f64,
    #[serde(default = "default_power_idle")]
    pub power_idle_kw: f64,
    #[serde(default = "default_material")]
    pub material_per_part: f64,
}

fn default_ideal_cycle() -> HumanDuration {
    HumanDuration::from_millis(2_000)
}
fn default_speed() -> f64 {
    0.9
}
fn default_reject_rate() -> f64 {
    0.02
}
fn default_micro_every() -> HumanDuration {
    HumanDuration::from_millis(4 * 60_000)
}
fn default_micro_length() -> HumanDuration {
    HumanDuration::from_millis(40_000)
}
fn default_jam_every() -> HumanDuration {
    HumanDuration::from_millis(45 * 60_000)
}
fn default_jam_length() -> HumanDuration {
    HumanDuration::from_millis(8 * 60_000)
}
fn default_jam_reasons() -> Vec<u16> {
    vec![12]
}
fn default_changeover_every() -> HumanDuration {
    HumanDuration::from_millis(4 * 3_600_000)
}
fn default_changeover_length() -> HumanDuration {
    HumanDuration::from_millis(20 * 60_000)
}
fn default_changeover_reason() -> u16 {
    20
}
fn default_counter_max() -> u64 {
    u64::from(u16::MAX)
}
fn default_power_running() -> f64 {
    45.0
}
fn default_power_idle() -> f64 {
    6.0
}
fn default_material() -> f64 {
    0.12
}

/// What a point of a simulated line serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineOutput {
    State,
    Reason,
    Total,
    Good,
    Reject,
    Energy,
    Power,
    Material,
}

pub const RUNNING: u16 = 1;
const IDLE: u16 = 2;
const FAULT: u16 = 3;
const CHANGEOVER: u16 = 4;

#[derive(Debug, Clone)]
struct Now {
    second: u64,
    state: u16,
    reason: u16,
    /// Seconds left in the current stop.
    left: u64,
    made: f64,
    total: u64,
    reject: u64,
    energy_kwh: f64,
    material: f64,
    rng: fastrand::Rng,
}

/// A line, advanced lazily to the time a request asks about.
pub struct LineSim {
    config: LineSimConfig,
    now: Mutex<Now>,
}

impl LineSim {
    pub fn new(config: LineSimConfig, seed: u64) -> LineSim {
        LineSim {
            now: Mutex::new(Now {
                second: 0,
                state: RUNNING,
                reason: 0,
                left: 0,
                made: 0.0,
                total: 0,
                reject: 0,
                energy_kwh: 0.0,
                material: 0.0,
                rng: fastrand::Rng::with_seed(seed),
            }),
            config,
        }
    }

    /// The value of `output` at `elapsed` since the simulation began.
    pub fn value(&self, output: LineOutput, elapsed: Duration) -> f64 {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        while now.second < elapsed.as_secs() {
            self.step(&mut now);
        }
        let counter =
            |n: u64| ((self.config.counter_start + n) % (self.config.counter_max + 1)) as f64;
        match output {
            LineOutput::State => f64::from(now.state),
            LineOutput::Reason => f64::from(now.reason),
            LineOutput::Total => counter(now.total),
            LineOutput::Good => counter(now.total - now.reject),
            LineOutput::Reject => counter(now.reject),
            LineOutput::Energy => now.energy_kwh,
            LineOutput::Power => self.power(now.state),
            LineOutput::Material => now.material,
        }
    }

    fn power(&self, state: u16) -> f64 {
        if state == RUNNING {
            self.config.power_running_kw
        } else {
            self.config.power_idle_kw
        }
    }

    /// One simulated second.
    fn step(&self, now: &mut Now) {
        let c = &self.config;
        now.second += 1;
        now.energy_kwh += self.power(now.state) / 3600.0;
        if now.state != RUNNING {
            now.left = now.left.saturating_sub(1);
            if now.left == 0 {
                now.state = RUNNING;
                now.reason = 0;
            }
            return;
        }
        now.made += c.speed / c.ideal_cycle.get().as_secs_f64().max(1e-3);
        let hours = now.second as f64 / 3600.0;
        let reject_p = (c.reject_rate + c.reject_drift_per_hour * hours).clamp(0.0, 1.0);
        while now.made >= 1.0 {
            now.made -= 1.0;
            now.total += 1;
            now.material += c.material_per_part;
            if now.rng.f64() < reject_p {
                now.reject += 1;
            }
        }
        let start = |state: u16, reason: u16, length: Duration, rng: &mut fastrand::Rng| {
            // Exponential-ish around the mean: between half and one and a half of it.
            let secs = length.as_secs_f64() * (0.5 + rng.f64());
            (state, reason, secs.round().max(1.0) as u64)
        };
        let chance = |every: HumanDuration, rng: &mut fastrand::Rng| {
            rng.f64() < 1.0 / every.get().as_secs_f64().max(1.0)
        };
        let event = if chance(c.jam_every, &mut now.rng) {
            let reason = if c.jam_reasons.is_empty() {
                0
            } else {
                c.jam_reasons[now.rng.usize(..c.jam_reasons.len())]
            };
            Some(start(FAULT, reason, c.jam_length.get(), &mut now.rng))
        } else if chance(c.changeover_every, &mut now.rng) {
            Some(start(
                CHANGEOVER,
                c.changeover_reason,
                c.changeover_length.get(),
                &mut now.rng,
            ))
        } else if chance(c.micro_stop_every, &mut now.rng) {
            Some(start(IDLE, 0, c.micro_stop_length.get(), &mut now.rng))
        } else {
            None
        };
        if let Some((state, reason, left)) = event {
            (now.state, now.reason, now.left) = (state, reason, left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LineSimConfig {
        toml::from_str("").expect("defaults")
    }

    #[test]
    fn the_same_seed_gives_the_same_day_and_counters_roll_over() {
        let mut c = config();
        c.counter_start = 65_000;
        let (a, b) = (LineSim::new(c.clone(), 7), LineSim::new(c, 7));
        let day = Duration::from_secs(8 * 3600);
        assert_eq!(
            a.value(LineOutput::Total, day),
            b.value(LineOutput::Total, day)
        );
        // 8 h at 0.9 × 1,800 parts/h minus the stops: thousands of parts, past 65,535.
        let total = a.value(LineOutput::Total, day);
        assert!(total < 65_000.0, "rolled over to {total}");
        let good = a.value(LineOutput::Good, day);
        let reject = a.value(LineOutput::Reject, day);
        assert!(reject > 0.0 && good != total);
    }

    #[test]
    fn stops_happen_and_end() {
        let sim = LineSim::new(config(), 3);
        let states: Vec<f64> = (0..4 * 3600)
            .step_by(10)
            .map(|s| sim.value(LineOutput::State, Duration::from_secs(s)))
            .collect();
        for code in [1.0, 2.0, 3.0] {
            assert!(states.contains(&code), "state {code} seen in 4 h");
        }
        let running = states.iter().filter(|s| **s == 1.0).count() as f64 / states.len() as f64;
        assert!((0.5..0.98).contains(&running), "running {running}");
    }
}
