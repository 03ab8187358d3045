//! Scoring cost: features + rules + tract model per asset, and one assessment round for 100
//! assets (one batched model run).
//!
//! Run: `cargo bench -p millwright --bench health`

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use millwright::app::Loaded;
use millwright::health::scorer::Scorer;
use millwright::sample::{Quality, Sample, TagId, Value};

/// `n` pumps, each with vibration, bearing and winding temperature, three currents and pressure.
fn config(n: usize) -> String {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx");
    let mut text = format!(
        "[scoring]\nassess_interval = \"10s\"\nwindow = 60\nmodels = {{ default = {model:?} }}\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[devices]]\nname = \"p{i}\"\nhost = \"127.0.0.1\"\naddressing = \"zero_based\"\n"
        ));
        for (k, (point, unit)) in [
            ("vib", "mm/s"),
            ("bearing", "°C"),
            ("winding", "°C"),
            ("l1", "A"),
            ("l2", "A"),
            ("l3", "A"),
            ("pressure", "bar"),
        ]
        .iter()
        .enumerate()
        {
            text.push_str(&format!(
                "[[devices.tags]]\nname = \"p{i}.{point}\"\ntable = \"holding\"\naddress = {}\ntype = \"f32\"\nunit = \"{unit}\"\n",
                k * 2
            ));
        }
        text.push_str(&format!(
            "[[assets]]\nid = \"P{i}\"\ntype = \"pump\"\nsignals = {{ vibration = \"p{i}.vib\", bearing_temperature = \"p{i}.bearing\", winding_temperature = \"p{i}.winding\", currents = [\"p{i}.l1\", \"p{i}.l2\", \"p{i}.l3\"], pressure = \"p{i}.pressure\" }}\nnameplate = {{ iso_group = 2, foundation = \"rigid\", insulation_class = \"F\", rated_current = 45.0, pressure_range = [3.0, 6.0] }}\n"
        ));
    }
    text
}

/// A scorer for `n` assets whose windows are full (60 samples per signal over 10 minutes).
fn warm_scorer(n: usize) -> Scorer {
    let plan = firmware_config::load_str(Path::new("bench.toml"), &config(n))
        .unwrap_or_else(|e| panic!("{e}"));
    let loaded = Loaded::new(plan).unwrap_or_else(|e| panic!("{e}"));
    let mut scorer = Scorer::new(&loaded.plan, loaded.models.clone());
    let base = [1.6, 55.0, 90.0, 30.0, 30.4, 29.8, 4.3];
    for step in 0..60u32 {
        let t = f64::from(step) * 10.0;
        for tag in 0..(n * 7) as u32 {
            let value = base[tag as usize % 7] * (1.0 + 0.01 * f64::from(step % 7));
            scorer.observe(
                &Sample {
                    tag: TagId(tag),
                    server_timestamp: None,
                    timestamp: SystemTime::UNIX_EPOCH,
                    value: Some(Value::F64(value)),
                    quality: Quality::Good,
                },
                t,
            );
        }
    }
    scorer
}

fn scoring(c: &mut Criterion) {
    let mut group = c.benchmark_group("scoring");
    group.measurement_time(Duration::from_secs(5));
    for n in [1usize, 100] {
        let mut scorer = warm_scorer(n);
        // The same moment every round: windows filled up to t = 590 s stay fresh, so every round
        // assesses every asset (a moving clock would soon find only stale windows and time nothing).
        assert_eq!(scorer.assess_all(600.0, SystemTime::UNIX_EPOCH).len(), n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("assess_round_{n}_assets_with_model"), |b| {
            b.iter(|| black_box(scorer.assess_all(600.0, SystemTime::UNIX_EPOCH)))
        });
    }
    let mut rules_only = {
        let plan = firmware_config::load_str(
            Path::new("bench.toml"),
            &config(100).replace("models = ", "# models = "),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut scorer = Scorer::new(&plan, Default::default());
        for tag in 0..700u32 {
            for step in 0..60u32 {
                scorer.observe(
                    &Sample {
                        tag: TagId(tag),
                        server_timestamp: None,
                        timestamp: SystemTime::UNIX_EPOCH,
                        value: Some(Value::F64(1.0 + f64::from(step % 5))),
                        quality: Quality::Good,
                    },
                    f64::from(step) * 10.0,
                );
            }
        }
        scorer
    };
    assert_eq!(
        rules_only.assess_all(600.0, SystemTime::UNIX_EPOCH).len(),
        100
    );
    group.throughput(Throughput::Elements(100));
    group.bench_function("assess_round_100_assets_rules_only", |b| {
        b.iter(|| black_box(rules_only.assess_all(600.0, SystemTime::UNIX_EPOCH)))
    });
    group.finish();
}

criterion_group!(benches, scoring);
criterion_main!(benches);
