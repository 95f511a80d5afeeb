//! `prune`: apply the retention [`Policy`](crate::retention::Policy) to the backups folder.

use std::fs;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Paths;
use crate::durable::{self, BackupLock};
use crate::error::{Error, Result};
use crate::restore;
use crate::retention::{self, Candidate, Policy};
use crate::snapshot::{self, published_stamps};
use crate::validate;

/// The body of `prune`.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    #[serde(flatten)]
    pub plan: retention::Plan,
    pub dry_run: bool,
    /// Hidden folders of interrupted backups that were removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partials_removed: Vec<String>,
}

/// Decide with [`retention::plan`] and, unless `dry_run`, delete. Validity is the
/// structural check of `list`; snapshots a pending restore refers to are protected.
pub fn prune(
    paths: &Paths,
    policy: &Policy,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    let protected = restore::referenced_stamps(paths);
    let candidates: Vec<Candidate> = published_stamps(paths)?
        .into_iter()
        .map(|stamp| {
            let (meta, errors) = validate::quick(&paths.snapshot_dir(&stamp));
            Candidate {
                kind: meta
                    .as_ref()
                    .map(|m| m.kind_or_manual())
                    .unwrap_or(crate::Kind::Manual),
                valid: meta.is_some() && errors.is_empty(),
                protected: protected.contains(stamp.as_str()),
                stamp,
            }
        })
        .collect();
    let plan = retention::plan(&candidates, policy, now);
    let mut partials_removed = Vec::new();
    if !dry_run {
        partials_removed = snapshot::remove_stale_partials(paths)?;
        let snapshots = paths.snapshots_dir();
        for s in &plan.deleted {
            // Hide it first, so a half-deleted snapshot is never listed.
            let from = snapshots.join(s);
            let hidden = snapshots.join(format!(".{s}.deleting"));
            fs::rename(&from, &hidden).map_err(Error::io("hide before deleting", &from))?;
            fs::remove_dir_all(&hidden).map_err(Error::io("delete", &hidden))?;
            tracing::info!(stamp = %s, reason = %plan.reasons[s], "snapshot deleted");
        }
        if !plan.deleted.is_empty() {
            durable::sync_path(&snapshots)?;
        }
    }
    Ok(PruneReport {
        plan,
        dry_run,
        partials_removed,
    })
}
