//! The fleet side (`fleet/`, Python on Ray Data): its own tests under pytest, and end to end: the
//! agent binary on the demo plant (with a production line on one-minute shifts and a quality
//! station) publishes to mosquitto, `fleet ingest` writes the Parquet dataset while both the
//! ingest (SIGKILL) and the broker (a restart) go away, and `fleet analyze` runs every job on a
//! local Ray. An independent subscriber's capture is the reference: every record in it is in the
//! dataset exactly once.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use millwright_tests::mqtt::{local_options, Consumer, Message, Mosquitto};
use millwright_tests::{AgentProcess, OutputLines, Sim};

const DEMO_AGENT: &str = include_str!("../../firmware-config/examples/demo-plant.toml");
const DEMO_SIM: &str = include_str!("../../firmware-config/examples/sim/demo.toml");
const GAUGE_AGENT: &str = include_str!("../../agent/tests/fixtures/quality-gauge.toml");
const GAUGE_SIM: &str = include_str!("../fixtures/quality-sim.toml");

fn fleet_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("fleet")
}

/// `python3 -m <module> args…` in `fleet/`, output piped.
fn python(module: &str, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("python3");
    command
        .current_dir(fleet_dir())
        .env("PYTHONPATH", fleet_dir())
        .arg("-m")
        .arg(module)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// The two tests each start a local Ray on both cores: one at a time.
static RAY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

millwright_tests::needs! { fleet
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_python_tests_pass() {
    let _ray = RAY.lock().await;
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        python("pytest", &["-q", "-p", "no:cacheprovider", "tests"]).output(),
    )
    .await
    .expect("pytest within 10 minutes")
    .expect("run pytest");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "fleet tests failed:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains(" passed"), "{text}");
}
}

/// The first shift's start in minutes since midnight UTC: the next whole minute, or the one after
/// when fewer than 20 s are left to start everything.
fn first_shift_minute() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let wait = if now % 60 > 40 { 2 } else { 1 };
    (now % 86_400 / 60 + wait) % 1440
}

fn hhmm(minute: u64) -> String {
    let minute = minute % 1440;
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// The demo plant plus the gauge station, the press line on two one-minute shifts starting at
/// `first` (minutes since midnight UTC), to the simulators and the broker.
fn agent_config(
    data_dir: &Path,
    demo_port: u16,
    gauge_port: u16,
    mqtt_port: u16,
    first: u64,
) -> String {
    let shifts = DEMO_AGENT.find("[[lines.shifts]]").expect("a shift");
    let demo = DEMO_AGENT[..shifts]
        .replace("port = 5020", &format!("port = {demo_port}"))
        .replace(
            "data_dir = \"/tmp/millwright-demo\"",
            &format!("data_dir = {:?}", data_dir.display().to_string()),
        );
    let gauge_start = GAUGE_AGENT.find("[[devices]]").expect("gauge device");
    let gauge = GAUGE_AGENT[gauge_start..].replace(
        "host = \"127.0.0.1\"",
        &format!("host = \"127.0.0.1\"\nport = {gauge_port}"),
    );
    let mut shifts = String::new();
    for (i, name) in ["first", "second"].iter().enumerate() {
        let start = first + i as u64;
        shifts += &format!(
            "\n[[lines.shifts]]\nname = \"{name}\"\nstart = \"{}\"\nend = \"{}\"\n",
            hhmm(start),
            hhmm(start + 1)
        );
    }
    // Tag summaries every 5 s, so that the counters' readings bracket each shift closely.
    let uplink = millwright_tests::uplink_toml(mqtt_port)
        .replace("[outbox]\n", "[outbox]\nsummary_interval = \"5s\"\n");
    format!("{demo}{shifts}\n{gauge}\n{uplink}")
}

/// A broker that keeps sessions and their queues across a restart. `user root`: started as root,
/// mosquitto would switch to its own user, which cannot write the test's private directory (run as
/// any other user, mosquitto ignores the line).
fn broker_conf(dir: &Path) -> impl Fn(u16) -> String + '_ {
    move |port| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nautosave_interval 1\nmax_queued_messages 100000\n",
            dir.display()
        )
    }
}

struct Ingest {
    child: tokio::process::Child,
    log: OutputLines,
}

impl Ingest {
    fn start(port: u16, dir: &Path) -> Ingest {
        let broker = format!("mqtt://127.0.0.1:{port}");
        let dataset = dir.join("dataset");
        let state = dir.join("ingest-state");
        let mut command = python(
            "fleet",
            &[
                "ingest",
                "--broker",
                &broker,
                "--dataset",
                &dataset.display().to_string(),
                "--state",
                &state.display().to_string(),
                "--topic",
                "acme/#",
                "--roll-seconds",
                "3",
                "--status-every",
                "2",
            ],
        );
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start fleet ingest");
        let log = OutputLines::follow(child.stderr.take().expect("stderr"));
        Ingest { child, log }
    }

    async fn stop(mut self, signal: &str) -> String {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status()
                .await;
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the ingest stops within 60 s")
            .expect("wait");
        while self
            .log
            .wait_for(Duration::from_millis(300), |_| false)
            .await
            .is_some()
        {}
        if signal == "TERM" {
            assert!(
                status.success(),
                "ingest exit {status}:\n{}",
                self.log.transcript()
            );
        }
        self.log.transcript()
    }
}

fn capture(messages: &[Message], path: &Path) {
    let lines: Vec<String> = messages
        .iter()
        .filter(|m| !m.retain)
        .map(|m| {
            serde_json::json!({"topic": m.topic, "payload": String::from_utf8_lossy(&m.payload)})
                .to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).expect("write capture");
}

/// Closing reports of the two test shifts (not of the unscheduled time before them).
fn closing_reports(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| (m.topic.ends_with("/press-1/oee"), m.json()["data"].clone()))
        .filter(|(line, data)| *line && data["closing"] == true && data["shift"] != "unscheduled")
        .count()
}

millwright_tests::needs! { fleet
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_to_broker_to_parquet_to_ray_jobs_through_an_ingest_kill_and_a_broker_restart() {
    let _ray = RAY.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let broker_dir = dir.path().join("broker");
    std::fs::create_dir_all(&broker_dir).expect("broker dir");
    let mut broker = Mosquitto::start(&broker_dir, broker_conf(&broker_dir)).await;
    let port = broker.port;
    let mut options = local_options("reference-capture", port);
    options.set_clean_session(false);
    let reference = Consumer::connect(options, "acme/#").await;

    // The demo's motor overheats towards failure in 3 minutes rather than 20, within the test.
    let demo = Sim::start(&DEMO_SIM.replace("fails = \"20m\"", "fails = \"3m\""), 0).await;
    let gauge = Sim::start(GAUGE_SIM, 0).await;
    let first = first_shift_minute();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        agent_config(dir.path(), demo.addr.port(), gauge.addr.port(), port, first),
    )
    .expect("write config");
    // The ingest's session exists before the agent's first record.
    let mut ingest = Ingest::start(port, dir.path());
    assert!(
        ingest
            .log
            .wait_for(Duration::from_secs(60), |l| l.contains("connects 1"))
            .await
            .is_some(),
        "the ingest connects:\n{}",
        ingest.log.transcript()
    );
    let agent = AgentProcess::spawn(&config);

    // The ingest dies without a goodbye while records flow, and comes back.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let killed = ingest.stop("KILL").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ingest = Ingest::start(port, dir.path());

    // The broker restarts in the first shift: the agent's outbox and the sessions bridge it.
    assert!(
        reference
            .wait_until(Duration::from_secs(150), |m| m.iter().any(|m| m.topic.ends_with("/press-1/oee")
                && m.json()["data"]["shift"] == "first"))
            .await,
        "a report of the first shift"
    );
    broker.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker = Mosquitto::start_on(&broker_dir, port, broker_conf(&broker_dir)).await;

    assert!(
        reference
            .wait_until(Duration::from_secs(180), |m| closing_reports(m) >= 2)
            .await,
        "both shifts closed; the line's reports: {:?}",
        reference
            .messages()
            .iter()
            .filter(|m| m.topic.ends_with("/press-1/oee"))
            .map(|m| {
                let data = m.json()["data"].clone();
                (data["shift"].clone(), data["closing"].clone(), data["shift_end"].clone())
            })
            .collect::<Vec<_>>()
    );
    let agent_log = agent.terminate().await;
    // What the agent queued at its stop reaches both subscribers.
    let stopping = reference
        .wait_until(Duration::from_secs(20), |m| {
            m.iter()
                .any(|m| m.json()["data"]["event"] == "agent_stopping")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ingest_log = ingest.stop("TERM").await;
    let capture_path = dir.path().join("capture.jsonl");
    capture(&reference.messages(), &capture_path);
    // For refreshing the bench's sample (fleet/tests/fixtures/agent-records.jsonl).
    if let Some(keep) = std::env::var_os("FLEET_KEEP_CAPTURE") {
        std::fs::copy(&capture_path, keep).expect("keep the capture");
    }
    drop(broker);

    let results = dir.path().join("results");
    let analyze = tokio::time::timeout(
        Duration::from_secs(300),
        python(
            "fleet",
            &[
                "analyze",
                "--dataset",
                &dir.path().join("dataset").display().to_string(),
                "--out",
                &results.display().to_string(),
                "--cpus",
                "2",
            ],
        )
        .output(),
    )
    .await
    .expect("analyze within 5 minutes")
    .expect("run analyze");
    assert!(
        analyze.status.success(),
        "analyze failed:\n{}\n{}",
        String::from_utf8_lossy(&analyze.stdout),
        String::from_utf8_lossy(&analyze.stderr)
    );

    let check = python(
        "tests.e2e_check",
        &[
            &capture_path.display().to_string(),
            &dir.path().join("dataset").display().to_string(),
            &results.display().to_string(),
        ],
    )
    .output()
    .await
    .expect("run the check");
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap_or_else(|e| {
        panic!("check output ({e}):\n{}", String::from_utf8_lossy(&check.stderr))
    });
    let context = format!("{report:#}\ningest before the kill:\n{killed}\ningest after:\n{ingest_log}");
    assert!(
        stopping,
        "agent_stopping delivered: {context}\nagent:\n{}",
        agent_log
            .seen
            .iter()
            .filter(|l| !l.contains("\"sample\""))
            .rev()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(report["captured"].as_u64().unwrap_or(0) > 50, "{context}");
    for what in ["missing", "duplicated", "extra"] {
        assert_eq!(report[what], serde_json::json!([]), "{what}: {context}");
    }
    let shifts = report["shifts"].as_array().expect("shifts");
    assert_eq!(shifts.len(), 2, "{context}");
    for shift in shifts {
        let reported = shift["parts_total"].as_f64().expect("parts");
        let counted = shift["counter_delta"].as_f64().expect("counter delta");
        // The summaries are 5 s apart and the press makes a part every 2 s: three parts either end.
        assert!(reported > 0.0 && (reported - counted).abs() <= 6.0, "{shift}: {context}");
    }
    // The simulator's motor overheats from 10 s on: M-101 is the asset to service first.
    let ranked: Vec<&str> = report["ranking"]
        .as_array()
        .expect("ranking")
        .iter()
        .filter_map(|r| r[0].as_str())
        .collect();
    assert_eq!(ranked, ["M-101", "P-101"], "{context}");
    let html = std::fs::read_to_string(results.join("report.html")).expect("report");
    assert!(html.contains("data:image/png;base64,"), "charts in the report");
    let stdout = String::from_utf8_lossy(&analyze.stdout);
    assert!(stdout.contains("\"maintenance_assets\": 2"), "{stdout}");
    demo.stop().await;
    gauge.stop().await;
}
}
