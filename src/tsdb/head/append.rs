//! The append path ([`Head::append`]): resolve the batch's series (creating new ones), lock
//! them in ref order, validate every sample, write one WAL entry, apply to the chunks. See the
//! module docs of [`super`] for the order and its reasons.

use super::*;

/// A series of the batch being resolved: its index, where its encoded labels are in
/// `Scratch::keys`, and their hash.
#[derive(Clone, Copy)]
pub(super) struct Keyed {
    pub(super) index: usize,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) hash: u64,
}

/// Distance, in series, between the stages of the resolve pipeline ([`Head::resolve`]).
pub(super) const AHEAD: usize = 8;

/// Reusable per-call buffers for [`Head::append`].
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) resolved: Vec<(usize, Arc<MemSeries>)>,
    /// The batch's encoded label sets, back to back.
    pub(super) keys: String,
    pub(super) keyed: Vec<Keyed>,
    /// Per keyed series: the first series with an equal hash, picked a few steps ahead.
    pub(super) cands: Vec<Option<Arc<MemSeries>>>,
    pub(super) order: Vec<usize>,
    pub(super) lock_of: Vec<u32>,
    pub(super) wal_samples: Vec<RefSample>,
    pub(super) apply: Vec<(u32, i64, f64)>,
    pub(super) series_rec: Vec<u8>,
    pub(super) samples_rec: Vec<u8>,
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
    pub(super) fn lookup(&self, hash: u64, key: &str) -> Option<Arc<MemSeries>> {
        Self::stripe(&self.by_hash, hash)?
            .read()
            .find(hash, key)
            .cloned()
    }

    /// Find the series or create it with a new ref (or `with_ref` during replay). `key` is
    /// scratch space: the label set is encoded into it once, hashed, and compared with one
    /// `memcmp` per candidate; strings are copied only for a new series.
    pub(super) fn get_or_create(
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
    pub(super) fn get_or_create_encoded(
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
    pub(super) fn resolve(
        &self,
        batch: &[AppendSeries<'_>],
        sc: &mut Scratch,
        report: &mut AppendReport,
    ) {
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

    pub(super) fn new_series(&self, key: &str, with_ref: Option<u64>) -> MemSeries {
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
    pub(super) fn min_valid(&self) -> i64 {
        let floor = self.min_valid_time.load(Ordering::Acquire);
        let max = self.max_time();
        if max == i64::MIN {
            return floor;
        }
        floor.max(max.saturating_sub(self.opts.chunk_range / 2))
    }

    pub(super) fn note_time(&self, mint: i64, maxt: i64) {
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

    pub(super) fn append_with(
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
}
