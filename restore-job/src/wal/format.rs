//! SQLite's WAL file format, read from the outside: the 32-byte header, the frames
//! (24-byte header + one page), the cumulative checksums and the salts that tell one
//! use of the file (an *epoch*, from one restart to the next) from the next.
//!
//! A frame is valid when its salts match the header's and its checksum continues the
//! chain; SQLite's own recovery stops at the first frame that is not, and so does
//! [`scan`]. Only frames up to the last valid *commit* frame (one whose "database size
//! after commit" field is not zero) belong to committed transactions.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Size of the WAL header.
pub const HEADER_LEN: u64 = 32;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

/// A WAL header: what identifies an epoch of the file and seeds its checksum chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalHeader {
    /// The 32 bytes as found on disk (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub raw: [u8; 32],
}

impl WalHeader {
    /// Parse and check the header (magic, version, page size, header checksum).
    pub fn parse(raw: [u8; 32]) -> Option<WalHeader> {
        let magic = be32(&raw[0..4]);
        if magic != MAGIC_LE && magic != MAGIC_BE {
            return None;
        }
        let h = WalHeader { raw };
        let ps = h.page_size();
        if !(512..=65536).contains(&ps) || !ps.is_power_of_two() {
            return None;
        }
        let (c1, c2) = checksum(h.big_endian(), (0, 0), &raw[0..24]);
        (c1 == be32(&raw[24..28]) && c2 == be32(&raw[28..32])).then_some(h)
    }

    fn big_endian(&self) -> bool {
        be32(&self.raw[0..4]) == MAGIC_BE
    }

    /// The database page size.
    pub fn page_size(&self) -> u32 {
        be32(&self.raw[8..12])
    }

    /// Salt-1 (incremented by SQLite at every restart) and salt-2 (random).
    pub fn salts(&self) -> (u32, u32) {
        (be32(&self.raw[16..20]), be32(&self.raw[20..24]))
    }

    /// The checksum that seeds frame 1's.
    pub fn seed(&self) -> (u32, u32) {
        (be32(&self.raw[24..28]), be32(&self.raw[28..32]))
    }

    /// Bytes in one frame.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.page_size())
    }

    /// Byte offset of frame `n` (1-based).
    pub fn frame_offset(&self, n: u64) -> u64 {
        HEADER_LEN + (n - 1) * self.frame_len()
    }

    /// Whether `next` is what SQLite writes when it restarts this WAL (salt-1 + 1).
    pub fn restarted_as(&self, next: &WalHeader) -> bool {
        next.salts().0 == self.salts().0.wrapping_add(1) && next.page_size() == self.page_size()
    }
}

/// Where a reader stands in a WAL: after frame `frame` (0: before frame 1) of the epoch
/// with these salts, with the checksum chain at that point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalPosition {
    pub salt1: u32,
    pub salt2: u32,
    pub frame: u64,
    /// The cumulative checksum after `frame` (the header's seed for frame 0).
    pub checksum: [u32; 2],
    pub page_size: u32,
}

/// One frame read from a WAL.
#[derive(Debug, Clone)]
pub struct Frame {
    /// 1-based index in its epoch.
    pub index: u64,
    /// The 24-byte header and the page.
    pub bytes: Vec<u8>,
}

impl Frame {
    /// Page number.
    pub fn page(&self) -> u32 {
        be32(&self.bytes[0..4])
    }

    /// Database size in pages after this commit; 0 for a frame that is not a commit.
    pub fn commit_size(&self) -> u32 {
        be32(&self.bytes[4..8])
    }

    /// The cumulative checksum stored in this frame.
    pub fn checksum(&self) -> (u32, u32) {
        (be32(&self.bytes[16..20]), be32(&self.bytes[20..24]))
    }
}

/// Check one frame against the header and the running checksum; the new checksum when
/// it is valid.
pub fn check_frame(h: &WalHeader, running: (u32, u32), bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() as u64 != h.frame_len() {
        return None;
    }
    let (s1, s2) = h.salts();
    if be32(&bytes[8..12]) != s1 || be32(&bytes[12..16]) != s2 {
        return None;
    }
    let c = checksum(h.big_endian(), running, &bytes[0..8]);
    let c = checksum(h.big_endian(), c, &bytes[24..]);
    (c.0 == be32(&bytes[16..20]) && c.1 == be32(&bytes[20..24])).then_some(c)
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `s`.
pub fn checksum(big_endian: bool, s: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = s;
    for chunk in data.chunks_exact(8) {
        let (a, b) = if big_endian {
            (be32(&chunk[0..4]), be32(&chunk[4..8]))
        } else {
            (le32(&chunk[0..4]), le32(&chunk[4..8]))
        };
        s0 = s0.wrapping_add(a).wrapping_add(s1);
        s1 = s1.wrapping_add(b).wrapping_add(s0);
    }
    (s0, s1)
}

/// The committed frames found by a scan.
#[derive(Debug, Clone)]
pub struct Scan {
    pub header: WalHeader,
    /// Committed frames after the starting point, in order (empty when none).
    pub frames: Vec<Frame>,
    /// The position after the last committed frame (the start when none).
    pub end: WalPosition,
}

/// An open WAL file.
pub struct WalFile {
    file: File,
    len: u64,
}

impl WalFile {
    /// Open `<db>-wal`; `None` when it does not exist.
    pub fn open(path: &Path) -> Result<Option<WalFile>> {
        match File::open(path) {
            Ok(file) => {
                let len = file.metadata().map_err(Error::io("stat", path))?.len();
                Ok(Some(WalFile { file, len }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("open", path)(e)),
        }
    }

    /// The file's length when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file's inode.
    pub fn ino(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        self.file.metadata().map_or(0, |m| m.ino())
    }

    /// Whether the file was empty when it was opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frame `n` as stored (not checked), if the file holds it.
    pub fn read_frame(&self, header: &WalHeader, n: u64) -> Option<Frame> {
        if n == 0 || header.frame_offset(n) + header.frame_len() > self.len {
            return None;
        }
        let mut bytes = vec![0u8; header.frame_len() as usize];
        self.file
            .read_exact_at(&mut bytes, header.frame_offset(n))
            .ok()?;
        Some(Frame { index: n, bytes })
    }

    /// The header, when the file has a valid one.
    pub fn header(&self) -> Option<WalHeader> {
        if self.len < HEADER_LEN {
            return None;
        }
        let mut raw = [0u8; 32];
        self.file.read_exact_at(&mut raw, 0).ok()?;
        WalHeader::parse(raw)
    }

    /// Committed frames after `from` (a position in the epoch of `header`), up to
    /// `max_frames` of them (the scan stops at a commit once it has that many).
    pub fn scan_from(&self, header: &WalHeader, from: WalPosition, max_frames: u64) -> Scan {
        self.walk(header, from, max_frames, &mut |_| Ok(()))
            .expect("a scan that keeps frames cannot fail")
    }

    /// Hand every committed frame after `from` to `sink` as it is read (nothing is kept),
    /// and return the position after the last commit. A frame is handed over only once
    /// the commit that ends its transaction has been read.
    pub fn copy_committed(
        &self,
        header: &WalHeader,
        from: WalPosition,
        sink: &mut dyn FnMut(&Frame) -> Result<()>,
    ) -> Result<WalPosition> {
        Ok(self.walk(header, from, 0, sink)?.end)
    }

    /// `max_frames` > 0 keeps up to that many frames in the result; 0 keeps none and
    /// passes each committed frame to `sink`.
    fn walk(
        &self,
        header: &WalHeader,
        from: WalPosition,
        max_frames: u64,
        sink: &mut dyn FnMut(&Frame) -> Result<()>,
    ) -> Result<Scan> {
        let mut frames = Vec::new();
        let mut pending = Vec::new();
        let mut running = (from.checksum[0], from.checksum[1]);
        let mut end = from;
        let mut n = from.frame + 1;
        let flen = header.frame_len();
        while header.frame_offset(n) + flen <= self.len {
            let mut bytes = vec![0u8; flen as usize];
            if self
                .file
                .read_exact_at(&mut bytes, header.frame_offset(n))
                .is_err()
            {
                break;
            }
            let Some(c) = check_frame(header, running, &bytes) else {
                break;
            };
            running = c;
            let f = Frame { index: n, bytes };
            let commit = f.commit_size() != 0;
            pending.push(f);
            if commit {
                if max_frames == 0 {
                    for f in pending.drain(..) {
                        sink(&f)?;
                    }
                } else {
                    frames.append(&mut pending);
                }
                end = WalPosition {
                    frame: n,
                    checksum: [c.0, c.1],
                    ..end
                };
                if max_frames > 0 && frames.len() as u64 >= max_frames {
                    break;
                }
            }
            n += 1;
        }
        Ok(Scan {
            header: *header,
            frames,
            end,
        })
    }
}

/// The position before frame 1 of `header`'s epoch.
pub fn start_of(header: &WalHeader) -> WalPosition {
    let (salt1, salt2) = header.salts();
    let (c1, c2) = header.seed();
    WalPosition {
        salt1,
        salt2,
        frame: 0,
        checksum: [c1, c2],
        page_size: header.page_size(),
    }
}

/// Scan a whole WAL from its start: the header and every committed frame. `None` when
/// the file is missing or has no valid header.
pub fn scan(path: &Path) -> Result<Option<Scan>> {
    let Some(w) = WalFile::open(path)? else {
        return Ok(None);
    };
    let Some(h) = w.header() else {
        return Ok(None);
    };
    Ok(Some(w.scan_from(&h, start_of(&h), u64::MAX)))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = hex::decode(&s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a WAL header is 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn scan_finds_every_commit_of_a_real_wal() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
            .unwrap();
        for i in 0..5 {
            c.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let s = scan(&crate::layout::with_suffix(&db, "-wal"))
            .unwrap()
            .unwrap();
        // create table + 5 inserts: 6 commits, the last one is the end.
        let commits = s.frames.iter().filter(|f| f.commit_size() != 0).count();
        assert_eq!(commits, 6);
        assert_eq!(s.end.frame, s.frames.last().unwrap().index);
        assert_eq!(s.header.page_size(), 4096);
        // A flipped byte in the last frame ends the scan before it.
        let wal = crate::layout::with_suffix(&db, "-wal");
        let mut bytes = std::fs::read(&wal).unwrap();
        let off = s.header.frame_offset(s.end.frame) as usize + 100;
        bytes[off] ^= 1;
        std::fs::write(&wal, &bytes).unwrap();
        let s2 = scan(&wal).unwrap().unwrap();
        assert!(s2.end.frame < s.end.frame);
    }
}
