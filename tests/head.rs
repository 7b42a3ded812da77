//! Engine behaviour through the public `Db` API: Prometheus's append semantics, reads, chunk
//! cutting, recovery, and head-chunk file corruption.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::sync::Arc;

use cairn::model::{MatchType, Matcher};
use cairn::tsdb::head::{InvalidLabels, RejectReason};
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{AppendSeries, Db, Options, Sample};
use common::{append, dump, label_text, series_labels, value};

const HOUR: i64 = 3_600_000;

fn opts() -> Options {
    Options {
        wal: WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        },
        ..Options::default()
    }
}

fn now() -> i64 {
    cairn::tsdb::head::now_ms()
}

fn s(t: i64, v: f64) -> Sample {
    Sample { t, v }
}

fn append_one(db: &Db, labels: &[(&str, &str)], samples: &[Sample]) -> cairn::tsdb::AppendReport {
    db.append(&[AppendSeries { labels, samples }]).unwrap()
}

#[test]
fn append_semantics_follow_prometheus_and_valid_samples_of_a_batch_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let t = now() - HOUR;
    let before = {
        let db = Db::open(dir.path(), opts()).unwrap();
        let ls = [("__name__", "up"), ("job", "a")];
        let r = append_one(&db, &ls, &[s(t, 1.0), s(t + 1000, 2.0)]);
        assert_eq!((r.accepted, r.new_series), (2, 1));

        // Exact duplicate of the newest sample: accepted as a no-op (retries are idempotent).
        let r = append_one(&db, &ls, &[s(t + 1000, 2.0)]);
        assert_eq!(
            (r.accepted, r.duplicates_ignored, r.rejected.total()),
            (0, 1, 0)
        );
        // Same timestamp, other value: duplicate error. NaN payloads compare by bits.
        let r = append_one(&db, &ls, &[s(t + 1000, 2.5)]);
        assert_eq!(r.rejected.duplicate, 1);
        assert_eq!(r.first_rejection.unwrap().reason, RejectReason::Duplicate);
        // Older than the newest: out of order.
        let r = append_one(&db, &ls, &[s(t + 500, 2.0)]);
        assert_eq!(r.rejected.out_of_order, 1);
        // Older than head max time − half the block range: out of bounds, even for a new series.
        let r = append_one(&db, &[("__name__", "new")], &[s(t - 2 * HOUR, 1.0)]);
        assert_eq!(r.rejected.out_of_bounds, 1);
        // Too far in the future: rejected, and the head's max time does not move.
        let max_before = db.head().max_time();
        let r = append_one(&db, &ls, &[s(now() + 11 * 60_000, 9.0)]);
        assert_eq!(r.rejected.too_far_in_future, 1);
        assert_eq!(db.head().max_time(), max_before);
        // A mixed batch: valid samples are stored, invalid ones counted per reason.
        let bad_sorted = [("job", "a"), ("__name__", "x")];
        let dup_name = [("a", "1"), ("a", "2")];
        let empty_value = [("a", "")];
        let ok2 = [("__name__", "up"), ("job", "b")];
        let special = [
            s(t + 2000, f64::NAN),
            s(t + 3000, f64::from_bits(0x7ff0_0000_0000_0002)),
            s(t + 4000, f64::NEG_INFINITY),
            s(t + 5000, -0.0),
        ];
        let batch = [
            AppendSeries {
                labels: &bad_sorted,
                samples: &[s(t, 1.0)],
            },
            AppendSeries {
                labels: &ls,
                samples: &[s(t + 2000, 3.0), s(t + 1500, 0.0), s(t + 3000, 4.0)],
            },
            AppendSeries {
                labels: &dup_name,
                samples: &[s(t, 1.0)],
            },
            AppendSeries {
                labels: &[],
                samples: &[s(t, 1.0), s(t + 1, 1.0)],
            },
            AppendSeries {
                labels: &empty_value,
                samples: &[s(t, 1.0)],
            },
            AppendSeries {
                labels: &ok2,
                samples: &special,
            },
            // The same series twice in one batch: validated in batch order.
            AppendSeries {
                labels: &ls,
                samples: &[s(t + 3000, 4.0), s(t + 4000, 5.0)],
            },
        ];
        let r = db.append(&batch).unwrap();
        assert_eq!(r.accepted, 2 + 4 + 1);
        assert_eq!(r.duplicates_ignored, 1);
        assert_eq!(r.rejected.out_of_order, 1);
        assert_eq!(r.rejected.invalid_labels, 5);
        assert_eq!(
            r.first_rejection.unwrap().reason,
            RejectReason::InvalidLabels(InvalidLabels::Unsorted)
        );
        assert_eq!(r.first_rejection.unwrap().series, 0);
        let d = dump(&db);
        let up_a: Vec<i64> = d["{__name__=\"up\", job=\"a\"}"]
            .iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(up_a, vec![t, t + 1000, t + 2000, t + 3000, t + 4000]);
        let up_b: Vec<u64> = d["{__name__=\"up\", job=\"b\"}"]
            .iter()
            .map(|x| x.1)
            .collect();
        let want: Vec<u64> = special.iter().map(|x| x.v.to_bits()).collect();
        assert_eq!(up_b, want, "special floats are stored bit-exact");
        // Within 10 minutes of now: fine (and it moves the head's max time, so it comes last).
        let r = append_one(&db, &[("__name__", "soon")], &[s(now() + 5 * 60_000, 1.0)]);
        assert_eq!(r.accepted, 1);
        let d = dump(&db);
        db.close().unwrap();
        d
    };
    // Nothing rejected reached the WAL: after a restart the data is exactly the same.
    let db = Db::open(dir.path(), opts()).unwrap();
    assert_eq!(dump(&db), before);
    assert_eq!(db.open_report().unknown_refs, 0);
    // Series created by rejected batches carry no samples and are not returned by reads.
    assert!(!before.keys().any(|k| k.contains("new")));
}

#[test]
fn chunks_are_cut_like_prometheus_and_closed_chunks_are_served_as_stored_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    // 15 s scrapes over 5 block ranges of 2 h: 480 samples per range, ~120 per chunk.
    let range = 2 * HOUR;
    let start = (now() - 11 * HOUR) / range * range;
    let ls = [("__name__", "m")];
    let samples: Vec<Sample> = (0..5 * 480)
        .map(|i| s(start + i * 15_000, value(1, i)))
        .collect();
    for chunk in samples.chunks(100) {
        assert_eq!(append_one(&db, &ls, chunk).accepted, chunk.len() as u64);
    }
    let all = Matcher::new(MatchType::Equal, "__name__", "m").unwrap();
    let got = db
        .select(std::slice::from_ref(&all), i64::MIN, i64::MAX)
        .unwrap();
    assert_eq!(got.len(), 1);
    let chunks = &got[0].chunks;
    assert_eq!(chunks.len(), 20, "4 chunks per 2 h range");
    for c in chunks {
        let n = u16::from_be_bytes([c.data[0], c.data[1]]);
        assert_eq!(n, 120);
        // No chunk crosses a block-range boundary.
        assert_eq!(c.mint / range, c.maxt / range);
    }
    assert!(
        chunks[..19]
            .iter()
            .all(|c| matches!(c.data, cairn::tsdb::head::ChunkData::Mapped(_))),
        "closed chunks come from chunks_head/"
    );
    assert!(
        matches!(chunks[19].data, cairn::tsdb::head::ChunkData::Owned(_)),
        "the open chunk is encoded on demand"
    );
    let back = got[0].samples(i64::MIN, i64::MAX).unwrap();
    assert_eq!(
        back.iter()
            .map(|x| (x.t, x.v.to_bits()))
            .collect::<Vec<_>>(),
        samples
            .iter()
            .map(|x| (x.t, x.v.to_bits()))
            .collect::<Vec<_>>()
    );
    // A time range selects only overlapping chunks, and samples are filtered to it.
    let mid = start + range + 1;
    let part = db.select(&[all], mid, mid + 60_000).unwrap();
    assert_eq!(part[0].chunks.len(), 1);
    assert_eq!(part[0].samples(mid, mid + 60_000).unwrap().len(), 4);
}

#[test]
fn selection_is_sorted_by_label_set_and_honours_matchers() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    let t = now() - HOUR;
    // Append in scrambled order.
    let batch: Vec<(usize, Vec<Sample>)> = [7usize, 3, 11, 0, 5, 9, 1]
        .iter()
        .map(|&i| (i, vec![s(t, i as f64)]))
        .collect();
    append(&db, &batch).unwrap();
    let all = Matcher::new(MatchType::Regex, "instance", "host-.*").unwrap();
    let got: Vec<String> = db
        .select(&[all], t, t)
        .unwrap()
        .iter()
        .map(|s| s.labels.to_string())
        .collect();
    // Expected order: the same label sets, sorted by Labels' Prometheus ordering.
    let mut want: Vec<cairn::model::Labels> = batch
        .iter()
        .map(|(i, _)| cairn::model::Labels::from_pairs(series_labels(*i)))
        .collect();
    want.sort();
    assert_eq!(
        got,
        want.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 7);
    let ms = [
        Matcher::new(MatchType::Equal, "__name__", "metric_0").unwrap(),
        Matcher::new(MatchType::NotRegex, "instance", "host-0").unwrap(),
    ];
    let got: Vec<String> = db
        .select(&ms, t, t)
        .unwrap()
        .iter()
        .map(|s| s.labels.to_string())
        .collect();
    assert_eq!(got, vec![label_text(7)]);
    // Outside the time range: nothing.
    assert!(db.select(&ms, t + 1, t + 10).unwrap().is_empty());
}

#[test]
fn restart_replays_chunks_head_and_wal_without_doubling_samples() {
    let dir = tempfile::tempdir().unwrap();
    let start = now() - 10 * HOUR;
    let before = {
        let db = Db::open(dir.path(), opts()).unwrap();
        for k in 0..1000i64 {
            let batch: Vec<(usize, Vec<Sample>)> = (0..20)
                .map(|i| (i, vec![s(start + k * 30_000, value(i, k))]))
                .collect();
            append(&db, &batch).unwrap();
        }
        db.close().unwrap();
        dump(&db)
    };
    assert!(
        fs::read_dir(dir.path().join("chunks_head"))
            .unwrap()
            .count()
            > 0
    );
    let db = Db::open(dir.path(), opts()).unwrap();
    let rep = db.open_report().clone();
    assert_eq!(dump(&db), before);
    assert!(
        rep.chunks.chunks > 100,
        "closed chunks come back from chunks_head/: {rep:?}"
    );
    assert!(
        rep.samples_skipped > 10_000,
        "samples already in chunks_head/ are not appended twice: {rep:?}"
    );
    // Appends continue where the data stopped; exact duplicates of the last sample are no-ops.
    let last = start + 999 * 30_000;
    let r = append(
        &db,
        &[(0, vec![s(last, value(0, 999)), s(last + 30_000, 1.0)])],
    )
    .unwrap();
    assert_eq!((r.accepted, r.duplicates_ignored), (1, 1));
}

#[test]
fn corrupt_head_chunk_files_are_recovered_from_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let start = now() - 10 * HOUR;
    let o = Options {
        head_chunk_file_size: 16 * 1024,
        ..opts()
    };
    let before = {
        let db = Db::open(dir.path(), o.clone()).unwrap();
        for k in 0..2000i64 {
            let batch: Vec<(usize, Vec<Sample>)> = (0..10)
                .map(|i| (i, vec![s(start + k * 15_000, value(i, k))]))
                .collect();
            append(&db, &batch).unwrap();
        }
        db.close().unwrap();
        dump(&db)
    };
    let ch = dir.path().join("chunks_head");
    let mut files: Vec<_> = fs::read_dir(&ch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    // Flip bytes in the middle of the second file, and garble the header of the last one.
    let mut b = fs::read(&files[1]).unwrap();
    let mid = b.len() / 2;
    b[mid..mid + 8].iter_mut().for_each(|x| *x ^= 0x5a);
    fs::write(&files[1], b).unwrap();
    fs::write(files.last().unwrap(), b"garbage!").unwrap();

    let db = Db::open(dir.path(), o).unwrap();
    let rep = db.open_report();
    let (file, _, reason) = rep
        .chunks
        .dropped_tail
        .clone()
        .expect("corruption must be reported");
    assert_eq!(file, 2, "{reason}");
    assert_eq!(dump(&db), before, "every sample comes back from the WAL");
}

#[test]
fn a_second_process_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _db = Db::open(dir.path(), opts()).unwrap();
    let err = Db::open(dir.path(), opts()).err().unwrap();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("01HX.tmp-for-creation")).unwrap();
    fs::create_dir_all(dir.path().join("wal")).unwrap();
    fs::write(dir.path().join("wal/00000001.repair"), b"x").unwrap();
    let db = Db::open(dir.path(), opts()).unwrap();
    assert!(!dir.path().join("01HX.tmp-for-creation").exists());
    assert!(!dir.path().join("wal/00000001.repair").exists());
    assert_eq!(
        db.open_report().leftovers_removed,
        vec!["01HX.tmp-for-creation".to_string()]
    );
}

#[test]
fn concurrent_appends_to_the_same_series_never_store_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), opts()).unwrap());
    let t0 = now() - HOUR;
    let threads: Vec<_> = (0..4)
        .map(|th| {
            let db = Arc::clone(&db);
            std::thread::spawn(move || {
                let mut accepted = Vec::new();
                for k in 0..500i64 {
                    // Threads interleave timestamps on the same 5 series.
                    let t = t0 + k * 4 + th;
                    let batch: Vec<(usize, Vec<Sample>)> =
                        (0..5).map(|i| (i, vec![s(t, t as f64)])).collect();
                    let r = append(&db, &batch).unwrap();
                    if r.accepted == 5 {
                        accepted.push(t);
                    }
                    assert!(r.accepted == 5 || r.rejected.out_of_order == 5, "{r:?}");
                }
                accepted
            })
        })
        .collect();
    let mut accepted: Vec<i64> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    accepted.sort_unstable();
    let d = dump(&db);
    for i in 0..5 {
        let ts: Vec<i64> = d[&label_text(i)].iter().map(|x| x.0).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        assert_eq!(ts, accepted, "exactly the acknowledged samples");
    }
}
