//! The container steps of a restore: check that Docker and both containers are there,
//! run the restore-job container on a request and read its result, start atocore and
//! wait until it is healthy. Only calls on the Docker allowlist ([`crate::docker`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use atocore_restore_job::init::{self, RestoreRequest, RestoreResult};

use crate::atocore;
use crate::docker::Target;
use crate::error::{CLI_RESTORE, Error, Result};
use crate::operation;
use crate::state::State;

/// Run blocking engine work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    operation::blocking(state, None, what, f).await
}

/// atocore's `build_sha`, when it answers.
pub(crate) async fn build_sha(state: &Arc<State>) -> Option<String> {
    let url = state.config.atocore_url.clone();
    blocking(state, "build_sha", move || Ok(atocore::build_sha(&url)))
        .await
        .ok()
        .flatten()
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

/// Start the restore-job container, wait for it, read its result for `req`.
pub(crate) async fn run_job(state: &Arc<State>, req: &RestoreRequest) -> Result<RestoreResult> {
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
pub(crate) async fn start_and_wait(state: &Arc<State>) -> std::result::Result<(), String> {
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
