//! WAL checkpoints and truncation through `Wal`: a workload of Series, Samples, Tombstones and
//! foreign records over many one-page segments; checkpoint the older two thirds, truncate,
//! reopen, and compare what replay hands out with a reference model of the checkpoint rules.
//! Then every crash point of the checkpoint → truncate → delete sequence, damage inside a
//! checkpoint and in its input, failed I/O, and the replay-order rules after a checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cairn::model::Labels;
use cairn::tsdb::wal::checkpoint::{
    self, checkpoint_dir, checkpoint_with, last_checkpoint, CheckpointOptions, CheckpointStats,
};
use cairn::tsdb::wal::fs::{FileSystem, OsFs};
use cairn::tsdb::wal::record::{self, RefSample, Stone};
use cairn::tsdb::wal::segment::{SegmentReader, PAGE_SIZE};
use cairn::tsdb::wal::{
    list_segments, segment_name, ReplayReport, SyncPolicy, Wal, WalError, WalOptions,
};
use common::faults::{Faults, FaultyFs};
use tempfile::TempDir;

/// One page per segment: a few hundred records make many segments.
const SEG: usize = PAGE_SIZE;

fn opts(compress: bool) -> WalOptions {
    WalOptions {
        segment_size: SEG,
        sync: SyncPolicy::Never,
        compress,
    }
}

/// A replayed record, decoded: what the head would see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Series(u64, String),
    Sample(u64, i64, u64),
    Stone(u64, i64, i64),
    Other(Vec<u8>),
}

fn decode(rec: &[u8], out: &mut Vec<Ev>) {
    match rec.first().copied() {
        Some(record::SERIES) => record::decode_series(rec, &mut Vec::new(), |r, ls| {
            let text: Vec<String> = ls.iter().map(|(n, v)| format!("{n}={v}")).collect();
            out.push(Ev::Series(r, text.join(",")));
        })
        .unwrap(),
        Some(record::SAMPLES) => {
            let mut s = Vec::new();
            record::decode_samples(rec, &mut s).unwrap();
            out.extend(s.iter().map(|s| Ev::Sample(s.sref, s.t, s.v.to_bits())));
        }
        Some(record::TOMBSTONES) => {
            let mut s = Vec::new();
            record::decode_tombstones(rec, &mut s).unwrap();
            out.extend(s.iter().map(|s| Ev::Stone(s.sref, s.mint, s.maxt)));
        }
        _ => out.push(Ev::Other(rec.to_vec())),
    }
}

/// The checkpoint rules, written independently of the code under test.
fn model(evs: &[Ev], keep: impl Fn(u64) -> bool, mint: i64) -> Vec<Ev> {
    evs.iter()
        .filter(|e| match e {
            Ev::Series(r, _) => keep(*r),
            Ev::Sample(_, t, _) => *t >= mint,
            Ev::Stone(r, _, maxt) => keep(*r) && *maxt >= mint,
            Ev::Other(_) => false,
        })
        .cloned()
        .collect()
}

fn keep1(r: u64) -> bool {
    !r.is_multiple_of(3)
}

fn keep2(r: u64) -> bool {
    !r.is_multiple_of(3) && r.is_multiple_of(2)
}

fn try_open(dir: &Path, compress: bool) -> Result<(Wal, Vec<Ev>, ReplayReport), WalError> {
    let mut evs = Vec::new();
    let (wal, report) = Wal::open(dir, opts(compress), Arc::new(OsFs), |r| {
        decode(r, &mut evs);
        Ok(())
    })?;
    Ok((wal, evs, report))
}

fn open(dir: &Path, compress: bool) -> (Wal, Vec<Ev>, ReplayReport) {
    try_open(dir, compress).unwrap()
}

/// A deterministic workload: each round creates four series, samples the 40 newest (values
/// from an LCG, so snappy cannot squeeze them away), sometimes deletes, sometimes writes a
/// record type cairn does not keep.
struct Workload {
    round: u64,
    rng: u64,
}

impl Workload {
    fn new() -> Self {
        Workload { round: 0, rng: 42 }
    }

    fn value(&mut self) -> f64 {
        self.rng = self
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.rng >> 11) as f64 / 7.0
    }

    fn round(&mut self) -> Vec<Vec<u8>> {
        let k = self.round;
        self.round += 1;
        let t0 = k as i64 * 1000;
        let mut recs = Vec::new();
        let new: Vec<u64> = (4 * k + 1..=4 * k + 4).collect();
        let labels: Vec<Labels> = new
            .iter()
            .map(|r| Labels::from_pairs([("__name__", "m"), ("id", r.to_string().as_str())]))
            .collect();
        let mut rec = Vec::new();
        record::encode_series(&mut rec, new.iter().copied().zip(&labels));
        recs.push(rec);

        let samples: Vec<RefSample> = ((4 * k + 4).saturating_sub(39).max(1)..=4 * k + 4)
            .map(|sref| RefSample {
                sref,
                t: t0 + (sref % 7) as i64,
                v: self.value(),
            })
            .collect();
        let mut rec = Vec::new();
        record::encode_samples(&mut rec, &samples);
        recs.push(rec);

        if k % 7 == 3 {
            let stones: Vec<Stone> = (4 * k - 3..=4 * k)
                .map(|sref| Stone {
                    sref,
                    mint: t0 - 3000,
                    maxt: t0 - 2500 + (sref % 3) as i64 * 1000,
                })
                .collect();
            let mut rec = Vec::new();
            record::encode_tombstones(&mut rec, &stones);
            recs.push(rec);
        }
        if k % 11 == 5 {
            // Shaped like an exemplar record; cairn never decodes it.
            recs.push(vec![4, 0xde, 0xad, 0xbe, 0xef, k as u8]);
        }
        recs
    }

    /// Log rounds until the WAL writes segment `seg`.
    fn write_until(&mut self, wal: &Wal, seg: u64) {
        while wal.stats().segment.load(Ordering::Relaxed) < seg {
            for rec in self.round() {
                wal.log(&[&rec]).unwrap();
            }
        }
    }
}

/// Every record of every segment in `dir`, decoded, by segment.
fn segment_events(dir: &Path) -> BTreeMap<u64, Vec<Ev>> {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|s| (s, read_events(&segment_name(dir, s))))
        .collect()
}

fn read_events(path: &Path) -> Vec<Ev> {
    let bytes = fs::read(path).unwrap();
    let mut r = SegmentReader::new(bytes.as_slice(), 1 << 30);
    let mut out = Vec::new();
    while let Some(rec) = r.next_record().unwrap() {
        decode(rec, &mut out);
    }
    out
}

fn flatten<'a>(segs: impl IntoIterator<Item = (&'a u64, &'a Vec<Ev>)>) -> Vec<Ev> {
    segs.into_iter().flat_map(|(_, e)| e.clone()).collect()
}

/// Timestamp of the first sample in `evs`.
fn first_t(evs: &[Ev]) -> i64 {
    evs.iter()
        .find_map(|e| match e {
            Ev::Sample(_, t, _) => Some(*t),
            _ => None,
        })
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_no_leftovers(dir: &Path) {
    let left: Vec<String> = names(dir)
        .into_iter()
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "leftovers in {}: {left:?}", dir.display());
}

fn count(evs: &[Ev], f: impl Fn(&Ev) -> bool) -> usize {
    evs.iter().filter(|e| f(e)).count()
}

fn flip_byte(path: &Path, offset: u64) {
    let mut b = [0u8];
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    std::io::Read::read_exact(&mut f, &mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x5a]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The Db's sequence on an open WAL

fn checkpoint_truncate_and_reopen(compress: bool) {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (wal, evs, _) = open(d, compress);
    assert!(evs.is_empty());
    let mut w = Workload::new();
    w.write_until(&wal, 9);
    let (first, last) = wal.segment_range().unwrap();
    assert_eq!((first, last), (0, 9));
    // Prometheus's choice: never the segment being written, the older two thirds.
    let to = first + (last - 1 - first) * 2 / 3;
    assert_eq!(to, 5);
    let covered = segment_events(d);
    let mint = first_t(&covered[&(to / 2)]);
    let input = flatten(covered.range(..=to));

    let stats = wal.checkpoint(first, to, keep1, mint).unwrap();
    assert_eq!(stats.base, None);
    assert_eq!(stats.segments_read, to - first + 1);
    let series = count(&input, |e| matches!(e, Ev::Series(..)));
    let samples = count(&input, |e| matches!(e, Ev::Sample(..)));
    let stones = count(&input, |e| matches!(e, Ev::Stone(..)));
    let kept = model(&input, keep1, mint);
    assert_eq!(stats.series_read as usize, series);
    assert_eq!(
        stats.series_kept as usize,
        count(&kept, |e| matches!(e, Ev::Series(..)))
    );
    assert_eq!(stats.samples_read as usize, samples);
    assert_eq!(
        stats.samples_kept as usize,
        count(&kept, |e| matches!(e, Ev::Sample(..)))
    );
    assert_eq!(stats.tombstones_read as usize, stones);
    assert_eq!(
        stats.tombstones_kept as usize,
        count(&kept, |e| matches!(e, Ev::Stone(..)))
    );
    // The fixture exercises both sides of every rule.
    assert!(0 < stats.series_kept && stats.series_kept < stats.series_read);
    assert!(0 < stats.samples_kept && stats.samples_kept < stats.samples_read);
    assert!(0 < stats.tombstones_kept && stats.tombstones_kept < stats.tombstones_read);
    assert!(stats.other_records_dropped > 0);
    assert!(
        stats.segments_written >= 2,
        "the checkpoint respects the segment size: {stats:?}"
    );
    let cp = checkpoint_dir(d, to);
    let files = list_segments(&cp).unwrap();
    assert_eq!(files.len() as u64, stats.segments_written);
    let mut on_disk = 0;
    for f in &files {
        let len = fs::metadata(segment_name(&cp, *f)).unwrap().len();
        assert_eq!(
            len % PAGE_SIZE as u64,
            0,
            "checkpoint segments end on a page"
        );
        assert!(len <= SEG as u64);
        on_disk += len;
    }
    assert_eq!(on_disk, stats.bytes_written);

    assert_eq!(wal.truncate(to + 1).unwrap(), to + 1 - first);
    assert_eq!(wal.segment_range().unwrap(), (to + 1, last));
    assert_eq!(wal.delete_checkpoints(to).unwrap(), 0);
    // Appends carry on in the live segment.
    for rec in w.round() {
        wal.log(&[&rec]).unwrap();
    }
    let s = wal.stats();
    assert_eq!(s.checkpoint_creations.load(Ordering::Relaxed), 1);
    assert_eq!(s.checkpoint_creations_failed.load(Ordering::Relaxed), 0);
    assert_eq!(s.truncations.load(Ordering::Relaxed), 1);
    assert_eq!(s.truncations_failed.load(Ordering::Relaxed), 0);
    assert_eq!(s.checkpoint_deletions.load(Ordering::Relaxed), 1);
    wal.close().unwrap();
    drop(wal);

    let live = segment_events(d);
    assert_eq!(
        live.keys().copied().collect::<Vec<_>>(),
        (to + 1..=last).collect::<Vec<_>>()
    );
    let mut want = kept;
    want.extend(flatten(&live));
    let (_wal, got, report) = open(d, compress);
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    assert_eq!(report.checkpoint, Some(to));
    assert_eq!(report.segments, last - to);
    assert_eq!(report.obsolete_removed, 0);
    assert_no_leftovers(d);
}

#[test]
fn checkpoint_then_truncate_replays_the_kept_records_then_every_later_one_uncompressed() {
    checkpoint_truncate_and_reopen(false);
}

#[test]
fn checkpoint_then_truncate_replays_the_kept_records_then_every_later_one_compressed() {
    checkpoint_truncate_and_reopen(true);
}

/// Two rounds of checkpoint → truncate → (optionally) delete old checkpoints, on an open WAL.
struct TwoCheckpoints {
    dir: TempDir,
    to1: u64,
    to2: u64,
    /// What replay must hand out after the second round.
    want: Vec<Ev>,
    second: CheckpointStats,
}

fn two_checkpoints(compress: bool, delete_old: bool) -> TwoCheckpoints {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, compress);
    let mut w = Workload::new();
    w.write_until(&wal, 9);
    let to1 = 5;
    let segs = segment_events(d);
    let mint1 = first_t(&segs[&2]);
    let mut state = model(&flatten(segs.range(..=to1)), keep1, mint1);
    wal.checkpoint(0, to1, keep1, mint1).unwrap();
    wal.truncate(to1 + 1).unwrap();
    wal.delete_checkpoints(to1).unwrap();

    w.write_until(&wal, 15);
    let (first, last) = wal.segment_range().unwrap();
    assert_eq!((first, last), (to1 + 1, 15));
    let to2 = first + (last - 1 - first) * 2 / 3;
    let segs = segment_events(d);
    let mint2 = first_t(&segs[&(to2 - 1)]);
    state.extend(flatten(segs.range(..=to2)));
    let mut want = model(&state, keep2, mint2);

    // A `from` past the checkpoint's next segment would skip segments: refused, counted.
    let err = wal.checkpoint(to1 + 2, to2, keep2, mint2).unwrap_err();
    assert!(
        matches!(&err, WalError::Gap(m) if m.contains(&format!("checkpoint.{to1:08}"))),
        "{err}"
    );
    assert_eq!(
        wal.stats()
            .checkpoint_creations_failed
            .load(Ordering::Relaxed),
        1
    );
    // Upstream raises an early `from` to the checkpoint's next segment.
    let second = wal.checkpoint(0, to2, keep2, mint2).unwrap();
    wal.truncate(to2 + 1).unwrap();
    if delete_old {
        assert_eq!(wal.delete_checkpoints(to2).unwrap(), 1);
    }
    wal.close().unwrap();
    drop(wal);
    want.extend(flatten(&segment_events(d)));
    TwoCheckpoints {
        dir,
        to1,
        to2,
        want,
        second,
    }
}

#[test]
fn a_second_checkpoint_carries_the_first_ones_content_and_replaces_it() {
    for compress in [false, true] {
        let t = two_checkpoints(compress, true);
        let d = t.dir.path();
        assert_eq!(t.second.base, Some(t.to1));
        assert_eq!(t.second.segments_read, t.to2 - t.to1);
        assert!(t.second.series_kept < t.second.series_read);
        let cps: Vec<u64> = checkpoint::list_checkpoints(d)
            .unwrap()
            .iter()
            .map(|c| c.0)
            .collect();
        assert_eq!(cps, vec![t.to2], "the older checkpoint is gone");
        let (_wal, got, report) = open(d, compress);
        assert_eq!(report.checkpoint, Some(t.to2));
        assert_eq!(got, t.want, "compress={compress}");
        // Series of the first checkpoint that the second still keeps are there.
        assert!(got
            .iter()
            .any(|e| matches!(e, Ev::Series(r, _) if *r <= 4 * 20 && keep2(*r))));
    }
}

// ---------------------------------------------------------------------------------------------
// Crashes between the steps

/// A closed WAL of nine segments plus the fresh one, and the checkpoint parameters.
struct Fixture {
    dir: TempDir,
    before: BTreeMap<u64, Vec<Ev>>,
    first: u64,
    to: u64,
    mint: i64,
    compress: bool,
}

impl Fixture {
    fn new(compress: bool) -> Fixture {
        let dir = TempDir::new().unwrap();
        {
            let (wal, _, _) = open(dir.path(), compress);
            Workload::new().write_until(&wal, 9);
            wal.close().unwrap();
        }
        let before = segment_events(dir.path());
        let (first, last) = (0, *before.keys().last().unwrap());
        let to = first + (last - 1 - first) * 2 / 3;
        let mint = first_t(&before[&(to / 2)]);
        Fixture {
            dir,
            before,
            first,
            to,
            mint,
            compress,
        }
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn checkpoint(&self) -> Result<CheckpointStats, WalError> {
        self.checkpoint_through(&OsFs)
    }

    fn checkpoint_through(&self, fs: &dyn FileSystem) -> Result<CheckpointStats, WalError> {
        checkpoint_with(
            self.d(),
            self.first,
            self.to,
            keep1,
            self.mint,
            CheckpointOptions {
                compress: self.compress,
                segment_size: SEG,
            },
            fs,
        )
    }

    /// Replay of the untouched WAL.
    fn all(&self) -> Vec<Ev> {
        flatten(&self.before)
    }

    /// Replay after the checkpoint, whatever was or was not truncated.
    fn checkpointed(&self) -> Vec<Ev> {
        let mut v = model(&flatten(self.before.range(..=self.to)), keep1, self.mint);
        v.extend(flatten(self.before.range(self.to + 1..)));
        v
    }

    fn cp(&self) -> PathBuf {
        checkpoint_dir(self.d(), self.to)
    }

    fn reopen(&self) -> (Vec<Ev>, ReplayReport) {
        let (wal, got, report) = open(self.d(), self.compress);
        wal.close().unwrap();
        assert_no_leftovers(self.d());
        (got, report)
    }
}

#[test]
fn crash_while_the_checkpoint_is_half_written_replays_the_wal_as_it_was() {
    for compress in [false, true] {
        let f = Fixture::new(compress);
        // Build a real checkpoint, then make it look interrupted: tmp name, first file cut.
        f.checkpoint().unwrap();
        let tmp = PathBuf::from(format!("{}.tmp", f.cp().display()));
        fs::rename(f.cp(), &tmp).unwrap();
        let seg0 = segment_name(&tmp, 0);
        let len = fs::metadata(&seg0).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg0)
            .unwrap()
            .set_len(len / 2 + 3)
            .unwrap();
        for s in list_segments(&tmp).unwrap().into_iter().skip(1) {
            fs::remove_file(segment_name(&tmp, s)).unwrap();
        }
        let (got, report) = f.reopen();
        assert_eq!(report.checkpoint, None);
        assert_eq!(got, f.all(), "compress={compress}");
        assert!(!tmp.exists());
        // A stale tmp does not stop the next attempt either.
        fs::create_dir(&tmp).unwrap();
        fs::write(segment_name(&tmp, 0), b"garbage").unwrap();
        f.checkpoint().unwrap();
        assert!(!tmp.exists());
        let (got, _) = f.reopen();
        assert_eq!(got, f.checkpointed());
    }
}

#[test]
fn crash_after_the_rename_before_truncation_replays_each_record_once() {
    for compress in [false, true] {
        let f = Fixture::new(compress);
        f.checkpoint().unwrap();
        // Segments 0..=to are still on disk next to the checkpoint that covers them.
        assert_eq!(list_segments(f.d()).unwrap().first(), Some(&0));
        let (got, report) = f.reopen();
        assert_eq!(got, f.checkpointed(), "compress={compress}");
        assert_eq!(report.checkpoint, Some(f.to));
        assert_eq!(
            report.obsolete_removed,
            f.to + 1,
            "covered segments are deleted"
        );
        assert_eq!(list_segments(f.d()).unwrap().first(), Some(&(f.to + 1)));
        // And the next open sees the same.
        let (got, report) = f.reopen();
        assert_eq!(got, f.checkpointed());
        assert_eq!(report.obsolete_removed, 0);
    }
}

#[test]
fn crash_halfway_through_truncation_replays_each_record_once() {
    let f = Fixture::new(false);
    f.checkpoint().unwrap();
    for s in 0..2 {
        fs::remove_file(segment_name(f.d(), s)).unwrap();
    }
    let (got, report) = f.reopen();
    assert_eq!(got, f.checkpointed());
    assert_eq!(report.obsolete_removed, f.to + 1 - 2);
}

#[test]
fn checkpointing_again_to_the_same_segment_replaces_the_checkpoint() {
    for compress in [false, true] {
        let f = Fixture::new(compress);
        f.checkpoint().unwrap();
        // As after a crash (or a failed directory fsync) after the rename: same request again.
        let again = f.checkpoint().unwrap();
        assert_eq!(again.base, Some(f.to));
        assert_eq!(
            again.segments_read, 0,
            "segments up to the checkpoint are not read"
        );
        let (got, _) = f.reopen();
        assert_eq!(got, f.checkpointed(), "compress={compress}");
    }
}

#[test]
fn crash_before_old_checkpoints_are_deleted_replays_only_the_newest() {
    for compress in [false, true] {
        let t = two_checkpoints(compress, false);
        let d = t.dir.path();
        assert!(checkpoint_dir(d, t.to1).is_dir());
        let (wal, got, report) = open(d, compress);
        drop(wal);
        assert_eq!(got, t.want, "compress={compress}");
        assert_eq!(report.checkpoint, Some(t.to2));
        assert_eq!(report.obsolete_removed, 1);
        assert!(!checkpoint_dir(d, t.to1).exists());
        assert_no_leftovers(d);
    }
}

#[test]
fn crash_in_the_middle_of_deleting_old_checkpoints_leaves_nothing_behind() {
    let t = two_checkpoints(false, false);
    let d = t.dir.path();
    // `delete_checkpoints` renames before it removes; crash between the two.
    let doomed = PathBuf::from(format!(
        "{}.tmp-for-deletion",
        checkpoint_dir(d, t.to1).display()
    ));
    fs::rename(checkpoint_dir(d, t.to1), &doomed).unwrap();
    assert_eq!(last_checkpoint(d).unwrap().map(|c| c.0), Some(t.to2));
    let (wal, got, _) = open(d, false);
    drop(wal);
    assert_eq!(got, t.want);
    assert!(!doomed.exists());
    assert_no_leftovers(d);
}

// ---------------------------------------------------------------------------------------------
// Damage

#[test]
fn a_flipped_byte_inside_a_checkpoint_fails_open_and_names_the_checkpoint() {
    for compress in [false, true] {
        let f = Fixture::new(compress);
        f.checkpoint().unwrap();
        let seg0 = segment_name(&f.cp(), 0);
        let len = fs::metadata(&seg0).unwrap().len();
        // Somewhere in the middle of the first page's data (past the first header).
        flip_byte(&seg0, 1000.min(len / 2));
        let before = names(f.d());
        let err = try_open(f.d(), compress).map(|_| ()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("checkpoint.{:08}", f.to)),
            "compress={compress}: {msg}"
        );
        let c = err.corruption().expect("a corruption error");
        assert_eq!(c.checkpoint.as_deref(), Some(f.cp().as_path()));
        assert_eq!(c.path, seg0);
        assert!(c.offset <= 1000, "{c:?}");
        assert!(msg.contains(&format!("offset {}", c.offset)), "{msg}");
        // Nothing was repaired or deleted: the covered segments may be what saves the data.
        assert_eq!(names(f.d()), before);
        assert_eq!(
            fs::metadata(&seg0).unwrap().len(),
            len,
            "the checkpoint is not truncated"
        );
    }
}

#[test]
fn a_torn_checkpoint_fails_open_too() {
    let f = Fixture::new(false);
    f.checkpoint().unwrap();
    let cp = f.cp();
    let last = *list_segments(&cp).unwrap().last().unwrap();
    let path = segment_name(&cp, last);
    // Cut inside the last record of the last file.
    let bytes = fs::read(&path).unwrap();
    let mut r = SegmentReader::new(bytes.as_slice(), 1 << 30);
    let mut span = (0, 0);
    while r.next_record().unwrap().is_some() {
        span = (r.record_offset(), r.pos());
    }
    assert!(span.1 - span.0 > 8);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len((span.0 + span.1) / 2)
        .unwrap();
    let err = try_open(f.d(), false).map(|_| ()).unwrap_err();
    let c = err.corruption().expect("a corruption error");
    assert_eq!(c.path, path);
    assert_eq!(c.offset, span.0);
    assert!(c.reason.contains("torn"), "{c:?}");
}

#[test]
fn a_damaged_input_segment_fails_the_checkpoint_and_leaves_no_trace() {
    for compress in [false, true] {
        let f = Fixture::new(compress);
        let seg1 = segment_name(f.d(), 1);
        flip_byte(&seg1, 500);
        let before = names(f.d());
        let err = f.checkpoint().unwrap_err();
        let c = err.corruption().expect("a corruption error");
        assert_eq!(c.checkpoint, None);
        assert_eq!(c.path, seg1);
        assert!(
            err.to_string().contains(&seg1.display().to_string()),
            "{err}"
        );
        assert_eq!(names(f.d()), before, "no checkpoint, no tmp dir");
    }
}

// ---------------------------------------------------------------------------------------------
// Failed I/O

#[test]
fn a_failed_write_fsync_or_create_removes_the_tmp_dir_and_a_retry_succeeds() {
    let f = Fixture::new(true);
    let faults = Arc::new(Faults::default());
    let fs_ = FaultyFs {
        faults: Arc::clone(&faults),
    };
    let before = names(f.d());
    for (what, flag) in [
        ("fsync", &faults.armed_syncs),
        ("write", &faults.armed_writes),
        ("create", &faults.armed_creates),
    ] {
        flag.store(true, Ordering::SeqCst);
        let err = f.checkpoint_through(&fs_).unwrap_err();
        flag.store(false, Ordering::SeqCst);
        assert!(
            matches!(&err, WalError::Io { source, .. } if source.raw_os_error() == Some(5)),
            "{what}: {err}"
        );
        assert_eq!(names(f.d()), before, "{what}: nothing left behind");
    }
    assert!(faults.syncs_failed.load(Ordering::SeqCst) >= 1);
    assert!(faults.writes_failed.load(Ordering::SeqCst) >= 1);
    f.checkpoint_through(&fs_).unwrap();
    let (got, _) = f.reopen();
    assert_eq!(got, f.checkpointed());
}

#[test]
fn wal_checkpoint_counts_failures_through_its_file_seam() {
    let dir = TempDir::new().unwrap();
    let faults = Arc::new(Faults::default());
    let fs_: Arc<dyn FileSystem> = Arc::new(FaultyFs {
        faults: Arc::clone(&faults),
    });
    let (wal, _) = Wal::open(dir.path(), opts(false), fs_, |_| Ok(())).unwrap();
    Workload::new().write_until(&wal, 4);
    faults.armed_syncs.store(true, Ordering::SeqCst);
    assert!(wal.checkpoint(0, 2, keep1, 0).is_err());
    faults.armed_syncs.store(false, Ordering::SeqCst);
    let s = wal.stats();
    assert_eq!(s.checkpoint_creations.load(Ordering::Relaxed), 1);
    assert_eq!(s.checkpoint_creations_failed.load(Ordering::Relaxed), 1);
    assert_eq!(last_checkpoint(dir.path()).unwrap(), None);
    wal.checkpoint(0, 2, keep1, 0).unwrap();
    assert_eq!(s.checkpoint_creations.load(Ordering::Relaxed), 2);
    assert_eq!(s.checkpoint_creations_failed.load(Ordering::Relaxed), 1);
}

// ---------------------------------------------------------------------------------------------
// Truncation and replay-order rules

#[test]
fn the_segment_being_written_is_never_truncated_nor_checkpointed() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, false);
    let mut w = Workload::new();
    w.write_until(&wal, 4);
    let err = wal.checkpoint(0, 4, keep1, 0).unwrap_err();
    assert!(
        matches!(&err, WalError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput),
        "{err}"
    );
    assert_eq!(last_checkpoint(d).unwrap(), None);
    // No checkpoint: truncating everything keeps the live segment only.
    assert_eq!(wal.truncate(u64::MAX).unwrap(), 4);
    assert_eq!(wal.segment_range().unwrap(), (4, 4));
    assert_eq!(list_segments(d).unwrap(), vec![4]);
    let live = w.round();
    for rec in &live {
        wal.log(&[rec]).unwrap();
    }
    wal.close().unwrap();
    drop(wal);
    let want = read_events(&segment_name(d, 4));
    let (_wal, got, report) = open(d, false);
    assert_eq!(got, want);
    assert!(got.len() >= live.len());
    assert_eq!(report.checkpoint, None);
}

#[test]
fn truncation_refuses_to_open_a_gap_after_the_last_checkpoint() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let (wal, _, _) = open(d, false);
    Workload::new().write_until(&wal, 6);
    wal.checkpoint(0, 2, keep1, 0).unwrap();
    let err = wal.truncate(5).unwrap_err();
    assert!(
        matches!(&err, WalError::Gap(m) if m.contains("checkpoint.00000002")),
        "{err}"
    );
    assert_eq!(
        list_segments(d).unwrap(),
        (0..=6).collect::<Vec<_>>(),
        "nothing deleted"
    );
    assert_eq!(wal.stats().truncations_failed.load(Ordering::Relaxed), 1);
    assert_eq!(wal.truncate(3).unwrap(), 3);
}

#[test]
fn a_missing_segment_right_after_the_checkpoint_fails_open_as_upstream_does() {
    let f = Fixture::new(false);
    f.checkpoint().unwrap();
    fs::remove_file(segment_name(f.d(), f.to + 1)).unwrap();
    let err = try_open(f.d(), false).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, WalError::Gap(m) if m.contains(&format!("checkpoint.{:08}", f.to))
            && m.contains(&format!("{:08}", f.to + 1))),
        "{err}"
    );
    // Nothing was deleted by the failed open.
    assert_eq!(list_segments(f.d()).unwrap().first(), Some(&0));
}

#[test]
fn a_checkpoint_with_no_segment_after_it_opens_and_writes_after_it() {
    let f = Fixture::new(false);
    f.checkpoint().unwrap();
    for s in list_segments(f.d()).unwrap() {
        if s > f.to {
            fs::remove_file(segment_name(f.d(), s)).unwrap();
        }
    }
    let want = model(&flatten(f.before.range(..=f.to)), keep1, f.mint);
    let (wal, got, report) = open(f.d(), false);
    assert_eq!(got, want);
    assert_eq!(report.segments, 0);
    // The fresh segment comes after the checkpoint, so the next replay does not skip it.
    assert_eq!(wal.segment_range().unwrap(), (f.to + 1, f.to + 1));
    wal.log(&[b"\x04after".as_slice()]).unwrap();
    wal.close().unwrap();
    drop(wal);
    let (_wal, got, _) = open(f.d(), false);
    assert_eq!(got.last(), Some(&Ev::Other(b"\x04after".to_vec())));
    assert_eq!(got.len(), want.len() + 1);
}

#[test]
fn progress_counts_the_checkpoint_as_one_step() {
    let f = Fixture::new(false);
    f.checkpoint().unwrap();
    let live = list_segments(f.d())
        .unwrap()
        .into_iter()
        .filter(|&s| s > f.to)
        .count() as u64;
    let mut steps = Vec::new();
    let mut records = 0u64;
    let (_wal, report) = Wal::open_with_progress(
        f.d(),
        opts(false),
        Arc::new(OsFs),
        |_| {
            records += 1;
            Ok(())
        },
        |done, total| steps.push((done, total)),
    )
    .unwrap();
    let total = live + 1;
    assert_eq!(steps, (1..=total).map(|i| (i, total)).collect::<Vec<_>>());
    assert_eq!(report.records, records);
    assert_eq!(report.segments, live);
}

#[test]
fn a_record_replay_refuses_inside_a_checkpoint_is_an_error_not_a_repair() {
    let f = Fixture::new(false);
    f.checkpoint().unwrap();
    let mut n = 0;
    let err = Wal::open(f.d(), opts(false), Arc::new(OsFs), |_| {
        n += 1;
        if n == 3 {
            Err(cairn::tsdb::wal::record::RecordError::ZeroRef { offset: 17 })
        } else {
            Ok(())
        }
    })
    .map(|_| ())
    .unwrap_err();
    let c = err.corruption().expect("a corruption error");
    assert!(
        c.reason.contains("series ref 0 is invalid at byte 17"),
        "{c:?}"
    );
    assert!(c.checkpoint.is_some());
    assert!(
        list_segments(f.d()).unwrap().contains(&0),
        "nothing deleted"
    );
}
