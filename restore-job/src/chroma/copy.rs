//! The incremental copy of the live tree into a snapshot: a file is linked from the
//! previous snapshot only when it is the same file (the racy-clean rule) and its bytes
//! still hash to what was recorded; every other file is copied, and copied again while
//! it changes under the copy.

use crate::durable::{self, copy_file_hashed, set_owner_and_mtime, sync_path};
use crate::durable::{ctime_ns, mtime_ns};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

/// Files whose mtime or ctime lie within this margin before the previous snapshot's
/// scan (or after it) are "racily clean": they may have changed in the same timestamp
/// tick as the scan, so they are copied again, never linked. Two seconds cover coarse
/// (one- and two-second) timestamp granularity and the kernel's coarse clock.
pub const RACY_MARGIN_NS: i128 = 2_000_000_000;

/// Whether a live file (`live`, freshly stat-ed) may be hard-linked from the previous
/// snapshot, whose entry is `prev` and whose scan began at `prev_scanned_at_ns`.
/// Same size, mtime and ctime are not enough on their own: the file must also have
/// been clearly older than that scan, so that any later change shows in its times.
pub fn may_link(prev: &Entry, live: &Entry, prev_scanned_at_ns: Option<i128>) -> bool {
    let Some(scanned) = prev_scanned_at_ns else {
        return false;
    };
    let settled = scanned - RACY_MARGIN_NS;
    prev.kind == EntryKind::File
        && live.kind == EntryKind::File
        && prev.sha256.is_some()
        && prev.size == live.size
        && prev.mtime_ns == live.mtime_ns
        && prev.ctime_ns == live.ctime_ns
        && live.mtime_ns < settled
        && live.ctime_ns < settled
}

/// The snapshot a copy may link unchanged files from.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub index: &'a Index,
    /// Its chroma folder.
    pub dir: &'a Path,
    /// Its stamp (named in warnings about it).
    pub stamp: &'a str,
}

/// Counts and findings from a snapshot copy.
#[derive(Debug, Clone, Default)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub linked: u64,
    /// Files that kept changing while they were copied (the last copy is kept), or
    /// that vanished before they could be copied.
    pub changed: Vec<String>,
    /// Link sources in the previous snapshot whose bytes no longer match their
    /// recorded hash, as `<stamp>/<path>` (the file was copied from live instead).
    pub damaged_sources: Vec<String>,
}

/// How often a file that changes while it is copied is copied again.
pub const COPY_RETRIES: usize = 3;

/// What identifies one version of a live file.
pub(crate) fn version(m: &fs::Metadata) -> (u64, u64, i128, i128) {
    (m.ino(), m.len(), mtime_ns(m), ctime_ns(m))
}

/// Take the fresh stat of a live file into its entry.
pub(crate) fn refresh(e: &mut Entry, m: &fs::Metadata) {
    e.mode = m.mode() & 0o7777;
    e.uid = m.uid();
    e.gid = m.gid();
    e.size = m.len();
    e.mtime_ns = mtime_ns(m);
    e.ctime_ns = ctime_ns(m);
}

/// What became of one live file.
pub(crate) enum FileCopy {
    /// Copied; `false` when it kept changing through every attempt.
    Copied(bool),
    /// Gone (or no longer a regular file) before it could be copied.
    Vanished,
    /// Could not be opened for reading (the reason).
    Unreadable(String),
}

/// Copy one live file to `out`, statting it before and after; a file that changed
/// meanwhile (size, mtime, ctime or inode) is copied again, up to [`COPY_RETRIES`]
/// times. The entry gets the stat the kept copy was taken under and its hash.
pub(crate) fn copy_live_file(src: &Path, out: &Path, e: &mut Entry) -> Result<FileCopy> {
    for attempt in 0..=COPY_RETRIES {
        if attempt > 0 {
            fs::remove_file(out).map_err(Error::io("remove", out))?;
        }
        let before = match fs::symlink_metadata(src) {
            Ok(m) if m.is_file() => m,
            Ok(_) => return Ok(FileCopy::Vanished),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(FileCopy::Vanished);
            }
            Err(err) => return Err(Error::io("stat", src)(err)),
        };
        let copied = match copy_file_hashed(src, out) {
            Ok(c) => c,
            Err(Error::Io {
                op: "open",
                path,
                source,
            }) if path == src => {
                return Ok(match source.kind() {
                    std::io::ErrorKind::NotFound => FileCopy::Vanished,
                    _ => FileCopy::Unreadable(format!("could not be opened ({source})")),
                });
            }
            Err(err) => return Err(err),
        };
        let after = fs::symlink_metadata(src).ok();
        refresh(e, &before);
        e.size = copied.bytes;
        e.sha256 = Some(copied.sha256);
        set_owner_and_mtime(out, e.uid, e.gid, Some(e.mtime_ns))?;
        if after.as_ref().map(version) == Some(version(&before)) {
            return Ok(FileCopy::Copied(true));
        }
        tracing::debug!(path = %src.display(), attempt, "file changed while it was copied");
    }
    Ok(FileCopy::Copied(false))
}

/// Copy the live tree into `dst` (a new folder), hashing every file. A file may be
/// hard-linked from `previous` instead (see [`may_link`]); a linked file is read and
/// hashed like a copied one, and a link source whose bytes differ from its recorded
/// hash is not used. Returns the index of the new copy (hashes filled).
pub fn snapshot_copy(
    live: &Path,
    dst: &Path,
    previous: Option<Previous<'_>>,
    keep_going: &dyn Fn() -> bool,
) -> Result<(Index, CopyStats)> {
    let mut index = scan(live)?;
    let prev: HashMap<&str, &Entry> = previous
        .map(|p| {
            p.index
                .entries
                .iter()
                .map(|e| (e.path.as_str(), e))
                .collect()
        })
        .unwrap_or_default();
    durable::create_dir_all(dst)?;
    let mut stats = CopyStats::default();
    let mut vanished = Vec::new();
    let mut unreadable = Vec::new();
    for e in &mut index.entries {
        if !keep_going() {
            return Err(Error::Cancelled("the chroma copy"));
        }
        let src = safe_join(live, &e.path)?;
        let out = safe_join(dst, &e.path)?;
        match e.kind {
            EntryKind::Dir => {
                fs::create_dir(&out).map_err(Error::io("create folder", &out))?;
            }
            EntryKind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(target, &out).map_err(Error::io("create link", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
            EntryKind::File => {
                // Decide on a fresh stat, not the scan's: the file may have changed since.
                match fs::symlink_metadata(&src) {
                    Ok(m) if m.is_file() => refresh(e, &m),
                    Ok(_) => {
                        vanished.push(e.path.clone());
                        continue;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        vanished.push(e.path.clone());
                        continue;
                    }
                    Err(err) => return Err(Error::io("stat", &src)(err)),
                }
                if let (Some(p), Some(pv)) = (prev.get(e.path.as_str()), previous)
                    && may_link(p, e, pv.index.scanned_at_ns)
                {
                    let from = safe_join(pv.dir, &e.path)?;
                    if fs::hard_link(&from, &out).is_ok() {
                        // Every file of a snapshot is hashed from its bytes: the link
                        // source is read, not trusted.
                        let h = durable::sha256_file(&out).ok();
                        if h.is_some()
                            && h == p.sha256
                            && fs::metadata(&out).map(|m| m.len()).ok() == Some(e.size)
                        {
                            e.sha256 = h;
                            stats.files += 1;
                            stats.bytes += e.size;
                            stats.linked += 1;
                            continue;
                        }
                        fs::remove_file(&out).map_err(Error::io("remove", &out))?;
                        tracing::warn!(
                            snapshot = pv.stamp,
                            path = %e.path,
                            "a chroma file of an earlier snapshot no longer matches its recorded hash; that snapshot is damaged, the file is copied from live instead"
                        );
                        stats
                            .damaged_sources
                            .push(format!("{}/{}", pv.stamp, e.path));
                    }
                }
                match copy_live_file(&src, &out, e)? {
                    FileCopy::Copied(consistent) => {
                        stats.files += 1;
                        stats.bytes += e.size;
                        if !consistent {
                            tracing::warn!(path = %e.path, "chroma file kept changing while it was copied; the last copy is kept");
                            stats.changed.push(e.path.clone());
                        }
                    }
                    FileCopy::Vanished => vanished.push(e.path.clone()),
                    FileCopy::Unreadable(why) => {
                        tracing::warn!(path = %e.path, why, "chroma file left out: it cannot be read");
                        unreadable.push(e.path.clone());
                        index.skipped.push(format!("{}: {why}", e.path));
                    }
                }
            }
        }
    }
    if !unreadable.is_empty() {
        index.entries.retain(|e| !unreadable.contains(&e.path));
        index.skipped.sort();
    }
    if !vanished.is_empty() {
        for p in &vanished {
            tracing::warn!(path = %p, "chroma file vanished before it could be copied");
        }
        index.entries.retain(|e| !vanished.contains(&e.path));
        stats.changed.extend(vanished);
        stats.changed.sort();
    }
    finish_dirs(&index, dst)?;
    sync_path(dst)?;
    Ok((index, stats))
}

/// Give the folders of a copied tree their recorded mode, owner and mtime, and fsync
/// them. Folders last, deepest first: their mtimes change while children are added.
pub(crate) fn finish_dirs(index: &Index, base: &Path) -> Result<()> {
    for e in index
        .entries
        .iter()
        .rev()
        .filter(|e| e.kind == EntryKind::Dir)
    {
        let out = safe_join(base, &e.path)?;
        fs::set_permissions(&out, fs::Permissions::from_mode(e.mode))
            .map_err(Error::io("set mode of", &out))?;
        sync_path(&out)?;
        set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
    }
    Ok(())
}
