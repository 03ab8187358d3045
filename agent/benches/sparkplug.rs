//! Sparkplug B costs at 1,000 tags: the births (NBIRTH and the DBIRTHs) a host gets on every
//! connection and rebirth, and report by exception when every tag changes every 100 ms (the
//! changes stage's core, then the encoder's DDATA).
//!
//!     cargo bench -p millwright --bench sparkplug
//!
//! Two shapes of the same 1,000 tags: ten devices of 100 (the footprint bench's reference load)
//! and one device of 1,000. Prints the births' sizes and the median time to make them, and per
//! 100 ms round the median time from 1,000 samples to the encoded DDATA, its size, the share of
//! one core that takes at 10 rounds a second, and the DDATA messages per second one core could
//! make. The RSS of the whole agent with Sparkplug on comes from the footprint bench
//! (`--format sparkplug`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use millwright::changes::Changes;
use millwright::records::Report;
use millwright::sample::{Quality, Sample, TagId, Value};
use millwright::sources::DeviceStats;
use millwright::store::{Class, Payload as Stored, Record};
use millwright::uplink::encode::sparkplug::{Current, LiveTags, NodeParts, Sparkplug};
use millwright::uplink::encode::{Encoder, Identity};

mod common;
use common::median;

const TAGS: usize = 1000;
const ROUNDS: usize = 200;

/// `devices` Modbus devices sharing 1,000 holding registers, with Sparkplug on.
fn config(devices: usize) -> String {
    let mut text = String::from("[agent]\nname = \"bench\"\n");
    for d in 0..devices {
        text += &format!(
            "\n[[devices]]\nname = \"dev-{d}\"\nhost = \"127.0.0.1\"\nunit_id = {}\naddressing = \"zero_based\"\n",
            d + 1
        );
        for r in 0..TAGS / devices {
            text += &format!(
                "[[devices.tags]]\nname = \"d{d}.r{r}\"\ntable = \"holding_register\"\naddress = {r}\nscale = 0.1\nunit = \"bar\"\n"
            );
        }
    }
    text += "\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\nformat = \"sparkplug\"\n[mqtt.sparkplug]\ngroup_id = \"plant\"\ndata_interval = \"100ms\"\n";
    text
}

fn sample(tag: usize, round: usize, at: SystemTime) -> Sample {
    Sample {
        tag: TagId(tag as u32),
        timestamp: at,
        server_timestamp: None,
        value: Some(Value::F64((tag + round) as f64 * 0.1)),
        quality: Quality::Good,
    }
}

fn shape(devices: usize, dir: &Path) {
    let plan = firmware_config::load_str(Path::new("bench.toml"), &config(devices))
        .unwrap_or_else(|e| panic!("{e}"));
    let node = plan
        .mqtt
        .as_ref()
        .and_then(|m| m.formats.sparkplug.clone())
        .expect("sparkplug");
    let sources: Vec<(String, Arc<DeviceStats>)> = plan
        .devices
        .iter()
        .map(|d| {
            let stats = Arc::new(DeviceStats::default());
            stats
                .online
                .store(true, std::sync::atomic::Ordering::Relaxed);
            (d.name.clone(), stats)
        })
        .collect();
    let live = LiveTags::new(plan.tag_count());
    let now = SystemTime::now();
    live.update((0..TAGS).map(|t| {
        let s = sample(t, 0, now);
        (
            s.tag,
            Current {
                value: s.value,
                quality: s.quality,
                at: now,
            },
        )
    }));
    let mut encoder = Sparkplug::new(
        &plan,
        &node,
        NodeParts {
            live,
            sources,
            data_dir: dir.to_path_buf(),
        },
    );
    let identity = Identity {
        agent: "bench".into(),
        version: "bench".into(),
        config_hash: "0".into(),
    };
    encoder.will(&identity, now);
    let mut births = Vec::new();
    let birth_times: Vec<f64> = (0..50)
        .map(|_| {
            let start = Instant::now();
            births = encoder.connected(&identity, now);
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let sizes: Vec<usize> = births.iter().map(|m| m.payload.len()).collect();
    println!(
        "{devices} device(s) of {} tags: births {} messages, NBIRTH {} B, DBIRTH {} B each, {} B in all; made in {:.2} ms (median of 50)",
        TAGS / devices,
        births.len(),
        sizes[0],
        sizes.get(1).copied().unwrap_or(0),
        sizes.iter().sum::<usize>(),
        median(birth_times)
    );

    let mut core = Changes::new(&plan, &node);
    let mut round_times = Vec::new();
    let (mut messages, mut bytes) = (0usize, 0usize);
    for round in 1..=ROUNDS {
        let at = now + Duration::from_millis(100 * round as u64);
        let start = Instant::now();
        for tag in 0..TAGS {
            core.sample(&sample(tag, round, at));
        }
        for (i, changes) in core.due(|_| true).into_iter().enumerate() {
            let record = Record {
                id: (round * 100 + i) as u64,
                class: Class::Summary,
                created_ms: 0,
                payload: Stored::Report(Report::Changes(Box::new(changes))),
            };
            for message in encoder.encode(&record, "bench") {
                messages += 1;
                bytes += message.payload.len();
            }
        }
        round_times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    let round = median(round_times);
    println!(
        "  every tag changing every 100 ms: {} DDATA per round of {:.0} B each; {round:.0} µs per round (median of {ROUNDS}) = {:.2} % of a core at 10 rounds/s; one core makes {:.0} DDATA/s",
        messages / ROUNDS,
        bytes as f64 / messages as f64,
        round / 1e6 * 10.0 * 100.0,
        (messages / ROUNDS) as f64 / (round / 1e6)
    );
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    println!("Sparkplug B at {TAGS} tags (static plan, records made in-process, no broker):");
    shape(10, dir.path());
    shape(1, dir.path());
}
