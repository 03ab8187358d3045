//! The agent against the simulator and misbehaving devices over Modbus TCP.

use std::sync::Arc;
use std::time::Duration;

use millwright::sample::{Quality, Value};
use millwright_tests::{
    latest_by_name, misbehaving_device, plan, samples_of, silent_device, Agent, Sim,
};

/// Constant values of every type and order, so decoding can be checked exactly.
const EVERY_TYPE_SIM: &str = r#"
[[machines]]
name = "typed"
kind = "motor"
unit_id = 1

[[machines.points]]
name = "f32_abcd"
table = "holding"
address = 0
type = "f32"
signal = { base = 12.5 }
[[machines.points]]
name = "f32_cdab"
table = "holding"
address = 2
type = "f32"
order = "CDAB"
signal = { base = -3.25 }
[[machines.points]]
name = "f32_badc"
table = "holding"
address = 4
type = "f32"
order = "BADC"
signal = { base = 1000.5 }
[[machines.points]]
name = "f32_dcba"
table = "holding"
address = 6
type = "f32"
order = "DCBA"
signal = { base = 0.125 }
[[machines.points]]
name = "i32_cdab"
table = "holding"
address = 8
type = "i32"
order = "CDAB"
signal = { base = -123456.0 }
[[machines.points]]
name = "u64_dcba"
table = "holding"
address = 10
type = "u64"
order = "DCBA"
signal = { base = 9007199254740000.0 }
[[machines.points]]
name = "f64_badc"
table = "holding"
address = 14
type = "f64"
order = "BADC"
signal = { base = -1.5e-3 }
[[machines.points]]
name = "i16_scaled"
table = "holding"
address = 18
type = "i16"
scale = 0.1
offset = -40.0
signal = { base = 25.5 }
[[machines.points]]
name = "status_bit3"
table = "holding"
address = 19
type = "bool"
bit = 3
signal = { base = 1.0 }
[[machines.points]]
name = "status_bit4"
table = "holding"
address = 19
type = "bool"
bit = 4
signal = { base = 0.0 }
[[machines.points]]
name = "serial"
table = "holding"
address = 20
type = "string"
length = 7
byte_order = "BA"
signal = { text = "SN-4711" }
[[machines.points]]
name = "u16_input"
table = "input"
address = 0
type = "u16"
signal = { base = 4660.0 }
[[machines.points]]
name = "coil"
table = "coil"
address = 5
signal = { base = 1.0 }
[[machines.points]]
name = "discrete"
table = "discrete_input"
address = 9
signal = { base = 0.0 }
"#;

/// The agent's view of the same device, written the way a manual would (Modicon numbers).
const EVERY_TYPE_AGENT: &str = r#"
[[devices]]
name = "typed"
host = "127.0.0.1"
addressing = "modicon"
poll_interval = "100ms"
timeout = "500ms"

[[devices.tags]]
name = "f32_abcd"
address = 40001
type = "f32"
[[devices.tags]]
name = "f32_cdab"
address = 40003
type = "f32"
order = "CDAB"
[[devices.tags]]
name = "f32_badc"
address = 40005
type = "f32"
order = "BADC"
[[devices.tags]]
name = "f32_dcba"
address = 40007
type = "f32"
order = "DCBA"
[[devices.tags]]
name = "i32_cdab"
address = 40009
type = "i32"
order = "CDAB"
[[devices.tags]]
name = "u64_dcba"
address = 40011
type = "u64"
order = "DCBA"
[[devices.tags]]
name = "f64_badc"
address = 40015
type = "f64"
order = "BADC"
[[devices.tags]]
name = "i16_scaled"
address = 40019
type = "i16"
scale = 0.1
offset = -40.0
[[devices.tags]]
name = "status_bit3"
address = 40020
type = "bool"
bit = 3
[[devices.tags]]
name = "status_bit4"
address = 40020
type = "bool"
bit = 4
[[devices.tags]]
name = "serial"
address = 40021
type = "string"
length = 7
byte_order = "BA"
[[devices.tags]]
name = "u16_input"
address = 30001
[[devices.tags]]
name = "coil"
address = 6
[[devices.tags]]
name = "discrete"
address = 10010
"#;

fn assert_f64(value: &Option<Value>, expected: f64) {
    match value {
        Some(Value::F64(v)) => assert!((v - expected).abs() < 1e-9, "{v} != {expected}"),
        other => panic!("expected {expected}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_decodes_every_type_and_order_from_the_simulator() {
    let sim = Sim::start(EVERY_TYPE_SIM, 0).await;
    let plan = plan(EVERY_TYPE_AGENT, Some(sim.addr));
    let mut agent = Agent::start(&plan);
    let tags = plan.tag_count();
    let samples = agent
        .collect_until(Duration::from_secs(10), |s| {
            latest_by_name(&plan, s).len() == tags
        })
        .await;
    let latest = latest_by_name(&plan, &samples);
    for (name, sample) in &latest {
        assert_eq!(sample.quality, Quality::Good, "{name}: {sample:?}");
    }
    assert_f64(&latest["f32_abcd"].value, 12.5);
    assert_f64(&latest["f32_cdab"].value, -3.25);
    assert_f64(&latest["f32_badc"].value, 1000.5);
    assert_f64(&latest["f32_dcba"].value, 0.125);
    assert_eq!(latest["i32_cdab"].value, Some(Value::I64(-123_456)));
    assert_eq!(
        latest["u64_dcba"].value,
        Some(Value::U64(9_007_199_254_740_000))
    );
    assert_f64(&latest["f64_badc"].value, -1.5e-3);
    assert_f64(&latest["i16_scaled"].value, 25.5);
    assert_eq!(latest["status_bit3"].value, Some(Value::Bool(true)));
    assert_eq!(latest["status_bit4"].value, Some(Value::Bool(false)));
    assert_eq!(latest["serial"].value, Some(Value::Text("SN-4711".into())));
    assert_eq!(latest["u16_input"].value, Some(Value::U64(4660)));
    assert_eq!(latest["coil"].value, Some(Value::Bool(true)));
    assert_eq!(latest["discrete"].value, Some(Value::Bool(false)));
    let stats = agent.stats("typed");
    assert_eq!(stats.errors(), 0, "{stats:?}");
    agent.stop().await;
    sim.stop().await;
}

const ONE_PUMP_SIM: &str = r#"
[[machines]]
name = "pump"
kind = "pump"
unit_id = 1
[[machines.points]]
name = "pressure"
table = "holding"
address = 0
type = "f32"
signal = { base = 4.0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_device_does_not_delay_a_healthy_one() {
    let sim = Sim::start(ONE_PUMP_SIM, 0).await;
    let (dead_addr, _dead) = silent_device().await;
    let config = format!(
        r#"
[[devices]]
name = "healthy"
host = "127.0.0.1"
port = {healthy}
addressing = "zero_based"
poll_interval = "100ms"
[[devices.tags]]
name = "pressure"
table = "holding"
address = 0
type = "f32"

[[devices]]
name = "dead"
host = "127.0.0.1"
port = {dead}
addressing = "zero_based"
poll_interval = "100ms"
timeout = "400ms"
backoff = {{ initial = "100ms", max = "200ms" }}
[[devices.tags]]
name = "dead.pressure"
table = "holding"
address = 0
type = "f32"
"#,
        healthy = sim.addr.port(),
        dead = dead_addr.port()
    );
    let plan = plan(&config, None);
    let mut agent = Agent::start(&plan);
    let samples = agent.collect(Duration::from_secs(3)).await;

    let healthy: Vec<_> = samples_of(&plan, &samples, "pressure");
    assert!(healthy.iter().all(|s| s.quality == Quality::Good));
    // 3 s at 100 ms is 30 polls; allow for a slow, shared machine but not for 400 ms stalls.
    assert!(
        healthy.len() >= 25,
        "healthy device kept its rate: {} polls in 3 s",
        healthy.len()
    );
    let healthy_stats = agent.stats("healthy");
    assert_eq!(healthy_stats.overruns, 0, "{healthy_stats:?}");

    let dead: Vec<_> = samples_of(&plan, &samples, "dead.pressure");
    assert!(
        dead.iter().any(|s| s.quality == Quality::Timeout),
        "dead device times out"
    );
    assert!(
        dead.iter().any(|s| s.quality == Quality::Stale),
        "and is reported stale while backing off"
    );
    assert!(dead.iter().all(|s| s.value.is_none()));
    let dead_stats = agent.stats("dead");
    assert!(
        dead_stats.timeouts >= 2 && dead_stats.exceptions == 0,
        "{dead_stats:?}"
    );
    // Backoff (100–200 ms) spaces the 400 ms timeouts out: far fewer attempts than polls.
    assert!(dead_stats.timeouts <= 8, "{dead_stats:?}");
    agent.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_dies_and_comes_back_is_read_again() {
    let sim = Sim::start(ONE_PUMP_SIM, 0).await;
    let port = sim.addr.port();
    let config = r#"
[[devices]]
name = "pump"
host = "127.0.0.1"
addressing = "zero_based"
poll_interval = "50ms"
timeout = "200ms"
backoff = { initial = "50ms", max = "200ms" }
[[devices.tags]]
name = "pressure"
table = "holding"
address = 0
type = "f32"
"#;
    let plan = plan(config, Some(sim.addr));
    let mut agent = Agent::start(&plan);
    let before = agent
        .collect_until(Duration::from_secs(5), |s| {
            s.iter().any(|s| s.quality == Quality::Good)
        })
        .await;
    assert!(before.iter().any(|s| s.quality == Quality::Good));

    sim.stop().await;
    let outage = agent
        .collect_until(Duration::from_secs(5), |s| {
            s.iter().any(|s| s.quality == Quality::Stale)
        })
        .await;
    assert!(
        outage.iter().any(|s| s.quality.is_transport_failure()),
        "outage seen as a transport failure: {outage:?}"
    );
    assert!(outage
        .iter()
        .all(|s| !matches!(s.quality, Quality::Exception(_))));
    assert!(!agent.stats("pump").online);

    let sim = Sim::start(ONE_PUMP_SIM, port).await;
    let after = agent
        .collect_until(Duration::from_secs(5), |s| {
            s.iter().any(|s| s.quality == Quality::Good)
        })
        .await;
    assert!(
        after.iter().any(|s| s.quality == Quality::Good),
        "reconnected after the device came back"
    );
    let stats = agent.stats("pump");
    let q = |v: &[millwright::sample::Sample]| v.iter().map(|s| s.quality).collect::<Vec<_>>();
    assert!(
        stats.online && stats.reconnects >= 1,
        "{stats:?} {:?} {:?} {:?}",
        q(&before),
        q(&outage),
        q(&after)
    );
    agent.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceptions_are_device_answers_and_rejected_coalesced_reads_are_split() {
    let sim = Sim::start(
        r#"
[[machines]]
name = "strict"
kind = "conveyor"
unit_id = 1
strict = true
[[machines.points]]
name = "a"
table = "holding"
address = 0
signal = { base = 7.0 }
[[machines.points]]
name = "b"
table = "holding"
address = 5
signal = { base = 8.0 }
"#,
        0,
    )
    .await;
    let config = r#"
[[devices]]
name = "strict"
host = "127.0.0.1"
addressing = "zero_based"
poll_interval = "100ms"
max_gap = 10
[[devices.tags]]
name = "a"
table = "holding"
address = 0
[[devices.tags]]
name = "b"
table = "holding"
address = 5
[[devices.tags]]
name = "not_mapped"
table = "holding"
address = 9

[[devices]]
name = "absent-unit"
host = "127.0.0.1"
unit_id = 42
addressing = "zero_based"
poll_interval = "100ms"
[[devices.tags]]
name = "absent"
table = "holding"
address = 0
"#;
    let plan = plan(config, Some(sim.addr));
    let mut agent = Agent::start(&plan);
    let samples = agent
        .collect_until(Duration::from_secs(5), |s| {
            let latest = latest_by_name(&plan, s);
            latest.len() == 4 && latest["a"].quality == Quality::Good
        })
        .await;
    let latest = latest_by_name(&plan, &samples);
    assert_eq!(latest["a"].value, Some(Value::U64(7)), "split read of a");
    assert_eq!(latest["b"].value, Some(Value::U64(8)), "split read of b");
    assert_eq!(
        latest["not_mapped"].quality,
        Quality::Exception(2),
        "illegal data address kept per tag"
    );
    assert_eq!(
        latest["absent"].quality,
        Quality::Exception(0x0b),
        "gateway: target device failed to respond"
    );
    let stats = agent.stats("strict");
    assert!(stats.exceptions >= 2, "{stats:?}");
    assert_eq!(
        stats.timeouts + stats.transport_errors + stats.malformed,
        0,
        "exceptions are not transport errors: {stats:?}"
    );
    assert!(
        stats.online,
        "a device that answers with exceptions is online"
    );
    agent.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_are_malformed_not_exceptions() {
    // Valid MBAP length but nonsense PDU, echoing the transaction id.
    let (addr, _server) = misbehaving_device(|request| {
        let mut reply = request.get(..4)?.to_vec();
        reply.extend_from_slice(&[0x00, 0x05, 0x01, 0x03, 0xFF, 0x13, 0x37]);
        Some(reply)
    })
    .await;
    let config = r#"
[[devices]]
name = "noisy"
host = "127.0.0.1"
addressing = "zero_based"
poll_interval = "100ms"
timeout = "300ms"
backoff = { initial = "100ms", max = "100ms" }
[[devices.tags]]
name = "x"
table = "holding"
address = 0
"#;
    let plan = plan(config, Some(addr));
    let mut agent = Agent::start(&plan);
    let samples = agent.collect(Duration::from_millis(1500)).await;
    let qualities: Vec<Quality> = samples.iter().map(|s| s.quality).collect();
    assert!(qualities.contains(&Quality::Malformed), "{qualities:?}");
    assert!(
        qualities
            .iter()
            .all(|q| !matches!(q, Quality::Exception(_) | Quality::Good)),
        "{qualities:?}"
    );
    let stats = agent.stats("noisy");
    assert!(stats.malformed >= 1 && stats.exceptions == 0, "{stats:?}");
    agent.stop().await;
}

const ONE_REGISTER: &str = r#"
[[devices]]
name = "odd"
host = "127.0.0.1"
addressing = "zero_based"
poll_interval = "50ms"
timeout = "300ms"
backoff = { initial = "50ms", max = "200ms" }
[[devices.tags]]
name = "x"
table = "holding"
address = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_answering_with_a_stale_transaction_id_stays_offline_instead_of_flapping() {
    // Always transaction id 0: right for the first request of each connection, wrong after.
    // The device used to flap online/offline every second, with a WARN each time.
    let (addr, _server) = misbehaving_device(|request| {
        let unit = *request.get(6)?;
        Some(vec![0, 0, 0, 0, 0, 5, unit, 3, 2, 0x12, 0x34])
    })
    .await;
    let plan = plan(ONE_REGISTER, Some(addr));
    let mut agent = Agent::start(&plan);
    let stats = Arc::clone(&agent.running.stats[0].1);
    let mut states = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        states.push(stats.online.load(std::sync::atomic::Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let changes = states.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        changes <= 2,
        "online/offline changed {changes} times in 3 s"
    );
    assert!(!states.last().copied().unwrap_or(true), "ends offline");
    let snapshot = agent.stats("odd");
    assert!(snapshot.malformed >= 2, "{snapshot:?}");
    assert_eq!(
        snapshot.reconnects, 0,
        "never counted back online: {snapshot:?}"
    );
    let samples = agent.collect(Duration::from_millis(300)).await;
    assert!(
        samples.iter().all(|s| s.quality != Quality::Timeout),
        "garbled, not silent"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_a_cut_header_and_a_huge_length_are_malformed_not_timeouts() {
    for (what, answer) in [
        (
            "garbage",
            (|_: &[u8]| Some(b"HELLO\r\n".to_vec())) as fn(&[u8]) -> Option<Vec<u8>>,
        ),
        ("header cut short", |r: &[u8]| Some(r.get(..5)?.to_vec())),
        ("length 65535", |r: &[u8]| {
            let mut reply = r.get(..4)?.to_vec();
            reply.extend_from_slice(&[0xff, 0xff, 1, 3, 2, 0, 1]);
            Some(reply)
        }),
    ] {
        let (addr, _server) = misbehaving_device(answer).await;
        let plan = plan(ONE_REGISTER, Some(addr));
        let mut agent = Agent::start(&plan);
        let samples = agent.collect(Duration::from_millis(1200)).await;
        let qualities: Vec<Quality> = samples.iter().map(|s| s.quality).collect();
        assert!(
            qualities.contains(&Quality::Malformed),
            "{what}: {qualities:?}"
        );
        assert!(
            !qualities.contains(&Quality::Timeout),
            "{what}: {qualities:?}"
        );
        let stats = agent.stats("odd");
        assert!(
            stats.malformed >= 1 && stats.timeouts == 0,
            "{what}: {stats:?}"
        );
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_writes_reach_the_device_with_every_function_code() {
    use millwright::sources::modbus::{link::Endpoint, write};
    use tokio_modbus::slave::{Slave, SlaveContext};
    let sim = Sim::start(EVERY_TYPE_SIM, 0).await;
    let plan = plan(EVERY_TYPE_AGENT, Some(sim.addr));
    let device = &plan.devices[0];
    let tag = |name: &str| {
        device
            .tags
            .iter()
            .find(|t| t.name == name)
            .expect("tag")
            .clone()
    };
    let endpoint = Endpoint::Tcp {
        host: sim.addr.ip().to_string(),
        port: sim.addr.port(),
    };
    let mut ctx = endpoint
        .open(Duration::from_secs(1))
        .await
        .expect("connect");
    ctx.set_slave(Slave(device.unit_id));
    let timeout = Duration::from_millis(500);

    // FC 16 (two registers, CDAB), FC 6 (one scaled register), FC 5 (coil), FC 15 (coils)
    write::write_tag(&mut ctx, &tag("f32_cdab"), &Value::F64(99.75), timeout)
        .await
        .expect("fc16");
    write::write_tag(&mut ctx, &tag("i16_scaled"), &Value::F64(-10.0), timeout)
        .await
        .expect("fc6");
    write::write_tag(&mut ctx, &tag("coil"), &Value::Bool(false), timeout)
        .await
        .expect("fc5");
    write::write_coils(&mut ctx, 10, &[true, false, true], timeout)
        .await
        .expect("fc15");
    assert_eq!(
        write::encode(&tag("f32_cdab"), &Value::F64(99.75)),
        Ok(write::WriteRequest::MultipleRegisters {
            address: 2,
            words: vec![0x8000, 0x42c7]
        })
    );
    // Read-only tables and values that do not fit are refused before anything is sent.
    assert!(matches!(
        write::write_tag(&mut ctx, &tag("u16_input"), &Value::U64(1), timeout).await,
        Err(write::WriteError::ReadOnly { .. })
    ));
    assert!(matches!(
        write::write_tag(&mut ctx, &tag("i16_scaled"), &Value::F64(1e9), timeout).await,
        Err(write::WriteError::Encode { .. })
    ));

    let rows = millwright::commands::read_once(&plan, &[]).await;
    let value = |name: &str| {
        rows.iter()
            .find(|r| r.info.name == name)
            .and_then(|r| r.sample.clone())
            .and_then(|s| s.value)
    };
    assert_eq!(value("f32_cdab"), Some(Value::F64(99.75)));
    match value("i16_scaled") {
        Some(Value::F64(v)) => assert!((v + 10.0).abs() < 1e-9, "{v}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(value("coil"), Some(Value::Bool(false)));
    let bits = sim
        .plant
        .read(
            1,
            firmware_config::Table::Coil,
            10,
            3,
            Duration::ZERO,
            std::time::SystemTime::now(),
        )
        .expect("bits");
    assert_eq!(bits, [1, 0, 1]);
    sim.stop().await;
}
