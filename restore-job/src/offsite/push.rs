//! `offsite push`: upload snapshots, new chunks only, the reference last.
//!
//! Order on the target: new chunks (skipped when the one LIST of `chunks/` made at the
//! start shows them), then the encrypted index, then `snapshots/<STAMP>.json`. A push
//! killed at any point leaves only unreferenced objects, which the next push reuses
//! (nothing is uploaded twice) and `prune` removes after the grace period; the
//! snapshot is listed only once everything it needs is there.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::cache::{Chunks, FileCache};
use super::chunker::{self, RepoKey};
use super::crypto::{Identity, Sealer};
use super::format::{self, Entry, EntryKind, Index, Reference, RepoConfig};
use super::store::{Requests, Target};
use super::{Gauge, joined, joined_all};
use crate::config::Paths;
use crate::error::{Error, Result};
use crate::layout::METADATA_FILE;
use crate::manifest::{self, Manifest};
use crate::metadata;
use crate::snapshot::published_stamps;
use crate::stamp::Stamp;
use crate::validate::{self, DbCheck, Hashes};

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
    /// Bytes of the snapshot's files read by this push.
    pub bytes_read: u64,
    /// Files not read at all: the same content, whose chunks are all on the target,
    /// was pushed from this host before (its off-site file cache).
    pub files_unchanged: u64,
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
    /// The repository's fingerprint: keep it with the identity file as the line
    /// `# atocore-offsite-fingerprint: FINGERPRINT` (a fetch on a new host refuses a
    /// repository key it is not pinned to).
    pub fingerprint: String,
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
        let session = Session {
            paths,
            target,
            sealer,
            config: &config,
            key: &key,
            keep_going,
        };
        match push_one(&session, &stamp, &mut existing) {
            Ok(p) => pushed.push(p),
            Err(Error::InvalidSnapshot { stamp, codes }) if !matches!(which, Which::Stamp(_)) => {
                tracing::warn!(stamp = %stamp, errors = ?codes, "not pushing a snapshot that fails validation");
                continue;
            }
            Err(e) => return Err(e),
        }
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
        fingerprint: key.fingerprint(),
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

/// Read the target's config and this host's key, or set up a new repository. A
/// repository of format 1 is upgraded to format 2 on the way (see [`upgrade`]).
pub(crate) fn open_or_create(
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
        if config.format < format::FORMAT {
            let config = upgrade(target, config, &key)?;
            return Ok((config, key));
        }
        if !config.is_signed_by(&key) {
            return Err(super::trust::not_authentic(
                format::CONFIG_KEY,
                "not made with the repository key (its MAC does not match); refusing to push into it",
            ));
        }
        return Ok((config, key));
    }
    let key = RepoKey::random();
    let repository = hex::encode(rand::random::<[u8; 8]>());
    let mut config = RepoConfig {
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
        mac: None,
    };
    config.sign(&key);
    if sealer.encrypted() {
        super::save_local_key(paths, &repository, &key)?;
        target.put(format::REPO_KEY_KEY, sealer.seal(key.to_hex().as_bytes())?)?;
    }
    let body = serde_json::to_vec_pretty(&config).map_err(|e| Error::Json {
        path: format::CONFIG_KEY.into(),
        source: e,
    })?;
    target.put(format::CONFIG_KEY, body)?;
    tracing::info!(
        target = target.url(),
        repository = %repository,
        fingerprint = %key.fingerprint(),
        "set up a new off-site repository; keep this line with the identity file (a fetch on a new host needs it): {} {}",
        super::crypto::PIN_PREFIX,
        key.fingerprint()
    );
    Ok((config, key))
}

/// Upgrade a repository of format 1 (no MACs) to format 2 in place, as the host that
/// holds its key: every reference gets the SHA-256 of its index and a MAC, every WAL
/// batch a name with its MAC, then the config its MAC. What is on the target when this
/// runs is what gets signed (trusted as the host's own); run by the next push, the
/// upgrade is one command, and a push killed midway leaves format 1, upgraded again by
/// the next one.
fn upgrade(target: &Target, mut config: RepoConfig, key: &RepoKey) -> Result<RepoConfig> {
    let listing = super::references(target)?;
    let mut signed = 0;
    for mut r in listing.refs {
        if r.format >= format::FORMAT && r.is_signed_by(key) {
            continue;
        }
        let Some(stored) = target.get_optional(&r.index)? else {
            tracing::warn!(stamp = %r.stamp, index = %r.index, "not upgrading a reference whose index is missing");
            continue;
        };
        r.format = format::FORMAT;
        r.index_sha256 = Some(hex::encode(Sha256::digest(&stored)));
        r.sign(key);
        let body = serde_json::to_vec_pretty(&r).map_err(|e| Error::Json {
            path: Reference::key_for(&r.stamp).into(),
            source: e,
        })?;
        target.put(&Reference::key_for(&r.stamp), body)?;
        signed += 1;
    }
    let batches = super::wal::upgrade(target, key)?;
    config.format = format::FORMAT;
    config.sign(key);
    let body = serde_json::to_vec_pretty(&config).map_err(|e| Error::Json {
        path: format::CONFIG_KEY.into(),
        source: e,
    })?;
    target.put(format::CONFIG_KEY, body)?;
    tracing::info!(
        target = target.url(),
        references = signed,
        wal_batches = batches,
        "upgraded the off-site repository from format 1 to format {}; keep this line with the identity file: {} {}",
        format::FORMAT,
        super::crypto::PIN_PREFIX,
        key.fingerprint()
    );
    Ok(config)
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

/// A file too big to go inline in the index: its content goes through the pipeline.
struct BigFile {
    /// Its place in the index's entries.
    entry: usize,
    path: PathBuf,
    rel: String,
    size: u64,
}

/// What the reader learnt of one big file.
struct FileRead {
    entry: usize,
    rel: String,
    sha256: String,
    size: u64,
    /// Its chunks: read now (`first..first + count` in push order), or known from the
    /// cache.
    chunks: Chunked,
}

enum Chunked {
    Read { first: usize, count: usize },
    Cached(Chunks),
}

/// One chunk on its way from the reader to a packer.
struct Piece {
    seq: usize,
    data: Vec<u8>,
}

/// What a packer did with one chunk: its id and length, and the size of the object
/// it queued for upload (`None`: already on the target, or queued by another piece).
type Packed = (usize, String, u64, Option<u64>);

/// Push one snapshot.
///
/// Four stages run at once, with bounded queues between them, so reading, CPU work
/// and uploads overlap and memory stays flat whatever the snapshot's size:
/// 1. a reader walks the big files in order and cuts them into chunks (FastCDC); a
///    file the cache knows, whose chunks are all on the target, is not read at all;
/// 2. a hasher computes each file's SHA-256 from its chunks, in order;
/// 3. packers name each chunk (keyed hash) and, for a chunk the target lacks,
///    compress and seal it;
/// 4. this thread uploads the sealed objects, [`Target::parallel`] at a time, with at
///    most [`UPLOAD_BUDGET`] bytes waiting or in flight.
///
/// Meanwhile another thread validates the snapshot's structure and database; the file
/// hashes the reader computed complete that validation, so no file is read twice. An
/// invalid snapshot gets no index or reference (the chunks it uploaded stay
/// unreferenced, and are reused or pruned).
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
    // Never read through a snapshot folder that is a link (validation refuses it).
    if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::InvalidSnapshot {
            stamp: stamp.to_string(),
            codes: vec![validate::SNAPSHOT_IS_SYMLINK.into()],
        });
    }
    if !dir.is_dir() {
        return Err(Error::UnknownStamp {
            stamp: stamp.to_string(),
            dir: paths.snapshots_dir(),
        });
    }
    let meta = metadata::read(&dir)?;
    // `None` when absent or unreadable: the validation reports that.
    let manifest = manifest::read(&dir).ok().flatten().and_then(|m| m.ok());
    let cache = FileCache::load(paths, &config.repository, key);

    // The tree: entries in order; inline files read now, big ones left to the pipeline.
    let mut entries = Vec::new();
    let mut big = Vec::new();
    let mut hashes: BTreeMap<String, String> = BTreeMap::new();
    let mut bytes_read = 0u64;
    walk(&dir, &mut |path, m| {
        let rel = super::rel(path, &dir);
        let ft = m.file_type();
        let mut e = Entry {
            path: rel.clone(),
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
                let sum = hex::encode(Sha256::digest(&bytes));
                bytes_read += bytes.len() as u64;
                hashes.insert(rel.clone(), sum.clone());
                e.size = bytes.len() as u64;
                e.sha256 = Some(sum);
                e.inline = Some(hex::encode(&bytes));
            } else {
                big.push(BigFile {
                    entry: entries.len(),
                    path: path.to_path_buf(),
                    rel,
                    size: m.len(),
                });
            }
        } else if !ft.is_dir() {
            tracing::warn!(path = %path.display(), "left out of the off-site copy: not a file, folder or link");
            return Ok(());
        }
        entries.push(e);
        Ok(())
    })?;

    let known = Mutex::new(std::mem::take(existing));
    let packers = super::workers();
    // The bytes of sealed chunks between the packers and the end of their upload, held
    // under a cap so memory stays flat when the target is slower than the packers.
    let budget = Gauge::new(0, "the off-site push");
    let cap = UPLOAD_BUDGET.max(target.parallel() * (1 << 20)) as u64;
    // One chunk waiting at each hand-over: the stages run at once, and at most a few
    // chunks are held (each up to 4 MiB).
    let (to_hasher, from_reader) = mpsc::sync_channel::<ToHasher>(1);
    let (to_packers, from_hasher) = mpsc::sync_channel::<Piece>(1);
    let from_hasher = Arc::new(Mutex::new(from_hasher));
    let (to_uploader, from_packers) =
        tokio::sync::mpsc::channel::<(String, Vec<u8>)>(target.parallel().div_ceil(2).max(1));

    let (structure, read, packed, uploaded) = std::thread::scope(|s| {
        let structure = s.spawn(|| {
            validate::validate_dir_with(&dir, stamp.as_str(), Hashes::Later, DbCheck::ProvenByHash)
        });
        let reader = {
            let known = &known;
            let cache = &cache;
            let manifest = manifest.as_ref();
            let big = &big;
            s.spawn(move || read_files(big, manifest, cache, known, to_hasher))
        };
        let hasher = s.spawn(move || hash_files(from_reader, to_packers));
        let packing: Vec<_> = (0..packers)
            .map(|_| {
                let from_hasher = Arc::clone(&from_hasher);
                let to_uploader = to_uploader.clone();
                let known = &known;
                let budget = &budget;
                s.spawn(move || {
                    let stage = Stage {
                        key,
                        sealer,
                        known,
                        budget,
                        cap,
                    };
                    pack_pieces(&stage, &from_hasher, &to_uploader)
                })
            })
            .collect();
        drop(to_uploader);
        drop(from_hasher);
        let uploaded = target.put_from(from_packers, keep_going, &|n| {
            budget.update(|used| used.saturating_sub(n))
        });
        // A failed upload must not leave a packer waiting for room.
        budget.close();
        let read = joined(reader, "the off-site push (reader crashed)");
        let sums = joined(hasher, "the off-site push (hasher crashed)");
        // Each file read gets its hash, in order.
        let read = match (read, sums) {
            (Ok(mut files), Ok(sums)) => {
                let read_ones = files
                    .iter_mut()
                    .filter(|f| matches!(f.chunks, Chunked::Read { .. }));
                for (f, sum) in read_ones.zip(sums) {
                    f.sha256 = sum;
                }
                Ok(files)
            }
            (r, h) => Err(super::first_failure([r.err(), h.err()])),
        };
        let packed = joined_all(packing, "the off-site push (packer crashed)")
            .map(|all| all.into_iter().flatten().collect::<Vec<Packed>>());
        let structure = structure
            .join()
            .unwrap_or_else(|_| validate::ValidationReport {
                stamp: stamp.to_string(),
                valid: false,
                errors: vec!["validation_crashed".into()],
                warnings: Vec::new(),
            });
        (structure, read, packed, uploaded)
    });
    *existing = known.into_inner().unwrap_or_else(|p| p.into_inner());
    let (read, mut packed) = match (uploaded, read, packed) {
        (Ok(()), Ok(read), Ok(packed)) => (read, packed),
        (u, r, p) => return Err(super::first_failure([u.err(), r.err(), p.err()])),
    };

    // Validation, completed with the hashes of what was read.
    let mut files_unchanged = 0u64;
    for f in &read {
        match f.chunks {
            Chunked::Read { .. } => bytes_read += f.size,
            Chunked::Cached(_) => files_unchanged += 1,
        }
        hashes.insert(f.rel.clone(), f.sha256.clone());
    }
    let report = validate::with_hashes(structure, &dir, manifest.as_ref(), &hashes);
    if !report.valid {
        return Err(Error::InvalidSnapshot {
            stamp: stamp.to_string(),
            codes: report.errors,
        });
    }

    // Chunk lists, in push order.
    packed.sort_unstable_by_key(|p| p.0);
    let mut needed: Vec<String> = Vec::new();
    let mut needed_set: HashSet<String> = HashSet::new();
    let mut cached_files = BTreeMap::new();
    for f in read {
        let chunks: Chunks = match f.chunks {
            Chunked::Cached(c) => c,
            Chunked::Read { first, count } => packed[first..first + count]
                .iter()
                .map(|(_, id, len, _)| (id.clone(), *len))
                .collect(),
        };
        for (id, _) in &chunks {
            if needed_set.insert(id.clone()) {
                needed.push(id.clone());
            }
        }
        let e = &mut entries[f.entry];
        e.size = f.size;
        e.sha256 = Some(f.sha256.clone());
        e.chunks = chunks.clone();
        cached_files.insert(f.sha256, (f.size, chunks));
    }
    let chunks_uploaded = packed.iter().filter(|p| p.3.is_some()).count() as u64;
    let chunk_bytes: u64 = packed.iter().filter_map(|p| p.3).sum();

    // Every chunk the reference will name must be on the target: the new ones were
    // just written; the reused ones are checked again in case a prune removed them.
    let sizes: std::collections::HashMap<String, u64> = target
        .list(format::CHUNKS_DIR)?
        .into_iter()
        .filter_map(|l| Some((l.key.rsplit('/').next()?.to_string(), l.size)))
        .collect();
    if let Some(gone) = needed.iter().find(|id| !sizes.contains_key(*id)) {
        existing.remove(gone);
        FileCache::forget(paths, &config.repository);
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
    let index_sha256 = hex::encode(Sha256::digest(&index_obj));
    target.put(&index_key, index_obj)?;

    let mut reference = Reference {
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
        index_sha256: Some(index_sha256),
        mac: None,
    };
    reference.sign(key);
    let body = serde_json::to_vec_pretty(&reference).map_err(|e| Error::Json {
        path: dir.clone(),
        source: e,
    })?;
    let ref_size = body.len() as u64;
    target.put(&Reference::key_for(stamp.as_str()), body)?;
    if let Err(e) = FileCache::save(paths, &config.repository, key, cached_files) {
        tracing::warn!(error = %e, "could not save the off-site file cache (the next push reads every file)");
    }
    tracing::info!(stamp = %stamp, chunks = needed.len(), uploaded = chunks_uploaded, "pushed the snapshot off-site");
    Ok(Pushed {
        stamp: stamp.to_string(),
        files,
        bytes,
        chunks: needed.len() as u64,
        chunks_uploaded,
        bytes_read,
        files_unchanged,
        objects_written: chunks_uploaded + 2,
        bytes_written: chunk_bytes + index_size + ref_size,
    })
}

/// The reader stage: chunk and hash the big files in order, or take their chunks from
/// the cache when the target still holds them all.
fn read_files(
    big: &[BigFile],
    manifest: Option<&Manifest>,
    cache: &FileCache,
    known: &Mutex<HashSet<String>>,
    to_hasher: mpsc::SyncSender<ToHasher>,
) -> Result<Vec<FileRead>> {
    let stopped = || Error::Cancelled("the off-site push");
    let mut seq = 0;
    let mut out = Vec::with_capacity(big.len());
    for f in big {
        let hit = manifest.and_then(|m| m.get(&f.rel)).and_then(|sum| {
            let chunks = cache.get(sum, f.size)?;
            let known = known.lock().unwrap_or_else(|p| p.into_inner());
            chunks
                .iter()
                .all(|(id, _)| known.contains(id))
                .then(|| (sum.clone(), chunks.clone()))
        });
        if let Some((sha256, chunks)) = hit {
            out.push(FileRead {
                entry: f.entry,
                rel: f.rel.clone(),
                sha256,
                size: f.size,
                chunks: Chunked::Cached(chunks),
            });
            continue;
        }
        let first = seq;
        let mut size = 0u64;
        chunker::split(&f.path, |data| {
            size += data.len() as u64;
            // A buffer of exactly the chunk's size, freed (given back to the system,
            // see `tune_allocator`) once packed: pooling buffers instead would keep
            // each at the largest chunk it ever held.
            let buf = data.to_vec();
            to_hasher
                .send(ToHasher::Piece(Piece { seq, data: buf }))
                .map_err(|_| stopped())?;
            seq += 1;
            Ok(())
        })?;
        to_hasher.send(ToHasher::EndOfFile).map_err(|_| stopped())?;
        out.push(FileRead {
            entry: f.entry,
            rel: f.rel.clone(),
            // Filled in from the hasher's answer.
            sha256: String::new(),
            size,
            chunks: Chunked::Read {
                first,
                count: seq - first,
            },
        });
    }
    Ok(out)
}

/// What the reader hands the hasher: the chunks of one file, then its end.
enum ToHasher {
    Piece(Piece),
    EndOfFile,
}

/// The hasher stage: the SHA-256 of each file read, in order, from its chunks, which
/// it then hands on to the packers (so the reader only reads and cuts).
fn hash_files(
    from_reader: mpsc::Receiver<ToHasher>,
    to_packers: mpsc::SyncSender<Piece>,
) -> Result<Vec<String>> {
    let mut sums = Vec::new();
    let mut h = Sha256::new();
    for m in from_reader {
        match m {
            ToHasher::Piece(p) => {
                h.update(&p.data);
                to_packers
                    .send(p)
                    .map_err(|_| Error::Cancelled("the off-site push"))?;
            }
            ToHasher::EndOfFile => sums.push(hex::encode(h.finalize_reset())),
        }
    }
    Ok(sums)
}

/// What the packers share.
struct Stage<'a> {
    key: &'a RepoKey,
    sealer: &'a Sealer,
    known: &'a Mutex<HashSet<String>>,
    /// Bytes of sealed chunks waiting for or in upload, and their cap.
    budget: &'a Gauge,
    cap: u64,
}

/// A packer: name each chunk; compress, seal and queue the ones the target lacks
/// (each exactly once, whichever packer or file meets it first).
fn pack_pieces(
    stage: &Stage<'_>,
    from_reader: &Mutex<mpsc::Receiver<Piece>>,
    to_uploader: &tokio::sync::mpsc::Sender<(String, Vec<u8>)>,
) -> Result<Vec<Packed>> {
    let mut packer = chunker::Packer::new()?;
    let mut out = Vec::new();
    loop {
        let piece = from_reader.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(Piece { seq, data }) = piece else {
            return Ok(out);
        };
        let id = stage.key.id(&data);
        let fresh = stage
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone());
        let mut written = None;
        if fresh {
            let obj = packer.pack(stage.sealer, &data)?;
            written = Some(obj.len() as u64);
            // Room for it (an object bigger than the cap goes alone).
            let n = obj.len() as u64;
            stage
                .budget
                .wait(|used| used == 0 || used + n <= stage.cap, |used| used + n)?;
            to_uploader
                .blocking_send((chunker::chunk_key(&id), obj))
                .map_err(|_| Error::Cancelled("the off-site push"))?;
        }
        out.push((seq, id, data.len() as u64, written));
    }
}

/// Bytes of sealed chunks queued or being uploaded at most (more when the target runs
/// more requests at once: 1 MiB each, the average chunk).
const UPLOAD_BUDGET: usize = 8 << 20;

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
