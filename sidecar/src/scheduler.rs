//! The scheduler: sleeps until each time of the [`Schedule`], takes the scheduled
//! snapshot (and retention after it; with an off-site target, the push, the target's
//! retention and, when due, its verify), and takes one catch-up snapshot at start when
//! a run was missed. Time comes from a [`Clock`]; the loop sleeps with tokio time in steps
//! of at most a minute, so it follows wall-clock jumps, and tests drive it with
//! `tokio::time::pause()` through [`TokioClock`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::MissedRun;
use crate::error::Error;
use crate::operation;
use crate::schedule::Fire;
use crate::state::State;

/// How often a scheduled snapshot that found another operation running is retried.
const BUSY_RETRY: Duration = Duration::from_secs(60);

const BUSY_RETRIES: u32 = 30;

/// Where the schedule reads the time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a given UTC time and advances with tokio's time, so a test
/// with `tokio::time::pause()` moves it by sleeping.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start_utc: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(start_utc: DateTime<Utc>) -> TokioClock {
        TokioClock {
            start_utc,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let d = TimeDelta::from_std(self.start.elapsed()).unwrap_or(TimeDelta::MAX);
        self.start_utc + d
    }
}

/// Sleep until `clock` reaches `at`, in steps of at most a minute. `false` on shutdown.
async fn sleep_until(clock: &dyn Clock, at: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
    loop {
        let now = clock.now();
        if now >= at {
            return true;
        }
        let left = (at - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = shutdown.cancelled() => return false,
        }
    }
}

/// Run the schedule until shutdown.
pub async fn run(state: Arc<State>, clock: Arc<dyn Clock>) {
    let Some(schedule) = state.config.schedule.clone() else {
        return;
    };
    let shutdown = state.shutdown.clone();
    tracing::info!(
        backup = schedule.backup_source(),
        chroma = schedule.chroma_source(),
        next = ?schedule.next_after(clock.now()).map(|f| f.at),
        "backup schedule running (UTC)"
    );

    if state.config.missed_run == MissedRun::CatchUp {
        let summary = state.summary.get(&state.config.paths).await;
        if let Some(missed) = schedule.missed(
            clock.now(),
            summary.newest_scheduled,
            summary.newest_scheduled_chroma,
        ) {
            let delay = state.config.catch_up_delay;
            tracing::warn!(
                missed_at = %missed.at,
                include_chroma = missed.include_chroma,
                delay_secs = delay.as_secs(),
                "a scheduled snapshot was missed while the sidecar was down; taking a catch-up snapshot"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => return,
            }
            scheduled_run(&state, clock.as_ref(), missed, true).await;
        }
    }

    let mut after = clock.now();
    loop {
        let Some(fire) = schedule.next_after(after) else {
            tracing::info!("the schedule has no future times; no more scheduled snapshots");
            return;
        };
        if !sleep_until(clock.as_ref(), fire.at, &shutdown).await {
            return;
        }
        scheduled_run(&state, clock.as_ref(), fire, false).await;
        // The next run is strictly after this one, and not in the past.
        after = fire.at.max(clock.now());
    }
}

/// One scheduled snapshot, then retention. A busy sidecar is retried every minute.
async fn scheduled_run(state: &Arc<State>, clock: &dyn Clock, fire: Fire, catch_up: bool) {
    for attempt in 0..=BUSY_RETRIES {
        if state.shutdown.is_cancelled() {
            return;
        }
        match operation::backup(
            state,
            fire.include_chroma,
            atocore_restore_job::Kind::Scheduled,
        )
        .await
        {
            Ok(_) => {
                match operation::prune(state, false).await {
                    Ok(_) | Err(Error::ShuttingDown) => {}
                    Err(e) => {
                        tracing::error!(cause = %e, "retention after the scheduled snapshot failed; it runs again after the next one")
                    }
                }
                if state.config.offsite.is_some() {
                    offsite_after_snapshot(state, clock).await;
                }
                return;
            }
            Err(
                e @ (Error::Busy(_)
                | Error::Engine(
                    atocore_restore_job::Error::Busy(_)
                    | atocore_restore_job::Error::RestorePending(_),
                )),
            ) if attempt < BUSY_RETRIES => {
                tracing::warn!(scheduled_for = %fire.at, catch_up, attempt, cause = %e, "scheduled snapshot postponed by a minute");
                tokio::select! {
                    () = tokio::time::sleep(BUSY_RETRY) => {}
                    () = state.shutdown.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::error!(scheduled_for = %fire.at, catch_up, code = e.code(), cause = %e, "scheduled snapshot failed; the next one runs at its time");
                return;
            }
        }
    }
}

/// Off-site work after a scheduled snapshot: push every valid snapshot the target
/// lacks (this one, and any missed while the target or the sidecar was down); after a
/// push that succeeded, the target's retention; then the verify when it is due. Each
/// is its own operation, logged and counted; a failure waits for the next run.
async fn offsite_after_snapshot(state: &Arc<State>, clock: &dyn Clock) {
    match operation::offsite_push_yielding(state).await {
        Ok(_) => {}
        // Logged by the operation; a push that yielded to a requested backup is
        // finished by the push after that backup.
        Err(_) => return,
    }
    let _ = operation::offsite_prune(state).await;
    let now = clock.now();
    if operation::offsite_verify_due(state, now) {
        let _ = operation::offsite_verify(state, now).await;
    }
}
