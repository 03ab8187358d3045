//! The status page's cost at 1,000 tags and 100 assets: the whole pipeline runs in-process against
//! a simulated plant (10 units × 100 holding registers polled every second, 100 motors assessed
//! every second, 100 limits active, so 100 open alerts), and the page's server answers real
//! HTTP requests on loopback, a new connection each (as a browser's first fetch or a scraper).
//!
//!     cargo bench -p millwright --bench http
//!
//! Prints the median and 99th percentile of 300 requests per path, the body sizes, and the time
//! to assemble one status snapshot. The server runs on one worker thread, as on a gateway.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use millwright::clock::{Clock, SystemClock};
use millwright::control::AgentCommands;
use millwright::pipeline::{Deps, Pipeline};
use tokio_util::sync::CancellationToken;

mod common;
use common::{median, percentile};

const UNITS: usize = 10;
const REGISTERS: usize = 100;
const ASSETS: usize = 100;
const REQUESTS: usize = 300;

fn simulator() -> String {
    let mut text = String::new();
    for unit in 1..=UNITS {
        text += &format!("[[machines]]\nname = \"u{unit}\"\nkind = \"motor\"\nunit_id = {unit}\n");
        for r in 0..REGISTERS {
            text += &format!(
                "[[machines.points]]\nname = \"u{unit}.r{r}\"\ntable = \"holding\"\naddress = {r}\nsignal = {{ base = {}, noise = 1 }}\n",
                40 + r % 50
            );
        }
    }
    text
}

fn agent(port: u16, data: &std::path::Path) -> String {
    let mut text = format!(
        "[agent]\nname = \"bench\"\ndata_dir = {data:?}\n\n[scoring]\nassess_interval = \"1s\"\nwindow = 5\n"
    );
    for unit in 1..=UNITS {
        text += &format!(
            "\n[[devices]]\nname = \"u{unit}\"\nhost = \"127.0.0.1\"\nport = {port}\nunit_id = {unit}\naddressing = \"zero_based\"\npoll_interval = \"1s\"\n"
        );
        for r in 0..REGISTERS {
            text += &format!(
                "[[devices.tags]]\nname = \"u{unit}.r{r}\"\ntable = \"holding_register\"\naddress = {r}\nunit = \"°C\"\n"
            );
        }
    }
    for a in 0..ASSETS {
        let tag = format!("u{}.r{}", a % UNITS + 1, a);
        text += &format!(
            "\n[[assets]]\nid = \"M-{a}\"\ntype = \"motor\"\nsignals = {{ winding_temperature = \"{tag}\" }}\nnameplate = {{ insulation_class = \"F\" }}\n\n[[limits]]\ntag = \"{tag}\"\nhi = 30.0\n"
        );
    }
    text
}

/// One `GET path` on a new connection: (milliseconds, body bytes).
fn fetch(addr: SocketAddr, path: &str) -> (f64, usize) {
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("response");
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "{path}");
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| raw.len() - at - 4);
    (elapsed, body)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    let (addr, commands) = runtime.block_on(start(dir.path(), &stop));
    let status = commands.status();
    println!(
        "{} devices, {} tags, {} assets assessed, {} open alerts",
        status.devices.len(),
        UNITS * REGISTERS,
        status.assets.len(),
        status.alerts.len()
    );
    let mut snapshot = Vec::new();
    for _ in 0..REQUESTS {
        let started = Instant::now();
        std::hint::black_box(commands.status());
        snapshot.push(started.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "status snapshot: median {:.0} µs, p99 {:.0} µs",
        median(snapshot.clone()),
        percentile(snapshot, 0.99)
    );
    for path in ["/", "/page.js", "/api/status", "/metrics"] {
        let runs: Vec<(f64, usize)> = (0..REQUESTS).map(|_| fetch(addr, path)).collect();
        let bytes = runs.last().map_or(0, |r| r.1);
        let times: Vec<f64> = runs.into_iter().map(|r| r.0).collect();
        println!(
            "GET {path:<12} median {:.2} ms, p99 {:.2} ms, {bytes} bytes",
            median(times.clone()),
            percentile(times, 0.99)
        );
    }
    stop.cancel();
}

/// Starts the simulator, the pipeline and the page's server; returns once every asset is
/// assessed and every limit has raised its alert.
async fn start(
    data: &std::path::Path,
    stop: &CancellationToken,
) -> (SocketAddr, Arc<AgentCommands>) {
    let (_, plant) = millwright::sim::load_str(std::path::Path::new("sim.toml"), &simulator())
        .unwrap_or_else(|e| panic!("{e}"));
    let sim = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = sim.local_addr().expect("addr").port();
    tokio::spawn(millwright::sim::server::serve_tcp(
        sim,
        Arc::new(plant),
        stop.clone(),
    ));
    let plan = firmware_config::load_str(std::path::Path::new("bench.toml"), &agent(port, data))
        .unwrap_or_else(|e| panic!("{e}"));
    let loaded = millwright::app::Loaded::new(plan).unwrap_or_else(|e| panic!("{e}"));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let alerts = millwright::decisions::alerts::Alerts::open(data, None);
    let desk = alerts.desk();
    let pipeline = Pipeline::build(
        &loaded,
        Deps {
            clock: Arc::clone(&clock),
            stop: stop.clone(),
            shutdown: stop.clone(),
            alerts,
            upstream: None,
        },
    );
    let commands = AgentCommands::of_pipeline(&loaded, clock, desk, &pipeline);
    // The stages run until the process ends.
    std::mem::forget(pipeline.running);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let site = Arc::new(millwright::http::Site {
        commands: Arc::clone(&commands),
        users: None,
        refresh: Duration::from_secs(2),
        counts: Default::default(),
    });
    tokio::spawn(millwright::http::serve(listener, None, site, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = commands.status();
        if status.assets.len() == ASSETS && status.alerts.len() == ASSETS {
            return (addr, commands);
        }
        assert!(
            Instant::now() < deadline,
            "not settled within 60 s: {} devices online, {} assets, {} alerts",
            status.devices.iter().filter(|d| d.online).count(),
            status.assets.len(),
            status.alerts.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
