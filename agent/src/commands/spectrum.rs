//! `millwright spectrum`: an asset's latest spectra and diagnosis from the running agent, or the
//! same analysis of a recorded waveform file (WAV or CSV) with the asset's configuration.

use std::fmt::Write as _;
use std::path::Path;

use firmware_config::{Asset, Plan, ShaftSpeed};

use crate::vibration::{self, dsp::Analyzer, read_recording, Latest};

/// Envelope spectrum shown up to this frequency unless asked otherwise.
pub const ENVELOPE_MAX_HZ: f64 = 1000.0;

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
