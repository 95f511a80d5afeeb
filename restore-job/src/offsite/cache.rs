//! This host's memory of what it pushed: the chunk list of every file of the last
//! snapshot pushed to a repository, by the file's SHA-256, kept in
//! `backups/offsite/<repository>.files`.
//!
//! A file whose manifest hash is in it, at the same size, with every chunk still listed
//! on the target, is not read again: a daily push reads only what changed since the
//! last one (restic does the same from its parent snapshot). The file is tagged with
//! the repository key, so a damaged or edited cache is ignored, never trusted; losing
//! it only costs one full read.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::chunker::RepoKey;
use crate::config::Paths;
use crate::durable;
use crate::error::Result;

const FORMAT: u32 = 1;

/// One file's chunks: (id, plaintext length), in order.
pub type Chunks = Vec<(String, u64)>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Body {
    format: u32,
    repository: String,
    /// SHA-256 → (size, chunks).
    files: BTreeMap<String, (u64, Chunks)>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Tagged {
    body: Body,
    tag: String,
}

/// The cache of one repository.
#[derive(Debug, Default)]
pub struct FileCache {
    body: Body,
}

/// Where the cache of `repository` lives.
pub fn path(paths: &Paths, repository: &str) -> PathBuf {
    paths
        .backup_dir
        .join("offsite")
        .join(format!("{repository}.files"))
}

fn tag(key: &RepoKey, body: &Body) -> String {
    key.tag(&serde_json::to_vec(body).unwrap_or_default())
}

impl FileCache {
    /// Load the cache (empty when absent, unreadable, of another repository or with a
    /// tag that does not match).
    pub fn load(paths: &Paths, repository: &str, key: &RepoKey) -> FileCache {
        let p = path(paths, repository);
        let body = match std::fs::read(&p) {
            Ok(bytes) => match serde_json::from_slice::<Tagged>(&bytes) {
                Ok(t)
                    if t.body.format == FORMAT
                        && t.body.repository == repository
                        && t.tag == tag(key, &t.body) =>
                {
                    t.body
                }
                _ => {
                    tracing::warn!(cache = %p.display(), "ignoring the off-site file cache: damaged or not this repository's (the push reads every file)");
                    Body::default()
                }
            },
            Err(_) => Body::default(),
        };
        FileCache { body }
    }

    /// The chunks of a file with this content and size, if known.
    pub fn get(&self, sha256: &str, size: u64) -> Option<&Chunks> {
        self.body
            .files
            .get(sha256)
            .filter(|(s, _)| *s == size)
            .map(|(_, c)| c)
    }

    /// Replace the cache by the files of the snapshot just pushed.
    pub fn save(
        paths: &Paths,
        repository: &str,
        key: &RepoKey,
        files: BTreeMap<String, (u64, Chunks)>,
    ) -> Result<()> {
        let body = Body {
            format: FORMAT,
            repository: repository.to_string(),
            files,
        };
        let tagged = Tagged {
            tag: tag(key, &body),
            body,
        };
        let p = path(paths, repository);
        if let Some(dir) = p.parent() {
            durable::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec(&tagged).map_err(|e| crate::error::Error::Json {
            path: p.clone(),
            source: e,
        })?;
        // Only this host reads it; like the key beside it, no one else may.
        durable::write_secret_atomic(&p, &bytes)
    }

    /// Forget the cache (after a chunk it named turned out to be gone).
    pub fn forget(paths: &Paths, repository: &str) {
        let _ = std::fs::remove_file(path(paths, repository));
    }
}
