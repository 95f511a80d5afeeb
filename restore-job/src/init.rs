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
use crate::error::{ErrorBody, Result};
use crate::layout::result_path;
use crate::restore::{self, ChromaChoice, RestoreOptions, RestoreReport};

pub use crate::control::{RestoreRequest, pending_request, withdraw_request, write_request};
pub use crate::layout::request_path;

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

/// The last result written by `init`, if any.
pub fn last_result(paths: &Paths) -> Result<Option<RestoreResult>> {
    durable::read_json(&result_path(paths))
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
                report.recovered = Some(restore::resume(paths, j)?);
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
