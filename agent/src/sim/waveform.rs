//! A simulated accelerometer: a machine's acceleration waveform, served over OPC UA as a Float
//! array (`<machine>.waveform`) and, with `registers`, over Modbus as a block of i16 input
//! registers (a vibration transmitter's waveform buffer), renewed every `every`. A bearing or
//! shaft fault grows from nothing at `starts` to its full size over `grows`.

use std::sync::{Arc, Mutex};
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
    /// Input register where the waveform's block of i16 samples starts (Modbus).
    pub registers: Option<u16>,
    /// m/s² per count of the Modbus block (default 0.001).
    #[serde(default = "default_register_scale")]
    pub register_scale: f64,
    /// Input register that holds the sample rate in Hz (u16).
    pub rate_register: Option<u16>,
}

fn default_register_scale() -> f64 {
    0.001
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
        if let Some(start) = self.registers {
            if usize::from(start) + self.samples > 65_536 {
                return Err("waveform: the register block runs past 65535".into());
            }
            if !(self.register_scale.is_finite() && self.register_scale > 0.0) {
                return Err("waveform: register_scale must be positive".into());
            }
        }
        if self.rate_register.is_some() && self.sample_rate > 65_535.0 {
            return Err("waveform: rate_register holds a u16: sample_rate up to 65535".into());
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

/// The waveform as Modbus input registers: one block per `every`, the same for every read in
/// that period (a transmitter's double buffer), made on the first read.
#[derive(Debug, Default)]
pub struct RegisterBlock {
    made: Mutex<Option<(u128, Arc<[u16]>)>>,
}

impl RegisterBlock {
    /// Fills `words[k]` (address `first + k`) that fall in the block or on the rate register,
    /// marking them mapped.
    pub fn overlay(
        &self,
        config: &WaveformSimConfig,
        (elapsed, seed): (Duration, u64),
        first: u32,
        words: &mut [u16],
        mapped: &mut [bool],
    ) {
        let end = first + words.len() as u32;
        if let Some(at) = config.rate_register.map(u32::from) {
            if (first..end).contains(&at) {
                words[(at - first) as usize] = config.sample_rate.round() as u16;
                mapped[(at - first) as usize] = true;
            }
        }
        let Some(start) = config.registers.map(u32::from) else {
            return;
        };
        let stop = start + config.samples as u32;
        if stop <= first || end <= start {
            return;
        }
        let block = self.block(config, elapsed, seed);
        for address in start.max(first)..stop.min(end) {
            words[(address - first) as usize] = block[(address - start) as usize];
            mapped[(address - first) as usize] = true;
        }
    }

    fn block(&self, config: &WaveformSimConfig, elapsed: Duration, seed: u64) -> Arc<[u16]> {
        let period = elapsed.as_millis() / config.every.get().as_millis().max(1);
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, block)) = made.as_ref().filter(|(at, _)| *at == period) {
            return Arc::clone(block);
        }
        let counts: Arc<[u16]> = config
            .generate(elapsed, seed ^ period as u64)
            .iter()
            .map(|v| {
                (f64::from(*v) / config.register_scale)
                    .round()
                    .clamp(-32768.0, 32767.0) as i16 as u16
            })
            .collect();
        *made = Some((period, Arc::clone(&counts)));
        counts
    }
}
