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

    /// A tag over `body` (this host's file cache), so a damaged cache is recognised.
    pub fn tag(&self, body: &[u8]) -> String {
        self.mac(&[b"cache\0", body])
    }

    /// A value stored in the plain config so a wrong local key is recognised.
    pub fn check_value(&self) -> String {
        self.mac(&[b"atocore-offsite key check"])
    }

    /// The repository's fingerprint: what `offsite push` prints when it sets a
    /// repository up and what an identity file is pinned to. It is the config's key
    /// check (a MAC of a fixed string): it commits to the key and reveals nothing of it.
    pub fn fingerprint(&self) -> String {
        self.check_value()
    }

    /// The MAC of one object: `what` (`config`, `reference`, `wal`) keeps a MAC made
    /// for one kind of object from passing for another's.
    pub fn authenticate(&self, what: &str, body: &[u8]) -> String {
        self.mac(&[b"atocore-offsite mac\0", what.as_bytes(), b"\0", body])
    }
}

/// The object key of a chunk.
pub fn chunk_key(id: &str) -> String {
    format!("chunks/{}/{id}", &id[..2.min(id.len())])
}

/// Bytes read from a file at a time by [`split`]: two maximal chunks, so at least one
/// whole chunk fits after any carried-over tail.
const WINDOW: usize = 2 * MAX_SIZE;

/// Split the file `path` into content-defined chunks, handing each to `f` in order.
pub fn split(path: &Path, f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    split_reader(file, path, f)
}

/// Split what `r` yields into content-defined chunks, handing each to `f` in order.
///
/// FastCDC runs over a window of the stream held in memory, with no copy per chunk. A
/// cut point depends on at most [`MAX_SIZE`] bytes from the chunk's start, so a chunk
/// is taken only when that many bytes (or the end of the stream) are in the window;
/// the rest is carried into the next window. The chunks are therefore exactly those
/// of FastCDC over the whole stream (and of `fastcdc`'s `StreamCDC`).
pub fn split_reader(
    mut r: impl Read,
    path: &Path,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = vec![0u8; WINDOW];
    let mut len = 0;
    let mut eof = false;
    loop {
        while !eof && len < buf.len() {
            match r.read(&mut buf[len..]) {
                Ok(0) => eof = true,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", path)(e)),
            }
        }
        let mut taken = 0;
        for c in fastcdc::v2020::FastCDC::new(&buf[..len], MIN_SIZE, AVG_SIZE, MAX_SIZE) {
            if !eof && c.offset + MAX_SIZE > len {
                break;
            }
            f(&buf[c.offset..c.offset + c.length])?;
            taken = c.offset + c.length;
        }
        if eof {
            return Ok(());
        }
        buf.copy_within(taken..len, 0);
        len -= taken;
    }
}

/// Compress, then seal.
pub fn pack(sealer: &Sealer, plain: &[u8]) -> Result<Vec<u8>> {
    Packer::new()?.pack(sealer, plain)
}

/// Compresses then seals chunk after chunk, reusing its compressor and buffer.
pub struct Packer {
    zstd: zstd::bulk::Compressor<'static>,
    buf: Vec<u8>,
}

impl Packer {
    pub fn new() -> Result<Packer> {
        Ok(Packer {
            zstd: zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(compress_error)?,
            buf: Vec::new(),
        })
    }

    /// The object for `plain`: zstd, then sealed.
    pub fn pack(&mut self, sealer: &Sealer, plain: &[u8]) -> Result<Vec<u8>> {
        self.buf.clear();
        self.buf
            .reserve_exact(zstd::zstd_safe::compress_bound(plain.len()));
        self.zstd
            .compress_to_buffer(plain, &mut self.buf)
            .map_err(compress_error)?;
        sealer.seal(&self.buf)
    }
}

fn compress_error(e: std::io::Error) -> Error {
    Error::Io {
        op: "compress",
        path: "chunk".into(),
        source: e,
    }
}

/// Open (decrypt when `identity` is given, else the object must be plain), then
/// decompress, reading at most `max_len` bytes. Decryption streams into the
/// decompressor: no intermediate copy of the object.
pub fn unpack(
    identity: Option<&Identity>,
    object: &str,
    bytes: &[u8],
    max_len: usize,
) -> Result<Vec<u8>> {
    match identity {
        Some(id) => decompress(id.open_stream(object, bytes)?, object, max_len),
        None => decompress(bytes, object, max_len),
    }
}

fn decompress(z: impl Read, object: &str, max_len: usize) -> Result<Vec<u8>> {
    let damaged = |why: String| Error::OffsiteObjectDamaged {
        object: object.to_string(),
        why,
    };
    let mut out = Vec::with_capacity(max_len.min(2 * MAX_SIZE));
    zstd::stream::read::Decoder::new(z)
        .map_err(|e| damaged(format!("zstd: {e}")))?
        .take(max_len as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| damaged(format!("truncated or altered: {e}")))?;
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

    /// The windowed splitter cuts exactly where FastCDC over the whole stream does, on
    /// data with and without natural cut points, for sizes around the window's.
    #[test]
    fn windowed_split_matches_streaming_fastcdc() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        let text: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| format!("memory {i} of project {} ", i % 17).into_bytes())
            .take(11 * MAX_SIZE / 2)
            .collect();
        let zeros = vec![0u8; 3 * MAX_SIZE + 5];
        let cases = [
            noise(0),
            noise(1000),
            noise(WINDOW),
            noise(WINDOW + 1),
            noise(5 * WINDOW + 12_345),
            text,
            zeros,
        ];
        for data in cases {
            let want: Vec<(usize, usize)> =
                fastcdc::v2020::StreamCDC::new(&data[..], MIN_SIZE, AVG_SIZE, MAX_SIZE)
                    .map(|c| c.unwrap())
                    .map(|c| (c.offset as usize, c.length))
                    .collect();
            let mut got = Vec::new();
            let mut at = 0;
            // Short reads, as from a pipe, exercise every refill path.
            struct Trickle<'a>(&'a [u8]);
            impl Read for Trickle<'_> {
                fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                    let n = out.len().min(self.0.len()).min(300_007);
                    out[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            split_reader(Trickle(&data), Path::new("test"), |c| {
                assert_eq!(c, &data[at..at + c.len()]);
                got.push((at, c.len()));
                at += c.len();
                Ok(())
            })
            .unwrap();
            assert_eq!(at, data.len());
            assert_eq!(got, want, "{} bytes", data.len());
        }
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
