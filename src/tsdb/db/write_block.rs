//! Writing blocks: one writer ([`Db::write_block`]) fed by a stream of series, shared by head
//! compaction, merges, tombstone cleaning and snapshots.

use std::borrow::Borrow;

use super::*;

impl Db {
    /// Merge blocks `ulids` of the current set into one block (`meta` gives its range and
    /// compaction fields; stats are computed): series merged by label set, tombstones applied,
    /// chunks as stored unless they overlap. Once the merged block is durable it replaces its
    /// parents for readers, and the parents are deleted (a crash before that: the next open
    /// deletes them, since the merged block lists them as parents). A merge whose samples were
    /// all deleted writes no block. Returns the new block's meta.
    pub(super) fn merge_blocks(
        &self,
        ulids: &[Ulid],
        meta: BlockMeta,
    ) -> Result<Option<BlockMeta>, DbError> {
        let set = self.readers.current();
        let parents: Vec<Arc<Block>> = set
            .blocks
            .iter()
            .filter(|b| ulids.contains(&b.meta().ulid))
            .cloned()
            .collect();
        if parents.len() != ulids.len() || parents.is_empty() {
            return Err(DbError::Invariant(format!(
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
        self.fault(FaultPoint::MergeWrite)?;
        let written = self.write_block(
            &self.dir,
            meta.ulid,
            (meta.min_time, meta.max_time),
            meta.compaction.clone(),
            symbols,
            merge.map(|s| s.map(|s| (s.labels, s.chunks))),
        )?;
        self.fault(FaultPoint::MergePublish)?;
        // Everything deleted: no block, and the parents go all the same.
        let new = match &written {
            Some(m) => Some(Arc::new(Block::open(&self.dir.join(m.ulid.to_string()))?)),
            None => None,
        };
        let removed = self.swap_blocks(ulids, new);
        self.fault(FaultPoint::MergeDeleteParents)?;
        self.delete_block_dirs(&removed)?;
        Ok(written)
    }

    /// Write the head's samples in `[mint, maxt)` as a block; `None` if it has none.
    pub(super) fn write_head_block(
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
        self.write_block(
            parent,
            ulid,
            (mint, maxt),
            Compaction::level1(ulid),
            symbols,
            series.iter().map(|s| {
                self.block_chunks(s, mint, maxt, mapper)
                    .map(|chunks| (&s.labels, chunks))
            }),
        )
    }

    /// Write one block `<parent>/<ulid>` covering `[mint, maxt)` from `series`: strictly
    /// ascending label sets, each with its chunks as they go into the block (head compaction,
    /// merges, tombstone cleaning and snapshots all come here). It streams: memory holds one
    /// series' chunks plus the index's postings. `symbols` are every label name and value of
    /// the series, sorted, without duplicates. An error from `series` stops the write (the
    /// unpublished directory is removed) and is returned as it was; a block left without
    /// samples (all deleted) is removed again: `None`.
    pub(super) fn write_block<L: Borrow<Labels>>(
        &self,
        parent: &Path,
        ulid: Ulid,
        (mint, maxt): (i64, i64),
        compaction: Compaction,
        symbols: Vec<&str>,
        series: impl Iterator<Item = Result<(L, Vec<ChunkMeta>), DbError>>,
    ) -> Result<Option<BlockMeta>, DbError> {
        let writer = BlockWriter {
            segment_size: self.opts.block_segment_size,
        };
        // The series' own error, kept aside while the writer sees a generic one.
        let mut source_err: Option<DbError> = None;
        let res = writer.write_stream(parent, ulid, mint, maxt, compaction, symbols, |sink| {
            for item in series {
                let (labels, chunks) = item.map_err(|e| {
                    source_err = Some(e);
                    BlockError::Invalid {
                        reason: "reading the series to write failed".into(),
                    }
                })?;
                let chunks: Vec<block::ChunkData<'_>> = chunks
                    .iter()
                    .map(|c| block::ChunkData {
                        mint: c.mint,
                        maxt: c.maxt,
                        encoding: c.encoding.as_u8(),
                        data: &c.data,
                    })
                    .collect();
                sink(labels.borrow(), &chunks)?;
            }
            Ok(())
        });
        match (res, source_err) {
            (_, Some(e)) => Err(e),
            (Err(e), None) => Err(e.into()),
            (Ok(meta), None) if meta.stats.num_samples > 0 => Ok(Some(meta)),
            (Ok(meta), None) => {
                let dir = parent.join(meta.ulid.to_string());
                fileutil::remove_dir_atomic(&dir).map_err(|source| DbError::Io {
                    op: "remove empty block",
                    path: dir,
                    source,
                })?;
                Ok(None)
            }
        }
    }

    /// A head series' chunks for the block `[mint, maxt)`: stored bytes, except chunks that
    /// reach outside the range or hold deleted samples, which are re-encoded without them.
    pub(super) fn block_chunks(
        &self,
        s: &crate::tsdb::head::MemSeries,
        mint: i64,
        maxt: i64,
        mapper: &ChunkDiskMapper,
    ) -> Result<Vec<ChunkMeta>, DbError> {
        let stones = self.head.tombstones(s.sref);
        let mut out = Vec::new();
        for c in s.chunks(mint, maxt - 1, mapper)? {
            let touched = stones.iter().any(|&(a, b)| a <= c.maxt && b >= c.mint);
            if c.mint >= mint && c.maxt < maxt && !touched {
                out.push(c);
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
                out.push(ChunkMeta {
                    mint: lo,
                    maxt: hi,
                    encoding: Encoding::Xor,
                    data: crate::tsdb::head::ChunkData::Owned(chunk.into_bytes().into()),
                });
            }
        }
        Ok(out)
    }
}
