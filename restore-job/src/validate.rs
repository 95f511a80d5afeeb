//! Snapshot validation: the contract's stable error codes.
//!
//! Full validation (`validate`) hashes every file against the manifest (on one core)
//! while SQLite runs `integrity_check` on the database copy (on the other), then
//! compares the copy's page and row counts with those recorded at backup time, so an
//! empty or truncated copy that passes `integrity_check` is still caught.
//! The quick check (`list`, `prune`) only looks at structure: metadata, files present
//! with their recorded sizes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::chroma::{self, Index};
use crate::config::Paths;
use crate::db;
use crate::durable;
use crate::error::{Error, Result};
use crate::layout::MANIFEST_FILE;
use crate::layout::METADATA_FILE;
use crate::layout::{CHROMA_REL, DB_REL, REGISTRY_REL};
use crate::manifest;
use crate::metadata::{self, Metadata};
use crate::stamp::Stamp;

/// The error code of a snapshot folder that is a symlink: refused everywhere (`list`,
/// `validate`, `restore`, `prune`), never read or deleted through.
pub const SNAPSHOT_IS_SYMLINK: &str = "snapshot_is_symlink";

/// Whether `dir` is a symlink (not followed).
fn is_symlink(dir: &Path) -> bool {
    fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink())
}

/// The body of `validate`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ValidationReport {
    pub stamp: String,
    pub valid: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// Fully validate one snapshot. A stamp with no folder is a mistake in the request
/// ([`Error::UnknownStamp`]: exit 2, HTTP 404), not a snapshot that failed validation.
pub fn validate(paths: &Paths, stamp: &Stamp) -> Result<ValidationReport> {
    let dir = paths.snapshot_dir(stamp);
    if !dir.is_dir() {
        return Err(Error::UnknownStamp {
            stamp: stamp.to_string(),
            dir: paths.snapshots_dir(),
        });
    }
    Ok(validate_dir(&dir, stamp.as_str()))
}

/// Where [`validate_dir_with`] gets the SHA-256 of the files the manifest lists.
#[derive(Debug, Clone, Copy)]
pub enum Hashes<'a> {
    /// Read and hash every file.
    Read,
    /// The caller hashed the files as it read them (relative path → hex SHA-256), so
    /// they are not read twice; a listed file missing from the map is read.
    Known(&'a BTreeMap<String, String>),
    /// Not yet: the caller is still reading the files and completes the report with
    /// [`with_hashes`] (so the database check runs while it reads).
    Later,
}

/// Whether [`validate_dir_with`] runs SQLite's checks on the database copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbCheck {
    /// Always (what `validate` does).
    Run,
    /// Not when the manifest check proves the database is byte for byte the one that
    /// passed them when the snapshot was made: a snapshot made by this engine (its
    /// metadata has a format version) is published only after `integrity_check` and
    /// the page count passed on exactly the bytes its manifest hashes, and those checks
    /// are functions of the bytes. Used by the off-site push and fetch, which hash every
    /// byte they move anyway; `restore` checks the database again before swapping it in.
    ProvenByHash,
}

/// Fully validate the snapshot folder `dir`.
pub fn validate_dir(dir: &Path, stamp: &str) -> ValidationReport {
    validate_dir_with(dir, stamp, Hashes::Read, DbCheck::Run)
}

/// Complete a report made with [`Hashes::Later`]: the snapshot's manifest (as the
/// caller read it; `None` when it has none or it does not parse, which the report
/// already says) against `known`.
pub fn with_hashes(
    mut report: ValidationReport,
    dir: &Path,
    manifest: Option<&manifest::Manifest>,
    known: &BTreeMap<String, String>,
) -> ValidationReport {
    if let Some(m) = manifest {
        let (errors, warnings) = check_manifest(dir, m, Hashes::Known(known));
        report.errors.extend(errors);
        report.warnings.extend(warnings);
        report.warnings.dedup();
        report.errors.sort();
        report.errors.dedup();
        report.valid = report.errors.is_empty();
    }
    report
}

/// Fully validate the snapshot folder `dir`, with the file hashes from `hashes`.
pub fn validate_dir_with(
    dir: &Path,
    stamp: &str,
    hashes: Hashes<'_>,
    db_check: DbCheck,
) -> ValidationReport {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let report = |errors: Vec<String>, warnings| ValidationReport {
        stamp: stamp.to_string(),
        valid: errors.is_empty(),
        errors,
        warnings,
    };
    if is_symlink(dir) {
        return report(vec![SNAPSHOT_IS_SYMLINK.into()], warnings);
    }
    if !dir.is_dir() {
        return report(vec!["snapshot_missing".into()], warnings);
    }
    let meta = match metadata::read(dir) {
        Ok(Some(m)) => Some(m),
        Ok(None) | Err(_) => {
            errors.push("metadata_invalid_json".to_string());
            None
        }
    };

    let db_path = dir.join(DB_REL);
    let manifest = match manifest::read(dir) {
        Ok(Some(Ok(m))) => Some(m),
        Ok(Some(Err(code))) => {
            errors.push(code);
            None
        }
        Ok(None) => {
            warnings.push("no_manifest".to_string());
            None
        }
        Err(_) => {
            errors.push("manifest_invalid".to_string());
            None
        }
    };

    let proven = db_check == DbCheck::ProvenByHash
        && meta.as_ref().is_some_and(|m| m.format_version.is_some())
        && manifest.as_ref().is_some_and(|m| m.contains_key(DB_REL));
    // Hash against the manifest on one thread while SQLite checks the db on this one.
    let ((hash_errors, hash_warnings), db_check) = std::thread::scope(|s| {
        let hasher = s.spawn(|| match (&manifest, hashes) {
            (Some(m), Hashes::Read | Hashes::Known(_)) => check_manifest(dir, m, hashes),
            _ => Default::default(),
        });
        let db_check = db_path.is_file().then(|| {
            if proven {
                (Vec::new(), None)
            } else {
                db::check_file(&db_path)
            }
        });
        (
            hasher
                .join()
                .unwrap_or_else(|_| (vec!["manifest_check_crashed".into()], Vec::new())),
            db_check,
        )
    });

    match db_check {
        None => errors.push("db_snapshot_missing".into()),
        Some((problems, facts)) => {
            if !problems.is_empty() {
                errors.push("db_integrity_check_failed".into());
            }
            if let (Some(facts), Some(m)) = (facts, &meta) {
                if let Some(pages) = m.db_page_count
                    && pages != facts.page_count
                {
                    errors.push("db_page_count_mismatch".into());
                }
                if let Some(counts) = &m.row_counts {
                    for (table, want) in counts {
                        if facts.row_counts.get(table) != Some(want) {
                            errors.push(format!("db_row_count_mismatch:{table}"));
                        }
                    }
                } else if facts.tables == 0 {
                    warnings.push("db_has_no_tables".into());
                }
            }
        }
    }

    if let Some(m) = &meta {
        if m.has_registry() {
            match fs::read(dir.join(REGISTRY_REL)) {
                Ok(b) if serde_json::from_slice::<serde_json::Value>(&b).is_ok() => {}
                Ok(_) => errors.push("registry_invalid_json".into()),
                Err(_) => errors.push("registry_snapshot_missing".into()),
            }
        }
        if m.has_chroma() {
            let cdir = dir.join(CHROMA_REL);
            if !fs::symlink_metadata(&cdir).is_ok_and(|c| c.is_dir()) {
                errors.push("chroma_snapshot_missing".into());
            } else {
                errors.extend(check_chroma(dir, &cdir, m.format_version.is_some()));
            }
            if m.chroma_quiesced == Some(false) {
                warnings.push("chroma_not_quiesced".into());
            }
        }
        if !m.warnings.is_empty() {
            warnings.extend(
                m.warnings
                    .iter()
                    .filter(|w| *w != "chroma_not_quiesced")
                    .cloned(),
            );
        }
    }
    errors.extend(hash_errors);
    warnings.extend(hash_warnings);
    warnings.dedup();
    errors.sort();
    errors.dedup();
    report(errors, warnings)
}

/// The chroma copy against its index: the index is safe to restore (plain paths,
/// nothing below a link, links resolving inside the tree) and the tree equals it.
/// A snapshot without an index (Python era) has nothing to compare with.
fn check_chroma(dir: &Path, cdir: &Path, index_required: bool) -> Vec<String> {
    let index = match durable::read_json::<Index>(&dir.join(crate::layout::INDEX_FILE)) {
        Ok(Some(index)) => index,
        Ok(None) if !index_required => return Vec::new(),
        _ => return vec!["chroma_index_invalid".into()],
    };
    let mut errors: Vec<String> = chroma::index_problems(&index)
        .into_iter()
        .map(|(p, _)| format!("chroma_index_unsafe:{p}"))
        .collect();
    match chroma::differences(cdir, &index) {
        Ok(diffs) => errors.extend(diffs.into_iter().map(|d| format!("chroma_tree_{d}"))),
        Err(_) => errors.push("chroma_tree_unreadable:.".into()),
    }
    errors
}

/// Every listed file must exist with its hash; every file present must be listed.
fn check_manifest(
    dir: &Path,
    m: &manifest::Manifest,
    hashes: Hashes<'_>,
) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (rel, want) in m {
        let Ok(path) = chroma::safe_join(dir, rel) else {
            errors.push(format!("manifest_mismatch:{rel}"));
            continue;
        };
        let known = match hashes {
            Hashes::Known(k) => k.get(rel).cloned(),
            _ => None,
        };
        match known.map_or_else(|| durable::sha256_file(&path), Ok) {
            Ok(h) if &h == want => {}
            Ok(_) => errors.push(format!("manifest_mismatch:{rel}")),
            Err(_) => errors.push(format!("manifest_missing_file:{rel}")),
        }
    }
    let listed: BTreeSet<&str> = m.keys().map(String::as_str).collect();
    let (files, unreadable) = files_below(dir);
    errors.extend(
        unreadable
            .into_iter()
            .map(|rel| format!("snapshot_tree_unreadable:{rel}")),
    );
    for rel in files {
        if rel == MANIFEST_FILE || rel == METADATA_FILE || listed.contains(rel.as_str()) {
            continue;
        }
        if is_inspection_leftover(dir, &rel) {
            warnings.push("db_sidecar_files_present".to_string());
            continue;
        }
        errors.push(format!("manifest_unexpected_file:{rel}"));
    }
    (errors, warnings)
}

/// Opening a snapshot's database with a plain `sqlite3` leaves a `-shm` and an empty
/// `-wal` beside it without changing it: worth a warning, not a failure. A `-wal` with
/// frames in it is a change, and stays an error.
fn is_inspection_leftover(dir: &Path, rel: &str) -> bool {
    let shm = format!("{DB_REL}-shm");
    let wal = format!("{DB_REL}-wal");
    rel == shm
        || (rel == wal
            && fs::metadata(dir.join(rel))
                .map(|m| m.len() == 0)
                .unwrap_or(false))
}

/// Relative paths of the regular files below `dir`, and of the folders that could not
/// be listed (a file there would go unnoticed, so the caller fails on them).
fn files_below(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let rel_of = |p: &Path| {
        p.strip_prefix(dir)
            .ok()
            .map(|r| r.to_string_lossy().into_owned())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| ".".into())
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries: std::io::Result<Vec<fs::DirEntry>> =
            fs::read_dir(&d).and_then(|rd| rd.collect());
        let Ok(entries) = entries else {
            unreadable.push(rel_of(&d));
            continue;
        };
        for e in entries {
            let Ok(ft) = e.file_type() else {
                unreadable.push(rel_of(&e.path()));
                continue;
            };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(rel_of(&e.path()));
            }
        }
    }
    (out, unreadable)
}

/// Structural check used by `list` and `prune`: the folder is not a symlink, metadata
/// parses, the database is there with its recorded size (when the metadata records one),
/// the registry and chroma copies are there when listed.
pub(crate) fn quick(dir: &Path) -> (Option<Metadata>, Vec<String>) {
    if is_symlink(dir) {
        return (None, vec![SNAPSHOT_IS_SYMLINK.into()]);
    }
    let meta = match metadata::read(dir) {
        Ok(Some(m)) => m,
        _ => return (None, vec!["metadata_invalid_json".into()]),
    };
    let mut errors = Vec::new();
    match fs::metadata(dir.join(DB_REL)) {
        Ok(m) if meta.db_size_bytes == 0 || m.len() == meta.db_size_bytes => {}
        Ok(_) => errors.push(format!("manifest_mismatch:{DB_REL}")),
        Err(_) => errors.push("db_snapshot_missing".into()),
    }
    if meta.has_registry() && !dir.join(REGISTRY_REL).is_file() {
        errors.push("registry_snapshot_missing".into());
    }
    if meta.has_chroma() && !dir.join(CHROMA_REL).is_dir() {
        errors.push("chroma_snapshot_missing".into());
    }
    (Some(meta), errors)
}
