//! Continuous WAL capture in the sidecar (`ATOCORE_WAL_STREAM`), without Docker: the
//! real server in-process streams a sample install's database while a writer commits;
//! its status, metrics and health report it, and what it captured restores a moment
//! exactly through the engine's own `restore --at`. The orchestrated restore to a
//! moment, with containers, is in `orchestration.rs`.

use std::time::Duration;

use chrono::Utc;
use rusqlite::Connection;
use serde_json::Value;

use crate::util::{Sidecar, wait_until};

/// Commit `n` rows into `ticks`, each with the time it was committed (ms).
fn commit_rows(db: &std::path::Path, from: i64, n: i64) -> Vec<(i64, i64)> {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS ticks(n INTEGER PRIMARY KEY, t_ms INTEGER)")
        .unwrap();
    (from..from + n)
        .map(|i| {
            c.execute(
                "INSERT INTO ticks VALUES (?1, ?2)",
                rusqlite::params![i, Utc::now().timestamp_millis()],
            )
            .unwrap();
            let done = Utc::now().timestamp_millis();
            std::thread::sleep(Duration::from_millis(20));
            (i, done)
        })
        .collect()
}

fn wal_status(sc: &Sidecar) -> Value {
    let r = sc.get("/admin/wal");
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Wait until the stream writes a generation that has its base snapshot.
fn wait_for_a_base(sc: &Sidecar) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            let v = wal_status(sc);
            v["stream"]["generation"].is_string() && v["stream"]["needs_base"] == false
        }),
        "no generation with a base: {}",
        wal_status(sc)
    );
}

#[test]
fn the_sidecar_streams_the_wal_and_what_it_captured_restores_a_moment_exactly() {
    let sc = Sidecar::start_with(|s| {
        s.flag("--wal-stream")
            .set("--wal-poll", "100ms")
            .set("--wal-checkpoint-frames", "50");
    });
    wait_for_a_base(&sc);
    let first = commit_rows(&sc.paths.db, 1, 40);
    std::thread::sleep(Duration::from_millis(600));
    let at = Utc::now();
    std::thread::sleep(Duration::from_millis(600));
    let second = commit_rows(&sc.paths.db, 41, 40);
    assert!(
        wait_until(Duration::from_secs(10), || {
            wal_status(&sc)["stream"]["commits_captured"].as_u64() >= Some(81)
        }),
        "{}",
        wal_status(&sc)
    );
    let v = wal_status(&sc);
    let windows = v["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{v}");
    assert!(
        v["stream"]["lag_seconds"].as_f64().is_some_and(|l| l < 5.0),
        "{v}"
    );
    assert!(v["stream"]["bytes_captured"].as_u64().unwrap() > 0, "{v}");
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_wal_streaming 1\n"), "{m}");
    assert!(
        m.contains("atocore_wal_generations_started_total 1\n"),
        "{m}"
    );
    let h = sc.get("/health").json();
    assert!(h["wal"]["generation"].is_string(), "{h}");
    assert!(
        !h["reasons"].to_string().contains("WAL"),
        "a healthy stream degrades nothing: {h}"
    );
    let paths = sc.paths.clone();
    // As an orchestrated restore does: the stream lets go of the database.
    assert!(sc.state.wal.pause(Duration::from_secs(10)));
    assert_eq!(wal_status(&sc)["stream"]["paused"], true);

    // The engine restores the moment from what the sidecar captured.
    let meta = atocore_restore_job::wal::pitr::snapshot_at(&paths, at, None).unwrap();
    let pit = meta.point_in_time.clone().unwrap();
    assert_eq!(
        Some(pit.generation.unwrap()),
        windows[0]["generation"].as_str().map(String::from)
    );
    let r = atocore_restore_job::restore::restore(
        &paths,
        &atocore_restore_job::RestoreOptions {
            stamp: meta.stamp.clone(),
            confirmed_service_stopped: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(r.restored_integrity_ok, "{r:?}");
    let c = Connection::open(&paths.db).unwrap();
    let ns: Vec<i64> = c
        .prepare("SELECT n FROM ticks ORDER BY n")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<i64> = first.iter().map(|(n, _)| *n).collect();
    assert_eq!(ns, expected, "exactly the rows committed before {at}");
    assert!(second.iter().all(|(_, t)| *t > at.timestamp_millis()));
    // Resumed, the stream follows the restored database in a new generation.
    sc.state.wal.resume();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let v = wal_status(&sc);
            v["stream"]["generations_started"] == 2 && v["stream"]["generation"].is_string()
        }),
        "{}",
        wal_status(&sc)
    );
}

#[test]
fn a_sidecar_without_wal_streaming_captures_nothing() {
    let sc = Sidecar::start();
    commit_rows(&sc.paths.db, 1, 5);
    let v = wal_status(&sc);
    assert_eq!(v["stream"]["enabled"], false, "{v}");
    assert!(v["windows"].as_array().is_none_or(|w| w.is_empty()), "{v}");
    assert!(!sc.paths.backup_dir.join("wal").exists());
    assert!(
        !sc.get("/metrics")
            .body
            .contains("atocore_wal_frames_captured")
    );
}

#[test]
fn with_an_offsite_target_the_captured_wal_is_pushed_there_in_batches() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let sc = Sidecar::start_with(|s| {
        s.flag("--wal-stream")
            .set("--wal-poll", "100ms")
            .set("--offsite-wal-interval", "1s")
            .set("--offsite-url", &url)
            .set("--offsite-unencrypted", "true");
    });
    assert!(
        wait_until(Duration::from_secs(20), || {
            wal_status(&sc)["stream"]["needs_base"] == false
                && wal_status(&sc)["stream"]["generation"].is_string()
        }),
        "{}",
        wal_status(&sc)
    );
    commit_rows(&sc.paths.db, 1, 30);
    assert!(
        wait_until(Duration::from_secs(20), || {
            let v = wal_status(&sc);
            v["stream"]["offsite"]["segments_pushed"].as_u64() > Some(0)
                && v["stream"]["offsite"]["lag_seconds"]
                    .as_f64()
                    .is_some_and(|l| l < 5.0)
        }),
        "{}",
        wal_status(&sc)
    );
    let generation = wal_status(&sc)["stream"]["generation"]
        .as_str()
        .unwrap()
        .to_string();
    let batches: Vec<String> = std::fs::read_dir(remote.path().join("wal").join(&generation))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !batches.is_empty() && batches.iter().all(|b| b.ends_with(".batch")),
        "{batches:?}"
    );
    // A batch per push with something new: far fewer objects than segments.
    let v = wal_status(&sc);
    assert!(
        v["stream"]["offsite"]["objects_pushed"].as_u64().unwrap()
            <= v["stream"]["offsite"]["segments_pushed"].as_u64().unwrap(),
        "{v}"
    );
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_wal_offsite_lag_seconds "), "{m}");
}

/// A Python `sqlite3` writer killed by `strace` at the first `fdatasync` of its COMMIT
/// (after the commit frame reached the `-wal`, before the wal-index counts it).
/// `false` (and a skip outside CI) when strace or python3 is missing.
fn commit_killed_in_fdatasync(db: &std::path::Path, sql: &str) -> bool {
    let tools = std::process::Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
        && std::process::Command::new("python3")
            .args(["-c", "import sqlite3"])
            .status()
            .is_ok_and(|s| s.success());
    if !tools {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but strace or python3 with sqlite3 is missing"
        );
        eprintln!("skipped: strace or python3 with sqlite3 is not available");
        return false;
    }
    let out = std::process::Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"])
        .args(["-e", "inject=fdatasync:signal=KILL:when=1", "python3", "-c"])
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\n\
             c.execute('PRAGMA synchronous=FULL')\n\
             c.execute('BEGIN IMMEDIATE')\n\
             c.execute(sys.argv[2])\n\
             c.execute('COMMIT')\n\
             print('committed')\n",
        )
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("committed"),
        "the writer was not killed inside COMMIT: {}",
        out.status
    );
    true
}

/// After a transaction killed inside COMMIT, the sidecar's stream goes on capturing
/// every commit (before, it captured the dead frames, then nothing more, and said it
/// lagged 0.2 s). When capture really stalls (its generation folder made unwritable)
/// while the database moves on, `GET /admin/wal` counts the committed frames not
/// captured, the metric says so, and `/health` is degraded.
#[test]
fn a_killed_commit_never_stalls_the_capture_and_a_real_stall_degrades_health() {
    let sc = Sidecar::start_with(|s| {
        s.flag("--wal-stream")
            .set("--wal-poll", "100ms")
            .set("--wal-max-lag", "2s");
    });
    commit_rows(&sc.paths.db, 1, 5);
    wait_for_a_base(&sc);
    let c = Connection::open(&sc.paths.db).unwrap();
    c.execute_batch("CREATE TABLE acct (id INTEGER PRIMARY KEY, balance INTEGER); INSERT INTO acct VALUES (1, 100);")
        .unwrap();
    drop(c);
    std::thread::sleep(Duration::from_millis(400));
    if !commit_killed_in_fdatasync(&sc.paths.db, "UPDATE acct SET balance = 999999") {
        return;
    }
    std::thread::sleep(Duration::from_millis(400));
    let before = wal_status(&sc)["stream"]["commits_captured"]
        .as_u64()
        .unwrap();
    commit_rows(&sc.paths.db, 6, 60);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let v = wal_status(&sc);
            v["stream"]["commits_captured"].as_u64() >= Some(before + 60)
                && v["stream"]["lag_frames"] == 0
        }),
        "the capture stalled after a killed commit: {}",
        wal_status(&sc)
    );
    let h = sc.get("/health").json();
    assert!(!h["reasons"].to_string().contains("WAL"), "{h}");

    // A real stall: the generation's folder replaced by a file.
    let generation = wal_status(&sc)["stream"]["generation"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = sc.paths.backup_dir.join("wal").join(&generation);
    std::fs::rename(&dir, dir.with_extension("aside")).unwrap();
    std::fs::write(&dir, b"not a folder").unwrap();
    commit_rows(&sc.paths.db, 66, 30);
    assert!(
        wait_until(Duration::from_secs(15), || {
            sc.get("/health").json()["status"] == "degraded"
        }),
        "a stalled capture is reported ok: {}",
        sc.get("/health").body
    );
    let h = sc.get("/health").json();
    let v = wal_status(&sc);
    let lag_frames = v["stream"]["lag_frames"].as_u64().unwrap();
    assert!(lag_frames >= 30, "{v}");
    assert!(
        h["reasons"].to_string().contains(&format!(
            " and {lag_frames} committed frames (more than ATOCORE_WAL_MAX_LAG, 2 s)"
        )),
        "{h}"
    );
    let m = sc.get("/metrics").body;
    let metric = m
        .lines()
        .find(|l| l.starts_with("atocore_wal_lag_frames "))
        .unwrap_or_else(|| panic!("no atocore_wal_lag_frames: {m}"));
    assert!(
        metric.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 30,
        "{metric}"
    );
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(dir.with_extension("aside"), &dir).unwrap();
}
