//! Mutating operations (backup, prune, restore, drill): one at a time, each on a
//! blocking thread, each logged as one line with its outcome and duration and counted
//! in the metrics.
//!
//! The [`crate::gate`] admits one operation; a second one gets a 409. The
//! engine's flock adds the same guarantee across processes (a CLI backup in another
//! container also gives 409). Reads (list, validate, health, metrics) never wait on it.
//! The gate is held by the blocking task itself, so a client that hangs up does not
//! free it before the work is really done.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atocore_restore_job::offsite::OffsiteArgs;
use atocore_restore_job::offsite::list::RemoteList;
use atocore_restore_job::offsite::push::PushReport;
use atocore_restore_job::prune::PruneReport;
use atocore_restore_job::{BackupHooks, BackupOptions, Kind, Metadata, Quiesce, prune, snapshot};
use chrono::{DateTime, Utc};
use tokio::runtime::Handle;

use crate::atocore;
use crate::error::{Error, Result};
use crate::gate::GateGuard;
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
    let guard = state.begin("backup")?;
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

/// Push every valid snapshot the off-site target lacks (`POST /admin/offsite/push`,
/// and after each scheduled snapshot). [`Error::Engine`] with `offsite_not_configured`
/// when no target is set.
pub async fn offsite_push(state: &Arc<State>) -> Result<PushReport> {
    let offsite = offsite_settings(state)?;
    let guard = state.begin("offsite push")?;
    let st = Arc::clone(state);
    blocking(state, Some(guard), "offsite push", move || {
        let started = Instant::now();
        let result = offsite.push_missing(&st.config.paths);
        let duration_ms = started.elapsed().as_millis() as u64;
        st.metrics.record_offsite_push(
            result
                .as_ref()
                .ok()
                .map(|r| r.pushed.iter().map(|p| p.bytes_written).sum::<u64>()),
        );
        match &result {
            Ok(r) => tracing::info!(
                op = "offsite push",
                outcome = "ok",
                pushed = r.pushed.len(),
                already_there = r.already_there.len(),
                duration_ms,
                "off-site push finished"
            ),
            Err(e) => tracing::error!(
                op = "offsite push",
                outcome = "failed",
                code = e.code(),
                duration_ms,
                cause = %e,
                "off-site push failed; the next snapshot (or POST /admin/offsite/push) tries again"
            ),
        }
        Ok(result?)
    })
    .await
}

/// The snapshots on the off-site target (`GET /admin/offsite`).
pub async fn offsite_list(state: &Arc<State>) -> Result<RemoteList> {
    let offsite = offsite_settings(state)?;
    blocking(state, None, "offsite list", move || {
        Ok(offsite.list_remote()?)
    })
    .await
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
