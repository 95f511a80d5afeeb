//! The captured WAL off-site: the segments of each generation, batched into objects
//! `wal/<generation>/<first>-<last>.batch` (sealed like every other object: age, or
//! plain on a target pushed `--unencrypted`), and back onto a new host for
//! `offsite fetch --at`.
//!
//! A batch holds the generation's record (as it is when the batch is made, so the
//! newest batch carries the newest record) and whole segment files, each checked again
//! by its own hash and WAL checksums when it is replayed. Segments are only ever
//! appended to a generation, so a push uploads the segments after the highest one on
//! the target: one listing and one object per push (none when nothing is new). The
//! snapshot prune never touches `wal/`; WAL objects are not pruned on the target yet.
//!
//! A batch's name carries its MAC under the repository key, over its place (generation
//! and segment numbers) and the SHA-256 of its stored bytes: a reader with the
//! identity takes only batches the repository's host made.

use std::collections::BTreeMap;
use std::fs;

use serde::Serialize;

use sha2::{Digest, Sha256};

use super::chunker::RepoKey;
use super::crypto::{Identity, Sealer};
use super::store::{Requests, Target};
use super::trust;
use crate::config::Paths;
use crate::durable;
use crate::error::{Error, Result};
use crate::wal::generation::{self, RECORD_FILE, Record};
use crate::wal::segment;

/// Where the WAL objects live on the target.
pub const WAL_DIR: &str = "wal/";
/// Upper bound of one batch object's plain size.
const BATCH_BYTES: usize = 16 << 20;
const MAGIC: &[u8] = b"ATOCORE-WAL-BATCH 1\n";

/// What the target holds of each generation: the highest segment number.
pub type RemoteWal = BTreeMap<String, u64>;

/// The body of a WAL push.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalPushReport {
    pub segments: u64,
    pub objects: u64,
    pub bytes: u64,
    /// Capture time (Unix ms) of the newest segment now on the target.
    pub newest_captured_ms: Option<i64>,
    pub requests: Requests,
}

/// The MAC a batch's name carries.
fn batch_mac(key: &RepoKey, generation: &str, first: u64, last: u64, sealed: &[u8]) -> String {
    let place = format!(
        "{generation}/{first:012}-{last:012}\0{}",
        hex::encode(Sha256::digest(sealed))
    );
    key.authenticate("wal", place.as_bytes())
}

fn batch_key(generation: &str, first: u64, last: u64, mac: &str) -> String {
    format!("{WAL_DIR}{generation}/{first:012}-{last:012}.{mac}.batch")
}

/// A batch's generation, first and last segment, and MAC (none in format 1).
fn parse_key(key: &str) -> Option<(String, u64, u64, Option<String>)> {
    let rest = key.strip_prefix(WAL_DIR)?;
    let (g, name) = rest.split_once('/')?;
    let name = name.strip_suffix(".batch")?;
    let (span, mac) = match name.split_once('.') {
        Some((span, mac)) => (span, Some(mac.to_string())),
        None => (name, None),
    };
    let (a, b) = span.split_once('-')?;
    Some((g.to_string(), a.parse().ok()?, b.parse().ok()?, mac))
}

/// A generation id as the streamer makes them (a UUID): nothing else becomes a folder.
fn plain_generation(g: &str) -> bool {
    !g.is_empty() && g.len() <= 64 && g.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The highest segment number of each generation on the target (one listing).
pub fn remote_state(target: &Target) -> Result<RemoteWal> {
    let mut out = RemoteWal::new();
    for l in target.list(WAL_DIR)? {
        if let Some((g, _, last, _)) = parse_key(&l.key) {
            let e = out.entry(g).or_insert(last);
            *e = (*e).max(last);
        }
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Upload the local segments the target lacks. `known` is what the target holds (from
/// [`remote_state`], or kept by a caller that pushes often); it is updated.
pub fn push(
    paths: &Paths,
    target: &Target,
    sealer: &Sealer,
    key: &RepoKey,
    known: &mut RemoteWal,
) -> Result<WalPushReport> {
    let mut report = WalPushReport::default();
    for g in generation::list(paths)? {
        let id = g.record.id.clone();
        let after = known.get(&id).copied();
        let todo: Vec<_> = g
            .segments
            .iter()
            .filter(|s| after.is_none_or(|a| s.seq > a))
            .collect();
        let record = serde_json::to_vec(&g.record).map_err(|e| Error::Json {
            path: g.dir.join(RECORD_FILE),
            source: e,
        })?;
        let mut i = 0;
        while i < todo.len() {
            let mut plain = MAGIC.to_vec();
            put_bytes(&mut plain, &record);
            let first = todo[i].seq;
            let mut last = first;
            let mut newest = todo[i].captured_ms;
            while i < todo.len() && (plain.len() < BATCH_BYTES || last == first) {
                let s = todo[i];
                let bytes = fs::read(&s.path).map_err(Error::io("read", &s.path))?;
                put_bytes(
                    &mut plain,
                    s.path.file_name().unwrap_or_default().as_encoded_bytes(),
                );
                put_bytes(&mut plain, &bytes);
                last = s.seq;
                newest = s.captured_ms;
                report.segments += 1;
                i += 1;
            }
            let sealed = sealer.seal(&plain)?;
            report.bytes += sealed.len() as u64;
            let mac = batch_mac(key, &id, first, last, &sealed);
            target.put(&batch_key(&id, first, last, &mac), sealed)?;
            report.objects += 1;
            known.insert(id.clone(), last);
            report.newest_captured_ms = Some(newest);
        }
    }
    report.requests = target.requests();
    Ok(report)
}

/// Give every batch of format 1 (a name without a MAC) its MAC: stored again under
/// the new name, then the old one deleted. The number of batches renamed.
pub(crate) fn upgrade(target: &Target, key: &RepoKey) -> Result<usize> {
    let mut n = 0;
    for l in target.list(WAL_DIR)? {
        let Some((g, first, last, None)) = parse_key(&l.key) else {
            continue;
        };
        let sealed = target.get(&l.key)?;
        let mac = batch_mac(key, &g, first, last, &sealed);
        target.put(&batch_key(&g, first, last, &mac), sealed)?;
        target.delete_many(std::slice::from_ref(&l.key))?;
        n += 1;
    }
    Ok(n)
}

/// The body of a WAL fetch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalFetchReport {
    pub generations: u64,
    pub objects: u64,
    pub segments_written: u64,
}

/// Download every WAL batch and lay the generations out under `<backup_dir>/wal/` as
/// the streamer does (segments already there are left as they are). Each segment's
/// header is read back; its hashes and checksums are checked when it is replayed.
pub fn fetch(
    paths: &Paths,
    target: &Target,
    identity: Option<&Identity>,
) -> Result<WalFetchReport> {
    let mut report = WalFetchReport::default();
    // With the identity: the authenticated encrypted repository, or nothing (a plain
    // `config` here is a downgrade), before anything is written.
    let trusted = identity
        .map(|id| trust::open(paths, target, id))
        .transpose()?;
    type Listed = (String, u64, u64, Option<String>, String);
    let mut keys: Vec<Listed> = target
        .list(WAL_DIR)?
        .into_iter()
        .filter_map(|l| parse_key(&l.key).map(|(g, first, last, mac)| (g, first, last, mac, l.key)))
        .collect();
    keys.sort();
    let mut seen = std::collections::BTreeSet::new();
    // On an encrypted repository every WAL object must be age ciphertext: a plain one
    // there was not written by a push and is refused.
    let encrypted = match &trusted {
        Some(_) => true,
        None => super::read_config(target)?.is_some_and(|c| c.encrypted),
    };
    for (g, first, last, mac, key) in keys {
        if !plain_generation(&g) {
            return Err(Error::OffsiteObjectDamaged {
                object: key,
                why: "its generation is not a plain id".into(),
            });
        }
        let sealed = target.get(&key)?;
        if let Some(t) = &trusted {
            let want = batch_mac(&t.key, &g, first, last, &sealed);
            let made_by_key = mac.as_deref().is_some_and(|m| {
                use subtle::ConstantTimeEq;
                bool::from(m.as_bytes().ct_eq(want.as_bytes()))
            });
            if !made_by_key {
                return Err(trust::not_authentic(
                    &key,
                    "not made with the repository key (its name carries no MAC or a wrong one)",
                ));
            }
        }
        let is_age = super::crypto::parses_as_age(&sealed).is_ok();
        let plain = match (is_age, identity) {
            (true, Some(id)) => id.open(&key, &sealed)?,
            (true, None) => {
                return Err(Error::OffsiteNotConfigured(
                    "the off-site WAL is encrypted: pass --identity FILE (the age private key)"
                        .into(),
                ));
            }
            (false, _) if encrypted => {
                return Err(Error::OffsiteObjectDamaged {
                    object: key,
                    why: "not age ciphertext on an encrypted repository".into(),
                });
            }
            (false, _) => sealed,
        };
        let damaged = |why: &str| Error::OffsiteObjectDamaged {
            object: key.clone(),
            why: why.to_string(),
        };
        let body = plain
            .strip_prefix(MAGIC)
            .ok_or_else(|| damaged("not a WAL batch"))?;
        let mut r = Fields(body);
        let record: Record = serde_json::from_slice(&r.take().ok_or_else(|| damaged("truncated"))?)
            .map_err(|_| damaged("unreadable generation record"))?;
        if record.id != g {
            return Err(damaged("its generation record names another generation"));
        }
        let dir = generation::wal_dir(paths).join(&g);
        durable::create_dir_all(&dir)?;
        // Batches are read oldest first: the last record written is the newest.
        durable::write_json_atomic(&dir.join(RECORD_FILE), &record)?;
        if seen.insert(g.clone()) {
            report.generations += 1;
        }
        while !r.0.is_empty() {
            let (Some(name), Some(bytes)) = (r.take(), r.take()) else {
                return Err(damaged("truncated"));
            };
            let name =
                String::from_utf8(name).map_err(|_| damaged("a segment name is not UTF-8"))?;
            if segment::parse_name(&name).is_none() {
                return Err(damaged("holds something that is not a segment"));
            }
            let path = dir.join(&name);
            if !path.exists() {
                durable::write_atomic(&path, &bytes)?;
                segment::read_header(&path)?;
                report.segments_written += 1;
            }
        }
        report.objects += 1;
    }
    Ok(report)
}

/// Length-prefixed fields of a batch.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self) -> Option<Vec<u8>> {
        let n = u64::from_le_bytes(self.0.get(..8)?.try_into().ok()?) as usize;
        let v = self.0.get(8..8usize.checked_add(n)?)?.to_vec();
        self.0 = &self.0[8 + n..];
        Some(v)
    }
}

/// The body of `offsite fetch --at`.
#[derive(Debug, Clone, Serialize)]
pub struct FetchAtReport {
    pub wal: WalFetchReport,
    /// Snapshots downloaded to serve as the base.
    pub fetched: Vec<String>,
    /// The `point-in-time` snapshot built, ready to restore.
    pub snapshot: crate::metadata::Metadata,
    pub next: String,
}

/// `offsite fetch --at`: the captured WAL and the newest snapshot at or before `at`
/// (an older one too when that one cannot start the replay), then the `point-in-time`
/// snapshot built from them locally, exactly as `restore --at` builds it.
pub fn fetch_at(
    paths: &Paths,
    target: &Target,
    at: chrono::DateTime<chrono::Utc>,
    identity: Option<&Identity>,
) -> Result<FetchAtReport> {
    let wal = fetch(paths, target, identity)?;
    let mut candidates: Vec<String> = super::references(target)?
        .refs
        .into_iter()
        .map(|r| r.stamp)
        .filter(|s| crate::stamp::Stamp::parse(s).is_ok_and(|st| st.time() <= at))
        .collect();
    let mut fetched = Vec::new();
    for _ in 0..3 {
        let Some(stamp) = candidates.pop() else { break };
        let st = crate::stamp::Stamp::parse(&stamp)?;
        if !paths.snapshot_dir(&st).exists() {
            super::fetch::fetch(paths, target, &stamp, identity)?;
            fetched.push(stamp);
        }
        match crate::wal::pitr::plan(paths, at, None) {
            Ok(p) if p.warnings.is_empty() => break,
            _ => continue,
        }
    }
    let snapshot = crate::wal::pitr::snapshot_at(paths, at, None)?;
    let next = format!(
        "atocore-restore-job restore {} --confirm-service-stopped (with atocore stopped)",
        snapshot.stamp
    );
    Ok(FetchAtReport {
        wal,
        fetched,
        snapshot,
        next,
    })
}
