//! Waveform analysis cost: one 65,536-sample waveform (2.56 s at 25.6 kHz) through the whole
//! diagnosis (time features, averaged spectrum, ISO velocity, spectral-kurtosis band choice,
//! envelope spectrum, shaft orders and one bearing's four defect families), and its parts; with
//! the heap it needs (a counting allocator: peak during one analysis, and what the analyzer keeps).
//!
//! Run: `cargo bench -p millwright --bench vibration` (prints medians and p90 over 30 runs).

mod common;
#[path = "common/counting.rs"]
mod counting;

use std::time::Instant;

use common::{median, percentile};
use firmware_config::{Foundation, IsoGroup, Waveform};
use millwright::vibration::dsp::{Analyzer, Band};
use millwright::vibration::synth::{Fault, Machine};
use millwright::vibration::{analyze, WaveformSlot};

const RUNS: usize = 30;

fn timed(mut run: impl FnMut()) -> (f64, f64) {
    run(); // plans and buffers made once, as in the agent after its first waveform
    let times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (median(times.clone()), percentile(times, 0.9))
}

fn main() {
    let machine = Machine::motor(Fault::InnerRace, 1);
    let x = machine.waveform();
    let (nominal, bearings) = machine.settings();
    let settings = |envelope_band| Waveform {
        envelope_band,
        ..nominal.clone()
    };
    let class = Some((IsoGroup::Group2, Foundation::Rigid));
    println!(
        "waveform: {} samples at {} Hz (inner-race defect)",
        x.len(),
        machine.sample_rate
    );

    let before = counting::live();
    counting::reset_peak();
    let mut analyzer = Analyzer::new();
    let first = analyze(
        &mut analyzer,
        &x,
        &settings(None),
        &bearings,
        Some(machine.shaft_hz),
        class,
    )
    .expect("analysis");
    let peak = counting::peak() - before;
    drop(first);
    let kept = counting::live() - before;
    println!(
        "heap: peak {:.2} MiB during the first analysis; the analyzer keeps {:.2} MiB (FFT plans and buffers, shared by every asset)",
        peak as f64 / 1048576.0,
        kept as f64 / 1048576.0
    );
    let before_slot = counting::live();
    let slot = WaveformSlot::new(65_536, 1000.0);
    println!(
        "per waveform asset: {:.2} MiB buffer (max_samples 65,536 × f32)",
        (counting::live() - before_slot) as f64 / 1048576.0
    );
    drop(slot);

    let cases: [(&str, Option<[f64; 2]>); 2] = [
        ("whole diagnosis, band by spectral kurtosis", None),
        ("whole diagnosis, configured band", Some([2500.0, 5000.0])),
    ];
    for (name, band) in cases {
        let w = settings(band);
        let (med, p90) = timed(|| {
            std::hint::black_box(analyze(
                &mut analyzer,
                &x,
                &w,
                &bearings,
                Some(machine.shaft_hz),
                class,
            ));
        });
        println!("{name}: median {med:.2} ms, p90 {p90:.2} ms");
    }
    let fs = machine.sample_rate;
    let (med, p90) = timed(|| {
        std::hint::black_box(analyzer.averaged_spectrum(&x, fs, 16_384));
    });
    println!(
        "  averaged spectrum (16,384-point Hann, 7 averages): median {med:.2} ms, p90 {p90:.2} ms"
    );
    let (med, p90) = timed(|| analyzer.load(&x));
    println!("  whole-waveform FFT (65,536 points): median {med:.2} ms, p90 {p90:.2} ms");
    let (med, p90) = timed(|| {
        std::hint::black_box(analyzer.kurtosis_band(fs, 700.0, 500.0));
    });
    println!("  spectral-kurtosis band choice: median {med:.2} ms, p90 {p90:.2} ms");
    let band = Band {
        low: 2500.0,
        high: 5000.0,
    };
    let (med, p90) = timed(|| {
        std::hint::black_box(analyzer.envelope_spectrum(band, fs, 1.5));
    });
    println!("  envelope spectrum (2.5–5 kHz): median {med:.2} ms, p90 {p90:.2} ms");
}
