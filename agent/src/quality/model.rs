//! A quality station's defect model: ONNX run by tract, described by a manifest beside it, whose
//! inputs are the station's characteristics and whose one output is the probability that the part
//! is defective. It catches what per-characteristic limits cannot: a combination of values each
//! inside its spec.
//!
//! A manifest (`gauge.onnx` → `gauge.toml`):
//!
//! ```toml
//! name = "gauge-defects"
//! version = "seed-11"
//! [[inputs]]                      # in the model's input order
//! characteristic = "bore"         # a characteristic of the station
//! unit = "mm"
//! mean = 25.0                     # the model sees (x - mean) / scale
//! scale = 0.01
//! [output]
//! name = "defect_probability"
//! ```
//!
//! Invariants: a model is accepted only when its input is `[batch, n]` with `n` the manifest's
//! input count, and every input names a characteristic of its station; a part with any input not
//! measured is scored by its spec limits alone (and goes to review for the missing value anyway).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use firmware_config::quality::Station;
use serde::Deserialize;

use crate::health::model::{load_onnx, ModelError, Runnable};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartManifest {
    pub name: String,
    pub version: String,
    pub inputs: Vec<PartInput>,
    pub output: crate::health::model::ManifestOutput,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartInput {
    pub characteristic: String,
    pub unit: Option<String>,
    pub mean: f64,
    pub scale: f64,
}

/// A loaded model, its inputs resolved to the station's characteristics.
pub struct PartModel {
    pub path: PathBuf,
    pub manifest: PartManifest,
    /// For each input, the characteristic's index in the station.
    columns: Vec<usize>,
    plan: Runnable,
}

impl std::fmt::Debug for PartModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartModel")
            .field("path", &self.path)
            .field("name", &self.manifest.name)
            .finish()
    }
}

impl PartModel {
    /// Loads `path` and its manifest and checks both against `station`.
    pub fn load(path: &Path, station: &Station) -> Result<PartModel, ModelError> {
        let (manifest, shown): (PartManifest, String) = crate::health::model::read_manifest(path)?;
        let content = |message: String| ModelError::ManifestContent {
            path: shown.clone(),
            message,
        };
        if manifest.inputs.is_empty() {
            return Err(content("no inputs".into()));
        }
        let mut columns = Vec::new();
        for input in &manifest.inputs {
            if !(input.scale.is_finite() && input.scale > 0.0 && input.mean.is_finite()) {
                return Err(content(format!(
                    "input {}: mean must be finite and scale above 0",
                    input.characteristic
                )));
            }
            let Some(column) = station
                .characteristics
                .iter()
                .position(|c| c.name == input.characteristic)
            else {
                let known: Vec<&str> = station
                    .characteristics
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect();
                return Err(content(format!(
                    "input {:?} is not a characteristic of station {:?} ({})",
                    input.characteristic,
                    station.name,
                    known.join(", ")
                )));
            };
            columns.push(column);
        }
        let plan = load_onnx(path, manifest.inputs.len()).map_err(|e| ModelError::Graph {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(PartModel {
            path: path.to_path_buf(),
            manifest,
            columns,
            plan,
        })
    }

    /// The normalised row for a part's values (by characteristic), or `None` when one is missing.
    pub fn row(&self, values: &[Option<f64>]) -> Option<Vec<f32>> {
        self.columns
            .iter()
            .zip(&self.manifest.inputs)
            .map(|(&c, input)| {
                let x = values.get(c).copied().flatten()?;
                Some(((x - input.mean) / input.scale) as f32)
            })
            .collect()
    }

    /// Defect probabilities of a batch of rows.
    pub fn predict(&self, rows: &[Vec<f32>]) -> Result<Vec<f64>, ModelError> {
        crate::health::model::run_rows(&self.plan, self.manifest.inputs.len(), rows)
    }

    /// The defect probability of one part's values; `None` when an input is not measured.
    pub fn score(&self, values: &[Option<f64>]) -> Option<Result<f64, ModelError>> {
        let row = self.row(values)?;
        Some(self.predict(&[row]).map(|p| p[0]))
    }
}

/// A station's models: over its characteristics, and over its camera images.
#[derive(Debug, Clone, Default)]
pub struct StationModels {
    pub part: Option<Arc<PartModel>>,
    pub image: Option<Arc<super::image::ImageModel>>,
}

/// Each station's models (by station index), loaded for a plan; every problem reported.
pub fn load_all(stations: &[Station]) -> Result<Vec<StationModels>, Vec<String>> {
    let mut errors = Vec::new();
    let models = stations
        .iter()
        .map(|s| {
            let mut failed = |what: &str, e: ModelError| {
                errors.push(format!("quality station {:?}: {what} {e}", s.name));
            };
            let part = s.model.as_ref().and_then(|path| {
                PartModel::load(path, s)
                    .map_err(|e| failed("model", e))
                    .ok()
            });
            let image = s.images.as_ref().and_then(|images| {
                super::image::ImageModel::load(&images.model)
                    .map_err(|e| failed("image model", e))
                    .ok()
            });
            StationModels {
                part: part.map(Arc::new),
                image: image.map(Arc::new),
            }
        })
        .collect();
    if errors.is_empty() {
        Ok(models)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::station::{Decision, Output, StationCore};
    use crate::sample::{Quality, Sample, TagId, Value};
    use std::time::{Duration, SystemTime};

    const GAUGE: &str = include_str!("../../tests/fixtures/quality-gauge.toml");

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/quality/gauge.onnx")
    }

    fn station() -> Station {
        firmware_config::load_str(Path::new("gauge.toml"), GAUGE)
            .expect("valid")
            .quality
            .remove(0)
    }

    #[test]
    fn tract_matches_the_training_pipelines_onnxruntime_outputs() {
        let model = PartModel::load(&shipped(), &station()).unwrap_or_else(|e| panic!("{e}"));
        let batch = crate::health::model::tests::assert_matches_onnxruntime(&shipped(), |rows| {
            model.predict(rows).expect("run")
        });
        assert!(batch.iter().any(|p| *p > 0.8) && batch.iter().any(|p| *p < 0.1));
    }

    #[test]
    fn a_manifest_input_that_is_not_a_characteristic_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("gauge.onnx");
        std::fs::copy(shipped(), &path).expect("copy");
        let manifest = std::fs::read_to_string(shipped().with_extension("toml"))
            .expect("manifest")
            .replace("characteristic = \"weight\"", "characteristic = \"mass\"");
        std::fs::write(path.with_extension("toml"), manifest).expect("write");
        let error = PartModel::load(&path, &station()).expect_err("refused");
        assert!(
            error.to_string().contains(
                "input \"mass\" is not a characteristic of station \"gauge-1\" (bore, weight)"
            ),
            "{error}"
        );
    }

    /// One part through a station core, with or without the model: its decision and types.
    fn judge(bore: f64, weight: f64, model: Option<Arc<PartModel>>) -> (Decision, Vec<String>) {
        let mut core = StationCore::new(station(), &[], SystemTime::UNIX_EPOCH).with_model(model);
        let sample = |tag: u32, value: f64| Sample {
            tag: TagId(tag),
            timestamp: SystemTime::UNIX_EPOCH,
            server_timestamp: None,
            value: Some(Value::F64(value)),
            quality: Quality::Good,
        };
        core.observe(&sample(0, 1.0), Duration::ZERO);
        core.observe(&sample(2, bore), Duration::from_secs(1));
        core.observe(&sample(3, weight), Duration::from_secs(1));
        core.observe(&sample(0, 2.0), Duration::from_secs(1));
        let mut out = Vec::new();
        core.step(Duration::from_secs(1), SystemTime::UNIX_EPOCH, &mut out);
        match out.into_iter().next() {
            Some(Output::Part(part)) => (part.decision, part.types),
            other => panic!("a part, not {other:?}"),
        }
    }

    #[test]
    fn the_model_rejects_a_void_that_every_spec_limit_passes() {
        let model = Arc::new(PartModel::load(&shipped(), &station()).expect("model"));
        // A void: bore 18 µm over nominal (score 0.8 × 0.018/0.05 = 0.29), 1.1 g light (score
        // 0.8 × 1.1/2 = 0.44): each in spec and below review.
        let (alone, _) = judge(25.018, 118.9, None);
        assert_eq!(alone, Decision::Pass, "the spec limits alone pass it");
        let (with_model, types) = judge(25.018, 118.9, Some(Arc::clone(&model)));
        assert_eq!(with_model, Decision::Reject, "{types:?}");
        assert!(types.contains(&"model_defect".to_string()), "{types:?}");
        // A good part stays good with the model.
        let (good, types) = judge(25.001, 120.1, Some(model));
        assert_eq!(good, Decision::Pass, "{types:?}");
    }
}
