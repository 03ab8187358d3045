//! Builds the running agent from a validated plan: one named task per line, a periodic per-device
//! summary, and (at debug level) a live sample log. Owns nothing global: the clock, the sample bus
//! and the shutdown signal are passed in.

use std::sync::Arc;
use std::time::Duration;

use firmware_config::{Plan, Tag};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, Level};

use crate::bus::SampleBus;
use crate::clock::Clock;

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
    for line in lines {
        let name = line.name();
        let shutdown = shutdown.clone();
        let span = tracing::info_span!("line", name = %name);
        tasks.spawn(tracing::Instrument::instrument(line.run(shutdown), span));
    }
    Running { stats, tasks }
}

/// Runs the agent until `shutdown` is cancelled.
pub async fn run(
    plan: Plan,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bus = SampleBus::new(plan.agent.sample_bus_capacity);
    let catalog = Arc::new(tag_catalog(&plan));
    info!(
        agent = %plan.agent.name,
        devices = plan.devices.len(),
        tags = catalog.len(),
        "millwright {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let mut running = start_acquisition(&plan, clock, &bus, &shutdown);

    if tracing::enabled!(Level::DEBUG) {
        let mut samples = bus.subscribe();
        let catalog = Arc::clone(&catalog);
        let shutdown = shutdown.clone();
        running.tasks.spawn(async move {
            loop {
                let sample = tokio::select! {
                    () = shutdown.cancelled() => break,
                    sample = samples.recv() => match sample { Some(s) => s, None => break },
                };
                if let Some(info) = catalog.get(sample.tag.0 as usize) {
                    let value = sample.value.as_ref().map(ToString::to_string).unwrap_or_default();
                    debug!(device = %info.device, tag = %info.tag.name, %value, unit = info.tag.unit.as_deref().unwrap_or(""), quality = %sample.quality, "sample");
                }
            }
        });
    }

    let summary_every = plan.agent.summary_interval.get();
    let stats = running.stats.clone();
    let summary_bus = bus.clone();
    let summary_shutdown = shutdown.clone();
    running.tasks.spawn(async move {
        let mut previous: Vec<StatsSnapshot> = vec![StatsSnapshot::default(); stats.len()];
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + summary_every, summary_every);
        loop {
            tokio::select! {
                () = summary_shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            for ((name, device_stats), before) in stats.iter().zip(previous.iter_mut()) {
                let now = device_stats.snapshot();
                log_summary(name, &now, before, summary_every);
                *before = now;
            }
            let dropped = summary_bus.dropped();
            if dropped > 0 {
                info!(dropped, "samples dropped by slow consumers since start");
            }
        }
    });

    shutdown.cancelled().await;
    info!("shutting down");
    // Pollers finish their current request (bounded by its timeout) and close their lines.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while running.tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        running.tasks.abort_all();
    }
    Ok(())
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
