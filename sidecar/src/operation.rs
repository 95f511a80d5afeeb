//! Mutating operations (backup, prune, restore, drill, and the off-site push, prune
//! and verify): one at a time, each on a blocking thread, each logged as one line with
//! its outcome and duration and counted in the metrics.
//!
//! The [`crate::gate`] admits one operation; a second one gets a 409, except that a
//! push the sidecar started itself gives way to a requested backup or push
//! ([`begin_before_push`]). The engine's flock adds the same guarantee across
//! processes (a CLI backup in another container also gives 409). Reads (list, validate, health, metrics) never wait on it.
//! The gate is held by the blocking task itself, so a client that hangs up does not
//! free it before the work is really done.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use atocore_restore_job::offsite::OffsiteArgs;
use atocore_restore_job::offsite::list::RemoteList;
use atocore_restore_job::offsite::prune::OffsitePruneReport;
use atocore_restore_job::offsite::push::PushReport;
use atocore_restore_job::prune::PruneReport;
use atocore_restore_job::{BackupHooks, BackupOptions, Kind, Metadata, Quiesce, prune, snapshot};
use chrono::{DateTime, Utc};
use tokio::runtime::Handle;

use crate::atocore;
use crate::error::{Error, Result};
use crate::gate::GateGuard;
use crate::offsite::VerifyRecord;
use crate::quiesce::DockerQuiesce;
use crate::state::State;

/// Run `work` on a tracked blocking thread while holding `guard`.
pub(crate) async fn blocking<T: Send + 'static>(
    state: &Arc<State>,
    guard: Option<GateGuard>,
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    state
        .tasks
        .spawn_blocking(move || {
            let _guard = guard;
            work()
        })
        .await
        .map_err(|e| Error::Internal(format!("the {what} worker stopped: {e}")))?
}

/// Take a snapshot now (kind `manual`, `scheduled` or `drill`), with atocore paused for
/// the chroma copy. Returns the published, validated metadata.
pub async fn backup(state: &Arc<State>, include_chroma: bool, kind: Kind) -> Result<Metadata> {
    let guard = begin_before_push(state, "backup").await?;
    backup_with(state, Some(guard), include_chroma, kind).await
}

/// [`backup`] under a gate the caller already holds (`None`: the caller holds it).
pub(crate) async fn backup_with(
    state: &Arc<State>,
    guard: Option<GateGuard>,
    include_chroma: bool,
    kind: Kind,
) -> Result<Metadata> {
    let st = Arc::clone(state);
    let handle = Handle::current();
    blocking(state, guard, "backup", move || {
        let started = Instant::now();
        let build_sha = atocore::build_sha(&st.config.atocore_url);
        let mut quiesce = include_chroma
            .then(|| DockerQuiesce::new(Arc::clone(&st.docker), Arc::clone(&st.paused), handle));
        let keep_going = || !st.shutdown.is_cancelled();
        let result = snapshot::backup(
            &st.config.paths,
            &BackupOptions {
                include_chroma,
                kind,
                build_sha,
                timeout: st.config.backup_timeout,
                ..BackupOptions::default()
            },
            BackupHooks {
                quiesce: quiesce.as_mut().map(|q| q as &mut dyn Quiesce),
                keep_going: &keep_going,
            },
        );
        drop(quiesce);
        let elapsed = started.elapsed();
        st.summary.invalidate();
        st.metrics.record_backup(kind, result.is_ok());
        log_backup(kind, include_chroma, &result, elapsed);
        result.map_err(Error::from)
    })
    .await
}

fn log_backup(
    kind: Kind,
    include_chroma: bool,
    result: &atocore_restore_job::Result<Metadata>,
    elapsed: Duration,
) {
    let duration_ms = elapsed.as_millis() as u64;
    match result {
        Ok(m) => tracing::info!(
            op = "backup",
            outcome = "ok",
            kind = kind.as_str(),
            include_chroma,
            stamp = %m.stamp,
            chroma_quiesced = match m.chroma_quiesced {
                Some(true) => "true",
                Some(false) => "false",
                None => "n/a",
            },
            db_size_bytes = m.db_size_bytes,
            duration_ms,
            "backup finished"
        ),
        Err(e @ atocore_restore_job::Error::Cancelled(_)) => tracing::warn!(
            op = "backup",
            outcome = "cancelled",
            kind = kind.as_str(),
            include_chroma,
            duration_ms,
            cause = %e,
            "backup cancelled; its partial folder was removed"
        ),
        Err(e) => tracing::error!(
            op = "backup",
            outcome = "failed",
            kind = kind.as_str(),
            include_chroma,
            code = e.code(),
            duration_ms,
            cause = %e,
            "backup failed"
        ),
    }
}

/// Apply retention now (`dry_run`: only report).
pub async fn prune(state: &Arc<State>, dry_run: bool) -> Result<PruneReport> {
    let guard = state.begin("prune")?;
    prune_with(state, Some(guard), dry_run, Utc::now()).await
}

pub(crate) async fn prune_with(
    state: &Arc<State>,
    guard: Option<GateGuard>,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    let st = Arc::clone(state);
    blocking(state, guard, "prune", move || {
        let started = Instant::now();
        let result = prune::prune(&st.config.paths, &st.config.policy, dry_run, now);
        let duration_ms = started.elapsed().as_millis() as u64;
        if !dry_run {
            st.summary.invalidate();
            st.metrics
                .record_prune(result.as_ref().ok().map(|r| r.plan.deleted.len()));
        }
        match &result {
            Ok(r) => tracing::info!(
                op = "prune",
                outcome = "ok",
                dry_run,
                kept = r.plan.kept.len(),
                deleted = r.plan.deleted.len(),
                duration_ms,
                "prune finished"
            ),
            Err(e) => tracing::error!(
                op = "prune",
                outcome = "failed",
                dry_run,
                code = e.code(),
                duration_ms,
                cause = %e,
                "prune failed"
            ),
        }
        result.map_err(Error::from)
    })
    .await
}

/// The gate's name for a push the sidecar started itself (it yields to a requested
/// backup or push).
pub const BACKGROUND_PUSH: &str = "offsite push (background)";

/// How long a requested operation waits for a background off-site push to stop at its
/// next batch of uploads.
const YIELD_WAIT: Duration = Duration::from_secs(60);

/// How long the push after a manual snapshot waits for the gate before it leaves the
/// work to the next push.
const PUSH_GATE_WAIT: Duration = Duration::from_secs(30 * 60);

/// Take the gate for `operation`. A background off-site push that holds it is asked
/// to stop at its next batch of uploads (what it uploaded is reused by the next push),
/// and the gate is taken as soon as it lets go; anything else holding it is a 409.
pub(crate) async fn begin_before_push(
    state: &Arc<State>,
    operation: &'static str,
) -> Result<GateGuard> {
    let mut first = state.begin(operation);
    // A background push that has just taken the gate registers its switch a moment
    // later: give it that moment instead of answering 409.
    let settle = Instant::now() + Duration::from_secs(1);
    while matches!(first, Err(Error::Busy(_)))
        && !state.offsite.ask_push_to_yield()
        && Instant::now() < settle
        && state
            .gate
            .running()
            .is_some_and(|r| r.operation == BACKGROUND_PUSH)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        first = state.begin(operation);
    }
    match first {
        Err(Error::Busy(_)) if state.offsite.ask_push_to_yield() => {
            tracing::info!(
                operation,
                "asking the background off-site push to yield; it resumes afterwards"
            );
            let deadline = Instant::now() + YIELD_WAIT;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match state.begin(operation) {
                    Err(Error::Busy(_)) if Instant::now() < deadline => {
                        state.offsite.ask_push_to_yield();
                    }
                    r => return r,
                }
            }
        }
        r => r,
    }
}

/// Push every valid snapshot the off-site target lacks (`POST /admin/offsite/push`;
/// a background push running takes the back seat and this one does its work).
/// [`Error::Engine`] with `offsite_not_configured` when no target is set.
pub async fn offsite_push(state: &Arc<State>) -> Result<PushReport> {
    offsite_settings(state)?;
    let guard = begin_before_push(state, "offsite push").await?;
    push_with(state, guard, false).await
}

/// The push after a scheduled snapshot: like [`offsite_push`], but it yields to a
/// requested backup ([`Error::Engine`] `cancelled` then).
pub async fn offsite_push_yielding(state: &Arc<State>) -> Result<PushReport> {
    offsite_settings(state)?;
    let guard = state.begin(BACKGROUND_PUSH)?;
    push_with(state, guard, true).await
}

/// After a manual snapshot: push in the background, as its own operation, once the
/// gate is free (the backup's answer does not wait). One such push waiting is enough.
pub fn offsite_push_in_background(state: &Arc<State>) {
    if state.config.offsite.is_none() || state.offsite.push_queued.swap(true, Ordering::SeqCst) {
        return;
    }
    let st = Arc::clone(state);
    state.tasks.spawn(async move {
        let deadline = Instant::now() + PUSH_GATE_WAIT;
        let guard = loop {
            match st.begin(BACKGROUND_PUSH) {
                Ok(g) => break g,
                Err(Error::Busy(_)) if Instant::now() < deadline => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = st.shutdown.cancelled() => {
                            st.offsite.push_queued.store(false, Ordering::SeqCst);
                            return;
                        }
                    }
                }
                Err(e) => {
                    st.offsite.push_queued.store(false, Ordering::SeqCst);
                    tracing::warn!(cause = %e, "the off-site push after the manual snapshot did not start; the next push catches up");
                    return;
                }
            }
        };
        st.offsite.push_queued.store(false, Ordering::SeqCst);
        let _ = push_with(&st, guard, true).await;
    });
}

async fn push_with(state: &Arc<State>, guard: GateGuard, yielding: bool) -> Result<PushReport> {
    let offsite = offsite_settings(state)?;
    let st = Arc::clone(state);
    blocking(state, Some(guard), "offsite push", move || {
        let flag = yielding.then(|| st.offsite.push_started());
        let keep_going = || {
            !st.shutdown.is_cancelled() && flag.as_ref().is_none_or(|f| f.load(Ordering::SeqCst))
        };
        let started = Instant::now();
        let result = offsite.push_missing_while(&st.config.paths, &keep_going);
        if yielding {
            st.offsite.push_ended();
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(r) => {
                st.offsite.add_remote(
                    r.pushed
                        .iter()
                        .map(|p| p.stamp.clone())
                        .chain(r.already_there.iter().cloned()),
                );
                st.metrics.record_offsite_push(Some(
                    r.pushed.iter().map(|p| p.bytes_written).sum::<u64>(),
                ));
                tracing::info!(
                    op = "offsite push",
                    outcome = "ok",
                    pushed = r.pushed.len(),
                    already_there = r.already_there.len(),
                    duration_ms,
                    "off-site push finished"
                );
            }
            Err(e @ atocore_restore_job::Error::Cancelled(_)) => tracing::info!(
                op = "offsite push",
                outcome = "yielded",
                duration_ms,
                cause = %e,
                "off-site push stopped for another operation (or shutdown); the next push continues where it stopped"
            ),
            Err(e) => {
                st.metrics.record_offsite_push(None);
                tracing::error!(
                    op = "offsite push",
                    outcome = "failed",
                    code = e.code(),
                    duration_ms,
                    cause = %e,
                    "off-site push failed; the next snapshot (or POST /admin/offsite/push) tries again"
                );
            }
        }
        Ok(result?)
    })
    .await
}

/// Apply the target's retention (`ATOCORE_OFFSITE_KEEP_*`), after a scheduled push.
pub async fn offsite_prune(state: &Arc<State>) -> Result<OffsitePruneReport> {
    let offsite = offsite_settings(state)?;
    let guard = state.begin("offsite prune")?;
    let st = Arc::clone(state);
    blocking(state, Some(guard), "offsite prune", move || {
        let started = Instant::now();
        let result = offsite.prune_remote(&st.config.offsite_prune);
        let duration_ms = started.elapsed().as_millis() as u64;
        st.metrics
            .record_offsite_prune(result.as_ref().ok().map(|r| r.plan.deleted.len()));
        match &result {
            Ok(r) => {
                st.offsite.set_remote(r.plan.kept.iter().cloned());
                tracing::info!(
                    op = "offsite prune",
                    outcome = "ok",
                    kept = r.plan.kept.len(),
                    deleted = r.plan.deleted.len(),
                    objects_deleted = r.objects_deleted,
                    bytes_freed = r.bytes_freed,
                    duration_ms,
                    "off-site prune finished"
                );
            }
            Err(e) => tracing::error!(
                op = "offsite prune",
                outcome = "failed",
                code = e.code(),
                duration_ms,
                cause = %e,
                "off-site prune failed; it runs again after the next scheduled push"
            ),
        }
        Ok(result?)
    })
    .await
}

/// Whether the scheduled off-site verify is due at `now`: never verified, the last
/// one could not run, or `ATOCORE_OFFSITE_VERIFY_EVERY` has passed since.
pub fn offsite_verify_due(state: &State, now: DateTime<Utc>) -> bool {
    let (Some(_), Some(every)) = (&state.config.offsite, state.config.offsite_verify_every) else {
        return false;
    };
    match state.offsite.last_verify(&state.config.paths) {
        None => true,
        Some(v) if v.error.is_some() => true,
        Some(v) => v.at().is_none_or(|at| {
            chrono::TimeDelta::from_std(every).is_ok_and(|every| now - at >= every)
        }),
    }
}

/// `offsite verify --read-data ATOCORE_OFFSITE_VERIFY_READ_DATA` (no private key):
/// recorded in `<backup dir>/offsite/sidecar-verify.json`, the metrics and `/health`.
/// A verify that could not run is recorded with its `error`.
pub async fn offsite_verify(state: &Arc<State>, now: DateTime<Utc>) -> Result<VerifyRecord> {
    let offsite = offsite_settings(state)?;
    let guard = state.begin("offsite verify")?;
    let st = Arc::clone(state);
    blocking(state, Some(guard), "offsite verify", move || {
        let started = Instant::now();
        let pct = st.config.offsite_verify_read_data;
        let result = offsite.verify_remote(pct);
        let duration_ms = started.elapsed().as_millis() as u64;
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let record = match &result {
            Ok(r) => VerifyRecord {
                at,
                ok: r.ok,
                problems: r.problems.len(),
                snapshots: r.snapshots,
                objects_checked: r.objects_checked,
                chunks_read: r.chunks_read,
                read_data_percent: pct,
                error: None,
            },
            Err(e) => VerifyRecord {
                at,
                ok: false,
                problems: 0,
                snapshots: 0,
                objects_checked: 0,
                chunks_read: 0,
                read_data_percent: pct,
                error: Some(format!("{}: {e}", e.code())),
            },
        };
        match &result {
            Ok(r) if r.ok => tracing::info!(
                op = "offsite verify",
                outcome = "ok",
                snapshots = r.snapshots,
                objects_checked = r.objects_checked,
                chunks_read = r.chunks_read,
                duration_ms,
                "off-site verify found nothing wrong"
            ),
            Ok(r) => tracing::error!(
                op = "offsite verify",
                outcome = "problems",
                problems = ?r.problems,
                duration_ms,
                "off-site verify found problems; the snapshots named cannot be fetched whole: push again (a missing chunk is uploaded again only for a new snapshot) and run `atocore-restore-job offsite verify` for the details"
            ),
            Err(e) => tracing::error!(
                op = "offsite verify",
                outcome = "failed",
                code = e.code(),
                cause = %e,
                duration_ms,
                "off-site verify could not run; it is tried again after the next scheduled snapshot"
            ),
        }
        if let Err(e) = st.offsite.record_verify(&st.config.paths, record.clone()) {
            tracing::error!(cause = %e, "could not keep the off-site verify record; the next scheduled run verifies again");
        }
        Ok(record)
    })
    .await
}

/// The snapshots on the off-site target (`GET /admin/offsite`), with how far behind
/// the target is: `lag_seconds` (now minus the newest remote snapshot's time, `null`
/// when it holds none) and `pending` (valid local snapshots it lacks).
pub async fn offsite_list(state: &Arc<State>) -> Result<OffsiteOverview> {
    let offsite = offsite_settings(state)?;
    let st = Arc::clone(state);
    let list = blocking(state, None, "offsite list", move || {
        let list = offsite.list_remote()?;
        st.offsite
            .set_remote(list.snapshots.iter().map(|s| s.stamp.clone()));
        Ok(list)
    })
    .await?;
    let listing = state.summary.listing(&state.config.paths).await;
    let remote = state.offsite.remote().unwrap_or_default();
    let pending = crate::offsite::pending(&listing, &remote);
    let lag_seconds = remote.newest().map(|t| (Utc::now() - t).num_seconds());
    Ok(OffsiteOverview {
        list,
        lag_seconds,
        pending,
    })
}

/// The body of `GET /admin/offsite`: the engine's `offsite list`, plus the lag.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OffsiteOverview {
    #[serde(flatten)]
    pub list: RemoteList,
    pub lag_seconds: Option<i64>,
    pub pending: Vec<String>,
}

/// List the target in the background when nothing is known of it yet (`/health`
/// never waits for the target); a failed listing is retried after a minute at most.
pub fn refresh_remote_in_background(state: &Arc<State>) {
    let Some(offsite) = state.config.offsite.clone() else {
        return;
    };
    if state.offsite.remote().is_some() || !state.offsite.start_refresh() {
        return;
    }
    let st = Arc::clone(state);
    state.tasks.spawn(async move {
        let s2 = Arc::clone(&st);
        let result = blocking(&st, None, "offsite list", move || {
            let list = offsite.list_remote()?;
            s2.offsite
                .set_remote(list.snapshots.iter().map(|s| s.stamp.clone()));
            Ok(())
        })
        .await;
        if let Err(e) = result {
            tracing::warn!(cause = %e, "could not list the off-site target; /health tries again in a minute");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                () = st.shutdown.cancelled() => {}
            }
        }
        st.offsite.end_refresh();
    });
}

/// The off-site settings, or `offsite_not_configured` when the sidecar has no target.
fn offsite_settings(state: &State) -> Result<OffsiteArgs> {
    state.config.offsite.clone().ok_or_else(|| {
        atocore_restore_job::Error::OffsiteNotConfigured(
            "no target: set ATOCORE_OFFSITE_URL to s3://BUCKET/PREFIX or file:///PATH and restart the sidecar".into(),
        )
        .into()
    })
}
