//! WAL record codec (Prometheus `tsdb/record/record.go`, format digest §4.9).
//!
//! A record is opaque bytes to the segment layer; its first byte is the type. Fixed-width
//! integers are big-endian; sample and tombstone deltas are *signed* varints (the upstream doc
//! says unsigned; the code, which we follow, writes `PutVarint`).
//!
//! ```text
//! Series     (1): ( BE u64 ref, uvarint n, n × (uvarint len, name, uvarint len, value) )*
//! Samples    (2): BE u64 baseRef, BE u64 baseT, ( varint ref-baseRef, varint t-baseT, BE u64 bits )*
//! Tombstones (3): ( BE u64 ref, varint mint, varint maxt )*
//! ```
//! Other record types are skipped by the replayer and counted ([`RecordsNotKept`]): Prometheus
//! 3.x writes exemplars (4), mmap markers of its out-of-order head (5), metadata (6) and native
//! histograms (7–10) that cairn does not keep yet, and the open log names what was skipped.
//! Decoders never trust a count before checking it against the bytes left.

use crate::model::Labels;
use crate::tsdb::encoding::{put_uvarint, put_varint, VarintError};

pub const SERIES: u8 = 1;
pub const SAMPLES: u8 = 2;
pub const TOMBSTONES: u8 = 3;
pub const EXEMPLARS: u8 = 4;
pub const METADATA: u8 = 6;
/// Integer and float histograms, exponential (7, 8) and custom-bucket (9, 10).
pub const HISTOGRAM_TYPES: std::ops::RangeInclusive<u8> = 7..=10;

/// WAL records of kinds cairn does not keep yet, counted by replay so the loss is reported.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordsNotKept {
    /// Native histogram sample records (types 7–10).
    pub histograms: u64,
    /// Exemplar records (type 4).
    pub exemplars: u64,
    /// Metadata records (type 6).
    pub metadata: u64,
    /// Any other non-empty record (mmap markers, types of later versions).
    pub other: u64,
}

impl RecordsNotKept {
    /// Count one skipped record of type `t`.
    pub fn count(&mut self, t: u8) {
        let c = match t {
            EXEMPLARS => &mut self.exemplars,
            METADATA => &mut self.metadata,
            t if HISTOGRAM_TYPES.contains(&t) => &mut self.histograms,
            _ => &mut self.other,
        };
        *c += 1;
    }

    /// Whether any record holding data (not only markers) was skipped.
    pub fn any_data(&self) -> bool {
        self.histograms + self.exemplars + self.metadata > 0
    }
}

/// A sample as the WAL stores it: series ref, timestamp (ms), float value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefSample {
    pub sref: u64,
    pub t: i64,
    pub v: f64,
}

/// A deleted closed interval [mint, maxt] of one series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stone {
    pub sref: u64,
    pub mint: i64,
    pub maxt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("empty record")]
    Empty,
    #[error("record type {found}, expected {expected}")]
    WrongType { expected: u8, found: u8 },
    #[error("record truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("varint overflows 64 bits at byte {offset}")]
    VarintOverflow { offset: usize },
    #[error("label string is not UTF-8 at byte {offset}")]
    NotUtf8 { offset: usize },
    #[error("series ref 0 is invalid at byte {offset}")]
    ZeroRef { offset: usize },
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Append a Series record for `series` to `out` (which should be empty or a record boundary).
pub fn encode_series<'a>(out: &mut Vec<u8>, series: impl IntoIterator<Item = (u64, &'a Labels)>) {
    out.push(SERIES);
    for (sref, labels) in series {
        put_series_entry(out, sref, labels.len(), labels.iter());
    }
}

/// Append one series (ref and label pairs sorted by name, as [`decode_series`] hands them out)
/// to a Series record whose type byte is already in `out`. Lets a filter re-encode the series
/// it keeps without building [`Labels`].
pub fn encode_series_entry(out: &mut Vec<u8>, sref: u64, labels: &[(&str, &str)]) {
    put_series_entry(out, sref, labels.len(), labels.iter().copied());
}

fn put_series_entry<'a>(
    out: &mut Vec<u8>,
    sref: u64,
    n: usize,
    labels: impl Iterator<Item = (&'a str, &'a str)>,
) {
    out.extend_from_slice(&sref.to_be_bytes());
    put_uvarint(out, n as u64);
    for (name, value) in labels {
        put_str(out, name);
        put_str(out, value);
    }
}

/// Append a Samples record. `samples` must not be empty.
pub fn encode_samples(out: &mut Vec<u8>, samples: &[RefSample]) {
    out.push(SAMPLES);
    let Some(first) = samples.first() else { return };
    out.extend_from_slice(&first.sref.to_be_bytes());
    out.extend_from_slice(&(first.t as u64).to_be_bytes());
    for s in samples {
        put_varint(out, s.sref.wrapping_sub(first.sref) as i64);
        put_varint(out, s.t.wrapping_sub(first.t));
        out.extend_from_slice(&s.v.to_bits().to_be_bytes());
    }
}

pub fn encode_tombstones(out: &mut Vec<u8>, stones: &[Stone]) {
    out.push(TOMBSTONES);
    for s in stones {
        out.extend_from_slice(&s.sref.to_be_bytes());
        put_varint(out, s.mint);
        put_varint(out, s.maxt);
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Sticky-position decoder over a record's bytes.
struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    fn done(&self) -> bool {
        self.pos >= self.b.len()
    }
    fn be64(&mut self) -> Result<u64, RecordError> {
        let end = self.pos + 8;
        let bytes = self
            .b
            .get(self.pos..end)
            .ok_or(RecordError::Truncated { offset: self.pos })?;
        let mut a = [0u8; 8];
        a.copy_from_slice(bytes);
        self.pos = end;
        Ok(u64::from_be_bytes(a))
    }
    fn uvarint(&mut self) -> Result<u64, RecordError> {
        let offset = self.pos;
        let rest = self.b.get(self.pos..).unwrap_or_default();
        match crate::tsdb::encoding::read_uvarint(rest) {
            Ok((x, n)) => {
                self.pos += n;
                Ok(x)
            }
            Err(VarintError::Truncated) => Err(RecordError::Truncated { offset }),
            Err(VarintError::Overflow) => Err(RecordError::VarintOverflow { offset }),
        }
    }
    fn varint(&mut self) -> Result<i64, RecordError> {
        self.uvarint().map(crate::tsdb::encoding::unzigzag)
    }
    fn str(&mut self) -> Result<&'a str, RecordError> {
        let start = self.pos;
        let n = self.uvarint()?;
        let left = (self.b.len() - self.pos) as u64;
        if n > left {
            return Err(RecordError::Truncated { offset: start });
        }
        let end = self.pos + n as usize;
        let bytes = self
            .b
            .get(self.pos..end)
            .ok_or(RecordError::Truncated { offset: start })?;
        self.pos = end;
        std::str::from_utf8(bytes).map_err(|_| RecordError::NotUtf8 { offset: start })
    }
}

fn check_type(rec: &[u8], expected: u8) -> Result<Dec<'_>, RecordError> {
    match rec.first() {
        None => Err(RecordError::Empty),
        Some(&t) if t != expected => Err(RecordError::WrongType { expected, found: t }),
        Some(_) => Ok(Dec { b: rec, pos: 1 }),
    }
}

/// Decode a Series record, calling `f(ref, sorted label pairs)` for each series. `scratch` is
/// reused between series so decoding allocates nothing per series.
pub fn decode_series<'a>(
    rec: &'a [u8],
    scratch: &mut Vec<(&'a str, &'a str)>,
    mut f: impl FnMut(u64, &[(&'a str, &'a str)]),
) -> Result<(), RecordError> {
    let mut d = check_type(rec, SERIES)?;
    while !d.done() {
        let at = d.pos;
        let sref = d.be64()?;
        if sref == 0 {
            return Err(RecordError::ZeroRef { offset: at });
        }
        let n = d.uvarint()?;
        // Each label takes at least two bytes: check before reserving.
        if n > ((rec.len() - d.pos) / 2) as u64 {
            return Err(RecordError::Truncated { offset: d.pos });
        }
        scratch.clear();
        for _ in 0..n {
            let name = d.str()?;
            let value = d.str()?;
            scratch.push((name, value));
        }
        f(sref, scratch);
    }
    Ok(())
}

/// Decode a Samples record, appending to `out`.
pub fn decode_samples(rec: &[u8], out: &mut Vec<RefSample>) -> Result<(), RecordError> {
    let mut d = check_type(rec, SAMPLES)?;
    if d.done() {
        return Ok(());
    }
    let base_ref = d.be64()?;
    let base_t = d.be64()? as i64;
    // Every sample takes at least 10 bytes.
    out.reserve((rec.len() - d.pos) / 10);
    while !d.done() {
        let dref = d.varint()?;
        let dt = d.varint()?;
        let bits = d.be64()?;
        out.push(RefSample {
            sref: base_ref.wrapping_add(dref as u64),
            t: base_t.wrapping_add(dt),
            v: f64::from_bits(bits),
        });
    }
    Ok(())
}

pub fn decode_tombstones(rec: &[u8], out: &mut Vec<Stone>) -> Result<(), RecordError> {
    let mut d = check_type(rec, TOMBSTONES)?;
    while !d.done() {
        let sref = d.be64()?;
        let mint = d.varint()?;
        let maxt = d.varint()?;
        out.push(Stone { sref, mint, maxt });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn series_record_round_trips_and_matches_prometheus_layout() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        let mut out = Vec::new();
        encode_series(&mut out, [(7u64, &a)]);
        let mut want = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 7, 2];
        want.extend_from_slice(b"\x08__name__\x02up\x03job\x01x");
        assert_eq!(out, want);
        let mut got = Vec::new();
        let mut scratch = Vec::new();
        decode_series(&out, &mut scratch, |r, ls| {
            got.push((r, Labels::from_sorted_pairs(ls.iter().copied())))
        })
        .unwrap();
        assert_eq!(got, vec![(7, a)]);
    }

    #[test]
    fn a_series_entry_encodes_exactly_as_encode_series() {
        let a = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        let b = Labels::from_pairs([("a", "1")]);
        let mut want = Vec::new();
        encode_series(&mut want, [(7u64, &a), (9u64, &b)]);
        let mut got = vec![SERIES];
        encode_series_entry(&mut got, 7, &[("__name__", "up"), ("job", "x")]);
        encode_series_entry(&mut got, 9, &[("a", "1")]);
        assert_eq!(got, want);
    }

    #[test]
    fn samples_record_uses_signed_deltas() {
        let s = [
            RefSample {
                sref: 10,
                t: 1000,
                v: 1.0,
            },
            RefSample {
                sref: 9,
                t: 999,
                v: f64::from_bits(0x7ff0000000000002),
            },
        ];
        let mut out = Vec::new();
        encode_samples(&mut out, &s);
        // header + base ref + base t, then (0,0,bits), then (-1 → 1, -1 → 1, bits)
        assert_eq!(&out[17..19], &[0, 0]);
        assert_eq!(&out[27..29], &[1, 1]);
        let mut got = Vec::new();
        decode_samples(&out, &mut got).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].v.to_bits(), 0x7ff0000000000002);
        assert_eq!((got[1].sref, got[1].t), (9, 999));
    }

    #[test]
    fn truncated_and_hostile_records_are_errors_not_panics() {
        let a = Labels::from_pairs([("a", "b")]);
        let mut out = Vec::new();
        encode_series(&mut out, [(1u64, &a)]);
        // A bare type byte is a valid, empty record; every longer prefix is truncated.
        for cut in 2..out.len() {
            let r = decode_series(&out[..cut], &mut Vec::new(), |_, _| {});
            assert!(r.is_err(), "cut at {cut} decoded");
        }
        // A label count claiming 2^60 labels must not allocate.
        let mut evil = vec![SERIES, 0, 0, 0, 0, 0, 0, 0, 1];
        put_uvarint(&mut evil, 1 << 60);
        assert!(matches!(
            decode_series(&evil, &mut Vec::new(), |_, _| {}),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            decode_samples(&[TOMBSTONES], &mut Vec::new()),
            Err(RecordError::WrongType { .. })
        ));
        assert!(matches!(
            decode_samples(&[], &mut Vec::new()),
            Err(RecordError::Empty)
        ));
        // Invalid UTF-8 in a label.
        let evil = [SERIES, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0xff, 1, b'x'];
        assert!(matches!(
            decode_series(&evil, &mut Vec::new(), |_, _| {}),
            Err(RecordError::NotUtf8 { .. })
        ));
    }

    proptest! {
        #[test]
        fn samples_round_trip(raw in proptest::collection::vec((1u64..u64::MAX, any::<i64>(), any::<u64>()), 1..200)) {
            let samples: Vec<_> = raw.iter().map(|&(sref, t, bits)| RefSample { sref, t, v: f64::from_bits(bits) }).collect();
            let mut out = Vec::new();
            encode_samples(&mut out, &samples);
            let mut got = Vec::new();
            decode_samples(&out, &mut got).unwrap();
            prop_assert_eq!(got.len(), samples.len());
            for (g, s) in got.iter().zip(&samples) {
                prop_assert_eq!((g.sref, g.t, g.v.to_bits()), (s.sref, s.t, s.v.to_bits()));
            }
        }

        #[test]
        fn tombstones_round_trip(raw in proptest::collection::vec((any::<u64>(), any::<i64>(), any::<i64>()), 0..50)) {
            let stones: Vec<_> = raw.iter().map(|&(sref, mint, maxt)| Stone { sref, mint, maxt }).collect();
            let mut out = Vec::new();
            encode_tombstones(&mut out, &stones);
            let mut got = Vec::new();
            decode_tombstones(&out, &mut got).unwrap();
            prop_assert_eq!(got, stones);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_series(&b, &mut Vec::new(), |_, _| {});
            let _ = decode_samples(&b, &mut Vec::new());
            let _ = decode_tombstones(&b, &mut Vec::new());
        }
    }
}
