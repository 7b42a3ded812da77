//! Blocks, head compaction and migration against the real Prometheus binaries (`prometheus` and
//! `promtool`), each test once per peer: 2.42 and 3.x (`common::peer`; a missing one fails with
//! how to install it, these tests never skip). Every test has its own temp dirs and free ports;
//! every process is killed on drop.
//!
//! 1. [`promtool_reads_cairns_blocks_wal_and_head_chunks`]: cairn with 1 h blocks and a 1 s
//!    housekeeping interval is fed 4.5 h of known data through remote write; its head compaction
//!    must cut exactly the aligned ranges Prometheus's rule gives. `promtool tsdb dump` of a copy
//!    of the live data dir, then `tsdb list` / `analyze` / `dump` of the stopped one, must show
//!    exactly the acknowledged samples, with block ranges and stats matching the data. Remote
//!    read of the running cairn and of a restarted one must return every sample bit for bit.
//! 2. [`prometheus_queries_cairns_data_dir`]: Prometheus started on a copy of that data dir
//!    answers PromQL (raw selectors over the whole range at the push step, `sum by`, `count`)
//!    with the values the pushed data implies.
//! 3. [`cairn_serves_blocks_promtool_created`]: blocks made by `promtool tsdb create-blocks-from
//!    openmetrics` are served by remote read, SAMPLES bit for bit and STREAMED_XOR_CHUNKS with
//!    the chunks exactly as stored in promtool's chunk files.
//! 4. `cairn_opens_prometheus_data_dir_*`: a data dir Prometheus wrote (blocks from its own
//!    head compaction, WAL, mmapped `chunks_head/`, and in one variant a WAL checkpoint) copied
//!    after SIGTERM or SIGKILL: cairn started on it returns, through remote read, exactly what
//!    Prometheus acknowledged. `cairn_replays_prometheus_*` read only the range after
//!    Prometheus's newest block, which WAL, checkpoint and chunks_head alone must provide.
//!
//! The contract for cairn's head compaction (tests 1 and 2): with `--storage.tsdb.housekeeping-
//! interval` ticking, while the head spans more than 1.5 block ranges
//! (`--storage.tsdb.min-block-duration`), the aligned range holding its oldest sample becomes a
//! block `<ULID>/`, the head is truncated and a WAL checkpoint written. Blocks in the data dir are
//! opened at start and served by remote read merged with the head.
//!
//! Details these tests rely on:
//! - -0.0 cannot be pushed: prost (like Prometheus's gogo marshaller) omits a zero `double`, so
//!   the server receives +0. Only the OpenMetrics path (test 3) carries -0.0.
//! - `promtool tsdb dump` prints `{labels} %g ts`: Go's shortest round-trip float, so parsed
//!   values compare bit for bit, except NaN (every payload prints "NaN").
//! - The HTTP API renders values with `strconv.FormatFloat(v, 'f', -1, 64)` ("NaN", "+Inf",
//!   "-Inf", all digits otherwise): compared bit for bit except NaN. 2.42's lookback is
//!   inclusive: at `t` a series has the newest sample in `[t - 5m, t]`; 3.x's is left-open,
//!   `(t - 5m, t]`.
//! - Prometheus cuts a block from its head (as cairn must) when the head spans more than 1.5
//!   ranges: `compactable()` is checked on every appender commit, so a remote write that crosses
//!   the threshold triggers the compaction at once. Each compaction run truncates the WAL, which
//!   starts a new segment; the fourth one finds enough segments to write a checkpoint (2.42 has
//!   no flag for small segments: `--storage.tsdb.wal-segment-size` must be 10MB..256MB).
//!
//! To check tests 1 and 2 themselves, set [`STORAGE`] to [`Storage::PrometheusReceiver`]: they
//! pass with Prometheus standing in for cairn.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::tsdb::chunkenc::XorIterator;
use common::http::{urlencode, Client};
use common::om::{parse_openmetrics, Series, GO_NAN};
use common::peer::Peer;
use common::procs::{
    free_port, free_ports, start_prometheus, write_prometheus_yml, Proc, PromConfig,
};
use common::proto::{
    self, Label, LabelMatcher, MatchType, Query, ReadRequest, ResponseType, Sample, TimeSeries,
    WriteRequest,
};
use common::server::{read_headers, write_headers};

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
/// The block range every test gives cairn and Prometheus.
const BLOCK_RANGE: i64 = HOUR;
/// Push step of the generated data.
const STEP: i64 = 30 * SEC;
/// Series in the generated data.
const SERIES: usize = 50;
/// Time window of one remote-write request.
const BATCH: i64 = 10 * MIN;
/// PromQL's default lookback delta.
const LOOKBACK: i64 = 5 * MIN;
/// cairn's flags for head compaction in tests 1 and 2.
const COMPACTION_FLAGS: [&str; 4] = [
    "--storage.tsdb.min-block-duration=1h",
    // Head blocks only (as the Prometheus stand-in): merges are test 5's subject, and whether
    // one happens within the test depends on where now falls in a 3h range.
    "--storage.tsdb.max-block-duration=1h",
    "--storage.tsdb.housekeeping-interval=1s",
    "--storage.tsdb.wal-sync=never",
];

type LabelSet = Vec<(String, String)>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// The data.
// ---------------------------------------------------------------------------------------------

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.next() as f64 / (1u64 << 53) as f64
    }
}

/// [`SERIES`] series on a 30 s grid from `start` to `end` (both on the grid), pushed in time
/// order. Three kinds: integer counters (so sums are exact in any order), irregular gauges over
/// nine decades, and special values (Go's NaN payload, ±Inf, 1e300, 5e-324, f64::MAX, …; no
/// stale markers, no -0.0). Irregular in time too: every tenth series has ms jitter, some have
/// 20-minute gaps, one ends after 90 minutes (lives in the oldest blocks only) and one starts 2 h
/// before the end (lives in the newest block and the head only).
fn generate(start: i64, end: i64) -> Series {
    let mut rng = Lcg(0x00c0_ffee);
    let mut out = Series::new();
    for i in 0..SERIES {
        let name = [
            "compat_requests_total",
            "compat_temperature",
            "compat_special",
        ][i % 3];
        let labels: LabelSet = vec![
            ("__name__".to_string(), name.to_string()),
            ("instance".to_string(), format!("host-{i:02}")),
            ("job".to_string(), ["api", "db"][i % 2].to_string()),
        ];
        let mut counter = 0u64;
        let mut samples = Vec::new();
        let mut k = 0i64;
        let mut grid = start;
        while grid <= end {
            let skip = (i == SERIES - 1 && grid < end - 2 * HOUR)
                || (i == SERIES - 2 && grid > start + 90 * MIN)
                || (i % 10 == 7 && ((grid - start) / (20 * MIN)) % 4 == 1);
            let t = if i % 10 == 9 {
                grid + (k * 37) % 1000
            } else {
                grid
            };
            if !skip && t <= end {
                let v = match i % 3 {
                    0 => {
                        counter += rng.below(100);
                        counter as f64
                    }
                    1 => (rng.unit() - 0.5) * 10f64.powi(rng.below(9) as i32 - 3),
                    _ => match rng.below(10) {
                        0 => f64::from_bits(GO_NAN),
                        1 => f64::INFINITY,
                        2 => f64::NEG_INFINITY,
                        3 => 1e300,
                        4 => 5e-324,
                        5 => f64::MAX,
                        6 => -12.5,
                        7 => 0.1 + 0.2,
                        _ => k as f64 / 3.0,
                    },
                };
                samples.push((t, v.to_bits()));
            }
            grid += STEP;
            k += 1;
        }
        if !samples.is_empty() {
            out.insert(labels, samples);
        }
    }
    out
}

/// Oldest and newest timestamp of `data`.
fn time_range(data: &Series) -> (i64, i64) {
    let ts = data.values().flatten().map(|s| s.0);
    (ts.clone().min().unwrap(), ts.max().unwrap())
}

fn total_samples(data: &Series) -> usize {
    data.values().map(Vec::len).sum()
}

/// Block ranges head compaction has cut once the head held `data` up to `maxt`, by Prometheus's
/// rule (cairn's contract): while the head spans more than 1.5 ranges, the aligned range holding
/// its oldest sample becomes a block and the head then starts at its next sample.
fn expected_blocks(data: &Series, maxt: i64) -> Vec<(i64, i64)> {
    let mut times: Vec<i64> = data
        .values()
        .flatten()
        .map(|s| s.0)
        .filter(|&t| t <= maxt)
        .collect();
    times.sort_unstable();
    times.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < times.len() && maxt - times[i] > BLOCK_RANGE / 2 * 3 {
        let lo = times[i].div_euclid(BLOCK_RANGE) * BLOCK_RANGE;
        out.push((lo, lo + BLOCK_RANGE));
        i = times.partition_point(|&t| t < lo + BLOCK_RANGE);
    }
    out
}

/// Samples of `data` in `[lo, hi)`, and how many series have any.
fn stats_in(data: &Series, lo: i64, hi: i64) -> (u64, u64) {
    let mut samples = 0u64;
    let mut series = 0u64;
    for s in data.values() {
        let n = s.iter().filter(|x| x.0 >= lo && x.0 < hi).count() as u64;
        samples += n;
        series += u64::from(n > 0);
    }
    (samples, series)
}

/// `{a="b", c="d"}` as Go's `labels.Labels.String()` prints it (values here need no escapes).
fn go_labels(ls: &LabelSet) -> String {
    let inner: Vec<String> = ls.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn fmt_value(bits: u64) -> String {
    format!("{:?} ({bits:#018x})", f64::from_bits(bits))
}

fn is_nan(bits: u64) -> bool {
    f64::from_bits(bits).is_nan()
}

// ---------------------------------------------------------------------------------------------
// Comparing sample sets.
// ---------------------------------------------------------------------------------------------

/// How two values must agree.
#[derive(Clone, Copy)]
enum Exact {
    /// Same bits (remote read carries the stored bits).
    Bits,
    /// Same bits, except that any NaN equals any NaN (text output prints every NaN as "NaN").
    NanAsOne,
}

impl Exact {
    fn same(self, a: u64, b: u64) -> bool {
        a == b || (matches!(self, Exact::NanAsOne) && is_nan(a) && is_nan(b))
    }
}

/// `Ok` iff `got` holds exactly `want` (same series, same timestamps, values per `exact`).
/// Otherwise a report: series counts, missing / extra / changed / duplicated samples counted
/// by where they lie (`place(t)`, e.g. which block), and the first problems in detail.
fn diff(
    want: &Series,
    got: &Series,
    exact: Exact,
    place: &dyn Fn(i64) -> String,
) -> Result<(), String> {
    let mut missing: BTreeMap<String, usize> = BTreeMap::new();
    let mut extra: BTreeMap<String, usize> = BTreeMap::new();
    let mut changed: BTreeMap<String, usize> = BTreeMap::new();
    let mut duplicated = 0usize;
    let mut series_missing = 0usize;
    let mut series_extra = 0usize;
    let mut details = Vec::new();
    let mut note = |d: String| {
        if details.len() < 15 {
            details.push(d);
        }
    };
    let mut keys: Vec<&LabelSet> = want.keys().chain(got.keys()).collect();
    keys.sort();
    keys.dedup();
    for ls in keys {
        let name = go_labels(ls);
        let w = want.get(ls).map_or(&[][..], Vec::as_slice);
        let g = got.get(ls).map_or(&[][..], Vec::as_slice);
        if g.is_empty() && !w.is_empty() {
            series_missing += 1;
        }
        if w.is_empty() && !g.is_empty() {
            series_extra += 1;
        }
        let mut gm: BTreeMap<i64, u64> = BTreeMap::new();
        for &(t, b) in g {
            if gm.insert(t, b).is_some() {
                duplicated += 1;
                note(format!("{name} @{t}: returned more than once"));
            }
        }
        for &(t, wb) in w {
            match gm.remove(&t) {
                None => {
                    *missing.entry(place(t)).or_default() += 1;
                    note(format!("{name} @{t}: missing (want {})", fmt_value(wb)));
                }
                Some(gb) if !exact.same(wb, gb) => {
                    *changed.entry(place(t)).or_default() += 1;
                    note(format!(
                        "{name} @{t}: got {}, want {}",
                        fmt_value(gb),
                        fmt_value(wb)
                    ));
                }
                Some(_) => {}
            }
        }
        for (t, gb) in gm {
            *extra.entry(place(t)).or_default() += 1;
            note(format!("{name} @{t}: unexpected sample {}", fmt_value(gb)));
        }
    }
    if missing.is_empty() && extra.is_empty() && changed.is_empty() && duplicated == 0 {
        return Ok(());
    }
    let counts = |m: &BTreeMap<String, usize>| {
        if m.is_empty() {
            return "none".to_string();
        }
        m.iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(format!(
        "{} series / {} samples expected, {} series / {} samples returned \
         ({series_missing} series entirely missing, {series_extra} unexpected series)\n  \
         missing samples: {}\n  unexpected samples: {}\n  changed values: {}\n  \
         duplicated samples: {duplicated}\n  first problems:\n    {}",
        want.len(),
        total_samples(want),
        got.len(),
        total_samples(got),
        counts(&missing),
        counts(&extra),
        counts(&changed),
        details.join("\n    ")
    ))
}

// ---------------------------------------------------------------------------------------------
// Data directories.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct BlockInfo {
    ulid: String,
    min_time: i64,
    max_time: i64,
    samples: u64,
    series: u64,
    chunks: u64,
    dir: PathBuf,
}

fn is_ulid(name: &str) -> bool {
    name.len() == 26
        && name
            .bytes()
            .all(|b| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(&b))
}

/// The blocks of a data dir (`<ULID>/meta.json`), by min time. A ULID dir without a valid
/// `meta.json` is an error (blocks appear by an atomic rename, complete).
fn blocks_in(dir: &Path) -> Result<Vec<BlockInfo>, String> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_ulid(&name) {
            continue;
        }
        let meta_path = e.path().join("meta.json");
        let text = fs::read(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let m: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| format!("{}: bad JSON: {e}", meta_path.display()))?;
        let int = |v: &serde_json::Value, what: &str| {
            v.as_i64()
                .ok_or_else(|| format!("{}: no integer {what}: {m}", meta_path.display()))
        };
        let b = BlockInfo {
            ulid: name.clone(),
            min_time: int(&m["minTime"], "minTime")?,
            max_time: int(&m["maxTime"], "maxTime")?,
            samples: int(&m["stats"]["numSamples"], "stats.numSamples")? as u64,
            series: int(&m["stats"]["numSeries"], "stats.numSeries")? as u64,
            chunks: int(&m["stats"]["numChunks"], "stats.numChunks")? as u64,
            dir: e.path(),
        };
        if m["ulid"].as_str() != Some(name.as_str()) {
            return Err(format!(
                "{}: ulid {} differs from the directory name",
                meta_path.display(),
                m["ulid"]
            ));
        }
        out.push(b);
    }
    out.sort_by_key(|b| (b.min_time, b.max_time));
    Ok(out)
}

fn block_ranges(blocks: &[BlockInfo]) -> Vec<(i64, i64)> {
    blocks.iter().map(|b| (b.min_time, b.max_time)).collect()
}

/// Where a timestamp lies relative to `blocks`, for failure reports.
fn placer(blocks: &[BlockInfo]) -> impl Fn(i64) -> String + '_ {
    move |t| {
        if let Some(b) = blocks.iter().find(|b| t >= b.min_time && t < b.max_time) {
            return format!("in block {} [{}, {})", b.ulid, b.min_time, b.max_time);
        }
        match blocks.iter().map(|b| b.max_time).max() {
            None => "in the head (no blocks)".to_string(),
            Some(m) if t >= m => format!("in the head range (>= {m}, the newest block's end)"),
            Some(_) => "below the newest block's end but in no block".to_string(),
        }
    }
}

/// `dir`'s tree with file sizes, for failure reports.
fn listing(dir: &Path) -> String {
    fn walk(dir: &Path, prefix: &str, out: &mut String, budget: &mut usize) {
        let Ok(entries) = fs::read_dir(dir) else {
            let _ = write!(out, " <cannot read {}>", dir.display());
            return;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if *budget == 0 {
                out.push_str(" …");
                return;
            }
            *budget -= 1;
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            match e.metadata() {
                Ok(m) if m.is_dir() => {
                    let _ = write!(out, " {name}/");
                    walk(&e.path(), &format!("{name}/"), out, budget);
                }
                Ok(m) => {
                    let _ = write!(out, " {name}({})", m.len());
                }
                Err(_) => {
                    let _ = write!(out, " {name}(?)");
                }
            }
        }
    }
    let mut out = String::new();
    let mut budget = 80;
    walk(dir, "", &mut out, &mut budget);
    out
}

/// Copy a data dir, without its `lock`. Files that vanish while copying (a running server
/// deleting them) are skipped.
fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    let entries = match fs::read_dir(src) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => panic!("read_dir {}: {e}", src.display()),
    };
    for e in entries {
        let Ok(e) = e else { continue };
        let name = e.file_name();
        if name == "lock" {
            continue;
        }
        let (from, to) = (e.path(), dst.join(&name));
        match e.file_type() {
            Ok(t) if t.is_dir() => copy_dir(&from, &to),
            Ok(_) => match fs::copy(&from, &to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => panic!("copy {} → {}: {e}", from.display(), to.display()),
            },
            Err(_) => {}
        }
    }
}

/// Poll `check` every 100 ms until it answers `Ok`, for at most `timeout`; panics with `what`
/// and the last answer. Fails at once if `proc` exits meanwhile.
fn poll<T>(
    proc: &mut Proc,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        if let Some(status) = proc.try_wait().unwrap() {
            panic!(
                "{} exited ({status}) while waiting until {what}; last check: {last}",
                proc.name()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {timeout:?}; last check: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.
// ---------------------------------------------------------------------------------------------

/// Start cairn on `data` at 127.0.0.1:`port` with `extra` flags and wait (60 s) for `/-/ready`.
fn start_cairn(
    name: &str,
    data: &Path,
    port: u16,
    extra: &[&str],
    log_dir: &Path,
) -> Result<Proc, String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra);
    let mut p = Proc::spawn(name, cmd, log_dir).map_err(|e| e.to_string())?;
    p.wait_ready(
        &format!("127.0.0.1:{port}"),
        "/-/ready",
        Duration::from_secs(60),
    )?;
    Ok(p)
}

/// SIGTERM and require exit status 0 within 30 s.
fn stop_cleanly(p: &mut Proc) {
    let status = p
        .kill_term(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\n{}", p.log_tail()));
    assert!(
        status.success(),
        "{} exited with {status} on SIGTERM\n{}",
        p.name(),
        p.log_tail()
    );
}

/// Run the peer's promtool with `args` and `dir` last; stdout, or the status and stderr.
fn promtool(peer: Peer, args: &[&str], dir: &Path) -> Result<String, String> {
    let out = Command::new(peer.promtool())
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run promtool: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{peer}: promtool {} {} failed ({}):\n{}{}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("promtool output is not UTF-8: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Remote write and read.
// ---------------------------------------------------------------------------------------------

/// Push `data` through remote write to `addr` in time order, one request per [`BATCH`] window
/// holding every series' samples in it; each must get 204. `after` runs after each request
/// with the newest timestamp pushed so far.
fn push(addr: &str, data: &Series, mut after: impl FnMut(i64)) {
    let (mint, maxt) = time_range(data);
    let mut c = Client::new(addr);
    let mut from = mint;
    while from <= maxt {
        let to = from + BATCH;
        let mut newest = i64::MIN;
        let timeseries: Vec<TimeSeries> = data
            .iter()
            .filter_map(|(ls, ss)| {
                let samples: Vec<Sample> = ss
                    .iter()
                    .filter(|s| s.0 >= from && s.0 < to)
                    .map(|&(t, b)| Sample {
                        value: f64::from_bits(b),
                        timestamp: t,
                    })
                    .collect();
                newest = newest.max(samples.last()?.timestamp);
                Some(TimeSeries {
                    labels: ls.iter().map(|(n, v)| Label::new(n, v)).collect(),
                    samples,
                    ..TimeSeries::default()
                })
            })
            .collect();
        let req = WriteRequest {
            timeseries,
            ..WriteRequest::default()
        };
        let r = c
            .post(
                "/api/v1/write",
                &write_headers(),
                &proto::encode_write(&req),
            )
            .unwrap_or_else(|e| panic!("remote write of [{from}, {to}) to {addr}: {e}"));
        assert_eq!(
            r.status,
            204,
            "remote write of [{from}, {to}) to {addr}: {}",
            r.text()
        );
        if newest > i64::MIN {
            after(newest);
        }
        from = to;
    }
}

fn read_request(mint: i64, maxt: i64, streamed: bool) -> ReadRequest {
    ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: mint,
            end_timestamp_ms: maxt,
            matchers: vec![LabelMatcher::new(MatchType::Re, "__name__", ".+")],
            hints: None,
        }],
        accepted_response_types: if streamed {
            vec![ResponseType::StreamedXorChunks as i32]
        } else {
            vec![ResponseType::Samples as i32]
        },
    }
}

fn label_set(labels: &[Label]) -> LabelSet {
    labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

/// Every series in [mint, maxt] through a SAMPLES remote read. Errors on a failed request, a
/// series returned twice or out of label-set order.
fn read_samples(addr: &str, mint: i64, maxt: i64) -> Result<Series, String> {
    let r = Client::new(addr)
        .post(
            "/api/v1/read",
            &read_headers(),
            &proto::encode_read(&read_request(mint, maxt, false)),
        )
        .map_err(|e| format!("SAMPLES read: {e}"))?;
    if r.status != 200 {
        return Err(format!("SAMPLES read: status {}: {}", r.status, r.text()));
    }
    let resp = proto::try_decode_read_response(&r.body)?;
    if resp.results.len() != 1 {
        return Err(format!("{} results for 1 query", resp.results.len()));
    }
    let mut out = Series::new();
    let mut prev: Option<LabelSet> = None;
    for ts in &resp.results[0].timeseries {
        let ls = label_set(&ts.labels);
        if prev.as_ref().is_some_and(|p| *p >= ls) {
            return Err(format!(
                "SAMPLES: series {} after {} (not sorted, or twice)",
                go_labels(&ls),
                go_labels(prev.as_ref().unwrap())
            ));
        }
        prev = Some(ls.clone());
        out.insert(
            ls,
            ts.samples
                .iter()
                .map(|s| (s.timestamp, s.value.to_bits()))
                .collect(),
        );
    }
    Ok(out)
}

/// Every series in [mint, maxt] through a STREAMED_XOR_CHUNKS remote read: frames parsed (CRC
/// checked) and consecutive frames of one series merged. Errors on a failed request, a series
/// split over non-consecutive frames or out of label-set order.
fn read_chunks(
    addr: &str,
    mint: i64,
    maxt: i64,
) -> Result<Vec<(LabelSet, Vec<proto::Chunk>)>, String> {
    let r = Client::new(addr)
        .post(
            "/api/v1/read",
            &read_headers(),
            &proto::encode_read(&read_request(mint, maxt, true)),
        )
        .map_err(|e| format!("STREAMED read: {e}"))?;
    if r.status != 200 {
        return Err(format!("STREAMED read: status {}: {}", r.status, r.text()));
    }
    let ct = r.header("content-type").unwrap_or("");
    if !ct.starts_with("application/x-streamed-protobuf") {
        return Err(format!("STREAMED read answered with content-type {ct:?}"));
    }
    let mut out: Vec<(LabelSet, Vec<proto::Chunk>)> = Vec::new();
    for f in proto::parse_chunked_frames(&r.body)? {
        if f.query_index != 0 {
            return Err(format!("frame for query {} of 1", f.query_index));
        }
        for s in f.chunked_series {
            let ls = label_set(&s.labels);
            match out.last_mut() {
                Some((l, c)) if *l == ls => c.extend(s.chunks),
                Some((l, _)) if *l > ls => {
                    return Err(format!(
                        "STREAMED: series {} after {} (not sorted, or split over non-consecutive frames)",
                        go_labels(&ls),
                        go_labels(l)
                    ))
                }
                _ => out.push((ls, s.chunks)),
            }
        }
    }
    Ok(out)
}

/// Decode streamed chunks into samples; checks each chunk is XOR, decodes cleanly, has the
/// min/max time of its first/last sample, and that a series' chunks do not overlap.
fn decode_chunks(series: &[(LabelSet, Vec<proto::Chunk>)]) -> Result<Series, String> {
    let mut out = Series::new();
    for (ls, chunks) in series {
        let name = go_labels(ls);
        let mut samples = Vec::new();
        let mut prev_max = i64::MIN;
        for (i, c) in chunks.iter().enumerate() {
            if c.r#type != proto::ChunkEncoding::Xor as i32 {
                return Err(format!(
                    "{name} chunk {i}: encoding {} is not XOR",
                    c.r#type
                ));
            }
            let mut it = XorIterator::new(&c.data).map_err(|e| format!("{name} chunk {i}: {e}"))?;
            let decoded: Vec<(i64, u64)> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
            if let Some(e) = it.err() {
                return Err(format!("{name} chunk {i}: undecodable: {e}"));
            }
            let (Some(first), Some(last)) = (decoded.first(), decoded.last()) else {
                return Err(format!("{name} chunk {i}: empty"));
            };
            if (first.0, last.0) != (c.min_time_ms, c.max_time_ms) {
                return Err(format!(
                    "{name} chunk {i}: says [{}, {}] but holds [{}, {}]",
                    c.min_time_ms, c.max_time_ms, first.0, last.0
                ));
            }
            if c.min_time_ms <= prev_max {
                return Err(format!(
                    "{name} chunk {i}: starts at {} at or before the previous chunk's end {prev_max}",
                    c.min_time_ms
                ));
            }
            prev_max = c.max_time_ms;
            samples.extend(decoded);
        }
        out.insert(ls.clone(), samples);
    }
    Ok(out)
}

/// Read everything in [mint, maxt] from cairn both ways and compare bit for bit with `want`;
/// all problems of both reads in one message, prefixed with `what`.
fn check_remote_read(
    addr: &str,
    want: &Series,
    mint: i64,
    maxt: i64,
    blocks: &[BlockInfo],
    what: &str,
) {
    let place = placer(blocks);
    // Samples at or after the newest block's end are in no block: WAL segments, WAL checkpoint
    // and chunks_head alone must provide them, so a loss there is not about reading blocks.
    let head_from = blocks.iter().map(|b| b.max_time).max();
    let head_only = |s: &Series| -> Series {
        s.iter()
            .map(|(ls, ss)| {
                let h: Vec<(i64, u64)> = ss
                    .iter()
                    .copied()
                    .filter(|p| head_from.is_none_or(|m| p.0 >= m))
                    .collect();
                (ls.clone(), h)
            })
            .filter(|(_, ss)| !ss.is_empty())
            .collect()
    };
    let mut problems = Vec::new();
    let mut compare = |kind: &str, got: Result<Series, String>| match got {
        Ok(got) => {
            if let Err(e) = diff(want, &got, Exact::Bits, &place) {
                if let (Some(m), Err(h)) = (
                    head_from,
                    diff(&head_only(want), &head_only(&got), Exact::Bits, &place),
                ) {
                    problems.push(format!(
                        "{kind} read differs in the head range alone (t >= {m}, in no block: \
                         from the WAL, its checkpoint and chunks_head; not a block-reading \
                         problem): {h}"
                    ));
                }
                problems.push(format!("{kind} read differs from the data: {e}"));
            }
        }
        Err(e) => problems.push(format!("{kind} read failed: {e}")),
    };
    compare("SAMPLES", read_samples(addr, mint, maxt));
    compare(
        "STREAMED_XOR_CHUNKS",
        read_chunks(addr, mint, maxt).and_then(|c| decode_chunks(&c)),
    );
    assert!(
        problems.is_empty(),
        "{what} (blocks: {:?}):\n{}",
        block_ranges(blocks),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// promtool tsdb dump.
// ---------------------------------------------------------------------------------------------

/// Parse `{a="b", c="d"}` as Go prints it (values without escapes, as in this file's data).
fn parse_go_labels(s: &str) -> Result<LabelSet, String> {
    let inner = s
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .ok_or_else(|| format!("bad label set {s:?}"))?;
    let mut out = Vec::new();
    for pair in inner.split(", ").filter(|p| !p.is_empty()) {
        let (n, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("bad label pair {pair:?} in {s:?}"))?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains('\\'))
            .ok_or_else(|| format!("bad label value in {pair:?}"))?;
        out.push((n.to_string(), v.to_string()));
    }
    Ok(out)
}

fn parse_go_float(s: &str) -> Result<u64, String> {
    let v = match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().map_err(|e| format!("bad value {s:?}: {e}"))?,
    };
    Ok(v.to_bits())
}

/// `promtool tsdb dump` output (`{labels} %g ts` per sample) as a series map.
fn parse_dump(text: &str) -> Result<Series, String> {
    let mut out = Series::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.rsplitn(3, ' ');
        let (Some(t), Some(v), Some(ls)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("bad dump line {line:?}"));
        };
        let t: i64 = t
            .parse()
            .map_err(|e| format!("bad timestamp in {line:?}: {e}"))?;
        out.entry(parse_go_labels(ls)?)
            .or_default()
            .push((t, parse_go_float(v)?));
    }
    Ok(out)
}

/// Dump `dir` with the peer's promtool and require exactly `want` (NaN payloads aside).
fn check_dump(peer: Peer, dir: &Path, want: &Series, what: &str) {
    let blocks = blocks_in(dir).unwrap();
    let dump = promtool(peer, &["tsdb", "dump"], dir).unwrap_or_else(|e| {
        panic!(
            "{peer}: promtool tsdb dump of {what} failed: {e}\ndir:{}",
            listing(dir)
        )
    });
    let got =
        parse_dump(&dump).unwrap_or_else(|e| panic!("{peer}: promtool tsdb dump of {what}: {e}"));
    let result = diff(want, &got, Exact::NanAsOne, &placer(&blocks));
    if let Err(e) = result {
        panic!(
            "{peer}: promtool tsdb dump of {what} differs from the acknowledged samples (blocks {:?}): {e}\ndir:{}",
            block_ranges(&blocks),
            listing(dir)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// cairn with blocks of its own (tests 1 and 2).
// ---------------------------------------------------------------------------------------------

/// What tests 1 and 2 run as "cairn".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // the stand-in is kept for debugging the tests themselves
enum Storage {
    /// The `cairn` binary with [`COMPACTION_FLAGS`].
    Cairn,
    /// The peer's Prometheus with the remote-write receiver and 1h blocks: it compacts its head by the
    /// same rule (on commit rather than on a timer) and serves remote read, so tests 1 and 2
    /// pass against it; used to check the tests independently of cairn.
    PrometheusReceiver,
}

const STORAGE: Storage = Storage::Cairn;

/// Start the storage under test on `data` at 127.0.0.1:`port`, ready.
fn start_storage(
    peer: Peer,
    kind: Storage,
    name: &str,
    data: &Path,
    port: u16,
    log_dir: &Path,
) -> Proc {
    match kind {
        Storage::Cairn => {
            start_cairn(name, data, port, &COMPACTION_FLAGS, log_dir).unwrap_or_else(|e| {
                panic!(
                    "cairn does not start with head compaction configured ({}); an unknown flag \
                     exits 2 until head compaction lands: {e}",
                    COMPACTION_FLAGS.join(" ")
                )
            })
        }
        Storage::PrometheusReceiver => {
            let yml = write_prometheus_yml(
                peer,
                log_dir,
                &format!("{name}.yml"),
                &PromConfig::default().to_yaml(),
            );
            let mut p = start_prometheus(
                peer,
                name,
                &yml,
                data,
                port,
                &[
                    "--web.enable-remote-write-receiver",
                    "--storage.tsdb.min-block-duration=1h",
                    "--storage.tsdb.max-block-duration=1h",
                    "--storage.tsdb.retention.time=30d",
                ],
                log_dir,
            )
            .unwrap();
            let addr = format!("127.0.0.1:{port}");
            if let Err(e) = p.wait_ready(&addr, "/-/ready", Duration::from_secs(60)) {
                panic!("{e}");
            }
            p
        }
    }
}

struct CairnWithBlocks {
    cairn: Proc,
    addr: String,
    data_dir: PathBuf,
    data: Series,
    root: PathBuf,
    /// Last: removed after the process is killed.
    _tmp: tempfile::TempDir,
}

/// cairn with 1 h blocks and a 1 s housekeeping interval, fed 4.5 h of data ending now through
/// remote write, once its data dir holds exactly the blocks head compaction must cut (≥ 3).
fn cairn_with_blocks(peer: Peer, prefix: &str) -> CairnWithBlocks {
    let tmp = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data_dir = root.join("data");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cairn = start_storage(peer, STORAGE, "cairn", &data_dir, port, &root);

    // End on the 30 s grid, but not on a half hour: there the head's span would equal 1.5
    // ranges exactly after a compaction and the rule's strict ">" would decide alone.
    let mut end = now_ms().div_euclid(STEP) * STEP;
    if end.rem_euclid(HOUR) == 30 * MIN {
        end -= STEP;
    }
    let data = generate(end - 4 * HOUR - 30 * MIN, end);
    push(&addr, &data, |_| {});
    let (_, maxt) = time_range(&data);
    let want = expected_blocks(&data, maxt);
    assert!(want.len() >= 3, "test data too short: {want:?}");

    let started = Instant::now();
    poll(
        &mut cairn,
        Duration::from_secs(60),
        "cairn's head compaction (1h blocks, 1s housekeeping) writes >= 3 blocks for a head \
         spanning 4.5h",
        || {
            let b = blocks_in(&data_dir)?;
            if b.len() >= 3 {
                Ok(())
            } else {
                Err(format!(
                    "{} blocks; data dir:{}",
                    b.len(),
                    listing(&data_dir)
                ))
            }
        },
    );
    poll(
        &mut cairn,
        Duration::from_secs(30),
        "cairn's blocks are exactly the aligned 1h ranges Prometheus's rule cuts",
        || {
            let blocks = blocks_in(&data_dir)?;
            check_block_ranges(&blocks, &data, &want)
        },
    );
    eprintln!(
        "compat: {} blocks {:?} after {:?}",
        want.len(),
        want,
        started.elapsed()
    );
    CairnWithBlocks {
        cairn,
        addr,
        data_dir,
        data,
        root,
        _tmp: tmp,
    }
}

/// `blocks` are exactly the `want` ranges: each ends on its range's end and starts within its
/// range, not after its first sample (Prometheus starts the first block at the head's first
/// sample, later ones at the range start).
fn check_block_ranges(
    blocks: &[BlockInfo],
    data: &Series,
    want: &[(i64, i64)],
) -> Result<(), String> {
    let aligned: Vec<(i64, i64)> = blocks
        .iter()
        .map(|b| (b.min_time.div_euclid(BLOCK_RANGE) * BLOCK_RANGE, b.max_time))
        .collect();
    if aligned != want {
        return Err(format!(
            "blocks cover {:?} (as aligned ranges {aligned:?}), want exactly {want:?} (data {:?})",
            block_ranges(blocks),
            time_range(data)
        ));
    }
    for (b, &(lo, hi)) in blocks.iter().zip(want) {
        let first = data
            .values()
            .flatten()
            .map(|s| s.0)
            .filter(|&t| t >= lo && t < hi)
            .min()
            .unwrap_or(lo);
        if b.min_time < lo || b.min_time > first {
            return Err(format!(
                "block {} starts at {}, outside [{lo}, {first}] (range start, its first sample)",
                b.ulid, b.min_time
            ));
        }
    }
    Ok(())
}

/// One row of `promtool tsdb list`: BLOCK ULID, MIN TIME, MAX TIME, DURATION, NUM SAMPLES,
/// NUM CHUNKS, NUM SERIES, SIZE.
fn list_row<'a>(list: &'a str, ulid: &str) -> Option<Vec<&'a str>> {
    list.lines()
        .find(|l| l.starts_with(ulid))
        .map(|l| l.split_whitespace().collect())
}

// ---------------------------------------------------------------------------------------------
// Test 1.
// ---------------------------------------------------------------------------------------------

peer_tests!(promtool_reads_cairns_blocks_wal_and_head_chunks);

fn promtool_reads_cairns_blocks_wal_and_head_chunks(peer: Peer) {
    peer.promtool();
    let mut run = cairn_with_blocks(peer, "cairn-compat-promtool-");
    let (mint, maxt) = time_range(&run.data);

    // (a) While cairn runs: a copy of the live dir dumps to exactly the data, and cairn serves
    // all of it (old ranges from its blocks, merged with the head).
    let live = run.root.join("live-copy");
    copy_dir(&run.data_dir, &live);
    check_dump(
        peer,
        &live,
        &run.data,
        "a copy of the running cairn's data dir",
    );
    let blocks = blocks_in(&run.data_dir).unwrap();
    check_remote_read(
        &run.addr,
        &run.data,
        mint,
        maxt,
        &blocks,
        "the running cairn (its own blocks + head) does not serve exactly the acknowledged samples",
    );

    // (b) Stopped: list, analyze and dump.
    stop_cleanly(&mut run.cairn);
    let restart_copy = run.root.join("restart-copy");
    copy_dir(&run.data_dir, &restart_copy);
    let blocks = blocks_in(&run.data_dir).unwrap();
    let want = expected_blocks(&run.data, maxt);
    check_block_ranges(&blocks, &run.data, &want).unwrap_or_else(|e| panic!("after SIGTERM: {e}"));
    let list = promtool(peer, &["tsdb", "list"], &run.data_dir).unwrap_or_else(|e| panic!("{e}"));
    for b in &blocks {
        let row = list_row(&list, &b.ulid).unwrap_or_else(|| {
            panic!("promtool tsdb list does not show block {}:\n{list}", b.ulid)
        });
        assert!(row.len() >= 8, "short row {row:?} in:\n{list}");
        let lo = b.min_time.div_euclid(BLOCK_RANGE) * BLOCK_RANGE;
        let (samples, series) = stats_in(&run.data, lo, b.max_time);
        let fields = |i: usize| row[i].parse::<i64>().unwrap_or(-1);
        assert_eq!(
            (fields(1), fields(2)),
            (b.min_time, b.max_time),
            "promtool tsdb list: block {} min/max time:\n{list}",
            b.ulid
        );
        assert_eq!(
            b.max_time.rem_euclid(BLOCK_RANGE),
            0,
            "block {} max time {} is not on a 1h boundary",
            b.ulid,
            b.max_time
        );
        if b.min_time == lo {
            assert_eq!(row[3], "1h0m0s", "block {} duration:\n{list}", b.ulid);
        }
        assert_eq!(
            (fields(4) as u64, fields(6) as u64),
            (samples, series),
            "block {} [{lo}, {}): promtool tsdb list shows (samples, series) = ({}, {}), the data \
             pushed into that range has ({samples}, {series}):\n{list}",
            b.ulid,
            b.max_time,
            row[4],
            row[6]
        );
        let chunks = fields(5) as u64;
        assert!(
            chunks >= series && chunks <= samples,
            "block {}: {chunks} chunks for {series} series and {samples} samples (each series \
             needs >= 1 chunk, no chunk is empty):\n{list}",
            b.ulid
        );
    }
    let newest = blocks.last().unwrap();
    let analyze =
        promtool(peer, &["tsdb", "analyze"], &run.data_dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        analyze.contains(&format!("Block ID: {}", newest.ulid)),
        "promtool tsdb analyze does not analyze the newest block {}:\n{analyze}",
        newest.ulid
    );
    assert!(
        analyze.contains(&format!("Series: {}", newest.series)),
        "promtool tsdb analyze disagrees with meta.json ({} series):\n{analyze}",
        newest.series
    );
    check_dump(
        peer,
        &run.data_dir,
        &run.data,
        "cairn's data dir after SIGTERM",
    );

    // (c) cairn restarted on (a copy of) its own stopped dir serves everything.
    let port = free_port();
    let _restarted = start_storage(
        peer,
        STORAGE,
        "cairn-restarted",
        &restart_copy,
        port,
        &run.root,
    );
    check_remote_read(
        &format!("127.0.0.1:{port}"),
        &run.data,
        mint,
        maxt,
        &blocks,
        "cairn restarted on its own data dir does not serve exactly the acknowledged samples",
    );
}

// ---------------------------------------------------------------------------------------------
// Test 2.
// ---------------------------------------------------------------------------------------------

/// The newest sample of `samples` at `t` within the peer's lookback: 2.x looks back over
/// `[t - 5m, t]`, 3.x over `(t - 5m, t]` (Prometheus 3.0 made lookback and range selectors
/// left-open; the generated data has gaps of exactly 5 minutes, so the difference shows).
fn value_at(peer: Peer, samples: &[(i64, u64)], t: i64) -> Option<u64> {
    let i = samples.partition_point(|s| s.0 <= t);
    let s = samples.get(i.checked_sub(1)?)?;
    let within = match peer {
        Peer::V2 => s.0 >= t - LOOKBACK,
        Peer::V3 => s.0 > t - LOOKBACK,
    };
    within.then_some(s.1)
}

/// What `query_range(selector of every series, start, end, step)` returns.
fn model_range(peer: Peer, data: &Series, start: i64, end: i64, step: i64) -> Series {
    let mut out = Series::new();
    for (ls, samples) in data {
        let points: Vec<(i64, u64)> = (0..)
            .map(|j| start + j * step)
            .take_while(|&t| t <= end)
            .filter_map(|t| value_at(peer, samples, t).map(|v| (t, v)))
            .collect();
        if !points.is_empty() {
            out.insert(ls.clone(), points);
        }
    }
    out
}

fn label_of<'a>(ls: &'a LabelSet, name: &str) -> &'a str {
    ls.iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// What `sum by (job) (<metric>)` returns over the range (integer values: exact in any order).
fn model_sum_by_job(
    peer: Peer,
    data: &Series,
    metric: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Series {
    let mut sums: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (ls, samples) in data
        .iter()
        .filter(|(ls, _)| label_of(ls, "__name__") == metric)
    {
        let job = label_of(ls, "job").to_string();
        for t in (0..).map(|j| start + j * step).take_while(|&t| t <= end) {
            if let Some(v) = value_at(peer, samples, t) {
                *sums.entry(job.clone()).or_default().entry(t).or_default() += f64::from_bits(v);
            }
        }
    }
    sums.into_iter()
        .map(|(job, points)| {
            (
                vec![("job".to_string(), job)],
                points.into_iter().map(|(t, v)| (t, v.to_bits())).collect(),
            )
        })
        .collect()
}

/// Milliseconds as the API's seconds parameter, exactly.
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A successful API answer's `data`; warnings are failures.
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
        .map_err(|e| format!("GET {path_and_query}: bad JSON ({e})"))?;
    if v["status"] != "success" || v.get("warnings").is_some() {
        return Err(format!("GET {path_and_query}: {v}"));
    }
    Ok(v["data"].take())
}

/// A query result (matrix, or vector as one point per series) as a series map.
fn to_series(data: &serde_json::Value) -> Result<Series, String> {
    let mut out = Series::new();
    let point = |p: &serde_json::Value| -> Result<(i64, u64), String> {
        let ts = p[0].as_f64().ok_or_else(|| format!("bad point {p}"))?;
        let v = p[1].as_str().ok_or_else(|| format!("bad point {p}"))?;
        Ok(((ts * 1000.0).round() as i64, parse_go_float(v)?))
    };
    for s in data["result"].as_array().ok_or("no result array")? {
        let obj = s["metric"].as_object().ok_or("metric is not an object")?;
        let mut ls: LabelSet = obj
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        ls.sort();
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
        if out.insert(ls.clone(), points).is_some() {
            return Err(format!("series {} returned twice", go_labels(&ls)));
        }
    }
    Ok(out)
}

fn query_range(
    c: &mut Client,
    expr: &str,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Series, String> {
    let q = format!(
        "/api/v1/query_range?query={}&start={}&end={}&step={}",
        urlencode(expr),
        secs(start),
        secs(end),
        secs(step)
    );
    to_series(&api_get(c, &q)?)
}

fn query(c: &mut Client, expr: &str, t: i64) -> Result<Series, String> {
    let q = format!("/api/v1/query?query={}&time={}", urlencode(expr), secs(t));
    to_series(&api_get(c, &q)?)
}

peer_tests!(prometheus_queries_cairns_data_dir);

fn prometheus_queries_cairns_data_dir(peer: Peer) {
    peer.prometheus();
    let mut run = cairn_with_blocks(peer, "cairn-compat-prometheus-");
    stop_cleanly(&mut run.cairn);
    let copy = run.root.join("prometheus-data");
    copy_dir(&run.data_dir, &copy);
    let blocks = blocks_in(&copy).unwrap();
    let place = placer(&blocks);

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let yml = write_prometheus_yml(
        peer,
        &run.root,
        "prometheus.yml",
        &PromConfig::default().to_yaml(),
    );
    let mut prom = start_prometheus(
        peer,
        "prometheus",
        &yml,
        &copy,
        port,
        &["--storage.tsdb.retention.time=30d"],
        &run.root,
    )
    .unwrap();
    if let Err(e) = prom.wait_ready(&addr, "/-/ready", Duration::from_secs(60)) {
        panic!("{peer} does not start on a copy of cairn's data dir: {e}");
    }
    let mut c = Client::new(addr);
    let (start, end) = time_range(&run.data);
    let mut problems = Vec::new();

    // Raw values of every series at every push step over the whole range.
    let expr = r#"{__name__=~"compat_.+"}"#;
    match query_range(&mut c, expr, start, end, STEP) {
        Ok(got) => {
            if let Err(e) = diff(
                &model_range(peer, &run.data, start, end, STEP),
                &got,
                Exact::NanAsOne,
                &place,
            ) {
                problems.push(format!("query_range {expr} step 30s: {e}"));
            }
        }
        Err(e) => problems.push(e),
    }
    // An aggregation across series.
    let expr = "sum by (job) (compat_requests_total)";
    match query_range(&mut c, expr, start, end, STEP) {
        Ok(got) => {
            let want = model_sum_by_job(peer, &run.data, "compat_requests_total", start, end, STEP);
            if let Err(e) = diff(&want, &got, Exact::Bits, &place) {
                problems.push(format!("query_range {expr} step 30s: {e}"));
            }
        }
        Err(e) => problems.push(e),
    }
    // Series counts at instants in the oldest block, the newest block and the head.
    let expr = r#"count({__name__=~".+"})"#;
    for t in [start + 75 * MIN + 15 * SEC, end - 2 * HOUR + 15 * SEC, end] {
        let want = run
            .data
            .values()
            .filter(|s| value_at(peer, s, t).is_some())
            .count();
        match query(&mut c, expr, t) {
            Ok(got) => {
                let got: Vec<f64> = got
                    .values()
                    .flatten()
                    .map(|p| f64::from_bits(p.1))
                    .collect();
                if got != [want as f64] {
                    problems.push(format!(
                        "{expr} at {t} ({}): got {got:?}, want {want}",
                        place(t)
                    ));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    assert!(
        problems.is_empty(),
        "{peer} on a copy of cairn's data dir (blocks {:?}) answers PromQL differently \
         from the pushed data:\n{}",
        block_ranges(&blocks),
        problems.join("\n")
    );
    prom.kill_term(Duration::from_secs(30)).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Test 3.
// ---------------------------------------------------------------------------------------------

/// 2023-01-01T00:00:00Z, on a 2 h boundary.
const OM_BASE: i64 = 1_672_531_200_000;

/// An OpenMetrics file over 5.5 h from [`OM_BASE`] (promtool cuts 3 two-hour blocks): counters
/// with ms jitter, gauges over nine decades, special values (NaN, ±Inf, -0.0, 1e308, -5e-324,
/// the smallest normal), an irregular series absent from the middle block and one present only
/// in the last 40 minutes.
fn om_text() -> String {
    let mut rng = Lcg(7);
    let ts = |ms: i64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let fv = |v: f64| {
        if v.is_nan() {
            "NaN".to_string()
        } else if v == f64::INFINITY {
            "+Inf".to_string()
        } else if v == f64::NEG_INFINITY {
            "-Inf".to_string()
        } else {
            format!("{v:?}")
        }
    };
    let end = OM_BASE + 5 * HOUR + 30 * MIN;
    let mut s = String::new();
    s.push_str("# TYPE om_requests counter\n");
    for code in ["200", "500"] {
        let mut c = 0u64;
        let mut t = OM_BASE;
        while t < end {
            c += rng.below(50);
            let jt = t + rng.below(7) as i64;
            let _ = writeln!(
                s,
                "om_requests_total{{code=\"{code}\",job=\"api\"}} {} {}",
                fv(c as f64),
                ts(jt)
            );
            t += 15 * SEC;
        }
    }
    s.push_str("# TYPE om_temperature gauge\n");
    for room in ["cellar", "lab"] {
        let mut t = OM_BASE + 1;
        while t < end {
            let v = (rng.unit() - 0.5) * 10f64.powi(rng.below(9) as i32 - 3);
            let _ = writeln!(s, "om_temperature{{room=\"{room}\"}} {} {}", fv(v), ts(t));
            t += 15 * SEC;
        }
    }
    s.push_str("# TYPE om_special gauge\n");
    let special = [
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        1.5,
        -0.0,
        0.0,
        1e308,
        -5e-324,
        f64::MIN_POSITIVE,
    ];
    let mut t = OM_BASE + 7;
    let mut k = 0u64;
    while t < end {
        let v = if k.is_multiple_of(3) {
            k as f64
        } else {
            special[rng.below(special.len() as u64) as usize]
        };
        let _ = writeln!(s, "om_special {} {}", fv(v), ts(t));
        t += 15 * SEC;
        k += 1;
    }
    s.push_str("# TYPE om_irregular gauge\n");
    let mut t = OM_BASE + 1;
    while t < end {
        if !(OM_BASE + HOUR + 50 * MIN..OM_BASE + 4 * HOUR + 10 * MIN).contains(&t) {
            let v = (rng.below(7) as f64) * 0.25 - 0.5;
            let _ = writeln!(s, "om_irregular{{job=\"batch\"}} {} {}", fv(v), ts(t));
        }
        t += 1 + rng.below(60_000) as i64;
    }
    s.push_str("# TYPE om_late gauge\n");
    let mut t = end - 40 * MIN;
    while t < end {
        let _ = writeln!(s, "om_late {} {}", fv(rng.unit()), ts(t));
        t += 10 * SEC;
    }
    s.push_str("# EOF\n");
    s
}

/// A chunk as a block's chunk file stores it: uvarint length, encoding, data, CRC32C.
fn stored_chunk_record(c: &proto::Chunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(c.data.len() + 10);
    let mut n = c.data.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    let start = out.len();
    out.push(1); // XOR
    out.extend_from_slice(&c.data);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

peer_tests!(cairn_serves_blocks_promtool_created);

fn cairn_serves_blocks_promtool_created(peer: Peer) {
    let tmp = tempfile::Builder::new()
        .prefix("cairn-compat-om-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let om = om_text();
    let om_path = root.join("metrics.om");
    fs::write(&om_path, &om).unwrap();
    let data_dir = root.join("data");
    let out = Command::new(peer.promtool())
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om_path)
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool tsdb create-blocks-from openmetrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let want = parse_openmetrics(&om);
    let blocks = blocks_in(&data_dir).unwrap();
    assert!(
        blocks.len() >= 3,
        "promtool made {} blocks, the data spans three 2h ranges:{}",
        blocks.len(),
        listing(&data_dir)
    );
    assert_eq!(
        blocks.iter().map(|b| b.samples).sum::<u64>(),
        total_samples(&want) as u64,
        "promtool's blocks do not hold every sample of the OpenMetrics input"
    );
    // Block chunk files, for the byte-for-byte check: (block, file bytes).
    let mut chunk_files: Vec<(&BlockInfo, Vec<u8>)> = Vec::new();
    for b in &blocks {
        for f in fs::read_dir(b.dir.join("chunks")).unwrap() {
            chunk_files.push((b, fs::read(f.unwrap().path()).unwrap()));
        }
    }

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _cairn = start_cairn("cairn", &data_dir, port, &[], root)
        .unwrap_or_else(|e| panic!("cairn does not start on promtool's blocks: {e}"));
    let (mint, maxt) = time_range(&want);
    let place = placer(&blocks);
    let mut problems = Vec::new();
    // Bit for bit, -0.0 included: cairn writes every `double` but +0.0. (Prometheus 2.42's own
    // SAMPLES answer drops the sign of -0.0, its gogo marshaller omitting zero values; its
    // streamed answer, chunks as stored, keeps it.)
    match read_samples(&addr, mint, maxt) {
        Ok(got) => {
            if let Err(e) = diff(&want, &got, Exact::Bits, &place) {
                problems.push(format!(
                    "SAMPLES read differs from the OpenMetrics input: {e}"
                ));
            }
        }
        Err(e) => problems.push(e),
    }
    match read_chunks(&addr, mint, maxt) {
        Ok(series) => {
            match decode_chunks(&series) {
                Ok(got) => {
                    if let Err(e) = diff(&want, &got, Exact::Bits, &place) {
                        problems.push(format!(
                            "STREAMED_XOR_CHUNKS read differs from the OpenMetrics input: {e}"
                        ));
                    }
                }
                Err(e) => problems.push(e),
            }
            // Served straight: every chunk is a record of a chunk file of a block covering it.
            let mut served = 0u64;
            let mut not_stored = Vec::new();
            for (ls, chunks) in &series {
                for c in chunks {
                    served += 1;
                    let rec = stored_chunk_record(c);
                    let found = chunk_files.iter().any(|(b, bytes)| {
                        b.min_time <= c.min_time_ms
                            && c.max_time_ms < b.max_time
                            && bytes.windows(rec.len()).any(|w| w == rec)
                    });
                    if !found {
                        not_stored.push(format!(
                            "{} [{}, {}] ({} bytes)",
                            go_labels(ls),
                            c.min_time_ms,
                            c.max_time_ms,
                            c.data.len()
                        ));
                    }
                }
            }
            let stored: u64 = blocks.iter().map(|b| b.chunks).sum();
            if !not_stored.is_empty() {
                problems.push(format!(
                    "{} of {served} streamed chunks are not byte-for-byte a chunk of promtool's \
                     blocks (re-encoded or re-cut?), e.g. {}",
                    not_stored.len(),
                    not_stored[..not_stored.len().min(5)].join(", ")
                ));
            }
            if served != stored {
                problems.push(format!(
                    "streamed {served} chunks, promtool's blocks hold {stored}"
                ));
            }
        }
        Err(e) => problems.push(e),
    }
    assert!(
        problems.is_empty(),
        "cairn on blocks from promtool tsdb create-blocks-from (blocks {:?}):\n{}",
        block_ranges(&blocks),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Test 4.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Term,
    Kill,
}

/// What test 4 reads back from cairn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Everything pushed: blocks, WAL (and checkpoint) and chunks_head together.
    Everything,
    /// Only the range after Prometheus's newest block: WAL, checkpoint and chunks_head alone,
    /// no block reading needed.
    HeadRangeOnly,
}

/// Whether `<dir>/chunks_head/` holds a file with at least one chunk written: a non-zero byte
/// after the 8-byte header (Prometheus preallocates these files, zero-filled, to 128 KiB).
fn has_mmapped_chunks(dir: &Path) -> bool {
    fs::read_dir(dir.join("chunks_head")).is_ok_and(|es| {
        es.filter_map(Result::ok).any(|e| {
            fs::read(e.path()).is_ok_and(|b| b.get(8..).is_some_and(|r| r.iter().any(|&x| x != 0)))
        })
    })
}

fn checkpoints(dir: &Path) -> Vec<String> {
    fs::read_dir(dir.join("wal"))
        .map(|es| {
            es.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("checkpoint.") && !n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// The peer's Prometheus with 1h blocks is fed data spanning `span` (ending on an hour boundary +
/// 20 min, so the head holds > 120 samples per series and an mmapped chunk), waiting after
/// each remote write that makes its head compactable until the block is written (so every
/// compaction is its own run, with its own WAL truncation). Stopped with `stop`, its dir is
/// copied and cairn started on the copy must return exactly the pushed data (in the range
/// `read` says).
fn migrate(peer: Peer, stop: Stop, span: i64, want_checkpoint: bool, read: Read) {
    peer.prometheus();
    peer.promtool();
    let variant = format!(
        "{stop:?}, {}h{:02}m of data{}, reading {read:?}",
        span / HOUR,
        span % HOUR / MIN,
        if want_checkpoint {
            ", WAL checkpoint"
        } else {
            ""
        }
    );
    let tmp = tempfile::Builder::new()
        .prefix("cairn-compat-migrate-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let [prom_port, cairn_port] = free_ports(2)[..] else {
        unreachable!()
    };
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let prom_data = root.join("prometheus-data");
    let yml = write_prometheus_yml(
        peer,
        root,
        "prometheus.yml",
        &PromConfig::default().to_yaml(),
    );
    let mut prom = start_prometheus(
        peer,
        "prometheus",
        &yml,
        &prom_data,
        prom_port,
        &[
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.min-block-duration=1h",
            "--storage.tsdb.max-block-duration=1h",
            "--storage.tsdb.retention.time=30d",
        ],
        root,
    )
    .unwrap();
    if let Err(e) = prom.wait_ready(&prom_addr, "/-/ready", Duration::from_secs(60)) {
        panic!("{e}");
    }

    let aligned = (now_ms() - span).div_euclid(HOUR) * HOUR;
    let data = generate(aligned + 10 * MIN, aligned + span);
    let mut written = 0;
    push(&prom_addr, &data, |newest| {
        let want = expected_blocks(&data, newest).len();
        if want > written {
            poll(
                &mut prom,
                Duration::from_secs(30),
                &format!("Prometheus compacts its head into block {want}"),
                || {
                    let n = blocks_in(&prom_data)?.len();
                    if n >= want {
                        Ok(())
                    } else {
                        Err(format!("{n} blocks; dir:{}", listing(&prom_data)))
                    }
                },
            );
            written = want;
        }
    });
    let (_, maxt) = time_range(&data);
    let want_blocks = expected_blocks(&data, maxt);
    let blocks = blocks_in(&prom_data).unwrap();
    assert_eq!(
        block_ranges(&blocks)
            .iter()
            .map(|&(lo, hi)| (lo.div_euclid(HOUR) * HOUR, hi))
            .collect::<Vec<_>>(),
        want_blocks,
        "test setup: Prometheus's blocks are not the modelled ones; dir:{}",
        listing(&prom_data)
    );
    if want_checkpoint {
        assert!(
            !checkpoints(&prom_data).is_empty(),
            "test setup: Prometheus wrote no WAL checkpoint after {} head compactions; dir:{}",
            blocks.len(),
            listing(&prom_data)
        );
    }
    match stop {
        Stop::Term => stop_cleanly(&mut prom),
        Stop::Kill => {
            prom.kill_9().unwrap();
        }
    }
    let mmapped = has_mmapped_chunks(&prom_data);
    if stop == Stop::Term {
        assert!(
            mmapped,
            "test setup: Prometheus left no mmapped chunk in chunks_head/; dir:{}",
            listing(&prom_data)
        );
    }
    eprintln!(
        "compat: Prometheus dir ({variant}), mmapped head chunks on disk: {mmapped}:{}",
        listing(&prom_data)
    );

    let cairn_data = root.join("cairn-data");
    copy_dir(&prom_data, &cairn_data);
    // The oracle itself: Prometheus's dir holds every acknowledged sample.
    check_dump(
        peer,
        &prom_data,
        &data,
        &format!("Prometheus's own data dir ({variant}), test setup"),
    );

    let _cairn = start_cairn(
        "cairn",
        &cairn_data,
        cairn_port,
        &["--storage.tsdb.min-block-duration=1h"],
        root,
    )
    .unwrap_or_else(|e| panic!("cairn does not open a {peer} data dir ({variant}): {e}"));
    let (mut mint, maxt) = time_range(&data);
    let mut want = data;
    if read == Read::HeadRangeOnly {
        // Only what lies after the newest block: no block needed to answer.
        mint = blocks.iter().map(|b| b.max_time).max().unwrap();
        for s in want.values_mut() {
            s.retain(|p| p.0 >= mint);
        }
        want.retain(|_, s| !s.is_empty());
    }
    check_remote_read(
        &format!("127.0.0.1:{cairn_port}"),
        &want,
        mint,
        maxt,
        &blocks,
        &format!(
            "cairn on a {peer} data dir ({variant}; checkpoints {:?}) does not return \
             exactly what Prometheus acknowledged in [{mint}, {maxt}]",
            checkpoints(&cairn_data)
        ),
    );
}

peer_tests!(
    cairn_opens_prometheus_data_dir_after_sigterm,
    cairn_opens_prometheus_data_dir_after_sigkill,
    cairn_opens_prometheus_data_dir_with_wal_checkpoint,
    cairn_replays_prometheus_wal_and_chunks_head_after_sigkill,
    cairn_replays_prometheus_wal_checkpoint_and_chunks_head,
);

fn cairn_opens_prometheus_data_dir_after_sigterm(peer: Peer) {
    migrate(
        peer,
        Stop::Term,
        3 * HOUR + 20 * MIN,
        false,
        Read::Everything,
    );
}

fn cairn_opens_prometheus_data_dir_after_sigkill(peer: Peer) {
    migrate(
        peer,
        Stop::Kill,
        3 * HOUR + 20 * MIN,
        false,
        Read::Everything,
    );
}

fn cairn_opens_prometheus_data_dir_with_wal_checkpoint(peer: Peer) {
    migrate(
        peer,
        Stop::Term,
        5 * HOUR + 20 * MIN,
        true,
        Read::Everything,
    );
}

/// The head part of a migration on its own (no block reading needed), so it is checked
/// before block reading exists.
fn cairn_replays_prometheus_wal_and_chunks_head_after_sigkill(peer: Peer) {
    migrate(
        peer,
        Stop::Kill,
        3 * HOUR + 20 * MIN,
        false,
        Read::HeadRangeOnly,
    );
}

fn cairn_replays_prometheus_wal_checkpoint_and_chunks_head(peer: Peer) {
    migrate(
        peer,
        Stop::Term,
        5 * HOUR + 20 * MIN,
        true,
        Read::HeadRangeOnly,
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The housekeeping timer: leveled compaction and retention on a running cairn.
// ---------------------------------------------------------------------------------------------

peer_tests!(housekeeping_timer_merges_and_expires_blocks_and_promtool_agrees);

/// cairn with 1h blocks, 3h largest blocks and a 3h retention, fed 10h of data: the timer
/// merges head blocks into 3h blocks and drops what falls out of retention. Remote read then
/// serves exactly the samples of the blocks kept and the head; promtool lists the merged
/// blocks (level ≥ 2, parents gone) and dumps the same samples.
fn housekeeping_timer_merges_and_expires_blocks_and_promtool_agrees(peer: Peer) {
    let tmp = tempfile::Builder::new()
        .prefix("compat-hk")
        .tempdir()
        .unwrap();
    let root = tmp.path().to_path_buf();
    let data_dir = root.join("data");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cairn = start_cairn(
        "cairn",
        &data_dir,
        port,
        &[
            "--storage.tsdb.min-block-duration=1h",
            "--storage.tsdb.max-block-duration=3h",
            "--storage.tsdb.retention.time=3h",
            "--storage.tsdb.housekeeping-interval=1s",
            "--storage.tsdb.wal-sync=never",
        ],
        &root,
    )
    .unwrap();
    let end = now_ms() / STEP * STEP;
    let data = generate(end - 10 * HOUR, end);
    push(&addr, &data, |_| {});
    // Wait for a merged block, and for retention to leave at most ~3h of blocks behind the
    // newest block's end.
    let blocks = poll(
        &mut cairn,
        Duration::from_secs(60),
        "a merged block and retention applied",
        || {
            let blocks = blocks_in(&data_dir)?;
            let metas: Vec<serde_json::Value> = blocks
                .iter()
                .map(|b| {
                    serde_json::from_slice(&std::fs::read(b.dir.join("meta.json")).unwrap())
                        .unwrap()
                })
                .collect();
            let merged = metas
                .iter()
                .any(|m| m["compaction"]["level"].as_u64().unwrap_or(0) >= 2);
            let newest = blocks.iter().map(|b| b.max_time).max().unwrap_or(0);
            let expired = blocks.iter().all(|b| newest - b.max_time <= 3 * HOUR);
            if merged && expired && !blocks.is_empty() {
                Ok(blocks)
            } else {
                Err(format!("blocks {:?}", block_ranges(&blocks)))
            }
        },
    );
    for b in &blocks {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.dir.join("meta.json")).unwrap()).unwrap();
        for p in meta["compaction"]["parents"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let parent = p["ulid"].as_str().unwrap();
            assert!(
                !data_dir.join(parent).exists(),
                "parent {parent} of {} still on disk",
                b.ulid
            );
        }
    }
    // Everything from the oldest kept block on is served, nothing older.
    let oldest = blocks.iter().map(|b| b.min_time).min().unwrap();
    let kept: Series = data
        .iter()
        .map(|(ls, ss)| {
            let s: Vec<(i64, u64)> = ss.iter().copied().filter(|p| p.0 >= oldest).collect();
            (ls.clone(), s)
        })
        .filter(|(_, ss)| !ss.is_empty())
        .collect();
    check_remote_read(
        &addr,
        &kept,
        end - 11 * HOUR,
        end,
        &blocks,
        "after merges and retention",
    );
    stop_cleanly(&mut cairn);
    let list = promtool(peer, &["tsdb", "list"], &data_dir).unwrap();
    for b in &blocks_in(&data_dir).unwrap() {
        let row = list_row(&list, &b.ulid)
            .unwrap_or_else(|| panic!("promtool tsdb list lacks {}:\n{list}", b.ulid));
        assert_eq!(
            row.get(1).copied(),
            Some(b.min_time.to_string().as_str()),
            "{row:?}"
        );
        assert_eq!(
            row.get(2).copied(),
            Some(b.max_time.to_string().as_str()),
            "{row:?}"
        );
    }
    check_dump(
        peer,
        &data_dir,
        &kept,
        "cairn's merged and expired data dir",
    );
}
