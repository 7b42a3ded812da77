//! Small, careful file-system helpers shared by every on-disk structure.
//!
//! Rules every caller keeps (see ARCHITECTURE.md, "durable files"):
//! - a new file or directory is built under a temporary name, its contents fsynced, then renamed
//!   into place, then the parent directory fsynced — readers never see a half-written file;
//! - a failed fsync is never retried and trusted: the caller poisons itself;
//! - leftovers of interrupted work (`*.tmp`, `*.tmp-for-creation`, `*.tmp-for-deletion`,
//!   `*.repair`) are removed on open by [`remove_tmp_leftovers`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Suffixes of temporary files and directories that are never valid after a restart.
pub const TMP_SUFFIXES: &[&str] = &[".tmp", ".tmp-for-creation", ".tmp-for-deletion", ".repair"];

/// fsync a directory so that entries created, renamed or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Write `data` to `path` atomically: `path.tmp` → fsync → rename → fsync parent.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    fsync_dir(parent_of(path))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Delete directory `dir` so that a crash never leaves it half deleted under its own name:
/// rename to `<name>.tmp-for-deletion`, fsync the parent, then remove the renamed tree (a
/// leftover is removed at the next open).
pub fn remove_dir_atomic(dir: &Path) -> io::Result<()> {
    let mut doomed = dir.as_os_str().to_owned();
    doomed.push(".tmp-for-deletion");
    let doomed = PathBuf::from(doomed);
    fs::rename(dir, &doomed)?;
    fsync_dir(parent_of(dir))?;
    fs::remove_dir_all(&doomed)
}

/// Remove temporary leftovers of interrupted work directly inside `dir`. Returns their names.
pub fn remove_tmp_leftovers(dir: &Path) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !TMP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
        removed.push(name);
    }
    if !removed.is_empty() {
        fsync_dir(dir)?;
    }
    Ok(removed)
}

/// Exclusive advisory lock on `<data dir>/lock`, held for the life of the value.
///
/// The kernel releases a `flock` when the process dies, so a crash never leaves a stale lock.
/// The file holds the owner's pid to make the refusal message useful.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
    path: PathBuf,
}

/// Why [`LockFile::acquire`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    #[error(
        "data directory {dir} is in use by another process{owner} (lock file {path}); \
         stop that process or choose another --storage.tsdb.path"
    )]
    Held {
        dir: PathBuf,
        path: PathBuf,
        owner: String,
    },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

impl LockFile {
    /// Take the lock or fail at once (never waits).
    pub fn acquire(dir: &Path) -> Result<LockFile, LockError> {
        let path = dir.join("lock");
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let owner = fs::read_to_string(&path)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    path,
                    owner,
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        file.set_len(0).map_err(io_err)?;
        write!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(LockFile { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a [`MappedChunk`]'s bytes live in.
#[derive(Clone)]
enum Backing {
    Map(std::sync::Arc<memmap2::Mmap>),
    /// A copy of a chunk still in the write buffer (its file could not be written yet).
    Owned(std::sync::Arc<[u8]>),
}

/// A chunk's bytes inside a mapped file (kept alive by the `Arc`), or a copy.
#[derive(Clone)]
pub struct MappedChunk {
    backing: Backing,
    start: usize,
    end: usize,
}

impl MappedChunk {
    /// Bytes `start..end` of `map` (out-of-range bounds read as empty, never panic).
    pub fn new(map: std::sync::Arc<memmap2::Mmap>, start: usize, end: usize) -> MappedChunk {
        MappedChunk {
            backing: Backing::Map(map),
            start,
            end,
        }
    }

    /// A copy of `data` (bytes not in a mapped file yet).
    pub fn copy_of(data: &[u8]) -> MappedChunk {
        MappedChunk {
            backing: Backing::Owned(std::sync::Arc::from(data)),
            start: 0,
            end: data.len(),
        }
    }
}

impl std::ops::Deref for MappedChunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.backing {
            Backing::Map(m) => m,
            Backing::Owned(b) => b,
        };
        all.get(self.start..self.end).unwrap_or_default()
    }
}

impl std::fmt::Debug for MappedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedChunk({}..{})", self.start, self.end)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn second_lock_on_the_same_directory_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let first = LockFile::acquire(dir.path()).unwrap();
        let err = LockFile::acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{msg}");
        assert!(msg.contains("in use by another process"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(first);
        LockFile::acquire(dir.path()).unwrap();
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!dir.path().join("meta.json.tmp").exists());
    }

    #[test]
    fn leftovers_are_removed_and_real_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("01ABC.tmp-for-creation")).unwrap();
        fs::write(dir.path().join("01ABC.tmp-for-creation/index"), b"x").unwrap();
        fs::create_dir(dir.path().join("01DEF.tmp-for-deletion")).unwrap();
        fs::write(dir.path().join("00000003.repair"), b"x").unwrap();
        fs::write(dir.path().join("00000003"), b"x").unwrap();
        let mut removed = remove_tmp_leftovers(dir.path()).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                "00000003.repair",
                "01ABC.tmp-for-creation",
                "01DEF.tmp-for-deletion"
            ]
        );
        assert!(dir.path().join("00000003").exists());
    }
}
