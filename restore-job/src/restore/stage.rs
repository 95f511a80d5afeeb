//! Staging: a snapshot's files copied out next to their destinations and checked
//! (manifest hashes, `integrity_check`, row counts), before anything live changes.
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::Parts;
use crate::chroma::{self, Index};
use crate::config::Paths;
use crate::db;
use crate::durable::{self, mtime_ns, remove_file_if_exists as remove_if_exists};
use crate::error::{Error, Result};
use crate::faults::crash_point;
use crate::layout::{CHROMA_REL, DB_REL, REGISTRY_REL, restore_tmp, staged_path, staging_dir};
use crate::manifest;
use crate::metadata::{FileAttrs, Metadata};
use crate::stamp::Stamp;

pub(crate) fn staged_matches(paths: &Paths, stamp: &Stamp, parts: &Parts) -> bool {
    let Some(s) = crate::control::staged(paths) else {
        return false;
    };
    let tmp_ok = fs::metadata(restore_tmp(&paths.db))
        .map(|m| m.ino() == s.db_inode && m.len() == s.db_size && mtime_ns(&m) == s.db_mtime_ns)
        .unwrap_or(false);
    s.stamp == stamp.as_str()
        && s.registry == parts.registry
        && s.chroma == parts.chroma
        && tmp_ok
        && (!parts.registry || restore_tmp(&paths.registry).is_file())
        && (!parts.chroma || staging_dir(paths).join("new").is_dir())
}

pub(crate) fn clear_staging(paths: &Paths) {
    let _ = fs::remove_file(restore_tmp(&paths.db));
    let _ = fs::remove_file(restore_tmp(&paths.registry));
    let _ = fs::remove_dir_all(staging_dir(paths).join("new"));
    let _ = fs::remove_file(staged_path(paths));
    remove_staging_if_empty(paths);
}

/// Remove the staging folder inside the live chroma directory when nothing is left in
/// it (`rmdir` refuses a folder that is not empty, so this never removes content).
pub(crate) fn remove_staging_if_empty(paths: &Paths) {
    let _ = fs::remove_dir(staging_dir(paths));
}

pub(crate) fn counts_match(f: &db::DbFacts, meta: &Metadata) -> bool {
    meta.row_counts
        .as_ref()
        .is_none_or(|want| want.iter().all(|(t, n)| f.row_counts.get(t) == Some(n)))
}

pub(crate) fn load_index(snap: &Path) -> Result<Index> {
    match durable::read_json::<Index>(&snap.join(crate::layout::INDEX_FILE))? {
        Some(i) => Ok(i),
        // A legacy snapshot has no index: its tree is the index.
        None => chroma::scan(&snap.join(CHROMA_REL)),
    }
}

/// Stage every part of the snapshot beside its destination and check the staged
/// database; returns the chroma index when chroma is restored.
pub(crate) fn stage_all(
    paths: &Paths,
    stamp: &Stamp,
    meta: &Metadata,
    parts: &Parts,
) -> Result<Option<Index>> {
    let snap = paths.snapshot_dir(stamp);
    let hashes = match manifest::read(&snap)? {
        Some(Ok(m)) => Some(m),
        _ => None,
    };
    let db_tmp = restore_tmp(&paths.db);
    stage_file(
        stamp,
        &snap.join(DB_REL),
        &paths.db,
        &db_tmp,
        hashes.as_ref().and_then(|h| h.get(DB_REL)),
        meta.db_file,
    )?;
    crash_point("mid-stage");
    let (problems, facts) = db::check_file(&db_tmp);
    if !problems.is_empty() || !facts.is_some_and(|f| counts_match(&f, meta)) {
        let _ = fs::remove_file(&db_tmp);
        return Err(Error::DamagedSnapshot {
            stamp: stamp.to_string(),
            why: format!(
                "the staged copy of {} failed integrity_check or its recorded row counts ({})",
                snap.join(DB_REL).display(),
                problems.join("; ")
            ),
        });
    }
    if parts.registry {
        stage_file(
            stamp,
            &snap.join(REGISTRY_REL),
            &paths.registry,
            &restore_tmp(&paths.registry),
            hashes.as_ref().and_then(|h| h.get(REGISTRY_REL)),
            meta.registry_file,
        )?;
    }
    if !parts.chroma {
        return Ok(None);
    }
    let index_path = snap.join(crate::layout::INDEX_FILE);
    if let Some(want) = hashes
        .as_ref()
        .and_then(|h| h.get(crate::layout::INDEX_FILE))
        && &durable::sha256_file(&index_path)? != want
    {
        return Err(Error::DamagedSnapshot {
            stamp: stamp.to_string(),
            why: format!("{} does not match its manifest hash", index_path.display()),
        });
    }
    let index = load_index(&snap)?;
    durable::create_dir_all(&staging_dir(paths))?;
    chroma::stage(
        &snap.join(CHROMA_REL),
        &index,
        &staging_dir(paths).join("new"),
    )?;
    Ok(Some(index))
}

/// Copy a snapshot file out to `tmp` beside `dest`, check it against the manifest,
/// give it the live file's (or the recorded) mode and owner, fsync.
pub(crate) fn stage_file(
    stamp: &Stamp,
    src: &Path,
    dest: &Path,
    tmp: &Path,
    want: Option<&String>,
    recorded: Option<FileAttrs>,
) -> Result<()> {
    if let Some(parent) = dest.parent() {
        durable::create_dir_all(parent)?;
    }
    remove_if_exists(tmp)?;
    let copied = durable::copy_file_hashed(src, tmp)?;
    if let Some(want) = want
        && &copied.sha256 != want
    {
        let _ = fs::remove_file(tmp);
        return Err(Error::DamagedSnapshot {
            stamp: stamp.to_string(),
            why: format!("{} does not match its manifest hash", src.display()),
        });
    }
    let attrs = fs::metadata(dest)
        .ok()
        .map(|m| FileAttrs {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })
        .or(recorded);
    if let Some(a) = attrs {
        fs::set_permissions(tmp, fs::Permissions::from_mode(a.mode))
            .map_err(Error::io("set mode of", tmp))?;
        durable::set_owner_and_mtime(tmp, a.uid, a.gid, None)?;
    }
    durable::sync_path(tmp)?;
    durable::sync_parent(tmp)
}
