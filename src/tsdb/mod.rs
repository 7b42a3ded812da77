//! The storage engine, modelled on Prometheus TSDB and keeping its on-disk formats.
//!
//! ```text
//! data/
//!   lock            flock held by the running process
//!   wal/            write-ahead log segments (wal::segment framing, wal::record codec)
//!   chunks_head/    full head chunks, memory-mapped for reading (head::chunks)
//!   <ULID>/         persistent blocks: chunks/, index, meta.json, tombstones (block, index)
//! ```
//! Write path: [`Db::append`] validates a batch, writes one WAL entry (group commit), then
//! applies it to the in-memory [`head`]. Read path: [`Db::select`] resolves matchers through the
//! head's postings and hands out chunks (closed chunks as their stored bytes).

pub mod block;
pub mod chunkenc;
pub mod compact;
pub mod db;
pub mod encoding;
pub mod error;
pub mod fileutil;
pub mod head;
pub mod index;
pub mod postings;
pub mod querier;
pub mod retention;
pub mod u64map;
pub mod wal;

/// What trying the same operation again can bring: every engine error says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The condition clears by itself within seconds (a poisoned WAL opening a fresh segment,
    /// a shutdown handing over): retry soon (HTTP 503 with `Retry-After`).
    Soon,
    /// A storage fault that may or may not clear (I/O error, full disk): retry with backoff
    /// (HTTP 500).
    Maybe,
    /// The same request fails the same way (damaged data it must read, an invalid argument).
    Never,
}

pub use db::{
    Db, DbError, FaultPoint, OpenReport, Options, ProgressFn, ReplayProgress, Step, StepError,
};
pub use head::{AppendError, AppendReport, AppendSeries, RejectReason, Sample};

use std::time::Duration;

/// Parse a Prometheus duration: `[0-9]+(ms|s|m|h|d|w|y)`, units may be combined in descending
/// order (`1h30m`); `1y` = 365d, `1w` = 7d, as in Prometheus's `model.ParseDuration`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    const UNITS: [(&str, u64); 8] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
        ("", 0),
    ];
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_rank = 0usize;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest.get(..digits)?.parse().ok()?;
        rest = rest.get(digits..)?;
        // "ms" must be tried before "m".
        let (rank, unit_ms, len) = if rest.starts_with("ms") {
            (7, 1, 2)
        } else {
            let (rank, (name, ms)) = UNITS
                .iter()
                .enumerate()
                .take(6)
                .find(|(_, (u, _))| rest.starts_with(u))?;
            (rank + 1, *ms, name.len())
        };
        if rank <= last_rank {
            return None;
        }
        last_rank = rank;
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
        rest = rest.get(len..)?;
    }
    Some(Duration::from_millis(total))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn prometheus_durations_parse_like_prometheus() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(parse_duration("100ms"), ms(100));
        assert_eq!(parse_duration("15s"), ms(15_000));
        assert_eq!(parse_duration("2h"), ms(7_200_000));
        assert_eq!(parse_duration("1h30m"), ms(5_400_000));
        assert_eq!(parse_duration("15d"), ms(15 * 86_400_000));
        assert_eq!(parse_duration("1y"), ms(365 * 86_400_000));
        assert_eq!(parse_duration("1w"), ms(7 * 86_400_000));
        for bad in ["", "h", "1", "1x", "30m1h", "1h1h", "-1s", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
