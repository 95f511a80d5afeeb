//! The Chroma directory: an index of its tree, an incremental copy into a snapshot
//! (unchanged files hard-linked from the previous snapshot), and the restore that makes
//! the live directory equal a snapshot while the directory itself keeps its inode.
//!
//! The live chroma directory is a bind-mount point: it is never renamed or removed.
//! Restores stage inside it (`.atocore-restore/`), move live entries aside into the
//! staging area and the staged ones into place, entry by entry (TECH-NOTES: renames
//! inside a mount work; renames into it from outside fail with EXDEV).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable::{self, copy_file_hashed, set_owner_and_mtime, sync_path};
use crate::error::{Error, Result};

/// File name of the chroma index inside a snapshot folder.
pub const INDEX_FILE: &str = "chroma-index.json";
/// The staging folder a restore keeps inside the live chroma directory.
pub const STAGING_DIR: &str = ".atocore-restore";

/// What one entry of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One entry below the chroma root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path with `/` separators.
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub size: u64,
    pub mtime_ns: i128,
    /// The live file's ctime when it was copied (used to recognise unchanged files).
    #[serde(default)]
    pub ctime_ns: i128,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// Attributes of the chroma root itself.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RootAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
}

/// The whole tree: what a snapshot's `chroma-index.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    pub root: RootAttrs,
    /// Parents before children, sorted by path.
    pub entries: Vec<Entry>,
    /// Entries left out (sockets, fifos, devices), with the reason.
    #[serde(default)]
    pub skipped: Vec<String>,
}

impl Index {
    pub fn file_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .count() as u64
    }

    pub fn byte_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == EntryKind::File)
            .map(|e| e.size)
            .sum()
    }
}

fn mtime_ns(m: &fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

fn ctime_ns(m: &fs::Metadata) -> i128 {
    m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
}

/// Walk a chroma tree (without hashing). The staging folder is left out.
pub fn scan(root: &Path) -> Result<Index> {
    let meta = fs::symlink_metadata(root).map_err(Error::io("stat", root))?;
    let mut index = Index {
        root: RootAttrs {
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: mtime_ns(&meta),
        },
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    walk(root, root, &mut index)?;
    index.entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(index)
}

fn walk(root: &Path, dir: &Path, index: &mut Index) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io("list", dir))?
        .collect::<std::io::Result<_>>()
        .map_err(Error::io("list", dir))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let path = child.path();
        if dir == root && child.file_name() == STAGING_DIR {
            continue;
        }
        let rel = rel_string(root, &path)?;
        let m = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        let ft = m.file_type();
        let mut e = Entry {
            path: rel.clone(),
            kind: EntryKind::File,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: 0,
            mtime_ns: mtime_ns(&m),
            ctime_ns: ctime_ns(&m),
            sha256: None,
            target: None,
        };
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(Error::io("read link", &path))?;
            check_link_inside(&rel, &target).map_err(|why| Error::UnsafeEntry {
                path: path.clone(),
                why,
            })?;
            e.kind = EntryKind::Symlink;
            e.target = Some(target.to_string_lossy().into_owned());
            index.entries.push(e);
        } else if ft.is_dir() {
            e.kind = EntryKind::Dir;
            index.entries.push(e);
            walk(root, &path, index)?;
        } else if ft.is_file() {
            e.size = m.len();
            index.entries.push(e);
        } else {
            index
                .skipped
                .push(format!("{rel}: not a file, folder or symlink"));
        }
    }
    Ok(())
}

fn rel_string(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).map_err(|_| Error::UnsafeEntry {
        path: path.to_path_buf(),
        why: "is outside the chroma directory".into(),
    })?;
    rel.to_str()
        .map(str::to_string)
        .ok_or_else(|| Error::UnsafeEntry {
            path: path.to_path_buf(),
            why: "has a name that is not UTF-8".into(),
        })
}

/// A symlink may only point inside the chroma tree: relative, and never climbing above
/// the root.
fn check_link_inside(rel: &str, target: &Path) -> std::result::Result<(), String> {
    if target.is_absolute() {
        return Err(format!(
            "is a symlink to the absolute path {}; only links inside the chroma directory are kept",
            target.display()
        ));
    }
    let mut depth: i64 = rel.split('/').count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(format!(
                "is a symlink to {} which points outside the chroma directory",
                target.display()
            ));
        }
    }
    Ok(())
}

/// A relative path from an index, checked so that joining it cannot escape `base`.
pub fn safe_join(base: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        return Err(Error::UnsafeEntry {
            path: base.join(rel),
            why: "is not a plain relative path".into(),
        });
    }
    Ok(base.join(p))
}

/// Counts from a snapshot copy.
#[derive(Debug, Clone, Default)]
pub struct CopyStats {
    pub files: u64,
    pub bytes: u64,
    pub linked: u64,
}

/// Copy the live tree into `dst` (a new folder), hashing every file. A file whose path,
/// size, mtime and ctime equal an entry of `previous` (the newest earlier snapshot's
/// index, whose folder is `previous_dir`) is hard-linked from there instead, reusing
/// its recorded hash. Returns the index of the new copy (hashes filled).
pub fn snapshot_copy(
    live: &Path,
    dst: &Path,
    previous: Option<(&Index, &Path)>,
    keep_going: &dyn Fn() -> bool,
) -> Result<(Index, CopyStats)> {
    let mut index = scan(live)?;
    let prev: HashMap<&str, &Entry> = previous
        .map(|(i, _)| i.entries.iter().map(|e| (e.path.as_str(), e)).collect())
        .unwrap_or_default();
    durable::create_dir_all(dst)?;
    let mut stats = CopyStats::default();
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
                stats.files += 1;
                stats.bytes += e.size;
                let unchanged = prev.get(e.path.as_str()).filter(|p| {
                    p.kind == EntryKind::File
                        && p.size == e.size
                        && p.mtime_ns == e.mtime_ns
                        && p.ctime_ns == e.ctime_ns
                        && p.sha256.is_some()
                });
                if let (Some(p), Some((_, prev_dir))) = (unchanged, previous) {
                    let from = safe_join(prev_dir, &e.path)?;
                    let same_size = fs::metadata(&from)
                        .map(|m| m.len() == e.size)
                        .unwrap_or(false);
                    if same_size && fs::hard_link(&from, &out).is_ok() {
                        e.sha256 = p.sha256.clone();
                        stats.linked += 1;
                        continue;
                    }
                }
                let copied = copy_file_hashed(&src, &out)?;
                e.sha256 = Some(copied.sha256);
                e.size = copied.bytes;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
        }
    }
    finish_dirs(&index, dst)?;
    sync_path(dst)?;
    Ok((index, stats))
}

/// Give the folders of a copied tree their recorded mode, owner and mtime, and fsync
/// them. Folders last, deepest first: their mtimes change while children are added.
fn finish_dirs(index: &Index, base: &Path) -> Result<()> {
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

/// Copy a snapshot's chroma tree out into `new` (a fresh folder), checking every file's
/// hash against the index on the way: a snapshot damaged after validation is caught
/// here, before anything live is touched.
pub fn stage(snapshot_chroma: &Path, index: &Index, new: &Path) -> Result<()> {
    if new.exists() {
        fs::remove_dir_all(new).map_err(Error::io("clear stale staging", new))?;
    }
    durable::create_dir_all(new)?;
    for e in &index.entries {
        let src = safe_join(snapshot_chroma, &e.path)?;
        let out = safe_join(new, &e.path)?;
        match e.kind {
            EntryKind::Dir => fs::create_dir(&out).map_err(Error::io("create folder", &out))?,
            EntryKind::Symlink => {
                let target = e.target.as_deref().unwrap_or_default();
                check_link_inside(&e.path, Path::new(target)).map_err(|why| {
                    Error::UnsafeEntry {
                        path: src.clone(),
                        why,
                    }
                })?;
                std::os::unix::fs::symlink(target, &out).map_err(Error::io("create link", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
            EntryKind::File => {
                let copied = copy_file_hashed(&src, &out)?;
                if let Some(want) = &e.sha256
                    && &copied.sha256 != want
                {
                    return Err(Error::RestoreFailed {
                        stamp: String::new(),
                        why: format!(
                            "chroma file {} does not match its recorded hash; the snapshot was damaged after it was validated, pick another",
                            e.path
                        ),
                    });
                }
                fs::set_permissions(&out, fs::Permissions::from_mode(e.mode))
                    .map_err(Error::io("set mode of", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
        }
    }
    finish_dirs(index, new)?;
    sync_path(new)
}

/// Move every entry of the live directory (but the staging folder) into `into`, a
/// folder inside the staging area. Entries already moved by an interrupted run are no
/// longer live, so running it again moves only the rest.
pub fn move_out(live: &Path, into: &Path, crash_point_name: &str) -> Result<()> {
    durable::create_dir_all(into)?;
    for (n, entry) in fs::read_dir(live)
        .map_err(Error::io("list", live))?
        .enumerate()
    {
        let entry = entry.map_err(Error::io("list", live))?;
        if entry.file_name() == STAGING_DIR {
            continue;
        }
        let to = into.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(Error::io("move aside", entry.path()))?;
        if n == 0 {
            crate::restore::crash_point(crash_point_name);
        }
    }
    sync_path(into)?;
    sync_path(live)
}

/// Move every staged entry from `new` into the live directory, then give the live
/// directory the snapshot's mode and owner. The live directory keeps its inode.
pub fn move_in(new: &Path, live: &Path, root: &RootAttrs) -> Result<()> {
    for (n, entry) in fs::read_dir(new)
        .map_err(Error::io("list", new))?
        .enumerate()
    {
        let entry = entry.map_err(Error::io("list", new))?;
        let to = live.join(entry.file_name());
        fs::rename(entry.path(), &to).map_err(Error::io("move into place", &to))?;
        if n == 0 {
            crate::restore::crash_point("chroma-half-in");
        }
    }
    fs::set_permissions(live, fs::Permissions::from_mode(root.mode))
        .map_err(Error::io("set mode of", live))?;
    set_owner_and_mtime(live, root.uid, root.gid, None)?;
    sync_path(new)?;
    sync_path(live)
}

/// Compare the live tree with a snapshot index: paths, kinds, sizes, modes, owners and
/// link targets. Returns the differences (empty when equal).
pub fn differences(live: &Path, index: &Index) -> Result<Vec<String>> {
    let now = scan(live)?;
    let want: HashMap<&str, &Entry> = index.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let have: HashMap<&str, &Entry> = now.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut diffs = Vec::new();
    for (p, w) in &want {
        match have.get(p) {
            None => diffs.push(format!("missing:{p}")),
            Some(h) => {
                let same = h.kind == w.kind
                    && h.mode == w.mode
                    && (h.kind != EntryKind::File || h.size == w.size)
                    && h.target == w.target;
                if !same {
                    diffs.push(format!("differs:{p}"));
                }
            }
        }
    }
    for p in have.keys() {
        if !want.contains_key(p) {
            diffs.push(format!("extra:{p}"));
        }
    }
    diffs.sort();
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside() {
        assert!(check_link_inside("a/link", Path::new("../b")).is_ok());
        assert!(check_link_inside("link", Path::new("seg/file")).is_ok());
        assert!(check_link_inside("link", Path::new("../outside")).is_err());
        assert!(check_link_inside("a/link", Path::new("../../x")).is_err());
        assert!(check_link_inside("link", Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let b = Path::new("/base");
        assert!(safe_join(b, "a/b").is_ok());
        assert!(safe_join(b, "../a").is_err());
        assert!(safe_join(b, "/a").is_err());
        assert!(safe_join(b, "").is_err());
    }
}
