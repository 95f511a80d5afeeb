//! `offsite verify`: every object a listed snapshot needs is on the target at the size
//! recorded (one LIST for the whole target), and, with `--read-data PCT`, that share of
//! the chunks is downloaded and checked: that it parses as age without the private key,
//! or, given `--identity`, that it decrypts, decompresses and matches its keyed name.
//! Given `--identity`, each snapshot's index is also decrypted and compared with its
//! reference.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::SliceRandom;
use serde::Serialize;

use super::chunker;
use super::crypto::{self, Identity};
use super::format::{Index, Reference};
use super::store::{Requests, Target};
use super::trust;
use crate::config::Paths;
use crate::error::{Error, Result};

/// One thing wrong with one object.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
    /// The snapshots that need it.
    pub snapshots: Vec<String>,
}

impl Problem {
    /// The objects of `snapshots/` that are not a readable reference.
    pub fn unreadable(objects: Vec<(String, String)>) -> Vec<Problem> {
        objects
            .into_iter()
            .map(|(object, problem)| Problem {
                object,
                problem,
                snapshots: Vec::new(),
            })
            .collect()
    }
}

/// The body of `offsite verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub target: String,
    pub ok: bool,
    pub snapshots: usize,
    pub objects_checked: usize,
    pub chunks_read: usize,
    /// Indexes decrypted and compared with their references (with an identity).
    pub indexes_read: usize,
    /// Whether the chunks read were decrypted (an identity was given).
    pub decrypted: bool,
    pub problems: Vec<Problem>,
    pub requests: Requests,
}

/// Verify the target. With `reader` (this host's paths and the identity), the
/// repository must be the authenticated one the identity belongs to (see `trust`), and
/// every reference and index is checked to have been made with its key.
pub fn verify(
    target: &Target,
    read_pct: f64,
    reader: Option<(&Paths, &Identity)>,
) -> Result<VerifyReport> {
    let identity = reader.map(|(_, id)| id);
    let trusted = reader
        .map(|(paths, id)| trust::open(paths, target, id))
        .transpose()?;
    let config = match &trusted {
        Some(t) => Some(t.config.clone()),
        None => super::read_config(target)?,
    };
    let listing = super::references(target)?;
    let refs = listing.refs;
    let present: HashMap<String, u64> = target
        .list("")?
        .into_iter()
        .map(|l| (l.key, l.size))
        .collect();
    // object → (size, snapshots needing it); chunk id → plaintext length.
    let mut needed: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
    for r in &refs {
        for (key, size) in r.objects() {
            needed
                .entry(key)
                .or_insert((size, BTreeSet::new()))
                .1
                .insert(r.stamp.clone());
        }
    }
    let mut problems = Problem::unreadable(listing.unreadable);
    let problem = |object: &str,
                   problem: String,
                   needed: &BTreeMap<String, (u64, BTreeSet<String>)>| Problem {
        object: object.to_string(),
        problem,
        snapshots: needed
            .get(object)
            .map(|(_, s)| s.iter().cloned().collect())
            .unwrap_or_default(),
    };
    for (key, (size, _)) in &needed {
        match present.get(key) {
            None => problems.push(problem(key, "missing".into(), &needed)),
            Some(s) if s != size => problems.push(problem(
                key,
                format!("{s} bytes on the target, {size} expected (truncated or replaced)"),
                &needed,
            )),
            Some(_) => {}
        }
    }

    // With the private key, each index must list exactly the chunks its reference
    // names (the reference is what prune and verify trust).
    let mut indexes_read = 0;
    if let (Some(t), Some(id)) = (&trusted, identity) {
        for r in &refs {
            let object = Reference::key_for(&r.stamp);
            if let Err(e) = t.check_reference(&object, r) {
                problems.push(Problem {
                    object,
                    problem: describe(e),
                    snapshots: vec![r.stamp.clone()],
                });
                continue;
            }
            if !present.contains_key(&r.index) {
                continue;
            }
            indexes_read += 1;
            let body = target.get(&r.index)?;
            if let Err(e) = t.check_index(r, &body) {
                problems.push(problem(&r.index, describe(e), &needed));
                continue;
            }
            let index: Index = match super::open_json(&r.index, &body, true, Some(id)) {
                Ok(i) => i,
                Err(e) => {
                    problems.push(problem(&r.index, describe(e), &needed));
                    continue;
                }
            };
            let in_index: BTreeSet<&str> = index
                .entries
                .iter()
                .flat_map(|e| e.chunks.iter().map(|(id, _)| id.as_str()))
                .collect();
            let in_ref: BTreeSet<&str> = r.chunks.iter().map(|(id, _)| id.as_str()).collect();
            if in_index != in_ref || index.stamp != r.stamp {
                problems.push(problem(
                    &r.index,
                    format!("does not match the reference of {}", r.stamp),
                    &needed,
                ));
            }
        }
    }

    let mut decrypted = false;
    let mut chunks_read = 0;
    if read_pct > 0.0 && !needed.is_empty() {
        let encrypted = config.as_ref().is_some_and(|c| c.encrypted);
        let key = match (&config, &trusted) {
            (_, Some(t)) => Some(t.key.clone()),
            (Some(c), None) if !c.encrypted => {
                c.key.as_deref().and_then(chunker::RepoKey::from_hex)
            }
            _ => None,
        };
        decrypted = encrypted && key.is_some();
        let mut ids: Vec<(String, u64)> = refs
            .iter()
            .flat_map(|r| r.chunks.iter().cloned())
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .filter(|(id, _)| present.contains_key(&chunker::chunk_key(id)))
            .collect();
        ids.shuffle(&mut rand::rng());
        let take = ((ids.len() as f64) * read_pct / 100.0).ceil() as usize;
        ids.truncate(take.min(ids.len()));
        // Plaintext lengths come from the index; without reading it, bound by the
        // chunker's maximum.
        for batch in ids.chunks(2 * target.parallel()) {
            let keys: Vec<String> = batch.iter().map(|(id, _)| chunker::chunk_key(id)).collect();
            let bodies = target.get_many(&keys)?;
            for ((id, _), (obj, body)) in batch.iter().zip(keys.iter().zip(bodies)) {
                chunks_read += 1;
                let outcome = match (&key, encrypted) {
                    (Some(k), true) => check_chunk(identity, k, id, &body),
                    (Some(k), false) => check_chunk(None, k, id, &body),
                    (None, _) => {
                        crypto::parses_as_age(&body).map_err(|e| format!("not an age file: {e}"))
                    }
                };
                if let Err(why) = outcome {
                    problems.push(problem(obj, why, &needed));
                }
            }
        }
    }
    Ok(VerifyReport {
        target: target.url().to_string(),
        ok: problems.is_empty(),
        snapshots: refs.len(),
        objects_checked: needed.len(),
        chunks_read,
        indexes_read,
        decrypted,
        problems,
        requests: target.requests(),
    })
}

fn check_chunk(
    identity: Option<&Identity>,
    key: &chunker::RepoKey,
    id: &str,
    body: &[u8],
) -> std::result::Result<(), String> {
    let object = chunker::chunk_key(id);
    let plain = chunker::unpack(identity, &object, body, chunker::MAX_SIZE).map_err(describe)?;
    if key.id(&plain) != id {
        return Err("its content does not match its name (keyed hash)".into());
    }
    Ok(())
}

fn describe(e: Error) -> String {
    match e {
        Error::OffsiteObjectDamaged { why, .. } => why,
        Error::OffsiteWrongKey { .. } => "the identity given cannot decrypt it".into(),
        Error::OffsiteNotAuthentic { why, .. } => why,
        other => other.to_string(),
    }
}
