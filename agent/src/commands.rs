//! What the subcommands do, kept out of `main.rs` so that tests can call them.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use firmware_config::{Link, Plan, Table};
use tokio::task::JoinSet;

use crate::app::{tag_catalog, TagInfo};
use crate::bus::SampleBus;
use crate::clock::{Clock, SystemClock};
use crate::sample::{Quality, Sample};
use crate::sources::modbus::{self, plan, Data, PollEvent};

/// Process exit codes (documented in the README).
pub mod exit {
    pub const OK: u8 = 0;
    /// A runtime failure (cannot bind, cannot start).
    pub const FAILURE: u8 = 1;
    /// Wrong command-line usage (clap's own code).
    pub const USAGE: u8 = 2;
    /// The configuration is invalid; every mistake was printed.
    pub const CONFIG: u8 = 3;
    /// `read` finished but at least one tag has no good value.
    pub const READ_INCOMPLETE: u8 = 4;
}

/// What `millwright replay` was asked to do.
pub struct ReplayJob {
    pub input: std::path::PathBuf,
    pub speed: crate::replay::run::Speed,
    pub out: Option<std::path::PathBuf>,
    pub failures: Option<std::path::PathBuf>,
    pub horizon: std::time::Duration,
}

/// Runs a replay with progress on stderr; the summary to print.
pub fn replay(loaded: &crate::app::Loaded, job: ReplayJob) -> anyhow::Result<String> {
    use crate::replay::run;
    use anyhow::Context as _;
    use std::io::{IsTerminal, Write};

    let failures = match &job.failures {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            run::read_failures(loaded, path.clone(), &text)?
        }
        None => Vec::new(),
    };
    let input = std::fs::File::open(&job.input)
        .with_context(|| format!("cannot read {}", job.input.display()))?;
    let mut out: Box<dyn Write> = match &job.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::sink()),
    };
    let options = run::Options {
        speed: job.speed,
        failures,
        horizon: job.horizon,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut shown = 0u64;
    let mut progress = |line: &str| {
        // On a terminal one line rewritten every second; in a log one line every ten.
        shown += 1;
        if terminal {
            eprint!("\r{line}\x1b[K");
        } else if shown % 10 == 1 {
            eprintln!("{line}");
        }
    };
    let summary = run::replay(
        loaded,
        std::io::BufReader::with_capacity(1 << 16, input),
        job.input.clone(),
        &options,
        &mut out,
        &SystemClock,
        &mut progress,
    )?;
    if terminal && shown > 0 {
        eprintln!();
    }
    writeln!(out, "{}", run::summary_json(&summary))?;
    out.flush().context("cannot write the findings")?;
    Ok(run::format_summary(&summary, job.failures.is_some()))
}

/// What `check` prints for a valid plan: devices, tags and the planned requests per poll.
pub fn check_report(loaded: &crate::app::Loaded) -> String {
    let plan = &loaded.plan;
    let mut out = String::new();
    let total: usize = plan
        .devices
        .iter()
        .map(|d| {
            plan::plan_device(d)
                .iter()
                .map(|g| g.requests.len())
                .sum::<usize>()
        })
        .sum();
    let _ = writeln!(
        out,
        "ok: {} device(s), {} bus(es), {} OPC UA endpoint(s), {} tag(s), {} Modbus read request(s) per full cycle",
        plan.devices.len(),
        plan.buses.len(),
        plan.opcua.len(),
        plan.tag_count(),
        total
    );
    for endpoint in &plan.opcua {
        let subscribed = endpoint
            .tags
            .iter()
            .filter(|t| {
                matches!(
                    t.acquisition,
                    firmware_config::Acquisition::Subscribe { .. }
                )
            })
            .count();
        let identity = match &endpoint.identity {
            firmware_config::Identity::Anonymous => "anonymous".to_string(),
            firmware_config::Identity::UserName { username, .. } => format!("user {username:?}"),
            firmware_config::Identity::Certificate { certificate, .. } => {
                format!("certificate {}", certificate.display())
            }
        };
        let _ = writeln!(
            out,
            "opcua {:?} ({}, {} {}, {identity}): {} tags, {subscribed} subscribed, {} polled",
            endpoint.name,
            endpoint.url,
            endpoint.security_policy.name(),
            endpoint.security_mode.name(),
            endpoint.tags.len(),
            endpoint.tags.len() - subscribed,
        );
    }
    for device in &plan.devices {
        let link = match &device.link {
            Link::Tcp { host, port } => format!("tcp {host}:{port}"),
            Link::Rtu { bus } => format!("rtu bus {:?}", plan.buses[*bus].name),
        };
        let _ = writeln!(
            out,
            "device {:?} ({link}, unit {}, {} tags):",
            device.name,
            device.unit_id,
            device.tags.len()
        );
        for group in plan::plan_device(device) {
            let spans: Vec<String> = group
                .requests
                .iter()
                .map(|r| {
                    format!(
                        "{} {}..{}",
                        short_table(r.table),
                        r.start,
                        u32::from(r.start) + u32::from(r.count) - 1
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  every {}: {} request(s): {}",
                humantime::format_duration(group.interval),
                group.requests.len(),
                spans.join(", ")
            );
        }
    }
    for asset in &plan.assets {
        let s = &asset.signals;
        let roles: Vec<String> = [
            ("vibration", s.vibration.is_some()),
            ("bearing_temperature", s.bearing_temperature.is_some()),
            ("winding_temperature", s.winding_temperature.is_some()),
            ("ambient_temperature", s.ambient_temperature.is_some()),
            ("pressure", s.pressure.is_some()),
            ("speed", s.speed.is_some()),
            ("power", s.power.is_some()),
        ]
        .into_iter()
        .filter(|(_, mapped)| *mapped)
        .map(|(role, _)| role.to_string())
        .chain((!s.currents.is_empty()).then(|| format!("{} current(s)", s.currents.len())))
        .collect();
        let model = loaded.models.for_type(&asset.kind).map_or_else(
            || "rules only".to_string(),
            |m| {
                format!(
                    "rules + model {:?} ({} inputs)",
                    m.manifest.name,
                    m.manifest.inputs.len()
                )
            },
        );
        let _ = writeln!(
            out,
            "asset {:?} ({}): {}; {model}; assessed every {}",
            asset.id,
            asset.kind,
            roles.join(", "),
            humantime::format_duration(plan.scoring.assess_interval)
        );
    }
    let alerting = &plan.alerting;
    for limits in &alerting.limits {
        let unit = limits.unit.as_deref().unwrap_or("");
        let levels: Vec<String> = limits
            .limits
            .iter()
            .map(|l| match l.kind {
                firmware_config::LimitKind::Alarm => {
                    format!("alarm when {} ({})", l.value != 0.0, l.severity.name())
                }
                kind => format!("{} {}{unit} ({})", kind.name(), l.value, l.severity.name()),
            })
            .collect();
        let discrete = limits
            .limits
            .iter()
            .all(|l| l.kind == firmware_config::LimitKind::Alarm);
        let deadband = if discrete {
            String::new()
        } else {
            format!("deadband {}{unit}, ", limits.deadband)
        };
        let off_delay = if limits.off_delay.is_zero() {
            String::new()
        } else {
            format!(
                ", off-delay {}",
                humantime::format_duration(limits.off_delay)
            )
        };
        let _ = writeln!(
            out,
            "limits on {:?}: {}; {deadband}on-delay {}{off_delay}{}",
            limits.tag,
            levels.join(", "),
            humantime::format_duration(limits.on_delay),
            if limits.latching { ", latching" } else { "" }
        );
    }
    for (index, output) in alerting.outputs.iter().enumerate() {
        let shows: Vec<String> = alerting
            .indications
            .iter()
            .filter(|i| i.output == index)
            .map(|i| {
                let severities: Vec<&str> = i.severities.iter().map(|s| s.name()).collect();
                format!(
                    "{} when {} {:?}",
                    i.pattern.name(),
                    if severities.is_empty() {
                        "any".to_string()
                    } else {
                        severities.join("/")
                    },
                    i.state
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "output {:?} ({}): {}; otherwise {}, {} on shutdown",
            output.name,
            crate::outputs::describe(&output.target, &plan.devices),
            if shows.is_empty() {
                "no indications".to_string()
            } else {
                shows.join(", then ")
            },
            output.idle.name(),
            output.on_shutdown.name()
        );
    }
    if let Some((tag, _)) = &alerting.acknowledge_tag {
        let _ = writeln!(
            out,
            "acknowledge input: tag {tag:?} (rising edge acknowledges all)"
        );
    }
    if let Some(mqtt) = &plan.mqtt {
        let auth = match (&mqtt.username, &mqtt.client_auth) {
            (Some(user), Some(_)) => format!("user {user:?} + client certificate"),
            (Some(user), None) => format!("user {user:?}"),
            (None, Some(_)) => "client certificate".to_string(),
            (None, None) => "anonymous".to_string(),
        };
        let _ = writeln!(
            out,
            "uplink: {}://{}:{} as {:?} ({auth}), topics under {}/",
            if mqtt.tls { "mqtts" } else { "mqtt" },
            mqtt.host,
            mqtt.port,
            mqtt.client_id,
            mqtt.topic_prefix
        );
        let _ = writeln!(
            out,
            "outbox: {} (at most {} MiB, flushed every {}, summaries every {})",
            plan.outbox.dir.display(),
            plan.outbox.max_bytes >> 20,
            humantime::format_duration(plan.outbox.flush_interval),
            humantime::format_duration(plan.outbox.summary_interval)
        );
    }
    out
}

fn short_table(table: Table) -> &'static str {
    match table {
        Table::Coil => "coils",
        Table::DiscreteInput => "discrete",
        Table::InputRegister => "input",
        Table::HoldingRegister => "holding",
    }
}

/// `millwright read --assess`: one assessment round from the values just read. With a single
/// value per signal there is no trend, so remaining life is not estimated.
pub fn assess_once(loaded: &crate::app::Loaded, rows: &[ReadRow], clock: &dyn Clock) -> String {
    let mut scorer = crate::pipeline::cores(loaded).scorer;
    for sample in rows.iter().filter_map(|r| r.sample.as_ref()) {
        scorer.observe(sample, 0.0);
    }
    let assessments = scorer.assess_all(0.0, clock.now());
    let mut out = String::new();
    if loaded.plan.assets.is_empty() {
        out.push_str("\nno [[assets]] configured: nothing to assess\n");
    }
    for asset in &loaded.plan.assets {
        let Some(a) = assessments.iter().find(|a| a.asset == asset.id) else {
            let _ = writeln!(
                out,
                "\nasset {:?}: no good value for any of its signals",
                asset.id
            );
            continue;
        };
        let dims = [
            ("vibration", a.health.vibration),
            ("thermal", a.health.thermal),
            ("electrical", a.health.electrical),
            ("pressure", a.health.pressure),
        ]
        .into_iter()
        .filter_map(|(name, h)| h.map(|h| format!("{name} {h:.2}")))
        .collect::<Vec<_>>()
        .join(", ");
        let model = a
            .model_probability
            .map_or_else(|| "no model".to_string(), |p| format!("model {p:.2}"));
        let _ = writeln!(
            out,
            "\nasset {:?} ({}): {} (priority {:?})\n  health {:.2} ({dims})\n  failure probability {:.2} (rules {:.2}, {model})",
            a.asset,
            a.asset_type,
            a.action.name(),
            a.priority,
            a.overall_health,
            a.failure_probability,
            a.rule_probability
        );
        for reason in &a.reasons {
            let _ = writeln!(out, "  - {reason}");
        }
    }
    out
}

/// One tag's line in `millwright read`.
#[derive(Debug, Clone)]
pub struct ReadRow {
    pub info: TagInfo,
    pub address: ReadAddress,
    pub raw: Option<String>,
    pub sample: Option<Sample>,
    /// Why the device could not be read, if it could not.
    pub device_error: Option<String>,
}

impl ReadRow {
    pub fn is_good(&self) -> bool {
        self.sample
            .as_ref()
            .is_some_and(|s| s.quality == Quality::Good)
    }
}

/// Where a row's value was read from.
#[derive(Debug, Clone)]
pub enum ReadAddress {
    Modbus(firmware_config::Tag),
    Opcua { node: String },
}

/// Reads every tag of `plan` once (devices named in `only`, or all), through the same poller that
/// `run` uses, and keeps the raw registers so that an addressing mistake is visible.
pub async fn read_once(plan: &Plan, only: &[String]) -> Vec<ReadRow> {
    let mut rows = read_modbus_once(plan, only).await;
    for (index, endpoint) in plan.opcua.iter().enumerate() {
        if only.is_empty() || only.contains(&endpoint.name) {
            let first = plan.opcua_tag_base(index) as u32;
            rows.extend(read_opcua_once(plan, endpoint, first).await);
        }
    }
    rows
}

/// Reads every tag of an OPC UA endpoint once, subscribed ones included, in batches.
async fn read_opcua_once(
    plan: &Plan,
    endpoint: &firmware_config::OpcuaEndpoint,
    first: u32,
) -> Vec<ReadRow> {
    use crate::sources::opcua::{client, convert};
    let row = |i: usize, sample: Option<Sample>, error: Option<String>| {
        let tag = &endpoint.tags[i];
        ReadRow {
            info: TagInfo {
                device: endpoint.name.clone(),
                name: tag.name.clone(),
                unit: tag.unit.clone(),
            },
            address: ReadAddress::Opcua {
                node: tag.node.to_string(),
            },
            raw: None,
            sample,
            device_error: error,
        }
    };
    let files = client::ClientFiles::of(plan);
    let connection = match client::connect(endpoint, &files, "millwright read").await {
        Ok(connection) => connection,
        Err(error) => {
            let text = error.to_string();
            return (0..endpoint.tags.len())
                .map(|i| row(i, None, Some(text.clone())))
                .collect();
        }
    };
    let namespaces = connection
        .session
        .read_namespace_array()
        .await
        .unwrap_or_default();
    let clock = SystemClock;
    let mut rows = Vec::with_capacity(endpoint.tags.len());
    let indices: Vec<usize> = (0..endpoint.tags.len()).collect();
    for batch in indices.chunks(endpoint.max_items_per_request) {
        let mut reads = Vec::new();
        let mut resolved = Vec::new();
        for &i in batch {
            match convert::node_id(&endpoint.tags[i].node, |uri| namespaces.get_index(uri)) {
                Ok(node_id) => {
                    reads.push(opcua::types::ReadValueId {
                        node_id,
                        attribute_id: opcua::types::AttributeId::Value as u32,
                        ..Default::default()
                    });
                    resolved.push(i);
                }
                Err(reason) => rows.push((i, row(i, None, Some(reason)))),
            }
        }
        let answer = tokio::time::timeout(
            endpoint.request_timeout,
            connection
                .session
                .read(&reads, opcua::types::TimestampsToReturn::Both, 0.0),
        )
        .await;
        match answer {
            Ok(Ok(values)) => {
                for (&i, value) in resolved.iter().zip(values) {
                    let tag = crate::sample::TagId(first + i as u32);
                    let sample = convert::sample(tag, value, clock.now());
                    rows.push((i, row(i, Some(sample), None)));
                }
            }
            Ok(Err(e)) => {
                rows.extend(
                    resolved
                        .iter()
                        .map(|&i| (i, row(i, None, Some(e.to_string())))),
                );
            }
            Err(_) => {
                let text = format!("no answer within {:?}", endpoint.request_timeout);
                rows.extend(
                    resolved
                        .iter()
                        .map(|&i| (i, row(i, None, Some(text.clone())))),
                );
            }
        }
    }
    connection.close().await;
    rows.sort_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, row)| row).collect()
}

/// The Modbus devices' part of [`read_once`].
async fn read_modbus_once(plan: &Plan, only: &[String]) -> Vec<ReadRow> {
    let mut plan = plan.clone();
    plan.opcua.clear();
    if !only.is_empty() {
        plan.devices.retain(|d| only.contains(&d.name));
    }
    let catalog: Vec<(TagInfo, &firmware_config::Tag)> = tag_catalog(&plan)
        .into_iter()
        .zip(plan.devices.iter().flat_map(|d| &d.tags))
        .collect();
    let bus = SampleBus::new(catalog.len() + 1);
    let mut subscriber = bus.subscribe();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let raw: Arc<Mutex<HashMap<(String, usize), String>>> = Arc::default();
    let unreachable: Arc<Mutex<HashMap<String, String>>> = Arc::default();

    let lines = modbus::lines(&plan, &clock, &bus).lines;
    drop(bus);
    let mut tasks = JoinSet::new();
    for line in lines {
        let raw = Arc::clone(&raw);
        let unreachable = Arc::clone(&unreachable);
        let mut line = line.with_observer(Box::new(move |event| record(event, &raw, &unreachable)));
        tasks.spawn(async move { line.poll_all_once().await });
    }
    while tasks.join_next().await.is_some() {}

    let mut latest: HashMap<u32, Sample> = HashMap::new();
    while let Some(sample) = subscriber.recv().await {
        latest.insert(sample.tag.0, sample);
    }
    let raw = raw.lock().map(|m| m.clone()).unwrap_or_default();
    let unreachable = unreachable.lock().map(|m| m.clone()).unwrap_or_default();
    let mut index_in_device: HashMap<&str, usize> = HashMap::new();
    catalog
        .iter()
        .enumerate()
        .map(|(id, (info, tag))| {
            let index = index_in_device.entry(info.device.as_str()).or_insert(0);
            let row = ReadRow {
                info: info.clone(),
                address: ReadAddress::Modbus((*tag).clone()),
                raw: raw.get(&(info.device.clone(), *index)).cloned(),
                sample: latest.get(&(id as u32)).cloned(),
                device_error: unreachable.get(&info.device).cloned(),
            };
            *index += 1;
            row
        })
        .collect()
}

fn record(
    event: &PollEvent<'_>,
    raw: &Mutex<HashMap<(String, usize), String>>,
    unreachable: &Mutex<HashMap<String, String>>,
) {
    match event {
        PollEvent::Read {
            device,
            request,
            outcome,
        } => {
            let Ok(mut raw) = raw.lock() else { return };
            for &i in &request.tags {
                let tag = &device.tags[i];
                let offset = usize::from(tag.address - request.start);
                let width = usize::from(tag.width());
                let text = match outcome {
                    Ok(Data::Registers(words)) => words[offset..offset + width]
                        .iter()
                        .map(|w| format!("{w:#06x}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                    Ok(Data::Bits(bits)) => u8::from(bits[offset]).to_string(),
                    Err(fault) => fault.to_string(),
                };
                raw.insert((device.name.clone(), i), text);
            }
        }
        PollEvent::Unreachable { device, fault } => {
            if let Ok(mut map) = unreachable.lock() {
                map.insert(device.name.clone(), fault.to_string());
            }
        }
    }
}

/// TABLE, ADDRESS and TYPE of a Modbus tag: the address as written and, when it differs, the
/// 0-based offset on the wire.
fn modbus_columns(tag: &firmware_config::Tag) -> (String, String, String) {
    let address = if u32::from(tag.address) == tag.written_address {
        tag.address.to_string()
    } else {
        format!("{} (wire {})", tag.written_address, tag.address)
    };
    // The order actually applied, for every register tag: a wrong one shows as swapped bytes in
    // RAW beside a nonsense VALUE.
    let order = tag
        .order_label()
        .map_or_else(String::new, |o| format!(" {o}"));
    let data_type = match tag.bit {
        Some(bit) => format!("bool bit {bit}{order}"),
        None => format!("{}{order}", tag.data_type.name()),
    };
    (tag.table.name().to_string(), address, data_type)
}

/// What kind of value an OPC UA read gave (the server decides the type).
fn value_kind(value: &crate::sample::Value) -> String {
    use crate::sample::Value;
    match value {
        Value::Bool(_) => "bool".into(),
        Value::I64(_) => "integer".into(),
        Value::U64(_) => "unsigned".into(),
        Value::F64(_) => "float".into(),
        Value::Text(_) => "text".into(),
        Value::Time(_) => "datetime".into(),
        Value::Array(items) => format!("array[{}]", items.len()),
    }
}

/// The table `read` prints. The ADDRESS column shows the address as written and the 0-based
/// offset sent on the wire, so a one-off addressing mistake stands out.
pub fn format_read(rows: &[ReadRow]) -> String {
    let mut table = vec![[
        "DEVICE", "TAG", "TABLE", "ADDRESS", "TYPE", "RAW", "VALUE", "UNIT", "QUALITY",
    ]
    .map(String::from)
    .to_vec()];
    for row in rows {
        let (table_name, address, data_type) = match &row.address {
            ReadAddress::Modbus(tag) => modbus_columns(tag),
            ReadAddress::Opcua { node } => (
                "opcua".to_string(),
                node.clone(),
                row.sample
                    .as_ref()
                    .and_then(|s| s.value.as_ref())
                    .map_or_else(|| "-".to_string(), value_kind),
            ),
        };
        let quality = match (&row.sample, &row.device_error) {
            (Some(s), Some(e)) if !s.quality.is_good() => format!("{} ({e})", s.quality),
            (Some(s), _) => s.quality.to_string(),
            (None, Some(e)) => e.clone(),
            (None, None) => "not read".into(),
        };
        table.push(vec![
            row.info.device.clone(),
            row.info.name.clone(),
            table_name,
            address,
            data_type,
            row.raw
                .clone()
                .filter(|_| row.sample.as_ref().is_some_and(|s| s.quality.is_good()))
                .unwrap_or_else(|| "-".into()),
            row.sample
                .as_ref()
                .and_then(|s| s.value.as_ref())
                .map_or_else(|| "-".into(), ToString::to_string),
            row.info.unit.clone().unwrap_or_default(),
            quality,
        ]);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

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
    const SIM: &str = include_str!("../../firmware-config/examples/sim/demo.toml");
    const PLANT: &str = include_str!("../../firmware-config/examples/demo-plant.toml");

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
    let alerts = Arc::new(crate::decisions::alerts::Alerts::open(
        &plan.agent.data_dir,
        None,
    ));
    let loaded = crate::app::Loaded::new(plan).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pipeline = crate::pipeline::Pipeline::build(
        &loaded,
        crate::pipeline::Deps {
            clock: Arc::clone(&clock),
            stop: shutdown.clone(),
            shutdown: shutdown.clone(),
            alerts: Arc::clone(&alerts),
            upstream: None,
        },
    );
    let mut samples = pipeline.bus.subscribe();
    let mut assessments = pipeline.assessments.subscribe();
    let mut running = pipeline.running;
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
                let raised = serde_json::to_value(alerts.snapshot()).unwrap_or_default();
                if raised.as_array().is_some_and(|list| !list.is_empty()) {
                    print!("alerts:\n{}", format_alerts(&raised));
                }
            }
        }
    }
    shutdown.cancel();
    while running.tasks.join_next().await.is_some() {}
    let _ = sim.await;
    Ok(())
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

fn opcua_endpoint<'p>(
    plan: &'p Plan,
    name: &str,
) -> anyhow::Result<&'p firmware_config::OpcuaEndpoint> {
    plan.opcua.iter().find(|e| e.name == name).ok_or_else(|| {
        let known: Vec<&str> = plan.opcua.iter().map(|e| e.name.as_str()).collect();
        anyhow::anyhow!("no [[opcua]] endpoint named {name:?} (defined: {known:?})")
    })
}

/// `millwright trust`: shows the server's certificate and, once confirmed, trusts it.
/// `millwright trust --renew-certificate`: a new application certificate for the configured
/// application URI (the old one is kept beside it).
pub fn renew_certificate(plan: &Plan, endpoint: &str) -> anyhow::Result<String> {
    let endpoint = opcua_endpoint(plan, endpoint)?;
    let files = crate::sources::opcua::client::ClientFiles::of(plan);
    crate::sources::opcua::client::renew_certificate(endpoint, &files).map_err(anyhow::Error::msg)
}

pub async fn trust(plan: &Plan, endpoint: &str, yes: bool) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let endpoint = opcua_endpoint(plan, endpoint)?;
    let pki = crate::sources::opcua::client::pki_dir(&plan.agent.data_dir);
    let certificate = crate::sources::opcua::browse::server_certificate(endpoint, &pki)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    println!(
        "{} ({}) presents this certificate:",
        endpoint.name, endpoint.url
    );
    println!("{certificate}");
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!("not trusted: confirm on a terminal, or pass --yes after checking the thumbprint with the server's administrator");
        }
        print!("Compare the thumbprint with the one the server shows. Trust it? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            anyhow::bail!("not trusted");
        }
    }
    let path =
        crate::sources::opcua::browse::trust(&pki, &certificate).map_err(|e| anyhow::anyhow!(e))?;
    println!("trusted: {}", path.display());
    Ok(())
}

/// `millwright browse`: the address space below a node, for writing `[[opcua.tags]]`.
pub async fn browse(
    plan: &Plan,
    endpoint: &str,
    node: Option<&str>,
    depth: usize,
    limit: usize,
) -> anyhow::Result<String> {
    let endpoint = opcua_endpoint(plan, endpoint)?;
    let start = match node {
        Some(text) => Some(text.parse::<firmware_config::NodeRef>().map_err(|e| {
            anyhow::anyhow!("--node {text:?} is not a NodeId (e.g. ns=2;s=Line1 or nsu=urn:acme:plc;s=Line1): {e}")
        })?),
        None => None,
    };
    let files = crate::sources::opcua::client::ClientFiles::of(plan);
    let nodes =
        crate::sources::opcua::browse::browse(endpoint, &files, start.as_ref(), depth, limit)
            .await?;
    Ok(crate::sources::opcua::browse::format_browse(&nodes))
}

/// Sends an alert command (`ack-alert`, `shelve-alert`, `unshelve-alert`, `status`) to the running
/// agent and returns its reply's result.
pub async fn ask_running_agent(
    plan: &firmware_config::Plan,
    command: &str,
    args: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let socket = crate::control::socket_path(&plan.agent.data_dir);
    let reply = crate::control::request(&socket, command, args)
        .await
        .ok_or_else(|| anyhow::anyhow!("no agent answers on {} (is `millwright run` running with this configuration, and may this user open the socket?)", socket.display()))?;
    if reply["ok"] == true {
        Ok(reply["result"].clone())
    } else {
        anyhow::bail!("{}", reply["error"].as_str().unwrap_or("the agent refused"))
    }
}

/// The alerts as `millwright alerts` lists them.
pub fn format_alerts(alerts: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let list = alerts.as_array().map(Vec::as_slice).unwrap_or_default();
    if list.is_empty() {
        return "no alerts\n".into();
    }
    let mut out = String::new();
    for alert in list {
        let text = |key: &str| alert[key].as_str().unwrap_or("").to_string();
        let shelved = alert["shelved_until"]
            .as_str()
            .map(|until| format!(" (shelved until {until})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<32} {:<8} {:<22} since {}{shelved}\n    {}",
            text("alert_id"),
            text("severity"),
            text("state"),
            text("raised"),
            text("reason")
        );
    }
    out
}

/// What `millwright outbox` does besides showing the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxAction {
    Show,
    /// List the dead letters with their reasons.
    DeadLetters,
    /// Append every dead letter to its stream again (after the cause was fixed).
    RetryDeadLetters,
    /// Remove every dead letter.
    DropDeadLetters,
}

impl OutboxAction {
    /// The control command that does it.
    fn command(self) -> &'static str {
        match self {
            OutboxAction::Show => "status",
            OutboxAction::DeadLetters => "dead-letters",
            OutboxAction::RetryDeadLetters => "retry-dead-letters",
            OutboxAction::DropDeadLetters => "drop-dead-letters",
        }
    }
}

/// What `millwright outbox` prints: asked of the running agent through its control socket, or done
/// on the store itself when no agent runs (showing changes nothing; retrying or dropping dead
/// letters changes only them).
pub async fn outbox_report(
    plan: &firmware_config::Plan,
    action: OutboxAction,
    clock: &dyn Clock,
) -> anyhow::Result<String> {
    use crate::store::sled_store::{OpenError, SledStore};
    use crate::store::{Outbox, OutboxStats};

    let dir = &plan.outbox.dir;
    let socket = crate::control::socket_path(&plan.agent.data_dir);
    let now = clock.now();
    if let Some(reply) =
        crate::control::request(&socket, action.command(), serde_json::json!({})).await
    {
        let result = &reply["result"];
        match action {
            OutboxAction::Show => {
                if let Ok(stats) = serde_json::from_value::<OutboxStats>(result["outbox"].clone()) {
                    return Ok(format_outbox(dir, &stats, "the running agent", now));
                }
            }
            _ if reply["ok"] == true => return Ok(format_dead_letter_result(action, result)),
            _ => anyhow::bail!(
                "the running agent refused: {}",
                reply["error"].as_str().unwrap_or("no reason given")
            ),
        }
    }
    if !dir.exists() {
        anyhow::bail!(
            "no outbox at {} (the agent has not run with [mqtt] and this data_dir yet)",
            dir.display()
        );
    }
    let store = SledStore::open(dir).map_err(|e| match e {
        OpenError::Locked(_) => anyhow::anyhow!(
            "{e}; it does not answer on {}, so it may be starting or stuck",
            socket.display()
        ),
        other => other.into(),
    })?;
    let outbox = Outbox::new(Box::new(store), plan.outbox.max_bytes)?;
    if action == OutboxAction::Show {
        return Ok(format_outbox(
            dir,
            &outbox.stats(),
            "the store (no agent running)",
            now,
        ));
    }
    let result = crate::control::dead_letter_command(&outbox, action.command())
        .map_err(anyhow::Error::msg)?;
    outbox.flush()?;
    Ok(format_dead_letter_result(action, &result))
}

fn format_dead_letter_result(action: OutboxAction, result: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    match action {
        OutboxAction::RetryDeadLetters => format!(
            "{} dead letter(s) appended to their streams again\n",
            result["retried"]
        ),
        OutboxAction::DropDeadLetters => {
            format!("{} dead letter(s) dropped\n", result["dropped"])
        }
        _ => {
            let stats = &result["stats"];
            let mut out =
                format!(
                "dead letters: {} kept ({} bytes of at most {}), {} ever, {} dropped for room\n",
                stats["depth"], stats["bytes"], stats["max_bytes"], stats["total"], stats["dropped"]
            );
            for letter in result["dead_letters"].as_array().into_iter().flatten() {
                let text = |key: &str| letter[key].as_str().unwrap_or("").to_string();
                let _ = writeln!(
                    out,
                    "  #{} {} {} on {:?} ({} bytes), made {}, moved {}: {}",
                    letter["id"],
                    text("class"),
                    text("kind"),
                    text("topic"),
                    letter["bytes"],
                    text("created"),
                    text("buried"),
                    text("reason")
                );
            }
            out
        }
    }
}

fn format_outbox(
    dir: &std::path::Path,
    stats: &crate::store::OutboxStats,
    source: &str,
    now: std::time::SystemTime,
) -> String {
    use crate::store::Class;
    use std::fmt::Write as _;

    let kib = |bytes: u64| match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1048576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1048576.0),
    };
    let mut out = String::new();
    let _ = writeln!(out, "outbox {} (from {source})", dir.display());
    let _ = writeln!(
        out,
        "  {:<10} {:>10} {:>12} {:>10}",
        "class", "queued", "size", "dropped"
    );
    for class in Class::ALL {
        let c = stats.class(class);
        let _ = writeln!(
            out,
            "  {:<10} {:>10} {:>12} {:>10}",
            class.name(),
            c.depth,
            kib(c.bytes),
            c.dropped
        );
    }
    let used = 100.0 * stats.bytes as f64 / stats.max_bytes.max(1) as f64;
    let _ = writeln!(
        out,
        "  total      {:>10} {:>12} {:>10}   ({used:.1} % of {}; {} on disk)",
        stats.depth(),
        kib(stats.bytes),
        stats.dropped(),
        kib(stats.max_bytes),
        kib(stats.size_on_disk)
    );
    match &stats.oldest {
        Some(oldest) => {
            let age = humantime::parse_rfc3339(oldest)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                        .to_string()
                })
                .unwrap_or_else(|| "?".into());
            let _ = writeln!(out, "  oldest record {oldest} ({age} old)");
        }
        None => {
            let _ = writeln!(out, "  empty: everything was delivered");
        }
    }
    let _ = writeln!(
        out,
        "  last id {}; corrupt records removed {}; store errors {}",
        stats.last_id, stats.corrupt, stats.store_errors
    );
    let dead = &stats.dead_letters;
    if dead.depth > 0 || dead.total > 0 {
        let _ = writeln!(
            out,
            "  dead letters {} ({}; {} ever, {} dropped for room){}",
            dead.depth,
            kib(dead.bytes),
            dead.total,
            dead.dropped,
            match (&dead.last_reason, &dead.last_at) {
                (Some(reason), Some(at)) => format!("; last at {at}: {reason}"),
                _ => String::new(),
            }
        );
        if dead.depth > 0 {
            let _ = writeln!(
                out,
                "  see them with --dead-letters; --retry-dead-letters once the cause is fixed, or --drop-dead-letters"
            );
        }
    }
    out
}
