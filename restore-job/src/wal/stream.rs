//! The streamer: follows the live database's WAL and copies every committed frame into
//! segments of the current generation.
//!
//! How it keeps the chain whole (docs/pitr.md has the long form):
//! - It holds a read transaction on the live database at all times (`pin`). SQLite
//!   restarts a WAL only when every frame was checkpointed *and* no reader uses the WAL,
//!   and a reader that began on a fully checkpointed WAL blocks every checkpoint from
//!   writing into the database; either way, while the pin is held, the frames not yet
//!   copied cannot disappear.
//! - The pin is released only while the streamer holds the write lock
//!   (`BEGIN IMMEDIATE`): no writer can add frames, the streamer copies the WAL to its
//!   end and pins again. A sync ([`Live::sync`]) does that twice: first it only moves
//!   the pin to the end, then checkpoints up to it while writers run, then, under the
//!   lock again, copies and checkpoints the few frames added meanwhile and pins afresh,
//!   so the WAL can restart and stays small while writers wait only for milliseconds.
//! - Hence a restart (new salts) is legitimate only if nothing was copied since the last
//!   sync: every frame of the old epoch was copied there. Any other change of the WAL
//!   (new salts later, a WAL truncated under copied frames, another database file)
//!   ends the generation; the next step starts a new one. A chain is never bridged on
//!   a guess.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use rusqlite::Connection;

use crate::config::Paths;
use crate::db::{journal_mode, open_live, pin_read};
use crate::error::{Error, Result};
use crate::layout::with_suffix;

use super::format::{Frame, Unsettled, WalFile, WalHeader, WalPosition, start_of};
use super::generation::{self, Record};
use super::segment;

/// How the streamer behaves.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Sync (copy under the write lock, checkpoint, re-pin) once the WAL holds this
    /// many frames; SQLite's own default autocheckpoint is 1000.
    pub checkpoint_frames: u64,
    /// How long a sync waits for the write lock before trying again at a later step.
    pub lock_wait: Duration,
    /// Give the generation up (releasing the pin, so atocore's own checkpoints can run)
    /// when this many frames are waiting and cannot be written (e.g. a full disk).
    pub max_pending_frames: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            checkpoint_frames: 1000,
            lock_wait: Duration::from_millis(500),
            max_pending_frames: 20_000,
        }
    }
}

/// Why a generation ended (written in logs and step reports as the snake_case name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// A restore waits for the database: the streamer let go of it.
    RestorePending,
    /// Segments could not be written for too long (a full disk).
    CaptureFailed,
    /// The database file is another one (a restore replaced it).
    DatabaseReplaced,
    /// The `-wal` was removed, or replaced by another file, from outside.
    WalRemoved,
    WalReplaced,
    /// The WAL was truncated or restarted before every frame of it was captured.
    WalTruncatedUncaptured,
    WalRestartedUncaptured,
    /// The WAL restarted while the streamer had let go of its read transaction for an
    /// application's checkpoint, with frames committed meanwhile.
    WalRestartedUnpinned,
    /// Frames copied are past the committed end the wal-index gives, or no longer in
    /// the WAL: they were never (or are no longer) SQLite's committed frames.
    CapturedFramesNotCommitted,
    CapturedFramesOverwritten,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::RestorePending => "restore_pending",
            End::CaptureFailed => "capture_failed",
            End::DatabaseReplaced => "database_replaced",
            End::WalRemoved => "wal_removed",
            End::WalReplaced => "wal_replaced",
            End::WalTruncatedUncaptured => "wal_truncated_uncaptured",
            End::WalRestartedUncaptured => "wal_restarted_uncaptured",
            End::WalRestartedUnpinned => "wal_restarted_unpinned",
            End::CapturedFramesNotCommitted => "captured_frames_not_committed",
            End::CapturedFramesOverwritten => "captured_frames_overwritten",
        }
    }
}

/// Why a generation started (`generation.json`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// No generation existed.
    FirstStart,
    /// The previous generation cannot be continued.
    NewChain,
    /// The newest generation's end is still in the WAL: it goes on.
    Resumed,
}

impl Start {
    pub fn as_str(self) -> &'static str {
        match self {
            Start::FirstStart => "first_start",
            Start::NewChain => "new_chain",
            Start::Resumed => "resumed",
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    /// A generation that started in this step, and why.
    pub started: Option<(String, Start)>,
    /// A generation that ended in this step, and why.
    pub ended: Option<(String, End)>,
    pub frames: u64,
    pub commits: u64,
    /// Bytes of segment files written.
    pub bytes: u64,
    pub synced: bool,
}

/// Follows one database. Call [`Streamer::step`] about every second (or more often).
pub struct Streamer {
    paths: Paths,
    opts: StreamOptions,
    live: Option<Live>,
    caught_up_ms: Option<i64>,
}

struct Live {
    id: String,
    dir: PathBuf,
    read: Connection,
    gate: Connection,
    dev: u64,
    ino: u64,
    epoch: Option<WalHeader>,
    pos: Option<WalPosition>,
    /// The frame the last sync left the epoch at; `None` once a restart was seen since.
    sync_frame: Option<u64>,
    seq: u64,
    /// A snapshot usable as this generation's base has been taken.
    has_base: bool,
    /// The WAL file's inode once the pin made SQLite create it.
    wal_ino: Option<u64>,
    record: Record,
    /// A sync ran after the one that began the generation.
    synced_since_begin: bool,
    /// The committed end of the current epoch the wal-index gave at the last look.
    committed_frame: Option<u64>,
    /// The salts of the epoch the current one follows, when it began in this generation.
    follows: Option<(u32, u32)>,
}

impl Streamer {
    pub fn new(paths: &Paths, opts: StreamOptions) -> Streamer {
        Streamer {
            paths: paths.clone(),
            opts,
            live: None,
            caught_up_ms: None,
        }
    }

    /// When the streamer last had every committed frame copied (Unix ms): the
    /// replication lag is the time since then whenever the WAL holds more.
    pub fn caught_up_ms(&self) -> Option<i64> {
        self.caught_up_ms
    }

    /// Committed frames of the live WAL not captured yet, as of the last look: the
    /// wal-index's committed end minus the captured position, in the same WAL epoch
    /// (`None` before a first look, or while the epoch is changing).
    pub fn lag_frames(&self) -> Option<u64> {
        let l = self.live.as_ref()?;
        let committed = l.committed_frame?;
        Some(committed.saturating_sub(l.pos.map_or(0, |p| p.frame)))
    }

    /// The generation being written, if any.
    pub fn generation(&self) -> Option<&str> {
        self.live.as_ref().map(|l| l.id.as_str())
    }

    /// Whether the current generation still needs a base snapshot.
    pub fn needs_base(&self) -> bool {
        self.live.as_ref().is_some_and(|l| !l.has_base)
    }

    /// A snapshot was taken while this generation ran: whether it is a base for it.
    /// One with a WAL position is found by that position; one without (the WAL was
    /// empty when it was pinned) is the generation's start only when no frame existed
    /// and no checkpoint ran since the generation began, and is then recorded as such.
    pub fn base_taken(
        &mut self,
        stamp: &str,
        wal: Option<&crate::metadata::SnapshotWal>,
    ) -> Result<bool> {
        let Some(l) = self.live.as_mut() else {
            return Ok(false);
        };
        let Some(w) = wal else { return Ok(false) };
        if w.position.is_some() {
            l.has_base = true;
        } else if l.record.start.is_none() && l.epoch.is_none() && !l.synced_since_begin {
            l.record.base = Some(stamp.to_string());
            crate::durable::write_json_atomic(&l.dir.join(generation::RECORD_FILE), &l.record)?;
            l.has_base = true;
        }
        Ok(l.has_base)
    }

    /// Let go of the database (before a restore replaces it, or at shutdown). The next
    /// step starts a new generation.
    pub fn release(&mut self) -> Option<String> {
        self.live.take().map(|l| l.id)
    }

    /// Copy what was committed since the last step; start a generation first when
    /// there is none. An error leaves the generation as it was when the frames can
    /// still be copied later, and ends it otherwise.
    pub fn step(&mut self) -> Result<StepReport> {
        let mut report = StepReport::default();
        if self.live.is_none() {
            if !self.paths.db.is_file() {
                return Ok(report);
            }
            let (live, reason) = Live::begin(&self.paths, &mut report)?;
            report.started = Some((live.id.clone(), reason));
            self.live = Some(live);
            self.caught_up_ms = Some(Utc::now().timestamp_millis());
            return Ok(report);
        }
        let live = self.live.as_mut().expect("checked above");
        // The application runs a checkpoint that waits for every reader: copy what it
        // is about to checkpoint and move out of its way (see Live::yield_to_checkpoint).
        if crate::db::checkpointer_waiting(&self.paths.db)? {
            if let Err(Gap(reason)) = live.yield_to_checkpoint(&self.opts, &mut report) {
                let id = self.live.take().map(|l| l.id).unwrap_or_default();
                tracing::warn!(generation = %id, reason = reason.as_str(), "the WAL chain cannot be continued; a new generation starts");
                report.ended = Some((id, reason));
            } else {
                self.caught_up_ms = Some(Utc::now().timestamp_millis());
            }
            return Ok(report);
        }
        let outcome = live.poll(&self.opts, &mut report).and_then(|polled| {
            if polled.complete {
                self.caught_up_ms = Some(Utc::now().timestamp_millis());
            }
            if polled.complete && polled.frames >= self.opts.checkpoint_frames {
                live.sync(&self.opts, &mut report)
            } else {
                Ok(())
            }
        });
        match outcome {
            Ok(()) => Ok(report),
            Err(Gap(reason)) => {
                let id = self.live.take().map(|l| l.id).unwrap_or_default();
                tracing::warn!(generation = %id, reason = reason.as_str(), "the WAL chain cannot be continued; a new generation starts");
                report.ended = Some((id, reason));
                Ok(report)
            }
        }
    }
}

/// What a look at the WAL found.
struct Polled {
    /// Frames the current epoch holds up to the copied position.
    frames: u64,
    /// Every committed frame in the WAL is copied.
    complete: bool,
}

/// Why a generation cannot go on.
struct Gap(End);

/// What a copy of the committed frames found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Copied {
    /// Every frame the wal-index counts as committed is copied.
    All,
    /// The committed end could not be read consistently now; try at the next look.
    Unsettled,
    /// Frames already copied are no longer the WAL's committed ones: the chain is lost.
    Lost(End),
}

impl Copied {
    fn why(&self) -> &'static str {
        match self {
            Copied::All => "copied",
            Copied::Unsettled => "the wal-index is not settled",
            Copied::Lost(reason) => reason.as_str(),
        }
    }
}

impl From<atocore_wal::Error> for Gap {
    fn from(e: atocore_wal::Error) -> Gap {
        Gap::from(Error::from(e))
    }
}

impl From<Error> for Gap {
    fn from(e: Error) -> Gap {
        tracing::warn!(cause = %e, "WAL capture failed");
        Gap(End::CaptureFailed)
    }
}

impl Live {
    /// Start (or, when the newest generation's end is still in the WAL, continue) a
    /// generation: under the write lock, copy the WAL's committed frames, checkpoint,
    /// pin.
    fn begin(paths: &Paths, report: &mut StepReport) -> Result<(Live, Start)> {
        let db = &paths.db;
        let m = std::fs::metadata(db).map_err(Error::io("stat", db))?;
        // Closing them must not checkpoint or delete the WAL behind the streamer's back.
        let read = open_live(db, Duration::from_secs(5))?;
        let gate = open_live(db, Duration::from_secs(5))?;
        let mode = journal_mode(&read, db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Usage(format!(
                "{} is in journal mode `{mode}`, not WAL: there is no WAL to stream; turn ATOCORE_WAL_STREAM off or switch the database to WAL",
                db.display()
            )));
        }
        gate.execute_batch("BEGIN IMMEDIATE")
            .map_err(Error::sqlite("take the write lock on", db))?;
        let wal = WalFile::open(&with_suffix(db, "-wal"))?;
        let header = wal.as_ref().and_then(|w| w.header());
        let resumed = header.and_then(|h| resumable(paths, &h, m.dev(), m.ino()));
        let (record, dir, seq, pos, reason) = match resumed {
            Some((g, seq, end)) => (g.record, g.dir, seq, Some(end), Start::Resumed),
            None => {
                let now = Utc::now();
                let id = generation::new_id(paths, now);
                let reason = if generation::list(paths)?.is_empty() {
                    Start::FirstStart
                } else {
                    Start::NewChain
                };
                let record = Record {
                    id: id.clone(),
                    started_at: now.to_rfc3339_opts(SecondsFormat::Millis, true),
                    reason: reason.as_str().to_string(),
                    db_dev: m.dev(),
                    db_ino: m.ino(),
                    start: header.as_ref().map(start_of),
                    base: None,
                };
                let dir = generation::create(paths, &record)?;
                (record, dir, 0, header.as_ref().map(start_of), reason)
            }
        };
        let mut live = Live {
            id: record.id.clone(),
            record,
            synced_since_begin: false,
            dir,
            read,
            gate,
            dev: m.dev(),
            ino: m.ino(),
            epoch: header,
            pos,
            sync_frame: None,
            seq,
            has_base: false,
            wal_ino: None,
            committed_frame: None,
            follows: None,
        };
        match live.copy_new(wal.as_ref(), report)? {
            Copied::All => {}
            other => {
                return Err(Error::WalChainBroken {
                    what: with_suffix(db, "-wal").display().to_string(),
                    why: format!(
                        "its committed frames cannot be copied under the write lock ({})",
                        other.why()
                    ),
                });
            }
        }
        live.checkpoint_and_pin(report)?;
        live.gate
            .execute_batch("ROLLBACK")
            .map_err(Error::sqlite("release the write lock on", db))?;
        live.wal_ino = WalFile::open(&with_suffix(db, "-wal"))?.map(|w| w.ino());
        tracing::info!(generation = %live.id, reason = reason.as_str(), "WAL streaming started");
        Ok((live, reason))
    }

    /// Copy the frames committed after `pos` of the current epoch into a segment: up
    /// to the end the wal-index gives, checked against its checksum there. Frames past
    /// that end (a writer killed inside COMMIT leaves checksum-valid ones that SQLite
    /// never counts) are never read.
    fn copy_new(&mut self, wal: Option<&WalFile>, report: &mut StepReport) -> Result<Copied> {
        let (Some(w), Some(h), Some(pos)) = (wal, self.epoch, self.pos) else {
            return Ok(Copied::All);
        };
        // What was copied must still be the WAL's: the frame at the position, with the
        // checksum recorded when it was copied.
        if pos.frame > 0
            && w.read_frame(&h, pos.frame)
                .is_none_or(|f| f.checksum() != (pos.checksum[0], pos.checksum[1]))
        {
            return Ok(Copied::Lost(End::CapturedFramesOverwritten));
        }
        let db = self.read.path().map(PathBuf::from).unwrap_or_default();
        let Some(index) = crate::db::wal_index(&db)? else {
            return Ok(Copied::Unsettled);
        };
        if index.describes(&h) {
            self.committed_frame = Some(index.mx_frame);
        }
        let scan = match w.committed_after(&h, pos, &index) {
            Ok(scan) => scan,
            Err(Unsettled::PastCommittedEnd) => {
                return Ok(Copied::Lost(End::CapturedFramesNotCommitted));
            }
            Err(Unsettled::Sink(e)) => return Err(e.into()),
            Err(u) => {
                tracing::debug!(why = %u, "the WAL's committed end is not settled; copying at the next look");
                return Ok(Copied::Unsettled);
            }
        };
        if !scan.frames.is_empty() {
            self.write_segment(&h, &scan.frames, scan.end, report)?;
        }
        Ok(Copied::All)
    }

    fn write_segment(
        &mut self,
        h: &WalHeader,
        frames: &[Frame],
        end: WalPosition,
        report: &mut StepReport,
    ) -> Result<()> {
        let follows = frames.first().filter(|f| f.index == 1).and(self.follows);
        let at = segment::Place {
            dir: &self.dir,
            generation: &self.id,
            seq: self.seq,
        };
        let (_, sh) = segment::write(at, h, frames, end, follows, segment::Captured::now())?;
        self.seq += 1;
        self.pos = Some(end);
        report.frames += frames.len() as u64;
        report.commits += sh.commits;
        report.bytes += sh.frame_bytes;
        Ok(())
    }

    /// Inside the write lock: drop the pin, checkpoint what can be, pin again.
    fn checkpoint_and_pin(&mut self, report: &mut StepReport) -> Result<()> {
        self.repin(report, true)
    }

    /// Inside the write lock: drop the pin, checkpoint when asked, pin again.
    fn repin(&mut self, report: &mut StepReport, checkpoint: bool) -> Result<()> {
        let db = self.read.path().map(PathBuf::from).unwrap_or_default();
        if !self.read.is_autocommit() {
            self.read
                .execute_batch("COMMIT")
                .map_err(Error::sqlite("release the read transaction on", &db))?;
        }
        if checkpoint {
            self.read
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(Error::sqlite("checkpoint", &db))?;
        }
        pin_read(&self.read, &db)?;
        self.sync_frame = Some(self.pos.map_or(0, |p| p.frame));
        report.synced = true;
        Ok(())
    }

    /// One look at the WAL: copy what was committed since the last look.
    fn poll(&mut self, opts: &StreamOptions, report: &mut StepReport) -> Result<Polled, Gap> {
        let db = self.read.path().map(PathBuf::from).unwrap_or_default();
        match std::fs::metadata(&db) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {}
            _ => return Err(Gap(End::DatabaseReplaced)),
        }
        // SQLite deletes a WAL only when its last connection closes, and the streamer
        // holds two: a WAL that is gone or another file was removed from outside.
        let wal = WalFile::open(&with_suffix(&db, "-wal"))?;
        match (&wal, self.wal_ino) {
            (None, _) => return Err(Gap(End::WalRemoved)),
            (Some(w), Some(ino)) if w.ino() != ino => return Err(Gap(End::WalReplaced)),
            _ => {}
        }
        let header = wal.as_ref().and_then(|w| w.header());
        let at_sync = self
            .sync_frame
            .is_some_and(|s| s == self.pos.map_or(0, |p| p.frame));
        let idle = Polled {
            frames: 0,
            complete: true,
        };
        match (header, self.epoch) {
            (None, None) => return Ok(idle),
            (None, Some(_)) if at_sync => return Ok(idle),
            (None, Some(_)) => return Err(Gap(End::WalTruncatedUncaptured)),
            (Some(h), Some(e)) if h == e => {}
            (Some(h), None) if at_sync => self.new_epoch(h),
            // Every frame of the old epoch was copied and the pin allows at most one
            // restart before the next look (see the module doc): this is the next epoch.
            // Its salts are not always the old salt-1 plus one: a connection that never
            // restarted the WAL itself draws new random salts when it finds it empty.
            (Some(h), Some(e)) if at_sync => {
                self.follows = Some(e.salts());
                self.new_epoch(h)
            }
            (Some(_), _) => return Err(Gap(End::WalRestartedUncaptured)),
        }
        let pending_before = self.pos.map_or(0, |p| p.frame);
        let copied = match self.copy_new(wal.as_ref(), report) {
            Ok(c) => c,
            Err(e) => {
                // The pin keeps the frames; try again next step unless too many wait.
                let waiting = wal.as_ref().map_or(0, |w| w.frames_after(pending_before));
                if waiting >= opts.max_pending_frames {
                    return Err(Gap::from(e));
                }
                tracing::warn!(cause = %e, waiting, "could not write a WAL segment; retrying");
                return Ok(Polled {
                    frames: self.pos.map_or(0, |p| p.frame),
                    complete: false,
                });
            }
        };
        if let Copied::Lost(reason) = copied {
            return Err(Gap(reason));
        }
        Ok(Polled {
            frames: self.pos.map_or(0, |p| p.frame),
            complete: copied == Copied::All,
        })
    }

    fn new_epoch(&mut self, h: WalHeader) {
        self.committed_frame = None;
        self.epoch = Some(h);
        self.pos = Some(start_of(&h));
        self.sync_frame = None;
    }

    /// Another connection runs a FULL, RESTART or TRUNCATE checkpoint: it holds the
    /// write lock (nothing new can commit) and waits for every reader, the pin among
    /// them. Copy every committed frame, release the pin, wait (at most a second) until
    /// the checkpoint has written every frame into the database, and pin again: the new
    /// read transaction then reads the database file alone, which lets RESTART and
    /// TRUNCATE restart the WAL, and every frame of the old epoch was copied. Anything
    /// committed while the pin was released is accepted only when it is still in the
    /// WAL; otherwise the generation ends (the next one starts with a new base).
    fn yield_to_checkpoint(
        &mut self,
        opts: &StreamOptions,
        report: &mut StepReport,
    ) -> Result<(), Gap> {
        let polled = self.poll(opts, report)?;
        if !polled.complete {
            return Ok(());
        }
        let db = self.read.path().map(PathBuf::from).unwrap_or_default();
        if !self.read.is_autocommit() {
            self.read
                .execute_batch("COMMIT")
                .map_err(Error::sqlite("release the read transaction on", &db))?;
        }
        let until = std::time::Instant::now() + Duration::from_secs(1);
        loop {
            let backfilled = crate::db::wal_index(&db)?.is_some_and(|i| i.backfilled >= i.mx_frame);
            if backfilled
                || !crate::db::checkpointer_waiting(&db)?
                || std::time::Instant::now() >= until
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        pin_read(&self.read, &db)?;
        let pos = self.pos.map_or(0, |p| p.frame);
        let index = crate::db::wal_index(&db)?;
        let settled = match (index, self.epoch) {
            // Nothing committed since the copy: the checkpointer still held the lock.
            (Some(i), Some(e)) if i.describes(&e) => {
                if i.mx_frame < pos {
                    return Err(Gap(End::CapturedFramesNotCommitted));
                }
                i.mx_frame == pos
            }
            // TRUNCATE restarted the WAL (new salts, nothing in it yet).
            (Some(i), Some(e)) => {
                let salt1 = u32::from_be_bytes([
                    i.salts_raw[0],
                    i.salts_raw[1],
                    i.salts_raw[2],
                    i.salts_raw[3],
                ]);
                if i.mx_frame != 0 || salt1 != e.salts().0.wrapping_add(1) {
                    return Err(Gap(End::WalRestartedUnpinned));
                }
                true
            }
            (Some(i), None) => i.mx_frame == 0,
            (None, _) => false,
        };
        if settled {
            self.sync_frame = Some(pos);
            report.synced = true;
        }
        tracing::debug!(
            settled,
            pos,
            "moved the pin out of the way of the application's checkpoint"
        );
        Ok(())
    }

    /// Copy to the end under the write lock, checkpoint, re-pin (see the module doc).
    fn sync(&mut self, opts: &StreamOptions, report: &mut StepReport) -> Result<(), Gap> {
        // A: under the write lock, copy to the end and move the pin there (no I/O to
        // speak of while writers wait).
        if !self.under_write_lock(opts, report, false)? {
            return Ok(());
        }
        // B: while writers run, checkpoint everything up to the pin: every frame there
        // is copied, and the pin keeps the WAL from restarting.
        let db = self.read.path().map(PathBuf::from).unwrap_or_default();
        self.gate
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(|e| Gap::from(Error::sqlite("checkpoint", &db)(e)))?;
        // C: under the write lock again, copy the few frames added during B, checkpoint
        // them and pin afresh; when nothing is left unchecked, the next writer may
        // restart the WAL (and every frame of it has been copied).
        self.under_write_lock(opts, report, true)?;
        Ok(())
    }

    /// Take the write lock (or give up after `lock_wait`: `false`), copy to the end,
    /// release and re-take the pin (checkpointing in between with `checkpoint`), and
    /// let writers go. Nothing is checkpointed unless every committed frame was copied.
    fn under_write_lock(
        &mut self,
        opts: &StreamOptions,
        report: &mut StepReport,
        checkpoint: bool,
    ) -> Result<bool, Gap> {
        let db = self.read.path().map(PathBuf::from).unwrap_or_default();
        self.gate
            .busy_timeout(opts.lock_wait)
            .map_err(Error::sqlite("set busy timeout on", &db))?;
        match self.gate.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                tracing::debug!("WAL sync postponed: atocore holds the write lock");
                return Ok(false);
            }
            Err(e) => return Err(Error::sqlite("take the write lock on", &db)(e).into()),
        }
        let result = self.poll(opts, report).and_then(|polled| {
            if polled.complete {
                self.repin(report, checkpoint)?;
                if checkpoint {
                    self.synced_since_begin = true;
                }
            }
            Ok(polled.complete)
        });
        let released = self.gate.execute_batch("ROLLBACK");
        let done = result?;
        released.map_err(|e| Gap::from(Error::sqlite("release the write lock on", &db)(e)))?;
        Ok(done)
    }
}

/// The newest generation, its next sequence number and its end, when the live WAL still
/// continues it: same database file, same epoch, and the last captured frame still in
/// place with the checksum recorded.
fn resumable(
    paths: &Paths,
    h: &WalHeader,
    dev: u64,
    ino: u64,
) -> Option<(generation::Generation, u64, WalPosition)> {
    let g = generation::list(paths).ok()?.pop()?;
    if g.record.db_dev != dev || g.record.db_ino != ino {
        return None;
    }
    let last = g.segments.last()?;
    let sh = segment::read_header(&last.path).ok()?;
    if sh.wal_header != *h {
        return None;
    }
    let w = WalFile::open(&with_suffix(&paths.db, "-wal")).ok()??;
    let frame = w.read_frame(h, sh.end.frame)?;
    if frame.checksum() != (sh.end.checksum[0], sh.end.checksum[1]) {
        return None;
    }
    // And counted by SQLite: a frame past the wal-index's end was never committed.
    let index = crate::db::wal_index(&paths.db).ok()??;
    if !index.describes(h) || index.mx_frame < sh.end.frame {
        return None;
    }
    Some((g, sh.seq + 1, sh.end))
}
