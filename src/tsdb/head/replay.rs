//! WAL replay into the head: Series, Samples and Tombstones records; series' mapped chunks
//! from `chunks_head/` attached, samples they already hold skipped; records of kinds the head
//! does not keep are counted.

use super::*;

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

impl Head {
    /// Apply one WAL record during replay. An `Err` marks the record corrupt.
    pub fn replay_record(
        &self,
        rec: &[u8],
        st: &mut ReplayState,
    ) -> Result<(), record::RecordError> {
        match rec.first() {
            Some(&record::SERIES) => {
                let mut scratch = Vec::new();
                record::decode_series(rec, &mut scratch, |sref, pairs| {
                    self.replay_series(sref, pairs, st)
                })
            }
            Some(&record::SAMPLES) => {
                st.samples.clear();
                record::decode_samples(rec, &mut st.samples)?;
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
                record::decode_tombstones(rec, &mut st.stones)?;
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

    pub(super) fn replay_series(&self, sref: u64, pairs: &[(&str, &str)], st: &mut ReplayState) {
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
}
