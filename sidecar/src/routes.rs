//! The HTTP API: routing, auth, and one handler per endpoint.
//!
//! | endpoint | auth | body | answer |
//! |---|---|---|---|
//! | `GET /health` | no | | [`crate::health::HealthReport`] |
//! | `GET /metrics` | no | | Prometheus text |
//! | `POST /admin/backup` | yes | `{"include_chroma": bool}` | the snapshot's metadata (kind `manual`) |
//! | `GET /admin/backup` | yes | | the body of `atocore-restore-job list` |
//! | `GET /admin/backup/<STAMP>/validate` | yes | | the body of `validate` (200 valid or not) |
//! | `POST /admin/backup/prune` | yes | `{"dry_run": bool}` | the body of `prune` |
//! | `POST /admin/restore` | yes | `{"stamp", "include_chroma", "pre_snapshot"}` | see [`crate::orchestrator`] |
//! | `POST /admin/drill`, `GET /admin/drill` | yes | `{"offsite": bool}` | see [`crate::drill`] |
//! | `POST /admin/offsite/push` | yes | `{}` | the body of `offsite push --missing` |
//! | `GET /admin/offsite` | yes | | [`crate::operation::OffsiteOverview`] |
//!
//! Order of checks: auth for anything under `/admin` (so unknown admin paths say 401,
//! not 404, to clients without the token), route (404), method (405), body (413, 400),
//! then the operation (409 when another one runs). Nothing changes before all input
//! checks passed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use atocore_restore_job::{Kind, Stamp, validate};
use chrono::Utc;
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::json::{self, Reply};
use crate::metrics::Scrape;
use crate::operation::{self};
use crate::orchestrator::RestoreFailure;
use crate::state::State;
use crate::{auth, drill, health, orchestrator};

/// Body of `POST /admin/backup`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {
    #[serde(default)]
    include_chroma: bool,
}

/// A body with no fields (`{}` or nothing), as `POST /admin/offsite/push` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmptyBody {}

/// Body of `POST /admin/backup/prune`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    #[serde(default)]
    dry_run: bool,
}

/// The service function: never fails; every error becomes the contract's JSON body.
pub async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Reply, Infallible> {
    let started = Instant::now();
    let (req, body) = req.into_parts();
    let mut body = Some(body);
    let method = req.method.clone();
    let path = req.uri.path().to_string();
    let mut reply = match route(&req, &mut body, &state).await {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(%method, %path, code = e.code(), cause = %e, "request failed");
            }
            json::error(&e)
        }
    };
    // A body left unread (refused early, or too large) is drained after the answer.
    json::finish(&mut reply, body, state.shutdown.clone());
    tracing::debug!(
        %method,
        %path,
        status = reply.status().as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    Ok(reply)
}

fn allow(req: &Parts, allowed: &'static str) -> Result<()> {
    let m = req.method.as_str();
    if allowed.split(", ").any(|a| a == m) {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed {
            method: m.to_string(),
            path: req.uri.path().to_string(),
            allowed,
        })
    }
}

async fn route(req: &Parts, body: &mut Option<Incoming>, state: &Arc<State>) -> Result<Reply> {
    let path = req.uri.path().to_string();
    if path == "/admin" || path.starts_with("/admin/") {
        auth::check(&req.headers, state.config.token.as_deref())?;
    }
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
    match segments.as_slice() {
        ["health"] => {
            allow(req, "GET")?;
            Ok(json::reply(StatusCode::OK, &health::report(state).await))
        }
        ["metrics"] => {
            allow(req, "GET")?;
            Ok(metrics(state).await)
        }
        ["admin", "backup"] => {
            allow(req, "GET, POST")?;
            if req.method == Method::GET {
                list(state).await
            } else {
                let body: BackupBody = read(req, body, state).await?;
                let meta = operation::backup(state, body.include_chroma, Kind::Manual).await?;
                // Off-site: pushed after the answer, as its own operation.
                operation::offsite_push_in_background(state);
                Ok(json::reply(StatusCode::OK, &meta))
            }
        }
        ["admin", "backup", "prune"] => {
            allow(req, "POST")?;
            let body: PruneBody = read(req, body, state).await?;
            let r = operation::prune(state, body.dry_run).await?;
            Ok(json::reply(StatusCode::OK, &r))
        }
        ["admin", "backup", stamp, "validate"] => {
            allow(req, "GET")?;
            validate(state, stamp).await
        }
        ["admin", "restore"] => {
            allow(req, "POST")?;
            let body: orchestrator::RestoreBody = read(req, body, state).await?;
            match orchestrator::restore(state, body).await {
                Ok(r) => Ok(json::reply(StatusCode::OK, &r)),
                Err(RestoreFailure::Failed { status, response }) => {
                    Ok(json::reply(status, &response))
                }
                Err(RestoreFailure::Refused(e)) => Err(e),
            }
        }
        ["admin", "offsite", "push"] => {
            allow(req, "POST")?;
            let _: EmptyBody = read(req, body, state).await?;
            let r = operation::offsite_push(state).await?;
            Ok(json::reply(StatusCode::OK, &r))
        }
        ["admin", "offsite"] => {
            allow(req, "GET")?;
            let r = operation::offsite_list(state).await?;
            Ok(json::reply(StatusCode::OK, &r))
        }
        ["admin", "wal"] => {
            allow(req, "GET")?;
            wal(state).await
        }
        ["admin", "drill"] => {
            allow(req, "GET, POST")?;
            if req.method == Method::GET {
                let history = drill::history(state).await?;
                Ok(json::reply(StatusCode::OK, &history))
            } else {
                let body: drill::DrillBody = read(req, body, state).await?;
                let r = drill::run(state, body).await?;
                let status = if r.passed {
                    StatusCode::OK
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                Ok(json::reply(status, &r))
            }
        }
        _ => Err(Error::NotFound {
            method: req.method.to_string(),
            path,
        }),
    }
}

async fn read<T: serde::de::DeserializeOwned>(
    req: &Parts,
    body: &mut Option<Incoming>,
    state: &State,
) -> Result<T> {
    json::read(
        &req.headers,
        body,
        state.config.max_body_bytes,
        state.config.body_timeout,
    )
    .await
}

async fn list(state: &Arc<State>) -> Result<Reply> {
    let listing = state.summary.listing(&state.config.paths).await;
    match &listing.body {
        Ok(body) => Ok(json::bytes(StatusCode::OK, body.clone())),
        Err(e) => Err(Error::Internal(format!("listing snapshots: {e}"))),
    }
}

/// `GET /admin/wal`: the stream's status and the recoverable windows.
async fn wal(state: &Arc<State>) -> Result<Reply> {
    let paths = state.config.paths.clone();
    let listed = tokio::task::spawn_blocking(move || {
        atocore_restore_job::snapshot::list_with_windows(&paths)
    })
    .await
    .map_err(|e| Error::Internal(format!("listing the WAL windows: {e}")))??;
    Ok(json::reply(
        StatusCode::OK,
        &serde_json::json!({
            "stream": state.wal.status(),
            "windows": listed.windows,
        }),
    ))
}

async fn validate(state: &Arc<State>, stamp: &str) -> Result<Reply> {
    let stamp = Stamp::parse(stamp)?;
    let paths = state.config.paths.clone();
    let report = tokio::task::spawn_blocking(move || validate::validate(&paths, &stamp))
        .await
        .map_err(|e| Error::Internal(format!("validating: {e}")))??;
    Ok(json::reply(StatusCode::OK, &report))
}

async fn metrics(state: &Arc<State>) -> Reply {
    let listing = state.summary.listing(&state.config.paths).await;
    let docker = state.docker.reachability().await;
    let running = state.gate.running();
    let now = Utc::now();
    if state.config.offsite.is_some() {
        let newest = state.offsite.remote().and_then(|r| r.newest());
        let verify = state
            .offsite
            .last_verify(&state.config.paths)
            .and_then(|v| Some((v.at()?, v.ok, v.problems)));
        state.metrics.note_offsite(newest, verify);
    }
    let text = state.metrics.render(&Scrape {
        summary: &listing.summary,
        docker_up: docker.reachable,
        operation_running: running.as_ref().map(|r| r.operation),
        paused: state.paused.is_set(),
        next_run: state
            .config
            .schedule
            .as_ref()
            .and_then(|s| s.next_after(now))
            .map(|f| f.at),
        now,
        wal: state.wal.status(),
    });
    json::text(crate::metrics::CONTENT_TYPE, text)
}
