//! `offsite fetch`: download one snapshot, decrypt it, check every chunk's keyed hash
//! and every file's SHA-256, build it in `snapshots/.<STAMP>.partial/`, validate it
//! like a fresh backup, and publish it by rename as an ordinary local snapshot. On any
//! failure the partial folder is removed: nothing is published.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::chunker;
use super::crypto::Identity;
use super::format::{EntryKind, Index, Reference};
use super::store::{Requests, Target};
use crate::config::Paths;
use crate::durable::{self, BackupLock};
use crate::error::{Error, Result};
use crate::stamp::Stamp;
use crate::validate;

/// The body of `offsite fetch`.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    pub stamp: String,
    pub target: String,
    pub snapshot_dir: String,
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub valid: bool,
    pub warnings: Vec<String>,
    pub requests: Requests,
    pub next: String,
}

/// Fetch `which` (a stamp or `latest`).
pub fn fetch(
    paths: &Paths,
    target: &Target,
    which: &str,
    identity: Option<&Identity>,
) -> Result<FetchReport> {
    let wanted = if which == "latest" {
        None
    } else {
        Some(Stamp::parse(which)?)
    };
    let config = super::read_config(target)?.ok_or_else(|| {
        Error::OffsiteNotConfigured(format!(
            "{} holds no off-site repository (no `config` object); check ATOCORE_OFFSITE_URL",
            target.url()
        ))
    })?;
    if config.encrypted && identity.is_none() {
        return Err(Error::OffsiteNotConfigured(
            "the off-site repository is encrypted: pass --identity FILE (the age private key)"
                .into(),
        ));
    }
    let reference: Reference = match &wanted {
        Some(s) => {
            let key = Reference::key_for(s.as_str());
            let body = target
                .get_optional(&key)?
                .ok_or_else(|| Error::OffsiteUnknownStamp {
                    stamp: s.to_string(),
                    target: target.url().to_string(),
                })?;
            serde_json::from_slice(&body).map_err(|e| Error::OffsiteObjectDamaged {
                object: key,
                why: format!("not the expected JSON: {e}"),
            })?
        }
        None => super::references(target)?
            .pop()
            .ok_or_else(|| Error::OffsiteUnknownStamp {
                stamp: "latest".into(),
                target: target.url().to_string(),
            })?,
    };
    let stamp = Stamp::parse(&reference.stamp)?;
    let key = super::repo_key(paths, target, &config, identity)?;

    let snapshots = paths.snapshots_dir();
    durable::create_dir_all(&snapshots)?;
    let _lock = BackupLock::acquire(&paths.backup_dir)?;
    let final_dir = paths.snapshot_dir(&stamp);
    if final_dir.exists() {
        return Err(Error::Usage(format!(
            "snapshot `{stamp}` is already in {}; nothing fetched (delete it first to fetch it again)",
            snapshots.display()
        )));
    }
    let partial_dir = crate::layout::partial_dir(&snapshots, stamp.as_str());
    if partial_dir.exists() {
        fs::remove_dir_all(&partial_dir).map_err(Error::io("remove", &partial_dir))?;
    }

    let index_bytes = target.get(&reference.index)?;
    if index_bytes.len() as u64 != reference.index_size {
        return Err(Error::OffsiteObjectDamaged {
            object: reference.index.clone(),
            why: format!(
                "{} bytes, the reference says {}",
                index_bytes.len(),
                reference.index_size
            ),
        });
    }
    let index: Index =
        super::open_json(&reference.index, &index_bytes, config.encrypted, identity)?;
    if index.stamp != reference.stamp || index.repository != config.repository {
        return Err(Error::OffsiteObjectDamaged {
            object: reference.index.clone(),
            why: format!(
                "it describes snapshot {} of repository {}, not {} of {}",
                index.stamp, index.repository, reference.stamp, config.repository
            ),
        });
    }

    fs::create_dir(&partial_dir).map_err(Error::io("create", &partial_dir))?;
    let mut guard = durable::PartialDir::guard(&partial_dir);
    let opener = if config.encrypted { identity } else { None };
    let mut chunks = 0u64;
    for e in &index.entries {
        let out = crate::chroma::safe_join(&partial_dir, &e.path)?;
        match e.kind {
            EntryKind::Dir => fs::create_dir(&out).map_err(Error::io("create", &out))?,
            EntryKind::Symlink => {
                let t = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(t, &out).map_err(Error::io("create link", &out))?;
            }
            EntryKind::File => {
                let mut f = File::create(&out).map_err(Error::io("create", &out))?;
                let mut h = Sha256::new();
                let mut written = 0u64;
                if let Some(hexed) = &e.inline {
                    let bytes = hex::decode(hexed).map_err(|_| Error::OffsiteObjectDamaged {
                        object: reference.index.clone(),
                        why: format!("the inline content of {} is not hex", e.path),
                    })?;
                    h.update(&bytes);
                    written += bytes.len() as u64;
                    f.write_all(&bytes).map_err(Error::io("write", &out))?;
                }
                for batch in e.chunks.chunks(2 * target.parallel()) {
                    let keys: Vec<String> =
                        batch.iter().map(|(id, _)| chunker::chunk_key(id)).collect();
                    let bodies = target.get_many(&keys)?;
                    for ((id, len), body) in batch.iter().zip(bodies) {
                        let plain = chunker::unpack_chunk(opener, &key, id, &body, *len)?;
                        h.update(&plain);
                        written += plain.len() as u64;
                        f.write_all(&plain).map_err(Error::io("write", &out))?;
                        chunks += 1;
                    }
                }
                f.sync_all().map_err(Error::io("sync", &out))?;
                let sum = hex::encode(h.finalize());
                if written != e.size || e.sha256.as_deref().is_some_and(|s| s != sum) {
                    return Err(Error::OffsiteObjectDamaged {
                        object: reference.index.clone(),
                        why: format!(
                            "{} rebuilt to {written} bytes with SHA-256 {sum}, the index says {} bytes",
                            e.path, e.size
                        ),
                    });
                }
            }
        }
    }
    // Modes, owners and times last, children before parents (writing into a folder
    // changes its mtime; a read-only folder must still take its children).
    for e in index.entries.iter().rev() {
        let out = crate::chroma::safe_join(&partial_dir, &e.path)?;
        if e.kind != EntryKind::Symlink {
            fs::set_permissions(&out, fs::Permissions::from_mode(e.mode))
                .map_err(Error::io("set permissions of", &out))?;
        }
        durable::set_owner_and_mtime(&out, e.uid, e.gid, Some(e.mtime_ns))?;
        if e.kind == EntryKind::Dir {
            durable::sync_path(&out)?;
        }
    }
    durable::sync_path(&partial_dir)?;

    let report = validate::validate_dir(&partial_dir, stamp.as_str());
    if !report.valid {
        return Err(Error::DamagedSnapshot {
            stamp: stamp.to_string(),
            why: format!(
                "the fetched copy fails validation ({}); nothing was published",
                report.errors.join(", ")
            ),
        });
    }
    fs::rename(&partial_dir, &final_dir).map_err(Error::io("publish", &final_dir))?;
    guard.published();
    durable::sync_parent(&final_dir)?;
    tracing::info!(stamp = %stamp, chunks, "fetched the snapshot from off-site and published it");
    Ok(FetchReport {
        stamp: stamp.to_string(),
        target: target.url().to_string(),
        snapshot_dir: final_dir.display().to_string(),
        files: reference.files,
        bytes: reference.bytes,
        chunks,
        valid: true,
        warnings: report.warnings,
        requests: target.requests(),
        next: format!("atocore-restore-job restore {stamp} --confirm-service-stopped"),
    })
}
