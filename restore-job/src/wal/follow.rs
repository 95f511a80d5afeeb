//! The streamer's caller side: what ties the [`Streamer`] to the rest of the engine.
//! The streamer itself only follows the WAL and reports that its generation needs a
//! base ([`Streamer::needs_base`]); here a restore waiting for the database makes it let
//! go ([`step`]), a base snapshot is taken with the engine's backup ([`take_base`]), and
//! [`run`] is the loop of `atocore-restore-job stream` (the sidecar has its own, with
//! pauses and status).

use std::time::Duration;

use crate::config::Paths;
use crate::error::Result;

use super::stream::{End, StepReport, StreamOptions, Streamer};

/// Whether a restore waits for the database (a request, or an interrupted restore's
/// journal): the init job refuses a database open elsewhere.
pub fn restore_waits(paths: &Paths) -> bool {
    crate::layout::journal_path(paths).exists() || crate::layout::request_path(paths).exists()
}

/// One step of the streamer, unless a restore waits for the database: then the
/// streamer lets go of it and the step reports the generation ended.
pub fn step(streamer: &mut Streamer, paths: &Paths) -> Result<StepReport> {
    if restore_waits(paths) {
        let mut report = StepReport::default();
        if let Some(id) = streamer.release() {
            tracing::info!(generation = %id, "a restore waits for the database; WAL streaming lets go of it");
            report.ended = Some((id, End::RestorePending));
        }
        return Ok(report);
    }
    streamer.step()
}

/// Take a database-only snapshot (kind `wal-base`) to start the current generation's
/// recoverable window: its stamp when it became the base, `None` when it did not (taken
/// while the WAL was empty: try again later).
pub fn take_base(
    streamer: &mut Streamer,
    paths: &Paths,
    keep_going: &dyn Fn() -> bool,
) -> Result<Option<String>> {
    let opts = crate::snapshot::BackupOptions {
        kind: crate::metadata::Kind::WalBase,
        ..Default::default()
    };
    let hooks = crate::snapshot::BackupHooks {
        quiesce: None,
        keep_going,
    };
    let meta = crate::snapshot::backup(paths, &opts, hooks)?;
    if streamer.base_taken(&meta.stamp, meta.wal.as_ref())? {
        tracing::info!(stamp = %meta.stamp, generation = ?streamer.generation(), "base snapshot of the WAL generation taken");
        Ok(Some(meta.stamp))
    } else {
        tracing::info!(stamp = %meta.stamp, "snapshot taken while the WAL was empty; a base is taken again later");
        Ok(None)
    }
}

/// What [`run`] did, printed by `atocore-restore-job stream` when it stops.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunSummary {
    pub generation: Option<String>,
    pub generations_started: Vec<String>,
    pub steps: u64,
    pub frames: u64,
    pub commits: u64,
    pub bytes: u64,
    pub base_snapshots: Vec<String>,
    pub errors: u64,
}

/// Stream until `stop` is set (or after `max_steps`): a step every `poll`, and a
/// database-only base snapshot whenever a generation has none yet (retried at most
/// once a minute when it fails).
pub fn run(
    paths: &Paths,
    opts: StreamOptions,
    poll: Duration,
    max_steps: Option<u64>,
    stop: &std::sync::atomic::AtomicBool,
) -> RunSummary {
    use std::sync::atomic::Ordering;
    let mut s = Streamer::new(paths, opts);
    let mut sum = RunSummary::default();
    let mut next_base_try = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) && max_steps.is_none_or(|m| sum.steps < m) {
        match step(&mut s, paths) {
            Ok(r) => {
                sum.frames += r.frames;
                sum.commits += r.commits;
                sum.bytes += r.bytes;
                if let Some((id, reason)) = r.started {
                    tracing::info!(generation = %id, reason = reason.as_str(), "WAL generation started");
                    sum.generations_started.push(id);
                    next_base_try = std::time::Instant::now();
                }
            }
            Err(e) => {
                sum.errors += 1;
                tracing::warn!(cause = %e, "WAL streaming step failed; retrying");
            }
        }
        sum.steps += 1;
        if s.needs_base() && std::time::Instant::now() >= next_base_try {
            match take_base(&mut s, paths, &|| !stop.load(Ordering::Relaxed)) {
                Ok(Some(stamp)) => sum.base_snapshots.push(stamp),
                Ok(None) => next_base_try = std::time::Instant::now() + Duration::from_secs(60),
                Err(e) => {
                    tracing::warn!(cause = %e, "base snapshot failed; retrying in a minute");
                    next_base_try = std::time::Instant::now() + Duration::from_secs(60);
                }
            }
        }
        std::thread::sleep(poll);
    }
    sum.generation = s.generation().map(str::to_string);
    sum
}
