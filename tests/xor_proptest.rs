#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests for XOR chunks: round trips over arbitrary timestamps and
//! value bits, byte equality with a literal per-bit transcription of
//! Prometheus's Go appender, and panic-freedom on arbitrary bytes.

use cairn::tsdb::chunkenc::{DecodeError, XorChunk, XorIterator};
use proptest::prelude::*;

const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

/// Interesting value bits: NaN payloads, stale marker, infinities, zeros.
fn special_bits() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(STALE_NAN),
        Just(f64::NAN.to_bits()),
        Just(0x7ff8_0000_0000_0001), // Go's math.NaN()
        Just(0xfff8_0000_0000_0000),
        Just(0x7ff0_0000_0000_0001), // signalling NaN
        Just(0xffff_ffff_ffff_ffff),
        Just(f64::INFINITY.to_bits()),
        Just(f64::NEG_INFINITY.to_bits()),
        Just((-0.0f64).to_bits()),
        Just(0u64),
        Just(1u64),
        Just(0x8000_0000_0000_0001),
        (0x7ff0_0000_0000_0001u64..=0x7fff_ffff_ffff_ffff), // any NaN
    ]
}

/// A value relative to the previous one, to exercise window reuse.
#[derive(Clone, Debug)]
enum V {
    Bits(u64),
    Same,
    Flip(u64),
    Add(f64),
}

fn value_op() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => any::<u64>().prop_map(V::Bits),
        2 => special_bits().prop_map(V::Bits),
        2 => Just(V::Same),
        2 => (0u32..64, 1u32..8).prop_map(|(s, w)| V::Flip(((1u64 << w) - 1).rotate_left(s))),
        3 => (-1000i32..1000).prop_map(|x| V::Add(x as f64 * 0.25)),
    ]
}

fn apply(ops: &[V]) -> Vec<u64> {
    let mut prev = 0u64;
    ops.iter()
        .map(|op| {
            prev = match *op {
                V::Bits(b) => b,
                V::Same => prev,
                V::Flip(m) => prev ^ m,
                V::Add(d) => (f64::from_bits(prev) + d).to_bits(),
            };
            prev
        })
        .collect()
}

/// Timestamp deltas: mostly regular, sometimes huge or negative.
fn delta() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => Just(15_000i64),
        4 => 14_990i64..15_010,
        2 => 0i64..2_000_000,
        1 => -600_000i64..600_000,
        1 => any::<i64>(),
        1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(0i64), Just(1i64), Just(-1i64)],
    ]
}

/// Sorted timestamps built from non-negative deltas that never overflow.
fn sorted_timestamps(n: usize) -> impl Strategy<Value = Vec<i64>> {
    (
        any::<i64>(),
        proptest::collection::vec(
            prop_oneof![4 => 0i64..30_000, 1 => 0i64..(1 << 40), 1 => 0i64..i64::MAX],
            n,
        ),
    )
        .prop_map(|(start, deltas)| {
            let mut t = start;
            deltas
                .into_iter()
                .map(|d| {
                    t = t.saturating_add(d);
                    t
                })
                .collect()
        })
}

/// Arbitrary (unsorted) timestamps from deltas with wrapping arithmetic, as
/// Go computes them; the codec must round-trip these too.
fn wrapping_timestamps(n: usize) -> impl Strategy<Value = Vec<i64>> {
    (any::<i64>(), proptest::collection::vec(delta(), n)).prop_map(|(start, deltas)| {
        let mut t = start;
        deltas
            .into_iter()
            .map(|d| {
                t = t.wrapping_add(d);
                t
            })
            .collect()
    })
}

fn samples() -> impl Strategy<Value = Vec<(i64, u64)>> {
    (1usize..=240).prop_flat_map(|n| {
        (
            prop_oneof![sorted_timestamps(n), wrapping_timestamps(n)],
            proptest::collection::vec(value_op(), n),
            // Force at least one special value in a random position.
            (0..n, special_bits()),
        )
            .prop_map(|(ts, ops, (pos, special))| {
                let mut vs = apply(&ops);
                vs[pos] = special;
                ts.into_iter().zip(vs).collect()
            })
    })
}

/// Literal transcription of Go's `bstream` writer and `xorAppender`, one bit
/// at a time, used as an oracle for the byte layout.
mod go {
    #[derive(Default)]
    pub struct Bstream {
        pub stream: Vec<u8>,
        count: u8,
    }

    impl Bstream {
        fn write_bit(&mut self, bit: bool) {
            if self.count == 0 {
                self.stream.push(0);
                self.count = 8;
            }
            let i = self.stream.len() - 1;
            if bit {
                self.stream[i] |= 1 << (self.count - 1);
            }
            self.count -= 1;
        }

        fn write_byte(&mut self, byt: u8) {
            if self.count == 0 {
                self.stream.push(0);
                self.count = 8;
            }
            let i = self.stream.len() - 1;
            // Go's byte shifts by 8 yield 0.
            self.stream[i] |= (u16::from(byt) >> (8 - self.count)) as u8;
            self.stream.push((u16::from(byt) << self.count) as u8);
        }

        fn write_bits(&mut self, u: u64, nbits: u32) {
            let mut u = u << (64 - nbits);
            let mut nbits = nbits;
            while nbits >= 8 {
                self.write_byte((u >> 56) as u8);
                u <<= 8;
                nbits -= 8;
            }
            while nbits > 0 {
                self.write_bit((u >> 63) == 1);
                u <<= 1;
                nbits -= 1;
            }
        }
    }

    fn put_uvarint(mut x: u64) -> Vec<u8> {
        let mut out = vec![];
        while x >= 0x80 {
            out.push(x as u8 | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
        out
    }

    fn bit_range(x: i64, nbits: u32) -> bool {
        -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
    }

    pub fn encode(samples: &[(i64, u64)]) -> Vec<u8> {
        let mut b = Bstream {
            stream: vec![0, 0],
            count: 0,
        };
        let (mut t_prev, mut v_prev, mut t_delta_prev) = (0i64, 0u64, 0u64);
        let (mut leading, mut trailing) = (0xffu8, 0u8);
        for (num, &(t, v)) in samples.iter().enumerate() {
            let mut t_delta = 0u64;
            if num == 0 {
                let zz = ((t << 1) ^ (t >> 63)) as u64;
                for byte in put_uvarint(zz) {
                    b.write_byte(byte);
                }
                b.write_bits(v, 64);
            } else {
                t_delta = t.wrapping_sub(t_prev) as u64;
                if num == 1 {
                    for byte in put_uvarint(t_delta) {
                        b.write_byte(byte);
                    }
                } else {
                    let dod = t_delta.wrapping_sub(t_delta_prev) as i64;
                    if dod == 0 {
                        b.write_bit(false);
                    } else if bit_range(dod, 14) {
                        b.write_bits(0b10, 2);
                        b.write_bits(dod as u64, 14);
                    } else if bit_range(dod, 17) {
                        b.write_bits(0b110, 3);
                        b.write_bits(dod as u64, 17);
                    } else if bit_range(dod, 20) {
                        b.write_bits(0b1110, 4);
                        b.write_bits(dod as u64, 20);
                    } else {
                        b.write_bits(0b1111, 4);
                        b.write_bits(dod as u64, 64);
                    }
                }
                // writeVDelta
                let delta = v ^ v_prev;
                if delta == 0 {
                    b.write_bit(false);
                } else {
                    b.write_bit(true);
                    let mut lz = delta.leading_zeros() as u8;
                    let tz = delta.trailing_zeros() as u8;
                    if lz >= 32 {
                        lz = 31;
                    }
                    if leading != 0xff && lz >= leading && tz >= trailing {
                        b.write_bit(false);
                        b.write_bits(
                            delta >> trailing,
                            64 - u32::from(leading) - u32::from(trailing),
                        );
                    } else {
                        leading = lz;
                        trailing = tz;
                        b.write_bit(true);
                        b.write_bits(u64::from(lz), 5);
                        let sig = 64 - lz - tz;
                        b.write_bits(u64::from(sig), 6);
                        b.write_bits(delta >> tz, u32::from(sig));
                    }
                }
            }
            t_prev = t;
            v_prev = v;
            t_delta_prev = t_delta;
            let n = (num + 1) as u16;
            b.stream[..2].copy_from_slice(&n.to_be_bytes());
        }
        b.stream
    }
}

fn encode(samples: &[(i64, u64)]) -> XorChunk {
    let mut c = XorChunk::new();
    for &(t, v) in samples {
        c.append(t, f64::from_bits(v));
    }
    c
}

/// Decodes everything, asserting that each element returned is consistent
/// with the error state. Never panics on any input.
/// Decoded samples (timestamp, value bits) and the iterator's error, if any.
type Decoded = (Vec<(i64, u64)>, Option<DecodeError>);

fn decode_all(data: &[u8]) -> Result<Decoded, DecodeError> {
    let mut it = XorIterator::new(data)?;
    let n = it.num_samples();
    let out: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
    let err = it.err().cloned();
    assert!(out.len() <= n as usize);
    if err.is_none() {
        assert_eq!(out.len(), n as usize);
    }
    // Fused and sticky.
    assert_eq!(it.next(), None);
    Ok((out, err))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_bits(samples in samples()) {
        let c = encode(&samples);
        prop_assert_eq!(c.num_samples() as usize, samples.len());
        let (got, err) = decode_all(c.bytes()).unwrap();
        prop_assert_eq!(err, None);
        prop_assert_eq!(got, samples.clone());
        // Iterating twice from the chunk gives the same.
        prop_assert_eq!(c.iter().count(), samples.len());
    }

    #[test]
    fn bytes_match_go_transcription(samples in samples()) {
        let c = encode(&samples);
        let want = go::encode(&samples);
        prop_assert_eq!(c.bytes(), &want[..]);
    }

    #[test]
    fn bytes_match_go_after_every_append(samples in proptest::collection::vec((delta(), value_op()), 1..40)) {
        let mut t = 0i64;
        let ts: Vec<i64> = samples.iter().map(|(d, _)| { t = t.wrapping_add(*d); t }).collect();
        let ops: Vec<V> = samples.into_iter().map(|(_, v)| v).collect();
        let all: Vec<(i64, u64)> = ts.into_iter().zip(apply(&ops)).collect();
        let mut c = XorChunk::new();
        for i in 0..all.len() {
            c.append(all[i].0, f64::from_bits(all[i].1));
            prop_assert_eq!(c.bytes(), &go::encode(&all[..=i])[..]);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        match decode_all(&data) {
            Ok(_) => {}
            Err(e) => {
                prop_assert_eq!(e, DecodeError::TooShort);
                prop_assert!(data.len() < 2);
            }
        }
    }

    #[test]
    fn decoding_corrupted_chunks_never_panics(
        samples in samples(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
        cut in any::<prop::sample::Index>(),
        header in any::<u16>(),
    ) {
        let c = encode(&samples);
        let mut data = c.bytes().to_vec();
        for (idx, bit) in flips {
            let i = idx.index(data.len());
            data[i] ^= 1 << bit;
        }
        let _ = decode_all(&data);
        let len = cut.index(data.len() + 1);
        let _ = decode_all(&data[..len]);
        data[..2].copy_from_slice(&header.to_be_bytes());
        let _ = decode_all(&data);
    }

    #[test]
    fn truncated_chunk_is_error_or_prefix(samples in samples(), cut in any::<prop::sample::Index>()) {
        let c = encode(&samples);
        let bytes = c.bytes();
        let len = cut.index(bytes.len());
        match decode_all(&bytes[..len]) {
            Err(e) => prop_assert_eq!(e, DecodeError::TooShort),
            Ok((got, err)) => {
                // Whatever was decoded is a correct prefix.
                prop_assert_eq!(&got[..], &samples[..got.len()]);
                if got.len() < samples.len() {
                    let is_end = matches!(err, Some(DecodeError::UnexpectedEnd { .. }));
                    prop_assert!(is_end);
                } else {
                    // Only the padding / empty trailing byte was cut.
                    prop_assert_eq!(len + 1, bytes.len());
                }
            }
        }
    }
}
