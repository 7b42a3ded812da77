//! [`Db`]: opens a data directory (lock, cleanup, recovery) and ties the WAL and the head.
//!
//! Open order, each step finishing before the next:
//! 1. create the directory, take `lock` (a second process gets a clear error);
//! 2. remove leftovers of interrupted work (`*.tmp`, `*.tmp-for-creation`, …);
//! 3. replay `chunks_head/` (a bad entry ends the data: cut there, later files removed);
//! 4. replay the WAL into the head, attaching each series' chunks from step 3 and skipping
//!    samples they already hold; a torn or corrupt tail is repaired and counted;
//! 5. open a fresh WAL segment for writing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::model::{Labels, Matcher};
use crate::tsdb::chunkenc::DecodeError;
use crate::tsdb::fileutil::{self, LockError, LockFile};
use crate::tsdb::head::chunks::{
    ChunkDiskMapper, ChunkFileError, ChunkReplayReport, DEFAULT_MAX_FILE_SIZE,
};
use crate::tsdb::head::{
    AppendError, AppendReport, AppendSeries, ChunkMeta, Head, HeadOptions, ReplayState, Sample,
};
use crate::tsdb::wal::fs::{FileSystem, OsFs};
use crate::tsdb::wal::{ReplayReport, Wal, WalError, WalOptions};

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
    pub duration: Duration,
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

/// An open data directory.
pub struct Db {
    dir: PathBuf,
    head: Head,
    wal: Wal,
    report: OpenReport,
    last_recover: Mutex<Option<Instant>>,
    _lock: LockFile,
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
        report.duration = start.elapsed();
        Ok(Db {
            dir,
            head,
            wal,
            report,
            last_recover: Mutex::new(None),
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
    /// it, so a reader streaming the result holds one series' chunks at a time.
    pub fn select_iter(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
    ) -> impl Iterator<Item = Result<SeriesChunks, DbError>> + '_ {
        let mapper = self.head.chunk_mapper();
        self.head
            .select(matchers, mint, maxt)
            .into_iter()
            .map(move |s| {
                Ok(SeriesChunks {
                    chunks: s.chunks(mint, maxt, mapper)?,
                    tombstones: self.head.tombstones(s.sref),
                    labels: s.labels.clone(),
                })
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
