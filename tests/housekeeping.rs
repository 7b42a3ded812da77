//! Leveled compaction, retention and deletion through the public `Db` API and the admin HTTP
//! API: days of data with a small block range, merged as planned, retention removing exactly
//! the expected blocks, deletions vanishing at once and for good, a stop at every step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::model::{MatchType, Matcher};
use cairn::server::ServerConfig;
use cairn::tsdb::db::FaultFn;
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{AppendSeries, Db, DbError, Options, Sample};
use cairn::tsdb::{FaultPoint, Step};
use common::dump;
use common::server::TestServer;

const HOUR: i64 = 3_600_000;
const STEP: i64 = 5 * 60_000;
const SERIES: usize = 12;

type Expected = BTreeMap<String, Vec<(i64, u64)>>;

fn opts() -> Options {
    Options {
        block_range_ms: HOUR,
        // Ranges 1h, 3h, 9h.
        max_block_duration_ms: Some(9 * HOUR),
        retention_ms: 0,
        wal: WalOptions {
            sync: SyncPolicy::Never,
            segment_size: 32 * 1024,
            ..WalOptions::default()
        },
        head_chunk_file_size: 4096,
        ..Options::default()
    }
}

fn key(i: usize) -> String {
    format!("{{__name__=\"hk\", i=\"{i:02}\", job=\"{}\"}}", job(i))
}

fn job(i: usize) -> &'static str {
    if i.is_multiple_of(2) {
        "even"
    } else {
        "odd"
    }
}

fn value(i: usize, t: i64) -> f64 {
    (t / STEP) as f64 * 0.25 + i as f64
}

/// Push `hours` of data ending a minute ago, every 5 minutes, in time order.
fn push(db: &Db, hours: i64, exp: &mut Expected) -> (i64, i64) {
    let end = cairn::tsdb::head::now_ms() - 60_000;
    let start = (end - hours * HOUR) / STEP * STEP + 7;
    let ids: Vec<String> = (0..SERIES).map(|i| format!("{i:02}")).collect();
    let mut t = start;
    while t <= end {
        let batch_end = (t + 6 * STEP).min(end + 1);
        let times: Vec<i64> = (0..)
            .map(|k| t + k * STEP)
            .take_while(|&x| x < batch_end)
            .collect();
        let samples: Vec<Vec<Sample>> = (0..SERIES)
            .map(|i| {
                times
                    .iter()
                    .map(|&x| Sample {
                        t: x,
                        v: value(i, x),
                    })
                    .collect()
            })
            .collect();
        let labels: Vec<[(&str, &str); 3]> = (0..SERIES)
            .map(|i| [("__name__", "hk"), ("i", ids[i].as_str()), ("job", job(i))])
            .collect();
        let req: Vec<AppendSeries<'_>> = labels
            .iter()
            .zip(&samples)
            .map(|(l, s)| AppendSeries {
                labels: l,
                samples: s,
            })
            .collect();
        let r = db.append(&req).unwrap();
        assert_eq!(r.accepted as usize, SERIES * times.len(), "{r:?}");
        for (i, s) in samples.iter().enumerate() {
            exp.entry(key(i))
                .or_default()
                .extend(s.iter().map(|x| (x.t, x.v.to_bits())));
        }
        t = times.last().unwrap() + STEP;
    }
    (start, end)
}

fn assert_same(db: &Db, exp: &Expected, when: &str) {
    let got = dump(db);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        exp.keys().collect::<Vec<_>>(),
        "{when}: series"
    );
    for (k, v) in exp {
        let g = &got[k];
        assert_eq!(g.len(), v.len(), "{when}: {k} sample count");
        assert!(g == v, "{when}: {k} samples differ");
    }
}

/// What reads must return once blocks before the oldest kept one are gone: the samples at or
/// after its start.
fn kept_from_oldest_block(db: &Db, exp: &Expected) -> (i64, Expected) {
    let oldest = db
        .blocks()
        .blocks
        .iter()
        .map(|b| b.meta().min_time)
        .min()
        .unwrap();
    let kept = exp
        .iter()
        .map(|(k, v)| {
            let v: Vec<_> = v.iter().copied().filter(|(t, _)| *t >= oldest).collect();
            (k.clone(), v)
        })
        .collect();
    (oldest, kept)
}

fn levels(db: &Db) -> Vec<(i64, i64, u32)> {
    db.blocks()
        .blocks
        .iter()
        .map(|b| {
            (
                b.meta().min_time,
                b.meta().max_time,
                b.meta().compaction.level,
            )
        })
        .collect()
}

#[test]
fn leveled_compaction_merges_blocks_and_every_sample_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = Expected::new();
    let db = Db::open(dir.path(), opts()).unwrap();
    push(&db, 30, &mut exp);
    let r = db.compact().unwrap();
    assert!(r.blocks.len() >= 27, "head blocks: {}", r.blocks.len());
    assert!(!r.merged.is_empty(), "nothing merged: {:?}", levels(&db));
    let set = db.blocks();
    // Far fewer blocks than head blocks written; no overlaps; the newest head block is left
    // alone (a backup window, as Prometheus does).
    assert!(set.blocks.len() < r.blocks.len() / 2, "{:?}", levels(&db));
    for w in set.blocks.windows(2) {
        assert!(
            w[0].meta().max_time <= w[1].meta().min_time,
            "overlap: {:?}",
            levels(&db)
        );
    }
    let mut saw_level3 = false;
    for b in &set.blocks {
        let m = b.meta();
        let span = m.max_time - m.min_time;
        assert!(
            span <= 9 * HOUR,
            "block over the max duration: {:?}",
            levels(&db)
        );
        if m.compaction.level > 1 {
            assert!(!m.compaction.parents.is_empty());
            assert!(m.compaction.sources.len() >= m.compaction.parents.len());
            let mut sorted = m.compaction.sources.clone();
            sorted.sort();
            assert_eq!(sorted, m.compaction.sources, "sources sorted");
            // Parents are gone from disk.
            for p in &m.compaction.parents {
                assert!(!dir.path().join(p.ulid.to_string()).exists());
            }
        }
        saw_level3 |= m.compaction.level >= 3;
    }
    assert!(
        saw_level3,
        "30h of 1h blocks must reach 9h blocks: {:?}",
        levels(&db)
    );
    assert_same(&db, &exp, "after leveled compaction");
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_same(&db, &exp, "after restart");
    // A further run has nothing to merge.
    assert!(db.compact().unwrap().merged.is_empty());
}

#[test]
fn retention_by_time_and_size_removes_exactly_the_oldest_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = Expected::new();
    {
        let db = Db::open(dir.path(), opts()).unwrap();
        push(&db, 30, &mut exp);
        db.compact().unwrap();
    }
    // Time: keep 10h behind the newest block's end.
    let mut o = opts();
    o.retention_ms = 10 * HOUR;
    let db = Db::open(dir.path(), o).unwrap();
    let before: Vec<_> = db
        .blocks()
        .blocks
        .iter()
        .map(|b| b.meta().clone())
        .collect();
    let newest = before.iter().map(|m| m.max_time).max().unwrap();
    let r = db.compact().unwrap();
    let gone: Vec<_> = r.retention.iter().map(|(u, _)| *u).collect();
    let want: Vec<_> = before
        .iter()
        .filter(|m| newest - m.max_time > 10 * HOUR)
        .map(|m| m.ulid)
        .collect();
    assert!(!want.is_empty());
    let mut g = gone.clone();
    g.sort();
    let mut w = want.clone();
    w.sort();
    assert_eq!(g, w, "time retention");
    assert!(r.retention.iter().all(|(_, why)| why.as_str() == "time"));
    for u in &gone {
        assert!(!dir.path().join(u.to_string()).exists());
    }
    // What stays reads back exactly: samples at or after the oldest kept block's start.
    let (_, kept) = kept_from_oldest_block(&db, &exp);
    assert_same(&db, &kept, "after time retention");
    drop(db);

    // Size: a budget of the WAL and head plus about half of the blocks.
    let mut o = opts();
    let db = Db::open(dir.path(), o.clone()).unwrap();
    let blocks: u64 = db.blocks().blocks.iter().map(|b| b.size()).sum();
    let budget = db.wal_and_head_bytes() + blocks / 2;
    drop(db);
    o.retention_bytes = budget;
    let db = Db::open(dir.path(), o).unwrap();
    // The blocks oldest first (retention's order: by max time, then min time, then ULID).
    let mut before: Vec<_> = db
        .blocks()
        .blocks
        .iter()
        .map(|b| {
            let m = b.meta();
            ((m.max_time, m.min_time, m.ulid), b.size())
        })
        .collect();
    before.sort();
    let r = db.compact().unwrap();
    // Retention saw exactly these blocks: compaction made and merged none.
    assert!(r.blocks.is_empty() && r.merged.is_empty(), "{r:?}");
    assert!(r.retention.iter().all(|(_, w)| w.as_str() == "size"));
    let head = db.wal_and_head_bytes();
    let left = |from: usize| head + before[from..].iter().map(|(_, n)| n).sum::<u64>();
    // The deleted set is a prefix of the oldest blocks ...
    let n = r.retention.len();
    assert!(n > 0 && n < before.len(), "{n} of {} deleted", before.len());
    let mut gone: Vec<_> = r.retention.iter().map(|(u, _)| *u).collect();
    gone.sort();
    let mut oldest: Vec<_> = before[..n].iter().map(|((_, _, u), _)| *u).collect();
    oldest.sort();
    assert_eq!(gone, oldest, "not the oldest {n} blocks");
    // ... large enough to get within the budget, and minimal: keeping its newest block would
    // have stayed over it.
    assert!(left(n) <= budget, "{} > {budget} after deleting", left(n));
    assert!(
        left(n - 1) > budget,
        "one block fewer would have done: {} <= {budget}",
        left(n - 1)
    );
    let mut kept: Vec<_> = db.blocks().blocks.iter().map(|b| b.meta().ulid).collect();
    kept.sort();
    let mut want: Vec<_> = before[n..].iter().map(|((_, _, u), _)| *u).collect();
    want.sort();
    assert_eq!(kept, want);
    for u in &gone {
        assert!(!dir.path().join(u.to_string()).exists());
    }
}

fn matcher(name: &str, value: &str) -> Matcher {
    Matcher::new(MatchType::Equal, name, value).unwrap()
}

#[test]
fn deleted_samples_vanish_at_once_stay_gone_and_clean_tombstones_rewrites_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = Expected::new();
    let db = Db::open(dir.path(), opts()).unwrap();
    let (start, end) = push(&db, 8, &mut exp);
    db.compact().unwrap();
    assert!(!db.blocks().blocks.is_empty());
    // Delete the odd job across blocks and head, in the middle of the range.
    // Up to the end, so the head (the newest ~1h) always has a part too.
    let (a, b) = (start + 2 * HOUR, end);
    let rep = db.delete(&[matcher("job", "odd")], a, b).unwrap();
    assert!(rep.head_series > 0 && rep.block_series > 0, "{rep:?}");
    for (k, v) in exp.iter_mut() {
        if k.contains("job=\"odd\"") {
            v.retain(|(t, _)| *t < a || *t > b);
        }
    }
    assert_same(&db, &exp, "right after delete");
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_same(&db, &exp, "after restart");
    let had: Vec<_> = db
        .blocks()
        .blocks
        .iter()
        .filter(|b| !b.tombstones().is_empty())
        .map(|b| b.meta().ulid)
        .collect();
    assert!(!had.is_empty());
    let cleaned = db.clean_tombstones().unwrap();
    assert_eq!(cleaned.len(), had.len());
    assert!(db.blocks().blocks.iter().all(|b| b.tombstones().is_empty()));
    for u in &had {
        assert!(
            !dir.path().join(u.to_string()).exists(),
            "old block {u} still there"
        );
    }
    assert_same(&db, &exp, "after clean_tombstones");
    // The head's tombstones survive a restart (WAL record).
    drop(db);
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_same(&db, &exp, "after restart and cleaning");
}

#[test]
fn a_stop_at_any_merge_or_retention_step_loses_and_doubles_nothing() {
    // Every fault point of merges and retention (head compaction and WAL truncation have
    // their matrix in tests/compaction.rs).
    for step in FaultPoint::ALL
        .into_iter()
        .filter(|p| matches!(p.step(), Step::Merge | Step::Retention))
    {
        let dir = tempfile::tempdir().unwrap();
        let mut exp = Expected::new();
        {
            let db = Db::open(dir.path(), opts()).unwrap();
            push(&db, 12, &mut exp);
        }
        let step_opts = || {
            let mut o = opts();
            if step == FaultPoint::RetentionDelete {
                // No merging, so whole 1h blocks fall out of a 4h retention.
                o.max_block_duration_ms = Some(HOUR);
                o.retention_ms = 4 * HOUR;
            }
            o
        };
        let mut o = step_opts();
        let fired = Arc::new(AtomicBool::new(false));
        {
            let fired = Arc::clone(&fired);
            let n = Arc::new(AtomicUsize::new(0));
            o.fault = Some(FaultFn(Arc::new(move |s: FaultPoint| {
                let hit = s == step && n.fetch_add(1, Ordering::SeqCst) == 0;
                if hit {
                    fired.store(true, Ordering::SeqCst);
                }
                hit
            })));
        }
        {
            let db = Db::open(dir.path(), o).unwrap();
            match db.compact() {
                Err(DbError::Injected(s)) => assert_eq!(s, step),
                other => panic!("{step}: expected the injected fault, got {other:?}"),
            }
            std::mem::forget(db);
        }
        assert!(fired.load(Ordering::SeqCst));
        let _ = std::fs::remove_file(dir.path().join("lock"));
        let db = Db::open(dir.path(), step_opts()).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{step}: {leftovers:?}");
        for w in db.blocks().blocks.windows(2) {
            assert!(
                w[0].meta().max_time <= w[1].meta().min_time,
                "{step}: overlapping blocks"
            );
        }
        if step == FaultPoint::RetentionDelete {
            // Retention may or may not have finished; whatever stays is exact.
            db.compact().unwrap();
            let (_, kept) = kept_from_oldest_block(&db, &exp);
            assert_same(&db, &kept, step.as_str());
        } else {
            assert_same(&db, &exp, &format!("{step}: after restart"));
            db.compact().unwrap();
            assert_same(&db, &exp, &format!("{step}: after a clean compaction"));
        }
    }
}

#[test]
fn admin_api_needs_the_flag_and_speaks_prometheus() {
    let mut o = opts();
    o.wal.segment_size = 128 * 1024 * 1024;
    // Without the flag: 403 with a clear message.
    let off = TestServer::start_with(ServerConfig::default(), o.clone());
    for path in [
        "/api/v1/admin/tsdb/delete_series?match[]=up",
        "/api/v1/admin/tsdb/clean_tombstones",
        "/api/v1/admin/tsdb/snapshot",
    ] {
        let r = off.client().post(path, &[], b"").unwrap();
        assert_eq!(r.status, 403, "{path}");
        assert!(
            r.text().contains("--web.enable-admin-api"),
            "{path}: {}",
            r.text()
        );
    }
    drop(off);

    let cfg = ServerConfig {
        enable_admin_api: true,
        ..ServerConfig::default()
    };
    let srv = TestServer::start_with(cfg, o);
    let mut exp = Expected::new();
    push(&srv.db, 3, &mut exp);
    let mut c = srv.client();
    // Bad requests: 400 with Prometheus's JSON envelope.
    for (path, needle) in [
        (
            "/api/v1/admin/tsdb/delete_series",
            "no match[] parameter provided",
        ),
        (
            "/api/v1/admin/tsdb/delete_series?match[]=up%5B5m%5D",
            "parse error",
        ),
        (
            "/api/v1/admin/tsdb/delete_series?match[]=%7Bjob%3D~%22.%2A%22%7D",
            "non-empty matcher",
        ),
        (
            "/api/v1/admin/tsdb/delete_series?match[]=up&start=yesterday",
            "start",
        ),
        ("/api/v1/admin/tsdb/snapshot?skip_head=maybe", "skip_head"),
    ] {
        let r = c.post(path, &[], b"").unwrap();
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["errorType"], "bad_data");
        assert!(v["error"].as_str().unwrap().contains(needle), "{path}: {v}");
    }
    // Delete the even job everywhere (PUT, form body), then check reads at once.
    let r = c
        .request(
            "PUT",
            "/api/v1/admin/tsdb/delete_series",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"match[]=hk%7Bjob%3D%22even%22%7D",
        )
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    exp.retain(|k, _| !k.contains("job=\"even\""));
    assert_same(&srv.db, &exp, "after delete_series");
    let r = c
        .post("/api/v1/admin/tsdb/clean_tombstones", &[], b"")
        .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    // Snapshot: a data directory holding everything (the head written as a block).
    let r = c.post("/api/v1/admin/tsdb/snapshot", &[], b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!(v["status"], "success");
    let name = v["data"]["name"].as_str().unwrap().to_string();
    let snap = srv.dir.path().join("snapshots").join(&name);
    assert!(snap.is_dir());
    let copy = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&snap).unwrap() {
        let e = e.unwrap();
        let to = copy.path().join(e.file_name());
        std::fs::create_dir_all(to.join("chunks")).unwrap();
        for f in ["index", "meta.json", "tombstones"] {
            std::fs::copy(e.path().join(f), to.join(f)).unwrap();
        }
        for c in std::fs::read_dir(e.path().join("chunks")).unwrap() {
            let c = c.unwrap();
            std::fs::copy(c.path(), to.join("chunks").join(c.file_name())).unwrap();
        }
    }
    let snapdb = Db::open(copy.path(), opts()).unwrap();
    assert_same(&snapdb, &exp, "snapshot");
}

/// A merge that fails for good (a damaged chunk in a parent) marks its blocks
/// `compaction.failed` in their meta.json, as Prometheus does, and the planner moves on: the
/// next run does not try the same merge again. Retention runs in the same run all the same.
#[test]
fn a_block_with_a_damaged_chunk_is_marked_failed_and_skipped_while_retention_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = Expected::new();
    // 1h blocks only, first: nothing merges yet.
    let one_hour = || Options {
        max_block_duration_ms: Some(HOUR),
        ..opts()
    };
    {
        let db = Db::open(dir.path(), one_hour()).unwrap();
        push(&db, 8, &mut exp);
        db.compact().unwrap();
        assert!(db.blocks().blocks.len() >= 6, "{:?}", db.blocks());
    }
    // Damage one chunk byte (past the segment header) in every block: any merge fails.
    let blocks = block_dirs(dir.path());
    for b in &blocks {
        let path = dir.path().join(b).join("chunks/000001");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
    }
    // Now 3h merges are planned, and a 4h retention removes the oldest blocks.
    let merging = || Options {
        max_block_duration_ms: Some(3 * HOUR),
        retention_ms: 4 * HOUR,
        ..opts()
    };
    let db = Db::open(dir.path(), merging()).unwrap();
    let r = db.housekeep();
    let merge_errors: Vec<String> = r
        .errors
        .iter()
        .filter(|e| e.step == Step::Merge)
        .map(|e| e.to_string())
        .collect();
    assert!(!merge_errors.is_empty(), "no merge failed: {r:?}");
    assert!(
        merge_errors.iter().all(|e| e.contains("chunks/000001")),
        "{merge_errors:?}"
    );
    assert!(
        r.errors.iter().all(|e| e.step == Step::Merge),
        "only merges fail: {r:?}"
    );
    assert!(r.merged.is_empty(), "{r:?}");
    assert!(!r.marked_failed.is_empty());
    // Retention ran in the same run.
    assert!(!r.retention.is_empty(), "retention did not run: {r:?}");
    for (ulid, _) in &r.retention {
        assert!(!dir.path().join(ulid.to_string()).exists(), "{ulid} kept");
    }
    // The marks are on disk, in Prometheus's field, for the blocks still there.
    for b in db.blocks().blocks.iter() {
        let meta = std::fs::read_to_string(b.dir().join("meta.json")).unwrap();
        let marked = r.marked_failed.contains(&b.meta().ulid);
        assert_eq!(b.meta().compaction.failed, marked, "{meta}");
        assert_eq!(meta.contains("\"failed\": true"), marked, "{meta}");
    }
    // The next run does not try the failed merges again.
    let again = db.housekeep();
    assert!(again.errors.is_empty(), "{again:?}");
    assert!(again.merged.is_empty(), "{again:?}");
    // And a restart keeps the marks.
    let marked: Vec<_> = db
        .blocks()
        .blocks
        .iter()
        .filter(|b| b.meta().compaction.failed)
        .map(|b| b.meta().ulid)
        .collect();
    assert!(!marked.is_empty());
    drop(db);
    let db = Db::open(dir.path(), merging()).unwrap();
    assert!(db.housekeep().errors.is_empty());
    for b in db.blocks().blocks.iter() {
        assert_eq!(b.meta().compaction.failed, marked.contains(&b.meta().ulid));
    }
}

/// Block directories (ULID names) in `dir`.
fn block_dirs(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 26 && dir.join(n).join("meta.json").exists())
        .collect();
    out.sort();
    out
}
