//! Bit streams, MSB first, byte-compatible with Prometheus's `bstream`.
//!
//! [`BitWriter`] mirrors Go's `bstream{stream, count}` exactly, including the
//! trailing empty byte `writeByte` leaves behind when it starts on a byte
//! boundary. [`BitReader`] is a fast 64-bit buffered reader over an arbitrary,
//! possibly truncated or hostile, byte slice.

/// A bit writer reproducing Go's `bstream` byte layout.
///
/// `count` is Go's `bstream.count`: how many right-most bits of the last byte
/// are still free. It ranges over `0..=8`; `8` means the last byte is an empty
/// byte appended by a byte write (Go's `writeByte` always appends).
///
/// Two kinds of writes exist:
/// * [`write_bits`](Self::write_bits) / [`write_byte`](Self::write_byte)
///   have the exact semantics of one Go `writeBits` / `writeByte` call.
/// * [`write_bits_unpadded`](Self::write_bits_unpadded) writes bits the way a
///   sequence of Go `writeBit` calls would. It is equivalent to any sequence
///   of Go `writeBits` calls whose widths are all below 8 (or not multiples
///   of 8), and is used to merge such calls.
#[derive(Clone, Debug, Default)]
pub struct BitWriter {
    stream: Vec<u8>,
    count: u8,
}

impl BitWriter {
    /// Wraps `stream`, like Go's `bstream{stream: stream, count: 0}`: the next
    /// bit goes into a new byte.
    pub fn new(stream: Vec<u8>) -> Self {
        BitWriter { stream, count: 0 }
    }

    /// The written bytes.
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.stream
    }

    /// Mutable access to the written bytes (e.g. to patch a header). Changing
    /// the length breaks the writer's invariants; only overwrite bytes.
    #[inline]
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.stream
    }

    /// Go's `bstream.count`: free bits in the last byte (0..=8).
    #[inline]
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Capacity of the underlying buffer in bytes.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.stream.capacity()
    }

    /// Shrinks the buffer's capacity to its length.
    pub fn shrink_to_fit(&mut self) {
        self.stream.shrink_to_fit();
    }

    /// Returns the written bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.stream
    }

    /// Go's `writeBit`.
    #[inline]
    pub fn write_bit(&mut self, bit: bool) {
        self.write_bits_unpadded(u64::from(bit), 1);
    }

    /// Go's `writeByte`.
    #[inline]
    pub fn write_byte(&mut self, byte: u8) {
        self.write_bits(u64::from(byte), 8);
    }

    /// One Go `writeBits(u, nbits)` call: writes the `nbits` right-most bits
    /// of `u` (higher bits are ignored), `nbits <= 64`.
    ///
    /// Go writes `nbits / 8` bytes with `writeByte` and the rest with
    /// `writeBit`. When that starts on a byte boundary with `nbits` a
    /// non-zero multiple of 8, Go leaves an extra empty byte at the end, and
    /// so does this.
    #[inline]
    pub fn write_bits(&mut self, u: u64, nbits: u32) {
        let aligned = self.count == 0 || self.count == 8;
        self.write_bits_unpadded(u, nbits);
        if aligned && nbits >= 8 && nbits & 7 == 0 {
            // Contiguous writing ended on a byte boundary (count == 0); Go's
            // last writeByte appended one more byte.
            self.stream.push(0);
            self.count = 8;
        }
    }

    /// Writes `plen` bits of `prefix` as Go `writeBit` calls would, then
    /// `n` bits of `u` as one Go `writeBits(u, n)` call, in a single write
    /// when they fit in 64 bits. `prefix` must not have bits above `plen`.
    #[inline]
    pub fn write_prefixed(&mut self, prefix: u64, plen: u32, u: u64, n: u32) {
        debug_assert!(plen <= 64 && n <= 64);
        debug_assert!(plen == 64 || prefix >> plen == 0);
        if plen == 0 {
            self.write_bits(u, n);
        } else if n == 0 {
            self.write_bits_unpadded(prefix, plen);
        } else if plen + n <= 64 {
            // Bit offset in the current byte after the prefix.
            let offset = (8 - u32::from(self.count)) + plen;
            // 0 < n < 64 here.
            let combined = (prefix << n) | (u & (u64::MAX >> (64 - n)));
            self.write_bits_unpadded(combined, plen + n);
            if offset & 7 == 0 && n >= 8 && n & 7 == 0 {
                // The writeBits call started on a byte boundary: Go's last
                // writeByte left an empty byte (see `write_bits`).
                self.stream.push(0);
                self.count = 8;
            }
        } else {
            self.write_bits_unpadded(prefix, plen);
            self.write_bits(u, n);
        }
    }

    /// Writes the `nbits` (`<= 64`) right-most bits of `u` contiguously,
    /// appending a byte only when the last one is full (Go's `writeBit`
    /// semantics, without a per-bit loop).
    #[inline]
    pub fn write_bits_unpadded(&mut self, u: u64, nbits: u32) {
        if nbits == 0 {
            return;
        }
        debug_assert!(nbits <= 64);
        let nbits = nbits.min(64);
        // Left-align the value; this also drops bits above `nbits`.
        let mut u = u << (64 - nbits);
        let mut n = nbits;
        let c = u32::from(self.count);
        if c > 0 {
            if let Some(last) = self.stream.last_mut() {
                *last |= (u >> (64 - c)) as u8;
            }
            if n <= c {
                self.count = (c - n) as u8;
                return;
            }
            u <<= c;
            n -= c;
        }
        // Byte aligned now, 1..=64 bits left.
        let nbytes = n.div_ceil(8);
        // A fixed-size copy followed by a truncate is cheaper than a
        // variable-length copy.
        let len = self.stream.len();
        self.stream.extend_from_slice(&u.to_be_bytes());
        self.stream.truncate(len + nbytes as usize);
        self.count = (nbytes * 8 - n) as u8;
    }
}

/// A fast MSB-first bit reader over an untrusted byte slice.
///
/// Bits are kept left-aligned in a 64-bit buffer that is refilled eight bytes
/// at a time while at least eight bytes remain, byte by byte near the end.
/// All reads are bounds checked; reading past the end returns `None`.
#[derive(Clone, Debug)]
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Next byte of `data` not yet counted in `valid`.
    pos: usize,
    /// The top `valid` bits are the next bits of the stream. Bits below are
    /// either zero or already-loaded stream bits at their proper position.
    buf: u64,
    /// Number of valid bits in `buf`, always `< 64`.
    valid: u32,
}

impl<'a> BitReader<'a> {
    /// A reader positioned at the first bit of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            valid: 0,
        }
    }

    /// Number of bits not yet read.
    pub fn remaining_bits(&self) -> usize {
        (self.data.len() - self.pos) * 8 + self.valid as usize
    }

    /// Tops up the buffer to at least 49 valid bits (56..=63 on the fast
    /// path), or to all remaining bits.
    #[inline(always)]
    fn refill(&mut self) {
        debug_assert!(self.valid < 64);
        match self.data.get(self.pos..).and_then(|s| s.first_chunk::<8>()) {
            Some(chunk) => {
                let w = u64::from_be_bytes(*chunk);
                // `valid < 64`, so the shift is in range.
                self.buf |= w >> self.valid;
                let nbytes = (63 - self.valid) >> 3;
                self.pos += nbytes as usize;
                self.valid += nbytes << 3;
            }
            None => self.refill_tail(),
        }
    }

    #[cold]
    #[inline(never)]
    fn refill_tail(&mut self) {
        // Stops at 56 valid bits at most, keeping `valid < 64`.
        while self.valid <= 48 {
            let Some(&b) = self.data.get(self.pos) else {
                break;
            };
            self.buf |= u64::from(b) << (56 - self.valid);
            self.pos += 1;
            self.valid += 8;
        }
    }

    /// The next bits of the stream, left-aligned, after making sure at least
    /// `min(n, remaining)` of them are valid (`n <= 56`). Bits past the end
    /// of the data read as zero. Does not consume anything.
    #[inline(always)]
    pub fn peek(&mut self, n: u32) -> u64 {
        if self.valid < n {
            self.refill();
        }
        self.buf
    }

    /// Reads `n` bits (`0..=64`) into the low bits of the result.
    #[inline(always)]
    pub fn read_bits(&mut self, n: u32) -> Option<u64> {
        if n > self.valid {
            self.refill();
            if n > self.valid {
                return self.read_bits_slow(n);
            }
        }
        // n <= valid < 64. The double shift yields 0 for n == 0.
        let v = (self.buf >> 1) >> (63 - n);
        self.buf <<= n;
        self.valid -= n;
        Some(v)
    }

    /// Reads that need more bits than the buffer holds after a refill:
    /// widths above 56 bits, or the end of the data.
    #[cold]
    #[inline(never)]
    fn read_bits_slow(&mut self, n: u32) -> Option<u64> {
        if n > 64 || n as usize > self.remaining_bits() {
            return None;
        }
        let mut need = n;
        let mut out = 0u64;
        loop {
            let take = need.min(self.valid);
            if take > 0 {
                // 0 < take <= valid < 64
                out = (out << take) | (self.buf >> (64 - take));
                self.buf <<= take;
                self.valid -= take;
                need -= take;
            }
            if need == 0 {
                return Some(out);
            }
            self.refill();
            if self.valid == 0 {
                return None;
            }
        }
    }

    /// Reads one bit.
    #[inline(always)]
    pub fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|b| b != 0)
    }

    /// Reads 8 bits (Go's `ReadByte` on the reader).
    #[inline]
    pub fn read_byte(&mut self) -> Option<u8> {
        self.read_bits(8).map(|b| b as u8)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A literal transcription of Go's bstream writer, per bit, as oracle.
    #[derive(Default)]
    struct GoBstream {
        stream: Vec<u8>,
        count: u8,
    }

    impl GoBstream {
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
            self.stream[i] |= ((byt as u16) >> (8 - self.count)) as u8;
            self.stream.push(((byt as u16) << self.count) as u8);
        }
        fn write_bits(&mut self, u: u64, nbits: u32) {
            let mut u = if nbits == 0 { 0 } else { u << (64 - nbits) };
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

    #[test]
    fn write_byte_at_boundary_leaves_trailing_byte() {
        let mut w = BitWriter::new(vec![]);
        w.write_byte(0xab);
        assert_eq!(w.bytes(), &[0xab, 0x00]);
        assert_eq!(w.count(), 8);
        w.write_bit(true);
        assert_eq!(w.bytes(), &[0xab, 0x80]);
        assert_eq!(w.count(), 7);
        w.write_byte(0xff);
        assert_eq!(w.bytes(), &[0xab, 0xff, 0x80]);
        assert_eq!(w.count(), 7);
    }

    #[test]
    fn writer_matches_go_oracle_on_mixed_writes() {
        // Deterministic pseudo-random sequence of writes of all widths.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let mut go = GoBstream {
                stream: vec![0, 0],
                count: 0,
            };
            let mut w = BitWriter::new(vec![0, 0]);
            for _ in 0..(round % 40 + 1) {
                let r = next();
                let nbits = (r % 65) as u32;
                let val = next();
                if r & (1 << 40) != 0 {
                    go.write_bits(val, nbits);
                    w.write_bits(val, nbits);
                } else {
                    for i in (0..nbits).rev() {
                        go.write_bit((val >> i) & 1 == 1);
                    }
                    w.write_bits_unpadded(val, nbits);
                }
                assert_eq!(w.bytes(), &go.stream[..]);
                assert_eq!(w.count(), go.count);
            }
        }
    }

    #[test]
    fn write_prefixed_equals_separate_writes() {
        // Every starting state (empty, partial byte at each offset, and the
        // empty trailing byte), prefix width and payload width.
        let mut starts: Vec<BitWriter> = vec![BitWriter::new(vec![0, 0])];
        for k in 1..8 {
            let mut w = BitWriter::new(vec![0, 0]);
            w.write_bits_unpadded(0x55, k);
            starts.push(w);
        }
        let mut w = BitWriter::new(vec![0, 0]);
        w.write_byte(0xa5);
        assert_eq!(w.count(), 8);
        starts.push(w);

        for start in &starts {
            for plen in 0..=24u32 {
                for n in 0..=64u32 {
                    let prefix = if plen == 0 {
                        0
                    } else {
                        0x00ab_cdefu64 & (u64::MAX >> (64 - plen))
                    };
                    let u = 0xfedc_ba98_7654_3210u64;
                    let mut a = start.clone();
                    a.write_prefixed(prefix, plen, u, n);
                    let mut b = start.clone();
                    b.write_bits_unpadded(prefix, plen);
                    b.write_bits(u, n);
                    assert_eq!(
                        a.bytes(),
                        b.bytes(),
                        "count {} plen {plen} n {n}",
                        start.count()
                    );
                    assert_eq!(a.count(), b.count());
                }
            }
        }
    }

    #[test]
    fn reader_reads_back_writes() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut w = BitWriter::new(vec![]);
        let mut expect = vec![];
        for _ in 0..2000 {
            let n = (next() % 64 + 1) as u32;
            let v = next() & (u64::MAX >> (64 - n));
            w.write_bits_unpadded(v, n);
            expect.push((n, v));
        }
        let mut r = BitReader::new(w.bytes());
        for (n, v) in expect {
            assert_eq!(r.read_bits(n), Some(v));
        }
        // At most 7 padding bits remain.
        assert!(r.remaining_bits() < 8);
        assert_eq!(r.read_bits(8), None);
    }

    #[test]
    fn reader_reports_end_of_data() {
        let data = [0xde, 0xad, 0xbe];
        let mut r = BitReader::new(&data);
        assert_eq!(r.read_bits(20), Some(0xdeadb));
        assert_eq!(r.read_bits(5), None);
        let mut r = BitReader::new(&data);
        assert_eq!(r.read_bits(24), Some(0xdeadbe));
        assert_eq!(r.read_bit(), None);
        let mut r = BitReader::new(&[]);
        assert_eq!(r.read_bit(), None);
        assert_eq!(r.read_bits(64), None);
    }

    #[test]
    fn reader_reads_64_bits_at_every_offset() {
        let data: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        for skip in 0..64u32 {
            let mut r = BitReader::new(&data);
            if skip > 0 {
                r.read_bits(skip).unwrap();
            }
            let got = r.read_bits(64).unwrap();
            // Reference: compute from a u128 window.
            let byte = (skip / 8) as usize;
            let mut win = 0u128;
            for b in &data[byte..byte + 16] {
                win = (win << 8) | *b as u128;
            }
            let want = (win >> (64 - skip % 8)) as u64;
            assert_eq!(got, want, "skip {skip}");
        }
    }
}
