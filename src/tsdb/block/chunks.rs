//! Block chunk segment files `chunks/NNNNNN` (Prometheus `tsdb/chunks/chunks.go`, format digest
//! §4.4): [`ChunkWriter`] and the memory-mapped [`ChunkReader`].
//!
//! ```text
//! file:  BE u32 0x85BD40DD | version 1 | 3 zero bytes | chunk*
//! chunk: uvarint len(data) | encoding u8 | data | CRC32C(encoding | data)
//! ref  = (0-based position of the file in the sorted file list << 32) | offset of the len field
//! ```
//! Files are numbered from `000001`; a chunk never spans files. The writer splits the chunks of
//! one call into per-file batches exactly as Prometheus's `WriteChunks` does (sizes estimated
//! with a 5-byte length field), so the same series produce the same files and refs. The files
//! hold exactly the bytes written (Prometheus preallocates, then truncates to the same size).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use memmap2::Mmap;

use super::BlockError;
use crate::tsdb::encoding::{put_uvarint, Cursor};
use crate::tsdb::fileutil::fsync_dir;
use crate::tsdb::fileutil::MappedChunk;
use crate::tsdb::index::ChunkMeta;

pub const MAGIC: u32 = 0x85BD_40DD;
pub const FORMAT_V1: u8 = 1;
pub const HEADER_SIZE: u64 = 8;
/// Prometheus's `DefaultChunkSegmentSize`.
pub const DEFAULT_SEGMENT_SIZE: u64 = 512 * 1024 * 1024;
/// Upper bound of the length field used when sizing batches (`binary.MaxVarintLen32`).
const MAX_CHUNK_LEN_FIELD: u64 = 5;
const WRITE_BUFFER: usize = 1 << 20;

/// One chunk to write: its closed time range, encoding byte and data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkData<'a> {
    pub mint: i64,
    pub maxt: i64,
    pub encoding: u8,
    pub data: &'a [u8],
}

impl ChunkData<'_> {
    /// Samples in the chunk: the big-endian u16 that starts every Prometheus chunk encoding.
    pub fn num_samples(&self) -> u16 {
        match self.data {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        }
    }
}

/// Name of segment file number `seq` (1-based).
pub fn segment_name(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("{seq:06}"))
}

/// Writes the segment files of one block.
pub struct ChunkWriter {
    dir: PathBuf,
    segment_size: u64,
    /// Files created so far; the last one is open.
    files: u32,
    cur: Option<BufWriter<File>>,
    /// Bytes in the current file (0: none open yet).
    n: u64,
}

impl ChunkWriter {
    /// Create `dir` (it may exist, but must hold no segment files) for segments of at most
    /// `segment_size` bytes (a single chunk larger than that still gets a file of its own).
    pub fn create(dir: &Path, segment_size: u64) -> Result<ChunkWriter, BlockError> {
        fs::create_dir_all(dir).map_err(|e| BlockError::io("create", dir, e))?;
        Ok(ChunkWriter {
            dir: dir.to_path_buf(),
            segment_size,
            files: 0,
            cur: None,
            n: 0,
        })
    }

    fn finish_file(&mut self) -> Result<(), BlockError> {
        if let Some(w) = self.cur.take() {
            let path = segment_name(&self.dir, self.files);
            let f = w
                .into_inner()
                .map_err(|e| BlockError::io("flush", &path, e.into_error()))?;
            f.sync_all()
                .map_err(|e| BlockError::io("fsync", &path, e))?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<(), BlockError> {
        self.finish_file()?;
        let seq = self.files + 1;
        let path = segment_name(&self.dir, seq);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| BlockError::io("create", &path, e))?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER, f);
        let mut header = [0u8; HEADER_SIZE as usize];
        header[..4].copy_from_slice(&MAGIC.to_be_bytes());
        header[4] = FORMAT_V1;
        w.write_all(&header)
            .map_err(|e| BlockError::io("write", &path, e))?;
        self.files = seq;
        self.cur = Some(w);
        self.n = HEADER_SIZE;
        Ok(())
    }

    /// Write the chunks of one series; returns their metas (refs) in the same order.
    pub fn write_chunks(&mut self, chunks: &[ChunkData<'_>]) -> Result<Vec<ChunkMeta>, BlockError> {
        // Split into batches that each go to one file (Prometheus `Writer.WriteChunks`).
        let mut batches: Vec<(usize, usize)> = vec![(0, 0)];
        let mut batch_size = 0u64;
        let mut batch_start = 0usize;
        let mut first_batch = true;
        for (i, c) in chunks.iter().enumerate() {
            let size = MAX_CHUNK_LEN_FIELD + 1 + c.data.len() as u64 + 4;
            batch_size += size;
            let mut cut = i != 0 && batch_size + HEADER_SIZE > self.segment_size;
            if first_batch && self.n > HEADER_SIZE {
                cut = batch_size + self.n > self.segment_size;
                if cut {
                    first_batch = false;
                }
            }
            if cut {
                batch_start = i;
                batches.push((i, i));
                batch_size = size;
            }
            if let Some(b) = batches.last_mut() {
                *b = (batch_start, i + 1);
            }
        }
        if self.n == 0 {
            self.cut()?;
        }
        let mut metas = Vec::with_capacity(chunks.len());
        let nb = batches.len();
        let mut head = Vec::with_capacity(10);
        for (bi, (lo, hi)) in batches.into_iter().enumerate() {
            for c in chunks.get(lo..hi).unwrap_or_default() {
                let path = segment_name(&self.dir, self.files);
                let offset = u32::try_from(self.n).map_err(|_| BlockError::Invalid {
                    reason: format!(
                        "chunk offset {} in {} exceeds 4 GiB",
                        self.n,
                        path.display()
                    ),
                })?;
                let cref = (u64::from(self.files - 1) << 32) | u64::from(offset);
                head.clear();
                put_uvarint(&mut head, c.data.len() as u64);
                head.push(c.encoding);
                let crc = crc32c::crc32c_append(crc32c::crc32c(&[c.encoding]), c.data);
                let Some(w) = self.cur.as_mut() else {
                    return Err(BlockError::Invalid {
                        reason: "chunk writer has no open file".into(),
                    });
                };
                w.write_all(&head)
                    .and_then(|()| w.write_all(c.data))
                    .and_then(|()| w.write_all(&crc.to_be_bytes()))
                    .map_err(|e| BlockError::io("write", &path, e))?;
                self.n += (head.len() + c.data.len() + 4) as u64;
                metas.push(ChunkMeta {
                    mint: c.mint,
                    maxt: c.maxt,
                    cref,
                });
            }
            if bi + 1 < nb {
                self.cut()?;
            }
        }
        Ok(metas)
    }

    /// Flush and fsync the last file, then fsync the directory.
    pub fn finish(mut self) -> Result<(), BlockError> {
        self.finish_file()?;
        fsync_dir(&self.dir).map_err(|e| BlockError::io("fsync", &self.dir, e))
    }
}

/// The segment files of one block, memory-mapped.
pub struct ChunkReader {
    dir: PathBuf,
    files: Vec<(PathBuf, Arc<Mmap>)>,
}

impl std::fmt::Debug for ChunkReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkReader")
            .field("dir", &self.dir)
            .field("files", &self.files.len())
            .finish()
    }
}

/// Numeric file names in `dir`, sorted by number (Prometheus `sequenceFiles`).
fn sequence_files(dir: &Path) -> Result<Vec<PathBuf>, BlockError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| BlockError::io("list", dir, e))? {
        let entry = entry.map_err(|e| BlockError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Ok(n) = name.parse::<u64>() {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

impl ChunkReader {
    /// Map every segment file in `dir` and check its header.
    pub fn open(dir: &Path) -> Result<ChunkReader, BlockError> {
        let mut files = Vec::new();
        for path in sequence_files(dir)? {
            let f = File::open(&path).map_err(|e| BlockError::io("open", &path, e))?;
            let len = f
                .metadata()
                .map_err(|e| BlockError::io("stat", &path, e))?
                .len();
            if len < HEADER_SIZE {
                return Err(BlockError::corrupt(
                    &path,
                    "chunk file header",
                    0,
                    "file too short",
                ));
            }
            // SAFETY: block files are immutable once the block is renamed into place; every
            // access is bounds-checked against the mapped length.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| BlockError::io("map", &path, e))?;
            let mut c = Cursor::new(&map);
            if c.be32() != Some(MAGIC) {
                return Err(BlockError::corrupt(
                    &path,
                    "chunk file header",
                    0,
                    "invalid magic number",
                ));
            }
            if c.byte() != Some(FORMAT_V1) {
                return Err(BlockError::corrupt(
                    &path,
                    "chunk file header",
                    4,
                    "unknown version",
                ));
            }
            files.push((path, Arc::new(map)));
        }
        Ok(ChunkReader {
            dir: dir.to_path_buf(),
            files,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files.
    pub fn num_files(&self) -> usize {
        self.files.len()
    }

    /// Total bytes of the segment files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|(_, m)| m.len() as u64).sum()
    }

    /// The encoding byte and data of the chunk at `cref` (bounds- and CRC-checked).
    pub fn chunk(&self, cref: u64) -> Result<(u8, &[u8]), BlockError> {
        let seg = (cref >> 32) as usize;
        let off = (cref & 0xffff_ffff) as usize;
        let Some((path, map)) = self.files.get(seg) else {
            return Err(BlockError::corrupt(
                &self.dir,
                "chunk reference",
                cref,
                format!("segment {seg} does not exist ({} files)", self.files.len()),
            ));
        };
        let bad = |why: String| BlockError::corrupt(path, "chunk", off as u64, why);
        if off < HEADER_SIZE as usize {
            return Err(bad("offset inside the file header".into()));
        }
        let mut c = Cursor::new(map.get(off..).unwrap_or_default());
        let len = c.uvarint().ok_or_else(|| bad("truncated length".into()))?;
        let enc_start = c.pos();
        let len = usize::try_from(len).map_err(|_| bad("length".into()))?;
        let body = len
            .checked_add(1)
            .and_then(|n| c.bytes(n))
            .ok_or_else(|| bad(format!("length {len} runs past the end of the file")))?;
        let crc = c
            .bytes(4)
            .ok_or_else(|| bad("checksum runs past the end of the file".into()))?;
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(BlockError::corrupt(
                path,
                "chunk",
                (off + enc_start) as u64,
                "checksum mismatch",
            ));
        }
        match body.split_first() {
            Some((&enc, data)) => Ok((enc, data)),
            None => Err(bad("empty chunk".into())),
        }
    }

    /// [`ChunkReader::chunk`], as bytes that keep their file mapped for as long as they live
    /// (a query may outlive the block's removal from the database).
    pub fn chunk_shared(&self, cref: u64) -> Result<(u8, MappedChunk), BlockError> {
        let (enc, data) = self.chunk(cref)?;
        let seg = (cref >> 32) as usize;
        let Some((_, map)) = self.files.get(seg) else {
            return Err(BlockError::corrupt(
                &self.dir,
                "chunk reference",
                cref,
                "no segment",
            ));
        };
        // `data` borrows from `map`: its offset is the distance between the two pointers.
        let start = (data.as_ptr() as usize).wrapping_sub(map.as_ptr() as usize);
        Ok((
            enc,
            MappedChunk::new(Arc::clone(map), start, start + data.len()),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn batches_split_across_files_like_prometheus_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<Vec<u8>> = (0..6u8).map(|i| vec![0, 1, i, i, i, i, i, i]).collect();
        let c = |i: usize| ChunkData {
            mint: i as i64,
            maxt: i as i64,
            encoding: 1,
            data: &data[i],
        };
        // Each chunk is estimated at 5 + 1 + 8 + 4 = 18 bytes, written as 1 + 1 + 8 + 4 = 14.
        let mut w = ChunkWriter::create(dir.path(), 8 + 40).unwrap();
        let a = w.write_chunks(&[c(0), c(1), c(2)]).unwrap();
        // 18 + 18 + 8 fits 48, the third does not: [0, 1] in file 1, [2] in file 2.
        assert_eq!(
            a.iter().map(|m| m.cref).collect::<Vec<_>>(),
            vec![8, 22, (1 << 32) | 8]
        );
        // File 2 holds 22 bytes: 22 + 18 fits, 22 + 36 does not: [3] in file 2, [4] in file 3.
        let b = w.write_chunks(&[c(3), c(4)]).unwrap();
        assert_eq!(
            b.iter().map(|m| m.cref).collect::<Vec<_>>(),
            vec![(1 << 32) | 22, (2 << 32) | 8]
        );
        // A chunk larger than a segment still gets written.
        let big = vec![0u8; 100];
        let m = w
            .write_chunks(&[ChunkData {
                mint: 9,
                maxt: 9,
                encoding: 1,
                data: &big,
            }])
            .unwrap();
        assert_eq!(m[0].cref, (3 << 32) | 8);
        w.finish().unwrap();
        let r = ChunkReader::open(dir.path()).unwrap();
        assert_eq!(r.num_files(), 4);
        for (meta, i) in a.iter().chain(&b).zip(0..) {
            assert_eq!(r.chunk(meta.cref).unwrap(), (1, data[i].as_slice()));
        }
        assert_eq!(r.chunk(m[0].cref).unwrap().1, big.as_slice());
        assert!(r.chunk(4 << 32 | 8).is_err());
        assert!(r.chunk(9).is_err());
    }
}
