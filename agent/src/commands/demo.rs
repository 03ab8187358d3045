//! `millwright demo`: the example plant simulated on loopback, the agent polling it, and the
//! status page served, all in one process with nothing outside the repository.
//!
//! On a terminal the demo redraws one screen in place (alerts, assets, devices, lines) and the
//! log goes to a file in the run's data directory, so nothing interleaves with the screen;
//! otherwise it prints a compact line every few seconds and a line for every alert change. The
//! data directory is private to the run (mode 0700 under the temporary directory) and removed at
//! the end. Everything shown comes from the one status snapshot the page shows too.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use firmware_config::Link;

use crate::app::tag_catalog;
use crate::clock::{Clock, SystemClock};
use crate::sample::Sample;
use crate::status::{AlertStatus, Status};

/// The run's own data directory, removed when dropped.
pub struct DemoDir {
    path: PathBuf,
}

impl DemoDir {
    /// A new directory `millwright-demo-<pid>-<random>` (mode 0700) under the temporary directory.
    pub fn create() -> std::io::Result<DemoDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        let name = format!(
            "millwright-demo-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(DemoDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the log goes while the screen is drawn.
    pub fn log_path(&self) -> PathBuf {
        self.path.join("demo.log")
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How the demo runs.
pub struct DemoOptions {
    /// Stop after this long; `None`: at Ctrl-C.
    pub duration: Option<Duration>,
    /// Where to serve the page; a port in use falls back to any free one.
    pub http: SocketAddr,
    /// Redraw one screen (stdout is a terminal) rather than print lines.
    pub screen: bool,
}

/// How often the screen is redrawn, and how often a compact line is printed.
const REDRAW: Duration = Duration::from_secs(1);
const COMPACT_EVERY: Duration = Duration::from_secs(5);

/// Runs the demo until `shutdown` or the duration; returns the one-line summary.
pub async fn demo(
    options: DemoOptions,
    dir: &DemoDir,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<String> {
    const SIM: &str = include_str!("../../../firmware-config/examples/sim/demo.toml");
    const PLANT: &str = include_str!("../../../firmware-config/examples/demo-plant.toml");
    let (_, plant) = crate::sim::load_str(Path::new("demo-sim.toml"), SIM)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut plan = firmware_config::load_str(Path::new("demo-plant.toml"), PLANT)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on loopback")?;
    let port = listener.local_addr()?.port();
    for device in &mut plan.devices {
        device.link = Link::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
    }
    plan.agent.data_dir = dir.path().to_path_buf();
    let sim_stop = shutdown.child_token();
    let sim = tokio::spawn(crate::sim::server::serve_tcp(
        listener,
        Arc::new(plant),
        sim_stop.clone(),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let alerts = crate::decisions::alerts::Alerts::open(dir.path(), None);
    let desk = alerts.desk();
    let loaded = crate::app::Loaded::new(plan).map_err(|e| anyhow::anyhow!("{e}"))?;
    let catalog = tag_catalog(&loaded.plan);
    let pipeline = crate::pipeline::Pipeline::build(
        &loaded,
        crate::pipeline::Deps {
            clock: Arc::clone(&clock),
            stop: shutdown.clone(),
            shutdown: shutdown.clone(),
            alerts,
            upstream: None,
        },
    );
    let commands =
        crate::control::AgentCommands::of_pipeline(&loaded, Arc::clone(&clock), desk, &pipeline);
    let (page, server) = serve_page(options.http, &commands, &shutdown).await?;
    let mut samples = pipeline.bus.subscribe();
    let mut running = pipeline.running;
    let started = tokio::time::Instant::now();
    let mut show = Show {
        page,
        catalog: catalog
            .iter()
            .map(|t| (t.name.clone(), t.unit.clone().unwrap_or_default()))
            .collect(),
        latest: vec![None; catalog.len()],
        seen: BTreeMap::new(),
        screen: options.screen,
    };
    println!("{}", show.banner(catalog.len(), dir));
    let every = if options.screen {
        REDRAW
    } else {
        COMPACT_EVERY
    };
    // The first screen waits for the first polls; compact lines start a period in.
    let mut redraw =
        tokio::time::interval_at(started + every.min(Duration::from_millis(500)), every);
    let mut check_alerts = tokio::time::interval(REDRAW);
    let deadline = options.duration.map(|d| started + d);
    let mut last = commands.status();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = until(deadline) => break,
            sample = samples.recv() => match sample {
                Some(sample) => show.sample(sample),
                None => break,
            },
            _ = check_alerts.tick(), if !options.screen => {
                last = commands.status();
                for line in show.alert_changes(&last, started.elapsed()) {
                    println!("{line}");
                }
            }
            _ = redraw.tick() => {
                last = commands.status();
                if options.screen {
                    show.alert_changes(&last, started.elapsed());
                    print!("\x1b[H\x1b[2J{}", show.screen(&last, started.elapsed()));
                } else {
                    println!("{}", show.compact(&last, started.elapsed()));
                }
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
        }
    }
    shutdown.cancel();
    while running.tasks.join_next().await.is_some() {}
    let _ = pipeline.decisions.await;
    let _ = sim.await;
    let _ = server.await;
    Ok(show.summary(&last, started.elapsed()) + "\n")
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Serves the status page for the demo: at `wanted`, or any free port when that one is taken.
async fn serve_page(
    wanted: SocketAddr,
    commands: &Arc<crate::control::AgentCommands>,
    stop: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = match tokio::net::TcpListener::bind(wanted).await {
        Ok(listener) => listener,
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
            tokio::net::TcpListener::bind(SocketAddr::new(wanted.ip(), 0))
                .await
                .with_context(|| format!("cannot serve the page on {}", wanted.ip()))?
        }
        Err(error) => return Err(error).context(format!("cannot serve the page on {wanted}")),
    };
    let url = format!("http://{}/", listener.local_addr()?);
    let site = Arc::new(crate::http::Site {
        commands: Arc::clone(commands),
        users: None,
        refresh: REDRAW,
        counts: Default::default(),
    });
    let server = tokio::spawn(crate::http::serve(listener, None, site, stop.clone()));
    Ok((url, server))
}

/// What the demo prints, from the status snapshot and the latest value of each tag.
struct Show {
    page: String,
    /// Each tag's name and unit, by tag id.
    catalog: Vec<(String, String)>,
    latest: Vec<Option<Sample>>,
    /// Each alert seen: its id → the state and severity last printed.
    seen: BTreeMap<String, (String, String)>,
    screen: bool,
}

impl Show {
    fn sample(&mut self, sample: Sample) {
        if let Some(slot) = self.latest.get_mut(sample.tag.0 as usize) {
            *slot = Some(sample);
        }
    }

    fn banner(&self, tags: usize, dir: &DemoDir) -> String {
        let log = if self.screen {
            format!("; log in {}", dir.log_path().display())
        } else {
            String::new()
        };
        format!(
            "millwright demo: a simulated plant on loopback, {tags} tags\nstatus page: {}\ndata directory: {} (removed at the end){log}\nCtrl-C to stop",
            self.page,
            dir.path().display()
        )
    }

    /// The tag's current value with its unit, when it is a tag and has one.
    fn now(&self, tag: &str) -> Option<String> {
        let id = self.catalog.iter().position(|(name, _)| name == tag)?;
        let sample = self.latest[id].as_ref()?;
        let value = sample.value.as_ref()?;
        Some(
            format!("{value} {}", self.catalog[id].1)
                .trim_end()
                .to_string(),
        )
    }

    /// An alert's reason, followed by what its tag reads now.
    fn reason(&self, alert: &AlertStatus) -> String {
        match self.now(&alert.source) {
            Some(now) => format!("{} — now {now}", alert.reason),
            None => alert.reason.clone(),
        }
    }

    /// A line for each alert that appeared or changed state or severity since the last call.
    fn alert_changes(&mut self, status: &Status, elapsed: Duration) -> Vec<String> {
        let mut lines = Vec::new();
        for alert in &status.alerts {
            let now = (alert.state.to_string(), alert.severity.name().to_string());
            if self.seen.get(&alert.alert_id) != Some(&now) {
                lines.push(format!(
                    "[{}] alert {} {} {}: {}",
                    clock(elapsed),
                    alert.alert_id,
                    now.1,
                    now.0.replace('_', " "),
                    self.reason(alert)
                ));
                self.seen.insert(alert.alert_id.clone(), now);
            }
        }
        lines
    }

    fn compact(&self, status: &Status, elapsed: Duration) -> String {
        let mut parts = vec![acquisition(status)];
        parts.extend(plant(status));
        parts.push(format!("{} open alerts", status.alerts.len()));
        format!("[{}] {}", clock(elapsed), parts.join(" · "))
    }

    /// One screen: alerts, assets, devices, lines, values.
    fn screen(&self, status: &Status, elapsed: Duration) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "millwright demo · {} · page {} · Ctrl-C to stop\n",
            clock(elapsed),
            self.page
        );
        let _ = writeln!(out, "ALERTS");
        if status.alerts.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for alert in &status.alerts {
            let _ = writeln!(
                out,
                "  {:<34} {:<8} {:<22} {}",
                alert.alert_id,
                alert.severity.name(),
                alert.state.replace('_', " "),
                self.reason(alert)
            );
        }
        let _ = writeln!(out, "\nASSETS");
        for a in &status.assets {
            let filled = (a.health.clamp(0.0, 1.0) * 20.0).round() as usize;
            let _ = writeln!(
                out,
                "  {:<8} {:<6} health {:>4.0} % [{}{}] failure {:>3.0} %  {}  {}",
                a.asset,
                a.asset_type,
                100.0 * a.health,
                "#".repeat(filled),
                ".".repeat(20 - filled),
                100.0 * a.failure_probability,
                a.action.name(),
                a.reasons.first().map_or("", String::as_str)
            );
        }
        let _ = writeln!(out, "\nDEVICES");
        for d in &status.devices {
            let _ = writeln!(
                out,
                "  {:<12} {:<8} {:>7} requests {:>5} errors  {}",
                d.device,
                if d.online { "online" } else { "OFFLINE" },
                d.requests,
                d.errors,
                d.latency_mean_ms
                    .map_or_else(|| "-".into(), |ms| format!("{ms:.1} ms"))
            );
        }
        let _ = writeln!(out, "\nLINES");
        for l in &status.lines {
            let _ = writeln!(
                out,
                "  {:<10} {:<12} OEE {} (availability {}, performance {}, quality {}), {:.0} good, {:.0} rejects; {}",
                l.line,
                l.state.as_deref().unwrap_or("unknown"),
                percent(l.oee),
                percent(l.availability),
                percent(l.performance),
                percent(l.quality),
                l.good,
                l.reject,
                l.top_loss.as_deref().unwrap_or("no loss yet")
            );
        }
        let _ = writeln!(out, "\nVALUES");
        for ((name, unit), sample) in self.catalog.iter().zip(&self.latest) {
            let value = sample
                .as_ref()
                .and_then(|s| s.value.as_ref())
                .map_or_else(|| "-".to_string(), ToString::to_string);
            let _ = writeln!(out, "  {name:<30} {value:>14} {unit}");
        }
        out
    }

    /// The line printed at the end.
    fn summary(&self, status: &Status, elapsed: Duration) -> String {
        let mut parts = vec![
            acquisition(status),
            format!(
                "alerts raised: {} ({} open)",
                self.seen.len(),
                status.alerts.len()
            ),
        ];
        parts.extend(plant(status));
        format!(
            "demo stopped after {}: {}",
            clock(elapsed),
            parts.join(", ")
        )
    }
}

/// Devices online and samples read.
fn acquisition(status: &Status) -> String {
    let online = status.devices.iter().filter(|d| d.online).count();
    let s = &status.samples;
    format!(
        "{online}/{} devices online, {} samples ({} bad)",
        status.devices.len(),
        s.good + s.uncertain + s.bad,
        s.bad
    )
}

/// Each asset's health and each line's OEE.
fn plant(status: &Status) -> Vec<String> {
    let assets = status
        .assets
        .iter()
        .map(|a| format!("{} health {:.0} %", a.asset, 100.0 * a.health));
    let lines = status
        .lines
        .iter()
        .map(|l| format!("{} OEE {}", l.line, percent(l.oee)));
    assets.chain(lines).collect()
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{:.0} %", 100.0 * v))
}

/// `mm:ss` (or `h:mm:ss`) since the start.
fn clock(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}
