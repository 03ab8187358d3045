//! `millwright simulate` and `millwright demo`: the simulated plant, alone or with the agent.

use std::fmt::Write as _;
use std::sync::Arc;

use firmware_config::Link;
use tokio::task::JoinSet;

use crate::app::{tag_catalog, TagInfo};
use crate::clock::{Clock, SystemClock};
use crate::sample::Sample;

/// Runs the simulator until `shutdown`. `listen` and `serial` override the file.
#[cfg(feature = "sim")]
pub async fn simulate(
    mut config: crate::sim::SimConfig,
    plant: crate::sim::Plant,
    listen: Option<String>,
    serial: Option<String>,
    opcua: Option<(String, std::path::PathBuf)>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    if let Some(path) = serial {
        let current = config.serial.take();
        config.serial = Some(crate::sim::SerialConfig {
            path,
            baud: current.as_ref().map_or(19_200, |s| s.baud),
            parity: current.map(|s| s.parity).unwrap_or_default(),
        });
    }
    let plant = Arc::new(plant);
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::sim::server::serve_tcp(
        listener,
        Arc::clone(&plant),
        shutdown.clone(),
    ));
    tasks.spawn({
        let (plant, stop) = (Arc::clone(&plant), shutdown.clone());
        async move {
            crate::sim::gauge::cameras(plant, stop).await;
            Ok(())
        }
    });
    // Kept alive until the simulator stops.
    let _opcua = match opcua {
        Some((listen, pki)) => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen} for OPC UA"))?;
            let users = crate::sim::opcua::Users::default();
            let server = crate::sim::opcua::serve(
                listener,
                Arc::clone(&plant),
                &pki,
                &users,
                shutdown.clone(),
            )
            .await?;
            println!(
                "OPC UA: opc.tcp://{listen} (namespace {}; certificate in {})",
                crate::sim::opcua::NAMESPACE,
                pki.display()
            );
            Some(server)
        }
        None => None,
    };
    if let Some(serial) = &config.serial {
        let (path, baud, parity) = (serial.path.clone(), serial.baud, serial.parity);
        let plant = Arc::clone(&plant);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            crate::sim::server::serve_rtu(&path, baud, parity, plant, shutdown).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result
            .context("simulator task failed")?
            .context("simulator stopped")?;
    }
    Ok(())
}

/// The self-contained demo: the example plant simulated on loopback and the agent polling it,
/// printing live values once a second.
#[cfg(feature = "sim")]
pub async fn demo(
    duration: Option<std::time::Duration>,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    const SIM: &str = include_str!("../../../firmware-config/examples/sim/demo.toml");
    const PLANT: &str = include_str!("../../../firmware-config/examples/demo-plant.toml");

    let (_, plant) = crate::sim::load_str(std::path::Path::new("demo-sim.toml"), SIM)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut plan = firmware_config::load_str(std::path::Path::new("demo-plant.toml"), PLANT)
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
    let sim_shutdown = shutdown.child_token();
    let sim = tokio::spawn(crate::sim::server::serve_tcp(
        listener,
        Arc::new(plant),
        sim_shutdown.clone(),
    ));

    let catalog = tag_catalog(&plan);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Alerts as the agent raises them (limits, maintenance, its own health), kept in the demo
    // plant's data directory like a running agent's.
    crate::files::prepare_data_dir(&plan.agent.data_dir)
        .with_context(|| format!("cannot create {}", plan.agent.data_dir.display()))?;
    let alerts = crate::decisions::alerts::Alerts::open(&plan.agent.data_dir, None);
    let desk = alerts.desk();
    let loaded = crate::app::Loaded::new(plan).map_err(|e| anyhow::anyhow!("{e}"))?;
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
    let mut samples = pipeline.bus.subscribe();
    let mut assessments = pipeline.assessments.subscribe();
    let pipeline_lines = pipeline.lines.clone();
    let mut running = pipeline.running;
    let decisions = pipeline.decisions;
    let mut health: Vec<crate::health::assess::Assessment> = Vec::new();
    println!(
        "millwright demo: simulated plant on 127.0.0.1:{port}, {} tags; Ctrl-C to stop",
        catalog.len()
    );

    let mut latest: Vec<Option<Sample>> = vec![None; catalog.len()];
    let mut print_every = tokio::time::interval(std::time::Duration::from_secs(1));
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending().await } } => break,
            sample = samples.recv() => match sample {
                Some(sample) => {
                    if let Some(slot) = latest.get_mut(sample.tag.0 as usize) { *slot = Some(sample); }
                }
                None => break,
            },
            Ok(assessment) = assessments.recv() => {
                health.retain(|a| a.asset != assessment.asset);
                health.push(assessment);
            }
            _ = print_every.tick() => {
                println!("{}", live_table(&catalog, &latest, &running.stats, clock.now()));
                for a in &health {
                    println!(
                        "  {} ({}): health {:.2}, failure probability {:.2}, {} — {}",
                        a.asset,
                        a.asset_type,
                        a.overall_health,
                        a.failure_probability,
                        a.action.name(),
                        a.reasons.first().map_or("", String::as_str)
                    );
                }
                for report in pipeline_lines.borrow().values() {
                    println!("{}", line_summary(report));
                }
                let raised = serde_json::to_value(desk.snapshot()).unwrap_or_default();
                if raised.as_array().is_some_and(|list| !list.is_empty()) {
                    print!("alerts:\n{}", super::format_alerts(&raised));
                }
            }
        }
    }
    shutdown.cancel();
    while running.tasks.join_next().await.is_some() {}
    let _ = decisions.await;
    let _ = sim.await;
    Ok(())
}

/// One line of the demo: a production line's OEE so far this shift and its biggest loss.
#[cfg(feature = "sim")]
fn line_summary(report: &crate::production::line::LineReport) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0} %", 100.0 * v));
    let f = &report.figures;
    format!(
        "  line {} ({}, shift {}): OEE {} (availability {}, performance {}, quality {}), {:.0} good, {:.0} rejects; {}",
        report.line,
        report.state.map_or("unknown", |s| s.name()),
        report.shift,
        pct(f.oee),
        pct(f.availability),
        pct(f.performance),
        pct(f.quality),
        f.good,
        f.reject,
        report.recommendation.as_deref().unwrap_or("no loss yet"),
    )
}

#[cfg(feature = "sim")]
fn live_table(
    catalog: &[TagInfo],
    latest: &[Option<Sample>],
    stats: &[(String, Arc<crate::sources::DeviceStats>)],
    now: std::time::SystemTime,
) -> String {
    let mut out = String::new();
    let now = humantime::format_rfc3339_seconds(now);
    let _ = writeln!(out, "── {now} ──");
    for (info, sample) in catalog.iter().zip(latest) {
        let (value, quality) = match sample {
            Some(s) => (
                s.value
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
                s.quality.to_string(),
            ),
            None => ("-".into(), "waiting".into()),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<28} {:>14} {:<6} {}",
            info.device,
            info.name,
            value,
            info.unit.as_deref().unwrap_or(""),
            quality
        );
    }
    for (name, s) in stats {
        let s = s.snapshot();
        let _ = writeln!(
            out,
            "{name}: {} requests, {} errors, mean latency {:?}",
            s.requests,
            s.errors(),
            s.mean_latency().unwrap_or_default()
        );
    }
    out
}
