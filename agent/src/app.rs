//! Builds the running agent from a validated plan: one named task per line, a periodic per-device
//! summary, and (at debug level) a live sample log; and runs the main loop that reloads the
//! configuration on request and answers the service watchdog. Owns nothing global: the clock, the
//! shutdown and reload signals and the service manager are passed in.

use std::sync::Arc;
use std::time::Duration;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use firmware_config::{ConfigErrors, Plan, Tag};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, Level};

use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::health::{self, model::Models, scorer::Scorer};
use crate::liveness::Liveness;
use crate::service::ServiceManager;

use crate::sources::modbus::{self, DeviceStats, StatsSnapshot};

/// A tag and the device it belongs to, indexed by [`TagId`].
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub device: String,
    pub tag: Tag,
}

/// Every tag of the plan in [`TagId`] order.
pub fn tag_catalog(plan: &Plan) -> Vec<TagInfo> {
    plan.devices
        .iter()
        .flat_map(|d| {
            d.tags.iter().map(|t| TagInfo {
                device: d.name.clone(),
                tag: t.clone(),
            })
        })
        .collect()
}

/// The acquisition side of a running agent.
pub struct Running {
    pub stats: Vec<(String, Arc<DeviceStats>)>,
    pub liveness: Liveness,
    pub tasks: JoinSet<()>,
}

/// Spawns one polling task per line. Tasks end when `shutdown` is cancelled.
pub fn start_acquisition(
    plan: &Plan,
    clock: Arc<dyn Clock>,
    bus: &SampleBus,
    shutdown: &CancellationToken,
) -> Running {
    let (lines, stats) = modbus::lines(plan, &clock, bus);
    let mut tasks = JoinSet::new();
    let mut liveness = Liveness::default();
    for line in lines {
        let name = line.name();
        liveness.watch(format!("line {name}"), line.heartbeat(), line.stall_limit());
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("line", name = %name);
        tasks.spawn(tracing::Instrument::instrument(line.run(shutdown), span));
    }
    Running {
        stats,
        liveness,
        tasks,
    }
}

/// How the outside world steers a running agent: stop, reload, and the service manager to keep
/// informed. Signals are turned into these by `main.rs`; tests drive them directly.
pub struct Control {
    pub shutdown: CancellationToken,
    /// One message per reload request (SIGHUP).
    pub reload_requests: mpsc::Receiver<()>,
    pub service: ServiceManager,
}

/// Produces a freshly validated plan on reload (normally: read the config file again).
pub type Reloader = Box<dyn FnMut() -> Result<Loaded, LoadError> + Send>;

/// A validated configuration with its scoring models loaded and checked against it.
pub struct Loaded {
    pub plan: Plan,
    pub models: Models,
    /// Size and modification time of each model file: a retrained model counts as a change.
    model_files: Vec<(PathBuf, Option<(u64, SystemTime)>)>,
}

/// Why a configuration cannot run.
#[derive(Debug)]
pub enum LoadError {
    Config(ConfigErrors),
    Models(Vec<String>),
}

impl LoadError {
    pub fn count(&self) -> usize {
        match self {
            LoadError::Config(errors) => errors.0.len(),
            LoadError::Models(errors) => errors.len(),
        }
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Config(errors) => write!(f, "{errors}"),
            LoadError::Models(errors) => f.write_str(&errors.join("\n")),
        }
    }
}

impl Loaded {
    /// Loads the plan's models and checks each asset against its model.
    pub fn new(plan: Plan) -> Result<Loaded, LoadError> {
        let models = Models::load(&plan).map_err(LoadError::Models)?;
        let model_files = plan
            .scoring
            .models
            .values()
            .map(|path| {
                let stamp = std::fs::metadata(path)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)));
                (path.clone(), stamp)
            })
            .collect();
        Ok(Loaded {
            plan,
            models,
            model_files,
        })
    }

    fn same_as(&self, other: &Loaded) -> bool {
        self.plan == other.plan && self.model_files == other.model_files
    }
}

/// Reads, validates and loads a configuration file and its models.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let plan = firmware_config::load(path).map_err(LoadError::Config)?;
    Loaded::new(plan)
}

/// Runs the agent until `control.shutdown` is cancelled.
///
/// The main loop owns the service-manager conversation: `READY=1` once acquisition runs, a
/// watchdog keep-alive every half watchdog period while every watched loop is live, and on a
/// reload request `RELOADING=1`, validation of the new configuration, then `READY=1` again. An
/// invalid configuration is reported and the running one kept.
pub async fn run(
    loaded: Loaded,
    mut reload: Reloader,
    clock: Arc<dyn Clock>,
    mut control: Control,
) -> anyhow::Result<()> {
    info!(
        agent = %loaded.plan.agent.name,
        devices = loaded.plan.devices.len(),
        tags = loaded.plan.tag_count(),
        assets = loaded.plan.assets.len(),
        "millwright {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let service = &control.service;
    let mut generation = Generation::start(loaded, Arc::clone(&clock), &control.shutdown);
    service.ready(&generation.status());
    if let Some(timeout) = service.watchdog() {
        info!(timeout = ?timeout, "systemd watchdog enabled");
    }

    let mut keep_alive = tokio::time::interval(service.keep_alive_interval());
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall_reported = false;
    loop {
        tokio::select! {
            () = control.shutdown.cancelled() => break,
            Some(()) = control.reload_requests.recv() => {
                service.reloading();
                generation = reload_into(generation, &mut reload, &clock, &control.shutdown).await;
                service.ready(&generation.status());
            }
            _ = keep_alive.tick() => {
                let stalls = generation.running.liveness.stalled(Instant::now());
                if stalls.is_empty() {
                    service.keep_alive();
                    stall_reported = false;
                } else if !stall_reported {
                    stall_reported = true;
                    for stall in &stalls {
                        error!(
                            task = %stall.name,
                            silent_for = ?stall.silent_for,
                            limit = ?stall.stall_limit,
                            "task stopped making progress; withholding the watchdog keep-alive so systemd restarts the agent"
                        );
                    }
                }
            }
        }
    }
    service.stopping();
    info!("shutting down");
    generation.stop().await;
    Ok(())
}

async fn reload_into(
    current: Generation,
    reload: &mut Reloader,
    clock: &Arc<dyn Clock>,
    shutdown: &CancellationToken,
) -> Generation {
    match reload() {
        Err(errors) => {
            error!(
                mistakes = errors.count(),
                "configuration reload rejected; the running configuration stays in force:\n{errors}"
            );
            current
        }
        Ok(loaded) if loaded.same_as(&current.loaded) => {
            info!("configuration reloaded: unchanged");
            current
        }
        Ok(loaded) => {
            current.stop().await;
            info!(
                devices = loaded.plan.devices.len(),
                tags = loaded.plan.tag_count(),
                assets = loaded.plan.assets.len(),
                "configuration reloaded: acquisition restarted with the new plan"
            );
            Generation::start(loaded, Arc::clone(clock), shutdown)
        }
    }
}

/// Everything built from one configuration: acquisition, the periodic summary and the sample log.
/// A reload replaces the whole generation, because tag ids and device counters belong to a plan.
struct Generation {
    loaded: Loaded,
    running: Running,
    stop: CancellationToken,
}

impl Generation {
    fn start(loaded: Loaded, clock: Arc<dyn Clock>, shutdown: &CancellationToken) -> Generation {
        let plan = &loaded.plan;
        let stop = shutdown.child_token();
        let bus = SampleBus::new(plan.agent.sample_bus_capacity);
        let mut running = start_acquisition(plan, Arc::clone(&clock), &bus, &stop);
        if tracing::enabled!(Level::DEBUG) {
            running.tasks.spawn(log_samples(
                Arc::new(tag_catalog(plan)),
                bus.clone(),
                stop.clone(),
            ));
        }
        if !plan.assets.is_empty() {
            let (assessments, _) = tokio::sync::broadcast::channel(64);
            running.tasks.spawn(health::scorer::run(
                Scorer::new(plan, loaded.models.clone()),
                bus.subscribe(),
                Arc::clone(&clock),
                plan.scoring.assess_interval,
                assessments,
                stop.clone(),
            ));
        }
        running.tasks.spawn(log_summaries(
            running.stats.clone(),
            plan.agent.summary_interval.get(),
            bus,
            stop.clone(),
        ));
        Generation {
            loaded,
            running,
            stop,
        }
    }

    /// The one-line status systemd shows in `systemctl status`.
    fn status(&self) -> String {
        let online = self
            .running
            .stats
            .iter()
            .filter(|(_, s)| s.online.load(std::sync::atomic::Ordering::Relaxed))
            .count();
        format!(
            "polling {} devices ({} online), {} tags",
            self.loaded.plan.devices.len(),
            online,
            self.loaded.plan.tag_count()
        )
    }

    async fn stop(mut self) {
        self.stop.cancel();
        // Pollers finish their current request (bounded by its timeout) and close their lines.
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while self.running.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.running.tasks.abort_all();
        }
    }
}

async fn log_samples(catalog: Arc<Vec<TagInfo>>, bus: SampleBus, stop: CancellationToken) {
    let mut samples = bus.subscribe();
    loop {
        let sample = tokio::select! {
            () = stop.cancelled() => break,
            sample = samples.recv() => match sample { Some(s) => s, None => break },
        };
        if let Some(info) = catalog.get(sample.tag.0 as usize) {
            let value = sample
                .value
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            debug!(device = %info.device, tag = %info.tag.name, %value, unit = info.tag.unit.as_deref().unwrap_or(""), quality = %sample.quality, "sample");
        }
    }
}

async fn log_summaries(
    stats: Vec<(String, Arc<DeviceStats>)>,
    every: Duration,
    bus: SampleBus,
    stop: CancellationToken,
) {
    let mut previous: Vec<StatsSnapshot> = vec![StatsSnapshot::default(); stats.len()];
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for ((name, device_stats), before) in stats.iter().zip(previous.iter_mut()) {
            let now = device_stats.snapshot();
            log_summary(name, &now, before, every);
            *before = now;
        }
        let dropped = bus.dropped();
        if dropped > 0 {
            info!(dropped, "samples dropped by slow consumers since start");
        }
    }
}

fn log_summary(name: &str, now: &StatsSnapshot, before: &StatsSnapshot, over: Duration) {
    let requests = now.requests - before.requests;
    let responses = now.responses - before.responses;
    let mean_latency = (responses > 0).then(|| {
        Duration::from_micros((now.latency_us_total - before.latency_us_total) / responses)
    });
    info!(
        device = name,
        online = now.online,
        requests,
        errors = now.errors() - before.errors(),
        exceptions = now.exceptions - before.exceptions,
        timeouts = now.timeouts - before.timeouts,
        transport = now.transport_errors - before.transport_errors,
        malformed = now.malformed - before.malformed,
        reconnects = now.reconnects - before.reconnects,
        overruns = now.overruns - before.overruns,
        latency_mean = ?mean_latency.unwrap_or_default(),
        latency_max = ?Duration::from_micros(now.latency_us_max),
        interval = %humantime::format_duration(over),
        "device summary"
    );
}
