//! WAL checkpoints in Prometheus's format (`tsdb/wlog/checkpoint.go`, format digest §4.10).
//!
//! A checkpoint condenses the oldest WAL segments into what memory may still need, so the
//! segments can be deleted and replay gets shorter.
//!
//! # On disk
//! ```text
//! wal/checkpoint.00000012/00000000   ordinary WAL segments: the same pages, fragments, CRCs,
//! wal/checkpoint.00000012/00000001   snappy flag and records as wal/NNNNNNNN, numbered from 0
//! wal/00000013                       the first segment the checkpoint does not cover
//! wal/00000014 …
//! ```
//! `checkpoint.N` (8 digits, the index of the **last** segment it covers) stands for the previous
//! checkpoint plus segments ≤ N. Replay reads the newest checkpoint, then segments N+1, N+2, …
//! (see `Wal::open`); a checkpoint is read whole and never repaired (module docs of
//! [`crate::tsdb::wal`]). `checkpoint.N.tmp` is a checkpoint being built; it is never read.
//!
//! # What is kept, and why
//! Records are read in order, filtered, re-encoded with [`record`] and written in the same order,
//! so a Series record still comes before the samples that use its ref.
//! - **Series**: only the refs `keep(ref)` accepts — the caller (the head) still holds the series,
//!   or still needs its labels for samples in segments after the checkpoint.
//! - **Samples** with `t >= mint`, whatever the ref (as upstream: a sample of a dropped series is
//!   skipped at replay as an unknown ref). A record left empty is dropped.
//! - **Tombstones** of kept refs whose interval ends at or after `mint` (`maxt >= mint`). Upstream
//!   keeps tombstones without asking `keep`; cairn drops those of dropped series too, because
//!   their Series record is gone and replay could not apply them to anything.
//! - **Everything else is dropped**: exemplars, metadata, histogram samples and unknown types.
//!   Upstream keeps exemplars and histograms with `t >= mint` and the latest metadata of each
//!   kept series; cairn neither writes nor replays those records, so it has nothing to keep. A
//!   WAL that Prometheus wrote loses them when cairn checkpoints it.
//!
//! # Atomic steps ([`checkpoint`])
//! 1. Inputs, by upstream's rule: if a checkpoint `checkpoint.I` exists, `from` may be at most
//!    `I + 1` (anything later would silently lose segments `I+1..from`) and is raised to `I + 1`;
//!    the inputs are that checkpoint's segments, then WAL segments `from..=to`. cairn also insists
//!    those segments are all on disk, end at `to` and (after a checkpoint) start at `I + 1`.
//! 2. Remove a stale `checkpoint.{to}.tmp`, create it afresh.
//! 3. Stream: one record at a time is read, filtered and framed into 32 KiB pages, written in
//!    batches of about 1 MiB; a record that does not fit the segment starts the next one (the
//!    segment size is respected, so a checkpoint may have several files). Memory stays bounded
//!    by the largest record plus one batch, whatever the size of the input.
//! 4. Pad the last page, fsync every file, fsync the tmp directory.
//! 5. If `checkpoint.{to}` exists already (an earlier attempt crashed after its rename, or the
//!    fsync after it failed), move it out of the way (upstream `fileutil.Replace` removes it;
//!    cairn renames it to `*.tmp-for-deletion` first so it never lies half deleted), rename the
//!    tmp directory to `checkpoint.{to}`, fsync the WAL directory, remove the old one.
//!
//! Between the two renames of step 5 no `checkpoint.{to}` exists, as between upstream's remove
//! and rename; a crash there loses the checkpoint, which is harmless only while segments ≤ `to`
//! are still on disk. They are, unless the caller asks again for a `to` it already truncated.
//!
//! Any error removes the tmp directory and returns; nothing else is touched. A crash leaves
//! `checkpoint.{to}.tmp`, which `Wal::open` removes (`.tmp` is in
//! [`crate::tsdb::fileutil::TMP_SUFFIXES`]). A torn or corrupt record in the *input* is an error:
//! repairing is not an option, since the head would not know which series records were lost.
//!
//! # The caller's sequence (Prometheus's `Head.truncateWAL`)
//! `(first, last) = wal.segment_range()`; never the segment being written, and only the older
//! two thirds: `to = first + (last - 1 - first) * 2 / 3`, skipped when `to <= first`. Then
//! `checkpoint(first, to)` → `Wal::truncate(to + 1)` → [`delete_checkpoints`]`(to)`. A crash
//! between any two steps is harmless: segments ≤ `to` and older checkpoints next to a newer
//! checkpoint are garbage, ignored and deleted by the next `Wal::open`.
//!
//! Checkpointing, truncating and deleting checkpoints of one WAL must not run concurrently with
//! each other (the `Wal` methods serialise them); appends may run alongside.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fs::{FileSystem, OsFs, SegmentFile};
use super::record::{self, RecordError, RefSample, Stone};
use super::segment::{self, Framer, ReadError, SegmentReader};
use super::{
    compress_record, list_segments, segment_name, WalError, DEFAULT_SEGMENT_SIZE, MAX_RECORD_SIZE,
};

/// Name prefix of checkpoint directories (upstream `CheckpointPrefix`).
pub const CHECKPOINT_PREFIX: &str = "checkpoint.";

/// Framed bytes collected before a write (upstream flushes in 1 MB increments).
const FLUSH_BYTES: usize = 1 << 20;

/// `wal/checkpoint.NNNNNNNN`, the checkpoint covering segments up to `index`.
pub fn checkpoint_dir(wal_dir: &Path, index: u64) -> PathBuf {
    wal_dir.join(format!("{CHECKPOINT_PREFIX}{index:08}"))
}

/// The index in a complete checkpoint's directory name: `checkpoint.` then ASCII digits only.
/// `checkpoint.00000003.tmp`, `checkpoint.` and anything else give `None`.
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(CHECKPOINT_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Complete checkpoints in `wal_dir`, ascending by index. Temporary directories, files and
/// other names are ignored (upstream fails on a non-directory named `checkpoint.*`; cairn
/// skips it, as it skips stray files among segments). A missing `wal_dir` has none.
pub fn list_checkpoints(wal_dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let entries = match fs::read_dir(wal_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(index) = name.to_str().and_then(parse_checkpoint_name) else {
            continue;
        };
        if entry.file_type()?.is_dir() {
            out.push((index, entry.path()));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

/// The complete checkpoint with the highest index, if any.
pub fn last_checkpoint(wal_dir: &Path) -> io::Result<Option<(u64, PathBuf)>> {
    Ok(list_checkpoints(wal_dir)?.pop())
}

/// Remove every checkpoint with an index below `below`; returns how many. Each is first renamed
/// to `*.tmp-for-deletion` (so none is ever seen half deleted; `Wal::open` removes leftovers),
/// then the directory is fsynced, then the renamed directories are removed and the directory
/// fsynced again.
pub fn delete_checkpoints(wal_dir: &Path, below: u64) -> io::Result<usize> {
    let doomed: Vec<PathBuf> = list_checkpoints(wal_dir)?
        .into_iter()
        .filter(|(i, _)| *i < below)
        .map(|(_, p)| p)
        .collect();
    if doomed.is_empty() {
        return Ok(0);
    }
    let mut renamed = Vec::with_capacity(doomed.len());
    for path in &doomed {
        let to = with_suffix(path, ".tmp-for-deletion");
        remove_dir_if_exists(&to)?;
        fs::rename(path, &to)?;
        renamed.push(to);
    }
    crate::tsdb::fileutil::fsync_dir(wal_dir)?;
    for path in &renamed {
        fs::remove_dir_all(path)?;
    }
    crate::tsdb::fileutil::fsync_dir(wal_dir)?;
    Ok(doomed.len())
}

/// What [`checkpoint`] read, kept and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// The earlier checkpoint this one was built on.
    pub base: Option<u64>,
    /// WAL segments read (the base checkpoint's files not included).
    pub segments_read: u64,
    pub records_read: u64,
    pub records_written: u64,
    pub series_read: u64,
    pub series_kept: u64,
    pub samples_read: u64,
    pub samples_kept: u64,
    pub tombstones_read: u64,
    pub tombstones_kept: u64,
    /// Records of the types a checkpoint drops whole (exemplars, metadata, histograms, unknown).
    pub other_records_dropped: u64,
    pub segments_written: u64,
    /// Bytes written to the checkpoint's segment files, padding included.
    pub bytes_written: u64,
    pub duration: Duration,
}

/// How [`checkpoint_with`] writes the checkpoint's segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// Snappy-compress records when that makes them smaller (the WAL's own rule).
    pub compress: bool,
    /// Segment size of the checkpoint's files (upstream always uses the 128 MiB default).
    pub segment_size: usize,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        CheckpointOptions {
            compress: true,
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

/// A damaged record where cairn does not repair: inside a checkpoint (written atomically, so
/// damage means the disk corrupted it), or in a segment a checkpoint reads. It travels as the
/// source of a [`WalError::Io`] of kind `InvalidData` (the server maps WAL errors exhaustively,
/// so this layer adds no variant); [`WalError::corruption`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    /// The checkpoint directory, when the damaged file is one of its segments.
    pub checkpoint: Option<PathBuf>,
    /// The damaged file.
    pub path: PathBuf,
    /// Offset of the damaged record's first byte in `path`.
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "damaged record in {} at offset {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )?;
        if let Some(cp) = &self.checkpoint {
            write!(
                f,
                "; checkpoint {} is written atomically, so this is disk corruption and it is not \
                 repaired: restore the WAL from a backup, or move the checkpoint away (losing the \
                 data it holds) to start",
                cp.display()
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Corruption {}

impl Corruption {
    fn into_wal_error(self, op: &'static str, at: &Path) -> WalError {
        WalError::Io {
            op,
            path: at.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, self),
        }
    }
}

/// Why reading one segment file stopped early.
pub(crate) enum ReadStop<E> {
    Io(io::Error),
    /// A torn or corrupt record.
    Damaged {
        offset: u64,
        reason: String,
    },
    /// The record handler refused the record at `offset`.
    Handler {
        offset: u64,
        error: E,
    },
}

/// Read every record of the segment file at `path`, in order, into `on_record`.
pub(crate) fn for_each_record<E>(
    path: &Path,
    mut on_record: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), ReadStop<E>> {
    let file = File::open(path).map_err(ReadStop::Io)?;
    let mut r = SegmentReader::new(
        BufReader::with_capacity(segment::PAGE_SIZE * 4, file),
        MAX_RECORD_SIZE,
    );
    loop {
        match r.next_record() {
            Ok(Some(rec)) => {
                if let Err(error) = on_record(rec) {
                    return Err(ReadStop::Handler {
                        offset: r.record_offset(),
                        error,
                    });
                }
            }
            Ok(None) => return Ok(()),
            Err(ReadError::Io { kind, .. }) => return Err(ReadStop::Io(io::Error::from(kind))),
            Err(ReadError::Torn { offset }) => {
                return Err(ReadStop::Damaged {
                    offset,
                    reason: "torn record: the file ends inside it".into(),
                })
            }
            Err(ReadError::Corrupt { offset, reason }) => {
                return Err(ReadStop::Damaged { offset, reason })
            }
        }
    }
}

/// The segment files of the checkpoint in `dir`, in order. They must be numbered 0, 1, 2, …:
/// a missing file is damage, not something to skip.
fn checkpoint_segments(dir: &Path) -> Result<Vec<PathBuf>, WalError> {
    let segs = list_segments(dir).map_err(|e| WalError::io("list checkpoint segments", dir, e))?;
    for (want, &got) in (0u64..).zip(&segs) {
        if got != want {
            return Err(Corruption {
                checkpoint: Some(dir.to_path_buf()),
                path: segment_name(dir, want),
                offset: 0,
                reason: format!("segment file {want:08} is missing (the next one is {got:08})"),
            }
            .into_wal_error("read checkpoint", dir));
        }
    }
    Ok(segs.into_iter().map(|s| segment_name(dir, s)).collect())
}

/// Replay every record of the checkpoint in `dir` into `on_record`; returns (records, bytes).
/// Any damage, and any record the handler refuses, is an error naming the checkpoint.
pub(crate) fn replay_checkpoint(
    dir: &Path,
    mut on_record: impl FnMut(&[u8]) -> super::ReplayResult,
) -> Result<(u64, u64), WalError> {
    let (mut records, mut bytes) = (0u64, 0u64);
    for path in checkpoint_segments(dir)? {
        let res = for_each_record(&path, |rec| {
            records += 1;
            bytes += rec.len() as u64;
            on_record(rec)
        });
        let (offset, reason) = match res {
            Ok(()) => continue,
            Err(ReadStop::Io(e)) => return Err(WalError::io("read checkpoint", &path, e)),
            Err(ReadStop::Damaged { offset, reason }) => (offset, reason),
            Err(ReadStop::Handler { offset, error }) => {
                (offset, format!("replay refused the record: {error}"))
            }
        };
        return Err(Corruption {
            checkpoint: Some(dir.to_path_buf()),
            path,
            offset,
            reason,
        }
        .into_wal_error("replay checkpoint", dir));
    }
    Ok((records, bytes))
}

/// Build `checkpoint.{to}` from the last checkpoint and WAL segments `from..=to` of `wal_dir`
/// (upstream `wlog.Checkpoint(w, from, to, keep, mint)`), writing 128 MiB segments like upstream.
/// See the module docs for what is kept and the atomic steps.
///
/// `to` must be a closed segment, never the one being written: the next `Wal::open` deletes
/// every segment ≤ `to`. `Wal::checkpoint` checks that, and uses the WAL's own segment size.
pub fn checkpoint(
    wal_dir: &Path,
    from: u64,
    to: u64,
    keep: impl Fn(u64) -> bool,
    mint: i64,
    compress: bool,
) -> Result<CheckpointStats, WalError> {
    checkpoint_with(
        wal_dir,
        from,
        to,
        keep,
        mint,
        CheckpointOptions {
            compress,
            segment_size: DEFAULT_SEGMENT_SIZE,
        },
        &OsFs,
    )
}

/// [`checkpoint`] with a chosen segment size, writing the checkpoint's files through `fs` (the
/// WAL's file seam, so tests can fail its writes and fsyncs).
pub fn checkpoint_with(
    wal_dir: &Path,
    from: u64,
    to: u64,
    keep: impl Fn(u64) -> bool,
    mint: i64,
    opts: CheckpointOptions,
    fs: &dyn FileSystem,
) -> Result<CheckpointStats, WalError> {
    let start = Instant::now();
    let inputs = plan_inputs(wal_dir, from, to)?;
    let final_dir = checkpoint_dir(wal_dir, to);
    let tmp = with_suffix(&final_dir, ".tmp");
    remove_dir_if_exists(&tmp).map_err(|e| WalError::io("remove stale checkpoint", &tmp, e))?;
    std::fs::create_dir(&tmp).map_err(|e| WalError::io("create checkpoint dir", &tmp, e))?;
    let res = build(wal_dir, &tmp, &inputs, &keep, mint, opts, fs)
        .and_then(|stats| install(wal_dir, &tmp, &final_dir, fs).map(|()| stats));
    match res {
        Ok(stats) => Ok(CheckpointStats {
            base: inputs.base.as_ref().map(|(i, _)| *i),
            duration: start.elapsed(),
            ..stats
        }),
        Err(e) => {
            // Best effort: a leftover is removed by the next open anyway.
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// What a checkpoint reads: the base checkpoint, then these WAL segments.
#[derive(Debug, PartialEq, Eq)]
struct Inputs {
    base: Option<(u64, PathBuf)>,
    segments: Vec<u64>,
}

fn plan_inputs(wal_dir: &Path, from: u64, to: u64) -> Result<Inputs, WalError> {
    if from > to {
        return Err(WalError::Io {
            op: "checkpoint",
            path: wal_dir.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("from segment {from} is after to segment {to}"),
            ),
        });
    }
    let base =
        last_checkpoint(wal_dir).map_err(|e| WalError::io("list checkpoints", wal_dir, e))?;
    let on_disk = list_segments(wal_dir).map_err(|e| WalError::io("list segments", wal_dir, e))?;
    let first = match &base {
        Some((i, p)) if from > i + 1 => {
            return Err(WalError::Gap(format!(
                "{} covers segments up to {i:08}, but the new checkpoint starts at {from:08}: \
                 segments {:08}..{:08} would be lost",
                p.display(),
                i + 1,
                from - 1,
            )))
        }
        // Upstream: WAL files below the last checkpoint are ignored (they are garbage).
        Some((i, _)) => i + 1,
        None => from,
    };
    let segments: Vec<u64> = on_disk
        .into_iter()
        .filter(|s| (first..=to).contains(s))
        .collect();
    if first <= to {
        // Without a base the WAL may start after `from` (its older segments were truncated);
        // after a base it must go on at the next segment. Either way, up to `to` without holes.
        let expect_first = if base.is_some() {
            first
        } else {
            segments.first().copied().unwrap_or(first)
        };
        let complete = segments.first() == Some(&expect_first)
            && segments.last() == Some(&to)
            && segments
                .windows(2)
                .all(|w| matches!(w, [a, b] if *b == a + 1));
        if !complete {
            return Err(WalError::Gap(format!(
                "checkpoint of segments {first:08}..={to:08} in {}: found only {}",
                wal_dir.display(),
                describe(&segments),
            )));
        }
    }
    Ok(Inputs { base, segments })
}

fn describe(segs: &[u64]) -> String {
    match segs {
        [] => "none of them".into(),
        [one] => format!("{one:08}"),
        _ => segs
            .iter()
            .map(|s| format!("{s:08}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Why filtering one input record failed.
enum Stop {
    Decode(RecordError),
    Write(WalError),
}

/// Read the inputs, filter and write them into the segments of `tmp`; fsync files and `tmp`.
fn build(
    wal_dir: &Path,
    tmp: &Path,
    inputs: &Inputs,
    keep: &dyn Fn(u64) -> bool,
    mint: i64,
    opts: CheckpointOptions,
    fs: &dyn FileSystem,
) -> Result<CheckpointStats, WalError> {
    let mut st = CheckpointStats::default();
    let stats = &mut st;
    let mut files: Vec<(PathBuf, Option<&Path>)> = Vec::new();
    if let Some((_, dir)) = &inputs.base {
        for path in checkpoint_segments(dir)? {
            files.push((path, Some(dir.as_path())));
        }
    }
    for &s in &inputs.segments {
        files.push((segment_name(wal_dir, s), None));
    }
    let mut w = CheckpointWriter::create(tmp, fs, opts)?;
    let mut f = Filter::default();
    for (path, in_checkpoint) in &files {
        let res = for_each_record(path, |rec| {
            stats.records_read += 1;
            match f.apply(rec, keep, mint, stats) {
                Err(e) => Err(Stop::Decode(e)),
                Ok(None) => Ok(()),
                Ok(Some(out)) => w.log(out).map_err(Stop::Write),
            }
        });
        let (offset, reason) = match res {
            Ok(()) => {
                if in_checkpoint.is_none() {
                    stats.segments_read += 1;
                }
                continue;
            }
            Err(ReadStop::Io(e)) => return Err(WalError::io("read", path, e)),
            Err(ReadStop::Handler {
                error: Stop::Write(e),
                ..
            }) => return Err(e),
            Err(ReadStop::Handler {
                offset,
                error: Stop::Decode(e),
            }) => (offset, format!("undecodable record: {e}")),
            Err(ReadStop::Damaged { offset, reason }) => (offset, reason),
        };
        let at = in_checkpoint.unwrap_or(path.as_path());
        return Err(Corruption {
            checkpoint: in_checkpoint.map(Path::to_path_buf),
            path: path.clone(),
            offset,
            reason,
        }
        .into_wal_error("checkpoint input", at));
    }
    w.finish(stats)?;
    fs.sync_dir(tmp)
        .map_err(|e| WalError::io("fsync checkpoint dir", tmp, e))?;
    Ok(st)
}

/// Put the finished `tmp` in place as `final_dir`, replacing an existing one.
fn install(
    wal_dir: &Path,
    tmp: &Path,
    final_dir: &Path,
    fs: &dyn FileSystem,
) -> Result<(), WalError> {
    let old = with_suffix(final_dir, ".tmp-for-deletion");
    let replacing = final_dir.is_dir();
    if replacing {
        remove_dir_if_exists(&old).map_err(|e| WalError::io("remove", &old, e))?;
        std::fs::rename(final_dir, &old)
            .map_err(|e| WalError::io("move old checkpoint aside", final_dir, e))?;
    }
    std::fs::rename(tmp, final_dir).map_err(|e| WalError::io("rename checkpoint", tmp, e))?;
    fs.sync_dir(wal_dir)
        .map_err(|e| WalError::io("fsync dir", wal_dir, e))?;
    if replacing {
        // The new checkpoint is in place; a leftover is removed by the next open.
        std::fs::remove_dir_all(&old)
            .map_err(|e| WalError::io("remove old checkpoint", &old, e))?;
    }
    Ok(())
}

/// Reusable buffers for [`Filter::apply`].
#[derive(Default)]
struct Filter {
    samples: Vec<RefSample>,
    stones: Vec<Stone>,
    out: Vec<u8>,
}

impl Filter {
    /// Filter one record by the checkpoint rules (module docs); `Some(bytes)` is the re-encoded
    /// record to write, `None` when nothing of it survives.
    fn apply(
        &mut self,
        rec: &[u8],
        keep: &dyn Fn(u64) -> bool,
        mint: i64,
        stats: &mut CheckpointStats,
    ) -> Result<Option<&[u8]>, RecordError> {
        self.out.clear();
        let kept = match rec.first().copied() {
            Some(record::SERIES) => {
                let out = &mut self.out;
                out.push(record::SERIES);
                let (mut read, mut kept) = (0u64, 0u64);
                record::decode_series(rec, &mut Vec::new(), |sref, labels| {
                    read += 1;
                    if keep(sref) {
                        kept += 1;
                        record::encode_series_entry(out, sref, labels);
                    }
                })?;
                stats.series_read += read;
                stats.series_kept += kept;
                kept
            }
            Some(record::SAMPLES) => {
                self.samples.clear();
                record::decode_samples(rec, &mut self.samples)?;
                stats.samples_read += self.samples.len() as u64;
                self.samples.retain(|s| s.t >= mint);
                let kept = self.samples.len() as u64;
                stats.samples_kept += kept;
                if kept > 0 {
                    record::encode_samples(&mut self.out, &self.samples);
                }
                kept
            }
            Some(record::TOMBSTONES) => {
                self.stones.clear();
                record::decode_tombstones(rec, &mut self.stones)?;
                stats.tombstones_read += self.stones.len() as u64;
                self.stones.retain(|s| s.maxt >= mint && keep(s.sref));
                let kept = self.stones.len() as u64;
                stats.tombstones_kept += kept;
                if kept > 0 {
                    record::encode_tombstones(&mut self.out, &self.stones);
                }
                kept
            }
            _ => {
                stats.other_records_dropped += 1;
                0
            }
        };
        Ok((kept > 0).then_some(self.out.as_slice()))
    }
}

/// Writes records into numbered segment files in one directory, as the WAL writer lays them out.
struct CheckpointWriter<'a> {
    dir: &'a Path,
    fs: &'a dyn FileSystem,
    opts: CheckpointOptions,
    index: u64,
    file: Arc<dyn SegmentFile>,
    framer: Framer,
    out: Vec<u8>,
    compressed: Vec<u8>,
    encoder: snap::raw::Encoder,
    bytes: u64,
    records: u64,
}

impl<'a> CheckpointWriter<'a> {
    /// Create segment 0 at once: like upstream, an empty checkpoint still has one (empty) file.
    fn create(
        dir: &'a Path,
        fs: &'a dyn FileSystem,
        opts: CheckpointOptions,
    ) -> Result<Self, WalError> {
        let path = segment_name(dir, 0);
        let file = fs
            .create_segment(&path)
            .map_err(|e| WalError::io("create segment", &path, e))?;
        Ok(CheckpointWriter {
            dir,
            fs,
            opts,
            index: 0,
            file,
            framer: Framer::new(opts.segment_size),
            out: Vec::new(),
            compressed: Vec::new(),
            encoder: snap::raw::Encoder::new(),
            bytes: 0,
            records: 0,
        })
    }

    fn log(&mut self, rec: &[u8]) -> Result<(), WalError> {
        let compressed = if self.opts.compress {
            compress_record(&mut self.encoder, rec, &mut self.compressed)
        } else {
            None
        };
        if self
            .framer
            .needs_new_segment(compressed.unwrap_or(rec.len()))
        {
            self.next_segment()?;
        }
        match compressed {
            Some(n) => {
                let data = self.compressed.get(..n).unwrap_or_default();
                self.framer.frame(&mut self.out, data, true);
            }
            None => self.framer.frame(&mut self.out, rec, false),
        }
        self.records += 1;
        if self.out.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn path(&self) -> PathBuf {
        segment_name(self.dir, self.index)
    }

    fn flush(&mut self) -> Result<(), WalError> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.out)
            .map_err(|e| WalError::io("write", &self.path(), e))?;
        self.bytes += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }

    /// Pad the last page, write and fsync the current segment.
    fn seal(&mut self) -> Result<(), WalError> {
        self.framer.pad_page(&mut self.out);
        self.flush()?;
        self.file
            .sync()
            .map_err(|e| WalError::io("fsync", &self.path(), e))
    }

    fn next_segment(&mut self) -> Result<(), WalError> {
        self.seal()?;
        self.index += 1;
        let path = self.path();
        self.file = self
            .fs
            .create_segment(&path)
            .map_err(|e| WalError::io("create segment", &path, e))?;
        self.framer.reset();
        Ok(())
    }

    fn finish(mut self, stats: &mut CheckpointStats) -> Result<(), WalError> {
        self.seal()?;
        stats.records_written = self.records;
        stats.segments_written = self.index + 1;
        stats.bytes_written = self.bytes;
        Ok(())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn remove_dir_if_exists(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::Labels;

    #[test]
    fn checkpoint_dirs_are_named_with_eight_digits_like_prometheus() {
        let d = Path::new("/data/wal");
        assert_eq!(
            checkpoint_dir(d, 12),
            Path::new("/data/wal/checkpoint.00000012")
        );
        assert_eq!(
            checkpoint_dir(d, 123_456_789),
            Path::new("/data/wal/checkpoint.123456789")
        );
    }

    #[test]
    fn only_checkpoint_dot_digits_is_a_checkpoint_name() {
        let cases: &[(&str, Option<u64>)] = &[
            ("checkpoint.00000012", Some(12)),
            ("checkpoint.5", Some(5)),
            ("checkpoint.00000012.tmp", None),
            ("checkpoint.00000012.tmp-for-deletion", None),
            ("checkpoint.", None),
            ("checkpoint.+5", None),
            ("checkpoint.-5", None),
            ("checkpoint.99999999999999999999999", None),
            ("00000012", None),
            ("Checkpoint.00000012", None),
        ];
        for &(name, want) in cases {
            assert_eq!(parse_checkpoint_name(name), want, "{name}");
        }
    }

    #[test]
    fn the_last_checkpoint_is_the_highest_complete_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(last_checkpoint(d).unwrap(), None);
        for name in ["checkpoint.00000003", "checkpoint.9", "checkpoint.00000010"] {
            fs::create_dir(d.join(name)).unwrap();
        }
        // Neither a tmp directory, a file nor a bad name counts, however high.
        fs::create_dir(d.join("checkpoint.00000099.tmp")).unwrap();
        fs::write(d.join("checkpoint.00000098"), b"not a dir").unwrap();
        fs::create_dir(d.join("checkpoint.x")).unwrap();
        fs::write(d.join("00000200"), b"").unwrap();
        let all: Vec<u64> = list_checkpoints(d).unwrap().iter().map(|c| c.0).collect();
        assert_eq!(all, vec![3, 9, 10], "numeric order, not name order");
        assert_eq!(
            last_checkpoint(d).unwrap(),
            Some((10, d.join("checkpoint.00000010")))
        );
        assert_eq!(last_checkpoint(&d.join("missing")).unwrap(), None);
    }

    #[test]
    fn deleting_checkpoints_removes_only_those_below_and_leaves_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in [1u64, 4, 7] {
            fs::create_dir(checkpoint_dir(d, i)).unwrap();
            fs::write(checkpoint_dir(d, i).join("00000000"), b"x").unwrap();
        }
        assert_eq!(delete_checkpoints(d, 7).unwrap(), 2);
        let mut names: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, vec!["checkpoint.00000007"]);
        assert_eq!(delete_checkpoints(d, 7).unwrap(), 0);
    }

    fn series_rec(refs: &[u64]) -> Vec<u8> {
        let labels: Vec<Labels> = refs
            .iter()
            .map(|r| Labels::from_pairs([("__name__", "m"), ("id", &r.to_string())]))
            .collect();
        let mut out = Vec::new();
        record::encode_series(&mut out, refs.iter().copied().zip(&labels));
        out
    }

    fn samples_rec(s: &[(u64, i64)]) -> Vec<u8> {
        let s: Vec<RefSample> = s
            .iter()
            .map(|&(sref, t)| RefSample {
                sref,
                t,
                v: t as f64,
            })
            .collect();
        let mut out = Vec::new();
        record::encode_samples(&mut out, &s);
        out
    }

    fn stones_rec(s: &[(u64, i64, i64)]) -> Vec<u8> {
        let s: Vec<Stone> = s
            .iter()
            .map(|&(sref, mint, maxt)| Stone { sref, mint, maxt })
            .collect();
        let mut out = Vec::new();
        record::encode_tombstones(&mut out, &s);
        out
    }

    fn apply(rec: &[u8], stats: &mut CheckpointStats) -> Option<Vec<u8>> {
        let keep = |r: u64| r.is_multiple_of(2);
        Filter::default()
            .apply(rec, &keep, 100, stats)
            .unwrap()
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn filter_keeps_series_that_keep_accepts_and_drops_records_left_empty() {
        let mut st = CheckpointStats::default();
        assert_eq!(
            apply(&series_rec(&[1, 2, 3, 4]), &mut st),
            Some(series_rec(&[2, 4]))
        );
        assert_eq!(apply(&series_rec(&[1, 3]), &mut st), None);
        assert_eq!((st.series_read, st.series_kept), (6, 2));
    }

    #[test]
    fn filter_keeps_samples_from_mint_on_whatever_their_series() {
        let mut st = CheckpointStats::default();
        // t == mint stays, t == mint - 1 goes; the odd (dropped) series keeps its samples, as
        // upstream does.
        let got = apply(
            &samples_rec(&[(1, 99), (2, 100), (3, 150), (4, 20)]),
            &mut st,
        );
        assert_eq!(got, Some(samples_rec(&[(2, 100), (3, 150)])));
        assert_eq!(apply(&samples_rec(&[(2, 5), (4, 99)]), &mut st), None);
        assert_eq!((st.samples_read, st.samples_kept), (6, 2));
    }

    #[test]
    fn filter_keeps_tombstones_of_kept_series_that_end_at_or_after_mint() {
        let mut st = CheckpointStats::default();
        let got = apply(
            &stones_rec(&[(2, 0, 100), (2, 0, 99), (3, 0, 500), (4, 150, 200)]),
            &mut st,
        );
        assert_eq!(got, Some(stones_rec(&[(2, 0, 100), (4, 150, 200)])));
        assert_eq!(apply(&stones_rec(&[(1, 0, 500)]), &mut st), None);
        assert_eq!((st.tombstones_read, st.tombstones_kept), (5, 2));
    }

    #[test]
    fn filter_drops_exemplars_metadata_histograms_and_unknown_records() {
        let mut st = CheckpointStats::default();
        for typ in [4u8, 5, 6, 7, 8, 200] {
            assert_eq!(apply(&[typ, 1, 2, 3], &mut st), None, "type {typ}");
        }
        assert_eq!(apply(&[], &mut st), None);
        assert_eq!(st.other_records_dropped, 7);
    }

    #[test]
    fn filter_reports_an_undecodable_record() {
        let mut rec = samples_rec(&[(2, 100)]);
        rec.truncate(rec.len() - 3);
        let keep = |_: u64| true;
        let mut f = Filter::default();
        let r = f.apply(&rec, &keep, 0, &mut CheckpointStats::default());
        assert!(
            matches!(r, Err(RecordError::Truncated { .. })),
            "{:?}",
            r.err()
        );
    }

    fn touch_segments(d: &Path, segs: &[u64]) {
        for &s in segs {
            fs::write(segment_name(d, s), b"").unwrap();
        }
    }

    #[test]
    fn inputs_follow_upstream_rules_around_the_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch_segments(d, &[2, 3, 4, 5, 6, 7]);
        // No checkpoint: the WAL may start after `from`.
        let got = plan_inputs(d, 0, 4).unwrap();
        assert_eq!(got.base, None);
        assert_eq!(got.segments, vec![2, 3, 4]);
        // `to` must exist, and the range must have no holes.
        assert!(matches!(plan_inputs(d, 2, 9), Err(WalError::Gap(_))));
        fs::remove_file(segment_name(d, 3)).unwrap();
        assert!(matches!(plan_inputs(d, 2, 5), Err(WalError::Gap(_))));
        touch_segments(d, &[3]);
        assert!(matches!(
            plan_inputs(d, 5, 4),
            Err(WalError::Io { source, .. }) if source.kind() == io::ErrorKind::InvalidInput
        ));

        // With checkpoint.3: `from` is raised to 4; segments below it are ignored.
        fs::create_dir(checkpoint_dir(d, 3)).unwrap();
        let got = plan_inputs(d, 2, 6).unwrap();
        assert_eq!(got.base, Some((3, checkpoint_dir(d, 3))));
        assert_eq!(got.segments, vec![4, 5, 6]);
        // A `from` past 4 would lose segment 4: upstream's "unexpected gap to last checkpoint".
        let err = plan_inputs(d, 5, 6).unwrap_err();
        assert!(
            matches!(&err, WalError::Gap(m) if m.contains("checkpoint.00000003")),
            "{err}"
        );
        // After a checkpoint, the next segment must be there.
        fs::remove_file(segment_name(d, 4)).unwrap();
        assert!(matches!(plan_inputs(d, 4, 6), Err(WalError::Gap(_))));
        // `to` at or below the checkpoint: nothing but the checkpoint itself is read.
        let got = plan_inputs(d, 2, 3).unwrap();
        assert_eq!(got.segments, Vec::<u64>::new());
    }
}
