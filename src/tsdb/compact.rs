//! Leveled compaction planning (Prometheus v2.42 `tsdb/compact.go` `LeveledCompactor.plan`):
//! pure functions of block metas and the configured ranges, no I/O and no clock. The executor
//! (in `db.rs`) reads the metas, calls [`plan`], merges the chosen blocks into one whose meta
//! starts as [`compacted_meta`], publishes it, then deletes the blocks [`deletable_parents`]
//! names.
//!
//! # Ranges
//! Block ranges grow by ×3 from the head's block range (2h, 6h, 18h, 54h, …; ten steps, as
//! Prometheus's `ExponentialBlockRanges(min, 10, 3)`), cut at the maximum block duration
//! ([`block_ranges`]); by default that maximum is min(31d, retention / 10)
//! ([`default_max_block_duration`]).
//!
//! # Rules [`plan`] keeps (in this order; the first that picks something wins)
//! 1. **Overlapping blocks are merged first**, all of the first overlapping run in min-time
//!    order, the newest block included (vertical compaction; Prometheus 2.42 always enables it).
//! 2. **The newest block (largest min time) is left out** of everything below: it was just cut
//!    from the head, and users get a full block range to back it up before it disappears.
//! 3. **Leveled merge**: for each range after the first, smallest first, split the remaining
//!    blocks into groups by aligned windows `[k·range, (k+1)·range)` (a block that crosses its
//!    window is skipped); take the first group of ≥ 2 blocks, none with `compaction.failed`,
//!    that spans exactly the window, or ends at or before the newest remaining block's min time
//!    (so nothing else of that size can still arrive in it).
//! 4. **Tombstones**: walking from the newest remaining block back, a block spanning at least
//!    `ranges[len / 2]` is rewritten alone when `tombstones / (series + 1) > 5%`; the walk stops
//!    at the first shorter block, which is itself rewritten if it has tombstones for every
//!    series (`tombstones > 0 && tombstones >= series`).
//!
//! Times are block times in milliseconds, `max_time` exclusive. Arithmetic on times is done in
//! `i128`, so no meta, however corrupt, can overflow a plan.

use std::collections::HashSet;

use super::block::meta::META_VERSION;
use super::block::ulid::Ulid;
use super::block::{BlockDesc, BlockMeta, Compaction};

/// Number of ranges Prometheus builds (`ExponentialBlockRanges(min, 10, 3)` in `db.go`).
pub const RANGE_STEPS: usize = 10;
/// Growth factor between consecutive ranges.
pub const RANGE_STEP_SIZE: i64 = 3;
/// Prometheus's default maximum block duration: 31 days (`cmd/prometheus/main.go`).
pub const DEFAULT_MAX_BLOCK_DURATION_MS: i64 = 31 * 24 * 3600 * 1000;

/// `steps` ranges starting at `min`, each `step_size` times the previous (Prometheus
/// `ExponentialBlockRanges`). Saturates at `i64::MAX` where Go would wrap around.
pub fn exponential_ranges(min: i64, steps: usize, step_size: i64) -> Vec<i64> {
    let mut ranges = Vec::with_capacity(steps);
    let mut cur = min;
    for _ in 0..steps {
        ranges.push(cur);
        cur = cur.saturating_mul(step_size);
    }
    ranges
}

/// The compaction ranges for a head block range and a maximum block duration, as Prometheus's
/// `db.go` builds them: `exponential_ranges(block_range, 10, 3)`, cut before the first range
/// greater than `max_block_duration` (a range equal to it is kept).
///
/// Like `validateOpts`, a maximum below `block_range` is raised to it, so the first range is
/// always kept and a plan is never given an empty list. A `block_range` ≤ 0 gives no ranges
/// (Prometheus would substitute its 2h default; cairn's config validates the value instead),
/// and [`plan`] then does nothing.
pub fn block_ranges(block_range: i64, max_block_duration: i64) -> Vec<i64> {
    if block_range <= 0 {
        return Vec::new();
    }
    let max = max_block_duration.max(block_range);
    exponential_ranges(block_range, RANGE_STEPS, RANGE_STEP_SIZE)
        .into_iter()
        .take_while(|&r| r <= max)
        .collect()
}

/// Prometheus's default for `--storage.tsdb.max-block-duration` (`cmd/prometheus/main.go`):
/// 31 days, or a tenth of the time retention when that is shorter. `retention_ms` ≤ 0 means no
/// time retention (31 days). The division truncates, as it does in Prometheus.
pub fn default_max_block_duration(retention_ms: i64) -> i64 {
    if retention_ms > 0 && retention_ms / 10 < DEFAULT_MAX_BLOCK_DURATION_MS {
        retention_ms / 10
    } else {
        DEFAULT_MAX_BLOCK_DURATION_MS
    }
}

/// The blocks to merge into one next, in min-time order; empty when there is nothing to do.
/// See the module docs for the rules (Prometheus v2.42 `LeveledCompactor.plan`,
/// `selectOverlappingDirs`, `selectDirs`, `splitByRange`). `ranges` is [`block_ranges`]'s
/// output; an empty list plans nothing (Prometheus refuses to build a compactor without ranges).
///
/// Blocks are ordered by min time, ties by ULID (Prometheus's `sort.Slice` leaves ties in an
/// unspecified order; only blocks that overlap anyway, or empty ones, can tie).
pub fn plan(metas: &[BlockMeta], ranges: &[i64]) -> Vec<Ulid> {
    if ranges.is_empty() {
        return Vec::new();
    }
    let mut sorted: Vec<&BlockMeta> = metas.iter().collect();
    sorted.sort_by(|a, b| a.min_time.cmp(&b.min_time).then(a.ulid.cmp(&b.ulid)));

    let overlapping = select_overlapping(&sorted);
    if !overlapping.is_empty() {
        return ulids(&overlapping);
    }

    // Leave out the newest block: it was just written from the head.
    let Some((_, older)) = sorted.split_last() else {
        return Vec::new();
    };

    if let Some(group) = select_leveled(older, ranges) {
        return ulids(&group);
    }

    select_tombstoned(older, ranges)
        .map(|m| vec![m.ulid])
        .unwrap_or_default()
}

fn ulids(metas: &[&BlockMeta]) -> Vec<Ulid> {
    metas.iter().map(|m| m.ulid).collect()
}

/// Prometheus `selectOverlappingDirs`: the first run of blocks (sorted by min time) whose
/// ranges overlap the union of the ranges before them; half-open, so a block starting exactly
/// where another ends does not overlap it. The run starts with the block just before the first
/// overlapping one and ends before the first block that overlaps nothing earlier.
fn select_overlapping<'a>(sorted: &[&'a BlockMeta]) -> Vec<&'a BlockMeta> {
    let mut run = Vec::new();
    let Some((&first, rest)) = sorted.split_first() else {
        return run;
    };
    let mut global_max = first.max_time;
    let mut prev = first;
    for &m in rest {
        if m.min_time < global_max {
            if run.is_empty() {
                run.push(prev);
            }
            run.push(m);
        } else if !run.is_empty() {
            break;
        }
        global_max = global_max.max(m.max_time);
        prev = m;
    }
    run
}

/// Prometheus `selectDirs`: the first group, trying `ranges[1..]` smallest first and each
/// range's windows oldest first, of ≥ 2 blocks with no failed compaction that either spans its
/// whole window (`max − min == range`, gaps inside allowed) or ends at or before the min time of
/// the newest block considered (`sorted` excludes the head's newest block already).
/// Non-positive ranges (invalid configuration) are skipped.
fn select_leveled<'a>(sorted: &[&'a BlockMeta], ranges: &[i64]) -> Option<Vec<&'a BlockMeta>> {
    let high_time = sorted.last()?.min_time;
    for &range in ranges.get(1..)? {
        if range <= 0 {
            continue;
        }
        for group in split_by_range(sorted, range) {
            if group.iter().any(|m| m.compaction.failed) {
                continue;
            }
            let (Some(first), Some(last)) = (group.first(), group.last()) else {
                continue;
            };
            let span = i128::from(last.max_time) - i128::from(first.min_time);
            if group.len() > 1 && (span == i128::from(range) || last.max_time <= high_time) {
                return Some(group);
            }
        }
    }
    None
}

/// Prometheus `splitByRange`: groups of consecutive blocks (sorted by min time) that lie inside
/// one aligned window `[t0, t0 + range]` with `t0 = floor(min_time / range) · range`, the window
/// of the group's first block. A block whose max time passes the end of its own window
/// (misaligned, or longer than `range`) belongs to no group. `range` must be positive.
fn split_by_range<'a>(sorted: &[&'a BlockMeta], range: i64) -> Vec<Vec<&'a BlockMeta>> {
    let tr = i128::from(range);
    let mut groups = Vec::new();
    let mut i = 0;
    while let Some(&m) = sorted.get(i) {
        // Floor division, as Prometheus's `tr * ((m.MinTime - tr + 1) / tr)` for negative times.
        let window_end = i128::from(m.min_time).div_euclid(tr) * tr + tr;
        if i128::from(m.max_time) > window_end {
            i += 1;
            continue;
        }
        let mut group = Vec::new();
        while let Some(&b) = sorted.get(i) {
            if i128::from(b.max_time) > window_end {
                break;
            }
            group.push(b);
            i += 1;
        }
        groups.push(group);
    }
    groups
}

/// Prometheus `plan`'s last step: from the newest of `sorted` back, the first block spanning
/// ≥ `ranges[len / 2]` with more than 5% tombstones per series (`tombstones / (series + 1)`,
/// in `f64` as upstream); the walk stops at the first shorter block, which is returned only if
/// every series has a tombstone (`tombstones > 0 && tombstones >= series`).
fn select_tombstoned<'a>(sorted: &[&'a BlockMeta], ranges: &[i64]) -> Option<&'a BlockMeta> {
    let big = i128::from(*ranges.get(ranges.len() / 2)?);
    for &m in sorted.iter().rev() {
        let s = &m.stats;
        if i128::from(m.max_time) - i128::from(m.min_time) < big {
            if s.num_tombstones > 0 && s.num_tombstones >= s.num_series {
                return Some(m);
            }
            return None;
        }
        if s.num_tombstones as f64 / (s.num_series as f64 + 1.0) > 0.05 {
            return Some(m);
        }
    }
    None
}

/// The meta of the block merged from `parents` (Prometheus `CompactBlockMetas`): min and max
/// time over all parents, level = highest parent level + 1, sources = the parents' sources
/// deduplicated and sorted, parents = each parent's (ULID, min, max) in the order given (the
/// plan's order), version 1. Stats, hints and flags are left empty: the block writer fills the
/// stats, and Prometheus 2.42 carries no hints or flags over. `None` for no parents.
pub fn compacted_meta(parents: &[BlockMeta], ulid: Ulid) -> Option<BlockMeta> {
    let min_time = parents.iter().map(|m| m.min_time).min()?;
    let max_time = parents.iter().map(|m| m.max_time).max()?;
    let level = parents
        .iter()
        .map(|m| m.compaction.level)
        .max()?
        .saturating_add(1);
    let mut sources: Vec<Ulid> = parents
        .iter()
        .flat_map(|m| m.compaction.sources.iter().copied())
        .collect();
    sources.sort_unstable();
    sources.dedup();
    let descs = parents
        .iter()
        .map(|m| BlockDesc {
            ulid: m.ulid,
            min_time: m.min_time,
            max_time: m.max_time,
        })
        .collect();
    Some(BlockMeta {
        ulid,
        min_time,
        max_time,
        stats: Default::default(),
        compaction: Compaction {
            level,
            sources,
            parents: descs,
            ..Compaction::default()
        },
        version: META_VERSION,
    })
}

/// Blocks that another block present names as a parent, sorted by ULID: a compaction
/// published the merged block but the process stopped before deleting its inputs. Prometheus
/// v2.42 `reloadBlocks` marks every parent of a loaded block deletable (parents already gone
/// are skipped by its `deleteBlocks`; here only blocks present are returned). A block naming
/// itself as its own parent is ignored, so a corrupt meta cannot delete its own block.
pub fn deletable_parents(metas: &[BlockMeta]) -> Vec<Ulid> {
    let named: HashSet<Ulid> = metas
        .iter()
        .flat_map(|child| {
            child
                .compaction
                .parents
                .iter()
                .map(|p| p.ulid)
                .filter(move |&p| p != child.ulid)
        })
        .collect();
    let mut out: Vec<Ulid> = metas
        .iter()
        .map(|m| m.ulid)
        .filter(|u| named.contains(u))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Blocks whose meta carries `compaction.deletable`, sorted by ULID: Prometheus sets it on the
/// inputs of a compaction whose output was empty (no block written), and `deletableBlocks`
/// deletes them.
pub fn marked_deletable(metas: &[BlockMeta]) -> Vec<Ulid> {
    let mut out: Vec<Ulid> = metas
        .iter()
        .filter(|m| m.compaction.deletable)
        .map(|m| m.ulid)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::tsdb::block::BlockStats;

    const H: i64 = 3600 * 1000;
    const D: i64 = 24 * H;

    fn u(n: u128) -> Ulid {
        Ulid(n)
    }

    /// Prometheus's `metaRange(name, mint, maxt, nil)`: a level-1 block named `n`.
    fn m(n: u128, min_time: i64, max_time: i64) -> BlockMeta {
        BlockMeta {
            ulid: u(n),
            min_time,
            max_time,
            stats: BlockStats::default(),
            compaction: Compaction::level1(u(n)),
            version: META_VERSION,
        }
    }

    fn tomb(mut b: BlockMeta, series: u64, tombstones: u64) -> BlockMeta {
        b.stats.num_series = series;
        b.stats.num_tombstones = tombstones;
        b
    }

    fn failed(mut b: BlockMeta) -> BlockMeta {
        b.compaction.failed = true;
        b
    }

    fn ids(v: &[Ulid]) -> Vec<u128> {
        v.iter().map(|u| u.0).collect()
    }

    #[test]
    fn exponential_ranges_multiply_like_prometheus() {
        type Case = (&'static str, (i64, usize, i64), Vec<i64>);
        let cases: Vec<Case> = vec![
            (
                "the upstream test ranges come from a 20 minimum",
                (20, 5, 3),
                vec![20, 60, 180, 540, 1620],
            ),
            (
                "ten steps of three from two hours",
                (2 * H, 10, 3),
                [1, 3, 9, 27, 81, 243, 729, 2187, 6561, 19683]
                    .iter()
                    .map(|k| k * 2 * H)
                    .collect(),
            ),
            ("zero steps give no ranges", (2 * H, 0, 3), vec![]),
            ("one step gives the minimum alone", (7, 1, 3), vec![7]),
            ("step size two doubles", (1, 5, 2), vec![1, 2, 4, 8, 16]),
            ("step size one repeats", (5, 3, 1), vec![5, 5, 5]),
            ("a zero minimum stays zero", (0, 3, 3), vec![0, 0, 0]),
            (
                "negative minimums multiply too",
                (-1, 3, 3),
                vec![-1, -3, -9],
            ),
            (
                "overflow saturates instead of wrapping",
                (i64::MAX / 2, 3, 3),
                vec![i64::MAX / 2, i64::MAX, i64::MAX],
            ),
            ("step size zero", (4, 3, 0), vec![4, 0, 0]),
            ("one millisecond minimum", (1, 4, 3), vec![1, 3, 9, 27]),
            ("large steps", (10, 2, 1000), vec![10, 10_000]),
        ];
        for (name, (min, steps, step), want) in cases {
            assert_eq!(exponential_ranges(min, steps, step), want, "{name}");
        }
    }

    #[test]
    fn block_ranges_are_cut_at_the_max_block_duration() {
        let all: Vec<i64> = exponential_ranges(2 * H, 10, 3);
        let cases: Vec<(&str, (i64, i64), Vec<i64>)> = vec![
            (
                "31 days keeps 2h … 486h (1458h is over)",
                (2 * H, 31 * D),
                vec![2 * H, 6 * H, 18 * H, 54 * H, 162 * H, 486 * H],
            ),
            (
                "15d retention / 10 = 36h keeps 2h, 6h, 18h",
                (2 * H, 36 * H),
                vec![2 * H, 6 * H, 18 * H],
            ),
            (
                "max equal to the block range keeps one",
                (2 * H, 2 * H),
                vec![2 * H],
            ),
            (
                "max below the block range is raised to it, as validateOpts does",
                (2 * H, H),
                vec![2 * H],
            ),
            ("a negative max is raised too", (2 * H, -1), vec![2 * H]),
            (
                "a range exactly at the max is kept",
                (2 * H, 6 * H),
                vec![2 * H, 6 * H],
            ),
            (
                "one millisecond under drops it",
                (2 * H, 6 * H - 1),
                vec![2 * H],
            ),
            ("no max keeps all ten", (2 * H, i64::MAX), all),
            ("a zero block range gives nothing", (0, 31 * D), vec![]),
            ("a negative block range gives nothing", (-5, 31 * D), vec![]),
            (
                "the upstream test ranges",
                (20, 1620),
                vec![20, 60, 180, 540, 1620],
            ),
            ("just under the fifth", (20, 1619), vec![20, 60, 180, 540]),
        ];
        for (name, (range, max), want) in cases {
            assert_eq!(block_ranges(range, max), want, "{name}");
        }
    }

    #[test]
    fn default_max_block_duration_is_a_tenth_of_retention_capped_at_31_days() {
        let cases: Vec<(&str, i64, i64)> = vec![
            ("no retention: 31 days", 0, 31 * D),
            ("negative retention counts as none", -D, 31 * D),
            ("15 days: 36 hours", 15 * D, 36 * H),
            ("1 day: 2.4 hours", D, 24 * H / 10),
            ("310 days: exactly 31 days", 310 * D, 31 * D),
            ("one year: capped at 31 days", 365 * D, 31 * D),
            ("truncating division", 19, 1),
            ("just under 310 days", 310 * D - 10, 31 * D - 1),
        ];
        for (name, retention, want) in cases {
            assert_eq!(default_max_block_duration(retention), want, "{name}");
        }
    }

    /// Prometheus `TestSplitByRange` (tsdb/compact_test.go), translated.
    #[test]
    fn split_by_range_matches_upstream() {
        type R = (i64, i64);
        let cases: Vec<(i64, Vec<R>, Vec<Vec<R>>)> = vec![
            (60, vec![(0, 10)], vec![vec![(0, 10)]]),
            (60, vec![(0, 60)], vec![vec![(0, 60)]]),
            (
                60,
                vec![(0, 10), (9, 15), (30, 60)],
                vec![vec![(0, 10), (9, 15), (30, 60)]],
            ),
            (
                60,
                vec![(70, 90), (125, 130), (130, 180), (1000, 1001)],
                vec![
                    vec![(70, 90)],
                    vec![(125, 130), (130, 180)],
                    vec![(1000, 1001)],
                ],
            ),
            // Mis-aligned or too-large blocks are ignored.
            (60, vec![(50, 70), (70, 80)], vec![vec![(70, 80)]]),
            (
                72,
                vec![(0, 144), (144, 216), (216, 288)],
                vec![vec![(144, 216)], vec![(216, 288)]],
            ),
            // Awkward edge cases with negative numbers.
            (60, vec![(-10, -5)], vec![vec![(-10, -5)]]),
            (
                60,
                vec![(-60, -50), (-10, -5)],
                vec![vec![(-60, -50), (-10, -5)]],
            ),
            (
                60,
                vec![(-60, -50), (-10, -5), (0, 15)],
                vec![vec![(-60, -50), (-10, -5)], vec![(0, 15)]],
            ),
            // Negative times use floor windows ([-60, 0] here), not truncated ones ([0, 60]).
            (
                60,
                vec![(-50, -40), (0, 15)],
                vec![vec![(-50, -40)], vec![(0, 15)]],
            ),
            // Extremes cannot overflow.
            (
                60,
                vec![(i64::MIN, i64::MIN + 1), (i64::MAX - 1, i64::MAX)],
                vec![
                    vec![(i64::MIN, i64::MIN + 1)],
                    vec![(i64::MAX - 1, i64::MAX)],
                ],
            ),
        ];
        for (tr, input, want) in cases {
            let metas: Vec<BlockMeta> = input
                .iter()
                .enumerate()
                .map(|(i, &(a, b))| m(i as u128, a, b))
                .collect();
            let refs: Vec<&BlockMeta> = metas.iter().collect();
            let got: Vec<Vec<R>> = split_by_range(&refs, tr)
                .iter()
                .map(|g| g.iter().map(|b| (b.min_time, b.max_time)).collect())
                .collect();
            assert_eq!(got, want, "range {tr}, blocks {input:?}");
        }
    }

    /// Prometheus `TestLeveledCompactor` "plan" table (tsdb/compact_test.go) with the same
    /// ranges, `TestNoPanicFor0Tombstones`, `TestRangeWithFailedCompactionWontGetSelected`, and
    /// cairn's own edge cases. Block names are the upstream dir names.
    #[test]
    fn plan_picks_what_prometheus_picks() {
        let upstream = vec![20, 60, 180, 540, 1620];
        let failed_ranges = vec![20, 60, 240, 720, 2160];
        let two_hours = block_ranges(2 * H, 31 * D);
        // (name, ranges, blocks, expected plan)
        type Case<'a> = (&'static str, &'a [i64], Vec<BlockMeta>, Vec<u128>);
        // Upstream TestLeveledCompactor/plan.
        let mut cases: Vec<Case> = vec![
            ("Outside Range", &upstream, vec![m(1, 0, 20)], vec![]),
            (
                "We should wait for four blocks of size 20 to appear before compacting.",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40)],
                vec![],
            ),
            (
                "We should wait for a next block of size 20 to appear before compacting the \
                 existing ones. We have three, but we ignore the fresh one from WAL",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 40, 60)],
                vec![],
            ),
            (
                "Block to fill the entire parent range appeared – should be compacted",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 40, 60), m(4, 60, 80)],
                vec![1, 2, 3],
            ),
            (
                "Block for the next parent range appeared with gap with size 20. Nothing will \
                 happen in the first one anymore but we ignore fresh one still, so no compaction",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 60, 80)],
                vec![],
            ),
            (
                "Block for the next parent range appeared, and we have a gap with size 20 between \
                 second and third block. We will not get this missed gap anymore and we should \
                 compact just these two.",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 60, 80), m(4, 80, 100)],
                vec![1, 2],
            ),
            (
                "We have 20, 20, 20, 60, 60 range blocks. '5' is marked as fresh one",
                &upstream,
                vec![
                    m(1, 0, 20),
                    m(2, 20, 40),
                    m(3, 40, 60),
                    m(4, 60, 120),
                    m(5, 120, 180),
                ],
                vec![1, 2, 3],
            ),
            (
                "We have 20, 60, 20, 60, 240 range blocks. We can compact 20 + 60 + 60",
                &upstream,
                vec![
                    m(2, 20, 40),
                    m(4, 60, 120),
                    m(5, 960, 980), // Fresh one.
                    m(6, 120, 180),
                    m(7, 720, 960),
                ],
                vec![2, 4, 6],
            ),
            (
                "Do not select large blocks that have many tombstones when there is no fresh \
                 block",
                &upstream,
                vec![tomb(m(1, 0, 540), 10, 3)],
                vec![],
            ),
            (
                "Select large blocks that have many tombstones when fresh appears",
                &upstream,
                vec![tomb(m(1, 0, 540), 10, 3), m(2, 540, 560)],
                vec![1],
            ),
            (
                "For small blocks, do not compact tombstones, even when fresh appears.",
                &upstream,
                vec![tomb(m(1, 0, 60), 10, 3), m(2, 60, 80)],
                vec![],
            ),
            (
                "Regression test: we were stuck in a compact loop where we always recompacted the \
                 same block when tombstones and series counts were zero",
                &upstream,
                vec![tomb(m(1, 0, 540), 0, 0), m(2, 540, 560)],
                vec![],
            ),
            (
                "Regression test: we were wrongly assuming that new block is fresh from WAL when \
                 its ULID is newest. We need to actually look on max time instead.",
                &upstream,
                vec![
                    m(5, 0, 360),
                    m(6, 540, 560), // Fresh one.
                    m(7, 360, 420),
                    m(8, 420, 540),
                ],
                vec![7, 8],
            ),
            (
                "Overlapping blocks 1",
                &upstream,
                vec![m(1, 0, 20), m(2, 19, 40), m(3, 40, 60)],
                vec![1, 2],
            ),
            (
                "Overlapping blocks 2",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 30, 50)],
                vec![2, 3],
            ),
            (
                "Overlapping blocks 3",
                &upstream,
                vec![m(1, 0, 20), m(2, 10, 40), m(3, 30, 50)],
                vec![1, 2, 3],
            ),
            (
                "Overlapping blocks 4",
                &upstream,
                vec![m(5, 0, 360), m(6, 340, 560), m(7, 360, 420), m(8, 420, 540)],
                vec![5, 6, 7, 8],
            ),
            (
                "Overlapping blocks 5",
                &upstream,
                vec![m(1, 0, 10), m(2, 9, 20), m(3, 30, 40), m(4, 39, 50)],
                vec![1, 2],
            ),
        ];
        // Upstream TestNoPanicFor0Tombstones (one range) and
        // TestRangeWithFailedCompactionWontGetSelected (block 2 failed).
        let more: Vec<Case> = vec![
            (
                "zero tombstones and zero series with a single range plan nothing",
                &[50],
                vec![m(1, 0, 100), m(2, 101, 200)],
                vec![],
            ),
            (
                "a full range with a failed block is not selected",
                &failed_ranges,
                vec![
                    m(1, 0, 20),
                    failed(m(2, 20, 40)),
                    m(3, 40, 60),
                    m(4, 60, 80),
                ],
                vec![],
            ),
            (
                "a gapped range with a failed block is not selected",
                &failed_ranges,
                vec![
                    m(1, 0, 20),
                    failed(m(2, 20, 40)),
                    m(3, 60, 80),
                    m(4, 80, 100),
                ],
                vec![],
            ),
            (
                "a failed block keeps its range out at every level",
                &failed_ranges,
                vec![
                    m(1, 0, 20),
                    failed(m(2, 20, 40)),
                    m(3, 40, 60),
                    m(4, 60, 120),
                    m(5, 120, 180),
                    m(6, 180, 200),
                ],
                vec![],
            ),
        ];
        cases.extend(more);
        // cairn's edge cases.
        let more: Vec<Case> = vec![
            ("no blocks plan nothing", &upstream, vec![], vec![]),
            (
                "no ranges plan nothing, even for overlaps",
                &[],
                vec![m(1, 0, 20), m(2, 10, 30)],
                vec![],
            ),
            (
                "blocks touching at a boundary do not overlap (max time is exclusive)",
                &upstream,
                vec![m(1, 0, 20), m(2, 20, 40)],
                vec![],
            ),
            (
                "two copies of the same range overlap and merge, the newest included",
                &upstream,
                vec![m(2, 0, 20), m(1, 0, 20)],
                vec![1, 2],
            ),
            (
                "input order does not matter",
                &upstream,
                vec![m(4, 60, 80), m(2, 20, 40), m(3, 40, 60), m(1, 0, 20)],
                vec![1, 2, 3],
            ),
            (
                "aligned 2h blocks: three fill the 6h window once a fourth is cut",
                &two_hours,
                vec![
                    m(1, 0, 2 * H),
                    m(2, 2 * H, 4 * H),
                    m(3, 4 * H, 6 * H),
                    m(4, 6 * H, 8 * H),
                ],
                vec![1, 2, 3],
            ),
            (
                "an unaligned first head block (starts at its first sample) does not span the \
                 6h window, so it waits",
                &two_hours,
                vec![
                    m(1, 1_000_123, 2 * H),
                    m(2, 2 * H, 4 * H),
                    m(3, 4 * H, 6 * H),
                    m(4, 6 * H, 8 * H),
                ],
                vec![],
            ),
            (
                "the unaligned window is merged once a block after it is no longer the newest",
                &two_hours,
                vec![
                    m(1, 1_000_123, 2 * H),
                    m(2, 2 * H, 4 * H),
                    m(3, 4 * H, 6 * H),
                    m(4, 6 * H, 8 * H),
                    m(5, 8 * H, 10 * H),
                ],
                vec![1, 2, 3],
            ),
            (
                "blocks before a long gap are merged: nothing more can arrive in their window",
                &upstream,
                vec![
                    m(1, 0, 20),
                    m(2, 20, 40),
                    m(3, 1000, 1020),
                    m(4, 1020, 1040),
                ],
                vec![1, 2],
            ),
            (
                "lone blocks in 60 windows are not merged, and their 180 window is still open",
                &upstream,
                vec![m(1, 0, 20), m(2, 60, 80), m(3, 120, 140), m(4, 180, 200)],
                vec![],
            ),
            (
                "a misaligned block crossing a window is skipped; the next window still merges",
                &upstream,
                vec![
                    m(1, 50, 70),
                    m(2, 70, 80),
                    m(3, 80, 100),
                    m(4, 100, 120),
                    m(5, 120, 140),
                    m(6, 140, 160),
                ],
                vec![2, 3, 4],
            ),
            (
                "with a single range only overlaps and tombstones are planned",
                &[20],
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 40, 60), m(4, 60, 80)],
                vec![],
            ),
            (
                "three 60-wide blocks are merged when they fill a 180 window",
                &upstream,
                vec![m(1, 0, 60), m(2, 60, 120), m(3, 120, 180), m(4, 180, 240)],
                vec![1, 2, 3],
            ),
            (
                "a small block whose every series is deleted is rewritten alone",
                &upstream,
                vec![tomb(m(1, 0, 20), 10, 10), m(2, 20, 40)],
                vec![1],
            ),
            (
                "a small block with most but not all series deleted is left",
                &upstream,
                vec![tomb(m(1, 0, 20), 10, 9), m(2, 20, 40)],
                vec![],
            ),
            (
                "tombstones: the newest big block qualifying goes first",
                &upstream,
                vec![
                    tomb(m(1, 0, 540), 10, 3),
                    tomb(m(2, 540, 1080), 10, 3),
                    m(3, 1080, 1100),
                ],
                vec![2],
            ),
            (
                "tombstones: the walk stops at the first small block from the newest",
                &upstream,
                vec![tomb(m(1, 0, 540), 10, 3), m(2, 540, 560), m(3, 560, 580)],
                vec![],
            ),
            (
                "tombstones: exactly 5% is not more than 5%",
                &upstream,
                vec![tomb(m(1, 0, 540), 19, 1), m(2, 540, 560)],
                vec![],
            ),
            (
                "tombstones: just over 5% is rewritten",
                &upstream,
                vec![tomb(m(1, 0, 540), 18, 1), m(2, 540, 560)],
                vec![1],
            ),
            (
                "overlap wins over a full leveled range",
                &upstream,
                vec![
                    m(1, 0, 20),
                    m(2, 20, 40),
                    m(3, 40, 60),
                    m(4, 60, 80),
                    m(5, 70, 90),
                ],
                vec![4, 5],
            ),
            (
                "negative times align on floor windows",
                &upstream,
                vec![m(1, -60, -40), m(2, -40, -20), m(3, -20, 0), m(4, 0, 20)],
                vec![1, 2, 3],
            ),
        ];
        cases.extend(more);
        for (name, ranges, metas, want) in cases {
            assert_eq!(ids(&plan(&metas, ranges)), want, "{name}");
        }
    }

    #[test]
    fn compacted_meta_combines_parents_like_compact_block_metas() {
        let with = |mut b: BlockMeta, level: u32, sources: &[u128]| {
            b.compaction.level = level;
            b.compaction.sources = sources.iter().map(|&s| u(s)).collect();
            b
        };
        let desc = |n: u128, a: i64, b: i64| BlockDesc {
            ulid: u(n),
            min_time: a,
            max_time: b,
        };
        // (name, parents, min, max, level, sources, parent descs)
        type Want = (i64, i64, u32, Vec<u128>, Vec<BlockDesc>);
        let cases: Vec<(&str, Vec<BlockMeta>, Option<Want>)> = vec![
            ("no parents: no meta", vec![], None),
            (
                "one parent: level 2, its source, itself as parent",
                vec![m(1, 0, 20)],
                Some((0, 20, 2, vec![1], vec![desc(1, 0, 20)])),
            ),
            (
                "three level-1 blocks: level 2, three sources",
                vec![m(1, 0, 20), m(2, 20, 40), m(3, 40, 60)],
                Some((
                    0,
                    60,
                    2,
                    vec![1, 2, 3],
                    vec![desc(1, 0, 20), desc(2, 20, 40), desc(3, 40, 60)],
                )),
            ),
            (
                "mixed levels: the highest plus one",
                vec![with(m(10, 0, 60), 2, &[1, 2, 3]), m(4, 60, 80)],
                Some((
                    0,
                    80,
                    3,
                    vec![1, 2, 3, 4],
                    vec![desc(10, 0, 60), desc(4, 60, 80)],
                )),
            ),
            (
                "overlapping parents: min and max over all, wherever they are",
                vec![m(1, 10, 20), m(2, 0, 50), m(3, 15, 30)],
                Some((
                    0,
                    50,
                    2,
                    vec![1, 2, 3],
                    vec![desc(1, 10, 20), desc(2, 0, 50), desc(3, 15, 30)],
                )),
            ),
            (
                "shared sources are listed once",
                vec![
                    with(m(10, 0, 20), 2, &[1, 2]),
                    with(m(11, 10, 30), 2, &[2, 3]),
                ],
                Some((
                    0,
                    30,
                    3,
                    vec![1, 2, 3],
                    vec![desc(10, 0, 20), desc(11, 10, 30)],
                )),
            ),
            (
                "sources are sorted whatever the parents' order",
                vec![with(m(20, 40, 60), 1, &[9]), with(m(21, 0, 40), 1, &[5, 7])],
                Some((
                    0,
                    60,
                    2,
                    vec![5, 7, 9],
                    vec![desc(20, 40, 60), desc(21, 0, 40)],
                )),
            ),
            (
                "parents keep the order given (the plan's order)",
                vec![m(3, 40, 60), m(1, 0, 20)],
                Some((0, 60, 2, vec![1, 3], vec![desc(3, 40, 60), desc(1, 0, 20)])),
            ),
            (
                "a gap between parents stays inside the merged range",
                vec![m(1, 0, 20), m(2, 100, 120)],
                Some((
                    0,
                    120,
                    2,
                    vec![1, 2],
                    vec![desc(1, 0, 20), desc(2, 100, 120)],
                )),
            ),
            (
                "an unaligned head block keeps its first-sample min time",
                vec![m(1, 1_000_123, 2 * H), m(2, 2 * H, 4 * H)],
                Some((
                    1_000_123,
                    4 * H,
                    2,
                    vec![1, 2],
                    vec![desc(1, 1_000_123, 2 * H), desc(2, 2 * H, 4 * H)],
                )),
            ),
            (
                "level 0 parents (hand-made blocks) give level 1",
                vec![with(m(1, 0, 20), 0, &[1])],
                Some((0, 20, 1, vec![1], vec![desc(1, 0, 20)])),
            ),
            (
                "the level saturates instead of overflowing",
                vec![with(m(1, 0, 20), u32::MAX, &[1])],
                Some((0, 20, u32::MAX, vec![1], vec![desc(1, 0, 20)])),
            ),
            (
                "negative times",
                vec![m(1, -40, -20), m(2, -20, 0)],
                Some((
                    -40,
                    0,
                    2,
                    vec![1, 2],
                    vec![desc(1, -40, -20), desc(2, -20, 0)],
                )),
            ),
        ];
        for (name, parents, want) in cases {
            let got = compacted_meta(&parents, u(99));
            let Some((min, max, level, sources, descs)) = want else {
                assert!(got.is_none(), "{name}");
                continue;
            };
            let got = got.expect(name);
            assert_eq!(got.ulid, u(99), "{name}");
            assert_eq!((got.min_time, got.max_time), (min, max), "{name}");
            assert_eq!(got.compaction.level, level, "{name}");
            assert_eq!(ids(&got.compaction.sources), sources, "{name}");
            assert_eq!(got.compaction.parents, descs, "{name}");
            assert_eq!(got.stats, BlockStats::default(), "{name}");
            assert!(
                !got.compaction.deletable && !got.compaction.failed,
                "{name}"
            );
            assert!(got.compaction.hints.is_empty(), "{name}");
            assert_eq!(got.version, META_VERSION, "{name}");
        }
    }

    #[test]
    fn deletable_parents_are_blocks_named_by_another_block() {
        let child = |n: u128, a: i64, b: i64, parents: &[&BlockMeta]| {
            let mut c = compacted_meta(
                &parents.iter().map(|&p| p.clone()).collect::<Vec<_>>(),
                u(n),
            )
            .unwrap();
            c.min_time = a;
            c.max_time = b;
            c
        };
        let (p1, p2, p3) = (m(1, 0, 20), m(2, 20, 40), m(3, 40, 60));
        let merged = child(10, 0, 60, &[&p1, &p2, &p3]);
        let merged_again = child(20, 0, 80, &[&merged, &m(4, 60, 80)]);
        let mut self_parent = m(7, 0, 20);
        self_parent.compaction.parents = vec![BlockDesc {
            ulid: u(7),
            min_time: 0,
            max_time: 20,
        }];
        let cases: Vec<(&str, Vec<BlockMeta>, Vec<u128>)> = vec![
            ("no blocks", vec![], vec![]),
            ("one head block", vec![p1.clone()], vec![]),
            (
                "head blocks never name parents",
                vec![p1.clone(), p2.clone(), p3.clone()],
                vec![],
            ),
            (
                "crash after publishing: all three parents are deletable",
                vec![p1.clone(), p2.clone(), p3.clone(), merged.clone()],
                vec![1, 2, 3],
            ),
            (
                "some parents already deleted: the rest are",
                vec![p3.clone(), merged.clone()],
                vec![3],
            ),
            (
                "all parents gone: nothing (absent parents are not reported)",
                vec![merged.clone()],
                vec![],
            ),
            (
                "unrelated blocks are kept",
                vec![
                    p1.clone(),
                    p2.clone(),
                    p3.clone(),
                    merged.clone(),
                    m(5, 80, 100),
                ],
                vec![1, 2, 3],
            ),
            (
                "a chain of compactions: every ancestor still present goes",
                vec![
                    p1.clone(),
                    merged.clone(),
                    m(4, 60, 80),
                    merged_again.clone(),
                ],
                vec![1, 4, 10],
            ),
            (
                "input order does not matter, output is sorted",
                vec![merged.clone(), p3.clone(), p1.clone()],
                vec![1, 3],
            ),
            (
                "a block naming itself as parent is not deleted",
                vec![self_parent.clone()],
                vec![],
            ),
            (
                "two children naming the same parent list it once",
                vec![p1.clone(), merged.clone(), child(11, 0, 20, &[&p1])],
                vec![1],
            ),
            (
                "parents are matched by ULID, not time range",
                vec![m(1, 500, 600), merged.clone()],
                vec![1],
            ),
        ];
        for (name, metas, want) in cases {
            assert_eq!(ids(&deletable_parents(&metas)), want, "{name}");
        }
    }

    #[test]
    fn marked_deletable_follows_the_meta_flag() {
        let mut d = m(3, 40, 60);
        d.compaction.deletable = true;
        let mut d2 = m(1, 0, 20);
        d2.compaction.deletable = true;
        assert!(marked_deletable(&[]).is_empty());
        assert!(marked_deletable(&[m(1, 0, 20)]).is_empty());
        assert_eq!(ids(&marked_deletable(&[d, m(2, 20, 40), d2])), vec![1, 3]);
    }
}
