//! Continuous WAL capture (`ATOCORE_WAL_STREAM`): the engine's
//! [`Streamer`](atocore_restore_job::wal::Streamer) on a thread of its own, a step
//! every poll interval, a database-only base snapshot whenever a generation starts,
//! and a pause for restores: the streamer holds the live database open, which a
//! restore must not find, and the restored database is another file, so the stream
//! resumes in a new generation.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use atocore_restore_job::Paths;
use atocore_restore_job::wal::{StreamOptions, Streamer};
use chrono::Utc;
use serde::Serialize;

/// What `GET /admin/wal`, `/health` and `/metrics` say of the stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WalStatus {
    pub enabled: bool,
    /// The generation being written.
    pub generation: Option<String>,
    /// Seconds since every committed frame was last captured (0 when caught up at the
    /// last look).
    pub lag_seconds: Option<f64>,
    pub last_caught_up_at: Option<String>,
    /// Committed frames of the live WAL not captured yet (the wal-index's committed end
    /// minus the captured position), as of the last look.
    pub lag_frames: Option<u64>,
    pub frames_captured: u64,
    pub commits_captured: u64,
    pub bytes_captured: u64,
    pub generations_started: u64,
    /// The generation still waits for its base snapshot (no restore --at reaches it yet).
    pub needs_base: bool,
    pub paused: bool,
    pub last_error: Option<String>,
    /// Off-site copy of the captured WAL (when a target is set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsite: Option<OffsiteWalStatus>,
    #[serde(skip)]
    caught_up_ms: Option<i64>,
    #[serde(skip)]
    needs_base_since_ms: Option<i64>,
}

impl WalStatus {
    /// Seconds the current generation has been waiting for its base snapshot.
    pub fn waiting_for_base(&self) -> Option<f64> {
        self.needs_base_since_ms.map(seconds_since)
    }
}

/// The off-site side of the stream.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OffsiteWalStatus {
    /// Seconds since every captured segment was last on the target.
    pub lag_seconds: Option<f64>,
    pub last_push_at: Option<String>,
    pub segments_pushed: u64,
    pub objects_pushed: u64,
    pub bytes_pushed: u64,
    pub last_error: Option<String>,
    #[serde(skip)]
    caught_up_ms: Option<i64>,
}

impl WalStatus {
    /// The lag now.
    pub fn lag(&self) -> Option<f64> {
        self.caught_up_ms.map(seconds_since)
    }
}

/// Seconds from `ms` (Unix ms) to now, never negative.
fn seconds_since(ms: i64) -> f64 {
    (Utc::now().timestamp_millis() - ms).max(0) as f64 / 1000.0
}

#[derive(Debug, Default)]
struct Control {
    pause: bool,
    paused: bool,
    stop: bool,
}

/// The stream's shared handle (`State::wal`).
#[derive(Debug, Default)]
pub struct WalStream {
    control: Mutex<Control>,
    changed: Condvar,
    status: Mutex<WalStatus>,
}

/// Settings of the stream.
#[derive(Debug, Clone)]
pub struct WalSettings {
    pub poll: Duration,
    pub checkpoint_frames: u64,
    pub max_lag: Duration,
    pub offsite_every: Duration,
}

impl WalStream {
    /// The current status (the lag computed now).
    pub fn status(&self) -> WalStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.lag_seconds = s.lag();
        if let Some(o) = s.offsite.as_mut() {
            o.lag_seconds = o.caught_up_ms.map(seconds_since);
        }
        s.paused = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paused;
        s
    }

    fn update(&self, f: impl FnOnce(&mut WalStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Start streaming on a thread of its own.
    pub fn spawn(
        self: &Arc<Self>,
        paths: Paths,
        settings: WalSettings,
    ) -> std::thread::JoinHandle<()> {
        self.update(|s| s.enabled = true);
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("wal-stream".into())
            .spawn(move || me.run(&paths, &settings))
            .expect("spawning the WAL stream thread")
    }

    /// Push the captured WAL to the off-site target every `every` (only what is new:
    /// one object per push, none when nothing is), on a thread of its own.
    pub fn spawn_offsite(
        self: &Arc<Self>,
        paths: Paths,
        offsite: atocore_restore_job::offsite::OffsiteArgs,
        every: Duration,
    ) -> std::thread::JoinHandle<()> {
        self.update(|s| s.offsite = Some(OffsiteWalStatus::default()));
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("wal-offsite".into())
            .spawn(move || {
                let mut known = None;
                loop {
                    {
                        let c = me.control.lock().unwrap_or_else(|p| p.into_inner());
                        if c.stop {
                            return;
                        }
                        let _ = me.changed.wait_timeout(c, every);
                    }
                    if me.control.lock().unwrap_or_else(|p| p.into_inner()).stop {
                        return;
                    }
                    let started = Utc::now().timestamp_millis();
                    let r = offsite.push_wal(&paths, &mut known);
                    me.update(|s| {
                        let o = s.offsite.get_or_insert_with(OffsiteWalStatus::default);
                        match r {
                            Ok(r) => {
                                o.segments_pushed += r.segments;
                                o.objects_pushed += r.objects;
                                o.bytes_pushed += r.bytes;
                                o.caught_up_ms = Some(started);
                                if r.objects > 0 {
                                    o.last_push_at =
                                        Some(atocore_restore_job::wal::generation::ms_to_rfc3339(
                                            started,
                                        ));
                                }
                                o.last_error = None;
                            }
                            Err(e) => {
                                tracing::warn!(cause = %e, "off-site WAL push failed; retrying");
                                o.last_error = Some(e.to_string());
                                known = None;
                            }
                        }
                    });
                }
            })
            .expect("spawning the off-site WAL thread")
    }

    /// Stop the thread at its next look.
    pub fn stop(&self) {
        self.control.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.changed.notify_all();
    }

    /// Make the streamer let go of the live database; returns once it has (or after
    /// `wait`). Streaming resumes, in a new generation, at [`WalStream::resume`].
    pub fn pause(&self, wait: Duration) -> bool {
        let enabled = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .enabled;
        let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
        c.pause = true;
        self.changed.notify_all();
        if !enabled {
            return true;
        }
        let deadline = Instant::now() + wait;
        while !c.paused && !c.stop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            c = self
                .changed
                .wait_timeout(c, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Undo [`WalStream::pause`].
    pub fn resume(&self) {
        self.control.lock().unwrap_or_else(|p| p.into_inner()).pause = false;
        self.changed.notify_all();
    }

    fn run(&self, paths: &Paths, settings: &WalSettings) {
        let opts = StreamOptions {
            checkpoint_frames: settings.checkpoint_frames,
            ..StreamOptions::default()
        };
        let mut streamer = Streamer::new(paths, opts);
        let mut next_base_try = Instant::now();
        loop {
            {
                let mut c = self.control.lock().unwrap_or_else(|p| p.into_inner());
                if c.pause && !c.stop {
                    if let Some(id) = streamer.release() {
                        tracing::info!(generation = %id, "WAL streaming paused for a restore; it resumes in a new generation");
                    }
                    self.update(|s| s.generation = None);
                    c.paused = true;
                    self.changed.notify_all();
                    while c.pause && !c.stop {
                        c = self.changed.wait(c).unwrap_or_else(|p| p.into_inner());
                    }
                    c.paused = false;
                }
                if c.stop {
                    streamer.release();
                    return;
                }
            }
            match atocore_restore_job::wal::follow::step(&mut streamer, paths) {
                Ok(r) => self.update(|s| {
                    s.frames_captured += r.frames;
                    s.commits_captured += r.commits;
                    s.bytes_captured += r.bytes;
                    if r.started.is_some() {
                        s.generations_started += 1;
                        next_base_try = Instant::now();
                    }
                    s.generation = streamer.generation().map(str::to_string);
                    s.caught_up_ms = streamer.caught_up_ms();
                    s.lag_frames = streamer.lag_frames();
                    s.last_caught_up_at = s
                        .caught_up_ms
                        .map(atocore_restore_job::wal::generation::ms_to_rfc3339);
                    s.last_error = None;
                }),
                Err(e) => {
                    tracing::warn!(cause = %e, "WAL streaming step failed; retrying");
                    self.update(|s| s.last_error = Some(e.to_string()));
                }
            }
            if streamer.needs_base() && Instant::now() >= next_base_try {
                next_base_try = self.take_base(&mut streamer, paths);
            }
            self.update(|s| {
                let needs = streamer.needs_base();
                if needs && !s.needs_base {
                    s.needs_base_since_ms = Some(Utc::now().timestamp_millis());
                } else if !needs {
                    s.needs_base_since_ms = None;
                }
                s.needs_base = needs;
            });
            let c = self.control.lock().unwrap_or_else(|p| p.into_inner());
            if !c.stop && !c.pause {
                let _ = self.changed.wait_timeout(c, settings.poll);
            }
        }
    }

    /// A database-only snapshot that starts the generation's recoverable window; the
    /// next time to try when it could not be taken.
    fn take_base(&self, streamer: &mut Streamer, paths: &Paths) -> Instant {
        let keep_going = || {
            let c = self.control.lock().unwrap_or_else(|p| p.into_inner());
            !(c.stop || c.pause)
        };
        match atocore_restore_job::wal::follow::take_base(streamer, paths, &keep_going) {
            Ok(Some(_)) => Instant::now(),
            Ok(None) => Instant::now() + Duration::from_secs(60),
            Err(e) => {
                tracing::warn!(cause = %e, "base snapshot for the WAL generation failed; retrying in 10 s");
                Instant::now() + Duration::from_secs(10)
            }
        }
    }
}

/// Resumes the stream when dropped (an orchestrated restore holds one).
pub struct PauseGuard(pub Arc<WalStream>);

impl Drop for PauseGuard {
    fn drop(&mut self) {
        self.0.resume();
    }
}

/// The stream's settings on the command line and in the environment.
#[derive(Debug, Clone, clap::Args)]
pub struct WalArgs {
    /// Stream atocore's WAL into `<backup_dir>/wal/` for point-in-time restores
    /// (`restore --at`). 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "ATOCORE_WAL_STREAM",
        global = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_name = "BOOL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub wal_stream: bool,
    /// How often the WAL is looked at: the capture granularity.
    #[arg(long, env = "ATOCORE_WAL_POLL", default_value = "250ms", value_parser = atocore_restore_job::config::parse_duration_ms, global = true)]
    pub wal_poll: Duration,
    /// Copy, checkpoint and re-pin once the WAL holds this many frames (bounds its size).
    #[arg(
        long,
        env = "ATOCORE_WAL_CHECKPOINT_FRAMES",
        default_value_t = 1000,
        global = true
    )]
    pub wal_checkpoint_frames: u64,
    /// How often the captured WAL is pushed to the off-site target (when one is set).
    #[arg(long, env = "ATOCORE_OFFSITE_WAL_INTERVAL", default_value = "10s", value_parser = atocore_restore_job::config::parse_duration_secs, global = true)]
    pub offsite_wal_interval: Duration,
    /// `/health` says `degraded` when the capture lags the database by more than this.
    #[arg(long, env = "ATOCORE_WAL_MAX_LAG", default_value = "60s", value_parser = atocore_restore_job::config::parse_duration_secs, global = true)]
    pub wal_max_lag: Duration,
}

impl WalArgs {
    /// The settings when streaming is on.
    pub fn settings(&self) -> Option<WalSettings> {
        self.wal_stream.then(|| WalSettings {
            poll: self.wal_poll,
            checkpoint_frames: self.wal_checkpoint_frames.max(1),
            max_lag: self.wal_max_lag,
            offsite_every: self.offsite_wal_interval.max(Duration::from_secs(1)),
        })
    }
}
