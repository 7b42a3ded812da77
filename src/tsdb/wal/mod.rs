//! Write-ahead log in Prometheus's `wlog` format: `wal/00000000`, `wal/00000001`, …, and
//! checkpoints `wal/checkpoint.NNNNNNNN/` that stand for every segment up to `NNNNNNNN`.
//!
//! Two layers (as in Prometheus): [`segment`] frames opaque records into 32 KiB pages with
//! CRC32C; [`record`] encodes series, samples and tombstones. This module owns the files:
//! rotation, the sync policy, group commit, poisoning, replay, repair and truncation;
//! [`checkpoint`] condenses old segments so they can be truncated.
//!
//! # Invariants
//! - A record is acknowledged (the `log*` call returns `Ok`) only after its bytes were written
//!   and — under [`SyncPolicy::Always`] — fsynced. Concurrent writers share one fsync: the first
//!   to need one becomes the leader and syncs everything written so far; the others find their
//!   record already covered (group commit).
//! - A failed write or fsync **poisons** the writer: every later call fails with
//!   [`WalError::Poisoned`] until [`Wal::recover`] has cut the damaged tail and opened a fresh
//!   segment. A failed fsync is never retried: the kernel may have dropped the dirty pages.
//! - Every open starts a new segment after the last one (never appends to an old file), as
//!   Prometheus does, so a torn tail from a crash is never written over.
//! - Replay stops at the first torn or corrupt record; repair truncates that segment where the
//!   record starts and deletes every later segment (causality: later records may depend on the
//!   lost one), exactly Prometheus's `WL.Repair` semantics, then counts the repair.
//!
//! # Checkpoints and replay order
//! `Wal::open` first removes leftovers (`checkpoint.N.tmp`, `*.tmp-for-deletion`), then:
//! 1. replays every record of the newest complete checkpoint `checkpoint.N` (its files in
//!    order), as one progress step. A torn or corrupt record there is **not** repaired: the
//!    checkpoint was written atomically, so damage is disk corruption, and dropping the rest
//!    would silently lose series. Open fails with an error naming the checkpoint, the file and
//!    the offset ([`WalError::corruption`]), and deletes nothing;
//! 2. deletes segments ≤ N and older checkpoints: garbage from a crash between checkpoint,
//!    truncation and checkpoint deletion, which the checkpoint fully covers;
//! 3. replays segments N+1, N+2, … with the gap check and repair above. As in Prometheus
//!    (`Head.Init` opens each segment from N+1 to the last and fails on a missing one), the
//!    first segment after `checkpoint.N` must be N+1: a later one means segments were lost, and
//!    open fails with [`WalError::Gap`]. No segment after the checkpoint at all is fine;
//! 4. writes on in a fresh segment after both the last segment and N.
//!
//! [`Wal::truncate`] deletes segments below an index (never the one being written, never
//! leaving a gap after the last checkpoint). The caller's sequence is in [`checkpoint`]'s docs.

pub mod checkpoint;
pub mod fs;
pub mod record;
mod replay;
pub mod segment;
mod writer;

use self::replay::*;
pub(crate) use self::writer::compress_record;

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use self::fs::{FileSystem, SegmentFile};
use self::segment::{Framer, ReadError, SegmentReader};

/// Default segment size, as in Prometheus.
pub const DEFAULT_SEGMENT_SIZE: usize = 128 * 1024 * 1024;
/// Largest record replay accepts after decompression; a snappy header claiming more is treated
/// as corruption instead of an allocation.
pub const MAX_RECORD_SIZE: usize = 512 * 1024 * 1024;

/// When the WAL fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// fsync before every acknowledgement (group commit shares one fsync among concurrent
    /// writers). A 2xx survives power loss.
    #[default]
    Always,
    /// fsync in the background at most this often; a crash of the machine can lose up to this
    /// much acknowledged data (a crash of the process loses nothing).
    Interval(Duration),
    /// Never fsync except when a segment is closed; the OS decides.
    Never,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "never" => Ok(SyncPolicy::Never),
            other => crate::tsdb::parse_duration(other)
                .filter(|d| !d.is_zero())
                .map(SyncPolicy::Interval)
                .ok_or_else(|| format!("invalid WAL sync policy {other:?}: want always, never or a duration like 100ms")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WalOptions {
    pub segment_size: usize,
    pub sync: SyncPolicy,
    /// Snappy-compress records when that makes them smaller (Prometheus's default since 2.20).
    pub compress: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: DEFAULT_SEGMENT_SIZE,
            sync: SyncPolicy::Always,
            compress: true,
        }
    }
}

/// Why the writer refuses to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoisonCause {
    WriteFailed,
    SyncFailed,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    #[error("WAL is poisoned after a failed {} on segment {segment}: {detail}; writes are refused until a fresh segment is opened",
        if *.cause == PoisonCause::WriteFailed { "write" } else { "fsync" })]
    Poisoned {
        cause: PoisonCause,
        segment: u64,
        detail: String,
    },
    #[error("WAL {op} failed for {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("WAL segments are not contiguous: {0}")]
    Gap(String),
    #[error("WAL is closed")]
    Closed,
    #[error("WAL opened a fresh segment during this write; retry")]
    EpochChanged,
}

impl WalError {
    /// Whether writing again can succeed: a poisoned writer heals by opening a fresh segment,
    /// a closed one is shutting down; an I/O error may clear; a gap is damage on disk.
    pub fn retry(&self) -> crate::tsdb::Retry {
        use crate::tsdb::Retry;
        match self {
            WalError::Poisoned { .. } | WalError::EpochChanged | WalError::Closed => Retry::Soon,
            WalError::Io { .. } => Retry::Maybe,
            WalError::Gap(_) => Retry::Never,
        }
    }

    fn io(op: &'static str, path: &Path, source: io::Error) -> WalError {
        WalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The damaged record behind this error, when it is one cairn refuses to repair: inside a
    /// checkpoint, or in a segment a checkpoint was reading.
    pub fn corruption(&self) -> Option<&checkpoint::Corruption> {
        match self {
            WalError::Io { source, .. } => source.get_ref()?.downcast_ref(),
            _ => None,
        }
    }

    fn refused(op: &'static str, path: &Path, why: String) -> WalError {
        WalError::io(op, path, io::Error::new(io::ErrorKind::InvalidInput, why))
    }
}

/// Upper bounds (seconds) of the fsync-duration histogram in [`WalStats::fsync_buckets`]; the
/// last bucket counts everything above the last bound.
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

/// Counters the WAL keeps for `/metrics` (read with `Relaxed`; they are statistics).
#[derive(Debug, Default)]
pub struct WalStats {
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    /// fsyncs by duration: index `i` counts durations in (`FSYNC_BUCKETS[i-1]`,
    /// `FSYNC_BUCKETS[i]`]; the last entry those above every bound.
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    pub writes_failed: AtomicU64,
    pub records_written: AtomicU64,
    pub bytes_written: AtomicU64,
    pub corruptions_repaired: AtomicU64,
    pub segment: AtomicU64,
    /// [`Wal::truncate`] calls (`prometheus_tsdb_wal_truncations_total`).
    pub truncations: AtomicU64,
    /// … of which failed (`prometheus_tsdb_wal_truncations_failed_total`).
    pub truncations_failed: AtomicU64,
    /// [`Wal::checkpoint`] calls (`prometheus_tsdb_checkpoint_creations_total`).
    pub checkpoint_creations: AtomicU64,
    /// … of which failed (`prometheus_tsdb_checkpoint_creations_failed_total`).
    pub checkpoint_creations_failed: AtomicU64,
    /// [`Wal::delete_checkpoints`] calls (`prometheus_tsdb_checkpoint_deletions_total`).
    pub checkpoint_deletions: AtomicU64,
    /// … of which failed (`prometheus_tsdb_checkpoint_deletions_failed_total`).
    pub checkpoint_deletions_failed: AtomicU64,
}

impl WalStats {
    fn observe_fsync(&self, d: Duration) {
        self.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
        let secs = d.as_secs_f64();
        let i = FSYNC_BUCKETS.partition_point(|&b| b < secs);
        if let Some(b) = self.fsync_buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What replay found.
#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    /// The checkpoint replayed first (its index: it covers segments up to this one).
    pub checkpoint: Option<u64>,
    /// WAL segments replayed (the checkpoint's files not included).
    pub segments: u64,
    /// Records replayed, the checkpoint's included.
    pub records: u64,
    /// Bytes of those records (after decompression).
    pub bytes: u64,
    /// Segments the checkpoint covers, plus older checkpoints, found next to it (left by a
    /// crash between checkpointing, truncation and checkpoint deletion) and deleted by this open.
    pub obsolete_removed: u64,
    /// Set when a torn or corrupt record was found and repaired.
    pub repaired: Option<Repair>,
}

#[derive(Debug, Clone)]
pub struct Repair {
    pub segment: u64,
    pub offset: u64,
    pub error: String,
    pub segments_deleted: u64,
    pub bytes_dropped: u64,
}

/// The record handler passed to [`Wal::open`] may reject a record it cannot decode; replay then
/// treats that record as corrupt (Prometheus does the same).
pub type ReplayResult = Result<(), record::RecordError>;

struct Writer {
    seg_index: u64,
    file: Arc<dyn SegmentFile>,
    framer: Framer,
    /// End of the last complete, successful write to `file`.
    good_pos: u64,
    /// End of what the last successful fsync of `file` covered.
    synced_pos: u64,
    /// Number of successful `log` calls; also the "LSN" group commit compares.
    lsn: u64,
    poisoned: Option<(PoisonCause, u64, String)>,
    closed: bool,
    out: Vec<u8>,
    compressed: Vec<u8>,
    encoder: snap::raw::Encoder,
}

struct Shared {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    opts: WalOptions,
    w: Mutex<Writer>,
    /// Serialises fsyncs; the holder is the group-commit leader.
    sync_lock: Mutex<()>,
    synced_lsn: AtomicU64,
    /// Bumped whenever a fresh segment replaces a poisoned one: callers that remember "this was
    /// logged" must log it again (see `Head`'s per-series epoch).
    epoch: AtomicU32,
    stats: WalStats,
    stop: Mutex<bool>,
    stop_cv: Condvar,
    poisoned: AtomicBool,
    /// Serialises checkpoint, truncate and delete_checkpoints; taken before `w`, never under it.
    maint: Mutex<()>,
}

/// The write-ahead log. Cheap to share (`&Wal` is `Sync`).
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Mutex<Option<JoinHandle<()>>>,
}

pub fn segment_name(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("{index:08}"))
}

/// Segment indexes in `dir`, ascending. Names that are not 8 digits are ignored.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 8
            && name.bytes().all(|b| b.is_ascii_digit())
            && entry.file_type()?.is_file()
        {
            if let Ok(i) = name.parse() {
                out.push(i);
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

impl Wal {
    /// Open the WAL in `dir` (created if missing): replay every record into `on_record`, repair
    /// a torn or corrupt tail, then open a fresh segment for writing.
    pub fn open(
        dir: &Path,
        opts: WalOptions,
        fs: Arc<dyn FileSystem>,
        on_record: impl FnMut(&[u8]) -> ReplayResult,
    ) -> Result<(Wal, ReplayReport), WalError> {
        Self::open_with_progress(dir, opts, fs, on_record, |_, _| {})
    }

    /// [`Wal::open`], calling `on_segment(done, total)` after each replayed segment.
    pub fn open_with_progress(
        dir: &Path,
        opts: WalOptions,
        fs: Arc<dyn FileSystem>,
        on_record: impl FnMut(&[u8]) -> ReplayResult,
        on_segment: impl FnMut(u64, u64),
    ) -> Result<(Wal, ReplayReport), WalError> {
        std::fs::create_dir_all(dir).map_err(|e| WalError::io("create dir", dir, e))?;
        crate::tsdb::fileutil::remove_tmp_leftovers(dir)
            .map_err(|e| WalError::io("clean leftovers", dir, e))?;
        let report = replay_and_repair(dir, on_record, on_segment)?;
        let segs = list_segments(dir).map_err(|e| WalError::io("list segments", dir, e))?;
        // After the last segment, and after the checkpoint even when no segment follows it
        // (otherwise the next replay would take the new segments for covered ones).
        let next = segs
            .last()
            .map(|&i| i + 1)
            .max(report.checkpoint.map(|c| c + 1))
            .unwrap_or(0);
        let path = segment_name(dir, next);
        let file = fs
            .create_segment(&path)
            .map_err(|e| WalError::io("create segment", &path, e))?;
        fs.sync_dir(dir)
            .map_err(|e| WalError::io("fsync dir", dir, e))?;
        let stats = WalStats::default();
        stats.segment.store(next, Ordering::Relaxed);
        if report.repaired.is_some() {
            stats.corruptions_repaired.store(1, Ordering::Relaxed);
        }
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            fs,
            w: Mutex::new(Writer {
                seg_index: next,
                file,
                framer: Framer::new(opts.segment_size),
                good_pos: 0,
                synced_pos: 0,
                lsn: 0,
                poisoned: None,
                closed: false,
                out: Vec::new(),
                compressed: Vec::new(),
                encoder: snap::raw::Encoder::new(),
            }),
            opts,
            sync_lock: Mutex::new(()),
            synced_lsn: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            stats,
            stop: Mutex::new(false),
            stop_cv: Condvar::new(),
            poisoned: AtomicBool::new(false),
            maint: Mutex::new(()),
        });
        let syncer = match shared.opts.sync {
            SyncPolicy::Interval(every) => {
                let s = Arc::clone(&shared);
                Some(
                    std::thread::Builder::new()
                        .name("cairn-wal-sync".into())
                        .spawn(move || s.background_sync(every))
                        .map_err(|e| WalError::io("spawn sync thread", dir, e))?,
                )
            }
            _ => None,
        };
        Ok((
            Wal {
                shared,
                syncer: Mutex::new(syncer),
            },
            report,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn stats(&self) -> &WalStats {
        &self.shared.stats
    }

    pub fn sync_policy(&self) -> SyncPolicy {
        self.shared.opts.sync
    }

    /// Changes whenever a fresh segment replaces a poisoned one.
    pub fn epoch(&self) -> u32 {
        self.shared.epoch.load(Ordering::Acquire)
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// The first and the last segment index on disk; the last is the one being written.
    pub fn segment_range(&self) -> io::Result<(u64, u64)> {
        let current = self.shared.w.lock().seg_index;
        let segs = list_segments(&self.shared.dir)?;
        let first = segs.first().map_or(current, |&f| f.min(current));
        Ok((first, current))
    }

    /// Delete the segments with an index below `before`, oldest first, never the segment being
    /// written; fsync the directory. Returns how many were deleted. The caller must have
    /// checkpointed what it still needs from them (see [`checkpoint`]). With a checkpoint
    /// `checkpoint.N` on disk, a `before` past `N + 1` that would delete segments after the
    /// checkpoint is refused ([`WalError::Gap`]): keeping later segments would leave a gap no
    /// replay can cross.
    pub fn truncate(&self, before: u64) -> Result<u64, WalError> {
        let sh = &self.shared;
        let _maint = sh.maint.lock();
        sh.stats.truncations.fetch_add(1, Ordering::Relaxed);
        let res = self.truncate_locked(before);
        if res.is_err() {
            sh.stats.truncations_failed.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn truncate_locked(&self, before: u64) -> Result<u64, WalError> {
        let sh = &self.shared;
        let dir = &sh.dir;
        let current = sh.w.lock().seg_index;
        let limit = before.min(current);
        let segs = list_segments(dir).map_err(|e| WalError::io("list segments", dir, e))?;
        if let Some((cp, path)) = checkpoint::last_checkpoint(dir)
            .map_err(|e| WalError::io("list checkpoints", dir, e))?
        {
            if limit > cp + 1 && segs.iter().any(|&s| s > cp && s < limit) {
                return Err(WalError::Gap(format!(
                    "truncating below segment {limit:08} would delete segments after {}                      (which covers up to {cp:08}) and leave a gap",
                    path.display()
                )));
            }
        }
        let mut deleted = 0u64;
        for s in segs.into_iter().filter(|&s| s < limit) {
            let p = segment_name(dir, s);
            std::fs::remove_file(&p).map_err(|e| WalError::io("delete segment", &p, e))?;
            deleted += 1;
        }
        if deleted > 0 {
            sh.fs
                .sync_dir(dir)
                .map_err(|e| WalError::io("fsync dir", dir, e))?;
        }
        Ok(deleted)
    }

    /// [`checkpoint::checkpoint_with`] on this WAL, with its compression, segment size and file
    /// seam; counted in [`WalStats`]. Refuses a `to` at or past the segment being written: the
    /// next open deletes every segment the checkpoint covers.
    pub fn checkpoint(
        &self,
        from: u64,
        to: u64,
        keep: impl Fn(u64) -> bool,
        mint: i64,
    ) -> Result<checkpoint::CheckpointStats, WalError> {
        let sh = &self.shared;
        let _maint = sh.maint.lock();
        sh.stats
            .checkpoint_creations
            .fetch_add(1, Ordering::Relaxed);
        let current = sh.w.lock().seg_index;
        let res = if to >= current {
            Err(WalError::refused(
                "checkpoint",
                &sh.dir,
                format!("segment {to:08} is not closed: {current:08} is being written"),
            ))
        } else {
            let opts = checkpoint::CheckpointOptions {
                compress: sh.opts.compress,
                segment_size: sh.opts.segment_size,
            };
            checkpoint::checkpoint_with(&sh.dir, from, to, keep, mint, opts, sh.fs.as_ref())
        };
        if res.is_err() {
            sh.stats
                .checkpoint_creations_failed
                .fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// [`checkpoint::delete_checkpoints`] on this WAL, counted in [`WalStats`].
    pub fn delete_checkpoints(&self, below: u64) -> Result<usize, WalError> {
        let sh = &self.shared;
        let _maint = sh.maint.lock();
        sh.stats
            .checkpoint_deletions
            .fetch_add(1, Ordering::Relaxed);
        checkpoint::delete_checkpoints(&sh.dir, below).map_err(|e| {
            sh.stats
                .checkpoint_deletions_failed
                .fetch_add(1, Ordering::Relaxed);
            WalError::io("delete checkpoints", &sh.dir, e)
        })
    }

    /// Write `records` (in order, to one segment each) and make them as durable as the sync
    /// policy promises. `Ok` means the caller may acknowledge.
    pub fn log(&self, records: &[&[u8]]) -> Result<(), WalError> {
        self.log_in_epoch(records, self.epoch())
    }

    /// [`Wal::log`], refusing with [`WalError::EpochChanged`] if a fresh segment replaced a
    /// poisoned one since the caller read `epoch` (its records may lean on ones that were lost).
    pub fn log_in_epoch(&self, records: &[&[u8]], epoch: u32) -> Result<(), WalError> {
        let (lsn, epoch) = self.shared.write(records, epoch)?;
        if self.shared.opts.sync == SyncPolicy::Always {
            self.shared.sync_to(lsn, epoch)?;
        }
        Ok(())
    }

    /// fsync everything written so far.
    pub fn sync(&self) -> Result<(), WalError> {
        let lsn = self.shared.w.lock().lsn;
        self.shared.sync_to(lsn, self.epoch())
    }

    /// After a poisoning: cut the damaged tail of the current segment, open a fresh segment and
    /// accept writes again. Does nothing if the writer is healthy.
    pub fn recover(&self) -> Result<(), WalError> {
        let sh = &self.shared;
        let mut w = sh.w.lock();
        if w.closed {
            return Err(WalError::Closed);
        }
        let Some((_, seg, _)) = w.poisoned.clone() else {
            return Ok(());
        };
        let old = segment_name(&sh.dir, seg);
        // Cut what was never acknowledged: under `always` everything after the last good fsync,
        // otherwise only a torn write. Replay then sees exactly what memory holds, and does not
        // stop (dropping later segments) at a half-written record.
        let keep = if sh.opts.sync == SyncPolicy::Always {
            w.synced_pos
        } else {
            w.good_pos
        };
        w.file
            .truncate(keep)
            .map_err(|e| WalError::io("truncate unacknowledged tail", &old, e))?;
        let next = w.seg_index + 1;
        let path = segment_name(&sh.dir, next);
        let file = sh
            .fs
            .create_segment(&path)
            .map_err(|e| WalError::io("create segment", &path, e))?;
        sh.fs
            .sync_dir(&sh.dir)
            .map_err(|e| WalError::io("fsync dir", &sh.dir, e))?;
        w.file = file;
        w.seg_index = next;
        w.framer.reset();
        w.good_pos = 0;
        w.synced_pos = 0;
        w.poisoned = None;
        sh.stats.segment.store(next, Ordering::Relaxed);
        // Writers still waiting for a sync of the old segment carry the old epoch and fail;
        // the epoch moves before the synced mark so nobody sees the mark without the epoch.
        sh.epoch.fetch_add(1, Ordering::AcqRel);
        sh.synced_lsn.fetch_max(w.lsn, Ordering::AcqRel);
        sh.poisoned.store(false, Ordering::Release);
        Ok(())
    }

    /// Pad the last page, fsync and stop writing. Later calls fail with [`WalError::Closed`].
    pub fn close(&self) -> Result<(), WalError> {
        {
            let mut stop = self.shared.stop.lock();
            *stop = true;
            self.shared.stop_cv.notify_all();
        }
        if let Some(h) = self.syncer.lock().take() {
            let _ = h.join();
        }
        let sh = &self.shared;
        let mut w = sh.w.lock();
        if w.closed {
            return Ok(());
        }
        w.closed = true;
        if let Some((cause, segment, detail)) = w.poisoned.clone() {
            return Err(WalError::Poisoned {
                cause,
                segment,
                detail,
            });
        }
        let w = &mut *w;
        w.out.clear();
        w.framer.pad_page(&mut w.out);
        let path = segment_name(&sh.dir, w.seg_index);
        if !w.out.is_empty() {
            w.file
                .write_all(&w.out)
                .map_err(|e| WalError::io("write", &path, e))?;
        }
        w.file.sync().map_err(|e| WalError::io("fsync", &path, e))?;
        Ok(())
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
