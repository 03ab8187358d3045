//! The store-and-forward path end to end: the `millwright` binary polling a simulated plant,
//! buffering in its sled outbox and forwarding to an in-process rumqttd broker through a relay
//! that the tests cut and restore.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use millwright::control;
use millwright_tests::mqtt::{
    assert_stream_order, local_options, records, start_broker, Consumer, Relay,
};
use millwright_tests::{eventually, run_cli, AgentProcess, Sim};
use serde_json::json;

pub const SIM: &str = r#"
[[machines]]
name = "pump"
kind = "pump"
unit_id = 1
[[machines.points]]
name = "vibration"
table = "holding"
address = 0
type = "f32"
signal = { base = 9.0, noise = 0.05 }
[[machines.points]]
name = "pressure"
table = "holding"
address = 2
type = "f32"
signal = { base = 4.5, noise = 0.1 }
"#;

pub const PREFIX: &str = "acme/plant1/area/line";

/// An agent polling `devices` copies of the pump every 100 ms, summarising every 100 ms, with a
/// pump asset in ISO zone D (so a maintenance alert is raised), forwarding to `mqtt_port`.
pub fn agent_config(
    data_dir: &Path,
    sim_port: u16,
    mqtt_port: u16,
    devices: usize,
    extra_tags: usize,
    outbox: &str,
) -> String {
    let mut config = format!(
        r#"
[agent]
name = "gw"
summary_interval = "1h"
data_dir = {data_dir:?}

[scoring]
assess_interval = "500ms"
window = 4

[[assets]]
id = "P-1"
type = "pump"
signals = {{ vibration = "d0.vibration", pressure = "d0.pressure" }}
nameplate = {{ iso_group = 2, foundation = "rigid", pressure_range = [3.0, 6.0] }}

[outbox]
{outbox}

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
keep_alive = "5s"
connect_timeout = "1s"
backoff = {{ initial = "100ms", max = "500ms" }}
drain_rate = 5000
topics = {{ enterprise = "acme", site = "plant1", area = "area", line = "line" }}
"#
    );
    for d in 0..devices {
        config.push_str(&format!(
            r#"
[[devices]]
name = "d{d}"
host = "127.0.0.1"
port = {sim_port}
unit_id = 1
addressing = "zero_based"
poll_interval = "100ms"
timeout = "500ms"

[[devices.tags]]
name = "d{d}.vibration"
table = "holding_register"
address = 0
type = "f32"
unit = "mm/s"

[[devices.tags]]
name = "d{d}.pressure"
table = "holding_register"
address = 2
type = "f32"
unit = "bar"
"#
        ));
        for t in 0..extra_tags {
            config.push_str(&format!(
                "\n[[devices.tags]]\nname = \"d{d}.pressure_copy_{t}\"\ntable = \"holding_register\"\naddress = 2\ntype = \"f32\"\nunit = \"bar\"\n"
            ));
        }
    }
    config
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub sim: Sim,
}

pub async fn setup(mqtt_port: u16, devices: usize, extra_tags: usize, outbox: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Sim::start(SIM, 0).await;
    let config = dir.path().join("agent.toml");
    let text = agent_config(
        &dir.path().join("data"),
        sim.addr.port(),
        mqtt_port,
        devices,
        extra_tags,
        outbox,
    );
    std::fs::write(&config, text).expect("write config");
    Setup { dir, config, sim }
}

async fn status(dir: &Path) -> Option<serde_json::Value> {
    let socket = control::socket_path(&dir.join("data"));
    let reply = control::request(&socket, "status", json!({})).await?;
    assert_eq!(reply["ok"], true, "{reply}");
    Some(reply["result"].clone())
}

/// Polls `status` over the control socket until `done` holds, for at most `within`.
async fn wait_status(
    dir: &Path,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    eventually(within, || async {
        match status(dir).await {
            Some(status) if done(&status) => Ok(status),
            other => Err(other),
        }
    })
    .await
    .unwrap_or_else(|last| {
        panic!("status never satisfied the condition within {within:?}: {last:#?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_and_the_backlog_drains_in_order() {
    let broker = start_broker().await;
    let mut relay = Relay::start(([127, 0, 0, 1], broker).into()).await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let setup = setup(relay.port, 4, 0, "summary_interval = \"100ms\"").await;
    let mut agent = AgentProcess::spawn(&setup.config);
    let first = agent
        .wait_log(Duration::from_secs(10), "first record of this run")
        .await
        .map(|line| line["fields"]["first_id"].as_u64().expect("first_id"))
        .unwrap_or_else(|| panic!("no start record:\n{}", agent.log.transcript()));

    assert!(
        consumer
            .wait_until(Duration::from_secs(10), |m| records(m).len() >= 20)
            .await,
        "records flow before the outage"
    );

    relay.cut();
    let during = wait_status(setup.dir.path(), Duration::from_secs(10), |s| {
        s["uplink"]["connected"] == false && s["outbox"]["summary"]["depth"].as_u64() > Some(20)
    })
    .await;
    assert!(during["uplink"]["last_error"].is_string(), "{during:#}");
    let received_during_outage = records(&consumer.messages()).len();

    relay.restore().await;
    let after = wait_status(setup.dir.path(), Duration::from_secs(20), |s| {
        s["uplink"]["connected"] == true
            && s["uplink"]["connects"].as_u64() >= Some(2)
            && s["outbox"]["alert"]["depth"] == 0
            && s["outbox"]["event"]["depth"] == 0
            && s["outbox"]["summary"]["depth"].as_u64() <= Some(5)
    })
    .await;
    let last = after["outbox"]["last_id"].as_u64().expect("last_id");
    assert!(
        consumer
            .wait_until(Duration::from_secs(10), |m| {
                let ids: HashSet<u64> = records(m).iter().map(|r| r.1).collect();
                (first..=last).all(|id| ids.contains(&id))
            })
            .await,
        "every record {first}..={last} arrives after the outage"
    );
    let messages = consumer.messages();
    assert!(records(&messages).len() > received_during_outage + 10);
    let ids = assert_stream_order(&messages);
    assert!((first..=last).all(|id| ids.contains(&id)));

    // What arrived is what the agent saw: summaries of each device, the zone-D alert, the
    // assessments, device events; every envelope versioned and timestamped.
    let all = records(&messages);
    for (_, _, envelope) in &all {
        assert_eq!(envelope["schema"], 1);
        assert_eq!(envelope["agent"], "gw");
        let time = envelope["time"].as_str().expect("time");
        assert!(time.ends_with('Z') && time.len() == 24, "{time}");
    }
    let tags = all
        .iter()
        .find(|r| {
            r.2["kind"] == "tags"
                && r.2["data"]["device"] == "d1"
                && r.2["data"]["tags"]["d1.vibration"]["mean"].is_number()
        })
        .expect("a tag summary of d1 with readings");
    let vibration = &tags.2["data"]["tags"]["d1.vibration"];
    assert_eq!(vibration["unit"], "mm/s");
    assert!(
        (vibration["mean"].as_f64().expect("mean") - 9.0).abs() < 0.5,
        "{vibration}"
    );
    let alert = all
        .iter()
        .find(|r| r.2["kind"] == "alert" && r.2["data"]["alert_id"] == "P-1/maintenance")
        .expect("the zone-D pump raised an alert");
    assert_eq!(alert.2["data"]["state"], "active_unacknowledged");
    assert_eq!(alert.2["data"]["severity"], "high");
    assert!(alert.2["data"]["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("immediate_maintenance")));
    assert!(all
        .iter()
        .any(|r| r.2["kind"] == "health" && r.2["data"]["asset"] == "P-1"));
    assert!(all.iter().any(|r| r.2["data"]["event"] == "agent_started"));

    // The retained birth was published on each connection.
    let births = messages
        .iter()
        .filter(|m| m.topic == format!("{PREFIX}/gw/status") && m.json()["status"] == "online")
        .count();
    assert!(births >= 2, "a birth per connection, got {births}");

    let log = agent.terminate().await;
    assert!(
        log.seen
            .iter()
            .any(|l| l.contains("MQTT connection unavailable")),
        "the outage is logged"
    );
    assert!(
        consumer
            .wait_until(Duration::from_secs(5), |m| m.iter().any(|m| {
                m.topic == format!("{PREFIX}/gw/status") && m.json()["reason"] == "shutdown"
            }))
            .await,
        "offline status on a clean stop"
    );
    setup.sim.stop().await;
}

/// The `retry_in` of each "connection unavailable" line (a `Duration`'s debug form), in seconds.
fn retry_delays(lines: &[String]) -> Vec<f64> {
    lines
        .iter()
        .filter(|l| {
            millwright_tests::log_message(l).as_deref()
                == Some("MQTT connection unavailable; records stay in the outbox")
        })
        .filter_map(|l| {
            let json: serde_json::Value = serde_json::from_str(l).ok()?;
            let text = json["fields"]["retry_in"].as_str()?;
            [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
                .into_iter()
                .find_map(|(unit, scale)| {
                    Some(text.strip_suffix(unit)?.parse::<f64>().ok()? * scale)
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_back_after_a_long_outage_is_reconnected_within_the_cap_and_a_clean_stop_delivers_the_queue(
) {
    // The default cap (10 s), reached quickly from a short first delay; a drain rate so low that
    // the backlog is still there when the agent is stopped.
    let broker = start_broker().await;
    let mut relay = Relay::start(([127, 0, 0, 1], broker).into()).await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let setup = setup(relay.port, 1, 0, "summary_interval = \"100ms\"").await;
    let config = std::fs::read_to_string(&setup.config).expect("config");
    let config = config
        .replace(
            r#"backoff = { initial = "100ms", max = "500ms" }"#,
            r#"backoff = { initial = "100ms" }"#,
        )
        .replace("drain_rate = 5000", "drain_rate = 20");
    std::fs::write(&setup.config, config).expect("config");
    let mut agent = AgentProcess::spawn(&setup.config);
    wait_status(setup.dir.path(), Duration::from_secs(10), |s| {
        s["uplink"]["connected"] == true
    })
    .await;

    relay.cut();
    // Twenty seconds of outage, reading the log as it comes.
    let _ = agent.log.wait_for(Duration::from_secs(20), |_| false).await;
    let delays = retry_delays(&agent.log.seen);
    let longest = delays.iter().copied().fold(0.0, f64::max);
    assert!(longest <= 10.0, "no wait beyond the 10 s cap: {delays:?}");
    assert!(
        longest >= 5.0,
        "the outage lasted long enough to reach the cap: {delays:?}"
    );

    relay.restore().await;
    let back = std::time::Instant::now();
    wait_status(setup.dir.path(), Duration::from_secs(15), |s| {
        s["uplink"]["connected"] == true && s["uplink"]["connects"].as_u64() >= Some(2)
    })
    .await;
    let reconnected_after = back.elapsed();
    assert!(
        reconnected_after <= Duration::from_millis(11_500),
        "reconnected {reconnected_after:?} after the broker came back (cap 10 s, connect timeout 1 s)"
    );
    let queued = status(setup.dir.path()).await.expect("status")["outbox"]["summary"]["depth"]
        .as_u64()
        .expect("depth");
    assert!(queued > 50, "a backlog is left at the drain rate: {queued}");

    // A clean stop now: the backlog and `agent_stopping` go out before `offline`.
    let log = agent.terminate().await;
    let stopping = consumer
        .wait_until(Duration::from_secs(5), |m| {
            records(m)
                .iter()
                .any(|r| r.2["data"]["event"] == "agent_stopping")
        })
        .await;
    assert!(
        stopping,
        "agent_stopping delivered at a clean stop:\n{}",
        log.transcript()
    );
    let messages = consumer.messages();
    let offline = messages
        .iter()
        .position(|m| m.topic == format!("{PREFIX}/gw/status") && m.json()["reason"] == "shutdown")
        .expect("offline status");
    let last_record = messages
        .iter()
        .rposition(|m| m.topic != format!("{PREFIX}/gw/status") && !m.topic.contains("/cmd"))
        .expect("records");
    assert!(last_record < offline, "offline comes after the records");
    let (ok, shown) = run_cli(&setup.config, &["outbox"]).await;
    let total = shown
        .lines()
        .find_map(|l| l.trim().strip_prefix("total"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok());
    assert!(
        ok && total == Some(0),
        "the backlog of {queued} went out at the stop:\n{shown}"
    );
    setup.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_and_bad_ones_get_a_clear_error() {
    let broker = start_broker().await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let setup = setup(broker, 1, 0, "summary_interval = \"1s\"").await;
    let agent = AgentProcess::spawn(&setup.config);
    assert!(
        consumer
            .wait_until(Duration::from_secs(15), |m| records(m)
                .iter()
                .any(|r| r.2["kind"] == "alert"))
            .await,
        "the zone-D alert arrives"
    );
    let command = |name: &str| format!("{PREFIX}/gw/cmd/{name}");
    let publish = |topic: String, payload: &'static [u8]| {
        let client = consumer.client.clone();
        async move {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .await
                .expect("publish")
        }
    };
    publish(command("status"), br#"{"request_id": 17}"#).await;
    publish(command("ack-alert"), br#"{"alert_id": "nope"}"#).await;
    publish(command("ack-alert"), b"{not json").await;
    publish(command("reboot"), b"{}").await;
    // The MQTT path of `spectrum` reaches the same handler as `millwright spectrum`: P-1 has no
    // waveform, so it is refused with what there is.
    publish(command("spectrum"), br#"{"asset": "P-1"}"#).await;
    publish(
        command("ack-alert"),
        br#"{"alert_id": "P-1/maintenance", "by": "night shift"}"#,
    )
    .await;

    let reply = |name: &str, n: usize| {
        let topic = format!("{PREFIX}/gw/reply/{name}");
        consumer
            .messages()
            .into_iter()
            .filter(|m| m.topic == topic)
            .nth(n)
            .map(|m| m.json())
    };
    assert!(
        consumer
            .wait_until(Duration::from_secs(10), |m| m
                .iter()
                .filter(|m| m.topic.contains("/reply/"))
                .count()
                >= 6)
            .await,
        "six replies"
    );
    let status = reply("status", 0).expect("status reply");
    assert_eq!(status["ok"], true);
    assert_eq!(status["request_id"], 17);
    assert_eq!(status["result"]["agent"], "gw");
    assert_eq!(status["result"]["uplink"]["connected"], true);
    assert_eq!(status["result"]["devices"][0]["device"], "d0");
    assert!(status["result"]["outbox"]["max_bytes"].as_u64() > Some(0));
    let unknown_alert = reply("ack-alert", 0).expect("reply");
    assert_eq!(unknown_alert["ok"], false);
    assert!(unknown_alert["error"]
        .as_str()
        .expect("error")
        .contains("P-1/maintenance"));
    let garbage = reply("ack-alert", 1).expect("reply");
    assert_eq!(garbage["ok"], false);
    assert!(garbage["error"]
        .as_str()
        .expect("error")
        .contains("not JSON"));
    let unknown = reply("reboot", 0).expect("reply");
    assert!(unknown["error"]
        .as_str()
        .expect("error")
        .contains("known: status, ack-alert"));
    assert_eq!(reply("ack-alert", 2).expect("reply")["ok"], true);
    let spectrum = reply("spectrum", 0).expect("spectrum reply");
    assert!(
        spectrum["ok"] == false
            && spectrum["error"].as_str().is_some_and(|e| e.contains(
                "no spectrum for asset \"P-1\" (no asset has had a waveform analysed yet)"
            )),
        "{spectrum}"
    );
    assert!(
        consumer
            .wait_until(Duration::from_secs(5), |m| records(m).iter().any(|r| {
                r.2["kind"] == "alert"
                    && r.2["data"]["state"] == "active_acknowledged"
                    && r.2["data"]["acknowledged_by"] == "night shift"
            }))
            .await,
        "the acknowledgement is published as an alert record"
    );
    agent.terminate().await;
    setup.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_drops_oldest_summaries_keeps_alerts_and_reports_the_drops() {
    let broker = start_broker().await;
    let mut relay = Relay::start(([127, 0, 0, 1], broker).into()).await;
    relay.cut();
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    // Two devices of 32 tags: about 7 KB of summaries every 100 ms into a 64 KiB outbox.
    let setup = setup(
        relay.port,
        2,
        30,
        "summary_interval = \"100ms\"\nmax_size = \"64 KiB\"",
    )
    .await;
    let agent = AgentProcess::spawn(&setup.config);
    wait_status(setup.dir.path(), Duration::from_secs(15), |s| {
        s["alerts"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let socket = control::socket_path(&setup.dir.path().join("data"));
    let acked = control::request(
        &socket,
        "ack-alert",
        json!({"alert_id": "P-1/maintenance", "by": "local"}),
    )
    .await
    .expect("reply");
    assert_eq!(acked["ok"], true, "{acked}");
    let full = wait_status(setup.dir.path(), Duration::from_secs(15), |s| {
        s["outbox"]["summary"]["dropped"].as_u64() > Some(80)
    })
    .await;
    let outbox = &full["outbox"];
    assert!(
        outbox["bytes"].as_u64() <= outbox["max_bytes"].as_u64(),
        "{outbox}"
    );
    assert_eq!(outbox["alert"]["dropped"], 0);
    // Raised and acknowledged, both kept; and the outbox-filling health alert.
    assert_eq!(outbox["alert"]["depth"], 3, "{outbox}");
    assert_eq!(outbox["event"]["dropped"], 0);

    relay.restore().await;
    assert!(
        consumer
            .wait_until(Duration::from_secs(20), |m| {
                let all = records(m);
                let alerts = all.iter().filter(|r| r.2["kind"] == "alert").count();
                let reported = all.iter().any(|r| {
                    r.2["data"]["event"] == "outbox_dropped"
                        && r.2["data"]["dropped"]["summary"].as_u64() > Some(0)
                        && r.2["data"]["dropped"]["alert"] == 0
                });
                let summaries = all.iter().any(|r| r.2["kind"] == "tags");
                alerts >= 3 && reported && summaries
            })
            .await,
        "the alerts, the drop report and summaries arrive: {:?}",
        records(&consumer.messages())
            .iter()
            .filter(|r| r.0 != "summary")
            .map(|r| r.2.to_string())
            .collect::<Vec<_>>()
    );
    // Alerts go first when the backlog drains.
    let all = records(&consumer.messages());
    let kinds: Vec<&str> = all.iter().take(2).map(|r| r.0).collect();
    assert_eq!(kinds, ["alert", "alert"], "alerts lead the drain");
    // The oldest summaries went: the first summary to arrive is younger than the first alert.
    let first_alert = all.iter().find(|r| r.0 == "alert").expect("alert").1;
    let first_summary = all
        .iter()
        .find(|r| r.2["kind"] == "tags")
        .expect("summary")
        .1;
    assert!(
        first_summary > first_alert,
        "summary {first_summary} older than alert {first_alert} should have been dropped"
    );
    agent.terminate().await;
    setup.sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_the_topics_moves_every_kind_of_record() {
    // Alerts and events used to stay on the prefix the agent started with while summaries and
    // assessments moved: their topics were fixed when the record was made.
    let broker = start_broker().await;
    let consumer = Consumer::connect(local_options("consumer", broker), "acme/#").await;
    let setup = setup(broker, 1, 0, "summary_interval = \"200ms\"").await;
    let mut agent = AgentProcess::spawn(&setup.config);
    assert!(
        consumer
            .wait_until(Duration::from_secs(20), |m| m
                .iter()
                .any(|m| m.topic == format!("{PREFIX}/P-1/alert")))
            .await,
        "the maintenance alert is raised under the first prefix"
    );
    let text = std::fs::read_to_string(&setup.config).expect("config");
    let moved = text
        .replace("site = \"plant1\"", "site = \"plant2\"")
        .replace("name = \"gw\"", "name = \"gw2\"");
    assert_ne!(moved, text);
    std::fs::write(&setup.config, moved).expect("write config");
    let new = "acme/plant2/area/line";
    agent.signal("HUP").await;
    assert!(
        agent
            .wait_log(
                Duration::from_secs(20),
                "configuration reloaded: acquisition restarted with the new plan"
            )
            .await
            .is_some(),
        "reloaded"
    );
    let (ok, text) = run_cli(&setup.config, &["ack", "P-1/maintenance", "--by", "j.doe"]).await;
    assert!(ok, "{text}");
    let wanted = [
        format!("{new}/gw2/status"),
        format!("{new}/gw2/events"),
        format!("{new}/d0/tags"),
        format!("{new}/P-1/health"),
        format!("{new}/P-1/alert"),
    ];
    assert!(
        consumer
            .wait_until(Duration::from_secs(20), |m| wanted
                .iter()
                .all(|w| m.iter().any(|m| m.topic == *w)))
            .await,
        "every kind of record under the new prefix: {wanted:?} in {:?}",
        consumer
            .messages()
            .iter()
            .map(|m| m.topic.clone())
            .collect::<HashSet<_>>()
    );
    let messages = consumer.messages();
    let on_new = |kind: &str| {
        messages
            .iter()
            .filter(|m| m.topic.starts_with(new))
            .filter(|m| m.json()["kind"] == kind)
            .map(|m| m.json())
            .collect::<Vec<_>>()
    };
    assert!(
        on_new("event")
            .iter()
            .any(|e| e["data"]["event"] == "config_reloaded"),
        "the reload's own event is under the new prefix"
    );
    assert!(
        on_new("alert")
            .iter()
            .any(|a| a["data"]["transition"] == "acknowledged" && a["agent"] == "gw2"),
        "the acknowledgement after the reload is under the new prefix"
    );
    // Nothing made after the reload went to the old prefix.
    let reloaded_at = on_new("event")
        .iter()
        .find(|e| e["data"]["event"] == "config_reloaded")
        .and_then(|e| e["id"].as_u64())
        .expect("id");
    let late_on_old: Vec<_> = messages
        .iter()
        .filter(|m| m.topic.starts_with(PREFIX) && !m.retain)
        .filter(|m| m.json()["id"].as_u64().is_some_and(|id| id > reloaded_at))
        .map(|m| m.topic.clone())
        .collect();
    assert!(late_on_old.is_empty(), "{late_on_old:?}");
    agent.terminate().await;
}

/// An uplink of its own (in this process) over `outbox` to the broker on `port`.
fn uplink_to(
    port: u16,
    outbox: &std::sync::Arc<millwright::store::Outbox>,
) -> (
    millwright::uplink::Uplink,
    std::sync::Arc<millwright::uplink::UplinkStats>,
) {
    let plan = firmware_config::load_str(
        Path::new("t.toml"),
        &format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nbackoff = {{ initial = \"50ms\", max = \"200ms\" }}\n"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let stats = std::sync::Arc::new(millwright::uplink::UplinkStats::default());
    let mut mqtt = plan.mqtt.expect("mqtt");
    mqtt.topic_prefix = "big/a/l".into();
    let uplink = millwright::uplink::Uplink::uns(
        mqtt,
        millwright::uplink::Identity {
            agent: "gw".into(),
            version: "test".into(),
            config_hash: "0".into(),
        },
        millwright::uplink::UplinkParts {
            outbox: std::sync::Arc::clone(outbox),
            stats: std::sync::Arc::clone(&stats),
            commands: std::sync::Arc::new(millwright::uplink::Refusing("none")),
            clock: std::sync::Arc::new(millwright::clock::SystemClock),
        },
    );
    (uplink, stats)
}

/// A record as releases before typed records stored it (store format 1): its own topic and body.
fn legacy(topic: &str, kind: &str, body: &str) -> millwright::store::NewRecord {
    millwright::store::NewRecord {
        class: if kind == "event" {
            millwright::store::Class::Event
        } else {
            millwright::store::Class::Summary
        },
        created: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        payload: millwright::store::Payload::Raw {
            topic: topic.into(),
            kind: kind.into(),
            body: body.as_bytes().to_vec(),
        },
    }
}

/// The summary of `device` (published on `big/a/l/{device}/tags`) with a text tag `pad` long.
fn summary(device: &str, pad: usize) -> millwright::store::NewRecord {
    use millwright::records::{Last, Report, TagStats, TagSummary};
    let now = std::time::SystemTime::now();
    let text = millwright::sample::Value::Text("x".repeat(pad));
    let report = Report::TagSummary(TagSummary {
        device: device.into(),
        online: Some(true),
        from: now,
        to: now,
        tags: vec![TagStats {
            name: "pad".into(),
            unit: None,
            count: 1,
            bad: 0,
            worst: Some(millwright::sample::Quality::Good),
            last: Some(Last::Value(text)),
            min: None,
            max: None,
            mean: None,
        }],
    });
    millwright::store::NewRecord::report(report, now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_no_broker_will_take_become_dead_letters_and_their_stream_goes_on() {
    use millwright::store::{MemoryStore, Outbox};
    use std::sync::Arc;

    // This broker closes the connection on any packet above 4 KiB, as brokers with a smaller
    // packet limit than the agent's do. Before the dead letters, each of these records stopped
    // its stream for good: a wildcard topic (rumqttc refuses it as if its queue were full), a
    // NUL (the broker drops the connection on every attempt), one too large for any MQTT packet,
    // and one too large for this broker.
    let broker = millwright_tests::mqtt::start_broker_with_limit(4096).await;
    let consumer = Consumer::connect(local_options("consumer", broker), "big/#").await;
    let outbox = Arc::new(Outbox::new(Box::new(MemoryStore::default()), 64 << 20).expect("outbox"));
    let healthy = ["big/a/l/p1/tags", "big/a/l/p2/tags", "big/a/l/p3/tags"];
    for (device, pad) in [
        ("pump#1", 10),
        ("p1", 10),
        ("drive\0", 10),
        ("x", 2 << 20),
        ("p2", 10),
        ("y", 8_000),
        ("p3", 10),
    ] {
        outbox.append(summary(device, pad)).expect("append");
    }
    let (uplink, stats) = uplink_to(broker, &outbox);
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(uplink.run(stop.clone()));
    assert!(
        consumer
            .wait_until(Duration::from_secs(20), |m| healthy
                .iter()
                .all(|t| m.iter().any(|m| m.topic == *t)))
            .await,
        "the healthy records behind the bad ones are delivered: {:?}",
        consumer
            .messages()
            .iter()
            .map(|m| m.topic.clone())
            .collect::<Vec<_>>()
    );
    let order: Vec<String> = consumer
        .messages()
        .iter()
        .map(|m| m.topic.clone())
        .filter(|t| healthy.contains(&t.as_str()))
        .collect();
    // QoS 1 may deliver a record again after a lost connection: order by first arrival.
    let mut seen = HashSet::new();
    let first_seen: Vec<&String> = order.iter().filter(|t| seen.insert(*t)).collect();
    assert_eq!(first_seen, healthy, "in stream order: {order:?}");
    eventually(Duration::from_secs(10), || async {
        (outbox.stats().dead_letters.depth == 4 && outbox.depth() == 0)
            .then_some(())
            .ok_or(())
    })
    .await
    .unwrap_or_else(|()| {
        panic!(
            "four dead letters and an empty stream: {:?}",
            outbox.stats()
        )
    });

    let letters = outbox.dead_letters(10).expect("dead letters");
    let reason = |topic: &str| {
        letters
            .iter()
            .find(|l| l.topic == topic)
            .map(|l| l.reason.clone())
            .unwrap_or_else(|| panic!("no dead letter for {topic:?}: {letters:#?}"))
    };
    assert!(reason("big/a/l/pump#1/tags").contains("contains `#`"));
    assert!(reason("big/a/l/drive\0/tags").contains("U+0000"));
    assert!(reason("big/a/l/x/tags").contains("larger than an MQTT packet may be"));
    let refused = reason("big/a/l/y/tags");
    assert!(
        refused.starts_with("the broker ended the connection 3 times in a row while this record alone was in flight"),
        "{refused}"
    );
    assert!(!consumer
        .messages()
        .iter()
        .any(|m| m.topic.ends_with("/x/tags") || m.topic.ends_with("/y/tags")));
    assert_eq!(
        stats
            .dead_lettered
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
    assert_eq!(outbox.stats().summary.dropped, 0, "kept, not dropped");

    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_with_unpublishable_records_from_an_older_release_still_drains() {
    use millwright::store::{sled_store::SledStore, Outbox};

    // An older release accepted device names with `#` and NUL, and left their summaries in the
    // outbox; after the upgrade they must not hold the stream (or the healthy device) back.
    // Its healthy records (stored with their topic and JSON body: store format 1) are sent
    // byte for byte as that release sent them.
    let broker = start_broker().await;
    let consumer =
        Consumer::connect(local_options("consumer", broker), &format!("{PREFIX}/#")).await;
    let setup = setup(broker, 1, 0, "summary_interval = \"200ms\"").await;
    {
        let (store, _) =
            SledStore::open_or_recover(&setup.dir.path().join("data/outbox")).expect("store");
        let outbox = Outbox::new(Box::new(store), 64 << 20).expect("outbox");
        for topic in [
            format!("{PREFIX}/pump#1/tags"),
            format!("{PREFIX}/drive\0/tags"),
        ] {
            outbox
                .append(legacy(&topic, "tags", "{\"n\":1}"))
                .expect("append");
        }
        let body = r#"{"device":"old","from":"2023-11-14T22:13:10.000Z","online":true,"tags":{"t":{"bad":0,"count":1,"last":2.5,"max":2.5,"mean":2.5,"min":2.5,"quality":"good"}},"to":"2023-11-14T22:13:20.000Z"}"#;
        outbox
            .append(legacy(&format!("{PREFIX}/old/tags"), "tags", body))
            .expect("append");
        outbox
            .append(legacy(&format!("{PREFIX}/gw/events"), "event", "not json"))
            .expect("append");
        outbox.flush().expect("flush");
    }
    let agent = AgentProcess::spawn(&setup.config);
    let old_summary = r#"{"schema":1,"id":3,"kind":"tags","agent":"gw","time":"2023-11-14T22:13:20.000Z","data":{"device":"old","from":"2023-11-14T22:13:10.000Z","online":true,"tags":{"t":{"bad":0,"count":1,"last":2.5,"max":2.5,"mean":2.5,"min":2.5,"quality":"good"}},"to":"2023-11-14T22:13:20.000Z"}}"#;
    let old_event = r#"{"schema":1,"id":4,"kind":"event","agent":"gw","time":"2023-11-14T22:13:20.000Z","data":"not json"}"#;
    assert!(
        consumer
            .wait_until(Duration::from_secs(15), |m| [old_summary, old_event]
                .iter()
                .all(|old| m.iter().any(|m| m.payload == old.as_bytes())))
            .await,
        "the old release's records arrive as it would have sent them: {:?}",
        consumer
            .messages()
            .iter()
            .filter(|m| m.topic.contains("/old/") || m.topic.ends_with("/events"))
            .map(|m| (
                m.topic.clone(),
                String::from_utf8_lossy(&m.payload).into_owned()
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        consumer
            .wait_until(Duration::from_secs(15), |m| records(m)
                .iter()
                .filter(|r| r.2["kind"] == "tags" && r.2["data"]["device"] == "d0")
                .count()
                >= 3)
            .await,
        "the healthy device's summaries flow"
    );
    let status = wait_status(setup.dir.path(), Duration::from_secs(10), |s| {
        s["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["alert_id"] == "agent/dead_letters"))
    })
    .await;
    let dead = &status["outbox"]["dead_letters"];
    assert_eq!(dead["depth"], 2, "{status:#}");
    assert_eq!(status["uplink"]["dead_lettered"], 2, "{status:#}");
    let alert = status["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alert_id"] == "agent/dead_letters"))
        .expect("alert");
    assert!(
        alert["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("2 record(s) the broker would not take")),
        "{alert}"
    );

    let (ok, listing) = run_cli(&setup.config, &["outbox", "--dead-letters"]).await;
    assert!(ok, "{listing}");
    assert!(listing.contains("dead letters: 2 kept"), "{listing}");
    assert!(
        listing.contains("pump#1/tags") && listing.contains("contains `#`"),
        "{listing}"
    );
    assert!(
        listing.contains("drive\\0/tags") && listing.contains("U+0000"),
        "{listing}"
    );
    let (ok, shown) = run_cli(&setup.config, &["outbox"]).await;
    assert!(ok && shown.contains("dead letters 2"), "{shown}");
    let (ok, dropped) = run_cli(&setup.config, &["outbox", "--drop-dead-letters"]).await;
    assert!(
        ok && dropped.contains("2 dead letter(s) dropped"),
        "{dropped}"
    );
    wait_status(setup.dir.path(), Duration::from_secs(10), |s| {
        s["outbox"]["dead_letters"]["depth"] == 0
            && s["alerts"]
                .as_array()
                .is_some_and(|a| !a.iter().any(|a| a["alert_id"] == "agent/dead_letters"))
    })
    .await;
    assert!(
        consumer
            .wait_until(Duration::from_secs(10), |m| records(m).iter().any(|r| {
                r.2["kind"] == "alert"
                    && r.2["data"]["alert_id"] == "agent/dead_letters"
                    && r.2["data"]["state"] == "active_unacknowledged"
            }))
            .await,
        "the dead-letter alert went upstream too"
    );
    let log = agent.terminate().await;
    assert!(
        log.seen
            .iter()
            .filter(|l| l.contains("moved to the outbox's dead letters"))
            .count()
            == 2,
        "each burial is logged once:\n{}",
        log.transcript()
    );
    setup.sim.stop().await;
}
