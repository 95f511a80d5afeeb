//! `prune`: apply the retention [`Policy`](crate::retention::Policy) to the backups
//! folder; `delete`: remove one snapshot the operator names.
//!
//! Prune deletes only valid snapshots that no rule keeps. An invalid snapshot (or one
//! whose metadata cannot be read, or a symlink where a snapshot folder should be) is
//! reported in `invalid` and kept: a wrong judgement must not cost the operator their
//! history. `delete STAMP` is the explicit way to remove one.
//!
//! Both hide a snapshot as `snapshots/.<STAMP>.deleting` before removing it, so a
//! half-deleted snapshot is never listed; a leftover of an interrupted run is finished
//! by the next prune, delete or backup.

use std::collections::BTreeMap;
use std::fs;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Paths;
use crate::durable::{self, BackupLock};
use crate::error::{Error, Result};
use crate::retention::{self, Candidate, Policy};
use crate::snapshot;
use crate::stamp::Stamp;
use crate::{control, layout, validate};

/// A snapshot prune does not understand: kept, with the check's error codes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Invalid {
    pub stamp: String,
    pub errors: Vec<String>,
}

/// The body of `prune`.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    #[serde(flatten)]
    pub plan: retention::Plan,
    /// Snapshots that failed the structural check: kept (they are in `kept` too) until
    /// the operator removes them with `delete`.
    pub invalid: Vec<Invalid>,
    pub dry_run: bool,
    /// Hidden folders removed: `.STAMP.partial` of an interrupted backup and
    /// `.STAMP.deleting` of an interrupted prune or delete.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partials_removed: Vec<String>,
    /// Captured WAL segments and generations removed (point-in-time retention); with
    /// `dry_run`, those that would be.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wal_removed: Vec<String>,
}

/// Stamps that a pending restore needs, each with what refers to it: the journal of an
/// interrupted restore, a restore request for the next `init`, a restore staged by
/// `prepare`. A file that exists but cannot be read is an error: what it protects is
/// unknown, so nothing is deleted.
pub fn protected_stamps(paths: &Paths) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(j) = control::pending_journal(paths)? {
        out.insert(
            j.stamp,
            format!(
                "the interrupted restore ({})",
                layout::journal_path(paths).display()
            ),
        );
    }
    if let Some(r) = control::pending_request(paths)? {
        out.insert(
            r.stamp,
            format!(
                "the pending restore request ({})",
                layout::request_path(paths).display()
            ),
        );
    }
    let staged_path = layout::staged_path(paths);
    if let Some(s) = durable::read_json::<control::Staged>(&staged_path)? {
        out.insert(
            s.stamp,
            format!("the restore staged by prepare ({})", staged_path.display()),
        );
    }
    Ok(out)
}

/// Decide with [`retention::plan`] and, unless `dry_run`, delete. Validity is the
/// structural check of `list`; snapshots a pending or staged restore refers to are
/// protected; so are those a restore to a moment of the last `pitr_days` days starts
/// from ([`wal::pitr::needs`](crate::wal::pitr::needs), reason `pitr-base`); invalid
/// ones are kept and reported. Then the captured WAL that no such restore needs goes
/// ([`wal::pitr::prune`](crate::wal::pitr::prune)), counted the same with `dry_run`.
pub fn prune(
    paths: &Paths,
    policy: &Policy,
    dry_run: bool,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    let protected = protected_stamps(paths)?;
    // The snapshots a restore to a moment of the point-in-time window starts from.
    let pitr = crate::wal::pitr::needs(paths, u64::from(policy.pitr_days), now)?;
    let mut invalid = Vec::new();
    let mut candidates = Vec::new();
    for (stamp, _) in snapshot::stamp_entries(paths)? {
        // `quick` refuses a symlink before reading anything.
        let (meta, errors) = validate::quick(&paths.snapshot_dir(&stamp));
        let valid = meta.is_some() && errors.is_empty();
        if !valid {
            invalid.push(Invalid {
                stamp: stamp.to_string(),
                errors,
            });
        }
        candidates.push(Candidate {
            kind: meta
                .as_ref()
                .map(|m| m.kind_or_manual())
                .unwrap_or(crate::Kind::Manual),
            chroma: meta.as_ref().is_some_and(|m| m.has_chroma()),
            valid,
            protected: protected.contains_key(stamp.as_str()),
            pitr_base: valid && pitr.bases.contains(stamp.as_str()),
            stamp,
        });
    }
    let plan = retention::plan(&candidates, policy, now);
    let mut partials_removed = Vec::new();
    if !dry_run {
        partials_removed = snapshot::remove_stale_partials(paths)?;
        for s in &plan.deleted {
            remove_snapshot(paths, s)?;
            tracing::info!(stamp = %s, reason = %plan.reasons[s], "snapshot deleted");
        }
        if !plan.deleted.is_empty() {
            durable::sync_path(&paths.snapshots_dir())?;
        }
    }
    // With --dry-run: what would be removed.
    let wal_removed: Vec<String> = crate::wal::pitr::prune(
        paths,
        u64::from(policy.pitr_days),
        now,
        dry_run,
        &plan.deleted,
    )?
    .into_iter()
    .map(|p| p.display().to_string())
    .collect();
    for i in &invalid {
        tracing::warn!(stamp = %i.stamp, errors = ?i.errors, "invalid snapshot kept: prune never deletes one; inspect it, then remove it with `atocore-restore-job delete {}`", i.stamp);
    }
    Ok(PruneReport {
        plan,
        invalid,
        dry_run,
        partials_removed,
        wal_removed,
    })
}

/// The body of `delete`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeleteReport {
    pub deleted: String,
}

/// Delete one snapshot, valid or not (a symlink in its place is removed, never
/// followed). Refused for a stamp a pending or staged restore refers to.
pub fn delete(paths: &Paths, stamp: &str) -> Result<DeleteReport> {
    let stamp = Stamp::parse(stamp)?;
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    let dir = paths.snapshot_dir(&stamp);
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() || m.file_type().is_symlink() => {}
        _ => {
            return Err(Error::UnknownStamp {
                stamp: stamp.to_string(),
                dir: paths.snapshots_dir(),
            });
        }
    }
    if let Some(by) = protected_stamps(paths)?.remove(stamp.as_str()) {
        return Err(Error::SnapshotInUse {
            stamp: stamp.to_string(),
            by,
        });
    }
    snapshot::remove_stale_partials(paths)?;
    remove_snapshot(paths, stamp.as_str())?;
    durable::sync_path(&paths.snapshots_dir())?;
    tracing::info!(stamp = %stamp, "snapshot deleted on request");
    Ok(DeleteReport {
        deleted: stamp.to_string(),
    })
}

/// Hide `snapshots/<stamp>` as `.<stamp>.deleting` (made durable first, so a crash
/// never brings back a half-deleted folder under its name), then remove it. Lock held;
/// the caller syncs `snapshots/` at the end.
fn remove_snapshot(paths: &Paths, stamp: &str) -> Result<()> {
    let snapshots = paths.snapshots_dir();
    let from = snapshots.join(stamp);
    let hidden = snapshots.join(format!(".{stamp}.deleting"));
    let is_link = fs::symlink_metadata(&from)
        .map_err(Error::io("inspect before deleting", &from))?
        .file_type()
        .is_symlink();
    fs::rename(&from, &hidden).map_err(Error::io("hide before deleting", &from))?;
    durable::sync_path(&snapshots)?;
    if is_link {
        fs::remove_file(&hidden)
    } else {
        fs::remove_dir_all(&hidden)
    }
    .map_err(Error::io("delete", &hidden))
}
