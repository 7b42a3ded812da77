//! The integer encodings of Prometheus's byte formats (`tsdb/encoding/encoding.go`):
//! big-endian fixed-width integers, LEB128 `uvarint`, zig-zag `varint`, and
//! `uvarint`-length-prefixed strings — one codec for the WAL records, the head chunk files,
//! the index and the block files (the protobuf codec of `remote` speaks its own wire format).
//!
//! [`Cursor`] walks a byte slice and never reads outside it: every getter returns `None` at the
//! end of the data or on a malformed varint, sticky like Go's `Decbuf`, and the caller turns
//! that into its own typed corruption error (with the file, section and [`Cursor::pos`]);
//! [`read_uvarint`] is the decoder under it, for callers with their own position. The encoders
//! ([`put_uvarint`], [`put_varint`], [`put_uvarint_str`]) are shared by the WAL records, the
//! head chunk files, the index and the block files.

/// Appends LEB128 `uvarint(x)` (Go `binary.PutUvarint`).
pub fn put_uvarint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Appends zig-zag `varint(x)` (Go `binary.PutVarint`).
pub fn put_varint(out: &mut Vec<u8>, x: i64) {
    put_uvarint(out, ((x << 1) ^ (x >> 63)) as u64);
}

/// Why a `uvarint` could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The bytes end inside it.
    Truncated,
    /// More than 64 bits (more than 10 bytes, or a 10th byte over 1).
    Overflow,
}

/// The LEB128 `uvarint` at the start of `b` and its length in bytes (Go `binary.Uvarint`,
/// at most 10 bytes, values over 64 bits refused). The one varint decoder of the byte
/// formats: the WAL records, the head chunk files, the index and the block files use it.
pub fn read_uvarint(b: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut x = 0u64;
    for (i, &byte) in b.iter().enumerate() {
        if i == 9 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        x |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((x, i + 1));
        }
        if i == 9 {
            return Err(VarintError::Overflow);
        }
    }
    Err(VarintError::Truncated)
}

/// Zig-zag decoding of a `uvarint` (Go `binary.Varint`).
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Appends `uvarint(len) | bytes` (Go `PutUvarintStr`).
pub fn put_uvarint_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Number of bytes `uvarint(x)` takes.
pub fn uvarint_len(mut x: u64) -> usize {
    let mut n = 1;
    while x >= 0x80 {
        x >>= 7;
        n += 1;
    }
    n
}

/// A read position in a byte slice; see the module docs. Sticky, like Prometheus's
/// `encoding.Decbuf`: once a getter finds nothing (end of data, malformed varint, bad UTF-8),
/// every later getter finds nothing too, so a sequence of reads can be checked once at the end.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(b: &'a [u8]) -> Cursor<'a> {
        Cursor {
            b,
            pos: 0,
            failed: false,
        }
    }

    /// Whether a getter found nothing (every later one finds nothing too).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// `v`, latching the failure when it is `None`.
    fn sticky<T>(&mut self, v: Option<T>) -> Option<T> {
        if v.is_none() {
            self.failed = true;
        }
        v
    }

    /// Offset of the next byte, relative to the start of the slice.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.failed {
            return None;
        }
        let s = self
            .pos
            .checked_add(n)
            .and_then(|end| self.b.get(self.pos..end));
        let s = self.sticky(s)?;
        self.pos += n;
        Some(s)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.bytes(n).map(|_| ())
    }

    pub fn byte(&mut self) -> Option<u8> {
        self.bytes(1).and_then(|b| b.first().copied())
    }

    pub fn be32(&mut self) -> Option<u32> {
        let s = self.bytes(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Some(u32::from_be_bytes(a))
    }

    pub fn be64(&mut self) -> Option<u64> {
        let s = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Some(u64::from_be_bytes(a))
    }

    /// LEB128, at most 10 bytes, rejecting values over 64 bits ([`read_uvarint`]); the
    /// position stays where it was when there is none.
    pub fn uvarint(&mut self) -> Option<u64> {
        if self.failed {
            return None;
        }
        let v = read_uvarint(self.b.get(self.pos..).unwrap_or_default()).ok();
        let (x, n) = self.sticky(v)?;
        self.pos += n;
        Some(x)
    }

    /// Zig-zag varint (Go `binary.Varint`).
    pub fn varint(&mut self) -> Option<i64> {
        self.uvarint().map(unzigzag)
    }

    /// A `uvarint` that must fit a `u32` (Go `Uvarint32`).
    pub fn uvarint32(&mut self) -> Option<u32> {
        let v = u32::try_from(self.uvarint()?).ok();
        self.sticky(v)
    }

    /// `uvarint(len) | bytes`; the length is checked against what is left before slicing.
    pub fn uvarint_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.uvarint()?;
        let len = usize::try_from(len).ok();
        let len = self.sticky(len)?;
        self.bytes(len)
    }

    /// Like [`Cursor::uvarint_bytes`], and the bytes must be UTF-8.
    pub fn uvarint_str(&mut self) -> Option<&'a str> {
        let s = std::str::from_utf8(self.uvarint_bytes()?).ok();
        self.sticky(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_rejects_overlong_and_truncated_varints() {
        let mut b = Vec::new();
        for x in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            put_uvarint(&mut b, x);
            assert_eq!(uvarint_len(x), {
                let mut t = Vec::new();
                put_uvarint(&mut t, x);
                t.len()
            });
        }
        put_varint(&mut b, -5);
        put_uvarint_str(&mut b, "héllo");
        let mut c = Cursor::new(&b);
        for x in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(c.uvarint(), Some(x));
        }
        assert_eq!(c.varint(), Some(-5));
        assert_eq!(c.uvarint_str(), Some("héllo"));
        assert!(c.is_empty());
        assert_eq!(c.byte(), None);

        // 11 continuation bytes, a 10th byte > 1, a truncated varint.
        assert_eq!(Cursor::new(&[0xff; 11]).uvarint(), None);
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(Cursor::new(&over).uvarint(), None);
        assert_eq!(Cursor::new(&[0x80, 0x80]).uvarint(), None);
        // A string length past the end.
        assert_eq!(Cursor::new(&[0x05, b'a']).uvarint_bytes(), None);
        assert_eq!(Cursor::new(&[0x01, 0xff]).uvarint_str(), None);
    }
}
