//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod blocks;
pub mod faults;
pub mod http;
pub mod om;
pub mod peer;
pub mod procs;
pub mod proto;
pub mod server;
pub mod tls;

use std::collections::BTreeMap;

use cairn::model::{MatchType, Matcher};
use cairn::tsdb::{AppendSeries, Db, Sample};

/// Owned label pairs for series `i` of a test set (sorted by name).
pub fn series_labels(i: usize) -> Vec<(String, String)> {
    vec![
        ("__name__".to_string(), format!("metric_{}", i % 7)),
        ("instance".to_string(), format!("host-{i}")),
        ("job".to_string(), "test".to_string()),
    ]
}

/// Append one batch: `(series index, samples)` pairs.
pub fn append(
    db: &Db,
    batch: &[(usize, Vec<Sample>)],
) -> Result<cairn::tsdb::AppendReport, cairn::tsdb::AppendError> {
    let owned: Vec<Vec<(String, String)>> = batch.iter().map(|(i, _)| series_labels(*i)).collect();
    let borrowed: Vec<Vec<(&str, &str)>> = owned
        .iter()
        .map(|ls| ls.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect())
        .collect();
    let series: Vec<AppendSeries<'_>> = borrowed
        .iter()
        .zip(batch)
        .map(|(ls, (_, s))| AppendSeries {
            labels: ls,
            samples: s,
        })
        .collect();
    db.append(&series)
}

/// Every sample in the database: label set (as text) → [(t, value bits)].
pub fn dump(db: &Db) -> BTreeMap<String, Vec<(i64, u64)>> {
    // Matches every series, those without `__name__` included.
    let all = Matcher::new(MatchType::NotEqual, "__no_such_label__", "x").unwrap();
    let mut out = BTreeMap::new();
    for s in db.select(&[all], i64::MIN, i64::MAX).unwrap() {
        let samples = s.samples(i64::MIN, i64::MAX).unwrap();
        out.insert(
            format!("{}", s.labels),
            samples.iter().map(|x| (x.t, x.v.to_bits())).collect(),
        );
    }
    out
}

/// Deterministic value for (series, timestamp), with special floats mixed in.
pub fn value(i: usize, t: i64) -> f64 {
    match (i as i64 + t / 1000) % 11 {
        0 => f64::NAN,
        1 => f64::from_bits(0x7ff0_0000_0000_0002), // stale marker
        2 => f64::INFINITY,
        3 => -0.0,
        _ => (i as f64) * 1000.0 + (t as f64) / 7.0,
    }
}

pub fn label_text(i: usize) -> String {
    let ls = series_labels(i);
    cairn::model::Labels::from_pairs(ls).to_string()
}
