//! A series and its chunks: closed chunks (mapped from `chunks_head/`, or kept in memory when
//! writing them failed), the open chunk, and chunk cutting as Prometheus cuts
//! (`memSeries.appendPreprocessor`).

use super::*;

/// A closed (full) chunk of a series.
#[derive(Debug, Clone)]
pub(super) enum ClosedChunk {
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
    pub(super) fn range(&self) -> (i64, i64) {
        match self {
            ClosedChunk::Mapped { mint, maxt, .. } | ClosedChunk::Mem { mint, maxt, .. } => {
                (*mint, *maxt)
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct HeadChunk {
    pub(super) chunk: XorChunk,
    pub(super) mint: i64,
    pub(super) maxt: i64,
}

/// A series' chunks. Guarded by `MemSeries::data`.
#[derive(Debug)]
pub(super) struct SeriesData {
    pub(super) closed: Vec<ClosedChunk>,
    pub(super) head: Option<HeadChunk>,
    /// When the open chunk must be cut at the latest.
    pub(super) next_at: i64,
    /// Newest sample (i64::MIN when the series has none).
    pub(super) last_t: i64,
    pub(super) last_v: u64,
    /// Set (under this lock) when head truncation removed the series from the indexes; an
    /// append that resolved it earlier sees this after locking and resolves again.
    pub(super) removed: bool,
    /// A closed chunk could not be written to `chunks_head/`: this and every later closed
    /// chunk of the series stay in memory. Replay trusts a series' mapped chunks as a gap-free
    /// prefix (WAL samples up to the last one are skipped), so no later chunk may reach the
    /// file after a missing one.
    pub(super) memory_only: bool,
}

/// One series in the head.
#[derive(Debug)]
pub struct MemSeries {
    pub sref: u64,
    pub labels: Labels,
    /// WAL epoch in which this series' Series record was written (`NOT_LOGGED`: never).
    pub(super) logged_epoch: AtomicU32,
    pub(super) data: Mutex<SeriesData>,
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
    pub(super) fn new() -> SeriesData {
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
    pub(super) fn append(
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
    pub(super) fn cut(
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
    pub(super) fn truncate_before(&mut self, mint: i64) -> u64 {
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

    pub(super) fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.head.is_none()
    }

    pub(super) fn time_range(&self) -> Option<(i64, i64)> {
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

/// A chunk of a series with its closed time range: an encoding and the bytes it reads.
#[derive(Debug, Clone)]
pub struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    pub encoding: Encoding,
    pub data: ChunkData,
}

impl ChunkMeta {
    /// Iterate the chunk's float samples; an encoding without a float iterator (native
    /// histograms) is a [`DecodeError::Unsupported`](crate::tsdb::chunkenc::DecodeError).
    pub fn iter(&self) -> Result<XorIterator<'_>, crate::tsdb::chunkenc::DecodeError> {
        match self.encoding {
            Encoding::Xor => XorIterator::new(&self.data),
            encoding => Err(crate::tsdb::chunkenc::DecodeError::Unsupported { encoding }),
        }
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
                        encoding: Encoding::Xor,
                        data: ChunkData::Owned(Arc::clone(data)),
                    }),
                });
            }
            if let Some(h) = &d.head {
                if h.chunk.num_samples() > 0 && h.maxt >= mint && h.mint <= maxt {
                    v.push(Pending::Ready(ChunkMeta {
                        mint: h.mint,
                        maxt: h.maxt,
                        encoding: Encoding::Xor,
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
                    // The head cuts XOR chunks only (replay keeps no other encoding).
                    encoding: Encoding::Xor,
                    data: ChunkData::Mapped(mapper.chunk(cref)?),
                }),
            })
            .collect()
    }

    /// `(oldest, newest)` sample time, if the series has samples.
    pub fn time_range(&self) -> Option<(i64, i64)> {
        self.data.lock().time_range()
    }

    pub(super) fn is_logged(&self, epoch: u32) -> bool {
        self.logged_epoch.load(Ordering::Acquire) == epoch
    }
}
