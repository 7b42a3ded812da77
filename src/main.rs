//! `cairn`: serves Prometheus remote write and remote read over an embedded, Prometheus-format
//! TSDB. Flags follow Prometheus's dotted names; `--config.file` and the flags are parsed by
//! `cairn::config`.
//!
//! Start-up order: listen first (so `/-/healthy` answers and `/-/ready` says 503 during a long
//! WAL replay), recover the data directory on a blocking thread, then open the data routes.
//! SIGINT/SIGTERM: stop accepting, finish in-flight requests (bounded by a grace period), flush
//! head chunks and close the WAL.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::config::{self, Command, Config};
use cairn::server::{self, AppState};
use cairn::tsdb::{Db, ProgressFn, ReplayProgress};
use cairn::{log_error, log_info, log_warn};
use tokio::sync::watch;

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
    if r.unknown_refs > 0 {
        log_warn!(
            "WAL samples of series with no series record were dropped",
            samples = r.unknown_refs
        );
    }
    let skipped = r.records_not_kept;
    if skipped.any_data() {
        log_warn!(
            "WAL records this version does not keep were skipped: native histograms, exemplars \
             and metadata are not served (a Prometheus 3.x directory holds them)",
            histogram_records = skipped.histograms,
            exemplar_records = skipped.exemplars,
            metadata_records = skipped.metadata
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
        blocks = r.blocks,
        head_series = db.head().num_series(),
        samples_replayed = r.samples_replayed,
        wal_segments = r.wal.segments,
        wal_checkpoint = r
            .wal
            .checkpoint
            .map_or_else(|| "none".to_string(), |c| format!("{c:08}")),
        chunks_mapped = r.chunks.chunks,
        duration = format!("{:?}", r.duration),
        wal_sync = format!("{:?}", db.wal().sync_policy()),
        retention_time = format!(
            "{:?}",
            Duration::from_millis(db.retention().retention_ms.max(0) as u64)
        ),
        retention_size_bytes = db.retention().retention_bytes
    );
}

async fn run(flags: Config, args: Vec<String>) -> Result<(), String> {
    let (stop_tx, stop) = shutdown_signal()?;
    // Installed now: SIGHUP's default action would kill the process during recovery.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| format!("SIGHUP handler: {e}"))?;
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
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    state.set_reload(reload_tx);
    let server = tokio::spawn(server::serve(
        listener,
        Arc::clone(&state),
        wait_for(stop.clone()),
    ));

    let path = flags.path.clone();
    let mut opts = flags.opts.clone();
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
    // Ready first, so "data directory ready" in the log means the API answers with data.
    state.set_ready(Arc::clone(&db));
    log_open(&flags.path, &db);
    tokio::spawn(reloader(
        hangup,
        reload_rx,
        args,
        flags.clone(),
        Arc::clone(&state),
        Arc::clone(&db),
    ));
    let housekeeping = tokio::spawn(housekeeping(
        Arc::clone(&db),
        flags.housekeeping,
        wait_for(stop.clone()),
    ));

    wait_for(stop).await;
    let start = Instant::now();
    // A compaction in progress finishes first (it is safe to kill, but cheaper to complete).
    if let Err(e) = housekeeping.await {
        log_error!("housekeeping task failed", err = e);
    }
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

/// Serve reloads (SIGHUP, `/-/reload`) one at a time, for the life of the process.
async fn reloader(
    mut hangup: tokio::signal::unix::Signal,
    mut requests: tokio::sync::mpsc::Receiver<server::ReloadRequest>,
    args: Vec<String>,
    started: Config,
    state: Arc<AppState>,
    db: Arc<Db>,
) {
    loop {
        let answer = tokio::select! {
            s = hangup.recv() => match s {
                Some(()) => None,
                None => return,
            },
            r = requests.recv() => match r {
                Some(done) => Some(done),
                None => return,
            },
        };
        let (a, st, d, s) = (
            args.clone(),
            Arc::clone(&state),
            Arc::clone(&db),
            started.clone(),
        );
        // Parsing reads the config files: off the async threads.
        let res = tokio::task::spawn_blocking(move || reload(&a, &s, &st, &d))
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r);
        match &res {
            Ok(()) => log_info!("configuration reloaded"),
            Err(e) => log_error!("configuration not reloaded; the running one stays", err = e),
        }
        if let Some(done) = answer {
            let _ = done.send(res);
        }
    }
}

/// Re-read the flags, `--config.file` and `--web.config.file` (all checked before anything
/// changes) and put in force what can change while serving: the settings the table marks
/// [`config::Reload::Live`] (log level and format, remote read/write limits, the admin and
/// lifecycle switches, retention and the largest block). [`config::Reload::Restart`] settings
/// that changed are named in a warning and keep their running values.
fn reload(args: &[String], started: &Config, state: &AppState, db: &Db) -> Result<(), String> {
    let mut new = match config::parse_args(args.iter().cloned())? {
        Command::Run(c) => *c,
        Command::Help => return Err("the command line asks for --help".into()),
    };
    // Checked like at start, though the running web config stays (it re-reads its own file).
    new.load_web_config()?;
    let restart = config::restart_needed(started, &new);
    let new = new.keeping_restart_settings(started)?;
    let old = state.cfg();
    let mut cfg = new.server.clone();
    // Kept: watched by the running web config (which re-reads its own file when it changes),
    // or sized into the write budget at start and not settings.
    cfg.web = old.web.clone();
    cfg.body = old.body;
    cfg.write_inflight_bytes = old.write_inflight_bytes;
    if let Some(w) = &cfg.web {
        w.reload_if_changed()?;
    }
    cairn::log::init(new.log_level, new.log_format);
    state.set_cfg(cfg);
    db.set_retention(
        new.opts.retention_ms,
        new.opts.retention_bytes,
        new.opts.max_block_duration_ms,
    );
    if !restart.is_empty() {
        log_warn!(
            "changed settings take effect after a restart; the running values stay",
            settings = restart.join(",")
        );
    }
    Ok(())
}

/// Head compaction every `every` (the first right away, so a head replayed from a long WAL is
/// compacted at start), until `stop` resolves.
async fn housekeeping(db: Arc<Db>, every: Duration, stop: impl std::future::Future<Output = ()>) {
    let mut warned_oversized = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let d = Arc::clone(&db);
        match tokio::task::spawn_blocking(move || d.housekeep()).await {
            Ok(r) => {
                // Each step ran whatever the others did; each failure is named.
                for e in &r.errors {
                    log_error!(
                        "housekeeping step failed; retrying at the next interval",
                        step = e.step.as_str(),
                        err = e.error
                    );
                }
                for ulid in &r.marked_failed {
                    log_warn!(
                        "block marked compaction.failed: it is served, but left out of merges",
                        ulid = ulid
                    );
                }
                for (parents, merged) in &r.merged {
                    log_info!(
                        "blocks merged",
                        parents = parents.len(),
                        block = merged
                            .map_or_else(|| "none (all deleted)".to_string(), |u| u.to_string())
                    );
                }
                for (ulid, why) in &r.retention {
                    log_info!(
                        "block deleted by retention",
                        ulid = ulid,
                        reason = why.as_str()
                    );
                }
                if !r.retention.is_empty() {
                    let set = db.blocks();
                    let oldest = set.blocks.iter().map(|b| b.meta().min_time).min();
                    let newest = set.blocks.iter().map(|b| b.meta().max_time).max();
                    if let (Some(a), Some(b)) = (oldest, newest) {
                        log_info!(
                            "effective retention",
                            oldest_data_age =
                                format!("{:?}", Duration::from_millis((b - a).max(0) as u64))
                        );
                    }
                }
                if r.oversized.map(|o| o.0) != warned_oversized {
                    warned_oversized = r.oversized.map(|o| o.0);
                    if let Some((ulid, bytes)) = r.oversized {
                        log_warn!(
                            "a block holds more than half of --storage.tsdb.retention.size: when it is deleted, half the history goes at once; raise the size limit or lower --storage.tsdb.max-block-duration",
                            ulid = ulid,
                            bytes = bytes
                        );
                    }
                }
                for b in &r.blocks {
                    log_info!(
                        "head compacted into a block",
                        ulid = b.ulid,
                        mint = b.min_time,
                        maxt = b.max_time,
                        series = b.stats.num_series,
                        samples = b.stats.num_samples
                    );
                }
                if !r.blocks.is_empty() || r.checkpoint.is_some() {
                    log_info!(
                        "head truncated",
                        series_removed = r.series_removed,
                        chunks_removed = r.chunks_removed,
                        checkpoint = r
                            .checkpoint
                            .map_or_else(|| "none".to_string(), |c| format!("{c:08}")),
                        wal_segments_deleted = r.wal_segments_deleted,
                        duration = format!("{:?}", r.duration)
                    );
                }
            }
            Err(e) => log_error!("compaction task failed", err = e),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut flags = match config::parse_args(args.iter().cloned()) {
        Ok(Command::Run(c)) => *c,
        Ok(Command::Help) => {
            print!("{}", config::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            return ExitCode::from(2);
        }
    };
    // After parsing: TLS and basic auth, checked before the data directory is touched.
    if let Err(e) = flags.load_web_config() {
        eprintln!("cairn: {e}");
        return ExitCode::from(2);
    }
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
    match rt.block_on(run(flags, args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log_error!(&e);
            ExitCode::FAILURE
        }
    }
}
