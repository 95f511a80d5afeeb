//! `restore`: put a snapshot back into the live paths, crash-safely, with as little of
//! the work as possible done while the service is down.
//!
//! Phases (see docs/restore-algorithm.md for why each is there):
//! 1. **Refusals** that change nothing: bad stamp, no confirmation, unknown stamp,
//!    database still open elsewhere, another operation running, invalid snapshot.
//! 2. **Stage** next to each destination: `.atocore.db.restore-tmp`,
//!    `.project-registry.json.restore-tmp`, `<chroma>/.atocore-restore/new/`; every file
//!    checked against the manifest, the staged database `integrity_check`ed and its rows
//!    counted, all fsynced. [`prepare`] does this ahead of time, while atocore still
//!    runs (it only creates hidden files); the restore then reuses it.
//! 3. **Aside**: the live database (with its `-wal`/`-journal`), registry and chroma
//!    entries are *renamed* aside (`.atocore.db.aside`, `.project-registry.json.aside`,
//!    `<chroma>/.atocore-restore/aside/`): the safety copy of the live state, made in
//!    milliseconds and recorded in `<backup_dir>/restore/aside.json`.
//! 4. **Swap in**: the staged files are renamed into place (rewritten in place where the
//!    destination is a mount point: EBUSY/EXDEV); staged chroma entries are moved in.
//! 5. **Verify**: the live database is the very file checked in step 2 (same inode), or
//!    it is checked again in full after an in-place rewrite; the chroma tree equals the
//!    snapshot's index.
//! 6. **Finalize** ([`finalize`]): the aside copy becomes a published `pre-restore`
//!    snapshot (through SQLite, so its WAL is replayed), then it is deleted. A caller that
//!    wants the service back first (the sidecar) defers this and calls it afterwards.
//!
//! The journal (`<backup_dir>/restore/journal.json`) is written before step 3; a crash at
//! any moment after it is finished by the next `restore` or `init`, which repeats the
//! steps idempotently and ends in exactly the snapshot's state with the aside copy intact.

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
#[derive(Debug, Clone, Default)]
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
    /// Leave the aside copy for the caller to turn into the pre-restore snapshot with
    /// [`finalize`] once the service is back (the report then says
    /// `pre_restore_pending: true`).
    pub defer_pre_snapshot: bool,
}

/// What a dry run would do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RestorePlan {
    pub snapshot: String,
    pub would_take_pre_restore_snapshot: bool,
    pub db: PathBuf,
    pub registry: Option<PathBuf>,
    pub chroma: Option<PathBuf>,
    pub validation_warnings: Vec<String>,
    pub interrupted_restore_to_finish: Option<String>,
    pub staged_ahead: bool,
}

/// The body of `restore` (the first eight field names are fixed by the contract).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct RestoreReport {
    pub stamp: String,
    pub pre_restore_snapshot: Option<String>,
    pub db_restored: bool,
    pub registry_restored: bool,
    pub chroma_restored: bool,
    pub restored_integrity_ok: bool,
    pub dry_run: bool,
    pub duration_ms: u64,
    /// The live state was moved aside and its pre-restore snapshot is still to be made
    /// by [`finalize`] (deferred restores only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pre_restore_pending: bool,
    /// Staging had been done ahead by [`prepare`].
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub staged_ahead: bool,
    /// An interrupted restore that this run finished first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_interrupted_restore: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<RestorePlan>,
    /// Why the restore failed after it started (it then exits 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Folders that keep the live state from before the restore because its
    /// pre-restore snapshot could not be made (the warnings say why).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_restore_kept: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where a restore stands; written to the journal before each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Staging,
    Aside,
    SwapIn,
    Verifying,
}

/// The restore journal, on the backups volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// Identifies this restore (and its aside copy).
    pub id: String,
    pub stamp: String,
    pub db: bool,
    pub registry: bool,
    pub chroma: bool,
    pub phase: Phase,
    pub pre_snapshot: bool,
    pub attempt: u32,
    pub started_at: String,
}

/// The live state moved aside by a restore, until [`finalize`] has made it a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aside {
    pub restore_id: String,
    /// The stamp that was restored over it.
    pub restored_stamp: String,
    /// Turn it into a `pre-restore` snapshot (false with `--no-pre-snapshot`: deleted).
    pub make_snapshot: bool,
    pub db: PathBuf,
    pub registry: PathBuf,
    pub chroma: Option<PathBuf>,
    /// Set once the snapshot is published, before the aside files are deleted.
    #[serde(default)]
    pub snapshot: Option<String>,
    pub created_at: String,
    /// Set when no snapshot could be made and the files are being moved into the
    /// kept folders (so a rerun after a crash goes on keeping, never deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

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

/// Name prefix of the folders (beside the database, beside the registry, and in the
/// chroma staging area) that keep a set-aside live state that could not be made into
/// a pre-restore snapshot, followed by the restore's id.
pub const KEPT_PREFIX: &str = "atocore-pre-restore-kept-";
/// Name prefix of the folders that receive unexpected leftovers found where a restore
/// wants to set the live state aside (never deleted, never overwritten).
pub const LEFTOVER_PREFIX: &str = "atocore-restore-leftover-";

/// What [`prepare`] left ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Staged {
    pub stamp: String,
    pub registry: bool,
    pub chroma: bool,
    pub db_inode: u64,
    pub db_size: u64,
    /// The staged database's mtime when it was checked: a later write shows here.
    #[serde(default)]
    pub db_mtime_ns: i128,
    pub prepared_at: String,
}

fn journal_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("journal.json")
}

fn aside_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("aside.json")
}

fn staged_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("staged.json")
}

/// Refuse with [`Error::RestorePending`] while a restore journal exists: the live
/// files are then half swapped, and a snapshot of them would be published as valid.
pub(crate) fn refuse_while_restoring(paths: &Paths) -> Result<()> {
    if journal_path(paths).exists() {
        return Err(Error::RestorePending(journal_path(paths)));
    }
    Ok(())
}

/// The interrupted restore, if there is one.
pub fn pending_journal(paths: &Paths) -> Result<Option<Journal>> {
    durable::read_json(&journal_path(paths))
}

/// The aside copy waiting for [`finalize`], if there is one.
pub fn pending_aside(paths: &Paths) -> Result<Option<Aside>> {
    durable::read_json(&aside_path(paths))
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
    }
    if let Ok(Some(r)) = crate::init::pending_request(paths) {
        s.insert(r.stamp);
    }
    s
}

/// Where the aside copy of each live path goes.
fn aside_db(paths: &Paths) -> PathBuf {
    hidden_beside(&paths.db, "aside")
}

fn aside_registry(paths: &Paths) -> PathBuf {
    hidden_beside(&paths.registry, "aside")
}

fn staging_dir(paths: &Paths) -> PathBuf {
    paths.chroma.join(chroma::STAGING_DIR)
}

fn aside_chroma(paths: &Paths) -> PathBuf {
    staging_dir(paths).join("aside")
}

fn hidden_beside(dest: &Path, what: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{what}"))
}

fn restore_tmp(dest: &Path) -> PathBuf {
    hidden_beside(dest, "restore-tmp")
}

/// `path` with a suffix appended (`atocore.db` → `atocore.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
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

/// Which parts of a snapshot a restore covers.
struct Parts {
    registry: bool,
    chroma: bool,
}

fn choose_parts(stamp: &Stamp, meta: &Metadata, choice: ChromaChoice) -> Result<Parts> {
    let chroma = match choice {
        ChromaChoice::Auto => meta.has_chroma(),
        ChromaChoice::Skip => false,
        ChromaChoice::Force if meta.has_chroma() => true,
        ChromaChoice::Force => {
            return Err(Error::Usage(format!(
                "--chroma: snapshot `{stamp}` has no chroma copy; restore without --chroma or pick a snapshot taken with --include-chroma"
            )));
        }
    };
    Ok(Parts {
        registry: meta.has_registry(),
        chroma,
    })
}

/// Full validation, or the structural check for a caller that validated just before.
/// Returns the metadata and the validation's warnings.
fn check_snapshot(
    paths: &Paths,
    stamp: &Stamp,
    prevalidated: bool,
) -> Result<(Metadata, Vec<String>)> {
    let meta = match snapshot::metadata_of(paths, stamp) {
        Ok(m) => Some(m),
        // A folder without readable metadata is an invalid snapshot, not an unknown one.
        Err(Error::InvalidSnapshot { .. }) => None,
        Err(e) => return Err(e),
    };
    let dir = paths.snapshot_dir(stamp);
    let (errors, warnings) = if prevalidated && dir.join(manifest::MANIFEST_FILE).is_file() {
        (
            validate::quick(&dir).1,
            vec!["prevalidated_by_caller".to_string()],
        )
    } else {
        let report = validate::validate(paths, stamp)?;
        (report.errors, report.warnings)
    };
    match meta {
        Some(m) if errors.is_empty() => Ok((m, warnings)),
        _ => Err(Error::InvalidSnapshot {
            stamp: stamp.to_string(),
            codes: if errors.is_empty() {
                vec!["metadata_invalid_json".into()]
            } else {
                errors
            },
        }),
    }
}

/// Stage a snapshot ahead of a restore, while the service still runs: validate it in
/// full, copy it out next to the destinations, check the copy. Nothing live changes.
/// The restore of the same stamp (and chroma choice) then only swaps.
pub fn prepare(paths: &Paths, stamp: &str, choice: ChromaChoice) -> Result<Staged> {
    let stamp = Stamp::parse(stamp)?;
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    if pending_journal(paths)?.is_some() {
        return Err(Error::Busy(journal_path(paths)));
    }
    let (meta, _) = check_snapshot(paths, &stamp, false)?;
    let parts = choose_parts(&stamp, &meta, choice)?;
    remove_if_exists(&staged_path(paths))?;
    stage_all(paths, &stamp, &meta, &parts)?;
    let tmp =
        fs::metadata(restore_tmp(&paths.db)).map_err(Error::io("stat", restore_tmp(&paths.db)))?;
    let staged = Staged {
        stamp: stamp.to_string(),
        registry: parts.registry,
        chroma: parts.chroma,
        db_inode: tmp.ino(),
        db_size: tmp.len(),
        db_mtime_ns: mtime_ns(&tmp),
        prepared_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    durable::create_dir_all(&paths.restore_dir())?;
    durable::write_json_atomic(&staged_path(paths), &staged)?;
    tracing::info!(stamp = %stamp, chroma = parts.chroma, "restore staged ahead");
    Ok(staged)
}

/// Drop what [`prepare`] staged (a caller that gave up before restoring). Refused
/// while a restore is under way; nothing staged is fine.
pub fn unprepare(paths: &Paths) -> Result<()> {
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    if pending_journal(paths)?.is_some() {
        return Err(Error::Busy(journal_path(paths)));
    }
    clear_staging(paths);
    Ok(())
}

/// Restore a snapshot (see the module docs for the phases and guarantees).
pub fn restore(paths: &Paths, opts: &RestoreOptions) -> Result<RestoreReport> {
    let started = Instant::now();
    let stamp = Stamp::parse(&opts.stamp)?;
    if !opts.confirmed_service_stopped {
        return Err(Error::NotConfirmed(stamp.to_string()));
    }
    if !paths.snapshot_dir(&stamp).is_dir() {
        return Err(Error::UnknownStamp {
            stamp: stamp.to_string(),
            dir: paths.snapshots_dir(),
        });
    }
    if db::open_elsewhere(&paths.db)? {
        return Err(Error::DatabaseInUse(paths.db.clone()));
    }
    let _lock = BackupLock::acquire(&paths.backup_dir)?;

    // An interrupted restore is finished, and an earlier aside copy made a snapshot,
    // before anything else happens.
    let pending = pending_journal(paths)?;
    if opts.dry_run {
        let (meta, validation_warnings) = check_snapshot(paths, &stamp, opts.prevalidated)?;
        let parts = choose_parts(&stamp, &meta, opts.chroma)?;
        return Ok(RestoreReport {
            stamp: stamp.to_string(),
            dry_run: true,
            duration_ms: started.elapsed().as_millis() as u64,
            plan: Some(RestorePlan {
                snapshot: paths.snapshot_dir(&stamp).display().to_string(),
                would_take_pre_restore_snapshot: opts.pre_snapshot && paths.db.is_file(),
                db: paths.db.clone(),
                registry: parts.registry.then(|| paths.registry.clone()),
                chroma: parts.chroma.then(|| paths.chroma.clone()),
                validation_warnings,
                interrupted_restore_to_finish: pending.map(|j| j.stamp),
                staged_ahead: staged_matches(paths, &stamp, &parts),
            }),
            ..RestoreReport::default()
        });
    }
    let mut recovered = None;
    if let Some(j) = pending {
        let done = finish(paths, j)?;
        recovered = Some(done.stamp.clone());
        if done.stamp == stamp.as_str() {
            let mut done = done;
            if !opts.defer_pre_snapshot && done.restored_integrity_ok {
                finalize_into(paths, &mut done);
            }
            done.duration_ms = started.elapsed().as_millis() as u64;
            done.recovered_interrupted_restore = recovered;
            return Ok(done);
        }
    }
    let mut warnings = Vec::new();
    let earlier = finalize_locked(paths)?;
    if let Some(stamp) = earlier.pre_restore_snapshot {
        warnings.push(format!("finished_earlier_pre_restore_snapshot:{stamp}"));
    }
    warnings.extend(earlier.warnings);

    let (meta, _) = check_snapshot(paths, &stamp, opts.prevalidated)?;
    let parts = choose_parts(&stamp, &meta, opts.chroma)?;
    let now = Utc::now();
    let journal = Journal {
        id: now.format("%Y%m%dT%H%M%S%.6fZ").to_string(),
        stamp: stamp.to_string(),
        db: true,
        registry: parts.registry,
        chroma: parts.chroma,
        phase: Phase::Staging,
        pre_snapshot: opts.pre_snapshot,
        attempt: 1,
        started_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    if opts.pre_snapshot && !paths.db.is_file() {
        warnings.push("no_live_database_so_no_pre_restore_snapshot".to_string());
    }
    let mut done = match execute(paths, journal, &meta) {
        Ok(done) => done,
        Err(e) => {
            tracing::error!(stamp = %stamp, cause = %e, "restore failed");
            RestoreReport {
                stamp: stamp.to_string(),
                error: Some(ErrorBody::from(&e)),
                pre_restore_pending: pending_aside(paths).ok().flatten().is_some(),
                ..RestoreReport::default()
            }
        }
    };
    if done.restored_integrity_ok && !opts.defer_pre_snapshot {
        finalize_into(paths, &mut done);
    }
    done.duration_ms = started.elapsed().as_millis() as u64;
    done.recovered_interrupted_restore = recovered;
    done.warnings.extend(warnings);
    if !done.restored_integrity_ok && done.error.is_none() {
        done.error = Some(ErrorBody {
            error: "restored_integrity_check_failed".into(),
            message: format!(
                "the database restored from `{stamp}` failed its checks; the live state before the restore is kept aside ({}); restore the pre-restore snapshot",
                aside_path(paths).display()
            ),
        });
    }
    Ok(done)
}

/// Make the pre-restore snapshot of a restore whose new data is in place. Best effort:
/// whatever fails here, the restore stands (the set-aside files are kept, or stay
/// pending for the next `finalize`), and the report says so.
fn finalize_into(paths: &Paths, done: &mut RestoreReport) {
    match finalize_locked(paths) {
        Ok(f) => {
            done.pre_restore_snapshot = f.pre_restore_snapshot;
            done.pre_restore_kept = f.kept;
            done.warnings.extend(f.warnings);
            done.pre_restore_pending = false;
        }
        Err(e) => {
            tracing::error!(cause = %e, "the pre-restore snapshot could not be finished; the set-aside live state stays pending");
            done.warnings.push(format!(
                "pre_restore_snapshot_pending: {e}; the live state from before the restore stays set aside ({}) and `atocore-restore-job finalize` finishes it",
                aside_path(paths).display()
            ));
            done.pre_restore_pending = true;
        }
    }
}

/// Finish the interrupted restore `j` (the lock is held by the caller).
pub(crate) fn finish(paths: &Paths, mut j: Journal) -> Result<RestoreReport> {
    tracing::warn!(stamp = %j.stamp, phase = ?j.phase, "finishing an interrupted restore");
    let target = Stamp::parse(&j.stamp)?;
    let report = validate::validate(paths, &target)?;
    if !report.valid {
        if j.phase == Phase::Staging {
            // Nothing live was touched yet: drop it.
            clear_staging(paths);
            remove_if_exists(&journal_path(paths))?;
            return Err(Error::InvalidSnapshot {
                stamp: j.stamp,
                codes: report.errors,
            });
        }
        return Err(Error::RestoreFailed {
            stamp: j.stamp.clone(),
            why: format!(
                "an interrupted restore cannot be finished: its snapshot is now invalid ({}). The live state from before it is kept aside as {} says; restore another snapshot by hand after removing {}",
                report.errors.join(", "),
                aside_path(paths).display(),
                journal_path(paths).display()
            ),
        });
    }
    let meta = snapshot::metadata_of(paths, &target)?;
    j.attempt += 1;
    execute(paths, j, &meta)
}

fn staged_matches(paths: &Paths, stamp: &Stamp, parts: &Parts) -> bool {
    let Ok(Some(s)) = durable::read_json::<Staged>(&staged_path(paths)) else {
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

fn clear_staging(paths: &Paths) {
    let _ = fs::remove_file(restore_tmp(&paths.db));
    let _ = fs::remove_file(restore_tmp(&paths.registry));
    let _ = fs::remove_dir_all(staging_dir(paths).join("new"));
    let _ = fs::remove_file(staged_path(paths));
    if let Ok(mut rd) = fs::read_dir(staging_dir(paths))
        && rd.next().is_none()
    {
        let _ = fs::remove_dir(staging_dir(paths));
    }
}

/// Phases 2 to 5, repeatable from the start after a crash.
fn execute(paths: &Paths, mut j: Journal, meta: &Metadata) -> Result<RestoreReport> {
    let stamp = Stamp::parse(&j.stamp)?;
    let parts = Parts {
        registry: j.registry,
        chroma: j.chroma,
    };
    let fail = |why: String| Error::RestoreFailed {
        stamp: stamp.to_string(),
        why,
    };
    let db_tmp = restore_tmp(&paths.db);
    let reg_tmp = restore_tmp(&paths.registry);

    // --- stage (or reuse what prepare staged) ---
    if j.phase == Phase::Staging {
        write_journal(paths, &j)?;
    }
    crash_point("after-journal");
    let staged_ahead = j.attempt == 1 && staged_matches(paths, &stamp, &parts);
    let staged = if staged_ahead {
        tracing::info!(stamp = %stamp, "using the staging prepared ahead");
        if parts.chroma {
            load_index(&paths.snapshot_dir(&stamp))
        } else {
            Ok(None)
        }
    } else {
        stage_all(paths, &stamp, meta, &parts)
    };
    let index = match staged {
        Ok(index) => index,
        Err(e) => {
            if j.phase == Phase::Staging {
                // Nothing live was touched: leave no trace but the error.
                clear_staging(paths);
                remove_if_exists(&journal_path(paths))?;
            }
            return Err(e);
        }
    };
    let staged_db = fs::metadata(&db_tmp).map_err(Error::io("stat", &db_tmp))?;

    // --- aside: the live state, renamed out of the way, is the safety copy ---
    let mut leftovers = Vec::new();
    if j.phase <= Phase::Aside {
        j.phase = Phase::Aside;
        write_journal(paths, &j)?;
        crash_point("before-swap");
        let aside = match pending_aside(paths)? {
            Some(a) if a.restore_id == j.id => a,
            Some(other) => {
                // Never reached through `restore`/`init`, which finalize an earlier
                // aside copy first; refusing keeps its files from being mistaken for
                // this restore's.
                return Err(fail(format!(
                    "the live state moved aside by the restore of `{}` is still waiting to become a snapshot; run `atocore-restore-job finalize` first",
                    other.restored_stamp
                )));
            }
            None => {
                // Anything already at the aside names belongs to no pending restore:
                // move it to a unique folder (never delete it, never rename over it).
                leftovers = move_leftovers(paths, &j.id, j.registry, j.chroma)?;
                let a = Aside {
                    restore_id: j.id.clone(),
                    restored_stamp: j.stamp.clone(),
                    make_snapshot: j.pre_snapshot,
                    db: aside_db(paths),
                    registry: aside_registry(paths),
                    chroma: j.chroma.then(|| aside_chroma(paths)),
                    snapshot: None,
                    created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                    kept_because: None,
                };
                durable::write_json_atomic(&aside_path(paths), &a)?;
                a
            }
        };
        move_db_aside(paths, &aside.db)?;
        if paths.db.exists() && !aside.db.exists() {
            // Never rename the staged file over a live database nobody set aside.
            return Err(fail(format!(
                "the live database {} could not be set aside as {}; nothing was replaced, the live state is as before",
                paths.db.display(),
                aside.db.display()
            )));
        }
        crash_point("after-wal-removed");
        if j.registry {
            move_file_aside(&paths.registry, &aside.registry)?;
        }
        if let Some(chroma_aside) = &aside.chroma {
            durable::create_dir_all(&paths.chroma)?;
            chroma::move_out(&paths.chroma, chroma_aside, "chroma-moved-aside")?;
        }
    }

    // --- swap in ---
    if j.phase < Phase::SwapIn {
        j.phase = Phase::SwapIn;
        write_journal(paths, &j)?;
    }
    for f in db::sidecar_files(&paths.db) {
        remove_if_exists(&f)?;
    }
    let db_renamed = swap_file(&db_tmp, &paths.db)?;
    crash_point("after-db-swap");
    if j.registry {
        swap_file(&reg_tmp, &paths.registry)?;
    }
    if let Some(index) = &index {
        // Whatever is live now came from an interrupted swap-in of this same restore.
        let trash = free_name(&staging_dir(paths), "trash");
        chroma::move_out(&paths.chroma, &trash, "chroma-trash")?;
        chroma::move_in(&staging_dir(paths).join("new"), &paths.chroma, &index.root)?;
    }

    // --- verify ---
    j.phase = Phase::Verifying;
    write_journal(paths, &j)?;
    crash_point("before-verify");
    let mut warnings = leftovers;
    let live = fs::metadata(&paths.db).map_err(Error::io("stat", &paths.db))?;
    // A rename changes neither the inode, the size nor the mtime; any write would
    // change the mtime.
    let same_file = db_renamed
        && live.ino() == staged_db.ino()
        && live.len() == staged_db.len()
        && mtime_ns(&live) == mtime_ns(&staged_db);
    let mut integrity_ok = if same_file {
        // The live database is the very inode that passed integrity_check and the row
        // counts while staged, unwritten since (same size and mtime).
        true
    } else {
        let (problems, facts) = db::check_file(&paths.db);
        warnings.extend(problems.iter().map(|p| format!("integrity_check: {p}")));
        problems.is_empty() && facts.is_some_and(|f| counts_match(&f, meta))
    };
    if let Some(index) = &index {
        let diffs = chroma::differences(&paths.chroma, index)?;
        if !diffs.is_empty() {
            integrity_ok = false;
            warnings.extend(diffs.into_iter().map(|d| format!("chroma_{d}")));
        }
    }

    // --- clean up (the aside copy stays until finalize) ---
    crash_point("before-cleanup");
    if integrity_ok {
        clear_staging(paths);
        if let Ok(rd) = fs::read_dir(staging_dir(paths)) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with("trash") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        if paths.chroma.is_dir() {
            durable::sync_path(&paths.chroma)?;
        }
    }
    remove_if_exists(&journal_path(paths))?;
    durable::sync_path(&paths.restore_dir())?;
    tracing::info!(stamp = %j.stamp, integrity_ok, staged_ahead, "restore swapped in");
    Ok(RestoreReport {
        stamp: j.stamp,
        db_restored: true,
        registry_restored: j.registry,
        chroma_restored: j.chroma,
        restored_integrity_ok: integrity_ok,
        pre_restore_pending: pending_aside(paths)?.is_some(),
        staged_ahead,
        warnings,
        ..RestoreReport::default()
    })
}

fn counts_match(f: &db::DbFacts, meta: &Metadata) -> bool {
    meta.row_counts
        .as_ref()
        .is_none_or(|want| want.iter().all(|(t, n)| f.row_counts.get(t) == Some(n)))
}

fn load_index(snap: &Path) -> Result<Option<Index>> {
    let snap_chroma = snap.join(CHROMA_REL);
    Ok(Some(
        match durable::read_json::<Index>(&snap.join(chroma::INDEX_FILE))? {
            Some(i) => i,
            None => chroma::scan(&snap_chroma)?,
        },
    ))
}

/// Stage every part of the snapshot beside its destination and check the staged
/// database; returns the chroma index when chroma is restored.
fn stage_all(
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
    let index_path = snap.join(chroma::INDEX_FILE);
    if let Some(want) = hashes.as_ref().and_then(|h| h.get(chroma::INDEX_FILE))
        && &durable::sha256_file(&index_path)? != want
    {
        return Err(Error::DamagedSnapshot {
            stamp: stamp.to_string(),
            why: format!("{} does not match its manifest hash", index_path.display()),
        });
    }
    let index = load_index(&snap)?;
    if let Some(index) = &index {
        durable::create_dir_all(&staging_dir(paths))?;
        chroma::stage(
            &snap.join(CHROMA_REL),
            index,
            &staging_dir(paths).join("new"),
        )?;
    }
    Ok(index)
}

/// Copy a snapshot file out to `tmp` beside `dest`, check it against the manifest,
/// give it the live file's (or the recorded) mode and owner, fsync.
fn stage_file(
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

fn is_mount_error(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EXDEV))
}

/// Move the live database and its `-wal`/`-journal` aside (the `-shm` is rebuilt by
/// SQLite and deleted). A file already aside is never overwritten, so a rerun after a
/// crash keeps the original. A database that is itself a mount point is copied aside
/// instead (it is rewritten in place afterwards).
fn move_db_aside(paths: &Paths, aside: &Path) -> Result<()> {
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

fn move_file_aside(live: &Path, aside: &Path) -> Result<()> {
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
fn swap_file(tmp: &Path, dest: &Path) -> Result<bool> {
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
            if aside_files(&aside).iter().any(|p| p.exists()) {
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
                Hooks::default(),
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

/// Every path of an aside copy (the database with its journals, the registry, the
/// chroma folder), present or not.
fn aside_files(aside: &Aside) -> Vec<PathBuf> {
    let mut v = vec![
        aside.db.clone(),
        with_suffix(&aside.db, "-wal"),
        with_suffix(&aside.db, "-shm"),
        with_suffix(&aside.db, "-journal"),
        aside.registry.clone(),
    ];
    v.extend(aside.chroma.clone());
    v
}

/// Move the set-aside files, untouched, into `atocore-pre-restore-kept-<id>` folders
/// (beside the database, beside the registry, and in the chroma staging area: each on
/// its own volume, so every move is a rename), record them in
/// `<backup_dir>/restore/kept-<id>.json`, and forget the aside copy.
fn keep_aside(paths: &Paths, aside: &Aside, why: String) -> Result<Finalized> {
    if aside.kept_because.is_none() {
        let mut marked = aside.clone();
        marked.kept_because = Some(why.clone());
        durable::write_json_atomic(&aside_path(paths), &marked)?;
    }
    let folder = format!("{KEPT_PREFIX}{}", aside.restore_id);
    let live_name = |p: &Path| p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let mut moves: Vec<(PathBuf, PathBuf)> = Vec::new();
    let db_dir = parent_of(&paths.db).join(&folder);
    for suffix in ["", "-wal", "-journal"] {
        let mut name = live_name(&paths.db);
        name.push(suffix);
        moves.push((with_suffix(&aside.db, suffix), db_dir.join(name)));
    }
    moves.push((
        aside.registry.clone(),
        parent_of(&paths.registry)
            .join(&folder)
            .join(live_name(&paths.registry)),
    ));
    if let Some(c) = &aside.chroma {
        moves.push((c.clone(), staging_dir(paths).join(&folder)));
    }
    let mut kept: Vec<PathBuf> = Vec::new();
    for (from, to) in moves {
        let folder_of = |p: &Path| {
            if p.parent() == Some(staging_dir(paths).as_path()) {
                p.to_path_buf()
            } else {
                parent_of(p)
            }
        };
        if to.exists() {
            // Moved by an earlier, interrupted run.
            if !kept.contains(&folder_of(&to)) {
                kept.push(folder_of(&to));
            }
            continue;
        }
        if !from.exists() {
            continue;
        }
        durable::create_dir_all(&parent_of(&to))?;
        rename_no_replace(&from, &to).map_err(Error::io("keep", &from))?;
        durable::sync_parent(&to)?;
        durable::sync_parent(&from)?;
        if !kept.contains(&folder_of(&to)) {
            kept.push(folder_of(&to));
        }
    }
    let record = serde_json::json!({
        "restore_id": aside.restore_id,
        "restored_stamp": aside.restored_stamp,
        "why": why,
        "kept": kept,
        "kept_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    durable::write_json_atomic(
        &paths
            .restore_dir()
            .join(format!("kept-{}.json", aside.restore_id)),
        &record,
    )?;
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

/// Move whatever sits at the names a new restore sets the live state aside under
/// (left by an older crash whose record is gone) into `atocore-restore-leftover-<id>`
/// folders beside them. Returns a warning per move.
fn move_leftovers(paths: &Paths, id: &str, registry: bool, chroma: bool) -> Result<Vec<String>> {
    let folder = format!("{LEFTOVER_PREFIX}{id}");
    let db = aside_db(paths);
    let mut candidates = vec![
        db.clone(),
        with_suffix(&db, "-wal"),
        with_suffix(&db, "-shm"),
        with_suffix(&db, "-journal"),
    ];
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

fn parent_of(p: &Path) -> PathBuf {
    p.parent().map(Path::to_path_buf).unwrap_or_default()
}

fn remove_staging_if_empty(paths: &Paths) {
    if let Ok(mut rd) = fs::read_dir(staging_dir(paths))
        && rd.next().is_none()
    {
        let _ = fs::remove_dir(staging_dir(paths));
    }
}

/// `rename(2)` that fails with `EEXIST` instead of replacing `to`.
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
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

fn mtime_ns(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

fn free_name(dir: &Path, base: &str) -> PathBuf {
    (1..)
        .map(|n| dir.join(format!("{base}-{n}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(base))
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p)(e)),
    }
}
