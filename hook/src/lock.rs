//! Advisory locks on files in the state directory, taken with a deadline (std's
//! `File::try_lock`, an `flock` on Linux).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a busy lock is tried again.
const POLL: Duration = Duration::from_millis(2);

/// An exclusive lock, released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the exclusive lock on `path` (created if missing), retrying until `deadline`.
    pub fn acquire(path: &Path, deadline: Instant) -> Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("cannot open lock file", path, e))?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", path, e)),
            }
            if Instant::now() + POLL > deadline {
                return Err(Error::LockBusy {
                    path: path.to_path_buf(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let first = FileLock::acquire(&p, Instant::now()).unwrap();
        let busy = FileLock::acquire(&p, Instant::now() + Duration::from_millis(20));
        assert!(matches!(busy, Err(Error::LockBusy { .. })));
        drop(first);
        FileLock::acquire(&p, Instant::now()).unwrap();
    }
}
