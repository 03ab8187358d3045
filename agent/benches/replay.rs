//! `millwright replay` throughput and memory: the demo plant's history (every numeric tag at
//! 1 Hz) through the agent's stages with the shipped model on, scoring every 10 s.
//!
//!     cargo bench -p millwright --bench replay
//!
//! Prints the median of three runs in samples/s (long CSV, one sample per row; and wide CSV, a
//! row per second), and the peak RSS of a replay of half a day and of two days of history (child
//! processes, so nothing else is counted): memory must not grow with the file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use millwright::app::Loaded;
use millwright::clock::SystemClock;
use millwright::replay::run::{self, Options, Speed};

mod common;
use common::{median, status_kib};

const CHILD: &str = "MILLWRIGHT_REPLAY_BENCH_CHILD";
const PLANT: &str = include_str!("../../firmware-config/examples/demo-plant.toml");
const START: u64 = 1_709_251_200; // 2024-03-01T00:00:00Z

/// The demo plant, scored every 10 s with the shipped model.
fn loaded() -> Loaded {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx");
    let text = PLANT.replace(
        "[scoring]\nassess_interval = \"2s\"",
        &format!(
            "[scoring]\nmodels = {{ default = {:?} }}\nassess_interval = \"10s\"",
            model.display().to_string()
        ),
    );
    assert_ne!(text, PLANT, "the demo plant's [scoring] section moved");
    let plan = firmware_config::load_str(Path::new("demo-plant.toml"), &text).expect("plan");
    let loaded = Loaded::new(plan).expect("models");
    assert!(!loaded.models.is_empty(), "the model is on");
    loaded
}

/// The plant's numeric tags, and a plausible value of each at second `s`.
fn tags(loaded: &Loaded) -> Vec<String> {
    loaded
        .plan
        .sources()
        .iter()
        .flat_map(|s| s.tags.iter().map(|(name, _)| name.to_string()))
        .filter(|name| !name.ends_with(".model"))
        .collect()
}

fn value(tag: usize, s: u64) -> f64 {
    let base = [
        4.2, 30.0, 55.0, 2.1, 1.0, 1200.0, 20.0, 20.0, 20.0, 70.0, 1480.0, 11.0, 1.0, 9000.0, 1.2,
        18.0,
    ];
    let wobble = ((s as f64 / 60.0) + tag as f64).sin() * 0.02 + fastrand::f64() * 0.01;
    base[tag % base.len()] * (1.0 + wobble)
}

/// Writes `seconds` of history: long (timestamp,tag,value) or wide (one column per tag).
fn write_history(path: &Path, tags: &[String], seconds: u64, wide: bool) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut samples = 0;
    if wide {
        writeln!(out, "timestamp,{}", tags.join(",")).expect("write");
    } else {
        writeln!(out, "timestamp,tag,value").expect("write");
    }
    for s in 0..seconds {
        let at = START + s;
        if wide {
            write!(out, "{at}").expect("write");
            for t in 0..tags.len() {
                write!(out, ",{:.4}", value(t, s)).expect("write");
            }
            writeln!(out).expect("write");
        } else {
            for (t, tag) in tags.iter().enumerate() {
                writeln!(out, "{at},{tag},{:.4}", value(t, s)).expect("write");
            }
        }
        samples += tags.len() as u64;
    }
    out.flush().expect("flush");
    samples
}

/// Replays `path` once; samples per second.
fn replay_rate(loaded: &Loaded, path: &Path) -> (f64, run::Summary) {
    let options = Options {
        speed: Speed::Max,
        failures: Vec::new(),
        horizon: Duration::from_secs(30 * 86_400),
    };
    let input =
        std::io::BufReader::with_capacity(1 << 16, std::fs::File::open(path).expect("open"));
    let start = Instant::now();
    let summary = run::replay(
        loaded,
        input,
        PathBuf::from(path),
        &options,
        &mut std::io::sink(),
        &SystemClock,
        &mut |_| {},
    )
    .expect("replay");
    let rate = summary.counts.samples as f64 / start.elapsed().as_secs_f64();
    (rate, summary)
}

fn main() {
    if let Ok(path) = std::env::var(CHILD) {
        let loaded = loaded();
        let before = status_kib("VmHWM:");
        let (_, summary) = replay_rate(&loaded, Path::new(&path));
        println!(
            "  {} samples: peak RSS {:.1} MiB (after loading the plan and model: {:.1} MiB)",
            summary.counts.samples,
            status_kib("VmHWM:") as f64 / 1024.0,
            before as f64 / 1024.0
        );
        return;
    }
    let temp = tempfile::tempdir().expect("tempdir");
    let loaded = loaded();
    let tags = tags(&loaded);
    println!(
        "demo plant: {} assets scored every 10 s with the model, {} numeric tags at 1 Hz",
        loaded.plan.assets.len(),
        tags.len()
    );
    for wide in [false, true] {
        let path = temp.path().join(if wide { "wide.csv" } else { "long.csv" });
        let samples = write_history(&path, &tags, 86_400, wide);
        let mut assessments = 0;
        let rates: Vec<f64> = (0..3)
            .map(|_| {
                let (rate, summary) = replay_rate(&loaded, &path);
                assert_eq!(summary.counts.samples, samples, "every sample fed");
                assessments = summary
                    .tally
                    .assets
                    .values()
                    .map(|a| a.assessments)
                    .sum::<u64>();
                rate
            })
            .collect();
        println!(
            "{} CSV, one day ({samples} samples, {assessments} assessments): {:.0} samples/s (median of 3; runs {:?})",
            if wide { "wide" } else { "long" },
            median(rates.clone()),
            rates.iter().map(|r| format!("{:.2}M", r / 1e6)).collect::<Vec<_>>()
        );
    }
    println!("memory against the file's length (long CSV):");
    for seconds in [43_200, 172_800] {
        let path = temp.path().join(format!("history-{seconds}.csv"));
        write_history(&path, &tags, seconds, false);
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .env(CHILD, &path)
            .status()
            .expect("child");
        assert!(status.success());
        let _ = std::fs::remove_file(&path);
    }
}
