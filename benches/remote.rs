//! Remote-write decode on a realistic request: 2000 node-exporter-like series × 1 sample, as
//! Prometheus's queue manager sends them (the load generator's workload).
//!
//! - `snappy+decode`: what the server does before validation (decompress, borrowed decode);
//! - `decode+normalize`: decode and the label checks (UTF-8, sort, duplicates);
//! - `prost_owned_decode`: the same bytes into prost's owned `String` messages, for reference.
//!
//! Throughput is in samples; `cargo bench --bench remote`.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/common/proto.rs"]
mod proto;
#[path = "../examples/loadgen/workload.rs"]
mod workload;

use cairn::remote::write::{decode, normalize_labels, LabelLimits};
use cairn::remote::{decompress, BodyLimits};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use workload::{Config, Workload};

fn remote_write_decode(c: &mut Criterion) {
    let w = Workload::new(Config {
        series: 100_000,
        rounds: 1,
        start_ms: 1_700_000_000_000,
        ..Config::default()
    });
    let plan = w.plan();
    let batch = &plan[0][0];
    let body = w.encode(batch).body;
    let raw = proto::unsnappy(&body);
    let samples = batch.entries.len() as u64;
    let limits = BodyLimits::default();

    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(samples));
    g.bench_function("snappy+decode", |b| {
        b.iter(|| {
            let buf = decompress(black_box(&body), &limits).unwrap();
            let batch = decode(&buf).unwrap();
            black_box(batch.num_samples())
        })
    });
    g.bench_function("decode+normalize", |b| {
        let mut norm = Vec::with_capacity(32_000);
        b.iter(|| {
            let batch = decode(black_box(&raw)).unwrap();
            norm.clear();
            for i in 0..batch.num_series() {
                normalize_labels(batch.series(i).0, &mut norm, &LabelLimits::default()).unwrap();
            }
            black_box(norm.len())
        })
    });
    g.bench_function("prost_owned_decode", |b| {
        b.iter(|| {
            let r = <proto::WriteRequest as prost::Message>::decode(black_box(&raw[..])).unwrap();
            black_box(r.timeseries.len())
        })
    });
    g.finish();
}

criterion_group!(benches, remote_write_decode);
criterion_main!(benches);
