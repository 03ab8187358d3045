//! OPC UA notifications per second handled by the agent's endpoint task, and its memory, with
//! 1,000 and 10,000 monitored items.
//!
//! The server (the simulator's, with N Double variables that all change every 100 ms) runs in a
//! child process, so this process holds only the client side: the session, the subscription, the
//! conversion to samples and the sample bus. Run: `cargo bench -p millwright --bench opcua`.
//! With `MILLWRIGHT_BIN=<path to a millwright binary>` it also runs that agent with 10,000 tags at
//! 1 s and prints its RSS and CPU.

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millwright::bus::SampleBus;
use millwright::clock::{Clock, SystemClock};
use millwright::sample::Quality;
use opcua::types::Variant;
use tokio_util::sync::CancellationToken;

const UPDATE_EVERY: Duration = Duration::from_millis(100);
const MEASURE: Duration = Duration::from_secs(10);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Warnings from the client or the server explain a run that stalls.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(std::io::stderr)
        .init();
    if let Ok(count) = std::env::var("OPCUA_BENCH_SERVER") {
        runtime.block_on(serve(count.parse().expect("item count")));
        return;
    }
    println!("items  offered/s  handled/s  handled/offered  client CPU  client RSS now / peak");
    for items in [1_000usize, 10_000] {
        runtime.block_on(measure(items));
    }
    // The whole agent as a gateway runs it, when a binary is named (e.g. the static musl build).
    if let Ok(agent) = std::env::var("MILLWRIGHT_BIN") {
        // Relative to the workspace root, as the README writes it (benches run in `agent/`).
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        agent_memory(&workspace.join(agent), 10_000);
    }
}

/// Runs `millwright run` with `items` tags subscribed at 1 s against a server child and prints its
/// RSS after 10 s and after 70 s, its peak, and its CPU over the last minute.
fn agent_memory(agent: &Path, items: usize) {
    let (mut server, port, namespace) = server_child(items);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        "[agent]\ndata_dir = {:?}\n\n[[opcua]]\nname = \"bench\"\nurl = \"opc.tcp://127.0.0.1:{port}\"\npublishing_interval = \"1s\"\nsampling_interval = \"1s\"\nmax_items_per_request = 1000\n",
        dir.path().display()
    );
    for i in 0..items {
        text += &format!("\n[[opcua.tags]]\nname = \"v{i}\"\nnode = \"ns={namespace};s=v{i}\"\n");
    }
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, text).expect("config");
    let mut child = std::process::Command::new(agent)
        .args(["run", "-q", "-c"])
        .arg(&config)
        .spawn()
        .expect("agent");
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(10));
    let (early, cpu_before) = (proc_kib(pid, "VmRSS:"), proc_cpu(pid));
    std::thread::sleep(Duration::from_secs(60));
    let cpu = proc_cpu(pid) - cpu_before;
    println!(
        "agent {}: {items} tags at 1 s: RSS {:.1} MiB after 10 s, {:.1} MiB after 70 s, peak {:.1} MiB; CPU {:.1} % of a core",
        agent.display(),
        early as f64 / 1024.0,
        proc_kib(pid, "VmRSS:") as f64 / 1024.0,
        proc_kib(pid, "VmHWM:") as f64 / 1024.0,
        cpu / 60.0 * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(server.stdin.take());
    let _ = server.wait();
}

/// A server child with `items` variables: the child, its port and the simulator's namespace index.
fn server_child(items: usize) -> (std::process::Child, u16, u16) {
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("OPCUA_BENCH_SERVER", items.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("server process");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("port");
    let mut parts = first.split_whitespace();
    let port: u16 = parts.next().and_then(|p| p.parse().ok()).expect("port");
    let namespace: u16 = parts
        .next()
        .and_then(|p| p.parse().ok())
        .expect("namespace");
    (child, port, namespace)
}

/// The child: N variables, all changed every 100 ms, until stdin closes.
async fn serve(items: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, plant) = millwright::sim::load_str(Path::new("empty.toml"), "").expect("plant");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    let server = millwright::sim::opcua::serve(
        listener,
        Arc::new(plant),
        &dir.path().join("pki"),
        &Default::default(),
        shutdown.clone(),
    )
    .await
    .expect("server");
    let nodes: Vec<_> = (0..items)
        .map(|i| server.add_variable(&format!("v{i}"), 0.0f64))
        .collect();
    println!("{} {}", server.port, server.namespace);
    std::io::stdout().flush().expect("flush");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
    });
    let mut tick = tokio::time::interval(UPDATE_EVERY);
    let mut round = 0u64;
    tokio::pin!(stdin_closed);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => break,
            _ = tick.tick() => {}
        }
        round += 1;
        let value = round as f64;
        server.set_all(nodes.iter().map(|n| (n, Variant::Double(value))));
    }
    shutdown.cancel();
}

async fn measure(items: usize) {
    let (mut child, port, namespace) = server_child(items);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        "[agent]\ndata_dir = {:?}\n\n[[opcua]]\nname = \"bench\"\nurl = \"opc.tcp://127.0.0.1:{port}\"\npublishing_interval = \"100ms\"\nsampling_interval = \"100ms\"\nqueue_size = 2\nmax_items_per_request = 1000\n",
        dir.path().display()
    );
    for i in 0..items {
        text += &format!("\n[[opcua.tags]]\nname = \"v{i}\"\nnode = \"ns={namespace};s=v{i}\"\n");
    }
    let plan = firmware_config::load_str(Path::new("bench.toml"), &text).expect("plan");
    let bus = SampleBus::new(items * 4);
    let mut samples = bus.subscribe();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let shutdown = CancellationToken::new();
    let (sources, _stats) = millwright::sources::opcua::endpoints(&plan, &clock, &bus);
    for source in sources {
        tokio::spawn(source.run(shutdown.clone()));
    }

    // Warm up: every item created and reporting.
    let mut seen = vec![false; items];
    let mut reporting = 0;
    let warm = tokio::time::timeout(Duration::from_secs(120), async {
        while reporting < items {
            if let Some(s) = samples.recv().await {
                let i = s.tag.0 as usize;
                if s.quality == Quality::Good && !seen[i] {
                    seen[i] = true;
                    reporting += 1;
                }
            }
        }
    })
    .await;
    assert!(warm.is_ok(), "only {reporting} of {items} items reported");

    let cpu_before = proc_cpu(std::process::id());
    let started = Instant::now();
    let mut handled = 0u64;
    let _ = tokio::time::timeout(MEASURE, async {
        while let Some(s) = samples.recv().await {
            if s.quality == Quality::Good {
                handled += 1;
            }
        }
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = proc_cpu(std::process::id()) - cpu_before;
    let offered = items as f64 / UPDATE_EVERY.as_secs_f64();
    let rate = handled as f64 / elapsed;
    println!(
        "{items:>5}  {offered:>9.0}  {rate:>9.0}  {:>15.2}  {:>9.1} %  {:>6.1} / {:.1} MiB",
        rate / offered,
        cpu / elapsed * 100.0,
        proc_kib(std::process::id(), "VmRSS:") as f64 / 1024.0,
        proc_kib(std::process::id(), "VmHWM:") as f64 / 1024.0
    );
    assert_eq!(bus.dropped(), 0, "the bench's own reader fell behind");
    shutdown.cancel();
    drop(child.stdin.take());
    let _ = child.wait();
}

/// User + system CPU seconds of a process.
fn proc_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// A memory figure (`VmRSS:`, `VmHWM:`) of a process, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
