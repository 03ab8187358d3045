//! Production lines end to end: the agent binary polls a simulated press line over Modbus TCP and
//! its OEE records reach a broker; a SIGKILL in the middle of the shift loses no count.

use std::path::Path;
use std::time::Duration;

use millwright_tests::mqtt::{local_options, start_broker, Consumer, Message};
use millwright_tests::{AgentProcess, Sim};

const SIM: &str = include_str!("../fixtures/line-sim.toml");
const LINE: &str = include_str!("../../agent/tests/fixtures/line-press.toml");
const PREFIX: &str = "acme/plant1/area/line";

/// The press fixture pointed at the simulator, reporting every second, with one shift around the
/// clock (the test runs whenever CI does) and the uplink to `mqtt_port`.
fn config(data_dir: &Path, sim_port: u16, mqtt_port: u16) -> String {
    let shifts = LINE
        .find("[[lines.shifts]]")
        .expect("a shift in the fixture");
    let line = LINE[..shifts]
        .replace(
            "host = \"127.0.0.1\"",
            &format!("host = \"127.0.0.1\"\nport = {sim_port}\npoll_interval = \"100ms\""),
        )
        .replace("report_interval = \"1m\"", "report_interval = \"1s\"")
        .replace("ideal_cycle = \"2s\"", "ideal_cycle = \"100ms\"")
        .replace("[agent]\n", &format!("[agent]\ndata_dir = {data_dir:?}\n"));
    format!(
        "{line}\n[[lines.shifts]]\nname = \"all-day\"\nstart = \"00:00\"\nend = \"00:00\"\n{}",
        millwright_tests::uplink_toml(mqtt_port)
    )
}

/// The `data` of every `oee` record received, in arrival order.
fn reports(messages: &[Message]) -> Vec<serde_json::Value> {
    messages
        .iter()
        .filter(|m| m.topic == format!("{PREFIX}/press-1/oee"))
        .map(|m| m.json()["data"].clone())
        .collect()
}

fn total(report: &serde_json::Value) -> f64 {
    report["parts"]["total"].as_f64().unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oee_records_arrive_and_a_sigkill_mid_shift_loses_no_count() {
    let broker = start_broker().await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        config(&dir.path().join("data"), sim.addr.port(), broker),
    )
    .expect("config");

    let agent = AgentProcess::spawn(&path);
    let counting = consumer
        .wait_until(Duration::from_secs(60), |m| {
            reports(m).iter().any(|r| total(r) >= 200.0)
        })
        .await;
    assert!(
        counting,
        "no oee record with parts counted arrived: {:?}",
        reports(&consumer.messages())
    );
    let before = reports(&consumer.messages());
    let last = before.last().expect("a report");
    assert_eq!(last["state"], "running");
    // The simulator counts parts once a simulated second (ten at a time), so over the twenty seconds
    // or so of running time here performance is 1 give or take a twentieth and a bit.
    assert!(
        last["performance"]
            .as_f64()
            .is_some_and(|p| p > 0.5 && p <= 1.25),
        "{last}"
    );
    assert!(
        last["quality"].as_f64().is_some_and(|q| q > 0.8 && q < 1.0),
        "5 % rejects: {last}"
    );
    // Killed like a power cut, down for three seconds while the press makes about 30 parts.
    let counted_before = total(last);
    agent.kill().await;
    let killed_at = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let agent = AgentProcess::spawn(&path);
    let resumed = consumer
        .wait_until(Duration::from_secs(60), |m| {
            reports(m)
                .iter()
                .skip(before.len())
                .any(|r| r["times"]["unaccounted"].as_f64().is_some_and(|u| u >= 2.5))
        })
        .await;
    assert!(
        resumed,
        "no report after the restart shows the gap as unaccounted"
    );
    let after = reports(&consumer.messages());
    let resumed = after[before.len()..]
        .iter()
        .find(|r| r["times"]["unaccounted"].as_f64().is_some_and(|u| u >= 2.5))
        .expect("found above");
    let elapsed = killed_at.elapsed().as_secs_f64();
    // Counts from before the kill and from the downtime are all there (the press makes 10 parts
    // a second; the counter rolled over on the way), and none is counted twice.
    let counted = total(resumed);
    assert!(
        counted >= counted_before + 25.0,
        "{counted} after the restart, {counted_before} before: the downtime's parts are missing"
    );
    assert!(
        counted <= counted_before + 10.0 * (elapsed + 2.0) + 10.0,
        "{counted} after {elapsed:.1} s: counted twice"
    );
    agent.terminate().await;
    sim.stop().await;
}
