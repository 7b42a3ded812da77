//! Our hand-written protobuf codec against prost (messages written from the spec) as an oracle:
//! any `WriteRequest` prost encodes decodes to the same labels and sample bits (fast paths for
//! the common layouts and the general path alike), fields in unusual order or repeated decode as
//! protobuf says, and arbitrary bytes never panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use cairn::remote::write::decode;
use common::proto::{Exemplar, Histogram, Label, Sample, TimeSeries, WriteRequest};
use proptest::prelude::*;

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,12}",
        // Long enough for multi-byte lengths (≥ 128 bytes), and non-ASCII.
        "[a-zA-Z0-9 äöü日本]{100,200}",
    ]
}

fn series() -> impl Strategy<Value = TimeSeries> {
    (
        prop::collection::vec((string(), string()), 0..6),
        prop::collection::vec((any::<i64>(), any::<u64>()), 0..4),
        0..3usize,
        0..3usize,
    )
        .prop_map(|(labels, samples, exemplars, histograms)| TimeSeries {
            labels: labels.into_iter().map(|(n, v)| Label::new(n, v)).collect(),
            samples: samples
                .into_iter()
                .map(|(t, bits)| Sample {
                    timestamp: t,
                    value: f64::from_bits(bits),
                })
                .collect(),
            exemplars: (0..exemplars)
                .map(|i| Exemplar {
                    labels: vec![Label::new("trace_id", "t")],
                    value: i as f64,
                    timestamp: i as i64,
                })
                .collect(),
            histograms: (0..histograms)
                .map(|i| Histogram {
                    timestamp: i as i64,
                    schema: 1,
                    ..Histogram::default()
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decodes_what_prost_encodes(ts in prop::collection::vec(series(), 0..5)) {
        let req = WriteRequest { timeseries: ts, ..WriteRequest::default() };
        let bytes = prost::Message::encode_to_vec(&req);
        let batch = decode(&bytes).unwrap();
        let with_samples: Vec<&TimeSeries> =
            req.timeseries.iter().filter(|t| !t.samples.is_empty()).collect();
        prop_assert_eq!(batch.num_series(), with_samples.len());
        // Histograms and exemplars are counted (they are refused, not stored, for now).
        let count = |f: fn(&TimeSeries) -> usize| req.timeseries.iter().map(f).sum::<usize>() as u64;
        prop_assert_eq!(batch.unsupported.histograms, count(|t| t.histograms.len()));
        prop_assert_eq!(batch.unsupported.exemplars, count(|t| t.exemplars.len()));
        for (i, want) in with_samples.iter().enumerate() {
            let (labels, samples) = batch.series(i);
            let got: Vec<(String, String)> = labels
                .iter()
                .map(|(n, v)| (String::from_utf8(n.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()))
                .collect();
            let exp: Vec<(String, String)> =
                want.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
            prop_assert_eq!(got, exp);
            let got: Vec<(i64, u64)> = samples.iter().map(|s| (s.t, s.v.to_bits())).collect();
            // proto3 drops a value that compares equal to 0.0, so -0.0 arrives as +0.0.
            let exp: Vec<(i64, u64)> = want
                .samples
                .iter()
                .map(|s| (s.timestamp, if s.value == 0.0 { 0 } else { s.value.to_bits() }))
                .collect();
            prop_assert_eq!(got, exp);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes);
    }
}

#[test]
fn unusual_field_order_and_repeats_follow_protobuf_rules() {
    // Label with value before name; Sample with timestamp before value and the value twice
    // (the last one wins); an unknown field (7) skipped.
    let label = [0x12, 0x01, b'v', 0x0a, 0x01, b'n'];
    let mut sample = vec![0x10, 0x05, 0x09];
    sample.extend_from_slice(&1.0f64.to_bits().to_le_bytes());
    sample.push(0x09);
    sample.extend_from_slice(&2.0f64.to_bits().to_le_bytes());
    sample.extend_from_slice(&[0x38, 0x01]);
    let mut ts = vec![0x0a, label.len() as u8];
    ts.extend_from_slice(&label);
    ts.extend_from_slice(&[0x12, sample.len() as u8]);
    ts.extend_from_slice(&sample);
    let mut req = vec![0x0a, ts.len() as u8];
    req.extend_from_slice(&ts);
    let batch = decode(&req).unwrap();
    let (labels, samples) = batch.series(0);
    assert_eq!(labels, &[(&b"n"[..], &b"v"[..])]);
    assert_eq!((samples[0].t, samples[0].v), (5, 2.0));
}
