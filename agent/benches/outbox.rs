//! Outbox and uplink figures: append throughput with periodic flushes, drain throughput to a local
//! mosquitto at QoS 1, and the memory of an agent holding a million queued records.
//!
//!     cargo bench -p millwright --bench outbox
//!
//! Prints medians of three runs. The drain needs `mosquitto` on the PATH (skipped otherwise). The
//! memory figures come from child processes (this binary re-run), so nothing else is counted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use millwright::records::{Last, Report, TagStats, TagSummary};
use millwright::sample::{Quality, Value};
use millwright::store::{Class, NewRecord, Outbox, SledStore};
use millwright::uplink::{Identity, Uplink, UplinkParts, UplinkStats};

mod common;
use common::{free_port, median, mosquitto, status_kib};
use tokio_util::sync::CancellationToken;

const CHILD: &str = "MILLWRIGHT_OUTBOX_BENCH_CHILD";

/// A 10-tag device's summary, as the summaries stage makes it.
fn summary(n: usize) -> NewRecord {
    let x = n as f64;
    let tags = (0..10)
        .map(|t| TagStats {
            name: format!("tag{t}").into(),
            unit: None,
            count: 10,
            bad: 0,
            worst: Some(Quality::Good),
            last: Some(Last::Value(Value::F64(x + 0.8))),
            min: Some(x + 0.5),
            max: Some(x + 0.9),
            mean: Some(x + 0.7),
        })
        .collect();
    let now = SystemTime::now();
    let report = Report::TagSummary(TagSummary {
        device: "plc".into(),
        online: Some(true),
        from: now,
        to: now,
        tags,
    });
    NewRecord::report(report, now)
}

fn open(dir: &Path, max_bytes: u64) -> Outbox {
    let (store, _) = SledStore::open_or_recover(dir).expect("open store");
    Outbox::new(Box::new(store), max_bytes).expect("outbox")
}

/// Appends `count` records, flushing once a second as `flush_interval = "1s"` would.
fn append_rate(count: usize) -> f64 {
    let temp = tempfile::tempdir().expect("tempdir");
    let outbox = open(&temp.path().join("outbox"), u64::MAX);
    let records: Vec<NewRecord> = (0..count).map(summary).collect();
    let start = Instant::now();
    let mut flushed = Instant::now();
    for record in records {
        outbox.append(record).expect("append");
        if flushed.elapsed() >= Duration::from_secs(1) {
            outbox.flush().expect("flush");
            flushed = Instant::now();
        }
    }
    outbox.flush().expect("flush");
    count as f64 / start.elapsed().as_secs_f64()
}

/// Alerts: every append is followed by its own flush (the agent flushes at once after an alert).
fn alert_rate(count: usize) -> f64 {
    let temp = tempfile::tempdir().expect("tempdir");
    let outbox = open(&temp.path().join("outbox"), u64::MAX);
    let start = Instant::now();
    for n in 0..count {
        let mut record = summary(n);
        record.class = Class::Alert;
        outbox.append(record).expect("append");
        outbox.flush().expect("flush");
    }
    count as f64 / start.elapsed().as_secs_f64()
}

/// Fills an outbox with `count` summaries and times the uplink emptying it into mosquitto.
fn drain_rate(count: usize, max_inflight: u16, port: u16) -> f64 {
    let temp = tempfile::tempdir().expect("tempdir");
    let outbox = Arc::new(open(&temp.path().join("outbox"), u64::MAX));
    for n in 0..count {
        outbox.append(summary(n)).expect("append");
    }
    outbox.flush().expect("flush");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let plan = firmware_config::load_str(
            Path::new("bench.toml"),
            &format!(
                "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\ndrain_rate = 10000000\nmax_inflight = {max_inflight}\n"
            ),
        )
        .expect("config");
        let mqtt = plan.mqtt.expect("mqtt");
        let stop = CancellationToken::new();
        let uplink = Uplink::uns(
            mqtt,
            Identity {
                agent: "bench".into(),
                version: "bench".into(),
                config_hash: "0".into(),
            },
            UplinkParts {
                outbox: Arc::clone(&outbox),
                stats: Arc::new(UplinkStats::default()),
                commands: Arc::new(millwright::uplink::Refusing("benchmark")),
                clock: Arc::new(millwright::clock::SystemClock),
            },
        );
        let start = Instant::now();
        let task = tokio::spawn(uplink.run(stop.clone()));
        let deadline = Instant::now() + Duration::from_secs(300);
        while outbox.depth() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let elapsed = start.elapsed();
        assert_eq!(outbox.depth(), 0, "drained");
        stop.cancel();
        let _ = task.await;
        count as f64 / elapsed.as_secs_f64()
    })
}

/// In a child process: fill a store with `count` records ("fill"); open a filled one as sled alone
/// ("open"); or open it as the agent does, counting what is queued, and read the head of each stream
/// ("reopen").
fn child(mode: &str, dir: &Path, count: usize) {
    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let report = |what: String| {
        println!(
            "  {mode}: {what} in {:.1} s; RSS {:.1} MiB (process started at {:.1}), peak {:.1} MiB",
            start.elapsed().as_secs_f64(),
            status_kib("VmRSS:") as f64 / 1024.0,
            before as f64 / 1024.0,
            status_kib("VmHWM:") as f64 / 1024.0,
        )
    };
    if mode == "open" {
        let store = SledStore::open(dir).expect("open");
        report(format!(
            "sled store of {:.0} MiB on disk",
            millwright::store::Store::size_on_disk(&store) as f64 / 1048576.0
        ));
        return;
    }
    let outbox = open(dir, u64::MAX);
    if mode == "fill" {
        for n in 0..count {
            outbox.append(summary(n)).expect("append");
            if n % 100_000 == 0 {
                outbox.flush().expect("flush");
            }
        }
        outbox.flush().expect("flush");
    } else {
        for class in Class::ALL {
            outbox.next_after(class, None, 64).expect("read");
        }
    }
    let stats = outbox.stats();
    report(format!(
        "{} records ({:.0} MiB encoded, {:.0} MiB on disk)",
        stats.depth(),
        stats.bytes as f64 / 1048576.0,
        stats.size_on_disk as f64 / 1048576.0
    ));
}

fn main() {
    if let Ok(mode) = std::env::var(CHILD) {
        let dir = std::env::var("MILLWRIGHT_OUTBOX_BENCH_DIR").expect("dir");
        let count = std::env::var("MILLWRIGHT_OUTBOX_BENCH_COUNT")
            .ok()
            .and_then(|c| c.parse().ok())
            .expect("count");
        child(&mode, Path::new(&dir), count);
        return;
    }
    // `cargo bench` passes --bench; any other argument filters nothing here.
    let record_bytes = millwright::store::encode(&millwright::store::Record {
        id: 0,
        class: Class::Summary,
        created_ms: 0,
        payload: summary(0).payload,
    })
    .len();
    println!("record: {record_bytes} bytes encoded (a 10-tag summary)");

    let appends = median((0..3).map(|_| append_rate(200_000)).collect());
    println!("append, flush every 1 s: {appends:.0} records/s (median of 3 × 200,000)");
    let alerts = median((0..3).map(|_| alert_rate(500)).collect());
    println!("append + flush each (alerts): {alerts:.0} records/s (median of 3 × 500)");

    let temp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    match mosquitto(port, temp.path()) {
        Some(mut broker) => {
            for inflight in [100, 1000] {
                let rate = median((0..3).map(|_| drain_rate(50_000, inflight, port)).collect());
                println!(
                    "drain to mosquitto at QoS 1, max_inflight {inflight}: {rate:.0} messages/s (median of 3 × 50,000)"
                );
            }
            let _ = broker.kill();
            let _ = broker.wait();
        }
        None => println!("drain: skipped (mosquitto not installed)"),
    }

    // A full default outbox (64 MiB of these records), and a million of them.
    for count in [(64 << 20) / record_bytes, 1_000_000] {
        println!("memory with {count} records queued:");
        let store = tempfile::tempdir().expect("tempdir");
        let dir = store.path().join("outbox");
        for mode in ["fill", "open", "reopen"] {
            let status = std::process::Command::new(std::env::current_exe().expect("exe"))
                .env(CHILD, mode)
                .env("MILLWRIGHT_OUTBOX_BENCH_DIR", &dir)
                .env("MILLWRIGHT_OUTBOX_BENCH_COUNT", count.to_string())
                .status()
                .expect("child");
            assert!(status.success());
        }
    }
}
