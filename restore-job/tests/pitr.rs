//! Point-in-time recovery end to end: the real `stream`, `backup`, `list`, `prune` and
//! `restore --at` on a live database that a separate writer keeps committing to.
//!
//! The writer's schema makes a torn or half-replayed state visible: every transaction
//! inserts the next `ticks.n` and bumps `totals` by it, so a database at any commit
//! boundary has `ticks` exactly `1..=k` and `totals == (k, k(k+1)/2)`. Each row holds
//! the wall-clock time just before its transaction began (`t_ms`), and the writer logs
//! `n t_before t_after` per row, so the test knows when every row became durable.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rusqlite::Connection;
use serde_json::Value;

use crate::util::{self, BIN, Install};

/// `<db>\t<log>[\t<pause_us>]`: set for the re-executed test binary acting as writer.
const WRITER_ENV: &str = "ATOCORE_PITR_WRITER";
/// When set, the writer child commits this many rows and exits cleanly.
const WRITER_ROWS_ENV: &str = "ATOCORE_PITR_WRITER_ROWS";

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn rfc3339(ms: i64) -> String {
    atocore_restore_job::wal::generation::ms_to_rfc3339(ms)
}

pub(crate) fn parse_ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("`{s}`: {e}"))
        .timestamp_millis()
}

// ---------------------------------------------------------------- the writer

pub(crate) fn create_ticks(c: &Connection) {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS ticks (n INTEGER PRIMARY KEY, t_ms INTEGER NOT NULL, pad BLOB);
         CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 1),
             cnt INTEGER NOT NULL, total INTEGER NOT NULL);
         INSERT OR IGNORE INTO totals VALUES (1, 0, 0);",
    )
    .unwrap();
}

pub(crate) fn open_writer(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch("PRAGMA wal_autocheckpoint=50;").unwrap();
    create_ticks(&c);
    c
}

/// Commit row `n` (and its share of `totals`) in one transaction; `(t_before, t_after)`.
pub(crate) fn commit_tick(c: &Connection, n: i64) -> (i64, i64) {
    let t0 = now_ms();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Incompressible, like real content: segments are zstd-compressed.
    let mut x = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let pad: Vec<u8> = (0..96)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    c.execute(
        "INSERT INTO ticks (n, t_ms, pad) VALUES (?1, ?2, ?3)",
        rusqlite::params![n, t0, pad],
    )
    .unwrap();
    c.execute(
        "UPDATE totals SET cnt = cnt + 1, total = total + ?1 WHERE id = 1",
        [n],
    )
    .unwrap();
    c.execute_batch("COMMIT").unwrap();
    (t0, now_ms())
}

/// The application's own checkpoints, cycling through every mode. They run with a
/// short busy timeout: FULL, RESTART and TRUNCATE wait for every reader to reach the
/// newest snapshot while holding the write lock, and the streamer's pin (and a
/// snapshot's) is such a reader; with the 10 s write timeout each of them would stall
/// the writer for 10 s. Busy results are expected and ignored.
fn app_checkpoint(c: &Connection, i: u64) {
    const MODES: [&str; 4] = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
    c.busy_timeout(Duration::from_millis(100)).unwrap();
    let mode = MODES[(i % 4) as usize];
    let _ = c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
    c.busy_timeout(Duration::from_secs(10)).unwrap();
}

pub(crate) fn max_tick(c: &Connection) -> i64 {
    c.query_row("SELECT coalesce(max(n), 0) FROM ticks", [], |r| r.get(0))
        .unwrap()
}

/// The writer child: the test binary re-executed with [`WRITER_ENV`] set. Without it
/// this returns at once (it is `#[ignore]`d besides).
#[test]
#[ignore = "the writer child process of pitr tests; does nothing on its own"]
fn writer_process() {
    let Ok(spec) = std::env::var(WRITER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('\t').collect();
    let db = Path::new(parts[0]);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(parts[1])
        .unwrap();
    let pause = Duration::from_micros(parts.get(2).map_or(1000, |p| p.parse().unwrap()));
    let rows: Option<u64> = std::env::var(WRITER_ROWS_ENV)
        .ok()
        .map(|r| r.parse().unwrap());
    let c = open_writer(db);
    let mut n = max_tick(&c) + 1;
    let mut done = 0u64;
    // With a row count: commit that many, then close the connection cleanly.
    while rows.is_none_or(|r| done < r) {
        let (t0, t1) = commit_tick(&c, n);
        // One write per line, so a kill -9 leaves at most a partial last line.
        log.write_all(format!("{n} {t0} {t1}\n").as_bytes())
            .unwrap();
        log.flush().unwrap();
        n += 1;
        done += 1;
        if done.is_multiple_of(25) {
            app_checkpoint(&c, done / 25);
        }
        std::thread::sleep(pause);
    }
}

fn spawn_writer(db: &Path, log: &Path) -> WriterChild {
    WriterChild(writer_command(db, log).spawn().unwrap())
}

fn writer_command(db: &Path, log: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "pitr::writer_process",
        "--ignored",
        "--nocapture",
    ])
    .env(WRITER_ENV, format!("{}\t{}", db.display(), log.display()))
    .env_remove(WRITER_ROWS_ENV)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// `n -> t_after` from the writer's log (a torn last line is skipped).
fn read_log(log: &Path) -> BTreeMap<i64, i64> {
    let mut out = BTreeMap::new();
    let Ok(f) = std::fs::File::open(log) else {
        return out;
    };
    for line in std::io::BufReader::new(f).lines() {
        let line = line.unwrap();
        let v: Vec<i64> = line.split(' ').filter_map(|x| x.parse().ok()).collect();
        if v.len() == 3 && line.ends_with(|c: char| c.is_ascii_digit()) {
            out.insert(v[0], v[2]);
        }
    }
    out
}

/// An in-process writer thread committing ticks as fast as it can until stopped.
struct WriterThread {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<i64>>,
}

impl WriterThread {
    fn start(db: &Path) -> WriterThread {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let db = db.to_path_buf();
        let handle = std::thread::spawn(move || {
            let c = open_writer(&db);
            let mut n = max_tick(&c) + 1;
            let mut done = 0u64;
            while !s.load(Ordering::Relaxed) {
                commit_tick(&c, n);
                n += 1;
                done += 1;
                if done.is_multiple_of(25) {
                    app_checkpoint(&c, done / 25);
                }
            }
            n - 1
        });
        WriterThread {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop; the last row committed.
    fn stop(mut self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

// ---------------------------------------------------------------- the streamer

/// A writer connection that has written (the ticks tables, one memory) and stays open,
/// so the live WAL holds frames when the streamer starts, as it does under a running
/// atocore. (On a WAL that is empty or absent, the streamer's base snapshot has no WAL
/// position and is retried only a minute later: no window before that.)
pub(crate) fn hold_wal(i: &Install) -> Connection {
    let c = open_writer(&i.paths.db);
    c.execute(
        "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', 'pitr', 'test', 1.0, 'now')",
        [],
    )
    .unwrap();
    c
}

/// The real `stream` command running in the background (killed if a test panics).
pub(crate) struct Streamer {
    child: Child,
}

impl Drop for Streamer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Streamer {
    pub(crate) fn start(i: &Install) -> Streamer {
        Streamer::start_with(i, &["--poll", "100ms", "--checkpoint-frames", "200"])
    }

    /// The `stream` command with these options.
    pub(crate) fn start_with(i: &Install, opts: &[&str]) -> Streamer {
        Streamer::start_env(i, opts, &[])
    }

    /// The `stream` command with these options and environment.
    pub(crate) fn start_env(i: &Install, opts: &[&str], env: &[(&str, &str)]) -> Streamer {
        let errlog = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(i.dir.path().join("stream.log"))
            .unwrap();
        let child = Command::new(BIN)
            .arg("--storage-root")
            .arg(i.root())
            .arg("stream")
            .args(opts)
            .env("ATOCORE_LOG_FORMAT", "text")
            .env_remove("ATOCORE_DB_PATH")
            .env_remove("ATOCORE_BACKUP_DIR")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(errlog)
            .spawn()
            .unwrap();
        Streamer { child }
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then its JSON summary.
    pub(crate) fn stop(mut self) -> Value {
        use std::io::Read;
        // SAFETY: kill with a pid we spawned and have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut stdout = Vec::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "stream exited with {status}");
        serde_json::from_slice(&stdout).unwrap_or_else(|e| {
            panic!(
                "stream summary is not JSON ({e}): {}",
                String::from_utf8_lossy(&stdout)
            )
        })
    }
}

/// A writer child process, killed if a test panics.
struct WriterChild(Child);

impl WriterChild {
    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for WriterChild {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Wait until `list` shows a recoverable window (the streamer's base snapshot is in).
pub(crate) fn wait_for_window(i: &Install, within: Duration) -> Value {
    let until = Instant::now() + within;
    loop {
        let r = i.run(&["list"]);
        if r.code == 0 && r.json["windows"].as_array().is_some_and(|w| !w.is_empty()) {
            return r.json["windows"].clone();
        }
        assert!(
            Instant::now() < until,
            "no window after {within:?}: {}",
            r.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn windows(i: &Install) -> Vec<(String, i64, i64)> {
    let r = i.run(&["list"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.json["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["generation"].as_str().unwrap().to_string(),
                parse_ms(w["from"].as_str().unwrap()),
                parse_ms(w["to"].as_str().unwrap()),
            )
        })
        .collect()
}

pub(crate) fn wal_dir(i: &Install) -> PathBuf {
    i.paths.backup_dir.join("wal")
}

/// Every segment: (generation, file, header), in generation and sequence order.
pub(crate) fn segments(i: &Install) -> Vec<(String, PathBuf, Value)> {
    let mut out = Vec::new();
    let Ok(gens) = std::fs::read_dir(wal_dir(i)) else {
        return out;
    };
    let mut gens: Vec<PathBuf> = gens.flatten().map(|e| e.path()).collect();
    gens.sort();
    for g in gens {
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&g)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segs.sort();
        for s in segs {
            let f = std::fs::File::open(&s).unwrap();
            let mut lines = std::io::BufReader::new(f).split(b'\n');
            let magic = lines.next().unwrap().unwrap();
            assert_eq!(magic, b"ATOCORE-WAL-SEGMENT 1");
            let h: Value = serde_json::from_slice(&lines.next().unwrap().unwrap()).unwrap();
            out.push((g.file_name().unwrap().to_string_lossy().into_owned(), s, h));
        }
    }
    out
}

// ---------------------------------------------------------------- checks

/// What the restored (or snapshot) database holds: `k`, after checking that it is
/// whole and at a commit boundary.
pub(crate) struct Ticks {
    pub(crate) k: i64,
    pub(crate) max_t_before: Option<i64>,
}

pub(crate) fn check_ticks(c: &Connection, what: &str) -> Ticks {
    let ic: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ic, "ok", "{what}: integrity_check");
    let (k, lo, hi, max_t): (i64, Option<i64>, Option<i64>, Option<i64>) = c
        .query_row(
            "SELECT count(*), min(n), max(n), max(t_ms) FROM ticks",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    if k > 0 {
        assert_eq!(
            (lo, hi),
            (Some(1), Some(k)),
            "{what}: ticks are not 1..={k}"
        );
    }
    let (cnt, total): (i64, i64) = c
        .query_row("SELECT cnt, total FROM totals WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((cnt, total), (k, k * (k + 1) / 2), "{what}: totals torn");
    Ticks {
        k,
        max_t_before: max_t,
    }
}

pub(crate) fn live_ticks(i: &Install, what: &str) -> Ticks {
    let c = atocore_restore_job::open_immutable(&i.paths.db).unwrap();
    check_ticks(&c, what)
}

pub(crate) fn restore_at(i: &Install, at_ms: i64) -> util::Run {
    i.run(&[
        "restore",
        "--at",
        &rfc3339(at_ms),
        "--confirm-service-stopped",
        "--no-pre-snapshot",
    ])
}

/// Restore to `at` and check the live database against the writer's log; returns
/// `(k, restored_to)`.
fn restore_and_check(
    i: &Install,
    at: i64,
    log: &BTreeMap<i64, i64>,
    in_window: bool,
) -> (i64, i64) {
    let r = restore_at(i, at);
    assert_eq!(
        r.code,
        0,
        "restore --at {}: {}\n{}",
        rfc3339(at),
        r.stdout,
        r.stderr
    );
    let pit = &r.json["point_in_time"];
    let restored_to = parse_ms(pit["restored_to"].as_str().unwrap());
    let what = format!(
        "restore --at {} (restored_to {})",
        rfc3339(at),
        rfc3339(restored_to)
    );
    assert!(
        restored_to <= at,
        "{what}: restored past the moment asked for"
    );
    let t = live_ticks(i, &what);
    if let Some(tb) = t.max_t_before {
        assert!(tb <= at, "{what}: holds a row begun at {} > T", rfc3339(tb));
    }
    let missing: Vec<i64> = log
        .iter()
        .filter(|(n, t_after)| **t_after <= restored_to - 200 && **n > t.k)
        .map(|(n, _)| *n)
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: rows committed well before restored_to are missing (k = {}): {missing:?}",
        t.k
    );
    if in_window {
        assert!(
            restored_to >= at - 1000,
            "{what}: more than the capture granularity (1 s) behind"
        );
    }
    eprintln!(
        "  at {} -> restored_to {} k={} segments={} frames={} warnings={}",
        rfc3339(at),
        rfc3339(restored_to),
        t.k,
        pit["segments_replayed"],
        pit["frames_replayed"],
        r.json["point_in_time_warnings"]
    );
    (t.k, restored_to)
}

fn sleep_until(start: Instant, at: Duration) {
    if let Some(d) = at.checked_sub(start.elapsed()) {
        std::thread::sleep(d);
    }
}

fn seed() -> u64 {
    std::env::var("ATOCORE_PITR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_ms() as u64)
}

// ---------------------------------------------------------------- 1. a minute of writes

/// A writer process and the streamer, both killed -9 and restarted on a schedule; then
/// 12 restores to random moments inside the listed windows are exact.
#[test]
fn minute_of_writes_random_moments() {
    let secs: u64 = std::env::var("ATOCORE_PITR_TEST_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let total = Duration::from_secs(secs);
    let i = Install::with_rows(50);
    let holder = hold_wal(&i);
    let log = i.dir.path().join("writer.log");

    let start = Instant::now();
    let mut streamer = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    let mut writer = spawn_writer(&i.paths.db, &log);

    sleep_until(start, total / 3);
    streamer.kill9();
    std::thread::sleep(Duration::from_secs(1));
    streamer = Streamer::start(&i);

    sleep_until(start, total / 2);
    writer.kill9();
    std::thread::sleep(Duration::from_millis(500));
    writer = spawn_writer(&i.paths.db, &log);

    sleep_until(start, total * 3 / 4);
    writer.kill9();
    streamer.kill9();
    std::thread::sleep(Duration::from_millis(500));
    streamer = Streamer::start(&i);
    writer = spawn_writer(&i.paths.db, &log);

    sleep_until(start, total);
    writer.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let summary = streamer.stop();
    eprintln!("last streamer: {summary}");
    assert_eq!(summary["errors"], 0, "{summary}");

    drop(holder);
    let log = read_log(&log);
    let live = live_ticks(&i, "live database after the run");
    eprintln!("rows committed: {} (logged {})", live.k, log.len());
    assert!(live.k >= 100, "the writer committed only {} rows", live.k);

    // The chain followed WAL restarts: one generation holds several epochs.
    let segs = segments(&i);
    let mut epochs: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (g, _, h) in &segs {
        epochs
            .entry(g.as_str())
            .or_default()
            .insert(h["wal_header"].to_string());
    }
    eprintln!(
        "{} segments; epochs per generation: {:?}",
        segs.len(),
        epochs.iter().map(|(g, e)| (g, e.len())).collect::<Vec<_>>()
    );
    assert!(
        epochs.values().any(|e| e.len() >= 2),
        "no generation crossed a WAL restart"
    );

    let wins = windows(&i);
    eprintln!("windows: {wins:?}");
    assert!(!wins.is_empty());
    let span: i64 = wins.iter().map(|(_, f, t)| t - f + 1).sum();
    let seed = seed();
    eprintln!("seed {seed} (ATOCORE_PITR_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..12 {
        let mut x = rng.random_range(0..span);
        let at = wins
            .iter()
            .find_map(|(_, f, t)| {
                if x <= t - f {
                    Some(f + x)
                } else {
                    x -= t - f + 1;
                    None
                }
            })
            .unwrap();
        restore_and_check(&i, at, &log, true);
    }
}

// ---------------------------------------------------------------- 2. snapshots by copy

/// 50 snapshots by copy while a writer commits as fast as it can: each is at a commit
/// boundary between the counts seen just before and just after it.
#[test]
fn snapshot_copy_under_busy_writer() {
    let i = Install::with_rows(50);
    create_ticks(&Connection::open(&i.paths.db).unwrap());
    let w = WriterThread::start(&i.paths.db);
    let count = || -> i64 {
        let c = Connection::open(&i.paths.db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        c.query_row("SELECT cnt FROM totals", [], |r| r.get(0))
            .unwrap()
    };
    let mut moved = 0;
    for round in 0..50 {
        let before = count();
        let meta = i.backup(&[]);
        let after = count();
        let stamp = meta["stamp"].as_str().unwrap();
        assert_eq!(meta["wal"]["method"], "copy", "{meta}");
        let c = atocore_restore_job::open_immutable(&i.snapshot_dir(stamp).join("db/atocore.db"))
            .unwrap();
        let t = check_ticks(&c, &format!("snapshot {stamp} (round {round})"));
        assert!(
            before <= t.k && t.k <= after,
            "snapshot {stamp}: k = {} outside [{before}, {after}]",
            t.k
        );
        if after > before {
            moved += 1;
        }
    }
    let last = w.stop();
    eprintln!("{moved} of 50 snapshots ran while the writer committed; {last} rows");
    assert!(moved >= 25, "only {moved} snapshots overlapped commits");
}

// ---------------------------------------------------------------- 3. WAL removed

/// Commit rows `from..=to` with a pause between them; `n -> t_after` added to `log`.
pub(crate) fn commit_range(
    c: &Connection,
    from: i64,
    to: i64,
    pause: Duration,
    log: &mut BTreeMap<i64, i64>,
) {
    for n in from..=to {
        let (_, t1) = commit_tick(c, n);
        log.insert(n, t1);
        std::thread::sleep(pause);
    }
}

/// The WAL deleted from outside while the writer and the streamer have it open: the
/// generation ends, and a restore never claims the rows committed into the unlinked
/// file, which nothing captured.
#[test]
fn wal_removed_under_the_streamer() {
    let i = Install::with_rows(50);
    let c = hold_wal(&i);
    let s = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    let mut log = BTreeMap::new();
    commit_range(&c, 1, 100, Duration::from_millis(5), &mut log);
    std::thread::sleep(Duration::from_millis(1000));
    let t_del = now_ms();
    let wal = i.paths.db.with_file_name("atocore.db-wal");
    std::fs::remove_file(&wal).unwrap();
    commit_range(&c, 101, 200, Duration::from_millis(5), &mut log);
    std::thread::sleep(Duration::from_millis(1500));
    let summary = s.stop();
    drop(c);
    let stream_log = std::fs::read_to_string(i.dir.path().join("stream.log")).unwrap();
    eprintln!("summary: {summary}");
    for l in stream_log.lines().filter(|l| !l.contains(" INFO ")).take(6) {
        eprintln!("  stream: {l}");
    }
    let started = summary["generations_started"].as_array().unwrap().len();
    assert!(
        started >= 2 || stream_log.contains("wal_removed"),
        "the generation did not end: {summary}\n{stream_log}"
    );
    assert!(stream_log.contains("wal_removed"), "{stream_log}");

    let live_after = live_ticks(&i, "the live database after the WAL was removed");
    eprintln!("live rows after the writer closed: {}", live_after.k);
    let r = restore_at(&i, now_ms());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let restored_to = parse_ms(r.json["point_in_time"]["restored_to"].as_str().unwrap());
    let t = live_ticks(&i, "restore --at now after the WAL was removed");
    eprintln!(
        "restored k={} restored_to={} (deleted at {}) warnings={}",
        t.k,
        rfc3339(restored_to),
        rfc3339(t_del),
        r.json["point_in_time_warnings"]
    );
    // Nothing begun after the moment it claims.
    if let Some(tb) = t.max_t_before {
        assert!(
            tb <= restored_to,
            "holds a row begun at {} > restored_to",
            rfc3339(tb)
        );
    }
    if restored_to <= t_del {
        assert!(
            t.k <= 100,
            "claims {} rows as of before the removal; only 100 were committed then",
            t.k
        );
    } else {
        // Rows committed into the removed WAL are claimed only from what was captured
        // after the removal: the base snapshot of a generation that started after it.
        // (With the streamer's locks kept, SQLite can still read them, and atocore's
        // close checkpoints them into the database: they are real, durable commits.)
        let base = r.json["point_in_time"]["base"].as_str().unwrap();
        let meta: Value = serde_json::from_slice(
            &std::fs::read(i.snapshot_dir(base).join("backup-metadata.json")).unwrap(),
        )
        .unwrap();
        let pinned = meta["wal"]["pinned_ms"].as_i64().unwrap();
        assert!(
            started >= 2
                && summary["base_snapshots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b == base)
                && pinned >= t_del,
            "restored_to {} is after the removal {} but base {base} (pinned {}) is not a capture made after it: {summary}",
            rfc3339(restored_to),
            rfc3339(t_del),
            rfc3339(pinned)
        );
        assert!(t.k <= live_after.k);
    }
    // What was captured before the removal is all there.
    assert!(t.k >= 100, "rows captured before the removal are missing");
}

// ---------------------------------------------------------------- 4. refusals

pub(crate) fn error_code(r: &util::Run) -> &str {
    r.json["error"].as_str().unwrap_or("")
}

/// Stream while `rows` ticks are committed (paced), then stop the streamer. Returns the
/// writer's log and the moment after the first half of the rows.
fn captured_rows(i: &Install, rows: i64) -> (BTreeMap<i64, i64>, i64) {
    let c = hold_wal(i);
    let s = Streamer::start(i);
    wait_for_window(i, Duration::from_secs(20));
    let mut log = BTreeMap::new();
    commit_range(&c, 1, rows / 2, Duration::from_millis(3), &mut log);
    std::thread::sleep(Duration::from_millis(400));
    let mid = now_ms();
    std::thread::sleep(Duration::from_millis(400));
    commit_range(&c, rows / 2 + 1, rows, Duration::from_millis(3), &mut log);
    std::thread::sleep(Duration::from_millis(600));
    let sum = s.stop();
    assert_eq!(sum["errors"], 0, "{sum}");
    (log, mid)
}

#[test]
fn refusals() {
    let i = Install::with_rows(50);
    let r = i.run(&["restore", "--at", "not-a-time", "--confirm-service-stopped"]);
    assert_eq!((r.code, error_code(&r)), (2, "bad_request"), "{}", r.stdout);
    let r = restore_at(&i, now_ms() - 3_600_000);
    assert_eq!(
        (r.code, error_code(&r)),
        (2, "no_point_in_time"),
        "{}",
        r.stdout
    );

    let (log, mid) = captured_rows(&i, 300);
    let wins = windows(&i);
    assert_eq!(wins.len(), 1, "{wins:?}");
    let r = restore_at(&i, wins[0].1 - 60_000);
    assert_eq!(
        (r.code, error_code(&r)),
        (2, "no_point_in_time"),
        "{}",
        r.stdout
    );

    let before = util::storage_tree(i.root());
    let r = i.run(&["restore", "--at", &rfc3339(mid), "--no-pre-snapshot"]);
    assert_eq!(
        (r.code, error_code(&r)),
        (2, "not_confirmed"),
        "{}",
        r.stdout
    );
    assert_eq!(
        util::storage_tree(i.root()),
        before,
        "a refused restore changed files"
    );

    // A damaged segment that the replay to `mid` needs.
    let segs = segments(&i);
    let (_, path, _) = segs
        .iter()
        .rev()
        .find(|(_, _, h)| {
            h["captured_ms"].as_i64().unwrap() <= mid && h["commits"].as_u64().unwrap() > 0
        })
        .expect("a segment before mid");
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(path, &bytes).unwrap();
    let live_dir = i.paths.db.parent().unwrap();
    let live_before = util::tree(live_dir);
    let r = restore_at(&i, mid);
    assert_eq!(
        (r.code, error_code(&r)),
        (1, "wal_chain_broken"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        util::tree(live_dir),
        live_before,
        "the live database changed"
    );
    let _ = log;
}

// ---------------------------------------------------------------- 5. retention

/// `prune --pitr-days 0`: ended generations go, the newest stays, segments before the
/// newest base's WAL epoch go, and the rest still restores exactly.
#[test]
fn retention_prunes_segments_before_the_newest_base() {
    let i = Install::with_rows(50);
    let mut log = BTreeMap::new();
    let c = hold_wal(&i);

    let s = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    commit_range(&c, 1, 300, Duration::from_millis(2), &mut log);
    std::thread::sleep(Duration::from_millis(500));
    s.kill9();
    // Uncaptured commits and a WAL restart: the next streamer starts a new generation.
    commit_range(&c, 301, 310, Duration::ZERO, &mut log);
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    commit_range(&c, 311, 320, Duration::ZERO, &mut log);

    let s = Streamer::start(&i);
    let until = Instant::now() + Duration::from_secs(20);
    while windows(&i).len() < 2 {
        assert!(Instant::now() < until, "no second window");
        std::thread::sleep(Duration::from_millis(200));
    }
    commit_range(&c, 321, 900, Duration::from_millis(2), &mut log);
    std::thread::sleep(Duration::from_millis(500));
    let newest_base = i.backup(&[]);
    commit_range(&c, 901, 1200, Duration::from_millis(2), &mut log);
    std::thread::sleep(Duration::from_millis(600));
    let sum = s.stop();
    assert_eq!(sum["errors"], 0, "{sum}");
    drop(c);

    let pos = &newest_base["wal"]["position"];
    assert!(
        pos.is_object(),
        "the manual snapshot has no WAL position: {newest_base}"
    );
    let segs = segments(&i);
    let gens: BTreeSet<String> = segs.iter().map(|(g, _, _)| g.clone()).collect();
    assert_eq!(gens.len(), 2, "{gens:?}");
    let newest_gen = gens.last().unwrap().clone();
    let in_newest: Vec<&(String, PathBuf, Value)> =
        segs.iter().filter(|(g, _, _)| *g == newest_gen).collect();
    // The first segment of the base's epoch: everything before it may go.
    let salts = |v: &Value| (v["salt1"].clone(), v["salt2"].clone());
    let keep_from = in_newest
        .iter()
        .position(|(_, _, h)| salts(&h["end"]) == salts(pos))
        .expect("the base's epoch among the segments");
    assert!(
        keep_from > 0,
        "the newest base is in the generation's first epoch; nothing to prune"
    );
    let expected_kept: BTreeSet<PathBuf> = in_newest[keep_from..]
        .iter()
        .map(|(_, p, _)| p.clone())
        .collect();

    // A dry run lists what would go and removes nothing.
    let before_dry: BTreeSet<PathBuf> = segments(&i).iter().map(|(_, p, _)| p.clone()).collect();
    let dry = i.run(&["prune", "--pitr-days", "0", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    let would = dry.json["wal_removed"].as_array().map_or(0, |a| a.len());
    assert!(
        would > 0,
        "the dry run lists no WAL to remove: {}",
        dry.stdout
    );
    let after_dry: BTreeSet<PathBuf> = segments(&i).iter().map(|(_, p, _)| p.clone()).collect();
    assert_eq!(after_dry, before_dry, "a dry run removed segments");

    let r = i.run(&["prune", "--pitr-days", "0"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        r.json["wal_removed"].as_array().map_or(0, |a| a.len()),
        would,
        "the prune removed other WAL than its dry run listed: {}",
        r.stdout
    );
    let after = segments(&i);
    let kept: BTreeSet<PathBuf> = after.iter().map(|(_, p, _)| p.clone()).collect();
    assert_eq!(
        kept, expected_kept,
        "prune removed or kept the wrong segments: {}",
        r.stdout
    );
    assert!(wal_dir(&i).join(&newest_gen).is_dir());

    let wins = windows(&i);
    assert_eq!(wins.len(), 1, "{wins:?}");
    let (_, from, to) = wins[0].clone();
    assert!(from >= parse_ms(newest_base["wal"]["pinned_at"].as_str().unwrap()));
    restore_and_check(&i, from + (to - from) / 2, &log, true);
    restore_and_check(&i, to, &log, true);
}

// ---------------------------------------------------------------- 6. disk full

/// A tmpfs mounted over a folder, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when mounting is not permitted here.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `backups/wal` on a 1 MiB tmpfs that fills up while a writer process commits: the
/// writer never fails, the streamer keeps running, and every moment inside the listed
/// windows still restores exactly.
#[test]
fn disk_full_in_the_wal_folder() {
    let i = Install::with_rows(50);
    let Some(_mount) = Tmpfs::mount(&wal_dir(&i), "1m") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but tmpfs cannot be mounted"
        );
        eprintln!("skipped: mounting a tmpfs is not permitted here");
        return;
    };
    let holder = hold_wal(&i);
    let log = i.dir.path().join("writer.log");
    let mut streamer = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    let writer = spawn_writer(&i.paths.db, &log);
    let mut writer = Some(writer);
    let start = Instant::now();
    let secs = std::env::var("ATOCORE_PITR_TEST_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(20, |s| (s / 3).max(10));
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(st) = writer.as_mut().unwrap().0.try_wait().unwrap() {
            panic!("the writer failed ({st}) while the WAL folder was full");
        }
        if let Some(st) = streamer.child.try_wait().unwrap() {
            panic!("the streamer exited ({st}) while the WAL folder was full");
        }
    }
    writer.take().unwrap().kill9();
    let summary = streamer.stop();
    drop(holder);
    let stream_log = std::fs::read_to_string(i.dir.path().join("stream.log")).unwrap();
    eprintln!("summary: {summary}");
    assert!(
        stream_log.contains("could not write a WAL segment")
            || stream_log.contains("No space left"),
        "the WAL folder never filled up"
    );
    let log = read_log(&log);
    let live = live_ticks(&i, "live database after the disk filled");
    eprintln!("rows committed: {} (logged {})", live.k, log.len());
    assert!(
        live.k as usize >= log.len() && live.k >= 100,
        "the writer made little progress"
    );

    let wins = windows(&i);
    eprintln!("windows: {wins:?}");
    assert!(!wins.is_empty());
    let seed = seed();
    eprintln!("seed {seed} (ATOCORE_PITR_SEED to repeat)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut ats: Vec<i64> = wins.iter().map(|(_, _, t)| *t).collect();
    for _ in 0..6 {
        let (_, f, t) = &wins[rng.random_range(0..wins.len())];
        ats.push(rng.random_range(*f..=*t));
    }
    for at in ats {
        restore_and_check(&i, at, &log, true);
    }
}

// ---------------------------------------------------------------- 7. the app closes cleanly

/// The ticks writer in Python, atocore's own stack (its `sqlite3` module and the
/// system SQLite): `python3 -c PY_WRITER DB LOG ROWS` commits ROWS rows, then closes
/// its connection cleanly.
const PY_WRITER: &str = r#"
import sqlite3, sys, time
db, log, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = sqlite3.connect(db, timeout=10, isolation_level=None)
n = c.execute("SELECT coalesce(max(n), 0) FROM ticks").fetchone()[0] + 1
with open(log, "a") as f:
    for _ in range(rows):
        t0 = int(time.time() * 1000)
        c.execute("BEGIN IMMEDIATE")
        c.execute("INSERT INTO ticks (n, t_ms, pad) VALUES (?, ?, randomblob(96))", (n, t0))
        c.execute("UPDATE totals SET cnt = cnt + 1, total = total + ? WHERE id = 1", (n,))
        c.execute("COMMIT")
        f.write(f"{n} {t0} {int(time.time() * 1000)}\n")
        f.flush()
        n += 1
        time.sleep(0.001)
c.close()
"#;

pub(crate) fn python_sqlite() -> bool {
    Command::new("python3")
        .args(["-c", "import sqlite3"])
        .status()
        .is_ok_and(|s| s.success())
}

/// atocore closing its connection cleanly (a restart) while the streamer runs must not
/// end the generation: the streamer's connections are open, so SQLite must not take
/// the closing connection for the last one, checkpoint past the streamer's pin and
/// delete the WAL. (The streamer takes its base snapshot in-process; a copy of the
/// database file through a descriptor of its own dropped the streamer's SQLite locks.)
#[test]
fn a_clean_writer_close_keeps_the_generation() {
    if !python_sqlite() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 with sqlite3 is missing"
        );
        eprintln!("skipped: python3 with sqlite3 is not available");
        return;
    }
    let i = Install::with_rows(50);
    drop(open_writer(&i.paths.db));
    let log = i.dir.path().join("writer.log");
    let run_rows = |rows: u64| -> Child {
        Command::new("python3")
            .args(["-c", PY_WRITER])
            .arg(&i.paths.db)
            .arg(&log)
            .arg(rows.to_string())
            .spawn()
            .unwrap()
    };
    // The first writer runs while the streamer starts and takes its base, then closes.
    let mut a = run_rows(2000);
    let until = Instant::now() + Duration::from_secs(10);
    while read_log(&log).len() < 20 {
        assert!(Instant::now() < until, "the writer does not commit");
        std::thread::sleep(Duration::from_millis(20));
    }
    let streamer = Streamer::start(&i);
    wait_for_window(&i, Duration::from_secs(20));
    assert!(
        a.try_wait().unwrap().is_none(),
        "the first writer finished before the base was taken; give it more rows"
    );
    assert!(a.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(500));
    let mut b = run_rows(100);
    assert!(b.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(600));
    let summary = streamer.stop();
    let stream_log = std::fs::read_to_string(i.dir.path().join("stream.log")).unwrap();
    eprintln!("summary: {summary}");
    assert!(
        !stream_log.contains("wal_removed"),
        "a clean close of the writer removed the WAL under the streamer"
    );
    assert_eq!(
        summary["generations_started"].as_array().unwrap().len(),
        1,
        "the generation ended when the writer closed: {summary}"
    );
    let log = read_log(&log);
    assert_eq!(log.len(), 2100);
    let (k, _) = restore_and_check(&i, now_ms(), &log, false);
    assert_eq!(k, 2100, "not every row was captured");
}
