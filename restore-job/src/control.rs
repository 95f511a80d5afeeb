//! The restore's control files on the backups volume, in `<backup_dir>/restore/`
//! (names in [`crate::layout`]): the request a caller writes for the next `init` run,
//! the journal of a restore under way, the record of the live state a restore set
//! aside, and the record of a staging prepared ahead. Each is one JSON file written
//! atomically; this module reads and writes them and nothing else.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use crate::config::Paths;
use crate::durable;
use crate::error::{Error, Result};
use crate::layout::{aside_path, journal_path, request_path, staged_path};

/// Where a restore stands; written to the journal before each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Staging,
    Aside,
    SwapIn,
    Verifying,
}

/// The restore journal, on the backups volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// Identifies this restore (and its aside copy).
    pub id: String,
    pub stamp: String,
    pub db: bool,
    pub registry: bool,
    pub chroma: bool,
    pub phase: Phase,
    pub pre_snapshot: bool,
    pub attempt: u32,
    pub started_at: String,
}

/// The live state moved aside by a restore, until [`finalize`] has made it a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Aside {
    pub restore_id: String,
    /// The stamp that was restored over it.
    pub restored_stamp: String,
    /// Turn it into a `pre-restore` snapshot (false with `--no-pre-snapshot`: deleted).
    pub make_snapshot: bool,
    pub db: PathBuf,
    pub registry: PathBuf,
    pub chroma: Option<PathBuf>,
    /// Set once the snapshot is published, before the aside files are deleted.
    #[serde(default)]
    pub snapshot: Option<String>,
    pub created_at: String,
    /// Set when no snapshot could be made and the files are being moved into the
    /// kept folders (so a rerun after a crash goes on keeping, never deletes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

/// What [`prepare`] left ready.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Staged {
    pub stamp: String,
    pub registry: bool,
    pub chroma: bool,
    pub db_inode: u64,
    pub db_size: u64,
    /// The staged database's mtime when it was checked: a later write shows here.
    #[serde(default)]
    pub db_mtime_ns: i128,
    pub prepared_at: String,
}

/// Refuse with [`Error::RestorePending`] while a restore journal exists: the live
/// files are then half swapped, and a snapshot of them would be published as valid.
pub fn refuse_while_restoring(paths: &Paths) -> Result<()> {
    if journal_path(paths).exists() {
        return Err(Error::RestorePending(journal_path(paths)));
    }
    Ok(())
}

/// The interrupted restore, if there is one.
pub fn pending_journal(paths: &Paths) -> Result<Option<Journal>> {
    durable::read_json(&journal_path(paths))
}

/// The aside copy waiting for [`finalize`], if there is one.
pub fn pending_aside(paths: &Paths) -> Result<Option<Aside>> {
    durable::read_json(&aside_path(paths))
}

pub(crate) fn write_journal(paths: &Paths, j: &Journal) -> Result<()> {
    durable::create_dir_all(&paths.restore_dir())?;
    durable::write_json_atomic(&journal_path(paths), j)
}

/// The staging [`prepare`](crate::restore::prepare) left, if any (unreadable: none).
pub(crate) fn staged(paths: &Paths) -> Option<Staged> {
    durable::read_json::<Staged>(&staged_path(paths))
        .ok()
        .flatten()
}

/// A request to restore, as written to `request.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// Chosen by the writer; copied into the result so it can match the two.
    pub request_id: String,
    pub stamp: String,
    /// `null`: chroma when the snapshot has it; `true`: force; `false`: leave it alone.
    #[serde(default)]
    pub include_chroma: Option<bool>,
    /// Take a pre-restore snapshot first (default true).
    #[serde(default = "yes")]
    pub pre_snapshot: bool,
    /// Leave the pre-restore snapshot to be made by `restore::finalize` once the
    /// service is back (the sidecar does this to keep downtime short); default false.
    #[serde(default)]
    pub defer_pre_snapshot: bool,
    /// The writer fully validated the snapshot just before (see
    /// [`RestoreOptions::prevalidated`]); default false.
    #[serde(default)]
    pub prevalidated: bool,
    #[serde(default)]
    pub requested_at: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
}

fn yes() -> bool {
    true
}

/// The pending request, if any.
pub fn pending_request(paths: &Paths) -> Result<Option<RestoreRequest>> {
    durable::read_json(&request_path(paths))
}

/// Write a request for the next `init` run. Refused while another one is pending.
pub fn write_request(paths: &Paths, req: &RestoreRequest) -> Result<()> {
    crate::Stamp::parse(&req.stamp)?;
    durable::create_dir_all(&paths.restore_dir())?;
    if pending_request(paths)?.is_some() {
        return Err(Error::Busy(request_path(paths)));
    }
    durable::write_json_atomic(&request_path(paths), req)
}

/// Remove a request that will not be acted on (e.g. the orchestrator gave up before
/// starting the job). Absent is fine.
pub fn withdraw_request(paths: &Paths) -> Result<()> {
    match std::fs::remove_file(request_path(paths)) {
        Ok(()) => durable::sync_path(&paths.restore_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", request_path(paths))(e)),
    }
}
