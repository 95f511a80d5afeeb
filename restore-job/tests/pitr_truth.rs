//! Point-in-time truth under faults: what SQLite never committed is never captured,
//! restored or copied into a snapshot, whatever the WAL file holds. The faults are real:
//! a Python `sqlite3` writer killed by `strace` inside its COMMIT's `fdatasync`, the
//! application's own checkpoints, a clock that steps.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::pitr::{
    self, Streamer, commit_range, hold_wal, live_ticks, now_ms, python_sqlite, wait_for_window,
};
use crate::util::Install;

/// Whether the fault tools are here: `python3` with `sqlite3`, and `strace`. Under CI
/// they must be (`.ci/run` installs them).
pub(crate) fn fault_tools() -> bool {
    let strace = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if strace && python_sqlite() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but strace or python3 with sqlite3 is missing"
    );
    eprintln!("skipped: strace or python3 with sqlite3 is not available");
    false
}

/// A Python `sqlite3` writer (`synchronous=FULL`) that runs `sql` as one transaction
/// and is killed with SIGKILL by `strace` at its first `fdatasync`: inside COMMIT,
/// after the commit frame reached the `-wal` file and before the wal-index (`-shm`)
/// counts it. Asserts it was indeed killed.
pub(crate) fn commit_killed_in_fdatasync(db: &Path, sql: &str) {
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
        c.execute('PRAGMA synchronous=FULL')\n\
        c.execute('BEGIN IMMEDIATE')\n\
        c.execute(sys.argv[2])\n\
        c.execute('COMMIT')\n\
        print('committed')\n";
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:signal=KILL:when=1",
            "python3",
            "-c",
            script,
        ])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && !stdout.contains("committed"),
        "the writer was not killed inside COMMIT: {} {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn balance(c: &Connection) -> i64 {
    c.query_row("SELECT balance FROM acct WHERE id = 1", [], |r| r.get(0))
        .unwrap()
}

fn wal_len(i: &Install) -> u64 {
    std::fs::metadata(i.paths.db.with_file_name("atocore.db-wal")).map_or(0, |m| m.len())
}

/// A writer killed inside COMMIT leaves checksum-valid frames past the end SQLite
/// counts; the next writer overwrites them. The streamer, a snapshot taken meanwhile
/// and a restore to a later moment hold the committed balance (100), never the dead
/// one (999999), and the streamer goes on capturing every later commit.
#[test]
fn a_commit_killed_inside_fdatasync_is_never_captured() {
    if !fault_tools() {
        return;
    }
    let i = Install::with_rows(20);
    let c = hold_wal(&i);
    c.execute_batch(
        "CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         INSERT INTO acct VALUES (1, 100);",
    )
    .unwrap();
    let s = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    let mut log = std::collections::BTreeMap::new();
    commit_range(&c, 1, 50, Duration::from_millis(2), &mut log);
    std::thread::sleep(Duration::from_millis(300));

    let before = wal_len(&i);
    commit_killed_in_fdatasync(&i.paths.db, "UPDATE acct SET balance = 999999");
    assert!(
        wal_len(&i) > before,
        "the killed COMMIT left no frame in the WAL: the fault did not happen"
    );
    assert_eq!(balance(&c), 100, "SQLite counts the killed transaction");
    // Several looks of the streamer while the dead frames are the WAL's last ones.
    std::thread::sleep(Duration::from_millis(500));
    let meta = i.backup(&[]);
    let stamp = meta["stamp"].as_str().unwrap();
    let snap =
        atocore_restore_job::open_immutable(&i.snapshot_dir(stamp).join("db/atocore.db")).unwrap();
    assert_eq!(
        balance(&snap),
        100,
        "snapshot {stamp} holds a transaction SQLite never committed"
    );
    drop(snap);

    // The next writer overwrites the dead frames; the streamer keeps capturing.
    let t0 = Instant::now();
    commit_range(&c, 51, 300, Duration::from_millis(2), &mut log);
    c.execute("UPDATE acct SET balance = 150 WHERE id = 1", [])
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let summary = s.stop();
    eprintln!("summary: {summary} ({:?} of writes)", t0.elapsed());
    drop(c);

    let r = pitr::restore_at(&i, now_ms());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let t = live_ticks(&i, "restore --at now after a killed COMMIT");
    let restored = Connection::open(&i.paths.db).unwrap();
    assert_eq!(
        (balance(&restored), t.k),
        (150, 300),
        "restore --at now: every commit after the killed one must be there, the killed one never: {}",
        r.stdout
    );
}

/// Run `sql` on `c` and return how long it took; it must succeed.
fn timed(c: &Connection, sql: &str) -> (Duration, Vec<i64>) {
    let t = Instant::now();
    let row: Vec<i64> = if sql.contains("wal_checkpoint") {
        c.query_row(sql, [], |r| Ok(vec![r.get(0)?, r.get(1)?, r.get(2)?]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    } else {
        c.query_row(sql, [], |_| Ok(Vec::new()))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    (t.elapsed(), row)
}

/// With the streamer running (default poll), the application's own FULL, RESTART and
/// TRUNCATE checkpoints complete within a second and checkpoint everything, a writer
/// waiting behind one waits less than a second, and every commit stays restorable.
#[test]
fn the_applications_own_checkpoints_are_never_stalled_by_the_streamer() {
    let i = Install::with_rows(20);
    let c = hold_wal(&i);
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let s = Streamer::start_with(&i, &[]);
    wait_for_window(&i, Duration::from_secs(20));
    let mut log = std::collections::BTreeMap::new();
    let mut n = 1;
    for mode in ["FULL", "RESTART", "TRUNCATE", "FULL", "TRUNCATE", "RESTART"] {
        commit_range(&c, n, n + 99, Duration::from_millis(1), &mut log);
        n += 100;
        // A second writer that wants the lock while the checkpoint holds it.
        let db = i.paths.db.clone();
        let waiter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let w = Connection::open(&db).unwrap();
            w.busy_timeout(Duration::from_secs(10)).unwrap();
            let t = Instant::now();
            w.execute(
                "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', 'waiter', 'test', 1.0, 'now')",
                [],
            )
            .unwrap();
            t.elapsed()
        });
        let (took, row) = timed(&c, &format!("PRAGMA wal_checkpoint({mode})"));
        let waited = waiter.join().unwrap();
        eprintln!(
            "  checkpoint({mode}) {took:?} -> {row:?}; the writer behind it waited {waited:?}"
        );
        assert_eq!(row[0], 0, "checkpoint({mode}) returned busy: {row:?}");
        assert_eq!(row[1], row[2], "checkpoint({mode}) left frames: {row:?}");
        assert!(
            took < Duration::from_secs(1),
            "checkpoint({mode}) took {took:?}"
        );
        assert!(
            waited < Duration::from_secs(1),
            "a writer waited {waited:?} behind checkpoint({mode})"
        );
    }
    commit_range(&c, n, n + 99, Duration::from_millis(1), &mut log);
    n += 100;
    commit_range(&c, n, n + 99, Duration::from_millis(1), &mut log);
    std::thread::sleep(Duration::from_millis(800));
    let summary = s.stop();
    eprintln!("summary: {summary}");
    let stream_log = std::fs::read_to_string(i.dir.path().join("stream.log")).unwrap();
    for l in stream_log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("chain"))
    {
        eprintln!("  stream: {l}");
    }
    drop(c);
    assert_eq!(
        summary["generations_started"].as_array().unwrap().len(),
        1,
        "a checkpoint ended the generation: every frame it moved was to be captured first"
    );
    let r = pitr::restore_at(&i, now_ms());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let t = live_ticks(&i, "restore --at now after the application's checkpoints");
    assert_eq!(t.k, n + 99, "restore --at now: {}", r.stdout);
}
