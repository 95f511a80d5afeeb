//! Point-in-time recovery when the host is gone: snapshots and the captured WAL pushed
//! to a folder target (age-encrypted), the storage root wiped, `offsite fetch --at`
//! onto a new, empty root with the identity, then `restore`: exactly the rows
//! committed before the moment.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use atocore_restore_job::Paths;
use chrono::{SecondsFormat, Utc};
use rusqlite::Connection;
use serde_json::Value;

use super::util::{BIN, Install, Run};

fn run(root: &std::path::Path, env: &[(String, String)], args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("--storage-root").arg(root).args(args);
    cmd.env("ATOCORE_LOG_FORMAT", "text");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

fn commit(db: &std::path::Path, from: i64, n: i64) {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS ticks(n INTEGER PRIMARY KEY)")
        .unwrap();
    for i in from..from + n {
        c.execute("INSERT INTO ticks VALUES (?1)", [i]).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn ticks(db: &std::path::Path) -> Vec<i64> {
    let c = Connection::open(db).unwrap();
    c.prepare("SELECT n FROM ticks ORDER BY n")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn offsite_fetch_at_on_a_new_host_restores_exactly_the_rows_before_the_moment() {
    let site = Install::new();
    let key_dir = tempfile::tempdir().unwrap();
    let id = age::x25519::Identity::generate();
    let key = key_dir.path().join("key.txt");
    fs::write(&key, format!("{}\n", id.to_string().expose_secret())).unwrap();
    let env = vec![
        (
            "ATOCORE_OFFSITE_URL".to_string(),
            format!("file://{}", key_dir.path().join("remote").display()),
        ),
        (
            "ATOCORE_OFFSITE_RECIPIENTS".to_string(),
            id.to_public().to_string(),
        ),
    ];
    let root = site.root().to_path_buf();
    let stream = Command::new(BIN)
        .arg("--storage-root")
        .arg(&root)
        .args(["stream", "--poll", "50ms", "--checkpoint-frames", "20"])
        .env("ATOCORE_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the generation's base snapshot.
    let base_taken = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        fs::read_dir(site.paths.snapshots_dir()).is_ok_and(|d| d.count() > 0)
    });
    assert!(base_taken, "the streamer took no base snapshot");
    commit(&site.paths.db, 1, 60);
    std::thread::sleep(Duration::from_millis(400));
    let at = Utc::now();
    std::thread::sleep(Duration::from_millis(400));
    commit(&site.paths.db, 61, 60);
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(stream.id() as i32, libc::SIGTERM) };
    let out = stream.wait_with_output().unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["commits"].as_u64().unwrap() >= 120, "{summary}");

    let pushed = run(&root, &env, &["offsite", "push", "--missing"]);
    assert_eq!(pushed.code, 0, "{}\n{}", pushed.stdout, pushed.stderr);
    assert!(
        pushed.json["wal"]["segments"].as_u64().unwrap() > 0,
        "{}",
        pushed.stdout
    );
    assert!(pushed.json["wal"]["objects"].as_u64().unwrap() >= 1);
    // The operator keeps the repository's fingerprint with the identity file, as the
    // first push asks: the fetch on the new host is pinned to it.
    let pin = format!(
        "# atocore-offsite-fingerprint: {}\n",
        pushed.json["fingerprint"].as_str().unwrap()
    );
    let text = fs::read_to_string(&key).unwrap();
    fs::write(&key, format!("{text}{pin}")).unwrap();
    // Nothing new: a second push uploads no WAL object.
    let again = run(&root, &env, &["offsite", "push", "--missing"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(again.json["wal"]["objects"], 0, "{}", again.stdout);
    // The WAL objects are encrypted: no segment header is readable on the target.
    for e in walkdir(&key_dir.path().join("remote/wal")) {
        let bytes = fs::read(&e).unwrap();
        assert!(
            bytes.starts_with(b"age-encryption.org/v1"),
            "{}",
            e.display()
        );
    }

    // The host is gone.
    fs::remove_dir_all(&root).unwrap();
    let new_host = tempfile::tempdir().unwrap();
    let paths = Paths::from_root(new_host.path().join("atocore"));
    let at_s = at.to_rfc3339_opts(SecondsFormat::Millis, true);
    // Without the identity: refused, nothing published.
    let refused = run(
        &paths.storage_root,
        &env,
        &["offsite", "fetch", "--at", &at_s],
    );
    assert_eq!(refused.code, 2, "{}\n{}", refused.stdout, refused.stderr);
    assert_eq!(refused.json["error"], "offsite_not_configured");
    let fetched = run(
        &paths.storage_root,
        &env,
        &[
            "offsite",
            "fetch",
            "--at",
            &at_s,
            "--identity",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(fetched.code, 0, "{}\n{}", fetched.stdout, fetched.stderr);
    let snap = &fetched.json["snapshot"];
    assert_eq!(snap["kind"], "point-in-time", "{}", fetched.stdout);
    assert!(snap["point_in_time"]["frames_replayed"].as_u64().unwrap() > 0);
    let stamp = snap["stamp"].as_str().unwrap();
    let restored = run(
        &paths.storage_root,
        &env,
        &[
            "restore",
            stamp,
            "--confirm-service-stopped",
            "--no-pre-snapshot",
        ],
    );
    assert_eq!(restored.code, 0, "{}\n{}", restored.stdout, restored.stderr);
    assert_eq!(ticks(&paths.db), (1..=60).collect::<Vec<i64>>());
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
