//! Housekeeping.
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

use std::ops::ControlFlow;

use super::*;

/// Put a step's error into the report. `Break` after an injected fault: a crash, so nothing
/// after it runs.
fn record(report: &mut CompactReport, step: Step, res: Result<(), DbError>) -> ControlFlow<()> {
    let Err(error) = res else {
        return ControlFlow::Continue(());
    };
    let crash = matches!(error, DbError::Injected(_));
    report.errors.push(StepError { step, error });
    if crash {
        ControlFlow::Break(())
    } else {
        ControlFlow::Continue(())
    }
}

impl Db {
    /// One housekeeping run (see the module docs): head compaction, WAL truncation, merges
    /// and retention. Each step runs whatever the others did — retention above all, which
    /// frees the space a failing compaction may lack — and every failure is in the report's
    /// `errors`. An injected fault (tests) stops the run where it fires, as a crash would.
    /// Safe while appends and queries run; one run at a time.
    pub fn housekeep(&self) -> CompactReport {
        let _one = self.compacting.lock();
        let start = Instant::now();
        let mut report = CompactReport::default();
        self.housekeep_locked(&mut report);
        report.duration = start.elapsed();
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .compaction_nanos
            .fetch_add(report.duration.as_nanos() as u64, Ordering::Relaxed);
        if !report.errors.is_empty() {
            self.stats
                .compaction_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        report
    }

    /// [`Db::housekeep`], answering with its error when a step failed (the only one, or all
    /// of them as [`DbError::Steps`]).
    pub fn compact(&self) -> Result<CompactReport, DbError> {
        let mut report = self.housekeep();
        let mut errors = std::mem::take(&mut report.errors);
        match errors.len() {
            0 => Ok(report),
            1 => Err(errors.remove(0).error),
            _ => Err(DbError::Steps(errors)),
        }
    }

    fn housekeep_locked(&self, report: &mut CompactReport) {
        let mut truncated_to = None;
        let head = self.compact_head(self.opts.block_range_ms, report, &mut truncated_to);
        let head_ok = head.is_ok();
        if record(report, Step::HeadCompaction, head).is_break() {
            return;
        }
        // A WAL truncation that failed before (a full disk), or was never reached because a
        // later step failed, is done even when no new block was written: its segments are
        // what a full disk most needs freed. Not after a failed head compaction: the head may
        // still need what they hold.
        let pending = self.wal_truncation_pending.lock().take();
        if let Some(mint) = truncated_to.or(pending) {
            if !head_ok {
                *self.wal_truncation_pending.lock() = Some(mint);
            } else if let Err(e) = self.truncate_wal(mint, report) {
                *self.wal_truncation_pending.lock() = Some(mint);
                if record(report, Step::WalTruncation, Err(e)).is_break() {
                    return;
                }
            }
        }
        let merges = self.compact_blocks(report);
        if record(report, Step::Merge, merges).is_break() {
            return;
        }
        let retention = self.apply_retention(report);
        let _ = record(report, Step::Retention, retention);
    }

    /// The head-compaction loop of [`Db::compact`]; `truncated_to` is the head's new lower
    /// bound after each truncation.
    pub(super) fn compact_head(
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
            self.fault(FaultPoint::RaiseMinValid)?;
            self.head.raise_min_valid(maxt);
            self.fault(FaultPoint::WriteBlock)?;
            // A run that failed after publishing this range's block (say, truncating the head)
            // must not write it again: truncate only.
            let written = if self.readers.current().max_time() >= maxt {
                None
            } else {
                self.write_head_block(&self.dir, mint, maxt)?
            };
            if let Some(meta) = written {
                self.fault(FaultPoint::PublishBlock)?;
                let b = Block::open(&self.dir.join(meta.ulid.to_string()))?;
                let mut blocks = self.readers.current().blocks.clone();
                blocks.push(Arc::new(b));
                blocks.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
                let generation = self.readers.publish(blocks);
                self.stats.blocks_written.fetch_add(1, Ordering::Relaxed);
                report.blocks.push(meta);
                self.readers.wait_before(generation);
            }
            self.fault(FaultPoint::TruncateHead)?;
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
    pub(super) fn compact_blocks(&self, report: &mut CompactReport) -> Result<(), DbError> {
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
                .ok_or_else(|| DbError::Invariant("compaction plan names no open block".into()))?;
            match self.merge_blocks(&plan, meta) {
                Ok(merged) => {
                    self.stats.blocks_merged.fetch_add(1, Ordering::Relaxed);
                    report.merged.push((plan, merged.map(|m| m.ulid)));
                }
                // The same merge would fail the same way every run (damaged or unmergeable
                // data): mark its blocks `compaction.failed`, as Prometheus does, so the
                // planner moves on. An I/O error (a full disk) is retried next run instead:
                // unlike Prometheus, a transient failure never takes blocks out of merging.
                Err(error) if error.retry() == crate::tsdb::Retry::Never => {
                    self.mark_compaction_failed(&plan)?;
                    report.marked_failed.extend(&plan);
                    report.errors.push(StepError {
                        step: Step::Merge,
                        error,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Set `compaction.failed` on blocks `ulids` (meta.json replaced atomically) and publish
    /// the marked blocks to readers (no file goes away: nothing to wait for).
    fn mark_compaction_failed(&self, ulids: &[Ulid]) -> Result<(), DbError> {
        let current = self.readers.current();
        let mut blocks = Vec::with_capacity(current.blocks.len());
        for b in &current.blocks {
            if ulids.contains(&b.meta().ulid) && !b.meta().compaction.failed {
                blocks.push(Arc::new(b.with_compaction_failed()?));
            } else {
                blocks.push(Arc::clone(b));
            }
        }
        self.readers.publish(blocks);
        Ok(())
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
    pub(super) fn apply_retention(&self, report: &mut CompactReport) -> Result<(), DbError> {
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

    /// Replace blocks `gone` by `new` in the block set readers see, then wait for the queries
    /// that may still read the old set. Returns the blocks removed.
    pub(super) fn swap_blocks(&self, gone: &[Ulid], new: Option<Arc<Block>>) -> Vec<Arc<Block>> {
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

    pub(super) fn delete_block_dirs(&self, blocks: &[Arc<Block>]) -> Result<(), DbError> {
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
    pub(super) fn delete_blocks(&self, ulids: &[Ulid]) -> Result<(), DbError> {
        if ulids.is_empty() {
            return Ok(());
        }
        let removed = self.swap_blocks(ulids, None);
        self.fault(FaultPoint::RetentionDelete)?;
        self.delete_block_dirs(&removed)
    }

    /// Prometheus `Head.truncateWAL`: checkpoint the older two thirds of the WAL's segments
    /// (never the one being written) keeping what the head still needs — series it holds,
    /// samples at or after `mint` — then delete those segments and older checkpoints.
    pub(super) fn truncate_wal(
        &self,
        mint: i64,
        report: &mut CompactReport,
    ) -> Result<(), DbError> {
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
        self.fault(FaultPoint::Checkpoint)?;
        self.wal
            .checkpoint(first, to, |r| self.head.keep_in_checkpoint(r, to), mint)?;
        report.checkpoint = Some(to);
        self.fault(FaultPoint::TruncateWal)?;
        report.wal_segments_deleted = self.wal.truncate(to + 1)?;
        self.head.forget_deleted(to);
        self.fault(FaultPoint::DeleteCheckpoints)?;
        self.wal.delete_checkpoints(to)?;
        Ok(())
    }
}
