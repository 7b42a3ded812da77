//! The narrow seam between the WAL and the file system.
//!
//! Everything the WAL does to segment files goes through [`FileSystem`] and [`SegmentFile`], so
//! tests can inject short writes, `EIO` and failed fsyncs (see `tests/wal_faults.rs`) without
//! touching the real code path. [`OsFs`] is the production implementation.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// One open WAL segment, written sequentially by a single writer (the WAL's mutex guards it);
/// `sync` may be called concurrently from the group-commit leader.
pub trait SegmentFile: Send + Sync + Debug {
    /// Write all of `buf` at the end of what was written so far.
    fn write_all(&self, buf: &[u8]) -> io::Result<()>;
    /// Make everything written so far durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
    /// Cut the file to `len` bytes (used to drop a torn tail before a fresh segment is opened).
    fn truncate(&self, len: u64) -> io::Result<()>;
}

/// Creates segment files and makes directory entries durable.
pub trait FileSystem: Send + Sync + Debug {
    /// Create a new, empty segment file; fails if it exists.
    fn create_segment(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>>;
    /// fsync a directory.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFs;

#[derive(Debug)]
struct OsSegment(File);

impl SegmentFile for OsSegment {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        (&self.0).write_all(buf)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.sync_all()
    }
}

impl FileSystem for OsFs {
    fn create_segment(&self, path: &Path) -> io::Result<Arc<dyn SegmentFile>> {
        let f = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Arc::new(OsSegment(f)))
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        crate::tsdb::fileutil::fsync_dir(path)
    }
}
