//! Generations: `<backup_dir>/wal/<id>/` holds `generation.json` and the segments of
//! one unbroken chain of captured frames. A new generation starts whenever the chain
//! cannot be continued for sure (the streamer starts, the WAL was restarted before all
//! of its frames were captured, the database file was replaced), so a restore never
//! crosses a gap.
//!
//! A snapshot taken while a generation runs records where in the WAL it stands
//! ([`WalPosition`](super::format::WalPosition)); such a snapshot is a *base* of that
//! generation: its database plus the generation's frames after that position is the
//! database at any later captured moment.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Paths;
use crate::durable;
use crate::error::{Error, Result};
use crate::metadata::Metadata;

use super::format::WalPosition;
use super::segment::{self, SegmentHeader};

/// The file describing a generation.
pub const RECORD_FILE: &str = "generation.json";

/// The folder holding every generation.
pub fn wal_dir(paths: &Paths) -> PathBuf {
    paths.backup_dir.join("wal")
}

/// What `generation.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub started_at: String,
    /// Why it started (`start`, `wal_restarted_uncaptured`, `database_replaced`, ...).
    pub reason: String,
    /// The live database file it follows (device and inode).
    pub db_dev: u64,
    pub db_ino: u64,
    /// Where the capture began (`None`: the WAL had no valid header).
    pub start: Option<WalPosition>,
    /// A snapshot taken before any frame of this generation existed (the WAL was
    /// empty, so it records no position): its database is the generation's start.
    #[serde(default)]
    pub base: Option<String>,
}

/// A segment as listed (name only; the header is read on demand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub seq: u64,
    pub captured_ms: i64,
    pub path: PathBuf,
}

/// A generation on disk.
#[derive(Debug, Clone)]
pub struct Generation {
    pub record: Record,
    pub dir: PathBuf,
    /// Oldest first.
    pub segments: Vec<SegmentRef>,
}

/// A fresh generation id: the UTC time to the millisecond, unique in `wal_dir` and
/// later than every existing id (generations are ordered by id: a clock set back must
/// not put a new generation before an older one).
pub fn new_id(paths: &Paths, now: DateTime<Utc>) -> String {
    let newest = list(paths)
        .ok()
        .and_then(|g| g.last().map(|g| g.record.id.clone()))
        .and_then(|id| chrono::NaiveDateTime::parse_from_str(&id, "%Y%m%dT%H%M%S%3fZ").ok())
        .map(|t| t.and_utc() + chrono::Duration::milliseconds(1));
    let mut t = newest.map_or(now, |n| n.max(now));
    loop {
        let id = t.format("%Y%m%dT%H%M%S%3fZ").to_string();
        if !wal_dir(paths).join(&id).exists() {
            return id;
        }
        t += chrono::Duration::milliseconds(1);
    }
}

/// Create the folder and record of a new generation.
pub fn create(paths: &Paths, record: &Record) -> Result<PathBuf> {
    let dir = wal_dir(paths).join(&record.id);
    durable::create_dir_all(&dir)?;
    durable::write_json_atomic(&dir.join(RECORD_FILE), record)?;
    durable::sync_parent(&dir)?;
    Ok(dir)
}

/// Every generation, oldest first. Folders without a readable record are skipped
/// with a warning (they are never deleted by listing).
pub fn list(paths: &Paths) -> Result<Vec<Generation>> {
    let root = wal_dir(paths);
    let entries = match fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list", &root)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(Error::io("list", &root))?;
        let dir = e.path();
        if !dir.is_dir() {
            continue;
        }
        match durable::read_json::<Record>(&dir.join(RECORD_FILE)) {
            Ok(Some(record)) => {
                let segments = segments_in(&dir)?;
                out.push(Generation {
                    record,
                    dir,
                    segments,
                });
            }
            Ok(None) | Err(_) => {
                tracing::warn!(dir = %dir.display(), "WAL folder without a readable generation.json; left alone")
            }
        }
    }
    out.sort_by(|a, b| a.record.id.cmp(&b.record.id));
    Ok(out)
}

fn segments_in(dir: &Path) -> Result<Vec<SegmentRef>> {
    let mut segs = Vec::new();
    for e in fs::read_dir(dir).map_err(Error::io("list", dir))? {
        let e = e.map_err(Error::io("list", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some((seq, captured_ms)) = segment::parse_name(&name) {
            segs.push(SegmentRef {
                seq,
                captured_ms,
                path: e.path(),
            });
        }
    }
    segs.sort_by_key(|s| s.seq);
    Ok(segs)
}

impl Generation {
    /// Every segment's header, oldest first.
    pub fn headers(&self) -> Result<Vec<SegmentHeader>> {
        self.segments
            .iter()
            .map(|s| segment::read_header(&s.path).map_err(Error::from))
            .collect()
    }
}

/// Where a snapshot's position falls in a generation: the index of the segment that
/// holds its frame (or, for frame 0, the epoch's first segment).
pub fn locate(headers: &[SegmentHeader], pos: &WalPosition) -> Option<usize> {
    headers.iter().position(|h| {
        h.end.salt1 == pos.salt1
            && h.end.salt2 == pos.salt2
            && h.first_frame <= pos.frame.max(1)
            && pos.frame <= h.last_frame
    })
}

/// A snapshot that can serve as the start of a replay in a generation.
#[derive(Debug, Clone)]
pub struct Base {
    pub stamp: String,
    /// `None`: the generation's start (see [`Record::base`]).
    pub position: Option<WalPosition>,
    /// When its read snapshot was pinned (it holds every commit before this moment).
    pub pinned_ms: i64,
    /// The segment holding its position.
    pub segment: usize,
}

/// The bases of a generation among `snapshots` (valid ones), oldest first.
pub fn bases(record: &Record, headers: &[SegmentHeader], snapshots: &[Metadata]) -> Vec<Base> {
    let mut out: Vec<Base> = snapshots
        .iter()
        .filter_map(|m| {
            let w = m.wal.as_ref()?;
            let (position, segment) = match w.position {
                Some(p) => (Some(p), locate(headers, &p)?),
                // The generation's own start, taken while its WAL was still empty.
                None if record.base.as_deref() == Some(m.stamp.as_str()) && !headers.is_empty() => {
                    (None, 0)
                }
                None => return None,
            };
            Some(Base {
                stamp: m.stamp.clone(),
                position,
                pinned_ms: w.pinned_ms,
                segment,
            })
        })
        .collect();
    out.sort_by_key(|b| b.pinned_ms);
    out
}

/// The segments follow one another: consecutive numbers, frames continuing within an
/// epoch, each new epoch starting at frame 1 after the one it follows. The reason when
/// they do not.
pub fn check_links(headers: &[SegmentHeader]) -> std::result::Result<(), String> {
    for w in headers.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.seq != a.seq + 1 {
            return Err(format!(
                "segments {} to {} are missing",
                a.seq + 1,
                b.seq - 1
            ));
        }
        let continues = if a.wal_header == b.wal_header {
            b.first_frame == a.last_frame + 1
        } else {
            b.first_frame == 1
                && (a.wal_header.restarted_as(&b.wal_header)
                    || b.follows == Some(a.wal_header.salts()))
        };
        if !continues {
            return Err(format!(
                "segment {} does not continue segment {}",
                b.seq, a.seq
            ));
        }
    }
    Ok(())
}

/// One recoverable window: any moment from `from` to `to` can be restored to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub generation: String,
    pub from: String,
    pub to: String,
    pub segments: usize,
    pub bytes: u64,
    /// The snapshots a replay in this window can start from.
    pub bases: Vec<String>,
}

/// The recoverable windows, oldest first (generations without a base have none).
pub fn windows(paths: &Paths, snapshots: &[Metadata]) -> Result<Vec<Window>> {
    let mut out = Vec::new();
    for g in list(paths)? {
        let headers = match g.headers() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(generation = %g.record.id, cause = %e, "cannot read a segment header; generation left out of the windows");
                continue;
            }
        };
        if let Err(why) = check_links(&headers) {
            tracing::warn!(generation = %g.record.id, why, "the generation's chain is broken; left out of the windows");
            continue;
        }
        let bs = bases(&g.record, &headers, snapshots);
        let (Some(first), Some(last)) = (bs.first(), headers.last()) else {
            continue;
        };
        let bytes = g
            .segments
            .iter()
            .filter_map(|s| fs::metadata(&s.path).ok())
            .map(|m| m.len())
            .sum();
        out.push(Window {
            generation: g.record.id.clone(),
            from: ms_to_rfc3339(first.pinned_ms),
            to: ms_to_rfc3339(last.captured_ms.max(bs.last().map_or(0, |b| b.pinned_ms))),
            segments: headers.len(),
            bytes,
            bases: bs.into_iter().map(|b| b.stamp).collect(),
        });
    }
    Ok(out)
}

/// RFC 3339 with milliseconds, UTC.
pub fn ms_to_rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}
