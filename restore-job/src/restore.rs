//! `restore`: put a snapshot back into the live paths, crash-safely.
//!
//! Order (see docs/restore-algorithm.md for why each step is there):
//! 1. refusals that change nothing: bad stamp, no confirmation, unknown stamp, database
//!    still open elsewhere, another operation running, invalid snapshot;
//! 2. a `pre-restore` snapshot of the live state;
//! 3. the journal (`<backup_dir>/restore/journal.json`), then staging next to each
//!    destination: `.atocore.db.restore-tmp`, `.project-registry.json.restore-tmp`,
//!    `<chroma>/.atocore-restore/new/`, each checked against the manifest and fsynced;
//! 4. the swap: remove `-wal`/`-shm`/`-journal`, rename the staged database into place
//!    (rewrite in place on EBUSY/EXDEV), same for the registry; move live chroma entries
//!    aside and the staged ones in; fsync the folders;
//! 5. `integrity_check`, row counts and the chroma tree compared with the snapshot;
//! 6. clean-up, then the journal is removed.
//!
//! A crash anywhere after the journal is written is finished by the next `restore` or
//! `init`: every step from staging on is repeatable, so running it again from the start
//! ends in exactly the snapshot's state.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::chroma::{self, Index};
use crate::config::Paths;
use crate::db;
use crate::durable::{self, BackupLock};
use crate::error::{Error, ErrorBody, Result};
use crate::manifest;
use crate::metadata::{FileAttrs, Kind, Metadata};
use crate::snapshot::{self, BackupOptions, CHROMA_REL, DB_REL, Hooks, REGISTRY_REL};
use crate::stamp::Stamp;
use crate::validate;

/// Whether to restore chroma.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChromaChoice {
    /// Restore chroma when the snapshot has it.
    #[default]
    Auto,
    /// Restore chroma; refuse when the snapshot has none.
    Force,
    /// Leave live chroma alone.
    Skip,
}

impl ChromaChoice {
    /// From the sidecar's `include_chroma: bool-or-null`.
    pub fn from_option(v: Option<bool>) -> ChromaChoice {
        match v {
            None => ChromaChoice::Auto,
            Some(true) => ChromaChoice::Force,
            Some(false) => ChromaChoice::Skip,
        }
    }
}

/// What to restore and how.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The stamp as given by the user (validated here).
    pub stamp: String,
    pub confirmed_service_stopped: bool,
    pub pre_snapshot: bool,
    pub chroma: ChromaChoice,
    pub dry_run: bool,
    /// The caller fully validated this snapshot moments ago (the sidecar does, before
    /// it stops atocore): only the structural check runs here. Staging still checks
    /// every file against the manifest, so the bytes restored are the bytes validated.
    /// Ignored for snapshots without a manifest.
    pub prevalidated: bool,
}

/// What a dry run would do.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RestorePlan {
    pub snapshot: String,
    pub would_take_pre_restore_snapshot: bool,
    pub db: PathBuf,
    pub registry: Option<PathBuf>,
    pub chroma: Option<PathBuf>,
    pub validation_warnings: Vec<String>,
    pub interrupted_restore_to_finish: Option<String>,
}

/// The body of `restore` (field names fixed by the contract).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RestoreReport {
    pub stamp: String,
    pub pre_restore_snapshot: Option<String>,
    pub db_restored: bool,
    pub registry_restored: bool,
    pub chroma_restored: bool,
    pub restored_integrity_ok: bool,
    pub dry_run: bool,
    pub duration_ms: u64,
    /// An interrupted restore that this run finished first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_interrupted_restore: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RestorePlan>,
    /// Why the restore failed after it started (it then exits 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where a restore stands; written to the journal before each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Staging,
    Swapping,
    Verifying,
}

/// The restore journal, on the backups volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub stamp: String,
    pub pre_restore_snapshot: Option<String>,
    pub db: bool,
    pub registry: bool,
    pub chroma: bool,
    pub phase: Phase,
    /// Set once the swap has begun: from then on the live state may be a mix, and
    /// only finishing (or rolling back) the restore may remove the journal.
    #[serde(default)]
    pub swapped: bool,
    pub attempt: u32,
    pub started_at: String,
}

fn journal_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("journal.json")
}

/// The interrupted restore, if there is one.
pub fn pending_journal(paths: &Paths) -> Result<Option<Journal>> {
    durable::read_json(&journal_path(paths))
}

fn write_journal(paths: &Paths, j: &Journal) -> Result<()> {
    durable::create_dir_all(&paths.restore_dir())?;
    durable::write_json_atomic(&journal_path(paths), j)
}

/// Stamps that an interrupted restore or a pending request needs: prune keeps them.
pub fn referenced_stamps(paths: &Paths) -> HashSet<String> {
    let mut s = HashSet::new();
    if let Ok(Some(j)) = pending_journal(paths) {
        s.insert(j.stamp);
        s.extend(j.pre_restore_snapshot);
    }
    if let Ok(Some(r)) = crate::init::pending_request(paths) {
        s.insert(r.stamp);
    }
    s
}

/// Restore a snapshot (see the module docs for the steps and guarantees).
pub fn restore(paths: &Paths, opts: &RestoreOptions) -> Result<RestoreReport> {
    let started = Instant::now();
    let stamp = Stamp::parse(&opts.stamp)?;
    if !opts.confirmed_service_stopped {
        return Err(Error::NotConfirmed(stamp.to_string()));
    }
    let meta = match snapshot::metadata_of(paths, &stamp) {
        Ok(m) => Some(m),
        // A folder without readable metadata is an invalid snapshot, not an unknown one.
        Err(Error::InvalidSnapshot { .. }) => None,
        Err(e) => return Err(e),
    };
    if db::open_elsewhere(&paths.db)? {
        return Err(Error::DatabaseInUse(paths.db.clone()));
    }
    let _lock = BackupLock::acquire(&paths.backup_dir)?;

    // An interrupted restore is finished before anything else happens.
    let pending = pending_journal(paths)?;
    let mut recovered = None;
    if let Some(j) = &pending
        && !opts.dry_run
    {
        let done = finish(paths, j.clone())?;
        recovered = Some(done.stamp.clone());
        if done.stamp == stamp.as_str() {
            return Ok(RestoreReport {
                duration_ms: started.elapsed().as_millis() as u64,
                recovered_interrupted_restore: recovered,
                ..done
            });
        }
    }

    let snap_dir = paths.snapshot_dir(&stamp);
    let report = if opts.prevalidated && snap_dir.join(manifest::MANIFEST_FILE).is_file() {
        let (_, errors) = validate::quick(&snap_dir);
        validate::ValidationReport {
            stamp: stamp.to_string(),
            valid: errors.is_empty(),
            errors,
            warnings: vec!["prevalidated_by_caller".into()],
        }
    } else {
        validate::validate(paths, &stamp)?
    };
    let Some(meta) = meta.filter(|_| report.valid) else {
        return Err(Error::InvalidSnapshot {
            stamp: stamp.to_string(),
            codes: report.errors,
        });
    };
    let chroma = match opts.chroma {
        ChromaChoice::Auto => meta.has_chroma(),
        ChromaChoice::Skip => false,
        ChromaChoice::Force if meta.has_chroma() => true,
        ChromaChoice::Force => {
            return Err(Error::Usage(format!(
                "--chroma: snapshot `{stamp}` has no chroma copy; restore without --chroma or pick a snapshot taken with --include-chroma"
            )));
        }
    };
    let registry = meta.has_registry();
    let take_pre = opts.pre_snapshot && paths.db.is_file();

    if opts.dry_run {
        return Ok(RestoreReport {
            stamp: stamp.to_string(),
            pre_restore_snapshot: None,
            db_restored: false,
            registry_restored: false,
            chroma_restored: false,
            restored_integrity_ok: false,
            dry_run: true,
            duration_ms: started.elapsed().as_millis() as u64,
            recovered_interrupted_restore: None,
            error: None,
            plan: Some(RestorePlan {
                snapshot: paths.snapshot_dir(&stamp).display().to_string(),
                would_take_pre_restore_snapshot: take_pre,
                db: paths.db.clone(),
                registry: registry.then(|| paths.registry.clone()),
                chroma: chroma.then(|| paths.chroma.clone()),
                validation_warnings: report.warnings,
                interrupted_restore_to_finish: pending.map(|j| j.stamp),
            }),
            warnings: Vec::new(),
        });
    }

    let mut warnings = Vec::new();
    let pre = if take_pre {
        let m = snapshot::backup_locked(
            paths,
            &BackupOptions {
                include_chroma: chroma && paths.chroma.is_dir(),
                kind: Kind::PreRestore,
                ..BackupOptions::default()
            },
            Hooks::default(),
        )?;
        Some(m.stamp)
    } else {
        if opts.pre_snapshot {
            warnings.push("no_live_database_so_no_pre_restore_snapshot".to_string());
        }
        None
    };
    let journal = Journal {
        stamp: stamp.to_string(),
        pre_restore_snapshot: pre,
        db: true,
        registry,
        chroma,
        phase: Phase::Staging,
        swapped: false,
        attempt: 1,
        started_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    write_journal(paths, &journal)?;
    let pre = journal.pre_restore_snapshot.clone();
    let mut done = match execute(paths, journal, &meta) {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(stamp = %stamp, cause = %e, "restore failed");
            RestoreReport {
                stamp: stamp.to_string(),
                pre_restore_snapshot: pre,
                db_restored: false,
                registry_restored: false,
                chroma_restored: false,
                restored_integrity_ok: false,
                dry_run: false,
                duration_ms: 0,
                recovered_interrupted_restore: None,
                plan: None,
                error: Some(ErrorBody::from(&e)),
                warnings: Vec::new(),
            }
        }
    };
    done.duration_ms = started.elapsed().as_millis() as u64;
    done.recovered_interrupted_restore = recovered;
    done.warnings.extend(warnings);
    if !done.restored_integrity_ok && done.error.is_none() {
        done.error = Some(ErrorBody {
            error: "restored_integrity_check_failed".into(),
            message: format!(
                "the database restored from `{stamp}` failed its checks; restore the pre-restore snapshot"
            ),
        });
    }
    Ok(done)
}

/// Finish the interrupted restore `j` (the lock is held by the caller). When its
/// snapshot is no longer valid, fall back to its pre-restore snapshot.
pub(crate) fn finish(paths: &Paths, mut j: Journal) -> Result<RestoreReport> {
    tracing::warn!(stamp = %j.stamp, phase = ?j.phase, "finishing an interrupted restore");
    let target = Stamp::parse(&j.stamp)?;
    let report = validate::validate(paths, &target)?;
    if !report.valid {
        let Some(pre) = j.pre_restore_snapshot.clone() else {
            return Err(Error::RestoreFailed {
                stamp: j.stamp.clone(),
                why: format!(
                    "an interrupted restore cannot be finished: the snapshot is now invalid ({}) and there is no pre-restore snapshot; restore another snapshot by hand",
                    report.errors.join(", ")
                ),
            });
        };
        tracing::warn!(stamp = %j.stamp, rollback_to = %pre, "snapshot of the interrupted restore is invalid now; rolling back");
        j.stamp = pre;
        j.pre_restore_snapshot = None;
    }
    let target = Stamp::parse(&j.stamp)?;
    let meta = snapshot::metadata_of(paths, &target)?;
    j.attempt += 1;
    execute(paths, j, &meta)
}

/// Test hook: when `ATOCORE_RESTORE_JOB_CRASH_AT` names this point, the process kills
/// itself with SIGKILL here, so tests can crash a restore at exact moments. Unset in
/// production, it costs one environment lookup per point.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("ATOCORE_RESTORE_JOB_CRASH_AT").is_ok_and(|v| v == name) {
        tracing::warn!(
            point = name,
            "crash point reached: killing this process (test hook)"
        );
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

fn restore_tmp(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.restore-tmp"))
}

/// Steps 3 to 6, repeatable from the start after a crash.
fn execute(paths: &Paths, mut j: Journal, meta: &Metadata) -> Result<RestoreReport> {
    let stamp = j.stamp.clone();
    let snap = paths.snapshot_dir(&Stamp::parse(&stamp)?);
    let fail = |why: String| Error::RestoreFailed {
        stamp: stamp.clone(),
        why,
    };
    let hashes = match manifest::read(&snap)? {
        Some(Ok(m)) => Some(m),
        _ => None,
    };

    // --- stage ---
    j.phase = Phase::Staging;
    write_journal(paths, &j)?;
    crash_point("after-journal");
    let db_tmp = restore_tmp(&paths.db);
    let reg_tmp = restore_tmp(&paths.registry);
    let staging = paths.chroma.join(chroma::STAGING_DIR);
    let staged = stage_all(
        paths,
        &j,
        &snap,
        meta,
        hashes.as_ref(),
        &db_tmp,
        &reg_tmp,
        &staging,
    );
    let index = match staged {
        Ok(index) => index,
        Err(e) => {
            if !j.swapped {
                // Nothing live was touched: leave no trace but the error.
                let _ = fs::remove_file(&db_tmp);
                let _ = fs::remove_file(&reg_tmp);
                let _ = fs::remove_dir_all(&staging);
                remove_if_exists(&journal_path(paths))?;
            }
            return Err(fail(e.to_string()));
        }
    };

    // --- swap ---
    j.phase = Phase::Swapping;
    j.swapped = true;
    write_journal(paths, &j)?;
    crash_point("before-swap");
    for f in db::sidecar_files(&paths.db) {
        remove_if_exists(&f)?;
    }
    durable::sync_parent(&paths.db)?;
    crash_point("after-wal-removed");
    swap_file(&db_tmp, &paths.db)?;
    crash_point("after-db-swap");
    if j.registry {
        swap_file(&reg_tmp, &paths.registry)?;
    }
    if let Some(index) = &index {
        let aside = free_aside(&staging, j.attempt);
        chroma::swap(&paths.chroma, &staging.join("new"), &aside, &index.root)?;
    }

    // --- verify ---
    j.phase = Phase::Verifying;
    write_journal(paths, &j)?;
    crash_point("before-verify");
    let (problems, facts) = db::check_file(&paths.db);
    let mut integrity_ok = problems.is_empty();
    if let (Some(f), Some(want)) = (&facts, &meta.row_counts) {
        integrity_ok &= want.iter().all(|(t, n)| f.row_counts.get(t) == Some(n));
    }
    if facts.is_none() {
        integrity_ok = false;
    }
    let mut warnings = Vec::new();
    if let Some(index) = &index {
        let diffs = chroma::differences(&paths.chroma, index)?;
        if !diffs.is_empty() {
            integrity_ok = false;
            warnings.extend(diffs.into_iter().map(|d| format!("chroma_{d}")));
        }
    }
    if !problems.is_empty() {
        warnings.extend(
            problems
                .into_iter()
                .map(|p| format!("integrity_check: {p}")),
        );
    }

    // --- clean up ---
    crash_point("before-cleanup");
    if integrity_ok && staging.exists() {
        fs::remove_dir_all(&staging).map_err(Error::io("remove staging", &staging))?;
        durable::sync_path(&paths.chroma)?;
    }
    let done = j;
    remove_if_exists(&journal_path(paths))?;
    durable::sync_path(&paths.restore_dir())?;
    tracing::info!(stamp = %done.stamp, integrity_ok, "restore finished");
    Ok(RestoreReport {
        stamp: done.stamp,
        pre_restore_snapshot: done.pre_restore_snapshot,
        db_restored: true,
        registry_restored: done.registry,
        chroma_restored: done.chroma,
        restored_integrity_ok: integrity_ok,
        dry_run: false,
        duration_ms: 0,
        recovered_interrupted_restore: None,
        plan: None,
        error: None,
        warnings,
    })
}

/// Stage every part of the snapshot beside its destination; returns the chroma index
/// when chroma is restored.
#[allow(clippy::too_many_arguments)]
fn stage_all(
    paths: &Paths,
    j: &Journal,
    snap: &Path,
    meta: &Metadata,
    hashes: Option<&manifest::Manifest>,
    db_tmp: &Path,
    reg_tmp: &Path,
    staging: &Path,
) -> Result<Option<Index>> {
    stage_file(
        &snap.join(DB_REL),
        &paths.db,
        db_tmp,
        hashes.and_then(|h| h.get(DB_REL)),
        meta.db_file,
    )?;
    crash_point("mid-stage");
    if j.registry {
        stage_file(
            &snap.join(REGISTRY_REL),
            &paths.registry,
            reg_tmp,
            hashes.and_then(|h| h.get(REGISTRY_REL)),
            meta.registry_file,
        )?;
    }
    if !j.chroma {
        return Ok(None);
    }
    let snap_chroma = snap.join(CHROMA_REL);
    let index_path = snap.join(chroma::INDEX_FILE);
    if let Some(want) = hashes.and_then(|h| h.get(chroma::INDEX_FILE))
        && &durable::sha256_file(&index_path)? != want
    {
        return Err(Error::Usage(format!(
            "{} does not match its manifest hash: the snapshot was damaged after validation; pick another snapshot",
            index_path.display()
        )));
    }
    let index = match durable::read_json::<Index>(&index_path)? {
        Some(i) => i,
        // A legacy snapshot has no index: its tree is the index (no hashes to check).
        None => chroma::scan(&snap_chroma)?,
    };
    durable::create_dir_all(staging)?;
    chroma::stage(&snap_chroma, &index, &staging.join("new"))?;
    Ok(Some(index))
}

/// Copy a snapshot file out to `tmp` beside `dest`, check it against the manifest,
/// give it the live file's (or the recorded) mode and owner, fsync.
fn stage_file(
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
        return Err(Error::Usage(format!(
            "{} does not match its manifest hash: the snapshot was damaged after validation; pick another snapshot",
            src.display()
        )));
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

/// Rename the staged file over `dest`; where `dest` is a mount point (EBUSY) or on
/// another file system (EXDEV), rewrite its content in place instead.
fn swap_file(tmp: &Path, dest: &Path) -> Result<()> {
    match fs::rename(tmp, dest) {
        Ok(()) => {}
        Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV)) => {
            tracing::info!(path = %dest.display(), cause = %e, "destination is a mount point; rewriting it in place");
            durable::rewrite_in_place(tmp, dest)?;
            fs::remove_file(tmp).map_err(Error::io("remove", tmp))?;
        }
        Err(e) => return Err(Error::io("move into place", dest)(e)),
    }
    durable::sync_parent(dest)
}

fn free_aside(staging: &Path, attempt: u32) -> PathBuf {
    let mut n = attempt;
    loop {
        let p = staging.join(format!("old-{n}"));
        if !p.exists() {
            return p;
        }
        n += 1;
    }
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p)(e)),
    }
}
