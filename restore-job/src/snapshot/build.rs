//! Building one snapshot, step by step: a fresh stamp and its hidden partial folder,
//! the database copy, the registry copy, the chroma copy, the database check, the
//! manifest and metadata, then the publishing rename. Any step that fails drops the
//! partial folder; nothing is published until every step has passed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};

use crate::chroma::{self, Index};
use crate::config::Paths;
use crate::db;
use crate::durable;
use crate::error::{Error, Result};
use crate::layout::{self, CHROMA_REL, DB_REL, INDEX_FILE, METADATA_FILE, REGISTRY_REL};
use crate::manifest::{self, Manifest};
use crate::metadata::{FORMAT_VERSION, FileAttrs, Kind, Metadata, Source, Tool};
use crate::stamp::Stamp;

use super::{BackupHooks, BackupOptions, Quiesce, published_stamps, remove_stale_partials};

/// Take a snapshot with the backups lock already held by the caller.
pub(crate) fn backup_locked(
    paths: &Paths,
    opts: &BackupOptions,
    mut hooks: BackupHooks<'_>,
) -> Result<Metadata> {
    let started = Instant::now();
    let mut b = Build::start(paths, true)?;
    let copy_started = Instant::now();
    let db = b.copy_database(opts, &hooks)?;
    let registry_file = b.copy_registry()?;
    let chroma = b.copy_chroma(opts, &mut hooks)?;
    let copy_ms = copy_started.elapsed().as_millis() as u64;
    if !(hooks.keep_going)() {
        return Err(Error::Cancelled("the backup"));
    }
    let validate_started = Instant::now();
    let facts = b.check_database(&db)?;
    manifest::write(&b.partial, &b.hashes)?;
    let validate_ms = validate_started.elapsed().as_millis() as u64;

    let source = opts.source_paths.as_ref().unwrap_or(paths);
    let head = b.metadata_head(
        opts.kind,
        db.size,
        registry_file.is_some(),
        chroma.is_some(),
    );
    let meta = Metadata {
        source: Some(Source {
            storage_root: source.storage_root.display().to_string(),
            db_path: source.db.display().to_string(),
            registry_path: source.registry.display().to_string(),
            chroma_path: source.chroma.display().to_string(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            build_sha: opts.build_sha.clone(),
        }),
        chroma_files: chroma.as_ref().map(|c| c.index.file_count()),
        chroma_bytes: chroma.as_ref().map(|c| c.index.byte_count()),
        chroma_quiesced: chroma.as_ref().map(|c| c.quiesced),
        chroma_linked_files: chroma.as_ref().map(|c| c.linked),
        duration_ms: Some(started.elapsed().as_millis() as u64),
        copy_ms: Some(copy_ms),
        validate_ms: Some(validate_ms),
        row_counts: Some(facts.row_counts),
        db_page_count: Some(facts.page_count),
        db_file: Some(db.attrs),
        registry_file,
        warnings: std::mem::take(&mut b.warnings),
        chroma_consistent: chroma.as_ref().map(|c| c.changed.is_empty()),
        chroma_changed_paths: chroma.map(|c| c.changed),
        wal: db.wal,
        ..head
    };
    b.publish(&meta, opts, copy_ms, validate_ms)?;
    Ok(meta)
}

/// A snapshot under construction in its hidden partial folder.
struct Build<'a> {
    paths: &'a Paths,
    stamp: Stamp,
    partial: PathBuf,
    /// Removes the partial folder unless the snapshot was published.
    guard: durable::PartialDir,
    hashes: Manifest,
    warnings: Vec<String>,
}

/// The database copy.
struct DbCopy {
    out: PathBuf,
    /// Pages the online backup copied (checked against the copy).
    page_count: u64,
    /// The live file's mode and owner.
    attrs: FileAttrs,
    size: u64,
    wal: Option<crate::metadata::SnapshotWal>,
}

/// The chroma copy.
struct ChromaCopy {
    index: Index,
    quiesced: bool,
    linked: u64,
    changed: Vec<String>,
}

impl<'a> Build<'a> {
    /// A stamp nobody has (published or in the making) and its partial folder;
    /// `from_live`: the snapshot copies the live database, which must exist.
    fn start(paths: &'a Paths, from_live: bool) -> Result<Build<'a>> {
        if from_live && !paths.db.is_file() {
            return Err(Error::MissingDatabase(paths.db.clone()));
        }
        let snapshots = paths.snapshots_dir();
        durable::create_dir_all(&snapshots)?;
        remove_stale_partials(paths)?;
        let mut stamp = Stamp::from_time(Utc::now());
        while snapshots.join(stamp.as_str()).exists()
            || layout::partial_dir(&snapshots, stamp.as_str()).exists()
        {
            stamp = stamp.next();
        }
        let partial = layout::partial_dir(&snapshots, stamp.as_str());
        fs::create_dir(&partial).map_err(Error::io("create", &partial))?;
        Ok(Build {
            paths,
            stamp,
            guard: durable::PartialDir::guard(&partial),
            partial,
            hashes: Manifest::new(),
            warnings: Vec::new(),
        })
    }

    fn final_dir(&self) -> PathBuf {
        self.paths.snapshots_dir().join(self.stamp.as_str())
    }

    /// The metadata fields that say what this snapshot is and where its parts are
    /// (the rest default; the caller fills what it knows).
    fn metadata_head(&self, kind: Kind, db_size: u64, registry: bool, chroma: bool) -> Metadata {
        let dir = self.final_dir();
        let at = |rel: &str| dir.join(rel).display().to_string();
        Metadata {
            stamp: self.stamp.to_string(),
            created_at: self.stamp.time().to_rfc3339_opts(SecondsFormat::Secs, true),
            backup_root: dir.display().to_string(),
            db_snapshot_path: at(DB_REL),
            db_size_bytes: db_size,
            registry_snapshot_path: registry.then(|| at(REGISTRY_REL)),
            chroma_snapshot_path: chroma.then(|| at(CHROMA_REL)),
            include_chroma: chroma,
            kind: Some(kind),
            format_version: Some(FORMAT_VERSION),
            tool: Some(Tool {
                name: "atocore-restore-job".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            }),
            validated_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            ..Metadata::default()
        }
    }

    /// The online SQLite backup (a busy writer cannot livelock it).
    fn copy_database(&mut self, opts: &BackupOptions, hooks: &BackupHooks<'_>) -> Result<DbCopy> {
        let live = &self.paths.db;
        durable::create_dir_all(&self.partial.join("db"))?;
        let out = self.partial.join(DB_REL);
        let m = fs::metadata(live).map_err(Error::io("stat", live))?;
        let outcome = match std::env::var("ATOCORE_BACKUP_METHOD").as_deref() {
            Ok("sqlite-backup") => db::online_backup(live, &out, opts.timeout, hooks.keep_going)?,
            _ => db::copy_at_pin(live, &out, opts.timeout, hooks.keep_going)?,
        };
        let size = fs::metadata(&out).map_err(Error::io("stat", &out))?.len();
        Ok(DbCopy {
            out,
            page_count: outcome.page_count,
            attrs: FileAttrs {
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
            },
            size,
            wal: outcome.wal,
        })
    }

    /// The registry, read once: copied, then the copy is checked. Missing or not
    /// JSON: left out with a warning (the database is still backed up).
    fn copy_registry(&mut self) -> Result<Option<FileAttrs>> {
        let live = &self.paths.registry;
        let m = match fs::metadata(live) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %live.display(), "there is no live registry; the snapshot has none");
                self.warnings.push("registry_missing".to_string());
                return Ok(None);
            }
            Err(e) => return Err(Error::io("stat", live)(e)),
            Ok(m) => m,
        };
        let dir = self.partial.join("config");
        durable::create_dir_all(&dir)?;
        let out = self.partial.join(REGISTRY_REL);
        let c = durable::copy_file_hashed(live, &out)?;
        let parses = fs::read(&out)
            .map(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok())
            .map_err(Error::io("read", &out))?;
        if !parses {
            tracing::warn!(path = %live.display(), "the live registry is not valid JSON; it is left out of this snapshot");
            self.warnings
                .push("registry_invalid_json_skipped".to_string());
            fs::remove_file(&out).map_err(Error::io("remove", &out))?;
            fs::remove_dir(&dir).map_err(Error::io("remove", &dir))?;
            return Ok(None);
        }
        self.hashes.insert(REGISTRY_REL.to_string(), c.sha256);
        Ok(Some(FileAttrs {
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        }))
    }

    /// The chroma tree, with its writers paused when the caller can, unchanged files
    /// linked from the newest earlier chroma snapshot. A missing chroma folder costs
    /// the chroma copy, never the database's.
    fn copy_chroma(
        &mut self,
        opts: &BackupOptions,
        hooks: &mut BackupHooks<'_>,
    ) -> Result<Option<ChromaCopy>> {
        if !opts.include_chroma {
            return Ok(None);
        }
        let live = &self.paths.chroma;
        if !live.is_dir() {
            tracing::warn!(path = %live.display(), "--include-chroma: the chroma directory does not exist (or is not a folder); the snapshot has no chroma copy");
            self.warnings.push("chroma_missing".to_string());
            return Ok(None);
        }
        let previous = newest_chroma_index(self.paths, &self.stamp);
        let prev_ref = previous.as_ref().map(|(i, d, s)| chroma::Previous {
            index: i,
            dir: d.as_path(),
            stamp: s.as_str(),
        });
        let quiesced = match hooks.quiesce.as_mut() {
            Some(q) => q.pause(),
            None => false,
        };
        if !quiesced {
            self.warnings.push("chroma_not_quiesced".to_string());
        }
        let result = {
            let _resume = Resume(if quiesced {
                hooks.quiesce.as_mut()
            } else {
                None
            });
            chroma::snapshot_copy(
                live,
                &self.partial.join(CHROMA_REL),
                prev_ref,
                hooks.keep_going,
            )
        };
        let (index, stats) = result?;
        for e in &index.entries {
            if let Some(h) = &e.sha256 {
                self.hashes
                    .insert(format!("{CHROMA_REL}/{}", e.path), h.clone());
            }
        }
        for s in &index.skipped {
            tracing::warn!(entry = %s, "chroma entry left out of the snapshot");
            self.warnings.push(format!("chroma_entry_skipped:{s}"));
        }
        for d in &stats.damaged_sources {
            self.warnings
                .push(format!("chroma_link_source_damaged:{d}"));
        }
        if !stats.changed.is_empty() {
            self.warnings.push("chroma_changed_during_copy".to_string());
        }
        let index_path = self.partial.join(INDEX_FILE);
        durable::write_json_atomic(&index_path, &index)?;
        self.hashes
            .insert(INDEX_FILE.to_string(), durable::sha256_file(&index_path)?);
        Ok(Some(ChromaCopy {
            index,
            quiesced,
            linked: stats.linked,
            changed: stats.changed,
        }))
    }

    /// fsync, hash and `integrity_check` the database copy at once (I/O on one side,
    /// CPU on two cores), and compare its page count with the backup's.
    fn check_database(&mut self, db: &DbCopy) -> Result<db::DbFacts> {
        let out = &db.out;
        let (synced, db_hash, (problems, facts)) = std::thread::scope(|s| {
            let sync = s.spawn(|| durable::sync_path(out));
            let h = s.spawn(|| durable::sha256_file(out));
            let checked = db::check_file(out);
            (
                sync.join()
                    .unwrap_or_else(|_| Err(Error::Cancelled("the backup's fsync"))),
                h.join()
                    .unwrap_or_else(|_| Err(Error::Cancelled("the backup's hashing"))),
                checked,
            )
        });
        synced?;
        self.hashes.insert(DB_REL.to_string(), db_hash?);
        let mut errors: Vec<String> = problems
            .iter()
            .map(|p| format!("db_integrity_check_failed:{p}"))
            .collect();
        let facts = facts.unwrap_or_default();
        if facts.page_count != db.page_count {
            errors.push("db_page_count_mismatch".into());
        }
        if !errors.is_empty() {
            return Err(Error::NewSnapshotInvalid(errors));
        }
        Ok(facts)
    }

    /// Write the metadata, fsync the folders, rename the partial folder to its stamp.
    fn publish(
        mut self,
        meta: &Metadata,
        opts: &BackupOptions,
        copy_ms: u64,
        validate_ms: u64,
    ) -> Result<()> {
        durable::write_json_atomic(&self.partial.join(METADATA_FILE), meta)?;
        for sub in ["db", "config"] {
            let d = self.partial.join(sub);
            if d.exists() {
                durable::sync_path(&d)?;
            }
        }
        durable::sync_path(&self.partial)?;
        let final_dir = self.final_dir();
        fs::rename(&self.partial, &final_dir).map_err(Error::io("publish", &final_dir))?;
        self.guard.published();
        durable::sync_path(&self.paths.snapshots_dir())?;
        tracing::info!(
            stamp = %self.stamp,
            kind = opts.kind.as_str(),
            include_chroma = meta.include_chroma,
            copy_ms,
            validate_ms,
            "snapshot published"
        );
        Ok(())
    }
}

/// The newest published snapshot older than `before` that has a chroma index: its
/// index, its chroma folder and its stamp.
fn newest_chroma_index(paths: &Paths, before: &Stamp) -> Option<(Index, PathBuf, String)> {
    let mut stamps = published_stamps(paths).ok()?;
    stamps.retain(|s| s < before);
    stamps.into_iter().rev().find_map(|s| {
        let dir = paths.snapshot_dir(&s);
        let index: Index = durable::read_json(&dir.join(INDEX_FILE)).ok()??;
        Some((index, dir.join(CHROMA_REL), s.to_string()))
    })
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

/// Build a snapshot whose database is made by `make_db` from a copy of `base`'s, with
/// `base`'s registry and chroma (hard links: published snapshot files never change),
/// checked like every other snapshot and published as `point-in-time`. The backups
/// lock must be held.
pub(crate) fn derive_locked(
    paths: &Paths,
    base_stamp: &Stamp,
    mut info: crate::metadata::PointInTime,
    make_db: &dyn Fn(&std::path::Path) -> Result<u64>,
) -> Result<Metadata> {
    let started = Instant::now();
    let base_dir = paths.snapshot_dir(base_stamp);
    let base = super::metadata_of(paths, base_stamp)?;
    let base_manifest = match manifest::read(&base_dir)? {
        Some(Ok(m)) => m,
        _ => {
            return Err(Error::InvalidSnapshot {
                stamp: base_stamp.to_string(),
                codes: vec!["manifest_missing_or_invalid".into()],
            });
        }
    };
    // Made from a snapshot, not from the live files (which may not exist: a new host).
    let mut b = Build::start(paths, false)?;
    durable::create_dir_all(&b.partial.join("db"))?;
    let out = b.partial.join(DB_REL);
    fs::copy(base_dir.join(DB_REL), &out).map_err(Error::io("copy", base_dir.join(DB_REL)))?;
    info.frames_replayed = make_db(&out)?;
    let copy_ms = started.elapsed().as_millis() as u64;
    // Everything else is the base's, byte for byte: link it and take its hashes.
    for (rel, hash) in &base_manifest {
        if rel == DB_REL {
            continue;
        }
        let (from, to) = (base_dir.join(rel), b.partial.join(rel));
        if let Some(parent) = to.parent() {
            durable::create_dir_all(parent)?;
        }
        fs::hard_link(&from, &to)
            .or_else(|_| fs::copy(&from, &to).map(|_| ()))
            .map_err(Error::io("link", &from))?;
        b.hashes.insert(rel.clone(), hash.clone());
    }
    if base.has_chroma() {
        link_empty_dirs(&base_dir.join(CHROMA_REL), &b.partial.join(CHROMA_REL))?;
    }
    let size = fs::metadata(&out).map_err(Error::io("stat", &out))?.len();
    let (problems, facts) = db::check_file(&out);
    let facts = match facts {
        Some(f) if problems.is_empty() => f,
        _ => {
            return Err(Error::NewSnapshotInvalid(
                problems
                    .iter()
                    .map(|p| format!("db_integrity_check_failed:{p}"))
                    .collect(),
            ));
        }
    };
    durable::sync_path(&out)?;
    b.hashes
        .insert(DB_REL.to_string(), durable::sha256_file(&out)?);
    manifest::write(&b.partial, &b.hashes)?;
    // The base's registry, chroma and provenance; this snapshot's database and facts.
    let head = b.metadata_head(
        Kind::PointInTime,
        size,
        base.has_registry(),
        base.has_chroma(),
    );
    let meta = Metadata {
        source: base.source,
        chroma_files: base.chroma_files,
        chroma_bytes: base.chroma_bytes,
        chroma_quiesced: base.chroma_quiesced,
        chroma_linked_files: base.chroma_linked_files,
        chroma_consistent: base.chroma_consistent,
        chroma_changed_paths: base.chroma_changed_paths,
        db_file: base.db_file,
        registry_file: base.registry_file,
        validate_ms: base.validate_ms,
        extra: base.extra,
        duration_ms: Some(started.elapsed().as_millis() as u64),
        copy_ms: Some(copy_ms),
        row_counts: Some(facts.row_counts),
        db_page_count: Some(facts.page_count),
        point_in_time: Some(info),
        ..head
    };
    let opts = BackupOptions {
        kind: Kind::PointInTime,
        ..BackupOptions::default()
    };
    b.publish(&meta, &opts, copy_ms, 0)?;
    Ok(meta)
}

/// Recreate the empty folders of a chroma tree (files are linked by the manifest walk).
fn link_empty_dirs(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    durable::create_dir_all(to)?;
    for e in fs::read_dir(from).map_err(Error::io("list", from))? {
        let e = e.map_err(Error::io("list", from))?;
        if e.file_type().map_err(Error::io("stat", e.path()))?.is_dir() {
            link_empty_dirs(&e.path(), &to.join(e.file_name()))?;
        }
    }
    Ok(())
}
