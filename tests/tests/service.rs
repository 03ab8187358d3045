//! The `millwright run` binary as systemd runs it (`Type=notify`, `WatchdogSec`, `ExecReload`
//! sending SIGHUP): readiness, watchdog keep-alives, reloads that validate first, and stop.

use std::process::Stdio;
use std::time::Duration;

use millwright_tests::{millwright_bin, NotifySocket, OutputLines, Sim};
use tokio::process::Command;

const SIM: &str = r#"
[[machines]]
name = "pump"
kind = "pump"
unit_id = 1
[[machines.points]]
name = "pressure"
table = "holding"
address = 0
type = "f32"
signal = { base = 4.5 }
[[machines.points]]
name = "flow"
table = "holding"
address = 10
type = "u16"
signal = { base = 321 }
"#;

fn config(port: u16, tag: &str, address: u32, kind: &str) -> String {
    format!(
        r#"
[agent]
summary_interval = "10s"

[[devices]]
name = "pump"
host = "127.0.0.1"
port = {port}
addressing = "zero_based"
poll_interval = "100ms"
timeout = "300ms"

[[devices.tags]]
name = "{tag}"
address = {address}
table = "holding_register"
type = "{kind}"
"#
    )
}

async fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .await
        .expect("kill");
    assert!(status.success());
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_keeps_the_watchdog_fed_and_reloads_only_valid_configs() {
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("millwright.toml");
    std::fs::write(&path, config(sim.addr.port(), "pump.pressure", 0, "f32")).expect("write");
    let mut notify = NotifySocket::bind();
    let mut child = Command::new(millwright_bin())
        .args(["run", "-c", path.to_str().expect("utf8")])
        .args(["-v", "--log-format", "json"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut log = OutputLines::follow(child.stderr.take().expect("stderr"));

    let ready = notify.wait_for(WAIT, "READY=1").await.expect("READY=1");
    assert!(ready.contains("STATUS=polling 1 sources"), "{ready}");
    // 0.4 s watchdog: keep-alives every 0.2 s.
    for _ in 0..3 {
        notify
            .wait_for(Duration::from_secs(2), "WATCHDOG=1")
            .await
            .unwrap_or_else(|| panic!("keep-alive missing; got {:?}", notify.received));
    }
    let sample = |tag: &'static str| {
        move |line: &str| {
            line.contains("\"sample\"") && line.contains(&format!("\"tag\":\"{tag}\""))
        }
    };
    log.wait_for(WAIT, sample("pump.pressure"))
        .await
        .unwrap_or_else(|| panic!("no pressure sample: {}", log.transcript()));

    // An invalid configuration: reported with its position, the running one stays.
    std::fs::write(&path, config(sim.addr.port(), "pump.flow", 10, "u17")).expect("write");
    signal(&child, "HUP").await;
    notify
        .wait_for(WAIT, "RELOADING=1")
        .await
        .expect("RELOADING=1");
    let ready = notify
        .wait_for(WAIT, "READY=1")
        .await
        .expect("READY=1 after a rejected reload");
    assert!(ready.contains("STATUS=polling 1 sources"), "{ready}");
    let rejected = log
        .wait_for(WAIT, |l| l.contains("reload rejected"))
        .await
        .unwrap_or_else(|| panic!("no rejection: {}", log.transcript()));
    assert!(
        rejected.contains("millwright.toml:17:") && rejected.contains("u17"),
        "{rejected}"
    );
    log.wait_for(WAIT, sample("pump.pressure"))
        .await
        .unwrap_or_else(|| panic!("old config no longer polled: {}", log.transcript()));

    // A valid new configuration replaces the running one.
    std::fs::write(&path, config(sim.addr.port(), "pump.flow", 10, "u16")).expect("write");
    signal(&child, "HUP").await;
    notify
        .wait_for(WAIT, "RELOADING=1")
        .await
        .expect("RELOADING=1");
    notify
        .wait_for(WAIT, "READY=1")
        .await
        .expect("READY=1 after reload");
    log.wait_for(WAIT, |l| {
        l.contains("acquisition restarted with the new plan")
    })
    .await
    .unwrap_or_else(|| panic!("no restart: {}", log.transcript()));
    let flow = log
        .wait_for(WAIT, sample("pump.flow"))
        .await
        .unwrap_or_else(|| panic!("new tag not polled: {}", log.transcript()));
    assert!(
        flow.contains("\"value\":\"321\"") && flow.contains("good"),
        "{flow}"
    );
    notify
        .wait_for(Duration::from_secs(2), "WATCHDOG=1")
        .await
        .expect("keep-alives continue after a reload");

    signal(&child, "TERM").await;
    notify
        .wait_for(WAIT, "STOPPING=1")
        .await
        .expect("STOPPING=1");
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops")
        .expect("status");
    assert_eq!(status.code(), Some(0), "{}", log.transcript());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_systemd_there_is_no_notification_and_no_watchdog() {
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("millwright.toml");
    std::fs::write(&path, config(sim.addr.port(), "pump.pressure", 0, "f32")).expect("write");
    let mut child = Command::new(millwright_bin())
        .args([
            "run",
            "-c",
            path.to_str().expect("utf8"),
            "--log-format",
            "json",
        ])
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut log = OutputLines::follow(child.stderr.take().expect("stderr"));
    log.wait_for(WAIT, |l| l.contains("device online"))
        .await
        .unwrap_or_else(|| panic!("not polling: {}", log.transcript()));
    signal(&child, "TERM").await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("stops")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    let transcript = {
        while log
            .wait_for(Duration::from_secs(1), |_| false)
            .await
            .is_some()
        {}
        log.transcript()
    };
    assert!(
        !transcript.contains("watchdog") && !transcript.contains("NOTIFY_SOCKET"),
        "{transcript}"
    );
    sim.stop().await;
}
