//! Content-defined chunking (FastCDC, ~1 MiB average), the keyed chunk names, and the
//! object encoding: zstd, then age.
//!
//! A chunk's name is HMAC-SHA256 of its plaintext under the repository key, so names
//! reveal neither file names nor plaintext hashes, and equal chunks get equal names
//! (written once, whichever file or snapshot they come from).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::crypto::{Identity, Sealer};
use crate::error::{Error, Result};

/// FastCDC bounds: 256 KiB minimum, 1 MiB average, 4 MiB maximum.
pub const MIN_SIZE: usize = 256 * 1024;
pub const AVG_SIZE: usize = 1024 * 1024;
pub const MAX_SIZE: usize = 4 * 1024 * 1024;
/// zstd level for chunks and indexes.
pub const ZSTD_LEVEL: i32 = 3;

/// The repository key: 32 random bytes.
#[derive(Clone)]
pub struct RepoKey([u8; 32]);

impl std::fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RepoKey(..)")
    }
}

impl RepoKey {
    pub fn random() -> RepoKey {
        RepoKey(rand::random())
    }

    pub fn from_hex(s: &str) -> Option<RepoKey> {
        let v = hex::decode(s.trim()).ok()?;
        Some(RepoKey(v.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        for p in parts {
            m.update(p);
        }
        hex::encode(m.finalize().into_bytes())
    }

    /// The name of a chunk (or index) with this plaintext.
    pub fn id(&self, plain: &[u8]) -> String {
        self.mac(&[b"chunk\0", plain])
    }

    /// A value stored in the plain config so a wrong local key is recognised.
    pub fn check_value(&self) -> String {
        self.mac(&[b"atocore-offsite key check"])
    }
}

/// The object key of a chunk.
pub fn chunk_key(id: &str) -> String {
    format!("chunks/{}/{id}", &id[..2.min(id.len())])
}

/// Split a file into content-defined chunks, handing each to `f` in order.
pub fn split(path: &Path, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    for c in fastcdc::v2020::StreamCDC::new(file, MIN_SIZE, AVG_SIZE, MAX_SIZE) {
        let c = c.map_err(|e| Error::Io {
            op: "read",
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?;
        f(&c.data)?;
    }
    Ok(())
}

/// Compress, then seal.
pub fn pack(sealer: &Sealer, plain: &[u8]) -> Result<Vec<u8>> {
    let z = zstd::bulk::compress(plain, ZSTD_LEVEL).map_err(|e| Error::Io {
        op: "compress",
        path: "chunk".into(),
        source: e,
    })?;
    sealer.seal(&z)
}

/// Open (decrypt when `identity` is given, else the object must be plain), then
/// decompress, reading at most `max_len` bytes.
pub fn unpack(
    identity: Option<&Identity>,
    object: &str,
    bytes: &[u8],
    max_len: usize,
) -> Result<Vec<u8>> {
    let z = match identity {
        Some(id) => id.open(object, bytes)?,
        None => bytes.to_vec(),
    };
    let damaged = |why: String| Error::OffsiteObjectDamaged {
        object: object.to_string(),
        why,
    };
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(&z[..])
        .map_err(|e| damaged(format!("zstd: {e}")))?
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| damaged(format!("zstd: {e}")))?;
    if out.len() > max_len {
        return Err(damaged(format!(
            "decompresses to more than {max_len} bytes"
        )));
    }
    Ok(out)
}

/// [`unpack`] a chunk and check that its content has the name it is stored under.
pub fn unpack_chunk(
    identity: Option<&Identity>,
    key: &RepoKey,
    id: &str,
    bytes: &[u8],
    len: u64,
) -> Result<Vec<u8>> {
    let object = chunk_key(id);
    let plain = unpack(identity, &object, bytes, len as usize)?;
    if plain.len() as u64 != len || key.id(&plain) != id {
        return Err(Error::OffsiteObjectDamaged {
            object,
            why: "its content does not match its name (keyed hash)".into(),
        });
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keyed() {
        let a = RepoKey::random();
        let b = RepoKey::random();
        assert_eq!(a.id(b"x"), a.id(b"x"));
        assert_ne!(a.id(b"x"), b.id(b"x"));
        assert_eq!(RepoKey::from_hex(&a.to_hex()).unwrap().id(b"x"), a.id(b"x"));
    }

    #[test]
    fn plain_round_trip_and_tamper() {
        let k = RepoKey::random();
        let data = vec![7u8; 100_000];
        let obj = pack(&Sealer::Plain, &data).unwrap();
        let id = k.id(&data);
        assert_eq!(unpack_chunk(None, &k, &id, &obj, 100_000).unwrap(), data);
        let other = pack(&Sealer::Plain, &vec![8u8; 100_000]).unwrap();
        assert!(unpack_chunk(None, &k, &id, &other, 100_000).is_err());
    }
}
