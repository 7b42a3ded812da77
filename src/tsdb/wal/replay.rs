//! Replay at open (the last checkpoint first, then the segments after it) and repair of a torn
//! or corrupt tail, cut where the damage starts as Prometheus does.

use super::*;

/// Replay the last checkpoint, then every later segment in order; on the first torn or corrupt
/// record in a segment, repair and stop. Damage in the checkpoint is an error.
pub(super) fn replay_and_repair(
    dir: &Path,
    mut on_record: impl FnMut(&[u8]) -> ReplayResult,
    mut on_segment: impl FnMut(u64, u64),
) -> Result<ReplayReport, WalError> {
    let base =
        checkpoint::last_checkpoint(dir).map_err(|e| WalError::io("list checkpoints", dir, e))?;
    let all = list_segments(dir).map_err(|e| WalError::io("list segments", dir, e))?;
    // Segments the checkpoint covers are garbage from a crash before truncation.
    let (covered, segs): (Vec<u64>, Vec<u64>) = all
        .into_iter()
        .partition(|&s| base.as_ref().is_some_and(|(cp, _)| s <= *cp));
    for pair in segs.windows(2) {
        if let [a, b] = pair {
            if b != &(a + 1) {
                return Err(WalError::Gap(format!(
                    "segment {a:08} is followed by {b:08} in {}; move the later segments away to start",
                    dir.display()
                )));
            }
        }
    }
    if let (Some((cp, path)), Some(&first)) = (&base, segs.first()) {
        // Upstream replays segments cp+1..=last and fails to open a missing one; so does cairn.
        if first != cp + 1 {
            return Err(WalError::Gap(format!(
                "{} covers segments up to {cp:08}, but the next segment is {first:08}: \
                 segments {:08}..{:08} are missing; restore them, or move {first:08} and \
                 later away to start",
                path.display(),
                cp + 1,
                first - 1,
            )));
        }
    }
    let mut report = ReplayReport::default();
    let total = segs.len() as u64 + u64::from(base.is_some());
    let mut done = 0u64;
    if let Some((cp, path)) = &base {
        let (records, bytes) = checkpoint::replay_checkpoint(path, &mut on_record)?;
        report.checkpoint = Some(*cp);
        report.records += records;
        report.bytes += bytes;
        done += 1;
        on_segment(done, total);
        // Only now that the checkpoint read back whole: while it might be damaged, the old
        // segments may be what an operator recovers from.
        report.obsolete_removed = remove_obsolete(dir, &covered, *cp)?;
    }
    for (i, &seg) in segs.iter().enumerate() {
        let path = segment_name(dir, seg);
        let file = File::open(&path).map_err(|e| WalError::io("open segment", &path, e))?;
        let mut r = SegmentReader::new(
            BufReader::with_capacity(segment::PAGE_SIZE * 4, file),
            MAX_RECORD_SIZE,
        );
        report.segments += 1;
        let failure = loop {
            match r.next_record() {
                Ok(Some(rec)) => {
                    report.records += 1;
                    report.bytes += rec.len() as u64;
                    if let Err(reason) = on_record(rec) {
                        break Some(ReadError::Corrupt {
                            offset: r.record_offset(),
                            reason: reason.to_string(),
                        });
                    }
                }
                Ok(None) => break None,
                Err(ReadError::Io { kind, .. }) => {
                    return Err(WalError::io("read segment", &path, io::Error::from(kind)));
                }
                Err(e) => break Some(e),
            }
        };
        done += 1;
        on_segment(done, total);
        let Some(err) = failure else { continue };
        let later = segs.get(i + 1..).unwrap_or_default();
        report.repaired = Some(repair(dir, seg, later, &err)?);
        break;
    }
    Ok(report)
}

/// Delete the `covered` segments and every checkpoint older than `cp`; returns how many.
pub(super) fn remove_obsolete(dir: &Path, covered: &[u64], cp: u64) -> Result<u64, WalError> {
    let mut removed = 0u64;
    for &s in covered {
        let p = segment_name(dir, s);
        std::fs::remove_file(&p).map_err(|e| WalError::io("delete covered segment", &p, e))?;
        removed += 1;
    }
    if removed > 0 {
        crate::tsdb::fileutil::fsync_dir(dir).map_err(|e| WalError::io("fsync dir", dir, e))?;
    }
    let old = checkpoint::delete_checkpoints(dir, cp)
        .map_err(|e| WalError::io("delete old checkpoints", dir, e))?;
    Ok(removed + old as u64)
}

/// Truncate `seg` where the damaged record starts and delete every later segment.
pub(super) fn repair(
    dir: &Path,
    seg: u64,
    later: &[u64],
    err: &ReadError,
) -> Result<Repair, WalError> {
    let offset = err.offset();
    let path = segment_name(dir, seg);
    let mut dropped = 0u64;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io("open for repair", &path, e))?;
    let len = f
        .metadata()
        .map_err(|e| WalError::io("stat", &path, e))?
        .len();
    dropped += len.saturating_sub(offset);
    f.set_len(offset)
        .map_err(|e| WalError::io("truncate", &path, e))?;
    f.sync_all().map_err(|e| WalError::io("fsync", &path, e))?;
    for &s in later {
        let p = segment_name(dir, s);
        dropped += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(&p).map_err(|e| WalError::io("delete segment", &p, e))?;
    }
    crate::tsdb::fileutil::fsync_dir(dir).map_err(|e| WalError::io("fsync dir", dir, e))?;
    Ok(Repair {
        segment: seg,
        offset,
        error: err.to_string(),
        segments_deleted: later.len() as u64,
        bytes_dropped: dropped,
    })
}
