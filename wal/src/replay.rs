//! Putting WAL frames into a private database copy through SQLite itself: the frames
//! are written as the copy's `-wal` (the epoch's own header, then frames from 1 on),
//! SQLite recovers it when the copy is opened and a checkpoint writes every frame into
//! the database file. The checkpoint's own count must equal the frames written: a
//! recovery that stopped early (a broken chain) is an error, never a silently shorter
//! database.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::beside as with_suffix;
use crate::error::{Error, Result, remove_file_if_exists};

use crate::format::{WalHeader, check_frame};

/// A `-wal` being written beside a private database copy.
pub struct WalWriter {
    db: PathBuf,
    wal: PathBuf,
    out: BufWriter<File>,
    header: WalHeader,
    running: (u32, u32),
    frames: u64,
}

impl WalWriter {
    /// Start `<db>-wal` with `header` (any earlier one is replaced).
    pub fn create(db: &Path, header: &WalHeader) -> Result<WalWriter> {
        let wal = with_suffix(db, "-wal");
        remove_file_if_exists(&with_suffix(db, "-shm"))?;
        let f = File::create(&wal).map_err(Error::io("create", &wal))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&header.raw)
            .map_err(Error::io("write", &wal))?;
        Ok(WalWriter {
            db: db.to_path_buf(),
            wal,
            out,
            header: *header,
            running: header.seed(),
            frames: 0,
        })
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Append the next frame (24-byte header + page); it must continue the chain.
    pub fn push(&mut self, frame: &[u8]) -> Result<()> {
        let Some(c) = check_frame(&self.header, self.running, frame) else {
            return Err(Error::Broken {
                what: self.db.display().to_string(),
                why: format!(
                    "frame {} does not continue the checksum chain of its WAL",
                    self.frames + 1
                ),
            });
        };
        self.running = c;
        self.frames += 1;
        self.out
            .write_all(frame)
            .map_err(Error::io("write", &self.wal))
    }

    /// Let SQLite recover the `-wal` and checkpoint every frame into the database; the
    /// checkpoint must report exactly the frames written. Leaves a single file.
    pub fn checkpoint(self) -> Result<()> {
        let WalWriter {
            db,
            wal,
            out,
            frames,
            ..
        } = self;
        out.into_inner()
            .map_err(|e| Error::io("write", &wal)(e.into_error()))?;
        let conn = Connection::open(&db).map_err(Error::sqlite("open", &db))?;
        let (busy, log, done): (i64, i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(Error::sqlite("checkpoint", &db))?;
        if busy != 0 || log != frames as i64 || done != frames as i64 {
            return Err(Error::Broken {
                what: db.display().to_string(),
                why: format!(
                    "SQLite recovered {log} of the {frames} frames written (checkpointed {done})"
                ),
            });
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(Error::sqlite("checkpoint", &db))?;
        drop(conn);
        for p in [with_suffix(&db, "-wal"), with_suffix(&db, "-shm")] {
            remove_file_if_exists(&p)?;
        }
        Ok(())
    }
}
