//! `POST /admin/restore`: the orchestrated restore (docs/design.md §1, docs/sidecar.md).
//!
//! The sidecar has the Docker socket but not the job of touching live files; the
//! restore-job container (same volumes, no socket, created by compose as the init job)
//! does that. The sequence:
//!
//! 1. **while atocore runs**: check the input, Docker and both containers; validate the
//!    snapshot in full and stage it next to the live files
//!    ([`restore::prepare`]: hidden files only); read atocore's `build_sha`;
//! 2. write the request (`init::write_request`, prevalidated, pre-restore snapshot
//!    deferred);
//! 3. **downtime starts**: stop atocore; start the restore-job container (its `init`
//!    finds the request, renames the live state aside, swaps the staged files in, checks
//!    them, writes `result.json`); wait for it; read the result (same `request_id`);
//! 4. start the same atocore container (its environment and `build_sha` survive) and wait
//!    until healthy: Docker's health status says `healthy`, or atocore's `/health`
//!    answers `ok`, whichever comes first; **downtime ends**;
//! 5. [`restore::finalize`]: the live state moved aside becomes the `pre-restore`
//!    snapshot, now that atocore serves again.
//!
//! Failures:
//! - before atocore is stopped (bad input, Docker unreachable, invalid snapshot, another
//!   operation): nothing changed, the error says so (400/404/409/422/503);
//! - the job did not act on the request (did not start, no result): the request is
//!   withdrawn and atocore started again on its unchanged data;
//! - the job refused before touching live data: atocore started again, unchanged;
//! - the restored data failed its checks, or atocore did not become healthy on it:
//!   **rollback**: finalize (the pre-restore snapshot), then restore it the same way
//!   (stop, job, start, wait healthy), and say `rolled_back: true`;
//! - a restore left unfinished (its journal still there): atocore is left stopped; the
//!   next `docker compose up` runs the init job, which finishes it first.
//!
//! The orchestration runs as a tracked task of its own: a client that hangs up does not
//! stop it halfway. Once atocore is stopped it runs to the end even during shutdown.
//!
//! A [`RestoreRun`] holds one restore's state and has one method per step; the answer
//! is `Result<`[`RestoreResponse`]`, `[`RestoreFailure`]`>`: a refusal before anything
//! changed, or a failure after atocore was touched, with the response that says what
//! happened. The container steps are in [`crate::containers`]; the loop that finishes an
//! orphaned pre-restore snapshot is [`crate::leftover`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use atocore_restore_job::init::{self, RestoreRequest, RestoreResult};
use atocore_restore_job::restore::{self, ChromaChoice, RestoreReport};
use atocore_restore_job::{ErrorBody, Stamp};
use chrono::{SecondsFormat, Utc};
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::containers::{blocking, build_sha, preflight, run_job, start_and_wait};
use crate::docker::Target;
use crate::error::{CLI_RESTORE, Error, Result};
use crate::state::State;

/// Body of `POST /admin/restore`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The snapshot; optional with `at` (then the base the replay must start from).
    #[serde(default)]
    pub stamp: Option<String>,
    /// Restore the database to the last transaction captured at or before this RFC
    /// 3339 moment: a `point-in-time` snapshot is built first (while atocore runs).
    #[serde(default)]
    pub at: Option<String>,
    /// `null`: chroma when the snapshot has it; `true`: force; `false`: leave it.
    #[serde(default)]
    pub include_chroma: Option<bool>,
    /// Take a pre-restore snapshot (default true). Without it there is no rollback.
    #[serde(default = "yes")]
    pub pre_snapshot: bool,
}

fn yes() -> bool {
    true
}

/// The answer of `POST /admin/restore`: the engine's restore report (the CLI's fields,
/// flattened; its `duration_ms` is the whole call here) plus the orchestration's own.
/// On failure `error` and `message` are set (the contract's error shape), and the HTTP
/// status says what kind of failure it was.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RestoreResponse {
    /// The restore job's report. Its own `error` is always moved to `error`/`message`.
    #[serde(flatten)]
    pub restore: RestoreReport,
    /// From the moment atocore was asked to stop until it was healthy again (or gave up).
    pub downtime_ms: Option<u64>,
    pub healthy: bool,
    pub rolled_back: bool,
    pub build_sha_before: Option<String>,
    pub build_sha_after: Option<String>,
    /// The restore-job's own duration, from its result.
    pub restore_job_ms: Option<u64>,
    pub request_id: String,
    /// The rollback's restore, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// For a restore with `at`: the moment reached, the base snapshot and where the
    /// registry and chroma come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<atocore_restore_job::metadata::PointInTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    /// The pre-restore snapshot restored.
    pub stamp: Option<String>,
    pub restored_integrity_ok: bool,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why an orchestrated restore did not succeed.
#[derive(Debug)]
pub enum RestoreFailure {
    /// Refused before anything changed (bad input, Docker, an invalid snapshot, busy).
    Refused(Error),
    /// Failed after atocore was stopped; the response says what was done about it.
    Failed {
        status: StatusCode,
        response: Box<RestoreResponse>,
    },
}

impl From<Error> for RestoreFailure {
    fn from(e: Error) -> Self {
        RestoreFailure::Refused(e)
    }
}

impl From<atocore_restore_job::Error> for RestoreFailure {
    fn from(e: atocore_restore_job::Error) -> Self {
        RestoreFailure::Refused(e.into())
    }
}

/// `POST /admin/restore`: take the gate, then run [`orchestrate`] as its own task.
pub async fn restore(
    state: &Arc<State>,
    body: RestoreBody,
) -> std::result::Result<RestoreResponse, RestoreFailure> {
    let at = match body.at.as_deref() {
        Some(a) => Some(atocore_restore_job::wal::pitr::parse_at(a)?),
        None => None,
    };
    let stamp = match (&body.stamp, at) {
        (Some(s), _) => Some(Stamp::parse(s)?),
        (None, Some(_)) => None,
        (None, None) => {
            return Err(Error::bad_request(
                "bad_json",
                "the body needs `stamp` (a snapshot) or `at` (an RFC 3339 moment)",
            )
            .into());
        }
    };
    let guard = state.begin("restore")?;
    let st = Arc::clone(state);
    state
        .tasks
        .spawn(async move {
            let _guard = guard;
            let Some(at) = at else {
                let stamp = stamp.expect("checked above");
                return orchestrate(&st, &stamp, body.include_chroma, body.pre_snapshot).await;
            };
            // Build the database at `at` while atocore still serves.
            let (p, base) = (st.config.paths.clone(), stamp.map(|s| s.to_string()));
            let meta = blocking(&st, "build the point-in-time snapshot", move || {
                Ok(atocore_restore_job::wal::pitr::snapshot_at(
                    &p,
                    at,
                    base.as_deref(),
                )?)
            })
            .await?;
            st.summary.invalidate();
            let stamp = Stamp::parse(&meta.stamp)?;
            let mut resp = orchestrate(&st, &stamp, body.include_chroma, body.pre_snapshot).await;
            match &mut resp {
                Ok(r) => r.point_in_time = meta.point_in_time.clone(),
                Err(RestoreFailure::Failed { response, .. }) => {
                    response.point_in_time = meta.point_in_time.clone()
                }
                Err(RestoreFailure::Refused(_)) => {}
            }
            resp
        })
        .await
        .map_err(|e| Error::Internal(format!("the restore task stopped: {e}")))?
}

/// Run an orchestrated restore of `stamp` (the caller holds the gate).
pub async fn orchestrate(
    state: &Arc<State>,
    stamp: &Stamp,
    include_chroma: Option<bool>,
    pre_snapshot: bool,
) -> std::result::Result<RestoreResponse, RestoreFailure> {
    let mut run = RestoreRun::new(state, stamp, include_chroma, pre_snapshot);
    run.stage().await?;
    let req = run.write_request().await?;
    // The WAL stream lets go of the live database (the job refuses a database open
    // elsewhere) and resumes, in a new generation, whatever happens next.
    let _resume = pause_wal_stream(state).await;
    run.stop_atocore().await?;
    run.run_job(&req).await?;
    run.start_atocore().await?;
    run.finalize().await;
    Ok(run.finish())
}

async fn pause_wal_stream(state: &Arc<State>) -> crate::walstream::PauseGuard {
    let wal = Arc::clone(&state.wal);
    let w = Arc::clone(&wal);
    let released = tokio::task::spawn_blocking(move || w.pause(std::time::Duration::from_secs(30)))
        .await
        .unwrap_or(false);
    if !released {
        tracing::warn!("the WAL stream did not let go of the database within 30 s");
    }
    crate::walstream::PauseGuard(wal)
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn request_id() -> String {
    format!(
        "{}-{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// One orchestrated restore, step by step.
pub struct RestoreRun {
    state: Arc<State>,
    stamp: Stamp,
    include_chroma: Option<bool>,
    pre_snapshot: bool,
    started: Instant,
    /// When atocore was asked to stop.
    down: Option<Instant>,
    resp: RestoreResponse,
}

impl RestoreRun {
    fn new(
        state: &Arc<State>,
        stamp: &Stamp,
        include_chroma: Option<bool>,
        pre_snapshot: bool,
    ) -> RestoreRun {
        RestoreRun {
            state: Arc::clone(state),
            stamp: stamp.clone(),
            include_chroma,
            pre_snapshot,
            started: Instant::now(),
            down: None,
            resp: RestoreResponse {
                restore: RestoreReport {
                    stamp: stamp.to_string(),
                    ..RestoreReport::default()
                },
                request_id: request_id(),
                ..RestoreResponse::default()
            },
        }
    }

    /// 1. While atocore runs: the snapshot exists, Docker and both containers answer;
    ///    validate and stage the snapshot; note atocore's `build_sha`.
    async fn stage(&mut self) -> Result<()> {
        let paths = self.state.config.paths.clone();
        if !paths.snapshot_dir(&self.stamp).is_dir() {
            return Err(atocore_restore_job::Error::UnknownStamp {
                stamp: self.stamp.to_string(),
                dir: paths.snapshots_dir(),
            }
            .into());
        }
        preflight(&self.state).await?;
        let (s, choice) = (
            self.stamp.to_string(),
            ChromaChoice::from_option(self.include_chroma),
        );
        let staged = blocking(&self.state, "prepare", move || {
            Ok(restore::prepare(&paths, &s, choice)?)
        })
        .await?;
        self.resp.build_sha_before = build_sha(&self.state).await;
        tracing::info!(op = "restore", stamp = %self.stamp, staged_chroma = staged.chroma, "restore staged");
        Ok(())
    }

    /// 2. The request for the restore-job container (validated and staged just now;
    ///    the pre-restore snapshot deferred until atocore serves again).
    async fn write_request(&mut self) -> Result<RestoreRequest> {
        let req = RestoreRequest {
            request_id: self.resp.request_id.clone(),
            stamp: self.stamp.to_string(),
            include_chroma: self.include_chroma,
            pre_snapshot: self.pre_snapshot,
            defer_pre_snapshot: true,
            prevalidated: true,
            requested_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            requested_by: Some(format!("atocore-sidecar {}", env!("CARGO_PKG_VERSION"))),
        };
        if self.state.shutdown.is_cancelled() {
            self.unprepare().await;
            return Err(Error::ShuttingDown);
        }
        let (p, r) = (self.state.config.paths.clone(), req.clone());
        if let Err(e) = blocking(&self.state, "write the restore request", move || {
            Ok(init::write_request(&p, &r)?)
        })
        .await
        {
            self.unprepare().await;
            return Err(e);
        }
        Ok(req)
    }

    /// 3. Downtime starts: stop atocore. If it cannot be stopped, nothing changed:
    ///    the request is withdrawn and atocore started again.
    async fn stop_atocore(&mut self) -> Result<()> {
        tracing::info!(op = "restore", stamp = %self.stamp, request_id = %self.resp.request_id, "stopping atocore");
        self.down = Some(Instant::now());
        let state = &self.state;
        if let Err(e) = state
            .docker
            .stop(Target::Atocore, state.config.stop_timeout)
            .await
        {
            self.withdraw_request().await;
            self.unprepare().await;
            let _ = state.docker.start(Target::Atocore).await;
            return Err(e);
        }
        Ok(())
    }

    /// 4. The restore-job container performs the request; its result is checked.
    async fn run_job(&mut self, req: &RestoreRequest) -> std::result::Result<(), RestoreFailure> {
        let result = match run_job(&self.state, req).await {
            Ok(r) => r,
            Err(e) => return Err(self.after_job_error(e).await),
        };
        let why = self.take_result(result);
        let Some(why) = why else {
            return Ok(());
        };
        if self.journal_pending().await {
            return Err(self.left_stopped(&why));
        }
        if !self.aside_pending().await && !self.resp.restore.db_restored {
            // Refused before touching anything: atocore comes back on its own data.
            let message = format!(
                "the restore job refused `{}` before changing anything ({}); atocore was started again on its unchanged data",
                self.stamp, why.message
            );
            let status =
                StatusCode::from_u16(atocore_restore_job::error::http_status_of(&why.error))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Err(self.restart_unchanged(why.error, message, status).await);
        }
        // The restored data failed its checks: roll back without starting atocore on it.
        let rb = self.roll_back(false).await;
        Err(self
            .after_rollback(
                rb,
                format!("the restored data failed its checks ({})", why.message),
            )
            .await)
    }

    /// Take the job's report into the response; the job's error, if it failed.
    fn take_result(&mut self, result: RestoreResult) -> Option<ErrorBody> {
        let mut report = result.report;
        let error = report.error.take();
        self.resp.restore_job_ms = Some(report.duration_ms);
        self.resp.restore = report;
        if result.ok {
            None
        } else {
            Some(error.unwrap_or_else(|| ErrorBody {
                error: "restore_failed".into(),
                message: "the restore job reported a failure".into(),
            }))
        }
    }

    /// 5. Start atocore and wait until healthy; downtime ends. Not healthy: roll back.
    async fn start_atocore(&mut self) -> std::result::Result<(), RestoreFailure> {
        match start_and_wait(&self.state).await {
            Ok(()) => {
                self.resp.healthy = true;
                self.resp.downtime_ms = self.downtime();
                self.resp.build_sha_after = build_sha(&self.state).await;
                Ok(())
            }
            Err(why) => {
                let rb = self.roll_back(true).await;
                Err(self
                    .after_rollback(
                        rb,
                        format!("atocore did not become healthy on the restored data: {why}"),
                    )
                    .await)
            }
        }
    }

    /// 6. The pre-restore snapshot, now that atocore serves again (best effort).
    async fn finalize(&mut self) {
        let p = self.state.config.paths.clone();
        match blocking(&self.state, "finalize", move || Ok(restore::finalize(&p)?)).await {
            Ok(done) => {
                let r = &mut self.resp.restore;
                r.pre_restore_snapshot = done.pre_restore_snapshot;
                r.pre_restore_kept = done.kept;
                r.pre_restore_pending = false;
                r.warnings.extend(done.warnings);
            }
            Err(e) => {
                tracing::error!(cause = %e, "the pre-restore snapshot could not be made; the next restore or init run makes it");
                self.resp
                    .restore
                    .warnings
                    .push(format!("pre_restore_snapshot_failed: {e}"));
            }
        }
    }

    /// The successful answer.
    fn finish(mut self) -> RestoreResponse {
        if self.resp.build_sha_before.is_some()
            && self.resp.build_sha_before != self.resp.build_sha_after
        {
            self.resp.restore.warnings.push("build_sha_changed".into());
        }
        self.resp.restore.duration_ms = self.started.elapsed().as_millis() as u64;
        self.state.summary.invalidate();
        self.state
            .metrics
            .record_restore(true, false, self.resp.downtime_ms);
        let r = &self.resp;
        tracing::info!(
            op = "restore",
            outcome = "ok",
            stamp = %r.restore.stamp,
            pre_restore_snapshot = ?r.restore.pre_restore_snapshot,
            downtime_ms = r.downtime_ms,
            restore_job_ms = r.restore_job_ms,
            duration_ms = r.restore.duration_ms,
            staged_ahead = r.restore.staged_ahead,
            "restore finished; atocore healthy"
        );
        self.resp
    }

    /// Restore the pre-restore snapshot the same way. `atocore_running`: stop it first.
    async fn roll_back(&mut self, atocore_running: bool) -> Rollback {
        let state = Arc::clone(&self.state);
        let mut rb = Rollback {
            stamp: None,
            restored_integrity_ok: false,
            healthy: false,
            error: None,
        };
        if atocore_running
            && let Err(e) = state
                .docker
                .stop(Target::Atocore, state.config.stop_timeout)
                .await
        {
            rb.error = Some(format!("could not stop atocore for the rollback: {e}"));
            return rb;
        }
        let p = state.config.paths.clone();
        let done = match blocking(&state, "finalize", move || Ok(restore::finalize(&p)?)).await {
            Ok(done) => done,
            Err(e) => {
                rb.error = Some(format!("the pre-restore snapshot could not be made: {e}"));
                return rb;
            }
        };
        let Some(pre) = done.pre_restore_snapshot else {
            rb.error = Some(if done.kept.is_empty() {
                "there is no pre-restore snapshot to roll back to (pre_snapshot was false)".into()
            } else {
                format!(
                    "there is no pre-restore snapshot to roll back to: {}",
                    done.warnings.join("; ")
                )
            });
            self.resp.restore.pre_restore_kept = done.kept;
            return rb;
        };
        rb.stamp = Some(pre.clone());
        tracing::warn!(op = "restore", rollback_to = %pre, "rolling back to the pre-restore snapshot");
        let req = RestoreRequest {
            request_id: request_id(),
            stamp: pre,
            // The pre-restore snapshot has chroma exactly when chroma was restored.
            include_chroma: None,
            pre_snapshot: false,
            defer_pre_snapshot: false,
            prevalidated: true,
            requested_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
            requested_by: Some("atocore-sidecar rollback".into()),
        };
        let (p, r) = (state.config.paths.clone(), req.clone());
        if let Err(e) = blocking(&state, "write the rollback request", move || {
            Ok(init::write_request(&p, &r)?)
        })
        .await
        {
            rb.error = Some(format!("could not write the rollback request: {e}"));
            return rb;
        }
        match run_job(&state, &req).await {
            Ok(r) if r.ok => rb.restored_integrity_ok = true,
            Ok(r) => {
                rb.error = Some(
                    r.report
                        .error
                        .map(|e| e.message)
                        .unwrap_or_else(|| "the rollback restore failed".into()),
                );
                return rb;
            }
            Err(e) => {
                rb.error = Some(e.to_string());
                return rb;
            }
        }
        match start_and_wait(&state).await {
            Ok(()) => rb.healthy = true,
            Err(why) => rb.error = Some(format!("atocore not healthy after the rollback: {why}")),
        }
        rb
    }

    async fn after_rollback(&mut self, rb: Rollback, why: String) -> RestoreFailure {
        self.resp.rolled_back = rb.restored_integrity_ok;
        self.resp.healthy = rb.healthy;
        if self.resp.restore.pre_restore_snapshot.is_none() {
            // The rollback restored it, so it exists: name it where clients look.
            self.resp.restore.pre_restore_snapshot = rb.stamp.clone();
        }
        self.resp.downtime_ms = self.downtime();
        if rb.healthy {
            self.resp.build_sha_after = build_sha(&self.state).await;
        }
        self.resp.error = Some("restore_failed".into());
        self.resp.message = Some(match (&rb.error, rb.healthy) {
            (None, true) => format!(
                "{why}; rolled back to the pre-restore snapshot `{}` and atocore is healthy again",
                rb.stamp.as_deref().unwrap_or("?")
            ),
            (err, _) => format!(
                "{why}; the rollback did not complete ({}); check `docker logs {}` and restore by hand: {CLI_RESTORE}",
                err.as_deref().unwrap_or("atocore not healthy"),
                self.state.config.atocore_container
            ),
        });
        self.resp.rollback = Some(rb);
        self.failed(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The job could not be run or gave no result: find out whether it acted.
    async fn after_job_error(&mut self, e: Error) -> RestoreFailure {
        let p = self.state.config.paths.clone();
        let still_requested = blocking(&self.state, "request", move || {
            Ok(init::pending_request(&p).ok().flatten().is_some())
        })
        .await
        .unwrap_or(false);
        let why = ErrorBody {
            error: e.code().into(),
            message: e.to_string(),
        };
        if self.journal_pending().await {
            return self.left_stopped(&why);
        }
        if still_requested {
            self.withdraw_request().await;
            self.unprepare().await;
        }
        if self.aside_pending().await {
            let rb = self.roll_back(false).await;
            return self.after_rollback(rb, why.message).await;
        }
        let message = format!(
            "{}; nothing was restored and atocore was started again on its unchanged data",
            why.message
        );
        self.restart_unchanged(why.error, message, StatusCode::INTERNAL_SERVER_ERROR)
            .await
    }

    /// Nothing live was changed: start atocore again on its own data and fail.
    async fn restart_unchanged(
        &mut self,
        error: String,
        message: String,
        status: StatusCode,
    ) -> RestoreFailure {
        self.resp.healthy = start_and_wait(&self.state).await.is_ok();
        self.resp.downtime_ms = self.downtime();
        self.resp.build_sha_after = build_sha(&self.state).await;
        self.resp.error = Some(error);
        self.resp.message = Some(message);
        self.failed(status)
    }

    /// The restore stopped halfway and is journaled: atocore stays stopped.
    fn left_stopped(&mut self, why: &ErrorBody) -> RestoreFailure {
        self.resp.healthy = false;
        self.resp.downtime_ms = self.downtime();
        self.resp.error = Some("restore_unfinished".into());
        self.resp.message = Some(format!(
            "the restore of `{}` stopped halfway ({}) and is journaled; atocore is left stopped so it never serves a mix. Run `docker compose up -d`: the init job finishes the restore first (or restore by hand: {CLI_RESTORE})",
            self.stamp, why.message
        ));
        self.failed(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn failed(&mut self, status: StatusCode) -> RestoreFailure {
        let mut resp = std::mem::take(&mut self.resp);
        resp.restore.duration_ms = self.started.elapsed().as_millis() as u64;
        self.state.summary.invalidate();
        self.state
            .metrics
            .record_restore(false, resp.rolled_back, resp.downtime_ms);
        tracing::error!(
            op = "restore",
            outcome = "failed",
            stamp = %resp.restore.stamp,
            rolled_back = resp.rolled_back,
            healthy = resp.healthy,
            downtime_ms = resp.downtime_ms,
            duration_ms = resp.restore.duration_ms,
            cause = resp.message.as_deref().unwrap_or(""),
            "restore failed"
        );
        RestoreFailure::Failed {
            status,
            response: Box::new(resp),
        }
    }

    fn downtime(&self) -> Option<u64> {
        self.down.map(|d| d.elapsed().as_millis() as u64)
    }

    /// Drop a staging made ahead for a restore given up before atocore stopped (a
    /// full database copy beside the live one must not linger).
    async fn unprepare(&self) {
        let p = self.state.config.paths.clone();
        if let Err(e) = blocking(&self.state, "unprepare", move || {
            Ok(restore::unprepare(&p)?)
        })
        .await
        {
            tracing::warn!(cause = %e, "could not drop the staged restore; the next restore replaces it");
        }
    }

    async fn withdraw_request(&self) {
        let p = self.state.config.paths.clone();
        let _ = blocking(&self.state, "withdraw", move || {
            Ok(init::withdraw_request(&p)?)
        })
        .await;
    }

    async fn journal_pending(&self) -> bool {
        let p = self.state.config.paths.clone();
        blocking(&self.state, "journal", move || {
            Ok(restore::pending_journal(&p).ok().flatten().is_some())
        })
        .await
        .unwrap_or(true)
    }

    async fn aside_pending(&self) -> bool {
        let p = self.state.config.paths.clone();
        blocking(&self.state, "aside", move || {
            Ok(restore::pending_aside(&p).ok().flatten().is_some())
        })
        .await
        .unwrap_or(false)
    }
}
