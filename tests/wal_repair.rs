//! WAL corruption matrix, modelled on Prometheus's `TestWALRepair_ReadingError`
//! (`tsdb/wlog/wlog_test.go`): nine records of one page each, three segments of three pages;
//! damage one place, reopen, and count exactly the records that survive. Then the torn-tail
//! sweep: the last page cut at every byte offset.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use cairn::tsdb::wal::fs::OsFs;
use cairn::tsdb::wal::segment::{Framer, SegmentReader, HEADER_SIZE, PAGE_SIZE};
use cairn::tsdb::wal::{list_segments, segment_name, SyncPolicy, Wal, WalOptions};

fn opts(segment_size: usize) -> WalOptions {
    WalOptions {
        segment_size,
        sync: SyncPolicy::Never,
        compress: false,
    }
}

/// Open the WAL in `dir`, returning it and every replayed record.
fn open(dir: &Path, segment_size: usize) -> (Wal, Vec<Vec<u8>>, cairn::tsdb::wal::ReplayReport) {
    let mut recs = Vec::new();
    let (wal, report) = Wal::open(dir, opts(segment_size), Arc::new(OsFs), |r| {
        recs.push(r.to_vec());
        Ok(())
    })
    .unwrap();
    (wal, recs, report)
}

fn nine_page_records() -> Vec<Vec<u8>> {
    (1..=9u8)
        .map(|i| {
            let mut b = vec![0u8; PAGE_SIZE - HEADER_SIZE];
            b[0] = i;
            b[1..]
                .iter_mut()
                .enumerate()
                .for_each(|(j, x)| *x = (j % 251) as u8);
            b
        })
        .collect()
}

fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn corruption_matrix_keeps_exactly_the_records_before_the_damage() {
    let page = PAGE_SIZE as u64;
    // (case, segment to corrupt, offset in it, bytes written there, intact records)
    let cases: &[(&str, u64, u64, &[u8], usize)] = &[
        (
            "torn last record",
            2,
            2 * page,
            &[2 /* first fragment */],
            8,
        ),
        (
            "bad header: padding marker with data behind it",
            1,
            page,
            &[0],
            4,
        ),
        (
            "bad fragment sequence: a last fragment first",
            1,
            page,
            &[4],
            4,
        ),
        ("bad fragment flags", 1, page, &[123], 4),
        ("bad checksum", 1, page + 4, &[0], 4),
        ("bad length", 1, page + 2, &[0], 4),
        ("bad content", 1, page + 100, b"beef", 4),
        (
            "corrupt middle segment drops every later segment",
            1,
            2 * page + 50,
            b"x",
            5,
        ),
        ("corrupt first record of the first segment", 0, 10, b"zz", 0),
    ];
    let records = nine_page_records();
    for &(name, seg, off, bytes, intact) in cases {
        let dir = tempfile::tempdir().unwrap();
        let seg_size = 3 * PAGE_SIZE;
        {
            let (wal, recs, _) = open(dir.path(), seg_size);
            assert!(recs.is_empty());
            for r in &records {
                wal.log(&[r]).unwrap();
            }
            wal.close().unwrap();
        }
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(segs, vec![0, 1, 2], "{name}: three records per segment");
        let target = segs[seg as usize];
        poke(&segment_name(dir.path(), target), off, bytes);

        let (wal, got, report) = open(dir.path(), seg_size);
        assert_eq!(got.len(), intact, "{name}: surviving records");
        assert_eq!(
            got,
            records[..intact].to_vec(),
            "{name}: surviving records' bytes"
        );
        let repair = report
            .repaired
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: no repair reported"));
        assert_eq!(repair.segment, target, "{name}");
        assert_eq!(
            wal.stats()
                .corruptions_repaired
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // Later segments are gone and a fresh, empty segment follows the repaired one.
        let segs = list_segments(dir.path()).unwrap();
        assert_eq!(*segs.last().unwrap(), target + 1, "{name}: {segs:?}");
        assert_eq!(
            fs::metadata(segment_name(dir.path(), target + 1))
                .unwrap()
                .len(),
            0
        );

        // Appends work after the repair and everything reads back on the next open.
        wal.log(&[b"after repair".as_slice()]).unwrap();
        wal.close().unwrap();
        drop(wal);
        let (_wal, got, report) = open(dir.path(), seg_size);
        assert!(
            report.repaired.is_none(),
            "{name}: second open must be clean"
        );
        assert_eq!(got.len(), intact + 1, "{name}");
        assert_eq!(got.last().unwrap(), b"after repair");
    }
}

/// Frame records the way the WAL does and return the bytes plus each record's end offset.
fn framed(records: &[Vec<u8>]) -> (Vec<u8>, Vec<u64>) {
    let mut f = Framer::new(1 << 27);
    let mut out = Vec::new();
    let mut ends = Vec::new();
    for r in records {
        f.frame(&mut out, r, false);
        ends.push(out.len() as u64);
    }
    (out, ends)
}

fn mixed_records() -> Vec<Vec<u8>> {
    // Sizes chosen so the last page holds several whole records, a fragment boundary and a
    // sub-header remainder that gets zero-filled.
    let sizes = [40_000usize, 25_000, 900, 3, 0, 1_500, 7_000, 12, 300];
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
        .collect()
}

#[test]
fn torn_tail_at_every_byte_of_the_last_page_keeps_exactly_the_complete_records() {
    let records = mixed_records();
    let (bytes, ends) = framed(&records);
    let last_page_start = (bytes.len() as u64 - 1) / PAGE_SIZE as u64 * PAGE_SIZE as u64;
    assert!(
        ends.iter().filter(|&&e| e > last_page_start).count() >= 4,
        "fixture must put several records in the last page"
    );
    for cut in last_page_start..=bytes.len() as u64 {
        let mut r = SegmentReader::new(&bytes[..cut as usize], 1 << 30);
        let mut n = 0;
        let err = loop {
            match r.next_record() {
                Ok(Some(rec)) => {
                    assert_eq!(rec, records[n].as_slice(), "cut {cut}");
                    n += 1;
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let want = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(n, want, "cut at {cut}");
        let last_end = if want == 0 { 0 } else { ends[want - 1] };
        match err {
            // A clean end: the cut fell on a record end or inside the zero padding after it.
            None => assert!(
                bytes[last_end as usize..cut as usize]
                    .iter()
                    .all(|&b| b == 0),
                "cut {cut}"
            ),
            Some(e) => {
                // The repair point is the start of the first incomplete record.
                let start = if want == 0 { 0 } else { ends[want - 1] };
                assert_eq!(e.offset(), start, "cut {cut}: {e}");
            }
        }
    }
}

#[test]
fn torn_tail_repair_through_reopen_at_sampled_offsets() {
    let records = mixed_records();
    let (bytes, ends) = framed(&records);
    let last_page_start = (bytes.len() as u64 - 1) / PAGE_SIZE as u64 * PAGE_SIZE as u64;
    // Every record boundary ±1 in the last page, plus a stride through it.
    let mut cuts: Vec<u64> = ends
        .iter()
        .filter(|&&e| e >= last_page_start)
        .flat_map(|&e| [e.saturating_sub(1), e, e + 1])
        .chain((last_page_start..bytes.len() as u64).step_by(997))
        .filter(|&c| c >= last_page_start && c <= bytes.len() as u64)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    for cut in cuts {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_name(dir.path(), 0), &bytes[..cut as usize]).unwrap();
        let (wal, got, report) = open(dir.path(), 1 << 27);
        let want = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(got.len(), want, "cut {cut}");
        let last_end = if want == 0 { 0 } else { ends[want - 1] };
        let clean = bytes[last_end as usize..cut as usize]
            .iter()
            .all(|&b| b == 0);
        assert_eq!(
            report.repaired.is_none(),
            clean,
            "cut {cut}: repair iff a record was torn"
        );
        if let Some(r) = &report.repaired {
            assert_eq!(
                r.offset, last_end,
                "cut {cut}: truncated where the torn record starts"
            );
        }
        wal.log(&[b"next".as_slice()]).unwrap();
        wal.close().unwrap();
        drop(wal);
        let (_w, again, report) = open(dir.path(), 1 << 27);
        assert!(
            report.repaired.is_none(),
            "cut {cut}: reopen after repair must be clean"
        );
        assert_eq!(again.len(), want + 1, "cut {cut}");
    }
}

#[test]
fn a_gap_in_segment_numbers_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(segment_name(dir.path(), 0), b"").unwrap();
    fs::write(segment_name(dir.path(), 2), b"").unwrap();
    let err = Wal::open(dir.path(), opts(1 << 27), Arc::new(OsFs), |_| Ok(()))
        .err()
        .unwrap();
    assert!(err.to_string().contains("not contiguous"), "{err}");
}

#[test]
fn records_span_pages_and_segments_rotate_with_compression_on() {
    let dir = tempfile::tempdir().unwrap();
    let o = WalOptions {
        segment_size: 2 * PAGE_SIZE,
        sync: SyncPolicy::Always,
        compress: true,
    };
    // Half the records compress well, half are noise; sizes up to ~1.5 pages.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let recs: Vec<Vec<u8>> = (0..50u32)
        .map(|i| {
            if i % 2 == 0 {
                format!("{i}:").repeat(100 + i as usize * 50).into_bytes()
            } else {
                (0..1000 * i as usize)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            }
        })
        .collect();
    {
        let (wal, _) = Wal::open(dir.path(), o.clone(), Arc::new(OsFs), |_| Ok(())).unwrap();
        for r in &recs {
            wal.log(&[r]).unwrap();
        }
    }
    assert!(
        list_segments(dir.path()).unwrap().len() > 3,
        "small segments must rotate"
    );
    let mut got = Vec::new();
    Wal::open(dir.path(), o, Arc::new(OsFs), |r| {
        got.push(r.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(got, recs);
}
