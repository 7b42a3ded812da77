//! A WAL file seam that fails on demand: writes (optionally short), fsyncs, segment creation.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cairn::tsdb::wal::fs::{FileSystem, OsFs, SegmentFile};

/// What to break. Faults fire while `armed`; `short` makes a failing write land half its bytes.
#[derive(Debug, Default)]
pub struct Faults {
    pub armed_writes: AtomicBool,
    pub armed_syncs: AtomicBool,
    pub armed_creates: AtomicBool,
    pub short: AtomicBool,
    pub writes_failed: AtomicUsize,
    pub syncs_failed: AtomicUsize,
}

#[derive(Debug)]
pub struct FaultyFs {
    pub faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultySegment {
    inner: Arc<dyn SegmentFile>,
    faults: Arc<Faults>,
}

pub fn eio() -> io::Error {
    io::Error::from_raw_os_error(5)
}

impl SegmentFile for FaultySegment {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        if self.faults.armed_writes.load(Ordering::SeqCst) {
            self.faults.writes_failed.fetch_add(1, Ordering::SeqCst);
            if self.faults.short.load(Ordering::SeqCst) {
                self.inner.write_all(&buf[..buf.len() / 2])?;
            }
            return Err(eio());
        }
        self.inner.write_all(buf)
    }
    fn sync(&self) -> io::Result<()> {
        if self.faults.armed_syncs.load(Ordering::SeqCst) {
            self.faults.syncs_failed.fetch_add(1, Ordering::SeqCst);
            return Err(eio());
        }
        self.inner.sync()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

impl FileSystem for FaultyFs {
    fn create_segment(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        if self.faults.armed_creates.load(Ordering::SeqCst) {
            return Err(eio());
        }
        Ok(Arc::new(FaultySegment {
            inner: OsFs.create_segment(path)?,
            faults: Arc::clone(&self.faults),
        }))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        OsFs.sync_dir(path)
    }
}
