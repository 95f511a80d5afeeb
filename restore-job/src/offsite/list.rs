//! `offsite list`: the snapshots on the target (their plain references), oldest first.

use serde::Serialize;

use super::store::{Requests, Target};
use crate::error::Result;

/// One snapshot on the target.
#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    pub stamp: String,
    pub kind: String,
    pub pushed_at: String,
    pub files: u64,
    pub bytes: u64,
    pub chunks: usize,
    /// Bytes stored on the target for its index and chunks (shared chunks included).
    pub stored_bytes: u64,
}

/// The body of `offsite list`.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteList {
    pub target: String,
    /// `null` when the target holds no repository yet.
    pub repository: Option<String>,
    pub encrypted: Option<bool>,
    /// The repository's fingerprint as the target's `config` states it (compare it
    /// with the one kept with the identity; only `fetch` and `verify --identity` check
    /// it).
    pub fingerprint: Option<String>,
    pub snapshots: Vec<Remote>,
    /// Objects of `snapshots/` that are not a readable reference.
    pub problems: Vec<super::verify::Problem>,
    pub requests: Requests,
}

pub fn list(target: &Target) -> Result<RemoteList> {
    let config = super::read_config(target)?;
    let listing = super::references(target)?;
    let snapshots = listing
        .refs
        .into_iter()
        .map(|r| Remote {
            stored_bytes: r.objects().map(|(_, s)| s).sum(),
            chunks: r.chunks.len(),
            stamp: r.stamp,
            kind: r.kind,
            pushed_at: r.pushed_at,
            files: r.files,
            bytes: r.bytes,
        })
        .collect();
    Ok(RemoteList {
        target: target.url().to_string(),
        repository: config.as_ref().map(|c| c.repository.clone()),
        encrypted: config.as_ref().map(|c| c.encrypted),
        fingerprint: config.as_ref().map(|c| c.key_check.clone()),
        snapshots,
        problems: super::verify::Problem::unreadable(listing.unreadable),
        requests: target.requests(),
    })
}
