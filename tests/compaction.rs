//! Head compaction through the public `Db` API: blocks written from the head, the head
//! truncated, reads merged over blocks and head, restarts, concurrent queries, and a crash at
//! every step of compaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cairn::model::{MatchType, Matcher};
use cairn::tsdb::db::FaultFn;
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{AppendSeries, Db, DbError, Options, Sample};
use cairn::tsdb::{FaultPoint, Step};
use common::dump;

const HOUR: i64 = 3_600_000;
const STEP: i64 = 60_000;

fn opts() -> Options {
    Options {
        block_range_ms: HOUR,
        wal: WalOptions {
            sync: SyncPolicy::Never,
            segment_size: 32 * 1024,
            ..WalOptions::default()
        },
        head_chunk_file_size: 2048,
        // Head compaction is the subject here (merges: tests/housekeeping.rs); whether a merge
        // happens would otherwise depend on where now falls in a 3h range.
        max_block_duration_ms: Some(HOUR),
        ..Options::default()
    }
}

type Expected = BTreeMap<String, Vec<(i64, u64)>>;

/// Data for `series` series from `start` (unaligned on purpose) to `end` every minute, pushed
/// in time order. Series 0 stops after the first hour, so truncation must remove it from the
/// head while its data stays readable from the block.
struct Load {
    series: usize,
    start: i64,
    end: i64,
}

impl Load {
    fn new(series: usize) -> Load {
        let now = cairn::tsdb::head::now_ms();
        let end = now - STEP;
        let start = (end - 5 * HOUR) / HOUR * HOUR + 17 * STEP + 123;
        Load { series, start, end }
    }

    fn labels(i: usize) -> Vec<(String, String)> {
        vec![
            ("__name__".into(), "load".into()),
            ("i".into(), format!("{i:03}")),
            ("job".into(), "compaction".into()),
        ]
    }

    fn value(i: usize, t: i64) -> f64 {
        match (t / STEP) % 97 {
            5 => f64::NAN,
            6 => f64::INFINITY,
            _ => (t / STEP) as f64 * 0.5 + i as f64,
        }
    }

    fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..)
            .map(|k| self.start + k * STEP)
            .take_while(|&t| t <= self.end)
    }

    fn has(&self, i: usize, t: i64) -> bool {
        i != 0 || t < self.start + HOUR
    }

    /// Push everything from `from` (inclusive) to `to` (exclusive); returns what was pushed.
    fn push(&self, db: &Db, from: i64, to: i64, exp: &mut Expected) {
        let labels: Vec<Vec<(String, String)>> = (0..self.series).map(Load::labels).collect();
        let times: Vec<i64> = self.times().filter(|&t| t >= from && t < to).collect();
        for batch in times.chunks(10) {
            let samples: Vec<Vec<Sample>> = (0..self.series)
                .map(|i| {
                    batch
                        .iter()
                        .filter(|&&t| self.has(i, t))
                        .map(|&t| Sample {
                            t,
                            v: Load::value(i, t),
                        })
                        .collect()
                })
                .collect();
            let pairs: Vec<Vec<(&str, &str)>> = labels
                .iter()
                .map(|l| l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect())
                .collect();
            let req: Vec<AppendSeries<'_>> = pairs
                .iter()
                .zip(&samples)
                .filter(|(_, s)| !s.is_empty())
                .map(|(l, s)| AppendSeries {
                    labels: l,
                    samples: s,
                })
                .collect();
            let r = db.append(&req).unwrap();
            let n: usize = samples.iter().map(Vec::len).sum();
            assert_eq!(r.accepted as usize, n, "{r:?}");
            for (i, s) in samples.iter().enumerate() {
                let key = format!("{{__name__=\"load\", i=\"{i:03}\", job=\"compaction\"}}");
                exp.entry(key)
                    .or_default()
                    .extend(s.iter().map(|x| (x.t, x.v.to_bits())));
            }
        }
        exp.retain(|_, v| !v.is_empty());
    }
}

fn assert_same(db: &Db, exp: &Expected, when: &str) {
    let got = dump(db);
    assert_eq!(got.len(), exp.len(), "{when}: series count");
    for (k, v) in exp {
        let g = got.get(k).unwrap_or_else(|| panic!("{when}: {k} missing"));
        assert_eq!(g.len(), v.len(), "{when}: {k} sample count");
        assert!(g == v, "{when}: {k} samples differ");
    }
}

#[test]
fn compaction_writes_blocks_truncates_the_head_and_reads_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(150);
    let mut exp = Expected::new();
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        load.push(&db, i64::MIN, i64::MAX, &mut exp);
        // The key format in `push` is the Labels display format.
        assert_eq!(
            dump(&db).keys().collect::<Vec<_>>(),
            exp.keys().collect::<Vec<_>>()
        );
        let series_before = db.head().num_series();
        let files_before = db.head().chunk_mapper().files().len();
        let r = db.compact().unwrap();

        // The head spanned ~5h: blocks until it spans at most 1.5 ranges.
        assert!(r.blocks.len() >= 3, "{r:?}");
        let first = &r.blocks[0];
        assert_eq!(
            first.min_time, load.start,
            "the first block starts at the head's first sample"
        );
        for (k, b) in r.blocks.iter().enumerate() {
            assert_eq!(b.max_time % HOUR, 0, "block end aligned");
            if k > 0 {
                // As Prometheus: a block starts at the head's first sample, which after a
                // truncation is the first sample at or after the previous block's end.
                let prev = r.blocks[k - 1].max_time;
                let first_sample = exp
                    .values()
                    .filter_map(|v| v.iter().map(|x| x.0).find(|&t| t >= prev))
                    .min()
                    .unwrap();
                assert_eq!(b.min_time, first_sample, "block {k} start");
            }
            let expected_samples: usize = exp
                .values()
                .map(|v| {
                    v.iter()
                        .filter(|(t, _)| *t >= b.min_time && *t < b.max_time)
                        .count()
                })
                .sum();
            assert_eq!(
                b.stats.num_samples as usize, expected_samples,
                "block {k} samples"
            );
            assert!(dir.path().join(b.ulid.to_string()).join("index").exists());
        }
        let last_end = r.blocks.last().unwrap().max_time;
        assert!(db.head().min_time() >= last_end);
        assert!(db.head().max_time() - db.head().min_time() <= HOUR / 2 * 3);
        // Series 0 had data only in the first hour: gone from the head, still readable.
        assert_eq!(r.series_removed, 1);
        assert_eq!(db.head().num_series(), series_before - 1);
        assert!(r.chunks_removed > 0);
        assert!(
            db.head().chunk_mapper().files().len() < files_before,
            "chunks_head files of the compacted range are deleted"
        );
        let cp = r.checkpoint.unwrap_or_else(|| {
            panic!(
                "no checkpoint: segments {:?}, {r:?}",
                db.wal().segment_range()
            )
        });
        assert!(dir.path().join(format!("wal/checkpoint.{cp:08}")).is_dir());
        assert!(r.wal_segments_deleted > 0);
        assert!(!dir.path().join("wal/00000000").exists());
        assert_same(&db, &exp, "after compaction");
        assert_eq!(db.blocks().blocks.len(), r.blocks.len());

        // Nothing can enter a compacted range any more.
        let l = Load::labels(1);
        let pairs: Vec<(&str, &str)> = l.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let rep = db
            .append(&[AppendSeries {
                labels: &pairs,
                samples: &[Sample {
                    t: last_end - 1,
                    v: 1.0,
                }],
            }])
            .unwrap();
        assert_eq!(rep.rejected.out_of_bounds, 1);
        // A second call has nothing to do.
        assert!(db.compact().unwrap().blocks.is_empty());
    }
    // Restart: blocks opened, the WAL's copy of their samples skipped, nothing doubled.
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(db.open_report().blocks >= 3);
    assert_same(&db, &exp, "after restart");
    // Ranged reads cut at block boundaries see each sample once.
    let m = Matcher::new(MatchType::Equal, "job", "compaction").unwrap();
    let mid = db.blocks().blocks[1].meta().min_time;
    let got: usize = db
        .select(&[m], mid - 10 * STEP, mid + 10 * STEP)
        .unwrap()
        .iter()
        .map(|s| s.samples(mid - 10 * STEP, mid + 10 * STEP).unwrap().len())
        .sum();
    let want: usize = exp
        .values()
        .map(|v| {
            v.iter()
                .filter(|(t, _)| (mid - 10 * STEP..=mid + 10 * STEP).contains(t))
                .count()
        })
        .sum();
    assert_eq!(got, want);
}

#[test]
fn compaction_waits_for_queries_that_started_before_the_block_was_published() {
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(5);
    let mut exp = Expected::new();
    let db = Arc::new(Db::open(dir.path(), opts()).unwrap());
    load.push(&db, i64::MIN, i64::MAX, &mut exp);
    let m = Matcher::new(MatchType::Equal, "job", "compaction").unwrap();
    let mut it = db.select_iter(std::slice::from_ref(&m), i64::MIN, i64::MAX);
    let first = it.next().unwrap().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let (db, done) = (Arc::clone(&db), Arc::clone(&done));
        std::thread::spawn(move || {
            let r = db.compact().unwrap();
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    // The block gets written and published, then compaction waits for this query.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.blocks().blocks.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no block published");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !done.load(Ordering::SeqCst),
        "compaction truncated the head under a running query"
    );
    // The old query still reads everything from the head.
    let mut got = vec![first];
    got.extend(it.map(Result::unwrap));
    let n: usize = got
        .iter()
        .map(|s| s.samples(i64::MIN, i64::MAX).unwrap().len())
        .sum();
    assert_eq!(n, exp.values().map(Vec::len).sum::<usize>());
    let r = t.join().unwrap();
    assert!(done.load(Ordering::SeqCst));
    assert!(!r.blocks.is_empty());
    assert_same(&db, &exp, "after compaction");
}

#[test]
fn a_crash_at_any_compaction_step_loses_and_doubles_nothing() {
    // Every fault point of head compaction and WAL truncation (merges and retention have
    // their matrix in tests/housekeeping.rs).
    let steps = FaultPoint::ALL
        .into_iter()
        .filter(|p| matches!(p.step(), Step::HeadCompaction | Step::WalTruncation));
    let mut tried = 0;
    for step in steps {
        tried += 1;
        let dir = tempfile::tempdir().unwrap();
        // Enough WAL segments for the first run to write a checkpoint (WAL points).
        let load = Load::new(if step.step() == Step::WalTruncation {
            150
        } else {
            40
        });
        let mut exp = Expected::new();
        let fire = Arc::new(AtomicBool::new(true));
        let mut o = opts();
        {
            let fire = Arc::clone(&fire);
            // Head steps: fail the second time, so one block is complete. WAL steps run once
            // per compaction: fail the first time.
            let nth = if step.step() == Step::WalTruncation {
                0
            } else {
                1
            };
            let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            o.fault = Some(FaultFn(Arc::new(move |s: FaultPoint| {
                s == step
                    && fire.load(Ordering::SeqCst)
                    && seen.fetch_add(1, Ordering::SeqCst) == nth
            })));
        }
        {
            let db = Db::open(dir.path(), o).unwrap();
            load.push(&db, i64::MIN, load.end - HOUR, &mut exp);
            match db.compact() {
                Err(DbError::Injected(s)) => assert_eq!(s, step),
                other => panic!("{step}: expected the injected fault, got {other:?}"),
            }
            assert_same(&db, &exp, &format!("{step}: same process after the fault"));
            // A crash: no close (the WAL was written with sync=never; the OS keeps it).
            std::mem::forget(db);
        }
        // The lock is held by the forgotten Db's file descriptor in this process; a real crash
        // releases it. Remove it as the kernel would.
        let _ = std::fs::remove_file(dir.path().join("lock"));
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_same(&db, &exp, &format!("{step}: after restart"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        // Compaction completes from here, and the rest of the data goes in.
        db.compact().unwrap();
        load.push(&db, load.end - HOUR, i64::MAX, &mut exp);
        db.compact().unwrap();
        assert_same(&db, &exp, &format!("{step}: after a clean compaction"));
        drop(db);
        let db = Db::open(dir.path(), opts()).unwrap();
        assert_same(&db, &exp, &format!("{step}: after a second restart"));
        // Blocks never overlap.
        let set = db.blocks();
        for w in set.blocks.windows(2) {
            assert!(
                w[0].meta().max_time <= w[1].meta().min_time,
                "{step}: overlapping blocks"
            );
        }
    }
    assert!(tried >= 7, "only {tried} fault points");
}

#[test]
fn a_damaged_block_is_named_at_open_and_at_query_time_and_nothing_panics() {
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(10);
    let mut exp = Expected::new();
    let ulid = {
        let db = Db::open(dir.path(), opts()).unwrap();
        load.push(&db, i64::MIN, i64::MAX, &mut exp);
        let r = db.compact().unwrap();
        r.blocks[0].ulid.to_string()
    };
    // A flipped byte in chunk data: open succeeds (chunks are checked when read), the query
    // touching it fails naming the file and offset, other ranges still answer.
    let chunk_file = dir.path().join(&ulid).join("chunks/000001");
    let mut b = std::fs::read(&chunk_file).unwrap();
    b[20] ^= 0xff;
    std::fs::write(&chunk_file, &b).unwrap();
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        let all = Matcher::new(MatchType::Equal, "job", "compaction").unwrap();
        let meta = db.blocks().blocks[0].meta().clone();
        let err = db
            .select(std::slice::from_ref(&all), meta.min_time, meta.max_time - 1)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chunks/000001") && err.contains("offset"),
            "{err}"
        );
        let later = db
            .select(std::slice::from_ref(&all), meta.max_time + HOUR, i64::MAX)
            .unwrap();
        assert!(!later.is_empty());
    }
    // A damaged index: open refuses, naming the block, with what to do.
    let index = dir.path().join(&ulid).join("index");
    let mut b = std::fs::read(&index).unwrap();
    let n = b.len();
    b[n - 10] ^= 0xff; // inside the table of contents
    std::fs::write(&index, &b).unwrap();
    let err = match Db::open(dir.path(), opts()) {
        Ok(_) => panic!("a block with a damaged index opened"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&ulid) && err.contains("move the block"),
        "{err}"
    );
}

#[test]
fn a_failed_wal_checkpoint_is_retried_by_the_next_run_without_a_new_block() {
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(150);
    let mut exp = Expected::new();
    let mut o = opts();
    let first = Arc::new(AtomicBool::new(true));
    {
        let first = Arc::clone(&first);
        o.fault = Some(FaultFn(Arc::new(move |s: FaultPoint| {
            s == FaultPoint::Checkpoint && first.swap(false, Ordering::SeqCst)
        })));
    }
    let db = Db::open(dir.path(), o).unwrap();
    load.push(&db, i64::MIN, i64::MAX, &mut exp);
    match db.compact() {
        Err(DbError::Injected(s)) => assert_eq!(s, FaultPoint::Checkpoint),
        other => panic!("expected the injected checkpoint failure, got {other:?}"),
    }
    // Nothing new to compact, but the checkpoint is owed.
    let r = db.compact().unwrap();
    assert!(r.blocks.is_empty(), "{r:?}");
    assert!(
        r.checkpoint.is_some(),
        "the failed checkpoint was not retried: {r:?}"
    );
    assert!(r.wal_segments_deleted > 0);
    assert_same(&db, &exp, "after the retried checkpoint");
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_same(&db, &exp, "after restart");
}

#[test]
fn a_run_that_failed_after_publishing_a_block_does_not_write_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(20);
    let mut exp = Expected::new();
    let mut o = opts();
    let first = Arc::new(AtomicBool::new(true));
    {
        let first = Arc::clone(&first);
        o.fault = Some(FaultFn(Arc::new(move |s: FaultPoint| {
            s == FaultPoint::TruncateHead && first.swap(false, Ordering::SeqCst)
        })));
    }
    let db = Db::open(dir.path(), o).unwrap();
    load.push(&db, i64::MIN, i64::MAX, &mut exp);
    assert!(matches!(db.compact(), Err(DbError::Injected(_))));
    assert_eq!(db.blocks().blocks.len(), 1);
    db.compact().unwrap();
    let set = db.blocks();
    for w in set.blocks.windows(2) {
        assert!(
            w[0].meta().max_time <= w[1].meta().min_time,
            "a range was written twice"
        );
    }
    assert_same(&db, &exp, "after the retried compaction");
}

#[test]
fn compaction_keeps_going_after_the_block_range_shrinks() {
    // Chunks cut on a 2h range straddle the 1h boundaries after a restart with 1h blocks.
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(10);
    let mut exp = Expected::new();
    let mut o2 = opts();
    o2.block_range_ms = 2 * HOUR;
    {
        let db = Db::open(dir.path(), o2).unwrap();
        load.push(&db, i64::MIN, load.start + 170 * STEP, &mut exp);
    }
    let db = Db::open(dir.path(), opts()).unwrap();
    db.compact().unwrap();
    let mut from = load.start + 170 * STEP;
    while from <= load.end {
        let to = from + HOUR;
        load.push(&db, from, to, &mut exp);
        db.compact().unwrap();
        from = to;
    }
    let span = db.head().max_time() - db.head().min_time();
    assert!(
        span <= HOUR / 2 * 3,
        "the head stopped being compacted: it spans {span} ms, blocks {:?}",
        db.blocks()
            .blocks
            .iter()
            .map(|b| (b.meta().min_time, b.meta().max_time))
            .collect::<Vec<_>>()
    );
    assert_same(&db, &exp, "after compactions with the smaller range");
}

#[test]
fn a_range_whose_samples_were_all_deleted_leaves_no_block_directory() {
    let dir = tempfile::tempdir().unwrap();
    let load = Load::new(5);
    let mut exp = Expected::new();
    let db = Db::open(dir.path(), opts()).unwrap();
    load.push(&db, i64::MIN, i64::MAX, &mut exp);
    let all = Matcher::new(MatchType::Equal, "job", "compaction").unwrap();
    db.delete(&[all], i64::MIN, load.start + 2 * HOUR).unwrap();
    db.compact().unwrap();
    let on_disk = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("meta.json").exists())
        .count();
    assert_eq!(
        on_disk,
        db.blocks().blocks.len(),
        "an unpublished block directory was left"
    );
}
