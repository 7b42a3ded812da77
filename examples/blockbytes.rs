//! Bytes per sample in blocks: cairn's engine vs `promtool tsdb create-blocks-from openmetrics`
//! (Prometheus 2.42), fed the same samples. Driven by `scripts/bench-blocks`:
//!
//! 1. `blockbytes gen-om` writes the load generator's node_exporter-like workload as an
//!    OpenMetrics file (series grouped by family, samples of a series in time order, `# EOF`);
//! 2. promtool turns it into blocks;
//! 3. `blockbytes cairn` parses the same file (with the OpenMetrics parser's conversions, so
//!    the samples are bit-for-bit those promtool stored) and appends it to a cairn `Db` scrape by
//!    scrape, then compacts the head and closes the `Db`;
//! 4. `blockbytes compare` matches the two sets of blocks by time range and compares sizes.
//!
//! Apples to apples: promtool 2.42 (`cmd/promtool/backfill.go` `createBlocks`) cuts the input
//! into 2h-aligned ranges (its hidden `--max-block-duration` only ever makes them longer), but
//! each block's `minTime`/`maxTime` are its first sample and last sample + 1 (`BlockWriter.Flush`
//! uses the head's bounds), never the range bounds cairn's compaction writes. So blocks are
//! matched by the 2h range they fall in, not by `(minTime, maxTime)`; a match also needs the
//! same series and sample counts, or it is reported and left out. cairn compacts only head
//! ranges older than 1.5× the block range, so its newest range stays in the head (and
//! promtool's block for it is unmatched): generate at least 4h to compare one block, 6h for two.
//! Sizes are apparent file sizes (`chunks/*`, `index`, and the whole directory with meta.json
//! and tombstones).
//!
//! `cargo run --release --example blockbytes -- --help`

#[path = "loadgen/workload.rs"]
mod workload;
// `workload` builds its labels with these messages.
#[path = "loadgen/args.rs"]
mod args;
#[path = "../tests/common/proto.rs"]
mod proto;

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cairn::tsdb::block::{BlockMeta, Ulid};
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{AppendSeries, Db, Options, Sample};
use workload::{Config, Workload};

use args::{usage, Error, Usage};

const USAGE: &str = "\
blockbytes: bytes per sample in cairn's blocks vs promtool's, for the same samples

USAGE:
  blockbytes gen-om  --out FILE [--series N] [--hours H] [--start MS] [--seed N]
  blockbytes cairn   --om FILE --dir DIR [--block-range DUR]
  blockbytes compare --promtool DIR --cairn DIR [--block-range DUR]

gen-om: write an OpenMetrics file for `promtool tsdb create-blocks-from openmetrics`
  --series N        number of series [2000]
  --hours H         hours of data at a 15 s scrape interval [6]
  --start MS        first scrape round, rounded down to a block boundary
                    [the boundary H hours before the last one before now]
  --seed N          workload PRNG seed [1]

cairn: append the file's samples to a cairn Db in DIR (a new directory), timestamp by
timestamp as scrapes arrive, then Db::compact and Db::close
  --block-range DUR block range (Options::block_range_ms) [2h]

compare: match the blocks of both directories by block range and compare their sizes
  --block-range DUR the range blocks are aligned to [2h]

Exit status: compare exits 1 when no block matches or counts differ, 2 on bad usage.
";

const SCRAPE_MS: i64 = 15_000;
const DEFAULT_RANGE_MS: i64 = 2 * 3600 * 1000;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first().map(String::as_str) else {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    };
    let result = match flag_map(&args[1..]) {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(flags)) => match cmd {
            "--help" | "-h" | "help" => {
                print!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "gen-om" => gen_om(flags).map(|()| true),
            "cairn" => ingest(flags).map(|()| true),
            "compare" => compare(flags),
            other => Err(usage(format!("unknown command {other:?} (see --help)"))),
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) if e.is::<Usage>() => {
            eprintln!("blockbytes: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("blockbytes: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

/// The command's flags (`--flag value` / `--flag=value`), taken out one by one; whatever is left
/// at the end is an unknown flag. `Ok(None)` after printing the usage for `--help`.
struct Flags(BTreeMap<String, String>);

fn flag_map(args: &[String]) -> Result<Option<Flags>, Error> {
    let mut out = BTreeMap::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if arg == "--help" || arg == "-h" {
            print!("{USAGE}");
            return Ok(None);
        }
        if !arg.starts_with("--") {
            return Err(usage(format!("unexpected argument {arg:?} (see --help)")));
        }
        let (flag, value) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), v.to_string()),
            None => {
                let v = it
                    .next()
                    .ok_or_else(|| usage(format!("{arg} needs a value")))?;
                (arg.clone(), v.clone())
            }
        };
        out.insert(flag, value);
    }
    Ok(Some(Flags(out)))
}

impl Flags {
    fn take(&mut self, flag: &str) -> Option<String> {
        self.0.remove(flag)
    }

    fn path(&mut self, flag: &str) -> Result<PathBuf, Error> {
        self.take(flag)
            .map(PathBuf::from)
            .ok_or_else(|| usage(format!("{flag} is required")))
    }

    fn num<T: std::str::FromStr>(&mut self, flag: &str, default: T) -> Result<T, Error> {
        match self.take(flag) {
            None => Ok(default),
            Some(s) => s
                .parse()
                .map_err(|_| usage(format!("{flag}: bad number {s:?}"))),
        }
    }

    fn range_ms(&mut self) -> Result<i64, Error> {
        let Some(s) = self.take("--block-range") else {
            return Ok(DEFAULT_RANGE_MS);
        };
        cairn::tsdb::parse_duration(&s)
            .map(|d| d.as_millis() as i64)
            .filter(|&ms| ms > 0)
            .ok_or_else(|| usage(format!("--block-range: bad duration {s:?}")))
    }

    fn done(self) -> Result<(), Error> {
        match self.0.keys().next() {
            Some(f) => Err(usage(format!("unknown flag {f:?} (see --help)"))),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// gen-om
// ---------------------------------------------------------------------------------------

/// Escape a label value for the OpenMetrics text format.
fn escape(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// A float as OpenMetrics writes it. Rust's `Display` is the shortest string that parses back
/// to the same bits (and never uses an exponent), which Go's `ParseFloat` reads exactly.
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn gen_om(mut f: Flags) -> Result<(), Error> {
    let out = f.path("--out")?;
    let series: usize = f.num("--series", 2000)?;
    let hours: i64 = f.num("--hours", 6)?;
    let range = DEFAULT_RANGE_MS;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let start: i64 = f.num("--start", now.div_euclid(range) * range - hours * 3_600_000)?;
    let seed: u64 = f.num("--seed", 1)?;
    f.done()?;
    if series == 0 || hours <= 0 {
        return Err(usage("gen-om: --series and --hours must be positive"));
    }
    let start = start.div_euclid(range) * range;
    if start <= 0 {
        return Err(usage("gen-om: --start must be after the epoch"));
    }
    let t = Instant::now();
    let w = Workload::new(Config {
        series,
        interval_ms: SCRAPE_MS,
        rounds: (hours * 3_600_000 / SCRAPE_MS) as usize,
        start_ms: start,
        shards: 1,
        per_request: 1,
        seed,
    });
    // OpenMetrics wants a family's series together: sort by label set (`__name__` first).
    let mut order: Vec<usize> = (0..w.series.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |i: usize| w.series[i].labels.iter().map(|l| (&l.name, &l.value));
        key(a).cmp(key(b))
    });
    let file = File::create(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let mut wr = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = 0u64;
    for &i in &order {
        let s = &w.series[i];
        let mut head = s.name().to_string();
        let rest: Vec<String> = s
            .labels
            .iter()
            .filter(|l| l.name != "__name__")
            .map(|l| format!("{}=\"{}\"", l.name, escape(&l.value)))
            .collect();
        if !rest.is_empty() {
            head = format!("{head}{{{}}}", rest.join(","));
        }
        for k in 0..w.cfg.rounds {
            let ts = w.timestamp(k, s.target);
            let line = format!(
                "{head} {} {}.{:03}\n",
                fmt_value(w.value(i, k)),
                ts.div_euclid(1000),
                ts.rem_euclid(1000)
            );
            bytes += line.len() as u64;
            wr.write_all(line.as_bytes())
                .map_err(|e| format!("writing {}: {e}", out.display()))?;
        }
    }
    wr.write_all(b"# EOF\n")
        .and_then(|()| wr.flush())
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    println!(
        "gen-om: {} series × {} samples (every {} s from {start}, {hours}h) → {} ({:.1} MB) in {:.1}s",
        w.series.len(),
        w.cfg.rounds,
        SCRAPE_MS / 1000,
        out.display(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// cairn
// ---------------------------------------------------------------------------------------

/// Parse `name{a="x",b="y"}` (the series part of a sample line) into label pairs sorted by
/// name, `__name__` included.
fn parse_series(s: &str) -> Result<Vec<(String, String)>, String> {
    let (name, rest) = match s.find('{') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    if name.is_empty() {
        return Err("no metric name".into());
    }
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    if let Some(mut rest) = rest {
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                if !r.is_empty() {
                    return Err(format!("text after the closing brace: {r:?}"));
                }
                break;
            }
            let eq = rest.find("=\"").ok_or("label without =\"")?;
            let lname = &rest[..eq];
            let mut value = String::new();
            let mut chars = rest[eq + 2..].char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err(format!("unterminated value of label {lname}")),
                    Some((i, '"')) => break eq + 2 + i + 1,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => return Err(format!("unterminated value of label {lname}")),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            labels.push((lname.to_string(), value));
            rest = &rest[end..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    labels.sort();
    Ok(labels)
}

/// Go's `strconv.ParseFloat` for what OpenMetrics allows.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// The OpenMetrics parser's timestamp: float seconds, then `int64(ts * 1000)` — which can land
/// a millisecond below the written one; cairn must store what promtool stores.
fn parse_timestamp(s: &str) -> Result<i64, String> {
    let secs: f64 = s.parse().map_err(|_| format!("bad timestamp {s:?}"))?;
    if !secs.is_finite() {
        return Err(format!("bad timestamp {s:?}"));
    }
    Ok((secs * 1000.0) as i64)
}

fn ingest(mut f: Flags) -> Result<(), Error> {
    let om = f.path("--om")?;
    let dir = f.path("--dir")?;
    let range = f.range_ms()?;
    f.done()?;
    if dir.exists() {
        return Err(format!("{} exists; cairn wants a new data directory", dir.display()).into());
    }

    // Read the file: series by their text, samples as (t, series, v).
    let t0 = Instant::now();
    let file = File::open(&om).map_err(|e| format!("opening {}: {e}", om.display()))?;
    let mut index: HashMap<String, u32> = HashMap::new();
    let mut series: Vec<Vec<(String, String)>> = Vec::new();
    let mut samples: Vec<(i64, u32, f64)> = Vec::new();
    let mut saw_eof = false;
    for (n, line) in BufReader::with_capacity(1 << 20, file).lines().enumerate() {
        let line = line.map_err(|e| format!("reading {}: {e}", om.display()))?;
        let ctx = |e: String| format!("{}:{}: {e}", om.display(), n + 1);
        if saw_eof {
            return Err(ctx("content after # EOF".into()).into());
        }
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // Label values may hold spaces; the value and timestamp never do.
        let mut parts = line.rsplitn(3, ' ');
        let (Some(ts), Some(value), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(ctx("want `series value timestamp`".into()).into());
        };
        let id = match index.get(s) {
            Some(&id) => id,
            None => {
                let id = series.len() as u32;
                series.push(parse_series(s).map_err(ctx)?);
                index.insert(s.to_string(), id);
                id
            }
        };
        samples.push((
            parse_timestamp(ts).map_err(ctx)?,
            id,
            parse_value(value).map_err(ctx)?,
        ));
    }
    if !saw_eof {
        return Err(format!("{}: no # EOF line", om.display()).into());
    }
    drop(index);
    // Scrapes: every series of a target shares the target's timestamp; send them in time order.
    samples.sort_by_key(|&(t, id, _)| (t, id));
    println!(
        "cairn: read {} series, {} samples from {} in {:.1}s",
        series.len(),
        samples.len(),
        om.display(),
        t0.elapsed().as_secs_f64()
    );

    let t1 = Instant::now();
    let db = Db::open(
        &dir,
        Options {
            block_range_ms: range,
            // The WAL is not what is measured; don't let fsyncs dominate the run.
            wal: WalOptions {
                sync: SyncPolicy::Never,
                ..WalOptions::default()
            },
            ..Options::default()
        },
    )
    .map_err(|e| format!("opening a cairn Db in {}: {e}", dir.display()))?;
    let views: Vec<Vec<(&str, &str)>> = series
        .iter()
        .map(|ls| ls.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
        .collect();
    let (mut batches, mut accepted) = (0u64, 0u64);
    for batch in samples.chunk_by(|a, b| a.0 == b.0) {
        let values: Vec<Sample> = batch.iter().map(|&(t, _, v)| Sample { t, v }).collect();
        let append: Vec<AppendSeries<'_>> = batch
            .iter()
            .zip(&values)
            .map(|(&(_, id, _), s)| AppendSeries {
                labels: &views[id as usize],
                samples: std::slice::from_ref(s),
            })
            .collect();
        let r = db
            .append(&append)
            .map_err(|e| format!("append at t={}: {e}", batch[0].0))?;
        if r.accepted != batch.len() as u64 {
            return Err(format!(
                "append at t={}: {} of {} samples accepted; first rejection: {:?}",
                batch[0].0,
                r.accepted,
                batch.len(),
                r.first_rejection
            )
            .into());
        }
        batches += 1;
        accepted += r.accepted;
    }
    println!(
        "cairn: appended {accepted} samples in {batches} batches in {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    let t2 = Instant::now();
    // Printed as it comes (`CompactReport` is `Debug`, like the engine's other reports).
    println!(
        "cairn: Db::compact: {:?}",
        db.compact()
            .map_err(|e| format!("compacting {}: {e}", dir.display()))?
    );
    db.close()
        .map_err(|e| format!("closing {}: {e}", dir.display()))?;
    let blocks = read_blocks(&dir)?;
    println!(
        "cairn: compacted and closed in {:.1}s; {} block(s) in {}",
        t2.elapsed().as_secs_f64(),
        blocks.len(),
        dir.display()
    );
    for b in &blocks {
        let m = &b.meta;
        println!(
            "cairn: block {} [{}, {}): {} series, {} chunks, {} samples",
            m.ulid,
            m.min_time,
            m.max_time,
            m.stats.num_series,
            m.stats.num_chunks,
            m.stats.num_samples
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------------------

/// One block on disk and its sizes in bytes.
struct BlockInfo {
    meta: BlockMeta,
    chunk_bytes: u64,
    index_bytes: u64,
    total_bytes: u64,
}

fn file_len(path: &Path) -> Result<u64, Error> {
    Ok(fs::metadata(path)
        .map_err(|e| format!("stat {}: {e}", path.display()))?
        .len())
}

/// Apparent size of every file below `dir`.
fn dir_size(dir: &Path) -> Result<u64, Error> {
    let mut total = 0;
    for e in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let path = e
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        total += if path.is_dir() {
            dir_size(&path)?
        } else {
            file_len(&path)?
        };
    }
    Ok(total)
}

/// The blocks (`<ULID>/meta.json`) of a data directory, oldest first.
fn read_blocks(dir: &Path) -> Result<Vec<BlockInfo>, Error> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let path = e
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        let is_block = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.parse::<Ulid>().is_ok());
        if !is_block || !path.join("meta.json").is_file() {
            continue;
        }
        let mpath = path.join("meta.json");
        let raw = fs::read(&mpath).map_err(|e| format!("reading {}: {e}", mpath.display()))?;
        let meta = BlockMeta::from_json(&raw).map_err(|e| format!("{}: {e}", mpath.display()))?;
        out.push(BlockInfo {
            meta,
            chunk_bytes: dir_size(&path.join("chunks"))?,
            index_bytes: file_len(&path.join("index"))?,
            total_bytes: dir_size(&path)?,
        });
    }
    out.sort_by_key(|b| b.meta.min_time);
    Ok(out)
}

/// Blocks by the aligned range they lie in; blocks spanning more than one range are returned
/// apart (they have no counterpart).
fn by_range(blocks: Vec<BlockInfo>, range: i64) -> (BTreeMap<i64, BlockInfo>, Vec<BlockInfo>) {
    let (mut aligned, mut other) = (BTreeMap::new(), Vec::new());
    for b in blocks {
        let start = b.meta.min_time.div_euclid(range) * range;
        if b.meta.max_time <= start + range && !aligned.contains_key(&start) {
            aligned.insert(start, b);
        } else {
            other.push(b);
        }
    }
    (aligned, other)
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / (b as f64).max(1.0)
}

fn compare(mut f: Flags) -> Result<bool, Error> {
    let pdir = f.path("--promtool")?;
    let cdir = f.path("--cairn")?;
    let range = f.range_ms()?;
    f.done()?;
    let (prom, prom_other) = by_range(read_blocks(&pdir)?, range);
    let (cairn, cairn_other) = by_range(read_blocks(&cdir)?, range);
    for (who, other) in [("promtool", &prom_other), ("cairn", &cairn_other)] {
        for b in other {
            println!(
                "note: {who} block {} [{}, {}) is not within one {} min aligned range; not compared",
                b.meta.ulid,
                b.meta.min_time,
                b.meta.max_time,
                range / 60_000
            );
        }
    }
    let mut ok = true;
    let mut matched: Vec<(i64, &BlockInfo, &BlockInfo)> = Vec::new();
    let cairn_newest = cairn.keys().next_back().copied();
    for (start, p) in &prom {
        let Some(c) = cairn.get(start) else {
            let why = match cairn_newest {
                Some(n) if *start > n => " (expected: cairn keeps its newest ranges in the head)",
                _ => "",
            };
            println!(
                "note: range [{start}, {}) only in promtool's blocks{why}",
                start + range
            );
            continue;
        };
        let (ps, cs) = (&p.meta.stats, &c.meta.stats);
        if (ps.num_series, ps.num_samples) != (cs.num_series, cs.num_samples) {
            println!(
                "MISMATCH range [{start}, {}): promtool has {} series / {} samples, cairn {} / {}; not compared",
                start + range,
                ps.num_series,
                ps.num_samples,
                cs.num_series,
                cs.num_samples
            );
            ok = false;
            continue;
        }
        matched.push((*start, p, c));
    }
    for start in cairn.keys().filter(|s| !prom.contains_key(s)) {
        println!(
            "note: range [{start}, {}) only in cairn's blocks",
            start + range
        );
    }
    if matched.is_empty() {
        println!(
            "\nNo block range is present in both directories ({} promtool block(s), {} cairn block(s)): nothing to compare.",
            prom.len() + prom_other.len(),
            cairn.len() + cairn_other.len()
        );
        if cairn.is_empty() && cairn_other.is_empty() {
            println!("cairn wrote no blocks: does Db::compact write any yet?");
        }
        return Ok(false);
    }

    println!("\n| block range | writer | series | samples | chunks | chunk bytes | index bytes | block bytes | chunk B/sample | block B/sample |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    // [chunks, chunk bytes, index bytes, block bytes]
    let row = |label: &str, who: &str, series: &str, samples: u64, v: [u64; 4]| {
        println!(
            "| {label} | {who} | {series} | {samples} | {} | {} | {} | {} | {:.3} | {:.3} |",
            v[0],
            v[1],
            v[2],
            v[3],
            ratio(v[1], samples),
            ratio(v[3], samples)
        );
    };
    let ratio_row = |label: &str, p: [u64; 4], c: [u64; 4]| {
        println!(
            "| {label} | cairn/promtool | | | {:.4} | {:.4} | {:.4} | {:.4} | | |",
            ratio(c[0], p[0]),
            ratio(c[1], p[1]),
            ratio(c[2], p[2]),
            ratio(c[3], p[3])
        );
    };
    let (mut pt, mut ct) = ([0u64; 4], [0u64; 4]);
    let mut samples_total = 0u64;
    for (start, p, c) in &matched {
        let label = format!("[{start}, {})", start + range);
        let s = &p.meta.stats;
        samples_total += s.num_samples;
        for (who, b, acc) in [("promtool", p, &mut pt), ("cairn", c, &mut ct)] {
            let st = &b.meta.stats;
            let v = [st.num_chunks, b.chunk_bytes, b.index_bytes, b.total_bytes];
            row(&label, who, &st.num_series.to_string(), st.num_samples, v);
            for (a, x) in acc.iter_mut().zip(v) {
                *a += x;
            }
        }
        let pv = [
            p.meta.stats.num_chunks,
            p.chunk_bytes,
            p.index_bytes,
            p.total_bytes,
        ];
        let cv = [
            c.meta.stats.num_chunks,
            c.chunk_bytes,
            c.index_bytes,
            c.total_bytes,
        ];
        ratio_row(&label, pv, cv);
    }
    let label = format!("total ({} blocks)", matched.len());
    row(&label, "promtool", "", samples_total, pt);
    row(&label, "cairn", "", samples_total, ct);
    ratio_row(&label, pt, ct);

    let (chunks_r, block_r) = (ratio(ct[1], pt[1]), ratio(ct[3], pt[3]));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "\ntargets: chunks {chunks_r:.4}× (≤ 1.02: {}), whole block {block_r:.4}× (≤ 1.05: {})",
        verdict(chunks_r <= 1.02),
        verdict(block_r <= 1.05)
    );
    println!(
        "RESULT blocks={} samples={samples_total} promtool_chunk_bytes={} cairn_chunk_bytes={} promtool_index_bytes={} cairn_index_bytes={} promtool_block_bytes={} cairn_block_bytes={} chunks_ratio={chunks_r:.4} index_ratio={:.4} block_ratio={block_r:.4}",
        matched.len(),
        pt[1],
        ct[1],
        pt[2],
        ct[2],
        pt[3],
        ct[3],
        ratio(ct[2], pt[2])
    );
    Ok(ok)
}
