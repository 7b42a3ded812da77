//! Block-merging benchmark: what leveled compaction costs and what it saves a query.
//!
//! 1. Writes four aligned 2h blocks of node_exporter-like series at 15 s (the load generator's
//!    workload, chunks cut as Prometheus 2.42's head cuts them — the generator of `readbench`)
//!    with cairn's `BlockWriter`. The three older blocks fill the aligned 6h window that ends
//!    at least 2h before now; the fourth is the 2h after it, there because the planner leaves
//!    the newest block out. The blocks are written by a child process (this binary with the
//!    internal `gen` command), so the several GiB of heap the generator uses are not left in
//!    this process's allocator for the merge to reuse unseen.
//! 2. Opens a `Db` on them (`retention_ms: 0`, block range 2h, WAL sync never) and reads the
//!    6h window with `{__name__=~".+"}`, decoding every sample: blocks the query opens, series,
//!    samples, wall time (median of 3 rounds).
//! 3. Runs `Db::compact` (no head data: it merges the three 6h-window blocks into one, checks
//!    the new block by opening it, swaps it in and deletes the parents) with VmHWM reset through
//!    `/proc/self/clear_refs` just before and `RssAnon` sampled every 5 ms.
//! 4. Reads the window again, and fails (exit status 1, no table) unless the merge produced
//!    one block holding exactly the parents' samples and both reads returned the same series,
//!    sample count and checksum of every label, timestamp and value.
//!
//! `cargo run --release --example mergebench -- --help`

#[path = "loadgen/workload.rs"]
mod workload;
// `workload` builds its labels with these messages.
#[path = "loadgen/args.rs"]
mod args;
#[path = "loadgen/chunks.rs"]
mod chunks;
#[path = "../tests/common/proto.rs"]
mod proto;

use chunks::{cut_chunks, CutChunk};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn::model::{Labels, MatchType, Matcher};
use cairn::tsdb::block::{BlockWriter, ChunkData, Compaction, NewSeries, Ulid};
use cairn::tsdb::chunkenc::Encoding;
use cairn::tsdb::db::BlockSet;
use cairn::tsdb::head::range_for_timestamp;
use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{Db, Options, Sample};
use workload::{Config, Workload};

use args::{flag_pairs, num, usage, Error, Usage};

const USAGE: &str = "\
mergebench: leveled compaction of three 2h blocks into one 6h block — throughput, peak
memory, and blocks opened by a 6h query before and after

USAGE:
  mergebench [--series N] [--dir DIR]

  --series N   series per block [100000]
  --dir DIR    data directory to use and keep (must not exist or be empty) [a temp dir,
               removed at the end]
  --help       this text

Writes 4 aligned 2h blocks (15 s scrape, node_exporter-like series), opens a Db on them,
reads the 6h window the 3 older blocks fill, runs Db::compact (which merges those 3), reads
the window again and prints the figures as a Markdown table. Exit status: 0 with figures,
1 when anything fails or the merged data differs from the original (no figures then),
2 on bad usage.
";

const HOUR_MS: i64 = 3_600_000;
/// Prometheus's default block range.
const BLOCK_MS: i64 = 2 * HOUR_MS;
/// The first leveled-compaction range (3 × the block range).
const WINDOW_MS: i64 = 3 * BLOCK_MS;
const BLOCKS: usize = 4;
const SCRAPE_MS: i64 = 15_000;
const READ_ROUNDS: usize = 3;
const RSS_EVERY: Duration = Duration::from_millis(5);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("gen") {
        parse_gen(&args[1..]).and_then(|(dir, series, start)| generate(&dir, series, start))
    } else {
        match parse(&args) {
            Ok(Some(a)) => run(&a),
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => Err(e),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<Usage>() => {
            eprintln!("mergebench: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mergebench: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------

struct Args {
    series: usize,
    dir: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Args>, Error> {
    let Some(pairs) = flag_pairs(args, USAGE, &["--series", "--dir"])? else {
        return Ok(None);
    };
    let mut a = Args {
        series: 100_000,
        dir: None,
    };
    for (flag, v) in &pairs {
        match flag.as_str() {
            "--series" => a.series = num(flag, v)?,
            "--dir" => a.dir = Some(PathBuf::from(v)),
            other => return Err(usage(format!("unknown flag {other:?} (see --help)"))),
        }
    }
    if a.series == 0 {
        return Err(usage("--series must be positive"));
    }
    Ok(Some(a))
}

/// The internal `gen --dir D --series N --start MS` the parent runs as a child process.
fn parse_gen(args: &[String]) -> Result<(PathBuf, usize, i64), Error> {
    let pairs = flag_pairs(args, USAGE, &["--dir", "--series", "--start"])?
        .ok_or_else(|| usage("gen: internal command, no help"))?;
    let (mut dir, mut series, mut start) = (None, None, None);
    for (flag, v) in &pairs {
        match flag.as_str() {
            "--dir" => dir = Some(PathBuf::from(v)),
            "--series" => series = Some(num(flag, v)?),
            "--start" => start = Some(num(flag, v)?),
            other => return Err(usage(format!("gen: unknown flag {other:?}"))),
        }
    }
    match (dir, series, start) {
        (Some(d), Some(n), Some(s)) => Ok((d, n, s)),
        _ => Err(usage("gen: --dir, --series and --start are required")),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// Generation (child process)
// ---------------------------------------------------------------------------------------

/// Write `BLOCKS` 2h blocks of `series` series starting at `start_ms` into `dir`.
fn generate(dir: &Path, series: usize, start_ms: i64) -> Result<(), Error> {
    let t = Instant::now();
    let hours = BLOCKS as i64 * BLOCK_MS / HOUR_MS;
    let w = Workload::new(Config {
        series,
        interval_ms: SCRAPE_MS,
        rounds: (hours * HOUR_MS / SCRAPE_MS) as usize,
        start_ms,
        shards: 1,
        per_request: 1,
        seed: 1,
    });
    println!(
        "gen: {} series on {} targets ({:.2} labels/series avg), {} samples each every {} s — workload built in {:.1}s",
        w.series.len(),
        w.targets(),
        w.avg_labels(),
        w.cfg.rounds,
        SCRAPE_MS / 1000,
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

    // per block, per series (in `order`): its chunks in that block
    let mut per_block: Vec<Vec<Vec<CutChunk>>> = (0..BLOCKS)
        .map(|_| (0..order.len()).map(|_| Vec::new()).collect())
        .collect();
    for (pos, &i) in order.iter().enumerate() {
        let target = w.series[i].target;
        let samples = (0..w.cfg.rounds).map(|k| (w.timestamp(k, target), w.value(i, k)));
        for c in cut_chunks(samples, BLOCK_MS) {
            let b = (c.mint - start_ms).div_euclid(BLOCK_MS);
            if b < 0 || b >= BLOCKS as i64 || range_for_timestamp(c.mint, BLOCK_MS) <= c.maxt {
                return Err(format!(
                    "internal error: chunk [{}, {}] of {} is outside the blocks",
                    c.mint, c.maxt, labels[i]
                )
                .into());
            }
            per_block[b as usize][pos].push(c);
        }
    }
    drop(w);

    let writer = BlockWriter::default();
    let mut samples = 0u64;
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
                dir,
                ulid,
                mint,
                mint + BLOCK_MS,
                Compaction::level1(ulid),
                &input,
            )
            .map_err(|e| format!("writing block [{mint}, {}): {e}", mint + BLOCK_MS))?;
        println!(
            "gen: block {ulid} [{mint}, {}): {} series, {} chunks, {} samples",
            mint + BLOCK_MS,
            meta.stats.num_series,
            meta.stats.num_chunks,
            meta.stats.num_samples
        );
        samples += meta.stats.num_samples;
    }
    println!(
        "gen: {BLOCKS} blocks, {samples} samples in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------

fn status_kb(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// What one full read of the window returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ReadResult {
    series: u64,
    samples: u64,
    /// Over every label, timestamp and value, in the order returned.
    checksum: u64,
}

/// Blocks a query of `[mint, maxt]` opens (`Db::select_iter`'s overlap test).
fn blocks_opened(set: &BlockSet, mint: i64, maxt: i64) -> usize {
    set.blocks
        .iter()
        .filter(|b| !(b.meta().min_time > maxt || b.meta().max_time <= mint))
        .count()
}

fn mix(h: u64, x: u64) -> u64 {
    (h ^ x).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(23)
}

/// Read every series matching `matchers` in `[mint, maxt]`, decoding every sample.
fn read_all(db: &Db, matchers: &[Matcher], mint: i64, maxt: i64) -> Result<ReadResult, Error> {
    let mut r = ReadResult {
        series: 0,
        samples: 0,
        checksum: 0xcbf2_9ce4_8422_2325,
    };
    let mut buf: Vec<Sample> = Vec::new();
    for s in db.select_iter(matchers, mint, maxt) {
        let s = s.map_err(|e| format!("reading [{mint}, {maxt}]: {e}"))?;
        buf.clear();
        s.samples_into(mint, maxt, &mut buf)
            .map_err(|e| format!("decoding {}: {e}", s.labels))?;
        r.series += 1;
        r.samples += buf.len() as u64;
        let mut h = r.checksum;
        for (n, v) in s.labels.iter() {
            for b in n.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
                h = mix(h, u64::from(b));
            }
        }
        for x in &buf {
            h = mix(mix(h, x.t as u64), x.v.to_bits());
        }
        r.checksum = h;
    }
    Ok(r)
}

/// `READ_ROUNDS` full reads; the result (all rounds must agree) and the median wall time.
fn timed_reads(
    db: &Db,
    matchers: &[Matcher],
    mint: i64,
    maxt: i64,
    what: &str,
) -> Result<(ReadResult, Duration), Error> {
    let mut walls = Vec::with_capacity(READ_ROUNDS);
    let mut first: Option<ReadResult> = None;
    for round in 1..=READ_ROUNDS {
        let t = Instant::now();
        let r = read_all(db, matchers, mint, maxt)?;
        let wall = t.elapsed();
        println!(
            "read {what}, round {round}: {} series, {} samples in {wall:.2?} ({:.1} M samples/s)",
            r.series,
            r.samples,
            r.samples as f64 / wall.as_secs_f64() / 1e6
        );
        match first {
            None => first = Some(r),
            Some(f) if f != r => {
                return Err(format!(
                    "read {what}: round {round} returned {r:?}, round 1 returned {f:?}"
                )
                .into())
            }
            Some(_) => {}
        }
        walls.push(wall);
    }
    walls.sort();
    let r = first.ok_or("no read rounds")?;
    Ok((r, walls[walls.len() / 2]))
}

/// Peak `RssAnon` (kB) sampled every `RSS_EVERY` until `stop` is set.
fn start_sampler(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(status_kb("RssAnon:"));
            std::thread::sleep(RSS_EVERY);
        }
        peak.max(status_kb("RssAnon:"))
    })
}

fn run(a: &Args) -> Result<(), Error> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            if d.exists()
                && fs::read_dir(d)
                    .map_err(|e| format!("reading {}: {e}", d.display()))?
                    .next()
                    .is_some()
            {
                return Err(usage(format!(
                    "--dir {} exists and is not empty",
                    d.display()
                )));
            }
            fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir().map_err(|e| format!("creating a temp dir: {e}"))?;
            tmp.path().to_path_buf()
        }
    };

    // The newest aligned 6h window that ends at least one block range before now, so the
    // fourth block ends in the past too.
    let now = now_ms();
    let start = (now - WINDOW_MS - BLOCK_MS).div_euclid(WINDOW_MS) * WINDOW_MS;
    let (win_min, win_max) = (start, start + WINDOW_MS - 1);

    // 1. Blocks, written by a child process.
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    println!(
        "writing {BLOCKS} 2h blocks of {} series into {} (6h window [{win_min}, {}))",
        a.series,
        dir.display(),
        win_max + 1
    );
    let t = Instant::now();
    let status = Command::new(&exe)
        .arg("gen")
        .arg("--dir")
        .arg(&dir)
        .arg("--series")
        .arg(a.series.to_string())
        .arg("--start")
        .arg(start.to_string())
        .status()
        .map_err(|e| format!("running {} gen: {e}", exe.display()))?;
    if !status.success() {
        return Err(format!("generating the blocks failed ({status})").into());
    }
    let gen_time = t.elapsed();
    println!("generated in {gen_time:.1?}");

    // 2. Before.
    let opts = Options {
        wal: WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        },
        block_range_ms: BLOCK_MS,
        retention_ms: 0,
        max_block_duration_ms: None,
        ..Options::default()
    };
    let db = Db::open(&dir, opts).map_err(|e| format!("opening {}: {e}", dir.display()))?;
    let before = db.blocks();
    if before.blocks.len() != BLOCKS {
        return Err(format!(
            "{} holds {} blocks, expected the {BLOCKS} just written",
            dir.display(),
            before.blocks.len()
        )
        .into());
    }
    // (ULID, samples, bytes) of the window's blocks; no `Arc<Block>` is kept, so the parents'
    // files are unmapped when compaction deletes them, as in a server.
    let parents: Vec<(Ulid, u64, u64)> = before
        .blocks
        .iter()
        .filter(|b| b.meta().min_time >= win_min && b.meta().max_time <= win_max + 1)
        .map(|b| (b.meta().ulid, b.meta().stats.num_samples, b.size()))
        .collect();
    if parents.len() != 3 {
        return Err(format!(
            "{} of the blocks lie in the 6h window [{win_min}, {}), expected 3",
            parents.len(),
            win_max + 1
        )
        .into());
    }
    let opened_before = blocks_opened(&before, win_min, win_max);
    let matchers = [
        Matcher::new(MatchType::Regex, "__name__", ".+").map_err(|e| format!("matcher: {e}"))?
    ];
    let (read_before, wall_before) = timed_reads(&db, &matchers, win_min, win_max, "before")?;
    drop(before);

    // 3. Merge.
    let rss_before = status_kb("VmRSS:");
    if fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("mergebench: cannot reset VmHWM; the VmRSS peak is the whole run's");
    }
    let anon_before = status_kb("RssAnon:");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = start_sampler(Arc::clone(&stop));
    let t = Instant::now();
    let compacted = db.compact();
    let merge_time = t.elapsed();
    let rss_peak = status_kb("VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let anon_peak = sampler.join().map_err(|_| "the RSS sampler panicked")?;
    let report = compacted.map_err(|e| format!("compacting {}: {e}", dir.display()))?;

    // What was merged must be exactly the three window blocks, into one block.
    let want: Vec<Ulid> = parents.iter().map(|p| p.0).collect();
    let merged_ulid = match report.merged.as_slice() {
        [(got, Some(new))] if *got == want => *new,
        other => {
            return Err(format!(
                "expected one merge of the 3 blocks of the 6h window {want:?}, compaction did {other:?}"
            )
            .into())
        }
    };
    if !report.blocks.is_empty() || !report.retention.is_empty() {
        return Err(format!(
            "compaction also wrote {} head blocks and deleted {} blocks by retention",
            report.blocks.len(),
            report.retention.len()
        )
        .into());
    }
    let after = db.blocks();
    let merged = after
        .blocks
        .iter()
        .find(|b| b.meta().ulid == merged_ulid)
        .cloned()
        .ok_or_else(|| format!("merged block {merged_ulid} is not in the block set"))?;
    let parent_samples: u64 = parents.iter().map(|p| p.1).sum();
    let parent_bytes: u64 = parents.iter().map(|p| p.2).sum();
    let m = merged.meta();
    println!(
        "memory: VmRSS {:.0} MiB before, peak {:.0} MiB; RssAnon {:.0} MiB before, peak {:.0} MiB",
        mib(rss_before),
        mib(rss_peak),
        mib(anon_before),
        mib(anon_peak)
    );
    println!(
        "merged {} blocks into {merged_ulid} [{}, {}) (level {}): {} series, {} chunks, {} samples in {merge_time:.2?}",
        want.len(),
        m.min_time,
        m.max_time,
        m.compaction.level,
        m.stats.num_series,
        m.stats.num_chunks,
        m.stats.num_samples
    );

    // 4. After.
    let opened_after = blocks_opened(&after, win_min, win_max);
    drop(after);
    let (read_after, wall_after) = timed_reads(&db, &matchers, win_min, win_max, "after")?;
    let mut wrong = Vec::new();
    if m.stats.num_samples != parent_samples {
        wrong.push(format!(
            "the merged block holds {} samples, its parents {parent_samples}",
            m.stats.num_samples
        ));
    }
    if read_before.samples != parent_samples {
        wrong.push(format!(
            "the read before returned {} samples, the blocks hold {parent_samples}",
            read_before.samples
        ));
    }
    if read_after != read_before {
        wrong.push(format!(
            "the read after returned {read_after:?}, the read before {read_before:?}"
        ));
    }
    if !wrong.is_empty() {
        return Err(format!("WRONG RESULT, no figures reported: {}", wrong.join("; ")).into());
    }

    // 5. Figures.
    let secs = |d: Duration| d.as_secs_f64();
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64().max(1e-9) / 1e6;
    println!(
        "\nBlock merging: {} series × 3 × 2h at 15 s → one 6h block ({} CPUs, {})\n",
        m.stats.num_series,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        dir.display()
    );
    println!("| figure | value |");
    println!("|---|---:|");
    println!(
        "| blocks written (4 × 2h), generation time | {:.1} s |",
        secs(gen_time)
    );
    println!(
        "| merge (`Db::compact`): blocks merged | {} → 1 |",
        want.len()
    );
    println!("| series | {} |", m.stats.num_series);
    println!("| samples merged | {parent_samples} |");
    println!("| merge wall time | {:.2} s |", secs(merge_time));
    println!(
        "| merge throughput | {:.2} M samples/s |",
        rate(parent_samples, merge_time)
    );
    println!(
        "| peak VmRSS growth (VmHWM − VmRSS before) | +{:.0} MiB |",
        mib(rss_peak.saturating_sub(rss_before))
    );
    println!(
        "| peak RssAnon growth (sampled every 5 ms) | +{:.0} MiB |",
        mib(anon_peak.saturating_sub(anon_before))
    );
    println!(
        "| merged block size vs parents' total | {:.1} MiB vs {:.1} MiB ({:.3}×) |",
        merged.size() as f64 / 1048576.0,
        parent_bytes as f64 / 1048576.0,
        merged.size() as f64 / parent_bytes.max(1) as f64
    );
    println!("| 6h query, blocks opened: before → after | {opened_before} → {opened_after} |");
    println!(
        "| 6h full read (`{{__name__=~\".+\"}}`, every sample decoded), before | {} series, {} samples, {:.2} s ({:.1} M samples/s) |",
        read_before.series,
        read_before.samples,
        secs(wall_before),
        rate(read_before.samples, wall_before)
    );
    println!(
        "| same read, after | {} series, {} samples, {:.2} s ({:.1} M samples/s) |",
        read_after.series,
        read_after.samples,
        secs(wall_after),
        rate(read_after.samples, wall_after)
    );
    println!(
        "\nReads: median of {READ_ROUNDS} rounds each; both returned the same series, samples and checksum."
    );
    Ok(())
}
