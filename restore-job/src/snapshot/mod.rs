//! Taking a snapshot (`backup`) and listing them (`list`).
//!
//! A snapshot is built in `snapshots/.<STAMP>.partial/`, fsynced, validated, and only
//! then renamed to `snapshots/<STAMP>/`: a crash leaves at most a hidden partial folder,
//! which `list` never shows and the next backup or prune removes.

use std::fs;
use std::time::Duration;

use serde::Serialize;

use crate::config::Paths;
use crate::durable::{self, BackupLock};
use crate::error::{Error, Result};
use crate::metadata::{self, Kind, Metadata};
use crate::stamp::Stamp;
use crate::validate;

mod build;

pub(crate) use build::backup_locked;

/// Pauses whatever writes to the chroma store for the length of the chroma copy.
/// The sidecar implements it by pausing the atocore container.
pub trait Quiesce {
    /// Pause the writers. `true` when they are paused; `false` when that is not
    /// possible (the copy then goes ahead unquiesced and the metadata says so).
    fn pause(&mut self) -> bool;
    /// Undo a successful [`Quiesce::pause`]. Called exactly once after it, whatever
    /// happened during the copy.
    fn resume(&mut self);
}

/// How to take a snapshot.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub include_chroma: bool,
    pub kind: Kind,
    /// atocore's `build_sha`, when the caller knows it.
    pub build_sha: Option<String>,
    /// Upper bound for the online database copy.
    pub timeout: Duration,
    /// The live paths to record as `source`, when the copy is read from elsewhere (a
    /// pre-restore snapshot is made from the live files moved aside).
    pub source_paths: Option<Paths>,
}

impl Default for BackupOptions {
    fn default() -> Self {
        BackupOptions {
            include_chroma: false,
            kind: Kind::Manual,
            build_sha: None,
            timeout: Duration::from_secs(3600),
            source_paths: None,
        }
    }
}

/// Callbacks a long-running caller hands in.
pub struct BackupHooks<'a> {
    /// Pauses chroma writers during the chroma copy.
    pub quiesce: Option<&'a mut dyn Quiesce>,
    /// Asked between steps; `false` cancels the backup (the partial folder is removed).
    pub keep_going: &'a dyn Fn() -> bool,
}

impl Default for BackupHooks<'_> {
    fn default() -> Self {
        BackupHooks {
            quiesce: None,
            keep_going: &|| true,
        }
    }
}

/// Take a snapshot: lock, copy, validate, publish. Returns the published metadata.
pub fn backup(paths: &Paths, opts: &BackupOptions, hooks: BackupHooks<'_>) -> Result<Metadata> {
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    crate::control::refuse_while_restoring(paths)?;
    backup_locked(paths, opts, hooks)
}

/// Remove hidden folders left by a crashed backup (`.STAMP.partial`) or an interrupted
/// prune or delete (`.STAMP.deleting`: the deletion is finished). Only call with the
/// lock held. Returns their names.
pub(crate) fn remove_stale_partials(paths: &Paths) -> Result<Vec<String>> {
    let dir = paths.snapshots_dir();
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(removed);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let partial = name.ends_with(".partial");
        if !name.starts_with('.') || !(partial || name.ends_with(".deleting")) {
            continue;
        }
        // A link is removed, never followed.
        let is_link = e.file_type().is_ok_and(|t| t.is_symlink());
        if is_link {
            fs::remove_file(e.path())
        } else {
            fs::remove_dir_all(e.path())
        }
        .map_err(Error::io("remove stale hidden snapshot folder", e.path()))?;
        if partial {
            tracing::warn!(folder = %name, "removed a partial snapshot left by an interrupted backup");
        } else {
            tracing::warn!(folder = %name, "finished the deletion of a snapshot an interrupted prune or delete had started");
        }
        removed.push(name);
    }
    if !removed.is_empty() {
        durable::sync_path(&dir)?;
    }
    Ok(removed)
}

/// Stamps of the published snapshot folders, oldest first. A stamp-named symlink is
/// not a snapshot folder and is left out (see [`stamp_entries`]).
pub fn published_stamps(paths: &Paths) -> Result<Vec<Stamp>> {
    Ok(stamp_entries(paths)?
        .into_iter()
        .filter(|(_, link)| !link)
        .map(|(s, _)| s)
        .collect())
}

/// Every stamp-named folder or symlink in `snapshots/`, oldest first, with `true` for a
/// symlink. `list` and `prune` show symlinks as invalid (`snapshot_is_symlink`) rather
/// than hide them; nothing reads or deletes through them.
pub fn stamp_entries(paths: &Paths) -> Result<Vec<(Stamp, bool)>> {
    let dir = paths.snapshots_dir();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &dir)(e)),
    };
    // `DirEntry::file_type` does not follow symlinks.
    let mut entries: Vec<(Stamp, bool)> = rd
        .flatten()
        .filter_map(|e| {
            let t = e.file_type().ok()?;
            if !t.is_dir() && !t.is_symlink() {
                return None;
            }
            let stamp = Stamp::parse(&e.file_name().to_string_lossy()).ok()?;
            Some((stamp, t.is_symlink()))
        })
        .collect();
    entries.sort();
    Ok(entries)
}

/// One row of `list`: the snapshot's metadata with `stamp` (the folder's name),
/// `valid` and, when something is wrong, `errors` — one flat JSON object.
#[derive(Debug, Clone)]
pub struct Listed {
    pub stamp: String,
    pub metadata: Option<Metadata>,
    /// `true`: validated when published and still complete; `false`: broken;
    /// `null`: complete but never validated by this engine (legacy) — run `validate`.
    pub valid: Option<bool>,
    pub errors: Vec<String>,
}

impl Serialize for Listed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = match self.metadata.as_ref().map(serde_json::to_value) {
            Some(Ok(serde_json::Value::Object(m))) => m,
            Some(Err(e)) => return Err(serde::ser::Error::custom(e)),
            _ => serde_json::Map::new(),
        };
        map.insert("stamp".into(), self.stamp.clone().into());
        map.insert("valid".into(), self.valid.into());
        if !self.errors.is_empty() {
            map.insert("errors".into(), self.errors.clone().into());
        }
        map.serialize(s)
    }
}

/// The body of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    pub backup_dir: String,
    pub backups: Vec<Listed>,
    /// Point-in-time recovery: the spans of time a restore `--at` can reach, per WAL
    /// generation (filled by [`list_with_windows`] only; absent when no WAL was
    /// captured).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<crate::wal::generation::Window>,
}

/// List the published snapshots, oldest first, with a quick structural check each. A
/// stamp-named symlink is listed as invalid (`snapshot_is_symlink`), without metadata.
pub fn list(paths: &Paths) -> Result<ListReport> {
    let backups = stamp_entries(paths)?
        .into_iter()
        .map(|(s, _)| {
            let dir = paths.snapshot_dir(&s);
            let (metadata, errors) = validate::quick(&dir);
            let valid = if !errors.is_empty() {
                Some(false)
            } else if metadata.as_ref().is_some_and(|m| m.validated_at.is_some()) {
                Some(true)
            } else {
                None
            };
            Listed {
                stamp: s.to_string(),
                metadata,
                valid,
                errors,
            }
        })
        .collect();
    Ok(ListReport {
        backup_dir: paths.backup_dir.display().to_string(),
        backups,
        windows: Vec::new(),
    })
}

/// [`list`] with the point-in-time windows, which read every captured WAL segment's
/// header (what `atocore-restore-job list` and the sidecar's `GET /admin/wal` show;
/// callers that only need the snapshots use [`list`]).
pub fn list_with_windows(paths: &Paths) -> Result<ListReport> {
    let mut report = list(paths)?;
    let valid: Vec<Metadata> = report
        .backups
        .iter()
        .filter(|l| l.valid == Some(true))
        .filter_map(|l| l.metadata.clone())
        .collect();
    report.windows = crate::wal::generation::windows(paths, &valid)?;
    Ok(report)
}

/// Read one snapshot's metadata, refusing unknown stamps and symlinked snapshot folders
/// (`snapshot_is_symlink`: nothing reads through them).
pub fn metadata_of(paths: &Paths, stamp: &Stamp) -> Result<Metadata> {
    let dir = paths.snapshot_dir(stamp);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(Error::InvalidSnapshot {
                stamp: stamp.to_string(),
                codes: vec![validate::SNAPSHOT_IS_SYMLINK.into()],
            });
        }
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(Error::UnknownStamp {
                stamp: stamp.to_string(),
                dir: paths.snapshots_dir(),
            });
        }
    }
    metadata::read(&dir)?.ok_or_else(|| Error::InvalidSnapshot {
        stamp: stamp.to_string(),
        codes: vec!["metadata_invalid_json".into()],
    })
}

/// Publish a `point-in-time` snapshot: `base`'s registry and chroma with a database
/// made by `make_db` from a copy of `base`'s (it returns the WAL frames it replayed).
/// Takes the backups lock.
pub fn derive(
    paths: &Paths,
    base: &Stamp,
    info: metadata::PointInTime,
    make_db: &dyn Fn(&std::path::Path) -> Result<u64>,
) -> Result<Metadata> {
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    build::derive_locked(paths, base, info, make_db)
}
