//! Persistent blocks (Prometheus `tsdb/block.go`, `tsdb/compact.go` `write`; format digest
//! §4.1–4.6): the [`BlockWriter`] and the read-only [`Block`].
//!
//! ```text
//! <data>/<ULID>/
//!   chunks/000001 …   chunk segment files (chunks.rs), ≤ 512 MiB each
//!   index             index v2 (crate::tsdb::index)
//!   meta.json         meta.rs
//!   tombstones        tombstones.rs (empty for a new block)
//! ```
//!
//! Writing is atomic: everything goes into `<ULID>.tmp-for-creation/` in the order chunks,
//! index, meta.json, tombstones; every file is fsynced, then the directory; the directory is
//! renamed to `<ULID>` and the parent fsynced. A crash leaves either no block or a
//! `*.tmp-for-creation` leftover, which `fileutil::remove_tmp_leftovers` deletes on open. A
//! failed write removes its temporary directory.
//!
//! Rules a caller keeps (checked; breaking one is [`BlockError::Invalid`]): series are given in
//! strictly ascending label-set order; chunks of a series are time-ordered, don't overlap, and
//! lie in `[min_time, max_time)`. Series without chunks are left out, as Prometheus's compactor
//! does.
//!
//! Reading maps the index and chunk files; see the index and chunk modules for what is
//! validated. [`Block::open`] reads meta.json (size-capped, version 1 only), the index (its
//! tables are validated at once) and the chunk file headers.

pub mod chunks;
pub mod meta;
pub mod tombstones;
pub mod ulid;

pub use chunks::{ChunkData, ChunkReader, ChunkWriter, DEFAULT_SEGMENT_SIZE};
pub use meta::{BlockDesc, BlockMeta, BlockStats, Compaction};
pub use tombstones::Stone;
pub use ulid::Ulid;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::model::Labels;
use crate::tsdb::fileutil::fsync_dir;
use crate::tsdb::index::{ChunkMeta, IndexError, IndexReader, IndexWriter};

pub const META_FILE: &str = "meta.json";
pub const INDEX_FILE: &str = "index";
pub const CHUNKS_DIR: &str = "chunks";
pub const TMP_CREATION_SUFFIX: &str = ".tmp-for-creation";

/// Errors of the block layer. Corruption names the file, the section and the byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("corrupt {path}: {section} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        section: &'static str,
        offset: u64,
        reason: String,
    },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("bad meta file {path}: {reason}")]
    Meta { path: PathBuf, reason: String },
    #[error("block {path} already exists")]
    Exists { path: PathBuf },
    /// The caller broke a writer rule; nothing about the files.
    #[error("invalid block input: {reason}")]
    Invalid { reason: String },
}

impl BlockError {
    /// What retrying can bring: I/O may clear; damaged or refused input will not.
    pub fn retry(&self) -> crate::tsdb::Retry {
        match self {
            BlockError::Io { .. } | BlockError::Exists { .. } => crate::tsdb::Retry::Maybe,
            _ => crate::tsdb::Retry::Never,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> BlockError {
        BlockError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: &Path,
        section: &'static str,
        offset: u64,
        reason: impl Into<String>,
    ) -> BlockError {
        BlockError::Corrupt {
            path: path.to_path_buf(),
            section,
            offset,
            reason: reason.into(),
        }
    }

    /// Whether the error says the stored bytes are bad (as opposed to I/O or caller errors).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            BlockError::Corrupt { .. }
                | BlockError::Meta { .. }
                | BlockError::Index(IndexError::Corrupt { .. })
                | BlockError::Index(IndexError::UnsupportedVersion { .. })
                | BlockError::Index(IndexError::NoSuchSeries { .. })
        )
    }
}

/// Read a whole file, refusing files larger than `cap` bytes.
pub(crate) fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, BlockError> {
    let f = File::open(path).map_err(|e| BlockError::io("open", path, e))?;
    let mut b = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut b)
        .map_err(|e| BlockError::io("read", path, e))?;
    if b.len() as u64 > cap {
        return Err(BlockError::Meta {
            path: path.to_path_buf(),
            reason: format!("larger than {cap} bytes"),
        });
    }
    Ok(b)
}

/// Write `data` to `path` and fsync it (inside a temporary block directory; the directory
/// rename is what makes it visible).
fn write_synced(path: &Path, data: &[u8]) -> Result<(), BlockError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| BlockError::io("create", path, e))?;
    f.write_all(data)
        .map_err(|e| BlockError::io("write", path, e))?;
    f.sync_all().map_err(|e| BlockError::io("fsync", path, e))
}

/// Where [`BlockWriter::write_stream`]'s producer hands each series (labels, chunks).
pub type SeriesSink<'w> = dyn FnMut(&Labels, &[ChunkData<'_>]) -> Result<(), BlockError> + 'w;

/// One series to write: its labels and its chunks in time order.
#[derive(Debug, Clone)]
pub struct NewSeries<'a> {
    pub labels: &'a Labels,
    pub chunks: Vec<ChunkData<'a>>,
}

/// Writes blocks (see the module docs).
#[derive(Debug, Clone)]
pub struct BlockWriter {
    /// Largest chunk segment file (Prometheus: 512 MiB); smaller in tests.
    pub segment_size: u64,
}

impl Default for BlockWriter {
    fn default() -> Self {
        BlockWriter {
            segment_size: DEFAULT_SEGMENT_SIZE,
        }
    }
}

impl BlockWriter {
    /// Write block `ulid` covering `[min_time, max_time)` into `parent/<ulid>`. Returns its meta.
    pub fn write(
        &self,
        parent: &Path,
        ulid: Ulid,
        min_time: i64,
        max_time: i64,
        compaction: Compaction,
        series: &[NewSeries<'_>],
    ) -> Result<BlockMeta, BlockError> {
        let mut symbols: BTreeSet<&str> = BTreeSet::new();
        for s in series.iter().filter(|s| !s.chunks.is_empty()) {
            for (n, v) in s.labels.iter() {
                symbols.insert(n);
                symbols.insert(v);
            }
        }
        let mut it = series.iter();
        self.write_stream(
            parent,
            ulid,
            min_time,
            max_time,
            compaction,
            symbols.into_iter().collect(),
            |out: &mut SeriesSink<'_>| {
                for s in it.by_ref() {
                    out(s.labels, &s.chunks)?;
                }
                Ok(())
            },
        )
    }

    /// Like [`BlockWriter::write`], for series produced one at a time (memory stays at one
    /// series' chunks plus the index's postings, whatever the block's size). `symbols` must
    /// hold every label name and value of the series produced, sorted, without duplicates
    /// (`""` is added if missing). `produce` calls the sink it is
    /// given once per series, in strictly ascending label-set order.
    #[allow(clippy::too_many_arguments)]
    pub fn write_stream<F>(
        &self,
        parent: &Path,
        ulid: Ulid,
        min_time: i64,
        max_time: i64,
        compaction: Compaction,
        symbols: Vec<&str>,
        produce: F,
    ) -> Result<BlockMeta, BlockError>
    where
        F: FnOnce(
            &mut dyn FnMut(&Labels, &[ChunkData<'_>]) -> Result<(), BlockError>,
        ) -> Result<(), BlockError>,
    {
        let name = ulid.to_string();
        let final_dir = parent.join(&name);
        if final_dir.exists() {
            return Err(BlockError::Exists { path: final_dir });
        }
        let tmp = parent.join(format!("{name}{TMP_CREATION_SUFFIX}"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(|e| BlockError::io("remove", &tmp, e))?;
        }
        fs::create_dir_all(&tmp).map_err(|e| BlockError::io("create", &tmp, e))?;
        let meta =
            match self.write_into(&tmp, ulid, min_time, max_time, compaction, symbols, produce) {
                Ok(m) => m,
                Err(e) => {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e);
                }
            };
        fs::rename(&tmp, &final_dir).map_err(|e| BlockError::io("rename", &tmp, e))?;
        fsync_dir(parent).map_err(|e| BlockError::io("fsync", parent, e))?;
        Ok(meta)
    }

    #[allow(clippy::too_many_arguments)]
    fn write_into<F>(
        &self,
        dir: &Path,
        ulid: Ulid,
        min_time: i64,
        max_time: i64,
        compaction: Compaction,
        mut symbols: Vec<&str>,
        produce: F,
    ) -> Result<BlockMeta, BlockError>
    where
        F: FnOnce(
            &mut dyn FnMut(&Labels, &[ChunkData<'_>]) -> Result<(), BlockError>,
        ) -> Result<(), BlockError>,
    {
        if max_time <= min_time {
            return Err(BlockError::Invalid {
                reason: format!("empty block range [{min_time}, {max_time})"),
            });
        }
        // Symbols: every name and value, plus "" (as Prometheus's head has).
        if symbols.first() != Some(&"") {
            symbols.insert(0, "");
        }
        let mut stats = BlockStats::default();
        let mut cw = ChunkWriter::create(&dir.join(CHUNKS_DIR), self.segment_size)?;
        let mut iw = IndexWriter::create(&dir.join(INDEX_FILE), symbols)?;
        // Chunks first, then the series' index entry pointing at them (Prometheus writes both
        // in one pass the same way).
        let mut sink = |labels: &Labels, chunks: &[ChunkData<'_>]| -> Result<(), BlockError> {
            if chunks.is_empty() {
                return Ok(());
            }
            for c in chunks {
                if c.mint < min_time || c.maxt >= max_time || c.maxt < c.mint {
                    return Err(BlockError::Invalid {
                        reason: format!(
                            "chunk [{}, {}] of {labels} outside the block range [{min_time}, {max_time})",
                            c.mint, c.maxt
                        ),
                    });
                }
                stats.num_samples += u64::from(c.num_samples());
            }
            stats.num_chunks += chunks.len() as u64;
            stats.num_series += 1;
            let metas = cw.write_chunks(chunks)?;
            iw.add_series(labels, &metas).map_err(|e| match e {
                IndexError::Invalid { reason, .. } => BlockError::Invalid { reason },
                e => BlockError::Index(e),
            })?;
            Ok(())
        };
        produce(&mut sink)?;
        cw.finish()?;
        iw.finish()?;

        // meta.json, tombstones, then the directory.
        let meta = BlockMeta {
            ulid,
            min_time,
            max_time,
            stats,
            compaction,
            version: meta::META_VERSION,
        };
        write_synced(&dir.join(META_FILE), &meta.to_json())?;
        tombstones::write(dir, &[])?;
        fsync_dir(dir).map_err(|e| BlockError::io("fsync", dir, e))?;
        Ok(meta)
    }
}

/// A chunk read from a block: its meta and its stored bytes (in the mapped file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadChunk<'a> {
    pub meta: ChunkMeta,
    pub encoding: u8,
    pub data: &'a [u8],
}

/// A series read from a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadSeries<'a> {
    /// Series ID in the index (offset / 16).
    pub id: u32,
    pub labels: Labels,
    pub chunks: Vec<ReadChunk<'a>>,
}

/// An open, read-only block.
#[derive(Debug)]
pub struct Block {
    dir: PathBuf,
    meta: BlockMeta,
    index: IndexReader,
    chunks: ChunkReader,
    tombstones: Vec<Stone>,
    /// Bytes of the block's files on disk.
    size: u64,
}

impl Block {
    /// Open the block in `dir`: meta.json, index, chunk files, tombstones.
    pub fn open(dir: &Path) -> Result<Block, BlockError> {
        let meta_path = dir.join(META_FILE);
        let raw = read_capped(&meta_path, meta::MAX_META_SIZE)?;
        let meta = BlockMeta::from_json(&raw).map_err(|reason| BlockError::Meta {
            path: meta_path.clone(),
            reason,
        })?;
        let index = IndexReader::open(&dir.join(INDEX_FILE))?;
        let chunks = ChunkReader::open(&dir.join(CHUNKS_DIR))?;
        let mut tombstones = tombstones::read(dir)?;
        tombstones.sort_unstable();
        let small = |name: &str| fs::metadata(dir.join(name)).map_or(0, |m| m.len());
        let size = index.size() + chunks.size() + small(META_FILE) + small(tombstones::FILE_NAME);
        Ok(Block {
            dir: dir.to_path_buf(),
            meta,
            index,
            chunks,
            tombstones,
            size,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &BlockMeta {
        &self.meta
    }

    /// Bytes of the block's files (index, chunks, meta.json, tombstones) when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn index(&self) -> &IndexReader {
        &self.index
    }

    pub fn chunks(&self) -> &ChunkReader {
        &self.chunks
    }

    /// Every deleted interval, sorted by series.
    pub fn tombstones(&self) -> &[Stone] {
        &self.tombstones
    }

    /// Deleted intervals of series `id`.
    pub fn tombstones_for(&self, id: u64) -> impl Iterator<Item = (i64, i64)> + '_ {
        let start = self.tombstones.partition_point(|s| s.series_ref < id);
        self.tombstones
            .get(start..)
            .unwrap_or_default()
            .iter()
            .take_while(move |s| s.series_ref == id)
            .map(|s| (s.mint, s.maxt))
    }

    /// Add deleted intervals: the `tombstones` file and meta.json's tombstone count are
    /// replaced atomically (tmp → fsync → rename → fsync dir), then the block is opened
    /// again. Readers holding the old `Block` keep the old view.
    pub fn with_more_tombstones(&self, add: &[Stone]) -> Result<Block, BlockError> {
        let mut all: Vec<Stone> = self.tombstones.iter().chain(add).copied().collect();
        all.sort_unstable();
        all.dedup();
        let path = self.dir.join(tombstones::FILE_NAME);
        crate::tsdb::fileutil::write_atomic(&path, &tombstones::encode(&all))
            .map_err(|e| BlockError::io("write", &path, e))?;
        let mut meta = self.meta.clone();
        meta.stats.num_tombstones = all.len() as u64;
        let meta_path = self.dir.join(META_FILE);
        crate::tsdb::fileutil::write_atomic(&meta_path, &meta.to_json())
            .map_err(|e| BlockError::io("write", &meta_path, e))?;
        Block::open(&self.dir)
    }

    /// The block with `compaction.failed` set in its `meta.json` (replaced atomically;
    /// Prometheus `setCompactionFailed`): the planner leaves it out of merges from then on.
    pub fn with_compaction_failed(&self) -> Result<Block, BlockError> {
        let mut meta = self.meta.clone();
        meta.compaction.failed = true;
        let meta_path = self.dir.join(META_FILE);
        crate::tsdb::fileutil::write_atomic(&meta_path, &meta.to_json())
            .map_err(|e| BlockError::io("write", &meta_path, e))?;
        Block::open(&self.dir)
    }

    /// Series `id` with its chunks' bytes.
    pub fn read_series(&self, id: u32) -> Result<ReadSeries<'_>, BlockError> {
        let e = self.index.series(id)?;
        let mut chunks = Vec::with_capacity(e.chunks.len());
        for m in e.chunks {
            let (encoding, data) = self.chunks.chunk(m.cref)?;
            chunks.push(ReadChunk {
                meta: m,
                encoding,
                data,
            });
        }
        Ok(ReadSeries {
            id,
            labels: e.labels,
            chunks,
        })
    }

    /// Every series in label-set order, with its chunks' bytes.
    pub fn series(
        &self,
    ) -> Result<impl Iterator<Item = Result<ReadSeries<'_>, BlockError>> + '_, BlockError> {
        let ids = self.index.all_postings()?;
        Ok(ids.into_iter().map(move |id| self.read_series(id)))
    }
}
