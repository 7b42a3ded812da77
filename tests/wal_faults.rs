//! I/O fault injection through the WAL's file seam: short writes, EIO and failed fsyncs must
//! fail the append (nothing acknowledged, nothing applied), poison the writer until a fresh
//! segment can be opened, and lose nothing acknowledged across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::tsdb::wal::{PoisonCause, SyncPolicy, WalError, WalOptions};
use cairn::tsdb::{AppendError, Db, Options, Sample};
use common::faults::{Faults, FaultyFs};
use common::{append, dump, label_text};

fn open(dir: &Path, faults: &Arc<Faults>, sync: SyncPolicy) -> Db {
    let opts = Options {
        wal: WalOptions {
            sync,
            ..WalOptions::default()
        },
        fs: Arc::new(FaultyFs {
            faults: Arc::clone(faults),
        }),
        ..Options::default()
    };
    Db::open(dir, opts).unwrap()
}

fn batch(first_series: usize, n: usize, t: i64) -> Vec<(usize, Vec<Sample>)> {
    (first_series..first_series + n)
        .map(|i| {
            (
                i,
                vec![Sample {
                    t,
                    v: t as f64 + i as f64,
                }],
            )
        })
        .collect()
}

fn now() -> i64 {
    cairn::tsdb::head::now_ms()
}

fn assert_poisoned(r: Result<cairn::tsdb::AppendReport, AppendError>, cause: PoisonCause) {
    match r {
        Err(AppendError::Wal(WalError::Poisoned { cause: c, .. })) => assert_eq!(c, cause),
        other => panic!("expected a poisoned WAL ({cause:?}), got {other:?}"),
    }
}

fn run_fault_case(short: bool, fail_sync: bool, policy: SyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let t0 = now() - 60_000;
    let expected = {
        let db = open(dir.path(), &faults, policy);
        // A: acknowledged before the fault.
        let a = append(&db, &batch(0, 50, t0)).unwrap();
        assert_eq!(a.accepted, 50);

        // B: the disk fails. Not acknowledged, not applied, writer poisoned.
        faults.short.store(short, Ordering::SeqCst);
        if fail_sync {
            faults.armed_syncs.store(true, Ordering::SeqCst);
        } else {
            faults.armed_writes.store(true, Ordering::SeqCst);
        }
        faults.armed_creates.store(true, Ordering::SeqCst);
        let cause = if fail_sync {
            PoisonCause::SyncFailed
        } else {
            PoisonCause::WriteFailed
        };
        assert_poisoned(append(&db, &batch(25, 50, t0 + 1000)), cause.clone());
        assert!(db.wal().is_poisoned());
        let seen = dump(&db);
        assert_eq!(seen.len(), 50, "B's new series carry no samples");
        for samples in seen.values() {
            assert_eq!(samples.len(), 1, "B's samples must not be applied");
        }

        // C: while the disk stays broken, appends keep failing (a fresh segment cannot open).
        assert_poisoned(append(&db, &batch(0, 10, t0 + 2000)), cause);
        if fail_sync {
            assert_eq!(
                faults.syncs_failed.load(Ordering::SeqCst),
                1,
                "a failed fsync is never retried"
            );
        }

        // D: the disk is back; once the retry interval (1 s) has passed a fresh segment opens
        // and writes resume. Until then every append still fails as poisoned, applying nothing
        // (the restart below finds none of these attempts).
        faults.armed_writes.store(false, Ordering::SeqCst);
        faults.armed_syncs.store(false, Ordering::SeqCst);
        faults.armed_creates.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let d = loop {
            match append(&db, &batch(25, 50, t0 + 3000)) {
                Ok(d) => break d,
                Err(AppendError::Wal(WalError::Poisoned { .. })) => {}
                Err(e) => panic!("expected a poisoned WAL until it heals, got {e:?}"),
            }
            assert!(db.wal().is_poisoned());
            assert!(
                Instant::now() < deadline,
                "the WAL did not heal after the disk came back"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(d.accepted, 50);
        assert!(!db.wal().is_poisoned());
        db.close().unwrap();
        dump(&db)
    };
    // Restart with a healthy file system: exactly A and D, nothing of B or C.
    let db = open(dir.path(), &Arc::new(Faults::default()), policy);
    let got = dump(&db);
    assert_eq!(got, expected);
    for i in 0..75 {
        let want: Vec<i64> = match i {
            0..=24 => vec![t0],
            25..=49 => vec![t0, t0 + 3000],
            _ => vec![t0 + 3000],
        };
        let ts: Vec<i64> = got[&label_text(i)].iter().map(|s| s.0).collect();
        assert_eq!(ts, want, "series {i}");
    }
    assert!(
        db.open_report().wal.repaired.is_none(),
        "recovery cut the bad tail: replay is clean"
    );
}

#[test]
fn short_write_fails_the_append_poisons_and_restart_keeps_what_was_acknowledged() {
    run_fault_case(true, false, SyncPolicy::Always);
}

#[test]
fn eio_on_write_fails_the_append_and_poisons() {
    run_fault_case(false, false, SyncPolicy::Always);
}

#[test]
fn failed_fsync_fails_the_append_is_never_retried_and_restart_keeps_what_was_acknowledged() {
    run_fault_case(false, true, SyncPolicy::Always);
}

#[test]
fn short_write_with_sync_never_still_leaves_a_clean_wal() {
    run_fault_case(true, false, SyncPolicy::Never);
}

#[test]
fn concurrent_appenders_share_fsyncs_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(Faults::default());
    let db = Arc::new(open(dir.path(), &faults, SyncPolicy::Always));
    let t0 = now() - 60_000;
    let per_thread = 200;
    let threads: Vec<_> = (0..8)
        .map(|th| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                for k in 0..per_thread {
                    let r = append(&db, &batch(th * 10, 10, t0 + k as i64)).unwrap();
                    assert_eq!(r.accepted, 10);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let fsyncs = db.wal().stats().fsyncs.load(Ordering::Relaxed);
    let writes = 8 * per_thread as u64;
    assert!(
        fsyncs < writes,
        "8 concurrent writers must share fsyncs: {fsyncs} fsyncs for {writes} writes"
    );
    assert_eq!(
        dump(&db).values().map(Vec::len).sum::<usize>(),
        8 * 10 * per_thread
    );
    eprintln!("group commit: {writes} acknowledged writes shared {fsyncs} fsyncs");
}
