//! Head compaction benchmark: time and peak extra memory to turn N series-chunks of the head
//! into a block (`Db::compact`: write the block, truncate the head, checkpoint the WAL).
//!
//! Each of `--series` series gets one full chunk in the oldest block range (`--samples`
//! samples spread over it), plus one sample two ranges later so the head spans more than 1.5
//! ranges and the oldest range is compactable: `--series` series-chunks go into the block.
//! Peak memory is the process's high-water mark (VmHWM, reset through `/proc/self/clear_refs`
//! just before compacting) minus its resident size at that moment.
//!
//! `cargo run --release --example compactbench -- [--series 1000000] [--samples 30] [--dir D]`

use std::process::ExitCode;
use std::time::Instant;

use cairn::tsdb::wal::{SyncPolicy, WalOptions};
use cairn::tsdb::{AppendSeries, Db, Options, Sample};

const RANGE: i64 = 2 * 3600 * 1000;

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "compactbench [--series N (1000000)] [--samples N per chunk (30)] [--dir DIR (temp)]"
        );
        return ExitCode::SUCCESS;
    }
    let series: usize = arg(&args, "--series")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_chunk: i64 = arg(&args, "--samples")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("compactbench: temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = arg(&args, "--dir").map_or_else(|| tmp.path().to_path_buf(), Into::into);
    let opts = Options {
        wal: WalOptions {
            sync: SyncPolicy::Never,
            ..WalOptions::default()
        },
        block_range_ms: RANGE,
        ..Options::default()
    };
    let db = match Db::open(&dir, opts) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("compactbench: open {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let now = cairn::tsdb::head::now_ms();
    let base = (now - 3 * RANGE) / RANGE * RANGE;
    let names: Vec<String> = (0..series).map(|i| format!("{i:07}")).collect();
    let hosts: Vec<String> = (0..1000).map(|i| format!("host-{i:03}:9100")).collect();
    let label_sets: Vec<[(&str, &str); 4]> = (0..series)
        .map(|i| {
            [
                ("__name__", "node_cpu_seconds_total"),
                ("cpu", names[i].as_str()),
                ("instance", hosts[i % hosts.len()].as_str()),
                ("job", "node"),
            ]
        })
        .collect();
    let t_load = Instant::now();
    let step = RANGE / per_chunk;
    let mut total = 0u64;
    let rounds: Vec<i64> = (0..per_chunk)
        .map(|k| base + k * step)
        .chain([base + 2 * RANGE])
        .collect();
    for &t in &rounds {
        for part in label_sets.chunks(2000) {
            let samples: Vec<[Sample; 1]> = part
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    [Sample {
                        t,
                        v: (t / 1000) as f64 + i as f64,
                    }]
                })
                .collect();
            let batch: Vec<AppendSeries<'_>> = part
                .iter()
                .zip(&samples)
                .map(|(l, s)| AppendSeries {
                    labels: l,
                    samples: s,
                })
                .collect();
            match db.append(&batch) {
                Ok(r) => total += r.accepted,
                Err(e) => {
                    eprintln!("compactbench: append: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    println!(
        "loaded {series} series, {total} samples in {:.1?} ({:.2} M samples/s)",
        t_load.elapsed(),
        total as f64 / t_load.elapsed().as_secs_f64() / 1e6
    );
    if let Err(e) = db.head().flush_chunks() {
        eprintln!("compactbench: flush: {e}");
    }
    let rss_before = status_kb("VmRSS:");
    if std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("compactbench: cannot reset VmHWM; peak is the whole run's");
    }
    // Peak anonymous memory (heap), sampled: VmHWM also counts mapped file pages (chunks_head
    // read back, the new block's index checked at open), which the page cache can reclaim.
    let anon_before = status_kb("RssAnon:");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_kb("RssAnon:"));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        })
    };
    let t = Instant::now();
    let r = match db.compact() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("compactbench: compact: {e}");
            return ExitCode::FAILURE;
        }
    };
    let took = t.elapsed();
    let peak = status_kb("VmHWM:");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let anon_peak = sampler.join().unwrap_or(0);
    let chunks: u64 = r.blocks.iter().map(|b| b.stats.num_chunks).sum();
    let samples: u64 = r.blocks.iter().map(|b| b.stats.num_samples).sum();
    println!(
        "compacted {} block(s): {chunks} series-chunks, {samples} samples in {took:.2?} \
         ({:.2} M chunks/s); series removed {}, WAL checkpoint {:?}",
        r.blocks.len(),
        chunks as f64 / took.as_secs_f64() / 1e6,
        r.series_removed,
        r.checkpoint
    );
    println!(
        "RSS before {:.0} MiB, peak during compaction {:.0} MiB: +{:.0} MiB",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(rss_before) as f64 / 1024.0
    );
    println!(
        "anonymous memory before {:.0} MiB, peak {:.0} MiB: +{:.0} MiB",
        anon_before as f64 / 1024.0,
        anon_peak as f64 / 1024.0,
        anon_peak.saturating_sub(anon_before) as f64 / 1024.0
    );
    for b in &r.blocks {
        let size: u64 = walk(&dir.join(b.ulid.to_string()));
        println!(
            "block {}: {} series, {:.2} bytes/sample on disk",
            b.ulid,
            b.stats.num_series,
            size as f64 / b.stats.num_samples.max(1) as f64
        );
    }
    ExitCode::SUCCESS
}

fn walk(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.flatten().map(|e| walk(&e.path())).sum()
}
