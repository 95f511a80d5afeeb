//! The snapshots as the API serves them: the `list` body (`GET /admin/backup`) and a
//! summary of it plus the last drill record (`/health`, `/metrics`), read together and
//! cached, so that a busy `/health` or a thousand listed snapshots never mean a thousand
//! metadata reads per request.
//!
//! A cached listing is reused while all of these hold: it is less than [`TTL`] old, no
//! operation of this sidecar ran since (they invalidate it), and the snapshots folder's
//! modification time is unchanged (another process publishing or deleting a snapshot
//! renames an entry there, which changes it). Published snapshots are immutable, so the
//! only changes this misses for up to [`TTL`] are files damaged inside a snapshot.
//!
//! The disk is the truth: a snapshot exists only once it was published, so "last
//! success per kind" is read from the snapshots themselves and survives restarts.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use atocore_restore_job::snapshot::{self, Listed};
use atocore_restore_job::{Kind, Paths, Stamp};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// How long a listing is reused at most.
pub const TTL: Duration = Duration::from_secs(2);

/// File of drill records, one JSON object per line.
pub const DRILLS_FILE: &str = "drills.jsonl";

/// One snapshot as the summary sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Snap {
    pub stamp: String,
    pub kind: &'static str,
    pub include_chroma: bool,
    /// When the data was captured (the stamp).
    #[serde(skip)]
    pub taken: DateTime<Utc>,
    /// When it was published (`validated_at`, else the stamp).
    #[serde(skip)]
    pub finished: DateTime<Utc>,
    pub duration_ms: Option<u64>,
    pub valid: Option<bool>,
    pub bytes: u64,
}

/// The snapshots folder at one moment.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: usize,
    pub invalid: usize,
    /// Database plus chroma bytes as recorded (hard-linked chroma files count in
    /// every snapshot that has them, so this is more than the disk usage).
    pub bytes: u64,
    pub oldest: Option<Snap>,
    pub newest: Option<Snap>,
    /// Newest snapshot that is not known to be broken (`valid` true or null).
    pub newest_valid: Option<Snap>,
    /// Newest snapshot of each kind.
    pub by_kind: BTreeMap<&'static str, Snap>,
    /// Newest `scheduled` snapshot, and newest `scheduled` one with chroma.
    pub newest_scheduled: Option<DateTime<Utc>>,
    pub newest_scheduled_chroma: Option<DateTime<Utc>>,
    /// The last line of `drills.jsonl`.
    pub last_drill: Option<Value>,
    /// Why listing failed, when it did.
    pub error: Option<String>,
}

/// One reading of the snapshots folder.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The `GET /admin/backup` body (the CLI's `list` JSON), or the error.
    pub body: Result<Bytes, String>,
    pub summary: Summary,
}

impl Listing {
    /// Read the snapshots folder and the drill log (blocking).
    pub fn read(paths: &Paths) -> Listing {
        let mut s = Summary {
            last_drill: last_drill(&paths.backup_dir.join(DRILLS_FILE)),
            ..Summary::default()
        };
        let report = match snapshot::list(paths) {
            Ok(r) => r,
            Err(e) => {
                s.error = Some(e.to_string());
                return Listing {
                    body: Err(e.to_string()),
                    summary: s,
                };
            }
        };
        for l in &report.backups {
            let snap = snap(l);
            s.count += 1;
            s.bytes += snap.bytes;
            if l.valid == Some(false) {
                s.invalid += 1;
            } else {
                s.newest_valid = Some(snap.clone());
            }
            if snap.kind == Kind::Scheduled.as_str() {
                s.newest_scheduled = Some(snap.taken);
                if snap.include_chroma {
                    s.newest_scheduled_chroma = Some(snap.taken);
                }
            }
            if s.oldest.is_none() {
                s.oldest = Some(snap.clone());
            }
            s.by_kind.insert(snap.kind, snap.clone());
            s.newest = Some(snap);
        }
        let body = serde_json::to_vec_pretty(&report)
            .map(|mut v| {
                v.push(b'\n');
                Bytes::from(v)
            })
            .map_err(|e| e.to_string());
        Listing { body, summary: s }
    }
}

fn snap(l: &Listed) -> Snap {
    let taken = Stamp::parse(&l.stamp).map(|s| s.time()).unwrap_or_default();
    let m = l.metadata.as_ref();
    let finished = m
        .and_then(|m| m.validated_at.as_deref())
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or(taken);
    Snap {
        stamp: l.stamp.clone(),
        kind: m
            .map(|m| m.kind_or_manual())
            .unwrap_or(Kind::Manual)
            .as_str(),
        include_chroma: m.is_some_and(|m| m.has_chroma()),
        taken,
        finished,
        duration_ms: m.and_then(|m| m.duration_ms),
        valid: l.valid,
        bytes: m.map(|m| m.total_bytes()).unwrap_or(0),
    }
}

/// The last JSON line of the drill log (reads at most its last 64 KiB).
pub fn last_drill(path: &Path) -> Option<Value> {
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let from = len.saturating_sub(64 * 1024);
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut buf = String::new();
    f.read_to_string(&mut buf).ok()?;
    buf.lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .find_map(|l| serde_json::from_str(l).ok())
}

/// The cached [`Listing`]: one reader at a time refreshes it; the others wait for it.
#[derive(Debug, Default)]
pub struct SummaryCache {
    slot: tokio::sync::Mutex<Option<Cached>>,
    generation: AtomicU64,
}

#[derive(Debug)]
struct Cached {
    at: Instant,
    generation: u64,
    mtime: Option<SystemTime>,
    listing: Arc<Listing>,
}

fn folder_mtime(paths: &Paths) -> Option<SystemTime> {
    std::fs::metadata(paths.snapshots_dir())
        .and_then(|m| m.modified())
        .ok()
}

impl SummaryCache {
    /// Drop the cached listing (callable from any thread).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The listing (see the module docs for how fresh it is).
    pub async fn listing(&self, paths: &Paths) -> Arc<Listing> {
        let mut slot = self.slot.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        let mtime = folder_mtime(paths);
        if let Some(c) = slot.as_ref()
            && c.generation == generation
            && c.at.elapsed() < TTL
            && c.mtime == mtime
        {
            return Arc::clone(&c.listing);
        }
        let p = paths.clone();
        let at = Instant::now();
        let listing = Arc::new(
            tokio::task::spawn_blocking(move || Listing::read(&p))
                .await
                .unwrap_or_else(|e| Listing {
                    body: Err(format!("reading the snapshots failed: {e}")),
                    summary: Summary {
                        error: Some(format!("reading the snapshots failed: {e}")),
                        ..Summary::default()
                    },
                }),
        );
        *slot = Some(Cached {
            at,
            generation,
            mtime,
            listing: Arc::clone(&listing),
        });
        listing
    }

    /// The summary part of [`SummaryCache::listing`].
    pub async fn get(&self, paths: &Paths) -> Summary {
        self.listing(paths).await.summary.clone()
    }
}
