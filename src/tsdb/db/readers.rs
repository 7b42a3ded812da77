//! Reader isolation: queries pin a block-set generation; compaction publishes a new set and
//! waits for queries of older generations before truncating what they may still read.

use super::*;

/// The blocks readers see, with a generation number that grows with every change.
#[derive(Debug, Default)]
pub struct BlockSet {
    pub generation: u64,
    /// Sorted by min time.
    pub blocks: Vec<Arc<Block>>,
}

impl BlockSet {
    /// End (exclusive) of the newest block, `i64::MIN` without blocks.
    pub fn max_time(&self) -> i64 {
        self.blocks
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN)
    }
}

/// The current block set and the queries running against each generation of it. Compaction
/// publishes a block, then waits for queries of older generations before truncating the head
/// (they may still read the range there); new queries never wait.
#[derive(Default)]
pub(super) struct Readers {
    pub(super) state: Mutex<(Arc<BlockSet>, BTreeMap<u64, usize>)>,
    pub(super) done: Condvar,
}

/// An iterator that keeps its query registered until dropped.
pub(super) struct Guarded<'a, I> {
    pub(super) inner: I,
    pub(super) _guard: ReadGuard<'a>,
}

impl<I: Iterator> Iterator for Guarded<'_, I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        self.inner.next()
    }
}

/// A running query: keeps its generation registered until dropped.
pub(super) struct ReadGuard<'a> {
    pub(super) readers: &'a Readers,
    pub(super) generation: u64,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.readers.state.lock();
        if let Some(n) = st.1.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                st.1.remove(&self.generation);
            }
        }
        drop(st);
        self.readers.done.notify_all();
    }
}

impl Readers {
    pub(super) fn begin(&self) -> (Arc<BlockSet>, ReadGuard<'_>) {
        let mut st = self.state.lock();
        let set = Arc::clone(&st.0);
        *st.1.entry(set.generation).or_default() += 1;
        (
            set.clone(),
            ReadGuard {
                readers: self,
                generation: set.generation,
            },
        )
    }

    pub(super) fn current(&self) -> Arc<BlockSet> {
        Arc::clone(&self.state.lock().0)
    }

    /// Replace the block set; returns the new generation.
    pub(super) fn publish(&self, blocks: Vec<Arc<Block>>) -> u64 {
        let mut st = self.state.lock();
        let generation = st.0.generation + 1;
        st.0 = Arc::new(BlockSet { generation, blocks });
        generation
    }

    /// Wait until no query of a generation older than `generation` runs.
    pub(super) fn wait_before(&self, generation: u64) {
        let mut st = self.state.lock();
        while st.1.keys().next().is_some_and(|&g| g < generation) {
            self.done.wait(&mut st);
        }
    }
}
