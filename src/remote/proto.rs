//! Protocol-buffers wire format, by hand: a borrowing field reader and an append-only writer.
//!
//! Why not prost: the remote-write decoder must borrow label bytes from the decompressed buffer
//! (no allocation per label or sample), which prost's owned `String` fields cannot do, and the
//! read responses are written straight into their output buffer. The messages used are small
//! and fixed (`prometheus-formats.md` §1, §3); their field numbers live next to the code that
//! reads them. The tests check this codec against prost-generated messages as an oracle.

use thiserror::Error;

pub const WIRE_VARINT: u8 = 0;
pub const WIRE_FIXED64: u8 = 1;
pub const WIRE_LEN: u8 = 2;
pub const WIRE_FIXED32: u8 = 5;

/// Field numbers of the `prompb/types.proto` messages both remote write and remote read use.
pub mod types {
    pub const TIMESERIES_LABELS: u32 = 1;
    pub const TIMESERIES_SAMPLES: u32 = 2;
    pub const TIMESERIES_EXEMPLARS: u32 = 3;
    pub const TIMESERIES_HISTOGRAMS: u32 = 4;
    pub const LABEL_NAME: u32 = 1;
    pub const LABEL_VALUE: u32 = 2;
    pub const SAMPLE_VALUE: u32 = 1;
    pub const SAMPLE_TIMESTAMP: u32 = 2;
}

/// Malformed protobuf: what was wrong, and at which byte of the message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid protobuf at byte {offset}: {what}")]
pub struct ProtoError {
    pub offset: usize,
    pub what: String,
}

/// One field value as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Len(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => WIRE_VARINT,
            Value::Fixed64(_) => WIRE_FIXED64,
            Value::Len(_) => WIRE_LEN,
            Value::Fixed32(_) => WIRE_FIXED32,
        }
    }
}

/// Iterates the fields of one message, borrowing length-delimited values from the input.
/// `base` is the message's offset in the outermost buffer, so errors point into the request.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// A reader over `sub`, a slice this reader returned (for nested messages).
    pub fn nested(&self, sub: &'a [u8]) -> Reader<'a> {
        let base = (sub.as_ptr() as usize)
            .checked_sub(self.buf.as_ptr() as usize)
            .map_or(self.base, |d| self.base + d);
        Reader {
            buf: sub,
            pos: 0,
            base,
        }
    }

    /// Absolute offset of the next byte to read.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn error(&self, what: impl Into<String>) -> ProtoError {
        ProtoError {
            offset: self.offset(),
            what: what.into(),
        }
    }

    #[inline]
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let b = self.buf;
        let mut pos = self.pos;
        // Fast path: one-byte varints (tags, small values) dominate.
        if let Some(&first) = b.get(pos) {
            if first < 0x80 {
                self.pos = pos + 1;
                return Ok(u64::from(first));
            }
        }
        let mut x: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&byte) = b.get(pos) else {
                return Err(self.error("truncated varint"));
            };
            pos += 1;
            if shift == 63 && byte > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            x |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                self.pos = pos;
                return Ok(x);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    #[inline]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], ProtoError> {
        match self
            .buf
            .get(self.pos..self.pos + N)
            .and_then(|s| <[u8; N]>::try_from(s).ok())
        {
            Some(a) => {
                self.pos += N;
                Ok(a)
            }
            None => Err(self.error(format!("truncated {}-byte fixed field", N))),
        }
    }

    /// The whole message as a packed run of varints (a packed repeated scalar field).
    pub fn packed_varints(&mut self) -> Result<Vec<u64>, ProtoError> {
        let mut out = Vec::new();
        while self.pos < self.buf.len() {
            out.push(self.varint()?);
        }
        Ok(out)
    }

    /// The next field as `(number, value)`, or `None` at the end of the message.
    #[inline]
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let at = self.offset();
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(ProtoError {
                offset: at,
                what: format!("invalid field number {number}"),
            });
        }
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_FIXED64 => Value::Fixed64(u64::from_le_bytes(self.fixed::<8>()?)),
            WIRE_LEN => {
                let len = self.varint()?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| self.pos.checked_add(l))
                    .filter(|&e| e <= self.buf.len())
                    .ok_or_else(|| {
                        self.error(format!(
                            "length {len} of field {number} runs past the end of its message"
                        ))
                    })?;
                let v = &self.buf[self.pos..end];
                self.pos = end;
                Value::Len(v)
            }
            WIRE_FIXED32 => Value::Fixed32(u32::from_le_bytes(self.fixed::<4>()?)),
            t => {
                return Err(ProtoError {
                    offset: at,
                    what: format!("field {number} has unsupported wire type {t}"),
                })
            }
        };
        Ok(Some((number as u32, value)))
    }
}

/// The error for a known field that arrived with the wrong wire type.
pub fn wrong_type(r: &Reader<'_>, msg: &str, field: u32, v: &Value<'_>, want: u8) -> ProtoError {
    r.error(format!(
        "{msg} field {field} has wire type {}, expected {want}",
        v.wire_type()
    ))
}

// ---------------------------------------------------------------------------------------------
// Writing

/// Append a varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

/// Bytes a varint of `x` takes.
#[inline]
pub fn varint_len(x: u64) -> usize {
    // 1 byte per 7 significant bits, at least one.
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

#[inline]
pub fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// A length-delimited field with known contents.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A varint field; proto3 omits zero values.
#[inline]
pub fn put_uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        put_key(out, field, WIRE_VARINT);
        put_varint(out, v);
    }
}

/// An `int64` field (two's complement varint); zero omitted.
#[inline]
pub fn put_int64(out: &mut Vec<u8>, field: u32, v: i64) {
    put_uint(out, field, v as u64);
}

/// A `double` field; +0.0 omitted as proto3 does (every other bit pattern, -0.0 and NaN
/// payloads included, is written as is).
#[inline]
pub fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    let bits = v.to_bits();
    if bits != 0 {
        put_key(out, field, WIRE_FIXED64);
        out.extend_from_slice(&bits.to_le_bytes());
    }
}

/// Start a length-delimited field whose size is not known yet: reserves a fixed 5-byte length
/// (a padded varint, valid protobuf) to be filled by [`end_len`]. Messages written this way must
/// stay below 2^35 bytes, far above every cap.
#[inline]
pub fn begin_len(out: &mut Vec<u8>, field: u32) -> usize {
    put_key(out, field, WIRE_LEN);
    let at = out.len();
    out.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x00]);
    at
}

/// Fill the length reserved by [`begin_len`].
#[inline]
pub fn end_len(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 5) as u64;
    for i in 0..5 {
        let b = ((len >> (7 * i)) & 0x7f) as u8;
        out[at + i] = if i < 4 { b | 0x80 } else { b };
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_lengths() {
        for x in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX, i64::MIN as u64] {
            let mut b = Vec::new();
            put_key(&mut b, 1, WIRE_VARINT);
            put_varint(&mut b, x);
            assert_eq!(b.len() - 1, varint_len(x), "{x}");
            let mut r = Reader::new(&b);
            assert_eq!(r.next_field().unwrap(), Some((1, Value::Varint(x))));
            assert_eq!(r.next_field().unwrap(), None);
        }
    }

    #[test]
    fn padded_length_is_valid() {
        let mut b = Vec::new();
        let at = begin_len(&mut b, 3);
        b.extend_from_slice(b"hello");
        end_len(&mut b, at);
        let mut r = Reader::new(&b);
        assert_eq!(r.next_field().unwrap(), Some((3, Value::Len(b"hello"))));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x08], "truncated varint"),
            (&[0x08, 0xff], "truncated varint"),
            (&[0x0a, 0x05, 1, 2], "runs past the end"),
            (&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], "runs past the end"),
            (&[0x09, 1, 2, 3], "truncated 8-byte"),
            (&[0x0b], "unsupported wire type 3"),
            (&[0x00], "invalid field number 0"),
            (
                &[
                    0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
                ],
                "overflows",
            ),
            (
                &[
                    0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                ],
                "overflows",
            ),
        ];
        for (bytes, want) in cases {
            let mut r = Reader::new(bytes);
            let err = loop {
                match r.next_field() {
                    Ok(Some(_)) => continue,
                    Ok(None) => panic!("{bytes:?} decoded"),
                    Err(e) => break e,
                }
            };
            assert!(err.what.contains(want), "{bytes:?}: {err}");
        }
    }

    #[test]
    fn nested_offsets_point_into_the_outer_buffer() {
        let mut b = vec![0x0a, 0x02, 0x08];
        b.push(0xff); // truncated varint inside the nested message
        let mut r = Reader::new(&b);
        let Some((1, Value::Len(inner))) = r.next_field().unwrap() else {
            panic!()
        };
        let mut n = r.nested(inner);
        let e = n.next_field().unwrap_err();
        assert_eq!(e.offset, 3);
    }
}
