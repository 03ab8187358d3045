//! ONNX failure-probability models run by tract, each described by a manifest beside it.
//!
//! A manifest (`default.onnx` → `default.toml`) names the model's inputs in order, each one a
//! feature from [`ModelFeature`]'s catalogue with its unit, the normalisation applied before the
//! model sees it (`(x - mean) / scale`) and, optionally, the value to use when an asset has no
//! signal for it. The single output is the probability of failure within the manifest's horizon.
//!
//! Invariants: a model is only accepted when its real input shape is `[batch, n]` with `n` the
//! manifest's input count (batch symbolic or 1) and its output has one value per row; an asset is
//! only scored by a model whose every input it can feed (or that says what to assume instead).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firmware_config::{Asset, Plan};
use serde::Deserialize;
use tract_onnx::prelude::*;

use super::assess::{Features, Observed};
use super::rules;

/// The features a model can ask for, computed from an asset's windows and nameplate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelFeature {
    /// Vibration RMS divided by the ISO 10816-3 C/D boundary of the asset's class.
    VibrationSeverity,
    /// Vibration trend per hour, divided by the C/D boundary.
    VibrationTrend,
    /// Bearing temperature divided by its alarm limit.
    BearingTemperatureRatio,
    /// Bearing temperature trend, K per hour.
    BearingTemperatureTrend,
    /// Winding temperature divided by the insulation class limit.
    WindingTemperatureRatio,
    /// Three-phase current unbalance (fraction).
    CurrentUnbalance,
    /// Largest phase current divided by the rated current.
    CurrentLoad,
    /// Pressure outside the operating range, as a fraction of the range width.
    PressureDeviation,
    /// Pressure standard deviation over mean.
    PressureFluctuation,
    /// Kurtosis of the latest acceleration waveform (3 for Gaussian vibration; impacts raise it).
    AccelerationKurtosis,
    /// Peak over RMS of the latest acceleration waveform.
    AccelerationCrestFactor,
    /// The strongest bearing defect line in the envelope spectrum, dB above its noise floor.
    BearingDefectDb,
}

impl ModelFeature {
    pub const ALL: [ModelFeature; 12] = [
        ModelFeature::VibrationSeverity,
        ModelFeature::VibrationTrend,
        ModelFeature::BearingTemperatureRatio,
        ModelFeature::BearingTemperatureTrend,
        ModelFeature::WindingTemperatureRatio,
        ModelFeature::CurrentUnbalance,
        ModelFeature::CurrentLoad,
        ModelFeature::PressureDeviation,
        ModelFeature::PressureFluctuation,
        ModelFeature::AccelerationKurtosis,
        ModelFeature::AccelerationCrestFactor,
        ModelFeature::BearingDefectDb,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelFeature::VibrationSeverity => "vibration_severity",
            ModelFeature::VibrationTrend => "vibration_trend",
            ModelFeature::BearingTemperatureRatio => "bearing_temperature_ratio",
            ModelFeature::BearingTemperatureTrend => "bearing_temperature_trend",
            ModelFeature::WindingTemperatureRatio => "winding_temperature_ratio",
            ModelFeature::CurrentUnbalance => "current_unbalance",
            ModelFeature::CurrentLoad => "current_load",
            ModelFeature::PressureDeviation => "pressure_deviation",
            ModelFeature::PressureFluctuation => "pressure_fluctuation",
            ModelFeature::AccelerationKurtosis => "acceleration_kurtosis",
            ModelFeature::AccelerationCrestFactor => "acceleration_crest_factor",
            ModelFeature::BearingDefectDb => "bearing_defect_db",
        }
    }

    /// The signal role (and nameplate entry) the feature needs, for error messages.
    fn needs(self) -> &'static str {
        match self {
            ModelFeature::VibrationSeverity | ModelFeature::VibrationTrend => {
                "signals.vibration with nameplate.iso_group and foundation"
            }
            ModelFeature::BearingTemperatureRatio | ModelFeature::BearingTemperatureTrend => {
                "signals.bearing_temperature"
            }
            ModelFeature::WindingTemperatureRatio => {
                "signals.winding_temperature with nameplate.insulation_class"
            }
            ModelFeature::CurrentUnbalance => "three signals.currents",
            ModelFeature::CurrentLoad => "signals.currents with nameplate.rated_current",
            ModelFeature::PressureDeviation | ModelFeature::PressureFluctuation => {
                "signals.pressure with nameplate.pressure_range"
            }
            ModelFeature::AccelerationKurtosis | ModelFeature::AccelerationCrestFactor => {
                "[assets.waveform]"
            }
            ModelFeature::BearingDefectDb => "[assets.waveform] with [[assets.bearings]]",
        }
    }

    /// Whether the asset's configuration can ever feed this feature.
    pub fn feedable(self, asset: &Asset) -> bool {
        let s = &asset.signals;
        let plate = &asset.nameplate;
        match self {
            ModelFeature::VibrationSeverity | ModelFeature::VibrationTrend => {
                s.vibration.is_some() && plate.vibration_class.is_some()
            }
            ModelFeature::BearingTemperatureRatio | ModelFeature::BearingTemperatureTrend => {
                s.bearing_temperature.is_some()
            }
            ModelFeature::WindingTemperatureRatio => {
                s.winding_temperature.is_some() && plate.insulation_class.is_some()
            }
            ModelFeature::CurrentUnbalance => s.currents.len() == 3,
            ModelFeature::CurrentLoad => !s.currents.is_empty() && plate.rated_current.is_some(),
            ModelFeature::PressureDeviation | ModelFeature::PressureFluctuation => {
                s.pressure.is_some() && plate.pressure_range.is_some()
            }
            ModelFeature::AccelerationKurtosis | ModelFeature::AccelerationCrestFactor => {
                asset.waveform.is_some()
            }
            ModelFeature::BearingDefectDb => asset.waveform.is_some() && !asset.bearings.is_empty(),
        }
    }

    /// The feature's value now, or `None` without fresh data.
    pub fn value(self, asset: &Asset, observed: &Observed) -> Option<f64> {
        let plate = &asset.nameplate;
        let cd_boundary = || {
            plate
                .vibration_class
                .map(|(group, foundation)| rules::iso_10816_3_boundaries(group, foundation)[2])
        };
        match self {
            ModelFeature::VibrationSeverity => Some(observed.vibration? / cd_boundary()?),
            ModelFeature::VibrationTrend => Some(observed.vibration_per_hour? / cd_boundary()?),
            ModelFeature::BearingTemperatureRatio => {
                Some(observed.bearing_temperature? / plate.bearing_temperature_limit)
            }
            ModelFeature::BearingTemperatureTrend => observed.bearing_rise_per_hour,
            ModelFeature::WindingTemperatureRatio => {
                Some(observed.winding_temperature? / plate.insulation_class?.limit_celsius())
            }
            ModelFeature::CurrentUnbalance => {
                if observed.currents.len() == 3 {
                    super::features::current_unbalance(&observed.currents)
                } else {
                    None
                }
            }
            ModelFeature::CurrentLoad => {
                let largest = observed.currents.iter().copied().reduce(f64::max)?;
                Some(largest / plate.rated_current?)
            }
            ModelFeature::PressureDeviation => {
                let (low, high) = plate.pressure_range?;
                Some(super::features::range_deviation(
                    observed.pressure_mean?,
                    low,
                    high,
                ))
            }
            ModelFeature::PressureFluctuation => observed.pressure_fluctuation,
            ModelFeature::AccelerationKurtosis => Some(observed.waveform.as_ref()?.kurtosis),
            ModelFeature::AccelerationCrestFactor => Some(observed.waveform.as_ref()?.crest_factor),
            ModelFeature::BearingDefectDb => observed.waveform.as_ref()?.bearing_defect_db(),
        }
    }
}

impl Features {
    /// Every model feature of `asset` as `observed` shows it now.
    pub fn of(asset: &Asset, observed: &Observed) -> Features {
        let value = |feature: ModelFeature| feature.value(asset, observed);
        Features {
            vibration_severity: value(ModelFeature::VibrationSeverity),
            vibration_trend: value(ModelFeature::VibrationTrend),
            bearing_temperature_ratio: value(ModelFeature::BearingTemperatureRatio),
            bearing_temperature_trend: value(ModelFeature::BearingTemperatureTrend),
            winding_temperature_ratio: value(ModelFeature::WindingTemperatureRatio),
            current_unbalance: value(ModelFeature::CurrentUnbalance),
            current_load: value(ModelFeature::CurrentLoad),
            pressure_deviation: value(ModelFeature::PressureDeviation),
            pressure_fluctuation: value(ModelFeature::PressureFluctuation),
        }
    }
}

/// The manifest beside a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// What the probability means: failure within this horizon, e.g. "48h".
    pub horizon: String,
    pub inputs: Vec<ManifestInput>,
    pub output: ManifestOutput,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestInput {
    pub feature: ModelFeature,
    pub unit: String,
    pub mean: f64,
    pub scale: f64,
    /// Used when the asset has no signal for this feature (typically its healthy median).
    pub missing: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestOutput {
    pub name: String,
}

pub(crate) type Runnable = Arc<TypedRunnableModel>;

/// A loaded, verified model.
pub struct Model {
    pub path: PathBuf,
    pub manifest: Manifest,
    plan: Runnable,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.path)
            .field("name", &self.manifest.name)
            .finish()
    }
}

/// Why a model cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read the model's manifest: {source}")]
    Manifest {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    ManifestContent { path: String, message: String },
    #[error("{path}: input {feature} has scale {scale}; it must be positive")]
    Scale {
        path: String,
        feature: &'static str,
        scale: f64,
    },
    /// tract's own words on the graph (loading, typing, or its shape against the manifest).
    #[error("{path}: {message}")]
    Graph { path: String, message: String },
    /// A run that failed (tract's words) or gave a wrong number of values.
    #[error("{0}")]
    Inference(String),
}

impl Model {
    /// Loads `path` and its manifest (`path` with `.toml`), and checks one against the other.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let (manifest, shown): (Manifest, String) = read_manifest(path)?;
        let content = |message: String| ModelError::ManifestContent {
            path: shown.clone(),
            message,
        };
        if manifest.inputs.is_empty() {
            return Err(content("no inputs".into()));
        }
        if let Some(bad) = manifest
            .inputs
            .iter()
            .find(|i| i.scale.is_nan() || i.scale <= 0.0)
        {
            return Err(ModelError::Scale {
                path: shown,
                feature: bad.feature.name(),
                scale: bad.scale,
            });
        }
        let plan = load_onnx(path, manifest.inputs.len()).map_err(|e| ModelError::Graph {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(Model {
            path: path.to_path_buf(),
            manifest,
            plan,
        })
    }

    /// Why `asset` cannot be scored by this model (empty: it can).
    pub fn cannot_feed(&self, asset: &Asset) -> Vec<String> {
        self.manifest
            .inputs
            .iter()
            .filter(|i| i.missing.is_none() && !i.feature.feedable(asset))
            .map(|i| {
                format!(
                    "model {} input {} needs {}, which the asset does not have",
                    self.path.display(),
                    i.feature.name(),
                    i.feature.needs()
                )
            })
            .collect()
    }

    /// The normalised input row for `asset`, or `None` when a required feature has no data now.
    pub fn row(&self, asset: &Asset, observed: &Observed) -> Option<Vec<f32>> {
        self.manifest
            .inputs
            .iter()
            .map(|input| {
                let raw = input.feature.value(asset, observed).or(input.missing)?;
                Some(((raw - input.mean) / input.scale) as f32)
            })
            .collect()
    }

    /// Failure probabilities for a batch of rows (one run for the whole batch).
    pub fn predict(&self, rows: &[Vec<f32>]) -> Result<Vec<f64>, ModelError> {
        run_rows(&self.plan, self.manifest.inputs.len(), rows)
    }
}

/// Reads the manifest beside a model (`model.onnx` → `model.toml`); with the manifest's path as
/// shown in errors.
pub(crate) fn read_manifest<T: serde::de::DeserializeOwned>(
    model: &Path,
) -> Result<(T, String), ModelError> {
    let path = model.with_extension("toml");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Manifest {
        path: shown.clone(),
        source,
    })?;
    let manifest = toml::from_str(&text).map_err(|e| ModelError::ManifestContent {
        path: shown.clone(),
        message: e.message().to_string(),
    })?;
    Ok((manifest, shown))
}

/// Runs `plan` on rows of `width` values: one probability per row, clamped to 0..1.
pub(crate) fn run_rows(
    plan: &Runnable,
    width: usize,
    rows: &[Vec<f32>],
) -> Result<Vec<f64>, ModelError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let failed = |e: &dyn std::fmt::Display| ModelError::Inference(format!("{e:#}"));
    let input =
        tract_ndarray::Array2::from_shape_vec((rows.len(), width), flat).map_err(|e| failed(&e))?;
    let outputs = plan
        .run(tvec!(Tensor::from(input).into()))
        .map_err(|e| failed(&e))?;
    let values = outputs[0]
        .to_plain_array_view::<f32>()
        .map_err(|e| failed(&e))?;
    if values.len() != rows.len() {
        return Err(ModelError::Inference(format!(
            "model returned {} values for {} rows",
            values.len(),
            rows.len()
        )));
    }
    Ok(values
        .iter()
        .map(|&p| f64::from(p).clamp(0.0, 1.0))
        .collect())
}

/// Loads an ONNX graph whose one input is `[batch, inputs]` (f32) and whose one output is one
/// probability per row, and optimises it.
pub(crate) fn load_onnx(path: &Path, inputs: usize) -> TractResult<Runnable> {
    let model = parse_onnx(path)?;
    let dims = single_input_shape(&model)?;
    let batch_ok = |d: &TDim| d.to_i64().map_or(true, |n| n == 1);
    match dims.as_slice() {
        [batch, features] if batch_ok(batch) && features.to_i64().ok() == Some(inputs as i64) => {}
        _ => anyhow::bail!(
            "input shape is {dims:?} but the manifest lists {inputs} inputs: expected [batch, {inputs}]"
        ),
    }
    one_value_per_row(&model)?;
    optimise(model)
}

/// Reads an ONNX file into a typed graph. Parsing, typing and optimising each run a few MiB of
/// tract's code that nothing runs afterwards: released after each, the start-up peak holds one
/// phase's code pages at a time (see `memory`).
pub(crate) fn parse_onnx(path: &Path) -> TractResult<TypedModel> {
    let inference = tract_onnx::onnx().model_for_path(path)?;
    crate::memory::release_startup_memory();
    let typed = inference.into_typed()?;
    crate::memory::release_startup_memory();
    Ok(typed)
}

/// Optimises a checked graph for running (see [`parse_onnx`]).
pub(crate) fn optimise(model: TypedModel) -> TractResult<Runnable> {
    let runnable = model.into_optimized()?.into_runnable();
    crate::memory::release_startup_memory();
    runnable
}

/// The shape of a graph that has one f32 input and one output.
pub(crate) fn single_input_shape(model: &TypedModel) -> TractResult<Vec<TDim>> {
    if model.inputs.len() != 1 || model.outputs.len() != 1 {
        anyhow::bail!(
            "has {} inputs and {} outputs; millwright expects one input and one output",
            model.inputs.len(),
            model.outputs.len()
        );
    }
    let input = model.input_fact(0)?;
    if input.datum_type != f32::datum_type() {
        anyhow::bail!("input type is {:?}, expected f32", input.datum_type);
    }
    Ok(input.shape.iter().cloned().collect())
}

/// Checks that the graph's output is one probability per row: `[batch]` or `[batch, 1]`.
pub(crate) fn one_value_per_row(model: &TypedModel) -> TractResult<()> {
    let output = model.output_fact(0)?;
    let dims: Vec<TDim> = output.shape.iter().cloned().collect();
    let one_per_row = match dims.as_slice() {
        [_] => true,
        [_, last] => last.to_i64().ok() == Some(1),
        _ => false,
    };
    if !one_per_row {
        anyhow::bail!(
            "output shape is {:?}: expected one probability per row ([batch] or [batch, 1])",
            output.shape
        );
    }
    Ok(())
}

/// The models a plan uses: one per asset type, with `default` for the rest.
#[derive(Debug, Default, Clone)]
pub struct Models {
    by_type: HashMap<String, Arc<Model>>,
    default: Option<Arc<Model>>,
}

impl Models {
    /// Loads every configured model and checks that each asset can feed its model. Every problem
    /// is reported, not just the first.
    pub fn load(plan: &Plan) -> Result<Models, Vec<String>> {
        let mut errors = Vec::new();
        let mut models = Models::default();
        for (kind, path) in &plan.scoring.models {
            match Model::load(path) {
                Ok(model) => {
                    let model = Arc::new(model);
                    if kind == "default" {
                        models.default = Some(model);
                    } else {
                        models.by_type.insert(kind.clone(), model);
                    }
                }
                Err(e) => errors.push(format!("scoring.models.{kind}: {e}")),
            }
        }
        for asset in &plan.assets {
            if let Some(model) = models.for_type(&asset.kind) {
                errors.extend(
                    model
                        .cannot_feed(asset)
                        .into_iter()
                        .map(|e| format!("asset {:?}: {e}", asset.id)),
                );
            }
        }
        if errors.is_empty() {
            Ok(models)
        } else {
            Err(errors)
        }
    }

    pub fn for_type(&self, kind: &str) -> Option<&Arc<Model>> {
        self.by_type.get(kind).or(self.default.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty() && self.default.is_none()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx")
    }

    /// A copy of the shipped model with `manifest` beside it.
    fn with_manifest(manifest: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.onnx");
        std::fs::copy(shipped(), &path).expect("copy model");
        std::fs::write(path.with_extension("toml"), manifest).expect("manifest");
        (dir, path)
    }

    fn manifest_with_inputs(n: usize, missing: bool) -> String {
        let mut text = String::from("name = \"t\"\nversion = \"1\"\nhorizon = \"48h\"\n");
        for feature in ModelFeature::ALL.iter().cycle().take(n) {
            text.push_str(&format!(
                "[[inputs]]\nfeature = \"{}\"\nunit = \"x\"\nmean = 0.0\nscale = 1.0\n{}",
                feature.name(),
                if missing { "missing = 0.0\n" } else { "" }
            ));
        }
        text + "[output]\nname = \"failure_probability\"\n"
    }

    /// A training pipeline's check file (`<model>.check.json`): normalised input rows and
    /// onnxruntime's outputs for them.
    pub(crate) fn check_file(model: &Path) -> (Vec<Vec<f32>>, Vec<f64>) {
        let check: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(model.with_extension("check.json")).expect("check"),
        )
        .expect("json");
        let numbers = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .expect("array")
                .iter()
                .map(|x| x.as_f64().expect("number"))
                .collect()
        };
        let rows = check["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|row| numbers(row).into_iter().map(|x| x as f32).collect())
            .collect();
        (rows, numbers(&check["outputs"]))
    }

    /// Asserts that `predict` (tract) gives onnxruntime's outputs for the check file's rows.
    pub(crate) fn assert_matches_onnxruntime(
        model: &Path,
        predict: impl Fn(&[Vec<f32>]) -> Vec<f64>,
    ) -> Vec<f64> {
        let (rows, expected) = check_file(model);
        assert!(rows.len() >= 20);
        let batch = predict(&rows);
        for (i, (got, want)) in batch.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() < 1e-5,
                "row {i}: tract {got}, onnxruntime {want}"
            );
        }
        // One row at a time gives the same as the batch.
        let single = predict(&rows[..1]);
        assert!((single[0] - batch[0]).abs() < 1e-6);
        batch
    }

    #[test]
    fn tract_matches_the_training_pipelines_onnxruntime_outputs() {
        let model = Model::load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
        let batch =
            assert_matches_onnxruntime(&shipped(), |rows| model.predict(rows).expect("run"));
        assert!(batch.iter().any(|p| *p > 0.5) && batch.iter().any(|p| *p < 0.1));
    }

    #[test]
    fn a_manifest_that_does_not_match_the_model_is_refused_clearly() {
        let (_dir, path) = with_manifest(&manifest_with_inputs(8, true));
        let error = Model::load(&path)
            .expect_err("8 inputs for a 9-input model")
            .to_string();
        assert!(
            error.contains("manifest lists 8 inputs: expected [batch, 8]"),
            "{error}"
        );
        let (_dir, path) = with_manifest("name = \"t\"\n");
        let error = Model::load(&path)
            .expect_err("incomplete manifest")
            .to_string();
        assert!(
            error.contains("m.toml") && error.contains("missing field"),
            "{error}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let lonely = dir.path().join("lonely.onnx");
        std::fs::copy(shipped(), &lonely).expect("copy");
        let error = Model::load(&lonely).expect_err("no manifest").to_string();
        assert!(
            error.contains("cannot read the model's manifest"),
            "{error}"
        );
        let (_dir, path) =
            with_manifest(&manifest_with_inputs(9, true).replace("scale = 1.0", "scale = 0.0"));
        assert!(Model::load(&path)
            .expect_err("scale 0")
            .to_string()
            .contains("must be positive"));
    }

    /// A motor with `signals`, an empty nameplate, no waveform.
    fn bare_motor(signals: firmware_config::Signals) -> Asset {
        Asset {
            id: "M-1".into(),
            kind: "motor".into(),
            signals,
            nameplate: firmware_config::Nameplate {
                vibration_class: None,
                insulation_class: None,
                rated_current: None,
                pressure_range: None,
                bearing_temperature_limit: 95.0,
            },
            waveform: None,
            bearings: Vec::new(),
        }
    }

    #[test]
    fn an_asset_that_cannot_feed_a_required_input_is_named() {
        let (_dir, path) = with_manifest(&manifest_with_inputs(9, false));
        let model = Model::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let asset = bare_motor(firmware_config::Signals {
            bearing_temperature: Some(0),
            ..Default::default()
        });
        let problems = model.cannot_feed(&asset);
        assert_eq!(problems.len(), 7, "{problems:#?}");
        assert!(problems[0].contains("input vibration_severity needs signals.vibration"));
        // The shipped manifest says what to assume for every input, so any asset can use it.
        let shipped = Model::load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
        assert!(shipped.cannot_feed(&asset).is_empty());
    }

    #[test]
    fn waveform_features_come_from_the_latest_waveform_report() {
        use crate::vibration::dsp::Analyzer;
        use crate::vibration::synth::{Fault, Machine};
        let machine = Machine::motor(Fault::OuterRace, 2);
        let (waveform, bearings) = machine.settings();
        let report = crate::vibration::analyze(
            &mut Analyzer::new(),
            &machine.waveform(),
            &waveform,
            &bearings,
            Some(machine.shaft_hz),
            None,
        )
        .expect("analysis")
        .report;
        let mut asset = Asset {
            waveform: Some(waveform),
            ..bare_motor(firmware_config::Signals::default())
        };
        assert!(ModelFeature::AccelerationKurtosis.feedable(&asset));
        assert!(
            !ModelFeature::BearingDefectDb.feedable(&asset),
            "no bearings"
        );
        asset.bearings = bearings;
        let observed = Observed {
            waveform: Some(Arc::new(report.clone())),
            ..Observed::default()
        };
        let db = ModelFeature::BearingDefectDb.value(&asset, &observed);
        assert!(db.is_some_and(|db| db > 15.0), "{db:?}");
        assert_eq!(
            ModelFeature::AccelerationKurtosis.value(&asset, &observed),
            Some(report.kurtosis)
        );
        assert!(
            report.kurtosis > 3.5,
            "impacts raise the kurtosis: {}",
            report.kurtosis
        );
        assert_eq!(
            ModelFeature::AccelerationCrestFactor.value(&asset, &Observed::default()),
            None
        );
    }
}
