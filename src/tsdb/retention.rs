//! Retention selection (Prometheus v2.42 `tsdb/db.go` `BeyondTimeRetention`,
//! `BeyondSizeRetention`): a pure function of block metas, their sizes and the limits; no I/O,
//! no clock. The executor (in `db.rs`) measures the blocks and the head, calls [`select`],
//! and deletes what it returns (rename to `*.tmp-for-deletion`, then remove).
//!
//! # Rules
//! Blocks are taken newest first, by max time (ties: larger min time, then larger ULID, first;
//! Prometheus's `sort.Slice` leaves ties unspecified). Whole blocks are deleted, never parts.
//! - **Time**: every block but the newest whose max time is *more than* `retention` before the
//!   newest block's max time, i.e. `newest.max_time − block.max_time > retention`. Time is
//!   measured from the newest block, not from the wall clock: if ingestion stops, nothing
//!   expires. (Prometheus releases from 2024 on delete at `>=`, PR #9633; 2.42, which cairn
//!   follows, deletes at `>`.)
//! - **Size**: the head's on-disk bytes (WAL + head chunks) are counted first, then blocks newest
//!   first; the first block that takes the running total *over* `max_bytes` (equal is fine) is
//!   deleted with every older block. The head is never deleted, so a budget below the head's
//!   size, or below the head plus the newest block, deletes every block.
//!
//! A block beyond both limits is reported once, as [`Reason::Time`]. Size retention deletes
//! whole blocks, oldest first, so a block bigger than half the budget takes more than half the
//! stored history with it when its turn comes; [`oversized`] finds such a block so the caller
//! can warn.

use super::block::ulid::Ulid;
use super::block::BlockMeta;

/// A block and its size on disk (chunks, index, tombstones and meta.json, as Prometheus's
/// `Block.Size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockUsage {
    pub meta: BlockMeta,
    pub bytes: u64,
}

/// Why a block is deleted; [`Reason::as_str`] is the metric label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Beyond the time retention.
    Time,
    /// Beyond the size retention.
    Size,
}

impl Reason {
    /// `"time"` or `"size"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Time => "time",
            Reason::Size => "size",
        }
    }
}

/// The blocks to delete and why, oldest first; see the module docs for the rules.
/// `retention_ms` ≤ 0 turns time retention off (Prometheus: `== 0`; a negative retention cannot
/// come from its flags, and here it would otherwise delete every block but the newest);
/// `max_bytes` = 0 turns size retention off. `head_and_wal_bytes` is the size of the WAL
/// directory plus the head chunk files (Prometheus `Head.Size`).
///
/// Pass the blocks that stay loaded: Prometheus passes every loadable block, including parents
/// that [`super::compact::deletable_parents`] is about to delete in the same pass, so their
/// bytes count twice toward the size limit until they are gone.
pub fn select(
    blocks: &[BlockUsage],
    retention_ms: i64,
    max_bytes: u64,
    head_and_wal_bytes: u64,
) -> Vec<(Ulid, Reason)> {
    let mut newest_first: Vec<&BlockUsage> = blocks.iter().collect();
    newest_first.sort_by(|a, b| {
        (b.meta.max_time, b.meta.min_time, b.meta.ulid).cmp(&(
            a.meta.max_time,
            a.meta.min_time,
            a.meta.ulid,
        ))
    });

    let by_time = beyond_time(&newest_first, retention_ms);
    let by_size = beyond_size(&newest_first, max_bytes, head_and_wal_bytes);
    let from = match (by_time, by_size) {
        (Some(t), Some(s)) => t.min(s),
        (Some(i), None) | (None, Some(i)) => i,
        (None, None) => return Vec::new(),
    };

    let mut out: Vec<(Ulid, Reason)> = newest_first
        .iter()
        .enumerate()
        .skip(from)
        .map(|(i, b)| {
            let reason = match by_time {
                Some(t) if i >= t => Reason::Time,
                _ => Reason::Size,
            };
            (b.meta.ulid, reason)
        })
        .collect();
    out.reverse();
    out
}

/// Prometheus `BeyondTimeRetention`: the index (in newest-first order) of the first block other
/// than the newest whose max time is more than `retention_ms` before the newest block's; it
/// and every block after it are beyond retention.
fn beyond_time(newest_first: &[&BlockUsage], retention_ms: i64) -> Option<usize> {
    if retention_ms <= 0 {
        return None;
    }
    let newest = i128::from(newest_first.first()?.meta.max_time);
    newest_first
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, b)| newest - i128::from(b.meta.max_time) > i128::from(retention_ms))
        .map(|(i, _)| i)
}

/// Prometheus `BeyondSizeRetention`: the index (in newest-first order) of the first block that
/// takes head + blocks so far over `max_bytes`; it and every block after it are beyond.
fn beyond_size(
    newest_first: &[&BlockUsage],
    max_bytes: u64,
    head_and_wal_bytes: u64,
) -> Option<usize> {
    if max_bytes == 0 {
        return None;
    }
    let mut total = u128::from(head_and_wal_bytes);
    for (i, b) in newest_first.iter().enumerate() {
        total += u128::from(b.bytes);
        if total > u128::from(max_bytes) {
            return Some(i);
        }
    }
    None
}

/// The largest block bigger than half the size budget (`2 · bytes > max_bytes`), with its size;
/// ties go to the smaller ULID. `None` when size retention is off (`max_bytes` = 0) or no block
/// is that big. Not an upstream rule: size retention deletes whole blocks, oldest first, so
/// once such a block is the oldest, the next deletion takes more than half the stored history
/// with it; the caller warns (lower the max block duration, or raise the budget).
pub fn oversized(blocks: &[BlockUsage], max_bytes: u64) -> Option<(Ulid, u64)> {
    if max_bytes == 0 {
        return None;
    }
    blocks
        .iter()
        .filter(|b| u128::from(b.bytes) * 2 > u128::from(max_bytes))
        .max_by(|a, b| a.bytes.cmp(&b.bytes).then(b.meta.ulid.cmp(&a.meta.ulid)))
        .map(|b| (b.meta.ulid, b.bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::tsdb::block::meta::META_VERSION;
    use crate::tsdb::block::{BlockStats, Compaction};

    const H: i64 = 3600 * 1000;

    /// Block `n` over `[min_time, max_time)` taking `bytes` on disk.
    fn b(n: u128, min_time: i64, max_time: i64, bytes: u64) -> BlockUsage {
        BlockUsage {
            meta: BlockMeta {
                ulid: Ulid(n),
                min_time,
                max_time,
                stats: BlockStats::default(),
                compaction: Compaction::level1(Ulid(n)),
                version: META_VERSION,
            },
            bytes,
        }
    }

    use Reason::{Size as S, Time as T};

    #[test]
    fn reasons_name_their_metric_labels() {
        assert_eq!(Reason::Time.as_str(), "time");
        assert_eq!(Reason::Size.as_str(), "size");
    }

    /// Prometheus `TestTimeRetention` and `TestSizeRetention` (tsdb/db_test.go, v2.42) with
    /// synthetic sizes, and cairn's own edge cases.
    #[test]
    fn select_deletes_what_prometheus_deletes() {
        // TestSizeRetention: five 100-wide blocks; the head adds data at 700..800.
        let five = || {
            vec![
                b(1, 100, 200, 1000), // Oldest block.
                b(2, 200, 300, 1000),
                b(3, 300, 400, 1000),
                b(4, 400, 500, 1000),
                b(5, 500, 600, 1000), // Newest block.
            ]
        };
        let head = 300;
        let total = head + 5 * 1000;
        // TestTimeRetention's blocks.
        let three = || {
            vec![
                b(1, 500, 900, 10),
                b(2, 1000, 1500, 10),
                b(3, 1500, 2000, 10),
            ]
        };
        // (name, blocks, retention_ms, max_bytes, head bytes, expected oldest first)
        type Case = (
            &'static str,
            Vec<BlockUsage>,
            i64,
            u64,
            u64,
            Vec<(u128, Reason)>,
        );
        let cases: Vec<Case> = vec![
            (
                "upstream TestTimeRetention: retention = newest max − second min deletes the \
                 oldest",
                three(),
                2000 - 1000,
                0,
                0,
                vec![(1, T)],
            ),
            (
                "a block exactly at the retention distance is kept (2.42 compares with >; \
                 upstream's later 'equal to retention' case expects it deleted)",
                three(),
                500,
                0,
                0,
                vec![(1, T)],
            ),
            (
                "one millisecond inside retention keeps the block",
                three(),
                1100,
                0,
                0,
                vec![],
            ),
            (
                "one millisecond past retention deletes it",
                three(),
                1099,
                0,
                0,
                vec![(1, T)],
            ),
            (
                "upstream TestSizeRetention: a limit one oldest block under the total deletes \
                 the oldest",
                five(),
                0,
                total - 1000,
                head,
                vec![(1, S)],
            ),
            (
                "a total exactly at the limit deletes nothing",
                five(),
                0,
                total,
                head,
                vec![],
            ),
            (
                "one byte over the limit deletes the oldest",
                five(),
                0,
                total - 1,
                head,
                vec![(1, S)],
            ),
            ("no blocks: nothing", vec![], 1, 1, 1_000_000, vec![]),
            (
                "retention disabled: nothing, however old or big",
                five(),
                0,
                0,
                u64::MAX,
                vec![],
            ),
            (
                "negative time retention counts as disabled",
                three(),
                -1,
                0,
                0,
                vec![],
            ),
            (
                "one block is never deleted for time",
                vec![b(1, 0, 2 * H, 10)],
                1,
                0,
                0,
                vec![],
            ),
            (
                "one block bigger than the budget is deleted for size",
                vec![b(1, 0, 2 * H, 10)],
                0,
                9,
                0,
                vec![(1, S)],
            ),
            (
                "a budget smaller than the newest block deletes every block",
                five(),
                0,
                head + 999,
                head,
                vec![(1, S), (2, S), (3, S), (4, S), (5, S)],
            ),
            (
                "a budget smaller than the head alone deletes every block",
                five(),
                0,
                head - 1,
                head,
                vec![(1, S), (2, S), (3, S), (4, S), (5, S)],
            ),
            (
                "time and size: the oldest go for time, the next for size, none twice",
                five(),
                250,
                head + 2000,
                head,
                vec![(1, T), (2, T), (3, S)],
            ),
            (
                "time reaches further than size: all for time",
                five(),
                150,
                total - 1000,
                head,
                vec![(1, T), (2, T), (3, T)],
            ),
            (
                "time is measured from the newest block, not now: across a gap",
                vec![
                    b(1, 0, 2 * H, 10),
                    b(2, 2 * H, 4 * H, 10),
                    b(3, 100 * H, 102 * H, 10),
                ],
                24 * H,
                0,
                0,
                vec![(1, T), (2, T)],
            ),
            (
                "an unaligned first head block is judged by its max time",
                vec![
                    b(1, 1_000_123, 2 * H, 10),
                    b(2, 2 * H, 4 * H, 10),
                    b(3, 4 * H, 6 * H, 10),
                ],
                4 * H - 1,
                0,
                0,
                vec![(1, T)],
            ),
            (
                "input order does not matter; output is oldest first",
                vec![
                    b(3, 300, 400, 1000),
                    b(1, 100, 200, 1000),
                    b(2, 200, 300, 1000),
                ],
                0,
                1500,
                0,
                vec![(1, S), (2, S)],
            ),
            (
                "blocks are ordered by max time: a long compacted block ending last is newest",
                vec![b(1, 0, 1000, 5000), b(2, 400, 600, 10), b(3, 600, 800, 10)],
                0,
                5009,
                0,
                vec![(2, S), (3, S)],
            ),
            (
                "equal max times: the larger min time counts as newer",
                vec![b(1, 0, 100, 10), b(2, 50, 100, 10)],
                0,
                15,
                0,
                vec![(1, S)],
            ),
            (
                "huge sizes do not overflow",
                vec![b(1, 0, 10, u64::MAX), b(2, 10, 20, u64::MAX)],
                0,
                u64::MAX,
                u64::MAX,
                vec![(1, S), (2, S)],
            ),
        ];
        for (name, blocks, retention, max_bytes, head, want) in cases {
            let got: Vec<(u128, Reason)> = select(&blocks, retention, max_bytes, head)
                .into_iter()
                .map(|(u, r)| (u.0, r))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn oversized_finds_a_block_over_half_the_budget() {
        // (name, blocks, max_bytes, expected)
        type Case = (&'static str, Vec<BlockUsage>, u64, Option<(u128, u64)>);
        let cases: Vec<Case> = vec![
            ("no blocks", vec![], 100, None),
            ("size retention off", vec![b(1, 0, 10, u64::MAX)], 0, None),
            (
                "small blocks",
                vec![b(1, 0, 10, 10), b(2, 10, 20, 20)],
                100,
                None,
            ),
            (
                "exactly half is not over half",
                vec![b(1, 0, 10, 50)],
                100,
                None,
            ),
            (
                "one byte over half",
                vec![b(1, 0, 10, 51)],
                100,
                Some((1, 51)),
            ),
            (
                "odd budget: 50 of 101 is under half",
                vec![b(1, 0, 10, 50)],
                101,
                None,
            ),
            (
                "odd budget: 51 of 101 is over half",
                vec![b(1, 0, 10, 51)],
                101,
                Some((1, 51)),
            ),
            (
                "bigger than the whole budget",
                vec![b(1, 0, 10, 500)],
                100,
                Some((1, 500)),
            ),
            (
                "the largest of several",
                vec![b(1, 0, 10, 60), b(2, 10, 20, 90), b(3, 20, 30, 70)],
                100,
                Some((2, 90)),
            ),
            (
                "ties go to the smaller ULID",
                vec![b(3, 20, 30, 80), b(2, 10, 20, 80)],
                100,
                Some((2, 80)),
            ),
            (
                "the newest block counts too",
                vec![b(1, 0, 10, 1), b(2, 10, 20, 99)],
                100,
                Some((2, 99)),
            ),
            (
                "huge sizes do not overflow",
                vec![b(1, 0, 10, u64::MAX)],
                u64::MAX,
                Some((1, u64::MAX)),
            ),
            ("a one-byte budget", vec![b(1, 0, 10, 1)], 1, Some((1, 1))),
        ];
        for (name, blocks, max_bytes, want) in cases {
            let got = oversized(&blocks, max_bytes).map(|(u, n)| (u.0, n));
            assert_eq!(got, want, "{name}");
        }
    }
}
