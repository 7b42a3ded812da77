//! Prometheus's remote protocols, turned into engine calls. No HTTP types here: the server
//! (`crate::server`) reads bodies and headers, calls these functions (on blocking threads) and
//! maps their errors to statuses in one table.
//!
//! - [`proto`]: protobuf wire format by hand (borrowing reader, writer).
//! - [`write`]: remote write 1.0 → [`crate::tsdb::Db::append`].
//! - [`read`]: remote read → SAMPLES response or streamed XOR-chunk frames.

pub mod proto;
pub mod read;
pub mod write;

use thiserror::Error;

/// Caps on what one request body may make us allocate.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Compressed body, as received (Prometheus caps remote-write and remote-read bodies at
    /// 32 MiB).
    pub max_body_bytes: usize,
    /// Decoded body, as claimed by the snappy header — checked before allocating.
    pub max_decoded_bytes: usize,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            max_body_bytes: 32 << 20,
            max_decoded_bytes: 128 << 20,
        }
    }
}

/// A request body that cannot be decoded at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BodyError {
    #[error("request body is over the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("snappy header claims {claimed} decoded bytes, over the limit of {limit} bytes")]
    DecodedTooLarge { claimed: u64, limit: usize },
    #[error("snappy: {0}")]
    Snappy(String),
}

/// The stream identifier that starts snappy's framed format (not what the remote protocols use).
const SNAPPY_FRAMED_MAGIC: &[u8] = b"\xff\x06\x00\x00sNaPpY";

/// The decoded length a snappy block claims: its leading uvarint (read here rather than by
/// `snap`, which refuses claims over 4 GiB with a generic error before we can say 413).
pub fn claimed_len(body: &[u8]) -> Option<u64> {
    let mut x: u64 = 0;
    for (i, &b) in body.iter().take(10).enumerate() {
        x |= u64::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b < 0x80 {
            return Some(x);
        }
    }
    None
}

/// Decompress a snappy block, checking the claimed size against the cap before allocating.
pub fn decompress(body: &[u8], limits: &BodyLimits) -> Result<Vec<u8>, BodyError> {
    if body.len() > limits.max_body_bytes {
        return Err(BodyError::TooLarge {
            limit: limits.max_body_bytes,
        });
    }
    if body.starts_with(SNAPPY_FRAMED_MAGIC) {
        return Err(BodyError::Snappy(
            "body is in snappy's framed (stream) format; the remote protocols use the block format"
                .into(),
        ));
    }
    let claimed = claimed_len(body)
        .ok_or_else(|| BodyError::Snappy("invalid block header (decoded length)".into()))?;
    if claimed > limits.max_decoded_bytes as u64 {
        return Err(BodyError::DecodedTooLarge {
            claimed,
            limit: limits.max_decoded_bytes,
        });
    }
    let mut out = vec![0u8; claimed as usize];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| BodyError::Snappy(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}
