//! Where things are: the names of a snapshot's files, of what a restore leaves beside
//! the live files while it works, and of its control files in `<backup_dir>/restore/`.
//! Every other module takes these names from here.

use std::path::{Path, PathBuf};

use crate::config::Paths;

// --- inside a snapshot folder `<backup_dir>/snapshots/<STAMP>/` ---

/// The metadata.
pub const METADATA_FILE: &str = "backup-metadata.json";
/// The manifest (`sha256sum -c` format).
pub const MANIFEST_FILE: &str = "manifest.sha256";
/// The database copy.
pub const DB_REL: &str = "db/atocore.db";
/// The registry copy.
pub const REGISTRY_REL: &str = "config/project-registry.json";
/// The chroma tree copy.
pub const CHROMA_REL: &str = "chroma";
/// The chroma tree's index (paths, kinds, modes, owners, hashes).
pub const INDEX_FILE: &str = "chroma-index.json";

/// The hidden folder a snapshot is built in before it is published.
pub fn partial_dir(snapshots: &Path, stamp: &str) -> PathBuf {
    snapshots.join(format!(".{stamp}.partial"))
}

/// The hidden name a snapshot folder is renamed to before it is deleted.
pub fn deleting_dir(snapshots: &Path, stamp: &str) -> PathBuf {
    snapshots.join(format!(".{stamp}.deleting"))
}

// --- beside the live files, during a restore ---

/// The staging folder a restore keeps inside the live chroma directory.
pub const STAGING_DIR: &str = ".atocore-restore";

pub(crate) fn hidden_beside(dest: &Path, what: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{what}"))
}

pub(crate) fn restore_tmp(dest: &Path) -> PathBuf {
    hidden_beside(dest, "restore-tmp")
}

/// `path` with a suffix appended (`atocore.db` → `atocore.db-wal`).
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Where the aside copy of each live path goes.
pub(crate) fn aside_db(paths: &Paths) -> PathBuf {
    hidden_beside(&paths.db, "aside")
}

pub(crate) fn aside_registry(paths: &Paths) -> PathBuf {
    hidden_beside(&paths.registry, "aside")
}

pub(crate) fn staging_dir(paths: &Paths) -> PathBuf {
    paths.chroma.join(STAGING_DIR)
}

pub(crate) fn aside_chroma(paths: &Paths) -> PathBuf {
    staging_dir(paths).join("aside")
}

pub fn journal_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("journal.json")
}

pub fn aside_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("aside.json")
}

pub fn staged_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("staged.json")
}

/// Name prefix of the folders (beside the database, beside the registry, and in the
/// chroma staging area) that keep a set-aside live state that could not be made into
/// a pre-restore snapshot, followed by the restore's id.
pub const KEPT_PREFIX: &str = "atocore-pre-restore-kept-";

/// Name prefix of the folders that receive unexpected leftovers found where a restore
/// wants to set the live state aside (never deleted, never overwritten).
pub const LEFTOVER_PREFIX: &str = "atocore-restore-leftover-";

/// `<backup_dir>/restore/request.json`: a restore asked of the next `init` run.
pub fn request_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("request.json")
}

/// `<backup_dir>/restore/result.json`: what `init` did with the last request.
pub fn result_path(paths: &Paths) -> PathBuf {
    paths.restore_dir().join("result.json")
}

/// `<backup_dir>/restore/kept-<id>.json`: where a set-aside state was kept.
pub fn kept_record_path(paths: &Paths, restore_id: &str) -> PathBuf {
    paths.restore_dir().join(format!("kept-{restore_id}.json"))
}
