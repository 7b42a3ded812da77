//! cairn's remote-write load generator.
//!
//! Sends a node_exporter-like workload the way Prometheus 2.42 forwards it (one keep-alive
//! connection per shard, requests of N samples, same headers, same retry policy), measures
//! throughput and latency, and with `--verify` reads everything back through remote read.
//!
//! `cargo run --release --example loadgen -- --help`

#[path = "../../tests/common/http.rs"]
mod http;
#[path = "../../tests/common/proto.rs"]
mod proto;
mod workload;

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::{LabelMatcher, MatchType, Query, ReadRequest, ResponseType};
use workload::{Config, Encoded, Workload};

const USAGE: &str = "\
loadgen: Prometheus-like remote-write load generator

USAGE: loadgen [FLAGS]

FLAGS (default in brackets):
  --url URL            remote write endpoint [http://127.0.0.1:9201/api/v1/write]
  --read-url URL       remote read endpoint for --verify [the write URL with /api/v1/read]
  --series N           number of series [100000]
  --rounds N           scrape rounds, one sample per series each [10]
  --interval DUR       scrape interval, e.g. 15s, 500ms, 1m [15s]
  --start MS           timestamp of round 0 in ms since the epoch [now - rounds*interval]
  --shards N           concurrent shards, one connection each [8]
  --per-request N      samples per write request [2000]
  --seed N             PRNG seed [1]
  --timeout DUR        connect/read/write timeout per HTTP request [30s]
  --max-retries N      give up a request after N retries of 5xx/connection errors [20]
  --verify             read everything back (remote read, SAMPLES) and compare bit for bit [off]
  --help               print this help
";

struct Args {
    url: String,
    read_url: Option<String>,
    cfg: Config,
    start_set: bool,
    timeout: Duration,
    max_retries: u32,
    verify: bool,
}

fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let (num, mult) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000.0)
    } else {
        (s, 1000.0)
    };
    let x: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let ms = (x * mult).round();
    if ms.is_nan() || !(1.0..=1e15).contains(&ms) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(ms as i64)
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        url: "http://127.0.0.1:9201/api/v1/write".to_string(),
        read_url: None,
        cfg: Config::default(),
        start_set: false,
        timeout: Duration::from_secs(30),
        max_retries: 20,
        verify: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut val = |inline: Option<String>| -> Result<String, String> {
            inline
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        fn num<T: std::str::FromStr>(flag: &str, s: String) -> Result<T, String> {
            s.parse().map_err(|_| format!("{flag}: bad number {s:?}"))
        }
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--verify" => a.verify = true,
            "--url" => a.url = val(inline)?,
            "--read-url" => a.read_url = Some(val(inline)?),
            "--series" => a.cfg.series = num(&flag, val(inline)?)?,
            "--rounds" => a.cfg.rounds = num(&flag, val(inline)?)?,
            "--interval" => a.cfg.interval_ms = parse_duration_ms(&val(inline)?)?,
            "--start" => {
                a.cfg.start_ms = num(&flag, val(inline)?)?;
                a.start_set = true;
            }
            "--shards" => a.cfg.shards = num(&flag, val(inline)?)?,
            "--per-request" => a.cfg.per_request = num(&flag, val(inline)?)?,
            "--seed" => a.cfg.seed = num(&flag, val(inline)?)?,
            "--timeout" => {
                a.timeout = Duration::from_millis(parse_duration_ms(&val(inline)?)? as u64)
            }
            "--max-retries" => a.max_retries = num(&flag, val(inline)?)?,
            other => return Err(format!("unknown flag {other:?} (see --help)")),
        }
    }
    if a.cfg.series == 0 || a.cfg.rounds == 0 || a.cfg.shards == 0 || a.cfg.per_request == 0 {
        return Err("--series, --rounds, --shards and --per-request must be positive".into());
    }
    if !a.start_set {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        a.cfg.start_ms = now_ms - a.cfg.rounds as i64 * a.cfg.interval_ms;
    }
    Ok(Some(a))
}

/// Split `http://host:port/path` into ("host:port", "/path").
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url:?}"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(format!("no host in {url:?}"));
    }
    let hostport = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok((hostport, path.to_string()))
}

const WRITE_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("User-Agent", "Prometheus/2.42.0"),
    ("X-Prometheus-Remote-Write-Version", "0.1.0"),
];

const READ_HEADERS: &[(&str, &str)] = &[
    ("Content-Encoding", "snappy"),
    ("Accept-Encoding", "snappy"),
    ("Content-Type", "application/x-protobuf"),
    ("User-Agent", "Prometheus/2.42.0"),
    ("X-Prometheus-Remote-Read-Version", "0.1.0"),
];

/// Outcome of one request as seen by a shard.
struct Outcome {
    first_round: bool,
    samples: usize,
    ok: bool,
    /// Duration of the successful attempt.
    latency: Duration,
    retries: u32,
    /// Send start / end (end of the last attempt), relative to the run start.
    start: Duration,
    end: Duration,
}

#[derive(Default)]
struct ShardResult {
    outcomes: Vec<Outcome>,
    /// Why the first failed request failed (4xx body, or the last 5xx/connection error).
    first_error: Option<String>,
}

fn run_shard(
    addr: &str,
    path: &str,
    reqs: &[Encoded],
    t0: Instant,
    timeout: Duration,
    max_retries: u32,
) -> ShardResult {
    let mut client = http::Client::new(addr);
    client.set_timeout(timeout);
    let mut res = ShardResult::default();
    for r in reqs {
        let start = t0.elapsed();
        let mut retries = 0u32;
        let mut backoff = Duration::from_millis(30);
        let (ok, latency) = loop {
            let a = Instant::now();
            let outcome = client.post(path, WRITE_HEADERS, &r.body);
            let lat = a.elapsed();
            let (retry, last_err) = match outcome {
                Ok(resp) if (200..300).contains(&resp.status) => break (true, lat),
                Ok(resp) => (
                    resp.status >= 500,
                    format!("HTTP {}: {}", resp.status, resp.text().trim()),
                ),
                Err(e) => (true, format!("connection error: {e}")),
            };
            if !retry || retries >= max_retries {
                if res.first_error.is_none() {
                    res.first_error = Some(if retry {
                        format!("{last_err} (gave up after {retries} retries)")
                    } else {
                        last_err
                    });
                }
                break (false, lat);
            }
            retries += 1;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        res.outcomes.push(Outcome {
            first_round: r.first_round == 0,
            samples: r.samples,
            ok,
            latency,
            retries,
            start,
            end: t0.elapsed(),
        });
    }
    res
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Summary {
    samples: usize,
    wall: f64,
    rate: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    retries: u64,
    failed: u64,
    requests: usize,
}

fn summarize<'a>(outs: impl Iterator<Item = &'a Outcome>) -> Summary {
    let mut lat = Vec::new();
    let (mut samples, mut retries, mut failed, mut requests) = (0usize, 0u64, 0u64, 0usize);
    let (mut first, mut last) = (Duration::MAX, Duration::ZERO);
    for o in outs {
        requests += 1;
        retries += u64::from(o.retries);
        first = first.min(o.start);
        last = last.max(o.end);
        if o.ok {
            samples += o.samples;
            lat.push(o.latency.as_secs_f64() * 1000.0);
        } else {
            failed += 1;
        }
    }
    lat.sort_by(f64::total_cmp);
    let wall = if requests == 0 {
        0.0
    } else {
        last.saturating_sub(first).as_secs_f64()
    };
    Summary {
        samples,
        wall,
        rate: if wall > 0.0 {
            samples as f64 / wall
        } else {
            0.0
        },
        p50: pct(&lat, 0.50),
        p90: pct(&lat, 0.90),
        p99: pct(&lat, 0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
        retries,
        failed,
        requests,
    }
}

fn print_summary(title: &str, s: &Summary) {
    println!(
        "{title:<22} requests={:<6} samples={:<9} wall={:.3}s  rate={:.0} samples/s  latency ms p50={:.2} p90={:.2} p99={:.2} max={:.2}  retries={} failed={}",
        s.requests, s.samples, s.wall, s.rate, s.p50, s.p90, s.p99, s.max, s.retries, s.failed
    );
}

/// Escape a literal for use inside an RE2 regex.
fn regex_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

type LabelKey = Vec<(String, String)>;

fn key(labels: &[proto::Label]) -> LabelKey {
    let mut k: LabelKey = labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    k.sort();
    k
}

fn fmt_key(k: &LabelKey) -> String {
    let inner: Vec<String> = k.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Read everything back through remote read and compare. Returns the number of mismatches.
fn verify(w: &Workload, read_url: &str, timeout: Duration) -> Result<u64, String> {
    let (addr, path) = split_url(read_url)?;
    let mut client = http::Client::new(addr);
    client.set_timeout(timeout.max(Duration::from_secs(120)));
    let (start, end) = (w.cfg.start_ms, w.last_timestamp());
    let rounds = w.cfg.rounds;

    // family -> target -> series indices
    let mut by_family: HashMap<&str, Vec<Vec<usize>>> = HashMap::new();
    for (i, s) in w.series.iter().enumerate() {
        let per_target = by_family
            .entry(s.name())
            .or_insert_with(|| vec![Vec::new(); w.targets()]);
        per_target[s.target].push(i);
    }
    let mut families: Vec<&str> = by_family.keys().copied().collect();
    families.sort();

    let (mut matched, mut mismatched, mut queries, mut samples_read) = (0u64, 0u64, 0u64, 0u64);
    let mut details = 0;
    let report = |msg: String, details: &mut i32| {
        if *details < 10 {
            println!("  MISMATCH {msg}");
        }
        *details += 1;
    };
    let verify_start = Instant::now();
    for fam in families {
        let per_target = &by_family[fam];
        // Group targets so that a query returns at most ~1M samples and the regex stays short.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut cur: Vec<usize> = Vec::new();
        let mut cur_samples = 0usize;
        for (j, idx) in per_target.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            if !cur.is_empty() && (cur_samples + idx.len() * rounds > 1_000_000 || cur.len() >= 500)
            {
                groups.push(std::mem::take(&mut cur));
                cur_samples = 0;
            }
            cur.push(j);
            cur_samples += idx.len() * rounds;
        }
        if !cur.is_empty() {
            groups.push(cur);
        }
        for group in groups {
            let instances: Vec<String> = group
                .iter()
                .map(|&j| regex_escape(&format!("host-{j:04}:9100")))
                .collect();
            let req = ReadRequest {
                queries: vec![Query {
                    start_timestamp_ms: start,
                    end_timestamp_ms: end,
                    matchers: vec![
                        LabelMatcher::new(MatchType::Eq, "__name__", fam),
                        LabelMatcher::new(MatchType::Re, "instance", instances.join("|")),
                    ],
                    hints: None,
                }],
                accepted_response_types: vec![ResponseType::Samples as i32],
            };
            let resp = client
                .post(&path, READ_HEADERS, &proto::encode_read(&req))
                .map_err(|e| format!("remote read ({fam}): {e}"))?;
            queries += 1;
            if resp.status != 200 {
                return Err(format!(
                    "remote read ({fam}): HTTP {}: {}",
                    resp.status,
                    resp.text().trim()
                ));
            }
            let rr = proto::try_decode_read_response(&resp.body)?;
            if rr.results.len() != 1 {
                return Err(format!(
                    "remote read ({fam}): {} results for 1 query",
                    rr.results.len()
                ));
            }
            let mut expected: HashMap<LabelKey, usize> = HashMap::new();
            for &j in &group {
                for &i in &per_target[j] {
                    expected.insert(key(&w.series[i].labels), i);
                }
            }
            for ts in &rr.results[0].timeseries {
                let k = key(&ts.labels);
                samples_read += ts.samples.len() as u64;
                let Some(i) = expected.remove(&k) else {
                    mismatched += 1;
                    report(format!("unexpected series {}", fmt_key(&k)), &mut details);
                    continue;
                };
                let s = &w.series[i];
                let want: Vec<(i64, u64)> = (0..rounds)
                    .map(|r| (w.timestamp(r, s.target), w.value(i, r).to_bits()))
                    .collect();
                let got: Vec<(i64, u64)> = ts
                    .samples
                    .iter()
                    .map(|x| (x.timestamp, x.value.to_bits()))
                    .collect();
                if got == want {
                    matched += 1;
                } else {
                    mismatched += 1;
                    let first_diff = want
                        .iter()
                        .zip(&got)
                        .position(|(a, b)| a != b)
                        .unwrap_or(want.len().min(got.len()));
                    report(
                        format!(
                            "{}: {} samples back, {} sent; first difference at #{first_diff}: sent {:?}, got {:?}",
                            fmt_key(&k),
                            got.len(),
                            want.len(),
                            want.get(first_diff).map(|&(t, b)| (t, f64::from_bits(b))),
                            got.get(first_diff).map(|&(t, b)| (t, f64::from_bits(b))),
                        ),
                        &mut details,
                    );
                }
            }
            let mut missing: Vec<usize> = expected.into_values().collect();
            missing.sort_unstable();
            for i in missing {
                mismatched += 1;
                report(
                    format!("missing series {}", fmt_key(&key(&w.series[i].labels))),
                    &mut details,
                );
            }
        }
    }
    println!(
        "verify: {queries} read requests, {samples_read} samples read in {:.2}s; series matched={matched} mismatched={mismatched}",
        verify_start.elapsed().as_secs_f64()
    );
    Ok(mismatched)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    let (addr, path) = split_url(&args.url)?;
    let read_url = match &args.read_url {
        Some(u) => u.clone(),
        None => {
            let base = args
                .url
                .strip_suffix("/api/v1/write")
                .ok_or_else(|| format!("cannot derive --read-url from {:?}; pass it", args.url))?;
            format!("{base}/api/v1/read")
        }
    };

    // Build and encode everything before timing starts.
    let t = Instant::now();
    let w = Workload::new(args.cfg.clone());
    let plan = w.plan();
    let built = t.elapsed();
    let t = Instant::now();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(plan.len())
        .max(1);
    let mut encoded: Vec<Vec<Encoded>> = Vec::with_capacity(plan.len());
    std::thread::scope(|sc| {
        let chunks: Vec<_> = plan
            .chunks(plan.len().div_ceil(threads))
            .map(|shards| {
                let w = &w;
                sc.spawn(move || {
                    shards
                        .iter()
                        .map(|b| b.iter().map(|b| w.encode(b)).collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in chunks {
            match h.join() {
                Ok(v) => encoded.extend(v),
                Err(_) => encoded.clear(),
            }
        }
    });
    if encoded.len() != plan.len() {
        return Err("an encoding thread panicked".into());
    }
    let total_bytes: usize = encoded.iter().flatten().map(|e| e.body.len()).sum();
    let total_samples: usize = encoded.iter().flatten().map(|e| e.samples).sum();
    let nreq: usize = encoded.iter().map(Vec::len).sum();
    println!(
        "workload: {} series on {} targets ({:.2} labels/series avg, {} families), {} rounds every {} ms from {}, seed {}",
        w.series.len(),
        w.targets(),
        w.avg_labels(),
        w.families().len(),
        w.cfg.rounds,
        w.cfg.interval_ms,
        w.cfg.start_ms,
        w.cfg.seed
    );
    println!(
        "encoded: {nreq} requests, {total_samples} samples, {total_bytes} bytes snappy ({:.1} B/sample) over {} shards; built in {:.2}s, encoded in {:.2}s",
        total_bytes as f64 / total_samples.max(1) as f64,
        w.cfg.shards,
        built.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    println!("sending to http://{addr}{path} …");

    let t0 = Instant::now();
    let results: Vec<ShardResult> = std::thread::scope(|sc| {
        let hs: Vec<_> = encoded
            .iter()
            .map(|reqs| {
                let (addr, path) = (&addr, &path);
                sc.spawn(move || run_shard(addr, path, reqs, t0, args.timeout, args.max_retries))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let wall = t0.elapsed();
    let outs: Vec<&Outcome> = results.iter().flat_map(|r| &r.outcomes).collect();
    if outs.len() != nreq {
        return Err(format!(
            "{} of {nreq} requests unaccounted for (a shard thread panicked)",
            nreq - outs.len()
        ));
    }
    let first = summarize(outs.iter().copied().filter(|o| o.first_round));
    let steady = summarize(outs.iter().copied().filter(|o| !o.first_round));
    let mut all = summarize(outs.iter().copied());
    all.wall = wall.as_secs_f64();
    all.rate = all.samples as f64 / all.wall.max(1e-9);
    print_summary("first round (create)", &first);
    print_summary("steady rounds", &steady);
    print_summary("all", &all);
    if let Some(msg) = results.iter().find_map(|r| r.first_error.as_deref()) {
        println!("first failed request: {msg}");
    }
    println!(
        "RESULT samples_per_sec={:.1} p50_ms={:.3} p99_ms={:.3} failed={} retries={}",
        all.rate, all.p50, all.p99, all.failed, all.retries
    );

    let mut ok = all.failed == 0;
    if args.verify {
        match verify(&w, &read_url, args.timeout) {
            Ok(0) => println!("verify: OK"),
            Ok(n) => {
                println!("verify: FAILED ({n} mismatched series)");
                ok = false;
            }
            Err(e) => {
                println!("verify: ERROR {e}");
                ok = false;
            }
        }
    }
    Ok(ok)
}
