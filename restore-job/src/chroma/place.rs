//! Placing a snapshot's tree back: staging it out (every file checked against its
//! hash, nothing written outside the staging folder), moving live entries out and
//! staged ones in (the live directory keeps its inode), and comparing a tree with an
//! index.

use crate::durable::{self, copy_file_hashed, set_owner_and_mtime, sync_path};
use crate::error::{Error, Result};
use crate::layout::STAGING_DIR;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

/// Copy a snapshot's chroma tree out into `new` (a fresh folder), checking every file's
/// hash against the index on the way: a snapshot damaged after validation is caught
/// here, before anything live is touched.
///
/// Nothing is ever written outside `new`: an index whose paths are not plain, whose
/// entries lie below a link, or whose links resolve outside the tree is refused before
/// anything is written; files are created with `O_EXCL` (never through a link) and
/// folders only below folders this stage created.
pub fn stage(snapshot_chroma: &Path, index: &Index, new: &Path) -> Result<()> {
    // The layout is fixed: `<snapshots>/<STAMP>/chroma`.
    let stamp = snapshot_chroma
        .parent()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let problems = index_problems(index);
    if !problems.is_empty() {
        return Err(Error::DamagedSnapshot {
            stamp,
            why: format!(
                "its chroma index is unsafe to restore ({})",
                problems
                    .iter()
                    .map(|(p, why)| format!("{p} {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
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
                std::os::unix::fs::symlink(target, &out).map_err(Error::io("create link", &out))?;
                set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
            }
            EntryKind::File => {
                let copied = copy_file_hashed(&src, &out)?;
                if let Some(want) = &e.sha256
                    && &copied.sha256 != want
                {
                    return Err(Error::DamagedSnapshot {
                        stamp,
                        why: format!(
                            "chroma file {} does not match its recorded hash (damaged after it was validated)",
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
            crate::faults::crash_point(crash_point_name);
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
            crate::faults::crash_point("chroma-half-in");
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
/// Entries the scan had to leave out count as `extra:` (they are not in any index);
/// folders that could not be listed as `unreadable:`.
pub fn differences(live: &Path, index: &Index) -> Result<Vec<String>> {
    let (now, odd) = scan_tree(live)?;
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
    for o in odd {
        diffs.push(if o.unreadable {
            format!("unreadable:{}", o.path)
        } else {
            format!("extra:{}", o.path)
        });
    }
    diffs.sort();
    Ok(diffs)
}
