//! What lives on the target, and in which format.
//!
//! ```text
//! config                      plain JSON: repository id, encrypted?, chunker, key check, MAC
//! keys/repository             the repository key, age-encrypted to the recipients
//! chunks/<2 hex>/<64 hex>     one unique chunk: zstd, then age; named by keyed hash
//! index/<64 hex>              one snapshot's index: JSON, zstd, then age
//! snapshots/<STAMP>.json      plain reference, written last: the index (and the SHA-256
//!                             of its stored bytes) and every chunk, MAC
//! wal/<gen>/<a>-<b>.<mac>.batch  captured WAL segments, sealed; MAC in the name
//! ```
//!
//! Format 2 authenticates what a reader trusts: `config` and every reference carry a
//! MAC (HMAC-SHA256 under the repository key) of their other fields, the reference
//! binds its index by the SHA-256 of the stored object, chunks and indexes are named by
//! keyed hashes of their plaintext, and a WAL batch's name carries the MAC of its
//! place and stored bytes. Only a holder of the repository key can make any of them.
//! Format 1 (no MACs) is still read without an identity (`list`, `prune`, keyless
//! `verify`) and upgraded in place by the next `offsite push` of the host that holds
//! its key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::chunker::RepoKey;

/// Format version of the objects a push writes.
pub const FORMAT: u32 = 2;
/// The first format: the same objects, without MACs.
pub const FORMAT_UNAUTHENTICATED: u32 = 1;
/// An index decompresses to this much at most.
pub const INDEX_MAX: usize = 256 << 20;
pub const CONFIG_KEY: &str = "config";
pub const REPO_KEY_KEY: &str = "keys/repository";
pub const CHUNKS_DIR: &str = "chunks/";
pub const INDEX_DIR: &str = "index/";
pub const SNAPSHOTS_DIR: &str = "snapshots/";
/// Files this small are stored in the index itself, not as chunks.
pub const INLINE_MAX: u64 = 64 * 1024;

/// The plain `config` object, written at the first push.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    pub format: u32,
    /// Random id; the local copy of the key is kept under this name.
    pub repository: String,
    pub encrypted: bool,
    pub chunker: String,
    pub compression: String,
    /// HMAC of a fixed string under the repository key.
    pub key_check: String,
    /// The key itself, only for an unencrypted repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub created_at: String,
    /// MAC of the fields above under the repository key (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The MAC of `value` with its `mac` field empty.
fn mac_of<T: Serialize + Clone>(key: &RepoKey, what: &str, value: &T, clear: fn(&mut T)) -> String {
    let mut v = value.clone();
    clear(&mut v);
    key.authenticate(what, &serde_json::to_vec(&v).unwrap_or_default())
}

/// Whether `mac` is the right MAC, compared in constant time.
fn same_mac(mac: Option<&str>, want: &str) -> bool {
    use subtle::ConstantTimeEq;
    mac.is_some_and(|m| bool::from(m.as_bytes().ct_eq(want.as_bytes())))
}

impl RepoConfig {
    /// Set its MAC.
    pub fn sign(&mut self, key: &RepoKey) {
        self.mac = Some(mac_of(key, "config", self, |c| c.mac = None));
    }

    /// Whether it carries the MAC of its fields under `key`.
    pub fn is_signed_by(&self, key: &RepoKey) -> bool {
        same_mac(
            self.mac.as_deref(),
            &mac_of(key, "config", self, |c| c.mac = None),
        )
    }
}

/// The plain `snapshots/<STAMP>.json` reference: written after every object it names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    pub format: u32,
    pub stamp: String,
    pub kind: String,
    /// Holds a chroma copy (counts in retention's chroma series).
    #[serde(default)]
    pub chroma: bool,
    pub encrypted: bool,
    pub pushed_at: String,
    /// Key of the index object and its stored size.
    pub index: String,
    pub index_size: u64,
    /// Every chunk the snapshot needs: (id, stored size).
    pub chunks: Vec<(String, u64)>,
    /// Size of the snapshot's files.
    pub bytes: u64,
    pub files: u64,
    /// SHA-256 of the stored index object (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_sha256: Option<String>,
    /// MAC of the fields above under the repository key (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

impl Reference {
    /// Set its MAC.
    pub fn sign(&mut self, key: &RepoKey) {
        self.mac = Some(mac_of(key, "reference", self, |r| r.mac = None));
    }

    /// Whether it carries the MAC of its fields under `key`.
    pub fn is_signed_by(&self, key: &RepoKey) -> bool {
        same_mac(
            self.mac.as_deref(),
            &mac_of(key, "reference", self, |r| r.mac = None),
        )
    }

    /// Whether `stored` is the index object it names (by the SHA-256 it records).
    pub fn binds_index(&self, stored: &[u8]) -> bool {
        self.index_sha256.as_deref() == Some(hex::encode(Sha256::digest(stored)).as_str())
    }

    pub fn key_for(stamp: &str) -> String {
        format!("{SNAPSHOTS_DIR}{stamp}.json")
    }

    /// Every object key this snapshot needs, with its stored size.
    pub fn objects(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        std::iter::once((self.index.clone(), self.index_size)).chain(
            self.chunks
                .iter()
                .map(|(id, size)| (super::chunker::chunk_key(id), *size)),
        )
    }
}

/// The encrypted index of one snapshot: its whole folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    pub format: u32,
    pub stamp: String,
    pub repository: String,
    /// The snapshot's `backup-metadata.json`, for reading without rebuilding.
    pub metadata: serde_json::Value,
    /// Parents before children.
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One path of the snapshot folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The content of a small file, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// (chunk id, plaintext length), in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<(String, u64)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}
