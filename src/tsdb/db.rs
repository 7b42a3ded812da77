//! [`Db`]: opens a data directory (lock, cleanup, recovery) and ties the WAL and the head.
//!
//! Open order, each step finishing before the next:
//! 1. create the directory, take `lock` (a second process gets a clear error);
//! 2. remove leftovers of interrupted work (`*.tmp`, `*.tmp-for-creation`, …);
//! 3. open every block (`<ULID>/` with a `meta.json`); a block that fails to open stops the
//!    open with an error naming it (Prometheus does the same: serving without it would
//!    silently drop its data). The head accepts nothing older than the newest block's end;
//! 4. replay `chunks_head/` (a bad entry ends the data: cut there, later files removed);
//! 5. replay the WAL (its last checkpoint first) into the head, attaching each series'
//!    chunks from step 4 and skipping samples they already hold or that a block holds; a torn
//!    or corrupt tail is repaired and counted;
//! 6. open a fresh WAL segment for writing.
//!
//! # Head compaction ([`Db::compact`], Prometheus `DB.Compact`)
//! While the head spans more than 1.5 block ranges, its oldest range `[head min, end of the
//! aligned range it falls in)` becomes a block:
//! 1. raise the head's lower bound to the range's end and wait for appends that read the old
//!    bound ([`Head::raise_min_valid`]): nothing can enter the range any more;
//! 2. write the block (series in label order, chunks as stored; atomic, see `block`);
//! 3. publish it to readers, then wait until every query that started before is done (they
//!    may still read the range from the head);
//! 4. truncate the head: chunks before the range's end, series left empty, unreferenced
//!    `chunks_head/` files.
//!
//! Then the WAL is checkpointed and its older segments deleted (Prometheus `truncateWAL`).
//! A crash anywhere leaves a consistent directory: before step 2's rename, a leftover
//! `*.tmp-for-creation` (removed at open) and the head's data still in the WAL; after it, the
//! block, whose end becomes the head's lower bound at open, so the WAL's copy of its samples
//! is skipped on replay and nothing is doubled.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Labels, Matcher};
use crate::tsdb::block::{self, Block, BlockError, BlockMeta, BlockWriter, Compaction, Ulid};
use crate::tsdb::chunkenc::{DecodeError, Encoding, XorChunk, XorIterator};
use crate::tsdb::fileutil::{self, LockError, LockFile};
use crate::tsdb::head::chunks::{
    ChunkDiskMapper, ChunkFileError, ChunkReplayReport, DEFAULT_MAX_FILE_SIZE,
};
use crate::tsdb::head::{
    AppendError, AppendReport, AppendSeries, ChunkMeta, Head, HeadOptions, ReplayState, Sample,
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
pub struct FaultFn(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

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

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Chunks(#[from] ChunkFileError),
    #[error("chunk of series {series} is undecodable: {source}")]
    Decode { series: String, source: DecodeError },
    #[error("invalid option: {0}")]
    Options(String),
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error(
        "block {path}: {source} (move the block out of the data directory to start without it)"
    )]
    OpenBlock { path: PathBuf, source: BlockError },
    #[error("injected fault at {0}")]
    Injected(String),
}

impl DbError {
    /// What retrying the same operation can bring.
    pub fn retry(&self) -> crate::tsdb::Retry {
        use crate::tsdb::Retry;
        match self {
            DbError::Io { .. } | DbError::Injected(_) => Retry::Maybe,
            DbError::Wal(e) => e.retry(),
            DbError::Chunks(e) => e.retry(),
            DbError::Block(e) => e.retry(),
            DbError::Lock(_)
            | DbError::Decode { .. }
            | DbError::Options(_)
            | DbError::OpenBlock { .. } => Retry::Never,
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

/// What one [`Db::compact`] call did.
#[derive(Debug, Default, Clone)]
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

/// The blocks readers see, with a generation number that grows with every change.
#[derive(Debug, Default)]
pub struct BlockSet {
    pub generation: u64,
    /// Sorted by min time.
    pub blocks: Vec<Arc<Block>>,
}

impl BlockSet {
    /// End (exclusive) of the newest block, `i64::MIN` without blocks.
    pub fn max_time(&self) -> i64 {
        self.blocks
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// The current block set and the queries running against each generation of it. Compaction
/// publishes a block, then waits for queries of older generations before truncating the head
/// (they may still read the range there); new queries never wait.
#[derive(Default)]
struct Readers {
    state: Mutex<(Arc<BlockSet>, BTreeMap<u64, usize>)>,
    done: Condvar,
}

/// An iterator that keeps its query registered until dropped.
struct Guarded<'a, I> {
    inner: I,
    _guard: ReadGuard<'a>,
}

impl<I: Iterator> Iterator for Guarded<'_, I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.inner.next()
    }
}

/// A running query: keeps its generation registered until dropped.
struct ReadGuard<'a> {
    readers: &'a Readers,
    generation: u64,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.readers.state.lock();
        if let Some(n) = st.1.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.generation);
            }
        }
        drop(st);
        self.readers.done.notify_all();
    }
}

impl Readers {
    fn begin(&self) -> (Arc<BlockSet>, ReadGuard<'_>) {
        let mut st = self.state.lock();
        let set = Arc::clone(&st.0);
        *st.1.entry(set.generation).or_default() += 1;
        (
            set.clone(),
            ReadGuard {
                readers: self,
                generation: set.generation,
            },
        )
    }

    fn current(&self) -> Arc<BlockSet> {
        Arc::clone(&self.state.lock().0)
    }

    /// Replace the block set; returns the new generation.
    fn publish(&self, blocks: Vec<Arc<Block>>) -> u64 {
        let mut st = self.state.lock();
        let generation = st.0.generation + 1;
        st.0 = Arc::new(BlockSet { generation, blocks });
        generation
    }

    /// Wait until no query of a generation older than `generation` runs.
    fn wait_before(&self, generation: u64) {
        let mut st = self.state.lock();
        while st.1.keys().next().is_some_and(|&g| g < generation) {
            self.done.wait(&mut st);
        }
    }
}

/// A selected series: its labels, chunks overlapping the range and deleted intervals.
#[derive(Debug, Clone)]
pub struct SeriesChunks {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
    pub tombstones: Vec<(i64, i64)>,
}

impl SeriesChunks {
    /// Decoded samples in `[mint, maxt]`, deleted intervals removed.
    pub fn samples(&self, mint: i64, maxt: i64) -> Result<Vec<Sample>, DecodeError> {
        let mut out = Vec::new();
        self.samples_into(mint, maxt, &mut out)?;
        Ok(out)
    }

    /// Like [`SeriesChunks::samples`], appending to `out` (reuse one buffer across series).
    pub fn samples_into(
        &self,
        mint: i64,
        maxt: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), DecodeError> {
        for c in &self.chunks {
            let mut it = c.iter()?;
            for (t, v) in it.by_ref() {
                if t < mint || t > maxt || self.is_deleted(t) {
                    continue;
                }
                out.push(Sample { t, v });
            }
            if let Some(e) = it.err() {
                return Err(e.clone());
            }
        }
        Ok(())
    }

    /// Whether `t` falls in a deleted interval.
    pub fn is_deleted(&self, t: i64) -> bool {
        self.tombstones.iter().any(|&(a, b)| t >= a && t <= b)
    }
}

/// A chunk's bytes on their way into a block.
enum ChunkBytes {
    Stored(crate::tsdb::head::ChunkData),
    Encoded(Vec<u8>),
}

impl std::ops::Deref for ChunkBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkBytes::Stored(d) => d,
            ChunkBytes::Encoded(v) => v,
        }
    }
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

/// Hard-link the files of `src` into a new directory tree `dst`.
fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            link_tree(&entry.path(), &to)?;
        } else {
            std::fs::hard_link(entry.path(), &to)?;
        }
    }
    fileutil::fsync_dir(dst)
}

/// Open every block directory (`<ULID>/` holding a `meta.json`) in `dir`, sorted by min time.
fn open_blocks(dir: &Path) -> Result<Vec<Arc<Block>>, DbError> {
    let io = |source| DbError::Io {
        op: "list",
        path: dir.to_path_buf(),
        source,
    };
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let is_block = name.to_str().is_some_and(|n| Ulid::from_str(n).is_ok())
            && entry.file_type().map_err(io)?.is_dir()
            && entry.path().join(block::META_FILE).exists();
        if !is_block {
            continue;
        }
        let path = entry.path();
        // A crash while replacing the tombstones file or meta.json leaves a `*.tmp` inside.
        let _ = fileutil::remove_tmp_leftovers(&path);
        let b = Block::open(&path).map_err(|source| DbError::OpenBlock { path, source })?;
        blocks.push(Arc::new(b));
    }
    // Blocks that are parents of another block were merged into it; a crash came between the
    // merged block becoming durable and their deletion. Blocks marked deletable are done
    // with. (Prometheus `deletableBlocks`.)
    let metas: Vec<BlockMeta> = blocks.iter().map(|b| b.meta().clone()).collect();
    let mut doomed = compact::deletable_parents(&metas);
    doomed.extend(compact::marked_deletable(&metas));
    let mut kept = Vec::with_capacity(blocks.len());
    for b in blocks {
        if doomed.contains(&b.meta().ulid) {
            fileutil::remove_dir_atomic(b.dir()).map_err(|source| DbError::Io {
                op: "remove merged block",
                path: b.dir().to_path_buf(),
                source,
            })?;
        } else {
            kept.push(b);
        }
    }
    kept.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
    Ok(kept)
}

impl Db {
    /// Open (creating if needed) and recover the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Db, DbError> {
        let start = Instant::now();
        let dir = dir.as_ref().to_path_buf();
        if opts.block_range_ms <= 0 {
            return Err(DbError::Options("block range must be positive".into()));
        }
        std::fs::create_dir_all(&dir).map_err(|source| DbError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let lock = LockFile::acquire(&dir)?;
        let mut report = OpenReport {
            leftovers_removed: fileutil::remove_tmp_leftovers(&dir).map_err(|source| {
                DbError::Io {
                    op: "clean",
                    path: dir.clone(),
                    source,
                }
            })?,
            ..OpenReport::default()
        };

        let blocks = open_blocks(&dir)?;
        report.blocks = blocks.len() as u64;
        let blocks_end = blocks
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN);

        let mut st = ReplayState::default();
        let (mapper, chunk_report) =
            ChunkDiskMapper::open(&dir.join("chunks_head"), opts.head_chunk_file_size, |c| {
                st.mmapped.entry(c.series_ref).or_default().push(c);
            })?;
        report.chunks = chunk_report;
        let head = Head::new(
            HeadOptions {
                chunk_range: opts.block_range_ms,
                max_future_ms: opts.max_future.as_millis() as i64,
                max_series: opts.max_series,
            },
            mapper,
        );
        // What the blocks hold is not taken again (replay skips it, appends are refused).
        head.raise_min_valid(blocks_end);
        let replayed = std::cell::Cell::new(0u64);
        let (wal, wal_report) = Wal::open_with_progress(
            &dir.join("wal"),
            opts.wal.clone(),
            Arc::clone(&opts.fs),
            |rec| {
                let r = head.replay_record(rec, &mut st);
                replayed.set(st.samples_replayed);
                r
            },
            |done, total| {
                if let Some(p) = &opts.replay_progress {
                    (p.0)(ReplayProgress {
                        segments_done: done,
                        segments: total,
                        samples: replayed.get(),
                        elapsed: start.elapsed(),
                    });
                }
            },
        )?;
        report.wal = wal_report;
        report.series = st.series;
        report.samples_replayed = st.samples_replayed;
        report.samples_skipped = st.samples_skipped;
        report.unknown_refs = st.unknown_refs;
        report.records_not_kept = st.not_kept;
        report.duration = start.elapsed();
        let readers = Readers::default();
        readers.publish(blocks);
        let limits = Mutex::new((
            opts.retention_ms,
            opts.retention_bytes,
            opts.max_block_duration_ms,
        ));
        Ok(Db {
            dir,
            opts,
            head,
            wal,
            report,
            last_recover: Mutex::new(None),
            readers,
            compacting: Mutex::new(()),
            limits,
            wal_truncation_pending: Mutex::new(None),
            stats: DbStats::default(),
            _lock: lock,
        })
    }

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

    // ------------------------------------------------------------------------------------------
    // Compaction

    fn fault(&self, step: &str) -> Result<(), DbError> {
        match &self.opts.fault {
            Some(f) if (f.0)(step) => Err(DbError::Injected(step.to_string())),
            _ => Ok(()),
        }
    }

    /// Turn every head range older than 1.5 block ranges into a block, truncate the head and
    /// the WAL (see the module docs). Safe while appends and queries run; one at a time.
    pub fn compact(&self) -> Result<CompactReport, DbError> {
        let _one = self.compacting.lock();
        let start = Instant::now();
        let res = self.compact_locked(start);
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .compaction_nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if res.is_err() {
            self.stats
                .compaction_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Delete the samples of series matching `matchers` in `[mint, maxt]` (Prometheus
    /// `DB.Delete`): head series get a Tombstones WAL record (durable under the WAL's sync
    /// policy before this returns) and an in-memory tombstone; blocks get their `tombstones`
    /// file and meta.json replaced atomically. Reads stop seeing the samples at once; the
    /// bytes go when the head is compacted or [`Db::clean_tombstones`] rewrites the blocks.
    pub fn delete(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> Result<DeleteReport, DbError> {
        let _one = self.compacting.lock();
        let mut report = DeleteReport::default();
        let current = self.readers.current();
        let mut blocks: Vec<Arc<Block>> = Vec::with_capacity(current.blocks.len());
        let mut changed = false;
        for b in &current.blocks {
            let m = b.meta();
            if m.min_time > maxt || m.max_time <= mint {
                blocks.push(Arc::clone(b));
                continue;
            }
            let mut stones = Vec::new();
            for id in b
                .index()
                .postings_for_matchers(matchers)
                .map_err(BlockError::from)?
            {
                let e = b.index().series(id).map_err(BlockError::from)?;
                if e.chunks.iter().any(|c| c.mint <= maxt && c.maxt >= mint) {
                    stones.push(block::Stone {
                        series_ref: u64::from(id),
                        mint,
                        maxt,
                    });
                }
            }
            if stones.is_empty() {
                blocks.push(Arc::clone(b));
                continue;
            }
            report.block_series += stones.len() as u64;
            blocks.push(Arc::new(b.with_more_tombstones(&stones)?));
            changed = true;
        }
        if changed {
            // Old readers keep the old `Block` values (and their view); new ones see the
            // tombstones. Nothing to wait for: no file a reader uses goes away.
            self.readers.publish(blocks);
        }
        let stones: Vec<crate::tsdb::wal::record::Stone> = self
            .head
            .select(matchers, mint, maxt)
            .iter()
            .map(|s| crate::tsdb::wal::record::Stone {
                sref: s.sref,
                mint,
                maxt,
            })
            .collect();
        if !stones.is_empty() {
            let mut rec = Vec::new();
            crate::tsdb::wal::record::encode_tombstones(&mut rec, &stones);
            self.wal.log(&[&rec])?;
            self.head.add_tombstones(&stones);
            report.head_series = stones.len() as u64;
        }
        Ok(report)
    }

    /// Rewrite every block that has tombstones without the deleted samples (Prometheus
    /// `DB.CleanTombstones`: the new block is level 1 with the old one as its parent). Returns
    /// `(old, new)` per block; `new` is `None` when nothing was left.
    pub fn clean_tombstones(&self) -> Result<Vec<(Ulid, Option<Ulid>)>, DbError> {
        let _one = self.compacting.lock();
        let mut out = Vec::new();
        let current = self.readers.current();
        for b in current.blocks.iter().filter(|b| !b.tombstones().is_empty()) {
            let old = b.meta();
            let ulid = self.new_ulid()?;
            let mut compaction = Compaction::level1(ulid);
            compaction.parents = vec![block::BlockDesc {
                ulid: old.ulid,
                min_time: old.min_time,
                max_time: old.max_time,
            }];
            let meta = BlockMeta {
                ulid,
                min_time: old.min_time,
                max_time: old.max_time,
                stats: block::BlockStats::default(),
                compaction,
                version: block::meta::META_VERSION,
            };
            let new = self.merge_blocks(&[old.ulid], meta)?;
            out.push((old.ulid, new.map(|m| m.ulid)));
        }
        Ok(out)
    }

    /// Hard-link every block into `dir` (created; must not exist) and, with `with_head`, write
    /// the head's data there as one more block (Prometheus `DB.Snapshot`). The snapshot is a
    /// data directory Prometheus, promtool or cairn can open.
    pub fn snapshot(&self, dir: &Path, with_head: bool) -> Result<(), DbError> {
        let _one = self.compacting.lock();
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| DbError::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        for b in &self.readers.current().blocks {
            let dst = dir.join(b.meta().ulid.to_string());
            link_tree(b.dir(), &dst).map_err(io("link", &dst))?;
        }
        if with_head {
            // From the newest block's end: a head not truncated yet after a failed run still
            // holds that block's range.
            let min = self.head.min_time().max(self.readers.current().max_time());
            let max = self.head.max_time();
            if min <= max {
                self.write_head_block(dir, min, max.saturating_add(1))?;
            }
        }
        fileutil::fsync_dir(dir).map_err(io("fsync", dir))?;
        Ok(())
    }

    fn compact_locked(&self, start: Instant) -> Result<CompactReport, DbError> {
        let mut report = CompactReport::default();
        let range = self.opts.block_range_ms;
        let mut truncated_to = None;
        let head_result = self.compact_head(range, &mut report, &mut truncated_to);
        // A WAL truncation that failed before (a full disk), or was never reached because a
        // later step failed, is done even when no new block was written: its segments are
        // what a full disk most needs freed.
        let pending = self.wal_truncation_pending.lock().take();
        if let Some(mint) = truncated_to.or(pending) {
            if head_result.is_err() {
                *self.wal_truncation_pending.lock() = Some(mint);
            } else if let Err(e) = self.truncate_wal(mint, &mut report) {
                *self.wal_truncation_pending.lock() = Some(mint);
                return Err(e);
            }
        }
        head_result?;
        self.compact_blocks(&mut report)?;
        self.apply_retention(&mut report)?;
        report.duration = start.elapsed();
        Ok(report)
    }

    /// The head-compaction loop of [`Db::compact`]; `truncated_to` is the head's new lower
    /// bound after each truncation.
    fn compact_head(
        &self,
        range: i64,
        report: &mut CompactReport,
        truncated_to: &mut Option<i64>,
    ) -> Result<(), DbError> {
        while self.head.compactable() {
            // Not clamped to the head's lower bound: a run that failed to write this range
            // raised the bound already, and the range must still become a block.
            let mint = self.head.min_time();
            let maxt = crate::tsdb::head::range_for_timestamp(mint, range);
            if truncated_to.is_some_and(|t| maxt <= t) {
                break; // no progress (cannot happen: truncation raises the head's min time)
            }
            self.fault("raise-min-valid")?;
            self.head.raise_min_valid(maxt);
            self.fault("write-block")?;
            // A run that failed after publishing this range's block (say, truncating the head)
            // must not write it again: truncate only.
            let written = if self.readers.current().max_time() >= maxt {
                None
            } else {
                self.write_head_block(&self.dir, mint, maxt)?
            };
            if let Some(meta) = written {
                self.fault("publish-block")?;
                let b = Block::open(&self.dir.join(meta.ulid.to_string()))?;
                let mut blocks = self.readers.current().blocks.clone();
                blocks.push(Arc::new(b));
                blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
                let generation = self.readers.publish(blocks);
                self.stats.blocks_written.fetch_add(1, Ordering::Relaxed);
                report.blocks.push(meta);
                self.readers.wait_before(generation);
            }
            self.fault("truncate-head")?;
            let segment = self.wal.stats().segment.load(Ordering::Relaxed);
            let tr = self.head.truncate(maxt, segment).inspect_err(|_| {
                self.stats
                    .head_truncation_failures
                    .fetch_add(1, Ordering::Relaxed);
            })?;
            report.series_removed += tr.series_removed;
            report.chunks_removed += tr.chunks_removed;
            *truncated_to = Some(maxt);
        }
        Ok(())
    }

    /// Leveled compaction (Prometheus `LeveledCompactor`): merge what the planner picks until
    /// it picks nothing.
    fn compact_blocks(&self, report: &mut CompactReport) -> Result<(), DbError> {
        let ranges = compact::block_ranges(
            self.opts.block_range_ms,
            self.retention().max_block_duration(),
        );
        loop {
            let metas: Vec<BlockMeta> = self
                .readers
                .current()
                .blocks
                .iter()
                .map(|b| b.meta().clone())
                .collect();
            let plan = compact::plan(&metas, &ranges);
            if plan.is_empty() {
                return Ok(());
            }
            // In plan order: the merged block lists its parents in this order.
            let parents: Vec<BlockMeta> = plan
                .iter()
                .filter_map(|u| metas.iter().find(|m| m.ulid == *u).cloned())
                .collect();
            let ulid = self.new_ulid()?;
            let meta = compact::compacted_meta(&parents, ulid)
                .ok_or_else(|| DbError::Options("compaction plan names no open block".into()))?;
            let merged = self.merge_blocks(&plan, meta)?;
            self.stats.blocks_merged.fetch_add(1, Ordering::Relaxed);
            report.merged.push((plan, merged.map(|m| m.ulid)));
        }
    }

    /// Bytes of the WAL (segments and checkpoints) and `chunks_head/`.
    pub fn wal_and_head_bytes(&self) -> u64 {
        fn du(p: &Path) -> u64 {
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p)
                    .map(|rd| rd.flatten().map(|e| du(&e.path())).sum())
                    .unwrap_or(0),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        }
        du(self.wal.dir()) + du(self.head.chunk_mapper().dir())
    }

    /// Retention by time and size (Prometheus `BeyondTimeRetention`, `BeyondSizeRetention`).
    fn apply_retention(&self, report: &mut CompactReport) -> Result<(), DbError> {
        let limits = self.retention();
        if limits.retention_ms == 0 && limits.retention_bytes == 0 {
            return Ok(());
        }
        let usage: Vec<retention::BlockUsage> = self
            .readers
            .current()
            .blocks
            .iter()
            .map(|b| retention::BlockUsage {
                meta: b.meta().clone(),
                bytes: b.size(),
            })
            .collect();
        let doomed = retention::select(
            &usage,
            limits.retention_ms,
            limits.retention_bytes,
            self.wal_and_head_bytes(),
        );
        if limits.retention_bytes > 0 {
            report.oversized = retention::oversized(&usage, limits.retention_bytes);
        }
        if doomed.is_empty() {
            return Ok(());
        }
        let ulids: Vec<Ulid> = doomed.iter().map(|(u, _)| *u).collect();
        self.delete_blocks(&ulids)?;
        for (u, why) in doomed {
            match why {
                retention::Reason::Time => &self.stats.retention_time,
                retention::Reason::Size => &self.stats.retention_size,
            }
            .fetch_add(1, Ordering::Relaxed);
            report.retention.push((u, why));
        }
        Ok(())
    }

    /// A fresh block ID.
    fn new_ulid(&self) -> Result<Ulid, DbError> {
        Ulid::generate_now().map_err(|source| DbError::Io {
            op: "read random bytes for a block ID",
            path: self.dir.clone(),
            source,
        })
    }

    /// Replace blocks `gone` by `new` in the block set readers see, then wait for the queries
    /// that may still read the old set. Returns the blocks removed.
    fn swap_blocks(&self, gone: &[Ulid], new: Option<Arc<Block>>) -> Vec<Arc<Block>> {
        let current = self.readers.current();
        let (removed, mut kept): (Vec<Arc<Block>>, Vec<Arc<Block>>) = current
            .blocks
            .iter()
            .cloned()
            .partition(|b| gone.contains(&b.meta().ulid));
        kept.extend(new);
        kept.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
        let generation = self.readers.publish(kept);
        self.readers.wait_before(generation);
        removed
    }

    /// Merge blocks `ulids` of the current set into one block (`meta` gives its range and
    /// compaction fields; stats are computed): series merged by label set, tombstones applied,
    /// chunks as stored unless they overlap. Once the merged block is durable it replaces its
    /// parents for readers, and the parents are deleted (a crash before that: the next open
    /// deletes them, since the merged block lists them as parents). A merge whose samples were
    /// all deleted writes no block. Returns the new block's meta.
    fn merge_blocks(&self, ulids: &[Ulid], meta: BlockMeta) -> Result<Option<BlockMeta>, DbError> {
        let set = self.readers.current();
        let parents: Vec<Arc<Block>> = set
            .blocks
            .iter()
            .filter(|b| ulids.contains(&b.meta().ulid))
            .cloned()
            .collect();
        if parents.len() != ulids.len() || parents.is_empty() {
            return Err(DbError::Options(format!(
                "merge of {} blocks: only {} are open",
                ulids.len(),
                parents.len()
            )));
        }
        let mut symbols: Vec<&str> = parents.iter().flat_map(|b| b.index().symbols()).collect();
        symbols.sort_unstable();
        symbols.dedup();
        let mut sources = Vec::with_capacity(parents.len());
        for b in &parents {
            let ids = b.index().all_postings().map_err(BlockError::from)?;
            sources.push(Source::Block {
                block: Arc::clone(b),
                ids: ids.into_iter(),
            });
        }
        let merge = Merge::new(sources, i64::MIN, i64::MAX, self.head.chunk_mapper()).purging();
        let writer = BlockWriter {
            segment_size: self.opts.block_segment_size,
        };
        self.fault("merge-write")?;
        let mut source_err: Option<DbError> = None;
        let written = writer.write_stream(
            &self.dir,
            meta.ulid,
            meta.min_time,
            meta.max_time,
            meta.compaction.clone(),
            symbols,
            |sink| {
                for item in merge {
                    let s = match item {
                        Ok(s) => s,
                        Err(e) => {
                            source_err = Some(e);
                            return Err(BlockError::Invalid {
                                reason: "reading the blocks to merge failed".into(),
                            });
                        }
                    };
                    let chunks: Vec<block::ChunkData<'_>> = s
                        .chunks
                        .iter()
                        .map(|c| block::ChunkData {
                            mint: c.mint,
                            maxt: c.maxt,
                            encoding: Encoding::Xor as u8,
                            data: &c.data,
                        })
                        .collect();
                    sink(&s.labels, &chunks)?;
                }
                Ok(())
            },
        );
        let written = match (written, source_err) {
            (_, Some(e)) => return Err(e),
            (Err(e), None) => return Err(e.into()),
            (Ok(m), None) => m,
        };
        let dir = self.dir.join(written.ulid.to_string());
        self.fault("merge-publish")?;
        let (new, result) = if written.stats.num_samples == 0 {
            // Everything was deleted: no block. The parents go all the same.
            fileutil::remove_dir_atomic(&dir).map_err(|source| DbError::Io {
                op: "remove empty block",
                path: dir.clone(),
                source,
            })?;
            (None, None)
        } else {
            (Some(Arc::new(Block::open(&dir)?)), Some(written))
        };
        let removed = self.swap_blocks(ulids, new);
        self.fault("merge-delete-parents")?;
        self.delete_block_dirs(&removed)?;
        Ok(result)
    }

    fn delete_block_dirs(&self, blocks: &[Arc<Block>]) -> Result<(), DbError> {
        for b in blocks {
            fileutil::remove_dir_atomic(b.dir()).map_err(|source| DbError::Io {
                op: "remove block",
                path: b.dir().to_path_buf(),
                source,
            })?;
        }
        Ok(())
    }

    /// Delete blocks `ulids` (retention): readers stop seeing them first; each directory is
    /// renamed to `*.tmp-for-deletion` before it is removed.
    fn delete_blocks(&self, ulids: &[Ulid]) -> Result<(), DbError> {
        if ulids.is_empty() {
            return Ok(());
        }
        let removed = self.swap_blocks(ulids, None);
        self.fault("retention-delete")?;
        self.delete_block_dirs(&removed)
    }

    /// Prometheus `Head.truncateWAL`: checkpoint the older two thirds of the WAL's segments
    /// (never the one being written) keeping what the head still needs — series it holds,
    /// samples at or after `mint` — then delete those segments and older checkpoints.
    fn truncate_wal(&self, mint: i64, report: &mut CompactReport) -> Result<(), DbError> {
        let (first, last) = self.wal.segment_range().map_err(|source| DbError::Io {
            op: "list segments",
            path: self.wal.dir().to_path_buf(),
            source,
        })?;
        let Some(live_before) = last.checked_sub(1) else {
            return Ok(());
        };
        let to = first + live_before.saturating_sub(first) * 2 / 3;
        if to <= first {
            return Ok(());
        }
        self.fault("checkpoint")?;
        self.wal
            .checkpoint(first, to, |r| self.head.keep_in_checkpoint(r, to), mint)?;
        report.checkpoint = Some(to);
        self.fault("truncate-wal")?;
        report.wal_segments_deleted = self.wal.truncate(to + 1)?;
        self.head.forget_deleted(to);
        self.fault("delete-checkpoints")?;
        self.wal.delete_checkpoints(to)?;
        Ok(())
    }

    /// Write the head's samples in `[mint, maxt)` as a block; `None` if it has none.
    fn write_head_block(
        &self,
        parent: &Path,
        mint: i64,
        maxt: i64,
    ) -> Result<Option<BlockMeta>, DbError> {
        let series = self.head.series_in_range(mint, maxt - 1);
        if series.is_empty() {
            return Ok(None);
        }
        // Distinct strings through a hash set, then one sort: far fewer string comparisons
        // than inserting every label into an ordered set.
        let mut distinct: std::collections::HashSet<&str, xxhash_rust::xxh64::Xxh64Builder> =
            std::collections::HashSet::with_hasher(xxhash_rust::xxh64::Xxh64Builder::new(0));
        for s in &series {
            for (n, v) in s.labels.iter() {
                distinct.insert(n);
                distinct.insert(v);
            }
        }
        let mut symbols: Vec<&str> = distinct.into_iter().collect();
        symbols.sort_unstable();
        let ulid = self.new_ulid()?;
        let mapper = self.head.chunk_mapper();
        let writer = BlockWriter {
            segment_size: self.opts.block_segment_size,
        };
        let mut source_err: Option<DbError> = None;
        let res = writer.write_stream(
            parent,
            ulid,
            mint,
            maxt,
            Compaction::level1(ulid),
            symbols,
            |sink| {
                for s in &series {
                    let prepared = match self.block_chunks(s, mint, maxt, mapper) {
                        Ok(p) => p,
                        Err(e) => {
                            source_err = Some(e);
                            return Err(BlockError::Invalid {
                                reason: "reading the head failed".into(),
                            });
                        }
                    };
                    let chunks: Vec<block::ChunkData<'_>> = prepared
                        .iter()
                        .map(|(mint, maxt, data)| block::ChunkData {
                            mint: *mint,
                            maxt: *maxt,
                            encoding: Encoding::Xor as u8,
                            data,
                        })
                        .collect();
                    sink(&s.labels, &chunks)?;
                }
                Ok(())
            },
        );
        match (res, source_err) {
            (_, Some(e)) => Err(e),
            (Ok(meta), None) if meta.stats.num_samples > 0 => Ok(Some(meta)),
            (Ok(meta), None) => {
                // Everything in the range was deleted: no block.
                let dir = parent.join(meta.ulid.to_string());
                fileutil::remove_dir_atomic(&dir).map_err(|source| DbError::Io {
                    op: "remove empty block",
                    path: dir,
                    source,
                })?;
                Ok(None)
            }
            (Err(e), None) => Err(e.into()),
        }
    }

    /// A head series' chunks for the block `[mint, maxt)`: stored bytes, except chunks that
    /// reach outside the range or hold deleted samples, which are re-encoded without them.
    fn block_chunks(
        &self,
        s: &crate::tsdb::head::MemSeries,
        mint: i64,
        maxt: i64,
        mapper: &ChunkDiskMapper,
    ) -> Result<Vec<(i64, i64, ChunkBytes)>, DbError> {
        let stones = self.head.tombstones(s.sref);
        let mut out = Vec::new();
        for c in s.chunks(mint, maxt - 1, mapper)? {
            let touched = stones.iter().any(|&(a, b)| a <= c.maxt && b >= c.mint);
            if c.mint >= mint && c.maxt < maxt && !touched {
                out.push((c.mint, c.maxt, ChunkBytes::Stored(c.data)));
                continue;
            }
            let mut chunk = XorChunk::new();
            let (mut lo, mut hi) = (i64::MAX, i64::MIN);
            let mut it = XorIterator::new(&c.data).map_err(|e| DbError::Decode {
                series: s.labels.to_string(),
                source: e,
            })?;
            for (t, v) in it.by_ref() {
                if t >= mint && t < maxt && !stones.iter().any(|&(a, b)| t >= a && t <= b) {
                    chunk.append(t, v);
                    lo = lo.min(t);
                    hi = hi.max(t);
                }
            }
            if let Some(e) = it.err() {
                return Err(DbError::Decode {
                    series: s.labels.to_string(),
                    source: e.clone(),
                });
            }
            if chunk.num_samples() > 0 {
                out.push((lo, hi, ChunkBytes::Encoded(chunk.into_bytes())));
            }
        }
        Ok(out)
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
