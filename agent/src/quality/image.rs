//! Camera images scored by an ONNX image model: decode (PNG or JPEG, told by its content, not its
//! name), convert to the model's channels, resize to its input, normalise, run tract.
//!
//! A manifest beside the model (`surface.onnx` → `surface.toml`):
//!
//! ```toml
//! name = "surface-defects"
//! version = "seed-5"
//! kind = "image"
//! [input]
//! width = 64
//! height = 64
//! channels = 1            # 1: grayscale, 3: RGB
//! mean = [0.5]            # per channel: the model sees (pixel / 255 - mean) / std, NCHW
//! std = [0.25]
//! [output]
//! name = "defect_probability"
//! ```
//!
//! Invariants: a model is accepted only when its input is `[batch, channels, height, width]` as the
//! manifest says and it gives one probability per image; an image that cannot be decoded (corrupt,
//! half-written, not an image) or that is larger than [`MAX_PIXELS`] is an error for that image,
//! never a panic, and decoding allocates at most [`MAX_DECODE_BYTES`].

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tract_onnx::prelude::*;

use crate::health::model::{ManifestOutput, ModelError, Runnable};

/// The most pixels an image may have (a 24-megapixel camera fits).
pub const MAX_PIXELS: u64 = 6_000 * 4_000;

/// The most memory one decode may allocate.
pub const MAX_DECODE_BYTES: u64 = 128 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageManifest {
    pub name: String,
    pub version: String,
    /// Always "image": says which kind of manifest this is.
    pub kind: String,
    pub input: ImageInput,
    pub output: ManifestOutput,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Why an image was not scored.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a readable PNG or JPEG image: {0}")]
    Decode(String),
    #[error("{width}×{height} pixels is more than the {MAX_PIXELS} allowed")]
    TooLarge { width: u32, height: u32 },
    #[error("{0}")]
    Model(#[from] ModelError),
}

pub struct ImageModel {
    pub path: PathBuf,
    pub manifest: ImageManifest,
    plan: Runnable,
}

impl std::fmt::Debug for ImageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageModel")
            .field("path", &self.path)
            .field("name", &self.manifest.name)
            .finish()
    }
}

impl ImageModel {
    /// Loads `path` and its manifest and checks one against the other.
    pub fn load(path: &Path) -> Result<ImageModel, ModelError> {
        let (manifest, shown): (ImageManifest, String) = crate::health::model::read_manifest(path)?;
        let content = |message: String| ModelError::ManifestContent {
            path: shown.clone(),
            message,
        };
        let input = &manifest.input;
        if manifest.kind != "image" {
            return Err(content(format!(
                "kind is {:?}; an image model's manifest says kind = \"image\"",
                manifest.kind
            )));
        }
        if !matches!(input.channels, 1 | 3) {
            return Err(content(
                "input.channels must be 1 (grayscale) or 3 (RGB)".into(),
            ));
        }
        if !(1..=1024).contains(&input.width) || !(1..=1024).contains(&input.height) {
            return Err(content(
                "input.width and input.height must be 1 to 1024".into(),
            ));
        }
        let per_channel = input.channels as usize;
        if input.mean.len() != per_channel || input.std.len() != per_channel {
            return Err(content(format!(
                "input.mean and input.std need one value per channel ({per_channel})"
            )));
        }
        if input.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(content("input.std values must be above 0".into()));
        }
        let dims = [input.channels, input.height, input.width].map(|d| d as i64);
        let plan = load_image_onnx(path, dims).map_err(|e| ModelError::Graph {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(ImageModel {
            path: path.to_path_buf(),
            manifest,
            plan,
        })
    }

    /// The model's input for an encoded image: `[1, channels, height, width]`.
    pub fn tensor(&self, bytes: &[u8]) -> Result<Tensor, ImageError> {
        let input = &self.manifest.input;
        let image = decode(bytes)?;
        let (w, h) = (input.width, input.height);
        let resized = image.resize_exact(w, h, image::imageops::FilterType::Triangle);
        let pixels: Vec<u8> = match input.channels {
            1 => resized.to_luma8().into_raw(),
            _ => resized.to_rgb8().into_raw(),
        };
        let channels = input.channels as usize;
        let (w, h) = (w as usize, h as usize);
        let tensor = tract_ndarray::Array4::from_shape_fn((1, channels, h, w), |(_, c, y, x)| {
            let pixel = f32::from(pixels[(y * w + x) * channels + c]);
            (pixel / 255.0 - input.mean[c]) / input.std[c]
        });
        Ok(tensor.into())
    }

    /// The defect probability of one encoded image.
    pub fn score(&self, bytes: &[u8]) -> Result<f64, ImageError> {
        let tensor = self.tensor(bytes)?;
        let failed = |e: &dyn std::fmt::Display| ModelError::Inference(format!("{e:#}"));
        let outputs = self
            .plan
            .run(tvec!(tensor.into()))
            .map_err(|e| failed(&e))?;
        let values = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| failed(&e))?;
        let p = values
            .iter()
            .next()
            .ok_or_else(|| ModelError::Inference("the model gave no value".into()))?;
        Ok(f64::from(*p).clamp(0.0, 1.0))
    }
}

/// Decodes PNG or JPEG bytes within the size and memory limits.
fn decode(bytes: &[u8]) -> Result<image::DynamicImage, ImageError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    if !matches!(
        reader.format(),
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)
    ) {
        return Err(ImageError::Decode("neither PNG nor JPEG".into()));
    }
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| ImageError::Decode(e.to_string()))
}

/// Loads an ONNX graph whose one input is `[batch, c, h, w]` (f32) and whose one output is one
/// probability per image.
fn load_image_onnx(path: &Path, dims: [i64; 3]) -> TractResult<Runnable> {
    let model = crate::health::model::parse_onnx(path)?;
    let shape = crate::health::model::single_input_shape(&model)?;
    let batch_ok = |d: &TDim| d.to_i64().map_or(true, |n| n == 1);
    let fixed: Vec<Option<i64>> = shape.iter().skip(1).map(|d| d.to_i64().ok()).collect();
    let matches = shape.first().is_some_and(batch_ok)
        && fixed == dims.iter().map(|d| Some(*d)).collect::<Vec<_>>();
    if !matches {
        anyhow::bail!(
            "input shape is {shape:?} but the manifest says [batch, {}, {}, {}] (channels, height, width)",
            dims[0],
            dims[1],
            dims[2]
        );
    }
    crate::health::model::one_value_per_row(&model)?;
    crate::health::model::optimise(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/quality/surface.onnx")
    }

    fn check_dir() -> PathBuf {
        shipped().with_extension("check")
    }

    #[test]
    fn tract_scores_the_pipelines_png_images_as_onnxruntime_does() {
        let model = ImageModel::load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
        let expected: std::collections::BTreeMap<String, f64> = serde_json::from_str(
            &std::fs::read_to_string(check_dir().join("expected.json")).expect("expected"),
        )
        .expect("json");
        assert!(expected.len() >= 8);
        for (name, want) in &expected {
            let bytes = std::fs::read(check_dir().join(name)).expect("image");
            let got = model.score(&bytes).expect("scored");
            assert!(
                (got - want).abs() < 1e-4,
                "{name}: tract {got}, onnxruntime {want}"
            );
        }
    }

    #[test]
    fn a_jpeg_of_any_size_is_resized_and_scored() {
        let model = ImageModel::load(&shipped()).expect("model");
        let name = std::fs::read_dir(check_dir())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.starts_with("scratch"))
            .expect("a scratch image");
        let small = image::open(check_dir().join(&name)).expect("png");
        let big = small.resize_exact(640, 480, image::imageops::FilterType::Nearest);
        let mut jpeg = Vec::new();
        big.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .expect("encode");
        let p = model.score(&jpeg).expect("scored");
        assert!((0.0..=1.0).contains(&p));
    }

    #[test]
    fn a_corrupt_or_half_written_image_is_an_error_not_a_crash() {
        let model = ImageModel::load(&shipped()).expect("model");
        let name = "good-4.png";
        let path = std::fs::read_dir(check_dir())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "png"))
            .unwrap_or_else(|| check_dir().join(name));
        let bytes = std::fs::read(path).expect("image");
        for broken in [
            &bytes[..bytes.len() / 2],
            &bytes[..20],
            b"not an image at all".as_slice(),
            &[],
        ] {
            let error = model.score(broken).expect_err("refused");
            assert!(matches!(error, ImageError::Decode(_)), "{error}");
        }
    }

    #[test]
    fn a_manifest_that_does_not_match_the_model_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("surface.onnx");
        std::fs::copy(shipped(), &path).expect("copy");
        let manifest = std::fs::read_to_string(shipped().with_extension("toml"))
            .expect("manifest")
            .replace("width = 64", "width = 128");
        std::fs::write(path.with_extension("toml"), manifest).expect("write");
        let error = ImageModel::load(&path).expect_err("refused");
        assert!(error.to_string().contains("[batch, 1, 64, 128]"), "{error}");
    }
}
