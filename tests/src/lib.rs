//! Shared helpers for the end-to-end tests: in-process simulators, misbehaving devices, serial pty
//! pairs, and sample collection. Every wait is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use firmware_config::{Link, Plan};
use millwright::bus::{SampleBus, Subscriber};
use millwright::clock::{Clock, SystemClock};
use millwright::sample::Sample;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod http;
pub mod mqtt;

// `needs!`: a test that needs an outside tool, a kernel feature or root shows as ignored, with
// what is missing, where this machine lacks it (see build.rs).
include!(concat!(env!("OUT_DIR"), "/requirements.rs"));

/// Marks a test item ignored with `reason` (the attributes before it, such as `#[tokio::test]`,
/// stay in place).
#[doc(hidden)]
#[macro_export]
macro_rules! __ignored {
    ($reason:literal $(#[$attr:meta])* async fn $($rest:tt)*) => {
        $(#[$attr])* #[ignore = $reason] async fn $($rest)*
    };
    ($reason:literal $(#[$attr:meta])* fn $($rest:tt)*) => {
        $(#[$attr])* #[ignore = $reason] fn $($rest)*
    };
}

/// A simulator serving on a loopback port until dropped.
pub struct Sim {
    pub addr: SocketAddr,
    pub plant: Arc<millwright::sim::Plant>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Sim {
    /// Serves `sim_toml` on `127.0.0.1:port` (0 = any free port).
    pub async fn start(sim_toml: &str, port: u16) -> Sim {
        let (_, plant) = millwright::sim::load_str(Path::new("sim.toml"), sim_toml)
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let plant = Arc::new(plant);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(millwright::sim::server::serve_tcp(
            listener,
            Arc::clone(&plant),
            shutdown.clone(),
        ));
        // Simulated cameras, where the plant has any.
        tokio::spawn(millwright::sim::gauge::cameras(
            Arc::clone(&plant),
            shutdown.clone(),
        ));
        Sim {
            addr,
            plant,
            shutdown,
            task,
        }
    }

    /// Stops serving and closes every connection.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The `[outbox]` and `[mqtt]` sections of an end-to-end test: a fast flush, a quick reconnect
/// and the `acme/plant1/area/line` topic prefix, to a broker on `mqtt_port`.
pub fn uplink_toml(mqtt_port: u16) -> String {
    format!(
        r#"
[outbox]
flush_interval = "100ms"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
backoff = {{ initial = "100ms", max = "300ms" }}
topics = {{ enterprise = "acme", site = "plant1", area = "area", line = "line" }}
"#
    )
}

/// Polls `probe` every 20 ms until it gives a value; `Err` with the last probe's failure when
/// `within` has passed first.
pub async fn eventually<T, E, F>(within: Duration, mut probe: impl FnMut() -> F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(found) => return Ok(found),
            Err(last) if tokio::time::Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Loads an agent configuration and points every TCP device at `addr`.
pub fn plan(toml: &str, addr: Option<SocketAddr>) -> Plan {
    let mut plan =
        firmware_config::load_str(Path::new("plant.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    if let Some(addr) = addr {
        for device in &mut plan.devices {
            if let Link::Tcp { host, port } = &mut device.link {
                *host = addr.ip().to_string();
                *port = addr.port();
            }
        }
    }
    plan
}

/// A running acquisition with its sample stream.
pub struct Agent {
    pub samples: Subscriber,
    pub running: millwright::app::Running,
    pub shutdown: CancellationToken,
    pub bus: SampleBus,
}

impl Agent {
    pub fn start(plan: &Plan) -> Agent {
        let bus = SampleBus::new(65_536);
        let samples = bus.subscribe();
        let shutdown = CancellationToken::new();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (running, _) = millwright::app::start_acquisition(plan, clock, &bus, &shutdown);
        Agent {
            samples,
            running,
            shutdown,
            bus,
        }
    }

    /// Samples received during `window`.
    pub async fn collect(&mut self, window: Duration) -> Vec<Sample> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(Some(sample)) = tokio::time::timeout_at(deadline, self.samples.recv()).await {
            out.push(sample);
        }
        out
    }

    /// Waits (at most `limit`) until `done` holds for the samples seen so far; returns them.
    pub async fn collect_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + limit;
        while !done(&out) {
            match tokio::time::timeout_at(deadline, self.samples.recv()).await {
                Ok(Some(sample)) => out.push(sample),
                _ => break,
            }
        }
        out
    }

    pub fn stats(&self, device: &str) -> millwright::sources::StatsSnapshot {
        self.running
            .stats
            .iter()
            .find(|(name, _)| name == device)
            .map(|(_, s)| s.snapshot())
            .unwrap_or_else(|| panic!("no device {device}"))
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while self.running.tasks.join_next().await.is_some() {}
        })
        .await;
    }
}

/// The latest sample per tag name.
pub fn latest_by_name(plan: &Plan, samples: &[Sample]) -> HashMap<String, Sample> {
    let catalog = millwright::app::tag_catalog(plan);
    samples
        .iter()
        .map(|s| (catalog[s.tag.0 as usize].name.clone(), s.clone()))
        .collect()
}

/// All samples of one tag, in arrival order.
pub fn samples_of<'a>(plan: &Plan, samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
    let catalog = millwright::app::tag_catalog(plan);
    samples
        .iter()
        .filter(|s| catalog[s.tag.0 as usize].name == name)
        .collect()
}

/// A TCP device that accepts connections and never answers.
pub async fn silent_device() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    misbehaving_device(|_request| None).await
}

/// A TCP device that answers every request with `answer(request)` bytes (or stays silent).
pub async fn misbehaving_device(
    answer: fn(&[u8]) -> Option<Vec<u8>>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 260];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if let Some(reply) = answer(&buf[..n]) {
                        if stream.write_all(&reply).await.is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A linked pair of pseudo-terminals made by socat, standing in for an RS-485 line.
pub struct PtyPair {
    pub agent_end: PathBuf,
    pub device_end: PathBuf,
    _dir: tempfile::TempDir,
    child: tokio::process::Child,
}

impl PtyPair {
    /// `None` when socat cannot make the pair (tests that use it need `needs!(socat ...)`).
    pub async fn open() -> Option<PtyPair> {
        let dir = tempfile::tempdir().expect("tempdir");
        let agent_end = dir.path().join("agent");
        let device_end = dir.path().join("device");
        let child = tokio::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", agent_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", device_end.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(agent_end.exists() && device_end.exists()) {
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Some(PtyPair {
            agent_end,
            device_end,
            _dir: dir,
            child,
        })
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The `millwright` binary. `cargo test --workspace` builds it because the agent package has
/// integration tests (`agent/tests/cli.rs`).
pub fn millwright_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("millwright{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} not built: run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// `millwright simulate -c SIM` serving its plant over OPC UA (and Modbus) on free ports, killed
/// when dropped; returned once the OPC UA server listens, with that port.
pub async fn simulate_opcua(sim: &Path) -> (tokio::process::Child, u16) {
    let port = mqtt::free_port();
    let mut simulator = tokio::process::Command::new(millwright_bin())
        .args(["simulate", "-c"])
        .arg(sim)
        .args(["--listen", &format!("127.0.0.1:{}", mqtt::free_port())])
        .args(["--opcua", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        // The server's own log (tens of lines at start) stays out of the test output; it is
        // shown if the simulator does not come up.
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("simulator");
    let mut output = OutputLines::follow(simulator.stdout.take().expect("stdout"));
    let log = OutputLines::follow(simulator.stderr.take().expect("stderr"));
    assert!(
        output
            .wait_for(Duration::from_secs(30), |l| l.starts_with("OPC UA:"))
            .await
            .is_some(),
        "{}\n{}",
        output.transcript(),
        log.transcript()
    );
    (simulator, port)
}

/// Runs `millwright ARGS -c CONFIG` to completion (at most 20 s): whether it succeeded, and its
/// stdout and stderr together.
pub async fn run_cli(config: &Path, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(millwright_bin());
    command.args(args).arg("-c").arg(config);
    run_to_end(command).await
}

/// Runs `command` to completion (at most 20 s, no stdin): whether it succeeded, and its stdout and
/// stderr together.
pub async fn run_to_end(mut command: tokio::process::Command) -> (bool, String) {
    let output = command.stdin(Stdio::null()).output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("the command ends within 20 s")
        .expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// Lines a child process writes, read as they come (for waiting on log messages).
pub struct OutputLines {
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    /// Every line seen so far, for failure messages.
    pub seen: Vec<String>,
}

impl OutputLines {
    pub fn follow(stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> OutputLines {
        use tokio::io::AsyncBufReadExt;
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        OutputLines {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line matching `wanted` within `within`, or `None` (stream ended or timed out).
    pub async fn wait_for(
        &mut self,
        within: Duration,
        wanted: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .ok()??;
            self.seen.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
    }

    pub fn transcript(&self) -> String {
        self.seen.join("\n")
    }
}

/// A stand-in for systemd's notification socket (`NOTIFY_SOCKET`).
pub struct NotifySocket {
    pub path: PathBuf,
    socket: tokio::net::UnixDatagram,
    _dir: tempfile::TempDir,
    /// Every message received so far.
    pub received: Vec<String>,
}

impl NotifySocket {
    pub fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("bind notify socket");
        NotifySocket {
            path,
            socket,
            _dir: dir,
            received: Vec::new(),
        }
    }

    /// The next message containing the line `wanted` (e.g. `READY=1`) within `within`.
    pub async fn wait_for(&mut self, within: Duration, wanted: &str) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        let mut buffer = vec![0u8; 4096];
        loop {
            let n = tokio::time::timeout_at(deadline, self.socket.recv(&mut buffer))
                .await
                .ok()?
                .ok()?;
            let message = String::from_utf8_lossy(&buffer[..n]).into_owned();
            self.received.push(message.clone());
            if message.lines().any(|l| l == wanted) {
                return Some(message);
            }
        }
    }
}

/// `millwright run` as a child process with JSON logs on stderr.
pub struct AgentProcess {
    pub child: tokio::process::Child,
    pub log: OutputLines,
}

impl AgentProcess {
    /// `millwright run -c config -v --log-format json`, ready to spawn.
    pub fn command(config: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(millwright_bin());
        command
            .args(["run", "-v", "--log-format", "json", "-c"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    pub fn spawn(config: &Path) -> AgentProcess {
        AgentProcess::spawn_command(AgentProcess::command(config))
    }

    /// Spawns `command` (an agent, or a shell that execs one) with its log followed and no other
    /// output; it is killed if the test ends without stopping it.
    pub fn spawn_command(mut command: tokio::process::Command) -> AgentProcess {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn millwright");
        let log = OutputLines::follow(child.stderr.take().expect("stderr"));
        AgentProcess { child, log }
    }

    /// Waits for a log line whose message is `message`; its JSON.
    pub async fn wait_log(&mut self, within: Duration, message: &str) -> Option<serde_json::Value> {
        let line = self
            .log
            .wait_for(within, |line| {
                log_message(line) == Some(message.to_string())
            })
            .await?;
        serde_json::from_str(&line).ok()
    }

    /// SIGKILL: no flush, no goodbye, like a power cut as far as the process is concerned.
    pub async fn kill(mut self) -> OutputLines {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        self.drain_log().await
    }

    /// Sends the signal named `name` (`HUP`, `TERM`).
    pub async fn signal(&self, name: &str) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args([format!("-{name}"), pid.to_string()])
                .status()
                .await;
        }
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub async fn terminate(mut self) -> OutputLines {
        self.signal("TERM").await;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits within 20 s of SIGTERM")
            .expect("wait");
        assert!(status.success(), "exit status {status}");
        self.drain_log().await
    }

    /// Every line the process wrote (it has exited).
    async fn drain_log(mut self) -> OutputLines {
        while self
            .log
            .wait_for(Duration::from_millis(500), |_| false)
            .await
            .is_some()
        {}
        self.log
    }
}

/// The `message` of a JSON log line.
pub fn log_message(line: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(json["fields"]["message"].as_str()?.to_string())
}

/// A numeric field of a JSON log line.
pub fn log_field(line: &str, field: &str) -> Option<u64> {
    let json: serde_json::Value = serde_json::from_str(line).ok()?;
    json["fields"][field].as_u64()
}
