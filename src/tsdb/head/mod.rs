//! The in-memory head: recent samples of every active series, in Prometheus's XOR chunks.
//!
//! # Structure
//! - Series live in two striped indexes (by label hash, by ref): a lookup takes one stripe's
//!   read lock, so concurrent appenders do not contend on a global lock. The by-hash key is
//!   xxh64 of the label set's compact encoding (not Prometheus's `labels.Hash`; it never leaves
//!   memory), so a lookup encodes once and compares candidates with one `memcmp`. A by-hash
//!   stripe is an open-addressing table (`SeriesTable`) whose slots hold `(hash, Arc)`
//!   directly; label sets with equal hashes take separate slots and are always told apart by
//!   comparing the labels.
//! - An append resolves its batch in two passes (`Head::resolve`): encode and hash every
//!   label set, then look them up in a software-prefetching pipeline, so the cache misses of
//!   one lookup (slot → series → label bytes) overlap with those of the next few.
//! - Each [`MemSeries`] has one mutex over its chunks: full chunks are written to
//!   `chunks_head/` ([`chunks`]) and read back through a map; the open chunk is in memory.
//! - [`postings::MemPostings`] maps label pairs to series refs; it is written only when a series
//!   is created.
//!
//! # Append ([`Head::append`]), in this order
//! 1. resolve every series of the batch (creating new ones, which get a ref and postings);
//! 2. lock the batch's series in ref order (no deadlock between batches) and validate every
//!    sample against the series' last sample and the head's time bounds — rejected samples are
//!    counted by reason and never reach the WAL;
//! 3. write one WAL entry (a Series record for series not yet logged, one Samples record) and
//!    wait for the sync policy (group commit);
//! 4. apply the accepted samples to the chunks; unlock; return the report.
//!
//! If step 3 fails nothing is applied, so memory never holds data the WAL lost. A series'
//! `logged_epoch` records in which WAL epoch its Series record was written; after the WAL opens
//! a fresh segment (epoch changes) every series is logged again before its next samples.
//!
//! Chunks are cut the way Prometheus cuts them (`memSeries.appendPreprocessor`): at the end of
//! the block range the chunk started in, and, once a chunk has 30 samples, at a predicted end
//! time that spreads the range evenly over chunks of ~120 samples; never above 240 samples.

mod append;
pub mod chunks;
pub mod postings;
mod replay;
mod series;
mod table;
mod truncate;

pub use self::append::validate_labels;
use self::append::*;
pub use self::replay::ReplayState;
use self::series::*;
pub use self::series::{
    compute_chunk_end_time, range_for_timestamp, ChunkData, ChunkMeta, MemSeries,
};
use self::table::*;
pub use crate::tsdb::u64map::{U64BuildHasher, U64Hasher, U64Map};

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard, RwLock};

use self::chunks::{ChunkDiskMapper, ChunkFileError, ChunkRef, MappedChunk, ReplayedChunk};
use self::postings::MemPostings;
use crate::model::{Labels, Matcher};
use crate::tsdb::chunkenc::{Encoding, XorChunk, XorIterator, SAMPLES_PER_CHUNK};
use crate::tsdb::wal::record::{self, RefSample, Stone};
use crate::tsdb::wal::{Wal, WalError};

const STRIPES: usize = 256;
const NOT_LOGGED: u32 = u32::MAX;

/// A sample to append: timestamp in ms since the epoch, float value (any bits, NaN included).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: i64,
    pub v: f64,
}

/// One series of an append batch. `labels` must be sorted by name, with no empty names or
/// values and no duplicate names (the HTTP layer normalises what Prometheus tolerates).
#[derive(Debug, Clone, Copy)]
pub struct AppendSeries<'a> {
    pub labels: &'a [(&'a str, &'a str)],
    pub samples: &'a [Sample],
}

/// Why a label set can never be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvalidLabels {
    NoLabels,
    EmptyName,
    EmptyValue,
    Unsorted,
    DuplicateName,
    /// A name or value is not valid UTF-8 (found by the protocol decoders; the engine only
    /// sees `&str`).
    InvalidUtf8,
    /// Over the protocol layer's label limits.
    TooManyLabels,
    NameTooLong,
    ValueTooLong,
}

impl InvalidLabels {
    pub fn describe(&self) -> &'static str {
        match self {
            InvalidLabels::NoLabels => "label set is empty",
            InvalidLabels::EmptyName => "label with an empty name",
            InvalidLabels::EmptyValue => "label with an empty value",
            InvalidLabels::Unsorted => "labels not sorted by name",
            InvalidLabels::DuplicateName => "duplicate label name",
            InvalidLabels::InvalidUtf8 => "label name or value is not valid UTF-8",
            InvalidLabels::TooManyLabels => "too many labels",
            InvalidLabels::NameTooLong => "label name too long",
            InvalidLabels::ValueTooLong => "label value too long",
        }
    }
}

/// Why a sample was not stored. All of these are permanent: the sender must not retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    InvalidLabels(InvalidLabels),
    /// Older than the series' newest sample.
    OutOfOrder,
    /// Same timestamp as the series' newest sample, different value.
    Duplicate,
    /// Older than the head accepts (head max time − half the block range).
    OutOfBounds,
    /// Further in the future than `max_future` allows.
    TooFarInFuture,
    /// A new series beyond the head's series limit.
    SeriesLimit,
}

impl RejectReason {
    /// Stable snake_case name, used in metrics labels and error bodies.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::InvalidLabels(_) => "invalid_labels",
            RejectReason::OutOfOrder => "out_of_order",
            RejectReason::Duplicate => "duplicate",
            RejectReason::OutOfBounds => "out_of_bounds",
            RejectReason::TooFarInFuture => "too_far_in_future",
            RejectReason::SeriesLimit => "series_limit",
        }
    }
}

/// Counts per rejection reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RejectCounts {
    pub invalid_labels: u64,
    pub out_of_order: u64,
    pub duplicate: u64,
    pub out_of_bounds: u64,
    pub too_far_in_future: u64,
    pub series_limit: u64,
}

impl RejectCounts {
    pub fn add(&mut self, r: RejectReason, n: u64) {
        let c = match r {
            RejectReason::InvalidLabels(_) => &mut self.invalid_labels,
            RejectReason::OutOfOrder => &mut self.out_of_order,
            RejectReason::Duplicate => &mut self.duplicate,
            RejectReason::OutOfBounds => &mut self.out_of_bounds,
            RejectReason::TooFarInFuture => &mut self.too_far_in_future,
            RejectReason::SeriesLimit => &mut self.series_limit,
        };
        *c += n;
    }
    /// Counts with their reason names (as in [`RejectReason::as_str`]).
    pub fn by_reason(&self) -> [(&'static str, u64); 6] {
        [
            ("invalid_labels", self.invalid_labels),
            ("out_of_order", self.out_of_order),
            ("duplicate", self.duplicate),
            ("out_of_bounds", self.out_of_bounds),
            ("too_far_in_future", self.too_far_in_future),
            ("series_limit", self.series_limit),
        ]
    }

    pub fn merge(&mut self, o: &RejectCounts) {
        self.invalid_labels += o.invalid_labels;
        self.out_of_order += o.out_of_order;
        self.duplicate += o.duplicate;
        self.out_of_bounds += o.out_of_bounds;
        self.too_far_in_future += o.too_far_in_future;
        self.series_limit += o.series_limit;
    }

    pub fn total(&self) -> u64 {
        self.invalid_labels
            + self.out_of_order
            + self.duplicate
            + self.out_of_bounds
            + self.too_far_in_future
            + self.series_limit
    }
}

/// The first rejected sample of a batch, to name in an error message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rejection {
    /// Index of the series in the batch.
    pub series: usize,
    pub t: i64,
    pub reason: RejectReason,
}

/// What an append did. Valid samples are stored even when others are rejected.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AppendReport {
    /// Samples written to the WAL and the head.
    pub accepted: u64,
    /// Exact duplicates of the series' newest sample (same timestamp and value bits): accepted
    /// as no-ops so retries are idempotent.
    pub duplicates_ignored: u64,
    pub new_series: u64,
    pub rejected: RejectCounts,
    pub first_rejection: Option<Rejection>,
}

impl AppendReport {
    fn reject(&mut self, series: usize, t: i64, reason: RejectReason, n: u64) {
        self.rejected.add(reason, n);
        if self.first_rejection.is_none() {
            self.first_rejection = Some(Rejection { series, t, reason });
        }
    }
}

/// Why nothing of a batch was stored. Transient: the sender should retry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    #[error(transparent)]
    Wal(#[from] WalError),
}

impl AppendError {
    /// What retrying the same batch can bring.
    pub fn retry(&self) -> crate::tsdb::Retry {
        match self {
            AppendError::Wal(e) => e.retry(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HeadOptions {
    /// Block range in ms (`--storage.tsdb.min-block-duration`); chunks never cross it.
    pub chunk_range: i64,
    /// Samples further than this many ms in the future are rejected.
    pub max_future_ms: i64,
    /// Most series the head may hold; samples of new series beyond it are rejected
    /// ([`RejectReason::SeriesLimit`]). 0: no limit. Replay is never limited.
    pub max_series: u64,
}

/// Statistics for `/metrics` (relaxed atomics).
#[derive(Debug, Default)]
pub struct HeadStats {
    pub series: AtomicU64,
    pub series_created: AtomicU64,
    pub chunks_created: AtomicU64,
    pub samples_appended: AtomicU64,
    pub chunk_write_errors: AtomicU64,
    pub series_removed: AtomicU64,
    pub chunks_removed: AtomicU64,
    pub truncations: AtomicU64,
}

/// What [`Head::truncate`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TruncateReport {
    pub series_removed: u64,
    pub chunks_removed: u64,
    pub chunk_files_removed: u64,
}

/// The in-memory head block.
pub struct Head {
    opts: HeadOptions,
    by_hash: Box<[HashStripe]>,
    by_ref: Box<[RwLock<U64Map<Arc<MemSeries>>>]>,
    postings: RwLock<MemPostings>,
    next_ref: AtomicU64,
    min_time: AtomicI64,
    max_time: AtomicI64,
    /// Nothing older than this is accepted (moves up when the head is compacted).
    min_valid_time: AtomicI64,
    /// Held shared by every append from before it reads the time bounds until it has applied
    /// its samples; [`Head::raise_min_valid`] takes it exclusively once, so when that returns
    /// no append that saw the old bound is still running.
    append_gate: RwLock<()>,
    /// Series removed by truncation → the WAL segment being written then. A checkpoint keeps
    /// their Series record while later segments may still hold their samples.
    deleted: Mutex<U64Map<u64>>,
    chunks: ChunkDiskMapper,
    tombstones: RwLock<U64Map<Vec<(i64, i64)>>>,
    scratch: Mutex<Vec<Scratch>>,
    pub stats: HeadStats,
}

/// Current wall-clock time in ms.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Head {
    pub fn new(opts: HeadOptions, chunks: ChunkDiskMapper) -> Head {
        Head {
            opts,
            by_hash: (0..STRIPES)
                .map(|_| RwLock::new(SeriesTable::default()))
                .collect(),
            by_ref: (0..STRIPES)
                .map(|_| RwLock::new(U64Map::default()))
                .collect(),
            postings: RwLock::new(MemPostings::default()),
            next_ref: AtomicU64::new(1),
            min_time: AtomicI64::new(i64::MAX),
            max_time: AtomicI64::new(i64::MIN),
            min_valid_time: AtomicI64::new(i64::MIN),
            append_gate: RwLock::new(()),
            deleted: Mutex::new(U64Map::default()),
            chunks,
            tombstones: RwLock::new(U64Map::default()),
            scratch: Mutex::new(Vec::new()),
            stats: HeadStats::default(),
        }
    }

    pub fn options(&self) -> &HeadOptions {
        &self.opts
    }

    pub fn chunk_mapper(&self) -> &ChunkDiskMapper {
        &self.chunks
    }

    pub fn num_series(&self) -> u64 {
        self.stats.series.load(Ordering::Relaxed)
    }

    /// Oldest sample time in the head (`i64::MAX` when empty).
    pub fn min_time(&self) -> i64 {
        self.min_time.load(Ordering::Acquire)
    }

    /// Newest sample time in the head (`i64::MIN` when empty).
    pub fn max_time(&self) -> i64 {
        self.max_time.load(Ordering::Acquire)
    }

    fn stripe<T>(stripes: &[T], key: u64) -> Option<&T> {
        stripes.get(key as usize % STRIPES)
    }

    pub fn series_by_ref(&self, sref: u64) -> Option<Arc<MemSeries>> {
        Self::stripe(&self.by_ref, sref)?.read().get(&sref).cloned()
    }

    /// Series matching `matchers` with samples in `[mint, maxt]`, sorted by label set.
    pub fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<Arc<MemSeries>> {
        let refs = self.postings.read().for_matchers(matchers);
        let mut out: Vec<Arc<MemSeries>> = refs
            .into_iter()
            .filter_map(|r| self.series_by_ref(r))
            .filter(|s| s.time_range().is_some_and(|(a, b)| a <= maxt && b >= mint))
            .collect();
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Record deleted intervals (after their Tombstones WAL record was written).
    pub fn add_tombstones(&self, stones: &[Stone]) {
        let mut ts = self.tombstones.write();
        for s in stones {
            ts.entry(s.sref).or_default().push((s.mint, s.maxt));
        }
    }

    /// Deleted intervals of a series (closed), from WAL tombstones.
    pub fn tombstones(&self, sref: u64) -> Vec<(i64, i64)> {
        self.tombstones
            .read()
            .get(&sref)
            .cloned()
            .unwrap_or_default()
    }

    pub fn label_names(&self) -> Vec<String> {
        self.postings.read().label_names()
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        self.postings.read().label_values(name)
    }

    /// Write buffered head chunks to their files.
    pub fn flush_chunks(&self) -> Result<(), ChunkFileError> {
        self.chunks.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_end_time_spreads_the_range_like_prometheus() {
        // 15s scrapes in a 2h range: after 30 samples predict a quarter of the range.
        let start = 0;
        let cur = 29 * 15_000;
        assert_eq!(compute_chunk_end_time(start, cur, 7_200_000), 1_800_000);
        // Sparse data: keep the range end.
        assert_eq!(compute_chunk_end_time(0, 3_000_000, 7_200_000), 7_200_000);
        assert_eq!(range_for_timestamp(7_199_999, 7_200_000), 7_200_000);
        assert_eq!(range_for_timestamp(7_200_000, 7_200_000), 14_400_000);
        // Go's truncating division for negative times.
        assert_eq!(range_for_timestamp(-1, 7_200_000), 7_200_000);
    }

    fn series(sref: u64, pairs: &[(&str, &str)]) -> Arc<MemSeries> {
        Arc::new(MemSeries {
            sref,
            labels: Labels::from_sorted_pairs(pairs.iter().copied()),
            logged_epoch: AtomicU32::new(NOT_LOGGED),
            data: Mutex::new(SeriesData::new()),
        })
    }

    #[test]
    fn series_table_tells_colliding_label_sets_apart_and_survives_growth() {
        let mut t = SeriesTable::default();
        assert!(t.find(7, "x").is_none());
        let values: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
        for (i, v) in values.iter().enumerate() {
            // Every third series shares one hash (a forced collision); the others spread, some
            // with the same home slot as the colliding run.
            let hash = if i % 3 == 0 { 0x4200 } else { (i as u64) << 8 };
            let s = series(i as u64, &[("a", v)]);
            assert!(t.find(hash, s.labels.encoded()).is_none());
            t.insert(hash, s);
        }
        assert_eq!(t.len, 2000);
        assert!(t.len * 4 <= t.slots.len() * 3);
        for (i, v) in values.iter().enumerate() {
            let hash = if i % 3 == 0 { 0x4200 } else { (i as u64) << 8 };
            let key = Labels::from_sorted_pairs([("a", v.as_str())]);
            let found = t.find(hash, key.encoded()).map(|s| s.sref);
            assert_eq!(found, Some(i as u64), "series {i}");
            // Equal hash, different labels: not found.
            assert!(t
                .find(hash, Labels::from_sorted_pairs([("b", "1")]).encoded())
                .is_none());
        }
        assert_eq!(t.candidates(0x4200).count(), 667);
    }

    #[test]
    fn label_validation_names_the_problem() {
        assert_eq!(validate_labels(&[]), Err(InvalidLabels::NoLabels));
        assert_eq!(validate_labels(&[("", "x")]), Err(InvalidLabels::EmptyName));
        assert_eq!(
            validate_labels(&[("a", "")]),
            Err(InvalidLabels::EmptyValue)
        );
        assert_eq!(
            validate_labels(&[("b", "x"), ("a", "y")]),
            Err(InvalidLabels::Unsorted)
        );
        assert_eq!(
            validate_labels(&[("a", "x"), ("a", "y")]),
            Err(InvalidLabels::DuplicateName)
        );
        assert_eq!(validate_labels(&[("a", "x"), ("b", "y")]), Ok(()));
    }
}
