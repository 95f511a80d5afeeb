//! The orphaned pre-restore snapshot: a restore whose orchestrator died (the sidecar
//! was killed after writing its request, and `docker compose up` let the init job
//! perform it, possibly after this sidecar had started) leaves the live state it set
//! aside with nobody to make the pre-restore snapshot of it. Until shutdown, the
//! sidecar looks for that every few seconds (three small file reads) and finishes it;
//! atocore may run meanwhile (only the set-aside copy is read). The sidecar's own
//! restores hold the operation gate until they have finished theirs, so a free gate
//! with a set-aside copy pending means an orphan.

use std::sync::Arc;
use std::time::Duration;

use atocore_restore_job::{init, restore};

use crate::containers::blocking;
use crate::state::State;

/// How often the sidecar looks for a restore whose orchestrator died.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Run until shutdown (spawned by [`crate::server::run`]).
pub async fn finish_orphaned_pre_restore(state: Arc<State>) {
    loop {
        if pending(&state).await {
            finish(&state).await;
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(CHECK_INTERVAL) => {}
        }
    }
}

async fn pending(state: &Arc<State>) -> bool {
    let p = state.config.paths.clone();
    blocking(state, "check for a leftover restore", move || {
        Ok(restore::pending_aside(&p)?.is_some()
            && restore::pending_journal(&p)?.is_none()
            && init::pending_request(&p)?.is_none())
    })
    .await
    .unwrap_or(false)
}

async fn finish(state: &Arc<State>) {
    let Ok(_gate) = state.begin("pre-restore snapshot") else {
        return;
    };
    // Checked again under the gate: a restore of this sidecar may just have finished.
    if !pending(state).await {
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
