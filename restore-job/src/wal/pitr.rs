//! Restore to a moment: choose the snapshot and the captured frames that reach it
//! ([`plan`]), then rebuild the database there as a new `point-in-time` snapshot
//! ([`build`]), which an ordinary restore then puts in place. The rebuilt snapshot is
//! checked like any other (manifest, `integrity_check`, row counts) before anything
//! live is touched, and it stays listed: the operator can see what was restored.
//!
//! Granularity: a segment carries the time its frames were read from the live WAL, so
//! `--at T` replays every segment read at or before T. Every transaction committed at
//! least one poll interval (plus the time to copy it) before T is included, and none
//! committed after T.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::config::Paths;
use crate::error::{Error, Result};
use crate::metadata::{Kind, Metadata, PointInTime};
use crate::snapshot;
use crate::stamp::Stamp;

use super::format::WalHeader;
use super::generation::{self, ms_to_rfc3339};
use super::replay::WalWriter;
use super::segment::{self, SegmentHeader};

/// What a restore to `at` will use.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub at: String,
    /// The moment the database will be at (see [`PointInTime::restored_to`]).
    pub restored_to: String,
    pub base: String,
    pub generation: Option<String>,
    /// Segments to replay, oldest first (from the start of the base's WAL epoch).
    #[serde(skip)]
    pub segments: Vec<PathBuf>,
    pub segments_replayed: u64,
    pub warnings: Vec<String>,
}

/// Parse an RFC 3339 moment (`2026-11-27T10:15:03Z`, offsets allowed).
pub fn parse_at(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::Usage(format!(
                "--at `{s}` is not an RFC 3339 moment ({e}); write it like 2026-11-27T10:15:03Z"
            ))
        })
}

/// Valid published snapshots' metadata, oldest first (point-in-time ones excluded:
/// they are results, not bases).
fn valid_snapshots(paths: &Paths) -> Result<Vec<Metadata>> {
    Ok(snapshot::list(paths)?
        .backups
        .into_iter()
        .filter(|l| l.valid == Some(true))
        .filter_map(|l| l.metadata)
        .filter(|m| m.kind_or_manual() != Kind::PointInTime)
        .collect())
}

/// Choose the base snapshot and the segments that bring the database to `at`. With
/// `only_base`, the replay must start from that snapshot.
pub fn plan(paths: &Paths, at: DateTime<Utc>, only_base: Option<&str>) -> Result<Plan> {
    let at_ms = at.timestamp_millis();
    let at_s = at.to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut snapshots = valid_snapshots(paths)?;
    if let Some(b) = only_base {
        let b = Stamp::parse(b)?;
        snapshot::metadata_of(paths, &b)?;
        snapshots.retain(|m| m.stamp == b.as_str());
    }
    let mut best: Option<(i64, Plan)> = None;
    let mut skipped = Vec::new();
    let gens = generation::list(paths)?;
    for g in &gens {
        // A damaged generation is left out with a warning, as `list`'s windows leave
        // it out: one bad file never blocks a restore from an intact generation.
        let headers = match g.headers() {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(generation = %g.record.id, cause = %e, "a segment cannot be read; the generation is left out of the plan");
                skipped.push(format!("generation_skipped: {}: {e}", g.record.id));
                continue;
            }
        };
        let bases = generation::bases(&g.record, &headers, &snapshots);
        // Segments in sequence order, never by wall time: the target is the last of
        // the first segments that were all, even at the latest time a clock step
        // allows, captured at or before the moment.
        let clock = Timeline::of(&headers);
        let target = match clock.latest.iter().position(|&t| t > at_ms) {
            Some(first_after) => first_after.checked_sub(1),
            None => headers.len().checked_sub(1),
        };
        let Some(base) = bases
            .iter()
            .filter(|b| b.pinned_ms <= at_ms && target.is_some_and(|t| b.segment <= t))
            .max_by_key(|b| b.pinned_ms)
        else {
            continue;
        };
        let t = target.expect("a base was found at or before it");
        let start = epoch_start(&headers, base.segment);
        if let Err(e) = check_chain(&headers[start..=t], &g.record.id) {
            tracing::warn!(generation = %g.record.id, cause = %e, "the generation's chain is broken; left out of the plan");
            skipped.push(format!("generation_skipped: {}: {e}", g.record.id));
            continue;
        }
        let reached = clock.earliest[t].max(base.pinned_ms);
        if best.as_ref().is_some_and(|(r, _)| *r >= reached) {
            continue;
        }
        best = Some((
            reached,
            Plan {
                at: at_s.clone(),
                restored_to: ms_to_rfc3339(reached),
                base: base.stamp.clone(),
                generation: Some(g.record.id.clone()),
                segments: g.segments[start..=t]
                    .iter()
                    .map(|s| s.path.clone())
                    .collect(),
                segments_replayed: (t + 1 - start) as u64,
                warnings: clock.steps_near(&headers, start, t + 1, &g.record.id),
            },
        ));
    }
    // A plain snapshot newer than every usable capture is as good and needs no replay.
    let plain = snapshots
        .iter()
        .filter_map(|m| {
            let pinned = m.wal.as_ref().map(|w| w.pinned_ms).or_else(|| {
                Stamp::parse(&m.stamp)
                    .ok()
                    .map(|s| s.time().timestamp_millis())
            })?;
            (pinned <= at_ms).then_some((pinned, m))
        })
        .max_by_key(|(p, _)| *p);
    let mut chosen = match (best, plain) {
        (Some((reached, plan)), Some((p, _))) if reached >= p => plan,
        (_, Some((p, m))) => Plan {
            at: at_s,
            restored_to: ms_to_rfc3339(p),
            base: m.stamp.clone(),
            generation: None,
            segments: Vec::new(),
            segments_replayed: 0,
            warnings: vec!["no_wal_capture_reaches_at: the database is restored as of the snapshot's copy; transactions after it and before the moment asked for were not captured".into()],
        },
        (Some((_, plan)), None) => plan,
        (None, None) => {
            let why = if skipped.is_empty() {
                "no valid snapshot was taken at or before it".to_string()
            } else {
                format!(
                    "no valid snapshot was taken at or before it ({})",
                    skipped.join("; ")
                )
            };
            return Err(Error::NoPointInTime { at: at_s, why });
        }
    };
    // A clock step already says why the database may be older than the moment.
    if !chosen
        .warnings
        .iter()
        .any(|w| w.starts_with("clock_step: "))
    {
        chosen.warnings.extend(short_of(&chosen, at_ms, &gens));
    }
    if let Some(base) = snapshots.iter().find(|m| m.stamp == chosen.base)
        && !base.has_chroma()
    {
        let newest = snapshots.iter().rev().find(|m| m.has_chroma());
        chosen.warnings.push(match newest {
            Some(c) => format!(
                "chroma_not_restored: the base snapshot {} holds no chroma; the live chroma is left as it is (the newest snapshot with chroma is {})",
                chosen.base, c.stamp
            ),
            None => format!(
                "chroma_not_restored: the base snapshot {} holds no chroma and no snapshot does; the live chroma is left as it is",
                chosen.base
            ),
        });
    }
    chosen.warnings.extend(skipped);
    Ok(chosen)
}

/// How far short of the moment asked for a plan falls, when more than the capture's
/// granularity (1 s): the capture had stopped or stalled by then, or the moment lies
/// in a gap between two generations (the reason the next one started is named).
fn short_of(plan: &Plan, at_ms: i64, gens: &[generation::Generation]) -> Option<String> {
    let reached = DateTime::parse_from_rfc3339(&plan.restored_to)
        .ok()?
        .timestamp_millis();
    if at_ms - reached <= 1000 {
        return None;
    }
    let next = gens.iter().find(|g| {
        DateTime::parse_from_rfc3339(&g.record.started_at)
            .is_ok_and(|t| t.timestamp_millis() > reached)
    });
    Some(match next {
        Some(g) => format!(
            "wal_gap: nothing was captured from {} until generation {} started at {} ({}); the database is restored as of {}",
            plan.restored_to, g.record.id, g.record.started_at, g.record.reason, plan.restored_to
        ),
        None => format!(
            "at_after_capture_end: the capture reaches only {}, {} s before the moment asked for (streaming stopped or stalled); later transactions are not restored",
            plan.restored_to,
            (at_ms - reached) / 1000
        ),
    })
}

/// Wall-clock steps measured against the boot-time clock: for each segment the
/// earliest and latest moment its capture can have happened, whichever side of a step
/// the wall clock was right on. Within one boot, `captured_ms - mono_ms` is the wall
/// clock's offset; it changes only when the clock is stepped (or slewed, by far less
/// than the 1 s tolerated here). Segments without the boot-time clock count at their
/// wall time.
struct Timeline {
    earliest: Vec<i64>,
    latest: Vec<i64>,
}

/// A change of the wall clock's offset above this between two segments is a step.
const CLOCK_STEP_MS: i64 = 1000;

impl Timeline {
    fn of(headers: &[SegmentHeader]) -> Timeline {
        let mut earliest: Vec<i64> = headers.iter().map(|h| h.captured_ms).collect();
        let mut latest = earliest.clone();
        let mut i = 0;
        while i < headers.len() {
            let Some(boot) = headers[i]
                .boot_id
                .as_ref()
                .filter(|_| headers[i].mono_ms.is_some())
            else {
                i += 1;
                continue;
            };
            let run_end = (i..headers.len())
                .find(|&j| {
                    headers[j].boot_id.as_ref() != Some(boot) || headers[j].mono_ms.is_none()
                })
                .unwrap_or(headers.len());
            let (lo, hi) = headers[i..run_end]
                .iter()
                .map(|h| h.captured_ms - h.mono_ms.unwrap_or_default())
                .fold((i64::MAX, i64::MIN), |(lo, hi), o| (lo.min(o), hi.max(o)));
            if hi - lo > CLOCK_STEP_MS {
                for j in i..run_end {
                    let mono = headers[j].mono_ms.unwrap_or_default();
                    earliest[j] = mono + lo;
                    latest[j] = mono + hi;
                }
            }
            i = run_end;
        }
        Timeline { earliest, latest }
    }

    /// Warnings for the steps between segments `from..to` and the one after `to`
    /// (whose step decides where the replay stops).
    fn steps_near(
        &self,
        headers: &[SegmentHeader],
        from: usize,
        to: usize,
        generation: &str,
    ) -> Vec<String> {
        let end = (to + 1).min(headers.len());
        let mut out = Vec::new();
        for j in from.max(1)..end {
            let (a, b) = (&headers[j - 1], &headers[j]);
            let (Some(ma), Some(mb)) = (a.mono_ms, b.mono_ms) else {
                continue;
            };
            if a.boot_id != b.boot_id {
                continue;
            }
            let step = (b.captured_ms - mb) - (a.captured_ms - ma);
            if step.abs() > CLOCK_STEP_MS {
                out.push(format!(
                    "clock_step: the streamer's clock stepped {}{} s between segments {} and {} of generation {generation}; the moment is resolved conservatively: nothing captured after it is restored, and restored_to is the earliest moment the last segment replayed can have been captured",
                    if step > 0 { "+" } else { "" },
                    step / 1000,
                    a.seq,
                    b.seq,
                ));
            }
        }
        out
    }
}

/// The first segment of the WAL epoch holding segment `i`.
fn epoch_start(headers: &[SegmentHeader], mut i: usize) -> usize {
    while i > 0 && headers[i - 1].wal_header == headers[i].wal_header {
        i -= 1;
    }
    i
}

/// The segments follow one another with nothing missing: consecutive numbers, frames
/// continuing within an epoch, each new epoch a restart of the previous one from frame 1.
fn check_chain(headers: &[SegmentHeader], generation: &str) -> Result<()> {
    let broken = |why: String| Error::WalChainBroken {
        what: format!("generation {generation}"),
        why,
    };
    let Some(first) = headers.first() else {
        return Ok(());
    };
    if first.first_frame != 1 {
        return Err(broken(format!(
            "segment {} starts at frame {}: the frames before it in its WAL epoch are gone",
            first.seq, first.first_frame
        )));
    }
    generation::check_links(headers).map_err(broken)
}

/// Rebuild the database of `plan` into `db` (a copy of the base's database): each WAL
/// epoch is written as a `-wal` and checkpointed by SQLite, which must take every frame.
/// Returns the frames replayed.
pub fn replay_into(db: &Path, segments: &[PathBuf], base: &Metadata) -> Result<u64> {
    let position = base.wal.as_ref().and_then(|w| w.position);
    let mut writer: Option<(WalHeader, WalWriter)> = None;
    let mut total = 0u64;
    let mut base_checked = position.is_none_or(|p| p.frame == 0);
    for path in segments {
        let (h, raw) = segment::read(path)?;
        if writer.as_ref().is_some_and(|(wh, _)| *wh != h.wal_header) {
            let (_, w) = writer.take().expect("checked above");
            total += w.frames();
            w.checkpoint()?;
        }
        if writer.is_none() {
            writer = Some((h.wal_header, WalWriter::create(db, &h.wal_header)?));
        }
        let (_, w) = writer.as_mut().expect("created above");
        let flen = h.wal_header.frame_len() as usize;
        for (i, frame) in raw.chunks_exact(flen).enumerate() {
            let index = h.first_frame + i as u64;
            if let Some(p) = position
                && !base_checked
                && (p.salt1, p.salt2) == h.wal_header.salts()
                && p.frame == index
            {
                let stored = super::format::Frame {
                    index,
                    bytes: frame.to_vec(),
                }
                .checksum();
                if stored != (p.checksum[0], p.checksum[1]) {
                    return Err(Error::WalChainBroken {
                        what: path.display().to_string(),
                        why: format!(
                            "frame {index} is not the frame snapshot `{}` was copied at",
                            base.stamp
                        ),
                    });
                }
                base_checked = true;
            }
            w.push(frame)?;
        }
    }
    if let Some((_, w)) = writer {
        total += w.frames();
        w.checkpoint()?;
    }
    if !base_checked {
        return Err(Error::WalChainBroken {
            what: format!("snapshot `{}`", base.stamp),
            why: "its WAL position is not among the segments replayed".into(),
        });
    }
    Ok(total)
}

/// Plan and build: the published `point-in-time` snapshot for `at`, ready to restore.
pub fn snapshot_at(paths: &Paths, at: DateTime<Utc>, only_base: Option<&str>) -> Result<Metadata> {
    let p = plan(paths, at, only_base)?;
    let mut meta = build(paths, &p)?;
    meta.warnings.extend(p.warnings);
    Ok(meta)
}

/// Build the `point-in-time` snapshot of `plan` and publish it. The registry and chroma
/// come from the base snapshot.
pub fn build(paths: &Paths, plan: &Plan) -> Result<Metadata> {
    let base_stamp = Stamp::parse(&plan.base)?;
    let base = snapshot::metadata_of(paths, &base_stamp)?;
    let segments = plan.segments.clone();
    let info = PointInTime {
        at: plan.at.clone(),
        restored_to: plan.restored_to.clone(),
        base: plan.base.clone(),
        files_from: plan.base.clone(),
        generation: plan.generation.clone(),
        segments_replayed: plan.segments_replayed,
        frames_replayed: 0,
    };
    snapshot::derive(paths, &base_stamp, info, &|db: &Path| {
        replay_into(db, &segments, &base)
    })
}

/// Remove what point-in-time recovery no longer needs for the moments of
/// `[now - days, now]` ([`needs`]): whole generations that reach no moment of that
/// window, and in the others the segments before the WAL epoch of the oldest base a
/// restore to a moment of the window starts from. The newest generation (the one a
/// running streamer writes) is never removed whole. Returns the files and folders
/// removed (with `dry_run`: that would be, and nothing is). `going`: snapshots the same
/// prune deletes (a dry run has not deleted them yet); they are never ones [`needs`]
/// named, so the decision is the same with or without them.
pub fn prune(
    paths: &Paths,
    days: u64,
    now: DateTime<Utc>,
    dry_run: bool,
    going: &[String],
) -> Result<Vec<PathBuf>> {
    let mut snapshots = valid_snapshots(paths)?;
    snapshots.retain(|m| !going.contains(&m.stamp));
    let gens = readable_generations(paths)?;
    let needed = needs_of(&gens, &snapshots, window_of(days, now));
    let mut removed = Vec::new();
    for (g, _) in &gens {
        match needed.keep_from.get(&g.record.id) {
            // Reaches no moment of the window (and is not the newest): nothing
            // restores through it any more.
            None => {
                if !dry_run {
                    fs::remove_dir_all(&g.dir).map_err(Error::io("remove", &g.dir))?;
                }
                removed.push(g.dir.clone());
            }
            Some(&start) => {
                for s in &g.segments[..start] {
                    if !dry_run {
                        fs::remove_file(&s.path).map_err(Error::io("remove", &s.path))?;
                    }
                    removed.push(s.path.clone());
                }
            }
        }
    }
    Ok(removed)
}

/// What a restore to a moment of the point-in-time window needs kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Needs {
    /// The snapshots a restore to some moment of the window starts from.
    pub bases: std::collections::BTreeSet<String>,
    /// Per generation kept: the index of its first segment to keep. A generation not
    /// listed (and readable) may be removed whole.
    pub keep_from: std::collections::BTreeMap<String, usize>,
}

/// [`Needs`] for the moments of `[now - days, now]`, from the valid snapshots and the
/// generations on disk. A generation whose segment headers cannot be read is left out
/// (and left alone by [`prune`]).
pub fn needs(paths: &Paths, days: u64, now: DateTime<Utc>) -> Result<Needs> {
    let snapshots = valid_snapshots(paths)?;
    let gens = readable_generations(paths)?;
    Ok(needs_of(&gens, &snapshots, window_of(days, now)))
}

/// The window in Unix ms.
fn window_of(days: u64, now: DateTime<Utc>) -> (i64, i64) {
    let now_ms = now.timestamp_millis();
    let days = i64::try_from(days).unwrap_or(i64::MAX / 86_400_000);
    (
        now_ms.saturating_sub(days.saturating_mul(86_400_000)),
        now_ms,
    )
}

/// The generations whose segment headers can all be read, with them, oldest first.
/// The flag: the newest generation (the one a running streamer writes).
fn readable_generations(
    paths: &Paths,
) -> Result<Vec<(generation::Generation, Vec<SegmentHeader>)>> {
    let mut out = Vec::new();
    for g in generation::list(paths)? {
        match g.headers() {
            Ok(h) => out.push((g, h)),
            Err(e) => {
                tracing::warn!(generation = %g.record.id, cause = %e, "unreadable segment; generation left as it is");
            }
        }
    }
    Ok(out)
}

/// The decision of [`needs`], pure. It follows the choice [`plan`] makes at a moment
/// `t`, in each generation: the base pinned latest among those pinned at or before
/// `t` whose position lies in a segment captured at or before `t`. That choice only
/// changes when some base becomes usable, so looking at the window's start and at
/// each such moment inside it finds every base a restore to a moment of the window
/// uses. [`plan`] checks the chain of every generation that has a base at the moment,
/// so each generation kept keeps the WAL epochs of all its bases used in the window.
///
/// A generation reaches the moments from its first usable base to its last segment
/// (for the newest, the one still being written, to `now`); one that reaches no
/// moment of the window is not needed. Moments in a gap between two generations, or
/// that no captured WAL reaches (a restore there starts from a plain snapshot and
/// warns `no_wal_capture_reaches_at`), are left to the calendar series.
fn needs_of(
    gens: &[(generation::Generation, Vec<SegmentHeader>)],
    snapshots: &[Metadata],
    (from, now): (i64, i64),
) -> Needs {
    let mut out = Needs::default();
    let newest = gens.last().map(|(g, _)| g.record.id.clone());
    for (g, headers) in gens {
        let is_newest = newest.as_deref() == Some(g.record.id.as_str());
        let bases = generation::bases(&g.record, headers, snapshots);
        // From when each base can start a replay: pinned, and its segment captured
        // (the earliest capture at or after its segment, as `plan` looks backwards).
        let mut earliest_after = vec![i64::MAX; headers.len() + 1];
        for j in (0..headers.len()).rev() {
            earliest_after[j] = earliest_after[j + 1].min(headers[j].captured_ms);
        }
        let usable: Vec<i64> = bases
            .iter()
            .map(|b| b.pinned_ms.max(earliest_after[b.segment]))
            .collect();
        let chosen_at = |t: i64| {
            bases
                .iter()
                .zip(&usable)
                .filter(|(_, u)| **u <= t)
                .map(|(b, _)| b)
                .max_by_key(|b| b.pinned_ms)
        };
        let end = if is_newest {
            now
        } else {
            headers.last().map_or(i64::MIN, |h| h.captured_ms)
        };
        let first = usable.iter().copied().min().unwrap_or(i64::MAX).max(from);
        if first > now.min(end) {
            // Reaches no moment of the window. The newest is kept whole all the same:
            // its first base may still be to come.
            if is_newest {
                out.keep_from.insert(g.record.id.clone(), 0);
            }
            continue;
        }
        let mut moments: Vec<i64> = usable
            .iter()
            .copied()
            .filter(|u| *u > first && *u <= now)
            .collect();
        moments.push(first);
        let mut keep_from = usize::MAX;
        for t in moments {
            let Some(b) = chosen_at(t) else { continue };
            keep_from = keep_from.min(epoch_start(headers, b.segment));
            if t <= end {
                out.bases.insert(b.stamp.clone());
            }
        }
        out.keep_from
            .insert(g.record.id.clone(), keep_from.min(headers.len()));
    }
    out
}
