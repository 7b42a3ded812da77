//! Head truncation after a block is written: the head's lower bound, chunks and series left
//! empty, `chunks_head/` files, and the series a WAL checkpoint must keep.

use super::*;

impl Head {
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
}
