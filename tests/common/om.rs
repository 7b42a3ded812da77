//! The golden fixture `tests/fixtures/chunks/metrics.om`: a minimal OpenMetrics parser for the
//! subset `gen_metrics.py` writes (no escapes, no exemplars), with Prometheus's conversions.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Go's `math.NaN()`, which is what the OpenMetrics parser returns for `NaN`.
pub const GO_NAN: u64 = 0x7ff8_0000_0000_0001;

/// One series per label set (sorted pairs, `__name__` included) → samples (t ms, value bits).
pub type Series = BTreeMap<Vec<(String, String)>, Vec<(i64, u64)>>;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chunks")
        .join(name)
}

pub fn parse_labels(series: &str) -> Vec<(String, String)> {
    let (name, rest) = match series.split_once('{') {
        Some((n, r)) => (n, r.strip_suffix('}').expect("closing brace")),
        None => (series, ""),
    };
    let mut labels = vec![("__name__".to_string(), name.to_string())];
    for pair in rest.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').expect("label pair");
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .expect("quoted");
        assert!(!v.contains('\\'), "escapes not supported by this parser");
        labels.push((k.to_string(), v.to_string()));
    }
    labels.sort();
    labels
}

pub fn parse_value(s: &str) -> u64 {
    match s {
        "NaN" => GO_NAN,
        "+Inf" | "Inf" => f64::INFINITY.to_bits(),
        "-Inf" => f64::NEG_INFINITY.to_bits(),
        _ => s.parse::<f64>().expect("float").to_bits(),
    }
}

/// Prometheus's OpenMetrics parser: `int64(ts * 1000)` on the float seconds.
pub fn parse_timestamp(s: &str) -> i64 {
    let secs: f64 = s.parse().expect("timestamp");
    (secs * 1000.0) as i64
}

pub fn parse_openmetrics(text: &str) -> Series {
    let mut series = Series::new();
    let mut saw_eof = false;
    for line in text.lines() {
        assert!(!saw_eof, "content after # EOF");
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (s, v, t) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert!(parts.next().is_none(), "unexpected field: {line}");
        series
            .entry(parse_labels(s))
            .or_default()
            .push((parse_timestamp(t), parse_value(v)));
    }
    assert!(saw_eof, "missing # EOF");
    series
}

/// The fixture's samples.
pub fn fixture_series() -> Series {
    parse_openmetrics(&std::fs::read_to_string(fixture("metrics.om")).unwrap())
}
