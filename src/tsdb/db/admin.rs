//! Deletion (tombstones), tombstone cleaning and snapshots.

use super::*;

/// Hard-link the files of `src` into a new directory tree `dst`.
pub(super) fn link_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
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

impl Db {
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
}
