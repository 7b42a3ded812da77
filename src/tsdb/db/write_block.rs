//! Writing blocks: from the head, and merged from other blocks.

use super::*;

/// A chunk's bytes on their way into a block.
pub(super) enum ChunkBytes {
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
    pub(super) fn block_chunks(
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
}
