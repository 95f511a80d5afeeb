//! Advisory `flock` locks on files in the state directory, taken with a deadline.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How often a busy lock is tried again.
const POLL: Duration = Duration::from_millis(2);

/// An exclusive lock, released when dropped (closing the file releases the `flock`).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
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
            // SAFETY: the descriptor is valid for as long as `file` lives.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock {
                    _file: file,
                    path: path.to_path_buf(),
                });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK)
                && err.kind() != std::io::ErrorKind::Interrupted
            {
                return Err(Error::io("cannot lock", path, err));
            }
            if Instant::now() + POLL > deadline {
                return Err(Error::LockBusy {
                    path: path.to_path_buf(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
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
