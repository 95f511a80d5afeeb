//! Durable file-system steps: fsync of files and folders, atomic JSON writes, a
//! hole-keeping copy that hashes as it goes, and the backups lock.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

const COPY_BUF: usize = 1 << 20;
const HOLE_BLOCK: usize = 4096;

/// A file's mtime in nanoseconds since the epoch.
pub(crate) fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// A file's ctime (inode change time) in nanoseconds since the epoch.
pub(crate) fn ctime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec())
}

/// Remove a file; one that is not there is fine.
pub(crate) fn remove_file_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p)(e)),
    }
}

/// fsync a file or a folder by path.
pub fn sync_path(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("fsync", path))
}

/// fsync the folder that holds `path`.
pub fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => sync_path(p),
        _ => Ok(()),
    }
}

/// Create a folder and its parents.
pub fn create_dir_all(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(Error::io("create folder", path))
}

/// Write `bytes` to `path` atomically: a temp file in the same folder, fsync, rename,
/// fsync the folder. Readers see the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with_mode(path, bytes, 0o644)
}

/// [`write_atomic`] for a secret: the temp file is created with mode 0600, so neither
/// it nor the file it becomes is ever readable by others, not even briefly.
pub fn write_secret_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with_mode(path, bytes, 0o600)
}

fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A hidden temp file in the same folder (removed if anything fails), created with
    // its final mode, renamed over `path` by `persist`.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(Error::io("create a temp file in", dir))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(Error::io("write", path))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into place", path)(e.error))?;
    sync_parent(path)
}

/// Serialize `value` as pretty JSON and write it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Read and parse a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_path_buf(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read", path)(e)),
    }
}

/// What a copy produced.
#[derive(Debug, Clone)]
pub struct Copied {
    pub bytes: u64,
    pub sha256: String,
}

/// Copy `src` to a new file `dst` (which must not exist), keeping holes (all-zero
/// blocks are seeked over, not written), hashing the content on the way, setting the
/// mode, and fsyncing the result. Owner and mtime are left to the caller.
pub fn copy_file_hashed(src: &Path, dst: &Path) -> Result<Copied> {
    let mut input = File::open(src).map_err(Error::io("open", src))?;
    let meta = input.metadata().map_err(Error::io("stat", src))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(Error::io("create", dst))?;
    let copied = copy_stream_hashed(&mut input, &mut out, src, dst)?;
    out.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(Error::io("set mode of", dst))?;
    out.sync_all().map_err(Error::io("fsync", dst))?;
    Ok(copied)
}

/// Overwrite the content of an existing file in place (same inode): truncate, copy,
/// fsync. Used where a rename is impossible (the destination is a mount point).
pub fn rewrite_in_place(src: &Path, dst: &Path) -> Result<Copied> {
    let mut input = File::open(src).map_err(Error::io("open", src))?;
    let mut out = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dst)
        .map_err(Error::io("open for rewriting", dst))?;
    let copied = copy_stream_hashed(&mut input, &mut out, src, dst)?;
    out.sync_all().map_err(Error::io("fsync", dst))?;
    Ok(copied)
}

fn copy_stream_hashed(input: &mut File, out: &mut File, src: &Path, dst: &Path) -> Result<Copied> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    let mut total: u64 = 0;
    loop {
        let n = read_full(input, &mut buf).map_err(Error::io("read", src))?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        // Write data blocks, seek over all-zero ones so holes stay holes.
        for block in chunk.chunks(HOLE_BLOCK) {
            if block.iter().all(|&b| b == 0) {
                out.seek(SeekFrom::Current(block.len() as i64))
                    .map_err(Error::io("seek in", dst))?;
            } else {
                out.write_all(block).map_err(Error::io("write", dst))?;
            }
        }
        total += n as u64;
    }
    out.set_len(total)
        .map_err(Error::io("set length of", dst))?;
    Ok(Copied {
        bytes: total,
        sha256: hex::encode(hasher.finalize()),
    })
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(Error::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = read_full(&mut f, &mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Set owner (best effort: only root may give files away) and mtime of a path,
/// without following a symlink.
pub fn set_owner_and_mtime(path: &Path, uid: u32, gid: u32, mtime_ns: Option<i128>) -> Result<()> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| Error::Usage(format!("{} has a NUL byte in its name", path.display())))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the calls.
    let rc = unsafe { libc::lchown(c.as_ptr(), uid, gid) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(Error::io("change owner of", path)(e));
        }
    }
    if let Some(ns) = mtime_ns {
        let ts = |ns: i128| libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
            tv_nsec: ns.rem_euclid(1_000_000_000) as libc::c_long,
        };
        let times = [
            libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            ts(ns),
        ];
        // SAFETY: valid path pointer and a two-element timespec array.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(Error::io("set mtime of", path)(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// A snapshot folder under construction (`.STAMP.partial`), removed when dropped
/// unless it was published ([`PartialDir::published`]): a failed or cancelled build
/// leaves nothing behind.
#[derive(Debug)]
pub(crate) struct PartialDir {
    dir: PathBuf,
    armed: bool,
}

impl PartialDir {
    /// Guard `dir` (already created by the caller).
    pub(crate) fn guard(dir: &Path) -> PartialDir {
        PartialDir {
            dir: dir.to_path_buf(),
            armed: true,
        }
    }

    /// The folder was renamed to its stamp: keep it.
    pub(crate) fn published(&mut self) {
        self.armed = false;
    }
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if self.armed
            && self.dir.exists()
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::error!(folder = %self.dir.display(), cause = %e, "could not remove the partial snapshot; remove it by hand");
        }
    }
}

/// The exclusive lock that serialises backup, restore and prune across processes
/// (the sidecar and a CLI run on the same backups folder). Released on drop.
#[derive(Debug)]
pub struct BackupLock {
    _file: File,
}

impl BackupLock {
    /// Take the lock without waiting; [`Error::Busy`] when another process holds it.
    pub fn acquire(backup_dir: &Path) -> Result<BackupLock> {
        create_dir_all(backup_dir)?;
        let path = backup_dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io("open lock file", &path))?;
        // std's try_lock is an flock on Linux: it belongs to the open file description,
        // so a second open in the same process conflicts too.
        match file.try_lock() {
            Ok(()) => Ok(BackupLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(path)),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io("lock", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_holes_and_hashes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("sparse");
        {
            let mut f = File::create(&src).unwrap();
            f.write_all(b"head").unwrap();
            f.seek(SeekFrom::Start(64 << 20)).unwrap();
            f.write_all(b"tail").unwrap();
        }
        let dst = d.path().join("copy");
        let c = copy_file_hashed(&src, &dst).unwrap();
        assert_eq!(c.bytes, (64 << 20) + 4);
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        assert_eq!(c.sha256, sha256_file(&src).unwrap());
        let blocks = fs::metadata(&dst).unwrap().blocks();
        assert!(blocks * 512 < 1 << 20, "copy became dense: {blocks} blocks");
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let a = BackupLock::acquire(d.path()).unwrap();
        // flock locks belong to the open file description, so a second open conflicts.
        assert!(matches!(BackupLock::acquire(d.path()), Err(Error::Busy(_))));
        drop(a);
        assert!(BackupLock::acquire(d.path()).is_ok());
    }
}
