//! A full disk under the outbox never stops acquisition: appends and flushes fail, are counted and
//! reported (throttled), polling goes on, and the agent still stops cleanly.
//!
//! Needs root to mount a small tmpfs as the data directory; ignored, with that reason, otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use millwright_tests::mqtt::free_port;
use millwright_tests::{log_message, AgentProcess, Sim};

const SIM: &str = r#"
[[machines]]
name = "line"
kind = "conveyor"
unit_id = 1
[[machines.points]]
name = "speed"
table = "holding"
address = 0
type = "f32"
signal = { base = 1.25, noise = 0.01 }
"#;

/// A 1 MiB tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

millwright_tests::needs! { root
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_polling_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let _disk = SmallDisk::mount(&data).expect("a 1 MiB tmpfs mounted as the data directory");
    let sim = Sim::start(SIM, 0).await;
    let mut config = format!(
        r#"
[agent]
name = "gw"
data_dir = {data:?}

[outbox]
summary_interval = "100ms"
flush_interval = "100ms"

[mqtt]
url = "mqtt://127.0.0.1:{}"
backoff = {{ initial = "1s", max = "5s" }}
"#,
        free_port()
    );
    for d in 0..4 {
        config.push_str(&format!(
            "\n[[devices]]\nname = \"d{d}\"\nhost = \"127.0.0.1\"\nport = {}\naddressing = \"zero_based\"\npoll_interval = \"100ms\"\n",
            sim.addr.port()
        ));
        for t in 0..30 {
            config.push_str(&format!(
                "\n[[devices.tags]]\nname = \"d{d}.speed_{t}\"\ntable = \"holding_register\"\naddress = 0\ntype = \"f32\"\n"
            ));
        }
    }
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).expect("config");
    let mut agent = AgentProcess::spawn(&path);

    let failed = agent
        .log
        .wait_for(Duration::from_secs(60), |l| {
            let message = log_message(l).unwrap_or_default();
            message.starts_with("outbox append failed")
                || message.starts_with("outbox flush failed")
        })
        .await
        .unwrap_or_else(|| panic!("the disk never filled:\n{}", agent.log.transcript()));
    assert!(failed.contains("No space left"), "{failed}");
    // Acquisition goes on: fresh good samples after the failure.
    for _ in 0..50 {
        agent
            .log
            .wait_for(Duration::from_secs(10), |l| {
                log_message(l).as_deref() == Some("sample") && l.contains("\"quality\":\"good\"")
            })
            .await
            .expect("polling goes on with a full disk");
    }
    let status = millwright::control::request(
        &millwright::control::socket_path(&data),
        "status",
        serde_json::json!({}),
    )
    .await
    .expect("status");
    assert!(
        status["result"]["outbox"]["store_errors"].as_u64() > Some(0),
        "{status}"
    );
    let log = agent.terminate().await;
    let complaints = log
        .seen
        .iter()
        .filter(|l| log_message(l).is_some_and(|m| m.starts_with("outbox append failed")))
        .count();
    assert!(
        complaints <= 10,
        "{complaints} complaints: throttled to one per 10 s"
    );
    sim.stop().await;
}
}
