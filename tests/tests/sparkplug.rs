//! Sparkplug B end to end: the agent binary polls a simulated PLC and speaks Sparkplug B 3.0 to a
//! real broker, and a Sparkplug host written here (it decodes with prost, and with `protoc` and the
//! vendored Tahu .proto) checks what a host relies on: births before data, sequence numbers,
//! rebirth, DDEATH/DBIRTH, bdSeq continuity across a broker outage and a SIGKILL, primary host
//! STATE gating with history replayed after the births, and writes only where allowed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use firmware_config::Table;
use millwright::uplink::encode::sparkplug::proto::{Metric, MetricValue, Payload};
use millwright_tests::mqtt::{local_options, start_broker, Consumer, Message, Relay};
use millwright_tests::{AgentProcess, Sim};
use prost::Message as _;
use rumqttc::QoS;

const SIM: &str = include_str!("../fixtures/sparkplug-sim.toml");
const AGENT: &str = include_str!("../fixtures/sparkplug-agent.toml");
const NODE: &str = "spBv1.0/plant";

/// The fixture pointed at the simulator, with `extra` lines in `[mqtt.sparkplug]`.
fn config(data_dir: &Path, sim_port: u16, mqtt_port: u16, extra: &str) -> String {
    let agent = AGENT
        .replace(
            "host = \"127.0.0.1\"",
            &format!("host = \"127.0.0.1\"\nport = {sim_port}"),
        )
        .replace("[agent]\n", &format!("[agent]\ndata_dir = {data_dir:?}\n"));
    format!(
        "{agent}{}format = \"sparkplug\"\nkeep_alive = \"5s\"\n\n[mqtt.sparkplug]\ngroup_id = \"plant\"\ndata_interval = \"100ms\"\nwritable = [\"setpoint\"]\n{extra}\n",
        millwright_tests::uplink_toml(mqtt_port)
    )
}

/// One Sparkplug message as the host saw it.
#[derive(Debug, Clone)]
struct Sp {
    kind: String,
    device: Option<String>,
    payload: Payload,
}

fn sparkplug(messages: &[Message]) -> Vec<Sp> {
    messages
        .iter()
        .filter_map(|m| {
            let rest = m.topic.strip_prefix(NODE)?.strip_prefix('/')?;
            let mut parts = rest.split('/');
            let kind = parts.next()?.to_string();
            assert_eq!(parts.next(), Some("gw-sp"), "edge node id: {}", m.topic);
            let device = parts.next().map(str::to_string);
            assert!(
                !m.retain,
                "Sparkplug node messages are not retained: {}",
                m.topic
            );
            let payload = Payload::decode(m.payload.as_slice())
                .unwrap_or_else(|e| panic!("{} is not a Sparkplug B payload: {e}", m.topic));
            Some(Sp {
                kind,
                device,
                payload,
            })
        })
        .collect()
}

fn bd_seq(payload: &Payload) -> Option<u64> {
    payload
        .metrics
        .iter()
        .find_map(|m| match (&m.name, &m.value) {
            (Some(name), Some(MetricValue::LongValue(v))) if name == "bdSeq" => Some(*v),
            _ => None,
        })
}

/// Checks the host's rules over everything seen so far: births before data, `seq` from 0 at each
/// NBIRTH and consecutive (mod 256) on every other node message, DDATA only for devices with a
/// DBIRTH in force, data by alias only.
fn check_session_rules(seen: &[Sp]) {
    let mut expected: Option<u64> = None;
    let mut born: HashMap<String, bool> = HashMap::new();
    for (i, m) in seen.iter().enumerate() {
        let at = format!("message {i} ({} {:?})", m.kind, m.device);
        if m.kind.ends_with("CMD") {
            continue; // the host's own commands
        }
        match m.kind.as_str() {
            "NDEATH" => {
                assert_eq!(m.payload.seq, None, "{at}: NDEATH has no seq");
                expected = None;
                born.clear();
                continue;
            }
            "NBIRTH" => {
                assert_eq!(m.payload.seq, Some(0), "{at}: NBIRTH starts at 0");
                born.clear();
            }
            _ => {
                let expected = expected.unwrap_or_else(|| panic!("{at} before any NBIRTH"));
                assert_eq!(m.payload.seq, Some(expected), "{at}: seq");
            }
        }
        expected = Some((m.payload.seq.expect("seq") + 1) % 256);
        let device = m.device.clone().unwrap_or_default();
        match m.kind.as_str() {
            "DBIRTH" => {
                born.insert(device, true);
            }
            "DDEATH" => {
                born.insert(device, false);
            }
            "DDATA" => {
                assert!(
                    born.get(&device).copied().unwrap_or(false),
                    "{at}: DDATA without a DBIRTH in force"
                );
                assert!(
                    m.payload
                        .metrics
                        .iter()
                        .all(|metric| metric.name.is_none() && metric.alias.is_some()),
                    "{at}: DDATA carries aliases only"
                );
            }
            _ => {}
        }
    }
}

fn aliases(birth: &Payload) -> HashMap<String, u64> {
    birth
        .metrics
        .iter()
        .filter_map(|m| Some((m.name.clone()?, m.alias?)))
        .collect()
}

fn command(metric: &str, value: MetricValue) -> Vec<u8> {
    Payload {
        timestamp: Some(1),
        metrics: vec![Metric {
            name: Some(metric.into()),
            value: Some(value),
            ..Metric::default()
        }],
        ..Payload::default()
    }
    .encode_to_vec()
}

/// The latest `Command/Result` the plc reported.
fn command_result(seen: &[Sp]) -> Option<String> {
    let alias = seen
        .iter()
        .rev()
        .find(|m| m.kind == "DBIRTH" && m.device.as_deref() == Some("plc"))
        .map(|m| aliases(&m.payload))?
        .get("Command/Result")
        .copied()?;
    seen.iter()
        .rev()
        .filter(|m| m.kind == "DDATA" && m.device.as_deref() == Some("plc"))
        .flat_map(|m| m.payload.metrics.iter())
        .find_map(|metric| match (&metric.alias, &metric.value) {
            (Some(a), Some(MetricValue::StringValue(text))) if *a == alias => Some(text.clone()),
            _ => None,
        })
}

async fn wait_for(host: &Consumer, within: Duration, done: impl Fn(&[Sp]) -> bool) -> Vec<Sp> {
    host.wait_until(within, |m| done(&sparkplug(m))).await;
    sparkplug(&host.messages())
}

fn count(seen: &[Sp], kind: &str, device: Option<&str>) -> usize {
    seen.iter()
        .filter(|m| m.kind == kind && m.device.as_deref() == device)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn births_rebirth_device_death_and_writes_only_where_allowed() {
    let broker = start_broker().await;
    let host = Consumer::connect(local_options("host", broker), "spBv1.0/#").await;
    let sim = Sim::start(SIM, 0).await;
    let port = sim.addr.port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config(&dir.path().join("data"), port, broker, "")).expect("config");
    let agent = AgentProcess::spawn(&path);

    let seen = wait_for(&host, Duration::from_secs(30), |s| {
        count(s, "DDATA", Some("plc")) >= 5
    })
    .await;
    assert!(count(&seen, "DDATA", Some("plc")) >= 5, "no data: {seen:?}");
    assert_eq!(seen[0].kind, "NBIRTH", "the node's birth comes first");
    let nbirth = &seen[0].payload;
    let names: Vec<_> = nbirth
        .metrics
        .iter()
        .filter_map(|m| m.name.clone())
        .collect();
    assert!(
        names.contains(&"Node Control/Rebirth".to_string()),
        "{names:?}"
    );
    let bd = bd_seq(nbirth).expect("NBIRTH carries bdSeq");
    let dbirth = seen
        .iter()
        .find(|m| m.kind == "DBIRTH" && m.device.as_deref() == Some("plc"))
        .expect("DBIRTH of plc");
    let plc = aliases(&dbirth.payload);
    for tag in ["temperature", "parts", "setpoint", "Command/Result"] {
        assert!(plc.contains_key(tag), "DBIRTH lacks {tag}: {plc:?}");
    }
    check_session_rules(&seen);

    // Rebirth: a new NBIRTH (same bdSeq, seq 0) and the DBIRTHs again, with no NDEATH.
    let before = seen.len();
    host.client
        .publish(
            format!("{NODE}/NCMD/gw-sp"),
            QoS::AtLeastOnce,
            false,
            command("Node Control/Rebirth", MetricValue::BooleanValue(true)),
        )
        .await
        .expect("NCMD");
    let seen = wait_for(&host, Duration::from_secs(10), |s| {
        count(&s[before.min(s.len())..], "DBIRTH", Some("plc")) >= 1
    })
    .await;
    let after: Vec<_> = seen[before..].iter().map(|m| m.kind.as_str()).collect();
    assert!(after.contains(&"NBIRTH"), "no rebirth: {after:?}");
    assert!(
        !after.contains(&"NDEATH"),
        "a rebirth sends no NDEATH: {after:?}"
    );
    let reborn = seen[before..]
        .iter()
        .find(|m| m.kind == "NBIRTH")
        .expect("NBIRTH");
    assert_eq!(bd_seq(&reborn.payload), Some(bd));
    check_session_rules(&seen);

    // A write to a tag that is not writable is refused and never reaches the PLC; an allowed one
    // is written and reported.
    let machine = sim.plant.machine(1).expect("plc");
    host.client
        .publish(
            format!("{NODE}/DCMD/gw-sp/plc"),
            QoS::AtLeastOnce,
            false,
            command("parts", MetricValue::IntValue(7)),
        )
        .await
        .expect("DCMD");
    let seen = wait_for(&host, Duration::from_secs(10), |s| {
        command_result(s).is_some_and(|r| r.starts_with("refused"))
    })
    .await;
    let refused = command_result(&seen).unwrap_or_default();
    assert!(refused.contains("not writable"), "{refused}");
    assert!(machine.writes(Table::HoldingRegister, 2).is_empty());
    host.client
        .publish(
            format!("{NODE}/DCMD/gw-sp/plc"),
            QoS::AtLeastOnce,
            false,
            command("setpoint", MetricValue::IntValue(1450)),
        )
        .await
        .expect("DCMD");
    let seen = wait_for(&host, Duration::from_secs(10), |s| {
        command_result(s).is_some_and(|r| r.starts_with("ok"))
    })
    .await;
    assert_eq!(
        command_result(&seen).as_deref(),
        Some("ok: setpoint = 1450")
    );
    assert_eq!(machine.writes(Table::HoldingRegister, 4), [1450]);

    // The PLC goes away: DDEATH; it comes back on the same port: DBIRTH.
    sim.stop().await;
    let seen = wait_for(&host, Duration::from_secs(15), |s| {
        count(s, "DDEATH", Some("plc")) >= 1
    })
    .await;
    assert_eq!(count(&seen, "DDEATH", Some("plc")), 1, "{seen:?}");
    let births = count(&seen, "DBIRTH", Some("plc"));
    let sim = Sim::start(SIM, port).await;
    let seen = wait_for(&host, Duration::from_secs(20), |s| {
        count(s, "DBIRTH", Some("plc")) > births
    })
    .await;
    assert!(
        count(&seen, "DBIRTH", Some("plc")) > births,
        "no DBIRTH after the PLC returned"
    );
    check_session_rules(&seen);

    // A clean stop: the node's own NDEATH, with the bdSeq of its births.
    agent.terminate().await;
    let seen = wait_for(&host, Duration::from_secs(10), |s| {
        s.iter().any(|m| m.kind == "NDEATH")
    })
    .await;
    let death = seen.iter().find(|m| m.kind == "NDEATH").expect("NDEATH");
    assert_eq!(bd_seq(&death.payload), Some(bd));
    sim.stop().await;
}

/// What `protoc --decode` makes of `payload` with agent/proto/sparkplug_b.proto.
fn protoc_decode(payload: &[u8]) -> String {
    use std::io::Write as _;
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/proto");
    let mut child = std::process::Command::new("protoc")
        .args([
            "--decode=org.eclipse.tahu.protobuf.Payload",
            "-I",
            proto_dir,
            "sparkplug_b.proto",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("protoc runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(payload)
        .expect("write");
    let out = child.wait_with_output().expect("protoc output");
    assert!(
        out.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

millwright_tests::needs! { protoc
/// The payloads decode with the Tahu .proto itself (through protoc), not only with the agent's
/// own prost declarations.
#[test]
fn the_tahu_proto_reads_what_the_agent_writes() {
    use millwright::uplink::encode::sparkplug::{LiveTags, NodeParts, Sparkplug};
    use millwright::uplink::encode::{Encoder, Identity};
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config(&dir.path().join("data"), 502, 1883, "");
    let plan = firmware_config::load_str(Path::new("agent.toml"), &text).expect("valid");
    let node = plan.mqtt.as_ref().and_then(|m| m.formats.sparkplug.clone()).expect("sparkplug");
    let stats = std::sync::Arc::new(millwright::sources::DeviceStats::default());
    stats.online.store(true, std::sync::atomic::Ordering::Relaxed);
    let live = LiveTags::new(plan.tag_count());
    let mut sparkplug = Sparkplug::new(
        &plan,
        &node,
        NodeParts { live, sources: vec![("plc".into(), stats)], data_dir: dir.path().into() },
    );
    let identity = Identity { agent: "gw-sp".into(), version: "1.0".into(), config_hash: "c0ffee".into() };
    let now = std::time::SystemTime::now();
    let will = sparkplug.will(&identity, now);
    let births = sparkplug.connected(&identity, now);
    let nbirth = protoc_decode(&births[0].payload);
    for expected in ["name: \"bdSeq\"", "name: \"Node Control/Rebirth\"", "boolean_value: false", "seq: 0", "datatype: 11"] {
        assert!(nbirth.contains(expected), "protoc's NBIRTH lacks {expected}:\n{nbirth}");
    }
    let dbirth = protoc_decode(&births[1].payload);
    for expected in ["name: \"temperature\"", "datatype: 9", "name: \"setpoint\"", "datatype: 6", "\"engUnit\"", "string_value: \"rpm\"", "seq: 1"] {
        assert!(dbirth.contains(expected), "protoc's DBIRTH lacks {expected}:\n{dbirth}");
    }
    let ndeath = protoc_decode(&will.payload);
    assert!(ndeath.contains("long_value: 0") && !ndeath.contains("seq:"), "{ndeath}");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bd_seq_continues_across_a_broker_outage_and_a_sigkill() {
    let broker = start_broker().await;
    let host = Consumer::connect(local_options("host", broker), "spBv1.0/#").await;
    let mut relay = Relay::start(([127, 0, 0, 1], broker).into()).await;
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let data = dir.path().join("data");
    std::fs::write(&path, config(&data, sim.addr.port(), relay.port, "")).expect("config");

    let nbirths = |s: &[Sp]| s.iter().filter(|m| m.kind == "NBIRTH").count();
    let agent = AgentProcess::spawn(&path);
    let seen = wait_for(&host, Duration::from_secs(30), |s| nbirths(s) >= 1).await;
    let first = seen
        .iter()
        .find(|m| m.kind == "NBIRTH")
        .and_then(|m| bd_seq(&m.payload));
    let first = first.expect("NBIRTH with bdSeq");

    // The broker vanishes: it publishes the will, whose bdSeq is the births'.
    relay.cut();
    let seen = wait_for(&host, Duration::from_secs(20), |s| {
        s.iter().any(|m| m.kind == "NDEATH")
    })
    .await;
    let will = seen.iter().find(|m| m.kind == "NDEATH").expect("the will");
    assert_eq!(bd_seq(&will.payload), Some(first));
    relay.restore().await;
    let seen = wait_for(&host, Duration::from_secs(30), |s| nbirths(s) >= 2).await;
    let second = seen
        .iter()
        .filter(|m| m.kind == "NBIRTH")
        .nth(1)
        .and_then(|m| bd_seq(&m.payload))
        .expect("a new NBIRTH");
    assert_ne!(second, first, "a new connection, a new bdSeq");

    // SIGKILL: the broker publishes the will of the last connection; the restarted agent takes
    // the next bdSeq rather than one the host has seen.
    agent.kill().await;
    let seen = wait_for(&host, Duration::from_secs(20), |s| {
        s.iter().filter(|m| m.kind == "NDEATH").count() >= 2
    })
    .await;
    let will = seen
        .iter()
        .filter(|m| m.kind == "NDEATH")
        .nth(1)
        .expect("the will");
    assert_eq!(
        bd_seq(&will.payload),
        Some(second),
        "the will matches the last NBIRTH"
    );
    let agent = AgentProcess::spawn(&path);
    let seen = wait_for(&host, Duration::from_secs(30), |s| nbirths(s) >= 3).await;
    let third = seen
        .iter()
        .filter(|m| m.kind == "NBIRTH")
        .nth(2)
        .and_then(|m| bd_seq(&m.payload))
        .expect("NBIRTH after the restart");
    assert!(
        third != first && third != second,
        "bdSeq {third} reused after a restart (seen {first}, {second})"
    );
    check_session_rules(&seen);
    agent.terminate().await;
    sim.stop().await;
}

fn state(online: bool, timestamp: u64) -> Vec<u8> {
    format!(r#"{{"online":{online},"timestamp":{timestamp}}}"#).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_waits_for_the_primary_host_and_is_replayed_as_history_after_the_births() {
    let broker = start_broker().await;
    let host = Consumer::connect(local_options("scada", broker), "spBv1.0/#").await;
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let extra = "primary_host = \"scada\"";
    std::fs::write(
        &path,
        config(&dir.path().join("data"), sim.addr.port(), broker, extra),
    )
    .expect("config");
    let agent = AgentProcess::spawn(&path);
    let state_topic = "spBv1.0/STATE/scada";

    // No host yet: no births, no data.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        sparkplug(&host.messages()).is_empty(),
        "published before the host was online"
    );
    let publish_state = |online, timestamp| {
        let client = host.client.clone();
        async move {
            client
                .publish(
                    state_topic,
                    QoS::AtLeastOnce,
                    true,
                    state(online, timestamp),
                )
                .await
                .expect("STATE");
        }
    };
    publish_state(true, 1000).await;
    let live =
        |m: &Sp| m.kind == "DDATA" && m.payload.metrics.iter().all(|x| x.is_historical.is_none());
    let seen = wait_for(&host, Duration::from_secs(20), |s| {
        s.iter().filter(|m| live(m)).count() >= 3
    })
    .await;
    assert_eq!(seen[0].kind, "NBIRTH");
    assert!(
        seen.iter().filter(|m| live(m)).count() >= 3,
        "no live data: {seen:?}"
    );

    // The host goes offline: the node says NDEATH and sends nothing more while it is away.
    publish_state(false, 2000).await;
    let seen = wait_for(&host, Duration::from_secs(10), |s| {
        s.iter().any(|m| m.kind == "NDEATH")
    })
    .await;
    let quiet_from = seen.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<_> = sparkplug(&host.messages())[quiet_from..]
        .iter()
        .map(|m| m.kind.clone())
        .collect();
    assert!(
        during.is_empty(),
        "published while the host was offline: {during:?}"
    );

    // It returns: births first, then the held data in order marked historical, then live data.
    let returned_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_millis() as u64;
    publish_state(true, 3000).await;
    let seen = wait_for(&host, Duration::from_secs(20), |s| {
        s[quiet_from.min(s.len())..].iter().any(|m| {
            m.kind == "DDATA" && m.payload.metrics.iter().all(|x| x.is_historical.is_none())
        })
    })
    .await;
    let replay = &seen[quiet_from..];
    assert_eq!(
        replay[0].kind,
        "NBIRTH",
        "{:?}",
        replay.iter().map(|m| &m.kind).collect::<Vec<_>>()
    );
    let first_data = replay.iter().position(|m| m.kind == "DDATA").expect("data");
    assert!(replay[..first_data].iter().any(|m| m.kind == "DBIRTH"));
    let historical: Vec<&Metric> = replay
        .iter()
        .filter(|m| m.kind == "DDATA")
        .flat_map(|m| m.payload.metrics.iter())
        .filter(|metric| metric.is_historical == Some(true))
        .collect();
    assert!(
        historical.len() >= 10,
        "about 3 s of held changes replayed: {} historical metrics",
        historical.len()
    );
    assert!(historical
        .iter()
        .all(|m| m.timestamp.is_some_and(|t| t < returned_at)));
    let parts_alias = aliases(
        &replay
            .iter()
            .find(|m| m.kind == "DBIRTH" && m.device.as_deref() == Some("plc"))
            .expect("DBIRTH")
            .payload,
    )["parts"];
    let times: Vec<u64> = historical
        .iter()
        .filter(|m| m.alias == Some(parts_alias))
        .filter_map(|m| m.timestamp)
        .collect();
    assert!(times.len() >= 5, "the part counter's history: {times:?}");
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in order: {times:?}"
    );
    check_session_rules(&seen);
    agent.terminate().await;
    sim.stop().await;
}

millwright_tests::needs! { mosquitto
/// Against Debian's mosquitto: births and data flow with only 4 records in flight, which works
/// only if the broker's SUBACK to the fence confirms the QoS 0 DDATA before it (else the window
/// stays full after 4), and a SIGKILL makes mosquitto publish the will with the births' bdSeq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_against_mosquitto_confirms_qos_0_data_and_leaves_its_will() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mosquitto = millwright_tests::mqtt::Mosquitto::start(dir.path(), |port| {
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n")
    })
    .await;
    let host = Consumer::connect(local_options("host", mosquitto.port), "spBv1.0/#").await;
    let sim = Sim::start(SIM, 0).await;
    let path = dir.path().join("agent.toml");
    let text = config(&dir.path().join("data"), sim.addr.port(), mosquitto.port, "")
        .replace("keep_alive = \"5s\"", "keep_alive = \"5s\"\nmax_inflight = 4");
    std::fs::write(&path, text).expect("config");
    let agent = AgentProcess::spawn(&path);
    let seen = wait_for(&host, Duration::from_secs(30), |s| {
        count(s, "DDATA", Some("plc")) >= 30
    })
    .await;
    assert!(
        count(&seen, "DDATA", Some("plc")) >= 30,
        "data stopped with 4 records in flight: {} DDATA",
        count(&seen, "DDATA", Some("plc"))
    );
    check_session_rules(&seen);
    // Every record sent was confirmed and removed from the outbox.
    let data = dir.path().join("data");
    let drained = millwright_tests::eventually(Duration::from_secs(10), || async {
        let reply = millwright::control::request(
            &millwright::control::socket_path(&data),
            "status",
            serde_json::json!({}),
        )
        .await
        .map(|r| r["result"].clone());
        match reply {
            Some(status) if status["uplink"]["acknowledged"].as_u64() >= Some(30) => Ok(status),
            other => Err(other),
        }
    })
    .await;
    assert!(drained.is_ok(), "records not confirmed: {drained:?}");
    let bd = seen
        .iter()
        .find(|m| m.kind == "NBIRTH")
        .and_then(|m| bd_seq(&m.payload))
        .expect("NBIRTH");
    agent.kill().await;
    let seen = wait_for(&host, Duration::from_secs(20), |s| {
        s.iter().any(|m| m.kind == "NDEATH")
    })
    .await;
    let will = seen.iter().find(|m| m.kind == "NDEATH").expect("the will");
    assert_eq!(bd_seq(&will.payload), Some(bd));
    sim.stop().await;
}
}

/// Both formats over one connection: UNS summaries and Sparkplug data arrive side by side, and
/// every record leaves the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uns_and_sparkplug_together() {
    let broker = start_broker().await;
    let host = Consumer::connect(local_options("host", broker), "#").await;
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    let text = config(&dir.path().join("data"), sim.addr.port(), broker, "")
        .replace(
            "format = \"sparkplug\"",
            "format = [\"uns\", \"sparkplug\"]",
        )
        .replace("[outbox]\n", "[outbox]\nsummary_interval = \"500ms\"\n");
    std::fs::write(&path, text).expect("config");
    let agent = AgentProcess::spawn(&path);
    let summaries = |m: &[Message]| {
        m.iter()
            .filter(|m| m.topic == "acme/plant1/area/line/plc/tags")
            .count()
    };
    host.wait_until(Duration::from_secs(30), |m| {
        summaries(m) >= 3 && count(&sparkplug(m), "DDATA", Some("plc")) >= 10
    })
    .await;
    let messages = host.messages();
    assert!(
        summaries(&messages) >= 3,
        "UNS summaries: {}",
        summaries(&messages)
    );
    let seen = sparkplug(&messages);
    assert!(count(&seen, "DDATA", Some("plc")) >= 10, "{seen:?}");
    assert!(
        messages
            .iter()
            .any(|m| m.topic == "acme/plant1/area/line/gw-sp/status"),
        "the UNS birth"
    );
    check_session_rules(&seen);
    agent.terminate().await;
    sim.stop().await;
}
