#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests: random series sets (UTF-8 label names and values, random chunk counts and
//! contents, small chunk files) → write a block → read back equal; postings for random
//! matchers equal a brute-force filter; label names and values equal the input's.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cairn::model::{matches_labels, Labels, MatchType, Matcher};
use cairn::tsdb::block::{Block, BlockWriter, Compaction, NewSeries, Ulid};
use common::blocks::TestSeries;
use proptest::prelude::*;
use proptest::sample::Index;

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("__name__".to_string()),
        Just("job".to_string()),
        Just("a".to_string()),
        "[a-zA-Z_][a-zA-Z0-9_]{0,5}",
        "\\PC{1,4}",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-c]{1,3}", "\\PC{1,6}", Just("x".to_string())]
}

type SeriesSpec = (BTreeMap<String, String>, Vec<Vec<(i64, f64)>>);

fn series_spec() -> impl Strategy<Value = SeriesSpec> {
    (
        prop::collection::btree_map(name(), value(), 1..4),
        // Chunks: (time delta ≥ 1, value) samples; zero chunks = series left out.
        prop::collection::vec(
            prop::collection::vec((1i64..100_000, any::<f64>()), 1..25),
            0..4,
        ),
    )
}

/// (kind, name pick, value pick or pattern).
type MatcherSpec = (u8, Index, Index, u8);

fn build(specs: Vec<SeriesSpec>) -> Vec<TestSeries> {
    let mut by_labels: BTreeMap<Labels, Vec<Vec<(i64, f64)>>> = BTreeMap::new();
    for (pairs, chunks) in specs {
        by_labels.insert(Labels::from_pairs(pairs), chunks);
    }
    by_labels
        .into_iter()
        .map(|(labels, chunks)| {
            let mut t = -50_000i64;
            let mut out = Vec::new();
            for c in chunks {
                let samples: Vec<(i64, f64)> = c
                    .into_iter()
                    .map(|(dt, v)| {
                        t += dt;
                        (t, v)
                    })
                    .collect();
                let s = TestSeries::from_samples(labels.clone(), &samples, usize::MAX);
                out.extend(s.chunks);
            }
            TestSeries {
                labels,
                chunks: out,
            }
        })
        .collect()
}

fn matcher(spec: &MatcherSpec, names: &[String], values: &[String]) -> Matcher {
    let (kind, ni, vi, pat) = spec;
    let kind = [
        MatchType::Equal,
        MatchType::NotEqual,
        MatchType::Regex,
        MatchType::NotRegex,
    ][(*kind % 4) as usize];
    let name = if names.is_empty() || *pat % 7 == 0 {
        "absent".to_string()
    } else {
        ni.get(names).clone()
    };
    let value = if kind.is_regex() {
        [".*", ".+", "", "[a-b].*", "x|a|b", "(?i)X"][(*pat % 6) as usize].to_string()
    } else if values.is_empty() || *pat % 5 == 0 {
        String::new()
    } else {
        vi.get(values).clone()
    };
    Matcher::new(kind, name, value).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn written_blocks_read_back_and_match_like_brute_force(
        specs in prop::collection::vec(series_spec(), 0..20),
        segment_size in 64u64..2048,
        matchers in prop::collection::vec(
            prop::collection::vec((any::<u8>(), any::<Index>(), any::<Index>(), any::<u8>()), 0..3),
            1..6,
        ),
    ) {
        let series = build(specs);
        let written: Vec<&TestSeries> = series.iter().filter(|s| !s.chunks.is_empty()).collect();
        let maxt = written
            .iter()
            .filter_map(|s| s.chunks.last().map(|c| c.1))
            .max()
            .unwrap_or(0);
        let dir = tempfile::tempdir().unwrap();
        let ulid = Ulid::new(1, [7; 10]);
        let input: Vec<NewSeries<'_>> = series.iter().map(TestSeries::as_new).collect();
        let meta = BlockWriter { segment_size }
            .write(dir.path(), ulid, -50_000, maxt + 1, Compaction::level1(ulid), &input)
            .unwrap();
        prop_assert_eq!(meta.stats.num_series, written.len() as u64);

        let block = Block::open(&dir.path().join(ulid.to_string())).unwrap();
        prop_assert_eq!(block.meta(), &meta);
        let read: Vec<_> = block.series().unwrap().map(Result::unwrap).collect();
        prop_assert_eq!(read.len(), written.len());
        for (r, w) in read.iter().zip(&written) {
            prop_assert_eq!(&r.labels, &w.labels);
            prop_assert_eq!(r.chunks.len(), w.chunks.len());
            for (rc, wc) in r.chunks.iter().zip(&w.chunks) {
                prop_assert_eq!((rc.meta.mint, rc.meta.maxt), (wc.0, wc.1));
                prop_assert_eq!(rc.data, wc.2.as_slice());
                prop_assert_eq!(rc.encoding, 1);
            }
        }

        // Label names and values.
        let ix = block.index();
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in &written {
            for (n, v) in s.labels.iter() {
                names.entry(n.to_string()).or_default().insert(v.to_string());
            }
        }
        let got_names: Vec<String> = ix.label_names().iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(&got_names, &names.keys().cloned().collect::<Vec<_>>());
        for (n, vs) in &names {
            let got: Vec<String> = ix.label_values(n).iter().map(|s| s.to_string()).collect();
            prop_assert_eq!(got, vs.iter().cloned().collect::<Vec<_>>());
        }

        // Matchers against a brute-force filter.
        let all_names: Vec<String> = names.keys().cloned().collect();
        let all_values: Vec<String> = names.values().flatten().cloned().collect();
        for ms in &matchers {
            let ms: Vec<Matcher> = ms.iter().map(|m| matcher(m, &all_names, &all_values)).collect();
            let ids = ix.postings_for_matchers(&ms).unwrap();
            let got: Vec<Labels> = ids.iter().map(|&id| ix.series(id).unwrap().labels).collect();
            let want: Vec<Labels> = written
                .iter()
                .filter(|s| matches_labels(&ms, &s.labels))
                .map(|s| s.labels.clone())
                .collect();
            prop_assert_eq!(got, want, "matchers {:?}", ms);
        }
    }
}
