//! `cairn`: serves Prometheus remote write and remote read over an embedded, Prometheus-format
//! TSDB. Flags follow Prometheus's dotted names.
//!
//! Start-up order: listen first (so `/-/healthy` answers and `/-/ready` says 503 during a long
//! WAL replay), recover the data directory on a blocking thread, then open the data routes.
//! SIGINT/SIGTERM: stop accepting, finish in-flight requests (bounded by a grace period), flush
//! head chunks and close the WAL.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::log::{Format, Level};
use cairn::server::{self, AppState, ServerConfig};
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{parse_duration, Db, Options, ProgressFn, ReplayProgress};
use cairn::{log_error, log_info, log_warn};
use tokio::sync::watch;

const HELP: &str = "\
cairn — Prometheus remote-storage sidecar with a Prometheus-format TSDB

USAGE:
    cairn [FLAGS]

FLAGS:
    --web.listen-address=ADDR               Address to serve HTTP on; `:PORT` means every
                                            interface. [default: :9201]
    --storage.tsdb.path=DIR                 Data directory. [default: data/]
    --storage.tsdb.wal-sync=POLICY          When the WAL fsyncs: `always` (before every
                                            acknowledgement; concurrent writers share one fsync),
                                            a duration such as `100ms` (at most that often), or
                                            `never` (the OS decides). [default: always]
    --storage.tsdb.min-block-duration=DUR   Block range; head chunks never cross it. [default: 2h]
    --storage.tsdb.wal-segment-size=BYTES   WAL segment size. [default: 134217728]
    --storage.tsdb.max-series=N             Most series the head may hold; samples of new series
                                            beyond it get 400 naming the limit. 0 means no
                                            limit. [default: 0]
    --storage.remote.write-label-limit=N    Most labels per series (400 beyond). [default: 64]
    --storage.remote.write-label-name-length-limit=BYTES
                                            Longest label name (400 beyond). [default: 1024]
    --storage.remote.write-label-value-length-limit=BYTES
                                            Longest label value (400 beyond). [default: 16384]
    --storage.remote.read-sample-limit=N    Most samples one SAMPLES remote-read response may
                                            hold; 0 means no limit. [default: 50000000]
    --storage.remote.read-concurrent-limit=N
                                            Remote reads served at once; more wait for a slot.
                                            [default: 10]
    --storage.remote.read-max-bytes-in-frame=BYTES
                                            Budget of one streamed remote-read frame.
                                            [default: 1048576]
    --web.config.file=FILE                  TLS and basic auth, in Prometheus's web config
                                            format (tls_server_config, basic_auth_users);
                                            re-read when it changes. [default: none]
    --web.enable-lifecycle                  Serve POST /-/quit (graceful stop, as SIGTERM).
                                            [default: false]
    --log.level=LEVEL                       debug, info, warn or error. [default: info]
    --log.format=FORMAT                     logfmt or json. [default: logfmt]
    -h, --help                              Print this help.

Durations use Prometheus syntax: 100ms, 15s, 2h, 15d, 1y (= 365d).
";

/// Flags that take no value (`--flag` means true; `--flag=false` is accepted too).
const BOOL_FLAGS: &[&str] = &["--web.enable-lifecycle"];

fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid {name} {value:?}: want true or false")),
    }
}

struct Flags {
    log_level: Level,
    log_format: Format,
    listen: String,
    path: String,
    opts: Options,
    server: ServerConfig,
}

fn parse_flags(args: impl Iterator<Item = String>) -> Result<Option<Flags>, String> {
    let mut flags = Flags {
        log_level: Level::Info,
        log_format: Format::Logfmt,
        listen: ":9201".into(),
        path: "data/".into(),
        opts: Options::default(),
        server: ServerConfig::default(),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            // Boolean flags stand alone, as in Prometheus (`--web.enable-lifecycle`).
            None if BOOL_FLAGS.contains(&arg.as_str()) => (arg, "true".to_string()),
            None => {
                let v = args
                    .next()
                    .ok_or_else(|| format!("flag {arg} needs a value"))?;
                (arg, v)
            }
        };
        let number = |min: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= min)
                .ok_or_else(|| format!("invalid {name} {value:?}: want an integer >= {min}"))
        };
        match name.as_str() {
            "--web.listen-address" => flags.listen = value,
            "--web.config.file" => {
                let web = server::web::WebConfig::load(&value)?;
                flags.server.web = Some(Arc::new(web));
            }
            "--log.level" => flags.log_level = value.parse()?,
            "--log.format" => flags.log_format = value.parse()?,
            "--web.enable-lifecycle" => {
                flags.server.enable_lifecycle = parse_bool(&name, &value)?;
            }
            "--storage.tsdb.path" => flags.path = value,
            "--storage.tsdb.max-series" => flags.opts.max_series = number(0)?,
            "--storage.remote.write-label-limit" => {
                flags.server.labels.max_labels = number(1)? as usize
            }
            "--storage.remote.write-label-name-length-limit" => {
                flags.server.labels.max_name_bytes = number(1)? as usize
            }
            "--storage.remote.write-label-value-length-limit" => {
                flags.server.labels.max_value_bytes = number(1)? as usize
            }
            "--storage.remote.read-sample-limit" => {
                flags.server.read_sample_limit = match number(0)? {
                    0 => u64::MAX,
                    n => n,
                }
            }
            "--storage.remote.read-concurrent-limit" => {
                flags.server.read_concurrent_limit = number(1)? as usize
            }
            "--storage.remote.read-max-bytes-in-frame" => {
                flags.server.read_max_bytes_in_frame = number(1024)? as usize
            }
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

/// Bind `addr`; `:PORT` (Go's "every interface") binds `[::]` (dual-stack) or, without IPv6,
/// `0.0.0.0`.
async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    match addr.strip_prefix(':') {
        Some(port) => match tokio::net::TcpListener::bind(format!("[::]:{port}")).await {
            Ok(l) => Ok(l),
            Err(_) => tokio::net::TcpListener::bind(format!("0.0.0.0:{port}")).await,
        },
        None => tokio::net::TcpListener::bind(addr).await,
    }
}

/// A channel that turns true on SIGINT or SIGTERM (or when `/-/quit` sends on it).
fn shutdown_signal() -> Result<(Arc<watch::Sender<bool>>, watch::Receiver<bool>), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT handler: {e}"))?;
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let signal_tx = Arc::clone(&tx);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        log_info!("signal received, shutting down", signal = name);
        let _ = signal_tx.send(true);
    });
    Ok((tx, rx))
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|&stop| stop).await;
}

/// How long in-flight requests may take to finish after a shutdown signal.
const GRACE: Duration = Duration::from_secs(30);

fn log_open(path: &str, db: &Db) {
    let r = db.open_report();
    if let Some(rep) = &r.wal.repaired {
        log_warn!(
            "WAL corruption repaired",
            segment = rep.segment,
            offset = rep.offset,
            segments_deleted = rep.segments_deleted,
            bytes_dropped = rep.bytes_dropped,
            err = rep.error
        );
    }
    if let Some((file, off, why)) = &r.chunks.dropped_tail {
        log_warn!(
            "head chunk file tail dropped; data comes from the WAL",
            file = format!("{file:06}"),
            offset = off,
            err = why
        );
    }
    log_info!(
        "data directory ready",
        path = path,
        head_series = db.head().num_series(),
        samples_replayed = r.samples_replayed,
        wal_segments = r.wal.segments,
        chunks_mapped = r.chunks.chunks,
        duration = format!("{:?}", r.duration),
        wal_sync = format!("{:?}", db.wal().sync_policy())
    );
}

async fn run(flags: Flags) -> Result<(), String> {
    let (stop_tx, stop) = shutdown_signal()?;
    let listener = bind(&flags.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", flags.listen))?;
    let local: Option<SocketAddr> = listener.local_addr().ok();
    log_info!(
        "listening",
        address = local.map_or_else(|| flags.listen.clone(), |a| a.to_string())
    );
    let state = AppState::new(flags.server.clone());
    state.set_quit(stop_tx);
    let server = tokio::spawn(server::serve(
        listener,
        Arc::clone(&state),
        wait_for(stop.clone()),
    ));

    let path = flags.path.clone();
    let mut opts = flags.opts;
    // A progress line at most every 5 s (and for the last segment), for long replays.
    let last_log = std::sync::Mutex::new(Instant::now());
    opts.replay_progress = Some(ProgressFn(Arc::new(move |p: ReplayProgress| {
        let Ok(mut last) = last_log.lock() else {
            return;
        };
        if p.segments_done < p.segments && last.elapsed() < Duration::from_secs(5) {
            return;
        }
        *last = Instant::now();
        let secs = p.elapsed.as_secs_f64().max(1e-9);
        log_info!(
            "WAL replay",
            segments = format!("{}/{}", p.segments_done, p.segments),
            percent = format!(
                "{:.0}",
                100.0 * p.segments_done as f64 / p.segments.max(1) as f64
            ),
            samples = p.samples,
            samples_per_sec = format!("{:.0}", p.samples as f64 / secs)
        );
    })));
    let open = tokio::task::spawn_blocking(move || Db::open(&path, opts));
    let db = tokio::select! {
        res = open => res
            .map_err(|e| format!("open task failed: {e}"))?
            .map_err(|e| format!("cannot open data directory {:?}: {e}", flags.path))?,
        _ = wait_for(stop.clone()) => {
            // Replay only reads and repairs; stopping in the middle is like a crash, which
            // the next start handles.
            log_info!("stopped during recovery");
            return Ok(());
        }
    };
    let db = Arc::new(db);
    log_open(&flags.path, &db);
    state.set_ready(Arc::clone(&db));

    wait_for(stop).await;
    let start = Instant::now();
    match tokio::time::timeout(GRACE, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => log_error!("server failed", err = e),
        Ok(Err(e)) => log_error!("server task failed", err = e),
        Err(_) => log_warn!(
            "requests still running after the grace period; closing anyway (their data is not acknowledged)",
            grace = format!("{GRACE:?}")
        ),
    }
    tokio::task::spawn_blocking(move || db.close())
        .await
        .map_err(|e| format!("close task failed: {e}"))?
        .map_err(|e| format!("close failed: {e}"))?;
    log_info!(
        "closed cleanly",
        duration = format!("{:?}", start.elapsed())
    );
    Ok(())
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
    cairn::log::init(flags.log_level, flags.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log_error!("cannot start the runtime", err = e);
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_error!(&e);
            ExitCode::FAILURE
        }
    }
}
