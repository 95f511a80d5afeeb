//! Taking a snapshot (`backup`) and listing them (`list`).
//!
//! A snapshot is built in `snapshots/.<STAMP>.partial/`, fsynced, validated, and only
//! then renamed to `snapshots/<STAMP>/`: a crash leaves at most a hidden partial folder,
//! which `list` never shows and the next backup or prune removes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::chroma::{self, Index};
use crate::config::Paths;
use crate::db;
use crate::durable::{self, BackupLock};
use crate::error::{Error, Result};
use crate::layout::{CHROMA_REL, DB_REL, METADATA_FILE, REGISTRY_REL};
use crate::manifest::{self, Manifest};
use crate::metadata::{self, FORMAT_VERSION, FileAttrs, Kind, Metadata, Source, Tool};
use crate::stamp::Stamp;
use crate::validate;

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
pub struct Hooks<'a> {
    /// Pauses chroma writers during the chroma copy.
    pub quiesce: Option<&'a mut dyn Quiesce>,
    /// Asked between steps; `false` cancels the backup (the partial folder is removed).
    pub keep_going: &'a dyn Fn() -> bool,
}

impl Default for Hooks<'_> {
    fn default() -> Self {
        Hooks {
            quiesce: None,
            keep_going: &|| true,
        }
    }
}

/// Take a snapshot: lock, copy, validate, publish. Returns the published metadata.
pub fn backup(paths: &Paths, opts: &BackupOptions, hooks: Hooks<'_>) -> Result<Metadata> {
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

/// Removes the partial folder unless the snapshot was published.
struct PartialGuard {
    dir: PathBuf,
    armed: bool,
}

impl Drop for PartialGuard {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = fs::remove_dir_all(&self.dir)
        {
            tracing::error!(folder = %self.dir.display(), cause = %e, "could not remove the partial snapshot; remove it by hand");
        }
    }
}

/// Resumes the quiesced writers when dropped, whatever happened.
struct Resume<'a, 'b>(Option<&'a mut &'b mut dyn Quiesce>);

impl Drop for Resume<'_, '_> {
    fn drop(&mut self) {
        if let Some(q) = self.0.take() {
            q.resume();
        }
    }
}

/// [`backup`] with the backups lock already held by the caller.
pub(crate) fn backup_locked(
    paths: &Paths,
    opts: &BackupOptions,
    mut hooks: Hooks<'_>,
) -> Result<Metadata> {
    let started = Instant::now();
    if !paths.db.is_file() {
        return Err(Error::MissingDatabase(paths.db.clone()));
    }
    let snapshots = paths.snapshots_dir();
    durable::create_dir_all(&snapshots)?;
    remove_stale_partials(paths)?;

    // A stamp nobody has: published or in the making.
    let mut stamp = Stamp::from_time(Utc::now());
    while snapshots.join(stamp.as_str()).exists()
        || snapshots.join(format!(".{stamp}.partial")).exists()
    {
        stamp = stamp.next();
    }
    let partial = snapshots.join(format!(".{stamp}.partial"));
    fs::create_dir(&partial).map_err(Error::io("create", &partial))?;
    let mut guard = PartialGuard {
        dir: partial.clone(),
        armed: true,
    };
    let final_dir = snapshots.join(stamp.as_str());
    let mut warnings = Vec::new();

    // --- copy ---
    let copy_started = Instant::now();
    let mut hashes = Manifest::new();
    durable::create_dir_all(&partial.join("db"))?;
    let db_out = partial.join(DB_REL);
    let live_db_meta = fs::metadata(&paths.db).map_err(Error::io("stat", &paths.db))?;
    let outcome = db::online_backup(&paths.db, &db_out, opts.timeout, hooks.keep_going)?;

    // The registry is read once: copied, then the copy is checked.
    let mut registry_file = None;
    let registry_copied = match fs::metadata(&paths.registry) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %paths.registry.display(), "there is no live registry; the snapshot has none");
            warnings.push("registry_missing".to_string());
            false
        }
        Err(e) => return Err(Error::io("stat", &paths.registry)(e)),
        Ok(m) => {
            durable::create_dir_all(&partial.join("config"))?;
            let out = partial.join(REGISTRY_REL);
            let c = durable::copy_file_hashed(&paths.registry, &out)?;
            let parses = fs::read(&out)
                .map(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok())
                .map_err(Error::io("read", &out))?;
            if parses {
                hashes.insert(REGISTRY_REL.to_string(), c.sha256);
                registry_file = Some(FileAttrs {
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                });
                true
            } else {
                tracing::warn!(path = %paths.registry.display(), "the live registry is not valid JSON; it is left out of this snapshot");
                warnings.push("registry_invalid_json_skipped".to_string());
                fs::remove_file(&out).map_err(Error::io("remove", &out))?;
                fs::remove_dir(partial.join("config"))
                    .map_err(Error::io("remove", partial.join("config")))?;
                false
            }
        }
    };

    let mut chroma_index: Option<Index> = None;
    let mut chroma_quiesced = None;
    let mut linked = None;
    let mut chroma_changed = None;
    // A missing chroma folder costs the chroma copy, never the database's.
    let include_chroma = opts.include_chroma
        && {
            let there = paths.chroma.is_dir();
            if !there {
                tracing::warn!(path = %paths.chroma.display(), "--include-chroma: the chroma directory does not exist (or is not a folder); the snapshot has no chroma copy");
                warnings.push("chroma_missing".to_string());
            }
            there
        };
    if include_chroma {
        let previous = newest_chroma_index(paths, &stamp);
        let prev_ref = previous.as_ref().map(|(i, d, s)| chroma::Previous {
            index: i,
            dir: d.as_path(),
            stamp: s.as_str(),
        });
        let paused = match hooks.quiesce.as_mut() {
            Some(q) => q.pause(),
            None => false,
        };
        chroma_quiesced = Some(paused);
        if !paused {
            warnings.push("chroma_not_quiesced".to_string());
        }
        let result = {
            let _resume = Resume(if paused { hooks.quiesce.as_mut() } else { None });
            chroma::snapshot_copy(
                &paths.chroma,
                &partial.join(CHROMA_REL),
                prev_ref,
                hooks.keep_going,
            )
        };
        let (index, stats) = result?;
        for e in &index.entries {
            if let Some(h) = &e.sha256 {
                hashes.insert(format!("{CHROMA_REL}/{}", e.path), h.clone());
            }
        }
        for s in &index.skipped {
            tracing::warn!(entry = %s, "chroma entry left out of the snapshot");
            warnings.push(format!("chroma_entry_skipped:{s}"));
        }
        for d in &stats.damaged_sources {
            warnings.push(format!("chroma_link_source_damaged:{d}"));
        }
        if !stats.changed.is_empty() {
            warnings.push("chroma_changed_during_copy".to_string());
        }
        linked = Some(stats.linked);
        chroma_changed = Some(stats.changed);
        let index_path = partial.join(crate::layout::INDEX_FILE);
        durable::write_json_atomic(&index_path, &index)?;
        hashes.insert(
            crate::layout::INDEX_FILE.to_string(),
            durable::sha256_file(&index_path)?,
        );
        chroma_index = Some(index);
    }
    let copy_ms = copy_started.elapsed().as_millis() as u64;
    if !(hooks.keep_going)() {
        return Err(Error::Cancelled("the backup"));
    }

    // --- validate: hash the database on one core while SQLite checks it on the other ---
    let validate_started = Instant::now();
    // The copy's fsync (I/O-bound) overlaps with the hashing and the integrity check
    // (CPU-bound); the snapshot is published only after all three are done.
    let (synced, db_hash, (problems, facts)) = std::thread::scope(|s| {
        let sync = s.spawn(|| durable::sync_path(&db_out));
        let h = s.spawn(|| durable::sha256_file(&db_out));
        let checked = db::check_file(&db_out);
        (
            sync.join()
                .unwrap_or_else(|_| Err(Error::Cancelled("the backup's fsync"))),
            h.join()
                .unwrap_or_else(|_| Err(Error::Cancelled("the backup's hashing"))),
            checked,
        )
    });
    synced?;
    hashes.insert(DB_REL.to_string(), db_hash?);
    let mut errors: Vec<String> = problems
        .iter()
        .map(|p| format!("db_integrity_check_failed:{p}"))
        .collect();
    let facts = facts.unwrap_or_default();
    if facts.page_count != outcome.page_count {
        errors.push("db_page_count_mismatch".into());
    }
    if !errors.is_empty() {
        return Err(Error::NewSnapshotInvalid(errors));
    }
    manifest::write(&partial, &hashes)?;
    let validate_ms = validate_started.elapsed().as_millis() as u64;

    let source = opts.source_paths.as_ref().unwrap_or(paths);
    let db_size = fs::metadata(&db_out)
        .map_err(Error::io("stat", &db_out))?
        .len();
    let meta = Metadata {
        stamp: stamp.to_string(),
        created_at: stamp.time().to_rfc3339_opts(SecondsFormat::Secs, true),
        backup_root: final_dir.display().to_string(),
        db_snapshot_path: final_dir.join(DB_REL).display().to_string(),
        db_size_bytes: db_size,
        registry_snapshot_path: registry_copied
            .then(|| final_dir.join(REGISTRY_REL).display().to_string()),
        chroma_snapshot_path: include_chroma
            .then(|| final_dir.join(CHROMA_REL).display().to_string()),
        include_chroma,
        kind: Some(opts.kind),
        format_version: Some(FORMAT_VERSION),
        tool: Some(Tool {
            name: "atocore-restore-job".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }),
        source: Some(Source {
            storage_root: source.storage_root.display().to_string(),
            db_path: source.db.display().to_string(),
            registry_path: source.registry.display().to_string(),
            chroma_path: source.chroma.display().to_string(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            build_sha: opts.build_sha.clone(),
        }),
        chroma_files: chroma_index.as_ref().map(Index::file_count),
        chroma_bytes: chroma_index.as_ref().map(Index::byte_count),
        chroma_quiesced,
        chroma_linked_files: linked,
        duration_ms: Some(started.elapsed().as_millis() as u64),
        copy_ms: Some(copy_ms),
        validate_ms: Some(validate_ms),
        validated_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        row_counts: Some(facts.row_counts),
        db_page_count: Some(facts.page_count),
        db_file: Some(FileAttrs {
            mode: live_db_meta.mode() & 0o7777,
            uid: live_db_meta.uid(),
            gid: live_db_meta.gid(),
        }),
        registry_file,
        warnings,
        chroma_consistent: chroma_changed.as_ref().map(Vec::is_empty),
        chroma_changed_paths: chroma_changed,
        extra: BTreeMap::new(),
    };
    durable::write_json_atomic(&partial.join(METADATA_FILE), &meta)?;
    for sub in ["db", "config"] {
        let d = partial.join(sub);
        if d.exists() {
            durable::sync_path(&d)?;
        }
    }
    durable::sync_path(&partial)?;

    // --- publish ---
    fs::rename(&partial, &final_dir).map_err(Error::io("publish", &final_dir))?;
    guard.armed = false;
    durable::sync_path(&snapshots)?;
    tracing::info!(
        stamp = %stamp,
        kind = opts.kind.as_str(),
        include_chroma,
        copy_ms,
        validate_ms,
        "snapshot published"
    );
    Ok(meta)
}

/// The newest published snapshot older than `before` that has a chroma index: its
/// index, its chroma folder and its stamp.
fn newest_chroma_index(paths: &Paths, before: &Stamp) -> Option<(Index, PathBuf, String)> {
    let mut stamps = published_stamps(paths).ok()?;
    stamps.retain(|s| s < before);
    stamps.into_iter().rev().find_map(|s| {
        let dir = paths.snapshot_dir(&s);
        let index: Index = durable::read_json(&dir.join(crate::layout::INDEX_FILE)).ok()??;
        Some((index, dir.join(CHROMA_REL), s.to_string()))
    })
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
    })
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
