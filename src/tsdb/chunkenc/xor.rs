//! XOR (Gorilla) float chunks, bit-exact with Prometheus 2.42's `xor.go`.
//!
//! See the [module docs](super) for the bit layout.

use super::bstream::{BitReader, BitWriter};
use super::{DecodeError, Encoding};

/// Initial capacity of a chunk's byte buffer, as in Prometheus.
const INITIAL_CAPACITY: usize = 128;

/// Marks "no value window yet" in the appender (Go's `leading = 0xff`).
const NO_WINDOW: u8 = 0xff;

/// An XOR-encoded float chunk being appended to.
#[derive(Clone, Debug)]
pub struct XorChunk {
    b: BitWriter,
    /// Last appended timestamp.
    t: i64,
    /// Bits of the last appended value.
    v: u64,
    /// Last timestamp delta (wrapping).
    t_delta: u64,
    /// Current value window: leading zeros (`NO_WINDOW` before the first
    /// window is written) and trailing zeros.
    leading: u8,
    trailing: u8,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    /// An empty chunk: a zero sample count header and a 128-byte buffer.
    pub fn new() -> Self {
        let mut stream = Vec::with_capacity(INITIAL_CAPACITY);
        stream.extend_from_slice(&[0, 0]);
        XorChunk {
            b: BitWriter::new(stream),
            t: 0,
            v: 0,
            t_delta: 0,
            leading: NO_WINDOW,
            trailing: 0,
        }
    }

    /// The chunk's encoding, always [`Encoding::Xor`].
    pub fn encoding(&self) -> Encoding {
        Encoding::Xor
    }

    /// Appends a sample. The caller guarantees that timestamps are appended
    /// in order and that the chunk holds fewer than 65535 samples; neither is
    /// checked in release builds (out-of-order timestamps still round-trip,
    /// exactly as in Prometheus; the count wraps like Go's `uint16`).
    pub fn append(&mut self, t: i64, v: f64) {
        let num = self.num_samples();
        debug_assert!(num < u16::MAX, "XOR chunk is full");
        let v = v.to_bits();
        let mut t_delta = 0u64;

        match num {
            0 => {
                let mut buf = [0u8; MAX_VARINT_LEN];
                let n = put_uvarint(&mut buf, zigzag(t));
                for &byte in &buf[..n] {
                    self.b.write_byte(byte);
                }
                self.b.write_bits(v, 64);
            }
            1 => {
                t_delta = t.wrapping_sub(self.t) as u64;
                let mut buf = [0u8; MAX_VARINT_LEN];
                let n = put_uvarint(&mut buf, t_delta);
                for &byte in &buf[..n] {
                    self.b.write_byte(byte);
                }
                self.write_v_delta(v, 0, 0);
            }
            _ => {
                t_delta = t.wrapping_sub(self.t) as u64;
                let dod = t_delta.wrapping_sub(self.t_delta) as i64;
                // Go writes the bucket prefix and the payload with two
                // writeBits calls. Neither width is a multiple of 8 (except
                // the 64-bit payload), so they act like writeBit calls and
                // are merged here with the value's control bits.
                let (prefix, plen) = if dod == 0 {
                    (0, 1)
                } else if bit_range(dod, 14) {
                    ((0b10 << 14) | (dod as u64 & ((1 << 14) - 1)), 16)
                } else if bit_range(dod, 17) {
                    ((0b110 << 17) | (dod as u64 & ((1 << 17) - 1)), 20)
                } else if bit_range(dod, 20) {
                    ((0b1110 << 20) | (dod as u64 & ((1 << 20) - 1)), 24)
                } else {
                    self.b.write_bits_unpadded(0b1111, 4);
                    self.b.write_bits(dod as u64, 64);
                    (0, 0)
                };
                self.write_v_delta(v, prefix, plen);
            }
        }

        self.t = t;
        self.v = v;
        self.t_delta = t_delta;
        let count = num.wrapping_add(1).to_be_bytes();
        self.b.bytes_mut()[..2].copy_from_slice(&count);
    }

    /// Writes the XOR value, preceded by `plen` (<= 24) bits of `prefix`
    /// that Go writes with `writeBit`-like calls.
    #[inline]
    fn write_v_delta(&mut self, v: u64, prefix: u64, plen: u32) {
        let delta = v ^ self.v;
        if delta == 0 {
            self.b.write_bits_unpadded(prefix << 1, plen + 1);
            return;
        }
        // Clamp leading zeros to what fits in 5 bits.
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;

        if self.leading != NO_WINDOW && leading >= self.leading && trailing >= self.trailing {
            // Control bits `10`, then the delta inside the existing window.
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.b
                .write_prefixed((prefix << 2) | 0b10, plen + 2, delta >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            // Control bits `11`, 5 bits of leading zeros, 6 bits of
            // significant bits (64 is written as 0). Go writes these with
            // calls narrower than 8 bits, so they merge with the prefix.
            let header = (0b11 << 11) | (u64::from(leading) << 6) | u64::from(sig & 63);
            self.b
                .write_prefixed((prefix << 13) | header, plen + 13, delta >> trailing, sig);
        }
    }

    /// Number of samples, read from the header.
    pub fn num_samples(&self) -> u16 {
        let b = self.b.bytes();
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The encoded chunk, exactly as Prometheus would store it.
    pub fn bytes(&self) -> &[u8] {
        self.b.bytes()
    }

    /// Consumes the chunk and returns its encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.b.into_inner()
    }

    /// An iterator over the samples of this chunk.
    pub fn iter(&self) -> XorIterator<'_> {
        let b = self.b.bytes();
        XorIterator::with_header(u16::from_be_bytes([b[0], b[1]]), &b[2..])
    }

    /// Heap memory held by the chunk: the capacity of its byte buffer.
    pub fn heap_size(&self) -> usize {
        self.b.capacity()
    }

    /// Releases unused buffer capacity when it exceeds the length by more
    /// than 32 bytes (Prometheus's `Compact`). Appending afterwards is fine.
    pub fn compact(&mut self) {
        if self.b.capacity() > self.b.bytes().len() + 32 {
            self.b.shrink_to_fit();
        }
    }
}

impl<'a> IntoIterator for &'a XorChunk {
    type Item = (i64, f64);
    type IntoIter = XorIterator<'a>;

    fn into_iter(self) -> XorIterator<'a> {
        self.iter()
    }
}

/// `bitRange` from Prometheus: whether `x` fits the `nbits` dod bucket,
/// i.e. `-(2^(nbits-1) - 1) <= x <= 2^(nbits-1)`.
#[inline]
fn bit_range(x: i64, nbits: u32) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= x && x <= half
}

const MAX_VARINT_LEN: usize = 10;

/// Go's zig-zag mapping used by `binary.PutVarint`.
#[inline]
fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

/// Go's `binary.PutUvarint`; returns the number of bytes written.
#[inline]
fn put_uvarint(buf: &mut [u8; MAX_VARINT_LEN], mut x: u64) -> usize {
    let mut i = 0;
    while x >= 0x80 && i < MAX_VARINT_LEN - 1 {
        buf[i] = (x as u8) | 0x80;
        x >>= 7;
        i += 1;
    }
    buf[i] = x as u8;
    i + 1
}

/// Decodes the samples of an XOR chunk.
///
/// Works on any byte slice: the number of samples comes from the 2-byte
/// header, and if the data ends early, iteration stops and [`err`](Self::err)
/// reports why. Bytes after the last sample are ignored.
#[derive(Clone, Debug)]
pub struct XorIterator<'a> {
    br: BitReader<'a>,
    num_total: u16,
    num_read: u16,
    /// Samples to decode: `num_total`, or `num_read` once an error occurred.
    end: u16,
    t: i64,
    /// Bits of the current value.
    val: u64,
    t_delta: u64,
    /// Current value window: significant bits (1..=64) and the shift of the
    /// window's lowest bit. `mask` is zero when a window read from the data
    /// does not fit in 64 bits: Go's arithmetic then shifts by a value >= 64,
    /// XOR-ing in zero, and this mirrors it.
    mbits: u32,
    shift: u32,
    mask: u64,
    err: Option<DecodeError>,
}

impl<'a> XorIterator<'a> {
    /// An iterator over a chunk's bytes (header included). Fails only when
    /// `data` is shorter than the 2-byte header.
    pub fn new(data: &'a [u8]) -> Result<Self, DecodeError> {
        match data {
            [hi, lo, rest @ ..] => Ok(Self::with_header(u16::from_be_bytes([*hi, *lo]), rest)),
            _ => Err(DecodeError::TooShort),
        }
    }

    fn with_header(num_total: u16, body: &'a [u8]) -> Self {
        XorIterator {
            br: BitReader::new(body),
            num_total,
            num_read: 0,
            end: num_total,
            t: 0,
            val: 0,
            t_delta: 0,
            mbits: 64,
            shift: 0,
            mask: u64::MAX,
            err: None,
        }
    }

    /// Number of samples announced by the header.
    pub fn num_samples(&self) -> u16 {
        self.num_total
    }

    /// The error that stopped iteration, if any.
    pub fn err(&self) -> Option<&DecodeError> {
        self.err.as_ref()
    }

    #[cold]
    fn fail(&mut self, e: DecodeError) -> Option<(i64, f64)> {
        self.err = Some(e);
        self.end = self.num_read;
        None
    }

    /// Decodes the varint-coded first two samples.
    #[cold]
    fn next_head(&mut self) -> Option<(i64, f64)> {
        let sample = self.num_read;
        let ux = match read_uvarint(&mut self.br) {
            Ok(x) => x,
            Err(VarintError::End) => return self.fail(DecodeError::UnexpectedEnd { sample }),
            Err(VarintError::Overflow) => return self.fail(DecodeError::VarintOverflow { sample }),
        };
        if sample == 0 {
            // Zig-zag decode (Go's ReadVarint).
            let t = ((ux >> 1) as i64) ^ -((ux & 1) as i64);
            let Some(v) = self.br.read_bits(64) else {
                return self.fail(DecodeError::UnexpectedEnd { sample });
            };
            self.t = t;
            self.val = v;
        } else {
            self.t_delta = ux;
            self.t = self.t.wrapping_add(ux as i64);
            if self.read_value().is_none() {
                return self.fail(DecodeError::UnexpectedEnd { sample });
            }
        }
        self.num_read += 1;
        Some((self.t, f64::from_bits(self.val)))
    }

    /// Decodes one delta-of-delta timestamp and XOR value.
    ///
    /// Prefixes are decoded from a peek at the buffered bits. Every read is
    /// still bounds checked: prefix bits peeked past the end of the data
    /// read as zero, which always makes the following checked read fail.
    #[inline(always)]
    fn read_sample(&mut self) -> Option<()> {
        // The number of leading ones selects the bucket (at most 4 count).
        let ones = (!self.br.peek(24)).leading_zeros();
        let dod: i64 = match ones {
            0 => {
                self.br.read_bits(1)?;
                0
            }
            1 => sign_extend(self.br.read_bits(2 + 14)?, 14),
            2 => sign_extend(self.br.read_bits(3 + 17)?, 17),
            3 => sign_extend(self.br.read_bits(4 + 20)?, 20),
            _ => {
                self.br.read_bits(4)?;
                self.br.read_bits(64)? as i64
            }
        };
        self.t_delta = (self.t_delta as i64).wrapping_add(dod) as u64;
        self.t = self.t.wrapping_add(self.t_delta as i64);
        self.read_value()
    }

    #[inline(always)]
    fn read_value(&mut self) -> Option<()> {
        // `0`: unchanged; `10`: reuse window; `11` + 5 bits leading zeros +
        // 6 bits significant bits: new window.
        let peek = self.br.peek(13);
        if peek >> 63 == 0 {
            self.br.read_bits(1)?;
            return Some(());
        }
        if peek >> 62 == 0b10 {
            self.br.read_bits(2)?;
        } else {
            let header = self.br.read_bits(13)? as u32;
            let leading = (header >> 6) & 0x1f;
            let mut mbits = header & 0x3f;
            if mbits == 0 {
                mbits = 64;
            }
            self.mbits = mbits;
            // Go computes the shift as uint8(64 - leading - mbits); when
            // that wraps the shift is >= 64 and XORs in zero.
            let fits = leading + mbits <= 64;
            self.shift = if fits { 64 - leading - mbits } else { 0 };
            self.mask = if fits { u64::MAX } else { 0 };
        }
        let bits = self.br.read_bits(self.mbits)?;
        // shift + mbits <= 64, so the shift is in range.
        self.val ^= (bits << self.shift) & self.mask;
        Some(())
    }
}

/// Interprets the low `sz` bits of `x` as Prometheus does: values above
/// `2^(sz-1)` are negative. `sz == 0` gives 0.
#[inline(always)]
fn sign_extend(x: u64, sz: u32) -> i64 {
    let bits = (x & ((1u64 << sz) - 1)) as i64;
    let half = (1i64 << sz) >> 1;
    bits - if bits > half { 1i64 << sz } else { 0 }
}

enum VarintError {
    End,
    Overflow,
}

/// Go's `binary.ReadUvarint` over the bit reader.
fn read_uvarint(br: &mut BitReader<'_>) -> Result<u64, VarintError> {
    let mut x = 0u64;
    let mut s = 0u32;
    for i in 0..MAX_VARINT_LEN {
        let b = br.read_byte().ok_or(VarintError::End)?;
        if b < 0x80 {
            if i == MAX_VARINT_LEN - 1 && b > 1 {
                return Err(VarintError::Overflow);
            }
            return Ok(x | (u64::from(b) << s));
        }
        x |= u64::from(b & 0x7f) << s;
        s += 7;
    }
    Err(VarintError::Overflow)
}

impl Iterator for XorIterator<'_> {
    type Item = (i64, f64);

    #[inline]
    fn next(&mut self) -> Option<(i64, f64)> {
        if self.num_read >= self.end {
            return None;
        }
        if self.num_read < 2 {
            return self.next_head();
        }
        if self.read_sample().is_none() {
            let sample = self.num_read;
            return self.fail(DecodeError::UnexpectedEnd { sample });
        }
        self.num_read += 1;
        Some((self.t, f64::from_bits(self.val)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(usize::from(self.end - self.num_read)))
    }
}

impl std::iter::FusedIterator for XorIterator<'_> {}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn encode(samples: &[(i64, f64)]) -> XorChunk {
        let mut c = XorChunk::new();
        for &(t, v) in samples {
            c.append(t, v);
        }
        c
    }

    fn decode(bytes: &[u8]) -> Vec<(i64, u64)> {
        let mut it = XorIterator::new(bytes).unwrap();
        let out: Vec<_> = it.by_ref().map(|(t, v)| (t, v.to_bits())).collect();
        assert_eq!(it.err(), None);
        out
    }

    fn assert_round_trip(samples: &[(i64, f64)]) -> XorChunk {
        let c = encode(samples);
        let want: Vec<_> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
        assert_eq!(decode(c.bytes()), want);
        assert_eq!(c.num_samples() as usize, samples.len());
        c
    }

    #[test]
    fn empty_chunk() {
        let c = XorChunk::new();
        assert_eq!(c.bytes(), &[0, 0]);
        assert_eq!(c.num_samples(), 0);
        assert_eq!(c.heap_size(), 128);
        assert_eq!(c.iter().count(), 0);
        assert_eq!(c.encoding(), Encoding::Xor);
    }

    #[test]
    fn one_sample_bytes() {
        // t = 1000 -> zigzag 2000 -> uvarint d0 0f; 1.5 = 0x3ff8000000000000.
        let c = encode(&[(1000, 1.5)]);
        assert_eq!(
            c.bytes(),
            &[0x00, 0x01, 0xd0, 0x0f, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0x00]
        );
        assert_eq!(c.bytes().len(), 2 + 2 + 8 + 1);
        // Negative timestamp: -1 -> zigzag 1.
        let c = encode(&[(-1, 0.0)]);
        assert_eq!(c.bytes(), &[0, 1, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(c.bytes()), vec![(-1, 0)]);
    }

    #[test]
    fn two_sample_bytes() {
        // t1 - t0 = 15000 -> uvarint 98 75.
        // 1.5 ^ 2.5 = 0x3ff8.. ^ 0x4004.. = 0x7ffc000000000000:
        // lz 1, tz 50, sig 13. Bits: 1 1 00001 001101 1111111111110
        let c = encode(&[(1000, 1.5), (16000, 2.5)]);
        let mut want = vec![0x00, 0x02, 0xd0, 0x0f, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0];
        // uvarint bytes written on a boundary, each leaving the trailing byte.
        want.extend_from_slice(&[0x98, 0x75]);
        // 1100 0010 0110 1111 1111 1111 1100 0000
        want.extend_from_slice(&[0xc2, 0x6f, 0xff, 0xc0]);
        assert_eq!(c.bytes(), &want[..]);
        assert_eq!(
            decode(c.bytes()),
            vec![(1000, 1.5f64.to_bits()), (16000, 2.5f64.to_bits())]
        );
    }

    #[test]
    fn identical_values_and_regular_interval_are_one_bit_each() {
        let samples: Vec<_> = (0..10).map(|i| (i * 15_000, 7.0)).collect();
        let c = assert_round_trip(&samples);
        // Sample 0: 1-byte varint + 8 bytes; sample 1: 2-byte uvarint, then
        // 1 value bit + 8 samples x (dod 0 + value 0) = 17 bits, starting in
        // the empty trailing byte left by the byte writes: 3 bytes.
        assert_eq!(c.bytes().len(), 2 + 1 + 8 + 2 + 3);
    }

    fn skip_bits(r: &mut BitReader<'_>, mut n: u32) {
        while n > 0 {
            let k = n.min(64);
            r.read_bits(k).unwrap();
            n -= k;
        }
    }

    /// Encodes t0, t0 + d, t0 + 2d + dod and returns (bytes, the dod bits).
    fn dod_chunk(dod: i64) -> XorChunk {
        let d = 1_000_000i64;
        assert_round_trip(&[(0, 1.0), (d, 1.0), (2 * d + dod, 1.0)])
    }

    /// Reads the third sample's timestamp prefix and payload from the chunk.
    fn dod_encoding(c: &XorChunk) -> (u64, u32, u64) {
        // Sample 0: varint(0)=1 byte + 8 bytes value; sample 1: uvarint(1e6)=3
        // bytes + 1 bit value. Byte writes leave a trailing byte but the next
        // bit goes into it, so the third sample starts at bit offset
        // (1 + 8 + 3) * 8 + 1 of the body.
        let mut r = BitReader::new(&c.bytes()[2..]);
        skip_bits(&mut r, 12 * 8 + 1);
        let mut prefix = 0u64;
        let mut plen = 0u32;
        while plen < 4 {
            let b = r.read_bit().unwrap();
            prefix = (prefix << 1) | u64::from(b);
            plen += 1;
            if !b {
                break;
            }
        }
        let sz = match (prefix, plen) {
            (0b0, 1) => 0,
            (0b10, 2) => 14,
            (0b110, 3) => 17,
            (0b1110, 4) => 20,
            (0b1111, 4) => 64,
            _ => unreachable!(),
        };
        let payload = if sz == 0 { 0 } else { r.read_bits(sz).unwrap() };
        (prefix, sz, payload)
    }

    #[test]
    fn dod_bucket_boundaries() {
        let cases: &[(i64, u32)] = &[
            (0, 0),
            (1, 14),
            (-1, 14),
            (8192, 14),
            (-8191, 14),
            (8193, 17),
            (-8192, 17),
            (65536, 17),
            (-65535, 17),
            (65535, 17),
            (65537, 20),
            (-65536, 20),
            (524288, 20),
            (-524287, 20),
            (524287, 20),
            (524289, 64),
            (-524288, 64),
            (i64::MAX / 4, 64),
            (i64::MIN / 4, 64),
        ];
        for &(dod, want_sz) in cases {
            let c = dod_chunk(dod);
            let (_, sz, payload) = dod_encoding(&c);
            assert_eq!(sz, want_sz, "dod {dod}");
            if sz > 0 {
                let mask = if sz == 64 { u64::MAX } else { (1 << sz) - 1 };
                assert_eq!(payload, dod as u64 & mask, "dod {dod}");
            }
        }
    }

    #[test]
    fn bit_range_matches_prometheus() {
        assert!(bit_range(8192, 14) && bit_range(-8191, 14));
        assert!(!bit_range(8193, 14) && !bit_range(-8192, 14));
        assert!(bit_range(65536, 17) && bit_range(-65535, 17));
        assert!(!bit_range(65537, 17) && !bit_range(-65536, 17));
        assert!(bit_range(524288, 20) && bit_range(-524287, 20));
        assert!(!bit_range(524289, 20) && !bit_range(-524288, 20));
    }

    #[test]
    fn leading_zero_clamp() {
        // delta = 1 has 63 leading zeros: written with lz = 31, sig = 33.
        let a = 1.0f64;
        let b = f64::from_bits(a.to_bits() ^ 1);
        let c = assert_round_trip(&[(0, a), (10, b)]);
        // Sample 0: 1 + 8 bytes (+trailing), sample 1: 1-byte uvarint
        // (+trailing), then 1 1 11111 100001 and 33 bits of 0..01.
        let body = &c.bytes()[2..];
        let mut r = BitReader::new(body);
        skip_bits(&mut r, 10 * 8);
        assert_eq!(r.read_bits(2), Some(0b11));
        assert_eq!(r.read_bits(5), Some(31));
        assert_eq!(r.read_bits(6), Some(33));
        assert_eq!(r.read_bits(33), Some(1));

        // Exactly 32 leading zeros is clamped too.
        let d = f64::from_bits(a.to_bits() ^ 0x0000_0000_8000_0000);
        let c = assert_round_trip(&[(0, a), (10, d), (20, a), (30, d)]);
        let mut r = BitReader::new(&c.bytes()[2..]);
        skip_bits(&mut r, 10 * 8);
        assert_eq!(r.read_bits(2), Some(0b11));
        assert_eq!(r.read_bits(5), Some(31));
        assert_eq!(r.read_bits(6), Some(2)); // 64 - 31 - 31
    }

    #[test]
    fn sigbits_64_written_as_zero() {
        // delta with both the top and the bottom bit set: lz = tz = 0.
        let a = 0.0f64;
        let b = f64::from_bits(0x8000_0000_0000_0001);
        let c = assert_round_trip(&[(0, a), (1, b), (2, a), (3, b)]);
        let mut r = BitReader::new(&c.bytes()[2..]);
        skip_bits(&mut r, 10 * 8);
        assert_eq!(r.read_bits(2), Some(0b11));
        assert_eq!(r.read_bits(5), Some(0));
        assert_eq!(r.read_bits(6), Some(0));
        assert_eq!(r.read_bits(64), Some(0x8000_0000_0000_0001));
        // Next samples reuse the 64-bit window: dod 0, then `10` + 64 bits.
        assert_eq!(r.read_bits(1), Some(0));
        assert_eq!(r.read_bits(2), Some(0b10));
        assert_eq!(r.read_bits(64), Some(0x8000_0000_0000_0001));
    }

    #[test]
    fn window_reuse_and_reset() {
        let c = assert_round_trip(&[
            (0, 1.0),
            (1, 1.5),  // new window
            (2, 1.25), // fits? decided by the encoder; round trip checks it
            (3, 1e300),
            (4, -1e-300),
            (5, f64::NAN),
            (6, f64::NEG_INFINITY),
            (7, 0.0),
            (8, -0.0),
        ]);
        assert_eq!(c.num_samples(), 9);
    }

    #[test]
    fn special_values_round_trip() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let nan_payload = f64::from_bits(0xfff8_dead_beef_0001);
        assert_round_trip(&[
            (i64::MIN, stale),
            (0, f64::INFINITY),
            (1, nan_payload),
            (2, -0.0),
            (3, stale),
            (i64::MAX, f64::NAN),
        ]);
    }

    #[test]
    fn extreme_timestamps_wrap_like_go() {
        // Deltas that overflow i64 wrap in Go; the decoder wraps back.
        assert_round_trip(&[(i64::MAX, 1.0), (i64::MIN, 2.0), (i64::MAX, 3.0), (0, 4.0)]);
        assert_round_trip(&[(i64::MIN, 1.0), (i64::MAX, 1.0), (i64::MIN, 1.0)]);
    }

    #[test]
    fn count_header_rewritten() {
        let mut c = XorChunk::new();
        for i in 0..300 {
            c.append(i * 1000, i as f64);
            assert_eq!(c.num_samples(), (i + 1) as u16);
            assert_eq!(&c.bytes()[..2], &((i + 1) as u16).to_be_bytes());
        }
        assert!(c.heap_size() >= c.bytes().len());
    }

    fn sample_chunk() -> XorChunk {
        let mut samples = vec![];
        let mut t = 1_672_531_200_000i64;
        let mut v = 0.0f64;
        for i in 0..50i64 {
            t += 15_000 + (i * 7919) % 13 - 6;
            if i == 20 {
                t += 3_600_000;
            }
            if i == 30 {
                t += i64::MAX / 3;
            }
            v += ((i * 31) % 17) as f64 * 0.37;
            let val = match i % 11 {
                3 => f64::NAN,
                7 => -v,
                _ => v,
            };
            samples.push((t, val));
        }
        assert_round_trip(&samples)
    }

    #[test]
    fn truncated_data_errors_at_every_length() {
        let c = sample_chunk();
        let bytes = c.bytes();
        for len in 0..bytes.len() {
            let data = &bytes[..len];
            if len < 2 {
                assert_eq!(XorIterator::new(data).err(), Some(DecodeError::TooShort));
                continue;
            }
            let mut it = XorIterator::new(data).unwrap();
            let n = it.by_ref().count();
            // Truncation can only be invisible when just the trailing zero
            // padding bits (or the empty trailing byte) are cut.
            match it.err() {
                Some(DecodeError::UnexpectedEnd { sample }) => {
                    assert_eq!(*sample as usize, n, "len {len}");
                    assert!(n < 50);
                    assert_eq!(it.next(), None, "error must be sticky");
                }
                None => assert!(len + 1 >= bytes.len(), "len {len} decoded fully"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn bytes_after_last_sample_are_ignored() {
        let c = sample_chunk();
        let mut data = c.bytes().to_vec();
        data.extend_from_slice(&[0xff; 16]);
        let want = decode(c.bytes());
        assert_eq!(decode(&data), want);
    }

    #[test]
    fn count_header_drives_decoding() {
        let c = sample_chunk();
        let mut data = c.bytes().to_vec();
        data[..2].copy_from_slice(&10u16.to_be_bytes());
        let got = decode(&data);
        assert_eq!(got.len(), 10);
        assert_eq!(got[..], decode(c.bytes())[..10]);
        data[..2].copy_from_slice(&0u16.to_be_bytes());
        assert!(decode(&data).is_empty());
        // More samples announced than present: an error, not a panic.
        data[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        let mut it = XorIterator::new(&data).unwrap();
        assert!(it.by_ref().count() >= 50);
        assert!(it.err().is_some());
    }

    #[test]
    fn varint_overflow() {
        let mut data = vec![0, 1];
        data.extend_from_slice(&[0xff; 10]);
        data.extend_from_slice(&[0; 9]);
        let mut it = XorIterator::new(&data).unwrap();
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), Some(&DecodeError::VarintOverflow { sample: 0 }));
        // 10th byte > 1 overflows too.
        let mut data = vec![0, 1];
        data.extend_from_slice(&[0x80; 9]);
        data.push(0x02);
        data.extend_from_slice(&[0; 9]);
        let mut it = XorIterator::new(&data).unwrap();
        assert_eq!(it.next(), None);
        assert_eq!(it.err(), Some(&DecodeError::VarintOverflow { sample: 0 }));
    }

    #[test]
    fn oversized_window_mirrors_go() {
        // Sample 1 with a window header claiming lz 31 and 64 significant
        // bits (impossible for the encoder). Go shifts by a wrapped uint8
        // (>= 64) and XORs in zero; so do we.
        let mut w = BitWriter::new(vec![0, 2]);
        w.write_byte(0); // t0 = 0
        w.write_bits(1.0f64.to_bits(), 64);
        w.write_byte(5); // delta 5
        w.write_bits_unpadded(0b11, 2);
        w.write_bits_unpadded(31, 5);
        w.write_bits_unpadded(0, 6);
        w.write_bits(u64::MAX, 64);
        let got = decode(w.bytes());
        assert_eq!(got, vec![(0, 1.0f64.to_bits()), (5, 1.0f64.to_bits())]);
    }

    #[test]
    fn compact_releases_capacity() {
        let mut c = encode(&[(0, 1.0), (1, 2.0)]);
        assert_eq!(c.heap_size(), 128);
        c.compact();
        assert_eq!(c.heap_size(), c.bytes().len());
        c.append(2, 3.0);
        assert_eq!(decode(c.bytes()).len(), 3);
    }
}
