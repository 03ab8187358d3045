//! Divert latency: a part's trigger sample read over Modbus TCP → the divert coil written on the
//! station's PLC, with the real stages in-process (acquisition, the quality stage, the divert
//! output's task) against the simulator's Modbus server. Also the cost of deciding a part.
//!
//!     cargo bench -p millwright --bench quality
//!
//! The simulated gauge makes a part every 100 ms, every one out of spec; the agent polls it every
//! 20 ms. Latency is measured from the time stamped on the poll's samples, the new part count
//! among them (taken when the answer was decoded: the poll is done), to the moment the
//! simulator's server stores the coil write: the time the agent adds beyond the poll. Prints
//! the median and the 99th percentile over 300 parts.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use firmware_config::Table;
use millwright::app::Loaded;
use millwright::clock::{Clock, SystemClock};
use millwright::decisions::alerts::Alerts;
use millwright::pipeline::{Deps, Pipeline};
use millwright::quality::station::StationCore;
use millwright::sample::{Quality, Sample, TagId, Value};
use tokio_util::sync::CancellationToken;

mod common;
use common::{median, percentile};

#[path = "common/counting.rs"]
mod counting;

const PARTS: usize = 300;
const SIM: &str = include_str!("../tests/fixtures/quality-divert-sim.toml");
const GAUGE: &str = include_str!("../tests/fixtures/quality-gauge.toml");

fn plan(port: u16, data: &Path) -> firmware_config::Plan {
    let text = GAUGE
        .replace(
            "host = \"127.0.0.1\"",
            &format!("host = \"127.0.0.1\"\nport = {port}\npoll_interval = \"20ms\""),
        )
        .replace("pulse = \"300ms\"", "pulse = \"30ms\"")
        .replace("[agent]\n", &format!("[agent]\ndata_dir = {data:?}\n"));
    firmware_config::load_str(Path::new("gauge.toml"), &text).unwrap_or_else(|e| panic!("{e}"))
}

/// When each poll that brought a new part count was decoded (its samples' time, on this
/// process's monotonic clock through `anchor`), for `PARTS` parts.
async fn triggers(
    mut samples: millwright::bus::Subscriber,
    anchor: (Instant, SystemTime),
) -> Vec<Instant> {
    let mut seen = Vec::new();
    let mut last = None;
    while seen.len() < PARTS {
        let Some(batch) = samples.recv_batch().await else {
            break;
        };
        for sample in batch.iter().filter(|s| s.tag == TagId(0)) {
            let since = sample
                .timestamp
                .duration_since(anchor.1)
                .unwrap_or_default();
            let at = anchor.0 + since;
            let count = sample.value.as_ref().and_then(Value::as_f64);
            if count.is_some() && last.is_some() && count != last {
                seen.push(at);
            }
            last = count.or(last);
        }
    }
    seen
}

async fn divert_latency() {
    let (_, plant) =
        millwright::sim::load_str(Path::new("sim.toml"), SIM).unwrap_or_else(|e| panic!("{e}"));
    let plant = Arc::new(plant);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let stop = CancellationToken::new();
    let server = tokio::spawn(millwright::sim::server::serve_tcp(
        listener,
        Arc::clone(&plant),
        stop.clone(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let loaded = Loaded::new(plan(port, &dir.path().join("data"))).expect("loaded");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    // Samples carry the clock's time; the simulator notes writes on the monotonic clock.
    let anchor = (Instant::now(), clock.now());
    let pipeline = Pipeline::build(
        &loaded,
        Deps {
            clock: Arc::clone(&clock),
            stop: stop.clone(),
            shutdown: stop.clone(),
            alerts: Alerts::open(dir.path(), None),
            upstream: None,
        },
    );
    let seen = tokio::time::timeout(
        Duration::from_secs(PARTS as u64 / 5 + 30),
        triggers(pipeline.bus.subscribe(), anchor),
    )
    .await
    .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let _ = server.await;
    let writes = plant.machine(1).expect("gauge").writes_at(Table::Coil, 0);
    let ons: Vec<Instant> = writes
        .iter()
        .filter(|(value, _)| *value == 1)
        .map(|(_, at)| *at)
        .collect();
    let mut latencies = Vec::new();
    for trigger in &seen {
        if let Some(on) = ons.iter().find(|on| *on >= trigger) {
            latencies.push(on.duration_since(*trigger).as_secs_f64() * 1e3);
        }
    }
    println!(
        "{} parts seen, {} divert pulses written",
        seen.len(),
        ons.len()
    );
    if latencies.is_empty() {
        println!(
            "divert latency: no part diverted ({} triggers seen)",
            seen.len()
        );
        return;
    }
    println!(
        "divert latency beyond the poll (trigger sample decoded → coil written), {} parts: median {:.2} ms, p99 {:.2} ms (poll every 20 ms bounds when the trigger is seen)",
        latencies.len(),
        median(latencies.clone()),
        percentile(latencies, 0.99)
    );
}

/// The pure cost of taking a part's samples and deciding it (two characteristics, charts on).
fn decision_cost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan(502, dir.path());
    let mut core = StationCore::new(plan.quality[0].clone(), &[], SystemTime::UNIX_EPOCH);
    let sample = |tag: u32, value: f64| Sample {
        tag: TagId(tag),
        timestamp: SystemTime::UNIX_EPOCH,
        server_timestamp: None,
        value: Some(Value::F64(value)),
        quality: Quality::Good,
    };
    let mut out = Vec::new();
    let rounds = 200_000u32;
    let mut runs = Vec::new();
    for run in 0..5 {
        let started = Instant::now();
        for i in 0..rounds {
            let n = run * rounds + i + 1;
            let mono = Duration::from_millis(u64::from(n));
            core.observe(&sample(2, 25.0 + f64::from(n % 7) * 0.001), mono);
            core.observe(&sample(3, 120.0 + f64::from(n % 5) * 0.1), mono);
            core.observe(&sample(0, f64::from(n % 65_536)), mono);
            core.step(mono, SystemTime::UNIX_EPOCH, &mut out);
            out.clear();
        }
        runs.push(started.elapsed().as_secs_f64() * 1e9 / f64::from(rounds));
    }
    println!(
        "deciding a part (3 samples, 2 characteristics on I-MR and X̄-R charts, the record built): median {:.0} ns",
        median(runs)
    );
    drop(core);
    let before = counting::live();
    let stations: Vec<StationCore> = (0..100)
        .map(|_| {
            let mut core = StationCore::new(plan.quality[0].clone(), &[], SystemTime::UNIX_EPOCH);
            for n in 1..=1_000u32 {
                let mono = Duration::from_millis(u64::from(n));
                core.observe(&sample(2, 25.0 + f64::from(n % 7) * 0.001), mono);
                core.observe(&sample(3, 120.0), mono);
                core.observe(&sample(0, f64::from(n)), mono);
                core.step(mono, SystemTime::UNIX_EPOCH, &mut out);
                out.clear();
            }
            core
        })
        .collect();
    let held = (counting::live() - before) as f64 / stations.len() as f64;
    println!("memory per station (the gauge fixture: 2 characteristics, after 1,000 parts, mean of 100): {held:.0} bytes of heap");
}

/// Scoring one camera image with the example surface model: the 64×64 PNG it was trained on,
/// and a 640×480 JPEG (decoded, converted and resized first).
fn image_cost() {
    use millwright::quality::image::ImageModel;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/quality");
    let model = ImageModel::load(&root.join("surface.onnx")).expect("model");
    let png_path = std::fs::read_dir(root.join("surface.check"))
        .expect("check images")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .expect("a png");
    let png = std::fs::read(&png_path).expect("png");
    let big = image::load_from_memory(&png).expect("decode").resize_exact(
        640,
        480,
        image::imageops::FilterType::Triangle,
    );
    let mut jpeg = Vec::new();
    big.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        image::ImageFormat::Jpeg,
    )
    .expect("jpeg");
    for (what, bytes) in [("64×64 PNG", &png), ("640×480 JPEG", &jpeg)] {
        let mut runs = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            for _ in 0..50 {
                model.score(bytes).expect("scored");
            }
            runs.push(started.elapsed().as_secs_f64() * 1e3 / 50.0);
        }
        println!(
            "scoring one camera image ({what}, decode + resize + model): median {:.2} ms",
            median(runs)
        );
    }
}

fn main() {
    decision_cost();
    image_cost();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(divert_latency());
}
