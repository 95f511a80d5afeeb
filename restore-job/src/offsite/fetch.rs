//! `offsite fetch`: download one snapshot, decrypt it, check every chunk's keyed hash
//! and every file's SHA-256, build it in `snapshots/.<STAMP>.partial/`, validate it
//! like a fresh backup, and publish it by rename as an ordinary local snapshot. On any
//! failure the partial folder is removed: nothing is published.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::chunker::{self, RepoKey};
use super::crypto::Identity;
use super::format::{self, Entry, EntryKind, Index, Reference};
use super::store::{Requests, Target};
use super::{Gauge, joined, joined_all, trust};
use crate::config::Paths;
use crate::durable::{self, BackupLock};
use crate::error::{Error, Result};
use crate::stamp::Stamp;
use crate::validate::{self, DbCheck, Hashes};

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
    // With the identity, only the authenticated repository it belongs to (see
    // `trust`); without one, only an unencrypted repository (a trusted target).
    let (config, key, trusted) = match identity {
        Some(id) => {
            let t = trust::open(paths, target, id)?;
            (t.config.clone(), t.key.clone(), Some(t))
        }
        None => {
            let config = super::read_config(target)?.ok_or_else(|| {
                Error::OffsiteNotConfigured(format!(
                    "{} holds no off-site repository (no `config` object); check ATOCORE_OFFSITE_URL",
                    target.url()
                ))
            })?;
            if config.encrypted {
                return Err(Error::OffsiteNotConfigured(
                    "the off-site repository is encrypted: pass --identity FILE (the age private key)"
                        .into(),
                ));
            }
            let key = super::repo_key(paths, target, &config, None)?;
            (config, key, None)
        }
    };
    let mut warnings = Vec::new();
    let reference: Reference = match &wanted {
        Some(s) => {
            let object = Reference::key_for(s.as_str());
            let body = target
                .get_optional(&object)?
                .ok_or_else(|| Error::OffsiteUnknownStamp {
                    stamp: s.to_string(),
                    target: target.url().to_string(),
                })?;
            let r: Reference =
                serde_json::from_slice(&body).map_err(|e| Error::OffsiteObjectDamaged {
                    object: object.clone(),
                    why: format!("not the expected JSON: {e}"),
                })?;
            match &trusted {
                Some(t) => t.check_reference(&object, &r)?,
                None => trust::check_name(&object, &r)?,
            }
            r
        }
        None => newest_authentic(target, trusted.as_ref(), &mut warnings)?,
    };
    let stamp = Stamp::parse(&reference.stamp)?;

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
    if let Some(t) = &trusted {
        t.check_index(&reference, &index_bytes)?;
    }
    let index: Index =
        super::open_json(&reference.index, &index_bytes, config.encrypted, identity)?;
    check_entries(&index, &reference.index)?;
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
    // Folders and links now (the entries list parents first); file contents through
    // the pipeline.
    let mut files = Vec::new();
    for e in &index.entries {
        let out = crate::chroma::safe_join(&partial_dir, &e.path)?;
        match e.kind {
            EntryKind::Dir => fs::create_dir(&out).map_err(Error::io("create", &out))?,
            EntryKind::Symlink => {
                let t = e.target.as_deref().unwrap_or_default();
                std::os::unix::fs::symlink(t, &out).map_err(Error::io("create link", &out))?;
            }
            EntryKind::File => files.push((e, out)),
        }
    }
    let (hashes, chunks) = write_files(target, &files, &reference.index, opener, &key)?;
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

    // The files were hashed as they were written: validation does not read them again.
    let mut report = validate::validate_dir_with(
        &partial_dir,
        stamp.as_str(),
        Hashes::Known(&hashes),
        DbCheck::ProvenByHash,
    );
    if !report.valid {
        return Err(Error::DamagedSnapshot {
            stamp: stamp.to_string(),
            why: format!(
                "the fetched copy fails validation ({}); nothing was published",
                report.errors.join(", ")
            ),
        });
    }
    report.warnings.extend(warnings);
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

/// The newest reference on the target that the reader may trust (every one that
/// parses, without an identity); the ones passed over are `warnings`.
fn newest_authentic(
    target: &Target,
    trusted: Option<&trust::Trusted>,
    warnings: &mut Vec<String>,
) -> Result<Reference> {
    let listing = super::references(target)?;
    for (object, why) in &listing.unreadable {
        warnings.push(format!("{object} was passed over: {why}"));
    }
    let mut refused = None;
    for r in listing.refs.into_iter().rev() {
        let object = Reference::key_for(&r.stamp);
        match trusted.map(|t| t.check_reference(&object, &r)) {
            Some(Err(e)) => {
                tracing::warn!(object = %object, error = %e, "passing over an off-site reference that is not authentic");
                warnings.push(format!("{object} was passed over: {e}"));
                refused.get_or_insert(e);
            }
            _ => return Ok(r),
        }
    }
    Err(refused.unwrap_or_else(|| Error::OffsiteUnknownStamp {
        stamp: "latest".into(),
        target: target.url().to_string(),
    }))
}

/// What an index may describe, checked before anything is written: files held inline
/// are small (at most [`format::INLINE_MAX`]) and their content is as long as they say.
fn check_entries(index: &Index, object: &str) -> Result<()> {
    let damaged = |why: String| Error::OffsiteObjectDamaged {
        object: object.to_string(),
        why,
    };
    for e in &index.entries {
        if let Some(inline) = &e.inline {
            if e.kind != EntryKind::File || e.size > format::INLINE_MAX {
                return Err(damaged(format!(
                    "{} holds {} bytes inline; at most {} are stored in an index",
                    e.path,
                    inline.len() / 2,
                    format::INLINE_MAX
                )));
            }
            if inline.len() as u64 != 2 * e.size || !e.chunks.is_empty() {
                return Err(damaged(format!(
                    "the inline content of {} is not the {} bytes it says",
                    e.path, e.size
                )));
            }
        }
    }
    Ok(())
}

/// Write the contents of `files` (index entries and where they go), downloading their
/// chunks in three overlapping stages:
/// 1. this thread downloads, [`Target::parallel`] at a time, in order;
/// 2. openers (one per core) decrypt, decompress and check each chunk's keyed hash;
/// 3. a writer puts the chunks in order into the files, hashes each file, checks it
///    against the index and syncs it.
///
/// At most [`WINDOW`] chunks are between download and write at any time, so memory
/// stays flat whatever the snapshot's size. Returns each file's SHA-256 (relative
/// path → hex) and the number of chunks.
fn write_files(
    target: &Target,
    files: &[(&Entry, PathBuf)],
    index_object: &str,
    opener: Option<&Identity>,
    key: &RepoKey,
) -> Result<(BTreeMap<String, String>, u64)> {
    let wanted: Vec<&(String, u64)> = files.iter().flat_map(|(e, _)| &e.chunks).collect();
    let window = WINDOW.max(2 * target.parallel());
    let openers = super::workers();
    let (to_openers, from_main) = mpsc::sync_channel::<(usize, bytes::Bytes)>(openers);
    let from_main = Arc::new(Mutex::new(from_main));
    let (to_writer, from_openers) = mpsc::channel::<(usize, Vec<u8>)>();
    // How many chunks the writer has written: the downloads stay within the window.
    let written = Gauge::new(0, "the off-site fetch");

    let (fetched, opened, wrote) = std::thread::scope(|s| {
        let opening: Vec<_> = (0..openers)
            .map(|_| {
                let from_main = Arc::clone(&from_main);
                let to_writer = to_writer.clone();
                let wanted = &wanted;
                let written = &written;
                s.spawn(move || -> Result<()> {
                    loop {
                        let job = from_main.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((seq, body)) = job else { return Ok(()) };
                        let (id, len) = wanted[seq];
                        let plain = chunker::unpack_chunk(opener, key, id, &body, *len)
                            .inspect_err(|_| written.close())?;
                        to_writer
                            .send((seq, plain))
                            .map_err(|_| Error::Cancelled("the off-site fetch"))?;
                    }
                })
            })
            .collect();
        drop(from_main);
        drop(to_writer);
        let writer = {
            let written = &written;
            s.spawn(move || write_in_order(files, index_object, from_openers, written))
        };
        let fetched = target.get_each(
            wanted.iter().map(|(id, _)| chunker::chunk_key(id)),
            |seq, body| {
                written.wait(|done| (seq as u64) < done + window as u64, |done| done)?;
                to_openers
                    .send((seq, body))
                    .map_err(|_| Error::Cancelled("the off-site fetch"))
            },
        );
        drop(to_openers);
        let opened = joined_all(opening, "the off-site fetch (opener crashed)").map(|_| ());
        let wrote = joined(writer, "the off-site fetch (writer crashed)");
        (fetched, opened, wrote)
    });
    match (fetched, opened, wrote) {
        (Ok(()), Ok(()), Ok(done)) => Ok(done),
        (f, o, w) => Err(super::first_failure([f.err(), o.err(), w.err()])),
    }
}

/// Chunks between download and write at most (more when the target runs more
/// requests at once).
const WINDOW: usize = 16;

/// The writer stage of [`write_files`]: chunks arrive out of order from the openers and
/// are written in order; a checker thread beside it hashes what was written, syncs
/// each finished file and checks it against the index, so hashing and syncing overlap
/// the writing of the next file. On any failure it marks the window closed so the
/// downloads stop waiting.
fn write_in_order(
    files: &[(&Entry, PathBuf)],
    index_object: &str,
    from_openers: mpsc::Receiver<(usize, Vec<u8>)>,
    written: &Gauge,
) -> Result<(BTreeMap<String, String>, u64)> {
    let (to_checker, from_writer) = mpsc::sync_channel::<Written>(2);
    let (wrote, checked) = std::thread::scope(|s| {
        let checker = s.spawn(move || check_files(files, index_object, from_writer));
        let wrote = write_chunks(files, index_object, &from_openers, to_checker, written);
        let checked = joined(checker, "the off-site fetch (checker crashed)");
        (wrote, checked)
    });
    match (wrote, checked) {
        (Ok(chunks), Ok(hashes)) => Ok((hashes, chunks)),
        (w, c) => {
            written.close();
            Err(super::first_failure([w.err(), c.err()]))
        }
    }
}

/// What the writer hands the checker: bytes written to the current file, then the
/// file itself once complete.
enum Written {
    Bytes(Vec<u8>),
    File(File),
}

fn write_chunks(
    files: &[(&Entry, PathBuf)],
    index_object: &str,
    from_openers: &mpsc::Receiver<(usize, Vec<u8>)>,
    to_checker: mpsc::SyncSender<Written>,
    written: &Gauge,
) -> Result<u64> {
    let stopped = || Error::Cancelled("the off-site fetch");
    let mut pending: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
    let mut next = 0usize;
    for (e, out) in files {
        let mut f = File::create(out).map_err(Error::io("create", out))?;
        if let Some(hexed) = &e.inline {
            let bytes = hex::decode(hexed).map_err(|_| Error::OffsiteObjectDamaged {
                object: index_object.to_string(),
                why: format!("the inline content of {} is not hex", e.path),
            })?;
            f.write_all(&bytes).map_err(Error::io("write", out))?;
            to_checker
                .send(Written::Bytes(bytes))
                .map_err(|_| stopped())?;
        }
        for _ in &e.chunks {
            let plain = loop {
                if let Some(p) = pending.remove(&next) {
                    break p;
                }
                let (seq, p) = from_openers.recv().map_err(|_| stopped())?;
                pending.insert(seq, p);
            };
            f.write_all(&plain).map_err(Error::io("write", out))?;
            next += 1;
            written.update(|_| next as u64);
            to_checker
                .send(Written::Bytes(plain))
                .map_err(|_| stopped())?;
        }
        to_checker.send(Written::File(f)).map_err(|_| stopped())?;
    }
    Ok(next as u64)
}

/// The checker: each file's SHA-256 from what was written to it, then fsync, then the
/// size and hash against the index.
fn check_files(
    files: &[(&Entry, PathBuf)],
    index_object: &str,
    from_writer: mpsc::Receiver<Written>,
) -> Result<BTreeMap<String, String>> {
    let mut hashes = BTreeMap::new();
    let mut files = files.iter();
    let mut h = Sha256::new();
    let mut size = 0u64;
    for w in from_writer {
        match w {
            Written::Bytes(b) => {
                h.update(&b);
                size += b.len() as u64;
            }
            Written::File(f) => {
                let Some((e, out)) = files.next() else {
                    return Err(Error::Cancelled(
                        "the off-site fetch (more files than asked)",
                    ));
                };
                f.sync_all().map_err(Error::io("sync", out))?;
                let sum = hex::encode(h.finalize_reset());
                if size != e.size || e.sha256.as_deref().is_some_and(|s| s != sum) {
                    return Err(Error::OffsiteObjectDamaged {
                        object: index_object.to_string(),
                        why: format!(
                            "{} rebuilt to {size} bytes with SHA-256 {sum}, the index says {} bytes",
                            e.path, e.size
                        ),
                    });
                }
                size = 0;
                hashes.insert(e.path.clone(), sum);
            }
        }
    }
    if files.next().is_some() {
        return Err(Error::Cancelled("the off-site fetch"));
    }
    Ok(hashes)
}
