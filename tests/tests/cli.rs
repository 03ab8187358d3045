//! The `millwright` binary against a simulated plant: `read`, `run` and `demo`. (Exit codes of
//! `check` and `schema` are tested beside the CLI in `agent/tests/cli.rs`.)

use std::process::Stdio;
use std::time::Duration;

use millwright_tests::{millwright_bin, Sim};
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
order = "CDAB"
signal = { base = 4.5 }
"#;

fn agent_config(port: u16, address: u32) -> String {
    format!(
        r#"
[agent]
summary_interval = "500ms"

[[devices]]
name = "pump"
host = "127.0.0.1"
port = {port}
addressing = "modicon"
poll_interval = "100ms"
timeout = "300ms"

[[devices.tags]]
name = "pump.pressure"
address = {address}
type = "f32"
order = "CDAB"
unit = "bar"
"#
    )
}

async fn output(args: &[&str]) -> std::process::Output {
    output_of(
        Command::new(millwright_bin())
            .args(args)
            .args(["--log-format", "compact"]),
    )
    .await
}

/// What `command` printed, within 30 s.
async fn output_of(command: &mut Command) -> std::process::Output {
    let child = command.stdin(Stdio::null()).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("finishes")
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_shows_raw_registers_wire_address_and_value() {
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plant.toml");
    std::fs::write(&path, agent_config(sim.addr.port(), 40001)).expect("write");
    let out = output(&["read", "-c", path.to_str().expect("utf8")]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 4.5f32 = 0x40900000, CDAB on the wire: 0x0000 0x4090
    let line = stdout
        .lines()
        .find(|l| l.contains("pump.pressure"))
        .expect("row");
    for needle in [
        "40001 (wire 0)",
        "f32 CDAB",
        "0x0000 0x4090",
        "4.5",
        "bar",
        "good",
    ] {
        assert!(line.contains(needle), "{needle} missing in {line}");
    }

    // One register off (a typical addressing mistake): the value is nonsense, the raw words show why.
    std::fs::write(&path, agent_config(sim.addr.port(), 40002)).expect("write");
    let out = output(&["read", "-c", path.to_str().expect("utf8")]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("pump.pressure"))
        .expect("row");
    assert!(
        line.contains("40002 (wire 1)") && line.contains("0x4090 0x0000"),
        "{line}"
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn word_order_swaps_only_multi_register_values_and_read_shows_the_order_applied() {
    // A device whose floats arrive byte-swapped (BADC) and whose 16-bit values arrive as sent:
    // its u16 once came back byte-swapped (6099 read as 54039) while bits of the same register
    // did not.
    let sim = Sim::start(
        r#"
[[machines]]
name = "drive"
kind = "motor"
unit_id = 1
word_order = "BADC"
[[machines.points]]
name = "power"
table = "holding"
address = 0
type = "f32"
signal = { base = 4.5 }
[[machines.points]]
name = "status"
table = "holding"
address = 2
signal = { base = 6099 }
"#,
        0,
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plant.toml");
    let port = sim.addr.port();
    std::fs::write(
        &path,
        format!(
            r#"
[[devices]]
name = "drive"
host = "127.0.0.1"
port = {port}
addressing = "zero_based"
word_order = "BADC"

[[devices.tags]]
name = "power"
table = "holding"
address = 0
type = "f32"

[[devices.tags]]
name = "status"
table = "holding"
address = 2

[[devices.tags]]
name = "ready"
table = "holding"
address = 2
type = "bool"
bit = 10
"#
        ),
    )
    .expect("write");
    let out = output(&["read", "-c", path.to_str().expect("utf8")]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let row = |tag: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(tag))
            .unwrap_or_else(|| panic!("no row for {tag} in\n{stdout}"))
            .to_string()
    };
    // 4.5f32 = 0x40900000, each register's bytes swapped on the wire.
    let power = row("power");
    for needle in ["f32 BADC", "0x9040 0x0000", "4.5"] {
        assert!(power.contains(needle), "{needle} missing in {power}");
    }
    // 6099 = 0x17d3 as sent; bit 10 of it is set (of the swapped 0xd317 it would not be).
    let status = row("status");
    for needle in ["u16 AB", "0x17d3", "6099"] {
        assert!(status.contains(needle), "{needle} missing in {status}");
    }
    let ready = row("ready");
    assert!(
        ready.contains("bool bit 10 AB") && ready.contains("true"),
        "{ready}"
    );
    sim.stop().await;
}

#[tokio::test]
async fn read_of_an_unreachable_device_says_why_and_exits_4() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plant.toml");
    std::fs::write(&path, agent_config(port, 40001)).expect("write");
    let out = output(&["read", "-c", path.to_str().expect("utf8")]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}");
    assert!(
        stdout.contains("transport error") && stdout.contains("Connection refused"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_polls_logs_summaries_and_stops_cleanly_on_sigterm() {
    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plant.toml");
    std::fs::write(&path, agent_config(sim.addr.port(), 40001)).expect("write");
    let child = Command::new(millwright_bin())
        .args([
            "run",
            "-c",
            path.to_str().expect("utf8"),
            "--log-format",
            "json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let pid = child.id().expect("pid").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops")
        .expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.contains("device summary"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert!(
        summary.contains("\"device\":\"pump\"") && summary.contains("\"online\":true"),
        "{summary}"
    );
    assert!(
        stderr.contains("device online") && stderr.contains("shutting down"),
        "{stderr}"
    );
    sim.stop().await;
}

/// The demo without a terminal: compact lines, the page served, an alert within the first minute
/// with its reason following the value, and Ctrl-C ending it with a one-line summary and its
/// private data directory removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_page_raises_an_alert_within_a_minute_and_sums_up_at_ctrl_c() {
    let mut child = Command::new(millwright_bin())
        .args(["demo", "--http", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the demo");
    let mut out = millwright_tests::OutputLines::follow(child.stdout.take().expect("stdout"));
    let page = out
        .wait_for(Duration::from_secs(20), |l| l.starts_with("status page: "))
        .await
        .expect("the page's address");
    let addr: std::net::SocketAddr = page
        .trim_start_matches("status page: http://")
        .trim_end_matches('/')
        .parse()
        .expect("an address");
    let dir = out
        .wait_for(Duration::from_secs(5), |l| {
            l.starts_with("data directory: ")
        })
        .await
        .expect("the data directory is printed");
    let dir = std::path::PathBuf::from(
        dir.trim_start_matches("data directory: ")
            .split(" (")
            .next()
            .expect("a path"),
    );
    assert!(
        dir.starts_with(std::env::temp_dir())
            && dir != std::path::Path::new("/tmp/millwright-demo")
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&dir)
        .expect("data dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "private to the run");
    let alert = out
        .wait_for(Duration::from_secs(60), |l| l.contains("] alert "))
        .await
        .unwrap_or_else(|| panic!("no alert in the first minute:\n{}", out.transcript()));
    assert!(
        alert.contains("winding_temperature") && alert.contains("— now "),
        "{alert}"
    );
    let status = millwright_tests::http::get(addr, "/api/status", &[])
        .await
        .json();
    assert_eq!(
        status["devices"].as_array().map(Vec::len),
        Some(4),
        "{status}"
    );
    assert!(status["alerts"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(
        out.seen
            .iter()
            .any(|l| l.contains("4/4 devices online") && l.contains("M-101 health")),
        "{}",
        out.transcript()
    );
    let pid = child.id().expect("pid").to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status().await;
    let summary = out
        .wait_for(Duration::from_secs(15), |l| {
            l.starts_with("demo stopped after")
        })
        .await
        .unwrap_or_else(|| panic!("no summary:\n{}", out.transcript()));
    assert!(
        summary.contains("alerts raised") && summary.contains("press-1 OEE"),
        "{summary}"
    );
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits")
        .expect("wait");
    assert!(status.success(), "{status}");
    assert!(
        !dir.exists(),
        "the demo's data directory is removed at the end"
    );
}

/// On a terminal the demo redraws one screen in place, and the log goes to a file, not between
/// the screens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_on_a_terminal_redraws_one_screen_without_log_lines() {
    let command = format!(
        "{} demo --duration 5s --http 127.0.0.1:0",
        millwright_bin().display()
    );
    // `script` gives the demo a pseudo-terminal as stdout.
    let out = output_of(Command::new("script").args(["-qfec", &command, "/dev/null"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let frames = text.matches("\x1b[H\x1b[2J").count();
    assert!(frames >= 3, "{frames} redraws in\n{text}");
    let last = text.rsplit("\x1b[H\x1b[2J").next().expect("a frame");
    for part in [
        "ALERTS",
        "ASSETS",
        "DEVICES",
        "LINES",
        "P-101",
        "pump-1",
        "\"KSB-ETA\"",
    ] {
        assert!(last.contains(part), "{part} missing in\n{last}");
    }
    assert!(!text.contains(" INFO "), "log lines on the screen:\n{text}");
    assert!(text.contains("log in "), "{text}");
    assert!(text.contains("demo stopped after"), "{text}");
}

#[test]
fn simulator_examples_load() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-config/examples/sim");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).expect("sim examples") {
        let path = entry.expect("entry").path();
        let (_, plant) = millwright::sim::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!plant.machines().is_empty());
        loaded += 1;
    }
    assert!(loaded >= 1);
}

#[test]
fn simulator_config_errors_have_positions() {
    let text = "[[machines]]\nname = \"m\"\nkind = \"pump\"\nunit_id = 1\n[[machines.points]]\nname = \"p\"\ntable = \"coil\"\naddress = 0\ntype = \"f32\"\n";
    let errors = match millwright::sim::load_str(std::path::Path::new("sim.toml"), text) {
        Err(e) => e.0,
        Ok(_) => panic!("a coil cannot hold an f32"),
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].position.map(|p| p.0), Some(9));
    assert!(
        errors[0].message.contains("coil holds single bits"),
        "{}",
        errors[0]
    );
}
