//! Chunk encodings, bit-exact with Prometheus 2.42 (`tsdb/chunkenc`).
//!
//! A chunk is a self-describing byte string holding the samples of one series
//! for a short time range. Its encoding is stored next to it (in the chunk file
//! or a remote-read frame) as one [`Encoding`] byte.
//!
//! # XOR chunks ([`Encoding::Xor`])
//!
//! The Gorilla float encoding with Prometheus's millisecond tweaks:
//!
//! ```text
//! bytes 0..2   big-endian u16 sample count (rewritten after every append)
//! sample 0     zig-zag varint(t0), written byte by byte; then the 64 bits of v0
//! sample 1     uvarint(uint64(t1 - t0)), written byte by byte; then XOR value
//! sample n>=2  dod = int64(tDelta_n - tDelta_{n-1})   (wrapping u64 arithmetic)
//!                0                      dod == 0
//!                10   + 14 bits         -8191    <= dod <= 8192
//!                110  + 17 bits         -65535   <= dod <= 65536
//!                1110 + 20 bits         -524287  <= dod <= 524288
//!                1111 + 64 bits         otherwise
//!              then XOR value
//! XOR value    delta = bits(v) ^ bits(prev)
//!                0                                      delta == 0
//!                1 0 + (64-L-T) bits of delta>>T        fits the previous window
//!                1 1 + 5 bits lz + 6 bits sig + sig bits of delta>>tz
//!                  (lz clamped to 31; sig == 64 is written as 0)
//! ```
//!
//! Bits are packed MSB first. The writer reproduces a quirk of Go's
//! `bstream.writeByte`: a byte write that starts on a byte boundary always
//! leaves an extra, empty trailing byte (see [`bstream::BitWriter`]). The
//! trailing byte is part of what Prometheus persists, so it is part of the
//! format; e.g. a one-sample chunk is `2 + varint_len + 8 + 1` bytes long.
//!
//! Decoding is driven by the sample count in the header, never by the byte
//! length. [`XorIterator`] accepts untrusted bytes: it never panics or reads
//! out of bounds, and reports truncated data as a [`DecodeError`].

pub mod bstream;
pub mod xor;

pub use bstream::{BitReader, BitWriter};
pub use xor::{XorChunk, XorIterator};

/// Number of samples Prometheus aims to put into one head chunk.
pub const SAMPLES_PER_CHUNK: usize = 120;

/// Identifier of a chunk encoding, as stored in chunk files (one byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// Gorilla-style XOR float chunk.
    Xor = 1,
    /// Native histogram chunk with integer counts.
    Histogram = 2,
    /// Native histogram chunk with float counts.
    FloatHistogram = 3,
}

impl Encoding {
    /// Parses an encoding byte. `0` (Go's `EncNone`) and unknown values give `None`.
    pub fn from_u8(b: u8) -> Option<Encoding> {
        match b {
            1 => Some(Encoding::Xor),
            2 => Some(Encoding::Histogram),
            3 => Some(Encoding::FloatHistogram),
            _ => None,
        }
    }

    /// The byte stored on disk for this encoding.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The name Prometheus prints for this encoding (`Encoding.String()`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Xor => "XOR",
            Encoding::Histogram => "histogram",
            Encoding::FloatHistogram => "floathistogram",
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors found while decoding chunk bytes.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The data is shorter than the 2-byte sample-count header.
    #[error("chunk too short: missing the 2-byte sample count header")]
    TooShort,
    /// The bit stream ended before all samples announced by the header were read.
    #[error("chunk data ends unexpectedly while decoding sample {sample}")]
    UnexpectedEnd {
        /// Zero-based index of the sample being decoded.
        sample: u16,
    },
    /// A timestamp varint is longer than 10 bytes or overflows 64 bits.
    #[error("timestamp varint overflows 64 bits in sample {sample}")]
    VarintOverflow {
        /// Zero-based index of the sample being decoded.
        sample: u16,
    },
    /// A chunk of an encoding this version does not decode (native histograms, #9).
    #[error("chunks of encoding {encoding} cannot be decoded by this version")]
    Unsupported { encoding: Encoding },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_bytes_round_trip() {
        for e in [Encoding::Xor, Encoding::Histogram, Encoding::FloatHistogram] {
            assert_eq!(Encoding::from_u8(e.as_u8()), Some(e));
        }
        assert_eq!(Encoding::Xor as u8, 1);
        assert_eq!(Encoding::Histogram as u8, 2);
        assert_eq!(Encoding::FloatHistogram as u8, 3);
        assert_eq!(Encoding::from_u8(0), None);
        assert_eq!(Encoding::from_u8(4), None);
        assert_eq!(Encoding::from_u8(255), None);
        assert_eq!(Encoding::Xor.to_string(), "XOR");
    }
}
