//! Moving files: the live state aside (never over anything), the staged files in
//! (rewritten in place where the destination is a mount point), and unexpected
//! leftovers out of the way.
use std::fs;
use std::path::{Path, PathBuf};

use crate::config::Paths;
use crate::durable::{self, remove_file_if_exists as remove_if_exists};
use crate::error::{Error, Result};
use crate::layout::{LEFTOVER_PREFIX, aside_chroma, aside_db, aside_registry, with_suffix};

pub(crate) fn is_mount_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV))
}

/// Move the live database and its `-wal`/`-journal` aside (the `-shm` is rebuilt by
/// SQLite and deleted). A file already aside is never overwritten, so a rerun after a
/// crash keeps the original. A database that is itself a mount point is copied aside
/// instead (it is rewritten in place afterwards).
pub(crate) fn move_db_aside(paths: &Paths, aside: &Path) -> Result<()> {
    if !aside.exists() && paths.db.exists() {
        move_file_aside(&paths.db, aside)?;
    }
    for suffix in ["-wal", "-journal"] {
        let live = with_suffix(&paths.db, suffix);
        let to = with_suffix(aside, suffix);
        if live.exists() && !to.exists() {
            move_file_aside(&live, &to)?;
        }
    }
    remove_if_exists(&with_suffix(&paths.db, "-shm"))?;
    durable::sync_parent(&paths.db)
}

pub(crate) fn move_file_aside(live: &Path, aside: &Path) -> Result<()> {
    if aside.exists() || !live.exists() {
        return Ok(());
    }
    match rename_no_replace(live, aside) {
        Ok(()) => {}
        Err(e) if is_mount_error(&e) => {
            let part = with_suffix(aside, ".partial");
            remove_if_exists(&part)?;
            durable::copy_file_hashed(live, &part)?;
            fs::rename(&part, aside).map_err(Error::io("move aside", aside))?;
        }
        Err(e) => return Err(Error::io("move aside", live)(e)),
    }
    durable::sync_parent(aside)
}

/// Rename the staged file over `dest`; where `dest` is a mount point (EBUSY) or on
/// another file system (EXDEV), rewrite its content in place instead. Returns whether
/// it was a rename (the live file is then the staged inode).
pub(crate) fn swap_file(tmp: &Path, dest: &Path) -> Result<bool> {
    let renamed = match fs::rename(tmp, dest) {
        Ok(()) => true,
        Err(e) if is_mount_error(&e) => {
            tracing::info!(path = %dest.display(), cause = %e, "destination is a mount point; rewriting it in place");
            durable::rewrite_in_place(tmp, dest)?;
            fs::remove_file(tmp).map_err(Error::io("remove", tmp))?;
            false
        }
        Err(e) => return Err(Error::io("move into place", dest)(e)),
    };
    durable::sync_parent(dest)?;
    Ok(renamed)
}

/// Move whatever sits at the names a new restore sets the live state aside under
/// (left by an older crash whose record is gone) into `atocore-restore-leftover-<id>`
/// folders beside them. Returns a warning per move.
pub(crate) fn move_leftovers(
    paths: &Paths,
    id: &str,
    registry: bool,
    chroma: bool,
) -> Result<Vec<String>> {
    let folder = format!("{LEFTOVER_PREFIX}{id}");
    let mut candidates: Vec<PathBuf> = crate::db::with_companions(&aside_db(paths)).collect();
    if registry {
        candidates.push(aside_registry(paths));
    }
    if chroma {
        candidates.push(aside_chroma(paths));
    }
    let mut warnings = Vec::new();
    for from in candidates {
        if fs::symlink_metadata(&from).is_err() {
            continue;
        }
        let to = parent_of(&from)
            .join(&folder)
            .join(from.file_name().unwrap_or_default());
        durable::create_dir_all(&parent_of(&to))?;
        rename_no_replace(&from, &to).map_err(Error::io("move a leftover", &from))?;
        durable::sync_parent(&from)?;
        tracing::warn!(from = %from.display(), to = %to.display(), "moved an unexpected leftover out of the way");
        warnings.push(format!(
            "moved_unexpected_leftover: {} -> {}",
            from.display(),
            to.display()
        ));
    }
    Ok(warnings)
}

/// `rename(2)` that fails with `EEXIST` instead of replacing `to`.
pub(crate) fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // A file system without RENAME_NOREPLACE: check, then rename (the backups
        // lock is held and the service is stopped, so nothing races with us).
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        _ => Err(e),
    }
}

pub(crate) fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

pub(crate) fn free_name(dir: &Path, base: &str) -> PathBuf {
    (1..)
        .map(|n| dir.join(format!("{base}-{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(base))
}
