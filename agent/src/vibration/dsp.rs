//! Signal processing for waveforms: time-domain features, averaged amplitude spectra, velocity by
//! frequency-domain integration, band envelopes and the spectral-kurtosis band choice.
//!
//! Everything runs on `f32` FFTs from rustfft (tract-core links the same code for its DFT ops).
//! The [`Analyzer`] owns every buffer: after the first waveform of the longest configured length
//! it allocates nothing more, so the scorer's memory is set by `max_samples`, not by uptime.

use std::f64::consts::PI;

use rustfft::num_complex::Complex32;
use rustfft::FftPlanner;

/// Time-domain statistics of one waveform (after removing its mean).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeFeatures {
    pub rms: f64,
    /// Largest absolute deviation from the mean.
    pub peak: f64,
    /// Peak over RMS: about 1.4 for a sine, 3–4 for healthy broadband vibration, higher with impacts.
    pub crest_factor: f64,
    /// Fourth moment over the squared variance: 3 for Gaussian noise, higher with impacts.
    pub kurtosis: f64,
}

pub fn time_features(x: &[f32]) -> Option<TimeFeatures> {
    if x.len() < 2 {
        return None;
    }
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len() as f64;
    let (mut m2, mut m4, mut peak) = (0.0, 0.0, 0.0f64);
    for &v in x {
        let d = f64::from(v) - mean;
        let d2 = d * d;
        m2 += d2;
        m4 += d2 * d2;
        peak = peak.max(d.abs());
    }
    m2 /= x.len() as f64;
    m4 /= x.len() as f64;
    if m2 <= 0.0 || !m2.is_finite() {
        return None;
    }
    let rms = m2.sqrt();
    Some(TimeFeatures {
        rms,
        peak,
        crest_factor: peak / rms,
        kurtosis: m4 / (m2 * m2),
    })
}

/// An amplitude spectrum: bin `k` is at `k × df` Hz, its value the amplitude (peak, in the
/// signal's unit) a sinusoid at that frequency would show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spectrum {
    pub df: f64,
    pub amplitude: Vec<f32>,
    /// Equivalent noise bandwidth of the window, in bins (1.5 for Hann): what a sum of squared
    /// amplitudes over a band must be divided by to give the band's mean square.
    pub enbw: f64,
}

impl Spectrum {
    pub fn bin(&self, hz: f64) -> usize {
        (hz / self.df).round().max(0.0) as usize
    }

    pub fn hz(&self, bin: usize) -> f64 {
        bin as f64 * self.df
    }

    /// RMS of the signal between `low` and `high` Hz, each bin weighted by `gain(f)` (for
    /// integration to velocity). Parseval over the windowed, averaged spectrum.
    pub fn band_rms(&self, low: f64, high: f64, gain: impl Fn(f64) -> f64) -> f64 {
        let last = self.amplitude.len().saturating_sub(1);
        let (k0, k1) = (self.bin(low).max(1), self.bin(high).min(last));
        let sum: f64 = (k0..=k1)
            .map(|k| {
                let a = f64::from(self.amplitude[k]) * gain(self.hz(k));
                a * a / 2.0
            })
            .sum();
        (sum / self.enbw).sqrt()
    }

    /// The same spectrum with each bin multiplied by `gain(f)` (zero at DC).
    pub fn scaled(&self, gain: impl Fn(f64) -> f64) -> Spectrum {
        let amplitude = self
            .amplitude
            .iter()
            .enumerate()
            .map(|(k, &a)| {
                if k == 0 {
                    0.0
                } else {
                    (f64::from(a) * gain(self.hz(k))) as f32
                }
            })
            .collect();
        Spectrum {
            df: self.df,
            amplitude,
            enbw: self.enbw,
        }
    }
}

/// A frequency band in Hz.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Band {
    pub low: f64,
    pub high: f64,
}

impl Band {
    pub fn width(&self) -> f64 {
        self.high - self.low
    }
}

/// Owns FFT plans and scratch buffers, reused for every waveform.
pub struct Analyzer {
    planner: FftPlanner<f32>,
    spectrum: Vec<Complex32>,
    work: Vec<Complex32>,
    scratch: Vec<Complex32>,
    power: Vec<f64>,
    envelope: Vec<f32>,
    window: Vec<f32>,
    /// The window's sum and sum of squares.
    window_sums: (f64, f64),
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new()
    }
}

impl Analyzer {
    pub fn new() -> Analyzer {
        Analyzer {
            planner: FftPlanner::new(),
            spectrum: Vec::new(),
            work: Vec::new(),
            scratch: Vec::new(),
            power: Vec::new(),
            envelope: Vec::new(),
            window: Vec::new(),
            window_sums: (0.0, 0.0),
        }
    }

    fn fft(&mut self, inverse: bool, which: Buffer) {
        let buffer = match which {
            Buffer::Spectrum => &mut self.spectrum,
            Buffer::Work => &mut self.work,
        };
        let n = buffer.len();
        let plan = if inverse {
            self.planner.plan_fft_inverse(n)
        } else {
            self.planner.plan_fft_forward(n)
        };
        let need = plan.get_inplace_scratch_len();
        if self.scratch.len() < need {
            self.scratch.resize(need, Complex32::default());
        }
        plan.process_with_scratch(buffer, &mut self.scratch[..need]);
    }

    /// Welch's averaged amplitude spectrum: Hann-windowed segments of `segment` samples (at most
    /// the waveform's length), half overlapping, their power averaged.
    pub fn averaged_spectrum(&mut self, x: &[f32], sample_rate: f64, segment: usize) -> Spectrum {
        let segment = segment.min(x.len()).max(2);
        let step = (segment / 2).max(1);
        self.make_window(segment);
        let (window, window_squares) = self.window_sums;
        let bins = segment / 2 + 1;
        self.power.clear();
        self.power.resize(bins, 0.0);
        let mut count = 0;
        let mut start = 0;
        while start + segment <= x.len() {
            let part = &x[start..start + segment];
            let mean = part.iter().map(|&v| f64::from(v)).sum::<f64>() / segment as f64;
            self.work.clear();
            let mean = mean as f32;
            self.work.extend(
                part.iter()
                    .zip(&self.window)
                    .map(|(&v, &w)| Complex32::new((v - mean) * w, 0.0)),
            );
            self.fft(false, Buffer::Work);
            for (p, c) in self.power.iter_mut().zip(&self.work) {
                *p += f64::from(c.norm_sqr());
            }
            count += 1;
            start += step;
        }
        let scale = 2.0 / window;
        let amplitude = self
            .power
            .iter()
            .map(|p| ((p / f64::from(count.max(1))).sqrt() * scale) as f32)
            .collect();
        Spectrum {
            df: sample_rate / segment as f64,
            amplitude,
            enbw: segment as f64 * window_squares / (window * window),
        }
    }

    /// The Hann window of `n` points and its sums, made once per length.
    fn make_window(&mut self, n: usize) {
        if self.window.len() == n {
            return;
        }
        self.window.clear();
        self.window.extend((0..n).map(|i| hann(i, n) as f32));
        let sum = self.window.iter().map(|&w| f64::from(w)).sum();
        let squares = self.window.iter().map(|&w| f64::from(w).powi(2)).sum();
        self.window_sums = (sum, squares);
    }

    /// Takes the whole waveform's spectrum (mean removed), which the band methods below use.
    pub fn load(&mut self, x: &[f32]) {
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len().max(1) as f64;
        self.spectrum.clear();
        self.spectrum.extend(
            x.iter()
                .map(|&v| Complex32::new((f64::from(v) - mean) as f32, 0.0)),
        );
        self.fft(false, Buffer::Spectrum);
    }

    /// The complex envelope of the loaded waveform in `band`, shifted to baseband: the analytic
    /// signal of the band-passed waveform (Hilbert transform by zeroing negative frequencies),
    /// decimated to a power-of-two length. Its magnitude is the band's envelope. Left in `work`;
    /// returns the decimated sample rate.
    fn baseband(&mut self, band: Band, sample_rate: f64) -> f64 {
        let n = self.spectrum.len();
        let df = sample_rate / n as f64;
        let k0 = ((band.low / df).ceil() as usize).max(1);
        let k1 = ((band.high / df).floor() as usize).min(n / 2);
        let bins = k1.saturating_sub(k0) + 1;
        let m = (2 * bins).next_power_of_two().max(8);
        self.work.clear();
        self.work.resize(m, Complex32::default());
        self.work[..bins].copy_from_slice(&self.spectrum[k0..k0 + bins]);
        self.fft(true, Buffer::Work);
        // Keeps amplitudes independent of n and m: a unit sine in the band has envelope 1.
        let gain = 2.0 / n as f32;
        for z in &mut self.work {
            *z *= gain;
        }
        m as f64 * df
    }

    /// Spectral kurtosis of the band's envelope: near 0 for Gaussian noise (and −1 for a pure
    /// tone), large when the band carries repeated impacts.
    pub fn spectral_kurtosis(&mut self, band: Band, sample_rate: f64) -> f64 {
        self.baseband(band, sample_rate);
        let (mut m2, mut m4) = (0.0f64, 0.0f64);
        for z in &self.work {
            let p = f64::from(z.norm_sqr());
            m2 += p;
            m4 += p * p;
        }
        let m = self.work.len() as f64;
        let (m2, m4) = (m2 / m, m4 / m);
        if m2 <= 0.0 {
            return 0.0;
        }
        m4 / (m2 * m2) - 2.0
    }

    /// The band with the largest spectral kurtosis among bands of 1/4 to 1/64 of the Nyquist
    /// range (each level's bands overlapping by half), no narrower than `min_width` and starting
    /// above `min_low` Hz (clear of the shaft harmonics). A coarse kurtogram.
    pub fn kurtosis_band(&mut self, sample_rate: f64, min_width: f64, min_low: f64) -> (Band, f64) {
        let nyquist = sample_rate / 2.0;
        let mut best = (
            Band {
                low: min_low.min(nyquist / 2.0),
                high: nyquist * 0.95,
            },
            f64::NEG_INFINITY,
        );
        for level in 2..=6 {
            let width = nyquist / f64::from(1u32 << level);
            if width < min_width {
                break;
            }
            let mut low = 0.0;
            while low + width <= nyquist * 0.98 {
                if low >= min_low {
                    let band = Band {
                        low,
                        high: low + width,
                    };
                    let sk = self.spectral_kurtosis(band, sample_rate);
                    if sk > best.1 {
                        best = (band, sk);
                    }
                }
                low += width / 2.0;
            }
        }
        best
    }

    /// The averaged amplitude spectrum of the squared envelope in `band`, up to the band's width,
    /// with a resolution of at most `resolution` Hz (segments as long as that needs).
    pub fn envelope_spectrum(&mut self, band: Band, sample_rate: f64, resolution: f64) -> Spectrum {
        let rate = self.baseband(band, sample_rate);
        self.envelope.clear();
        self.envelope
            .extend(self.work.iter().map(Complex32::norm_sqr));
        let m = self.envelope.len();
        let want = (rate / resolution.max(1e-6)).ceil() as usize;
        // At least 4 averages, as for the acceleration spectrum.
        let segment = want.next_power_of_two().min(m / 4).max(8);
        let envelope = std::mem::take(&mut self.envelope);
        let mut spectrum = self.averaged_spectrum(&envelope, rate, segment);
        self.envelope = envelope;
        let keep = spectrum.bin(band.width()).min(spectrum.amplitude.len());
        spectrum.amplitude.truncate(keep.max(1));
        spectrum
    }
}

#[derive(Clone, Copy)]
enum Buffer {
    Spectrum,
    Work,
}

fn hann(i: usize, n: usize) -> f64 {
    0.5 - 0.5 * (2.0 * PI * i as f64 / n as f64).cos()
}

/// Acceleration → velocity gain at `f` Hz (1 / 2πf), and 0 at DC.
pub fn integrate(f: f64) -> f64 {
    if f <= 0.0 {
        0.0
    } else {
        1.0 / (2.0 * PI * f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amplitude: f64, hz: f64, fs: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (amplitude * (2.0 * PI * hz * i as f64 / fs).sin()) as f32)
            .collect()
    }

    #[test]
    fn a_sine_has_the_textbook_time_features() {
        let x = sine(2.0, 50.0, 10_000.0, 10_000);
        let t = time_features(&x).expect("features");
        assert!((t.rms - 2.0 / 2f64.sqrt()).abs() < 1e-3, "{t:?}");
        assert!((t.peak - 2.0).abs() < 1e-3);
        assert!((t.crest_factor - 2f64.sqrt()).abs() < 1e-3);
        assert!((t.kurtosis - 1.5).abs() < 1e-3);
        assert!(
            time_features(&[1.0; 8]).is_none(),
            "a constant has no RMS to divide by"
        );
    }

    #[test]
    fn the_averaged_spectrum_shows_a_sine_at_its_amplitude_and_frequency() {
        let fs = 25_600.0;
        let x = sine(3.0, 160.0, fs, 65_536);
        let s = Analyzer::new().averaged_spectrum(&x, fs, 8192);
        let (k, a) = s
            .amplitude
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("bins");
        assert!((s.hz(k) - 160.0).abs() <= s.df, "peak at {} Hz", s.hz(k));
        assert!((f64::from(*a) - 3.0).abs() < 0.1, "amplitude {a}");
        let rms = s.band_rms(10.0, 1000.0, |_| 1.0);
        assert!((rms - 3.0 / 2f64.sqrt()).abs() < 0.02, "band RMS {rms}");
        assert!(
            s.band_rms(500.0, 1000.0, |_| 1.0) < 0.01,
            "no energy outside"
        );
    }

    #[test]
    fn velocity_by_integration_matches_the_analytic_value() {
        // 1 m/s² RMS at 50 Hz is 1 / (2π·50) m/s = 3.183 mm/s RMS.
        let fs = 10_240.0;
        let x = sine(2f64.sqrt(), 50.0, fs, 32_768);
        let s = Analyzer::new().averaged_spectrum(&x, fs, 4096);
        let v = s.band_rms(10.0, 1000.0, integrate) * 1000.0;
        assert!((v - 3.183).abs() < 0.05, "velocity {v} mm/s");
    }

    #[test]
    fn the_envelope_spectrum_finds_the_modulation_frequency() {
        // A 3 kHz carrier, amplitude-modulated at 87 Hz.
        let fs = 25_600.0;
        let x: Vec<f32> = (0..65_536)
            .map(|i| {
                let t = i as f64 / fs;
                ((1.0 + 0.8 * (2.0 * PI * 87.0 * t).cos()) * (2.0 * PI * 3000.0 * t).sin()) as f32
            })
            .collect();
        let mut analyzer = Analyzer::new();
        analyzer.load(&x);
        let band = Band {
            low: 2500.0,
            high: 3500.0,
        };
        let e = analyzer.envelope_spectrum(band, fs, 1.0);
        let (k, _) = e
            .amplitude
            .iter()
            .enumerate()
            .skip(2)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("bins");
        assert!(
            (e.hz(k) - 87.0).abs() <= e.df,
            "{} Hz (df {})",
            e.hz(k),
            e.df
        );
        assert!(e.df <= 1.6, "resolution {} Hz", e.df);
    }

    #[test]
    fn spectral_kurtosis_prefers_the_band_with_impacts() {
        let fs = 20_000.0;
        let mut rng = fastrand::Rng::with_seed(7);
        let x: Vec<f32> = (0..32_768)
            .map(|i| {
                let t = i as f64 / fs;
                // An impact every 10 ms ringing at 6 kHz, under broadband noise.
                let since = t % 0.01;
                let ring = 3.0 * (-since * 900.0).exp() * (2.0 * PI * 6000.0 * since).sin();
                (ring + super::super::synth::gaussian(&mut rng)) as f32
            })
            .collect();
        let mut analyzer = Analyzer::new();
        analyzer.load(&x);
        let (band, sk) = analyzer.kurtosis_band(fs, 400.0, 1000.0);
        assert!(
            band.low <= 6000.0 && band.high >= 6000.0,
            "{band:?} (SK {sk})"
        );
        assert!(sk > 1.0, "SK {sk}");
        let quiet = analyzer.spectral_kurtosis(
            Band {
                low: 1500.0,
                high: 2500.0,
            },
            fs,
        );
        assert!(quiet.abs() < 0.5, "noise band SK {quiet}");
    }
}
