//! `millwright read [--assess]`: every tag once, raw and decoded, and one assessment round.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use firmware_config::Plan;
use tokio::task::JoinSet;

use crate::app::{tag_catalog, TagInfo};
use crate::bus::SampleBus;
use crate::clock::{Clock, SystemClock};
use crate::sample::{Quality, Sample};
use crate::sources::modbus::{self, Data, PollEvent};

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
            rows.extend(read_opcua_once(plan, index).await);
        }
    }
    rows
}

/// Reads every tag of an OPC UA endpoint once, subscribed ones included, through the endpoint's
/// own poll path.
async fn read_opcua_once(plan: &Plan, index: usize) -> Vec<ReadRow> {
    let endpoint = &plan.opcua[index];
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
    // Room for every sample of the endpoint: nothing reads the bus until the reads are done.
    let bus = SampleBus::new(endpoint.tags.len() + 1);
    let mut samples = bus.subscribe();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (mut sources, _) = crate::sources::opcua::endpoints(plan, &clock, &bus);
    let source = sources.swap_remove(index);
    let outcome = source.read_all_once().await;
    drop(sources);
    drop(source);
    drop(bus);
    let mut read: Vec<Option<Sample>> = vec![None; endpoint.tags.len()];
    let first = plan.opcua_tag_base(index) as u32;
    while let Some(sample) = samples.recv().await {
        let slot = sample.tag.0.checked_sub(first).map(|i| i as usize);
        if let Some(slot) = slot.and_then(|i| read.get_mut(i)) {
            *slot = Some(sample);
        }
    }
    match outcome {
        Err(error) => (0..endpoint.tags.len())
            .map(|i| row(i, None, Some(error.to_string())))
            .collect(),
        Ok(unresolved) => read
            .into_iter()
            .enumerate()
            .map(
                |(i, sample)| match unresolved.iter().find(|(u, _)| *u == i) {
                    Some((_, why)) => row(i, None, Some(why.to_string())),
                    None => row(i, sample, None),
                },
            )
            .collect(),
    }
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
        .zip(plan.devices.iter().flat_map(|d| d.tags.iter()))
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
