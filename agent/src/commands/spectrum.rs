//! `millwright spectrum`: an asset's latest spectra and diagnosis from the running agent, or the
//! same analysis of a recorded waveform file (WAV or CSV) with the asset's configuration.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use firmware_config::{Asset, Plan, ShaftSpeed};

use crate::vibration::{self, dsp::Analyzer, Latest};

/// Envelope spectrum shown up to this frequency unless asked otherwise.
pub const ENVELOPE_MAX_HZ: f64 = 1000.0;

/// A recorded waveform: samples as stored, and the file's own sample rate (WAV).
pub struct Recording {
    pub samples: Vec<f32>,
    pub sample_rate: Option<f64>,
}

/// Reads a WAV file (integer samples as a fraction of full scale, float samples as they are; the
/// first channel) or a CSV file (one number per line, the first line may be a header).
pub fn read_recording(path: &Path, max_samples: usize) -> anyhow::Result<Recording> {
    let is_wav = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("wav"));
    let recording = if is_wav {
        read_wav(path, max_samples)
    } else {
        read_csv(path, max_samples)
    }
    .with_context(|| format!("cannot read the waveform {}", path.display()))?;
    if recording.samples.len() < firmware_config::vibration::MIN_WAVEFORM {
        anyhow::bail!(
            "{}: {} samples; a waveform needs at least {}",
            path.display(),
            recording.samples.len(),
            firmware_config::vibration::MIN_WAVEFORM
        );
    }
    Ok(recording)
}

fn read_wav(path: &Path, max_samples: usize) -> anyhow::Result<Recording> {
    let mut reader = hound::WavReader::open(path)?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let frames = reader.duration() as usize;
    if frames > max_samples {
        anyhow::bail!("{frames} samples, more than max_samples = {max_samples}");
    }
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .step_by(channels)
            .collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let full_scale = 2f64.powi(i32::from(spec.bits_per_sample.max(1)) - 1);
            reader
                .samples::<i32>()
                .step_by(channels)
                .map(|s| s.map(|v| (f64::from(v) / full_scale) as f32))
                .collect::<Result<_, _>>()?
        }
    };
    Ok(Recording {
        samples,
        sample_rate: Some(f64::from(spec.sample_rate)),
    })
}

fn read_csv(path: &Path, max_samples: usize) -> anyhow::Result<Recording> {
    let text = std::fs::read_to_string(path)?;
    let mut samples = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let field = line.split(',').next_back().unwrap_or("").trim();
        if field.is_empty() {
            continue;
        }
        match field.parse::<f32>() {
            Ok(v) if v.is_finite() => samples.push(v),
            Ok(_) => anyhow::bail!("line {}: {field:?} is not a finite number", i + 1),
            Err(_) if i == 0 => {} // a header
            Err(_) => anyhow::bail!("line {}: {field:?} is not a number", i + 1),
        }
        if samples.len() > max_samples {
            anyhow::bail!("more than max_samples = {max_samples} samples");
        }
    }
    Ok(Recording {
        samples,
        sample_rate: None,
    })
}

/// The asset with a waveform named `id`, or an error listing those there are.
pub fn waveform_asset<'p>(plan: &'p Plan, id: &str) -> anyhow::Result<&'p Asset> {
    let with: Vec<&str> = plan
        .assets
        .iter()
        .filter(|a| a.waveform.is_some())
        .map(|a| a.id.as_str())
        .collect();
    plan.assets
        .iter()
        .find(|a| a.id == id && a.waveform.is_some())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no asset {id:?} with [assets.waveform] in the configuration (assets with waveforms: {})",
                if with.is_empty() { "none".to_string() } else { with.join(", ") }
            )
        })
}

/// Analyses a recorded waveform with `asset`'s settings. `rpm` overrides the shaft speed (needed
/// when the configuration takes it from a tag). The file's own sample rate wins over the
/// configuration's.
pub fn analyze_file(asset: &Asset, path: &Path, rpm: Option<f64>) -> anyhow::Result<Latest> {
    let Some(settings) = asset.waveform.as_ref() else {
        anyhow::bail!("asset {:?} has no [assets.waveform]", asset.id);
    };
    let recording = read_recording(path, settings.max_samples)?;
    let mut settings = settings.clone();
    if let Some(rate) = recording.sample_rate {
        settings.sample_rate = rate;
    }
    let shaft_hz = match (rpm, settings.shaft) {
        (Some(rpm), _) => Some(rpm / 60.0),
        (None, Some(ShaftSpeed::Fixed { hz })) => Some(hz),
        (None, Some(ShaftSpeed::Tag { .. })) => anyhow::bail!(
            "asset {:?} takes its shaft speed from a tag: give it with --rpm",
            asset.id
        ),
        (None, None) => None,
    };
    let samples: Vec<f32> = recording
        .samples
        .iter()
        .map(|&v| (f64::from(v) * settings.to_m_s2) as f32)
        .collect();
    let analysis = vibration::analyze(
        &mut Analyzer::new(),
        &samples,
        &settings,
        &asset.bearings,
        shaft_hz,
        asset.nameplate.vibration_class,
    )
    .ok_or_else(|| anyhow::anyhow!("{}: the waveform is constant", path.display()))?;
    Ok(Latest {
        timestamp: String::new(),
        report: analysis.report,
        velocity: analysis.velocity,
        envelope: analysis.envelope,
    })
}

/// What `millwright spectrum` prints from the `spectrum` reply.
pub fn format_spectrum(reply: &serde_json::Value) -> String {
    let r = &reply["report"];
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = String::new();
    let shaft = r["shaft_hz"]
        .as_f64()
        .map(|hz| format!(", shaft {hz:.2} Hz ({:.0} rpm)", hz * 60.0))
        .unwrap_or_else(|| ", shaft speed unknown".into());
    let _ = writeln!(
        out,
        "{}{}: {} samples at {} Hz{shaft}",
        reply["asset"].as_str().unwrap_or("?"),
        reply["timestamp"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| format!(" at {t}"))
            .unwrap_or_default(),
        r["samples"],
        num(&r["sample_rate"]),
    );
    let _ = writeln!(
        out,
        "acceleration {:.3} m/s² RMS, peak {:.3}, crest factor {:.2}, kurtosis {:.2}",
        num(&r["acceleration_rms"]),
        num(&r["acceleration_peak"]),
        num(&r["crest_factor"]),
        num(&r["kurtosis"])
    );
    let _ = writeln!(
        out,
        "velocity {:.2} mm/s RMS ({}–{} Hz); envelope band {:.0}–{:.0} Hz ({})",
        num(&r["velocity_rms"]),
        num(&r["velocity_band"][0]),
        num(&r["velocity_band"][1]),
        num(&r["envelope_band"][0]),
        num(&r["envelope_band"][1]),
        r["envelope_band_choice"]
            .as_str()
            .unwrap_or("?")
            .replace('_', " ")
    );
    let diagnoses = r["diagnoses"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if diagnoses.is_empty() {
        out.push_str("diagnosis: nothing found\n");
    } else {
        out.push_str("diagnosis:\n");
        for d in diagnoses {
            let _ = writeln!(out, "  {}", d["reason"].as_str().unwrap_or("?"));
        }
    }
    let peaks = r["peaks"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !peaks.is_empty() {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<9} {:>11} {:>9} {:>11} {:>6}",
            "line", "bearing", "spectrum", "expected Hz", "found Hz", "amplitude", "dB"
        );
        for p in peaks {
            let unit = if p["spectrum"] == "velocity" {
                " mm/s"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "{:<10} {:<8} {:<9} {:>11.1} {:>9.1} {:>11} {:>6.1}",
                p["label"].as_str().unwrap_or("?"),
                p["bearing"].as_str().unwrap_or("-"),
                p["spectrum"].as_str().unwrap_or("?"),
                num(&p["expected_hz"]),
                num(&p["hz"]),
                format!("{:.3}{unit}", num(&p["amplitude"])),
                num(&p["db_above_floor"]),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_takes_the_last_column_and_one_header_and_names_a_bad_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wave.csv");
        let body: String = (0..300)
            .map(|i| format!("{i},{}\n", f64::from(i) * 0.5))
            .collect();
        std::fs::write(&path, format!("t,accel\n{body}")).expect("write");
        let r = read_recording(&path, 1000).expect("reads");
        assert_eq!((r.samples.len(), r.samples[2]), (300, 1.0));
        assert!(
            read_recording(&path, 100).is_err(),
            "longer than max_samples"
        );
        std::fs::write(&path, format!("t,accel\n{body}5,oops\n")).expect("write");
        let error = format!("{:#}", read_recording(&path, 1000).err().expect("error"));
        assert!(
            error.contains("line 302") && error.contains("oops"),
            "{error}"
        );
    }

    #[test]
    fn wav_integers_read_as_fractions_of_full_scale_with_the_files_rate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wave.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 12_800,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut writer = hound::WavWriter::create(&path, spec).expect("create");
        for i in 0..512 {
            writer
                .write_sample(if i % 2 == 0 { 16_384i16 } else { -32_768 })
                .expect("sample");
        }
        writer.finalize().expect("finalize");
        let r = read_recording(&path, 4096).expect("reads");
        assert_eq!(r.sample_rate, Some(12_800.0));
        assert_eq!(
            (r.samples[0], r.samples[1], r.samples.len()),
            (0.5, -1.0, 512)
        );
        std::fs::write(&path, b"RIFF....WAVEnonsense").expect("write");
        assert!(
            read_recording(&path, 4096).is_err(),
            "a corrupt file is an error"
        );
    }
}
