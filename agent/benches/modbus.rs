//! Decode throughput and request planning for 10,000 tags.
//!
//! Run: `cargo bench -p millwright --bench modbus`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use firmware_config::{Addressing, Backoff, DataType, Device, Link, Table, Tag, WordOrder};
use millwright::sources::modbus::{codec, plan};

const TYPES: [(DataType, WordOrder); 6] = [
    (DataType::U16, WordOrder::ABCD),
    (DataType::I16, WordOrder::BADC),
    (DataType::F32, WordOrder::CDAB),
    (DataType::I32, WordOrder::DCBA),
    (DataType::F64, WordOrder::ABCD),
    (DataType::U64, WordOrder::CDAB),
];

/// 10,000 tags of mixed types spread over holding and input registers, with occasional gaps.
fn tags(n: usize) -> Vec<Tag> {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut next = [0u32; 2];
    (0..n)
        .map(|i| {
            let (data_type, order) = TYPES[i % TYPES.len()];
            let table = if i % 3 == 0 {
                Table::InputRegister
            } else {
                Table::HoldingRegister
            };
            let slot = &mut next[usize::from(table == Table::InputRegister)];
            *slot += if rng.u8(..10) == 0 { rng.u32(1..40) } else { 0 };
            let address = *slot as u16;
            *slot += u32::from(data_type.registers().unwrap_or(1));
            Tag {
                name: format!("tag{i}"),
                table,
                address,
                written_address: u32::from(address),
                data_type,
                order,
                bit: None,
                length: 0,
                scaling: (i % 2 == 0).then_some(firmware_config::Scaling {
                    scale: 0.1,
                    offset: 0.0,
                }),
                unit: None,
                poll_interval: Duration::from_millis(if i % 5 == 0 { 100 } else { 1000 }),
                count: 1,
            }
        })
        .collect()
}

fn device(tags: Vec<Tag>) -> Device {
    Device {
        name: "bench".into(),
        link: Link::Tcp {
            host: "127.0.0.1".into(),
            port: 502,
        },
        unit_id: 1,
        addressing: Addressing::ZeroBased,
        timeout: Duration::from_secs(1),
        connect_delay: Duration::ZERO,
        max_registers_per_request: 125,
        max_bits_per_request: 2000,
        max_gap: 16,
        forbidden: Vec::new(),
        one_request_per_tag: false,
        split_rejected_reads: true,
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
        tags: tags.into(),
    }
}

fn bench(c: &mut Criterion) {
    let tags = tags(10_000);
    let words: Vec<Vec<u16>> = tags
        .iter()
        .map(|t| {
            (0..t.width())
                .map(|k| 0x4148 ^ k.wrapping_mul(0x1357))
                .collect()
        })
        .collect();

    let mut decode = c.benchmark_group("decode");
    decode.throughput(Throughput::Elements(tags.len() as u64));
    decode.bench_function("10k_tags_mixed_types_and_orders", |b| {
        b.iter(|| {
            for (tag, w) in tags.iter().zip(&words) {
                black_box(codec::decode_registers(tag, w).ok());
            }
        })
    });
    decode.finish();

    let device = device(tags);
    let requests: usize = plan::plan_device(&device)
        .iter()
        .map(|g| g.requests.len())
        .sum();
    println!("planner: 10,000 tags → {requests} requests per full cycle");
    let mut planning = c.benchmark_group("plan");
    planning.throughput(Throughput::Elements(device.tags.len() as u64));
    planning.bench_function("10k_tags", |b| {
        b.iter(|| black_box(plan::plan_device(black_box(&device))))
    });
    planning.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
