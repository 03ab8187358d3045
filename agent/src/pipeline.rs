//! The only place stages are wired.
//!
//! [`Pipeline::build`] turns a loaded configuration into running stages around one sample bus:
//! acquisition (Modbus lines, OPC UA endpoints), scoring, decisions (the alert lifecycle),
//! outputs, and — with an uplink — the summaries stage and the MQTT session. `run` builds one per
//! configuration generation; `demo` builds one without an uplink and watches its bus.
//!
//! Each stage is a synchronous core in a thin async loop. [`cores`] builds the cores alone, for
//! commands that drive them without the loops: `replay` (recorded time, as fast as the CPU
//! allows) and `read --assess` (one round on the values just read).
//!
//! Invariants: stages meet only on the bus, the assessment channel, the outbox and channels (the
//! outputs' and the uplink's health, the outbox's level, people's alert requests); the decisions
//! stage alone owns the alert book and hands it back when it stops ([`Pipeline::decisions`]);
//! every task ends when `Deps::stop` is cancelled, except the MQTT session ([`Pipeline::uplink`]),
//! which is stopped last, so that what the stopping stages and the agent append on their way out
//! (`agent_stopping`, closing reports) is still delivered; nothing here reads the time but through
//! `Deps::clock`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{start_acquisition, Loaded, Running};
use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::decisions::alerts::{self, Alerts};
use crate::decisions::conditions::Conditions;
use crate::health::assess::Assessment;
use crate::health::scorer::{self, Scorer};
use crate::sources::modbus::DeviceWriter;
use crate::store::Outbox;
use crate::uplink::encode::sparkplug::{LiveTags, NodeParts};
use crate::uplink::encode::{Both, Encoder, Sparkplug, Topics, UnsJson};
use crate::uplink::{CommandHandler, Identity, Uplink, UplinkParts, UplinkStats};
use crate::{changes, outputs, production, quality, reports};

/// Starts a watcher for each waveform asset's recordings folder and a capture for each IIO
/// accelerometer; what they read reaches the scorer on the receiver (closed at once without
/// such assets).
fn local_waveforms(
    plan: &firmware_config::Plan,
    clock: &Arc<dyn Clock>,
    stop: &CancellationToken,
    running: &mut Running,
) -> mpsc::Receiver<crate::vibration::Recorded> {
    let (found, recordings) = mpsc::channel(4);
    for (asset, a) in plan.assets.iter().enumerate() {
        let Some(w) = &a.waveform else { continue };
        match &w.source {
            firmware_config::WaveformSource::Folder { path, poll, keep } => {
                let folder = crate::sources::recordings::RecordingsFolder {
                    asset,
                    path: path.clone(),
                    poll: *poll,
                    keep: *keep,
                    max_samples: w.max_samples,
                };
                running.tasks.spawn(crate::sources::recordings::watch(
                    folder,
                    found.clone(),
                    Arc::clone(clock),
                    stop.clone(),
                ));
            }
            firmware_config::WaveformSource::Iio(source) => {
                let capture = crate::sources::iio::IioCapture {
                    asset,
                    source: source.clone(),
                    samples: w.max_samples,
                    sample_rate: w.sample_rate,
                    sysfs: crate::sources::iio::SYSFS.into(),
                    grace: Duration::from_secs(5),
                };
                running.tasks.spawn(crate::sources::iio::run(
                    capture,
                    found.clone(),
                    stop.clone(),
                ));
            }
            firmware_config::WaveformSource::Tag(_) => {}
        }
    }
    recordings
}

/// Starts each quality station's divert output (`None` for a station without one).
fn quality_diverts(
    plan: &firmware_config::Plan,
    writers: &[DeviceWriter],
    report: &tokio::sync::mpsc::Sender<crate::decisions::lifecycle::Condition>,
    stop: &CancellationToken,
    running: &mut Running,
) -> Vec<Option<quality::divert::Divert>> {
    plan.quality
        .iter()
        .map(|station| {
            let divert = station.divert?;
            let (handle, _stats) = quality::divert::start(
                plan.alerting.outputs[divert.output].clone(),
                divert.pulse,
                writers.to_vec(),
                report.clone(),
                stop.clone(),
                &mut running.tasks,
            );
            Some(handle)
        })
        .collect()
}

/// The uplink's wire format; with Sparkplug, the changes stage that feeds it too.
fn encoder(
    plan: &firmware_config::Plan,
    mqtt: &firmware_config::Mqtt,
    upstream: &UpstreamDeps,
    bus: &SampleBus,
    running: &mut Running,
    stop: &CancellationToken,
    clock: &Arc<dyn Clock>,
) -> Box<dyn Encoder> {
    let uns = UnsJson {
        topics: Topics::new(&mqtt.topic_prefix, &upstream.identity.agent),
    };
    let Some(node) = &mqtt.formats.sparkplug else {
        return Box::new(uns);
    };
    let live = LiveTags::new(plan.tag_count());
    running.tasks.spawn(changes::run(
        changes::Changes::new(plan, node),
        changes::ChangesParts {
            samples: bus.subscribe(),
            live: Arc::clone(&live),
            sources: running.stats.clone(),
            outbox: Arc::clone(&upstream.outbox),
            interval: node.data_interval,
        },
        Arc::clone(clock),
        stop.clone(),
    ));
    let sparkplug = Sparkplug::new(
        plan,
        node,
        NodeParts {
            live,
            sources: running.stats.clone(),
            data_dir: plan.agent.data_dir.clone(),
        },
    );
    if mqtt.formats.uns {
        Box::new(Both { uns, sparkplug })
    } else {
        Box::new(sparkplug)
    }
}

/// Assessments buffered per subscriber, at least: a round sends one per asset at once, so the
/// buffer holds two rounds (with fewer, a subscriber that runs after the scorer lost the oldest).
const ASSESSMENT_CAPACITY: usize = 64;

/// The stage cores of a configuration, without their loops.
pub struct Cores {
    pub scorer: Scorer,
    pub conditions: Conditions,
}

/// Builds the stage cores of `loaded`.
pub fn cores(loaded: &Loaded) -> Cores {
    Cores {
        scorer: Scorer::new(&loaded.plan, loaded.models.clone()),
        conditions: Conditions::new(&loaded.plan.alerting),
    }
}

/// The way upstream, when there is one: it outlives a configuration generation.
pub struct UpstreamDeps {
    pub outbox: Arc<Outbox>,
    pub stats: Arc<UplinkStats>,
    pub commands: Arc<dyn CommandHandler>,
    pub identity: Identity,
}

/// What the stages are given rather than find for themselves.
pub struct Deps {
    pub clock: Arc<dyn Clock>,
    /// Ends every stage of this pipeline.
    pub stop: CancellationToken,
    /// The agent's shutdown (not a reload): the outputs then show their final state.
    pub shutdown: CancellationToken,
    /// The alert book, handed to the decisions stage for the pipeline's life.
    pub alerts: Alerts,
    pub upstream: Option<UpstreamDeps>,
}

/// Running stages.
pub struct Pipeline {
    pub running: Running,
    pub bus: SampleBus,
    /// Every assessment, as the scorer makes it.
    pub assessments: broadcast::Sender<Assessment>,
    /// The decisions stage, which gives the alert book back when it stops.
    pub decisions: JoinHandle<Alerts>,
    /// Each production line's latest report.
    pub lines: watch::Receiver<production::LineView>,
    /// Where relearning requests reach the quality stage (closed without stations).
    pub quality: quality::Desk,
    /// What the status snapshot reads.
    pub board: crate::status::Board,
    /// The MQTT session, when there is an uplink: it outlives `Deps::stop` (see the module docs).
    pub uplink: Option<UplinkTask>,
}

/// A running MQTT session with its own stop.
pub struct UplinkTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl UplinkTask {
    /// Stops the session once the other stages have stopped: it delivers what is queued (within
    /// the uplink's shutdown grace) and says goodbye.
    pub async fn stop(self) {
        self.stop.cancel();
        let task = self.task;
        tokio::pin!(task);
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Keeps each asset's latest assessment in `view` until `stop`.
async fn keep_assessments(
    mut assessments: broadcast::Receiver<Assessment>,
    view: watch::Sender<crate::status::AssetView>,
    stop: CancellationToken,
) {
    loop {
        let assessment = tokio::select! {
            () = stop.cancelled() => break,
            received = assessments.recv() => match received {
                Ok(assessment) => assessment,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        view.send_modify(|view| {
            view.insert(assessment.asset.clone(), assessment);
        });
    }
}

impl Pipeline {
    /// Starts every stage of `loaded`.
    pub fn build(loaded: &Loaded, deps: Deps) -> Pipeline {
        let plan = &loaded.plan;
        let clock = &deps.clock;
        let bus = SampleBus::new(plan.agent.sample_bus_capacity);
        let (mut running, writers) = start_acquisition(plan, Arc::clone(clock), &bus, &deps.stop);
        let (assessments, _) = broadcast::channel(ASSESSMENT_CAPACITY.max(2 * plan.assets.len()));
        let Cores { scorer, conditions } = cores(loaded);
        let mut book = deps.alerts;
        alerts::forget_unconfigured(&mut book, plan, clock.now());
        let view = book.subscribe();
        let upstream = deps.upstream.as_ref();
        let (report, reported) = alerts::reporting();
        let line_alerts = report.clone();
        let quality_alerts = report.clone();
        let decisions = tokio::spawn(alerts::run(
            conditions,
            plan.alerting.clone(),
            book,
            alerts::Inputs {
                samples: plan.alerting.needs_samples().then(|| bus.subscribe()),
                assessments: assessments.subscribe(),
                devices: running.stats.clone(),
                outbox: upstream.map(|u| u.outbox.level()),
                broker: upstream.map(|u| u.stats.link()),
                reported,
            },
            Arc::clone(clock),
            deps.stop.clone(),
        ));
        let diverts = quality_diverts(plan, &writers, &report, &deps.stop, &mut running);
        let uplink_writers = writers.clone();
        if !plan.alerting.outputs.is_empty() {
            running.tasks.spawn(outputs::run(
                plan.alerting.clone(),
                plan.quality
                    .iter()
                    .filter_map(|s| s.divert.map(|d| d.output))
                    .collect(),
                writers,
                view,
                report,
                deps.stop.clone(),
                deps.shutdown.clone(),
            ));
        }
        let mut uplink_task = None;
        if let (Some(upstream), Some(mqtt)) = (upstream, &plan.mqtt) {
            running.tasks.spawn(reports::run(
                reports::Settings::new(plan, clock.now()),
                Arc::clone(&upstream.outbox),
                reports::Sources {
                    samples: bus.subscribe(),
                    assessments: assessments.subscribe(),
                    devices: running.stats.clone(),
                },
                Arc::clone(clock),
                deps.stop.clone(),
            ));
            let parts = UplinkParts {
                outbox: Arc::clone(&upstream.outbox),
                stats: Arc::clone(&upstream.stats),
                commands: Arc::clone(&upstream.commands),
                clock: Arc::clone(clock),
            };
            let encoder = encoder(plan, mqtt, upstream, &bus, &mut running, &deps.stop, clock);
            let mut uplink =
                Uplink::with_encoder(mqtt.clone(), upstream.identity.clone(), parts, encoder);
            uplink.writers = uplink_writers;
            let span = tracing::info_span!("uplink");
            let stop = CancellationToken::new();
            let task = tokio::spawn(tracing::Instrument::instrument(
                uplink.run(stop.clone()),
                span,
            ));
            uplink_task = Some(UplinkTask { stop, task });
        }
        let (line_view, lines) = watch::channel(production::LineView::new());
        // Rejects decided by quality stations, for lines without a reject counter.
        let (rejects_to_lines, line_rejects) = tokio::sync::mpsc::channel(1024);
        if !plan.lines.is_empty() {
            running.tasks.spawn(production::run(
                production::Production::new(&plan.lines, &plan.agent.data_dir),
                bus.subscribe(),
                line_rejects,
                production::Sinks {
                    outbox: upstream.map(|u| Arc::clone(&u.outbox)),
                    alerts: Some(line_alerts),
                    view: line_view,
                },
                plan.agent.data_dir.clone(),
                Arc::clone(clock),
                deps.stop.clone(),
            ));
        }
        let (quality_desk, relearn) = quality::Desk::new();
        let (quality_view, quality_board) = watch::channel(quality::QualityView::new());
        let (camera_images, scored_images) = tokio::sync::mpsc::channel(64);
        for (i, (station, models)) in plan.quality.iter().zip(&loaded.quality_models).enumerate() {
            if let (Some(images), Some(model)) = (&station.images, &models.image) {
                running.tasks.spawn(quality::camera::watch(
                    images.clone(),
                    Arc::clone(model),
                    i,
                    camera_images.clone(),
                    Arc::clone(clock),
                    deps.stop.clone(),
                ));
            }
        }
        drop(camera_images);
        if !plan.quality.is_empty() {
            running.tasks.spawn(quality::run(
                quality::Quality::new(&plan.quality, &plan.agent.data_dir, clock.now())
                    .with_models(&loaded.quality_models),
                bus.subscribe(),
                quality::Sinks {
                    outbox: upstream.map(|u| Arc::clone(&u.outbox)),
                    alerts: Some(quality_alerts),
                    view: quality_view,
                    diverts,
                    rejects: Some(rejects_to_lines),
                },
                relearn,
                scored_images,
                Arc::clone(clock),
                deps.stop.clone(),
            ));
        }
        let spectra = scorer.spectra();
        let (asset_view, assets_board) = watch::channel(crate::status::AssetView::new());
        if !plan.assets.is_empty() {
            running.tasks.spawn(keep_assessments(
                assessments.subscribe(),
                asset_view,
                deps.stop.clone(),
            ));
            let recordings = local_waveforms(plan, clock, &deps.stop, &mut running);
            running.tasks.spawn(scorer::run(
                scorer,
                bus.subscribe(),
                recordings,
                Arc::clone(clock),
                plan.scoring.assess_interval,
                assessments.clone(),
                deps.stop.clone(),
            ));
        }
        let board = crate::status::Board {
            devices: running.stats.clone(),
            samples: bus.counts(),
            assets: assets_board,
            lines: lines.clone(),
            quality: quality_board,
            spectra,
        };
        Pipeline {
            running,
            bus,
            assessments,
            decisions,
            lines,
            quality: quality_desk,
            board,
            uplink: uplink_task,
        }
    }
}
