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

fn warnings(r: &crate::util::Run) -> Vec<String> {
    r.json["point_in_time_warnings"]
        .as_array()
        .map(|w| w.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Two generations with a gap between them (the streamer stopped, the WAL truncated,
/// the streamer started again). A moment in the gap and one after the capture's end
/// are restored with a warning naming why; then one emptied segment in the older
/// generation leaves it out of `list` and of the plan, and a moment in the newer one
/// is restored exactly, with a warning.
#[test]
fn restore_at_names_gaps_and_skips_a_damaged_generation() {
    let i = Install::with_rows(20);
    let c = hold_wal(&i);
    let mut log = std::collections::BTreeMap::new();
    let s = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    commit_range(&c, 1, 100, Duration::from_millis(2), &mut log);
    std::thread::sleep(Duration::from_millis(500));
    s.stop();
    let first_end = now_ms();
    commit_range(&c, 101, 120, Duration::from_millis(2), &mut log);
    let row: (i64, i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(
        row.0, 0,
        "the WAL could not be truncated with the streamer stopped"
    );
    std::thread::sleep(Duration::from_millis(2500));
    commit_range(&c, 121, 130, Duration::from_millis(2), &mut log);
    let s = Streamer::start(&i);
    let until = Instant::now() + Duration::from_secs(30);
    while pitr::windows(&i).len() < 2 {
        assert!(Instant::now() < until, "no second window");
        std::thread::sleep(Duration::from_millis(200));
    }
    commit_range(&c, 131, 200, Duration::from_millis(2), &mut log);
    std::thread::sleep(Duration::from_millis(600));
    s.stop();
    drop(c);
    let gens: Vec<String> = pitr::windows(&i).into_iter().map(|w| w.0).collect();
    assert_eq!(gens.len(), 2, "{gens:?}");

    // In the gap: the first generation's end, and a warning naming the next one.
    let r = pitr::restore_at(&i, first_end + 1500);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let w = warnings(&r);
    assert!(
        w.iter().any(|w| w.starts_with("wal_gap: ")
            && w.contains(&gens[1])
            && w.contains("(new_chain)")),
        "no warning names the gap: {w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("chroma_not_restored: the base snapshot ")),
        "a database-only base restored without a chroma warning: {w:?}"
    );
    assert_eq!(live_ticks(&i, "restore in the gap").k, 100);

    // Past the end of the capture.
    std::thread::sleep(Duration::from_millis(1500));
    let r = pitr::restore_at(&i, now_ms());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.starts_with("at_after_capture_end: the capture reaches only ")),
        "{:?}",
        warnings(&r)
    );
    assert_eq!(live_ticks(&i, "restore past the capture").k, 200);

    // One emptied segment in the older generation.
    let segs: Vec<_> = pitr::segments(&i)
        .into_iter()
        .filter(|(g, _, _)| *g == gens[0])
        .collect();
    std::fs::write(&segs[segs.len() / 2].1, b"").unwrap();
    let listed: Vec<String> = pitr::windows(&i).into_iter().map(|w| w.0).collect();
    assert_eq!(
        listed,
        vec![gens[1].clone()],
        "list still shows the damaged generation"
    );
    let r = pitr::restore_at(&i, now_ms() - 1800);
    assert_eq!(
        r.code, 0,
        "a damaged old generation blocked the restore: {}\n{}",
        r.stdout, r.stderr
    );
    assert!(
        warnings(&r)
            .iter()
            .any(|w| w.starts_with(&format!("generation_skipped: {}: ", gens[0]))),
        "{:?}",
        warnings(&r)
    );
    assert_eq!(live_ticks(&i, "restore beside a damaged generation").k, 200);
}

/// A C shim for `LD_PRELOAD` that sets CLOCK_REALTIME back 60 s for as long as the
/// file named by `ATOCORE_CLOCK_SHIM_FILE` exists (CLOCK_MONOTONIC and CLOCK_BOOTTIME
/// are left alone, as an NTP step or an operator's `date -s` leaves them). Built with
/// the system's C compiler; `None` (and a skip outside CI) when there is none.
fn clock_shim(dir: &Path) -> Option<std::path::PathBuf> {
    let src = dir.join("clockshim.c");
    let so = dir.join("clockshim.so");
    std::fs::write(
        &src,
        r#"#define _GNU_SOURCE
#include <time.h>
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>
static int (*real_clock_gettime)(clockid_t, struct timespec *);
int clock_gettime(clockid_t id, struct timespec *ts) {
    if (!real_clock_gettime) real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int r = real_clock_gettime(id, ts);
    const char *f = getenv("ATOCORE_CLOCK_SHIM_FILE");
    if (r == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE) && f && access(f, F_OK) == 0)
        ts->tv_sec -= 60;
    return r;
}
"#,
    )
    .unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-ldl")
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but cc cannot build the clock shim"
        );
        eprintln!("skipped: no C compiler for the clock shim");
        return None;
    }
    Some(so)
}

/// The streamer's clock steps back 60 s during capture. A restore to a moment before
/// the step, and to one after it, never holds a transaction begun after the moment
/// (real time, from the writer's own clock), and says the clock stepped.
#[test]
fn a_clock_step_never_lets_restore_at_include_later_transactions() {
    let i = Install::with_rows(20);
    let Some(shim) = clock_shim(i.dir.path()) else {
        return;
    };
    let trigger = i.dir.path().join("clock-is-back");
    let c = hold_wal(&i);
    let s = Streamer::start_env(
        &i,
        &["--poll", "100ms"],
        &[
            ("LD_PRELOAD", shim.to_str().unwrap()),
            ("ATOCORE_CLOCK_SHIM_FILE", trigger.to_str().unwrap()),
        ],
    );
    wait_for_window(&i, Duration::from_secs(20));
    let mut log = std::collections::BTreeMap::new();
    let start = now_ms();
    commit_range(&c, 1, 300, Duration::from_millis(10), &mut log);
    let step = now_ms();
    std::fs::write(&trigger, b"").unwrap();
    commit_range(&c, 301, 900, Duration::from_millis(10), &mut log);
    std::thread::sleep(Duration::from_millis(500));
    s.stop();
    drop(c);
    let after_step = step + (now_ms() - step) / 2;
    for (what, at) in [
        ("before the step", start + (step - start) / 2),
        ("after the step", after_step),
    ] {
        let r = pitr::restore_at(&i, at);
        assert_eq!(r.code, 0, "{what}: {}\n{}", r.stdout, r.stderr);
        let t = live_ticks(&i, what);
        let begun_after: Vec<i64> = (1..=t.k)
            .filter(|n| {
                let c = atocore_restore_job::open_immutable(&i.paths.db).unwrap();
                let t_ms: i64 = c
                    .query_row("SELECT t_ms FROM ticks WHERE n = ?1", [n], |r| r.get(0))
                    .unwrap();
                t_ms > at
            })
            .take(3)
            .collect();
        eprintln!("  {what}: k = {} warnings {:?}", t.k, warnings(&r));
        assert!(
            begun_after.is_empty(),
            "restore --at {what} holds rows begun after the moment, e.g. {begun_after:?} (k = {}): {}",
            t.k,
            r.stdout
        );
        if what == "after the step" {
            assert!(
                warnings(&r).iter().any(|w| w.starts_with("clock_step: ")),
                "{what}: no warning of the clock step: {:?}",
                warnings(&r)
            );
        }
    }
}
