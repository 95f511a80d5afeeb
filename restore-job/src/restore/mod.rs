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

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::control::{Journal, Phase, Staged};
use crate::db;
use crate::durable::{self, BackupLock};
use crate::error::{Error, ErrorBody, Result};
use crate::layout::{aside_path, journal_path, restore_tmp, staged_path};
use crate::metadata::Metadata;
use crate::snapshot;
use crate::stamp::Stamp;
use crate::validate;

mod finalize;
mod phases;
mod stage;
mod swap;

pub use crate::control::{pending_aside, pending_journal};
pub(crate) use finalize::finalize_locked;
pub use finalize::{Finalized, finalize};
use stage::{clear_staging, stage_all, staged_matches};

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
    let (errors, warnings) = if prevalidated && dir.join(crate::layout::MANIFEST_FILE).is_file() {
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
    durable::remove_file_if_exists(&staged_path(paths))?;
    stage_all(paths, &stamp, &meta, &parts)?;
    let tmp =
        fs::metadata(restore_tmp(&paths.db)).map_err(Error::io("stat", restore_tmp(&paths.db)))?;
    let staged = Staged {
        stamp: stamp.to_string(),
        registry: parts.registry,
        chroma: parts.chroma,
        db_inode: tmp.ino(),
        db_size: tmp.len(),
        db_mtime_ns: durable::mtime_ns(&tmp),
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
        let done = resume(paths, j)?;
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
    let mut done = match phases::execute(paths, journal, &meta) {
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

/// Resume the interrupted restore `j` from its journal (the lock is held by the caller).
pub(crate) fn resume(paths: &Paths, mut j: Journal) -> Result<RestoreReport> {
    tracing::warn!(stamp = %j.stamp, phase = ?j.phase, "finishing an interrupted restore");
    let target = Stamp::parse(&j.stamp)?;
    // A snapshot that vanished under an interrupted restore reports `snapshot_missing`.
    let report = validate::validate_dir(&paths.snapshot_dir(&target), target.as_str());
    if !report.valid {
        if j.phase == Phase::Staging {
            // Nothing live was touched yet: drop it.
            clear_staging(paths);
            durable::remove_file_if_exists(&journal_path(paths))?;
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
    phases::execute(paths, j, &meta)
}
