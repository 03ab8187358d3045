//! Builds the running agent from a validated plan: one named task per line, a periodic per-device
//! summary, and (at debug level) a live sample log; and runs the main loop that reloads the
//! configuration on request and answers the service watchdog. Owns nothing global: the clock, the
//! shutdown and reload signals and the service manager are passed in.

use std::sync::Arc;
use std::time::Duration;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use firmware_config::{ConfigErrors, Plan};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Level};

use crate::bus::SampleBus;
use crate::clock::Clock;
use crate::control::{self, AgentCommands};
use crate::decisions::alerts::{AlertDesk, Alerts};
use crate::health::model::Models;
use crate::liveness::Liveness;
use crate::pipeline::{Deps, Pipeline, UpstreamDeps};
use crate::reports;
use crate::service::ServiceManager;
use crate::store::sled_store::{OpenError, SledStore};
use crate::store::{write_behind, Appended, MemoryStore, Outbox, WriteBehind};
use crate::uplink::{Identity, UplinkStats};

use crate::sources::modbus::{self, DeviceWriter};
use crate::sources::opcua;
use crate::sources::{DeviceStats, StatsSnapshot};

/// A tag and the source (Modbus device or OPC UA endpoint) it belongs to, indexed by [`TagId`].
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub device: String,
    pub name: String,
    pub unit: Option<String>,
}

/// Every tag of the plan in [`TagId`] order.
pub fn tag_catalog(plan: &Plan) -> Vec<TagInfo> {
    plan.sources()
        .iter()
        .flat_map(|source| {
            source.tags.iter().map(|(name, unit)| TagInfo {
                device: source.source.to_string(),
                name: name.to_string(),
                unit: unit.map(str::to_string),
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

/// Spawns one polling task per line, and returns a writer per Modbus device (plan order). Tasks
/// end when `shutdown` is cancelled, a line once its writers are dropped too (at once: `let (x, _)`).
pub fn start_acquisition(
    plan: &Plan,
    clock: Arc<dyn Clock>,
    bus: &SampleBus,
    shutdown: &CancellationToken,
) -> (Running, Vec<DeviceWriter>) {
    let modbus::Lines {
        lines,
        mut stats,
        writers,
    } = modbus::lines(plan, &clock, bus);
    let mut tasks = JoinSet::new();
    let mut liveness = Liveness::default();
    for line in lines {
        let name = line.name();
        liveness.watch(format!("line {name}"), line.heartbeat(), line.stall_limit());
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("line", name = %name);
        tasks.spawn(tracing::Instrument::instrument(line.run(shutdown), span));
    }
    let (endpoints, endpoint_stats) = opcua::endpoints(plan, &clock, bus);
    stats.extend(endpoint_stats);
    for endpoint in endpoints {
        let name = endpoint.name().to_string();
        liveness.watch(
            format!("opcua {name}"),
            endpoint.heartbeat(),
            endpoint.stall_limit(),
        );
        let span = tracing::info_span!("opcua", name = %name);
        tasks.spawn(tracing::Instrument::instrument(
            endpoint.run(shutdown.clone()),
            span,
        ));
    }
    let running = Running {
        stats,
        liveness,
        tasks,
    };
    (running, writers)
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
    /// Each quality station's defect model (by station index).
    pub quality_models: Vec<crate::quality::model::StationModels>,
    /// Identifies the effective configuration in births and `status` (stable for one agent
    /// version: a hash of the validated plan, so comments and formatting do not change it).
    pub config_hash: String,
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
        let quality_models =
            crate::quality::model::load_all(&plan.quality).map_err(LoadError::Models)?;
        let model_files = plan
            .scoring
            .models
            .values()
            .chain(plan.quality.iter().filter_map(|s| s.model.as_ref()))
            .chain(
                plan.quality
                    .iter()
                    .filter_map(|s| s.images.as_ref().map(|i| &i.model)),
            )
            .map(|path| {
                let stamp = std::fs::metadata(path)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)));
                (path.clone(), stamp)
            })
            .collect();
        Ok(Loaded {
            config_hash: config_hash(&plan),
            plan,
            models,
            quality_models,
            model_files,
        })
    }

    fn same_as(&self, other: &Loaded) -> bool {
        self.plan == other.plan && self.model_files == other.model_files
    }
}

/// A hash of the validated plan's debug form, written straight into the hasher: a 10,000-tag plan
/// would otherwise make a string of megabytes for a moment.
fn config_hash(plan: &Plan) -> String {
    struct Hashing(crc32fast::Hasher);
    impl std::fmt::Write for Hashing {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0.update(text.as_bytes());
            Ok(())
        }
    }
    let mut hashing = Hashing(crc32fast::Hasher::new());
    let _ = std::fmt::write(&mut hashing, format_args!("{plan:?}"));
    format!("{:08x}", hashing.0.finalize())
}

/// How often the heap's free top is handed back (`memory::trim_heap`).
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// How long after a start or reload the startup code is released a second time.
const SETTLE: Duration = Duration::from_secs(30);

/// Reads, validates and loads a configuration file and its models.
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let plan = firmware_config::load(path).map_err(LoadError::Config)?;
    // The parser's code and garbage go before the models' optimiser adds its own: a lower peak.
    crate::memory::release_startup_memory();
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
        opcua_endpoints = loaded.plan.opcua.len(),
        tags = loaded.plan.tag_count(),
        assets = loaded.plan.assets.len(),
        "millwright {} starting",
        env!("CARGO_PKG_VERSION")
    );
    // Loading is done (parsing, the models' optimiser): its code need not wait for the rest of
    // the start to be released, which keeps the start-up peak down.
    crate::memory::release_startup_memory();
    let service = &control.service;
    let plan = &loaded.plan;
    match crate::files::prepare_data_dir(&plan.agent.data_dir) {
        Ok(Some(change)) => warn!("data directory tightened: {change}"),
        Ok(None) => {}
        Err(error) => {
            warn!(%error, dir = %plan.agent.data_dir.display(), "cannot create the data directory or set its mode (0750)")
        }
    }
    let upstream = match &loaded.plan.mqtt {
        Some(_) => Some(Upstream::open(&loaded, &clock)?),
        None => None,
    };
    let alerts = Alerts::open(
        &plan.agent.data_dir,
        upstream.as_ref().map(|u| Arc::clone(&u.outbox)),
    );
    let local = Local::start(&loaded, alerts.desk(), upstream.as_ref(), &clock);
    let mut generation = Generation::start(
        loaded,
        alerts,
        Arc::clone(&clock),
        &control.shutdown,
        upstream.as_ref(),
        &local,
    );
    service.ready(&generation.status());
    crate::memory::release_startup_memory();
    // Sessions and first rounds run code of their own during the first seconds: release again
    // once they have settled.
    let settled = tokio::time::sleep(SETTLE);
    tokio::pin!(settled);
    if let Some(timeout) = service.watchdog() {
        info!(timeout = ?timeout, "systemd watchdog enabled");
    }

    let mut keep_alive = tokio::time::interval(service.keep_alive_interval());
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall_reported = false;
    // The small-block heap keeps up to 2 MiB free at its top by itself: handed back each minute.
    let mut trim = tokio::time::interval(TRIM_EVERY);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = control.shutdown.cancelled() => break,
            Some(()) = control.reload_requests.recv() => {
                service.reloading();
                generation = reload_into(generation, &mut reload, &clock, &control.shutdown, upstream.as_ref(), &local).await;
                service.ready(&generation.status());
                crate::memory::release_startup_memory();
                settled.as_mut().reset(tokio::time::Instant::now() + SETTLE);
            }
            () = &mut settled, if !settled.is_elapsed() => crate::memory::release_startup_memory(),
            _ = trim.tick() => crate::memory::trim_heap(),
            _ = keep_alive.tick() => {
                let stalls = generation.running.liveness.stalled(clock.elapsed());
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
    if let Some(upstream) = &upstream {
        upstream.event("agent_stopping", serde_json::json!({}), clock.now());
    }
    generation.stop(upstream.as_ref()).await;
    local.stop().await;
    if let Some(upstream) = upstream {
        upstream.stop().await;
    }
    Ok(())
}

async fn reload_into(
    current: Generation,
    reload: &mut Reloader,
    clock: &Arc<dyn Clock>,
    shutdown: &CancellationToken,
    upstream: Option<&Upstream>,
    local: &Local,
) -> Generation {
    match reload() {
        Err(errors) => {
            error!(
                mistakes = errors.count(),
                "configuration reload rejected; the running configuration stays in force:\n{errors}"
            );
            if let Some(upstream) = upstream {
                let detail = serde_json::json!({ "mistakes": errors.count() });
                upstream.event("config_rejected", detail, clock.now());
            }
            current
        }
        Ok(loaded) if loaded.same_as(&current.loaded) => {
            info!("configuration reloaded: unchanged");
            current
        }
        Ok(loaded) => {
            let alerts = current.stop(upstream).await;
            info!(
                devices = loaded.plan.devices.len(),
                opcua_endpoints = loaded.plan.opcua.len(),
                tags = loaded.plan.tag_count(),
                assets = loaded.plan.assets.len(),
                "configuration reloaded: acquisition restarted with the new plan"
            );
            match upstream {
                Some(upstream) => {
                    let detail = serde_json::json!({ "config_hash": loaded.config_hash });
                    upstream.event("config_reloaded", detail, clock.now());
                }
                None if loaded.plan.mqtt.is_some() => {
                    warn!("[mqtt] was added: the uplink starts at the next restart of the agent")
                }
                None => {}
            }
            if loaded.plan.http != local.http {
                warn!(
                    "[http] changed: the status page keeps its settings until the agent restarts"
                );
            }
            Generation::start(loaded, alerts, Arc::clone(clock), shutdown, upstream, local)
        }
    }
}

/// Who the agent says it is: its name, version and configuration hash.
pub fn identity(loaded: &Loaded) -> Identity {
    Identity {
        agent: loaded.plan.agent.name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        config_hash: loaded.config_hash.clone(),
    }
}

/// What outlives a configuration reload locally: the alerts and the control socket.
struct Local {
    commands: Arc<AgentCommands>,
    /// The status server's settings: they apply from the agent's start.
    http: Option<firmware_config::Http>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

impl Local {
    fn start(
        loaded: &Loaded,
        alerts: AlertDesk,
        upstream: Option<&Upstream>,
        clock: &Arc<dyn Clock>,
    ) -> Local {
        let commands = Arc::new(AgentCommands::new(
            identity(loaded),
            Arc::clone(clock),
            upstream.map(|u| (Arc::clone(&u.outbox), Arc::clone(&u.uplink_stats))),
            alerts,
        ));
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let handler: Arc<dyn crate::uplink::CommandHandler> = commands.clone();
        tasks.spawn(control::serve(
            control::socket_path(&loaded.plan.agent.data_dir),
            handler,
            Arc::clone(clock),
            stop.clone(),
        ));
        if let Some(http) = &loaded.plan.http {
            tasks.spawn(crate::http::run(
                http.clone(),
                Arc::clone(&commands),
                stop.clone(),
            ));
        }
        Local {
            commands,
            tasks,
            stop,
            http: loaded.plan.http.clone(),
        }
    }

    async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What outlives a configuration reload on the way upstream: the outbox (one store per data
/// directory) and its flusher.
struct Upstream {
    outbox: Arc<Outbox>,
    uplink_stats: Arc<UplinkStats>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
    clock: Arc<dyn Clock>,
}

impl Upstream {
    /// Opens the outbox (recovering or, as a last resort, falling back to memory), starts the
    /// flusher, and records the agent's start.
    fn open(loaded: &Loaded, clock: &Arc<dyn Clock>) -> anyhow::Result<Upstream> {
        let plan = &loaded.plan;
        let dir = &plan.outbox.dir;
        let mut notes = Vec::new();
        let outbox = match SledStore::open_or_recover(dir) {
            Ok((store, recovery)) => {
                if let Some(recovery) = recovery {
                    error!(
                        moved_to = %recovery.moved_to.display(),
                        why = %recovery.why,
                        "the outbox could not be read; it was moved aside and a fresh one started"
                    );
                    notes.push((
                        "outbox_recovered",
                        serde_json::json!({
                            "moved_to": recovery.moved_to.display().to_string(),
                            "why": recovery.why,
                        }),
                    ));
                }
                let store = WriteBehind::new(Box::new(store), write_behind::MAX_STAGED);
                Outbox::new(Box::new(store), plan.outbox.max_bytes)?
            }
            Err(locked @ OpenError::Locked(_)) => return Err(locked.into()),
            Err(error) => {
                error!(%error, "the outbox cannot be opened; buffering in memory (lost on restart) until it can");
                notes.push((
                    "outbox_degraded",
                    serde_json::json!({ "error": error.to_string(), "buffer": "memory" }),
                ));
                Outbox::new(Box::new(MemoryStore::default()), plan.outbox.max_bytes)?
            }
        };
        let outbox = Arc::new(outbox);
        let stats = outbox.stats();
        info!(
            dir = %dir.display(),
            queued = stats.depth(),
            bytes = stats.bytes,
            max_bytes = stats.max_bytes,
            dropped = stats.dropped(),
            "outbox open"
        );
        let uplink_stats = Arc::new(UplinkStats::default());
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(flush_periodically(
            Arc::clone(&outbox),
            plan.outbox.flush_interval,
            Arc::clone(clock),
            stop.clone(),
        ));
        let upstream = Upstream {
            outbox,
            uplink_stats,
            tasks,
            stop,
            clock: Arc::clone(clock),
        };
        let now = upstream.clock.now();
        upstream.first_event(
            "agent_started",
            serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "config_hash": loaded.config_hash,
            }),
            now,
        );
        for (name, detail) in notes {
            upstream.event(name, detail, now);
        }
        Ok(upstream)
    }

    fn event(&self, name: &str, detail: serde_json::Value, now: SystemTime) {
        reports::append(&self.outbox, reports::event(name, detail, now));
    }

    /// The agent's first record of this run, whose id starts the run's id range.
    fn first_event(&self, name: &str, detail: serde_json::Value, now: SystemTime) {
        match self.outbox.append(reports::event(name, detail, now)) {
            Ok(Appended::Stored { id, .. }) => info!(first_id = id, "first record of this run"),
            Ok(Appended::Dropped) => warn!("outbox full: the start event was dropped (counted)"),
            Err(error) => warn!(%error, "outbox append failed (counted)"),
        }
    }

    /// Stops the flusher (which flushes a last time).
    async fn stop(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// Flushes the outbox every `every`, at once when an alert was appended, and at the end twice (the
/// write-behind layer keeps a record back for one flush: two make everything durable).
pub async fn flush_periodically(
    outbox: Arc<Outbox>,
    every: Duration,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut durable = 0;
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(every) => false,
            () = outbox.urgent.notified() => false,
        };
        let flushing = Arc::clone(&outbox);
        let flush = move || match stopping {
            true => flushing.flush().and_then(|_| flushing.flush()),
            false => flushing.flush(),
        };
        match tokio::task::spawn_blocking(flush).await {
            Ok(Ok(through)) if through != durable => {
                durable = through;
                debug!(durable_through = through, "outbox flushed");
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                if let Some(unlogged) = outbox.complain(clock.now()) {
                    error!(%error, unlogged, "outbox flush failed: records since the last flush are not yet durable")
                }
            }
            Err(error) => error!(%error, "outbox flush task failed"),
        }
        if stopping {
            break;
        }
    }
}

/// Everything built from one configuration: acquisition, the periodic summary and the sample log.
/// A reload replaces the whole generation, because tag ids and device counters belong to a plan.
struct Generation {
    loaded: Loaded,
    running: Running,
    /// The decisions stage, which owns the alert book until the generation stops.
    decisions: JoinHandle<Alerts>,
    /// The MQTT session, stopped after everything else.
    uplink: Option<crate::pipeline::UplinkTask>,
    stop: CancellationToken,
}

impl Generation {
    fn start(
        loaded: Loaded,
        alerts: Alerts,
        clock: Arc<dyn Clock>,
        shutdown: &CancellationToken,
        upstream: Option<&Upstream>,
        local: &Local,
    ) -> Generation {
        let plan = &loaded.plan;
        let stop = shutdown.child_token();
        let desk = alerts.desk();
        let Pipeline {
            mut running,
            bus,
            decisions,
            quality,
            board,
            uplink,
            ..
        } = Pipeline::build(
            &loaded,
            Deps {
                clock: Arc::clone(&clock),
                stop: stop.clone(),
                shutdown: shutdown.clone(),
                alerts,
                upstream: upstream.map(|u| UpstreamDeps {
                    outbox: Arc::clone(&u.outbox),
                    stats: Arc::clone(&u.uplink_stats),
                    commands: local.commands.clone(),
                    identity: identity(&loaded),
                }),
            },
        );
        local.commands.attach(control::Attached {
            identity: identity(&loaded),
            alerts: desk,
            quality,
            board,
        });
        if tracing::enabled!(Level::DEBUG) {
            running.tasks.spawn(log_samples(
                Arc::new(tag_catalog(plan)),
                bus.clone(),
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
            decisions,
            uplink,
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
            "polling {} sources ({} online), {} tags",
            self.running.stats.len(),
            online,
            self.loaded.plan.tag_count()
        )
    }

    /// Stops every stage and takes the alert book back from the decisions stage.
    async fn stop(mut self, upstream: Option<&Upstream>) -> Alerts {
        self.stop.cancel();
        // Pollers finish their current request (bounded by its timeout) and close their lines.
        let drained = tokio::time::timeout(Duration::from_secs(5), async {
            while self.running.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.running.tasks.abort_all();
        }
        let decided = tokio::time::timeout(Duration::from_secs(5), &mut self.decisions).await;
        // Last, once nothing appends any more: the session delivers what the stop queued.
        if let Some(uplink) = self.uplink.take() {
            uplink.stop().await;
        }
        match decided {
            Ok(Ok(alerts)) => alerts,
            failed => {
                // The book was saved at its last change; what is lost is a change whose save
                // failed, and requests still queued.
                self.decisions.abort();
                error!(failure = ?failed.map(|joined| joined.err()), "the decisions stage did not stop cleanly; alerts reread from the state file");
                Alerts::open(
                    &self.loaded.plan.agent.data_dir,
                    upstream.map(|u| Arc::clone(&u.outbox)),
                )
            }
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
            debug!(device = %info.device, tag = %info.name, %value, unit = info.unit.as_deref().unwrap_or(""), quality = %sample.quality, "sample");
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
    let mut tick = tokio::time::interval(every);
    // The first summary covers a whole interval.
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        for ((name, device_stats), before) in stats.iter().zip(previous.iter_mut()) {
            let now = device_stats.snapshot();
            log_summary(name, &now, before, device_stats.take_latency_max(), every);
            *before = now;
        }
        let dropped = bus.dropped();
        if dropped > 0 {
            info!(dropped, "samples dropped by slow consumers since start");
        }
    }
}

fn log_summary(
    name: &str,
    now: &StatsSnapshot,
    before: &StatsSnapshot,
    latency_max: Duration,
    over: Duration,
) {
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
        latency_max = ?latency_max,
        interval = %humantime::format_duration(over),
        "device summary"
    );
}
