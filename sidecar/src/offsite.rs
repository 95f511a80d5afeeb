//! What the sidecar remembers of the off-site target between operations: the remote
//! snapshots as last seen (so `/health` never lists the target itself), the last
//! verify (persisted, so a restart neither forgets problems nor resets the weekly
//! timer), and the switch a requested backup uses to make a background push yield.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use atocore_restore_job::Paths;
use atocore_restore_job::Stamp;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The file, in the backup dir's `offsite/` folder, that keeps the last verify.
pub const VERIFY_STATE_FILE: &str = "sidecar-verify.json";

/// The remote snapshots as last seen by a push, prune or list of this sidecar.
#[derive(Debug, Clone, Default)]
pub struct RemoteView {
    /// When it was seen.
    pub seen_at: Option<DateTime<Utc>>,
    pub stamps: BTreeSet<String>,
}

impl RemoteView {
    /// The time of the newest remote snapshot (its stamp).
    pub fn newest(&self) -> Option<DateTime<Utc>> {
        self.stamps
            .iter()
            .rev()
            .find_map(|s| Stamp::parse(s).ok())
            .map(|s| s.time())
    }
}

/// The outcome of the last scheduled `offsite verify`, as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VerifyRecord {
    /// When it finished (RFC 3339).
    pub at: String,
    /// `true`: it ran and found nothing wrong.
    pub ok: bool,
    /// Objects with a problem (missing, wrong size, damaged).
    pub problems: usize,
    pub snapshots: usize,
    pub objects_checked: usize,
    pub chunks_read: usize,
    pub read_data_percent: f64,
    /// Set when the verify could not run (target unreachable, ...): it is tried again
    /// after the next scheduled snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl VerifyRecord {
    pub fn at(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.at)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// Off-site facts shared by the operations, `/health`, `/metrics` and the schedule.
#[derive(Debug, Default)]
pub struct OffsiteState {
    remote: Mutex<Option<RemoteView>>,
    /// A background listing is running (started by `/health` when nothing is known).
    refreshing: AtomicBool,
    /// Set while a background push runs; storing `false` asks it to stop at its next
    /// batch of uploads.
    push_keep_going: Mutex<Option<Arc<AtomicBool>>>,
    /// A push after a manual snapshot is waiting for the gate (one is enough).
    pub(crate) push_queued: AtomicBool,
    verify: Mutex<Option<Option<VerifyRecord>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OffsiteState {
    /// The remote snapshots as last seen, if they were seen.
    pub fn remote(&self) -> Option<RemoteView> {
        lock(&self.remote).clone()
    }

    /// The exact remote list (after a list or a prune).
    pub fn set_remote(&self, stamps: impl IntoIterator<Item = String>) {
        *lock(&self.remote) = Some(RemoteView {
            seen_at: Some(Utc::now()),
            stamps: stamps.into_iter().collect(),
        });
    }

    /// Stamps known to be on the target now (after a push).
    pub fn add_remote(&self, stamps: impl IntoIterator<Item = String>) {
        let mut slot = lock(&self.remote);
        let view = slot.get_or_insert_with(RemoteView::default);
        view.seen_at = Some(Utc::now());
        view.stamps.extend(stamps);
    }

    /// Claim the one background listing; `false` when one is running.
    pub(crate) fn start_refresh(&self) -> bool {
        !self.refreshing.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::SeqCst);
    }

    /// Register a background push; the flag turns `false` when it should yield.
    pub(crate) fn push_started(&self) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(true));
        *lock(&self.push_keep_going) = Some(Arc::clone(&flag));
        flag
    }

    pub(crate) fn push_ended(&self) {
        *lock(&self.push_keep_going) = None;
    }

    /// Ask a running background push to stop at its next batch. `true` when one runs.
    pub(crate) fn ask_push_to_yield(&self) -> bool {
        match lock(&self.push_keep_going).as_ref() {
            Some(flag) => {
                flag.store(false, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// The last verify: from memory, else from the backup dir.
    pub fn last_verify(&self, paths: &Paths) -> Option<VerifyRecord> {
        let mut slot = lock(&self.verify);
        if slot.is_none() {
            *slot = Some(read_verify(&verify_path(paths)));
        }
        slot.clone().flatten()
    }

    /// Keep `record` in memory and on disk (atomically).
    pub fn record_verify(
        &self,
        paths: &Paths,
        record: VerifyRecord,
    ) -> atocore_restore_job::Result<()> {
        *lock(&self.verify) = Some(Some(record.clone()));
        atocore_restore_job::offsite::write_state_file(&verify_path(paths), &record)
    }
}

/// `<backup dir>/offsite/sidecar-verify.json`.
pub fn verify_path(paths: &Paths) -> PathBuf {
    paths.backup_dir.join("offsite").join(VERIFY_STATE_FILE)
}

fn read_verify(path: &Path) -> Option<VerifyRecord> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), cause = %e, "ignoring an unreadable off-site verify record; the next scheduled verify rewrites it");
            None
        }
    }
}

/// Valid local snapshots (not known to be broken) that `remote` lacks, oldest first.
pub fn pending(listing: &crate::summary::Listing, remote: &RemoteView) -> Vec<String> {
    let Ok(body) = &listing.body else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    v["backups"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|b| b["valid"].as_bool() != Some(false))
                .filter_map(|b| b["stamp"].as_str())
                .filter(|s| !remote.stamps.contains(*s))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}
