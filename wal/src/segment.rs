//! One segment: the committed WAL frames captured in one poll, as a file
//! `<backup_dir>/wal/<generation>/<seq>-<captured_ms>.seg`.
//!
//! Format: the line `ATOCORE-WAL-SEGMENT 1`, one line of JSON ([`SegmentHeader`]), then
//! the frames exactly as SQLite wrote them (24-byte header + page each), compressed as
//! one zstd frame. The frames carry SQLite's own cumulative checksums, so a replay
//! checks every byte against the chain; the header's `body_sha256` covers the stored
//! bytes as well, so a damaged file is found without replaying it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result, write_atomic};

use crate::format::{FRAME_HEADER_LEN, Frame, WalHeader, WalPosition};

const MAGIC_LINE: &str = "ATOCORE-WAL-SEGMENT 1";

/// What a segment holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentHeader {
    pub generation: String,
    pub seq: u64,
    /// The WAL header of the epoch these frames belong to.
    pub wal_header: WalHeader,
    pub first_frame: u64,
    pub last_frame: u64,
    /// The position after the last frame (a commit).
    pub end: WalPosition,
    /// When the frames were read from the live WAL (RFC 3339, ms), and as Unix ms.
    pub captured_at: String,
    pub captured_ms: i64,
    /// Transactions (commit frames) in the segment.
    pub commits: u64,
    /// Database size in pages after the last commit.
    pub db_pages: u32,
    /// Uncompressed frame bytes.
    pub frame_bytes: u64,
    /// SHA-256 of the stored (compressed) body.
    pub body_sha256: String,
    /// The system's boot-time clock (CLOCK_BOOTTIME, ms) when the frames were read,
    /// and the boot it counts from: wall-clock steps between two segments of one boot
    /// show as a change of `captured_ms - mono_ms` (absent in older segments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mono_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// For the first segment of an epoch that began in this generation: the salts of
    /// the epoch it follows (every frame of which the streamer had copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<(u32, u32)>,
}

/// The file name of segment `seq` captured at `captured_ms`.
pub fn file_name(seq: u64, captured_ms: i64) -> String {
    format!("{seq:012}-{captured_ms}.seg")
}

/// `(seq, captured_ms)` from a segment's file name.
pub fn parse_name(name: &str) -> Option<(u64, i64)> {
    let stem = name.strip_suffix(".seg")?;
    let (seq, ms) = stem.split_once('-')?;
    if seq.len() != 12 {
        return None;
    }
    Some((seq.parse().ok()?, ms.parse().ok()?))
}

/// When frames were read: the wall clock, and the boot-time clock with its boot.
#[derive(Debug, Clone)]
pub struct Captured {
    pub wall: chrono::DateTime<chrono::Utc>,
    pub mono_ms: Option<i64>,
    pub boot_id: Option<String>,
}

impl Captured {
    /// Now, on both clocks.
    pub fn now() -> Captured {
        static BOOT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
        let boot_id = BOOT
            .get_or_init(|| {
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .clone();
        // SAFETY: an all-zero timespec is valid; clock_gettime fills it.
        let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
        // SAFETY: a valid clock id and a valid pointer.
        let ok = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } == 0;
        let mono_ms = ok.then(|| ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000);
        Captured {
            wall: chrono::Utc::now(),
            mono_ms: boot_id.as_ref().and(mono_ms),
            boot_id,
        }
    }
}

/// Where a segment goes: its generation's folder and id, and its sequence number.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub dir: &'a Path,
    pub generation: &'a str,
    pub seq: u64,
}

/// Write the frames (all of one epoch, consecutive, ending at a commit) as a segment in
/// `dir`, durably. Returns its path and header.
pub fn write(
    at: Place<'_>,
    header: &WalHeader,
    frames: &[Frame],
    end: WalPosition,
    follows: Option<(u32, u32)>,
    captured: Captured,
) -> Result<(PathBuf, SegmentHeader)> {
    let Captured {
        wall: captured,
        mono_ms,
        boot_id,
    } = captured;
    let first = frames.first().map_or(end.frame, |f| f.index);
    let raw: Vec<u8> = frames
        .iter()
        .flat_map(|f| f.bytes.iter().copied())
        .collect();
    let Place {
        dir,
        generation,
        seq,
    } = at;
    let body = zstd::bulk::compress(&raw, 1).map_err(Error::io("compress", dir))?;
    let commits = frames.iter().filter(|f| f.commit_size() != 0).count() as u64;
    let h = SegmentHeader {
        generation: generation.to_string(),
        seq,
        wal_header: *header,
        first_frame: first,
        last_frame: end.frame,
        end,
        captured_at: captured.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        captured_ms: captured.timestamp_millis(),
        commits,
        db_pages: frames.last().map_or(0, |f| f.commit_size()),
        frame_bytes: raw.len() as u64,
        body_sha256: hex::encode(Sha256::digest(&body)),
        follows,
        mono_ms,
        boot_id,
    };
    let mut bytes = Vec::with_capacity(body.len() + 1024);
    writeln!(bytes, "{MAGIC_LINE}").expect("writing to memory");
    serde_json::to_writer(&mut bytes, &h).expect("a segment header serializes");
    bytes.push(b'\n');
    bytes.extend_from_slice(&body);
    let path = dir.join(file_name(seq, h.captured_ms));
    write_atomic(&path, &bytes)?;
    Ok((path, h))
}

/// Read a segment's header only.
pub fn read_header(path: &Path) -> Result<SegmentHeader> {
    let f = File::open(path).map_err(Error::io("open", path))?;
    let mut r = BufReader::with_capacity(4096, f);
    read_header_from(&mut r, path)
}

fn read_header_from(r: &mut impl BufRead, path: &Path) -> Result<SegmentHeader> {
    let bad = |why: &str| Error::Broken {
        what: path.display().to_string(),
        why: why.to_string(),
    };
    let mut line = String::new();
    r.read_line(&mut line).map_err(Error::io("read", path))?;
    if line.trim_end() != MAGIC_LINE {
        return Err(bad("not a WAL segment (bad first line)"));
    }
    line.clear();
    r.read_line(&mut line).map_err(Error::io("read", path))?;
    serde_json::from_str(line.trim_end()).map_err(|e| bad(&format!("unreadable header: {e}")))
}

/// Read a segment whole: its header and its frames' bytes, checked against the stored
/// hash and the header's counts.
pub fn read(path: &Path) -> Result<(SegmentHeader, Vec<u8>)> {
    let f = File::open(path).map_err(Error::io("open", path))?;
    let mut r = BufReader::new(f);
    let h = read_header_from(&mut r, path)?;
    let mut body = Vec::new();
    r.read_to_end(&mut body).map_err(Error::io("read", path))?;
    let bad = |why: String| Error::Broken {
        what: path.display().to_string(),
        why,
    };
    if hex::encode(Sha256::digest(&body)) != h.body_sha256 {
        return Err(bad("its bytes do not match the hash recorded in it".into()));
    }
    let raw = zstd::bulk::decompress(&body, h.frame_bytes as usize)
        .map_err(|e| bad(format!("cannot decompress: {e}")))?;
    let flen = FRAME_HEADER_LEN + u64::from(h.wal_header.page_size());
    let n = h.last_frame + 1 - h.first_frame;
    if raw.len() as u64 != h.frame_bytes || h.frame_bytes != n * flen {
        return Err(bad(format!(
            "holds {} bytes, expected {} frames of {flen}",
            raw.len(),
            n
        )));
    }
    Ok((h, raw))
}
