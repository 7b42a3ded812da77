#![allow(clippy::unwrap_used, clippy::expect_used)]
//! promtool 2.42 and 3.x (the real binaries, no mock) read a block we wrote: `tsdb list` shows
//! our ULID, time range and stats, `tsdb analyze` succeeds, and `tsdb dump` prints exactly our
//! samples. Fails with install instructions if a promtool is missing.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use cairn::model::Labels;
use cairn::tsdb::block::{BlockWriter, Compaction, NewSeries, Ulid};
use common::blocks::TestSeries;
use common::peer::Peer;

const BASE: i64 = 1_672_531_200_000; // 2023-01-01T00:00:00Z, a 2h boundary
const RANGE: i64 = 2 * 3600 * 1000;

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
}

fn random_series(n: usize) -> Vec<TestSeries> {
    let mut rng = Lcg(42);
    let zones = ["eu-west", "zürich", "東京", "a\"quoted\\value", "tab\there"];
    let mut out: Vec<TestSeries> = (0..n)
        .map(|i| {
            let mut pairs = vec![
                ("__name__".to_string(), format!("metric_{}", i % 13)),
                ("instance".to_string(), format!("host-{i}:9100")),
                ("job".to_string(), ["api", "db", "cache"][i % 3].to_string()),
            ];
            if i % 4 == 0 {
                pairs.push(("zone".to_string(), zones[i % zones.len()].to_string()));
            }
            let count = 1 + rng.below(400) as usize;
            let mut t = BASE + rng.below(1000) as i64;
            let mut samples = Vec::with_capacity(count);
            for j in 0..count {
                let v = match rng.below(20) {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    3 => -0.0,
                    4 => (rng.next() as f64) * 1e-300,
                    5..=9 => j as f64,
                    _ => (rng.next() as f64 / (1u64 << 53) as f64 - 0.5) * 1e6,
                };
                samples.push((t, v));
                t += 15_000 + rng.below(200) as i64 - 100;
            }
            assert!(t < BASE + RANGE);
            TestSeries::from_samples(Labels::from_pairs(pairs), &samples, 120)
        })
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

fn run(peer: Peer, args: &[&str], dir: &Path) -> String {
    let out = Command::new(peer.promtool())
        .args(args)
        .arg(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "{peer}: promtool {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Canonical value bits: every NaN is the same (dump prints "NaN" whatever the payload).
fn canon(bits: u64) -> u64 {
    if f64::from_bits(bits).is_nan() {
        f64::NAN.to_bits()
    } else {
        bits
    }
}

fn parse_go_float(s: &str) -> f64 {
    match s {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s:?}")),
    }
}

peer_tests!(promtool_lists_analyzes_and_dumps_our_block);

fn promtool_lists_analyzes_and_dumps_our_block(peer: Peer) {
    let series = random_series(300);
    let data = tempfile::tempdir().unwrap();
    fs::create_dir(data.path().join("wal")).unwrap(); // `tsdb dump` opens the DB
    let ulid = Ulid::generate_now().unwrap();
    let input: Vec<NewSeries<'_>> = series.iter().map(TestSeries::as_new).collect();
    let meta = BlockWriter::default()
        .write(
            data.path(),
            ulid,
            BASE,
            BASE + RANGE,
            Compaction::level1(ulid),
            &input,
        )
        .unwrap();
    let mut want: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    let mut samples = 0u64;
    for s in &series {
        let list = want.entry(s.labels.to_string()).or_default();
        for (_, _, bytes) in &s.chunks {
            let it = cairn::tsdb::chunkenc::XorIterator::new(bytes).unwrap();
            for (t, v) in it {
                list.push((t, canon(v.to_bits())));
                samples += 1;
            }
        }
    }
    let chunks: u64 = series.iter().map(|s| s.chunks.len() as u64).sum();
    assert_eq!(
        (
            meta.stats.num_samples,
            meta.stats.num_chunks,
            meta.stats.num_series
        ),
        (samples, chunks, 300)
    );

    // list
    let list = run(peer, &["tsdb", "list"], data.path());
    let row = list
        .lines()
        .find(|l| l.starts_with(&ulid.to_string()))
        .unwrap_or_else(|| panic!("our block is not listed:\n{list}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1], BASE.to_string(), "{row}");
    assert_eq!(cols[2], (BASE + RANGE).to_string(), "{row}");
    assert_eq!(cols[3], "2h0m0s", "{row}");
    assert_eq!(cols[4], samples.to_string(), "{row}");
    assert_eq!(cols[5], chunks.to_string(), "{row}");
    assert_eq!(cols[6], "300", "{row}");

    // analyze
    let analyze = run(peer, &["tsdb", "analyze"], data.path());
    assert!(analyze.contains(&format!("Block ID: {ulid}")), "{analyze}");
    assert!(analyze.contains("Series: 300"), "{analyze}");
    assert!(analyze.contains("Label names: 4"), "{analyze}");

    // dump: `{labels} value timestamp` per sample.
    let dump = run(peer, &["tsdb", "dump"], data.path());
    let mut got: BTreeMap<String, Vec<(i64, u64)>> = BTreeMap::new();
    for line in dump.lines() {
        let mut parts = line.rsplitn(3, ' ');
        let (t, v, l) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        got.entry(l.to_string())
            .or_default()
            .push((t.parse().unwrap(), canon(parse_go_float(v).to_bits())));
    }
    assert_eq!(got.len(), want.len());
    for (labels, samples) in &want {
        assert_eq!(got.get(labels), Some(samples), "series {labels}");
    }
}
