use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::records::{Change, DeviceChanges};
use crate::store::Class;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/sparkplug-node.toml"
);

fn plan() -> firmware_config::Plan {
    firmware_config::load(std::path::Path::new(FIXTURE)).expect("the fixture is valid")
}

fn identity() -> Identity {
    Identity {
        agent: "gw-sp".into(),
        version: "1.2.3".into(),
        config_hash: "abc".into(),
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

struct Node {
    node: Sparkplug,
    stats: Vec<(String, Arc<DeviceStats>)>,
    live: Arc<LiveTags>,
    _dir: Option<tempfile::TempDir>,
}

fn node_in(dir: &std::path::Path) -> Node {
    let plan = plan();
    let config = plan
        .mqtt
        .as_ref()
        .and_then(|m| m.formats.sparkplug.clone())
        .expect("sparkplug");
    let stats: Vec<(String, Arc<DeviceStats>)> = ["plc", "ua"]
        .iter()
        .map(|name| (name.to_string(), Arc::new(DeviceStats::default())))
        .collect();
    for (_, s) in &stats {
        s.online.store(true, Ordering::Relaxed);
    }
    let live = LiveTags::new(plan.tag_count());
    let node = Sparkplug::new(
        &plan,
        &config,
        NodeParts {
            live: Arc::clone(&live),
            sources: stats.clone(),
            data_dir: dir.to_path_buf(),
        },
    );
    Node {
        node,
        stats,
        live,
        _dir: None,
    }
}

fn node() -> Node {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = node_in(dir.path());
    Node {
        _dir: Some(dir),
        ..node
    }
}

fn decode(message: &Message) -> Payload {
    Payload::decode(message.payload.as_slice()).expect("a Sparkplug B payload")
}

fn kind(message: &Message) -> &str {
    message.topic.split('/').nth(2).expect("a message type")
}

fn state(online: bool, timestamp: u64) -> Vec<u8> {
    format!(r#"{{"online": {online}, "timestamp": {timestamp}}}"#).into_bytes()
}

/// Connects and lets the primary host say it is online: the births.
fn born(node: &mut Sparkplug) -> Vec<Message> {
    node.will(&identity(), at(0));
    assert!(
        node.connected(&identity(), at(0)).is_empty(),
        "births wait for the host"
    );
    assert!(!node.ready());
    let incoming = node.incoming(&identity(), "spBv1.0/STATE/scada", &state(true, 10), at(1));
    assert!(node.ready());
    incoming.publish
}

fn record(id: u64, report: Report, created: SystemTime) -> Record {
    Record {
        id,
        class: Class::Summary,
        created_ms: values::millis(created),
        payload: Stored::Report(report),
    }
}

fn changes(device: &str, tag: &str, value: Value, quality: Quality, when: SystemTime) -> Report {
    Report::Changes(Box::new(DeviceChanges {
        device: device.into(),
        changes: vec![Change {
            tag: tag.into(),
            at: when,
            value: Some(value),
            quality,
        }],
    }))
}

#[test]
fn bd_seq_persists_across_restarts_and_wraps_at_255() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bd_seq = |m: &Message| decode(m).metrics[0].value.clone();
    let mut first = node_in(dir.path());
    let will = first.node.will(&identity(), at(0));
    assert_eq!(kind(&will), "NDEATH");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
    assert_eq!(bd_seq(&will), Some(MetricValue::LongValue(0)));
    assert_eq!(decode(&will).seq, None, "NDEATH carries no seq");
    first.node.will(&identity(), at(1));
    assert_eq!(first.node.bd_seq(), 1, "each connection takes the next");
    // A restart (a new node on the same data directory) does not reuse 1.
    drop(first);
    let mut again = node_in(dir.path());
    assert_eq!(
        bd_seq(&again.node.will(&identity(), at(2))),
        Some(MetricValue::LongValue(2))
    );
    crate::files::save_state(
        &dir.path().join("sparkplug/bdseq.json"),
        &SavedBdSeq { bd_seq: 254 },
    )
    .expect("save");
    assert_eq!(
        bd_seq(&again.node.will(&identity(), at(3))),
        Some(MetricValue::LongValue(255))
    );
    assert_eq!(
        bd_seq(&again.node.will(&identity(), at(4))),
        Some(MetricValue::LongValue(0))
    );
}

#[test]
fn births_list_every_metric_with_names_aliases_types_and_values() {
    let mut n = node();
    n.live.update([(
        TagId(0),
        Current {
            value: Some(Value::U64(7)),
            quality: Quality::Good,
            at: at(0),
        },
    )]);
    let births = born(&mut n.node);
    let kinds: Vec<&str> = births.iter().map(kind).collect();
    assert_eq!(
        kinds,
        ["NBIRTH", "DBIRTH", "DBIRTH", "DBIRTH"],
        "the node, plc, ua, P-1"
    );
    assert!(births.iter().all(|m| m.qos == QoS::AtMostOnce && !m.retain));
    let nbirth = decode(&births[0]);
    assert_eq!(nbirth.seq, Some(0));
    let names: Vec<_> = nbirth
        .metrics
        .iter()
        .map(|m| m.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "bdSeq",
            "Node Control/Rebirth",
            "Properties/Version",
            "Properties/Config Hash"
        ]
    );
    assert_eq!(
        nbirth.metrics[1].value,
        Some(MetricValue::BooleanValue(false))
    );
    assert_eq!(
        nbirth.metrics[0].value,
        Some(MetricValue::LongValue(u64::from(n.node.bd_seq())))
    );
    let plc = decode(&births[1]);
    assert_eq!(births[1].topic, "spBv1.0/plant/DBIRTH/gw-sp/plc");
    assert_eq!(plc.seq, Some(1));
    let plc_names: Vec<_> = plc
        .metrics
        .iter()
        .map(|m| m.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        plc_names,
        [
            "u16",
            "i16",
            "u32",
            "i32",
            "u64",
            "i64",
            "f32",
            "f64",
            "pressure",
            "run",
            "batch",
            "Command/Result"
        ]
    );
    let types: Vec<_> = plc
        .metrics
        .iter()
        .map(|m| m.datatype.and_then(DataType::from_u32))
        .collect();
    use DataType as T;
    let expected = [
        T::UInt16,
        T::Int16,
        T::UInt32,
        T::Int32,
        T::UInt64,
        T::Int64,
        T::Float,
        T::Double,
        T::Double,
        T::Boolean,
        T::String,
        T::String,
    ];
    assert_eq!(types, expected.map(Some));
    assert!(plc
        .metrics
        .iter()
        .all(|m| m.alias.is_some() && m.timestamp.is_some()));
    assert_eq!(
        plc.metrics[0].value,
        Some(MetricValue::IntValue(7)),
        "the current value"
    );
    assert_eq!(plc.metrics[1].is_null, Some(true), "no value yet");
    assert_eq!(
        plc.metrics[1]
            .properties
            .as_ref()
            .and_then(|p| p.get("Quality")),
        Some(&PropertyValueKind::IntValue(24)),
        "a value not read yet is not good"
    );
    assert!(
        nbirth.metrics.iter().all(|m| m.properties.is_none()),
        "the node's own metrics carry no quality"
    );
    let pressure = plc.metrics[8].properties.as_ref().expect("properties");
    assert_eq!(
        pressure.get("engUnit"),
        Some(&PropertyValueKind::StringValue("bar".into()))
    );
    assert_eq!(
        pressure.get("scale"),
        Some(&PropertyValueKind::DoubleValue(0.01))
    );
    assert_eq!(
        pressure.get("Quality"),
        Some(&PropertyValueKind::IntValue(24))
    );
    let asset = decode(&births[3]);
    assert_eq!(asset.metrics.len(), catalog::ASSET_METRICS.len());
    // Aliases are unique across the node.
    let mut aliases: Vec<u64> = births
        .iter()
        .flat_map(|m| decode(m).metrics)
        .filter_map(|m| m.alias)
        .collect();
    let count = aliases.len();
    aliases.sort_unstable();
    aliases.dedup();
    assert_eq!(aliases.len(), count);
}

#[test]
fn the_same_configuration_gives_the_same_aliases() {
    let plan = plan();
    let config = plan
        .mqtt
        .as_ref()
        .and_then(|m| m.formats.sparkplug.clone())
        .expect("sparkplug");
    let a = Catalog::new(&plan, &config);
    let b = Catalog::new(
        &firmware_config::load(std::path::Path::new(FIXTURE)).expect("valid"),
        &config,
    );
    let names = |c: &Catalog| c.metrics.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b));
    assert_eq!(a.alias(0, "f64"), b.alias(0, "f64"));
    assert_eq!(a.alias(0, "u16"), Some(4), "after the node's 4 metrics");
}

#[test]
fn seq_runs_from_0_at_nbirth_and_wraps_after_255() {
    let mut n = node();
    let births = born(&mut n.node);
    let mut last = decode(births.last().expect("births")).seq.expect("seq");
    for i in 0..300u64 {
        let report = changes("plc", "f32", Value::F64(i as f64), Quality::Good, at(5));
        let messages = n.node.encode(&record(i, report, at(5)), "gw-sp");
        assert_eq!(messages.len(), 1);
        let seq = decode(&messages[0]).seq.expect("seq");
        assert_eq!(seq, (last + 1) % 256);
        last = seq;
    }
    let reborn = n
        .node
        .incoming(&identity(), "spBv1.0/plant/NCMD/gw-sp", &rebirth(), at(6));
    assert_eq!(
        decode(&reborn.publish[0]).seq,
        Some(0),
        "a rebirth starts again at 0"
    );
    assert_eq!(kind(&reborn.publish[0]), "NBIRTH");
    assert_eq!(reborn.publish.len(), 4);
}

fn rebirth() -> Vec<u8> {
    Payload {
        timestamp: Some(1),
        metrics: vec![Metric {
            name: Some(catalog::REBIRTH.into()),
            datatype: Some(DataType::Boolean as u32),
            value: Some(MetricValue::BooleanValue(true)),
            ..Metric::default()
        }],
        ..Payload::default()
    }
    .encode_to_vec()
}

#[test]
fn every_datatype_round_trips_through_the_payload() {
    use DataType as T;
    let cases = [
        (T::Int8, Value::I64(-128)),
        (T::Int8, Value::I64(127)),
        (T::Int16, Value::I64(-2)),
        (T::Int32, Value::I64(i64::from(i32::MIN))),
        (T::Int64, Value::I64(i64::MIN)),
        (T::UInt8, Value::U64(255)),
        (T::UInt16, Value::U64(65535)),
        (T::UInt32, Value::U64(u64::from(u32::MAX))),
        (T::UInt64, Value::U64(u64::MAX)),
        (T::Float, Value::F64(1.5)),
        (T::Double, Value::F64(-0.125)),
        (T::Boolean, Value::Bool(true)),
        (T::String, Value::Text("grün".into())),
        (T::Text, Value::Text("long".into())),
        (
            T::DateTime,
            Value::Time(SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
        ),
        (
            T::DoubleArray,
            Value::Array(vec![Value::F64(1.0), Value::F64(-2.5)].into()),
        ),
    ];
    for (datatype, value) in cases {
        let metric = Metric {
            name: Some("m".into()),
            datatype: Some(datatype as u32),
            value: values::encode(datatype, &value),
            ..Metric::default()
        };
        let bytes = Payload {
            metrics: vec![metric],
            ..Payload::default()
        }
        .encode_to_vec();
        let back = Payload::decode(bytes.as_slice()).expect("decodes");
        let read = back.metrics[0]
            .value
            .as_ref()
            .and_then(|v| values::decode(datatype, v));
        assert_eq!(read, Some(value.clone()), "{datatype:?}");
    }
    assert_eq!(
        values::encode(T::Int8, &Value::I64(-1)),
        Some(MetricValue::IntValue(255))
    );
    assert_eq!(
        values::encode(T::Int8, &Value::I64(300)),
        None,
        "out of range: sent as null"
    );
    assert_eq!(
        values::decode(T::Int16, &MetricValue::IntValue(u32::MAX)),
        Some(Value::I64(-1)),
        "a sign-extended value from another encoder reads the same"
    );
}

#[test]
fn data_carries_aliases_only_marks_history_and_bad_quality() {
    let mut n = node();
    born(&mut n.node);
    let fresh = n.node.encode(
        &record(
            1,
            changes("plc", "f32", Value::F64(2.0), Quality::Good, at(5)),
            at(5),
        ),
        "gw-sp",
    );
    let metric = &decode(&fresh[0]).metrics[0];
    assert_eq!(fresh[0].topic, "spBv1.0/plant/DDATA/gw-sp/plc");
    assert_eq!(
        (metric.name.as_ref(), metric.datatype),
        (None, None),
        "aliases only"
    );
    assert_eq!(metric.alias, Some(10));
    assert_eq!(metric.is_historical, None);
    assert_eq!(
        metric.properties.as_ref().and_then(|p| p.get("Quality")),
        Some(&PropertyValueKind::IntValue(192)),
        "the birth said not read yet: good is news"
    );
    let again = n.node.encode(
        &record(
            5,
            changes("plc", "f32", Value::F64(2.5), Quality::Good, at(5)),
            at(5),
        ),
        "gw-sp",
    );
    assert_eq!(
        decode(&again[0]).metrics[0].properties,
        None,
        "good quality is not repeated"
    );
    // Made before the births (held while the host was away): historical, with its own time.
    let old = n.node.encode(
        &record(
            2,
            changes(
                "plc",
                "f32",
                Value::F64(3.0),
                Quality::Timeout,
                at(0) - Duration::from_secs(60),
            ),
            at(0),
        ),
        "gw-sp",
    );
    let metric = &decode(&old[0]).metrics[0];
    assert_eq!(metric.is_historical, Some(true));
    assert_eq!(
        metric.timestamp,
        Some(values::millis(at(0) - Duration::from_secs(60)))
    );
    assert_eq!(
        metric.properties.as_ref().and_then(|p| p.get("Quality")),
        Some(&PropertyValueKind::IntValue(24))
    );
    // Back to good: said once.
    let good = n.node.encode(
        &record(
            3,
            changes("plc", "f32", Value::F64(3.0), Quality::Good, at(6)),
            at(6),
        ),
        "gw-sp",
    );
    assert_eq!(
        decode(&good[0]).metrics[0]
            .properties
            .as_ref()
            .and_then(|p| p.get("Quality")),
        Some(&PropertyValueKind::IntValue(192))
    );
    // What Sparkplug does not carry goes nowhere.
    let event = Report::Event(crate::records::Event::new(
        "agent_started",
        serde_json::json!({}),
    ));
    assert!(n.node.encode(&record(4, event, at(6)), "gw-sp").is_empty());
}

#[test]
fn a_device_that_goes_down_gets_ddeath_and_a_dbirth_when_it_returns() {
    let mut n = node();
    born(&mut n.node);
    assert!(n.node.tick(at(2)).is_empty());
    n.stats[0].1.online.store(false, Ordering::Relaxed);
    let death = n.node.tick(at(3));
    assert_eq!(death.len(), 1);
    assert_eq!(death[0].topic, "spBv1.0/plant/DDEATH/gw-sp/plc");
    assert!(decode(&death[0]).seq.is_some());
    assert!(n.node.tick(at(4)).is_empty(), "once");
    n.stats[0].1.online.store(true, Ordering::Relaxed);
    let birth = n.node.tick(at(5));
    assert_eq!(birth.iter().map(kind).collect::<Vec<_>>(), ["DBIRTH"]);
}

#[test]
fn the_primary_host_gates_births_and_its_offline_state_ends_the_session() {
    let mut n = node();
    n.node.will(&identity(), at(0));
    assert!(n.node.connected(&identity(), at(0)).is_empty());
    let offline = n
        .node
        .incoming(&identity(), "spBv1.0/STATE/scada", &state(false, 5), at(1));
    assert!(
        offline.publish.is_empty() && !offline.reconnect,
        "not born yet: nothing to end"
    );
    assert!(!n.node.ready());
    let online = n
        .node
        .incoming(&identity(), "spBv1.0/STATE/scada", &state(true, 10), at(2));
    assert_eq!(kind(&online.publish[0]), "NBIRTH");
    let stale = n
        .node
        .incoming(&identity(), "spBv1.0/STATE/scada", &state(false, 9), at(3));
    assert!(
        !stale.reconnect,
        "an offline STATE older than the online one is ignored"
    );
    let gone = n
        .node
        .incoming(&identity(), "spBv1.0/STATE/scada", &state(false, 11), at(4));
    assert!(gone.reconnect);
    assert!(
        !n.node.ready(),
        "nothing more is sent, not even while the session closes"
    );
    let farewell = n.node.farewell(&identity(), at(4));
    assert_eq!(kind(&farewell[0]), "NDEATH");
    // The next connection waits again.
    n.node.will(&identity(), at(5));
    assert!(n.node.connected(&identity(), at(5)).is_empty());
    assert!(!n.node.ready());
}

fn dcmd(metric: &str, value: MetricValue) -> Vec<u8> {
    Payload {
        metrics: vec![Metric {
            name: Some(metric.into()),
            value: Some(value),
            ..Metric::default()
        }],
        ..Payload::default()
    }
    .encode_to_vec()
}

#[test]
fn dcmd_writes_only_the_allowed_tags() {
    let mut n = node();
    born(&mut n.node);
    let topic = "spBv1.0/plant/DCMD/gw-sp/plc";
    let allowed = n.node.incoming(
        &identity(),
        topic,
        &dcmd("u16", MetricValue::IntValue(42)),
        at(2),
    );
    assert_eq!(allowed.writes.len(), 1);
    assert_eq!(allowed.writes[0].tag.name, "u16");
    assert_eq!(allowed.writes[0].value, Value::U64(42));
    assert!(allowed.publish.is_empty());
    let result = n.node.written(&allowed.writes[0], Ok(()), at(3));
    let reported = decode(&result[0]);
    assert_eq!(
        reported.metrics[0].value,
        Some(MetricValue::StringValue("ok: u16 = 42".into()))
    );
    for (metric, value) in [
        ("i16", MetricValue::IntValue(1)),
        ("nope", MetricValue::IntValue(1)),
        ("run", MetricValue::IntValue(1)),
    ] {
        let refused = n
            .node
            .incoming(&identity(), topic, &dcmd(metric, value), at(4));
        assert!(refused.writes.is_empty(), "{metric} must not be written");
        let text = match decode(&refused.publish[0]).metrics[0].value.clone() {
            Some(MetricValue::StringValue(text)) => text,
            other => panic!("a result, not {other:?}"),
        };
        assert!(text.starts_with("refused:"), "{text}");
    }
    let garbage = n.node.incoming(&identity(), topic, b"\xff\xff\xff", at(5));
    assert!(garbage.writes.is_empty());
    let unknown = n.node.incoming(
        &identity(),
        "spBv1.0/plant/DCMD/gw-sp/ghost",
        &dcmd("u16", MetricValue::IntValue(1)),
        at(5),
    );
    assert!(unknown.writes.is_empty() && unknown.publish.is_empty());
}

#[test]
fn an_asset_named_after_its_plc_joins_its_device() {
    let text = std::fs::read_to_string(FIXTURE)
        .expect("fixture")
        .replace("id = \"P-1\"", "id = \"plc\"");
    let plan = firmware_config::load_str(std::path::Path::new(FIXTURE), &text).expect("valid");
    let config = plan
        .mqtt
        .as_ref()
        .and_then(|m| m.formats.sparkplug.clone())
        .expect("sparkplug");
    let catalog = Catalog::new(&plan, &config);
    let names: Vec<&str> = catalog.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["plc", "ua"]);
    let plc = &catalog.devices[0];
    assert_eq!(plc.kind, DeviceKind::Modbus, "up and down with the PLC");
    assert!(plc.by_name.contains_key("f32") && plc.by_name.contains_key("health"));
    assert_eq!(plc.aliases.len(), 12 + catalog::ASSET_METRICS.len());
    let ua = catalog.alias(1, "ua.temperature").expect("ua");
    assert!(
        plc.aliases.iter().all(|a| *a != ua),
        "aliases stay unique: the asset's follow the OPC UA tag's"
    );
}

#[test]
fn the_figure_types_match_the_names_check_knows() {
    assert_eq!(catalog::ASSET_METRICS.len(), catalog::ASSET_TYPES.len());
    assert_eq!(catalog::LINE_METRICS.len(), catalog::LINE_TYPES.len());
    assert_eq!(catalog::STATION_METRICS.len(), catalog::STATION_TYPES.len());
    let figures = |report: Vec<(String, Option<Value>)>| -> Vec<String> {
        report.into_iter().map(|(name, _)| name).collect()
    };
    let assessment: crate::health::assess::Assessment = serde_json::from_value(serde_json::json!({
        "schema": 1, "asset": "P-1", "asset_type": "pump", "timestamp": "2026-01-01T00:00:00.000Z",
        "health": {}, "overall_health": 0.9, "failure_probability": 0.1, "rule_probability": 0.1,
        "model_probability": null, "action": "routine_monitoring", "priority": "low", "maintenance_due": null,
        "remaining_life_hours": null, "remaining_life_note": null, "reasons": []
    }))
    .expect("an assessment");
    assert_eq!(figures(figures::asset(&assessment)), catalog::ASSET_METRICS);
    assert_eq!(
        catalog::VIBRATION_METRICS.len(),
        catalog::VIBRATION_TYPES.len()
    );
}

#[test]
fn an_asset_with_a_waveform_publishes_its_vibration_figures_and_diagnosis() {
    use crate::vibration::synth::{Fault, Machine};
    let machine = Machine::motor(Fault::OuterRace, 3);
    let (settings, bearings) = machine.settings();
    let analysis = crate::vibration::analyze(
        &mut crate::vibration::dsp::Analyzer::new(),
        &machine.waveform(),
        &settings,
        &bearings,
        Some(machine.shaft_hz),
        None,
    )
    .expect("analysed");
    let mut assessment: crate::health::assess::Assessment = serde_json::from_value(serde_json::json!({
        "schema": 1, "asset": "M-1", "asset_type": "motor", "timestamp": "2026-01-01T00:00:00.000Z",
        "health": {}, "overall_health": 0.6, "failure_probability": 0.4, "rule_probability": 0.4,
        "model_probability": null, "action": "scheduled_maintenance", "priority": "medium",
        "maintenance_due": null, "remaining_life_hours": null, "remaining_life_note": null, "reasons": []
    }))
    .expect("an assessment");
    assessment.vibration = Some(Box::new(analysis.report));
    let published = figures::asset(&assessment);
    let names: Vec<&str> = published.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = catalog::ASSET_METRICS
        .iter()
        .chain(&catalog::VIBRATION_METRICS)
        .copied()
        .collect();
    assert_eq!(names, expected);
    let value = |name: &str| {
        published
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.clone())
    };
    assert!(
        matches!(value("vibration/diagnosis"), Some(Value::Text(t)) if t.starts_with("outer race defect suspected")),
        "{published:?}"
    );
    assert!(
        matches!(value("vibration/bearing_defect_db"), Some(Value::F64(db)) if db >= 8.0),
        "{published:?}"
    );
}
