//! End to end with the real Prometheus binary: Prometheus A scrapes itself and a small exporter
//! served by this test and remote-writes everything to the storage under test; Prometheus B has
//! no scrape targets and only remote-reads the storage. The storage is restarted twice mid-run
//! (SIGTERM, then SIGKILL) on the same port and data directory while A keeps writing. Afterwards
//! every raw sample A holds in the compared window must come back identically through B, and
//! PromQL range queries must agree.
//!
//! Real-world details this test relies on (see also the comments where they matter):
//! - B's own TSDB is empty (no scrape configs, no rules), so every sample B returns came from the
//!   storage via remote read (`read_recent: true`, else B would skip remote read for recent
//!   ranges).
//! - No external labels anywhere: A would attach them to every remote-written series and B would
//!   require and strip them on read.
//! - Stale markers: A writes one whenever a series disappears from a scrape (`e2e_flapping` does
//!   so every other scrape, A's own metrics occasionally). They are a special NaN bit pattern that
//!   PromQL drops from range selectors; a storage that turns them into ordinary NaNs shows up here
//!   as extra "NaN" samples on B. When A shuts down it writes stale markers for everything, so the
//!   comparison happens before A is stopped, at a fixed time T a few seconds in the past.
//! - Remote-write lag: A ships from its WAL in batches (deadline 1 s) per shard, each shard in
//!   order, retrying recoverable failures (connection refused, 5xx) forever. Catch-up is detected
//!   on B itself: for every series A has in the window, B must return the same newest sample
//!   timestamp at or before T. Because each series is shipped in order, that is a sound signal
//!   that cannot hide a lost sample in the middle (the strict comparison that follows would
//!   catch it).
//! - JSON floats: Prometheus renders sample values as strings (`strconv.FormatFloat(v, 'f', -1,
//!   64)`): "NaN", "+Inf", "-Inf", "-0", 1e300 with all its digits. Values are compared as those
//!   strings, so -0 vs 0 or a changed NaN payload would differ; timestamps are float seconds with
//!   millisecond precision, compared as integer milliseconds.
//! - Remote-write metadata requests (A sends them by default, once a minute) and exact-duplicate
//!   resends after a SIGKILL (the storage had stored a batch but A never got the answer) must be
//!   accepted; a 400 makes A drop that batch for good, which is harmless only if it was all
//!   duplicates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::http::{urlencode, Client};
use common::peer::Peer;
use common::procs::{free_ports, start_prometheus, write_prometheus_yml, Proc, PromConfig};

// ---------------------------------------------------------------------------------------------
// The storage under test: the one swappable piece.
// ---------------------------------------------------------------------------------------------

/// What serves `/api/v1/write`, `/api/v1/read` and `/-/ready` for A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // the stand-in is kept for debugging the test itself
enum StorageKind {
    /// The `cairn` binary of this crate.
    Cairn,
    /// A third Prometheus with `--web.enable-remote-write-receiver`: same endpoints, used to
    /// develop and debug this test independently of cairn.
    PrometheusReceiver,
}

/// The storage this test runs against.
const STORAGE: StorageKind = StorageKind::Cairn;

/// Start generation `generation` of the storage on 127.0.0.1:`port` with data directory
/// `<dir>/data` (log: `<dir>/<kind>.<generation>.log`) and wait until `/-/ready` answers 200.
fn start_storage(peer: Peer, kind: StorageKind, dir: &Path, port: u16, generation: u32) -> Proc {
    let data = dir.join("data");
    fs::create_dir_all(&data).unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut proc = match kind {
        StorageKind::Cairn => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
            cmd.arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.wal-sync=always");
            Proc::spawn(&format!("cairn.{generation}"), cmd, dir).unwrap()
        }
        StorageKind::PrometheusReceiver => {
            let config =
                write_prometheus_yml(peer, dir, "receiver.yml", &PromConfig::default().to_yaml());
            start_prometheus(
                peer,
                &format!("receiver.{generation}"),
                &config,
                &data,
                port,
                &["--web.enable-remote-write-receiver"],
                dir,
            )
            .unwrap()
        }
    };
    if let Err(e) = proc.wait_ready(&addr, "/-/ready", Duration::from_secs(30)) {
        panic!("{e}");
    }
    proc
}

// ---------------------------------------------------------------------------------------------
// The exporter A scrapes.
// ---------------------------------------------------------------------------------------------

/// A `/metrics` endpoint on a std `TcpListener` thread; one request per connection.
struct Exporter {
    addr: String,
    scrapes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Exporter {
    fn start(port: u16) -> Exporter {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let scrapes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (scrapes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => serve_one(conn, &s),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Exporter {
            addr,
            scrapes,
            stop,
            thread: Some(thread),
        }
    }

    fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut conn: TcpStream, scrapes: &AtomicU64) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 << 10 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = if req.starts_with(b"GET /metrics ") {
        let n = scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        ("200 OK", exposition(n))
    } else {
        ("404 Not Found", "not found\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
}

/// The exposition for the `n`th scrape (n ≥ 1): counters grow every scrape, gauges include the
/// float values a storage most easily mangles, one series carries UTF-8, quotes and a
/// backslash in a label value, and `e2e_flapping` is present on even scrapes only (A writes a
/// stale marker for it on odd ones).
fn exposition(n: u64) -> String {
    let f = n as f64;
    let mut s = String::new();
    s.push_str("# HELP e2e_requests_total Requests handled.\n# TYPE e2e_requests_total counter\n");
    let _ = writeln!(
        s,
        "e2e_requests_total{{code=\"200\",method=\"get\"}} {}",
        3 * n
    );
    let _ = writeln!(
        s,
        "e2e_requests_total{{code=\"500\",method=\"post\"}} {}",
        n / 4
    );
    s.push_str("# TYPE e2e_bytes_total counter\n");
    let _ = writeln!(s, "e2e_bytes_total {}", f * 1536.25 + 0.1);
    s.push_str("# TYPE e2e_latency_seconds histogram\n");
    let _ = writeln!(s, "e2e_latency_seconds_bucket{{le=\"0.1\"}} {n}");
    let _ = writeln!(
        s,
        "e2e_latency_seconds_bucket{{le=\"0.5\"}} {}",
        2 * n + n / 3
    );
    let _ = writeln!(s, "e2e_latency_seconds_bucket{{le=\"+Inf\"}} {}", 3 * n);
    let _ = writeln!(s, "e2e_latency_seconds_sum {}", f * 0.7);
    let _ = writeln!(s, "e2e_latency_seconds_count {}", 3 * n);
    s.push_str("# TYPE e2e_special gauge\n");
    for (kind, v) in [
        ("nan", "NaN"),
        ("pos_inf", "+Inf"),
        ("neg_inf", "-Inf"),
        ("huge", "1e300"),
        ("neg_zero", "-0.0"),
        ("tiny", "5e-324"),
        ("small", "1.234e-300"),
        ("third", "0.3333333333333333"),
        ("negative", "-12345.678"),
    ] {
        let _ = writeln!(s, "e2e_special{{kind=\"{kind}\"}} {v}");
    }
    s.push_str("# TYPE e2e_temperature_celsius gauge\n");
    let _ = writeln!(
        s,
        "e2e_temperature_celsius{{room=\"lab\"}} {:?}",
        20.0 + (f / 3.0).sin() * 5.0
    );
    let _ = writeln!(
        s,
        "e2e_temperature_celsius{{room=\"cellar\"}} {:?}",
        -(f * 0.01)
    );
    s.push_str("# TYPE e2e_labels_info gauge\n");
    s.push_str(
        "e2e_labels_info{a=\"1\",b=\"two\",greeting=\"Grüße, 世界 🌍\",\
         quoted=\"say \\\"hi\\\" \\\\ bye\",space=\" \",zone=\"eu-west-1\"} 1\n",
    );
    s.push_str("# TYPE e2e_constant gauge\ne2e_constant 42\n");
    if n.is_multiple_of(2) {
        s.push_str("# TYPE e2e_flapping gauge\n");
        let _ = writeln!(s, "e2e_flapping{{phase=\"even\"}} {n}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// PromQL over HTTP.
// ---------------------------------------------------------------------------------------------

/// Series (canonical label text) → [(timestamp ms, value as Prometheus prints it)].
type Matrix = BTreeMap<String, Vec<(i64, String)>>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds as the API's seconds parameter, exactly.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// `{a="1", b="x"}` with PromQL/Go string escaping — usable both as a map key and a selector.
fn selector(labels: &BTreeMap<String, String>) -> String {
    let mut s = String::from("{");
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(n);
        s.push_str("=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

fn labels_of(v: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    let obj = v.as_object().ok_or("labels are not an object")?;
    obj.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| format!("label {k} is not a string"))
        })
        .collect()
}

fn point(p: &serde_json::Value) -> Result<(i64, String), String> {
    let ts = p[0].as_f64().ok_or_else(|| format!("bad point {p}"))?;
    let v = p[1].as_str().ok_or_else(|| format!("bad point {p}"))?;
    // -0 cannot cross the remote-write wire: Prometheus's gogo-generated `Sample` marshaller
    // omits the value field when `m.Value != 0` is false, which holds for -0.0, so the storage
    // receives (and B shows) +0 for a -0 that A scraped. Compare zeros without their sign.
    let v = if v == "-0" { "0" } else { v };
    Ok(((ts * 1000.0).round() as i64, v.to_string()))
}

/// A successful API answer's `data`.
fn api_get(c: &mut Client, path_and_query: &str) -> Result<serde_json::Value, String> {
    let r = c
        .get(path_and_query)
        .map_err(|e| format!("GET {path_and_query}: {e}"))?;
    if r.status != 200 {
        return Err(format!(
            "GET {path_and_query}: status {}: {}",
            r.status,
            r.text()
        ));
    }
    let mut v: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|e| format!("GET {path_and_query}: bad JSON ({e}): {}", r.text()))?;
    if v["status"] != "success" {
        return Err(format!("GET {path_and_query}: {v}"));
    }
    if let Some(w) = v.get("warnings") {
        // B reports remote-read failures as warnings next to partial data: never accept those.
        return Err(format!("GET {path_and_query}: warnings {w}"));
    }
    Ok(v["data"].take())
}

/// A query result as a [`Matrix`] (an instant vector becomes one point per series).
fn to_matrix(data: &serde_json::Value) -> Result<Matrix, String> {
    let mut out = Matrix::new();
    let result = data["result"].as_array().ok_or("no result array")?;
    for s in result {
        let key = selector(&labels_of(&s["metric"])?);
        let points = match data["resultType"].as_str() {
            Some("matrix") => s["values"]
                .as_array()
                .ok_or("no values")?
                .iter()
                .map(point)
                .collect::<Result<Vec<_>, _>>()?,
            Some("vector") => vec![point(&s["value"])?],
            other => return Err(format!("unexpected resultType {other:?}")),
        };
        if out.insert(key.clone(), points).is_some() {
            return Err(format!("series {key} returned twice"));
        }
    }
    Ok(out)
}

fn query(c: &mut Client, expr: &str, time_ms: i64) -> Result<Matrix, String> {
    let q = format!(
        "/api/v1/query?query={}&time={}",
        urlencode(expr),
        secs(time_ms)
    );
    to_matrix(&api_get(c, &q)?)
}

fn query_range(c: &mut Client, expr: &str, start: i64, end: i64) -> Result<Matrix, String> {
    let q = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step=1",
        urlencode(expr),
        secs(start),
        secs(end)
    );
    to_matrix(&api_get(c, &q)?)
}

/// Every series A has between `start` and `end` (`/api/v1/series`).
fn series(c: &mut Client, start: i64, end: i64) -> Result<Vec<BTreeMap<String, String>>, String> {
    let q = format!(
        "/api/v1/series?match[]={}&start={}&end={}",
        urlencode("{__name__=~\".+\"}"),
        secs(start),
        secs(end)
    );
    api_get(c, &q)?
        .as_array()
        .ok_or("series: no array")?
        .iter()
        .map(labels_of)
        .collect()
}

/// A scalar-ish instant query: the single value of a one-series result.
fn query_value(c: &mut Client, expr: &str, time_ms: i64) -> Result<Option<String>, String> {
    let m = query(c, expr, time_ms)?;
    Ok(m.values()
        .next()
        .and_then(|p| p.last())
        .map(|p| p.1.clone()))
}

/// Where two results differ, for a failure message (at most `max` lines).
fn diff(a: &Matrix, b: &Matrix, max: usize) -> String {
    let mut out = Vec::new();
    for k in a.keys().chain(b.keys()).collect::<BTreeSet<_>>() {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let only_a: Vec<_> = x.iter().filter(|p| !y.contains(p)).take(5).collect();
                let only_b: Vec<_> = y.iter().filter(|p| !x.contains(p)).take(5).collect();
                out.push(format!(
                    "  {k}: A has {} points, B has {}; only in A (first 5): {only_a:?}; only in B: {only_b:?}",
                    x.len(),
                    y.len()
                ));
            }
            (Some(x), None) => out.push(format!("  {k}: only on A ({} points)", x.len())),
            (None, Some(y)) => out.push(format!("  {k}: only on B ({} points)", y.len())),
            (None, None) => {}
        }
    }
    let n = out.len();
    out.truncate(max);
    if n > max {
        out.push(format!("  … and {} more", n - max));
    }
    out.join("\n")
}

// ---------------------------------------------------------------------------------------------
// The test.
// ---------------------------------------------------------------------------------------------

/// Run phases, measured from the moment A and B are ready. A's first scrapes come ~5 s after
/// it starts (service discovery hands out targets at most every 5 s), so the storage holds about
/// 5 s of data at the first restart.
const GRACEFUL_RESTART_AT: Duration = Duration::from_secs(10);
const KILL_RESTART_AT: Duration = Duration::from_secs(20);
const RUN_FOR: Duration = Duration::from_secs(32);
/// Down time after the SIGKILL before the storage is started again.
const KILLED_FOR: Duration = Duration::from_millis(1500);
/// How far in the past of "now" the comparison time T lies: every scrape that started at or
/// before T has been committed to A's TSDB by then (scrape timeout 1 s).
const T_LAG_MS: i64 = 3000;

/// SIGTERM the storage and require a clean exit (status 0) within 30 s.
fn stop_cleanly(storage: &mut Proc) {
    let status = storage
        .kill_term(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", storage.log_tail()));
    assert!(
        status.success(),
        "{} exited with {status} on SIGTERM\n{}",
        storage.name(),
        storage.log_tail()
    );
}

/// Start the next generation of the storage in place of `storage` (kept in `retired` so its
/// log survives for failure reports); returns when it is ready, with the time in ms.
fn restart(peer: Peer, storage: &mut Proc, retired: &mut Vec<Proc>, dir: &Path, port: u16) -> i64 {
    let generation = retired.len() as u32 + 2;
    retired.push(std::mem::replace(
        storage,
        start_storage(peer, STORAGE, dir, port, generation),
    ));
    now_ms()
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// Wait (at most `timeout`) until B, i.e. the storage, returns an `up` sample of A's exporter
/// job newer than `since_ms`; returns its timestamp. Proves the storage holds data written by
/// the current run before it is restarted.
fn wait_storage_has_data(b: &mut Client, since_ms: i64, timeout: Duration, what: &str) -> i64 {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match query(b, "timestamp(up{job=\"exporter\"})", now_ms()) {
            Ok(m) => {
                let newest = m
                    .values()
                    .filter_map(|p| p.last())
                    .filter_map(|p| p.1.parse::<f64>().ok())
                    .map(|s| (s * 1000.0).round() as i64)
                    .max();
                if let Some(t) = newest.filter(|t| *t > since_ms) {
                    return t;
                }
                format!("newest up sample via B: {newest:?}, need > {since_ms}")
            }
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: the storage holds no `up` sample newer than {since_ms} after {timeout:?} ({last})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

peer_tests!(prometheus_remote_write_and_read_through_storage_restarts);

fn prometheus_remote_write_and_read_through_storage_restarts(peer: Peer) {
    let test_start = Instant::now();
    // Fails loudly, with install instructions, if this Prometheus is missing.
    peer.prometheus();
    // Declared first so it is dropped last: the guards below kill their processes first.
    let tmp = tempfile::Builder::new()
        .prefix("cairn-e2e-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let storage_dir = root.join("storage");
    fs::create_dir_all(&storage_dir).unwrap();
    let [storage_port, a_port, b_port, exporter_port] = free_ports(4)[..] else {
        unreachable!()
    };
    let storage_addr = format!("127.0.0.1:{storage_port}");
    let (a_addr, b_addr) = (format!("127.0.0.1:{a_port}"), format!("127.0.0.1:{b_port}"));
    eprintln!(
        "e2e: {peer}, storage {STORAGE:?} at {storage_addr}, A at {a_addr}, B at {b_addr}, logs in {}",
        root.display()
    );

    let exporter = Exporter::start(exporter_port);
    let mut storage = start_storage(peer, STORAGE, &storage_dir, storage_port, 1);
    // Earlier storage generations: kept so a failure prints their logs too.
    let mut retired: Vec<Proc> = Vec::new();

    // Prometheus A: scrapes itself and the exporter every second, remote-writes everything.
    // Fast queue: small batch deadline and backoffs so data flows within ~1 s and resumes
    // within ~1 s of the storage coming back; a short remote_timeout so a hung request cannot
    // stall a shard for the default 30 s.
    let a_config = PromConfig {
        scrape_interval: Some("1s".into()),
        scrape_targets: vec![
            ("prometheus".into(), a_addr.clone()),
            ("exporter".into(), exporter.addr.clone()),
        ],
        remote_write: vec![format!(
            "- url: http://{storage_addr}/api/v1/write\n  \
               remote_timeout: 5s\n  \
               queue_config:\n    \
                 capacity: 2500\n    \
                 max_samples_per_send: 500\n    \
                 batch_send_deadline: 1s\n    \
                 min_shards: 1\n    \
                 max_shards: 4\n    \
                 min_backoff: 50ms\n    \
                 max_backoff: 1s"
        )],
        remote_read: vec![],
    };
    // Prometheus B: nothing local; `read_recent: true` so even the newest data is read remotely.
    let b_config = PromConfig {
        scrape_interval: Some("1s".into()),
        scrape_targets: vec![],
        remote_write: vec![],
        remote_read: vec![format!(
            "- url: http://{storage_addr}/api/v1/read\n  read_recent: true\n  remote_timeout: 10s"
        )],
    };
    let a_yml = write_prometheus_yml(peer, root, "a.yml", &a_config.to_yaml());
    let b_yml = write_prometheus_yml(peer, root, "b.yml", &b_config.to_yaml());
    // Every sample of this run is at or after this.
    let first_ms = now_ms();
    let mut a = start_prometheus(
        peer,
        "prometheus-a",
        &a_yml,
        &root.join("a-data"),
        a_port,
        &[],
        root,
    )
    .unwrap();
    let mut b = start_prometheus(
        peer,
        "prometheus-b",
        &b_yml,
        &root.join("b-data"),
        b_port,
        &[],
        root,
    )
    .unwrap();
    for (p, addr) in [(&mut a, &a_addr), (&mut b, &b_addr)] {
        if let Err(e) = p.wait_ready(addr, "/-/ready", Duration::from_secs(30)) {
            panic!("{e}");
        }
    }
    let run_start = Instant::now();
    let mut ca = Client::new(a_addr.clone());
    let mut cb = Client::new(b_addr.clone());
    ca.set_timeout(Duration::from_secs(30));
    cb.set_timeout(Duration::from_secs(30));

    // --- Restart 1: graceful. --------------------------------------------------------------
    sleep_until(run_start + GRACEFUL_RESTART_AT);
    let seen = wait_storage_has_data(
        &mut cb,
        now_ms() - 3000,
        Duration::from_secs(15),
        "before the SIGTERM restart",
    );
    eprintln!(
        "e2e: t={:?} storage holds up to {seen}; SIGTERM",
        run_start.elapsed()
    );
    stop_cleanly(&mut storage);
    let restarted_1 = restart(peer, &mut storage, &mut retired, &storage_dir, storage_port);
    eprintln!(
        "e2e: t={:?} storage back after SIGTERM",
        run_start.elapsed()
    );

    // --- Restart 2: SIGKILL. ------------------------------------------------------------------
    sleep_until(run_start + KILL_RESTART_AT);
    // New data must have arrived after the first restart (A resumed writing).
    let seen = wait_storage_has_data(
        &mut cb,
        restarted_1.max(now_ms() - 3000),
        Duration::from_secs(15),
        "before the SIGKILL restart",
    );
    eprintln!(
        "e2e: t={:?} storage holds up to {seen}; SIGKILL",
        run_start.elapsed()
    );
    storage.kill_9().unwrap();
    std::thread::sleep(KILLED_FOR);
    let restarted_2 = restart(peer, &mut storage, &mut retired, &storage_dir, storage_port);
    eprintln!(
        "e2e: t={:?} storage back after SIGKILL",
        run_start.elapsed()
    );

    // --- Let A run on, then fix the comparison time T. --------------------------------------
    sleep_until(run_start + RUN_FOR);
    let t = now_ms() - T_LAG_MS;
    assert!(
        t > restarted_2 + 5000,
        "T must leave data written after the last restart to compare"
    );
    // Range covering every sample of the run: T - W lies before A's first sample.
    let window_ms = t - first_ms + 1000;
    let all = format!("{{__name__=~\".+\"}}[{window_ms}ms]");

    // A's side is final: A never restarts and every scrape at or before T is committed.
    let a_all = query(&mut ca, &all, t).unwrap();
    assert!(
        a_all.len() > 100,
        "A has only {} series in the window",
        a_all.len()
    );

    // --- Catch-up: B returns, for every series, A's newest sample at or before T. ------------
    let catch_up_start = Instant::now();
    let caught_up_deadline = catch_up_start + Duration::from_secs(30);
    loop {
        let b_all = match query(&mut cb, &all, t) {
            Ok(m) => m,
            Err(e) => {
                assert!(Instant::now() < caught_up_deadline, "B query failed: {e}");
                std::thread::sleep(Duration::from_millis(500));
                continue;
            }
        };
        let lagging: Vec<&String> = a_all
            .iter()
            .filter(|(k, pa)| {
                let newest_b = b_all.get(*k).and_then(|pb| pb.last()).map(|p| p.0);
                newest_b != pa.last().map(|p| p.0)
            })
            .map(|(k, _)| k)
            .collect();
        if lagging.is_empty() {
            // Nothing may come back that A does not have.
            assert!(
                b_all.keys().all(|k| a_all.contains_key(k)),
                "B returns series A does not have:\n{}",
                diff(&a_all, &b_all, 20)
            );
            break;
        }
        assert!(
            Instant::now() < caught_up_deadline,
            "the storage did not catch up with A within 30s: {} of {} series lack A's newest \
             sample at or before T={t} through B:\n{}",
            lagging.len(),
            a_all.len(),
            diff(&a_all, &b_all, 30)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "e2e: t={:?} caught up after {:?}",
        run_start.elapsed(),
        catch_up_start.elapsed()
    );

    // --- (a) Raw samples, series by series, through exact selectors. -----------------------
    // Every series A lists must come back from B with the identical (timestamp, value) list:
    // nothing acknowledged to A lost across the restarts, nothing extra, nothing changed. Each
    // query uses all of the series' labels as equality matchers, so the storage's matcher
    // handling (UTF-8, quotes, backslashes) is exercised, not just one regex.
    let listed = series(&mut ca, first_ms, t).unwrap();
    // Equality matchers do not exclude extra labels, so one selector can match several series;
    // collect what A returned per series so the totals below count each series once.
    let mut seen_on_a = Matrix::new();
    let mut mismatches = Vec::new();
    for labels in &listed {
        let sel = format!("{}[{window_ms}ms]", selector(labels));
        let ra = query(&mut ca, &sel, t).unwrap();
        let rb = query(&mut cb, &sel, t).unwrap();
        if ra != rb {
            mismatches.push(diff(&ra, &rb, 5));
        }
        seen_on_a.extend(ra);
    }
    let compared_series = seen_on_a.len();
    let compared_samples: usize = seen_on_a.values().map(Vec::len).sum();
    assert!(
        mismatches.is_empty(),
        "{} of {} series differ between A and the storage (via B):\n{}",
        mismatches.len(),
        listed.len(),
        mismatches[..mismatches.len().min(20)].join("\n")
    );
    // The per-series queries together covered exactly what the bulk query returned.
    assert!(
        seen_on_a == a_all,
        "per-series queries and the bulk query disagree on A:\n{}",
        diff(&seen_on_a, &a_all, 10)
    );
    // The awkward values really went through.
    for (sel, want) in [
        ("e2e_special{kind=\"nan\"}", "NaN"),
        ("e2e_special{kind=\"pos_inf\"}", "+Inf"),
        ("e2e_special{kind=\"neg_inf\"}", "-Inf"),
        ("e2e_special{kind=\"neg_zero\"}", "0"), // sign lost on the wire, see `point`
        ("e2e_constant", "42"),
    ] {
        let v = query_value(&mut cb, sel, t).unwrap();
        assert_eq!(v.as_deref(), Some(want), "{sel} via B at T");
    }

    // --- (b) Range queries, step 1s over the window. ------------------------------------------
    let range_start = first_ms - first_ms.rem_euclid(1000) + 1000;
    let mut range_points = 0;
    for expr in [
        "rate(e2e_requests_total[5s])",
        "sum by (job) (up)",
        "e2e_temperature_celsius",
        "e2e_special",
        "e2e_flapping",
        "histogram_quantile(0.9, rate(e2e_latency_seconds_bucket[5s]))",
        "prometheus_tsdb_head_series",
        "count by (job) ({__name__=~\".+\"})",
    ] {
        let ra = query_range(&mut ca, expr, range_start, t).unwrap();
        let rb = query_range(&mut cb, expr, range_start, t).unwrap();
        assert!(!ra.is_empty(), "range query {expr} is empty on A");
        assert!(
            ra == rb,
            "range query {expr} differs between A and B:\n{}",
            diff(&ra, &rb, 10)
        );
        range_points += ra.values().map(Vec::len).sum::<usize>();
    }

    // --- What the run went through. ------------------------------------------------------------
    let now = now_ms();
    let metric = |c: &mut Client, e: &str| query_value(c, e, now).unwrap().unwrap_or_default();
    let retried = metric(
        &mut ca,
        "sum(prometheus_remote_storage_samples_retried_total)",
    );
    let failed = metric(
        &mut ca,
        "sum(prometheus_remote_storage_samples_failed_total)",
    );
    let sent = metric(&mut ca, "sum(prometheus_remote_storage_samples_total)");
    // The restarts happened while A was writing: A had to retry sends.
    assert!(
        retried.parse::<f64>().is_ok_and(|r| r > 0.0),
        "A never retried a remote write (retried = {retried:?}): the restarts missed the stream"
    );
    // All of B's answers came from the storage: B's own head holds no series.
    let b_metrics = cb.get("/metrics").unwrap().text();
    let b_head_series = b_metrics
        .lines()
        .find_map(|l| l.strip_prefix("prometheus_tsdb_head_series "))
        .map(str::trim);
    assert_eq!(b_head_series, Some("0"), "B's own TSDB is not empty");
    assert!(
        exporter.scrapes() >= 20,
        "the exporter was scraped only {} times",
        exporter.scrapes()
    );
    eprintln!(
        "e2e: compared {compared_series} series / {compared_samples} raw samples (window {} ms, \
         T={t}) and {range_points} range-query points; A remote-write: samples sent {sent}, \
         retried {retried}, failed {failed}; exporter scrapes {}; storage generations {}",
        window_ms,
        exporter.scrapes(),
        retired.len() + 1
    );

    // --- Clean shutdown. The storage must exit 0 on SIGTERM. ------------------------------
    for p in [&mut a, &mut b] {
        p.kill_term(Duration::from_secs(20)).unwrap();
    }
    stop_cleanly(&mut storage);
    drop(retired);
    eprintln!("e2e: total {:?}", test_start.elapsed());
}

// ---------------------------------------------------------------------------------------------
// Native histograms: refused visibly, never acknowledged.
// ---------------------------------------------------------------------------------------------

/// The sum of every sample of `name` (any labels) in a classic-text exposition.
fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `(A's histograms failed, cairn's histograms refused)` from one scrape of each.
fn histogram_counts(a: &mut Client, cairn: &mut Client) -> (f64, f64) {
    let a_metrics = a.get("/metrics").unwrap().text();
    let cairn_metrics = cairn.get("/metrics").unwrap().text();
    (
        metric_sum(
            &a_metrics,
            "prometheus_remote_storage_histograms_failed_total",
        ),
        metric_sum(
            &cairn_metrics,
            "cairn_remote_write_histograms_rejected_total",
        ),
    )
}

/// Raw float samples of the regex `matchers` in `[start, end]` through a SAMPLES remote read of cairn.
fn cairn_samples(addr: &str, matchers: &[(&str, &str)], start: i64, end: i64) -> Matrix {
    use common::proto::{LabelMatcher, MatchType, Query, ReadRequest};
    let req = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: start,
            end_timestamp_ms: end,
            matchers: matchers
                .iter()
                .map(|(n, v)| LabelMatcher::new(MatchType::Re, *n, *v))
                .collect(),
            hints: None,
        }],
        accepted_response_types: vec![],
    };
    let r = Client::new(addr)
        .post(
            "/api/v1/read",
            &common::server::read_headers(),
            &common::proto::encode_read(&req),
        )
        .unwrap();
    assert_eq!(r.status, 200, "remote read of cairn: {}", r.text());
    let mut out = Matrix::new();
    for ts in &common::proto::decode_read_response(&r.body).results[0].timeseries {
        let labels = ts
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let points = ts
            .samples
            .iter()
            .map(|s| {
                let v = serde_json::json!([s.timestamp as f64 / 1000.0, go_float(s.value)]);
                point(&v).unwrap()
            })
            .collect();
        out.insert(selector(&labels), points);
    }
    out
}

/// A float as Prometheus's API prints it (`strconv.FormatFloat(v, 'f', -1, 64)`).
fn go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[test]
fn native_histograms_are_refused_visibly_while_floats_arrive_prometheus_3() {
    native_histograms_are_refused_visibly_while_floats_arrive(Peer::V3);
}

/// A Prometheus with native histograms on (`--enable-feature=native-histograms`; it scrapes
/// itself, and its own HTTP request-duration histograms are native) that sends them
/// (`send_native_histograms: true`) over remote write 1.0. cairn does not store histograms yet,
/// so no request carrying them may get a 2xx: the sender must count them in its own
/// `prometheus_remote_storage_histograms_failed_total` (a 400 is non-recoverable for it, so
/// nothing is retried), exactly as many as cairn counts refused, while the float samples of the
/// same requests are stored. Then cairn is opened on a copy of the sender's own directory, whose
/// WAL holds native-histogram records: the open log must name the records it skipped.
/// Prometheus 3.x only: 2.42 has the feature flag, but its own metrics carry no native
/// histograms, so it would have none to send.
fn native_histograms_are_refused_visibly_while_floats_arrive(peer: Peer) {
    peer.prometheus();
    let tmp = tempfile::Builder::new()
        .prefix("cairn-e2e-nh-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let [storage_port, a_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let storage_addr = format!("127.0.0.1:{storage_port}");
    let a_addr = format!("127.0.0.1:{a_port}");
    let storage_dir = root.join("storage");
    fs::create_dir_all(&storage_dir).unwrap();
    let mut storage = start_storage(peer, StorageKind::Cairn, &storage_dir, storage_port, 1);
    let a_config = PromConfig {
        scrape_interval: Some("1s".into()),
        scrape_targets: vec![("prometheus".into(), a_addr.clone())],
        remote_write: vec![format!(
            "- url: http://{storage_addr}/api/v1/write\n  \
               send_native_histograms: true\n  \
               queue_config:\n    \
                 batch_send_deadline: 1s\n    \
                 min_backoff: 50ms\n    \
                 max_backoff: 1s"
        )],
        remote_read: vec![],
    };
    let a_yml = write_prometheus_yml(peer, root, "a.yml", &a_config.to_yaml());
    let first_ms = now_ms();
    let mut a = start_prometheus(
        peer,
        "prometheus-a",
        &a_yml,
        &root.join("a-data"),
        a_port,
        &["--enable-feature=native-histograms"],
        root,
    )
    .unwrap();
    a.wait_ready(&a_addr, "/-/ready", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ca = Client::new(a_addr.clone());
    let mut cs = Client::new(storage_addr.clone());

    // A has native histograms, sends them, and sees them fail.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (failed, refused) = histogram_counts(&mut ca, &mut cs);
        if failed > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{peer} counted no failed histograms within 60 s (cairn refused {refused}); its \
             native histograms: {:?}",
            query(
                &mut ca,
                "count(prometheus_http_request_duration_seconds)",
                now_ms()
            )
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The two counts agree: every histogram cairn refused, A counts failed (no retries, no
    // loss hidden behind a 2xx). They move one request apart, so look between two requests.
    let deadline = Instant::now() + Duration::from_secs(30);
    let agreed = loop {
        let (_, before) = histogram_counts(&mut ca, &mut cs);
        let (failed, after) = histogram_counts(&mut ca, &mut cs);
        if before == failed && failed == after {
            break failed;
        }
        assert!(
            Instant::now() < deadline,
            "{peer} counts {failed} histograms failed, cairn {before}…{after} refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let a_metrics = ca.get("/metrics").unwrap().text();
    let retried = metric_sum(
        &a_metrics,
        "prometheus_remote_storage_histograms_retried_total",
    );
    assert_eq!(
        retried, 0.0,
        "{peer} retried histograms: a 400 must not be retried"
    );

    // The floats of the same requests are stored: cairn has every sample of these series that
    // A has up to T, bit for bit (as Prometheus prints them).
    let selector = [
        (
            "__name__",
            "up|scrape_samples_scraped|prometheus_build_info",
        ),
        ("job", "prometheus"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (t, want) = loop {
        let t = now_ms() - T_LAG_MS;
        let expr = format!(
            "{{__name__=~\"{}\",job=\"prometheus\"}}[{}ms]",
            selector[0].1,
            t - first_ms + 1000
        );
        let want = query(&mut ca, &expr, t).unwrap();
        if want.len() == 3 {
            break (t, want);
        }
        assert!(Instant::now() < deadline, "A's float series: {want:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = cairn_samples(&storage_addr, &selector, first_ms - 1000, t);
        if got == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cairn lacks float samples {peer} sent alongside its histograms:\n{}",
            diff(&want, &got, 10)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("e2e: {peer}: {agreed} histogram samples refused and counted failed by the sender");
    a.kill_term(Duration::from_secs(20)).unwrap();
    stop_cleanly(&mut storage);

    // cairn opened on A's directory: its WAL holds native histogram records, which this version
    // skips; the open log must say so rather than drop them silently.
    let migrated = root.join("migrated");
    fs::create_dir_all(migrated.join("data")).unwrap();
    for entry in fs::read_dir(root.join("a-data")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "lock" {
            continue;
        }
        copy_tree(
            &entry.path(),
            &migrated.join("data").join(entry.file_name()),
        );
    }
    let mut opened = start_storage(peer, StorageKind::Cairn, &migrated, storage_port, 2);
    let log = fs::read_to_string(opened.log_path()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("WAL records this version does not keep"))
        .unwrap_or_else(|| panic!("no warning about skipped histogram records:\n{log}"));
    assert!(
        !line.contains("histogram_records=0"),
        "the warning counts no histogram records: {line}"
    );
    stop_cleanly(&mut opened);
}

/// Copy a file or directory tree.
fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}
