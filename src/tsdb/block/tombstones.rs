//! The block `tombstones` file (Prometheus `tsdb/tombstones/tombstones.go`, format digest §4.6).
//!
//! ```text
//! BE u32 0x0130BA30 | version 1 | (uvarint series ref, varint mint, varint maxt)* | CRC32C(entries)
//! ```
//! The CRC covers the entries only (not the version byte); there is no trailing offset. Intervals
//! are closed. A block without deletions has the 9-byte file `01 30 ba 30 01 00 00 00 00`; a
//! missing file reads as empty.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

use super::BlockError;
use crate::tsdb::encoding::{put_uvarint, put_varint, Cursor};

pub const MAGIC: u32 = 0x0130_BA30;
pub const FORMAT_V1: u8 = 1;
pub const FILE_NAME: &str = "tombstones";
/// Largest tombstones file we read.
pub const MAX_SIZE: u64 = 1 << 30;

/// Samples of series `series_ref` in `[mint, maxt]` are deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stone {
    pub series_ref: u64,
    pub mint: i64,
    pub maxt: i64,
}

/// The file's bytes for `stones` (in the given order).
pub fn encode(stones: &[Stone]) -> Vec<u8> {
    let mut out = MAGIC.to_be_bytes().to_vec();
    out.push(FORMAT_V1);
    let start = out.len();
    for s in stones {
        put_uvarint(&mut out, s.series_ref);
        put_varint(&mut out, s.mint);
        put_varint(&mut out, s.maxt);
    }
    let crc = crc32c::crc32c(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Parse a tombstones file; `path` only names it in errors.
pub fn decode(b: &[u8], path: &Path) -> Result<Vec<Stone>, BlockError> {
    let bad = |off: usize, why: &str| BlockError::corrupt(path, "tombstones", off as u64, why);
    if b.len() < 4 + 1 + 4 {
        return Err(bad(0, "file too short"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let mut c = Cursor::new(body);
    if c.be32() != Some(MAGIC) {
        return Err(bad(0, "invalid magic number"));
    }
    if c.byte() != Some(FORMAT_V1) {
        return Err(bad(4, "unknown version"));
    }
    if crc32c::crc32c(body.get(5..).unwrap_or_default()).to_be_bytes() != crc {
        return Err(bad(body.len(), "checksum mismatch"));
    }
    let mut out = Vec::new();
    while !c.is_empty() {
        let pos = c.pos();
        let (Some(series_ref), Some(mint), Some(maxt)) = (c.uvarint(), c.varint(), c.varint())
        else {
            return Err(bad(pos, "truncated entry"));
        };
        out.push(Stone {
            series_ref,
            mint,
            maxt,
        });
    }
    Ok(out)
}

/// Read `dir/tombstones`; a missing file means no tombstones.
pub fn read(dir: &Path) -> Result<Vec<Stone>, BlockError> {
    let path = dir.join(FILE_NAME);
    let b = match super::read_capped(&path, MAX_SIZE) {
        Ok(b) => b,
        Err(BlockError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    decode(&b, &path)
}

/// Write `dir/tombstones` and fsync it (the caller fsyncs the directory).
pub fn write(dir: &Path, stones: &[Stone]) -> Result<(), BlockError> {
    let path = dir.join(FILE_NAME);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| BlockError::io("create", &path, e))?;
    f.write_all(&encode(stones))
        .map_err(|e| BlockError::io("write", &path, e))?;
    f.sync_all().map_err(|e| BlockError::io("fsync", &path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn empty_file_is_prometheus_bytes_and_entries_round_trip() {
        assert_eq!(encode(&[]), [0x01, 0x30, 0xba, 0x30, 0x01, 0, 0, 0, 0]);
        let p = Path::new("tombstones");
        let stones = [
            Stone {
                series_ref: 7,
                mint: -5,
                maxt: 10,
            },
            Stone {
                series_ref: 1 << 40,
                mint: i64::MIN,
                maxt: i64::MAX,
            },
        ];
        let b = encode(&stones);
        assert_eq!(decode(&b, p).unwrap(), stones);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(decode(&c, p).is_err(), "flip at {i}");
            assert!(decode(&b[..i], p).is_err(), "truncated at {i}");
        }
    }
}
