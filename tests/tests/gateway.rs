//! What runs on the gateway is what was tested: the gateway binaries, built exactly as
//! `cross/build.sh aarch64-musl` (static) and `cross/build.sh armv7-gnueabihf` (glibc 2.17) build
//! them, without the simulator, run under qemu-user against the simulator on loopback; and the
//! Debian package built around the aarch64 one.
//!
//! Needs `cross/build.sh --setup aarch64-musl armv7-gnueabihf`, qemu-user-static and cargo-deb
//! (`.ci/run` installs them). In CI a missing tool fails the test; elsewhere the test shows as
//! ignored, naming what is missing (`needs!`, decided by the crate's build script).
//! Capabilities join this smoke test as they land: tract scoring, the sled outbox, the MQTT uplink,
//! and OPC UA (trust, browse, and a SignAndEncrypt subscription) so far.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use millwright_tests::mqtt::{local_options, records, start_broker, Consumer};
use millwright_tests::{NotifySocket, OutputLines, Sim};
use tokio::process::Command;

const SIM: &str = r#"
[[machines]]
name = "pump"
kind = "pump"
unit_id = 7
[[machines.points]]
name = "pressure"
table = "holding"
address = 0
type = "f32"
order = "CDAB"
signal = { base = 4.5 }
[[machines.points]]
name = "energy"
table = "holding"
address = 2
type = "u32"
order = "BADC"
signal = { base = 123456 }
[[machines.points]]
name = "temperature"
table = "input"
address = 0
type = "i16"
scale = 0.5
signal = { base = -12.5 }
[[machines.points]]
name = "status"
table = "holding"
address = 4
type = "bool"
bit = 3
signal = { base = 1 }
[[machines.points]]
name = "total"
table = "holding"
address = 6
type = "f64"
order = "DCBA"
signal = { base = 1234.5678 }
[[machines.points]]
name = "model"
table = "holding"
address = 10
type = "string"
length = 8
signal = { text = "ETA-R" }
[[machines.points]]
name = "pump_on"
table = "coil"
address = 0
signal = { base = 1 }
"#;

/// (tag, what `read` and the sample log print for it)
const EXPECTED: [(&str, &str); 7] = [
    ("pump.pressure", "4.5"),
    ("pump.energy", "123456"),
    ("pump.temperature", "-12.5"),
    ("pump.status", "true"),
    ("pump.total", "1234.5678"),
    ("pump.model", "\"ETA-R\""),
    ("pump.pump_on", "true"),
];

fn agent_config(port: u16, data_dir: &Path, mqtt_port: u16, opcua_port: u16) -> String {
    let model = workspace().join("models/default.onnx");
    let leds = data_dir.with_file_name("leds");
    format!(
        r#"
[agent]
name = "smoke"
data_dir = {data_dir:?}

[alerts]
led_class_dir = {leds:?}

[[limits]]
tag = "pump.pressure"
hi = 4.0

[[outputs]]
name = "alarm"
led = "alarm"

[[indications]]
output = "alarm"
state = "unacknowledged"
pattern = "fast_blink"

[outbox]
summary_interval = "500ms"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
topics = {{ enterprise = "acme", site = "plant1", area = "area", line = "line" }}

[scoring]
assess_interval = "1s"
models = {{ default = {model:?} }}

[[assets]]
id = "P-1"
type = "pump"
signals = {{ pressure = "pump.pressure" }}
nameplate = {{ pressure_range = [3.0, 6.0] }}

[[devices]]
name = "pump"
host = "127.0.0.1"
port = {port}
unit_id = 7
addressing = "modicon"
poll_interval = "200ms"
timeout = "2s"

[[devices.tags]]
name = "pump.pressure"
address = 40001
type = "f32"
order = "CDAB"
unit = "bar"

[[devices.tags]]
name = "pump.energy"
address = 40003
type = "u32"
order = "BADC"

[[devices.tags]]
name = "pump.temperature"
address = 30001
type = "i16"
scale = 0.5

[[devices.tags]]
name = "pump.status"
address = 40005
type = "bool"
bit = 3

[[devices.tags]]
name = "pump.total"
address = 40007
type = "f64"
order = "DCBA"

[[devices.tags]]
name = "pump.model"
address = 40011
type = "string"
length = 8

[[devices.tags]]
name = "pump.pump_on"
address = 1

[[opcua]]
name = "line-opcua"
url = "opc.tcp://127.0.0.1:{opcua_port}"
security_policy = "Basic256Sha256"
security_mode = "SignAndEncrypt"
publishing_interval = "200ms"

[[opcua.tags]]
name = "opcua.pressure"
node = "nsu={namespace};s=pump.pressure"
sampling_interval = "200ms"
unit = "bar"
"#,
        namespace = millwright::sim::opcua::NAMESPACE
    )
}

/// The size budget of a gateway binary: 12 MiB (13 MiB from production lines until the agent was
/// made lean at the edge). What it grew by, static aarch64, stripped: 12,272,392 → 12,796,904 bytes with the production stage and
/// its `[[lines]]` configuration (its own code about 77 KB of symbols, the rest serde and JSON
/// code for its records and saved state, and the schema) and jiff for the shift calendars (about
/// 68 KB; it reads the gateway's tzdata, no zone data embedded); cut: tracing-subscriber's
/// env-filter and its regex matcher, −65,536 bytes (RUST_LOG takes `target=level` directives).
/// Quality stations then took it to 13,321,640 bytes (+590,272): the stage, its configuration
/// and records (in the millwright and firmware_config crates), and camera images — image 92 KiB,
/// png 23, zune-jpeg 17, miniz_oxide 9, fdeflate 8, crc32fast 4 (cargo-bloat, aarch64); inotify
/// and futures-core next to nothing. Nothing was cut for them; 13 MiB still holds. Sparkplug B
/// took it to 13,452,952 bytes (+131,312): the encoder, the changes stage and the configuration;
/// prost was in the binary already (tract's ONNX loader), so the protobuf code is its derives'.
/// The status page (`[http]`, /api/status, /metrics) took it to 13,780,872 bytes (+327,920):
/// hyper 19 KiB, http 21, parking_lot 7 (prometheus-client's), prometheus-client 4, httparse 2,
/// http-body-util 2 (cargo-bloat, aarch64), most of the rest hyper's HTTP/1 code instantiated in
/// the millwright crate (about 100 KB of symbols with the page's handlers), rustls's server side
/// (31 KB), and the page, its script and the status schema embedded (28 KB). Cut for it: the
/// `schema` command in gateway builds (schemars and the configuration's derived schema code,
/// about 200 KB of symbols; it stays in development builds), −262,144 bytes, so 13,518,728 bytes
/// and 13 MiB still holds. Vibration diagnostics (waveform analysis, the recordings folder,
/// `millwright spectrum`) took it to 13,650,000 bytes (+131,200; rustfft was in the binary already
/// through tract-core, hound is below cargo-bloat's top 25, the rest is the vibration module and its
/// configuration) — over 13 MiB. Cut for it: the configuration crate built for size (`opt-level =
/// "z"`, like the dependencies; it runs at load only), −327,680 bytes, so 13,322,320 bytes.
/// Modbus waveform blocks, IIO accelerometer captures (rustix's poll: rustix was linked already
/// through tract-nnef) and the Sparkplug vibration metrics took it to 13,387,880 bytes (+65,560);
/// nothing cut, 13 MiB still holds. The agent's own allocator (dlmalloc for small blocks) took
/// it to 13,388,800 bytes (+920): musl's malloc is linked either way; nothing cut. Then cut back
/// to 12 MiB: clap without colour and toml without its writer (anstream and toml_writer gone),
/// and tract without its aarch64 half-precision kernels (`no_fp16`), together −131,768 bytes;
/// the release build at opt-level "z" instead of "s" (with fat LTO the last pass runs at the
/// root crate's level over every crate), −786,440: 12,470,592 bytes. Its cost, the footprint
/// bench's reference load in paired runs: see the README. Measured and not taken: lld's
/// identical-code folding (`--icf=all`), −161,048 more.
const MAX_BINARY_BYTES: u64 = 12 * 1024 * 1024;

/// A gateway target as `cross/build.sh` names it, and how qemu-user runs its binaries.
struct Target {
    name: &'static str,
    qemu: &'static str,
    /// For dynamically linked targets: where the target's libc lives on this machine.
    sysroot: Option<&'static str>,
    /// ELF e_machine.
    machine: u16,
}

const AARCH64_MUSL: Target = Target {
    name: "aarch64-musl",
    qemu: "qemu-aarch64-static",
    sysroot: None,
    machine: 183,
};

const ARMV7_GNUEABIHF: Target = Target {
    name: "armv7-gnueabihf",
    qemu: "qemu-arm-static",
    sysroot: Some("/usr/arm-linux-gnueabihf"),
    machine: 40,
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn found(program: &str, arg: &str) -> bool {
    std::process::Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs `command` to completion, killing it after `limit`; stdout on success.
fn run_bounded(command: &mut std::process::Command, limit: Duration) -> String {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The script's last stdout line is its product's path.
fn last_line_path(stdout: &str) -> PathBuf {
    let path = stdout.lines().last().expect("a path").trim();
    workspace().join(path)
}

/// Built once per target and test run, with the command the README gives.
fn gateway_binary(target: &Target) -> PathBuf {
    static AARCH64: OnceLock<PathBuf> = OnceLock::new();
    static ARMV7: OnceLock<PathBuf> = OnceLock::new();
    let cell = if target.name == AARCH64_MUSL.name {
        &AARCH64
    } else {
        &ARMV7
    };
    cell.get_or_init(|| {
        let stdout = run_bounded(
            std::process::Command::new(workspace().join("cross/build.sh"))
                .arg(target.name)
                .current_dir(workspace()),
            Duration::from_secs(40 * 60),
        );
        last_line_path(&stdout)
    })
    .clone()
}

fn qemu_command(target: &Target, binary: &Path) -> Command {
    let mut command = Command::new(target.qemu);
    if let Some(sysroot) = target.sysroot {
        command.args(["-L", sysroot]);
    }
    command.arg(binary);
    command
}

async fn qemu(target: &Target, binary: &Path, args: &[&str]) -> std::process::Output {
    let child = qemu_command(target, binary)
        .args(args)
        .stdin(Stdio::null())
        .output();
    tokio::time::timeout(Duration::from_secs(60), child)
        .await
        .expect("finishes under qemu")
        .expect("runs")
}

/// The newest `GLIBC_2.x` symbol version the binary asks for, as (2, x).
fn newest_glibc(elf: &[u8]) -> Option<(u32, u32)> {
    let marker = b"GLIBC_2.";
    elf.windows(marker.len())
        .enumerate()
        .filter(|(_, window)| *window == marker)
        .filter_map(|(at, _)| {
            let digits: String = elf[at + marker.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| char::from(b))
                .collect();
            digits.parse().ok().map(|minor| (2, minor))
        })
        .max()
}

millwright_tests::needs! { aarch64_gateway
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aarch64_binary_is_static_small_and_polls_correctly_under_qemu() {
    let binary = tokio::task::spawn_blocking(|| gateway_binary(&AARCH64_MUSL))
        .await
        .expect("build");
    let elf = std::fs::read(&binary).expect("read binary");
    assert!(
        !elf.windows(b"ld-linux".len()).any(|w| w == b"ld-linux"),
        "static binary must not name a dynamic loader"
    );
    assert_eq!(newest_glibc(&elf), None);
    smoke(&AARCH64_MUSL, &binary).await;
}
}

millwright_tests::needs! { armv7_gateway
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armv7_binary_needs_only_glibc_2_17_and_polls_correctly_under_qemu() {
    let binary = tokio::task::spawn_blocking(|| gateway_binary(&ARMV7_GNUEABIHF))
        .await
        .expect("build");
    let elf = std::fs::read(&binary).expect("read binary");
    let glibc = newest_glibc(&elf).expect("dynamically linked against glibc");
    assert!(glibc <= (2, 17), "needs glibc {glibc:?}, more than 2.17");
    smoke(&ARMV7_GNUEABIHF, &binary).await;
}
}

/// Size, architecture, and a full poll of every type and word order, as `read` and as the
/// service (`run` under a notify socket, reload, stop).
async fn smoke(target: &Target, binary: &Path) {
    let size = std::fs::metadata(binary).expect("binary").len();
    assert!(
        size <= MAX_BINARY_BYTES,
        "{size} bytes > the budget of {MAX_BINARY_BYTES}"
    );
    let elf = std::fs::read(binary).expect("read binary");
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([elf[18], elf[19]]),
        target.machine,
        "e_machine"
    );

    // The gateway build carries no simulator.
    let help = qemu(target, binary, &["--help"]).await;
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("run") && !help.contains("simulate"), "{help}");

    let sim = Sim::start(SIM, 0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let opcua_shutdown = tokio_util::sync::CancellationToken::new();
    let opcua = millwright::sim::opcua::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        std::sync::Arc::clone(&sim.plant),
        &dir.path().join("server-pki"),
        &Default::default(),
        opcua_shutdown.clone(),
    )
    .await
    .expect("OPC UA simulator");
    let broker = start_broker().await;
    let consumer = Consumer::connect(local_options("consumer", broker), "acme/#").await;
    let led = dir.path().join("leds/alarm");
    std::fs::create_dir_all(&led).expect("LED directory");
    let config = dir.path().join("millwright.toml");
    std::fs::write(
        &config,
        agent_config(
            sim.addr.port(),
            &dir.path().join("data"),
            broker,
            opcua.port,
        ),
    )
    .expect("write");
    let config = config.to_str().expect("utf8");

    let check = qemu(target, binary, &["check", "-c", config]).await;
    assert_eq!(check.status.code(), Some(0), "{check:?}");

    // OPC UA on the gateway: the client certificate is generated, the server's is trusted, the
    // address space is browsed (pure-Rust RSA and AES under the target's instruction set).
    let trusted = qemu(
        target,
        binary,
        &["trust", "-c", config, "--endpoint", "line-opcua", "--yes"],
    )
    .await;
    assert_eq!(trusted.status.code(), Some(0), "{trusted:?}");
    let browsed = qemu(
        target,
        binary,
        &["browse", "-c", config, "--endpoint", "line-opcua"],
    )
    .await;
    let listing = String::from_utf8_lossy(&browsed.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.contains("s=pump.pressure") && l.contains("Float")),
        "{listing}{}",
        String::from_utf8_lossy(&browsed.stderr)
    );

    // `read`: every type and word order decodes to what the simulator serves, and OPC UA reads.
    let read = qemu(target, binary, &["read", "-c", config, "--assess"]).await;
    let table = String::from_utf8_lossy(&read.stdout);
    assert_eq!(read.status.code(), Some(0), "{table}");
    for (tag, value) in EXPECTED {
        let row = table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(tag))
            .unwrap_or_else(|| panic!("{tag} missing in\n{table}"));
        assert!(
            row.contains(&format!(" {value} ")) && row.trim_end().ends_with("good"),
            "{tag}: expected {value} in {row}"
        );
    }
    let opcua_row = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("opcua.pressure"))
        .unwrap_or_else(|| panic!("opcua.pressure missing in\n{table}"));
    assert!(
        opcua_row.contains(" 4.5 ") && opcua_row.trim_end().ends_with("good"),
        "{opcua_row}"
    );
    // tract scoring on the gateway: one round from the values read, model included.
    assert!(
        table.contains("asset \"P-1\" (pump): routine_monitoring")
            && table.contains("pressure 4.50 within 3..6")
            && table.contains("model 0."),
        "{table}"
    );

    // `run` as systemd starts it: ready, live good samples, reload, clean stop.
    let mut notify = NotifySocket::bind();
    let mut agent = qemu_command(target, binary)
        .args(["run", "-c", config, "-v", "--log-format", "json"])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "2000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn under qemu");
    let mut log = OutputLines::follow(agent.stderr.take().expect("stderr"));
    let wait = Duration::from_secs(30);
    notify.wait_for(wait, "READY=1").await.expect("READY=1");
    for (tag, value) in EXPECTED {
        let json_value = serde_json_string(value);
        log.wait_for(wait, |l| {
            l.contains(&format!("\"tag\":\"{tag}\""))
                && l.contains(&format!("\"value\":{json_value}"))
                && l.contains("\"quality\":\"good\"")
        })
        .await
        .unwrap_or_else(|| panic!("no good {tag} = {value}: {}", log.transcript()));
    }
    // A subscription reports a constant value once, maybe while the Modbus samples were awaited.
    let opcua_good = |l: &str| {
        l.contains("\"tag\":\"opcua.pressure\"")
            && l.contains("\"value\":\"4.5\"")
            && l.contains("\"quality\":\"good\"")
    };
    if !log.seen.iter().any(|l| opcua_good(l)) {
        log.wait_for(wait, opcua_good)
            .await
            .unwrap_or_else(|| panic!("no good OPC UA sample: {}", log.transcript()));
    }
    let assessment = log
        .wait_for(wait, |l| {
            l.contains("\"assessment\"") && l.contains("\"asset\":\"P-1\"")
        })
        .await
        .unwrap_or_else(|| panic!("no assessment: {}", log.transcript()));
    assert!(assessment.contains("routine_monitoring"), "{assessment}");
    // The sled outbox and the MQTT uplink on the gateway: summaries and assessments arrive.
    let arrived = consumer
        .wait_until(wait, |m| {
            let all = records(m);
            all.iter().any(|r| {
                r.2["kind"] == "tags" && r.2["data"]["tags"]["pump.pressure"]["last"] == 4.5
            }) && all
                .iter()
                .any(|r| r.2["kind"] == "health" && r.2["data"]["asset"] == "P-1")
        })
        .await;
    assert!(
        arrived,
        "no summary and assessment over MQTT: {}",
        log.transcript()
    );
    // Local alerts on the gateway: 4.5 bar is above the 4.0 hi limit, published and on the LED.
    let alerted = consumer
        .wait_until(wait, |m| {
            records(m).iter().any(|r| {
                r.2["kind"] == "alert"
                    && r.2["data"]["alert_id"] == "pump.pressure/hi"
                    && r.2["data"]["state"] == "active_unacknowledged"
            })
        })
        .await;
    assert!(alerted, "no limit alert over MQTT: {}", log.transcript());
    let read = |file: &str| std::fs::read_to_string(led.join(file)).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + wait;
    while (read("trigger"), read("delay_on")) != ("timer".into(), "125".into()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "LED not blinking: {}",
            log.transcript()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dir.path().join("data/outbox").is_dir());
    notify
        .wait_for(wait, "WATCHDOG=1")
        .await
        .expect("watchdog keep-alive");
    let pid = agent.id().expect("pid").to_string();
    for (signal, expected) in [("-HUP", "RELOADING=1"), ("-TERM", "STOPPING=1")] {
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("kill");
        assert!(sent.success());
        notify
            .wait_for(wait, expected)
            .await
            .unwrap_or_else(|| panic!("{expected} missing: {:?}", notify.received));
    }
    let status = tokio::time::timeout(wait, agent.wait())
        .await
        .expect("stops")
        .expect("status");
    assert_eq!(status.code(), Some(0), "{}", log.transcript());
    assert_eq!(
        (read("trigger"), read("brightness")),
        ("none".into(), "0".into()),
        "the LED is off after the stop"
    );
    opcua.stop();
    opcua_shutdown.cancel();
    sim.stop().await;
}

/// `value` as the JSON log writes a string field.
fn serde_json_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

millwright_tests::needs! { arm64_package
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_debian_package_installs_a_hardened_notify_service() {
    check_package("arm64", &AARCH64_MUSL, "adduser").await;
}
}

millwright_tests::needs! { armhf_package
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn armhf_debian_package_installs_a_hardened_notify_service() {
    check_package("armhf", &ARMV7_GNUEABIHF, "adduser, libc6 (>= 2.17)").await;
}
}

/// `cross/package.sh <arch>`: the tested binary, the conffile, the unit, the udev rule, the
/// maintainer scripts, and the declared dependencies.
async fn check_package(arch: &'static str, target: &'static Target, depends: &str) {
    let deb = tokio::task::spawn_blocking(move || {
        gateway_binary(target);
        let stdout = run_bounded(
            std::process::Command::new(workspace().join("cross/package.sh"))
                .arg(arch)
                .current_dir(workspace()),
            Duration::from_secs(20 * 60),
        );
        last_line_path(&stdout)
    })
    .await
    .expect("package");

    let dpkg = |args: &[&str]| {
        let out = std::process::Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .expect("dpkg-deb");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let control = dpkg(&["--field"]);
    assert!(
        control.contains(&format!("Architecture: {arch}\n")),
        "{control}"
    );
    assert!(
        control.contains(&format!("Depends: {depends}\n")),
        "{control}"
    );

    let contents = dpkg(&["--contents"]);
    for (path, mode) in [
        ("./usr/bin/millwright", "-rwxr-xr-x"),
        ("./etc/millwright/millwright.toml", "-rw-r-----"),
        ("./usr/lib/systemd/system/millwright.service", "-rw-r--r--"),
        ("./usr/lib/udev/rules.d/60-millwright.rules", "-rw-r--r--"),
    ] {
        let line = contents
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} missing in\n{contents}"));
        assert!(line.starts_with(mode), "{line}");
    }

    let unpacked = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new("dpkg-deb")
        .arg("--raw-extract")
        .arg(&deb)
        .arg(unpacked.path())
        .status()
        .expect("dpkg-deb");
    assert!(status.success());
    let root = unpacked.path();
    let conffiles = std::fs::read_to_string(root.join("DEBIAN/conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/millwright/millwright.toml");

    // The packaged binary is the tested one, and the default config it ships is valid.
    assert_eq!(
        std::fs::read(root.join("usr/bin/millwright")).expect("packaged"),
        std::fs::read(gateway_binary(target)).expect("built")
    );
    let check = qemu(
        target,
        &root.join("usr/bin/millwright"),
        &[
            "check",
            "-c",
            root.join("etc/millwright/millwright.toml")
                .to_str()
                .expect("utf8"),
        ],
    )
    .await;
    assert_eq!(check.status.code(), Some(0), "{check:?}");

    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/millwright.service"))
        .expect("unit");
    for setting in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=millwright",
        "SupplementaryGroups=dialout gpio iio",
        "DeviceAllow=char-iio r",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/millwright",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(setting), "{setting} missing in the unit");
    }
    let postinst = std::fs::read_to_string(root.join("DEBIAN/postinst")).expect("postinst");
    assert!(
        postinst.contains("adduser --system") && postinst.contains("-o millwright -g millwright"),
        "{postinst}"
    );
    assert!(
        postinst.contains("deb-systemd-helper enable millwright.service"),
        "{postinst}"
    );

    // systemd's own verdict on the unit, where systemd-analyze is installed.
    if found("systemd-analyze", "--version") {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(root.join("usr/lib/systemd/system/millwright.service"))
            .output()
            .expect("systemd-analyze");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("millwright.service"))
            // The unpacked ExecStart path is not at /usr/bin on this machine.
            .filter(|l| !l.contains("/usr/bin/millwright"))
            .collect();
        assert!(complaints.is_empty(), "{stderr}");
    }
}
