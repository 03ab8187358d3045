//! The scoring stage: routes good samples of mapped tags into each asset's windows and assesses
//! every asset at `scoring.assess_interval`.
//!
//! Invariants:
//! - Only good samples enter a window; a signal whose newest point is older than
//!   [`Scorer::stale_after`] is left out of the assessment rather than judged on old data.
//! - Windows and trend buffers are fixed-capacity (see `window` and `assess`); the scorer's memory
//!   is set when it is built and does not grow with uptime. Waveform assets add one buffer of
//!   `max_samples` each and the analyzer's buffers, sized by the longest waveform received.
//! - A waveform is analysed once, in the assessment round after it arrived (on the blocking pool);
//!   its report counts as fresh for as long as a window's newest point would.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use firmware_config::{Asset, Plan, Scoring, ShaftSpeed, WaveformSource};
use humantime::format_rfc3339_millis;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::assess::{self, Assessment, AssetState, Evidence, Features, Observed};
use super::features::{self, Point};
use super::model::{Model, Models};
use super::window::Window;
use crate::bus::Subscriber;
use crate::clock::Clock;
use crate::sample::{Sample, Value};
use crate::vibration::{
    self, dsp::Analyzer, Recorded, Rejected, SpectrumBook, VibrationReport, WaveformSlot,
};

/// The signal slots an asset's windows hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Vibration,
    BearingTemperature,
    WindingTemperature,
    AmbientTemperature,
    Current(u8),
    Pressure,
    /// The shaft speed for the waveform analysis (`signals.speed`).
    Speed,
    /// The waveforms' sample rate (`waveform.sample_rate_tag`).
    SampleRate,
}

struct AssetRuntime {
    asset: Asset,
    windows: Vec<(Slot, Window)>,
    state: AssetState,
    waveform: Option<WaveformRuntime>,
}

struct WaveformRuntime {
    slot: WaveformSlot,
    /// The latest analysis and when (scorer time) its waveform arrived.
    latest: Option<(f64, Arc<VibrationReport>)>,
    arrived: f64,
}

type Batch = (Arc<Model>, Vec<usize>, Vec<Vec<f32>>);

/// The longest round that may run on the async worker: the polls and the other stages wait for it.
const INLINE_ROUND: Duration = Duration::from_micros(500);

pub struct Scorer {
    assets: Vec<AssetRuntime>,
    models: Models,
    /// For each tag id: the (asset, window) pairs it feeds.
    routes: Vec<Vec<(usize, usize)>>,
    scoring: Scoring,
    scratch: Vec<Point>,
    /// For each waveform tag: the assets it feeds.
    waveform_routes: Vec<(u32, usize)>,
    analyzer: Analyzer,
    spectra: SpectrumBook,
}

impl Scorer {
    /// `models` as loaded (and checked against the plan) by [`Models::load`].
    pub fn new(plan: &Plan, models: Models) -> Scorer {
        let mut routes = vec![Vec::new(); plan.tag_count()];
        let assets = plan
            .assets
            .iter()
            .enumerate()
            .map(|(a, asset)| {
                let s = &asset.signals;
                let mut slots: Vec<(Slot, u32)> = [
                    (Slot::Vibration, s.vibration),
                    (Slot::BearingTemperature, s.bearing_temperature),
                    (Slot::WindingTemperature, s.winding_temperature),
                    (Slot::AmbientTemperature, s.ambient_temperature),
                    (Slot::Pressure, s.pressure),
                    (Slot::Speed, speed_tag(asset)),
                    (
                        Slot::SampleRate,
                        asset.waveform.as_ref().and_then(|w| w.sample_rate_tag),
                    ),
                ]
                .into_iter()
                .filter_map(|(slot, tag)| tag.map(|t| (slot, t)))
                .collect();
                slots.extend(
                    s.currents
                        .iter()
                        .enumerate()
                        .map(|(i, &t)| (Slot::Current(i as u8), t)),
                );
                let windows = slots
                    .iter()
                    .enumerate()
                    .map(|(w, &(slot, tag))| {
                        if let Some(route) = routes.get_mut(tag as usize) {
                            route.push((a, w));
                        }
                        (slot, Window::new(plan.scoring.window))
                    })
                    .collect();
                AssetRuntime {
                    asset: asset.clone(),
                    windows,
                    state: AssetState::default(),
                    waveform: asset.waveform.as_ref().map(|w| WaveformRuntime {
                        slot: WaveformSlot::new(w.max_samples, w.top_hz()),
                        latest: None,
                        arrived: 0.0,
                    }),
                }
            })
            .collect();
        let waveform_routes = plan
            .assets
            .iter()
            .enumerate()
            .filter_map(|(a, asset)| match asset.waveform.as_ref()?.source {
                WaveformSource::Tag(tag) => Some((tag, a)),
                WaveformSource::Folder { .. } | WaveformSource::Iio(_) => None,
            })
            .collect();
        Scorer {
            assets,
            models,
            routes,
            scoring: plan.scoring.clone(),
            scratch: Vec::with_capacity(firmware_config::MAX_WINDOW),
            waveform_routes,
            analyzer: Analyzer::new(),
            spectra: SpectrumBook::default(),
        }
    }

    /// Where the latest spectra of every waveform asset can be read while the scorer runs.
    pub fn spectra(&self) -> SpectrumBook {
        self.spectra.clone()
    }

    pub fn asset_count(&self) -> usize {
        self.assets.len()
    }

    /// How old a signal's newest point may be and still count.
    pub fn stale_after(&self) -> Duration {
        (self.scoring.assess_interval * 6).max(Duration::from_secs(300))
    }

    /// Feeds one sample; `t` is seconds on the scorer's monotonic time line.
    pub fn observe(&mut self, sample: &Sample, t: f64) {
        if let Some(array @ Value::Array(_)) = sample.value.as_ref() {
            if sample.quality.is_good() {
                self.take_waveform(sample.tag.0, array, t);
            }
            return;
        }
        // Most samples feed no asset (3 of 1,000 registers at the reference load): the route is
        // looked up before the value is, so that they cost an index and a length.
        let routes = match self.routes.get(sample.tag.0 as usize) {
            Some(routes) if !routes.is_empty() => routes,
            _ => return,
        };
        let Some(value) = sample
            .value
            .as_ref()
            .filter(|_| sample.quality.is_good())
            .and_then(|v| v.as_f64())
            .filter(|v| v.is_finite())
        else {
            return;
        };
        for &(a, w) in routes {
            self.assets[a].windows[w].1.push(Point { t, value });
        }
    }

    fn take_waveform(&mut self, tag: u32, array: &Value, t: f64) {
        for &(route_tag, a) in &self.waveform_routes {
            let runtime = &mut self.assets[a];
            let (Some(w), Some(settings)) = (&mut runtime.waveform, &runtime.asset.waveform) else {
                continue;
            };
            if route_tag != tag {
                continue;
            }
            let outcome = match settings.sample_rate_tag {
                None => w.slot.accept(array, settings.to_m_s2, None),
                Some(_) => match latest(&runtime.windows, Slot::SampleRate) {
                    Some(rate) => w.slot.accept(array, settings.to_m_s2, Some(rate)),
                    None => {
                        w.slot.count_rejected();
                        Err(Rejected::NoSampleRate)
                    }
                },
            };
            match outcome {
                Ok(()) => w.arrived = t,
                // The first, then every hundredth: a misconfigured sensor sends one per second.
                Err(error) if w.slot.rejected % 100 == 1 => {
                    warn!(asset = %runtime.asset.id, %error, rejected = w.slot.rejected, "waveform rejected");
                }
                Err(_) => {}
            }
        }
    }

    /// Takes a recording from the asset's folder (`Err`: the file could not be read as one).
    pub fn take_recording(&mut self, recorded: Recorded, t: f64) {
        let Some(runtime) = self.assets.get_mut(recorded.asset) else {
            return;
        };
        let (Some(w), Some(settings)) = (&mut runtime.waveform, &runtime.asset.waveform) else {
            return;
        };
        let outcome = recorded.recording.and_then(|r| {
            w.slot
                .accept_samples(&r.samples, settings.to_m_s2, r.sample_rate)
                .map_err(|e| e.to_string())
        });
        match outcome {
            Ok(()) => w.arrived = t,
            Err(error) => {
                w.slot.count_rejected();
                warn!(asset = %runtime.asset.id, file = %recorded.file.display(), %error, rejected = w.slot.rejected, "recording rejected");
            }
        }
    }

    /// Analyses each waveform that arrived since the last round, keeping its report for the
    /// assessment and its spectra for `millwright spectrum`.
    fn analyze_waveforms(&mut self, timestamp: SystemTime) {
        for runtime in &mut self.assets {
            let (Some(w), Some(settings)) = (&mut runtime.waveform, &runtime.asset.waveform) else {
                continue;
            };
            let shaft_hz = match settings.shaft {
                Some(ShaftSpeed::Fixed { hz }) => Some(hz),
                Some(ShaftSpeed::Tag { per_minute, .. }) => latest(&runtime.windows, Slot::Speed)
                    .map(|v| if per_minute { v / 60.0 } else { v }),
                None => None,
            };
            let Some((samples, rate)) = w.slot.take_fresh() else {
                continue;
            };
            let class = runtime.asset.nameplate.vibration_class;
            let bearings = &runtime.asset.bearings;
            // A recording's own sample rate (a WAV file's) wins over the configured one.
            let own_rate;
            let settings = match rate {
                Some(rate) if rate != settings.sample_rate => {
                    own_rate = firmware_config::Waveform {
                        sample_rate: rate,
                        ..settings.clone()
                    };
                    &own_rate
                }
                _ => settings,
            };
            let analysis = vibration::analyze(
                &mut self.analyzer,
                samples,
                settings,
                bearings,
                shaft_hz,
                class,
            );
            if let Some(mut analysis) = analysis {
                analysis.report.waveforms_rejected = w.slot.rejected;
                w.latest = Some((w.arrived, Arc::new(analysis.report.clone())));
                self.spectra.record(
                    &runtime.asset.id,
                    format_rfc3339_millis(timestamp).to_string(),
                    analysis,
                );
            }
        }
    }

    /// The index of the asset with `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.assets.iter().position(|a| a.asset.id == id)
    }

    pub fn asset(&self, index: usize) -> &Asset {
        &self.assets[index].asset
    }

    /// What each asset's fresh data shows at `t` (assets without fresh data are left out).
    pub fn observations(&mut self, t: f64) -> Vec<(usize, Observed)> {
        let horizon = t - self.stale_after().as_secs_f64();
        let scratch = &mut self.scratch;
        self.assets
            .iter_mut()
            .enumerate()
            .map(|(i, runtime)| (i, observe(runtime, horizon, scratch)))
            .filter(|(_, observed)| !observed.is_empty())
            .collect()
    }

    /// Whether no asset takes waveforms, whose analysis costs milliseconds a round. Such a
    /// scorer's rounds may run on the async worker when they prove short ([`INLINE_ROUND`]): a
    /// round of one asset is about 10 µs, and handing it to the blocking pool cost more than the
    /// round itself (two threads woken and switched each round).
    pub fn light(&self) -> bool {
        self.assets.iter().all(|a| a.waveform.is_none())
    }

    /// Assesses every asset with enough data. Each model runs once for all its assets (a batch).
    /// A model that fails is logged and its assets are judged by the rules alone.
    pub fn assess_all(&mut self, t: f64, timestamp: SystemTime) -> Vec<Assessment> {
        self.analyze_waveforms(timestamp);
        let observations = self.observations(t);
        let mut probabilities: Vec<Option<f64>> = vec![None; observations.len()];
        // Per model: which observations it scores, and their input rows.
        let mut batches: Vec<Batch> = Vec::new();
        for (k, (i, observed)) in observations.iter().enumerate() {
            let asset = &self.assets[*i].asset;
            let Some(model) = self.models.for_type(&asset.kind) else {
                continue;
            };
            let Some(row) = model.row(asset, observed) else {
                continue;
            };
            match batches.iter_mut().find(|(m, _, _)| Arc::ptr_eq(m, model)) {
                Some((_, slots, rows)) => {
                    slots.push(k);
                    rows.push(row);
                }
                None => batches.push((Arc::clone(model), vec![k], vec![row])),
            }
        }
        for (model, slots, rows) in batches {
            match model.predict(&rows) {
                Ok(values) => {
                    for (k, p) in slots.into_iter().zip(values) {
                        probabilities[k] = Some(p);
                    }
                }
                Err(error) => {
                    warn!(model = %model.path.display(), %error, "model failed; rules only this round");
                }
            }
        }
        let mut out = Vec::with_capacity(observations.len());
        for ((i, observed), model_probability) in observations.into_iter().zip(probabilities) {
            let runtime = &mut self.assets[i];
            let evidence = Evidence {
                found: assess::findings(&runtime.asset, &observed),
                features: Features::of(&runtime.asset, &observed),
                model_probability,
                vibration: observed.waveform.as_deref().cloned().map(Box::new),
            };
            if let Some(a) = assess::assess(
                &runtime.asset,
                evidence,
                &self.scoring,
                &mut runtime.state,
                t,
                timestamp,
            ) {
                out.push(a);
            }
        }
        out
    }
}

fn observe(runtime: &mut AssetRuntime, horizon: f64, scratch: &mut Vec<Point>) -> Observed {
    let mut observed = Observed::default();
    let mut currents = [None; 3];
    for (slot, window) in &mut runtime.windows {
        window.forget_before(horizon);
        if window.is_empty() {
            continue;
        }
        let mean = features::mean(window.values());
        match slot {
            Slot::Vibration => {
                observed.vibration = features::rms(window.values());
                observed.vibration_per_hour = hourly_trend(window, scratch);
            }
            Slot::BearingTemperature => {
                observed.bearing_temperature = mean;
                observed.bearing_rise_per_hour = hourly_trend(window, scratch);
            }
            Slot::WindingTemperature => observed.winding_temperature = mean,
            Slot::AmbientTemperature => observed.ambient_temperature = mean,
            Slot::Current(phase) => currents[usize::from(*phase)] = mean,
            Slot::Speed | Slot::SampleRate => {}
            Slot::Pressure => {
                observed.pressure_mean = mean;
                let values: Vec<f64> = window.values().collect();
                observed.pressure_fluctuation = features::std_dev(&values)
                    .zip(mean)
                    .filter(|(_, m)| m.abs() > f64::EPSILON)
                    .map(|(sd, m)| sd / m.abs());
            }
        }
    }
    if let Some((arrived, report)) = runtime.waveform.as_ref().and_then(|w| w.latest.as_ref()) {
        if *arrived >= horizon {
            // A raw accelerometer feeds the ISO zone rule when no velocity tag does.
            if runtime.asset.signals.vibration.is_none() {
                observed.vibration = Some(report.velocity_rms);
            }
            observed.waveform = Some(Arc::clone(report));
        }
    }
    let phases = runtime.asset.signals.currents.len();
    if phases > 0 && currents[..phases].iter().all(Option::is_some) {
        observed.currents = currents[..phases].iter().flatten().copied().collect();
    }
    observed
}

/// The newest value of an asset's signal.
fn latest(windows: &[(Slot, Window)], slot: Slot) -> Option<f64> {
    let (_, window) = windows.iter().find(|(s, _)| *s == slot)?;
    window.last().map(|p| p.value)
}

/// `signals.speed` when the waveform analysis takes the shaft speed from it.
fn speed_tag(asset: &Asset) -> Option<u32> {
    match asset.waveform.as_ref()?.shaft? {
        ShaftSpeed::Tag { tag, .. } => Some(tag),
        ShaftSpeed::Fixed { .. } => None,
    }
}

/// Slope per hour, when the window spans at least ten minutes (a shorter trend is noise).
fn hourly_trend(window: &Window, scratch: &mut Vec<Point>) -> Option<f64> {
    let points = window.points_into(scratch);
    let span = points.last()?.t - points.first()?.t;
    if span < 600.0 {
        return None;
    }
    features::trend_slope(points).map(|slope| slope * 3600.0)
}

/// Runs the scorer on the sample stream until `stop`, publishing every assessment on `out` and
/// logging it. Assessment rounds (features, rules, model inference) run on the blocking pool, off
/// the async executor; samples wait in the bus meanwhile.
pub async fn run(
    mut scorer: Scorer,
    mut samples: Subscriber,
    mut recordings: mpsc::Receiver<Recorded>,
    clock: Arc<dyn Clock>,
    every: Duration,
    out: broadcast::Sender<Assessment>,
    stop: CancellationToken,
) {
    // The scorer's time line: seconds on the clock's monotonic time since the stage started.
    let origin = clock.elapsed();
    let t = || clock.elapsed().saturating_sub(origin).as_secs_f64();
    // On the grid, so that rounds share the polls' wakes.
    let mut tick = crate::clock::ticker(every);
    // The first round one interval after the first tick, when the windows have something in them.
    tick.tick().await;
    let mut drain = crate::clock::ticker(crate::bus::DRAIN_EVERY);
    // Closed at once when no asset has a recordings folder.
    let mut folders_open = true;
    // The first round runs on the blocking pool; later ones on the worker while they stay short.
    let mut inline = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            recorded = recordings.recv(), if folders_open => match recorded {
                Some(recorded) => scorer.take_recording(recorded, t()),
                None => folders_open = false,
            },
            // Drained rather than awaited: a sample's time on the scorer's line is late by up to
            // DRAIN_EVERY (100 ms; assessments are 10 s apart by default, 100 ms at the least).
            _ = drain.tick() => {
                let t = t();
                if !samples.drain(|sample| scorer.observe(sample, t)) {
                    break;
                }
            }
            _ = tick.tick() => {
                let (t, now) = (t(), clock.now());
                samples.drain(|sample| scorer.observe(sample, t));
                let started = Instant::now();
                let assessments = if inline {
                    scorer.assess_all(t, now)
                } else {
                    let round = tokio::task::spawn_blocking(move || {
                        let assessments = scorer.assess_all(t, now);
                        (scorer, assessments)
                    });
                    let assessments;
                    (scorer, assessments) = match round.await {
                        Ok(done) => done,
                        Err(error) => {
                            warn!(%error, "assessment round failed; scoring stops");
                            break;
                        }
                    };
                    assessments
                };
                inline = scorer.light() && started.elapsed() < INLINE_ROUND;
                for assessment in assessments {
                    log(&assessment);
                    let _no_listener = out.send(assessment);
                }
            }
        }
    }
}

fn log(a: &Assessment) {
    let reasons = a.reasons.join("; ");
    if a.action == assess::Action::RoutineMonitoring {
        info!(asset = %a.asset, health = format!("{:.2}", a.overall_health), failure_probability = format!("{:.2}", a.failure_probability), action = a.action.name(), %reasons, "assessment");
    } else {
        warn!(asset = %a.asset, health = format!("{:.2}", a.overall_health), failure_probability = format!("{:.2}", a.failure_probability), action = a.action.name(), priority = ?a.priority, maintenance_due = a.maintenance_due.as_deref().unwrap_or("-"), %reasons, "assessment");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scorer(name: &str, text: &str) -> Scorer {
        let plan = firmware_config::load_str(std::path::Path::new(name), text).expect("plan");
        Scorer::new(&plan, Models::default())
    }

    #[test]
    fn only_scorers_without_waveforms_may_score_on_the_async_worker() {
        let pump = include_str!("../../tests/fixtures/replay-pump.toml");
        assert!(scorer("replay-pump.toml", pump).light());
        let vibration = include_str!("../../../tests/fixtures/vibration-modbus-agent.toml");
        assert!(!scorer("vibration-modbus-agent.toml", vibration).light());
    }
}
