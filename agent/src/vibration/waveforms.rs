//! Waveform intake (a fixed buffer per asset) and the book of latest spectra that `millwright
//! spectrum` and the MQTT `spectrum` command read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::diagnose::{Analysis, VibrationReport};
use super::dsp::Spectrum;
use crate::sample::Value;

/// Why a waveform was not taken.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Rejected {
    #[error("waveform of {len} samples is longer than max_samples = {max}")]
    TooLong { len: usize, max: usize },
    #[error("waveform of {len} samples is too short (at least {min})")]
    TooShort { len: usize, min: usize },
    #[error("the value is not an array of numbers")]
    NotNumeric,
    #[error("the waveform holds a NaN or infinite sample")]
    NotFinite,
    #[error("sample rate {rate} Hz cannot carry the bands up to {top} Hz (it must be at least twice that)")]
    SampleRate { rate: f64, top: f64 },
    #[error("no sample rate yet: sample_rate_tag has no good value")]
    NoSampleRate,
}

/// One asset's waveform buffer: `max_samples` long from the start, refilled by each waveform.
#[derive(Debug)]
pub struct WaveformSlot {
    buffer: Vec<f32>,
    len: usize,
    /// The waveform's own sample rate, when its source said (a WAV file).
    rate: Option<f64>,
    fresh: bool,
    /// The highest frequency the asset's bands reach: a waveform's own rate must carry it.
    top_hz: f64,
    pub accepted: u64,
    pub rejected: u64,
}

impl WaveformSlot {
    /// A slot for waveforms of up to `max_samples`, analysed in bands up to `top_hz`.
    pub fn new(max_samples: usize, top_hz: f64) -> WaveformSlot {
        WaveformSlot {
            buffer: vec![0.0; max_samples],
            len: 0,
            top_hz,
            rate: None,
            fresh: false,
            accepted: 0,
            rejected: 0,
        }
    }

    /// Copies a waveform in, scaled by `to_m_s2`, with its sample rate when its source gives one.
    /// A rejected one leaves the previous waveform.
    pub fn accept(
        &mut self,
        value: &Value,
        to_m_s2: f64,
        rate: Option<f64>,
    ) -> Result<(), Rejected> {
        let outcome = self
            .check_rate(rate)
            .and_then(|()| self.fill(value, to_m_s2, rate));
        match outcome {
            Ok(()) => self.accepted += 1,
            Err(_) => self.rejected += 1,
        }
        outcome
    }

    fn check_rate(&self, rate: Option<f64>) -> Result<(), Rejected> {
        match rate {
            Some(rate) if !(rate.is_finite() && rate >= 2.0 * self.top_hz) => {
                Err(Rejected::SampleRate {
                    rate,
                    top: self.top_hz,
                })
            }
            _ => Ok(()),
        }
    }

    fn fill(&mut self, value: &Value, to_m_s2: f64, rate: Option<f64>) -> Result<(), Rejected> {
        let Value::Array(items) = value else {
            return Err(Rejected::NotNumeric);
        };
        let (len, max) = (items.len(), self.buffer.len());
        if len > max {
            return Err(Rejected::TooLong { len, max });
        }
        let min = firmware_config::vibration::MIN_WAVEFORM;
        if len < min {
            return Err(Rejected::TooShort { len, min });
        }
        // Checked whole before the buffer is touched: a bad waveform leaves the last good one.
        for item in items.iter() {
            let v = item.as_f64().ok_or(Rejected::NotNumeric)? * to_m_s2;
            if !v.is_finite() || v.abs() > f64::from(f32::MAX) {
                return Err(Rejected::NotFinite);
            }
        }
        for (slot, item) in self.buffer.iter_mut().zip(items.iter()) {
            *slot = (item.as_f64().unwrap_or(0.0) * to_m_s2) as f32;
        }
        self.len = len;
        self.rate = rate;
        self.fresh = true;
        Ok(())
    }

    /// Copies in a recording's samples, scaled by `to_m_s2`, with its own sample rate if it has
    /// one. A rejected recording is counted by the caller (with the files it could not read).
    pub fn accept_samples(
        &mut self,
        samples: &[f32],
        to_m_s2: f64,
        rate: Option<f64>,
    ) -> Result<(), Rejected> {
        self.check_rate(rate)?;
        let (len, max) = (samples.len(), self.buffer.len());
        if len > max {
            return Err(Rejected::TooLong { len, max });
        }
        let min = firmware_config::vibration::MIN_WAVEFORM;
        if len < min {
            return Err(Rejected::TooShort { len, min });
        }
        if samples
            .iter()
            .any(|v| !(f64::from(*v) * to_m_s2).is_finite())
        {
            return Err(Rejected::NotFinite);
        }
        for (slot, &v) in self.buffer.iter_mut().zip(samples) {
            *slot = (f64::from(v) * to_m_s2) as f32;
        }
        self.len = len;
        self.rate = rate;
        self.fresh = true;
        self.accepted += 1;
        Ok(())
    }

    pub fn count_rejected(&mut self) {
        self.rejected += 1;
    }

    /// The waveform received since the last call, if any, with its own sample rate if it had one.
    pub fn take_fresh(&mut self) -> Option<(&[f32], Option<f64>)> {
        if !std::mem::take(&mut self.fresh) {
            return None;
        }
        Some((&self.buffer[..self.len], self.rate))
    }
}

/// The latest analysis of one asset, kept on the gateway.
#[derive(Debug)]
pub struct Latest {
    pub timestamp: String,
    pub report: VibrationReport,
    pub velocity: Spectrum,
    pub envelope: Spectrum,
}

/// Latest spectra by asset id, shared between the scorer (writer) and the commands (readers).
#[derive(Debug, Clone, Default)]
pub struct SpectrumBook(Arc<Mutex<BTreeMap<String, Arc<Latest>>>>);

impl SpectrumBook {
    pub fn record(&self, asset: &str, timestamp: String, analysis: Analysis) {
        let latest = Latest {
            timestamp,
            report: analysis.report,
            velocity: analysis.velocity,
            envelope: analysis.envelope,
        };
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(asset.to_string(), Arc::new(latest));
    }

    pub fn get(&self, asset: &str) -> Option<Arc<Latest>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(asset)
            .cloned()
    }

    pub fn assets(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

impl Latest {
    /// The reply of the `spectrum` command: the report and both spectra, the velocity spectrum up
    /// to the top of its band and the envelope spectrum up to `envelope_max_hz`.
    pub fn to_json(&self, asset: &str, envelope_max_hz: f64) -> serde_json::Value {
        let cut = |s: &Spectrum, max_hz: f64| {
            let keep = (s.bin(max_hz) + 1).min(s.amplitude.len());
            let rounded: Vec<f64> = s.amplitude[..keep]
                .iter()
                .map(|&a| round_significant(f64::from(a)))
                .collect();
            json!({ "df_hz": s.df, "amplitude": rounded })
        };
        json!({
            "asset": asset,
            "timestamp": self.timestamp,
            "report": self.report,
            "velocity_mm_s": cut(&self.velocity, self.report.velocity_band[1]),
            "envelope": cut(&self.envelope, envelope_max_hz),
        })
    }
}

/// Four significant digits: enough for a plot, a third of the text.
fn round_significant(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return 0.0;
    }
    let scale = 10f64.powi(3 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(values: impl Iterator<Item = f64>) -> Value {
        Value::Array(values.map(Value::F64).collect::<Vec<_>>().into())
    }

    #[test]
    fn a_waveform_is_scaled_in_and_taken_once() {
        let mut slot = WaveformSlot::new(1024, 100.0);
        slot.accept(&array((0..512).map(f64::from)), 2.0, None)
            .expect("accepted");
        let (wave, rate) = slot.take_fresh().expect("fresh");
        assert_eq!(rate, None, "an array carries no rate of its own");
        assert_eq!(wave.len(), 512);
        assert_eq!(wave[10], 20.0);
        assert!(slot.take_fresh().is_none(), "taken once");
    }

    #[test]
    fn bad_waveforms_are_rejected_counted_and_leave_the_last_good_one() {
        let mut slot = WaveformSlot::new(1024, 100.0);
        slot.accept(&array((0..300).map(f64::from)), 1.0, None)
            .expect("accepted");
        let long = slot.accept(&array((0..2000).map(f64::from)), 1.0, None);
        assert_eq!(
            long,
            Err(Rejected::TooLong {
                len: 2000,
                max: 1024
            })
        );
        assert!(matches!(
            slot.accept(&array((0..10).map(f64::from)), 1.0, None),
            Err(Rejected::TooShort { .. })
        ));
        let nan = array((0..300).map(|i| if i == 7 { f64::NAN } else { 1.0 }));
        assert_eq!(slot.accept(&nan, 1.0, None), Err(Rejected::NotFinite));
        assert_eq!(
            slot.accept(&Value::F64(1.0), 1.0, None),
            Err(Rejected::NotNumeric)
        );
        let text = Value::Array(vec![Value::Text("x".into()); 300].into());
        assert_eq!(slot.accept(&text, 1.0, None), Err(Rejected::NotNumeric));
        assert_eq!((slot.accepted, slot.rejected), (1, 5));
        let (wave, _) = slot.take_fresh().expect("the good one is still there");
        assert_eq!((wave.len(), wave[299]), (300, 299.0));
    }

    #[test]
    fn a_sample_rate_that_cannot_carry_the_bands_is_rejected() {
        let mut slot = WaveformSlot::new(1024, 1000.0);
        let wave = array((0..512).map(f64::from));
        assert_eq!(
            slot.accept(&wave, 1.0, Some(1500.0)),
            Err(Rejected::SampleRate {
                rate: 1500.0,
                top: 1000.0
            })
        );
        assert!(matches!(
            slot.accept_samples(&[0.5; 512], 1.0, Some(f64::NAN)),
            Err(Rejected::SampleRate { .. })
        ));
        assert!(slot.take_fresh().is_none(), "nothing taken");
        slot.accept(&wave, 1.0, Some(2000.0))
            .expect("at twice the top");
        assert_eq!(slot.take_fresh().map(|(_, rate)| rate), Some(Some(2000.0)));
    }

    #[test]
    fn spectrum_values_keep_four_significant_digits() {
        assert_eq!(round_significant(0.000_123_456), 0.000_123_5);
        assert_eq!(round_significant(98_765.4), 98_770.0);
        assert_eq!(round_significant(0.0), 0.0);
    }
}
