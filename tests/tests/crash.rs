//! Power-cut behaviour: the `millwright` binary is killed with SIGKILL at random moments while it
//! publishes, and restarted. After the final drain the consumer must hold every record the agent
//! had reported durable (`outbox flushed` with `durable_through`), each stream in id order, with
//! repeats only where QoS 1 allows them.
//!
//! 20 rounds by default; `MILLWRIGHT_CRASH_ROUNDS=200 cargo test --test crash` for a soak.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use millwright_tests::mqtt::{assert_stream_order, local_options, records, start_broker, Consumer};
use millwright_tests::{log_field, log_message, AgentProcess, OutputLines, Sim};

const SIM: &str = r#"
[[machines]]
name = "press"
kind = "conveyor"
unit_id = 1
[[machines.points]]
name = "force"
table = "holding"
address = 0
type = "f32"
signal = { base = 120.0, noise = 2.0 }
[[machines.points]]
name = "cycles"
table = "holding"
address = 2
type = "u32"
signal = { base = 1000, count_per_hour = 36000.0 }
"#;

const PREFIX: &str = "acme/plant1/area/line";

fn config(data_dir: &Path, sim_port: u16, mqtt_port: u16) -> String {
    let mut config = format!(
        r#"
[agent]
name = "crashy"
summary_interval = "1h"
data_dir = {data_dir:?}

[outbox]
summary_interval = "100ms"
flush_interval = "100ms"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
keep_alive = "5s"
connect_timeout = "2s"
backoff = {{ initial = "100ms", max = "300ms" }}
drain_rate = 10000
topics = {{ enterprise = "acme", site = "plant1", area = "area", line = "line" }}
"#
    );
    // Ten devices: about a hundred summaries a second.
    for d in 0..10 {
        config.push_str(&format!(
            r#"
[[devices]]
name = "press{d}"
host = "127.0.0.1"
port = {sim_port}
unit_id = 1
addressing = "zero_based"
poll_interval = "50ms"
timeout = "500ms"

[[devices.tags]]
name = "press{d}.force"
table = "holding_register"
address = 0
type = "f32"

[[devices.tags]]
name = "press{d}.cycles"
table = "holding_register"
address = 2
type = "u32"
"#
        ));
    }
    config
}

/// The id range a run promised: its first record, and the highest id it reported durable.
fn promised(log: &OutputLines) -> Option<(u64, u64)> {
    let first = log.seen.iter().find_map(|l| log_field(l, "first_id"))?;
    let durable = log
        .seen
        .iter()
        .filter(|l| log_message(l).as_deref() == Some("outbox flushed"))
        .filter_map(|l| log_field(l, "durable_through"))
        .max()?;
    (durable >= first).then_some((first, durable))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_publishing_loses_no_durable_record() {
    let rounds: usize = std::env::var("MILLWRIGHT_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let broker = start_broker().await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_path = dir.path().join("agent.toml");
    std::fs::write(
        &config_path,
        config(&dir.path().join("data"), sim.addr.port(), broker),
    )
    .expect("config");

    let mut promises = Vec::new();
    for round in 0..rounds {
        let mut agent = AgentProcess::spawn(&config_path);
        agent
            .wait_log(Duration::from_secs(15), "first record of this run")
            .await
            .unwrap_or_else(|| panic!("round {round}: no start:\n{}", agent.log.transcript()));
        // Some time to publish, flush and be mid-way through both when the power goes.
        let uptime = Duration::from_millis(fastrand::u64(150..900));
        tokio::time::sleep(uptime).await;
        let log = agent.kill().await;
        assert!(
            !log.seen.iter().any(|l| l.contains("panicked")),
            "round {round}: {}",
            log.transcript()
        );
        if round == 0 {
            // The broker publishes the agent's last will: retained offline.
            assert!(
                consumer
                    .wait_until(Duration::from_secs(10), |m| m.iter().any(|m| {
                        m.topic == format!("{PREFIX}/crashy/status")
                            && m.json()["status"] == "offline"
                            && m.json()["reason"] == "connection lost"
                    }))
                    .await,
                "last will after SIGKILL"
            );
        }
        if let Some(range) = promised(&log) {
            promises.push(range);
        }
    }
    assert!(
        promises.len() >= rounds / 2,
        "most rounds made records durable before the kill ({} of {rounds})",
        promises.len()
    );

    // The final run drains the backlog and stops cleanly (final flush).
    let mut agent = AgentProcess::spawn(&config_path);
    agent
        .wait_log(Duration::from_secs(15), "first record of this run")
        .await
        .expect("final run starts");
    let socket = millwright::control::socket_path(&dir.path().join("data"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = millwright::control::request(&socket, "status", serde_json::json!({})).await;
        let drained = reply.as_ref().is_some_and(|r| {
            let outbox = &r["result"]["outbox"];
            outbox["alert"]["depth"] == 0
                && outbox["event"]["depth"] == 0
                && outbox["summary"]["depth"].as_u64() < Some(20)
        });
        if drained {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backlog did not drain: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = agent.terminate().await;
    promises.push(promised(&log).expect("the final run flushes"));

    // What the final run had not yet sent when it stopped waits in the outbox for the next start:
    // not delivered, not lost.
    let store = millwright::store::SledStore::open(&dir.path().join("data/outbox")).expect("store");
    let outbox = millwright::store::Outbox::new(Box::new(store), u64::MAX).expect("outbox");
    let mut queued = HashSet::new();
    for class in millwright::store::Class::ALL {
        for record in outbox.next_after(class, None, 10_000).expect("read") {
            queued.insert(record.id);
        }
    }
    drop(outbox);

    let wanted: Vec<u64> = promises
        .iter()
        .flat_map(|(first, durable)| *first..=*durable)
        .collect();
    let complete = consumer
        .wait_until(Duration::from_secs(20), |m| {
            let ids: HashSet<u64> = records(m).iter().map(|r| r.1).collect();
            wanted
                .iter()
                .all(|id| ids.contains(id) || queued.contains(id))
        })
        .await;
    let messages = consumer.messages();
    let ids = assert_stream_order(&messages);
    let missing: Vec<u64> = wanted
        .iter()
        .copied()
        .filter(|id| !ids.contains(id) && !queued.contains(id))
        .take(20)
        .collect();
    assert!(
        complete && missing.is_empty(),
        "{} durable records promised over {} runs; missing (first 20): {missing:?}",
        wanted.len(),
        promises.len()
    );
    let delivered = records(&messages).len();
    eprintln!(
        "{rounds} kills: {} durable records promised, {} distinct delivered, {} deliveries ({} repeats), {} still queued",
        wanted.len(),
        ids.len(),
        delivered,
        delivered - ids.len(),
        queued.len()
    );
    sim.stop().await;
}
