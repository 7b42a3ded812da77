//! The block `index` file, format v2 (Prometheus 2.42 `tsdb/index/index.go`, format digest §4.3):
//! writer ([`IndexWriter`]) and memory-mapped reader ([`IndexReader`]).
//!
//! ```text
//! header      BE u32 0xBAAAD700 | version 2
//! symbols     BE u32 len | BE u32 count | (uvarint len, bytes)* | CRC32C(count..strings)
//!             every label name and value, plus "", unique, strictly ascending; ref = position
//! series      each entry at a 16-byte boundary (zero padding); series ID = offset / 16
//!             uvarint len | body | CRC32C(body)
//!             body: uvarint nlabels, (uvarint name ref, uvarint value ref)*, uvarint nchunks,
//!                   chunk 0: varint mint, uvarint maxt-mint, uvarint ref
//!                   chunk i: uvarint mint-prev.maxt, uvarint maxt-mint, varint ref-prev.ref
//! label idx   per name, 4-byte aligned: BE u32 len | BE u32 1 | BE u32 n | n × BE u32 value ref
//!             | CRC32C(everything after len)          (written, not used by 2.42's reader)
//! postings    per (name, value), 4-byte aligned: BE u32 len | BE u32 n | n × BE u32 series ID
//!             | CRC32C(n..IDs); first the all-postings list ("", ""), then (name, value) order
//! label offset table     BE u32 len | BE u32 n | (uvarint 1, uvarint-str name, uvarint offset)*
//!                        | CRC32C(n..entries)
//! postings offset table  BE u32 len | BE u32 n | (uvarint 2, name, value, uvarint offset)*
//!                        | CRC32C(n..entries), offsets point at the list's len field
//! TOC         6 × BE u64 (symbols, series, label indices, label offset table, postings,
//!             postings offset table) | CRC32C(those 48 bytes)      — the file's last 52 bytes
//! ```
//!
//! Byte-for-byte rules taken from the upstream writer (and checked against a promtool-written
//! fixture in `tests/block_golden.rs`):
//! - The symbol table always holds `""`: Prometheus builds it from the head's postings, which
//!   include the all-postings key `("", "")`.
//! - TOC entries are the writer's position when a section *starts*, before any padding: the
//!   series entry points just past the symbols' CRC (not 16-aligned), the label-indices entry
//!   just past the last series, the postings entry just past the last label index. The
//!   label-offset and postings-offset tables follow without padding.
//! - Label indices list the value refs of one name; their order is the postings order.
//!
//! The reader maps the file, checks the TOC, symbol table, postings offset table, label offset
//! table and every label index (CRC and bounds) when opened; series entries and postings lists
//! are bounds- and CRC-checked when read. Nothing is sliced or allocated from a length or count
//! in the file before it has been checked against the bytes actually there.

mod reader;
mod writer;

pub use reader::{IndexReader, SeriesEntry};
pub use writer::IndexWriter;

use std::path::PathBuf;

pub const MAGIC: u32 = 0xBAAA_D700;
pub const FORMAT_V2: u8 = 2;
pub const HEADER_LEN: usize = 5;
pub const TOC_LEN: usize = 6 * 8 + 4;
pub const SERIES_ALIGN: u64 = 16;

/// Where one chunk of a series is, and the time range it covers (closed), as stored in the
/// index (Prometheus `chunks.Meta` without the data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChunkMeta {
    pub mint: i64,
    pub maxt: i64,
    /// Block chunk reference: `(segment file position << 32) | offset`.
    pub cref: u64,
}

/// The index's table of contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Toc {
    pub symbols: u64,
    pub series: u64,
    pub label_indices: u64,
    pub label_indices_table: u64,
    pub postings: u64,
    pub postings_table: u64,
}

/// Errors of the index layer. Corruption names the file, the section and the byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("corrupt index {path}: {section} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        section: &'static str,
        offset: u64,
        reason: String,
    },
    #[error("index {path}: unsupported format version {version} (only 2 is read)")]
    UnsupportedVersion { path: PathBuf, version: u8 },
    #[error("index {path}: no series with ID {id}")]
    NoSuchSeries { path: PathBuf, id: u32 },
    /// The caller broke a writer rule (order, unknown symbol, …); nothing about the file.
    #[error("index writer {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

pub use crate::tsdb::postings::intersect;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::Labels;

    fn meta(mint: i64, maxt: i64, cref: u64) -> ChunkMeta {
        ChunkMeta { mint, maxt, cref }
    }

    #[test]
    fn writer_refuses_broken_input_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index");
        assert!(matches!(
            IndexWriter::create(&p, ["b", "a"]),
            Err(IndexError::Invalid { .. })
        ));
        let mut w = IndexWriter::create(&p, ["", "a", "b", "x"]).unwrap();
        let ab = Labels::from_pairs([("a", "b")]);
        let ax = Labels::from_pairs([("a", "x")]);
        let err = |r: Result<u32, IndexError>| match r {
            Err(IndexError::Invalid { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert!(err(w.add_series(&Labels::new(), &[])).contains("empty label set"));
        assert!(err(w.add_series(&Labels::from_pairs([("a", "zz")]), &[])).contains("\"zz\""));
        assert!(err(w.add_series(&ab, &[meta(5, 4, 0)])).contains("less than minT"));
        assert!(err(w.add_series(&ab, &[meta(0, 4, 8), meta(4, 5, 9)])).contains("not higher"));
        assert!(err(w.add_series(&ab, &[meta(0, 4, 8), meta(5, 6, 7)])).contains("unsorted"));
        assert_eq!(w.add_series(&ab, &[meta(0, 4, 8)]).unwrap(), 2);
        assert!(err(w.add_series(&ab, &[])).contains("out-of-order"));
        assert!(err(w.add_series(&ax, &[meta(0, 1, 7)])).contains("unsorted"));
        let id = w.add_series(&ax, &[]).unwrap();
        w.finish().unwrap();
        let r = IndexReader::open(&p).unwrap();
        assert_eq!(r.all_postings().unwrap(), vec![2, id]);
        assert_eq!(r.series(id).unwrap().labels, ax);
        assert!(r.series(id).unwrap().chunks.is_empty());
    }
}
