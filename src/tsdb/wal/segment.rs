//! WAL segment framing: Prometheus's `wlog` page format (format digest §4.8).
//!
//! A segment is a sequence of 32 KiB pages with no header. A record is cut into fragments that
//! never cross a page; each fragment has a 7-byte header:
//!
//! ```text
//! ┌──────────┬──────────────┬──────────────────┬─────────────┐
//! │ type (1) │ len (BE u16) │ CRC32C (BE u32)  │ data (len)  │
//! └──────────┴──────────────┴──────────────────┴─────────────┘
//! type bits 0–2: 0 page padding (rest of page is zero), 1 full, 2 first, 3 middle, 4 last
//! type bit 3:    the record was snappy-compressed (whole record, before fragmenting)
//! ```
//! When fewer than 7 bytes are left in a page they are zero-filled. A record never spans
//! segments. A short final page is fine: readers treat the end of a segment as zero padding.
//!
//! This layer knows nothing of record contents. [`Framer`] lays records out exactly where
//! Prometheus's `WL.log` would, so a WAL written by cairn is byte-for-byte what Prometheus would
//! write for the same records; [`SegmentReader`] reads one segment and reports the first problem
//! as [`ReadError::Torn`] (the segment ends inside a record — the normal state after a crash) or
//! [`ReadError::Corrupt`] (anything else), with the offset of the damaged record's first byte.

use std::io::{self, Read};

pub const PAGE_SIZE: usize = 32 * 1024;
pub const HEADER_SIZE: usize = 7;

const TYPE_PAGE_TERM: u8 = 0;
const TYPE_FULL: u8 = 1;
const TYPE_FIRST: u8 = 2;
const TYPE_MIDDLE: u8 = 3;
const TYPE_LAST: u8 = 4;
const TYPE_MASK: u8 = 0x07;
const SNAPPY_FLAG: u8 = 0x08;

/// Lays records out in pages. Holds only the position inside the current segment; the caller
/// owns the bytes and the file.
#[derive(Debug, Clone)]
pub struct Framer {
    /// Bytes of the current segment laid out so far, padding included.
    pos: u64,
    pages_per_segment: u64,
}

impl Framer {
    pub fn new(segment_size: usize) -> Framer {
        Framer {
            pos: 0,
            pages_per_segment: (segment_size / PAGE_SIZE).max(1) as u64,
        }
    }

    /// Start a new segment.
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    fn page_remaining(&self) -> usize {
        PAGE_SIZE - (self.pos as usize % PAGE_SIZE)
    }

    /// Whether a record of `len` bytes must go to a new segment (Prometheus's rule: it does not
    /// fit in what is left of this segment, and this segment is not empty).
    pub fn needs_new_segment(&self, len: usize) -> bool {
        if self.pos == 0 {
            return false;
        }
        let done_pages = self.pos / PAGE_SIZE as u64;
        let page_rem = self.page_remaining();
        let full_pages_left = self.pages_per_segment.saturating_sub(done_pages + 1);
        let left =
            (page_rem - HEADER_SIZE) as u64 + (PAGE_SIZE - HEADER_SIZE) as u64 * full_pages_left;
        // A fresh page at the very end of the segment leaves nothing.
        let left = if done_pages >= self.pages_per_segment {
            0
        } else {
            left
        };
        len as u64 > left
    }

    /// Append the fragments of `rec` to `out`.
    pub fn frame(&mut self, out: &mut Vec<u8>, rec: &[u8], compressed: bool) {
        let mut rest = rec;
        let mut first = true;
        loop {
            let room = self.page_remaining() - HEADER_SIZE;
            let (part, tail) = rest.split_at(rest.len().min(room));
            let mut typ = match (first, tail.is_empty()) {
                (true, true) => TYPE_FULL,
                (true, false) => TYPE_FIRST,
                (false, true) => TYPE_LAST,
                (false, false) => TYPE_MIDDLE,
            };
            if compressed {
                typ |= SNAPPY_FLAG;
            }
            out.push(typ);
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(&crc32c::crc32c(part).to_be_bytes());
            out.extend_from_slice(part);
            self.pos += (HEADER_SIZE + part.len()) as u64;
            // Fewer than a header's worth left: zero-fill to the page boundary.
            let rem = self.page_remaining();
            if rem < HEADER_SIZE {
                out.resize(out.len() + rem, 0);
                self.pos += rem as u64;
            }
            rest = tail;
            first = false;
            if rest.is_empty() {
                return;
            }
        }
    }

    /// Zero padding that completes the current page (empty when at a page boundary).
    pub fn pad_page(&mut self, out: &mut Vec<u8>) {
        let rem = self.pos as usize % PAGE_SIZE;
        if rem != 0 {
            out.resize(out.len() + (PAGE_SIZE - rem), 0);
            self.pos += (PAGE_SIZE - rem) as u64;
        }
    }
}

/// What went wrong reading a segment. `offset` is where the damaged record starts: truncating the
/// segment there keeps every record before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("torn record at offset {offset}: segment ends inside it")]
    Torn { offset: u64 },
    #[error("corrupt record at offset {offset}: {reason}")]
    Corrupt { offset: u64, reason: String },
    #[error("I/O error at offset {offset}: {kind}")]
    Io { offset: u64, kind: io::ErrorKind },
}

impl ReadError {
    pub fn offset(&self) -> u64 {
        match self {
            ReadError::Torn { offset }
            | ReadError::Corrupt { offset, .. }
            | ReadError::Io { offset, .. } => *offset,
        }
    }
}

/// Reads the records of one segment, in order, from any byte stream (give it a `BufReader`).
///
/// Memory stays bounded by the largest record: one page buffer plus the record being assembled.
pub struct SegmentReader<R> {
    r: R,
    /// Bytes consumed from the segment.
    pos: u64,
    /// Where the record returned last (or being read) starts.
    rec_start: u64,
    rec: Vec<u8>,
    decompressed: Vec<u8>,
    page: Box<[u8]>,
    max_record: usize,
}

/// Outcome of reading up to `n` bytes: how many were read before the end of the segment.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<R: Read> SegmentReader<R> {
    /// `max_record` caps a decompressed record (a snappy header claiming more is corruption).
    pub fn new(r: R, max_record: usize) -> Self {
        SegmentReader {
            r,
            pos: 0,
            rec_start: 0,
            rec: Vec::new(),
            decompressed: Vec::new(),
            page: vec![0u8; PAGE_SIZE].into_boxed_slice(),
            max_record,
        }
    }

    /// Offset of the first byte of the record last returned by [`Self::next_record`].
    pub fn record_offset(&self) -> u64 {
        self.rec_start
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn io_err(&self, e: io::Error) -> ReadError {
        ReadError::Io {
            offset: self.rec_start,
            kind: e.kind(),
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> ReadError {
        ReadError::Corrupt {
            offset: self.rec_start,
            reason: reason.into(),
        }
    }

    /// The next record, `Ok(None)` at a clean end of the segment.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, ReadError> {
        self.rec.clear();
        let mut fragments = 0usize;
        let mut compressed = false;
        let mut hdr = [0u8; HEADER_SIZE];
        loop {
            if fragments == 0 {
                self.rec_start = self.pos;
            }
            let n = read_full(&mut self.r, &mut hdr[..1]).map_err(|e| self.io_err(e))?;
            if n == 0 {
                if fragments == 0 {
                    return Ok(None);
                }
                return Err(ReadError::Torn {
                    offset: self.rec_start,
                });
            }
            self.pos += 1;
            let typ = hdr[0] & TYPE_MASK;
            if typ == TYPE_PAGE_TERM {
                if hdr[0] != 0 {
                    return Err(self.corrupt(format!("invalid fragment flags {:#04x}", hdr[0])));
                }
                // The rest of the page must be zero; the segment may end early (virtual padding).
                let k = (PAGE_SIZE - (self.pos as usize % PAGE_SIZE)) % PAGE_SIZE;
                let got =
                    read_full(&mut self.r, &mut self.page[..k]).map_err(|e| self.io_err(e))?;
                self.pos += got as u64;
                if self.page[..got].iter().any(|&b| b != 0) {
                    return Err(self.corrupt("unexpected non-zero byte in page padding"));
                }
                if got < k {
                    // End of segment inside the padding.
                    if fragments == 0 {
                        self.rec_start = self.pos;
                        return Ok(None);
                    }
                    return Err(ReadError::Torn {
                        offset: self.rec_start,
                    });
                }
                continue;
            }
            let page_off = (self.pos as usize - 1) % PAGE_SIZE;
            let got = read_full(&mut self.r, &mut hdr[1..]).map_err(|e| self.io_err(e))?;
            self.pos += got as u64;
            if got < HEADER_SIZE - 1 {
                return Err(ReadError::Torn {
                    offset: self.rec_start,
                });
            }
            if hdr[0] & !(TYPE_MASK | SNAPPY_FLAG) != 0 || typ > TYPE_LAST {
                return Err(self.corrupt(format!("invalid fragment flags {:#04x}", hdr[0])));
            }
            let len = u16::from_be_bytes([hdr[1], hdr[2]]) as usize;
            let crc = u32::from_be_bytes([hdr[3], hdr[4], hdr[5], hdr[6]]);
            if page_off + HEADER_SIZE + len > PAGE_SIZE {
                return Err(
                    self.corrupt(format!("fragment of {len} bytes crosses a page boundary"))
                );
            }
            let got = read_full(&mut self.r, &mut self.page[..len]).map_err(|e| self.io_err(e))?;
            self.pos += got as u64;
            if got < len {
                return Err(ReadError::Torn {
                    offset: self.rec_start,
                });
            }
            let data = &self.page[..len];
            if crc32c::crc32c(data) != crc {
                return Err(self.corrupt("fragment checksum mismatch"));
            }
            let frag_compressed = hdr[0] & SNAPPY_FLAG != 0;
            let expected_first = fragments == 0;
            match (typ, expected_first) {
                (TYPE_FULL | TYPE_FIRST, true) => compressed = frag_compressed,
                (TYPE_MIDDLE | TYPE_LAST, false) if frag_compressed == compressed => {}
                _ => {
                    return Err(self.corrupt(format!(
                        "unexpected fragment type {typ} after {fragments} fragment(s)"
                    )))
                }
            }
            if self.rec.len() + len > self.max_record {
                return Err(self.corrupt(format!("record larger than {} bytes", self.max_record)));
            }
            self.rec.extend_from_slice(data);
            fragments += 1;
            if typ == TYPE_FULL || typ == TYPE_LAST {
                break;
            }
        }
        if !compressed {
            return Ok(Some(&self.rec));
        }
        let n = snap::raw::decompress_len(&self.rec)
            .map_err(|e| self.corrupt(format!("snappy: {e}")))?;
        if n > self.max_record {
            return Err(self.corrupt(format!(
                "snappy record claims {n} bytes, over the {} cap",
                self.max_record
            )));
        }
        self.decompressed.resize(n, 0);
        snap::raw::Decoder::new()
            .decompress(&self.rec, &mut self.decompressed)
            .map_err(|e| self.corrupt(format!("snappy: {e}")))?;
        Ok(Some(&self.decompressed))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn frame_all(recs: &[Vec<u8>], seg: usize) -> Vec<u8> {
        let mut f = Framer::new(seg);
        let mut out = Vec::new();
        for r in recs {
            f.frame(&mut out, r, false);
        }
        out
    }

    fn read_all(b: &[u8]) -> (Vec<Vec<u8>>, Option<ReadError>) {
        let mut r = SegmentReader::new(b, 1 << 30);
        let mut got = Vec::new();
        loop {
            match r.next_record() {
                Ok(Some(rec)) => got.push(rec.to_vec()),
                Ok(None) => return (got, None),
                Err(e) => return (got, Some(e)),
            }
        }
    }

    #[test]
    fn records_of_every_size_round_trip_across_pages() {
        let recs: Vec<Vec<u8>> = [
            0usize,
            1,
            6,
            7,
            PAGE_SIZE - 7,
            PAGE_SIZE - 8,
            PAGE_SIZE,
            3 * PAGE_SIZE + 5,
            100,
        ]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
        .collect();
        let b = frame_all(&recs, 1 << 27);
        let (got, err) = read_all(&b);
        assert_eq!(err, None);
        assert_eq!(got, recs);
    }

    #[test]
    fn a_page_with_fewer_than_seven_bytes_left_is_zero_filled() {
        // One record leaving exactly 3 bytes in the page.
        let rec = vec![1u8; PAGE_SIZE - HEADER_SIZE - 3];
        let b = frame_all(&[rec, vec![2u8; 10]], 1 << 27);
        assert_eq!(&b[PAGE_SIZE - 3..PAGE_SIZE], &[0, 0, 0]);
        assert_eq!(b[PAGE_SIZE], TYPE_FULL);
    }

    #[test]
    fn a_record_that_does_not_fit_the_segment_asks_for_a_new_one() {
        let mut f = Framer::new(2 * PAGE_SIZE);
        let mut out = Vec::new();
        assert!(
            !f.needs_new_segment(10 * PAGE_SIZE),
            "an empty segment takes any record"
        );
        f.frame(&mut out, &[0u8; 100], false);
        assert!(!f.needs_new_segment(PAGE_SIZE));
        assert!(f.needs_new_segment(2 * PAGE_SIZE));
    }

    #[test]
    fn a_fragment_header_flag_outside_the_known_bits_is_corruption() {
        let mut b = frame_all(&[vec![5u8; 20]], 1 << 27);
        b[0] |= 0x10;
        let (got, err) = read_all(&b);
        assert!(got.is_empty());
        assert!(
            matches!(err, Some(ReadError::Corrupt { offset: 0, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn compressed_records_decompress_and_lying_lengths_are_caught() {
        let rec: Vec<u8> = std::iter::repeat_n(b"abcdefgh".as_slice(), 100)
            .flatten()
            .copied()
            .collect();
        let c = snap::raw::Encoder::new().compress_vec(&rec).unwrap();
        let mut f = Framer::new(1 << 27);
        let mut b = Vec::new();
        f.frame(&mut b, &c, true);
        let (got, err) = read_all(&b);
        assert_eq!(err, None);
        assert_eq!(got, vec![rec]);
        // A snappy header claiming 4 GiB is rejected before allocating.
        let evil = [0x80u8, 0x80, 0x80, 0x80, 0x10];
        let mut f = Framer::new(1 << 27);
        let mut b = Vec::new();
        f.frame(&mut b, &evil, true);
        let mut r = SegmentReader::new(b.as_slice(), 1 << 20);
        assert!(matches!(r.next_record(), Err(ReadError::Corrupt { .. })));
    }
}
