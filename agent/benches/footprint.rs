//! The whole agent's footprint: the agent binary (the static musl build by default) polling a
//! simulated plant and forwarding to a local mosquitto, measured from outside through /proc.
//!
//!   cargo bench -p millwright --bench footprint -- [--load reference|demo|10k|both] [--seconds 60]
//!       [--minutes N] [--agent PATH]... [--format uns|sparkplug|both]
//!
//! Loads:
//! - `reference`: issue 15's load, measured beside Node-RED: 1,000 holding registers every 100 ms
//!   (ten units of 100), one asset among them scored with the shipped model every second, summaries
//!   every 1 s, `[mqtt]` on (`agent/tests/fixtures/footprint-reference.toml`).
//! - `demo`: the same 1,000 registers beside the whole demo plant (three more devices, two assets
//!   scored with the model, limits, a production line saving its state every 10 s).
//! - `10k`: 10,000 registers at 1 s (ten units of 1,000), summaries every 10 s, no model.
//!
//! Each `--agent` is measured in turn (default: `target/x86_64-unknown-linux-musl/release/millwright`,
//! built by `cross/build.sh x86_64-musl`; the glibc one by `cross/build.sh x86_64-gnu`). The
//! simulator is the workspace's debug build (`cargo build -p millwright`). Prints per run: RSS at
//! 10 s, steady (median of the last fifth; with its anonymous part: the rest is code and files
//! mapped), at the end and its peak (VmHWM), CPU in % of one core and context switches per second
//! (all threads: each is a wake, and unlike CPU time they hardly vary between runs on shared cores)
//! after a 10 s warm-up, and what the agent wrote to storage, per day. `--minutes N` is the soak
//! mode: RSS at 1 and 5 minutes and the slope after the fifth (least squares, MiB/h).
//! `--outage S` stops the broker for S seconds from the first minute, so that the outbox holds a
//! backlog and then drains it: RSS before the outage, at its end, and steady after the drain.
//! `--format sparkplug` (or `both`) makes the agent a Sparkplug B edge node reporting every change
//! (DDATA at most every 100 ms per device) instead of (or beside) UNS JSON.
//!
//! An `--agent` whose file is Node-RED's `red.js` (`npm install node-red@4.1
//! node-red-contrib-modbus@5.23.3`, then `--agent node_modules/node-red/red.js`) runs Node-RED under
//! `node` on the reference load instead, through the same simulator, broker and measurements: ten
//! Modbus clients reading their 100 holding registers every 100 ms, a function keeping each
//! register's count, sum, min, max and last, and every second one JSON summary per device published
//! at QoS 1. It scores nothing and stores nothing, so it is a lighter load than the agent's: the
//! ratio of the two CPU figures, taken in one run, is the comparison that does not depend on the day.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, median, mosquitto};

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Reference,
    Demo,
    TenThousand,
}

/// The reference load's agent configuration, without the registers, the model's path and `[mqtt]`.
const REFERENCE: &str = include_str!("../tests/fixtures/footprint-reference.toml");

/// The reference asset's signals among the bulk registers: (tag, unit, scale).
/// The simulator serves register r at (r % 100) × 10 with a noise of 3: a healthy pump at 2 mm/s,
/// 5 bar and 60 °C.
const REFERENCE_SIGNALS: [(&str, &str, f64); 3] = [
    ("b101.r20", "mm/s", 0.01),
    ("b101.r50", "bar", 0.01),
    ("b101.r6", "°C", 1.0),
];

impl Load {
    fn name(self) -> &'static str {
        match self {
            Load::Reference => "1,000 registers at 100 ms, 1 asset with the model, summaries 1 s",
            Load::Demo => {
                "the demo plant and 1,000 registers at 100 ms, 2 assets with the model, summaries 1 s"
            }
            Load::TenThousand => "10,000 registers at 1 s, summaries 10 s",
        }
    }

    /// (units, registers per unit, poll interval, summary interval)
    fn shape(self) -> (u32, u32, &'static str, &'static str) {
        match self {
            Load::Reference | Load::Demo => (10, 100, "100ms", "1s"),
            Load::TenThousand => (10, 1000, "1s", "10s"),
        }
    }
}

struct Options {
    loads: Vec<Load>,
    run: Duration,
    agents: Vec<PathBuf>,
    outage: Option<Duration>,
    /// The `[mqtt] format` line and any `[mqtt.sparkplug]` section.
    format: Format,
}

/// The wire format the agent speaks.
#[derive(Clone, Copy, PartialEq)]
enum Format {
    Uns,
    Sparkplug,
    Both,
}

impl Format {
    /// What goes into `[mqtt]`: Sparkplug with a DDATA at most every 100 ms per device, so that
    /// every register's change is reported.
    fn toml(self) -> &'static str {
        match self {
            Format::Uns => "",
            Format::Sparkplug => "format = \"sparkplug\"\n[mqtt.sparkplug]\ngroup_id = \"bench\"\ndata_interval = \"100ms\"\n",
            Format::Both => "format = [\"uns\", \"sparkplug\"]\n[mqtt.sparkplug]\ngroup_id = \"bench\"\ndata_interval = \"100ms\"\n",
        }
    }
}

/// When the `--outage` starts.
const OUTAGE_AT: f64 = 60.0;

fn options() -> Options {
    let mut loads = vec![Load::Reference, Load::TenThousand];
    let mut run = Duration::from_secs(60);
    let mut agents = Vec::new();
    let mut outage = None;
    let mut format = Format::Uns;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--load" => {
                loads = match value().as_str() {
                    "reference" => vec![Load::Reference],
                    "demo" => vec![Load::Demo],
                    "10k" => vec![Load::TenThousand],
                    _ => vec![Load::Reference, Load::TenThousand],
                }
            }
            "--seconds" => run = Duration::from_secs(value().parse().unwrap_or(60)),
            "--minutes" => run = Duration::from_secs(60 * value().parse().unwrap_or(60)),
            "--agent" => agents.push(PathBuf::from(value())),
            "--outage" => outage = value().parse().ok().map(Duration::from_secs),
            "--format" => {
                format = match value().as_str() {
                    "sparkplug" => Format::Sparkplug,
                    "both" => Format::Both,
                    _ => Format::Uns,
                }
            }
            _ => {} // cargo bench passes --bench
        }
    }
    if agents.is_empty() {
        agents.push(workspace().join("target/x86_64-unknown-linux-musl/release/millwright"));
    }
    Options {
        loads,
        run,
        agents,
        outage,
        format,
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// The simulator's plant: the demo plant's machines and the bulk units.
fn simulator_config(load: Load, port: u16) -> String {
    let demo = std::fs::read_to_string(workspace().join("firmware-config/examples/sim/demo.toml"))
        .expect("demo simulator config");
    let mut text = demo.replace(
        "listen = \"127.0.0.1:5020\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let (units, registers, ..) = load.shape();
    for unit in 101..101 + units {
        text +=
            &format!("\n[[machines]]\nname = \"bulk-{unit}\"\nkind = \"fan\"\nunit_id = {unit}\n");
        for r in 0..registers {
            text += &format!(
                "[[machines.points]]\nname = \"r{r}\"\ntable = \"holding\"\naddress = {r}\nsignal = {{ base = {}, noise = 3 }}\n",
                (r % 100) * 10
            );
        }
    }
    text
}

/// The agent: the reference fixture or the demo plant (with the model for the demo load), and the
/// bulk devices.
fn agent_config(
    load: Load,
    format: Format,
    sim_port: u16,
    mqtt_port: u16,
    data_dir: &Path,
) -> String {
    let root = workspace();
    let model_path = root.join("models/default.onnx").display().to_string();
    let data_dir = data_dir.display().to_string();
    let (units, registers, poll, summaries) = load.shape();
    let mut text = if load == Load::Reference {
        REFERENCE
            .replace("\"DATA_DIR\"", &format!("{data_dir:?}"))
            .replace("\"MODEL\"", &format!("{model_path:?}"))
    } else {
        std::fs::read_to_string(root.join("firmware-config/examples/demo-plant.toml"))
            .expect("demo plant config")
            .replace("127.0.0.1:5020", &format!("127.0.0.1:{sim_port}"))
            .replace("port = 5020", &format!("port = {sim_port}"))
            .replace(
                "data_dir = \"/tmp/millwright-demo\"",
                &format!("data_dir = {data_dir:?}"),
            )
    };
    if load == Load::Demo {
        let models = format!("[scoring]\nmodels = {{ default = {model_path:?} }}");
        text = text.replacen("[scoring]", &models, 1);
    }
    text += &format!(
        "\n[outbox]\nsummary_interval = \"{summaries}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\n{}",
        format.toml()
    );
    for unit in 101..101 + units {
        text += &format!(
            "\n[[devices]]\nname = \"bulk-{unit}\"\nhost = \"127.0.0.1\"\nport = {sim_port}\nunit_id = {unit}\naddressing = \"zero_based\"\npoll_interval = \"{poll}\"\n"
        );
        for r in 0..registers {
            let name = format!("b{unit}.r{r}");
            text += &format!(
                "[[devices.tags]]\nname = \"{name}\"\ntable = \"holding\"\naddress = {r}\n"
            );
            if let Some((_, unit, scale)) = REFERENCE_SIGNALS.iter().find(|(tag, ..)| *tag == name)
            {
                text += &format!("unit = \"{unit}\"\nscale = {scale}\n");
            }
        }
    }
    text
}

fn is_node_red(agent: &Path) -> bool {
    agent.file_name().is_some_and(|name| name == "red.js")
}

/// Node-RED's flow for the reference load (see the module docs): ten clients and readers, the
/// statistics kept per register, one summary per device every second to the broker at QoS 1.
fn node_red_flow(sim_port: u16, mqtt_port: u16) -> String {
    const KEEP: &str = "const stats = flow.get('stats') || {};\n\
        const s = stats[msg.topic] || (stats[msg.topic] = msg.payload.map(() => ({n: 0, sum: 0, min: Infinity, max: -Infinity, last: 0})));\n\
        msg.payload.forEach((v, i) => { const t = s[i]; t.n++; t.sum += v; if (v < t.min) t.min = v; if (v > t.max) t.max = v; t.last = v; });\n\
        flow.set('stats', stats);\nreturn null;";
    const PUBLISH: &str = "const stats = flow.get('stats') || {};\nflow.set('stats', {});\nconst ts = Date.now();\n\
        return [Object.keys(stats).map(device => ({topic: `nodered/${device}/summary`, payload: JSON.stringify({ts, \
        tags: stats[device].map((t, i) => ({name: `r${i}`, count: t.n, mean: t.sum / t.n, min: t.min, max: t.max, last: t.last}))})}))];";
    let mut nodes = vec![
        serde_json::json!({"id": "tab", "type": "tab", "label": "reference load"}),
        serde_json::json!({"id": "keep", "type": "function", "z": "tab", "func": KEEP, "outputs": 1, "wires": [[]]}),
        serde_json::json!({"id": "tick", "type": "inject", "z": "tab", "repeat": "1", "once": false,
            "props": [{"p": "payload"}], "payload": "", "payloadType": "date", "wires": [["publish"]]}),
        serde_json::json!({"id": "publish", "type": "function", "z": "tab", "func": PUBLISH, "outputs": 1, "wires": [["out"]]}),
        serde_json::json!({"id": "out", "type": "mqtt out", "z": "tab", "qos": "1", "retain": "false", "broker": "broker", "wires": []}),
        serde_json::json!({"id": "broker", "type": "mqtt-broker", "broker": "127.0.0.1", "port": mqtt_port.to_string(),
            "clientid": "", "autoConnect": true, "usetls": false, "protocolVersion": "4", "keepalive": "60", "cleansession": true}),
    ];
    let (units, registers, ..) = Load::Reference.shape();
    for unit in 101..101 + units {
        nodes.push(serde_json::json!({"id": format!("client-{unit}"), "type": "modbus-client", "clienttype": "tcp",
            "bufferCommands": true, "stateLogEnabled": false, "queueLogEnabled": false, "failureLogEnabled": false,
            "tcpHost": "127.0.0.1", "tcpPort": sim_port.to_string(), "tcpType": "DEFAULT", "unit_id": unit.to_string(),
            "commandDelay": "1", "clientTimeout": "1000", "reconnectOnTimeout": true, "reconnectTimeout": "2000",
            "parallelUnitIdsAllowed": true}));
        nodes.push(serde_json::json!({"id": format!("read-{unit}"), "type": "modbus-read", "z": "tab",
            "topic": format!("bulk-{unit}"), "showStatusActivities": false, "logIOActivities": false, "showErrors": false,
            "unitid": "", "dataType": "HoldingRegister", "adr": "0", "quantity": registers.to_string(), "rate": "100",
            "rateUnit": "ms", "delayOnStart": false, "server": format!("client-{unit}"), "useIOFile": false,
            "useIOForPayload": false, "emptyMsgOnFail": false, "wires": [["keep"], []]}));
    }
    serde_json::Value::Array(nodes).to_string()
}

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    common::process_status_kib(&pid.to_string(), field)
}

/// User + system CPU time of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces, start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn ticks_per_second() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Context switches of all of `pid`'s threads so far (voluntary: a thread went to sleep and was
/// woken; involuntary: preempted). A thread that has exited no longer counts, so this is a figure
/// for a steady state, where the threads stay. Unlike CPU time on shared cores, it hardly varies
/// from run to run: each wake is work that a quieter agent does not do.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Bytes `pid` caused to be written to storage.
fn written(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    millwright::status::StorageStatus::from_io(&io, Duration::ZERO).map_or(0, |s| s.bytes_written)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Least-squares slope of (seconds, KiB) in MiB per hour.
fn slope_mib_per_hour(points: &[(f64, u64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + *y as f64));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (*y as f64 - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 {
        0.0
    } else {
        num / den * 3600.0 / 1024.0
    }
}

/// The simulator and the broker an agent is measured against, and its configuration.
struct Plant {
    dir: tempfile::TempDir,
    sim_port: u16,
    mqtt_port: u16,
    broker: Option<Killed>,
    _simulator: Killed,
    config: PathBuf,
}

impl Plant {
    fn start(load: Load, format: Format) -> Option<Plant> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sim_port, mqtt_port) = (free_port(), free_port());
        let broker = Killed(mosquitto(mqtt_port, dir.path())?);
        let sim_config = dir.path().join("sim.toml");
        std::fs::write(&sim_config, simulator_config(load, sim_port)).expect("write");
        let config = dir.path().join("agent.toml");
        let data = dir.path().join("data");
        std::fs::write(
            &config,
            agent_config(load, format, sim_port, mqtt_port, &data),
        )
        .expect("write");
        let simulator = Command::new(workspace().join("target/debug/millwright"))
            .args(["simulate", "-c"])
            .arg(&sim_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("simulator: cargo build -p millwright");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", sim_port)).is_err() {
            assert!(Instant::now() < deadline, "the simulator did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Plant {
            dir,
            sim_port,
            mqtt_port,
            broker: Some(broker),
            _simulator: Killed(simulator),
            config,
        })
    }

    /// Stops the broker during the outage and starts it again on the same port after it.
    fn follow_outage(&mut self, at: f64, outage: Option<Duration>) {
        let Some(outage) = outage else { return };
        let down = at >= OUTAGE_AT && at < OUTAGE_AT + outage.as_secs_f64();
        if down && self.broker.is_some() {
            self.broker = None;
        } else if !down && at >= OUTAGE_AT && self.broker.is_none() {
            self.broker = mosquitto(self.mqtt_port, self.dir.path()).map(Killed);
        }
    }

    /// The agent as the packaged service runs it (cross/debian/millwright.service), or Node-RED
    /// with the flow that mirrors the reference load.
    fn agent(&self, agent: &Path) -> Killed {
        let mut command = if is_node_red(agent) {
            let flows = self.dir.path().join("flows.json");
            std::fs::write(&flows, node_red_flow(self.sim_port, self.mqtt_port)).expect("write");
            let mut command = Command::new("node");
            command
                .arg(agent)
                .arg("-u")
                .arg(self.dir.path().join("node-red"));
            command.args(["-p", &free_port().to_string()]).arg(flows);
            command
        } else {
            let mut command = Command::new(agent);
            command.args(["run", "-q", "-c"]).arg(&self.config);
            command
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("agent");
        Killed(child)
    }
}

/// What was read off the agent once a second.
#[derive(Default)]
struct Samples {
    /// (seconds since start, RSS KiB)
    rss: Vec<(f64, u64)>,
    anon_kib: Vec<f64>,
    /// CPU ticks, bytes written and context switches at the end of the warm-up.
    warm: Option<(Instant, u64, u64, u64)>,
}

impl Samples {
    fn rss_at(&self, second: f64) -> u64 {
        self.rss
            .iter()
            .find(|(at, _)| *at >= second)
            .map_or(0, |(_, kib)| *kib)
    }

    fn end(&self) -> u64 {
        self.rss.last().map_or(0, |(_, kib)| *kib)
    }

    /// The median RSS and anonymous RSS of the last fifth, in MiB.
    fn steady(&self) -> (f64, f64) {
        let from = self.rss.len() * 4 / 5;
        let rss = self.rss[from..]
            .iter()
            .map(|(_, kib)| *kib as f64)
            .collect();
        (
            median(rss) / 1024.0,
            median(self.anon_kib[from..].to_vec()) / 1024.0,
        )
    }
}

fn measure(agent: &Path, load: Load, options: &Options) {
    if is_node_red(agent) && (load != Load::Reference || options.format != Format::Uns) {
        println!(
            "skipped {}: Node-RED's flow mirrors the reference load with UNS JSON only",
            agent.display()
        );
        return;
    }
    let Some(mut plant) = Plant::start(load, options.format) else {
        println!("skipped: mosquitto is not installed (apt-get install mosquitto)");
        return;
    };
    let child = plant.agent(agent);
    let pid = child.0.id();
    let started = Instant::now();
    let mut samples = Samples::default();
    while started.elapsed() < options.run {
        std::thread::sleep(Duration::from_secs(1));
        let at = started.elapsed().as_secs_f64();
        plant.follow_outage(at, options.outage);
        samples.rss.push((at, status_kib(pid, "VmRSS:")));
        samples.anon_kib.push(status_kib(pid, "RssAnon:") as f64);
        if samples.warm.is_none() && at >= 10.0 {
            samples.warm = Some((Instant::now(), cpu_ticks(pid), written(pid), switches(pid)));
        }
    }
    let format = match options.format {
        Format::Uns => "",
        Format::Sparkplug => ", Sparkplug B (DDATA every 100 ms)",
        Format::Both => ", UNS and Sparkplug B (DDATA every 100 ms)",
    };
    let load_name = if is_node_red(agent) {
        "Node-RED: 1,000 registers at 100 ms, a summary per device every 1 s (no scoring, no store)"
    } else {
        load.name()
    };
    println!("{} — {load_name}{format}", agent.display());
    let wakes = report(pid, &samples, options);
    drop(child);
    println!(
        "  on this machine now, a thread that only wakes {wakes:.0} times a second (timed sleeps, no work) takes {:.2} % of a core",
        waking_cost(wakes, Duration::from_secs(20))
    );
}

/// CPU in % of a core of a thread that does nothing but sleep and wake `rate` times a second.
/// On a virtual machine each wake costs tens of microseconds of the guest's time, and how many
/// varies from day to day with the host, so this measures the floor under the agent's CPU figure
/// that no work in the agent can remove: a poll's answers from several devices wake it several
/// times. Read from the scheduler's own account (nanoseconds), not sampled by clock ticks.
fn waking_cost(rate: f64, span: Duration) -> f64 {
    if rate < 1.0 {
        return 0.0;
    }
    let run_ns = || -> u64 {
        let schedstat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
        schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0)
    };
    std::thread::spawn(move || {
        let period = Duration::from_secs_f64(1.0 / rate);
        let (started, before) = (Instant::now(), run_ns());
        let mut next = started;
        while next < started + span {
            next += period;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        100.0 * (run_ns() - before) as f64 / 1e9 / started.elapsed().as_secs_f64()
    })
    .join()
    .unwrap_or(0.0)
}

/// Prints the figures; returns the agent's context switches per second.
fn report(pid: u32, samples: &Samples, options: &Options) -> f64 {
    let (warm_at, warm_ticks, warm_written, warm_switches) =
        samples.warm.expect("the run lasts more than 10 s");
    let span = warm_at.elapsed().as_secs_f64();
    let cpu = 100.0 * (cpu_ticks(pid) - warm_ticks) as f64 / ticks_per_second() / span;
    let wakes = switches(pid).saturating_sub(warm_switches) as f64 / span;
    let per_day = (written(pid) - warm_written) as f64 * 86_400.0 / span;
    let (steady, steady_anon) = samples.steady();
    println!(
        "  RSS at 10 s {:.1} MiB, steady {steady:.1} MiB ({steady_anon:.1} MiB of it anonymous, the rest mapped code and files), at the end {:.1} MiB, peak {:.1} MiB; CPU {cpu:.2} % of a core ({wakes:.0} context switches/s); written to storage {:.1} MiB/day",
        mib(samples.rss_at(10.0)),
        mib(samples.end()),
        mib(status_kib(pid, "VmHWM:")),
        per_day / 1048576.0
    );
    if let Some(outage) = options.outage {
        println!(
            "  outage of {} s from {OUTAGE_AT} s: RSS before {:.1} MiB, at its end {:.1} MiB, steady after the drain {steady:.1} MiB",
            outage.as_secs(),
            mib(samples.rss_at(OUTAGE_AT - 1.0)),
            mib(samples.rss_at(OUTAGE_AT + outage.as_secs_f64() - 1.0)),
        );
    }
    if options.run >= Duration::from_secs(6 * 60) {
        let after_five: Vec<(f64, u64)> = samples
            .rss
            .iter()
            .copied()
            .filter(|(at, _)| *at >= 300.0)
            .collect();
        let (at_five, end) = (mib(samples.rss_at(300.0)), mib(samples.end()));
        println!(
            "  soak: RSS at 1 min {:.1} MiB, at 5 min {at_five:.1} MiB, at {} min {end:.1} MiB; growth after 5 min {:+.2} MiB, slope {:+.2} MiB/h",
            mib(samples.rss_at(60.0)),
            options.run.as_secs() / 60,
            end - at_five,
            slope_mib_per_hour(&after_five)
        );
    }
    wakes
}

fn main() {
    let options = options();
    for agent in &options.agents {
        if !agent.exists() {
            println!(
                "skipped {}: no such binary (cross/build.sh x86_64-musl, or pass --agent)",
                agent.display()
            );
            continue;
        }
        for load in &options.loads {
            measure(agent, *load, &options);
        }
    }
}
