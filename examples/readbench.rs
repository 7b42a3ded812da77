//! Streamed remote-read benchmark: the same blocks served by several servers (Prometheus 2.42
//! and cairn), one STREAMED_XOR_CHUNKS query matching every series, timed and RSS-sampled.
//!
//! Two steps, driven by `scripts/bench-read`:
//!
//! * `readbench gen` writes node_exporter-like series (the load generator's workload) as
//!   2h-aligned blocks with cairn's `BlockWriter`, chunks cut the way Prometheus 2.42's head
//!   cuts them, so that Prometheus and cairn are handed byte-identical data directories.
//! * `readbench query` sends the read requests round by round, alternating the servers, and
//!   checks every answer against the blocks' `meta.json` stats before comparing speeds.
//!
//! `cargo run --release --example readbench -- --help`

#[path = "loadgen/workload.rs"]
mod workload;
// `workload` builds its labels with these messages; the read path uses them too.
#[path = "loadgen/args.rs"]
mod args;
#[path = "loadgen/chunks.rs"]
mod chunks;
#[path = "../tests/common/proto.rs"]
mod proto;

use chunks::{cut_chunks, CutChunk};

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::model::Labels;
use cairn::tsdb::block::{BlockMeta, BlockWriter, ChunkData, Compaction, NewSeries, Ulid};
use cairn::tsdb::chunkenc::{Encoding, XorIterator};
use cairn::tsdb::head::range_for_timestamp;
use proto::{ChunkEncoding, LabelMatcher, MatchType, Query, ReadRequest, ResponseType};
use workload::{Config, Workload};

use args::{flag_pairs, num, usage, Error, Usage};

const USAGE: &str = "\
readbench: streamed remote-read benchmark (cairn vs Prometheus on the same blocks)

USAGE:
  readbench gen   --out DIR [--series N] [--hours H] [--end MS] [--seed N]
  readbench query --data DIR --server NAME:PID:URL [--server NAME:PID:URL …]
                  [--ranges 2h,8h] [--rounds N] [--warmup N] [--timeout DUR]

gen: write the data set as 2h blocks into DIR (which must not exist or be empty)
  --series N     number of series [10000]
  --hours H      hours of data, a multiple of 2 [8]
  --end MS       end of the data (exclusive), rounded down to a 2h boundary [now]
  --seed N       workload PRNG seed [1]

query: time one read request per server, range and round
  --data DIR     the data directory written by gen (its meta.json files give the expected
                 series and samples; the servers must serve copies of it)
  --server S     NAME:PID:URL, e.g. prometheus:1234:http://127.0.0.1:9090/api/v1/read;
                 PID is the server process whose VmRSS is sampled. The first server is the
                 baseline the others are compared with.
  --ranges LIST  query ranges ending at the end of the data, multiples of 2h [2h,8h]
  --rounds N     measured rounds per range; medians are reported [3]
  --warmup N     unmeasured rounds per range before those [1]
  --timeout DUR  per-request connect/read timeout [300s]

Exit status: 0 when every server returned every series and sample, 1 otherwise (the table is
printed either way), 2 on bad usage.
";

/// Prometheus's default block range, and the alignment of everything here.
const BLOCK_MS: i64 = 2 * 3600 * 1000;
const SCRAPE_MS: i64 = 15_000;
/// How often the server's RSS is sampled during a request.
const RSS_EVERY: Duration = Duration::from_millis(5);

const READ_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Accept-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("User-Agent", "Prometheus/2.42.0"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("gen") => parse_gen(&args[1..]).and_then(|a| match a {
            Some(a) => generate(&a).map(|()| true),
            None => Ok(true),
        }),
        Some("query") => parse_query(&args[1..]).and_then(|a| match a {
            Some(a) => query(&a),
            None => Ok(true),
        }),
        Some(other) => Err(usage(format!("unknown command {other:?} (see --help)"))),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.is::<Usage>() => {
            eprintln!("readbench: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("readbench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

/// `500ms`, `15s`, `2h`, … (a bare number is seconds).
fn duration_ms(flag: &str, s: &str) -> Result<i64, Error> {
    let (n, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    let n: i64 = n
        .parse()
        .map_err(|_| usage(format!("{flag}: bad duration {s:?}")))?;
    if n <= 0 {
        return Err(usage(format!("{flag}: duration {s:?} must be positive")));
    }
    Ok(n * mult)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn fmt_range(ms: i64) -> String {
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

// ---------------------------------------------------------------------------------------
// gen
// ---------------------------------------------------------------------------------------

struct GenArgs {
    out: PathBuf,
    series: usize,
    hours: i64,
    end_ms: i64,
    seed: u64,
}

fn parse_gen(args: &[String]) -> Result<Option<GenArgs>, Error> {
    let Some(pairs) = flag_pairs(args, USAGE, &[])? else {
        return Ok(None);
    };
    let mut a = GenArgs {
        out: PathBuf::new(),
        series: 10_000,
        hours: 8,
        end_ms: now_ms(),
        seed: 1,
    };
    for (flag, v) in &pairs {
        match flag.as_str() {
            "--out" => a.out = PathBuf::from(v),
            "--series" => a.series = num(flag, v)?,
            "--hours" => a.hours = num(flag, v)?,
            "--end" => a.end_ms = num(flag, v)?,
            "--seed" => a.seed = num(flag, v)?,
            other => return Err(usage(format!("gen: unknown flag {other:?} (see --help)"))),
        }
    }
    if a.out.as_os_str().is_empty() {
        return Err(usage("gen: --out is required"));
    }
    if a.series == 0 || a.hours <= 0 || a.hours % 2 != 0 {
        return Err(usage(
            "gen: --series must be positive and --hours a positive multiple of 2",
        ));
    }
    a.end_ms = a.end_ms.div_euclid(BLOCK_MS) * BLOCK_MS;
    Ok(Some(a))
}

fn generate(a: &GenArgs) -> Result<(), Error> {
    if a.out.exists()
        && fs::read_dir(&a.out)
            .map_err(|e| format!("reading {}: {e}", a.out.display()))?
            .next()
            .is_some()
    {
        return Err(format!("{} exists and is not empty", a.out.display()).into());
    }
    fs::create_dir_all(&a.out).map_err(|e| format!("creating {}: {e}", a.out.display()))?;
    let start_ms = a.end_ms - a.hours * 3_600_000;
    let t = Instant::now();
    let w = Workload::new(Config {
        series: a.series,
        interval_ms: SCRAPE_MS,
        rounds: (a.hours * 3_600_000 / SCRAPE_MS) as usize,
        start_ms,
        shards: 1,
        per_request: 1,
        seed: a.seed,
    });
    println!(
        "gen: {} series on {} targets ({:.2} labels/series avg), {} samples each every {} s, [{start_ms}, {}) — built in {:.1}s",
        w.series.len(),
        w.targets(),
        w.avg_labels(),
        w.cfg.rounds,
        SCRAPE_MS / 1000,
        a.end_ms,
        t.elapsed().as_secs_f64()
    );

    // Blocks want series in label-set order.
    let labels: Vec<Labels> = w
        .series
        .iter()
        .map(|s| {
            Labels::from_sorted_pairs(s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())))
        })
        .collect();
    let mut order: Vec<usize> = (0..w.series.len()).collect();
    order.sort_by(|&x, &y| labels[x].cmp(&labels[y]));

    let nblocks = (a.hours * 3_600_000 / BLOCK_MS) as usize;
    // per block, per series (in `order`): its chunks in that block
    let mut per_block: Vec<Vec<Vec<CutChunk>>> = (0..nblocks)
        .map(|_| (0..order.len()).map(|_| Vec::new()).collect())
        .collect();
    for (pos, &i) in order.iter().enumerate() {
        let target = w.series[i].target;
        let samples = (0..w.cfg.rounds).map(|k| (w.timestamp(k, target), w.value(i, k)));
        for c in cut_chunks(samples, BLOCK_MS) {
            let b = (c.mint - start_ms).div_euclid(BLOCK_MS);
            if b < 0 || b >= nblocks as i64 || range_for_timestamp(c.mint, BLOCK_MS) <= c.maxt {
                return Err(format!(
                    "internal error: chunk [{}, {}] of {} is outside the blocks",
                    c.mint, c.maxt, labels[i]
                )
                .into());
            }
            per_block[b as usize][pos].push(c);
        }
    }

    let writer = BlockWriter::default();
    let (mut samples, mut chunks, mut bytes) = (0u64, 0u64, 0u64);
    for (b, series_chunks) in per_block.iter().enumerate() {
        let mint = start_ms + b as i64 * BLOCK_MS;
        let input: Vec<NewSeries<'_>> = order
            .iter()
            .zip(series_chunks)
            .map(|(&i, cs)| NewSeries {
                labels: &labels[i],
                chunks: cs
                    .iter()
                    .map(|c| ChunkData {
                        mint: c.mint,
                        maxt: c.maxt,
                        encoding: Encoding::Xor.as_u8(),
                        data: &c.data,
                    })
                    .collect(),
            })
            .collect();
        let ulid = Ulid::generate_now().map_err(|e| format!("generating a ULID: {e}"))?;
        let meta = writer
            .write(
                &a.out,
                ulid,
                mint,
                mint + BLOCK_MS,
                Compaction::level1(ulid),
                &input,
            )
            .map_err(|e| format!("writing block [{mint}, {}): {e}", mint + BLOCK_MS))?;
        let size = dir_size(&a.out.join(ulid.to_string()))?;
        println!(
            "gen: block {ulid} [{mint}, {}): {} series, {} chunks, {} samples, {size} bytes",
            mint + BLOCK_MS,
            meta.stats.num_series,
            meta.stats.num_chunks,
            meta.stats.num_samples
        );
        samples += meta.stats.num_samples;
        chunks += meta.stats.num_chunks;
        bytes += size;
    }
    println!(
        "gen: {nblocks} blocks, {chunks} chunks, {samples} samples, {bytes} bytes ({:.2} B/sample) in {:.1}s",
        bytes as f64 / samples.max(1) as f64,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn dir_size(dir: &Path) -> Result<u64, Error> {
    let mut total = 0;
    for e in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let md = e
            .metadata()
            .map_err(|err| format!("stat {}: {err}", e.path().display()))?;
        total += if md.is_dir() {
            dir_size(&e.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------
// query
// ---------------------------------------------------------------------------------------

struct Server {
    name: String,
    pid: u32,
    /// host:port
    addr: String,
    path: String,
}

struct QueryArgs {
    data: PathBuf,
    servers: Vec<Server>,
    ranges: Vec<i64>,
    rounds: usize,
    warmup: usize,
    timeout: Duration,
}

/// Split `http://host:port/path` into ("host:port", "/path").
fn split_url(url: &str) -> Result<(String, String), Error> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| usage(format!("only http:// URLs are supported: {url:?}")))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/api/v1/read"),
    };
    if !hostport
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return Err(usage(format!("no host:port in {url:?}")));
    }
    Ok((hostport.to_string(), path.to_string()))
}

fn parse_query(args: &[String]) -> Result<Option<QueryArgs>, Error> {
    let Some(pairs) = flag_pairs(args, USAGE, &[])? else {
        return Ok(None);
    };
    let mut a = QueryArgs {
        data: PathBuf::new(),
        servers: Vec::new(),
        ranges: vec![2 * 3_600_000, 8 * 3_600_000],
        rounds: 3,
        warmup: 1,
        timeout: Duration::from_secs(300),
    };
    for (flag, v) in &pairs {
        match flag.as_str() {
            "--data" => a.data = PathBuf::from(v),
            "--server" => {
                let mut parts = v.splitn(3, ':');
                let (Some(name), Some(pid), Some(url)) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(usage(format!("--server {v:?}: want NAME:PID:URL")));
                };
                let (addr, path) = split_url(url)?;
                a.servers.push(Server {
                    name: name.to_string(),
                    pid: num("--server PID", pid)?,
                    addr,
                    path,
                });
            }
            "--ranges" => {
                a.ranges = v
                    .split(',')
                    .map(|r| duration_ms(flag, r.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "--rounds" => a.rounds = num(flag, v)?,
            "--warmup" => a.warmup = num(flag, v)?,
            "--timeout" => a.timeout = Duration::from_millis(duration_ms(flag, v)? as u64),
            other => return Err(usage(format!("query: unknown flag {other:?} (see --help)"))),
        }
    }
    if a.data.as_os_str().is_empty() || a.servers.is_empty() {
        return Err(usage(
            "query: --data and at least one --server are required",
        ));
    }
    if a.rounds == 0 || a.ranges.is_empty() {
        return Err(usage("query: --rounds and --ranges must not be empty"));
    }
    if let Some(r) = a.ranges.iter().find(|&&r| r % BLOCK_MS != 0) {
        return Err(usage(format!(
            "query: range {} is not a multiple of 2h (answers would hold partial chunks)",
            fmt_range(*r)
        )));
    }
    Ok(Some(a))
}

/// The blocks of the data set, from their meta.json files.
fn read_metas(dir: &Path) -> Result<Vec<BlockMeta>, Error> {
    let mut metas = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let e = e.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.parse::<Ulid>().is_err() {
            continue;
        }
        let path = e.path().join("meta.json");
        let b = fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        metas.push(BlockMeta::from_json(&b).map_err(|e| format!("{}: {e}", path.display()))?);
    }
    metas.sort_by_key(|m| m.min_time);
    Ok(metas)
}

/// What a complete answer to one query holds.
#[derive(Clone, Copy, Debug, Default)]
struct Expected {
    series: u64,
    samples: u64,
    chunks: u64,
}

/// `VmRSS` and `RssAnon` of `pid`, in KiB.
fn proc_mem(pid: u32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct it is given, which is large enough.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: zero-initialised, and filled in by the successful call.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One request's outcome.
#[derive(Clone, Debug, Default)]
struct Measurement {
    wall: Duration,
    body_bytes: u64,
    frames: u64,
    series: u64,
    chunks: u64,
    samples: u64,
    /// KiB: peak during the request minus the value right before it.
    rss_growth: u64,
    anon_growth: u64,
    /// CPU time this client spent receiving the answer (to see whether it limits the rate).
    client_cpu: Duration,
    /// Set when the request failed or the answer is malformed.
    error: Option<String>,
}

impl Measurement {
    fn samples_per_sec(&self) -> f64 {
        self.samples as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn mb_per_sec(&self) -> f64 {
        self.body_bytes as f64 / 1e6 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Largest response accepted.
const MAX_RESPONSE_BYTES: usize = 2 << 30;

/// A one-request-per-connection HTTP/1.1 client whose receive buffer lives across requests.
///
/// The timed part of a request is connect, send, and reading the raw response into the buffer
/// until the server closes the connection; headers and chunked framing are taken apart only
/// afterwards ([`RawClient::response`]). A fresh buffer per response (as `tests/common/http.rs`
/// allocates) costs the client a page fault per 4 KiB received, which at a few hundred MB/s
/// makes the client, not the server, the bottleneck on a 2-core machine.
struct RawClient {
    addr: String,
    timeout: Duration,
    /// `raw[..filled]` is the last response as received; `raw` is never shrunk.
    raw: Vec<u8>,
    filled: usize,
    body: Vec<u8>,
}

fn bad_response(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

impl RawClient {
    fn new(addr: String, timeout: Duration) -> RawClient {
        RawClient {
            addr,
            timeout,
            raw: Vec::new(),
            filled: 0,
            body: Vec::new(),
        }
    }

    /// Send a remote-read POST and receive the whole response.
    fn post(&mut self, path: &str, body: &[u8]) -> io::Result<()> {
        self.filled = 0;
        let sa = self
            .addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| bad_response(format!("no address for {}", self.addr)))?;
        let mut conn = TcpStream::connect_timeout(&sa, self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        conn.set_nodelay(true)?;
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.addr,
            body.len()
        );
        for (n, v) in READ_HEADERS {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        conn.write_all(&req)?;
        loop {
            if self.filled == self.raw.len() {
                if self.raw.len() >= MAX_RESPONSE_BYTES {
                    return Err(bad_response(format!(
                        "response larger than {MAX_RESPONSE_BYTES} bytes"
                    )));
                }
                let grow = (self.raw.len() * 2).max(4 << 20);
                self.raw.resize(grow, 0);
            }
            match conn.read(&mut self.raw[self.filled..]) {
                Ok(0) => return Ok(()),
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Status and Content-Type of the last response; its body (de-chunked) goes to `body()`.
    fn response(&mut self) -> io::Result<(u16, String)> {
        let raw = &self.raw[..self.filled];
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| bad_response("no end of the response header"))?;
        let head = String::from_utf8_lossy(&raw[..end]);
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad_response("bad status line"))?;
        let (mut ctype, mut chunked, mut length) = (String::new(), false, None);
        for l in lines {
            let Some((n, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            if n.eq_ignore_ascii_case("content-type") {
                ctype = v.to_string();
            } else if n.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.to_ascii_lowercase().contains("chunked");
            } else if n.eq_ignore_ascii_case("content-length") {
                length = v.parse::<usize>().ok();
            }
        }
        let mut rest = &raw[end + 4..];
        self.body.clear();
        if chunked {
            loop {
                let eol = rest
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .ok_or_else(|| bad_response("truncated chunk size line"))?;
                let line = String::from_utf8_lossy(&rest[..eol]);
                let hex = line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| bad_response(format!("bad chunk size line {line:?}")))?;
                rest = &rest[eol + 2..];
                if size == 0 {
                    break;
                }
                let data = rest
                    .get(..size)
                    .ok_or_else(|| bad_response("connection closed inside a chunk"))?;
                self.body.extend_from_slice(data);
                rest = rest.get(size + 2..).unwrap_or(&[]);
            }
        } else {
            let n = length.unwrap_or(rest.len());
            let data = rest
                .get(..n)
                .ok_or_else(|| bad_response("connection closed inside the body"))?;
            self.body.extend_from_slice(data);
        }
        Ok((status, ctype))
    }

    fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Send one request to `s` while sampling its RSS, then check and count the answer. With
/// `decode`, every chunk is also decoded and its samples checked against its header and time
/// range and against `[start, end]`.
fn measure(
    client: &mut RawClient,
    s: &Server,
    body: &[u8],
    (start, end): (i64, i64),
    decode: bool,
) -> Measurement {
    let mut m = Measurement::default();
    let base = proc_mem(s.pid);
    let stop = AtomicBool::new(false);
    let (resp, peak) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let mut peak = base.unwrap_or((0, 0));
            loop {
                // Read once more after the stop flag: the state at the end of the request.
                let last = stop.load(Ordering::Acquire);
                if let Some((rss, anon)) = proc_mem(s.pid) {
                    peak = (peak.0.max(rss), peak.1.max(anon));
                }
                if last {
                    break peak;
                }
                std::thread::sleep(RSS_EVERY);
            }
        });
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        let resp = client.post(&s.path, body);
        m.wall = t0.elapsed();
        m.client_cpu = thread_cpu().saturating_sub(cpu0);
        stop.store(true, Ordering::Release);
        (resp, sampler.join().ok())
    });
    match (base, peak) {
        (Some(b), Some(p)) => {
            m.rss_growth = p.0.saturating_sub(b.0);
            m.anon_growth = p.1.saturating_sub(b.1);
        }
        _ => {
            m.error = Some(format!("cannot read /proc/{}/status", s.pid));
        }
    }
    let (status, ctype) = match resp.and_then(|()| client.response()) {
        Ok(r) => r,
        Err(e) => {
            m.error = Some(format!("request failed: {e}"));
            return m;
        }
    };
    let body = client.body();
    m.body_bytes = body.len() as u64;
    if status != 200 {
        m.error = Some(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
        ));
        return m;
    }
    if !ctype.starts_with("application/x-streamed-protobuf") {
        m.error = Some(format!(
            "Content-Type {ctype:?}: not a STREAMED_XOR_CHUNKS answer"
        ));
        return m;
    }
    let frames = match proto::parse_chunked_frames(body) {
        Ok(f) => f,
        Err(e) => {
            m.error = Some(e);
            return m;
        }
    };
    m.frames = frames.len() as u64;
    // A series may be split over consecutive frames: count label sets, not entries.
    let mut seen: HashSet<Vec<(String, String)>> = HashSet::new();
    let mut problems: Vec<String> = Vec::new();
    for f in &frames {
        if f.query_index != 0 {
            problems.push(format!("frame for query_index {}", f.query_index));
        }
        for cs in &f.chunked_series {
            seen.insert(
                cs.labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
            );
            for c in &cs.chunks {
                m.chunks += 1;
                if c.r#type != ChunkEncoding::Xor as i32 {
                    problems.push(format!("chunk of type {}", c.r#type));
                    continue;
                }
                let n = match c.data.as_slice() {
                    [a, b, ..] => u16::from_be_bytes([*a, *b]),
                    _ => 0,
                };
                m.samples += u64::from(n);
                if decode {
                    if let Some(p) = check_chunk(c, n, start, end) {
                        problems.push(p);
                    }
                }
            }
        }
    }
    m.series = seen.len() as u64;
    if let Some(first) = problems.first() {
        m.error = Some(format!(
            "{} bad chunks/frames; first: {first}",
            problems.len()
        ));
    }
    m
}

/// Decode one chunk; describe what is wrong with it, if anything.
fn check_chunk(c: &proto::Chunk, n: u16, start: i64, end: i64) -> Option<String> {
    let mut it = match XorIterator::new(&c.data) {
        Ok(it) => it,
        Err(e) => return Some(format!("undecodable chunk: {e}")),
    };
    let (mut count, mut prev) = (0u32, i64::MIN);
    for (t, _) in it.by_ref() {
        if t <= prev || t < c.min_time_ms || t > c.max_time_ms {
            return Some(format!(
                "sample at {t} out of order or outside the chunk's [{}, {}]",
                c.min_time_ms, c.max_time_ms
            ));
        }
        if t < start || t > end {
            return Some(format!(
                "sample at {t} outside the query range [{start}, {end}]"
            ));
        }
        prev = t;
        count += 1;
    }
    if let Some(e) = it.err() {
        return Some(format!("chunk decode error: {e}"));
    }
    (count != u32::from(n)).then(|| format!("chunk header says {n} samples, decoded {count}"))
}

fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let k = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[k]
    } else {
        (xs[k - 1] + xs[k]) / 2.0
    }
}

/// Medians over a server's measured rounds for one range.
struct Summary {
    /// The first measured round's counts (all rounds must agree; see `consistent`).
    counts: Measurement,
    consistent: bool,
    error: Option<String>,
    wall_s: f64,
    samples_per_sec: f64,
    mb_per_sec: f64,
    rss_mib: f64,
    rss_max_mib: f64,
    anon_mib: f64,
    client_cpu_s: f64,
    /// ΔRSS and ΔRssAnon of the range's first (warm-up) request, if there was one.
    cold_mib: Option<(f64, f64)>,
}

impl Summary {
    fn of(ms: &[Measurement], cold: Option<Measurement>) -> Summary {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let first = ms.first().cloned().unwrap_or_default();
        Summary {
            consistent: ms.iter().all(|m| {
                (m.series, m.samples, m.chunks) == (first.series, first.samples, first.chunks)
            }),
            error: ms.iter().find_map(|m| m.error.clone()),
            wall_s: median(ms.iter().map(|m| m.wall.as_secs_f64()).collect()),
            samples_per_sec: median(ms.iter().map(Measurement::samples_per_sec).collect()),
            mb_per_sec: median(ms.iter().map(Measurement::mb_per_sec).collect()),
            rss_mib: median(ms.iter().map(|m| mib(m.rss_growth)).collect()),
            rss_max_mib: ms.iter().map(|m| mib(m.rss_growth)).fold(0.0, f64::max),
            anon_mib: median(ms.iter().map(|m| mib(m.anon_growth)).collect()),
            client_cpu_s: median(ms.iter().map(|m| m.client_cpu.as_secs_f64()).collect()),
            cold_mib: cold.map(|m| (mib(m.rss_growth), mib(m.anon_growth))),
            counts: first,
        }
    }

    /// Why this server's answers are not the complete data set (None: they are).
    fn incomplete(&self, want: &Expected) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("error: {e}"));
        }
        if !self.consistent {
            return Some("rounds returned different counts".into());
        }
        let c = &self.counts;
        if c.series != want.series || c.samples != want.samples {
            return Some(format!(
                "returned {} of {} series, {} of {} samples",
                c.series, want.series, c.samples, want.samples
            ));
        }
        None
    }
}

fn query(a: &QueryArgs) -> Result<bool, Error> {
    let metas = read_metas(&a.data)?;
    let (Some(first), Some(last)) = (metas.first(), metas.last()) else {
        return Err(format!("no blocks in {}", a.data.display()).into());
    };
    let (data_start, data_end) = (first.min_time, last.max_time);
    println!(
        "data: {} blocks in {}, [{data_start}, {data_end}) = {}, {} series, {} samples",
        metas.len(),
        a.data.display(),
        fmt_range(data_end - data_start),
        metas.iter().map(|m| m.stats.num_series).max().unwrap_or(0),
        metas.iter().map(|m| m.stats.num_samples).sum::<u64>()
    );

    let mut clients: Vec<RawClient> = a
        .servers
        .iter()
        .map(|s| RawClient::new(s.addr.clone(), a.timeout))
        .collect();
    // results[range][server]
    let mut results: Vec<(i64, Expected, Vec<Summary>)> = Vec::new();
    for &range in &a.ranges {
        let (start, end) = (data_end - range, data_end - 1);
        if start < data_start {
            return Err(format!(
                "range {} is longer than the data ({})",
                fmt_range(range),
                fmt_range(data_end - data_start)
            )
            .into());
        }
        // Every generated series is in every block, so a range's series are those of any of
        // its blocks; chunks and samples add up.
        let inside: Vec<&BlockMeta> = metas.iter().filter(|m| m.min_time >= start).collect();
        let want = Expected {
            series: inside.iter().map(|m| m.stats.num_series).max().unwrap_or(0),
            samples: inside.iter().map(|m| m.stats.num_samples).sum(),
            chunks: inside.iter().map(|m| m.stats.num_chunks).sum(),
        };
        let req = ReadRequest {
            queries: vec![Query {
                start_timestamp_ms: start,
                end_timestamp_ms: end,
                matchers: vec![LabelMatcher::new(MatchType::Re, "__name__", ".+")],
                hints: None,
            }],
            accepted_response_types: vec![ResponseType::StreamedXorChunks as i32],
        };
        let body = proto::encode_read(&req);
        println!(
            "\n== range {} [{start}, {end}]: {{__name__=~\".+\"}}, expecting {} series, {} chunks, {} samples",
            fmt_range(range),
            want.series,
            want.chunks,
            want.samples
        );
        let mut per_server: Vec<Vec<Measurement>> = a.servers.iter().map(|_| Vec::new()).collect();
        // The first (warm-up) request of the range: it also maps what the warm rounds find
        // resident already (block files, heap the server keeps).
        let mut first: Vec<Option<Measurement>> = a.servers.iter().map(|_| None).collect();
        for round in 0..a.warmup + a.rounds {
            let measured = round >= a.warmup;
            // Alternate who goes first so neither always runs right after the other.
            let n = a.servers.len();
            for k in 0..n {
                let i = (k + round) % n;
                let s = &a.servers[i];
                let decode = round == a.warmup;
                let m = measure(&mut clients[i], s, &body, (start, end), decode);
                println!(
                    "  {} {:>2} {:<12} {:>6} series {:>7} chunks {:>10} samples {:>7.1} MB {:>7.3} s {:>6.2} M samples/s {:>7.1} MB/s  ΔRSS {:>6.1} MiB (anon {:>6.1})  client CPU {:.3} s{}",
                    if measured { "round" } else { "warmup" },
                    if measured { round - a.warmup + 1 } else { round + 1 },
                    s.name,
                    m.series,
                    m.chunks,
                    m.samples,
                    m.body_bytes as f64 / 1e6,
                    m.wall.as_secs_f64(),
                    m.samples_per_sec() / 1e6,
                    m.mb_per_sec(),
                    m.rss_growth as f64 / 1024.0,
                    m.anon_growth as f64 / 1024.0,
                    m.client_cpu.as_secs_f64(),
                    m.error.as_deref().map(|e| format!("  ERROR {e}")).unwrap_or_default()
                );
                if measured {
                    per_server[i].push(m);
                } else if round == 0 {
                    first[i] = Some(m);
                }
            }
        }
        results.push((
            range,
            want,
            per_server
                .iter()
                .zip(first)
                .map(|(ms, f)| Summary::of(ms, f))
                .collect(),
        ));
    }

    report(a, &results)
}

fn report(a: &QueryArgs, results: &[(i64, Expected, Vec<Summary>)]) -> Result<bool, Error> {
    let base = &a.servers[0].name;
    println!(
        "\nStreamed remote read (STREAMED_XOR_CHUNKS, one query for all series), median of {} rounds after {} warm-up ({} CPUs)\n",
        a.rounds,
        a.warmup,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| range | server | series | samples | chunks | MB | wall s | M samples/s | MB/s | ΔRSS MiB median / max | ΔRssAnon MiB | first request ΔRSS / ΔRssAnon MiB | client CPU s | note |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut all_complete = true;
    for (range, want, sums) in results {
        for (s, sum) in a.servers.iter().zip(sums) {
            let c = &sum.counts;
            let note = match sum.incomplete(want) {
                Some(why) => {
                    all_complete = false;
                    format!("INCOMPLETE: {why}")
                }
                None => "complete".to_string(),
            };
            let cold = sum
                .cold_mib
                .map(|(r, an)| format!("{r:.1} / {an:.1}"))
                .unwrap_or_else(|| "–".into());
            println!(
                "| {} | {} | {} | {} | {} | {:.1} | {:.3} | {:.2} | {:.1} | {:.1} / {:.1} | {:.1} | {cold} | {:.3} | {note} |",
                fmt_range(*range),
                s.name,
                c.series,
                c.samples,
                c.chunks,
                c.body_bytes as f64 / 1e6,
                sum.wall_s,
                sum.samples_per_sec / 1e6,
                sum.mb_per_sec,
                sum.rss_mib,
                sum.rss_max_mib,
                sum.anon_mib,
                sum.client_cpu_s
            );
        }
    }

    if a.servers.len() > 1 {
        println!("\n| range | server | throughput vs {base} | ΔRSS MiB | ΔRSS MiB of {base} |");
        println!("|---|---|---:|---:|---:|");
        for (range, want, sums) in results {
            let b = &sums[0];
            for (s, sum) in a.servers.iter().zip(sums).skip(1) {
                // A ratio against, or of, an incomplete answer means nothing: say why instead.
                let ratio = match (b.incomplete(want), sum.incomplete(want)) {
                    (Some(_), _) => format!("n/a ({base} incomplete)"),
                    (None, Some(_)) => format!("n/a ({} incomplete)", s.name),
                    (None, None) => {
                        format!("{:.2}×", sum.samples_per_sec / b.samples_per_sec.max(1e-9))
                    }
                };
                println!(
                    "| {} | {} | {ratio} | {:.1} | {:.1} |",
                    fmt_range(*range),
                    s.name,
                    sum.rss_mib,
                    b.rss_mib
                );
            }
        }
    }

    println!();
    for (range, want, sums) in results {
        for (s, sum) in a.servers.iter().zip(sums) {
            let c = &sum.counts;
            println!(
                "RESULT range={} server={} complete={} series={} samples={} chunks={} bytes={} wall_s={:.4} samples_per_sec={:.0} mb_per_sec={:.2} rss_growth_mib={:.2} rss_growth_max_mib={:.2} anon_growth_mib={:.2} first_rss_growth_mib={:.2} client_cpu_s={:.4}",
                fmt_range(*range),
                s.name,
                sum.incomplete(want).is_none(),
                c.series,
                c.samples,
                c.chunks,
                c.body_bytes,
                sum.wall_s,
                sum.samples_per_sec,
                sum.mb_per_sec,
                sum.rss_mib,
                sum.rss_max_mib,
                sum.anon_mib,
                sum.cold_mib.map(|c| c.0).unwrap_or(f64::NAN),
                sum.client_cpu_s
            );
        }
    }

    // Say plainly who is incomplete, once per server.
    for (k, s) in a.servers.iter().enumerate() {
        let bad: Vec<(i64, String, u64)> = results
            .iter()
            .filter_map(|(range, want, sums)| {
                let sum = &sums[k];
                sum.incomplete(want)
                    .map(|why| (*range, why, sum.counts.series))
            })
            .collect();
        if bad.is_empty() {
            continue;
        }
        let ranges: Vec<String> = bad.iter().map(|(r, _, _)| fmt_range(*r)).collect();
        let what = if bad.iter().all(|(_, _, n)| *n == 0)
            && results.iter().all(|(_, _, sums)| sums[k].error.is_none())
        {
            format!(
                "returned no series at all although the data directory holds {} — it does not serve these blocks (yet?)",
                results.first().map(|(_, w, _)| w.series).unwrap_or(0)
            )
        } else {
            bad.iter()
                .map(|(r, why, _)| format!("{}: {why}", fmt_range(*r)))
                .collect::<Vec<_>>()
                .join("; ")
        };
        if k == 0 {
            println!(
                "\nNOTE: the baseline {} is incomplete for {} ({what}): no comparison is fair until it is complete.",
                s.name,
                ranges.join(", ")
            );
        } else {
            println!(
                "\nNOTE: {} is incomplete for {} ({what}); no ratio is computed for it.",
                s.name,
                ranges.join(", ")
            );
        }
    }
    Ok(all_complete)
}
