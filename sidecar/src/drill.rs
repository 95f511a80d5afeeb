//! The live restore drill (`POST /admin/drill`) and its history (`GET /admin/drill`).
//!
//! The drill (docs/design.md §1) proves on the live system that a restore brings data back:
//! 1. a snapshot with chroma (`kind: drill`; atocore paused for the chroma copy);
//! 2. a marker memory `DRILL-MARKER-<id>` (project `drill`) through atocore's
//!    `POST /memory`, seen in `GET /memory?project=drill`;
//! 3. an orchestrated restore of the drill snapshot ([`crate::orchestrator`]);
//! 4. checks: the marker is gone, atocore's `/health` is `ok`, `build_sha` unchanged;
//! 5. the record (stamps, pass/fail, each check, downtime) is appended to
//!    `<backup_dir>/drills.jsonl`, one JSON object per line, fsynced.
//!
//! A drill that cannot start (Docker unreachable, another operation running) records
//! nothing and answers 503/409; one that started is always recorded. Checks not reached
//! are `null`.
//!
//! The off-site drill (`{"offsite": true}`) needs neither Docker nor atocore: it
//! fetches the newest remote snapshot with `ATOCORE_OFFSITE_IDENTITY_FILE` into a
//! scratch storage root under the backup dir, validates it there and removes it; its
//! record has `offsite: true` and `offsite_checks`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atocore_restore_job::{Kind, Stamp};
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::atocore;
use crate::error::{Error, Result};
use crate::operation;
use crate::orchestrator::{self, RestoreFailure};
use crate::state::State;
use crate::summary::DRILLS_FILE;

/// Body of `POST /admin/drill`: `{}` for the live drill, `{"offsite": true}` for the
/// off-site drill (unknown fields are refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillBody {
    #[serde(default)]
    pub offsite: bool,
}

/// The checks of an off-site drill; `None`: not reached.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OffsiteChecks {
    /// The newest remote snapshot was downloaded, decrypted and every hash matched.
    pub fetched: Option<bool>,
    /// The engine's full validation passed on the fetched copy.
    pub valid: Option<bool>,
    /// The scratch folder was removed afterwards.
    pub scratch_removed: Option<bool>,
}

/// The scratch storage roots of off-site drills: `<backup dir>/.offsite-drill-<id>`.
const SCRATCH_PREFIX: &str = ".offsite-drill-";

/// Each check of a drill; `None`: not reached.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checks {
    pub snapshot_taken: Option<bool>,
    pub marker_written: Option<bool>,
    pub marker_visible: Option<bool>,
    pub restore_ok: Option<bool>,
    pub marker_gone: Option<bool>,
    pub atocore_healthy: Option<bool>,
    pub build_sha_unchanged: Option<bool>,
}

impl Checks {
    fn all_passed(&self) -> bool {
        [
            self.snapshot_taken,
            self.marker_written,
            self.marker_visible,
            self.restore_ok,
            self.marker_gone,
            self.atocore_healthy,
            self.build_sha_unchanged,
        ]
        .iter()
        .all(|c| *c == Some(true))
    }
}

/// One drill, as appended to `drills.jsonl` and returned by `POST /admin/drill`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrillRecord {
    pub id: String,
    pub started_at: String,
    pub finished_at: String,
    pub passed: bool,
    /// The drill snapshot restored.
    pub stamp: Option<String>,
    pub pre_restore_snapshot: Option<String>,
    pub marker: String,
    pub checks: Checks,
    pub downtime_ms: Option<u64>,
    pub rolled_back: bool,
    pub build_sha_before: Option<String>,
    pub build_sha_after: Option<String>,
    pub duration_ms: u64,
    /// `true` for the off-site drill (a fetch of the newest remote snapshot into a
    /// scratch folder, validated there; `checks` then stay `null`).
    #[serde(default)]
    pub offsite: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offsite_checks: Option<OffsiteChecks>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `GET /admin/drill`.
#[derive(Debug, Clone, Serialize)]
pub struct DrillHistory {
    pub drills_file: String,
    /// Oldest first.
    pub drills: Vec<Value>,
}

/// Run the drill `body` asks for (takes the gate; runs as its own task, like a restore).
pub async fn run(state: &Arc<State>, body: DrillBody) -> Result<DrillRecord> {
    if body.offsite {
        return run_offsite(state).await;
    }
    let guard = state.begin("drill")?;
    crate::containers::preflight(state).await?;
    let st = Arc::clone(state);
    state
        .tasks
        .spawn(async move {
            let _guard = guard;
            drill(&st).await
        })
        .await
        .map_err(|e| Error::Internal(format!("the drill task stopped: {e}")))?
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Run `f(atocore_url)` on a blocking thread (atocore's client is blocking).
async fn call<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&str) -> std::result::Result<T, String> + Send + 'static,
) -> std::result::Result<T, String> {
    let url = state.config.atocore_url.clone();
    operation::blocking(state, None, "atocore call", move || Ok(f(&url)))
        .await
        .map_err(|e| e.to_string())?
}

async fn marker_present(state: &Arc<State>, marker: &str) -> std::result::Result<bool, String> {
    let m = marker.to_string();
    call(state, move |url| {
        let (status, body) =
            atocore::get_json(url, "/memory?project=drill", Duration::from_secs(10))?;
        if status != 200 {
            return Err(format!(
                "GET /memory?project=drill answered {status}: {body}"
            ));
        }
        Ok(body.to_string().contains(&m))
    })
    .await
}

async fn drill(state: &Arc<State>) -> Result<DrillRecord> {
    let started = Instant::now();
    let id = Utc::now().format("%Y%m%dT%H%M%S%3fZ").to_string();
    let mut r = DrillRecord {
        marker: format!("DRILL-MARKER-{id}"),
        id,
        started_at: now(),
        ..DrillRecord::default()
    };
    let outcome = steps(state, &mut r).await;
    if let Err(msg) = outcome {
        r.error = Some("drill_failed".into());
        r.message = Some(msg);
    }
    r.passed = r.checks.all_passed();
    if !r.passed && r.error.is_none() {
        r.error = Some("drill_failed".into());
        r.message = Some("a drill check failed; see `checks`".into());
    }
    r.duration_ms = started.elapsed().as_millis() as u64;
    r.finished_at = now();
    record(state, r).await
}

/// Append `r` to `drills.jsonl`, count and log it.
async fn record(state: &Arc<State>, r: DrillRecord) -> Result<DrillRecord> {
    let path = state.config.paths.backup_dir.join(DRILLS_FILE);
    let line = serde_json::to_string(&r).unwrap_or_else(|_| "{}".into());
    operation::blocking(state, None, "append the drill record", move || {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("open", &path))?;
        f.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(Error::io("append to", &path))
    })
    .await?;
    state.summary.invalidate();
    state.metrics.record_drill(r.passed);
    if r.passed {
        tracing::info!(op = "drill", outcome = "passed", offsite = r.offsite, stamp = ?r.stamp, downtime_ms = r.downtime_ms, duration_ms = r.duration_ms, "drill passed");
    } else {
        tracing::error!(op = "drill", outcome = "failed", offsite = r.offsite, stamp = ?r.stamp, checks = ?r.checks, cause = r.message.as_deref().unwrap_or(""), duration_ms = r.duration_ms, "drill failed");
    }
    Ok(r)
}

/// The drill's steps; `Err` says where it stopped.
async fn steps(state: &Arc<State>, r: &mut DrillRecord) -> std::result::Result<(), String> {
    // 1. The drill snapshot.
    let meta = operation::backup_with(state, None, true, Kind::Drill).await;
    r.checks.snapshot_taken = Some(meta.is_ok());
    let meta = meta.map_err(|e| format!("the drill snapshot failed: {e}"))?;
    r.stamp = Some(meta.stamp.clone());

    // 2. The marker.
    let body = json!({
        "memory_type": "episodic",
        "content": r.marker,
        "project": "drill",
        "confidence": 1.0,
    });
    let written = call(state, move |url| {
        atocore::post_json(url, "/memory", &body, Duration::from_secs(10))
    })
    .await;
    let ok = matches!(&written, Ok((200 | 201, _)));
    r.checks.marker_written = Some(ok);
    if !ok {
        return Err(format!(
            "POST /memory did not store the marker: {written:?}"
        ));
    }
    let visible = marker_present(state, &r.marker).await?;
    r.checks.marker_visible = Some(visible);
    if !visible {
        return Err("the marker is not listed by GET /memory?project=drill".into());
    }

    // 3. The restore.
    let stamp = Stamp::parse(&meta.stamp).map_err(|e| e.to_string())?;
    let resp = match orchestrator::orchestrate(state, &stamp, None, true).await {
        Ok(resp) => resp,
        Err(RestoreFailure::Failed { response, .. }) => {
            let resp = *response;
            r.checks.restore_ok = Some(false);
            r.downtime_ms = resp.downtime_ms;
            r.rolled_back = resp.rolled_back;
            r.build_sha_before = resp.build_sha_before;
            r.build_sha_after = resp.build_sha_after;
            return Err(format!(
                "the restore failed: {}",
                resp.message.unwrap_or_default()
            ));
        }
        Err(RestoreFailure::Refused(e)) => {
            r.checks.restore_ok = Some(false);
            return Err(format!("the restore was refused: {e}"));
        }
    };
    r.checks.restore_ok = Some(resp.restore.restored_integrity_ok && resp.healthy);
    r.pre_restore_snapshot = resp.restore.pre_restore_snapshot.clone();
    r.downtime_ms = resp.downtime_ms;
    r.build_sha_before = resp.build_sha_before.clone();
    r.build_sha_after = resp.build_sha_after.clone();

    // 4. The checks.
    let present = marker_present(state, &r.marker).await?;
    r.checks.marker_gone = Some(!present);
    let health = call(state, |url| atocore::health(url, Duration::from_secs(5))).await;
    r.checks.atocore_healthy = Some(health.is_ok_and(|h| h.is_ok()));
    r.checks.build_sha_unchanged =
        Some(r.build_sha_before.is_some() && r.build_sha_before == r.build_sha_after);
    Ok(())
}

/// The off-site drill: fetch the newest remote snapshot with
/// `ATOCORE_OFFSITE_IDENTITY_FILE` into a scratch storage root under the backup dir,
/// validate it there with the engine, remove the scratch folder. Live data and the
/// real snapshots folder are never touched. Refused (nothing recorded) without a
/// target or an identity file.
async fn run_offsite(state: &Arc<State>) -> Result<DrillRecord> {
    let offsite = state.config.offsite.clone().ok_or_else(|| {
        atocore_restore_job::Error::OffsiteNotConfigured(
            "the off-site drill needs a target: set ATOCORE_OFFSITE_URL and restart the sidecar"
                .into(),
        )
    })?;
    let identity = state.config.offsite_identity_file.clone().ok_or_else(|| {
        atocore_restore_job::Error::OffsiteNotConfigured(
            "the off-site drill decrypts what it fetches: set ATOCORE_OFFSITE_IDENTITY_FILE to the age identity file (mounted read-only) and restart the sidecar".into(),
        )
    })?;
    let guard = state.begin("offsite drill")?;
    let started = Instant::now();
    let id = Utc::now().format("%Y%m%dT%H%M%S%3fZ").to_string();
    let backup_dir = state.config.paths.backup_dir.clone();
    let host = state.config.paths.clone();
    let scratch = backup_dir.join(format!("{SCRATCH_PREFIX}{id}"));
    let mut r = DrillRecord {
        id,
        started_at: now(),
        offsite: true,
        ..DrillRecord::default()
    };
    let (checks, stamp, failure) = operation::blocking(state, Some(guard), "offsite drill", move || {
        let mut checks = OffsiteChecks::default();
        let mut stamp = None;
        // Scratch folders of a drill the sidecar died in.
        if let Ok(rd) = std::fs::read_dir(&backup_dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let paths = atocore_restore_job::Paths::from_root(&scratch);
        // The host's own repository keys are trusted: the drill checks what is on the
        // target against the key this host pushed with.
        let failure = match offsite.fetch_into(&paths, "latest", &identity, Some(&host)) {
            Err(e) => {
                checks.fetched = Some(false);
                Some(format!("the fetch failed ({}): {e}", e.code()))
            }
            Ok(f) => {
                checks.fetched = Some(true);
                stamp = Some(f.stamp.clone());
                match Stamp::parse(&f.stamp)
                    .and_then(|s| atocore_restore_job::validate::validate(&paths, &s))
                {
                    Ok(v) if v.valid => {
                        checks.valid = Some(true);
                        None
                    }
                    Ok(v) => {
                        checks.valid = Some(false);
                        Some(format!(
                            "the fetched snapshot fails validation: {}",
                            v.errors.join(", ")
                        ))
                    }
                    Err(e) => {
                        checks.valid = Some(false);
                        Some(format!("validating the fetched snapshot: {e}"))
                    }
                }
            }
        };
        let removed = match std::fs::remove_dir_all(&scratch) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::error!(path = %scratch.display(), cause = %e, "could not remove the off-site drill's scratch folder; remove it by hand");
                false
            }
        };
        checks.scratch_removed = Some(removed);
        let failure = failure.or_else(|| {
            (!removed).then(|| format!("could not remove the scratch folder {}", scratch.display()))
        });
        Ok((checks, stamp, failure))
    })
    .await?;
    r.passed = failure.is_none()
        && [checks.fetched, checks.valid, checks.scratch_removed]
            .iter()
            .all(|c| *c == Some(true));
    r.stamp = stamp;
    r.offsite_checks = Some(checks);
    if let Some(msg) = failure {
        r.error = Some("drill_failed".into());
        r.message = Some(msg);
    }
    r.duration_ms = started.elapsed().as_millis() as u64;
    r.finished_at = now();
    record(state, r).await
}

/// The drill records, oldest first.
pub async fn history(state: &Arc<State>) -> Result<DrillHistory> {
    let path = state.config.paths.backup_dir.join(DRILLS_FILE);
    let p = path.clone();
    let drills = tokio::task::spawn_blocking(move || match std::fs::read_to_string(&p) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", &p)(e)),
    })
    .await
    .map_err(|e| Error::Internal(format!("reading drills: {e}")))??;
    Ok(DrillHistory {
        drills_file: path.display().to_string(),
        drills,
    })
}
