//! `offsite push`: upload snapshots, new chunks only, the reference last.
//!
//! Order on the target: new chunks (skipped when the one LIST of `chunks/` made at the
//! start shows them), then the encrypted index, then `snapshots/<STAMP>.json`. A push
//! killed at any point leaves only unreferenced objects, which the next push reuses
//! (nothing is uploaded twice) and `prune` removes after the grace period; the
//! snapshot is listed only once everything it needs is there.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::chunker::{self, RepoKey};
use super::crypto::{Identity, Sealer};
use super::format::{self, Entry, EntryKind, Index, Reference, RepoConfig};
use super::store::{Requests, Target};
use crate::config::Paths;
use crate::error::{Error, Result};
use crate::layout::METADATA_FILE;
use crate::metadata;
use crate::snapshot::published_stamps;
use crate::stamp::Stamp;
use crate::validate;

/// Which snapshots to push.
#[derive(Debug, Clone)]
pub enum Which {
    Newest,
    Stamp(String),
    Missing,
}

/// What one snapshot's push did.
#[derive(Debug, Clone, Serialize)]
pub struct Pushed {
    pub stamp: String,
    pub files: u64,
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks that were uploaded by this push.
    pub chunks_uploaded: u64,
    /// Objects written for this snapshot (new chunks, index, reference).
    pub objects_written: u64,
    pub bytes_written: u64,
}

/// The body of `offsite push`.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub target: String,
    pub repository: String,
    pub encrypted: bool,
    pub pushed: Vec<Pushed>,
    /// Valid snapshots that were already on the target.
    pub already_there: Vec<String>,
    pub requests: Requests,
}

/// Push what `which` names. `keep_going` is asked before each snapshot and before
/// each batch of uploads; when it says no, the push stops with [`Error::Cancelled`]
/// (what it uploaded stays unreferenced: the next push reuses it).
pub fn push(
    paths: &Paths,
    target: &Target,
    sealer: &Sealer,
    which: &Which,
    identity: Option<&Identity>,
    keep_going: &dyn Fn() -> bool,
) -> Result<PushReport> {
    let local = published_stamps(paths)?;
    // The candidates: newest first for `Newest`, oldest first for `Missing`.
    let stamps: Vec<Stamp> = match which {
        Which::Stamp(s) => {
            let s = Stamp::parse(s)?;
            if !local.contains(&s) {
                return Err(Error::UnknownStamp {
                    stamp: s.to_string(),
                    dir: paths.snapshots_dir(),
                });
            }
            vec![s]
        }
        Which::Newest => local.iter().rev().cloned().collect(),
        Which::Missing => local.clone(),
    };

    let nothing = || {
        Error::Usage(format!(
            "no valid snapshot in {} to push; take one with `atocore-restore-job backup`",
            paths.snapshots_dir().display()
        ))
    };
    if stamps.is_empty() && matches!(which, Which::Newest) {
        return Err(nothing());
    }

    let (config, key) = open_or_create(paths, target, sealer, identity)?;
    let on_target: HashSet<String> = target
        .list(format::SNAPSHOTS_DIR)?
        .into_iter()
        .filter_map(|l| {
            l.key
                .strip_prefix(format::SNAPSHOTS_DIR)?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    let mut existing = chunk_ids(target)?;

    let mut pushed = Vec::new();
    let mut already_there = Vec::new();
    for stamp in stamps {
        if !keep_going() {
            return Err(Error::Cancelled("the off-site push"));
        }
        if on_target.contains(stamp.as_str()) {
            already_there.push(stamp.to_string());
            if matches!(which, Which::Newest) {
                break;
            }
            continue;
        }
        let report = validate::validate(paths, &stamp)?;
        if !report.valid {
            match which {
                Which::Stamp(_) => {
                    return Err(Error::InvalidSnapshot {
                        stamp: stamp.to_string(),
                        codes: report.errors,
                    });
                }
                _ => {
                    tracing::warn!(stamp = %stamp, errors = ?report.errors, "not pushing a snapshot that fails validation");
                    continue;
                }
            }
        }
        pushed.push(push_one(
            &Session {
                paths,
                target,
                sealer,
                config: &config,
                key: &key,
                keep_going,
            },
            &stamp,
            &mut existing,
        )?);
        if matches!(which, Which::Newest) {
            break;
        }
    }
    if pushed.is_empty() && already_there.is_empty() && !matches!(which, Which::Missing) {
        return Err(nothing());
    }
    Ok(PushReport {
        target: target.url().to_string(),
        repository: config.repository,
        encrypted: config.encrypted,
        pushed,
        already_there,
        requests: target.requests(),
    })
}

/// The ids of the chunks on the target (one LIST).
fn chunk_ids(target: &Target) -> Result<HashSet<String>> {
    Ok(target
        .list(format::CHUNKS_DIR)?
        .into_iter()
        .filter_map(|l| l.key.rsplit('/').next().map(str::to_string))
        .collect())
}

/// Read the target's config and this host's key, or set up a new repository.
fn open_or_create(
    paths: &Paths,
    target: &Target,
    sealer: &Sealer,
    identity: Option<&Identity>,
) -> Result<(RepoConfig, RepoKey)> {
    if let Some(config) = super::read_config(target)? {
        if config.encrypted != sealer.encrypted() {
            return Err(Error::OffsiteNotConfigured(format!(
                "{} holds an {} repository but this host is set up to push {}; use another prefix or fix ATOCORE_OFFSITE_RECIPIENTS / ATOCORE_OFFSITE_UNENCRYPTED",
                target.url(),
                if config.encrypted {
                    "encrypted"
                } else {
                    "unencrypted"
                },
                if sealer.encrypted() {
                    "encrypted"
                } else {
                    "unencrypted"
                },
            )));
        }
        let key = super::repo_key(paths, target, &config, identity)?;
        return Ok((config, key));
    }
    let key = RepoKey::random();
    let repository = hex::encode(rand::random::<[u8; 8]>());
    let config = RepoConfig {
        format: format::FORMAT,
        repository: repository.clone(),
        encrypted: sealer.encrypted(),
        chunker: format!(
            "fastcdc-2020 min {} avg {} max {}",
            chunker::MIN_SIZE,
            chunker::AVG_SIZE,
            chunker::MAX_SIZE
        ),
        compression: format!("zstd level {}", chunker::ZSTD_LEVEL),
        key_check: key.check_value(),
        key: (!sealer.encrypted()).then(|| key.to_hex()),
        created_at: super::now_rfc3339(),
    };
    if sealer.encrypted() {
        super::save_local_key(paths, &repository, &key)?;
        target.put(format::REPO_KEY_KEY, sealer.seal(key.to_hex().as_bytes())?)?;
    }
    let body = serde_json::to_vec_pretty(&config).map_err(|e| Error::Json {
        path: format::CONFIG_KEY.into(),
        source: e,
    })?;
    target.put(format::CONFIG_KEY, body)?;
    tracing::info!(target = target.url(), repository = %repository, "set up a new off-site repository");
    Ok((config, key))
}

/// Uploads queued chunks in batches.
struct Uploader<'a> {
    target: &'a Target,
    keep_going: &'a dyn Fn() -> bool,
    queue: Vec<(String, Vec<u8>)>,
    queued_bytes: usize,
    objects: u64,
    bytes: u64,
}

impl Uploader<'_> {
    fn add(&mut self, key: String, bytes: Vec<u8>) -> Result<()> {
        self.queued_bytes += bytes.len();
        self.queue.push((key, bytes));
        if self.queue.len() >= 2 * self.target.parallel() || self.queued_bytes > 32 << 20 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !(self.keep_going)() {
            return Err(Error::Cancelled("the off-site push"));
        }
        let batch = std::mem::take(&mut self.queue);
        self.queued_bytes = 0;
        self.objects += batch.len() as u64;
        self.bytes += batch.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        self.target.put_many(batch)
    }
}

/// What every snapshot of one push shares.
struct Session<'a> {
    paths: &'a Paths,
    target: &'a Target,
    sealer: &'a Sealer,
    config: &'a RepoConfig,
    key: &'a RepoKey,
    keep_going: &'a dyn Fn() -> bool,
}

fn push_one(
    session: &Session<'_>,
    stamp: &Stamp,
    existing: &mut HashSet<String>,
) -> Result<Pushed> {
    let Session {
        paths,
        target,
        sealer,
        config,
        key,
        keep_going,
    } = *session;
    let dir = paths.snapshot_dir(stamp);
    let meta = metadata::read(&dir)?;
    let mut up = Uploader {
        target,
        keep_going,
        queue: Vec::new(),
        queued_bytes: 0,
        objects: 0,
        bytes: 0,
    };
    let mut entries = Vec::new();
    let mut needed: Vec<String> = Vec::new();
    let mut needed_set: HashSet<String> = HashSet::new();
    let mut uploaded = 0u64;
    walk(&dir, &mut |path, m| {
        let rel = super::rel(path, &dir);
        let ft = m.file_type();
        let mut e = Entry {
            path: rel,
            kind: EntryKind::Dir,
            mode: m.permissions().mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            size: 0,
            sha256: None,
            inline: None,
            chunks: Vec::new(),
            target: None,
        };
        if ft.is_symlink() {
            e.kind = EntryKind::Symlink;
            e.target = Some(
                fs::read_link(path)
                    .map_err(Error::io("read link", path))?
                    .to_string_lossy()
                    .into_owned(),
            );
        } else if ft.is_file() {
            e.kind = EntryKind::File;
            e.size = m.len();
            if m.len() <= format::INLINE_MAX {
                let bytes = fs::read(path).map_err(Error::io("read", path))?;
                e.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
                e.inline = Some(hex::encode(&bytes));
            } else {
                let mut h = Sha256::new();
                chunker::split(path, |data| {
                    h.update(data);
                    let id = key.id(data);
                    e.chunks.push((id.clone(), data.len() as u64));
                    if !existing.contains(&id) {
                        let obj = chunker::pack(sealer, data)?;
                        up.add(chunker::chunk_key(&id), obj)?;
                        existing.insert(id.clone());
                        uploaded += 1;
                    }
                    if needed_set.insert(id.clone()) {
                        needed.push(id);
                    }
                    Ok(())
                })?;
                e.sha256 = Some(hex::encode(h.finalize()));
            }
        } else if !ft.is_dir() {
            tracing::warn!(path = %path.display(), "left out of the off-site copy: not a file, folder or link");
            return Ok(());
        }
        entries.push(e);
        Ok(())
    })?;
    up.flush()?;

    // Every chunk the reference will name must be on the target: the new ones were
    // just written; the reused ones are checked again in case a prune removed them.
    let sizes: std::collections::HashMap<String, u64> = target
        .list(format::CHUNKS_DIR)?
        .into_iter()
        .filter_map(|l| Some((l.key.rsplit('/').next()?.to_string(), l.size)))
        .collect();
    if let Some(gone) = needed.iter().find(|id| !sizes.contains_key(*id)) {
        existing.remove(gone);
        return Err(Error::OffsiteObjectMissing {
            object: chunker::chunk_key(gone),
            target: format!(
                "{} (removed by a concurrent prune?); push again",
                target.url()
            ),
        });
    }

    let files = entries.iter().filter(|e| e.kind == EntryKind::File).count() as u64;
    let bytes = entries.iter().map(|e| e.size).sum();
    let index = Index {
        format: format::FORMAT,
        stamp: stamp.to_string(),
        repository: config.repository.clone(),
        metadata: meta
            .as_ref()
            .and_then(|m| serde_json::to_value(m).ok())
            .unwrap_or_else(|| {
                fs::read(dir.join(METADATA_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(serde_json::Value::Null)
            }),
        entries,
    };
    let plain = serde_json::to_vec(&index).map_err(|e| Error::Json {
        path: dir.clone(),
        source: e,
    })?;
    let index_key = format!("{}{}", format::INDEX_DIR, key.id(&plain));
    let index_obj = chunker::pack(sealer, &plain)?;
    let index_size = index_obj.len() as u64;
    target.put(&index_key, index_obj)?;

    let reference = Reference {
        format: format::FORMAT,
        stamp: stamp.to_string(),
        kind: meta
            .as_ref()
            .map(|m| m.kind_or_manual().as_str().to_string())
            .unwrap_or_else(|| "manual".into()),
        chroma: meta.as_ref().is_some_and(|m| m.has_chroma()),
        encrypted: config.encrypted,
        pushed_at: super::now_rfc3339(),
        index: index_key,
        index_size,
        chunks: needed
            .iter()
            .map(|id| (id.clone(), sizes.get(id).copied().unwrap_or(0)))
            .collect(),
        bytes,
        files,
    };
    let body = serde_json::to_vec_pretty(&reference).map_err(|e| Error::Json {
        path: dir.clone(),
        source: e,
    })?;
    let ref_size = body.len() as u64;
    target.put(&Reference::key_for(stamp.as_str()), body)?;
    tracing::info!(stamp = %stamp, chunks = needed.len(), uploaded, "pushed the snapshot off-site");
    Ok(Pushed {
        stamp: stamp.to_string(),
        files,
        bytes,
        chunks: needed.len() as u64,
        chunks_uploaded: uploaded,
        objects_written: up.objects + 2,
        bytes_written: up.bytes + index_size + ref_size,
    })
}

/// Visit the entries below `dir`, parents before children, sorted by name.
fn walk(dir: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io("list", dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .map_err(Error::io("list", dir))?;
    names.sort();
    for p in names {
        let m = fs::symlink_metadata(&p).map_err(Error::io("stat", &p))?;
        f(&p, &m)?;
        if m.is_dir() {
            walk(&p, f)?;
        }
    }
    Ok(())
}
