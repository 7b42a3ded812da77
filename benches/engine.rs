//! Engine benchmarks (issue: engine core):
//! - head append of 100k series × 1 sample in batches of 2000, `wal-sync=never`, one thread;
//! - the same with `wal-sync=always` and 8 concurrent appenders (group commit);
//! - WAL replay of a 10 M-sample WAL (`Db::open`).
//!
//! Series look like node-exporter's (9 labels). Run: `cargo bench --bench engine`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{AppendSeries, Db, Options, Sample};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SERIES: usize = 100_000;
const BATCH: usize = 2000;

/// Sorted label pairs of a node-exporter-like series.
fn labels(i: usize) -> Vec<(String, String)> {
    let metrics = [
        "node_cpu_seconds_total",
        "node_memory_MemFree_bytes",
        "node_network_receive_bytes_total",
        "node_disk_io_time_seconds_total",
        "node_filesystem_avail_bytes",
    ];
    let mut v = vec![
        (
            "__name__".to_string(),
            metrics[i % metrics.len()].to_string(),
        ),
        ("cluster".to_string(), "eu-west-1".to_string()),
        ("cpu".to_string(), (i % 64).to_string()),
        ("env".to_string(), "production".to_string()),
        (
            "instance".to_string(),
            format!("10.0.{}.{}:9100", (i / 250) % 256, i % 250),
        ),
        ("job".to_string(), "node".to_string()),
        (
            "mode".to_string(),
            ["idle", "user", "system", "iowait"][i % 4].to_string(),
        ),
        ("region".to_string(), "eu".to_string()),
        ("series".to_string(), i.to_string()),
    ];
    v.sort();
    v
}

struct Workload {
    owned: Vec<Vec<(String, String)>>,
}

/// Label pairs borrowed from a `Workload`, as a decoded remote-write request would hold them:
/// built once, outside the timed loop.
type Borrowed<'a> = Vec<Vec<(&'a str, &'a str)>>;

impl Workload {
    fn new() -> Workload {
        Workload {
            owned: (0..SERIES).map(labels).collect(),
        }
    }

    fn borrowed(&self) -> Borrowed<'_> {
        self.owned
            .iter()
            .map(|ls| ls.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
            .collect()
    }
}

/// Append one sample for `range` of series at time `t`, in batches of 2000.
fn append_round(db: &Db, labels: &Borrowed<'_>, range: std::ops::Range<usize>, t: i64) {
    let samples: Vec<[Sample; 1]> = range
        .clone()
        .map(|i| {
            [Sample {
                t,
                v: (i as f64) + t as f64 / 1000.0,
            }]
        })
        .collect();
    let series: Vec<AppendSeries<'_>> = labels[range]
        .iter()
        .zip(&samples)
        .map(|(ls, s)| AppendSeries {
            labels: ls,
            samples: s,
        })
        .collect();
    for chunk in series.chunks(BATCH) {
        let r = db.append(chunk).unwrap();
        assert_eq!(r.accepted as usize, chunk.len());
    }
}

fn open(dir: &std::path::Path, sync: SyncPolicy) -> Db {
    Db::open(
        dir,
        Options {
            wal: WalOptions {
                sync,
                ..WalOptions::default()
            },
            ..Options::default()
        },
    )
    .unwrap()
}

/// 20 h ago, at the start of a 2 h block range.
fn start_time() -> i64 {
    (cairn::tsdb::head::now_ms() - 20 * 3_600_000) / 7_200_000 * 7_200_000
}

fn head_append(c: &mut Criterion) {
    let w = Workload::new();
    let mut g = c.benchmark_group("head_append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(SERIES as u64));

    let labels = w.borrowed();
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), SyncPolicy::Never);
    let t = AtomicI64::new(start_time());
    // Steady state: every series exists (the first round creates them).
    append_round(
        &db,
        &labels,
        0..SERIES,
        t.fetch_add(15_000, Ordering::Relaxed),
    );
    g.bench_function("100k_series_batches_2000_sync_never_1_thread", |b| {
        b.iter(|| {
            append_round(
                &db,
                &labels,
                0..SERIES,
                t.fetch_add(15_000, Ordering::Relaxed),
            )
        })
    });
    drop(db);

    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(open(dir.path(), SyncPolicy::Always));
    let t = Arc::new(AtomicI64::new(start_time()));
    append_round(
        &db,
        &labels,
        0..SERIES,
        t.fetch_add(15_000, Ordering::Relaxed),
    );
    g.bench_function("100k_series_batches_2000_sync_always_8_appenders", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let ts = t.fetch_add(15_000, Ordering::Relaxed);
                // 8 shards, each series always on the same shard (like Prometheus's queue manager).
                let per = SERIES / 8;
                std::thread::scope(|s| {
                    for shard in 0..8 {
                        let (db, labels) = (&db, &labels);
                        s.spawn(move || {
                            append_round(db, labels, shard * per..(shard + 1) * per, ts)
                        });
                    }
                });
            }
            start.elapsed()
        })
    });
    g.finish();
}

fn wal_replay(c: &mut Criterion) {
    // 100k series × 100 samples = 10 M samples, all in the WAL (25 min of 15 s scrapes: no chunk
    // is full yet, so nothing is skipped thanks to chunks_head/).
    let w = Workload::new();
    let labels = w.borrowed();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path(), SyncPolicy::Never);
        let t0 = start_time();
        for k in 0..100 {
            append_round(&db, &labels, 0..SERIES, t0 + k * 15_000);
        }
        db.close().unwrap();
    }
    let mut g = c.benchmark_group("wal_replay");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(30))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(10_000_000));
    g.bench_function("10M_samples_100k_series", |b| {
        b.iter(|| {
            let db = open(dir.path(), SyncPolicy::Never);
            assert_eq!(db.open_report().samples_replayed, 10_000_000);
            // Leave no new segment behind to replay next time: the fresh segment is empty.
            drop(db);
        })
    });
    g.finish();
}

criterion_group!(benches, head_append, wal_replay);
criterion_main!(benches);
