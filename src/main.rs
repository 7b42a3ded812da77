//! `cairn`: opens (and recovers) a data directory and holds it until SIGINT/SIGTERM.
//!
//! The engine is complete for writes and recovery; the HTTP server (remote write/read, health,
//! metrics) comes with the remote-storage issue. Flags follow Prometheus's dotted names.

use std::process::ExitCode;

use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{parse_duration, Db, Options};

const HELP: &str = "\
cairn — Prometheus remote-storage sidecar with a Prometheus-format TSDB

USAGE:
    cairn [FLAGS]

FLAGS:
    --storage.tsdb.path=DIR                 Data directory. [default: data/]
    --storage.tsdb.wal-sync=POLICY          When the WAL fsyncs: `always` (before every
                                            acknowledgement; concurrent writers share one fsync),
                                            a duration such as `100ms` (at most that often), or
                                            `never` (the OS decides). [default: always]
    --storage.tsdb.min-block-duration=DUR   Block range; head chunks never cross it. [default: 2h]
    --storage.tsdb.wal-segment-size=BYTES   WAL segment size. [default: 134217728]
    -h, --help                              Print this help.

Durations use Prometheus syntax: 100ms, 15s, 2h, 15d, 1y (= 365d).
";

struct Flags {
    path: String,
    opts: Options,
}

fn parse_flags(args: impl Iterator<Item = String>) -> Result<Option<Flags>, String> {
    let mut flags = Flags {
        path: "data/".into(),
        opts: Options::default(),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("flag {arg} needs a value"))?;
                (arg, v)
            }
        };
        match name.as_str() {
            "--storage.tsdb.path" => flags.path = value,
            "--storage.tsdb.wal-sync" => {
                flags.opts.wal.sync = value.parse::<SyncPolicy>()?;
            }
            "--storage.tsdb.min-block-duration" => {
                let d = parse_duration(&value)
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        format!("invalid --storage.tsdb.min-block-duration {value:?}")
                    })?;
                flags.opts.block_range_ms = d.as_millis() as i64;
            }
            "--storage.tsdb.wal-segment-size" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("invalid --storage.tsdb.wal-segment-size {value:?}"))?;
                if n < 64 * 1024 {
                    return Err("--storage.tsdb.wal-segment-size must be at least 65536".into());
                }
                flags.opts.wal = WalOptions {
                    segment_size: n,
                    ..flags.opts.wal
                };
            }
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    Ok(Some(flags))
}

/// Block SIGINT and SIGTERM in this thread — and so in every thread started after it, which
/// inherit the mask — so that only [`wait_for_signal`] sees them. Call before starting threads.
fn block_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: plain libc signal-mask calls on a zero-initialised sigset_t owned by this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err("cannot block signals".into());
        }
        Ok(set)
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> Result<i32, String> {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised sigset_t; `sig` is a valid out pointer.
    if unsafe { libc::sigwait(set, &mut sig) } != 0 {
        return Err("sigwait failed".into());
    }
    Ok(sig)
}

fn main() -> ExitCode {
    let flags = match parse_flags(std::env::args().skip(1)) {
        Ok(Some(f)) => f,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    let signals = match block_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::FAILURE;
        }
    };
    let db = match Db::open(&flags.path, flags.opts) {
        Ok(db) => db,
        Err(e) => {
            eprintln!(
                "level=error msg=\"cannot open data directory\" path={:?} err=\"{e}\"",
                flags.path
            );
            return ExitCode::FAILURE;
        }
    };
    let r = db.open_report();
    if let Some(rep) = &r.wal.repaired {
        eprintln!(
            "level=warn msg=\"WAL corruption repaired\" segment={} offset={} segments_deleted={} bytes_dropped={} err=\"{}\"",
            rep.segment, rep.offset, rep.segments_deleted, rep.bytes_dropped, rep.error
        );
    }
    if let Some((file, off, why)) = &r.chunks.dropped_tail {
        eprintln!("level=warn msg=\"head chunk file tail dropped; data comes from the WAL\" file={file:06} offset={off} err=\"{why}\"");
    }
    eprintln!(
        "level=info msg=\"data directory ready\" path={:?} head_series={} samples_replayed={} wal_segments={} chunks_mapped={} duration={:?} wal_sync={:?}",
        flags.path,
        db.head().num_series(),
        r.samples_replayed,
        r.wal.segments,
        r.chunks.chunks,
        r.duration,
        db.wal().sync_policy(),
    );
    eprintln!("level=info msg=\"no HTTP server yet (remote write/read arrive with the next release); waiting for SIGINT/SIGTERM\"");
    match wait_for_signal(&signals) {
        Ok(sig) => eprintln!("level=info msg=\"signal received, closing\" signal={sig}"),
        Err(e) => eprintln!("level=error msg=\"{e}\""),
    }
    let start = std::time::Instant::now();
    match db.close() {
        Ok(()) => {
            eprintln!(
                "level=info msg=\"closed cleanly\" duration={:?}",
                start.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("level=error msg=\"close failed\" err=\"{e}\"");
            ExitCode::FAILURE
        }
    }
}
