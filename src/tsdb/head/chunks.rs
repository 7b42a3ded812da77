//! `chunks_head/NNNNNN`: full head chunks on disk, read back through memory maps
//! (Prometheus `tsdb/chunks/head_chunks.go`, format digest §4.7).
//!
//! ```text
//! file:  BE u32 0x0130BC91 | version 1 | 3 zero bytes | entry* | (zero tail)
//! entry: BE u64 series ref | BE u64 mint | BE u64 maxt | encoding u8 | uvarint len | data |
//!        CRC32C(series ref … data)
//! ref  = (file number << 32) | offset of the entry
//! ```
//! Files are numbered from 1 and hold at most `max_file_size` bytes. Writes are appended through
//! an in-process buffer — never through the map — and a file is only mapped up to what has been
//! written to it, so a reader can never touch a page beyond the end of the file. These files are
//! a cache of what the WAL holds: they are not fsynced, and on open a corrupt or torn entry
//! ends the file there (the file is cut and later files are deleted); the WAL replays the rest.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

pub use crate::tsdb::fileutil::MappedChunk;
use parking_lot::{Mutex, RwLock};

pub const MAGIC: u32 = 0x0130_BC91;
pub const HEADER_SIZE: usize = 8;
/// series ref + mint + maxt + encoding.
const ENTRY_FIXED: usize = 8 + 8 + 8 + 1;
const CRC_SIZE: usize = 4;
pub const DEFAULT_MAX_FILE_SIZE: u64 = 128 * 1024 * 1024;
const WRITE_BUFFER: usize = 1024 * 1024;

/// Reference to a chunk in `chunks_head/`: file number in the upper 32 bits, offset below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkRef(pub u64);

impl ChunkRef {
    pub fn new(file: u32, offset: u32) -> ChunkRef {
        ChunkRef((u64::from(file) << 32) | u64::from(offset))
    }
    pub fn file(self) -> u32 {
        (self.0 >> 32) as u32
    }
    pub fn offset(self) -> u32 {
        self.0 as u32
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkFileError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt head chunk in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("head chunk reference {0:#x} points to no file")]
    UnknownFile(u64),
}

impl ChunkFileError {
    /// What retrying can bring: I/O may clear; a damaged file or dangling reference will not.
    pub fn retry(&self) -> crate::tsdb::Retry {
        match self {
            ChunkFileError::Io { .. } => crate::tsdb::Retry::Maybe,
            _ => crate::tsdb::Retry::Never,
        }
    }
}

/// One chunk found while replaying the files.
#[derive(Debug, Clone, Copy)]
pub struct ReplayedChunk {
    pub series_ref: u64,
    pub cref: ChunkRef,
    pub mint: i64,
    pub maxt: i64,
    pub num_samples: u16,
    pub encoding: u8,
}

#[derive(Debug, Default, Clone)]
pub struct ChunkReplayReport {
    pub files: u64,
    pub chunks: u64,
    /// `(file, offset, reason)` of the first bad entry, when a tail was dropped.
    pub dropped_tail: Option<(u32, u64, String)>,
}

struct Writer {
    /// Current file number (0: none yet; the first write cuts file `last + 1`).
    seq: u32,
    file: Option<File>,
    /// Bytes in the current file, buffered ones included.
    size: u64,
    /// Bytes of the current file already written to it.
    flushed: u64,
    buf: Vec<u8>,
    /// Newest chunk end time in each file (files without chunks are absent).
    file_maxt: BTreeMap<u32, i64>,
}

/// Writes full head chunks and reads them back.
pub struct ChunkDiskMapper {
    dir: PathBuf,
    max_file_size: u64,
    w: Mutex<Writer>,
    /// Mapped prefix of every file; the current file is remapped as readers need more of it.
    maps: RwLock<BTreeMap<u32, Arc<Mmap>>>,
}

fn file_name(dir: &Path, seq: u32) -> PathBuf {
    dir.join(format!("{seq:06}"))
}

fn list_files(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 6 && name.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = name.parse::<u32>() {
                if n > 0 {
                    out.push(n);
                }
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Map all of `path` as it is now (`None` for an empty file, which cannot be mapped).
fn map_file(path: &Path) -> io::Result<Option<Mmap>> {
    let f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: chunk files are only appended to by this process (never through a map) and only
    // truncated when no map of them is held (at open, before any map exists); at run time
    // they are only unlinked, which leaves existing maps valid. Readers bounds-check every
    // access against the mapped length.
    let m = unsafe { Mmap::map(&f)? };
    Ok(Some(m))
}

/// Parse the entry at `off` of a mapped file. `Ok(None)` marks the end of data (zero tail).
fn parse_entry(
    b: &[u8],
    off: usize,
) -> Result<Option<(ReplayedChunk, usize, usize, usize)>, String> {
    let rest = b.get(off..).unwrap_or_default();
    if rest.len() < ENTRY_FIXED || rest.get(..24).is_some_and(|h| h.iter().all(|&x| x == 0)) {
        // Fewer bytes than a header, or a zero header: end of data.
        return Ok(None);
    }
    let be = |i: usize| -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(rest.get(i..i + 8).unwrap_or(&[0u8; 8]));
        u64::from_be_bytes(a)
    };
    let (series_ref, mint, maxt) = (be(0), be(8) as i64, be(16) as i64);
    let encoding = rest.get(24).copied().unwrap_or(0);
    let (len, n) = crate::tsdb::encoding::read_uvarint(rest.get(ENTRY_FIXED..).unwrap_or_default())
        .map_err(|_| "truncated length")?;
    let data_start = ENTRY_FIXED + n;
    let left = rest.len().saturating_sub(data_start + CRC_SIZE);
    if len > left as u64 {
        return Err(format!("chunk length {len} runs past the end of the file"));
    }
    let data_end = data_start + len as usize;
    let body = rest.get(..data_end).ok_or("truncated entry")?;
    let crc = rest
        .get(data_end..data_end + CRC_SIZE)
        .ok_or("truncated checksum")?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return Err("checksum mismatch".into());
    }
    if maxt < mint {
        return Err(format!("chunk maxt {maxt} before mint {mint}"));
    }
    let num_samples = match rest.get(data_start..data_start + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => return Err("chunk data shorter than its sample count".into()),
    };
    let chunk = ReplayedChunk {
        series_ref,
        cref: ChunkRef::new(0, 0),
        mint,
        maxt,
        num_samples,
        encoding,
    };
    Ok(Some((
        chunk,
        off + data_start,
        off + data_end,
        off + data_end + CRC_SIZE,
    )))
}

impl ChunkDiskMapper {
    /// Open `dir`, replaying every valid chunk into `on_chunk` in file order. A bad entry ends
    /// the data: its file is cut there and later files are removed.
    pub fn open(
        dir: &Path,
        max_file_size: u64,
        mut on_chunk: impl FnMut(ReplayedChunk),
    ) -> Result<(ChunkDiskMapper, ChunkReplayReport), ChunkFileError> {
        let io_err = |op, path: &Path, source| ChunkFileError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        crate::tsdb::fileutil::remove_tmp_leftovers(dir).map_err(|e| io_err("clean", dir, e))?;
        let files = list_files(dir).map_err(|e| io_err("list", dir, e))?;
        let mut report = ChunkReplayReport::default();
        let mut maps = BTreeMap::new();
        let mut file_maxt: BTreeMap<u32, i64> = BTreeMap::new();
        let mut cut: Option<(usize, u32, u64, String)> = None;
        for (i, &seq) in files.iter().enumerate() {
            let path = file_name(dir, seq);
            report.files += 1;
            let Some(map) = map_file(&path).map_err(|e| io_err("map", &path, e))? else {
                cut = Some((i, seq, 0, "empty file".into()));
                break;
            };
            let bad = |off: usize, reason: String| Some((i, seq, off as u64, reason));
            let header_ok =
                map.get(..4) == Some(&MAGIC.to_be_bytes()[..]) && map.get(4) == Some(&1);
            if !header_ok {
                cut = bad(0, "bad file header".into());
                break;
            }
            let mut off = HEADER_SIZE;
            let mut failure = None;
            loop {
                match parse_entry(&map, off) {
                    Ok(Some((mut c, _, _, next))) => {
                        c.cref = ChunkRef::new(seq, off as u32);
                        report.chunks += 1;
                        let m = file_maxt.entry(seq).or_insert(c.maxt);
                        *m = (*m).max(c.maxt);
                        on_chunk(c);
                        off = next;
                    }
                    Ok(None) => break,
                    Err(reason) => {
                        failure = bad(off, reason);
                        break;
                    }
                }
            }
            maps.insert(seq, Arc::new(map));
            if failure.is_some() {
                cut = failure;
                break;
            }
        }
        if let Some((i, seq, off, reason)) = cut {
            // Cut the bad file (its map must go first) and drop every later file.
            maps.remove(&seq);
            let path = file_name(dir, seq);
            if off <= HEADER_SIZE as u64 {
                fs::remove_file(&path).map_err(|e| io_err("remove", &path, e))?;
            } else {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| io_err("open", &path, e))?;
                f.set_len(off).map_err(|e| io_err("truncate", &path, e))?;
                let m = map_file(&path).map_err(|e| io_err("map", &path, e))?;
                if let Some(m) = m {
                    maps.insert(seq, Arc::new(m));
                }
            }
            for &later in files.get(i + 1..).unwrap_or_default() {
                let p = file_name(dir, later);
                fs::remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
            }
            report.dropped_tail = Some((seq, off, reason));
        }
        let last = maps.keys().next_back().copied().unwrap_or(0);
        let mapper = ChunkDiskMapper {
            dir: dir.to_path_buf(),
            max_file_size,
            w: Mutex::new(Writer {
                seq: last,
                file: None,
                size: 0,
                flushed: 0,
                buf: Vec::new(),
                file_maxt,
            }),
            maps: RwLock::new(maps),
        };
        Ok((mapper, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append a full chunk; returns its reference. The bytes are readable at once.
    pub fn write_chunk(
        &self,
        series_ref: u64,
        mint: i64,
        maxt: i64,
        encoding: u8,
        data: &[u8],
    ) -> Result<ChunkRef, ChunkFileError> {
        let mut w = self.w.lock();
        let mut len_buf = Vec::with_capacity(10);
        crate::tsdb::encoding::put_uvarint(&mut len_buf, data.len() as u64);
        let entry_len = (ENTRY_FIXED + len_buf.len() + data.len() + CRC_SIZE) as u64;
        if w.file.is_none() || w.size + entry_len > self.max_file_size {
            self.cut_file(&mut w)?;
        }
        let off = w.size;
        let start = w.buf.len();
        w.buf.extend_from_slice(&series_ref.to_be_bytes());
        w.buf.extend_from_slice(&(mint as u64).to_be_bytes());
        w.buf.extend_from_slice(&(maxt as u64).to_be_bytes());
        w.buf.push(encoding);
        w.buf.extend_from_slice(&len_buf);
        w.buf.extend_from_slice(data);
        let crc = crc32c::crc32c(w.buf.get(start..).unwrap_or_default());
        w.buf.extend_from_slice(&crc.to_be_bytes());
        w.size += entry_len;
        let seq = w.seq;
        let m = w.file_maxt.entry(seq).or_insert(maxt);
        *m = (*m).max(maxt);
        if w.buf.len() >= WRITE_BUFFER {
            // The entry is in the buffer and readable from there (`chunk`); a failed write
            // (a full disk) is retried at the next flush, from the same file offset.
            let _ = self.flush_locked(&mut w);
        }
        Ok(ChunkRef::new(w.seq, off as u32))
    }

    fn cut_file(&self, w: &mut Writer) -> Result<(), ChunkFileError> {
        self.flush_locked(w)?;
        let seq = w.seq + 1;
        let path = file_name(&self.dir, seq);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| ChunkFileError::Io {
                op: "create",
                path: path.clone(),
                source,
            })?;
        let mut header = [0u8; HEADER_SIZE];
        header[..4].copy_from_slice(&MAGIC.to_be_bytes());
        header[4] = 1;
        if let Err(source) = f.write_all(&header) {
            // Leave no headerless file behind: the next cut creates this number again.
            drop(f);
            let _ = fs::remove_file(&path);
            return Err(ChunkFileError::Io {
                op: "write",
                path,
                source,
            });
        }
        w.seq = seq;
        w.file = Some(f);
        w.size = HEADER_SIZE as u64;
        w.flushed = HEADER_SIZE as u64;
        Ok(())
    }

    fn flush_locked(&self, w: &mut Writer) -> Result<(), ChunkFileError> {
        if w.buf.is_empty() {
            return Ok(());
        }
        let path = file_name(&self.dir, w.seq);
        let Some(f) = w.file.as_ref() else {
            return Ok(());
        };
        // At the offset the file was written up to: a write cut short (ENOSPC) is redone from
        // there in full, never appended again after its partial bytes.
        std::os::unix::fs::FileExt::write_all_at(f, &w.buf, w.flushed).map_err(|source| {
            ChunkFileError::Io {
                op: "write",
                path,
                source,
            }
        })?;
        w.flushed += w.buf.len() as u64;
        w.buf.clear();
        Ok(())
    }

    /// Write buffered chunks to the file (not fsynced: the WAL is the durable copy).
    pub fn flush(&self) -> Result<(), ChunkFileError> {
        let mut w = self.w.lock();
        self.flush_locked(&mut w)
    }

    /// The data bytes of the chunk at `r` (bounds- and CRC-checked).
    pub fn chunk(&self, r: ChunkRef) -> Result<MappedChunk, ChunkFileError> {
        let seq = r.file();
        let off = r.offset() as usize;
        let mapped = self.maps.read().get(&seq).cloned();
        if let Some(map) = mapped {
            if let Ok(Some((_, start, end, _))) = parse_entry(&map, off) {
                return Ok(MappedChunk::new(map, start, end));
            }
        }
        // Not mapped (far enough) yet. Still in the write buffer: serve a copy from there (the
        // file may not be writable, e.g. a full disk). Otherwise remap once and report what
        // the fresh map says.
        {
            let w = self.w.lock();
            if w.seq == seq && off as u64 >= w.flushed {
                let rel = (off as u64 - w.flushed) as usize;
                return match parse_entry(&w.buf, rel) {
                    Ok(Some((_, start, end, _))) => Ok(MappedChunk::copy_of(
                        w.buf.get(start..end).unwrap_or_default(),
                    )),
                    _ => Err(ChunkFileError::Corrupt {
                        path: file_name(&self.dir, seq),
                        offset: off as u64,
                        reason: "no chunk at this reference in the write buffer".into(),
                    }),
                };
            }
        }
        let path = file_name(&self.dir, seq);
        let map = match map_file(&path) {
            Ok(Some(m)) => Arc::new(m),
            Ok(None) => return Err(ChunkFileError::UnknownFile(r.0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ChunkFileError::UnknownFile(r.0))
            }
            Err(source) => {
                return Err(ChunkFileError::Io {
                    op: "map",
                    path,
                    source,
                })
            }
        };
        self.maps.write().insert(seq, Arc::clone(&map));
        match parse_entry(&map, off) {
            Ok(Some((_, start, end, _))) => Ok(MappedChunk::new(map, start, end)),
            Ok(None) => Err(ChunkFileError::Corrupt {
                path,
                offset: off as u64,
                reason: "no chunk at this reference".into(),
            }),
            Err(reason) => Err(ChunkFileError::Corrupt {
                path,
                offset: off as u64,
                reason,
            }),
        }
    }

    /// Delete the oldest files whose chunks all end before `mint` (head truncation: the head no
    /// longer references them). Only a prefix of the files goes — Prometheus refuses a
    /// `chunks_head/` with gaps in its numbering — and never the file being written; that one
    /// is closed when it holds chunks, so the next truncation can remove it. Readers holding a
    /// chunk keep its map: a deleted file's pages stay valid until the last map is dropped.
    /// Returns how many files were removed.
    pub fn truncate(&self, mint: i64) -> Result<usize, ChunkFileError> {
        let mut w = self.w.lock();
        if w.file.is_some() && w.size > HEADER_SIZE as u64 {
            self.flush_locked(&mut w)?;
            w.file = None;
        }
        let current = w.file.is_some().then_some(w.seq);
        let mut files = list_files(&self.dir).map_err(|source| ChunkFileError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        })?;
        files.retain(|&f| Some(f) != current);
        let mut removed = 0;
        for seq in files {
            if w.file_maxt.get(&seq).is_some_and(|&m| m >= mint) {
                break;
            }
            let path = file_name(&self.dir, seq);
            self.maps.write().remove(&seq);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ChunkFileError::Io {
                        op: "remove",
                        path,
                        source,
                    })
                }
            }
            w.file_maxt.remove(&seq);
            removed += 1;
        }
        Ok(removed)
    }

    /// Numbers of the files on disk (for tests and housekeeping).
    pub fn files(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.maps.read().keys().copied().collect();
        let cur = self.w.lock().seq;
        if cur != 0 && !v.contains(&cur) {
            v.push(cur);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn chunks_are_readable_right_after_writing_and_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = ChunkDiskMapper::open(dir.path(), 200, |_| {}).unwrap();
        let mut refs = Vec::new();
        for i in 0..20u8 {
            let data = vec![0, 1, i, i, i];
            refs.push((
                m.write_chunk(u64::from(i) + 1, i64::from(i), i64::from(i) + 10, 1, &data)
                    .unwrap(),
                data,
            ));
        }
        for (r, data) in &refs {
            assert_eq!(&*m.chunk(*r).unwrap(), data.as_slice());
        }
        assert!(m.files().len() > 1, "200-byte files must have been cut");
        m.flush().unwrap();
        drop(m);
        let mut seen = Vec::new();
        let (m, rep) = ChunkDiskMapper::open(dir.path(), 200, |c| seen.push(c)).unwrap();
        assert_eq!(rep.chunks, 20);
        assert!(rep.dropped_tail.is_none());
        for (c, (r, data)) in seen.iter().zip(&refs) {
            assert_eq!(c.cref, *r);
            assert_eq!(&*m.chunk(c.cref).unwrap(), data.as_slice());
        }
        // New writes go to a new file after the existing ones.
        let r = m.write_chunk(99, 0, 1, 1, &[0, 1, 2]).unwrap();
        assert!(r.file() > refs.last().unwrap().0.file());
    }

    #[test]
    fn a_corrupt_entry_ends_the_data_and_later_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (m, _) = ChunkDiskMapper::open(dir.path(), 100, |_| {}).unwrap();
        let mut refs = Vec::new();
        for i in 0..9u8 {
            refs.push(
                m.write_chunk(1, i64::from(i), i64::from(i), 1, &[0, 1, i, i])
                    .unwrap(),
            );
        }
        m.flush().unwrap();
        drop(m);
        let files = list_files(dir.path()).unwrap();
        assert!(files.len() >= 3);
        // Flip a data byte of the second chunk of the second file.
        let second: Vec<_> = refs.iter().filter(|r| r.file() == files[1]).collect();
        let victim = *second[1];
        let p = file_name(dir.path(), victim.file());
        let mut b = fs::read(&p).unwrap();
        b[victim.offset() as usize + ENTRY_FIXED + 3] ^= 0xff;
        fs::write(&p, b).unwrap();
        let mut n = 0;
        let (_m, rep) = ChunkDiskMapper::open(dir.path(), 100, |_| n += 1).unwrap();
        let kept = refs.iter().take_while(|r| **r != victim).count();
        assert_eq!(n, kept);
        let (f, off, _) = rep.dropped_tail.unwrap();
        assert_eq!((f, off), (victim.file(), u64::from(victim.offset())));
        assert_eq!(list_files(dir.path()).unwrap(), files[..2].to_vec());
        assert_eq!(fs::metadata(&p).unwrap().len(), u64::from(victim.offset()));
    }
}
