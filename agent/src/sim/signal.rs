//! Signal models of the simulated plant: pure, deterministic functions of the seed and the time,
//! so a test can compute what the simulator serves at any instant.
//!
//! A value is `base + load_gain × load(t) + daily_swing × day(t) + drift_per_hour × hours
//! + fault_gain × fault(t) + (noise + fault_noise × fault(t)) × N(0,1)`
//! where `load(t)` is the machine's load (0–1) moving smoothly between random levels, `day(t)`
//! peaks mid-afternoon, and `fault(t)` is the machine's run-to-failure progress (0 before the
//! fault starts, 1 at failure; see [`FaultConfig`]).

use std::f64::consts::PI;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use firmware_config::HumanDuration;
use serde::Deserialize;

/// How a machine's load wanders: a new random level every `change_every`, eased in smoothly.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    #[serde(default = "default_load_mean")]
    pub mean: f64,
    #[serde(default = "default_load_spread")]
    pub spread: f64,
    #[serde(default = "default_load_change")]
    pub change_every: HumanDuration,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            mean: default_load_mean(),
            spread: default_load_spread(),
            change_every: default_load_change(),
        }
    }
}

fn default_load_mean() -> f64 {
    0.7
}
fn default_load_spread() -> f64 {
    0.2
}
fn default_load_change() -> HumanDuration {
    HumanDuration::from_millis(600_000)
}

/// A run-to-failure profile: the fault starts at `starts` after the simulation began and the
/// machine fails at `fails`. Progress in between is `((t - starts) / (fails - starts))^shape`, so a
/// shape above 1 gives the slow start and accelerating end of bearing wear. Which signals the fault
/// moves, and how far, is set per point (`fault_gain`, `fault_noise`): bearing wear raises vibration
/// and bearing temperature, thermal overload winding temperature and current, phase loss drops one
/// phase current, cavitation adds pressure fluctuation.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// A label for logs and datasets, e.g. "bearing_wear".
    pub kind: String,
    pub starts: HumanDuration,
    pub fails: HumanDuration,
    #[serde(default = "default_shape")]
    pub shape: f64,
}

fn default_shape() -> f64 {
    2.0
}

impl FaultConfig {
    /// Progress at `elapsed`: 0 before the start, 1 at and after failure.
    pub fn progress(&self, elapsed: Duration) -> f64 {
        let (start, end) = (self.starts.get(), self.fails.get());
        if elapsed <= start {
            return 0.0;
        }
        let span = end.saturating_sub(start).as_secs_f64().max(1e-3);
        ((elapsed - start).as_secs_f64() / span)
            .min(1.0)
            .powf(self.shape)
    }
}

/// One point's signal.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    #[serde(default)]
    pub base: f64,
    /// Added at full load (load = 1).
    #[serde(default)]
    pub load_gain: f64,
    /// Amplitude of the daily swing (e.g. ambient temperature), peaking at 15:00 UTC.
    #[serde(default)]
    pub daily_swing: f64,
    #[serde(default)]
    pub drift_per_hour: f64,
    /// Standard deviation of white noise.
    #[serde(default)]
    pub noise: f64,
    /// Added at full fault progress (failure).
    #[serde(default)]
    pub fault_gain: f64,
    /// Extra noise standard deviation at full fault progress.
    #[serde(default)]
    pub fault_noise: f64,
    /// Makes the point a counter rising at this rate (e.g. parts produced).
    pub count_per_hour: Option<f64>,
    /// For string points.
    pub text: Option<String>,
    /// Served by the machine's production line (`[machines.line]`) instead of the formula.
    pub line: Option<super::line::LineOutput>,
    /// Served by the machine's gauging station (`[machines.gauge]`).
    pub gauge: Option<super::gauge::GaugeOutput>,
}

/// What a signal evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    Number(f64),
    Text(String),
}

/// A machine's load process.
#[derive(Debug, Clone)]
pub struct Load {
    config: LoadConfig,
    seed: u64,
}

impl Load {
    pub fn new(config: LoadConfig, seed: u64) -> Self {
        Load { config, seed }
    }

    /// Load in [0, 1] at `elapsed` since the simulation started.
    pub fn at(&self, elapsed: Duration) -> f64 {
        let period = self.config.change_every.get().as_secs_f64().max(1e-3);
        let position = elapsed.as_secs_f64() / period;
        let segment = position.floor() as u64;
        let level = |k: u64| {
            let u = unit(hash(self.seed, k, 0x10ad));
            (self.config.mean + self.config.spread * (2.0 * u - 1.0)).clamp(0.0, 1.0)
        };
        let ease = (1.0 - (PI * position.fract()).cos()) / 2.0;
        level(segment) + (level(segment + 1) - level(segment)) * ease
    }
}

/// Evaluates a signal. `stream` distinguishes the noise of different points; `fault` is the
/// machine's fault progress (0..1).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    signal: &SignalConfig,
    load: f64,
    fault: f64,
    elapsed: Duration,
    wall: SystemTime,
    seed: u64,
    stream: u64,
) -> Reading {
    if let Some(text) = &signal.text {
        return Reading::Text(text.clone());
    }
    let hours = elapsed.as_secs_f64() / 3600.0;
    if let Some(rate) = signal.count_per_hour {
        return Reading::Number((signal.base + rate * hours).floor());
    }
    let seconds_of_day = wall
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_secs() % 86_400) as f64);
    let day = (2.0 * PI * (seconds_of_day / 3600.0 - 9.0) / 24.0).sin();
    let tick = elapsed.as_millis() as u64;
    let noise = gaussian(hash(seed, stream, tick), hash(seed, stream, !tick));
    Reading::Number(
        signal.base
            + signal.load_gain * load
            + signal.daily_swing * day
            + signal.drift_per_hour * hours
            + signal.fault_gain * fault
            + (signal.noise + signal.fault_noise * fault) * noise,
    )
}

/// SplitMix64 over three inputs: cheap, stateless, well mixed.
fn hash(a: u64, b: u64, c: u64) -> u64 {
    let mut z = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.rotate_left(21))
        .wrapping_add(c.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1).
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Standard normal draw (Box–Muller).
fn gaussian(a: u64, b: u64) -> f64 {
    let u1 = unit(a).max(f64::MIN_POSITIVE);
    let u2 = unit(b);
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_stays_in_range_and_moves_smoothly() {
        let load = Load::new(LoadConfig::default(), 1);
        let mut previous = load.at(Duration::ZERO);
        for s in 1..7200 {
            let now = load.at(Duration::from_secs(s));
            assert!((0.5..=0.9).contains(&now), "{now}");
            assert!((now - previous).abs() < 0.01, "smooth: {previous} → {now}");
            previous = now;
        }
    }

    #[test]
    fn noise_has_the_configured_spread_and_is_deterministic() {
        let signal = SignalConfig {
            base: 10.0,
            noise: 0.5,
            ..SignalConfig::default()
        };
        let values: Vec<f64> = (0..20_000)
            .map(|ms| {
                match evaluate(
                    &signal,
                    0.0,
                    0.0,
                    Duration::from_millis(ms),
                    UNIX_EPOCH,
                    3,
                    1,
                ) {
                    Reading::Number(v) => v,
                    Reading::Text(_) => f64::NAN,
                }
            })
            .collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let sd =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        assert!((mean - 10.0).abs() < 0.02, "{mean}");
        assert!((sd - 0.5).abs() < 0.02, "{sd}");
        let again = evaluate(
            &signal,
            0.0,
            0.0,
            Duration::from_millis(5),
            UNIX_EPOCH,
            3,
            1,
        );
        assert_eq!(again, Reading::Number(values[5]));
    }

    #[test]
    fn a_fault_grows_slowly_then_fast_and_reaches_its_gain_at_failure() {
        let fault = FaultConfig {
            kind: "bearing_wear".into(),
            starts: HumanDuration::from_millis(3_600_000),
            fails: HumanDuration::from_millis(11 * 3_600_000),
            shape: 2.0,
        };
        let hours = |h: u64| fault.progress(Duration::from_secs(h * 3600));
        assert_eq!(hours(0), 0.0);
        assert_eq!(hours(1), 0.0);
        assert!((hours(6) - 0.25).abs() < 1e-12);
        assert_eq!(hours(11), 1.0);
        assert_eq!(hours(40), 1.0);
        let vibration = SignalConfig {
            base: 1.0,
            fault_gain: 6.0,
            ..SignalConfig::default()
        };
        assert_eq!(
            evaluate(&vibration, 0.0, hours(11), Duration::ZERO, UNIX_EPOCH, 0, 0),
            Reading::Number(7.0)
        );
    }

    #[test]
    fn daily_swing_peaks_in_the_afternoon_and_counters_count() {
        let signal = SignalConfig {
            base: 20.0,
            daily_swing: 5.0,
            ..SignalConfig::default()
        };
        let at = |hour: u64| match evaluate(
            &signal,
            0.0,
            0.0,
            Duration::ZERO,
            UNIX_EPOCH + Duration::from_secs(hour * 3600),
            0,
            0,
        ) {
            Reading::Number(v) => v,
            Reading::Text(_) => f64::NAN,
        };
        assert!((at(15) - 25.0).abs() < 1e-9);
        assert!((at(3) - 15.0).abs() < 1e-9);
        let counter = SignalConfig {
            count_per_hour: Some(120.0),
            ..SignalConfig::default()
        };
        assert_eq!(
            evaluate(
                &counter,
                0.0,
                0.0,
                Duration::from_secs(90),
                UNIX_EPOCH,
                0,
                0
            ),
            Reading::Number(3.0)
        );
    }
}
