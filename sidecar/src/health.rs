//! `GET /health`: the sidecar's own status.
//!
//! `status` is `degraded` when there is no valid snapshot or the newest one not known
//! to be broken is older than the staleness setting (default 26 h), and, with an
//! off-site target, when the last push failed, the newest remote snapshot is older than
//! `ATOCORE_OFFSITE_MAX_AGE` (as last seen: `/health` never waits for the target), or
//! the last verify found problems; else `ok`. The HTTP status is 200 either way: the
//! sidecar itself works; `degraded` is about the backups.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::docker::Reachability;
use crate::gate::Running;
use crate::offsite::{self, VerifyRecord};
use crate::operation;
use crate::state::State;
use crate::summary::Listing;

/// The body of `/health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// `ok` or `degraded`.
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    pub docker: Reachability,
    /// The newest snapshot not known to be broken.
    pub last_backup: Option<LastBackup>,
    pub stale_after_seconds: u64,
    pub snapshots: usize,
    pub operation: Option<Running>,
    pub schedule: Option<ScheduleStatus>,
    /// The last line of `drills.jsonl`, as written.
    pub last_drill: Option<Value>,
    /// Off-site replication, when a target is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<OffsiteStatus>,
    /// Continuous WAL capture, when on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<crate::walstream::WalStatus>,
    /// Why `status` is `degraded` (empty when `ok`).
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastBackup {
    pub stamp: String,
    pub kind: &'static str,
    pub include_chroma: bool,
    pub age_seconds: i64,
    pub valid: Option<bool>,
}

/// What `/health` says of off-site replication: pushes since the sidecar started, the
/// target as last seen (never listed by `/health` itself), the last verify.
#[derive(Debug, Clone, Serialize)]
pub struct OffsiteStatus {
    pub last_success_at: Option<String>,
    pub last_failure_at: Option<String>,
    /// When the target was last seen (push, prune or list); `null`: not yet.
    pub remote_seen_at: Option<String>,
    /// The newest snapshot on the target, as last seen.
    pub newest_remote: Option<String>,
    /// Now minus the newest remote snapshot's time.
    pub lag_seconds: Option<i64>,
    pub max_age_seconds: u64,
    /// Valid local snapshots the target lacks (as last seen).
    pub pending: Vec<String>,
    /// The last scheduled verify (kept across restarts).
    pub last_verify: Option<VerifyRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    pub backup: String,
    pub chroma: String,
    pub next_run: Option<String>,
    pub next_includes_chroma: Option<bool>,
}

/// Assemble the report.
pub async fn report(state: &Arc<State>) -> HealthReport {
    let now = Utc::now();
    let listing = state.summary.listing(&state.config.paths).await;
    let docker = state.docker.reachability().await;
    operation::refresh_remote_in_background(state);
    build(state, &listing, docker, now)
}

fn build(
    state: &State,
    listing: &Listing,
    docker: Reachability,
    now: DateTime<Utc>,
) -> HealthReport {
    let s = &listing.summary;
    let stale = state.config.stale_after;
    let mut reasons = Vec::new();
    let last_backup = s.newest_valid.as_ref().map(|n| LastBackup {
        stamp: n.stamp.clone(),
        kind: n.kind,
        include_chroma: n.include_chroma,
        age_seconds: (now - n.taken).num_seconds(),
        valid: n.valid,
    });
    match &last_backup {
        None => reasons.push("no valid snapshot yet: take one with POST /admin/backup".to_string()),
        Some(b) if b.age_seconds.max(0) as u64 > stale.as_secs() => reasons.push(format!(
            "the newest valid snapshot `{}` is {} h old (more than {} h); check the schedule and the sidecar's log",
            b.stamp,
            b.age_seconds / 3600,
            stale.as_secs() / 3600
        )),
        Some(_) => {}
    }
    if let Some(e) = &s.error {
        reasons.push(format!("cannot list snapshots: {e}"));
    }
    let schedule = state.config.schedule.as_ref().map(|sch| {
        let next = sch.next_after(now);
        ScheduleStatus {
            backup: sch.backup_source().to_string(),
            chroma: sch.chroma_source().to_string(),
            next_run: next
                .as_ref()
                .map(|f| f.at.to_rfc3339_opts(SecondsFormat::Secs, true)),
            next_includes_chroma: next.map(|f| f.include_chroma),
        }
    });
    let offsite = state.config.offsite.as_ref().map(|_| {
        let (ok, failed) = state.metrics.offsite_status();
        if let Some(f) = failed
            && ok.is_none_or(|o| f > o)
        {
            reasons.push(format!(
                "the last off-site push failed ({}); see the sidecar's log, then POST /admin/offsite/push",
                f.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        let max_age = state.config.offsite_max_age;
        let remote = state.offsite.remote();
        let newest = remote.as_ref().and_then(|r| r.newest());
        let lag_seconds = newest.map(|t| (now - t).num_seconds());
        match (&remote, lag_seconds) {
            (Some(_), Some(lag)) if lag.max(0) as u64 > max_age.as_secs() => reasons.push(format!(
                "the newest snapshot on the off-site target is {} h old (more than ATOCORE_OFFSITE_MAX_AGE = {} h); check the sidecar's log for failed pushes, then POST /admin/offsite/push",
                lag / 3600,
                max_age.as_secs() / 3600
            )),
            (Some(_), None) => reasons.push(
                "the off-site target holds no snapshot yet (ATOCORE_OFFSITE_MAX_AGE); POST /admin/offsite/push".to_string(),
            ),
            _ => {}
        }
        let last_verify = state.offsite.last_verify(&state.config.paths);
        match &last_verify {
            Some(v) if v.error.is_some() => reasons.push(format!(
                "the last off-site verify ({}) could not run: {}; it is tried again after the next scheduled snapshot",
                v.at,
                v.error.as_deref().unwrap_or_default()
            )),
            Some(v) if !v.ok => reasons.push(format!(
                "the last off-site verify ({}) found {} damaged or missing objects; run `atocore-restore-job offsite verify` for the list, then push again",
                v.at, v.problems
            )),
            _ => {}
        }
        OffsiteStatus {
            last_success_at: ok.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            last_failure_at: failed.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            remote_seen_at: remote
                .as_ref()
                .and_then(|r| r.seen_at)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            newest_remote: remote
                .as_ref()
                .and_then(|r| r.stamps.iter().next_back().cloned()),
            lag_seconds,
            max_age_seconds: max_age.as_secs(),
            pending: remote
                .as_ref()
                .map(|r| offsite::pending(listing, r))
                .unwrap_or_default(),
            last_verify,
        }
    });
    let wal = state.config.wal.as_ref().map(|w| {
        let st = state.wal.status();
        match (st.lag_seconds, &st.last_error) {
            (Some(lag), _) if !st.paused && lag > w.max_lag.as_secs_f64() => reasons.push(format!(
                "the WAL capture lags the database by {lag:.0} s{} (more than ATOCORE_WAL_MAX_LAG, {} s){}; see the sidecar's log",
                st.lag_frames
                    .filter(|f| *f > 0)
                    .map(|f| format!(" and {f} committed frames"))
                    .unwrap_or_default(),
                w.max_lag.as_secs(),
                st.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )),
            (None, Some(e)) if !st.paused => reasons.push(format!(
                "WAL streaming is on but not running: {e}"
            )),
            _ => {}
        }
        if let Some(w) = st.waiting_for_base().filter(|w| *w > 600.0) {
            reasons.push(format!(
                "the WAL generation has waited {w:.0} s for its base snapshot, so no restore to a moment reaches it; see the sidecar's log (a full disk, a busy backups lock)"
            ));
        }
        if let Some(e) = st.offsite.as_ref().and_then(|o| o.last_error.as_ref()) {
            reasons.push(format!(
                "the off-site copy of the captured WAL failed: {e}; it is retried every ATOCORE_OFFSITE_WAL_INTERVAL"
            ));
        }
        st
    });
    HealthReport {
        status: if reasons.is_empty() { "ok" } else { "degraded" },
        service: "atocore-sidecar",
        version: env!("CARGO_PKG_VERSION"),
        docker,
        last_backup,
        stale_after_seconds: stale.as_secs(),
        snapshots: s.count,
        operation: state.gate.running(),
        schedule,
        last_drill: s.last_drill.clone(),
        offsite,
        wal,
        reasons,
    }
}
