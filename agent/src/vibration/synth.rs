//! Synthetic acceleration waveforms of a rotating machine, for tests, benchmarks and the
//! simulator: shaft-rate components, bearing impacts that ring a structural resonance, the load
//! zone's and cage's modulation, random jitter of the impact times, slip and broadband noise.

use std::f64::consts::PI;

use firmware_config::DefectFactors;

/// What is wrong with the synthetic machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    Healthy,
    OuterRace,
    InnerRace,
    RollingElement,
    Unbalance,
    Misalignment,
    Looseness,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::Healthy,
        Fault::OuterRace,
        Fault::InnerRace,
        Fault::RollingElement,
        Fault::Unbalance,
        Fault::Misalignment,
        Fault::Looseness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Healthy => "healthy",
            Fault::OuterRace => "outer_race",
            Fault::InnerRace => "inner_race",
            Fault::RollingElement => "rolling_element",
            Fault::Unbalance => "unbalance",
            Fault::Misalignment => "misalignment",
            Fault::Looseness => "looseness",
        }
    }
}

/// One synthetic recording. Acceleration in m/s².
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    pub sample_rate: f64,
    pub samples: usize,
    /// Nominal shaft speed, Hz.
    pub shaft_hz: f64,
    /// The true speed is `shaft_hz × (1 − slip)`.
    pub slip: f64,
    pub bearing: DefectFactors,
    pub fault: Fault,
    /// Size of the fault: impact amplitude in m/s² for bearings, velocity mm/s RMS of the fault's
    /// shaft-order components otherwise.
    pub severity: f64,
    /// Centre of the resonance the impacts excite, Hz.
    pub resonance_hz: f64,
    /// Broadband noise, m/s² RMS.
    pub noise: f64,
    pub seed: u64,
}

impl Machine {
    /// A 1480 rpm motor with a 6205 bearing, sampled at 25.6 kHz, 65,536 samples.
    pub fn motor(fault: Fault, seed: u64) -> Machine {
        Machine {
            sample_rate: 25_600.0,
            samples: 65_536,
            shaft_hz: 1480.0 / 60.0,
            slip: 0.015,
            bearing: DefectFactors::from_geometry(9, 7.94, 39.04, 0.0),
            fault,
            severity: match fault {
                Fault::Healthy => 0.0,
                Fault::OuterRace | Fault::InnerRace | Fault::RollingElement => 6.0,
                Fault::Unbalance | Fault::Misalignment | Fault::Looseness => 5.0,
            },
            resonance_hz: 3_800.0,
            noise: 1.0,
            seed,
        }
    }

    pub fn true_shaft_hz(&self) -> f64 {
        self.shaft_hz * (1.0 - self.slip)
    }

    /// The defect frequency this fault shows in the envelope spectrum, at the true speed.
    pub fn defect_hz(&self) -> Option<f64> {
        let fr = self.true_shaft_hz();
        match self.fault {
            Fault::OuterRace => Some(self.bearing.bpfo * fr),
            Fault::InnerRace => Some(self.bearing.bpfi * fr),
            Fault::RollingElement => Some(self.bearing.bsf * fr),
            _ => None,
        }
    }

    /// The analysis settings that match the machine (m/s², its rate and shaft speed, kurtogram
    /// band) and its bearing, named "DE".
    pub fn settings(&self) -> (firmware_config::Waveform, Vec<firmware_config::Bearing>) {
        let waveform = firmware_config::Waveform {
            source: firmware_config::WaveformSource::Tag(0),
            sample_rate: self.sample_rate,
            sample_rate_tag: None,
            to_m_s2: 1.0,
            max_samples: self.samples,
            shaft: Some(firmware_config::ShaftSpeed::Fixed { hz: self.shaft_hz }),
            velocity_band: [10.0, 1000.0],
            envelope_band: None,
            speed_tolerance: 0.02,
        };
        let bearing = firmware_config::Bearing {
            name: "DE".into(),
            factors: self.bearing,
        };
        (waveform, vec![bearing])
    }

    pub fn waveform(&self) -> Vec<f32> {
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let fs = self.sample_rate;
        let fr = self.true_shaft_hz();
        let phase = rng.f64() * 2.0 * PI;
        let mut x: Vec<f64> = (0..self.samples)
            .map(|i| {
                let t = i as f64 / fs;
                // A healthy machine: a little residual unbalance (0.6 mm/s at 1×) and 2×.
                velocity_tone(0.6, 1.0, fr, t, phase)
                    + velocity_tone(0.2, 2.0, fr, t, phase * 1.7)
                    + self.noise * gaussian(&mut rng)
            })
            .collect();
        match self.fault {
            Fault::Healthy => {}
            Fault::OuterRace | Fault::InnerRace | Fault::RollingElement => {
                self.add_impacts(&mut x, &mut rng);
            }
            Fault::Unbalance => add_orders(&mut x, fs, fr, &[(1.0, self.severity)], phase),
            Fault::Misalignment => add_orders(
                &mut x,
                fs,
                fr,
                &[(1.0, 0.5 * self.severity), (2.0, 0.8 * self.severity)],
                phase,
            ),
            Fault::Looseness => {
                let s = self.severity;
                let orders = [
                    (1.0, 0.6 * s),
                    (2.0, 0.4 * s),
                    (3.0, 0.35 * s),
                    (4.0, 0.3 * s),
                ];
                add_orders(&mut x, fs, fr, &orders, phase);
                add_orders(&mut x, fs, fr, &[(5.0, 0.25 * s), (6.0, 0.2 * s)], phase);
            }
        }
        x.into_iter().map(|v| v as f32).collect()
    }

    /// Impacts at the defect rate (jittered by 1 %), each ringing the resonance; an inner-race
    /// defect passes through the load zone once per turn, a rolling element once per cage turn.
    fn add_impacts(&self, x: &mut [f64], rng: &mut fastrand::Rng) {
        let Some(rate) = self.defect_hz() else {
            return;
        };
        let fs = self.sample_rate;
        let fr = self.true_shaft_hz();
        let period = 1.0 / rate;
        let decay = 2.0 * PI * self.resonance_hz * 0.05;
        let ring_len = ((5.0 / decay) * fs) as usize;
        let mut t = rng.f64() * period;
        let end = x.len() as f64 / fs;
        while t < end {
            let load = match self.fault {
                Fault::InnerRace => 0.5 * (1.0 + (2.0 * PI * fr * t).cos()),
                Fault::RollingElement => 0.5 * (1.0 + (2.0 * PI * self.bearing.ftf * fr * t).cos()),
                _ => 1.0,
            };
            let amplitude = self.severity * load * (0.8 + 0.4 * rng.f64());
            let start = (t * fs).ceil() as usize;
            for (i, sample) in x.iter_mut().skip(start).take(ring_len).enumerate() {
                let dt = (start + i) as f64 / fs - t;
                *sample +=
                    amplitude * (-decay * dt).exp() * (2.0 * PI * self.resonance_hz * dt).sin();
            }
            t += period * (1.0 + 0.01 * (2.0 * rng.f64() - 1.0));
        }
    }
}

/// Acceleration of a shaft-order tone whose velocity is `mm_s` RMS.
fn velocity_tone(mm_s: f64, order: f64, fr: f64, t: f64, phase: f64) -> f64 {
    let w = 2.0 * PI * order * fr;
    mm_s / 1000.0 * 2f64.sqrt() * w * (w * t + phase * order).sin()
}

fn add_orders(x: &mut [f64], fs: f64, fr: f64, orders: &[(f64, f64)], phase: f64) {
    for (i, sample) in x.iter_mut().enumerate() {
        let t = i as f64 / fs;
        *sample += orders
            .iter()
            .map(|&(order, mm_s)| velocity_tone(mm_s, order, fr, t, phase))
            .sum::<f64>();
    }
}

/// A standard normal deviate (Box–Muller).
pub fn gaussian(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(f64::MIN_POSITIVE);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
}
