//! Recorded waveforms: WAV files (integer samples as a fraction of full scale, float samples as
//! they are; the first channel) and CSV files (one number per line, the last column, one header
//! line allowed), read whole but never beyond `max_samples`.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// What a waveform folder's watcher hands the scorer: the asset, the file, and the recording or
/// why it could not be read.
#[derive(Debug)]
pub struct Recorded {
    pub asset: usize,
    pub file: PathBuf,
    pub recording: Result<Recording, String>,
}

/// A recorded waveform: samples as stored, and the file's own sample rate (WAV).
#[derive(Debug)]
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
        let error = format!("{:#}", read_recording(&path, 1000).expect_err("error"));
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
