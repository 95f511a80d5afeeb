//! `atocore-standin prepare-storage`: creates the storage layout of the contract
//! (section 0) and hands the stand-in's folders to its numeric user, so the image can run
//! as non-root on fresh bind mounts (Docker creates missing bind sources as root).
//!
//! Only the two folders themselves are chowned, never their contents: files keep the
//! owner they have, so a restore that put back the wrong owner is not papered over.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::StandinError;

/// Creates the database, chroma, registry and backup folders; with `owner`, chowns the
/// database and chroma folders (not their contents) to it. Returns the folders.
pub fn prepare(config: &Config, owner: Option<(u32, u32)>) -> Result<Vec<PathBuf>, StandinError> {
    let db_dir = config
        .db_path
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let registry_dir = config
        .registry_path
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let dirs = vec![
        db_dir.clone(),
        config.chroma_path.clone(),
        registry_dir,
        config.backup_dir.clone(),
    ];
    for dir in &dirs {
        std::fs::create_dir_all(dir).map_err(|e| StandinError::io("cannot create", dir, e))?;
    }
    if let Some((uid, gid)) = owner {
        for dir in [&db_dir, &config.chroma_path] {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| StandinError::io("cannot chown", dir, e))?;
        }
    }
    Ok(dirs)
}
