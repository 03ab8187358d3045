//! The production stage's cost: one line's second of input (its six tags sampled ten times, then
//! one step) and a running report; and the memory a line holds.
//!
//! Run: `cargo bench -p millwright --bench production`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use millwright::production::line::LineCore;
use millwright::sample::{Quality, Sample, TagId, Value};

#[path = "common/counting.rs"]
mod counting;

const PRESS: &str = include_str!("../tests/fixtures/line-press.toml");

fn core() -> LineCore {
    let mut plan = firmware_config::load_str(Path::new("press.toml"), PRESS).expect("fixture");
    LineCore::new(plan.lines.remove(0), None)
}

fn sample(tag: u32, value: f64, at: SystemTime) -> Sample {
    Sample {
        tag: TagId(tag),
        timestamp: at,
        server_timestamp: None,
        value: Some(Value::F64(value)),
        quality: Quality::Good,
    }
}

/// Runs `seconds` of a running press: the six tags polled every 100 ms, one step a second.
fn run(core: &mut LineCore, start: u64, seconds: u64) {
    // Monday 2026-11-30 08:00 UTC: inside the fixture's day shift.
    let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_025_600);
    for s in start..start + seconds {
        for tenth in 0..10u64 {
            let mono = Duration::from_millis(s * 1000 + tenth * 100);
            let at = origin + mono;
            let count = (s * 10 + tenth) as f64 / 4.0;
            for (tag, value) in [
                (0, 1.0),
                (1, 0.0),
                (2, count.floor()),
                (3, count.floor()),
                (4, 1.0),
                (5, 40.0),
            ] {
                core.observe(&sample(tag, value, at), mono);
            }
        }
        let mono = Duration::from_secs(s + 1);
        black_box(core.step(origin + mono, mono));
    }
}

/// A line 600 s into the day shift.
fn warm() -> LineCore {
    let mut core = core();
    run(&mut core, 0, 600);
    core
}

fn bench(c: &mut Criterion) {
    // Each measured second moves the line's clock on: a fresh line every 20,000 s keeps every
    // measured second inside the 8 h shift.
    c.bench_function("one line: a second of input (60 samples) and a step", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(20_000);
                let mut core = warm();
                let started = Instant::now();
                run(&mut core, 600, n);
                measured += started.elapsed();
                left -= n;
            }
            measured
        })
    });
    let line = warm();
    assert!(line.report().is_some(), "inside the shift");
    c.bench_function("one line: a running report", |b| {
        b.iter(|| black_box(line.report()))
    });
    let state = serde_json::to_vec(line.persisted()).expect("json");
    let before = counting::live();
    let lines: Vec<LineCore> = (0..100).map(|_| warm()).collect();
    let held = (counting::live() - before) as f64 / lines.len() as f64;
    println!(
        "memory per line (heap held by a line 600 s into its shift, mean of {}): {held:.0} bytes; its saved state: {} bytes of JSON",
        lines.len(),
        state.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
