//! A simulated gauging station: parts at a fixed cycle, each with its id and its measurements,
//! deterministic by seed and part number (nothing is stepped: part `n`'s values are a function of
//! `n`), so that the quality stage has a process to judge.
//!
//! Each measurement is `nominal + drift_per_part × (parts since the last tool change) + noise`,
//! which is how tool wear moves a turned diameter: the mean creeps towards a spec limit and jumps
//! back at every `tool_change_every` parts. Now and then (`defect_rate`) a part carries a gross
//! defect of `defect_size` on one measurement.
//!
//! Points serve it with `signal = { gauge = "count" }`, `{ gauge = "part_id" }` or
//! `{ gauge = { measurement = 0 } }`. The registers show the last completed part, so one read of
//! a contiguous block sees a part's count, id and values together.

use std::time::Duration;

use firmware_config::HumanDuration;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaugeSimConfig {
    /// One part per cycle.
    #[serde(default = "default_cycle")]
    pub cycle: HumanDuration,
    /// The first part's id.
    #[serde(default = "default_first_id")]
    pub first_id: u64,
    #[serde(default)]
    pub measurements: Vec<MeasurementSim>,
    /// A camera writing one image per part (`part-<id>.png`) into a folder.
    pub camera: Option<CameraSim>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSim {
    /// Relative to the simulator's file.
    pub folder: std::path::PathBuf,
    /// The share of parts whose image shows a defect (a scratch, pits or a stain).
    #[serde(default = "default_defect_rate")]
    pub defect_rate: f64,
}

fn default_defect_rate() -> f64 {
    0.2
}

/// The side of a simulated camera image, in pixels (the example surface model's input).
pub const IMAGE_SIZE: u32 = 64;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementSim {
    pub nominal: f64,
    /// Standard deviation of part-to-part noise.
    #[serde(default)]
    pub sigma: f64,
    /// Tool wear: the mean moves this much per part…
    #[serde(default)]
    pub drift_per_part: f64,
    /// …until a tool change, every this many parts (0: never).
    #[serde(default)]
    pub tool_change_every: u64,
    /// The share of parts with a gross defect on this measurement.
    #[serde(default)]
    pub defect_rate: f64,
    #[serde(default)]
    pub defect_size: f64,
}

fn default_cycle() -> HumanDuration {
    HumanDuration::from_millis(1_000)
}
fn default_first_id() -> u64 {
    1_000
}

/// What a point of a simulated gauge serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GaugeOutput {
    /// Parts completed (a 16-bit counter rolls over at 65,536 by the register's width).
    Count,
    PartId,
    Measurement(usize),
}

pub struct GaugeSim {
    config: GaugeSimConfig,
    seed: u64,
}

impl GaugeSim {
    pub fn new(config: GaugeSimConfig, seed: u64) -> GaugeSim {
        GaugeSim { config, seed }
    }

    /// Parts completed by `elapsed`.
    pub fn parts(&self, elapsed: Duration) -> u64 {
        let cycle = self.config.cycle.get().as_nanos().max(1);
        (elapsed.as_nanos() / cycle) as u64
    }

    /// The value of `output` at `elapsed` (the last completed part's).
    pub fn value(&self, output: GaugeOutput, elapsed: Duration) -> f64 {
        let parts = self.parts(elapsed);
        match output {
            GaugeOutput::Count => (parts % 65_536) as f64,
            GaugeOutput::PartId => (self.config.first_id + parts) as f64,
            GaugeOutput::Measurement(m) => self.measurement(m, parts),
        }
    }

    /// Measurement `m` of part `n` (counted from 1; part 0 is the one before the first).
    pub fn measurement(&self, m: usize, n: u64) -> f64 {
        let Some(c) = self.config.measurements.get(m) else {
            return 0.0;
        };
        let mut rng = fastrand::Rng::with_seed(self.seed ^ n.rotate_left(17) ^ (m as u64) << 56);
        let worn = match c.tool_change_every {
            0 => n,
            every => n % every,
        };
        let noise = c.sigma * normal(&mut rng);
        let defect = if rng.f64() < c.defect_rate {
            c.defect_size
        } else {
            0.0
        };
        c.nominal + c.drift_per_part * worn as f64 + noise + defect
    }
}

impl GaugeSim {
    pub fn camera(&self) -> Option<&CameraSim> {
        self.config.camera.as_ref()
    }

    /// The id of part `n` (counted from 1).
    pub fn part_id(&self, n: u64) -> u64 {
        self.config.first_id + n
    }

    /// The defect part `n`'s image shows, if any: "scratch", "pits" or "stain".
    pub fn image_defect(&self, n: u64) -> Option<&'static str> {
        let camera = self.camera()?;
        let mut rng = fastrand::Rng::with_seed(self.seed ^ n.rotate_left(29) ^ 0x1a6e);
        (rng.f64() < camera.defect_rate).then(|| ["scratch", "pits", "stain"][rng.usize(..3)])
    }

    /// Part `n`'s camera image: a machined-metal texture and its defect, as the example surface
    /// model was trained on (models/train_images.py).
    pub fn image(&self, n: u64) -> image::GrayImage {
        let mut rng = fastrand::Rng::with_seed(self.seed ^ n.rotate_left(41));
        let size = IMAGE_SIZE as usize;
        let mut pixels = texture(size, &mut rng);
        if let Some(kind) = self.image_defect(n) {
            defect(&mut pixels, size, kind, &mut rng);
        }
        let bytes = pixels
            .iter()
            .map(|v| v.clamp(0.0, 255.0).round() as u8)
            .collect();
        image::GrayImage::from_raw(IMAGE_SIZE, IMAGE_SIZE, bytes).unwrap_or_default()
    }
}

fn uniform(rng: &mut fastrand::Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.f64()
}

fn texture(size: usize, rng: &mut fastrand::Rng) -> Vec<f64> {
    let (gx, gy) = (uniform(rng, -40.0, 40.0), uniform(rng, -30.0, 30.0));
    let waves: Vec<(f64, f64, f64)> = (0..3)
        .map(|_| {
            (
                uniform(rng, 0.5, 3.0),
                uniform(rng, 0.5, 3.0),
                uniform(rng, 0.0, std::f64::consts::TAU),
            )
        })
        .collect();
    let noise: Vec<f64> = (0..size * size).map(|_| normal(rng)).collect();
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f64 / size as f64, y as f64 / size as f64);
            let mut value = 120.0 + gx * u + gy * v;
            for (fx, fy, phase) in &waves {
                value += 8.0 * (std::f64::consts::TAU * (fx * u + fy * v) + phase).sin();
            }
            // Grain brushed along x.
            let grain = (0..3)
                .map(|k| noise[y * size + (x + size - k) % size])
                .sum::<f64>()
                / 3.0;
            out[y * size + x] = value + 10.0 * grain + 3.0 * normal(rng);
        }
    }
    out
}

fn defect(pixels: &mut [f64], size: usize, kind: &str, rng: &mut fastrand::Rng) {
    let s = size as f64;
    let sign = if rng.bool() { 1.0 } else { -1.0 };
    let each = |pixels: &mut [f64], f: &dyn Fn(f64, f64) -> f64| {
        for y in 0..size {
            for x in 0..size {
                pixels[y * size + x] += f(x as f64, y as f64);
            }
        }
    };
    match kind {
        "scratch" => {
            let (length, angle) = (
                uniform(rng, 15.0, 45.0),
                uniform(rng, 0.0, std::f64::consts::PI),
            );
            let (cx, cy, width) = (
                uniform(rng, 12.0, s - 12.0),
                uniform(rng, 12.0, s - 12.0),
                uniform(rng, 0.6, 1.2),
            );
            let depth = sign * uniform(rng, 35.0, 60.0);
            let (dx, dy) = (angle.cos(), angle.sin());
            each(pixels, &|x, y| {
                let along = (x - cx) * dx + (y - cy) * dy;
                let across = (-(x - cx) * dy + (y - cy) * dx).abs();
                if along.abs() < length / 2.0 && across < width {
                    depth
                } else {
                    0.0
                }
            });
        }
        "pits" => {
            for _ in 0..1 + rng.usize(..3) {
                let (cx, cy, r) = (
                    uniform(rng, 5.0, s - 5.0),
                    uniform(rng, 5.0, s - 5.0),
                    uniform(rng, 1.2, 2.8),
                );
                let depth = uniform(rng, 45.0, 70.0);
                each(pixels, &|x, y| {
                    if (x - cx).powi(2) + (y - cy).powi(2) < r * r {
                        -depth
                    } else {
                        0.0
                    }
                });
            }
        }
        _ => {
            let (cx, cy, r) = (
                uniform(rng, 15.0, s - 15.0),
                uniform(rng, 15.0, s - 15.0),
                uniform(rng, 7.0, 14.0),
            );
            let depth = sign * uniform(rng, 25.0, 40.0);
            each(pixels, &|x, y| {
                depth * (-((x - cx).powi(2) + (y - cy).powi(2)) / (2.0 * r * r)).exp()
            });
        }
    }
}

/// Writes each gauge's camera images as its parts complete, until `stop`: `part-<id>.png`,
/// written under a temporary name and renamed, as an FTP server finishing an upload does.
pub async fn cameras(
    plant: std::sync::Arc<super::Plant>,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut written: Vec<u64> = vec![0; plant.machines().len()];
    for camera in plant.machines().iter().filter_map(|m| m.gauge()?.camera()) {
        if let Err(error) = std::fs::create_dir_all(&camera.folder) {
            tracing::warn!(%error, folder = %camera.folder.display(), "simulated camera has no folder");
        }
    }
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = plant.elapsed();
        for (machine, done) in plant.machines().iter().zip(written.iter_mut()) {
            let Some((gauge, camera)) = machine.gauge().and_then(|g| Some((g, g.camera()?))) else {
                continue;
            };
            let parts = gauge.parts(elapsed);
            // At most the last ten parts: a simulator paused for long does not flood the folder.
            for n in (*done + 1).max(parts.saturating_sub(10))..=parts {
                let name = format!("part-{}.png", gauge.part_id(n));
                let temporary = camera.folder.join(format!(".{name}.tmp"));
                let saved = gauge
                    .image(n)
                    .save_with_format(&temporary, image::ImageFormat::Png)
                    .map_err(std::io::Error::other)
                    .and_then(|()| std::fs::rename(&temporary, camera.folder.join(&name)));
                if let Err(error) = saved {
                    tracing::warn!(%error, folder = %camera.folder.display(), "simulated camera cannot write");
                }
            }
            *done = parts;
        }
    }
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u = rng.f64().max(f64::MIN_POSITIVE);
    let v = rng.f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge(text: &str) -> GaugeSim {
        GaugeSim::new(toml::from_str(text).expect("config"), 7)
    }

    #[test]
    fn parts_come_at_the_cycle_with_their_id() {
        let g = gauge("cycle = \"500ms\"\nfirst_id = 10\n");
        assert_eq!(
            g.value(GaugeOutput::Count, Duration::from_millis(2_499)),
            4.0
        );
        assert_eq!(
            g.value(GaugeOutput::PartId, Duration::from_millis(2_500)),
            15.0
        );
    }

    #[test]
    fn tool_wear_drifts_the_mean_and_a_tool_change_resets_it() {
        let g = gauge(
            "[[measurements]]\nnominal = 25.0\nsigma = 0.001\ndrift_per_part = 0.0005\ntool_change_every = 100\n",
        );
        let mean = |from: u64| (from..from + 10).map(|n| g.measurement(0, n)).sum::<f64>() / 10.0;
        assert!((mean(0) - 25.00225).abs() < 0.002, "{}", mean(0));
        assert!((mean(90) - 25.04725).abs() < 0.002, "{}", mean(90));
        assert!(
            (mean(100) - 25.00225).abs() < 0.002,
            "back after the change"
        );
        assert_eq!(g.measurement(0, 42), g.measurement(0, 42), "deterministic");
    }
}
