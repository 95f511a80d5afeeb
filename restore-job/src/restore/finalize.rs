//! Finalize: turn the live state a restore set aside into the `pre-restore` snapshot,
//! then delete it; best effort, keeping the files in named folders when no snapshot
//! can be made of them.
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};

use crate::config::Paths;
use crate::control::Aside;
use crate::control::{pending_aside, pending_journal};
use crate::durable::{self, BackupLock, remove_file_if_exists as remove_if_exists};
use crate::error::{Error, Result};
use crate::faults::crash_point;
use crate::layout::{KEPT_PREFIX, aside_path, kept_record_path, staging_dir, with_suffix};
use crate::metadata::Kind;
use crate::snapshot::{self, BackupHooks, BackupOptions};
use serde::{Deserialize, Serialize};

use super::stage::remove_staging_if_empty;
use super::swap::{parent_of, rename_no_replace};

/// What [`finalize`] did with the live state a restore set aside.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Finalized {
    /// The `pre-restore` snapshot made from it.
    pub pre_restore_snapshot: Option<String>,
    /// Folders where the set-aside files were kept, untouched, because no snapshot
    /// could be made of them (see [`KEPT_PREFIX`]). Nothing is deleted then.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Turn the aside copy of a restore into a published `pre-restore` snapshot (unless
/// the restore said `--no-pre-snapshot`), then delete it. Safe to run again after a
/// crash; nothing pending: an empty [`Finalized`].
///
/// Best effort once the new data is in place: when no snapshot can be made of the
/// set-aside files (a corrupt old database, a full disk, no old database at all), they
/// are moved, untouched, into folders named `atocore-pre-restore-kept-<id>` (see
/// [`Finalized::kept`]) and a warning says where; they are never deleted then.
pub fn finalize(paths: &Paths) -> Result<Finalized> {
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    finalize_locked(paths)
}

pub(crate) fn finalize_locked(paths: &Paths) -> Result<Finalized> {
    let Some(mut aside) = pending_aside(paths)? else {
        return Ok(Finalized::default());
    };
    if pending_journal(paths)?.is_some_and(|j| j.id == aside.restore_id) {
        // Its restore is still under way; it finishes first.
        return Ok(Finalized::default());
    }
    if let Some(why) = aside.kept_because.clone() {
        return keep_aside(paths, &aside, why);
    }
    if aside.make_snapshot && aside.snapshot.is_none() {
        if !aside.db.is_file() {
            if aside_files(&aside).iter().any(|p| holds_data(p)) {
                return keep_aside(
                    paths,
                    &aside,
                    "there was no live database, so no pre-restore snapshot could be made of the registry and chroma that were replaced".into(),
                );
            }
        } else {
            let from = Paths {
                storage_root: paths.storage_root.clone(),
                db: aside.db.clone(),
                registry: aside.registry.clone(),
                chroma: aside.chroma.clone().unwrap_or_else(|| paths.chroma.clone()),
                backup_dir: paths.backup_dir.clone(),
            };
            let made = snapshot::backup_locked(
                &from,
                &BackupOptions {
                    include_chroma: aside.chroma.as_ref().is_some_and(|c| c.is_dir()),
                    kind: Kind::PreRestore,
                    source_paths: Some(paths.clone()),
                    ..BackupOptions::default()
                },
                BackupHooks::default(),
            );
            match made {
                Ok(m) => {
                    aside.snapshot = Some(m.stamp);
                    durable::write_json_atomic(&aside_path(paths), &aside)?;
                }
                Err(e) => {
                    tracing::error!(cause = %e, "the pre-restore snapshot could not be made; keeping the set-aside live state as it is");
                    return keep_aside(
                        paths,
                        &aside,
                        format!("the pre-restore snapshot could not be made: {e}"),
                    );
                }
            }
        }
    }
    crash_point("finalize-published");
    for f in aside_files(&aside) {
        if f.is_dir() {
            fs::remove_dir_all(&f).map_err(Error::io("remove", &f))?;
        } else {
            remove_if_exists(&f)?;
        }
    }
    remove_staging_if_empty(paths);
    remove_if_exists(&aside_path(paths))?;
    durable::sync_path(&paths.restore_dir())?;
    tracing::info!(snapshot = ?aside.snapshot, "pre-restore snapshot finished; aside copy removed");
    Ok(Finalized {
        pre_restore_snapshot: aside.snapshot,
        ..Finalized::default()
    })
}

/// Whether a set-aside path holds anything worth keeping: a file, or a folder with
/// something in it (a restore onto an empty chroma folder sets aside an empty one).
fn holds_data(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::read_dir(p).is_ok_and(|mut rd| rd.next().is_some()),
        Ok(_) => true,
        Err(_) => false,
    }
}

/// Every path of an aside copy (the database with its journals, the registry, the
/// chroma folder), present or not.
pub(crate) fn aside_files(aside: &Aside) -> Vec<PathBuf> {
    crate::db::with_companions(&aside.db)
        .chain(std::iter::once(aside.registry.clone()))
        .chain(aside.chroma.clone())
        .collect()
}

/// Move the set-aside files, untouched, into `atocore-pre-restore-kept-<id>` folders
/// (beside the database, beside the registry, and in the chroma staging area: each on
/// its own volume, so every move is a rename), record them in
/// `<backup_dir>/restore/kept-<id>.json`, and forget the aside copy.
pub(crate) fn keep_aside(paths: &Paths, aside: &Aside, why: String) -> Result<Finalized> {
    if aside.kept_because.is_none() {
        let mut marked = aside.clone();
        marked.kept_because = Some(why.clone());
        durable::write_json_atomic(&aside_path(paths), &marked)?;
    }
    let folder = format!("{KEPT_PREFIX}{}", aside.restore_id);
    let live_name = |p: &Path| p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    // Each move: from, to, and the kept folder it lands in (for chroma, the folder
    // itself is the destination).
    let mut moves: Vec<(PathBuf, PathBuf, PathBuf)> = Vec::new();
    let db_dir = parent_of(&paths.db).join(&folder);
    for suffix in ["", "-wal", "-journal"] {
        let mut name = live_name(&paths.db);
        name.push(suffix);
        moves.push((
            with_suffix(&aside.db, suffix),
            db_dir.join(name),
            db_dir.clone(),
        ));
    }
    let registry_dir = parent_of(&paths.registry).join(&folder);
    moves.push((
        aside.registry.clone(),
        registry_dir.join(live_name(&paths.registry)),
        registry_dir,
    ));
    if let Some(c) = &aside.chroma {
        let chroma_dir = staging_dir(paths).join(&folder);
        moves.push((c.clone(), chroma_dir.clone(), chroma_dir));
    }
    let mut kept: Vec<PathBuf> = Vec::new();
    for (from, to, kept_in) in moves {
        // Already there: moved by an earlier, interrupted run.
        if !to.exists() {
            if !from.exists() {
                continue;
            }
            durable::create_dir_all(&parent_of(&to))?;
            rename_no_replace(&from, &to).map_err(Error::io("keep", &from))?;
            durable::sync_parent(&to)?;
            durable::sync_parent(&from)?;
        }
        if !kept.contains(&kept_in) {
            kept.push(kept_in);
        }
    }
    let record = serde_json::json!({
        "restore_id": aside.restore_id,
        "restored_stamp": aside.restored_stamp,
        "why": why,
        "kept": kept,
        "kept_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    durable::write_json_atomic(&kept_record_path(paths, &aside.restore_id), &record)?;
    remove_if_exists(&aside_path(paths))?;
    durable::sync_path(&paths.restore_dir())?;
    let listed: Vec<String> = kept.iter().map(|p| p.display().to_string()).collect();
    tracing::warn!(kept = ?listed, why = %why, "the live state from before the restore is kept untouched");
    Ok(Finalized {
        pre_restore_snapshot: None,
        warnings: vec![format!(
            "pre_restore_snapshot_failed: {why}; the live state from before the restore is kept untouched in {}; copy it somewhere safe, then remove it",
            listed.join(", ")
        )],
        kept,
    })
}
