//! A simulated accelerometer: a machine's acceleration waveform, served over OPC UA as a Float
//! array (`<machine>.waveform`) and renewed every `every`. A bearing or shaft fault grows from
//! nothing at `starts` to its full size over `grows`.

use std::time::Duration;

use firmware_config::{DefectFactors, HumanDuration};
use serde::Deserialize;

use crate::vibration::synth::{Fault, Machine};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaveformSimConfig {
    /// healthy, outer_race, inner_race, rolling_element, unbalance, misalignment or looseness.
    #[serde(default = "healthy")]
    pub fault: String,
    #[serde(default = "default_every")]
    pub every: HumanDuration,
    #[serde(default = "default_rate")]
    pub sample_rate: f64,
    #[serde(default = "default_samples")]
    pub samples: usize,
    /// Shaft speed (the true speed is 1.5 % lower: slip).
    #[serde(default = "default_rpm")]
    pub rpm: f64,
    /// When the fault begins, after the simulator starts.
    #[serde(default)]
    pub starts: HumanDuration,
    /// How long it takes to reach full size.
    #[serde(default = "default_grows")]
    pub grows: HumanDuration,
}

fn healthy() -> String {
    "healthy".into()
}
fn default_every() -> HumanDuration {
    HumanDuration::from_millis(5_000)
}
fn default_rate() -> f64 {
    25_600.0
}
fn default_samples() -> usize {
    16_384
}
fn default_rpm() -> f64 {
    1480.0
}
fn default_grows() -> HumanDuration {
    HumanDuration::from_millis(120_000)
}

/// The bearing the simulated machines carry (a 6205: 9 balls of 7.94 mm on a 39.04 mm pitch).
pub fn bearing() -> DefectFactors {
    DefectFactors::from_geometry(9, 7.94, 39.04, 0.0)
}

impl WaveformSimConfig {
    pub fn check(&self) -> Result<(), String> {
        if Fault::ALL.iter().all(|f| f.name() != self.fault) {
            let names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            return Err(format!(
                "waveform fault {:?}: one of {}",
                self.fault,
                names.join(", ")
            ));
        }
        if !(1000.0..=200_000.0).contains(&self.sample_rate)
            || !(256..=1 << 20).contains(&self.samples)
        {
            return Err("waveform: sample_rate 1000–200000 Hz and 256–1048576 samples".into());
        }
        if !(60.0..=30_000.0).contains(&self.rpm) {
            return Err("waveform: rpm between 60 and 30000".into());
        }
        Ok(())
    }

    /// The waveform at `elapsed` since the start (m/s²), different noise each call by `seed`.
    pub fn generate(&self, elapsed: Duration, seed: u64) -> Vec<f32> {
        let fault = Fault::ALL
            .into_iter()
            .find(|f| f.name() == self.fault)
            .unwrap_or(Fault::Healthy);
        let mut machine = Machine::motor(fault, seed);
        machine.sample_rate = self.sample_rate;
        machine.samples = self.samples;
        machine.shaft_hz = self.rpm / 60.0;
        machine.bearing = bearing();
        let grown = elapsed.saturating_sub(self.starts.get()).as_secs_f64()
            / self.grows.get().as_secs_f64().max(1e-3);
        machine.severity *= grown.clamp(0.0, 1.0);
        machine.waveform()
    }
}
