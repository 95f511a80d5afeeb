//! The state directory and the files in it, plus atomic file writes.
//!
//! ```text
//! <dir>/                      ATOCORE_CAPTURE_DIR, else $XDG_STATE_HOME/atocore-capture,
//!                             else ~/.local/state/atocore-capture (created 0700)
//!   outbox/<stamp>-<pid>-<key>.json   captures not yet delivered, oldest name first
//!   dead/<name>.json (+ .reason)      captures the server refused for good (4xx)
//!   ledger                            keys of recently captured prompts (dedup)
//!   status.json                       last delivery, last error, totals
//!   capture.log, capture.log.1        diagnostics
//!   .state.lock, .deliver.lock        flock files
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens the directory, creating it and its folders (mode 0700) when missing.
    pub fn open(root: &Path) -> Result<StateDir> {
        let dir = StateDir {
            root: root.to_path_buf(),
        };
        for p in [dir.root.clone(), dir.outbox(), dir.dead()] {
            if !p.is_dir() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&p)
                    .map_err(|e| Error::io("cannot create state directory (set ATOCORE_CAPTURE_DIR to a writable folder)", &p, e))?;
            }
        }
        Ok(dir)
    }

    /// Wraps a path without creating anything (for `status`).
    pub fn at(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Pending captures.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }
    /// Captures refused for good.
    pub fn dead(&self) -> PathBuf {
        self.root.join("dead")
    }
    /// Dedup ledger.
    pub fn ledger(&self) -> PathBuf {
        self.root.join("ledger")
    }
    /// Delivery status record.
    pub fn status(&self) -> PathBuf {
        self.root.join("status.json")
    }
    /// Guards the ledger and enqueueing.
    pub fn state_lock(&self) -> PathBuf {
        self.root.join(".state.lock")
    }
    /// Held while delivering the outbox.
    pub fn deliver_lock(&self) -> PathBuf {
        self.root.join(".deliver.lock")
    }
}

/// Writes `bytes` to `path` atomically and durably: a hidden temp file in the same folder,
/// fsync, rename over `path`, fsync of the folder. Readers see the old file or the new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, true)
}

/// Like [`write_atomic`] without the fsyncs: atomic for readers and across a killed process
/// (the page cache survives it), not across an OS crash. For files that can be rebuilt or
/// are fsynced later ([`sync_file`]).
pub fn write_atomic_nosync(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, false)
}

/// fsyncs a file and its folder.
pub fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io("cannot sync", path, e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn write_atomic_with(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // A hidden, owner-only temp file in the same folder (removed if anything fails),
    // renamed over `path` by `persist`.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temp file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| {
            if durable {
                tmp.as_file().sync_all()
            } else {
                Ok(())
            }
        })
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("cannot rename into place", path, e.error))?;
    if durable { sync_dir(dir) } else { Ok(()) }
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", dir, e))
}
