//! `[assets.waveform]` and `[[assets.bearings]]`: where an asset's acceleration waveforms come
//! from and how to read them, and the rolling bearings whose defect frequencies the diagnosis
//! looks for.
//!
//! Validation turns bearing geometry into defect frequency factors (orders of shaft speed), so the
//! agent works with factors only, whether they came from geometry or a catalogue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::assets::{TagDirectory, TagIndex, TagShape};
use crate::duration::HumanDuration;
use crate::modbus::Checker;
use crate::source::Seg;

/// Longest waveform an asset may take (2^20 samples: 41 s at 25.6 kHz).
pub const MAX_WAVEFORM: usize = 1 << 20;
/// Shortest: below this no spectrum resolves a shaft order.
pub const MIN_WAVEFORM: usize = 256;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AccelerationUnit {
    /// Standard gravity, 9.80665 m/s².
    #[default]
    #[serde(rename = "g")]
    G,
    #[serde(rename = "m/s²", alias = "m/s2", alias = "m/s^2")]
    MetresPerSecondSquared,
}

/// An asset's acceleration waveforms.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WaveformConfig {
    /// The tag whose values are waveforms: an OPC UA array node. Or `folder`.
    pub tag: Option<String>,
    /// A folder that recordings are dropped into (WAV, or CSV with one value per line), relative
    /// to this file: each finished file is analysed once, then moved to `done/` (or `rejected/`),
    /// where files older than `keep` are deleted. Or `tag`.
    pub folder: Option<PathBuf>,
    /// How often the folder is listed besides inotify's announcements (default 5s).
    #[serde(default = "default_poll")]
    pub poll: HumanDuration,
    /// How long analysed recordings stay in `done/` and `rejected/` (default 7d).
    #[serde(default = "default_keep")]
    pub keep: HumanDuration,
    /// A Linux IIO device with a buffer (an SPI accelerometer on the gateway): its name (the
    /// `name` file), `iio:deviceN`, or its directory under /sys/bus/iio/devices. Or `tag`/`folder`.
    pub iio: Option<String>,
    /// The IIO channel captured, e.g. "accel_z" (`in_accel_z` in scan_elements) or "voltage0".
    pub channel: Option<String>,
    /// The IIO device's character device (default /dev/iio:deviceN).
    pub device_node: Option<PathBuf>,
    /// The IIO trigger that paces the captures (its `name`, e.g. "adxl355-dev0" or an hrtimer
    /// trigger's). Default: the one set already, else the device's own (a trigger named after it).
    pub trigger: Option<String>,
    /// How often an IIO capture of `max_samples` samples is taken (default 60s).
    #[serde(default = "default_every")]
    pub every: HumanDuration,
    /// Samples per second of every waveform (a WAV file's own rate wins). With
    /// `sample_rate_tag`, the nominal rate the bands are checked against.
    pub sample_rate: f64,
    /// A tag that gives the sample rate of the waveforms from `tag`, in Hz (a transmitter whose
    /// rate follows its settings): each waveform is analysed at the tag's latest good value.
    pub sample_rate_tag: Option<String>,
    /// Unit of the samples after `scale`: "g" or "m/s²". Default: g, and m/s² for `iio` (the
    /// kernel's unit for acceleration, after the channel's own scale and offset).
    pub unit: Option<AccelerationUnit>,
    /// Factor applied to every sample (a raw integer block from a transmitter), default 1.
    #[serde(default = "one")]
    pub scale: f64,
    /// Longest waveform accepted, in samples (default 65,536, at most 1,048,576). Buffers of this
    /// size are set aside when the agent starts; a longer waveform is rejected and counted.
    #[serde(default = "default_max_samples")]
    pub max_samples: usize,
    /// Fixed shaft speed in rpm, when `signals.speed` does not give it.
    pub shaft_rpm: Option<f64>,
    /// Band of the ISO 10816/20816 velocity RMS, Hz (default [10, 1000]; [2, 1000] for machines
    /// below 600 rpm).
    pub velocity_band: Option<[f64; 2]>,
    /// Band for envelope analysis, Hz, around a resonance the impacts excite. Default: the band
    /// with the largest spectral kurtosis.
    pub envelope_band: Option<[f64; 2]>,
    /// How far the true shaft speed may differ from the given one (slip, speed tag lag): defect
    /// lines are searched this far either side. Default 0.02.
    #[serde(default = "default_tolerance")]
    pub speed_tolerance: f64,
}

fn default_poll() -> HumanDuration {
    HumanDuration::from_millis(5_000)
}
fn default_every() -> HumanDuration {
    HumanDuration::from_millis(60_000)
}
fn default_keep() -> HumanDuration {
    HumanDuration::from_millis(7 * 86_400_000)
}
fn one() -> f64 {
    1.0
}
fn default_max_samples() -> usize {
    65_536
}
fn default_tolerance() -> f64 {
    0.02
}

/// A rolling bearing: its geometry, or its catalogue's defect frequency factors.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BearingConfig {
    /// Where it sits ("DE", "NDE"), used in reasons.
    pub name: String,
    /// Number of rolling elements.
    pub rolling_elements: Option<u32>,
    /// Ball (roller) diameter, any unit, the same as `pitch_diameter`.
    pub ball_diameter: Option<f64>,
    /// Pitch diameter.
    pub pitch_diameter: Option<f64>,
    /// Contact angle in degrees (default 0).
    pub contact_angle: Option<f64>,
    /// Catalogue factors, orders of shaft speed: outer race (BPFO), inner race (BPFI), rolling
    /// element spin (BSF), cage (FTF). All four, instead of the geometry.
    pub bpfo: Option<f64>,
    pub bpfi: Option<f64>,
    pub bsf: Option<f64>,
    pub ftf: Option<f64>,
}

/// Defect frequencies as orders of shaft speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DefectFactors {
    pub bpfo: f64,
    pub bpfi: f64,
    pub bsf: f64,
    pub ftf: f64,
}

impl DefectFactors {
    /// From geometry: `n` elements, ball and pitch diameters, contact angle in degrees.
    pub fn from_geometry(n: u32, ball: f64, pitch: f64, angle_deg: f64) -> DefectFactors {
        let r = ball / pitch * angle_deg.to_radians().cos();
        let n = f64::from(n);
        DefectFactors {
            ftf: 0.5 * (1.0 - r),
            bpfo: n / 2.0 * (1.0 - r),
            bpfi: n / 2.0 * (1.0 + r),
            bsf: pitch / (2.0 * ball) * (1.0 - r * r),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bearing {
    pub name: String,
    pub factors: DefectFactors,
}

/// Where the shaft speed comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShaftSpeed {
    Fixed {
        hz: f64,
    },
    /// `signals.speed`; `per_minute` when its unit is rpm.
    Tag {
        tag: TagIndex,
        per_minute: bool,
    },
}

/// Where an asset's waveforms come from.
#[derive(Debug, Clone, PartialEq)]
pub enum WaveformSource {
    /// A tag whose values are arrays.
    Tag(TagIndex),
    /// Recordings dropped into a folder.
    Folder {
        path: PathBuf,
        poll: Duration,
        keep: Duration,
    },
    /// Captures from a Linux IIO buffered device.
    Iio(IioSource),
}

/// A Linux IIO device's channel, captured every `every`.
#[derive(Debug, Clone, PartialEq)]
pub struct IioSource {
    /// As configured: a name, `iio:deviceN` or a sysfs directory.
    pub device: String,
    /// The scan element's name, with its `in_` prefix (`in_accel_z`).
    pub channel: String,
    pub device_node: Option<PathBuf>,
    pub trigger: Option<String>,
    pub every: Duration,
}

/// The validated `[assets.waveform]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Waveform {
    pub source: WaveformSource,
    pub sample_rate: f64,
    /// The tag that gives each waveform's sample rate (Hz), when the rate is not fixed.
    pub sample_rate_tag: Option<TagIndex>,
    /// Multiplies a sample into m/s².
    pub to_m_s2: f64,
    pub max_samples: usize,
    pub shaft: Option<ShaftSpeed>,
    pub velocity_band: [f64; 2],
    pub envelope_band: Option<[f64; 2]>,
    pub speed_tolerance: f64,
}

impl Waveform {
    /// The highest frequency the bands reach: a sample rate must be at least twice it.
    pub fn top_hz(&self) -> f64 {
        let envelope = self.envelope_band.map_or(0.0, |[_, high]| high);
        self.velocity_band[1].max(envelope)
    }
}

/// Validates an asset's waveform and bearings. `at` builds a path under the asset; `speed` is
/// the asset's `signals.speed` (index and unit) when mapped.
pub(crate) fn validate(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    component: &str,
    at: &dyn Fn(&[Seg<'static>]) -> Vec<Seg<'static>>,
    config: (Option<&WaveformConfig>, &[BearingConfig]),
    speed: Option<(TagIndex, bool)>,
    config_dir: &Path,
) -> (Option<Waveform>, Vec<Bearing>) {
    let (waveform, bearings) = config;
    let bearings: Vec<Bearing> = bearings
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            bearing(
                check,
                component,
                &at(&[Seg::Key("bearings"), Seg::Index(i)]),
                b,
            )
        })
        .collect();
    let Some(w) = waveform else {
        if !bearings.is_empty() {
            check.err(
                &at(&[Seg::Key("bearings")]),
                component,
                "bearings need [assets.waveform]: their defect frequencies are found in its spectra",
            );
        }
        return (None, bearings);
    };
    let key = |k: &'static str| at(&[Seg::Key("waveform"), Seg::Key(k)]);
    let source = source(check, tags, component, &key, w, config_dir);
    let nyquist = w.sample_rate / 2.0;
    if !(w.sample_rate.is_finite() && w.sample_rate >= 100.0) {
        check.err(
            &key("sample_rate"),
            component,
            "sample_rate must be at least 100 samples per second",
        );
    }
    if !(w.scale.is_finite() && w.scale != 0.0) {
        check.err(&key("scale"), component, "scale must be a non-zero number");
    }
    if !(MIN_WAVEFORM..=MAX_WAVEFORM).contains(&w.max_samples) {
        check.err(
            &key("max_samples"),
            component,
            format!("max_samples must be between {MIN_WAVEFORM} and {MAX_WAVEFORM}"),
        );
    }
    if !(0.0..=0.1).contains(&w.speed_tolerance) {
        check.err(
            &key("speed_tolerance"),
            component,
            "speed_tolerance is a fraction between 0 and 0.1 (0.02 = 2 %)",
        );
    }
    let velocity_band = w.velocity_band.unwrap_or([10.0, 1000.0]);
    band(
        check,
        component,
        &key("velocity_band"),
        velocity_band,
        nyquist,
    );
    if let Some(envelope) = w.envelope_band {
        band(check, component, &key("envelope_band"), envelope, nyquist);
    }
    let shaft = match (w.shaft_rpm, speed) {
        (Some(rpm), _) if !(rpm.is_finite() && rpm > 0.0) => {
            check.err(&key("shaft_rpm"), component, "shaft_rpm must be positive");
            None
        }
        (Some(rpm), _) => Some(ShaftSpeed::Fixed { hz: rpm / 60.0 }),
        (None, Some((tag, per_minute))) => Some(ShaftSpeed::Tag { tag, per_minute }),
        (None, None) => None,
    };
    if shaft.is_none() && !bearings.is_empty() {
        check.err(
            &key("shaft_rpm"),
            component,
            "bearing defect frequencies need the shaft speed: set shaft_rpm here or map signals.speed",
        );
    }
    let sample_rate_tag = rate_tag(check, tags, component, &key, w);
    let waveform = source.map(|source| Waveform {
        source,
        sample_rate: w.sample_rate,
        sample_rate_tag,
        to_m_s2: w.scale
            * match w.unit.unwrap_or(if w.iio.is_some() {
                AccelerationUnit::MetresPerSecondSquared
            } else {
                AccelerationUnit::G
            }) {
                AccelerationUnit::G => 9.806_65,
                AccelerationUnit::MetresPerSecondSquared => 1.0,
            },
        max_samples: w.max_samples,
        shaft,
        velocity_band,
        envelope_band: w.envelope_band,
        speed_tolerance: w.speed_tolerance,
    });
    (waveform, bearings)
}

/// The waveform's tag, folder or IIO device: exactly one of them.
fn source(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    component: &str,
    key: &dyn Fn(&'static str) -> Vec<Seg<'static>>,
    w: &WaveformConfig,
    config_dir: &Path,
) -> Option<WaveformSource> {
    if w.iio.is_none() {
        for (field, given) in [
            ("channel", w.channel.is_some()),
            ("device_node", w.device_node.is_some()),
            ("trigger", w.trigger.is_some()),
        ] {
            if given {
                check.err(
                    &key(field),
                    component,
                    format!("{field} is for iio captures"),
                );
            }
        }
    }
    match (&w.tag, &w.folder, &w.iio) {
        (None, None, Some(device)) => iio_source(check, component, key, w, device),
        (Some(tag), None, None) => match tags.shape(tag) {
            Ok((index, TagShape::Block | TagShape::Untyped)) => Some(WaveformSource::Tag(index)),
            Ok((_, shape)) => {
                check.err(
                    &key("tag"),
                    component,
                    format!(
                        "tag {tag:?} is {}, not a waveform: an OPC UA array, or a Modbus block of registers (count = number of samples)",
                        shape.describe()
                    ),
                );
                None
            }
            Err(Some(message)) => {
                check.err(&key("tag"), component, message);
                None
            }
            Err(None) => None,
        },
        (None, Some(folder), None) => {
            if w.poll.get() < Duration::from_millis(100) {
                check.err(&key("poll"), component, "poll must be at least 100ms");
                return None;
            }
            Some(WaveformSource::Folder {
                path: config_dir.join(folder),
                poll: w.poll.get(),
                keep: w.keep.get(),
            })
        }
        _ => {
            let mut table = key("tag");
            table.pop();
            check.err(
                &table,
                component,
                "a waveform comes from a tag (an OPC UA array or a Modbus block), a folder of recordings or an IIO device: give one of tag, folder and iio",
            );
            None
        }
    }
}

/// `iio` with its `channel` (named with or without the `in_` prefix).
fn iio_source(
    check: &mut Checker<'_, '_>,
    component: &str,
    key: &dyn Fn(&'static str) -> Vec<Seg<'static>>,
    w: &WaveformConfig,
    device: &str,
) -> Option<WaveformSource> {
    let Some(channel) = &w.channel else {
        check.err(
            &key("iio"),
            component,
            "an IIO capture needs channel = the scan element to read, e.g. \"accel_z\"",
        );
        return None;
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if device.is_empty() || channel.is_empty() || !channel.chars().all(valid) {
        check.err(
            &key("channel"),
            component,
            "channel is a scan element's name: letters, digits and _ (e.g. \"accel_z\")",
        );
        return None;
    }
    if w.every.get() < Duration::from_secs(1) {
        check.err(&key("every"), component, "every must be at least 1s");
        return None;
    }
    let channel = if channel.starts_with("in_") {
        channel.clone()
    } else {
        format!("in_{channel}")
    };
    Some(WaveformSource::Iio(IioSource {
        device: device.to_string(),
        channel,
        device_node: w.device_node.clone(),
        trigger: w.trigger.clone(),
        every: w.every.get(),
    }))
}

/// `sample_rate_tag`: a number, for waveforms from a tag (a recording carries its own rate).
fn rate_tag(
    check: &mut Checker<'_, '_>,
    tags: &TagDirectory<'_>,
    component: &str,
    key: &dyn Fn(&'static str) -> Vec<Seg<'static>>,
    w: &WaveformConfig,
) -> Option<TagIndex> {
    let name = w.sample_rate_tag.as_ref()?;
    if w.tag.is_none() {
        check.err(
            &key("sample_rate_tag"),
            component,
            "sample_rate_tag is for waveforms from a tag; a recording carries its own rate (a WAV file) or takes sample_rate",
        );
        return None;
    }
    match tags.shape(name) {
        Ok((index, TagShape::Integer | TagShape::Real | TagShape::Untyped)) => Some(index),
        Ok((_, shape)) => {
            check.err(
                &key("sample_rate_tag"),
                component,
                format!(
                    "tag {name:?} is {}; the sample rate is a number (Hz)",
                    shape.describe()
                ),
            );
            None
        }
        Err(message) => {
            if let Some(message) = message {
                check.err(&key("sample_rate_tag"), component, message);
            }
            None
        }
    }
}

fn band(
    check: &mut Checker<'_, '_>,
    component: &str,
    path: &[Seg<'_>],
    band: [f64; 2],
    nyquist: f64,
) {
    let [low, high] = band;
    if !(low.is_finite() && high.is_finite() && 0.0 < low && low < high) {
        check.err(
            path,
            component,
            "a band is [low, high] in Hz with 0 < low < high",
        );
    } else if high > nyquist {
        check.err(
            path,
            component,
            format!("the band's top ({high} Hz) is above half the sample rate ({nyquist} Hz)"),
        );
    }
}

fn bearing(
    check: &mut Checker<'_, '_>,
    component: &str,
    path: &[Seg<'_>],
    b: &BearingConfig,
) -> Option<Bearing> {
    let geometry = (b.rolling_elements, b.ball_diameter, b.pitch_diameter);
    let catalogue = (b.bpfo, b.bpfi, b.bsf, b.ftf);
    let factors = match (geometry, catalogue) {
        ((Some(n), Some(d), Some(pd)), (None, None, None, None)) => {
            let angle = b.contact_angle.unwrap_or(0.0);
            if n < 3 || !(d > 0.0 && pd > d && d.is_finite() && pd.is_finite()) {
                check.err(
                    path,
                    component,
                    "bearing geometry needs at least 3 rolling elements and 0 < ball_diameter < pitch_diameter",
                );
                return None;
            }
            if !(0.0..60.0).contains(&angle) {
                check.err(path, component, "contact_angle is in degrees, 0 to 60");
                return None;
            }
            DefectFactors::from_geometry(n, d, pd, angle)
        }
        ((None, None, None), (Some(bpfo), Some(bpfi), Some(bsf), Some(ftf))) => {
            let all = [bpfo, bpfi, bsf, ftf];
            if all.iter().any(|f| !(f.is_finite() && *f > 0.0)) || ftf >= 1.0 || bpfo >= bpfi {
                check.err(
                    path,
                    component,
                    "catalogue factors are positive orders of shaft speed with ftf < 1 and bpfo < bpfi",
                );
                return None;
            }
            DefectFactors {
                bpfo,
                bpfi,
                bsf,
                ftf,
            }
        }
        _ => {
            check.err(
                path,
                component,
                "a bearing takes its geometry (rolling_elements, ball_diameter, pitch_diameter, contact_angle) or all four catalogue factors (bpfo, bpfi, bsf, ftf), not parts of both",
            );
            return None;
        }
    };
    if b.name.trim().is_empty() {
        check.err(path, component, "a bearing needs a name such as \"DE\"");
        return None;
    }
    Some(Bearing {
        name: b.name.clone(),
        factors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_gives_the_textbook_defect_factors() {
        // SKF 6205: 9 balls, 7.94 mm, pitch 39.04 mm: BPFO 3.585, BPFI 5.415, BSF 2.357, FTF 0.398.
        let f = DefectFactors::from_geometry(9, 7.94, 39.04, 0.0);
        for (got, want) in [
            (f.bpfo, 3.585),
            (f.bpfi, 5.415),
            (f.bsf, 2.357),
            (f.ftf, 0.398),
        ] {
            assert!((got - want).abs() < 0.005, "{got} vs {want}");
        }
    }
}
