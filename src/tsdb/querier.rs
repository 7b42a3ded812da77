//! The querier over the head and the blocks: series merged by label set, in label order.
//!
//! Every source (each block overlapping the range, and the head) yields its matching series in
//! label order — a block's postings are series IDs, which the index assigns in label order; the
//! head sorts its selection. [`Merge`] walks them like a k-way merge and, for each label set,
//! gathers the chunks of every source that has it, only when the caller reaches that series,
//! so a streaming reader holds one series' chunks at a time.
//!
//! Chunks are handed out as stored (block chunks as their bytes in the mapped segment file),
//! with two exceptions that make the merged series a valid, non-overlapping chunk sequence:
//! - a series found in several sources has each source's deleted intervals applied first
//!   (they belong to that source only), re-encoding just the chunks they touch;
//! - chunks whose time ranges overlap (overlapping blocks, or a block and the head around a
//!   compaction) are decoded, merged by timestamp (one sample per timestamp, the first
//!   source's on a tie, as Prometheus's chain merge does) and re-encoded.

use std::sync::Arc;

use crate::model::{Labels, Matcher};
use crate::tsdb::block::{Block, BlockError};
use crate::tsdb::chunkenc::{DecodeError, Encoding, XorChunk, XorIterator, SAMPLES_PER_CHUNK};
use crate::tsdb::error::DbError;
use crate::tsdb::head::chunks::ChunkDiskMapper;
use crate::tsdb::head::Sample;
use crate::tsdb::head::{ChunkData, ChunkMeta, Head, MemSeries};

/// One source's chunks of a series and the intervals deleted in that source.
type Part = (Vec<ChunkMeta>, Vec<(i64, i64)>);

/// One source's matching series, in label order.
pub(crate) enum Source<'a> {
    Block {
        block: Arc<Block>,
        ids: std::vec::IntoIter<u32>,
    },
    Head {
        head: &'a Head,
        series: std::vec::IntoIter<Arc<MemSeries>>,
        /// Head chunks ending before this are in a block already (a compaction published the
        /// block and has not truncated the head yet): skip them.
        cutoff: i64,
    },
}

/// A source's current series, before its chunks are read.
enum Pending {
    Block {
        id: u32,
        chunks: Vec<crate::tsdb::index::ChunkMeta>,
    },
    Head(Arc<MemSeries>),
}

struct Cursor<'a> {
    source: Source<'a>,
    current: Option<(Labels, Pending)>,
}

impl<'a> Cursor<'a> {
    fn advance(&mut self) -> Result<(), BlockError> {
        self.current = match &mut self.source {
            Source::Block { block, ids } => match ids.next() {
                Some(id) => {
                    let e = block.index().series(id)?;
                    Some((
                        e.labels,
                        Pending::Block {
                            id,
                            chunks: e.chunks,
                        },
                    ))
                }
                None => None,
            },
            Source::Head { series, .. } => {
                series.next().map(|s| (s.labels.clone(), Pending::Head(s)))
            }
        };
        Ok(())
    }

    /// The current series' chunks in `[mint, maxt]` and its deleted intervals.
    fn take_chunks(
        &mut self,
        pending: Pending,
        mint: i64,
        maxt: i64,
        mapper: Option<&ChunkDiskMapper>,
        purge: bool,
    ) -> Result<Part, DbError> {
        match (&self.source, pending) {
            (Source::Block { block, .. }, Pending::Block { id, chunks }) => {
                let mut out = Vec::with_capacity(chunks.len());
                for m in chunks {
                    if m.maxt < mint || m.mint > maxt {
                        continue;
                    }
                    let (enc, data) = block.chunks().chunk_shared(m.cref)?;
                    // Histogram chunks (native histograms in a Prometheus block) are not served;
                    // a block holding them is not rewritten (that would drop them).
                    if enc != Encoding::Xor as u8 {
                        if purge {
                            return Err(DbError::Unmergeable {
                                ulid: block.meta().ulid,
                                encoding: enc,
                            });
                        }
                        continue;
                    }
                    out.push(ChunkMeta {
                        mint: m.mint,
                        maxt: m.maxt,
                        encoding: Encoding::Xor,
                        data: ChunkData::Mapped(data),
                    });
                }
                let stones = block.tombstones_for(u64::from(id)).collect();
                Ok((out, stones))
            }
            (Source::Head { head, cutoff, .. }, Pending::Head(s)) => {
                let Some(mapper) = mapper else {
                    return Ok((Vec::new(), Vec::new()));
                };
                // Chunks ending before the cutoff are never looked up: truncation may be
                // deleting their file.
                let chunks = s.chunks(mint.max(*cutoff), maxt, mapper)?;
                Ok((chunks, head.tombstones(s.sref)))
            }
            // A cursor only ever holds its own kind of pending series.
            _ => Ok((Vec::new(), Vec::new())),
        }
    }
}

/// The merged series of several sources (see the module docs).
pub(crate) struct Merge<'a> {
    cursors: Vec<Cursor<'a>>,
    mint: i64,
    maxt: i64,
    mapper: &'a ChunkDiskMapper,
    started: bool,
    failed: bool,
    /// Apply every source's tombstones to its chunks even for a single source, so the result
    /// has none left (compaction).
    purge: bool,
}

impl<'a> Merge<'a> {
    pub(crate) fn new(
        sources: Vec<Source<'a>>,
        mint: i64,
        maxt: i64,
        mapper: &'a ChunkDiskMapper,
    ) -> Merge<'a> {
        Merge {
            cursors: sources
                .into_iter()
                .map(|source| Cursor {
                    source,
                    current: None,
                })
                .collect(),
            mint,
            maxt,
            mapper,
            started: false,
            failed: false,
            purge: false,
        }
    }

    /// The merge for writing a block: deleted samples are dropped, not carried as tombstones.
    pub(crate) fn purging(mut self) -> Self {
        self.purge = true;
        self
    }

    fn next_series(&mut self) -> Result<Option<SeriesChunks>, DbError> {
        if !self.started {
            self.started = true;
            for c in &mut self.cursors {
                c.advance()?;
            }
        }
        loop {
            let Some(min) = self
                .cursors
                .iter()
                .filter_map(|c| c.current.as_ref().map(|(l, _)| l))
                .min()
                .cloned()
            else {
                return Ok(None);
            };
            let mut parts: Vec<Part> = Vec::new();
            for c in &mut self.cursors {
                if c.current.as_ref().is_some_and(|(l, _)| *l == min) {
                    if let Some((_, pending)) = c.current.take() {
                        let mut part = c.take_chunks(
                            pending,
                            self.mint,
                            self.maxt,
                            Some(self.mapper),
                            self.purge,
                        )?;
                        // A chunk wholly inside one deleted interval has nothing left (its
                        // range is its first and last sample); a series left without chunks is
                        // not returned, as in Prometheus.
                        let stones = &part.1;
                        part.0
                            .retain(|c| !stones.iter().any(|&(a, b)| a <= c.mint && b >= c.maxt));
                        if !part.0.is_empty() {
                            parts.push(part);
                        }
                    }
                    c.advance()?;
                }
            }
            let series = match parts.len() {
                0 => continue,
                1 if !self.purge => {
                    let Some((chunks, tombstones)) = parts.pop() else {
                        continue;
                    };
                    SeriesChunks {
                        chunks: dedup_overlaps(chunks).map_err(|e| decode_err(&min, e))?,
                        labels: min,
                        tombstones,
                    }
                }
                _ => {
                    let mut all = Vec::new();
                    for (chunks, stones) in parts {
                        all.extend(
                            apply_tombstones(chunks, &stones).map_err(|e| decode_err(&min, e))?,
                        );
                    }
                    SeriesChunks {
                        chunks: dedup_overlaps(all).map_err(|e| decode_err(&min, e))?,
                        labels: min,
                        tombstones: Vec::new(),
                    }
                }
            };
            if series.chunks.is_empty() {
                continue;
            }
            return Ok(Some(series));
        }
    }
}

fn decode_err(labels: &Labels, source: DecodeError) -> DbError {
    DbError::Decode {
        series: labels.to_string(),
        source,
    }
}

impl Iterator for Merge<'_> {
    type Item = Result<SeriesChunks, DbError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_series() {
            Ok(s) => s.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// The matching series of `block`, as a source.
pub(crate) fn block_source<'a>(
    block: &Arc<Block>,
    matchers: &[Matcher],
) -> Result<Source<'a>, DbError> {
    let ids = block
        .index()
        .postings_for_matchers(matchers)
        .map_err(BlockError::from)?;
    Ok(Source::Block {
        block: Arc::clone(block),
        ids: ids.into_iter(),
    })
}

/// Chunks without the samples in `stones` (only the chunks they touch are re-encoded).
fn apply_tombstones(
    chunks: Vec<ChunkMeta>,
    stones: &[(i64, i64)],
) -> Result<Vec<ChunkMeta>, DecodeError> {
    if stones.is_empty() {
        return Ok(chunks);
    }
    let mut out = Vec::with_capacity(chunks.len());
    for c in chunks {
        if !stones.iter().any(|&(a, b)| a <= c.maxt && b >= c.mint) {
            out.push(c);
            continue;
        }
        let mut samples = Vec::new();
        decode_into(&c, &mut samples)?;
        samples.retain(|&(t, _)| !stones.iter().any(|&(a, b)| t >= a && t <= b));
        out.extend(encode(&samples));
    }
    Ok(out)
}

fn decode_into(c: &ChunkMeta, out: &mut Vec<(i64, f64)>) -> Result<(), DecodeError> {
    let mut it = XorIterator::new(&c.data)?;
    out.extend(it.by_ref());
    match it.err() {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

/// Samples (time-ordered, unique timestamps) as chunks of at most 120 samples.
fn encode(samples: &[(i64, f64)]) -> Vec<ChunkMeta> {
    samples
        .chunks(SAMPLES_PER_CHUNK)
        .filter_map(|part| {
            let (first, last) = (part.first()?, part.last()?);
            let mut chunk = XorChunk::new();
            for &(t, v) in part {
                chunk.append(t, v);
            }
            Some(ChunkMeta {
                mint: first.0,
                maxt: last.0,
                encoding: Encoding::Xor,
                data: ChunkData::Owned(Arc::from(chunk.into_bytes())),
            })
        })
        .collect()
}

/// Chunks sorted by time with overlapping runs merged (see the module docs).
pub(crate) fn dedup_overlaps(mut chunks: Vec<ChunkMeta>) -> Result<Vec<ChunkMeta>, DecodeError> {
    if chunks
        .windows(2)
        .all(|w| matches!(w, [a, b] if a.maxt < b.mint))
    {
        return Ok(chunks);
    }
    // Stable: on equal start times the earlier source stays first and wins ties below.
    chunks.sort_by_key(|c| c.mint);
    let mut out = Vec::with_capacity(chunks.len());
    let mut run: Vec<ChunkMeta> = Vec::new();
    let mut run_max = i64::MIN;
    let flush = |run: &mut Vec<ChunkMeta>, out: &mut Vec<ChunkMeta>| -> Result<(), DecodeError> {
        if run.len() <= 1 {
            out.append(run);
            return Ok(());
        }
        let mut samples: Vec<(i64, f64)> = Vec::new();
        for c in run.iter() {
            decode_into(c, &mut samples)?;
        }
        samples.sort_by_key(|&(t, _)| t);
        samples.dedup_by_key(|&mut (t, _)| t);
        out.extend(encode(&samples));
        run.clear();
        Ok(())
    };
    for c in chunks {
        if !run.is_empty() && c.mint > run_max {
            flush(&mut run, &mut out)?;
        }
        if run.is_empty() {
            run_max = c.maxt;
        } else {
            run_max = run_max.max(c.maxt);
        }
        run.push(c);
    }
    flush(&mut run, &mut out)?;
    Ok(out)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn chunk(samples: &[(i64, f64)]) -> ChunkMeta {
        encode(samples).pop().unwrap()
    }

    fn all(chunks: &[ChunkMeta]) -> Vec<(i64, f64)> {
        let mut v = Vec::new();
        for c in chunks {
            decode_into(c, &mut v).unwrap();
        }
        v
    }

    #[test]
    fn overlapping_chunks_merge_into_one_sample_per_timestamp() {
        let a = chunk(&[(1, 1.0), (3, 3.0), (5, 5.0)]);
        let b = chunk(&[(3, 30.0), (4, 4.0), (6, 6.0)]);
        let c = chunk(&[(10, 10.0)]);
        let out = dedup_overlaps(vec![c.clone(), a, b]).unwrap();
        assert_eq!(
            all(&out),
            vec![(1, 1.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 6.0), (10, 10.0)]
        );
        // The chunk that overlapped nothing is served as it was.
        assert!(matches!(&out.last().unwrap().data, ChunkData::Owned(d) if **d == *c.data));
        assert!(out.windows(2).all(|w| w[0].maxt < w[1].mint));
    }

    #[test]
    fn identical_copies_collapse_and_long_runs_split_into_full_chunks() {
        let s: Vec<(i64, f64)> = (0..300).map(|i| (i, i as f64)).collect();
        let copy1 = encode(&s);
        let copy2 = encode(&s);
        let out = dedup_overlaps(copy1.into_iter().chain(copy2).collect()).unwrap();
        assert_eq!(all(&out), s);
        assert_eq!(out.len(), 3);
        assert!(out
            .iter()
            .all(|c| XorIterator::new(&c.data).unwrap().num_samples() <= 120));
    }

    #[test]
    fn tombstones_drop_only_touched_chunks_samples() {
        let a = chunk(&[(1, 1.0), (2, 2.0), (3, 3.0)]);
        let b = chunk(&[(10, 1.0), (11, 2.0)]);
        let out = apply_tombstones(vec![a, b], &[(2, 2), (10, 11)]).unwrap();
        assert_eq!(all(&out), vec![(1, 1.0), (3, 3.0)]);
    }
}
