//! The agent against the simulator over Modbus RTU, through a socat pseudo-terminal pair.

use std::sync::Arc;
use std::time::Duration;

use std::time::SystemTime;

use firmware_config::{Parity, Severity, Table};
use millwright::bus::SampleBus;
use millwright::clock::{Clock, SystemClock};
use millwright::decisions::alerts::Alerts;
use millwright::decisions::lifecycle::{Condition, Origin};
use millwright::sample::{Quality, Value};
use millwright::sim::plant::Plant;
use millwright_tests::{eventually, plan, samples_of, Agent, PtyPair};
use tokio::task::JoinHandle;
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

/// The simulator on the device end of `pty`, at 38,400 baud, even parity.
fn serve_on(
    pty: &PtyPair,
    sim: &str,
    shutdown: &CancellationToken,
) -> (Arc<Plant>, JoinHandle<std::io::Result<()>>) {
    let (_, plant) = millwright::sim::load_str(std::path::Path::new("sim.toml"), sim)
        .unwrap_or_else(|e| panic!("{e}"));
    let plant = Arc::new(plant);
    let device_end = pty.device_end.display().to_string();
    let server = tokio::spawn({
        let (plant, shutdown) = (Arc::clone(&plant), shutdown.clone());
        async move {
            millwright::sim::server::serve_rtu(&device_end, 38_400, Parity::Even, plant, shutdown)
                .await
        }
    });
    (plant, server)
}

/// The `[[buses]]` entry for the agent's end of `pty`.
fn bus_on(pty: &PtyPair) -> String {
    format!(
        "\n[[buses]]\nname = \"rs485\"\npath = \"{}\"\nbaud = 38400\n",
        pty.agent_end.display()
    )
}

millwright_tests::needs! { socat
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_on_one_bus_are_polled_in_turn_and_a_silent_one_costs_only_its_timeout() {
    let pty = PtyPair::open().await.expect("socat pty pair");
    let shutdown = CancellationToken::new();
    let (_, server) = serve_on(&pty, SIM, &shutdown);

    let config = format!(
        r#"{bus}
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
        bus = bus_on(&pty)
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
}

const RELAY_SIM: &str = r#"
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

[[machines]]
name = "relays"
kind = "conveyor"
unit_id = 7
[[machines.points]]
name = "k1"
table = "coil"
address = 0
signal = { base = 0.0 }
"#;

millwright_tests::needs! { socat
/// A relay module on the bus drives a beacon as an alert output. Its writes go through the bus's
/// poller, between polls, so the bus keeps one master: no request of either unit fails while the
/// beacon switches, the polled coil reads back what was written, a power cycle of the module does
/// not leave the beacon dark, and the shutdown pattern still goes out after polling has stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_output_on_the_bus_is_written_between_polls() {
    let pty = PtyPair::open().await.expect("socat pty pair");
    let sim_shutdown = CancellationToken::new();
    let (plant, server) = serve_on(&pty, RELAY_SIM, &sim_shutdown);
    let config = format!(
        r#"{bus}
[[devices]]
name = "drive"
bus = "rs485"
unit_id = 3
addressing = "zero_based"
poll_interval = "50ms"
timeout = "300ms"
[[devices.tags]]
name = "frequency"
table = "holding_register"
address = 0
scale = 0.01

[[devices]]
name = "relays"
bus = "rs485"
unit_id = 7
addressing = "zero_based"
poll_interval = "50ms"
timeout = "300ms"
backoff = {{ initial = "200ms", max = "400ms" }}
[[devices.tags]]
name = "beacon_state"
table = "coil"
address = 1

[[outputs]]
name = "beacon"
modbus = {{ device = "relays", table = "coil", address = 1 }}
on_shutdown = "steady"

[[indications]]
output = "beacon"
state = "unacknowledged"
pattern = "fast_blink"

[[indications]]
output = "beacon"
pattern = "steady"
"#,
        bus = bus_on(&pty)
    );
    let plan = plan(&config, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut alerts = Alerts::open(dir.path(), None);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let bus = SampleBus::new(65_536);
    let mut samples = bus.subscribe();
    let shutdown = CancellationToken::new();
    let (mut running, writers) =
        millwright::app::start_acquisition(&plan, Arc::clone(&clock), &bus, &shutdown);
    running.tasks.spawn(millwright::outputs::run(
        plan.alerting.clone(),
        Vec::new(),
        writers,
        alerts.subscribe(),
        millwright::decisions::alerts::reporting().0,
        shutdown.clone(),
        shutdown.clone(),
    ));
    let coil = || {
        plant
            .read(7, Table::Coil, 1, 1, Duration::ZERO, SystemTime::now())
            .map(|w| w[0])
            .unwrap_or(u16::MAX)
    };
    let wait_coil = |want: u16, what: &'static str| {
        let coil = &coil;
        async move {
            let result = eventually(Duration::from_secs(5), || async {
                match coil() {
                    word if word == want => Ok(()),
                    word => Err(word),
                }
            })
            .await;
            if let Err(word) = result {
                panic!("{what}: the beacon coil stays {word}, not {want}");
            }
        }
    };
    let condition = |active| Condition {
        id: "frequency/hi".into(),
        source: "frequency".into(),
        origin: Origin::Limit,
        severity: Severity::High,
        latching: false,
        active,
        value: Some(51.0),
        reason: "test".into(),
    };
    wait_coil(0, "idle").await;
    alerts.condition(condition(true), SystemTime::now());
    // Unacknowledged: the agent blinks the coil at 4 Hz (a write every 125 ms) while both units
    // are polled every 50 ms.
    let mut changes = 0;
    let mut last = coil();
    let blinking_until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < blinking_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = coil();
        changes += usize::from(now != last);
        last = now;
    }
    assert!(
        changes >= 6,
        "the beacon changed {changes} times in 1.5 s of fast blinking"
    );
    alerts
        .acknowledge("frequency/hi", "test", SystemTime::now())
        .expect("ack");
    // Steady: on for longer than a blink phase (125 ms), read 6 times 50 ms apart. (A bare `1`
    // could be a blink phase before the steady write is through.)
    let steady = eventually(Duration::from_secs(5), || async {
        for _ in 0..6 {
            if coil() != 1 {
                return Err(coil());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
    .await;
    assert!(steady.is_ok(), "acknowledged: the beacon never held steady");
    // The polled coil reads back the written state.
    let state = bus_value(&plan, &mut samples, "beacon_state", Value::Bool(true)).await;
    assert!(state, "beacon_state never read back true");
    let stats = |device: &str| {
        running
            .stats
            .iter()
            .find(|(name, _)| name == device)
            .map(|(_, s)| s.snapshot())
            .unwrap_or_else(|| panic!("no device {device}"))
    };
    let (drive, relays) = (stats("drive"), stats("relays"));
    assert_eq!(drive.errors(), 0, "{drive:?}");
    assert_eq!(relays.errors(), 0, "{relays:?}");
    // 1.5 s of polls at 50 ms, and for the relays the blink writes besides.
    assert!(drive.requests >= 15, "{drive:?}");
    assert!(
        relays.requests >= drive.requests + 6,
        "{relays:?} vs {drive:?}"
    );

    // The relay module loses power for a moment: its polls time out, and it comes back with its
    // coils dropped out. The agent sees it recover and writes the steady beacon again.
    plant.set_powered(7, false);
    assert_eq!(coil(), 0);
    tokio::time::sleep(Duration::from_millis(800)).await;
    plant.set_powered(7, true);
    wait_coil(1, "written again after the relay module came back").await;
    assert!(stats("relays").reconnects >= 1, "{:?}", stats("relays"));

    alerts.condition(condition(false), SystemTime::now());
    wait_coil(0, "cleared before stopping").await;
    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), async {
        while running.tasks.join_next().await.is_some() {}
    })
    .await;
    assert!(stopped.is_ok(), "the lines and outputs did not stop");
    assert_eq!(coil(), 1, "the shutdown pattern (steady) was not written");
    sim_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
}

/// Whether `tag` reads `want` within 5 s.
async fn bus_value(
    plan: &firmware_config::Plan,
    samples: &mut millwright::bus::Subscriber,
    tag: &str,
    want: Value,
) -> bool {
    let id = millwright::app::tag_catalog(plan)
        .iter()
        .position(|t| t.name == tag)
        .unwrap_or_else(|| panic!("no tag {tag}"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(sample)) = tokio::time::timeout_at(deadline, samples.recv()).await {
        if sample.tag.0 as usize == id && sample.value.as_ref() == Some(&want) {
            return true;
        }
    }
    false
}
