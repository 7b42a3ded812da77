//! The write path: one writer behind a mutex, group commit (a request waits for the fsync that
//! covers its records), rotation, the poison latch after a failed write or fsync, and the
//! background fsync of an interval sync policy.

use super::*;

impl Shared {
    pub(super) fn poison(&self, w: &mut Writer, cause: PoisonCause, detail: String) -> WalError {
        self.stats.writes_failed.fetch_add(1, Ordering::Relaxed);
        w.poisoned = Some((cause.clone(), w.seg_index, detail.clone()));
        self.poisoned.store(true, Ordering::Release);
        WalError::Poisoned {
            cause,
            segment: w.seg_index,
            detail,
        }
    }

    /// Frame and write `records`; returns the LSN the caller must see synced, and the epoch it
    /// was written in.
    pub(super) fn write(&self, records: &[&[u8]], epoch: u32) -> Result<(u64, u32), WalError> {
        let mut guard = self.w.lock();
        let w = &mut *guard;
        if w.closed {
            return Err(WalError::Closed);
        }
        if let Some((cause, segment, detail)) = w.poisoned.clone() {
            return Err(WalError::Poisoned {
                cause,
                segment,
                detail,
            });
        }
        if self.epoch.load(Ordering::Acquire) != epoch {
            return Err(WalError::EpochChanged);
        }
        w.out.clear();
        for rec in records {
            let compressed_len = if self.opts.compress {
                compress_record(&mut w.encoder, rec, &mut w.compressed)
            } else {
                None
            };
            if w.framer
                .needs_new_segment(compressed_len.unwrap_or(rec.len()))
            {
                // What this call framed so far goes to the current segment, then rotate.
                self.rotate(w)?;
            }
            match compressed_len {
                Some(n) => w.framer.frame(&mut w.out, &w.compressed[..n], true),
                None => w.framer.frame(&mut w.out, rec, false),
            }
        }
        self.flush_out(w)?;
        w.lsn += 1;
        self.stats
            .records_written
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok((w.lsn, self.epoch.load(Ordering::Acquire)))
    }

    pub(super) fn flush_out(&self, w: &mut Writer) -> Result<(), WalError> {
        if w.out.is_empty() {
            return Ok(());
        }
        if let Err(e) = w.file.write_all(&w.out) {
            let detail = e.to_string();
            return Err(self.poison(w, PoisonCause::WriteFailed, detail));
        }
        w.good_pos += w.out.len() as u64;
        self.stats
            .bytes_written
            .fetch_add(w.out.len() as u64, Ordering::Relaxed);
        w.out.clear();
        Ok(())
    }

    /// Close the current segment (pad, write, fsync) and start the next one.
    pub(super) fn rotate(&self, w: &mut Writer) -> Result<(), WalError> {
        w.framer.pad_page(&mut w.out);
        self.flush_out(w)?;
        if let Err(e) = w.file.sync() {
            return Err(self.poison(w, PoisonCause::SyncFailed, e.to_string()));
        }
        let next = w.seg_index + 1;
        let path = segment_name(&self.dir, next);
        let file = match self.fs.create_segment(&path) {
            Ok(f) => f,
            Err(e) => {
                return Err(self.poison(
                    w,
                    PoisonCause::WriteFailed,
                    format!("create {}: {e}", path.display()),
                ))
            }
        };
        if let Err(e) = self.fs.sync_dir(&self.dir) {
            return Err(self.poison(w, PoisonCause::SyncFailed, format!("fsync dir: {e}")));
        }
        // Everything up to here is durable now.
        self.synced_lsn.fetch_max(w.lsn, Ordering::AcqRel);
        w.file = file;
        w.seg_index = next;
        w.framer.reset();
        w.good_pos = 0;
        w.synced_pos = 0;
        self.stats.segment.store(next, Ordering::Relaxed);
        Ok(())
    }

    /// Make sure everything up to `lsn` is fsynced. The first caller to need a sync does it for
    /// everyone written so far (group commit).
    pub(super) fn sync_to(&self, lsn: u64, epoch: u32) -> Result<(), WalError> {
        let covered = || -> Option<Result<(), WalError>> {
            if self.synced_lsn.load(Ordering::Acquire) < lsn {
                return None;
            }
            if self.epoch.load(Ordering::Acquire) == epoch {
                return Some(Ok(()));
            }
            // Written to a segment that was abandoned after a failure: never durable.
            Some(Err(WalError::Poisoned {
                cause: PoisonCause::SyncFailed,
                segment: self.stats.segment.load(Ordering::Relaxed),
                detail: "the segment holding this write was abandoned after a failure".into(),
            }))
        };
        if let Some(r) = covered() {
            return r;
        }
        let _leader = self.sync_lock.lock();
        if let Some(r) = covered() {
            return r;
        }
        let (target, file, seg, pos) = {
            let w = self.w.lock();
            if let Some((cause, segment, detail)) = w.poisoned.clone() {
                return Err(WalError::Poisoned {
                    cause,
                    segment,
                    detail,
                });
            }
            if self.epoch.load(Ordering::Acquire) != epoch {
                return Err(WalError::Poisoned {
                    cause: PoisonCause::SyncFailed,
                    segment: w.seg_index,
                    detail: "the segment holding this write was abandoned after a failure".into(),
                });
            }
            (w.lsn, Arc::clone(&w.file), w.seg_index, w.good_pos)
        };
        let start = Instant::now();
        let res = file.sync();
        self.stats.observe_fsync(start.elapsed());
        match res {
            Ok(()) => {
                {
                    let mut w = self.w.lock();
                    if w.seg_index == seg {
                        w.synced_pos = w.synced_pos.max(pos);
                    }
                }
                self.synced_lsn.fetch_max(target, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                let mut w = self.w.lock();
                // Only poison the segment that failed; a recovery may already have moved on.
                if w.seg_index == seg && w.poisoned.is_none() {
                    Err(self.poison(&mut w, PoisonCause::SyncFailed, e.to_string()))
                } else {
                    Err(WalError::Poisoned {
                        cause: PoisonCause::SyncFailed,
                        segment: seg,
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    pub(super) fn background_sync(&self, every: Duration) {
        loop {
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                self.stop_cv.wait_for(&mut stop, every);
                if *stop {
                    return;
                }
            }
            let lsn = self.w.lock().lsn;
            // Errors poison the writer; appends report them.
            let _ = self.sync_to(lsn, self.epoch.load(Ordering::Acquire));
        }
    }
}

/// Snappy-compress `rec` into `buf` when compression is worth trying (more than 64 bytes) and
/// makes it smaller; returns the compressed length. Shared by the writer and checkpoints, so
/// both lay out the same bytes.
pub(crate) fn compress_record(
    encoder: &mut snap::raw::Encoder,
    rec: &[u8],
    buf: &mut Vec<u8>,
) -> Option<usize> {
    if rec.len() <= 64 {
        return None;
    }
    buf.resize(snap::raw::max_compress_len(rec.len()), 0);
    encoder.compress(rec, buf).ok().filter(|&n| n < rec.len())
}
