//! The agent against the simulator over Modbus RTU, through a socat pseudo-terminal pair.

use std::sync::Arc;
use std::time::Duration;

use firmware_config::Parity;
use millwright::sample::{Quality, Value};
use millwright_tests::{plan, require_socat, samples_of, Agent, PtyPair};
use tokio_util::sync::CancellationToken;

const SIM: &str = r#"
[[machines]]
name = "drive"
kind = "motor"
unit_id = 3
[[machines.points]]
name = "frequency"
table = "holding"
address = 0
scale = 0.01
signal = { base = 49.98 }
[[machines.points]]
name = "current"
table = "input"
address = 4
type = "f32"
order = "CDAB"
signal = { base = 12.75 }

[[machines]]
name = "meter"
kind = "pump"
unit_id = 5
[[machines.points]]
name = "energy"
table = "holding"
address = 100
type = "u32"
signal = { base = 123456.0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_on_one_bus_are_polled_in_turn_and_a_silent_one_costs_only_its_timeout() {
    if !require_socat() {
        return;
    }
    let pty = PtyPair::open().await.expect("socat pty pair");
    let (_, plant) = millwright::sim::load_str(std::path::Path::new("sim.toml"), SIM)
        .unwrap_or_else(|e| panic!("{e}"));
    let shutdown = CancellationToken::new();
    let device_end = pty.device_end.display().to_string();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            millwright::sim::server::serve_rtu(
                &device_end,
                38_400,
                Parity::Even,
                Arc::new(plant),
                shutdown,
            )
            .await
        }
    });

    let config = format!(
        r#"
[[buses]]
name = "rs485"
path = "{path}"
baud = 38400

[[devices]]
name = "drive"
bus = "rs485"
unit_id = 3
addressing = "one_based"
poll_interval = "100ms"
timeout = "300ms"
[[devices.tags]]
name = "frequency"
table = "holding_register"
address = 1
scale = 0.01
unit = "Hz"
[[devices.tags]]
name = "current"
table = "input_register"
address = 5
type = "f32"
order = "CDAB"

[[devices]]
name = "meter"
bus = "rs485"
unit_id = 5
addressing = "zero_based"
poll_interval = "100ms"
timeout = "300ms"
[[devices.tags]]
name = "energy"
table = "holding_register"
address = 100
type = "u32"

[[devices]]
name = "silent"
bus = "rs485"
unit_id = 9
addressing = "zero_based"
poll_interval = "100ms"
timeout = "300ms"
backoff = {{ initial = "1s", max = "2s" }}
[[devices.tags]]
name = "silent.value"
table = "holding_register"
address = 0
"#,
        path = pty.agent_end.display()
    );
    let plan = plan(&config, None);
    let mut agent = Agent::start(&plan);
    let samples = agent.collect(Duration::from_secs(3)).await;

    let frequency = samples_of(&plan, &samples, "frequency");
    let good = frequency
        .iter()
        .filter(|s| s.quality == Quality::Good)
        .count();
    match frequency.last().and_then(|s| s.value.clone()) {
        Some(Value::F64(v)) => assert!((v - 49.98).abs() < 1e-9, "{v}"),
        other => panic!("frequency: {other:?}"),
    }
    assert_eq!(
        samples_of(&plan, &samples, "current")
            .last()
            .and_then(|s| s.value.clone()),
        Some(Value::F64(12.75))
    );
    assert_eq!(
        samples_of(&plan, &samples, "energy")
            .last()
            .and_then(|s| s.value.clone()),
        Some(Value::U64(123_456))
    );

    let silent = agent.stats("silent");
    // Backing off 1–2 s after each timeout: at most 3 attempts in 3 s, each costing 300 ms.
    assert!((1..=3).contains(&silent.timeouts), "{silent:?}");
    assert!(samples_of(&plan, &samples, "silent.value")
        .iter()
        .any(|s| s.quality == Quality::Stale));
    // 30 polls in 3 s minus what the silent unit's timeouts (≤ 3 × 300 ms) can take away.
    assert!(good >= 18, "drive polled {good} times in 3 s");
    for device in ["drive", "meter"] {
        let stats = agent.stats(device);
        assert_eq!(stats.errors(), 0, "{device}: {stats:?}");
    }
    agent.stop().await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
