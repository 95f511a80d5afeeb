//! `POST /admin/restore`: the orchestrated restore (CONTRACT §4).
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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use atocore_restore_job::init::{self, RestoreRequest, RestoreResult};
use atocore_restore_job::restore::{self, ChromaChoice};
use atocore_restore_job::{ErrorBody, Stamp};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::atocore;
use crate::docker::Target;
use crate::error::{CLI_RESTORE, Error, Result};
use crate::operation::{self, Gate};
use crate::state::State;

/// Body of `POST /admin/restore`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    pub stamp: String,
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

/// The answer of `POST /admin/restore`: the restore fields of the CLI plus the
/// orchestration's own. On failure `error` and `message` are set too (the contract's
/// error shape), and the HTTP status says what kind of failure it was.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RestoreResponse {
    pub stamp: String,
    pub pre_restore_snapshot: Option<String>,
    pub db_restored: bool,
    pub registry_restored: bool,
    pub chroma_restored: bool,
    pub restored_integrity_ok: bool,
    pub dry_run: bool,
    /// The whole call, validation and staging included.
    pub duration_ms: u64,
    /// From the moment atocore was asked to stop until it was healthy again (or gave up).
    pub downtime_ms: Option<u64>,
    pub healthy: bool,
    pub rolled_back: bool,
    pub build_sha_before: Option<String>,
    pub build_sha_after: Option<String>,
    /// The restore-job's own duration, from its result.
    pub restore_job_ms: Option<u64>,
    /// Staging had been done while atocore still ran.
    pub staged_ahead: bool,
    pub request_id: String,
    /// The rollback's restore, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

/// Why a restore failed after it started, with the response to send.
#[derive(Debug)]
pub struct Failed {
    pub status: hyper::StatusCode,
    pub response: RestoreResponse,
}

/// An orchestrated restore: either the response, or a refusal before anything changed
/// (`Err`), or a failure after atocore was touched (`Ok(Err(Failed))`).
pub type Outcome = Result<std::result::Result<RestoreResponse, Failed>>;

/// `POST /admin/restore`: take the gate, then run [`orchestrate`] as its own task.
pub async fn restore(state: &Arc<State>, body: RestoreBody) -> Outcome {
    let stamp = Stamp::parse(&body.stamp)?;
    let guard = Gate::try_begin(state, "restore")?;
    let st = Arc::clone(state);
    state
        .tasks
        .spawn(async move {
            let _guard = guard;
            orchestrate(&st, &stamp, body.include_chroma, body.pre_snapshot).await
        })
        .await
        .map_err(|e| Error::Internal(format!("the restore task stopped: {e}")))?
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

/// Check Docker and both containers; 503 with the CLI route when it cannot work.
pub(crate) async fn preflight(state: &State) -> Result<()> {
    let d = &state.docker;
    d.ping().await?;
    for t in [Target::Atocore, Target::RestoreJob] {
        match d.inspect(t).await {
            Ok(s) if t == Target::RestoreJob && s.running => {
                return Err(Error::Busy(format!(
                    "the restore-job container `{}` is running already (an init run or another restore); wait for it to exit",
                    d.name(t)
                )));
            }
            Ok(_) => {}
            Err(Error::Docker { status: 404, .. }) => {
                return Err(Error::Unavailable(format!(
                    "there is no container `{}` (set {}); `docker compose up -d` creates both containers. Or restore by hand: {CLI_RESTORE}",
                    d.name(t),
                    match t {
                        Target::Atocore => "ATOCORE_CONTAINER",
                        Target::RestoreJob => "ATOCORE_RESTORE_CONTAINER",
                    }
                )));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How often the sidecar looks for a restore whose orchestrator died.
const LEFTOVER_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A restore whose orchestrator died (the sidecar was killed after writing its request,
/// and `docker compose up` let the init job perform it, possibly after this sidecar had
/// started) leaves the live state it moved aside with nobody to make the pre-restore
/// snapshot of it. Until shutdown, look for that every few seconds (three small file
/// reads) and make the snapshot; atocore may run meanwhile (only the aside copy is
/// read). The sidecar's own restores hold the operation gate until they have made
/// theirs, so a free gate with an aside copy pending means an orphan.
pub async fn finish_leftover_pre_restore(state: Arc<State>) {
    loop {
        if leftover_pending(&state).await {
            finish_leftover(&state).await;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(LEFTOVER_CHECK_INTERVAL) => {}
        }
    }
}

async fn leftover_pending(state: &Arc<State>) -> bool {
    let p = state.config.paths.clone();
    blocking(state, "check for a leftover restore", move || {
        Ok(restore::pending_aside(&p)?.is_some()
            && restore::pending_journal(&p)?.is_none()
            && init::pending_request(&p)?.is_none())
    })
    .await
    .unwrap_or(false)
}

async fn finish_leftover(state: &Arc<State>) {
    let Ok(_gate) = crate::operation::Gate::try_begin(state, "pre-restore snapshot") else {
        return;
    };
    // Checked again under the gate: a restore of this sidecar may just have finished.
    if !leftover_pending(state).await {
        return;
    }
    let p = state.config.paths.clone();
    match blocking(state, "finalize", move || Ok(restore::finalize(&p)?)).await {
        Ok(done) => tracing::warn!(
            snapshot = ?done.pre_restore_snapshot,
            kept = ?done.kept,
            warnings = ?done.warnings,
            "finished the pre-restore snapshot an interrupted restore left pending"
        ),
        Err(e) => tracing::error!(
            cause = %e,
            "could not make the pending pre-restore snapshot; run `atocore-restore-job finalize`"
        ),
    }
}

async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    operation::blocking(state, None, what, f).await
}

async fn build_sha(state: &Arc<State>) -> Option<String> {
    let url = state.config.atocore_url.clone();
    blocking(state, "build_sha", move || Ok(atocore::build_sha(&url)))
        .await
        .ok()
        .flatten()
}

/// Run an orchestrated restore of `stamp` (the caller holds the gate).
pub async fn orchestrate(
    state: &Arc<State>,
    stamp: &Stamp,
    include_chroma: Option<bool>,
    pre_snapshot: bool,
) -> Outcome {
    let started = Instant::now();
    let paths = state.config.paths.clone();
    if !paths.snapshot_dir(stamp).is_dir() {
        return Err(atocore_restore_job::Error::UnknownStamp {
            stamp: stamp.to_string(),
            dir: paths.snapshots_dir(),
        }
        .into());
    }
    preflight(state).await?;

    // 1. Validate and stage while atocore still runs.
    let (p, s) = (paths.clone(), stamp.to_string());
    let staged = blocking(state, "prepare", move || {
        Ok(restore::prepare(
            &p,
            &s,
            ChromaChoice::from_option(include_chroma),
        )?)
    })
    .await?;
    let build_sha_before = build_sha(state).await;
    let mut resp = RestoreResponse {
        stamp: stamp.to_string(),
        build_sha_before: build_sha_before.clone(),
        request_id: request_id(),
        ..RestoreResponse::default()
    };

    // 2. The request.
    let req = RestoreRequest {
        request_id: resp.request_id.clone(),
        stamp: stamp.to_string(),
        include_chroma,
        pre_snapshot,
        defer_pre_snapshot: true,
        prevalidated: true,
        requested_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)),
        requested_by: Some(format!("atocore-sidecar {}", env!("CARGO_PKG_VERSION"))),
    };
    if state.shutdown.is_cancelled() {
        unprepare(state).await;
        return Err(Error::ShuttingDown);
    }
    let (p, r) = (paths.clone(), req.clone());
    if let Err(e) = blocking(state, "write the restore request", move || {
        Ok(init::write_request(&p, &r)?)
    })
    .await
    {
        unprepare(state).await;
        return Err(e);
    }
    tracing::info!(
        op = "restore",
        stamp = %stamp,
        request_id = %req.request_id,
        staged_chroma = staged.chroma,
        "restore staged; stopping atocore"
    );

    // 3. Downtime: stop, job, result.
    let down = Instant::now();
    if let Err(e) = state
        .docker
        .stop(Target::Atocore, state.config.stop_timeout)
        .await
    {
        let p = paths.clone();
        let _ = blocking(state, "withdraw", move || Ok(init::withdraw_request(&p)?)).await;
        unprepare(state).await;
        let _ = state.docker.start(Target::Atocore).await;
        return Err(e);
    }
    let job = run_job(state, &req).await;
    let result = match job {
        Ok(r) => r,
        Err(e) => {
            return Ok(Err(after_job_error(state, resp, down, started, e).await));
        }
    };
    resp.restore_job_ms = Some(result.report.duration_ms);
    resp.staged_ahead = result.report.staged_ahead;
    fill(&mut resp, &result);

    if !result.ok {
        let journal = journal_pending(state).await;
        let aside = aside_pending(state).await;
        let why = result.report.error.clone().unwrap_or_else(|| ErrorBody {
            error: "restore_failed".into(),
            message: "the restore job reported a failure".into(),
        });
        if journal {
            return Ok(Err(left_stopped(state, resp, down, started, &why).await));
        }
        if !aside && !result.report.db_restored {
            // Refused before touching anything: atocore comes back on its own data.
            let message = format!(
                "the restore job refused `{stamp}` before changing anything ({}); atocore was started again on its unchanged data",
                why.message
            );
            let status = status_of(&why);
            return Ok(Err(restart_unchanged(
                state,
                resp,
                (down, started),
                why.error,
                message,
                status,
            )
            .await));
        }
        // The restored data failed its checks: roll back without starting atocore on it.
        let rb = rollback(state, false).await;
        return Ok(Err(after_rollback(
            state,
            resp,
            rb,
            down,
            started,
            format!("the restored data failed its checks ({})", why.message),
        )
        .await));
    }

    // 4. atocore back, healthy.
    match start_and_wait(state).await {
        Ok(()) => {
            resp.healthy = true;
            resp.downtime_ms = Some(down.elapsed().as_millis() as u64);
            resp.build_sha_after = build_sha(state).await;
        }
        Err(why) => {
            let rb = rollback(state, true).await;
            return Ok(Err(after_rollback(
                state,
                resp,
                rb,
                down,
                started,
                format!("atocore did not become healthy on the restored data: {why}"),
            )
            .await));
        }
    }

    // 5. The pre-restore snapshot, now that atocore serves again.
    let p = paths.clone();
    match blocking(state, "finalize", move || Ok(restore::finalize(&p)?)).await {
        Ok(done) => {
            resp.pre_restore_snapshot = done.pre_restore_snapshot;
            resp.warnings.extend(done.warnings);
        }
        Err(e) => {
            tracing::error!(cause = %e, "the pre-restore snapshot could not be made; the next restore or init run makes it");
            resp.warnings
                .push(format!("pre_restore_snapshot_failed: {e}"));
        }
    }
    if resp.build_sha_before.is_some() && resp.build_sha_before != resp.build_sha_after {
        resp.warnings.push("build_sha_changed".into());
    }
    resp.duration_ms = started.elapsed().as_millis() as u64;
    state.summary.invalidate();
    state.metrics.record_restore(true, false, resp.downtime_ms);
    tracing::info!(
        op = "restore",
        outcome = "ok",
        stamp = %resp.stamp,
        pre_restore_snapshot = ?resp.pre_restore_snapshot,
        downtime_ms = resp.downtime_ms,
        restore_job_ms = resp.restore_job_ms,
        duration_ms = resp.duration_ms,
        staged_ahead = resp.staged_ahead,
        "restore finished; atocore healthy"
    );
    Ok(Ok(resp))
}

/// Drop a staging made ahead for a restore this sidecar gave up on before stopping
/// atocore (a full database copy beside the live one must not linger).
async fn unprepare(state: &Arc<State>) {
    let p = state.config.paths.clone();
    if let Err(e) = blocking(state, "unprepare", move || Ok(restore::unprepare(&p)?)).await {
        tracing::warn!(cause = %e, "could not drop the staged restore; the next restore replaces it");
    }
}

fn fill(resp: &mut RestoreResponse, r: &RestoreResult) {
    let r = &r.report;
    resp.pre_restore_snapshot = r.pre_restore_snapshot.clone();
    resp.db_restored = r.db_restored;
    resp.registry_restored = r.registry_restored;
    resp.chroma_restored = r.chroma_restored;
    resp.restored_integrity_ok = r.restored_integrity_ok;
}

fn status_of(e: &ErrorBody) -> hyper::StatusCode {
    match e.error.as_str() {
        "snapshot_invalid" => hyper::StatusCode::UNPROCESSABLE_ENTITY,
        "busy" | "database_in_use" => hyper::StatusCode::CONFLICT,
        "bad_stamp" | "bad_request" => hyper::StatusCode::BAD_REQUEST,
        "unknown_stamp" => hyper::StatusCode::NOT_FOUND,
        _ => hyper::StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn journal_pending(state: &Arc<State>) -> bool {
    let p = state.config.paths.clone();
    blocking(state, "journal", move || {
        Ok(restore::pending_journal(&p).ok().flatten().is_some())
    })
    .await
    .unwrap_or(true)
}

async fn aside_pending(state: &Arc<State>) -> bool {
    let p = state.config.paths.clone();
    blocking(state, "aside", move || {
        Ok(restore::pending_aside(&p).ok().flatten().is_some())
    })
    .await
    .unwrap_or(false)
}

/// Write nothing; start the restore-job container, wait for it, read its result.
async fn run_job(state: &Arc<State>, req: &RestoreRequest) -> Result<RestoreResult> {
    let d = &state.docker;
    d.start(Target::RestoreJob).await?;
    let code = wait_exit(state, Target::RestoreJob, state.config.restore_timeout).await?;
    let p = state.config.paths.clone();
    let result = blocking(state, "read the restore result", move || {
        Ok(init::last_result(&p)?)
    })
    .await?;
    match result {
        Some(r) if r.request_id == req.request_id => {
            tracing::info!(
                exit_code = code,
                ok = r.ok,
                duration_ms = r.report.duration_ms,
                "restore job finished"
            );
            Ok(r)
        }
        _ => {
            let logs = d
                .logs(Target::RestoreJob, 20)
                .await
                .unwrap_or_else(|e| format!("(logs unavailable: {e})"));
            tracing::error!(exit_code = code, logs = %logs, "the restore job wrote no result for this request");
            Err(Error::RestoreFailed(format!(
                "the restore-job container `{}` exited with code {code} without a result for request {}; its last log lines: {}",
                d.name(Target::RestoreJob),
                req.request_id,
                logs.trim()
            )))
        }
    }
}

/// Wait until the container stops; its exit code.
async fn wait_exit(state: &State, t: Target, limit: Duration) -> Result<i64> {
    let d = &state.docker;
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(Error::RestoreFailed(format!(
                "the restore-job container `{}` did not finish within {} s (ATOCORE_RESTORE_TIMEOUT_SECS); it may still be running",
                d.name(t),
                limit.as_secs()
            )));
        }
        // The engine's wait long-polls; the client's timeout may cut it, so re-check.
        if let Ok(Ok(code)) = tokio::time::timeout(left, d.wait(t)).await {
            return Ok(code);
        }
        let s = d.inspect(t).await?;
        if !s.running {
            return Ok(s.exit_code.unwrap_or(-1));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Start atocore and wait until it is healthy (Docker health `healthy`, or its own
/// `/health` answering `ok`). `Err` says why not.
async fn start_and_wait(state: &Arc<State>) -> std::result::Result<(), String> {
    let d = &state.docker;
    d.start(Target::Atocore).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + state.config.healthy_timeout;
    let url = state.config.atocore_url.clone();
    loop {
        match d.inspect(Target::Atocore).await {
            Ok(s) if !s.running && (s.status == "exited" || s.status == "dead") => {
                return Err(format!(
                    "container `{}` exited with code {}",
                    d.name(Target::Atocore),
                    s.exit_code.unwrap_or(-1)
                ));
            }
            Ok(s) if s.status == "restarting" => {
                // Its restart policy brings it back after a crash: it did not start.
                return Err(format!(
                    "container `{}` crashed after it started and is restarting",
                    d.name(Target::Atocore)
                ));
            }
            Ok(s) if s.health.as_deref() == Some("healthy") => return Ok(()),
            Ok(s) if s.health.as_deref() == Some("unhealthy") => {
                return Err("Docker reports it unhealthy".into());
            }
            _ => {}
        }
        let u = url.clone();
        let ok = blocking(state, "health", move || {
            Ok(atocore::health(&u, Duration::from_secs(1)).is_ok_and(|h| h.is_ok()))
        })
        .await
        .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not healthy within {} s (ATOCORE_HEALTHY_TIMEOUT_SECS)",
                state.config.healthy_timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restore the pre-restore snapshot the same way. `atocore_running`: stop it first.
async fn rollback(state: &Arc<State>, atocore_running: bool) -> Rollback {
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
    let pre = match blocking(state, "finalize", move || Ok(restore::finalize(&p)?)).await {
        Ok(done) => match done.pre_restore_snapshot {
            Some(pre) => pre,
            None if !done.kept.is_empty() => {
                rb.error = Some(format!(
                    "there is no pre-restore snapshot to roll back to: {}",
                    done.warnings.join("; ")
                ));
                return rb;
            }
            None => {
                rb.error = Some(
                    "there is no pre-restore snapshot to roll back to (pre_snapshot was false)"
                        .into(),
                );
                return rb;
            }
        },
        Err(e) => {
            rb.error = Some(format!("the pre-restore snapshot could not be made: {e}"));
            return rb;
        }
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
    if let Err(e) = blocking(state, "write the rollback request", move || {
        Ok(init::write_request(&p, &r)?)
    })
    .await
    {
        rb.error = Some(format!("could not write the rollback request: {e}"));
        return rb;
    }
    match run_job(state, &req).await {
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
    match start_and_wait(state).await {
        Ok(()) => rb.healthy = true,
        Err(why) => rb.error = Some(format!("atocore not healthy after the rollback: {why}")),
    }
    rb
}

async fn after_rollback(
    state: &Arc<State>,
    mut resp: RestoreResponse,
    rb: Rollback,
    down: Instant,
    started: Instant,
    why: String,
) -> Failed {
    resp.rolled_back = rb.restored_integrity_ok;
    resp.healthy = rb.healthy;
    if resp.pre_restore_snapshot.is_none() {
        // The rollback restored it, so it exists: name it where clients look.
        resp.pre_restore_snapshot = rb.stamp.clone();
    }
    resp.downtime_ms = Some(down.elapsed().as_millis() as u64);
    if rb.healthy {
        resp.build_sha_after = build_sha(state).await;
    }
    resp.error = Some("restore_failed".into());
    resp.message = Some(match (&rb.error, rb.healthy) {
        (None, true) => format!(
            "{why}; rolled back to the pre-restore snapshot `{}` and atocore is healthy again",
            rb.stamp.as_deref().unwrap_or("?")
        ),
        (err, _) => format!(
            "{why}; the rollback did not complete ({}); check `docker logs {}` and restore by hand: {CLI_RESTORE}",
            err.as_deref().unwrap_or("atocore not healthy"),
            state.config.atocore_container
        ),
    });
    resp.rollback = Some(rb);
    finish_failed(
        state,
        resp,
        started,
        hyper::StatusCode::INTERNAL_SERVER_ERROR,
    )
}

async fn after_job_error(
    state: &Arc<State>,
    resp: RestoreResponse,
    down: Instant,
    started: Instant,
    e: Error,
) -> Failed {
    // Did the job act on the request at all?
    let p = state.config.paths.clone();
    let still_requested = blocking(state, "request", move || {
        Ok(init::pending_request(&p).ok().flatten().is_some())
    })
    .await
    .unwrap_or(false);
    let why = ErrorBody {
        error: e.code().into(),
        message: e.to_string(),
    };
    if journal_pending(state).await {
        return left_stopped(state, resp, down, started, &why).await;
    }
    if still_requested {
        let p = state.config.paths.clone();
        let _ = blocking(state, "withdraw", move || Ok(init::withdraw_request(&p)?)).await;
        unprepare(state).await;
    }
    if aside_pending(state).await {
        let rb = rollback(state, false).await;
        return after_rollback(state, resp, rb, down, started, why.message).await;
    }
    let message = format!(
        "{}; nothing was restored and atocore was started again on its unchanged data",
        why.message
    );
    restart_unchanged(
        state,
        resp,
        (down, started),
        why.error,
        message,
        hyper::StatusCode::INTERNAL_SERVER_ERROR,
    )
    .await
}

/// Nothing live was changed: start atocore again on its own data and answer with the
/// failure (the pair: when atocore went down, when the call started).
async fn restart_unchanged(
    state: &Arc<State>,
    mut resp: RestoreResponse,
    (down, started): (Instant, Instant),
    error: String,
    message: String,
    status: hyper::StatusCode,
) -> Failed {
    resp.healthy = start_and_wait(state).await.is_ok();
    resp.downtime_ms = Some(down.elapsed().as_millis() as u64);
    resp.build_sha_after = build_sha(state).await;
    resp.error = Some(error);
    resp.message = Some(message);
    finish_failed(state, resp, started, status)
}

async fn left_stopped(
    state: &Arc<State>,
    mut resp: RestoreResponse,
    down: Instant,
    started: Instant,
    why: &ErrorBody,
) -> Failed {
    resp.healthy = false;
    resp.downtime_ms = Some(down.elapsed().as_millis() as u64);
    resp.error = Some("restore_unfinished".into());
    resp.message = Some(format!(
        "the restore of `{}` stopped halfway ({}) and is journaled; atocore is left stopped so it never serves a mix. Run `docker compose up -d`: the init job finishes the restore first (or restore by hand: {CLI_RESTORE})",
        resp.stamp, why.message
    ));
    finish_failed(
        state,
        resp,
        started,
        hyper::StatusCode::INTERNAL_SERVER_ERROR,
    )
}

fn finish_failed(
    state: &State,
    mut resp: RestoreResponse,
    started: Instant,
    status: hyper::StatusCode,
) -> Failed {
    resp.duration_ms = started.elapsed().as_millis() as u64;
    state.summary.invalidate();
    state
        .metrics
        .record_restore(false, resp.rolled_back, resp.downtime_ms);
    tracing::error!(
        op = "restore",
        outcome = "failed",
        stamp = %resp.stamp,
        rolled_back = resp.rolled_back,
        healthy = resp.healthy,
        downtime_ms = resp.downtime_ms,
        duration_ms = resp.duration_ms,
        cause = resp.message.as_deref().unwrap_or(""),
        "restore failed"
    );
    Failed {
        status,
        response: resp,
    }
}
