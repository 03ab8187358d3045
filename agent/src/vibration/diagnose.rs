//! From one waveform to a diagnosis: time features, the ISO velocity, the peak table at shaft
//! orders (velocity spectrum) and bearing defect frequencies (envelope spectrum), and the rules a
//! vibration analyst would apply to them.
//!
//! Every line is judged against the local noise floor (the median of the bins around it), never
//! an absolute level: sensors, mounting and resonances differ too much between machines.

use firmware_config::{Bearing, Foundation, IsoGroup, Waveform};
use serde::{Deserialize, Serialize};

use super::dsp::{self, Analyzer, Band, Spectrum};
use crate::health::rules;

/// A bearing family is a defect when its fundamental stands this far above the floor…
const DEFECT_DB: f64 = 8.0;
/// …and a harmonic this far (or the fundamental alone [`CLEAR_DB`]).
const HARMONIC_DB: f64 = 6.0;
const CLEAR_DB: f64 = 15.0;
/// Harmonics of a defect frequency looked at (2× to 4×).
const HARMONICS: usize = 4;
/// Shaft orders looked at in the velocity spectrum (1× to 6×).
const ORDERS: usize = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    OuterRace,
    InnerRace,
    RollingElement,
    Cage,
    Unbalance,
    Misalignment,
    Looseness,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::OuterRace => "outer_race",
            FaultKind::InnerRace => "inner_race",
            FaultKind::RollingElement => "rolling_element",
            FaultKind::Cage => "cage",
            FaultKind::Unbalance => "unbalance",
            FaultKind::Misalignment => "misalignment",
            FaultKind::Looseness => "looseness",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpectrumKind {
    /// Velocity, mm/s RMS per line.
    Velocity,
    /// Squared envelope of the acceleration in the envelope band, (m/s²)² per line.
    Envelope,
}

/// One line of the peak table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// `1x`, `2x`, … or `BPFO`, `2xBPFO`, …
    pub label: String,
    pub bearing: Option<String>,
    pub spectrum: SpectrumKind,
    /// Where the line should be at the given shaft speed.
    pub expected_hz: f64,
    /// Where the largest bin near it is.
    pub hz: f64,
    pub amplitude: f64,
    pub db_above_floor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub fault: FaultKind,
    pub bearing: Option<String>,
    /// On the rules' health scale (0.85 end of good … 0.3 critical).
    pub health: f64,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BandChoice {
    Configured,
    SpectralKurtosis,
}

/// What one waveform showed: carried in the assessment (spectra stay on the gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VibrationReport {
    pub samples: u32,
    pub sample_rate: f64,
    pub shaft_hz: Option<f64>,
    /// m/s².
    pub acceleration_rms: f64,
    pub acceleration_peak: f64,
    pub crest_factor: f64,
    pub kurtosis: f64,
    /// mm/s RMS over `velocity_band`.
    pub velocity_rms: f64,
    pub velocity_band: [f64; 2],
    pub envelope_band: [f64; 2],
    pub envelope_band_choice: BandChoice,
    pub diagnoses: Vec<Diagnosis>,
    pub peaks: Vec<Peak>,
    /// Waveforms of this asset rejected since the agent started (too long, too short, not
    /// numbers, not finite).
    pub waveforms_rejected: u64,
}

impl VibrationReport {
    /// The strongest bearing defect family's fundamental, dB above its floor (0 without bearings).
    pub fn bearing_defect_db(&self) -> Option<f64> {
        self.peaks
            .iter()
            .filter(|p| p.bearing.is_some() && !p.label.contains('x'))
            .map(|p| p.db_above_floor)
            .reduce(f64::max)
    }
}

/// A report with the spectra it was read from.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub report: VibrationReport,
    /// mm/s (peak amplitude per line).
    pub velocity: Spectrum,
    pub envelope: Spectrum,
}

/// Analyses one waveform in m/s². `shaft_hz` is the speed now (`None`: no order or bearing
/// analysis); `class` the asset's ISO 10816-3 class, which sets when a shaft-order pattern matters.
pub fn analyze(
    analyzer: &mut Analyzer,
    x: &[f32],
    waveform: &Waveform,
    bearings: &[Bearing],
    shaft_hz: Option<f64>,
    class: Option<(IsoGroup, Foundation)>,
) -> Option<Analysis> {
    let time = dsp::time_features(x)?;
    let fs = waveform.sample_rate;
    let shaft_hz = shaft_hz.filter(|f| f.is_finite() && *f > 0.0 && *f < fs / 8.0);
    // Lines of a shaft order 8 bins apart where the waveform allows, but at least 4 averages
    // (7 with the overlap): a single FFT's noise floor is too ragged to judge a line against.
    let segment = match shaft_hz {
        Some(fr) => ((fs * 8.0 / fr).ceil() as usize).next_power_of_two(),
        None => 8192,
    }
    .min((x.len() / 4).next_power_of_two())
    .max(64);
    let acceleration = analyzer.averaged_spectrum(x, fs, segment);
    let [low, high] = waveform.velocity_band;
    let velocity_rms = acceleration.band_rms(low, high, dsp::integrate) * 1000.0;
    let velocity = acceleration.scaled(|f| dsp::integrate(f) * 1000.0);

    analyzer.load(x);
    let (band, choice) = match waveform.envelope_band {
        Some([low, high]) => (Band { low, high }, BandChoice::Configured),
        None => {
            let fr = shaft_hz.unwrap_or(25.0);
            let top = bearings.iter().map(|b| b.factors.bpfi).fold(6.0, f64::max);
            let min_width = (1.1 * (HARMONICS as f64 * top + 1.0) * fr).max(200.0);
            let min_low = (20.0 * fr).max(500.0);
            let (band, _) = analyzer.kurtosis_band(fs, min_width, min_low);
            (band, BandChoice::SpectralKurtosis)
        }
    };
    let resolution = shaft_hz.map_or(1.0, |fr| (fr / 16.0).clamp(0.25, 2.0));
    let envelope = analyzer.envelope_spectrum(band, fs, resolution);

    let mut report = VibrationReport {
        samples: x.len() as u32,
        sample_rate: fs,
        shaft_hz,
        acceleration_rms: time.rms,
        acceleration_peak: time.peak,
        crest_factor: time.crest_factor,
        kurtosis: time.kurtosis,
        velocity_rms,
        velocity_band: waveform.velocity_band,
        envelope_band: [band.low, band.high],
        envelope_band_choice: choice,
        diagnoses: Vec::new(),
        peaks: Vec::new(),
        waveforms_rejected: 0,
    };
    if let Some(fr) = shaft_hz {
        let tolerance = waveform.speed_tolerance;
        shaft_orders(&mut report, &velocity, fr, tolerance, class);
        for bearing in bearings {
            bearing_families(&mut report, &envelope, bearing, fr, tolerance, band);
        }
        report
            .diagnoses
            .sort_by(|a, b| a.health.total_cmp(&b.health));
    }
    Some(Analysis {
        report,
        velocity,
        envelope,
    })
}

/// A line found near a frequency.
#[derive(Debug, Clone, Copy)]
struct Line {
    hz: f64,
    amplitude: f64,
    db: f64,
}

/// The largest bin within `half_width` Hz of `hz`, against the median of the bins around it.
fn line_near(s: &Spectrum, hz: f64, half_width: f64) -> Option<Line> {
    let last = s.amplitude.len().checked_sub(1)?;
    let k0 = (((hz - half_width) / s.df).floor().max(1.0)) as usize;
    let k1 = (((hz + half_width) / s.df).ceil() as usize).min(last);
    if k0 > k1 || hz <= 0.0 {
        return None;
    }
    let (k, &a) = s.amplitude[k0..=k1]
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))?;
    let k = k0 + k;
    let floor = noise_floor(s, k, k1 - k0 + 2)?;
    // The line's amplitude from the power of its three bins: a tone between two bins loses up to
    // 15 % of its peak bin to the window (scalloping), not of its power.
    let power: f64 = s.amplitude[k - 1..=(k + 1).min(last)]
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum();
    Some(Line {
        hz: s.hz(k),
        amplitude: (power / s.enbw).sqrt(),
        db: 20.0 * (f64::from(a) / floor).log10(),
    })
}

/// The median amplitude of up to 24 bins each side of `k`, leaving out `gap` bins either side.
fn noise_floor(s: &Spectrum, k: usize, gap: usize) -> Option<f64> {
    const SIDE: usize = 24;
    let mut around: heapless::Vec<f32, { 2 * SIDE }> = heapless::Vec::new();
    let below = k.saturating_sub(gap + SIDE).max(1)..k.saturating_sub(gap);
    let above = (k + gap + 1).min(s.amplitude.len())..(k + gap + 1 + SIDE).min(s.amplitude.len());
    for j in below.chain(above) {
        let _ = around.push(s.amplitude[j]);
    }
    if around.len() < 6 {
        return None;
    }
    around.sort_unstable_by(f32::total_cmp);
    let median = f64::from(around[around.len() / 2]);
    Some(median.max(f64::from(f32::MIN_POSITIVE)))
}

fn shaft_orders(
    report: &mut VibrationReport,
    velocity: &Spectrum,
    fr: f64,
    tolerance: f64,
    class: Option<(IsoGroup, Foundation)>,
) {
    let near = 1.5 * velocity.df;
    let Some(first) = line_near(velocity, fr, tolerance * fr + near) else {
        return;
    };
    // RMS per order (the spectrum holds peak amplitudes).
    let mut rms = [0.0; ORDERS];
    for order in 1..=ORDERS {
        let line = if order == 1 {
            Some(first)
        } else {
            line_near(velocity, first.hz * order as f64, near)
        };
        let Some(line) = line else { continue };
        rms[order - 1] = line.amplitude / 2f64.sqrt();
        if order <= 3 {
            report.peaks.push(Peak {
                label: format!("{order}x"),
                bearing: None,
                spectrum: SpectrumKind::Velocity,
                expected_hz: fr * order as f64,
                hz: line.hz,
                amplitude: rms[order - 1],
                db_above_floor: line.db,
            });
        }
    }
    let overall = report.velocity_rms;
    let (alert_level, health) = match class {
        Some((group, foundation)) => (
            rules::iso_10816_3_boundaries(group, foundation)[0],
            rules::vibration(overall, group, foundation).health,
        ),
        // Without a class: the group 2 rigid A/B boundary, and an advisory health.
        None => (1.4, 0.75),
    };
    if overall < alert_level {
        return;
    }
    let one = rms[0];
    let higher = rms[2..].iter().filter(|&&v| v >= 0.2 * one).count();
    let diagnosis = if higher >= 3 {
        Some((
            FaultKind::Looseness,
            format!(
                "looseness suspected: {} harmonics of 1× from 3× to {ORDERS}× above a fifth of 1× ({one:.1} mm/s); 2× {:.1} mm/s, overall {overall:.1} mm/s",
                higher, rms[1]
            ),
        ))
    } else if rms[1] >= 0.5 * one {
        Some((
            FaultKind::Misalignment,
            format!(
                "misalignment suspected: 2× {:.1} mm/s is {:.1} times 1× ({one:.1} mm/s), overall {overall:.1} mm/s",
                rms[1],
                rms[1] / one.max(1e-9)
            ),
        ))
    } else if one * one >= 0.6 * overall * overall && rms[2] < 0.3 * one {
        Some((
            FaultKind::Unbalance,
            format!(
                "unbalance suspected: 1× ({:.1} Hz) dominant, {one:.1} of {overall:.1} mm/s overall; 2× {:.1}, 3× {:.1} mm/s",
                first.hz, rms[1], rms[2]
            ),
        ))
    } else {
        None
    };
    if let Some((fault, reason)) = diagnosis {
        report.diagnoses.push(Diagnosis {
            fault,
            bearing: None,
            health,
            reason,
        });
    }
}

/// The four defect families of one bearing in the envelope spectrum.
fn bearing_families(
    report: &mut VibrationReport,
    envelope: &Spectrum,
    bearing: &Bearing,
    fr: f64,
    tolerance: f64,
    band: Band,
) {
    let f = bearing.factors;
    let families = [
        (FaultKind::OuterRace, "BPFO", f.bpfo, None),
        (
            FaultKind::InnerRace,
            "BPFI",
            f.bpfi,
            Some(("shaft-rate", fr)),
        ),
        (
            FaultKind::RollingElement,
            "BSF",
            f.bsf,
            Some(("cage-rate", f.ftf * fr)),
        ),
        (FaultKind::Cage, "FTF", f.ftf, None),
    ];
    for (fault, label, factor, modulation) in families {
        let Some(found) = family(envelope, label, factor * fr, tolerance, modulation) else {
            continue;
        };
        for (label, expected_hz, line) in &found.lines {
            report.peaks.push(Peak {
                label: label.clone(),
                bearing: Some(bearing.name.clone()),
                spectrum: SpectrumKind::Envelope,
                expected_hz: *expected_hz,
                hz: line.hz,
                amplitude: line.amplitude,
                db_above_floor: line.db,
            });
        }
        if let Some(diagnosis) = bearing_diagnosis(fault, label, &found, bearing, band) {
            report.diagnoses.push(diagnosis);
        }
    }
}

/// One defect family as the envelope spectrum shows it.
struct Family {
    fundamental: Line,
    /// The fundamental and its harmonics: label, nominal frequency, the line found.
    lines: Vec<(String, f64, Line)>,
    /// Harmonics at least [`HARMONIC_DB`] above their floor.
    strong: usize,
    /// What modulates it, how fast, and how many of its two sidebands stand out.
    sidebands: Option<(&'static str, f64, usize)>,
}

/// The family at `expected` Hz (searched within the slip tolerance), its harmonics and sidebands.
fn family(
    envelope: &Spectrum,
    label: &str,
    expected: f64,
    tolerance: f64,
    modulation: Option<(&'static str, f64)>,
) -> Option<Family> {
    let near = 1.5 * envelope.df;
    let fundamental = line_near(envelope, expected, tolerance * expected + near)?;
    let mut strong = 0;
    let mut lines = vec![(label.to_string(), expected, fundamental)];
    for h in 2..=HARMONICS {
        let width = near + h as f64 * envelope.df / 2.0;
        if let Some(line) = line_near(envelope, fundamental.hz * h as f64, width) {
            strong += usize::from(line.db >= HARMONIC_DB);
            lines.push((format!("{h}x{label}"), expected * h as f64, line));
        }
    }
    let sidebands = modulation
        .filter(|(_, m)| *m > 2.0 * envelope.df)
        .map(|(what, m)| {
            let found = [-1.0, 1.0]
                .into_iter()
                .filter_map(|side| line_near(envelope, fundamental.hz + side * m, near))
                .filter(|l| l.db >= HARMONIC_DB)
                .count();
            (what, m, found)
        });
    Some(Family {
        fundamental,
        lines,
        strong,
        sidebands,
    })
}

/// The diagnosis a family supports, if it stands out enough.
fn bearing_diagnosis(
    fault: FaultKind,
    label: &str,
    family: &Family,
    bearing: &Bearing,
    band: Band,
) -> Option<Diagnosis> {
    let (fundamental, strong) = (family.fundamental, family.strong);
    if fundamental.db < DEFECT_DB || (strong == 0 && fundamental.db < CLEAR_DB) {
        return None;
    }
    let sideband_note = match family.sidebands {
        Some((what, m, n)) if n > 0 => format!(", with {what} sidebands (±{m:.1} Hz)"),
        _ => String::new(),
    };
    // Early (a line and a harmonic just above the floor): watch it. Developed (clear lines or
    // several harmonics): plan the replacement — a health whose failure probability passes
    // the scheduled-maintenance threshold. Advanced: sooner, but the envelope alone never
    // makes it critical; the ISO zone rule leads on overall severity.
    let health = match (fundamental.db, strong) {
        (db, s) if db >= 20.0 && s >= 3 => 0.35,
        (db, s) if db >= 12.0 || s >= 2 => 0.45,
        _ => 0.7,
    };
    Some(Diagnosis {
        fault,
        bearing: Some(bearing.name.clone()),
        health,
        reason: format!(
            "{} defect suspected on bearing {}: {label} {:.1} Hz and {strong} harmonic{} {:.0} dB above the noise floor{sideband_note} in the envelope spectrum ({:.1}–{:.1} kHz)",
            describe(fault),
            bearing.name,
            fundamental.hz,
            if strong == 1 { "" } else { "s" },
            fundamental.db,
            band.low / 1000.0,
            band.high / 1000.0,
        ),
    })
}

fn describe(fault: FaultKind) -> &'static str {
    match fault {
        FaultKind::OuterRace => "outer race",
        FaultKind::InnerRace => "inner race",
        FaultKind::RollingElement => "rolling element",
        FaultKind::Cage => "cage",
        FaultKind::Unbalance => "unbalance",
        FaultKind::Misalignment => "misalignment",
        FaultKind::Looseness => "looseness",
    }
}
