//! The by-hash series index: an open-addressing table per stripe whose slots hold
//! `(hash, Arc<MemSeries>)`, with software prefetching for the resolve pipeline, and the
//! `u64` hasher of the by-ref maps.

use super::*;

/// One stripe of the by-hash series index.
pub(super) type HashStripe = RwLock<SeriesTable>;

/// Hint the CPU to load the cache line holding `p` (a no-op on other architectures). `p` is
/// never dereferenced: it may dangle or be null.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
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
pub(super) fn prefetch_range(p: *const u8, len: usize) {
    let mut off = 0;
    while off < len {
        prefetch(p.wrapping_add(off));
        off += 64;
    }
}

/// Slot of a [`SeriesTable`]: the xxh64 of the series' encoded labels, and the series.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) hash: u64,
    pub(super) series: Option<Arc<MemSeries>>,
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
pub(super) struct SeriesTable {
    /// Power-of-two length, or empty.
    pub(super) slots: Vec<Slot>,
    pub(super) len: usize,
}

impl SeriesTable {
    /// Where `hash`'s probe run starts. The stripe was chosen by the low bits of `hash`; the
    /// slot uses the bits above them.
    pub(super) fn home(&self, hash: u64) -> usize {
        ((hash >> 8) as usize) & self.slots.len().wrapping_sub(1)
    }

    /// Address of `hash`'s first slot, to prefetch.
    pub(super) fn home_ptr(&self, hash: u64) -> *const Slot {
        self.slots
            .get(self.home(hash))
            .map_or(std::ptr::null(), |s| s as *const Slot)
    }

    /// Series whose label hash is `hash`, in probe order (usually one or none).
    pub(super) fn candidates(&self, hash: u64) -> impl Iterator<Item = &Arc<MemSeries>> + '_ {
        let mask = self.slots.len().wrapping_sub(1);
        let home = self.home(hash);
        (0..self.slots.len())
            .map_while(move |k| {
                let s = self.slots.get((home + k) & mask)?;
                Some((s.hash, s.series.as_ref()?))
            })
            .filter_map(move |(h, s)| (h == hash).then_some(s))
    }

    pub(super) fn find(&self, hash: u64, key: &str) -> Option<&Arc<MemSeries>> {
        self.candidates(hash).find(|s| s.labels.encoded() == key)
    }

    /// Add a series the caller has checked is not in the table.
    pub(super) fn insert(&mut self, hash: u64, series: Arc<MemSeries>) {
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
    pub(super) fn remove(&mut self, hash: u64, sref: u64) -> bool {
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
    pub(super) fn put(&mut self, hash: u64, series: Arc<MemSeries>) {
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
