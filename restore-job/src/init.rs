//! The init-job mode (docs/design.md §1) and the restore request files it reads.
//!
//! Files on the backups volume, in `<backup_dir>/restore/`:
//! - `request.json`: written by the sidecar (or an operator) to ask for a restore;
//! - `result.json`: written by `init` when it has acted on a request;
//! - `journal.json`: the journal of a restore under way (see [`crate::restore`]).
//!
//! `init` first finishes an interrupted restore, then performs a pending request,
//! writes the result (atomically) and only then removes the request. A crash between
//! the two leaves the request in place with the journal gone; the next run performs it
//! again, which is idempotent (the live state already equals the snapshot).

use std::path::PathBuf;

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::durable::{self, BackupLock};
use crate::error::{Error, ErrorBody, Result};
use crate::restore::{self, ChromaChoice, RestoreOptions, RestoreReport};

/// A request to restore, as written to `request.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// Chosen by the writer; copied into the result so it can match the two.
    pub request_id: String,
    pub stamp: String,
    /// `null`: chroma when the snapshot has it; `true`: force; `false`: leave it alone.
    #[serde(default)]
    pub include_chroma: Option<bool>,
    /// Take a pre-restore snapshot first (default true).
    #[serde(default = "yes")]
    pub pre_snapshot: bool,
    /// Leave the pre-restore snapshot to be made by `restore::finalize` once the
    /// service is back (the sidecar does this to keep downtime short); default false.
    #[serde(default)]
    pub defer_pre_snapshot: bool,
    /// The writer fully validated the snapshot just before (see
    /// [`RestoreOptions::prevalidated`]); default false.
    #[serde(default)]
    pub prevalidated: bool,
    #[serde(default)]
    pub requested_at: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
}

fn yes() -> bool {
    true
}

/// What `init` wrote to `result.json`: the restore's report (the same fields as the
/// CLI's `restore` output) with the request it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreResult {
    pub request_id: String,
    pub ok: bool,
    #[serde(flatten)]
    pub report: RestoreReport,
    /// The CLI exit code the restore would have had.
    pub exit_code: u8,
    pub finished_at: String,
}

/// The body `init` prints.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub mode: &'static str,
    /// The interrupted restore this run finished, if any.
    pub recovered: Option<RestoreReport>,
    /// A pre-restore snapshot left pending by an earlier restore, made by this run.
    pub finalized_pre_restore_snapshot: Option<String>,
    /// Folders that keep a set-aside live state no snapshot could be made of.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_restore_kept: Vec<PathBuf>,
    /// What went wrong without stopping the init job (atocore may start).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The request performed, if any.
    pub request: Option<RestoreRequest>,
    pub result: Option<RestoreResult>,
}

impl InitReport {
    /// Exit 0 unless a request was performed and did not end with a sound database.
    pub fn exit_code(&self) -> u8 {
        self.result.as_ref().map(|r| r.exit_code).unwrap_or(0)
    }
}

pub fn request_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("request.json")
}

pub fn result_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("result.json")
}

/// The pending request, if any.
pub fn pending_request(paths: &Paths) -> Result<Option<RestoreRequest>> {
    durable::read_json(&request_path(paths))
}

/// The last result written by `init`, if any.
pub fn last_result(paths: &Paths) -> Result<Option<RestoreResult>> {
    durable::read_json(&result_path(paths))
}

/// Write a request for the next `init` run. Refused while another one is pending.
pub fn write_request(paths: &Paths, req: &RestoreRequest) -> Result<()> {
    crate::Stamp::parse(&req.stamp)?;
    durable::create_dir_all(&paths.restore_dir())?;
    if pending_request(paths)?.is_some() {
        return Err(Error::Busy(request_path(paths)));
    }
    durable::write_json_atomic(&request_path(paths), req)
}

/// Remove a request that will not be acted on (e.g. the orchestrator gave up before
/// starting the job). Absent is fine.
pub fn withdraw_request(paths: &Paths) -> Result<()> {
    match std::fs::remove_file(request_path(paths)) {
        Ok(()) => durable::sync_path(&paths.restore_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", request_path(paths))(e)),
    }
}

/// The init-job mode: finish an interrupted restore, then act on a pending request.
pub fn init(paths: &Paths) -> Result<InitReport> {
    let mut report = InitReport {
        mode: "init",
        recovered: None,
        finalized_pre_restore_snapshot: None,
        pre_restore_kept: Vec::new(),
        warnings: Vec::new(),
        request: None,
        result: None,
    };
    let request = pending_request(paths)?;
    if request.is_none() {
        let journal = restore::pending_journal(paths)?;
        let aside = restore::pending_aside(paths)?;
        if journal.is_some() || aside.is_some() {
            let _lock = BackupLock::acquire(&paths.backup_dir)?;
            if let Some(j) = journal {
                report.recovered = Some(restore::finish(paths, j)?);
            }
            // The orchestrator that should have made the pre-restore snapshot is gone.
            // Whatever happens to that snapshot, it never keeps atocore from starting:
            // the restored data is in place and the old state is kept, not deleted.
            match restore::finalize_locked(paths) {
                Ok(f) => {
                    report.finalized_pre_restore_snapshot = f.pre_restore_snapshot;
                    report.pre_restore_kept = f.kept;
                    report.warnings.extend(f.warnings);
                }
                Err(e) => {
                    tracing::error!(cause = %e, "the pending pre-restore snapshot could not be finished; atocore may start, run `atocore-restore-job finalize` later");
                    report
                        .warnings
                        .push(format!("pre_restore_snapshot_pending: {e}"));
                }
            }
        }
        return Ok(report);
    }
    let Some(req) = request else {
        return Ok(report);
    };
    tracing::info!(request_id = %req.request_id, stamp = %req.stamp, "performing restore request");
    let outcome = restore::restore(
        paths,
        &RestoreOptions {
            stamp: req.stamp.clone(),
            // The init job runs before atocore starts; the lock probe still guards it.
            confirmed_service_stopped: true,
            pre_snapshot: req.pre_snapshot,
            chroma: ChromaChoice::from_option(req.include_chroma),
            dry_run: false,
            prevalidated: req.prevalidated,
            defer_pre_snapshot: req.defer_pre_snapshot,
        },
    );
    let (restored, exit_code) = match outcome {
        Ok(r) => {
            let code = if r.restored_integrity_ok { 0 } else { 1 };
            (r, code)
        }
        Err(e) => (
            RestoreReport {
                stamp: req.stamp.clone(),
                pre_restore_pending: restore::pending_aside(paths).ok().flatten().is_some(),
                error: Some(ErrorBody::from(&e)),
                ..RestoreReport::default()
            },
            e.exit_code(),
        ),
    };
    let result = RestoreResult {
        request_id: req.request_id.clone(),
        ok: exit_code == 0,
        report: restored,
        exit_code,
        finished_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    durable::write_json_atomic(&result_path(paths), &result)?;
    withdraw_request(paths)?;
    report.request = Some(req);
    report.result = Some(result);
    Ok(report)
}
