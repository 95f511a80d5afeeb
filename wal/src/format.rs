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

#[cfg(test)]
use crate::beside;
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

/// The wal-index header: what SQLite's readers take as the committed end of the WAL.
///
/// It is the first 48 bytes of `<db>-shm`, stored twice (bytes 0..48 and 48..96) in the
/// machine's byte order (SQLite's "WAL-mode file format", section 2.1). A writer updates
/// the second copy, then the first; a reader takes the header only when both copies
/// agree, it is initialized and its checksum holds. `mx_frame` is the last frame of the
/// last transaction SQLite counts as committed: frames after it may be checksum-valid
/// and still never committed (a writer killed between writing its commit frame and
/// updating the wal-index), and the next writer overwrites them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalIndex {
    /// The last committed frame (0: none in this epoch).
    pub mx_frame: u64,
    /// The cumulative checksum after `mx_frame` (the WAL header's seed for frame 0).
    pub checksum: (u32, u32),
    /// The WAL header's salts, as its bytes 16..24.
    pub salts_raw: [u8; 8],
    /// Frames already written into the database file (`nBackfill`).
    pub backfilled: u64,
    /// The change counter SQLite bumps at every transaction.
    pub change: u32,
}

/// Bytes of `-shm` that [`WalIndex::parse`] reads: both header copies and the
/// checkpoint information after them.
pub const WAL_INDEX_READ_LEN: usize = 136;

impl WalIndex {
    /// Parse the start of `-shm`; `None` when the two copies differ (a writer is
    /// updating them), it is not initialized, or its checksum fails.
    pub fn parse(shm: &[u8]) -> Option<WalIndex> {
        if shm.len() < WAL_INDEX_READ_LEN {
            return None;
        }
        let (h1, h2) = (&shm[0..48], &shm[48..96]);
        if h1 != h2 || h1[12] != 1 {
            return None;
        }
        let ne = |b: &[u8]| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        let c = checksum(cfg!(target_endian = "big"), (0, 0), &h1[0..40]);
        if c != (ne(&h1[40..44]), ne(&h1[44..48])) {
            return None;
        }
        let mut salts_raw = [0u8; 8];
        salts_raw.copy_from_slice(&h1[32..40]);
        Some(WalIndex {
            mx_frame: u64::from(ne(&h1[16..20])),
            checksum: (ne(&h1[24..28]), ne(&h1[28..32])),
            salts_raw,
            backfilled: u64::from(ne(&shm[96..100])),
            change: ne(&h1[8..12]),
        })
    }

    /// Whether it describes the epoch that `h` begins. A writer restarting the WAL
    /// writes the new header before its first commit updates the wal-index: until
    /// then, no frame of the new epoch is committed.
    pub fn describes(&self, h: &WalHeader) -> bool {
        self.salts_raw[..] == h.raw[16..24]
    }

    /// The committed end as a position in `h`'s epoch (which it must describe).
    pub fn end(&self, h: &WalHeader) -> WalPosition {
        let (salt1, salt2) = h.salts();
        WalPosition {
            salt1,
            salt2,
            frame: self.mx_frame,
            checksum: [self.checksum.0, self.checksum.1],
            page_size: h.page_size(),
        }
    }
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

    /// Frames physically present after frame `n` (valid or not): an upper bound on
    /// what waits to be copied.
    pub fn frames_after(&self, n: u64) -> u64 {
        let Some(h) = self.header() else { return 0 };
        let total = self.len().saturating_sub(HEADER_LEN) / h.frame_len();
        total.saturating_sub(n)
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

    /// The committed frames after `from` (a position in the epoch of `header`), up to
    /// the committed end the wal-index gives (`index`, read before this call, which
    /// must describe `header`'s epoch), checked: the checksum chain from `from` must
    /// reach exactly `index.mx_frame` with the checksum the wal-index records there.
    /// Frames past that end are never read, whatever their checksums say.
    pub fn committed_after(
        &self,
        header: &WalHeader,
        from: WalPosition,
        index: &WalIndex,
    ) -> std::result::Result<Scan, Unsettled> {
        let mut frames = Vec::new();
        let end = self.committed_walk(header, from, index, &mut |f| {
            frames.push(f);
            Ok(())
        })?;
        Ok(Scan {
            header: *header,
            frames,
            end,
        })
    }

    /// Like [`WalFile::committed_after`], handing each frame to `sink` as it is read
    /// (nothing is kept). A frame is handed over only once the commit that ends its
    /// transaction has been read; `sink`'s error ends the copy.
    pub fn committed_into(
        &self,
        header: &WalHeader,
        from: WalPosition,
        index: &WalIndex,
        sink: &mut dyn FnMut(&Frame) -> Result<()>,
    ) -> std::result::Result<WalPosition, Unsettled> {
        self.committed_walk(header, from, index, &mut |f| sink(&f))
    }

    /// The checked walk to the wal-index's committed end behind both of the above; each
    /// frame is handed over by value.
    fn committed_walk(
        &self,
        header: &WalHeader,
        from: WalPosition,
        index: &WalIndex,
        sink: &mut dyn FnMut(Frame) -> Result<()>,
    ) -> std::result::Result<WalPosition, Unsettled> {
        if !index.describes(header) {
            return Err(Unsettled::OtherEpoch);
        }
        if from.frame > index.mx_frame {
            return Err(Unsettled::PastCommittedEnd);
        }
        let end = self
            .walk(header, from, index.mx_frame, sink)
            .map_err(Unsettled::Sink)?;
        if end.frame != index.mx_frame || (end.checksum[0], end.checksum[1]) != index.checksum {
            return Err(Unsettled::ChainMismatch {
                reached: end.frame,
                committed: index.mx_frame,
            });
        }
        Ok(end)
    }

    /// Committed frames after `from`, judged by the file alone (its last valid commit
    /// frame): only for a WAL nobody else has open, such as one written by
    /// [`WalWriter`](crate::replay::WalWriter) or read in a test.
    pub fn scan_from(&self, header: &WalHeader, from: WalPosition) -> Scan {
        let mut frames = Vec::new();
        let end = self
            .walk(header, from, u64::MAX, &mut |f| {
                frames.push(f);
                Ok(())
            })
            .expect("a scan that keeps frames cannot fail");
        Scan {
            header: *header,
            frames,
            end,
        }
    }

    /// Hand every committed frame after `from` and up to frame `upto` to `sink`; the
    /// position after the last commit handed over.
    fn walk(
        &self,
        header: &WalHeader,
        from: WalPosition,
        upto: u64,
        sink: &mut dyn FnMut(Frame) -> Result<()>,
    ) -> Result<WalPosition> {
        let mut pending = Vec::new();
        let mut running = (from.checksum[0], from.checksum[1]);
        let mut end = from;
        let mut n = from.frame + 1;
        let flen = header.frame_len();
        while n <= upto && header.frame_offset(n) + flen <= self.len {
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
                for f in pending.drain(..) {
                    sink(f)?;
                }
                end = WalPosition {
                    frame: n,
                    checksum: [c.0, c.1],
                    ..end
                };
            }
            n += 1;
        }
        Ok(end)
    }
}

/// Why the committed frames after a position cannot be taken from the WAL now.
#[derive(Debug)]
pub enum Unsettled {
    /// The wal-index describes another epoch than the file's header (a writer is
    /// restarting the WAL): nothing of the file's epoch can be taken as committed.
    OtherEpoch,
    /// The position is past the committed end: frames taken from the file are not
    /// (or no longer) counted by SQLite.
    PastCommittedEnd,
    /// The file's chain does not end where the wal-index says the committed frames do.
    ChainMismatch { reached: u64, committed: u64 },
    /// The sink failed.
    Sink(Error),
}

impl std::fmt::Display for Unsettled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsettled::OtherEpoch => {
                f.write_str("the wal-index describes another WAL epoch than the file")
            }
            Unsettled::PastCommittedEnd => {
                f.write_str("the position is past the committed end of the WAL")
            }
            Unsettled::ChainMismatch { reached, committed } => write!(
                f,
                "the checksum chain reaches frame {reached}, not the committed end (frame {committed}) with its checksum"
            ),
            Unsettled::Sink(e) => write!(f, "{e}"),
        }
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
    Ok(Some(w.scan_from(&h, start_of(&h))))
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
        let s = scan(&beside(&db, "-wal")).unwrap().unwrap();
        // create table + 5 inserts: 6 commits, the last one is the end.
        let commits = s.frames.iter().filter(|f| f.commit_size() != 0).count();
        assert_eq!(commits, 6);
        assert_eq!(s.end.frame, s.frames.last().unwrap().index);
        assert_eq!(s.header.page_size(), 4096);
        // A flipped byte in the last frame ends the scan before it.
        let wal = beside(&db, "-wal");
        let mut bytes = std::fs::read(&wal).unwrap();
        let off = s.header.frame_offset(s.end.frame) as usize + 100;
        bytes[off] ^= 1;
        std::fs::write(&wal, &bytes).unwrap();
        let s2 = scan(&wal).unwrap().unwrap();
        assert!(s2.end.frame < s.end.frame);
    }
}
