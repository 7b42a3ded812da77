#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Golden test: XOR chunks written by Prometheus 2.42 itself.
//!
//! The fixtures in `tests/fixtures/chunks/` were produced with promtool
//! 2.42.0 (Debian `2.42.0+ds-5+deb12u1`, go1.19.8):
//!
//! ```sh
//! cd tests/fixtures/chunks
//! python3 gen_metrics.py > metrics.om      # deterministic generator
//! promtool tsdb create-blocks-from openmetrics metrics.om /tmp/blk
//! cp /tmp/blk/01M7ZSK21PFE020YB522RYFSCY/chunks/000001 000001
//! cp /tmp/blk/01M7ZSK21PFE020YB522RYFSCY/index index
//! cp /tmp/blk/01M7ZSK21PFE020YB522RYFSCY/meta.json meta.json
//! ```
//!
//! promtool reported: 1 block, 5 series, 1500 samples, 14 chunks. The `index`
//! and `meta.json` are kept for the index reader's tests; this test only
//! needs `metrics.om` and `000001`, and does not need promtool.
//!
//! For every chunk in the segment file the test checks the CRC-32C, decodes it
//! with [`XorIterator`], re-encodes the decoded samples with [`XorChunk`] and
//! requires identical bytes, and requires the decoded samples, concatenated
//! per series in label-set order, to equal the OpenMetrics input bit for bit.

mod common;

use cairn::tsdb::chunkenc::{Encoding, XorChunk, XorIterator};
use common::om::{fixture, parse_openmetrics, GO_NAN};

const SEGMENT_MAGIC: u32 = 0x85BD_40DD;
const EXPECTED_CHUNKS: usize = 14;
const EXPECTED_SAMPLES: usize = 1500;
const EXPECTED_SERIES: usize = 5;

/// Bitwise CRC-32C (Castagnoli), reflected polynomial 0x82F63B78.
fn crc32c(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[test]
fn crc32c_check_value() {
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
}

fn read_uvarint(data: &[u8], pos: &mut usize) -> u64 {
    let mut x = 0u64;
    let mut s = 0;
    loop {
        let b = data[*pos];
        *pos += 1;
        x |= u64::from(b & 0x7f) << s;
        if b < 0x80 {
            return x;
        }
        s += 7;
        assert!(s < 64, "varint too long");
    }
}

/// Parses a chunk segment file into (encoding byte, chunk data) pairs.
fn parse_segment(file: &[u8]) -> Vec<(u8, &[u8])> {
    assert_eq!(
        u32::from_be_bytes(file[0..4].try_into().unwrap()),
        SEGMENT_MAGIC
    );
    assert_eq!(file[4], 1, "segment format version");
    assert_eq!(&file[5..8], &[0, 0, 0], "header padding");
    let mut pos = 8;
    let mut chunks = vec![];
    while pos < file.len() {
        let len = read_uvarint(file, &mut pos) as usize;
        let enc = file[pos];
        let data = &file[pos + 1..pos + 1 + len];
        let crc = u32::from_be_bytes(file[pos + 1 + len..pos + 5 + len].try_into().unwrap());
        assert_eq!(
            crc32c(&file[pos..pos + 1 + len]),
            crc,
            "chunk at {pos}: CRC"
        );
        chunks.push((enc, data));
        pos += 1 + len + 4;
    }
    assert_eq!(pos, file.len());
    chunks
}

#[test]
fn prometheus_chunks_decode_and_reencode_bit_exact() {
    let file = std::fs::read(fixture("000001")).unwrap();
    let om = std::fs::read_to_string(fixture("metrics.om")).unwrap();
    let expected = parse_openmetrics(&om);
    assert_eq!(expected.len(), EXPECTED_SERIES);
    assert_eq!(
        expected.values().map(Vec::len).sum::<usize>(),
        EXPECTED_SAMPLES
    );

    let chunks = parse_segment(&file);
    assert_eq!(chunks.len(), EXPECTED_CHUNKS);

    // Series are written in label-set order (BTreeMap order here, which
    // equals Prometheus's label comparison for these ASCII label sets), with
    // the chunks of one series contiguous.
    let mut series_iter = expected.iter();
    let (mut labels, mut want) = series_iter.next().unwrap();
    let mut offset = 0usize;
    let mut total = 0usize;
    let mut per_series_chunks = vec![0usize];

    for (i, &(enc, data)) in chunks.iter().enumerate() {
        assert_eq!(Encoding::from_u8(enc), Some(Encoding::Xor), "chunk {i}");

        // (a) decode
        let mut it = XorIterator::new(data).unwrap();
        let n = it.num_samples() as usize;
        let got: Vec<(i64, u64)> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(it.err(), None, "chunk {i}");
        assert_eq!(got.len(), n, "chunk {i}");
        assert!(n > 0 && n <= 65535);

        // (b) re-encode: identical bytes, trailing byte included.
        let mut c = XorChunk::new();
        for &(t, v) in &got {
            c.append(t, f64::from_bits(v));
        }
        assert_eq!(c.bytes(), data, "chunk {i}: re-encoded bytes differ");

        // (c) the samples continue the current series, or start the next.
        if offset == want.len() {
            let (l, w) = series_iter.next().expect("more chunks than series");
            labels = l;
            want = w;
            offset = 0;
            per_series_chunks.push(0);
        }
        assert!(
            offset + n <= want.len(),
            "chunk {i} straddles the end of series {labels:?}"
        );
        for (j, (g, w)) in got.iter().zip(&want[offset..offset + n]).enumerate() {
            assert_eq!(
                g,
                w,
                "series {labels:?} sample {}: got ({}, {:#x}) want ({}, {:#x})",
                offset + j,
                g.0,
                g.1,
                w.0,
                w.1
            );
        }
        offset += n;
        total += n;
        *per_series_chunks.last_mut().unwrap() += 1;
    }

    assert_eq!(offset, want.len(), "last series incomplete");
    assert!(series_iter.next().is_none(), "series without chunks");
    assert_eq!(total, EXPECTED_SAMPLES);
    assert_eq!(per_series_chunks.len(), EXPECTED_SERIES);
}

#[test]
fn fixture_exercises_interesting_cases() {
    // Guards against a regenerated fixture silently losing coverage.
    let om = std::fs::read_to_string(fixture("metrics.om")).unwrap();
    let series = parse_openmetrics(&om);
    let all: Vec<u64> = series.values().flatten().map(|&(_, v)| v).collect();
    assert!(all.contains(&GO_NAN));
    assert!(all.contains(&f64::INFINITY.to_bits()));
    assert!(all.contains(&f64::NEG_INFINITY.to_bits()));
    assert!(all.contains(&(-0.0f64).to_bits()));
    assert!(all
        .iter()
        .any(|&v| f64::from_bits(v) < 0.0 && f64::from_bits(v).fract() != 0.0));
    // Millisecond jitter and a gap larger than 30 minutes.
    let ts: Vec<i64> = series.values().flatten().map(|&(t, _)| t).collect();
    assert!(ts.iter().any(|t| t % 1000 != 0));
    assert!(series
        .values()
        .any(|s| s.windows(2).any(|w| w[1].0 - w[0].0 > 30 * 60 * 1000)));

    // Each series is contiguous and in timestamp order (required by the TSDB).
    for s in series.values() {
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
