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

pub mod chunks;
pub mod postings;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
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

/// A closed (full) chunk of a series.
#[derive(Debug, Clone)]
enum ClosedChunk {
    /// In `chunks_head/`.
    Mapped {
        cref: ChunkRef,
        mint: i64,
        maxt: i64,
    },
    /// Kept in memory because writing it to `chunks_head/` failed (the WAL still has it).
    Mem {
        data: Arc<[u8]>,
        mint: i64,
        maxt: i64,
    },
}

impl ClosedChunk {
    fn range(&self) -> (i64, i64) {
        match self {
            ClosedChunk::Mapped { mint, maxt, .. } | ClosedChunk::Mem { mint, maxt, .. } => {
                (*mint, *maxt)
            }
        }
    }
}

#[derive(Debug)]
struct HeadChunk {
    chunk: XorChunk,
    mint: i64,
    maxt: i64,
}

/// A series' chunks. Guarded by `MemSeries::data`.
#[derive(Debug)]
struct SeriesData {
    closed: Vec<ClosedChunk>,
    head: Option<HeadChunk>,
    /// When the open chunk must be cut at the latest.
    next_at: i64,
    /// Newest sample (i64::MIN when the series has none).
    last_t: i64,
    last_v: u64,
    /// Set (under this lock) when head truncation removed the series from the indexes; an
    /// append that resolved it earlier sees this after locking and resolves again.
    removed: bool,
    /// A closed chunk could not be written to `chunks_head/`: this and every later closed
    /// chunk of the series stay in memory. Replay trusts a series' mapped chunks as a gap-free
    /// prefix (WAL samples up to the last one are skipped), so no later chunk may reach the
    /// file after a missing one.
    memory_only: bool,
}

/// One series in the head.
#[derive(Debug)]
pub struct MemSeries {
    pub sref: u64,
    pub labels: Labels,
    /// WAL epoch in which this series' Series record was written (`NOT_LOGGED`: never).
    logged_epoch: AtomicU32,
    data: Mutex<SeriesData>,
}

/// Prometheus's `rangeForTimestamp`: end of the block range `t` falls in (Go's truncating `/`).
pub fn range_for_timestamp(t: i64, width: i64) -> i64 {
    (t / width) * width + width
}

/// Prometheus's `computeChunkEndTime`.
pub fn compute_chunk_end_time(start: i64, cur: i64, max: i64) -> i64 {
    let denom = (cur - start + 1).saturating_mul(4);
    let n = if denom > 0 { (max - start) / denom } else { 1 };
    if n <= 1 {
        max
    } else {
        start + (max - start) / n
    }
}

impl SeriesData {
    fn new() -> SeriesData {
        SeriesData {
            closed: Vec::new(),
            head: None,
            next_at: i64::MIN,
            last_t: i64::MIN,
            last_v: 0,
            removed: false,
            memory_only: false,
        }
    }

    /// Append a sample the caller has checked is newer than `last_t`.
    fn append(
        &mut self,
        sref: u64,
        t: i64,
        v: f64,
        chunk_range: i64,
        chunks: &ChunkDiskMapper,
        stats: &HeadStats,
    ) {
        let cut = match &self.head {
            None => true,
            Some(c) => {
                let n = usize::from(c.chunk.num_samples());
                if n == SAMPLES_PER_CHUNK / 4 {
                    self.next_at = compute_chunk_end_time(c.mint, c.maxt, self.next_at);
                }
                t >= self.next_at || n >= SAMPLES_PER_CHUNK * 2
            }
        };
        if cut {
            self.cut(sref, t, chunk_range, chunks, stats);
        }
        if let Some(c) = self.head.as_mut() {
            c.chunk.append(t, v);
            c.maxt = t;
        }
        self.last_t = t;
        self.last_v = v.to_bits();
    }

    /// Close the open chunk (to `chunks_head/`) and open a new one starting at `mint`.
    fn cut(
        &mut self,
        sref: u64,
        mint: i64,
        chunk_range: i64,
        chunks: &ChunkDiskMapper,
        stats: &HeadStats,
    ) {
        if let Some(old) = self.head.take() {
            if old.chunk.num_samples() > 0 {
                let bytes = old.chunk.bytes();
                let written = if self.memory_only {
                    None
                } else {
                    match chunks.write_chunk(sref, old.mint, old.maxt, Encoding::Xor as u8, bytes) {
                        Ok(cref) => Some(cref),
                        Err(_) => {
                            stats.chunk_write_errors.fetch_add(1, Ordering::Relaxed);
                            self.memory_only = true;
                            None
                        }
                    }
                };
                self.closed.push(match written {
                    Some(cref) => ClosedChunk::Mapped {
                        cref,
                        mint: old.mint,
                        maxt: old.maxt,
                    },
                    None => ClosedChunk::Mem {
                        data: Arc::from(bytes),
                        mint: old.mint,
                        maxt: old.maxt,
                    },
                });
            }
        }
        stats.chunks_created.fetch_add(1, Ordering::Relaxed);
        self.head = Some(HeadChunk {
            chunk: XorChunk::new(),
            mint,
            maxt: i64::MIN,
        });
        self.next_at = range_for_timestamp(mint, chunk_range);
    }

    /// Drop every chunk that ends before `mint`; returns how many were dropped.
    fn truncate_before(&mut self, mint: i64) -> u64 {
        let before = self.closed.len();
        self.closed.retain(|c| c.range().1 >= mint);
        // The chunks that never reached the file are gone (in a block now): later chunks may
        // go to the file again without leaving a gap replay would skip over.
        if !self
            .closed
            .iter()
            .any(|c| matches!(c, ClosedChunk::Mem { .. }))
        {
            self.memory_only = false;
        }
        let mut n = (before - self.closed.len()) as u64;
        if self.head.as_ref().is_some_and(|h| h.maxt < mint) {
            self.head = None;
            n += 1;
        }
        n
    }

    fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.head.is_none()
    }

    fn time_range(&self) -> Option<(i64, i64)> {
        let first = self
            .closed
            .first()
            .map(|c| c.range().0)
            .or(self.head.as_ref().map(|h| h.mint))?;
        Some((first, self.last_t))
    }
}

/// The bytes of a chunk handed to readers.
#[derive(Debug, Clone)]
pub enum ChunkData {
    /// A closed chunk, straight from its memory-mapped file.
    Mapped(MappedChunk),
    /// The open chunk (copied under the series lock) or a closed chunk held in memory.
    Owned(Arc<[u8]>),
}

impl Deref for ChunkData {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            ChunkData::Mapped(m) => m,
            ChunkData::Owned(b) => b,
        }
    }
}

/// A chunk of a series with its closed time range.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    pub data: ChunkData,
}

impl ChunkMeta {
    /// Iterate the chunk's samples (XOR).
    pub fn iter(&self) -> Result<XorIterator<'_>, crate::tsdb::chunkenc::DecodeError> {
        XorIterator::new(&self.data)
    }
}

impl MemSeries {
    /// Chunks overlapping `[mint, maxt]`, oldest first. Closed chunks are served as stored.
    pub fn chunks(
        &self,
        mint: i64,
        maxt: i64,
        mapper: &ChunkDiskMapper,
    ) -> Result<Vec<ChunkMeta>, ChunkFileError> {
        enum Pending {
            Mapped(ChunkRef, i64, i64),
            Ready(ChunkMeta),
        }
        let pending: Vec<Pending> = {
            let d = self.data.lock();
            let mut v = Vec::with_capacity(d.closed.len() + 1);
            for c in &d.closed {
                let (cmin, cmax) = c.range();
                if cmax < mint || cmin > maxt {
                    continue;
                }
                v.push(match c {
                    ClosedChunk::Mapped { cref, .. } => Pending::Mapped(*cref, cmin, cmax),
                    ClosedChunk::Mem { data, .. } => Pending::Ready(ChunkMeta {
                        mint: cmin,
                        maxt: cmax,
                        data: ChunkData::Owned(Arc::clone(data)),
                    }),
                });
            }
            if let Some(h) = &d.head {
                if h.chunk.num_samples() > 0 && h.maxt >= mint && h.mint <= maxt {
                    v.push(Pending::Ready(ChunkMeta {
                        mint: h.mint,
                        maxt: h.maxt,
                        data: ChunkData::Owned(Arc::from(h.chunk.bytes())),
                    }));
                }
            }
            v
        };
        pending
            .into_iter()
            .map(|p| match p {
                Pending::Ready(c) => Ok(c),
                Pending::Mapped(cref, mint, maxt) => Ok(ChunkMeta {
                    mint,
                    maxt,
                    data: ChunkData::Mapped(mapper.chunk(cref)?),
                }),
            })
            .collect()
    }

    /// `(oldest, newest)` sample time, if the series has samples.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        self.data.lock().time_range()
    }

    fn is_logged(&self, epoch: u32) -> bool {
        self.logged_epoch.load(Ordering::Acquire) == epoch
    }
}

/// Hasher for `u64` keys (label-set hashes, sequential refs): a multiply and a fold, so every
/// output bit depends on every input bit. (A bare multiply would not do: the stripes are chosen
/// by the key's low bits, and hashbrown picks buckets with the low bits of this hash, which after
/// a multiply depend only on the key's low bits — every key of a stripe would probe the same
/// few buckets.)
#[derive(Default)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, x: u64) {
        let m = (x ^ (x >> 31)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = m ^ (m >> 29);
    }
}

pub type U64BuildHasher = BuildHasherDefault<U64Hasher>;
pub type U64Map<V> = HashMap<u64, V, U64BuildHasher>;
/// One stripe of the by-hash series index.
type HashStripe = RwLock<SeriesTable>;

/// Hint the CPU to load the cache line holding `p` (a no-op on other architectures). `p` is
/// never dereferenced: it may dangle or be null.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetcht0` is a hint; it does not fault, read memory architecturally nor
    // change any state visible to the program, whatever address it is given. SSE is part of
    // the x86_64 baseline, so the instruction always exists.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetch every cache line of `len` bytes from `p`.
#[inline(always)]
fn prefetch_range(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        prefetch(p.wrapping_add(off));
        off += 64;
    }
}

/// Slot of a [`SeriesTable`]: the xxh64 of the series' encoded labels, and the series.
#[derive(Default)]
struct Slot {
    hash: u64,
    series: Option<Arc<MemSeries>>,
}

/// One stripe of the by-hash index: an open-addressing table with linear probing whose slots
/// hold the series directly (no per-hash bucket to chase). Series whose label sets share a hash
/// take separate slots of the same probe run, so a lookup compares the labels of every slot
/// with an equal hash until the run ends at an empty slot; a hash is never taken as identity.
///
/// The table is at most 3/4 full (it doubles before), so a run always ends. Removal (head
/// truncation, not implemented yet) must keep runs intact: empty the slot, then shift later
/// slots of the run back (backward-shift deletion), all under the stripe's write lock.
#[derive(Default)]
struct SeriesTable {
    /// Power-of-two length, or empty.
    slots: Vec<Slot>,
    len: usize,
}

impl SeriesTable {
    /// Where `hash`'s probe run starts. The stripe was chosen by the low bits of `hash`; the
    /// slot uses the bits above them.
    fn home(&self, hash: u64) -> usize {
        ((hash >> 8) as usize) & self.slots.len().wrapping_sub(1)
    }

    /// Address of `hash`'s first slot, to prefetch.
    fn home_ptr(&self, hash: u64) -> *const Slot {
        self.slots
            .get(self.home(hash))
            .map_or(std::ptr::null(), |s| s as *const Slot)
    }

    /// Series whose label hash is `hash`, in probe order (usually one or none).
    fn candidates(&self, hash: u64) -> impl Iterator<Item = &Arc<MemSeries>> + '_ {
        let mask = self.slots.len().wrapping_sub(1);
        let home = self.home(hash);
        (0..self.slots.len())
            .map_while(move |k| {
                let s = self.slots.get((home + k) & mask)?;
                Some((s.hash, s.series.as_ref()?))
            })
            .filter_map(move |(h, s)| (h == hash).then_some(s))
    }

    fn find(&self, hash: u64, key: &str) -> Option<&Arc<MemSeries>> {
        self.candidates(hash).find(|s| s.labels.encoded() == key)
    }

    /// Add a series the caller has checked is not in the table.
    fn insert(&mut self, hash: u64, series: Arc<MemSeries>) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let cap = (self.slots.len() * 2).max(16);
            let old = std::mem::replace(
                &mut self.slots,
                std::iter::repeat_with(Slot::default).take(cap).collect(),
            );
            self.len = 0;
            for s in old {
                if let Some(series) = s.series {
                    self.put(s.hash, series);
                }
            }
        }
        self.put(hash, series);
    }

    /// Remove series `sref` (whose label hash is `hash`) if present, keeping every probe run
    /// intact (backward-shift deletion): later slots of the run whose home is not between the
    /// hole and themselves move back into the hole.
    fn remove(&mut self, hash: u64, sref: u64) -> bool {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = self.home(hash);
        loop {
            let Some(slot) = self.slots.get(i) else {
                return false;
            };
            match &slot.series {
                None => return false,
                Some(s) if slot.hash == hash && s.sref == sref => break,
                Some(_) => i = (i + 1) & mask,
            }
        }
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Slot::default();
        }
        self.len -= 1;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let (h, occupied) = match self.slots.get(j) {
                Some(s) => (s.hash, s.series.is_some()),
                None => return true,
            };
            if !occupied {
                return true;
            }
            // Distance from the slot's home to `j` and to the hole, around the ring: the slot
            // may move into the hole only if the hole is not before its home.
            let home = self.home(h);
            let to_j = j.wrapping_sub(home) & mask;
            let to_hole = hole.wrapping_sub(home) & mask;
            if to_hole <= to_j {
                let moved = self
                    .slots
                    .get_mut(j)
                    .map(std::mem::take)
                    .unwrap_or_default();
                if let Some(dst) = self.slots.get_mut(hole) {
                    *dst = moved;
                }
                hole = j;
            }
            j = (j + 1) & mask;
        }
    }

    /// Store in the first empty slot of the run (one exists: the table is at most 3/4 full).
    fn put(&mut self, hash: u64, series: Arc<MemSeries>) {
        let mask = self.slots.len().wrapping_sub(1);
        let mut i = self.home(hash);
        while let Some(slot) = self.slots.get_mut(i) {
            if slot.series.is_none() {
                *slot = Slot {
                    hash,
                    series: Some(series),
                };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }
}

/// A series of the batch being resolved: its index, where its encoded labels are in
/// `Scratch::keys`, and their hash.
#[derive(Clone, Copy)]
struct Keyed {
    index: usize,
    start: usize,
    end: usize,
    hash: u64,
}

/// Distance, in series, between the stages of the resolve pipeline ([`Head::resolve`]).
const AHEAD: usize = 8;

/// Reusable per-call buffers for [`Head::append`].
#[derive(Default)]
struct Scratch {
    resolved: Vec<(usize, Arc<MemSeries>)>,
    /// The batch's encoded label sets, back to back.
    keys: String,
    keyed: Vec<Keyed>,
    /// Per keyed series: the first series with an equal hash, picked a few steps ahead.
    cands: Vec<Option<Arc<MemSeries>>>,
    order: Vec<usize>,
    lock_of: Vec<u32>,
    wal_samples: Vec<RefSample>,
    apply: Vec<(u32, i64, f64)>,
    series_rec: Vec<u8>,
    samples_rec: Vec<u8>,
}

/// State carried across WAL records during replay.
#[derive(Default)]
pub struct ReplayState {
    /// Chunks found in `chunks_head/`, by series ref, waiting for their Series record.
    pub mmapped: U64Map<Vec<ReplayedChunk>>,
    /// A second ref for an existing label set (possible after a crash) → the series' ref.
    aliases: U64Map<u64>,
    samples: Vec<RefSample>,
    stones: Vec<Stone>,
    key: String,
    pub series: u64,
    pub samples_replayed: u64,
    /// Samples already covered by `chunks_head/` or older than their series' newest sample.
    pub samples_skipped: u64,
    /// Samples whose series record was never seen.
    pub unknown_refs: u64,
    /// Records of kinds the head does not keep (histograms, exemplars, metadata, …).
    pub not_kept: record::RecordsNotKept,
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

/// Check a label set is sorted, non-empty and has no empty or repeated names or empty values.
pub fn validate_labels(labels: &[(&str, &str)]) -> Result<(), InvalidLabels> {
    if labels.is_empty() {
        return Err(InvalidLabels::NoLabels);
    }
    let mut prev: Option<&str> = None;
    for &(n, v) in labels {
        if n.is_empty() {
            return Err(InvalidLabels::EmptyName);
        }
        if v.is_empty() {
            return Err(InvalidLabels::EmptyValue);
        }
        if let Some(p) = prev {
            match p.cmp(n) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(InvalidLabels::DuplicateName),
                std::cmp::Ordering::Greater => return Err(InvalidLabels::Unsorted),
            }
        }
        prev = Some(n);
    }
    Ok(())
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

    fn lookup(&self, hash: u64, key: &str) -> Option<Arc<MemSeries>> {
        Self::stripe(&self.by_hash, hash)?
            .read()
            .find(hash, key)
            .cloned()
    }

    /// Find the series or create it with a new ref (or `with_ref` during replay). `key` is
    /// scratch space: the label set is encoded into it once, hashed, and compared with one
    /// `memcmp` per candidate; strings are copied only for a new series.
    fn get_or_create(
        &self,
        labels: &[(&str, &str)],
        with_ref: Option<u64>,
        key: &mut String,
    ) -> (Arc<MemSeries>, bool) {
        key.clear();
        Labels::encode_sorted_pairs_into(labels.iter().copied(), key);
        let hash = xxhash_rust::xxh64::xxh64(key.as_bytes(), 0);
        // Replay (the only caller) restores what the WAL holds: never limited.
        self.get_or_create_encoded(hash, key, with_ref, false)
            .unwrap_or_else(|| (Arc::new(self.new_series(key, with_ref)), true))
    }

    /// [`Head::get_or_create`] for a label set already encoded (`key`) and hashed. With
    /// `limited`, a new series is created only while the head holds fewer than
    /// `max_series` (the count is reserved atomically, so the limit is exact); `None` means
    /// the limit refused it.
    fn get_or_create_encoded(
        &self,
        hash: u64,
        key: &str,
        with_ref: Option<u64>,
        limited: bool,
    ) -> Option<(Arc<MemSeries>, bool)> {
        if let Some(s) = self.lookup(hash, key) {
            return Some((s, false));
        }
        let Some(stripe) = Self::stripe(&self.by_hash, hash) else {
            // STRIPES > 0, so unreachable; fall back to an unindexed series rather than panic.
            return Some((Arc::new(self.new_series(key, with_ref)), true));
        };
        let mut stripe = stripe.write();
        if let Some(s) = stripe.find(hash, key) {
            return Some((Arc::clone(s), false));
        }
        let max = self.opts.max_series;
        if limited && max > 0 {
            let reserved =
                self.stats
                    .series
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    });
            if reserved.is_err() {
                return None;
            }
        } else {
            self.stats.series.fetch_add(1, Ordering::Relaxed);
        }
        let series = Arc::new(self.new_series(key, with_ref));
        stripe.insert(hash, Arc::clone(&series));
        drop(stripe);
        if let Some(st) = Self::stripe(&self.by_ref, series.sref) {
            st.write().insert(series.sref, Arc::clone(&series));
        }
        self.postings.write().add(series.sref, series.labels.iter());
        self.stats.series_created.fetch_add(1, Ordering::Relaxed);
        Some((series, true))
    }

    /// Step 1 of an append: find or create every valid series of `batch` into `sc.resolved`.
    ///
    /// Finding 100k series is bound by cache misses (table slot → series → label bytes, each
    /// depending on the previous), so it runs in two passes. Pass 1 encodes and hashes every
    /// label set (the request's bytes are hot). Pass 2 is a pipeline whose stages run
    /// [`AHEAD`] series apart, each under a short stripe read lock, so the misses of
    /// different series overlap instead of adding up:
    /// - stage 0 prefetches the series' home slot;
    /// - stage 1 reads the slot run (now cached) and prefetches the first candidate series;
    /// - stage 2 clones that candidate's `Arc` (cached) and prefetches its label bytes;
    /// - stage 3 compares the labels (cached) byte for byte. On a mismatch (a new series, or
    ///   a hash collision) it falls back to [`Head::get_or_create_encoded`], which checks
    ///   every candidate and creates the series under the write lock.
    ///
    /// Only stage 3 decides; the earlier stages are hints, so a series created or resized
    /// between stages costs a miss, never a wrong answer.
    fn resolve(&self, batch: &[AppendSeries<'_>], sc: &mut Scratch, report: &mut AppendReport) {
        sc.resolved.clear();
        sc.keys.clear();
        sc.keyed.clear();
        for (i, s) in batch.iter().enumerate() {
            // The caller's label strings need not be cached (many small allocations, or a big
            // request): load a later series' pairs, and the strings of a nearer one's.
            if let Some(later) = batch.get(i + 2 * AHEAD) {
                prefetch_range(
                    later.labels.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(later.labels),
                );
            }
            if let Some(later) = batch.get(i + AHEAD) {
                for (n, v) in later.labels {
                    prefetch(n.as_ptr());
                    prefetch(v.as_ptr());
                }
            }
            if s.samples.is_empty() {
                continue;
            }
            if let Err(why) = validate_labels(s.labels) {
                let t = s.samples.first().map_or(0, |x| x.t);
                report.reject(
                    i,
                    t,
                    RejectReason::InvalidLabels(why),
                    s.samples.len() as u64,
                );
                continue;
            }
            let start = sc.keys.len();
            Labels::encode_sorted_pairs_into(s.labels.iter().copied(), &mut sc.keys);
            let end = sc.keys.len();
            let bytes = sc.keys.as_bytes().get(start..end).unwrap_or_default();
            let hash = xxhash_rust::xxh64::xxh64(bytes, 0);
            sc.keyed.push(Keyed {
                index: i,
                start,
                end,
                hash,
            });
        }

        let n = sc.keyed.len();
        sc.cands.clear();
        sc.cands.resize(n, None);
        for step in 0..n + 3 * AHEAD {
            // Stage 0.
            if let Some(k) = sc.keyed.get(step) {
                if let Some(stripe) = Self::stripe(&self.by_hash, k.hash) {
                    prefetch(stripe.read().home_ptr(k.hash));
                }
            }
            // Stage 1.
            if let Some(k) = step.checked_sub(AHEAD).and_then(|j| sc.keyed.get(j)) {
                if let Some(stripe) = Self::stripe(&self.by_hash, k.hash) {
                    if let Some(s) = stripe.read().candidates(k.hash).next() {
                        // The Arc's counts sit just before the series.
                        let p = Arc::as_ptr(s).cast::<u8>().wrapping_sub(16);
                        prefetch_range(p, 16 + std::mem::size_of::<MemSeries>());
                    }
                }
            }
            // Stage 2.
            if let Some(j) = step.checked_sub(2 * AHEAD) {
                if let (Some(k), Some(cand)) = (sc.keyed.get(j), sc.cands.get_mut(j)) {
                    if let Some(stripe) = Self::stripe(&self.by_hash, k.hash) {
                        *cand = stripe.read().candidates(k.hash).next().cloned();
                    }
                    if let Some(s) = cand {
                        let enc = s.labels.encoded();
                        prefetch_range(enc.as_ptr(), enc.len());
                    }
                }
            }
            // Stage 3.
            if let Some(j) = step.checked_sub(3 * AHEAD) {
                let (Some(k), Some(cand)) = (sc.keyed.get(j), sc.cands.get_mut(j)) else {
                    continue;
                };
                let key = sc.keys.get(k.start..k.end).unwrap_or_default();
                let found = match cand.take() {
                    Some(s) if s.labels.encoded() == key => Some((s, false)),
                    _ => self.get_or_create_encoded(k.hash, key, None, true),
                };
                match found {
                    Some((series, created)) => {
                        report.new_series += u64::from(created);
                        sc.resolved.push((k.index, series));
                    }
                    None => {
                        let samples = batch.get(k.index).map_or(&[][..], |s| s.samples);
                        let t = samples.first().map_or(0, |x| x.t);
                        report.reject(k.index, t, RejectReason::SeriesLimit, samples.len() as u64);
                    }
                }
            }
        }
    }

    fn new_series(&self, key: &str, with_ref: Option<u64>) -> MemSeries {
        let sref = match with_ref {
            Some(r) => {
                self.next_ref.fetch_max(r + 1, Ordering::AcqRel);
                r
            }
            None => self.next_ref.fetch_add(1, Ordering::AcqRel),
        };
        MemSeries {
            sref,
            labels: Labels::from_encoded(key),
            logged_epoch: AtomicU32::new(NOT_LOGGED),
            data: Mutex::new(SeriesData::new()),
        }
    }

    /// Lowest timestamp the head accepts now.
    fn min_valid(&self) -> i64 {
        let floor = self.min_valid_time.load(Ordering::Acquire);
        let max = self.max_time();
        if max == i64::MIN {
            return floor;
        }
        floor.max(max.saturating_sub(self.opts.chunk_range / 2))
    }

    fn note_time(&self, mint: i64, maxt: i64) {
        self.min_time.fetch_min(mint, Ordering::AcqRel);
        self.max_time.fetch_max(maxt, Ordering::AcqRel);
    }

    /// Validate, log and apply a batch (see the module docs for the order). Rejected samples are
    /// reported, not errors; `Err` means nothing was stored and a retry may succeed.
    pub fn append(
        &self,
        wal: &Wal,
        batch: &[AppendSeries<'_>],
    ) -> Result<AppendReport, AppendError> {
        let mut sc = self.scratch.lock().pop().unwrap_or_default();
        let gate = self.append_gate.read();
        // `None`: a series of the batch was removed by a concurrent truncation before it was
        // locked; nothing was written, resolve again. This ends: truncation removes only series
        // created before it started, so the series a retry creates are not removed by it.
        let res = loop {
            match self.append_with(wal, batch, &mut sc) {
                Ok(None) => continue,
                Ok(Some(r)) => break Ok(r),
                Err(e) => break Err(e),
            }
        };
        drop(gate);
        sc.resolved.clear();
        sc.cands.clear();
        self.scratch.lock().push(sc);
        res
    }

    fn append_with(
        &self,
        wal: &Wal,
        batch: &[AppendSeries<'_>],
        sc: &mut Scratch,
    ) -> Result<Option<AppendReport>, AppendError> {
        let mut report = AppendReport::default();
        let max_allowed = now_ms().saturating_add(self.opts.max_future_ms);
        let min_valid = self.min_valid();

        // 1. Resolve series.
        self.resolve(batch, sc, &mut report);

        // 2. Lock every series once, in ref order; validate samples against the locked state.
        sc.order.clear();
        sc.order.extend(0..sc.resolved.len());
        let resolved = &sc.resolved;
        sc.order
            .sort_unstable_by_key(|&k| resolved.get(k).map_or(0, |r| r.1.sref));
        sc.lock_of.clear();
        sc.lock_of.resize(resolved.len(), 0);
        let mut locked: Vec<&Arc<MemSeries>> = Vec::with_capacity(resolved.len());
        for &k in &sc.order {
            let Some((_, s)) = resolved.get(k) else {
                continue;
            };
            if locked.last().is_none_or(|l| l.sref != s.sref) {
                locked.push(s);
            }
            if let Some(slot) = sc.lock_of.get_mut(k) {
                *slot = (locked.len() - 1) as u32;
            }
        }
        let mut guards: Vec<MutexGuard<'_, SeriesData>> =
            locked.iter().map(|s| s.data.lock()).collect();
        if guards.iter().any(|g| g.removed) {
            return Ok(None);
        }
        let mut pending: Vec<(i64, u64)> = guards
            .iter()
            .map(|g| {
                // Step 4 writes at the open chunk's tail: start loading it now.
                if let Some(h) = &g.head {
                    let b = h.chunk.bytes();
                    prefetch(b.as_ptr().wrapping_add(b.len().saturating_sub(1)));
                }
                (g.last_t, g.last_v)
            })
            .collect();

        sc.wal_samples.clear();
        sc.apply.clear();
        for (k, (i, series)) in resolved.iter().enumerate() {
            let li = sc.lock_of.get(k).copied().unwrap_or(0);
            let Some(state) = pending.get_mut(li as usize) else {
                continue;
            };
            let samples = batch.get(*i).map_or(&[][..], |s| s.samples);
            for s in samples {
                let bits = s.v.to_bits();
                let verdict = if s.t > max_allowed {
                    Err(RejectReason::TooFarInFuture)
                } else if s.t < min_valid {
                    Err(RejectReason::OutOfBounds)
                } else if s.t > state.0 {
                    Ok(true)
                } else if s.t == state.0 {
                    if bits == state.1 {
                        Ok(false)
                    } else {
                        Err(RejectReason::Duplicate)
                    }
                } else {
                    Err(RejectReason::OutOfOrder)
                };
                match verdict {
                    Ok(true) => {
                        *state = (s.t, bits);
                        sc.wal_samples.push(RefSample {
                            sref: series.sref,
                            t: s.t,
                            v: s.v,
                        });
                        sc.apply.push((li, s.t, s.v));
                    }
                    Ok(false) => report.duplicates_ignored += 1,
                    Err(reason) => report.reject(*i, s.t, reason, 1),
                }
            }
        }
        if sc.wal_samples.is_empty() {
            return Ok(Some(report));
        }

        // 3. WAL: Series records for series not logged in this epoch, then the samples.
        let epoch = wal.epoch();
        sc.series_rec.clear();
        let mut need_log: Vec<&Arc<MemSeries>> = Vec::new();
        for (li, s) in locked.iter().enumerate() {
            let has_samples = pending
                .get(li)
                .zip(guards.get(li))
                .is_some_and(|(p, g)| p.0 != g.last_t);
            if has_samples && !s.is_logged(epoch) {
                need_log.push(s);
            }
        }
        if !need_log.is_empty() {
            record::encode_series(
                &mut sc.series_rec,
                need_log.iter().map(|s| (s.sref, &s.labels)),
            );
        }
        sc.samples_rec.clear();
        record::encode_samples(&mut sc.samples_rec, &sc.wal_samples);
        if need_log.is_empty() {
            wal.log_in_epoch(&[&sc.samples_rec], epoch)?;
        } else {
            wal.log_in_epoch(&[&sc.series_rec, &sc.samples_rec], epoch)?;
        }
        for s in need_log {
            s.logged_epoch.store(epoch, Ordering::Release);
        }

        // 4. Apply.
        let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
        for &(li, t, v) in &sc.apply {
            let (Some(g), Some(s)) = (guards.get_mut(li as usize), locked.get(li as usize)) else {
                continue;
            };
            g.append(
                s.sref,
                t,
                v,
                self.opts.chunk_range,
                &self.chunks,
                &self.stats,
            );
            mint = mint.min(t);
            maxt = maxt.max(t);
        }
        drop(guards);
        self.note_time(mint, maxt);
        report.accepted = sc.apply.len() as u64;
        self.stats
            .samples_appended
            .fetch_add(report.accepted, Ordering::Relaxed);
        Ok(Some(report))
    }

    // ------------------------------------------------------------------------------------------
    // Compaction support

    /// Whether the head spans more than 1.5 block ranges (Prometheus `Head.compactable`).
    pub fn compactable(&self) -> bool {
        let (min, max) = (self.min_time(), self.max_time());
        min != i64::MAX
            && max != i64::MIN
            && max.saturating_sub(min) > self.opts.chunk_range / 2 * 3
    }

    /// Refuse samples older than `t` from now on, and wait until every append that read the
    /// older bound has finished. Afterwards nothing below `t` can enter the head.
    pub fn raise_min_valid(&self, t: i64) {
        self.min_valid_time.fetch_max(t, Ordering::AcqRel);
        drop(self.append_gate.write());
    }

    /// The bound set by [`Head::raise_min_valid`] (`i64::MIN` if never raised).
    pub fn min_valid_time(&self) -> i64 {
        self.min_valid_time.load(Ordering::Acquire)
    }

    /// Every series with samples in `[mint, maxt]`, sorted by label set.
    pub fn series_in_range(&self, mint: i64, maxt: i64) -> Vec<Arc<MemSeries>> {
        let mut out: Vec<Arc<MemSeries>> = Vec::new();
        for stripe in self.by_ref.iter() {
            out.extend(stripe.read().values().cloned());
        }
        out.retain(|s| s.time_range().is_some_and(|(a, b)| a <= maxt && b >= mint));
        out.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out
    }

    /// Drop everything before `mint` (after it was written to a block): chunks ending before
    /// it, series left without chunks, and `chunks_head/` files no longer referenced. Raises
    /// the head's lower bound to `mint` first. `wal_segment` is the WAL segment being written
    /// (see [`Head::keep_in_checkpoint`]).
    pub fn truncate(&self, mint: i64, wal_segment: u64) -> Result<TruncateReport, ChunkFileError> {
        self.raise_min_valid(mint);
        // Series created from here on are not candidates for removal (see `append`).
        let ref_limit = self.next_ref.load(Ordering::Acquire);
        let mut report = TruncateReport::default();
        // Appends running meanwhile lower this with `fetch_min`; the scan's result joins them.
        self.min_time.store(i64::MAX, Ordering::Release);
        let mut new_min = i64::MAX;
        let mut removed: Vec<Arc<MemSeries>> = Vec::new();
        for stripe in self.by_ref.iter() {
            let list: Vec<Arc<MemSeries>> = stripe.read().values().cloned().collect();
            for s in list {
                let mut d = s.data.lock();
                report.chunks_removed += d.truncate_before(mint);
                if d.is_empty() && s.sref < ref_limit {
                    d.removed = true;
                    drop(d);
                    removed.push(s);
                } else if let Some((first, _)) = d.time_range() {
                    new_min = new_min.min(first);
                }
            }
        }
        self.min_time.fetch_min(new_min, Ordering::AcqRel);
        // A kept chunk may start before `mint` (cut on another block range): the head's data
        // below `mint` is in a block, so its min time is `mint` at least, as in Prometheus —
        // otherwise the next compaction would pick this same range again, forever.
        self.min_time.fetch_max(mint, Ordering::AcqRel);
        // Deleted intervals stay while a kept chunk may still hold samples they cover.
        let keep_stones_from = new_min.min(mint);
        if !removed.is_empty() {
            for s in &removed {
                let hash = xxhash_rust::xxh64::xxh64(s.labels.encoded().as_bytes(), 0);
                if let Some(st) = Self::stripe(&self.by_hash, hash) {
                    st.write().remove(hash, s.sref);
                }
                if let Some(st) = Self::stripe(&self.by_ref, s.sref) {
                    st.write().remove(&s.sref);
                }
            }
            self.postings
                .write()
                .delete(removed.iter().map(|s| (s.sref, &s.labels)));
            let mut deleted = self.deleted.lock();
            for s in &removed {
                deleted.insert(s.sref, wal_segment);
            }
            report.series_removed = removed.len() as u64;
            self.stats
                .series
                .fetch_sub(report.series_removed, Ordering::Relaxed);
        }
        {
            let mut ts = self.tombstones.write();
            ts.retain(|sref, ivs| {
                ivs.retain(|&(_, b)| b >= keep_stones_from);
                !ivs.is_empty() && self.series_by_ref(*sref).is_some()
            });
        }
        report.chunk_files_removed = self.chunks.truncate(mint)? as u64;
        self.stats
            .series_removed
            .fetch_add(report.series_removed, Ordering::Relaxed);
        self.stats
            .chunks_removed
            .fetch_add(report.chunks_removed, Ordering::Relaxed);
        self.stats.truncations.fetch_add(1, Ordering::Relaxed);
        Ok(report)
    }

    /// Prometheus's checkpoint `keep` rule: a series' record stays while the head has the
    /// series, or while WAL segments after the checkpointed ones (`> last`) may hold its samples.
    pub fn keep_in_checkpoint(&self, sref: u64, last: u64) -> bool {
        self.series_by_ref(sref).is_some()
            || self
                .deleted
                .lock()
                .get(&sref)
                .is_some_and(|&seg| seg > last)
    }

    /// Forget removed series whose samples can no longer be in a WAL segment (`<= last`).
    pub fn forget_deleted(&self, last: u64) {
        self.deleted.lock().retain(|_, seg| *seg > last);
    }

    // ------------------------------------------------------------------------------------------
    // Replay

    /// Apply one WAL record during replay. An `Err` marks the record corrupt.
    pub fn replay_record(&self, rec: &[u8], st: &mut ReplayState) -> Result<(), String> {
        match rec.first() {
            Some(&record::SERIES) => {
                let mut scratch = Vec::new();
                record::decode_series(rec, &mut scratch, |sref, pairs| {
                    self.replay_series(sref, pairs, st)
                })
                .map_err(|e| e.to_string())
            }
            Some(&record::SAMPLES) => {
                st.samples.clear();
                record::decode_samples(rec, &mut st.samples).map_err(|e| e.to_string())?;
                let samples = std::mem::take(&mut st.samples);
                let min_valid = self.min_valid_time();
                let mut cur: Option<Arc<MemSeries>> = None;
                let (mut mint, mut maxt) = (i64::MAX, i64::MIN);
                for s in &samples {
                    let sref = st.aliases.get(&s.sref).copied().unwrap_or(s.sref);
                    if cur.as_ref().is_none_or(|c| c.sref != sref) {
                        cur = self.series_by_ref(sref);
                    }
                    let Some(series) = cur.as_ref() else {
                        st.unknown_refs += 1;
                        continue;
                    };
                    let mut d = series.data.lock();
                    // At or before the newest sample (or mapped chunk), or already in a block.
                    if s.t <= d.last_t || s.t < min_valid {
                        st.samples_skipped += 1;
                        continue;
                    }
                    d.append(
                        series.sref,
                        s.t,
                        s.v,
                        self.opts.chunk_range,
                        &self.chunks,
                        &self.stats,
                    );
                    st.samples_replayed += 1;
                    mint = mint.min(s.t);
                    maxt = maxt.max(s.t);
                }
                if mint <= maxt {
                    self.note_time(mint, maxt);
                }
                st.samples = samples;
                Ok(())
            }
            Some(&record::TOMBSTONES) => {
                st.stones.clear();
                record::decode_tombstones(rec, &mut st.stones).map_err(|e| e.to_string())?;
                let mut ts = self.tombstones.write();
                for s in &st.stones {
                    ts.entry(s.sref).or_default().push((s.mint, s.maxt));
                }
                Ok(())
            }
            // Exemplars, metadata, histograms: not kept (yet), counted for the open report.
            Some(&t) => {
                st.not_kept.count(t);
                Ok(())
            }
            // Empty records are harmless.
            None => Ok(()),
        }
    }

    fn replay_series(&self, sref: u64, pairs: &[(&str, &str)], st: &mut ReplayState) {
        if self.series_by_ref(sref).is_some() {
            return;
        }
        let (series, created) = self.get_or_create(pairs, Some(sref), &mut st.key);
        if !created {
            if series.sref != sref {
                st.aliases.insert(sref, series.sref);
            }
            return;
        }
        st.series += 1;
        // Replayed series are in the WAL already (epoch 0 is the epoch of a freshly opened WAL).
        series.logged_epoch.store(0, Ordering::Release);
        let Some(mut found) = st.mmapped.remove(&sref) else {
            return;
        };
        found.sort_by_key(|c| c.mint);
        let mut d = series.data.lock();
        for c in found {
            // Chunks wholly in a block already (`maxt` below the head's bound) are not attached;
            // the next truncation removes their file.
            if c.encoding != Encoding::Xor as u8
                || c.num_samples == 0
                || c.mint <= d.last_t
                || c.maxt < self.min_valid_time()
            {
                continue;
            }
            d.closed.push(ClosedChunk::Mapped {
                cref: c.cref,
                mint: c.mint,
                maxt: c.maxt,
            });
            d.last_t = c.maxt;
            self.note_time(c.mint, c.maxt);
        }
        // The newest value, for duplicate detection.
        if let Some(ClosedChunk::Mapped { cref, .. }) = d.closed.last() {
            if let Ok(bytes) = self.chunks.chunk(*cref) {
                if let Some((t, v)) = XorIterator::new(&bytes).ok().and_then(|it| it.last()) {
                    d.last_t = t;
                    d.last_v = v.to_bits();
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Reads

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
