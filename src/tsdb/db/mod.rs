//! [`Db`]: a data directory — the WAL, the head and the blocks — and what runs on it.
//!
//! - [`open`]: lock, cleanup, blocks, `chunks_head/` and WAL replay (the open order);
//! - [`readers`]: the block set readers see, generations, and selected series;
//! - [`housekeeping`]: head compaction, WAL checkpoints, leveled merges, retention;
//! - [`write_block`]: one block writer fed by a stream of series (head, merges, tombstone
//!   cleaning, snapshots);
//! - [`admin`]: deletion, tombstone cleaning, snapshots.

mod admin;
mod housekeeping;
mod open;
mod readers;
mod write_block;

pub use self::readers::BlockSet;
use self::readers::*;
pub use crate::tsdb::error::{DbError, FaultPoint, Step, StepError};
pub use crate::tsdb::querier::SeriesChunks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Labels, Matcher};
use crate::tsdb::block::{self, Block, BlockError, BlockMeta, BlockWriter, Compaction, Ulid};
use crate::tsdb::chunkenc::{Encoding, XorChunk, XorIterator};
use crate::tsdb::fileutil::{self, LockFile};
use crate::tsdb::head::chunks::{ChunkDiskMapper, ChunkReplayReport, DEFAULT_MAX_FILE_SIZE};
use crate::tsdb::head::{
    AppendError, AppendReport, AppendSeries, ChunkMeta, Head, HeadOptions, ReplayState,
};
use crate::tsdb::querier::{self, Merge, Source};
use crate::tsdb::wal::fs::{FileSystem, OsFs};
use crate::tsdb::wal::{ReplayReport, Wal, WalError, WalOptions};
use crate::tsdb::{compact, retention};

/// Two hours, Prometheus's default block range.
pub const DEFAULT_BLOCK_RANGE_MS: i64 = 2 * 3600 * 1000;

/// How often a poisoned WAL may try to open a fresh segment.
const RECOVER_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Options {
    pub wal: WalOptions,
    /// Block range in ms (`--storage.tsdb.min-block-duration`).
    pub block_range_ms: i64,
    /// Samples further in the future than this are rejected.
    pub max_future: Duration,
    pub head_chunk_file_size: u64,
    /// Most series the head may hold (`--storage.tsdb.max-series`); 0: no limit.
    pub max_series: u64,
    /// File-system seam for the WAL (tests inject faults here).
    pub fs: Arc<dyn FileSystem>,
    /// Called after each replayed WAL segment (for progress logs).
    pub replay_progress: Option<ProgressFn>,
    /// Largest block chunk file (Prometheus: 512 MiB); smaller in tests.
    pub block_segment_size: u64,
    /// Blocks whose end is older than the newest block's end minus this are deleted
    /// (`--storage.tsdb.retention.time`); 0: no time limit.
    pub retention_ms: i64,
    /// Most bytes of blocks + WAL + head chunks (`--storage.tsdb.retention.size`); the oldest
    /// blocks go first; 0: no size limit.
    pub retention_bytes: u64,
    /// Largest block leveled compaction makes (`--storage.tsdb.max-block-duration`); `None`:
    /// Prometheus's default, min(31d, retention time / 10), at least the block range.
    pub max_block_duration_ms: Option<i64>,
    /// Test seam: called with the name of each step of a compaction before it runs; returning
    /// `true` stops the compaction there with [`DbError::Injected`], leaving the directory as
    /// a crash at that point would (the crash matrix in `tests/compaction.rs`).
    pub fault: Option<FaultFn>,
}

/// A compaction fault-injection callback (see [`Options::fault`]).
#[derive(Clone)]
pub struct FaultFn(pub Arc<dyn Fn(FaultPoint) -> bool + Send + Sync>);

impl Options {
    /// The largest block leveled compaction makes: the flag, else Prometheus's default
    /// min(31d, retention / 10); never below the block range.
    pub fn max_block_duration(&self) -> i64 {
        self.max_block_duration_ms
            .unwrap_or_else(|| compact::default_max_block_duration(self.retention_ms))
            .max(self.block_range_ms)
    }
}

impl std::fmt::Debug for FaultFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaultFn")
    }
}

/// Where WAL replay is.
#[derive(Debug, Clone, Copy)]
pub struct ReplayProgress {
    pub segments_done: u64,
    pub segments: u64,
    pub samples: u64,
    pub elapsed: Duration,
}

/// A replay-progress callback.
#[derive(Clone)]
pub struct ProgressFn(pub Arc<dyn Fn(ReplayProgress) + Send + Sync>);

impl std::fmt::Debug for ProgressFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressFn")
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wal: WalOptions::default(),
            block_range_ms: DEFAULT_BLOCK_RANGE_MS,
            max_future: Duration::from_secs(600),
            head_chunk_file_size: DEFAULT_MAX_FILE_SIZE,
            max_series: 0,
            fs: Arc::new(OsFs),
            replay_progress: None,
            block_segment_size: block::DEFAULT_SEGMENT_SIZE,
            retention_ms: 15 * 86_400_000,
            retention_bytes: 0,
            max_block_duration_ms: None,
            fault: None,
        }
    }
}

/// What opening found and did.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub leftovers_removed: Vec<String>,
    pub chunks: ChunkReplayReport,
    pub wal: ReplayReport,
    pub series: u64,
    pub samples_replayed: u64,
    pub samples_skipped: u64,
    pub unknown_refs: u64,
    /// WAL records of kinds cairn does not keep yet (a Prometheus 3.x WAL has them).
    pub records_not_kept: super::wal::record::RecordsNotKept,
    pub blocks: u64,
    pub duration: Duration,
}

/// What one housekeeping run ([`Db::housekeep`], [`Db::compact`]) did.
#[derive(Debug, Default)]
pub struct CompactReport {
    /// Blocks written from the head.
    pub blocks: Vec<BlockMeta>,
    pub series_removed: u64,
    pub chunks_removed: u64,
    /// The WAL checkpoint written (its index), if any.
    pub checkpoint: Option<u64>,
    pub wal_segments_deleted: u64,
    /// Leveled compactions: the blocks merged and the block they became (`None`: nothing
    /// was left after deletions).
    pub merged: Vec<(Vec<Ulid>, Option<Ulid>)>,
    /// Blocks deleted by retention, and why.
    pub retention: Vec<(Ulid, retention::Reason)>,
    /// A block larger than half of `--storage.tsdb.retention.size` (its deletion would take
    /// half the history at once) and its size.
    pub oversized: Option<(Ulid, u64)>,
    /// Blocks marked `compaction.failed` in this run (a merge of them failed for good).
    pub marked_failed: Vec<Ulid>,
    /// Steps that failed; the others ran all the same.
    pub errors: Vec<StepError>,
    pub duration: Duration,
}

/// Compaction statistics for `/metrics` (relaxed atomics).
#[derive(Debug, Default)]
pub struct DbStats {
    pub compactions: AtomicU64,
    pub compaction_failures: AtomicU64,
    pub blocks_written: AtomicU64,
    /// Sum of compaction durations.
    pub compaction_nanos: AtomicU64,
    pub head_truncation_failures: AtomicU64,
    /// Leveled compactions done (blocks merged into one).
    pub blocks_merged: AtomicU64,
    /// Blocks deleted by retention, by reason.
    pub retention_time: AtomicU64,
    pub retention_size: AtomicU64,
}

/// An open data directory.
pub struct Db {
    dir: PathBuf,
    opts: Options,
    head: Head,
    wal: Wal,
    report: OpenReport,
    last_recover: Mutex<Option<Instant>>,
    readers: Readers,
    /// One compaction at a time.
    compacting: Mutex<()>,
    /// Retention time, retention bytes, max block duration (reloadable copies of `opts`).
    limits: Mutex<(i64, u64, Option<i64>)>,
    /// The head's lower bound of a WAL truncation that failed, to retry next time.
    wal_truncation_pending: Mutex<Option<i64>>,
    pub stats: DbStats,
    _lock: LockFile,
}

/// What [`Db::delete`] marked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeleteReport {
    /// Series with a new tombstone, in the head and in blocks (a series in several blocks
    /// counts once per block).
    pub head_series: u64,
    pub block_series: u64,
}

impl Db {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The options the directory was opened with (retention as it was then: see
    /// [`Db::retention`]).
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Retention and block-size limits in force (a config reload may change them).
    pub fn retention(&self) -> Options {
        let mut o = self.opts.clone();
        let (ms, bytes, max) = *self.limits.lock();
        o.retention_ms = ms;
        o.retention_bytes = bytes;
        o.max_block_duration_ms = max;
        o
    }

    /// Change retention and the largest block size for the next housekeeping runs.
    pub fn set_retention(&self, retention_ms: i64, retention_bytes: u64, max_block: Option<i64>) {
        *self.limits.lock() = (retention_ms, retention_bytes, max_block);
    }

    /// The blocks as readers see them now.
    pub fn blocks(&self) -> Arc<BlockSet> {
        self.readers.current()
    }

    /// Store a batch: see [`Head::append`]. A poisoned WAL is given a fresh segment first, at
    /// most once a second; until that succeeds appends fail (and nothing is acknowledged).
    pub fn append(&self, batch: &[AppendSeries<'_>]) -> Result<AppendReport, AppendError> {
        if self.wal.is_poisoned() {
            self.try_recover();
        }
        match self.head.append(&self.wal, batch) {
            // A fresh segment was opened meanwhile: nothing was written, go again once.
            Err(AppendError::Wal(WalError::EpochChanged)) => self.head.append(&self.wal, batch),
            other => other,
        }
    }

    fn try_recover(&self) {
        let mut last = self.last_recover.lock();
        if last.is_some_and(|t| t.elapsed() < RECOVER_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        // On failure the WAL stays poisoned and the append reports it.
        let _ = self.wal.recover();
    }

    /// Series matching `matchers` with data in `[mint, maxt]` (both inclusive), sorted by label
    /// set, with their chunks.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<Vec<SeriesChunks>, DbError> {
        self.select_iter(matchers, mint, maxt).collect()
    }

    /// Like [`Db::select`], but each series' chunks are gathered only when the iterator reaches
    /// it, so a reader streaming the result holds one series' chunks at a time. Blocks and the
    /// head are merged by label set (see [`querier`]). The query counts as running until the
    /// iterator is dropped: head compaction waits for it before dropping data it may read.
    pub fn select_iter(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = Result<SeriesChunks, DbError>> + '_ {
        let (set, guard) = self.readers.begin();
        let mut sources: Vec<Source<'_>> = Vec::new();
        let mut failed = None;
        for b in &set.blocks {
            let m = b.meta();
            if m.min_time > maxt || m.max_time <= mint {
                continue;
            }
            match querier::block_source(b, matchers) {
                Ok(s) => sources.push(s),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        sources.push(Source::Head {
            head: &self.head,
            series: self.head.select(matchers, mint, maxt).into_iter(),
            cutoff: set.max_time(),
        });
        let merge = Merge::new(sources, mint, maxt, self.head.chunk_mapper());
        let items: Box<dyn Iterator<Item = Result<SeriesChunks, DbError>> + '_> = match failed {
            Some(e) => Box::new(std::iter::once(Err(e))),
            None => Box::new(merge),
        };
        Guarded {
            inner: items,
            _guard: guard,
        }
    }

    fn fault(&self, point: FaultPoint) -> Result<(), DbError> {
        match &self.opts.fault {
            Some(f) if (f.0)(point) => Err(DbError::Injected(point)),
            _ => Ok(()),
        }
    }

    /// A fresh block ID.
    fn new_ulid(&self) -> Result<Ulid, DbError> {
        Ulid::generate_now().map_err(|source| DbError::Io {
            op: "read random bytes for a block ID",
            path: self.dir.clone(),
            source,
        })
    }

    /// Flush head chunks and close the WAL (pad, fsync). Appends fail afterwards.
    pub fn close(&self) -> Result<(), DbError> {
        let chunks = self.head.flush_chunks();
        self.wal.close()?;
        chunks?;
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
