//! The SQLite side: an online backup that a busy writer cannot livelock, the
//! validation queries, and the "is it still open elsewhere" probe.
//!
//! The backup pins a read snapshot on the source connection (`BEGIN` + one read) before
//! stepping, so commits made meanwhile stay out of view and `sqlite3_backup_step` never
//! restarts (docs/design.md §2: a plain step-wise backup never finishes under a steady writer).
//! The copy is therefore exactly the database as of the moment the snapshot was pinned,
//! including everything committed before it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};
use crate::layout::with_suffix;
use crate::metadata::SnapshotWal;

/// Pages copied per backup step; cancellation and the deadline are checked between steps.
const PAGES_PER_STEP: i32 = 16384;

/// What a database copy produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub page_count: u64,
    /// Where the copy stands in the live WAL (copies by [`copy_at_pin`] only).
    pub wal: Option<SnapshotWal>,
}

/// A connection to a live database that never checkpoints or deletes its WAL when it
/// closes (the snapshot copy and the WAL streamer hold such connections beside atocore's).
pub(crate) fn open_live(db: &Path, busy: Duration) -> Result<Connection> {
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(Error::sqlite("open", db))?;
    c.busy_timeout(busy)
        .map_err(Error::sqlite("set busy timeout on", db))?;
    c.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .map_err(Error::sqlite("configure", db))?;
    Ok(c)
}

/// Begin a read transaction on `c` and read once, so its snapshot is fixed now.
pub(crate) fn pin_read(c: &Connection, db: &Path) -> Result<()> {
    c.execute_batch("BEGIN DEFERRED; SELECT 1 FROM sqlite_schema LIMIT 1;")
        .map_err(Error::sqlite("pin a read transaction on", db))
}

/// The database's journal mode, as SQLite names it (`wal`, `delete`, ...).
pub(crate) fn journal_mode(c: &Connection, db: &Path) -> Result<String> {
    c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(Error::sqlite("read the journal mode of", db))
}

/// Copy the live database at `src` into `dst` at kernel speed, as of one commit:
///
/// 1. take the write lock for a moment (`BEGIN IMMEDIATE` on a second connection), pin
///    a read transaction, and copy the WAL's committed frames (all of them: no writer
///    can be mid-transaction) beside the copy as its `-wal`; let writers go;
/// 2. copy the database file with the kernel (`copy_file_range`). A checkpoint may
///    write frames up to the pin into it meanwhile, but never past the pin, and never
///    restart the WAL under a reader that uses it;
/// 3. end the pin, open the copy: SQLite recovers its `-wal` and a checkpoint puts every
///    frame into the file, so pages caught mid-checkpoint are rewritten with their
///    committed content. The checkpoint must count exactly the frames copied.
///
/// A database not in WAL mode is copied under its shared lock (writers wait, as they
/// would for any reader).
pub fn copy_at_pin(
    src: &Path,
    dst: &Path,
    timeout: Duration,
    keep_going: &dyn Fn() -> bool,
) -> Result<BackupOutcome> {
    if !src.exists() {
        return Err(Error::MissingDatabase(src.to_path_buf()));
    }
    let busy = timeout.min(Duration::from_secs(30));
    let source = open_live(src, busy)?;
    let mode = journal_mode(&source, src)?;
    let wal_mode = mode.eq_ignore_ascii_case("wal");
    let gate = open_live(src, busy)?;
    if wal_mode {
        match gate.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {}
            // A writer held the lock for the whole busy timeout: the page-by-page backup
            // needs no write lock at all (the snapshot then records no WAL position).
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                tracing::warn!(path = %src.display(), "the write lock stayed taken; copying through SQLite's backup API instead");
                drop((gate, source));
                return online_backup(src, dst, timeout, keep_going);
            }
            Err(e) => return Err(Error::sqlite("take the write lock on", src)(e)),
        }
    }
    pin_read(&source, src)?;
    let pinned = chrono::Utc::now();
    // Under the write lock: the WAL ends at the pinned snapshot.
    let copied = if wal_mode {
        let r = copy_committed_frames(src, dst);
        gate.execute_batch("ROLLBACK")
            .map_err(Error::sqlite("release the write lock on", src))?;
        match r {
            // The WAL file and the wal-index disagree: take nothing from the file;
            // SQLite's own backup reads only what its read snapshot counts.
            Err(e @ Error::WalChainBroken { .. }) => {
                tracing::warn!(path = %src.display(), cause = %e, "the WAL does not match its wal-index; copying through SQLite's backup API instead");
                drop((gate, source));
                crate::durable::remove_file_if_exists(&with_suffix(dst, "-wal"))?;
                return online_backup(src, dst, timeout, keep_going);
            }
            r => r?,
        }
    } else {
        (None, None)
    };
    drop(gate);
    let (position, wal) = copied;
    if !keep_going() {
        return Err(Error::Cancelled("the backup"));
    }
    copy_without_closing(src, dst)?;
    source
        .execute_batch("COMMIT;")
        .map_err(Error::sqlite("end the read snapshot on", src))?;
    drop(source);
    if let Some(w) = wal {
        w.checkpoint()?;
    }
    let page_count: i64 = open_immutable(dst)?
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(Error::sqlite("count pages of", dst))?;
    Ok(BackupOutcome {
        page_count: page_count.max(0) as u64,
        wal: Some(SnapshotWal {
            method: "copy".into(),
            position,
            pinned_at: pinned.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            pinned_ms: pinned.timestamp_millis(),
        }),
    })
}

/// Copy the live database file `src` into a new `dst` without ever closing a
/// descriptor of `src`.
///
/// Why not `std::fs::copy`: POSIX record locks belong to the process, and closing *any*
/// descriptor of a file drops every lock the process holds on it. SQLite's connections
/// in this process (the streamer's) keep a SHARED lock on the database file, which is
/// how another process's closing connection learns it is not the last one; once that
/// lock is gone, atocore closing its connection takes an EXCLUSIVE lock, checkpoints
/// every frame whatever the readers' marks, and deletes the WAL under the streamer's
/// pin (the generation ends `wal_removed` at every clean atocore restart). So the copy
/// reads through a descriptor opened once per database file and kept for the life of
/// the process ([`held_open`]), at explicit offsets (`copy_file_range`, or `pread`
/// where the kernel cannot copy across the two files).
fn copy_without_closing(src: &Path, dst: &Path) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = std::fs::metadata(src).map_err(Error::io("stat", src))?;
    let held = held_open(src)?;
    let fd = held.as_raw_fd();
    let out = File::create(dst).map_err(Error::io("create", dst))?;
    let mut off: libc::loff_t = 0;
    let mut kernel = true;
    loop {
        let n = if kernel {
            // SAFETY: valid descriptors; `off` is a valid offset pointer (the shared
            // descriptor's own file position is neither used nor moved).
            let n = unsafe {
                libc::copy_file_range(
                    fd,
                    &mut off,
                    out.as_raw_fd(),
                    std::ptr::null_mut(),
                    1 << 30,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                        kernel = false;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ => return Err(Error::io("copy", src)(e)),
                }
            }
            n
        } else {
            let mut buf = vec![0u8; 1 << 20];
            // SAFETY: pread into a buffer of the length given.
            let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::io("read", src)(e));
            }
            std::io::Write::write_all(&mut &out, &buf[..n as usize])
                .map_err(Error::io("write", dst))?;
            off += n as libc::loff_t;
            n
        };
        if n == 0 {
            break;
        }
    }
    out.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))
        .map_err(Error::io("set the mode of", dst))?;
    Ok(())
}

/// A read-only descriptor of the file at `path`, opened the first time this process
/// asks for that file and not closed while it is the file at `path` (see
/// [`copy_without_closing`]). Once `path` names another file (a restore replaced the
/// database), the old descriptor is closed: the locks it would drop belong to a file
/// nobody uses any more, and its disk space is freed.
fn held_open(path: &Path) -> Result<Arc<File>> {
    use std::os::unix::fs::MetadataExt;
    static OPEN: OnceLock<Mutex<Vec<Held>>> = OnceLock::new();
    let mut held = OPEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let m = std::fs::metadata(path).map_err(Error::io("stat", path))?;
    let id = (m.dev(), m.ino());
    held.retain(|h| h.path != path || h.id == id);
    if let Some(h) = held.iter().find(|h| h.path == path) {
        return Ok(Arc::clone(&h.file));
    }
    let f = File::open(path).map_err(Error::io("open", path))?;
    let fm = f.metadata().map_err(Error::io("stat", path))?;
    let file = Arc::new(f);
    // Kept even when the file was replaced in between: closing it now could drop the
    // locks of a connection to it. The next call closes it if it is not current.
    held.push(Held {
        path: path.to_path_buf(),
        id: (fm.dev(), fm.ino()),
        file: Arc::clone(&file),
    });
    Ok(file)
}

/// One descriptor kept by [`held_open`].
struct Held {
    path: PathBuf,
    id: (u64, u64),
    file: Arc<File>,
}

/// The live wal-index header of the database at `db` (see
/// [`WalIndex`](atocore_wal::format::WalIndex)): `None` when there is no `-shm` or no
/// consistent header could be read (a writer kept updating it, or SQLite must rebuild
/// it); callers then take nothing as committed.
///
/// Read through a descriptor kept open ([`held_open`]): closing a descriptor of the
/// `-shm` would drop every POSIX lock this process's SQLite connections hold on it,
/// the streamer's read mark among them.
pub(crate) fn wal_index(db: &Path) -> Result<Option<atocore_wal::format::WalIndex>> {
    use atocore_wal::format::{WAL_INDEX_READ_LEN, WalIndex};
    use std::os::unix::fs::FileExt;
    let shm = with_suffix(db, "-shm");
    if !shm.exists() {
        return Ok(None);
    }
    let f = held_open(&shm)?;
    let mut buf = [0u8; WAL_INDEX_READ_LEN];
    for attempt in 0..100 {
        match f.read_exact_at(&mut buf, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::io("read", &shm)(e)),
        }
        if let Some(index) = WalIndex::parse(&buf) {
            return Ok(Some(index));
        }
        if attempt > 10 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    tracing::debug!(path = %shm.display(), "no consistent wal-index header");
    Ok(None)
}

/// Copy the committed frames of the live WAL beside `dst` as its `-wal`: the position
/// after them, and the writer to checkpoint once the database file is copied (none when
/// there is no frame).
fn copy_committed_frames(
    src: &Path,
    dst: &Path,
) -> Result<(
    Option<atocore_wal::WalPosition>,
    Option<atocore_wal::replay::WalWriter>,
)> {
    use atocore_wal::format::{WalFile, start_of};
    use atocore_wal::replay::WalWriter;
    let Some(w) = WalFile::open(&with_suffix(src, "-wal"))? else {
        return Ok((None, None));
    };
    let Some(h) = w.header() else {
        return Ok((None, None));
    };
    // Under the write lock the wal-index is settled: its end is the last commit.
    let index = match wal_index(src)? {
        Some(i) if i.describes(&h) => i,
        // A restart whose header is written but not yet counted: nothing of this
        // epoch is committed, and every earlier frame is in the database file.
        Some(i) if i.mx_frame == 0 || i.backfilled == i.mx_frame => return Ok((None, None)),
        _ => {
            return Err(Error::WalChainBroken {
                what: with_suffix(src, "-wal").display().to_string(),
                why: "no consistent wal-index header describes the WAL's epoch".into(),
            });
        }
    };
    let mut out: Option<WalWriter> = None;
    let end = w
        .committed_into(&h, start_of(&h), &index, &mut |f| {
            if out.is_none() {
                out = Some(WalWriter::create(dst, &h)?);
            }
            out.as_mut().expect("created above").push(&f.bytes)
        })
        .map_err(|u| match u {
            atocore_wal::format::Unsettled::Sink(e) => e.into(),
            other => Error::WalChainBroken {
                what: with_suffix(src, "-wal").display().to_string(),
                why: other.to_string(),
            },
        })?;
    Ok((Some(end), out))
}

/// Copy the live database at `src` into a new file `dst` with the online backup API.
///
/// `keep_going` is asked between steps; when it says no the backup stops with
/// [`Error::Cancelled`]. The destination is not fsynced here (the caller hashes and
/// syncs it).
pub fn online_backup(
    src: &Path,
    dst: &Path,
    timeout: Duration,
    keep_going: &dyn Fn() -> bool,
) -> Result<BackupOutcome> {
    if !src.exists() {
        return Err(Error::MissingDatabase(src.to_path_buf()));
    }
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(Error::sqlite("open", src))?;
    source
        .busy_timeout(Duration::from_secs(10))
        .map_err(Error::sqlite("set busy timeout on", src))?;
    // Read the source through a memory map: no read(2) per page. Tunable via env for
    // the benchmark (bytes; 0 turns it off).
    let mmap: i64 = std::env::var("ATOCORE_BACKUP_MMAP_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    source
        .pragma_update(None, "mmap_size", mmap)
        .map_err(Error::sqlite("configure", src))?;
    // Pin a read snapshot: commits after this point are invisible to the backup.
    pin_read(&source, src)?;

    let mut dest = Connection::open(dst).map_err(Error::sqlite("create", dst))?;
    // The destination is a fresh file in a hidden folder: a crash discards it whole,
    // so it needs no journal and no syncs of its own (the caller fsyncs the result).
    let cache_kib: i64 = std::env::var("ATOCORE_BACKUP_CACHE_KIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    dest.execute_batch(&format!(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA locking_mode=EXCLUSIVE; PRAGMA cache_size=-{cache_kib};"
    ))
        .map_err(Error::sqlite("prepare", dst))?;

    let started = Instant::now();
    let page_count;
    {
        let backup =
            Backup::new(&source, &mut dest).map_err(Error::sqlite("start the backup of", src))?;
        loop {
            if !keep_going() {
                return Err(Error::Cancelled("the backup"));
            }
            if started.elapsed() > timeout {
                return Err(Error::BackupTimeout {
                    path: src.to_path_buf(),
                    secs: timeout.as_secs(),
                });
            }
            match backup
                .step(PAGES_PER_STEP)
                .map_err(Error::sqlite("copy pages of", src))?
            {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        page_count = backup.progress().pagecount.max(0) as u64;
    }
    drop(dest);
    source
        .execute_batch("COMMIT;")
        .map_err(Error::sqlite("end the read snapshot on", src))?;
    // The pinned snapshot kept checkpoints from passing it; let the WAL shrink back
    // without blocking the writer.
    if let Err(e) = source.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::debug!(cause = %e, "passive checkpoint after backup failed");
    }
    Ok(BackupOutcome {
        page_count,
        wal: None,
    })
}

/// Open a snapshot's database read-only and immutable: no `-wal`/`-shm` is created
/// next to it and nothing is written, so a hard-linked or published file stays as is.
pub fn open_immutable(path: &Path) -> Result<Connection> {
    let uri = format!("file:{}?immutable=1", uri_escape(path));
    Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(Error::sqlite("open read-only", path))
}

fn uri_escape(path: &Path) -> String {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Facts about a database used by validation.
#[derive(Debug, Clone, Default)]
pub struct DbFacts {
    pub page_count: u64,
    pub tables: usize,
    pub row_counts: BTreeMap<String, u64>,
}

/// Page count, number of tables and rows per table.
pub fn facts(conn: &Connection, path: &Path) -> Result<DbFacts> {
    let page_count: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(Error::sqlite("count pages of", path))?;
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .map_err(Error::sqlite("read the schema of", path))?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(Error::sqlite("read the schema of", path))?;
    let mut row_counts = BTreeMap::new();
    for name in &names {
        let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
        // A virtual table whose module is missing cannot be counted: leave it out.
        if let Ok(n) = conn.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
            row_counts.insert(name.clone(), n.max(0) as u64);
        }
    }
    Ok(DbFacts {
        page_count: page_count.max(0) as u64,
        tables: names.len(),
        row_counts,
    })
}

/// `PRAGMA integrity_check`: the problems found (empty when the answer is `ok`).
pub fn integrity_problems(conn: &Connection, path: &Path) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(Error::sqlite("check", path))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(Error::sqlite("check", path))?;
    Ok(rows.into_iter().filter(|r| r != "ok").collect())
}

/// Run the whole check on a database file: integrity, and the facts to compare.
/// Any SQLite error (not a database, malformed header) counts as a failed check.
pub fn check_file(path: &Path) -> (Vec<String>, Option<DbFacts>) {
    let run = || -> Result<(Vec<String>, DbFacts)> {
        let conn = open_immutable(path)?;
        let problems = integrity_problems(&conn, path)?;
        let facts = facts(&conn, path)?;
        Ok((problems, facts))
    };
    match run() {
        Ok((p, f)) => (p, Some(f)),
        Err(e) => (vec![e.to_string()], None),
    }
}

/// The files SQLite keeps beside a database: its `-wal`, `-shm` and `-journal`.
pub fn wal_shm_and_journal(db: &Path) -> [PathBuf; 3] {
    ["-wal", "-shm", "-journal"].map(|suffix| with_suffix(db, suffix))
}

/// A database file followed by its `-wal`, `-shm` and `-journal` (all four paths,
/// present or not).
pub(crate) fn with_companions(db: &Path) -> impl Iterator<Item = PathBuf> {
    std::iter::once(db.to_path_buf()).chain(wal_shm_and_journal(db))
}

// SQLite's unix VFS lock layout (os_unix.c): a connection to a WAL database holds a
// shared lock on the "DMS" byte of the -shm file for as long as it is open; rollback-mode
// readers and writers lock bytes from PENDING_BYTE in the database file itself.
const SHM_DMS_BYTE: i64 = 128;
const PENDING_BYTE: i64 = 0x4000_0000;
const DB_LOCK_SPAN: i64 = 512;

// The wal-index locks (SQLite's WAL format, section 2.3): byte 120 of `-shm` is the
// write lock, byte 121 the checkpoint lock, both taken exclusively.
const SHM_WRITE_LOCK: i64 = 120;
const SHM_CKPT_LOCK: i64 = 121;

/// Whether another process runs a blocking checkpoint (FULL, RESTART or TRUNCATE) of
/// the database at `db`: it holds both the WAL's write lock and its checkpoint lock,
/// which only such a checkpoint does (a writer holds the first alone, a PASSIVE
/// checkpoint the second alone). Such a checkpoint waits for every reader behind it.
pub(crate) fn checkpointer_waiting(db: &Path) -> Result<bool> {
    let shm = with_suffix(db, "-shm");
    if !shm.exists() {
        return Ok(false);
    }
    let f = held_open(&shm)?;
    Ok(exclusively_held(&f, &shm, SHM_WRITE_LOCK)? && exclusively_held(&f, &shm, SHM_CKPT_LOCK)?)
}

/// Whether another process holds a write (exclusive) lock on byte `at` of `f`. Asked
/// with F_GETLK on a descriptor kept open: nothing is locked, nothing is closed.
fn exclusively_held(f: &File, path: &Path, at: i64) -> Result<bool> {
    // SAFETY: an all-zero flock is a valid value; fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_RDLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = at as libc::off_t;
    fl.l_len = 1;
    // SAFETY: F_GETLK with a valid descriptor and a valid flock pointer.
    let rc = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if rc != 0 {
        return Err(Error::io("probe locks on", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fl.l_type == libc::F_WRLCK as libc::c_short)
}

/// Whether another process has the database open, as far as its POSIX locks tell.
pub fn open_elsewhere(db: &Path) -> Result<bool> {
    let [_, shm, _] = wal_shm_and_journal(db);
    Ok(lock_held(&shm, SHM_DMS_BYTE, 1)? || lock_held(db, PENDING_BYTE, DB_LOCK_SPAN)?)
}

fn lock_held(path: &Path, start: i64, len: i64) -> Result<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("open", path)(e)),
    };
    // SAFETY: an all-zero flock is a valid value; fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    // SAFETY: F_GETLK with a valid descriptor and a valid flock pointer.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if rc != 0 {
        return Err(Error::io("probe locks on", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
