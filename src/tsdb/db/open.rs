//! Opening a data directory.
//!
//! Open order, each step finishing before the next:
//! 1. create the directory, take `lock` (a second process gets a clear error);
//! 2. remove leftovers of interrupted work (`*.tmp`, `*.tmp-for-creation`, …);
//! 3. open every block (`<ULID>/` with a `meta.json`); a block that fails to open stops the
//!    open with an error naming it (Prometheus does the same: serving without it would
//!    silently drop its data). The head accepts nothing older than the newest block's end;
//! 4. replay `chunks_head/` (a bad entry ends the data: cut there, later files removed);
//! 5. replay the WAL (its last checkpoint first) into the head, attaching each series'
//!    chunks from step 4 and skipping samples they already hold or that a block holds; a torn
//!    or corrupt tail is repaired and counted;
//! 6. open a fresh WAL segment for writing.
//!

use super::*;

/// Open every block directory (`<ULID>/` holding a `meta.json`) in `dir`, sorted by min time.
pub(super) fn open_blocks(dir: &Path) -> Result<Vec<Arc<Block>>, DbError> {
    let io = |source| DbError::Io {
        op: "list",
        path: dir.to_path_buf(),
        source,
    };
    let mut blocks = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let is_block = name.to_str().is_some_and(|n| Ulid::from_str(n).is_ok())
            && entry.file_type().map_err(io)?.is_dir()
            && entry.path().join(block::META_FILE).exists();
        if !is_block {
            continue;
        }
        let path = entry.path();
        // A crash while replacing the tombstones file or meta.json leaves a `*.tmp` inside.
        let _ = fileutil::remove_tmp_leftovers(&path);
        let b = Block::open(&path).map_err(|source| DbError::OpenBlock { path, source })?;
        blocks.push(Arc::new(b));
    }
    // Blocks that are parents of another block were merged into it; a crash came between the
    // merged block becoming durable and their deletion. Blocks marked deletable are done
    // with. (Prometheus `deletableBlocks`.)
    let metas: Vec<BlockMeta> = blocks.iter().map(|b| b.meta().clone()).collect();
    let mut doomed = compact::deletable_parents(&metas);
    doomed.extend(compact::marked_deletable(&metas));
    let mut kept = Vec::with_capacity(blocks.len());
    for b in blocks {
        if doomed.contains(&b.meta().ulid) {
            fileutil::remove_dir_atomic(b.dir()).map_err(|source| DbError::Io {
                op: "remove merged block",
                path: b.dir().to_path_buf(),
                source,
            })?;
        } else {
            kept.push(b);
        }
    }
    kept.sort_by_key(|b| (b.meta().min_time, b.meta().max_time));
    Ok(kept)
}

impl Db {
    /// Open (creating if needed) and recover the data directory `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Db, DbError> {
        let start = Instant::now();
        let dir = dir.as_ref().to_path_buf();
        if opts.block_range_ms <= 0 {
            return Err(DbError::Options("block range must be positive".into()));
        }
        std::fs::create_dir_all(&dir).map_err(|source| DbError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let lock = LockFile::acquire(&dir)?;
        let mut report = OpenReport {
            leftovers_removed: fileutil::remove_tmp_leftovers(&dir).map_err(|source| {
                DbError::Io {
                    op: "clean",
                    path: dir.clone(),
                    source,
                }
            })?,
            ..OpenReport::default()
        };

        let blocks = open_blocks(&dir)?;
        report.blocks = blocks.len() as u64;
        let blocks_end = blocks
            .iter()
            .map(|b| b.meta().max_time)
            .max()
            .unwrap_or(i64::MIN);

        let mut st = ReplayState::default();
        let (mapper, chunk_report) =
            ChunkDiskMapper::open(&dir.join("chunks_head"), opts.head_chunk_file_size, |c| {
                st.mmapped.entry(c.series_ref).or_default().push(c);
            })?;
        report.chunks = chunk_report;
        let head = Head::new(
            HeadOptions {
                chunk_range: opts.block_range_ms,
                max_future_ms: opts.max_future.as_millis() as i64,
                max_series: opts.max_series,
            },
            mapper,
        );
        // What the blocks hold is not taken again (replay skips it, appends are refused).
        head.raise_min_valid(blocks_end);
        let replayed = std::cell::Cell::new(0u64);
        let (wal, wal_report) = Wal::open_with_progress(
            &dir.join("wal"),
            opts.wal.clone(),
            Arc::clone(&opts.fs),
            |rec| {
                let r = head.replay_record(rec, &mut st);
                replayed.set(st.samples_replayed);
                r
            },
            |done, total| {
                if let Some(p) = &opts.replay_progress {
                    (p.0)(ReplayProgress {
                        segments_done: done,
                        segments: total,
                        samples: replayed.get(),
                        elapsed: start.elapsed(),
                    });
                }
            },
        )?;
        report.wal = wal_report;
        report.series = st.series;
        report.samples_replayed = st.samples_replayed;
        report.samples_skipped = st.samples_skipped;
        report.unknown_refs = st.unknown_refs;
        report.records_not_kept = st.not_kept;
        report.duration = start.elapsed();
        let readers = Readers::default();
        readers.publish(blocks);
        let limits = Mutex::new((
            opts.retention_ms,
            opts.retention_bytes,
            opts.max_block_duration_ms,
        ));
        Ok(Db {
            dir,
            opts,
            head,
            wal,
            report,
            last_recover: Mutex::new(None),
            readers,
            compacting: Mutex::new(()),
            limits,
            wal_truncation_pending: Mutex::new(None),
            stats: DbStats::default(),
            _lock: lock,
        })
    }
}
