//! Off-site replication through the sidecar, on a real folder target: the push
//! endpoint, the listing, the push after a scheduled snapshot, metrics and health.

use atocore_sidecar::Config;

use crate::util::*;

fn remote_stamps(target: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(target.join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn push_list_metrics_and_health_on_a_folder_target() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let sc = Sidecar::start_with(|s| {
        s.set("--offsite-url", &url)
            .set("--offsite-unencrypted", "true");
    });
    // Made by the CLI, so no background push races the explicit one below.
    let stamp = cli_backup(&sc.paths);

    let p = sc.post("/admin/offsite/push", "{}");
    assert_eq!(p.status, 200, "{}", p.body);
    let v = p.json();
    assert_eq!(v["pushed"][0]["stamp"], stamp.as_str(), "{v}");
    assert_eq!(v["encrypted"], false);
    assert_eq!(remote_stamps(remote.path()), vec![stamp.clone()]);

    // A second push finds it there and uploads nothing.
    let again = sc.post("/admin/offsite/push", "").json();
    assert_eq!(again["pushed"], serde_json::json!([]), "{again}");
    assert_eq!(again["already_there"], serde_json::json!([stamp]));

    let l = sc.get("/admin/offsite");
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(l.json()["snapshots"][0]["stamp"], stamp.as_str());

    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_pushes_total 2\n"), "{m}");
    assert!(m.contains("atocore_offsite_push_failures_total 0\n"), "{m}");
    assert!(
        m.contains("atocore_offsite_last_success_timestamp_seconds "),
        "{m}"
    );
    let h = sc.get("/health").json();
    assert!(h["offsite"]["last_success_at"].is_string(), "{h}");
    assert!(h["offsite"]["last_failure_at"].is_null(), "{h}");

    // Unknown fields are refused like everywhere else.
    sc.post("/admin/offsite/push", r#"{"stamp": "x"}"#)
        .assert_error(400, "bad_json");
}

#[test]
fn a_failed_push_is_counted_and_turns_health_degraded() {
    // The target is not a folder (a file sits where the backup disk should be).
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("backup-disk");
    std::fs::write(&not_a_folder, b"not a folder").unwrap();
    let url = format!("file://{}", not_a_folder.display());
    let sc = Sidecar::start_with(|s| {
        s.set("--offsite-url", &url)
            .set("--offsite-unencrypted", "true");
    });
    cli_backup(&sc.paths);
    let p = sc.post("/admin/offsite/push", "{}");
    assert!(p.status >= 400, "{}", p.body);
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_push_failures_total 1\n"), "{m}");
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("off-site push failed")),
        "{h}"
    );
}

#[test]
fn without_a_target_the_endpoints_say_how_to_set_one() {
    let sc = Sidecar::start();
    sc.post("/admin/offsite/push", "{}")
        .assert_error(400, "offsite_not_configured");
    sc.get("/admin/offsite")
        .assert_error(400, "offsite_not_configured");
    assert!(sc.get("/health").json().get("offsite").is_none());
}

#[test]
fn a_target_without_recipients_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let mut s = Settings::for_root(root.path());
    s.set("--offsite-url", "file:///mnt/backup/atocore");
    let mut args = vec!["atocore-sidecar".to_string()];
    args.extend(s.args());
    let err = Config::parse_from(args).unwrap_err();
    assert_eq!(err.code(), "bad_config");
    let msg = err.to_string();
    assert!(
        msg.starts_with("off-site: ") && msg.contains("ATOCORE_OFFSITE_RECIPIENTS"),
        "{msg}"
    );
    // A malformed target is refused at start too, not at the first push.
    let mut s = Settings::for_root(root.path());
    s.set("--offsite-url", "file://relative/folder")
        .set("--offsite-unencrypted", "true");
    let mut args = vec!["atocore-sidecar".to_string()];
    args.extend(s.args());
    let err = Config::parse_from(args).unwrap_err();
    assert_eq!(
        err.to_string(),
        "off-site: ATOCORE_OFFSITE_URL `file://relative/folder`: a folder target needs an absolute path, such as file:///mnt/backup/atocore"
    );
}

fn reasons(h: &serde_json::Value) -> Vec<String> {
    h["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

/// A snapshot made by another process (the CLI), which this sidecar did not push.
fn cli_backup(paths: &atocore_restore_job::Paths) -> String {
    atocore_restore_job::snapshot::backup(
        paths,
        &atocore_restore_job::BackupOptions::default(),
        atocore_restore_job::BackupHooks::default(),
    )
    .unwrap()
    .stamp
}

#[test]
fn a_manual_snapshot_is_pushed_after_the_answer_and_counted() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let sc = Sidecar::start_with(|s| {
        s.set("--offsite-url", &url)
            .set("--offsite-unencrypted", "on");
    });
    let b = sc.post("/admin/backup", "{}");
    assert_eq!(b.status, 200, "{}", b.body);
    let stamp = b.json()["stamp"].as_str().unwrap().to_string();
    assert!(
        wait_until(std::time::Duration::from_secs(60), || remote_stamps(
            remote.path()
        ) == vec![
            stamp.clone()
        ] && sc
            .state
            .gate
            .running()
            .is_none()),
        "the manual snapshot was not pushed: {:?}",
        remote_stamps(remote.path())
    );
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_pushes_total 1\n"), "{m}");
    assert!(m.contains("atocore_offsite_push_failures_total 0\n"), "{m}");
    assert!(m.contains("atocore_offsite_newest_age_seconds "), "{m}");
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["offsite"]["newest_remote"], stamp.as_str(), "{h}");
    assert_eq!(h["offsite"]["pending"], serde_json::json!([]), "{h}");
    assert_eq!(h["offsite"]["max_age_seconds"], 36 * 3600, "{h}");
    assert!(h["offsite"]["lag_seconds"].as_i64().unwrap() >= 0, "{h}");

    // A snapshot this sidecar did not make is pending until a push.
    let other = cli_backup(&sc.paths);
    let l = sc.get("/admin/offsite");
    assert_eq!(l.status, 200, "{}", l.body);
    let v = l.json();
    assert_eq!(v["pending"], serde_json::json!([other]), "{v}");
    assert_eq!(v["snapshots"][0]["stamp"], stamp.as_str(), "{v}");
    let lag = v["lag_seconds"].as_i64().unwrap();
    assert!((0..600).contains(&lag), "{v}");
    assert_eq!(
        sc.get("/health").json()["offsite"]["pending"],
        serde_json::json!([other])
    );
}

#[test]
fn a_backup_requested_during_a_background_push_makes_it_yield() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let sc = Sidecar::start_with(|s| {
        s.set("--offsite-url", &url)
            .set("--offsite-unencrypted", "true");
    });
    // Enough incompressible chroma data for a push of many batches.
    let big = sc.paths.chroma.join("big.bin");
    let mut data = vec![0u8; 96 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(&big, &data).unwrap();
    drop(data);

    let first = sc.post("/admin/backup", r#"{"include_chroma": true}"#);
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json()["stamp"].as_str().unwrap().to_string();
    assert!(
        wait_until(std::time::Duration::from_secs(30), || sc
            .state
            .gate
            .running()
            .is_some_and(|r| r.operation == "offsite push (background)")),
        "the background push did not start"
    );
    // Without yielding this would be a 409 for as long as the upload takes.
    let second = sc.post("/admin/backup", "{}");
    assert_eq!(second.status, 200, "{}", second.body);
    let second = second.json()["stamp"].as_str().unwrap().to_string();
    assert!(
        wait_until(std::time::Duration::from_secs(120), || remote_stamps(
            remote.path()
        ) == vec![
            first.clone(),
            second.clone()
        ] && sc
            .state
            .gate
            .running()
            .is_none()),
        "both snapshots end up on the target: {:?}",
        remote_stamps(remote.path())
    );
    let m = sc.get("/metrics").body;
    // The push that yielded is neither a success nor a failure.
    assert!(m.contains("atocore_offsite_pushes_total 1\n"), "{m}");
    assert!(m.contains("atocore_offsite_push_failures_total 0\n"), "{m}");
    assert_eq!(sc.get("/health").json()["status"], "ok");
}

#[test]
fn health_is_degraded_when_the_newest_remote_copy_is_too_old() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let (dir, paths) = sample_root(200);
    let mut s = Settings::for_root(&paths.storage_root);
    s.set("--offsite-url", &url)
        .set("--offsite-unencrypted", "1");
    let first = Sidecar::serve(s.config());
    let b = first.post("/admin/backup", "{}");
    assert_eq!(b.status, 200, "{}", b.body);
    let stamp = b.json()["stamp"].as_str().unwrap().to_string();
    assert!(wait_until(std::time::Duration::from_secs(60), || {
        remote_stamps(remote.path()) == vec![stamp.clone()] && first.state.gate.running().is_none()
    }));
    first.stop();

    // A restarted sidecar lists the target once, in the background, for /health.
    s.set("--offsite-max-age", "1s");
    let sc = Sidecar::serve(s.config());
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let mut h = sc.get("/health").json();
    assert!(
        wait_until(std::time::Duration::from_secs(20), || {
            h = sc.get("/health").json();
            h["offsite"]["remote_seen_at"].is_string()
        }),
        "{h}"
    );
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["offsite"]["newest_remote"], stamp.as_str(), "{h}");
    assert_eq!(h["offsite"]["max_age_seconds"], 1, "{h}");
    assert!(h["offsite"]["lag_seconds"].as_i64().unwrap() >= 2, "{h}");
    assert_eq!(
        reasons(&h)
            .iter()
            .filter(|r| r.contains("ATOCORE_OFFSITE_MAX_AGE"))
            .count(),
        1,
        "{h}"
    );
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_newest_age_seconds "), "{m}");
    sc.stop();

    // Within the limit: ok.
    s.set("--offsite-max-age", "36h");
    let sc = Sidecar::serve(s.config());
    assert!(wait_until(std::time::Duration::from_secs(20), || {
        sc.get("/health").json()["offsite"]["remote_seen_at"].is_string()
    }));
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "ok", "{h}");
    drop(dir);
}

#[test]
fn a_recorded_verify_with_problems_turns_health_degraded_after_a_restart() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let (_dir, paths) = sample_root(200);
    let record = serde_json::json!({
        "at": "2026-11-20T06:00:00Z", "ok": false, "problems": 3, "snapshots": 2,
        "objects_checked": 40, "chunks_read": 2, "read_data_percent": 5.0
    });
    let file = paths.backup_dir.join("offsite/sidecar-verify.json");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, record.to_string()).unwrap();
    let mut s = Settings::for_root(&paths.storage_root);
    s.set("--offsite-url", &url)
        .set("--offsite-unencrypted", "yes");
    let sc = Sidecar::serve(s.config());
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["offsite"]["last_verify"], record, "{h}");
    assert!(
        reasons(&h).iter().any(|r| r
            == "the last off-site verify (2026-11-20T06:00:00Z) found 3 damaged or missing objects; run `atocore-restore-job offsite verify` for the list, then push again"),
        "{h}"
    );
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_verify_last_ok 0\n"), "{m}");
    assert!(
        m.contains("atocore_offsite_verify_last_problems 3\n"),
        "{m}"
    );
    assert!(
        m.contains("atocore_offsite_verify_last_timestamp_seconds 1795154400.0\n"),
        "{m}"
    );
}

#[test]
fn offsite_settings_are_checked_at_start() {
    let root = tempfile::tempdir().unwrap();
    let parse = |extra: &[&str]| {
        let mut s = Settings::for_root(root.path());
        s.set("--offsite-url", "file:///mnt/backup/atocore");
        let mut args = vec!["atocore-sidecar".to_string()];
        args.extend(s.args());
        args.extend(extra.iter().map(|a| a.to_string()));
        Config::parse_from(args)
    };
    // Yes/no like every other yes/no setting: a typo is refused, not read as "no".
    let e = parse(&["--offsite-unencrypted", "maybe"]).unwrap_err();
    assert_eq!(e.code(), "bad_config");
    assert!(e.to_string().contains("--offsite-unencrypted"), "{e}");
    let c = parse(&["--offsite-unencrypted", "ON"]).unwrap();
    assert!(c.offsite.unwrap().unencrypted);
    assert!(
        parse(&["--offsite-unencrypted", "off"]).is_err(),
        "no recipients"
    );

    let c = parse(&["--offsite-unencrypted", "true"]).unwrap();
    assert_eq!(
        c.offsite_verify_every,
        Some(std::time::Duration::from_secs(7 * 86400))
    );
    assert_eq!(c.offsite_verify_read_data, 5.0);
    assert_eq!(c.offsite_max_age, std::time::Duration::from_secs(36 * 3600));
    assert_eq!(c.offsite_prune.keep_daily, 7);
    assert_eq!(c.offsite_identity_file, None);
    let offsite = c.offsite.unwrap();
    assert_eq!((offsite.concurrency, offsite.bandwidth.0), (8, None));
    let c = parse(&[
        "--offsite-unencrypted",
        "true",
        "--offsite-bandwidth",
        "10MiB",
        "--offsite-concurrency",
        "2",
        "--offsite-identity-file",
        "",
    ])
    .unwrap();
    let offsite = c.offsite.unwrap();
    assert_eq!(
        (offsite.concurrency, offsite.bandwidth.0),
        (2, Some(10 << 20))
    );
    assert_eq!(c.offsite_identity_file, None, "empty, as compose passes it");
    for off in ["off", "0", "OFF"] {
        let c = parse(&[
            "--offsite-unencrypted",
            "true",
            "--offsite-verify-every",
            off,
        ])
        .unwrap();
        assert_eq!(c.offsite_verify_every, None, "{off}");
    }
    let e = parse(&[
        "--offsite-unencrypted",
        "true",
        "--offsite-verify-read-data",
        "150",
    ])
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ATOCORE_OFFSITE_VERIFY_READ_DATA `150` is not a percentage from 0 to 100"
    );
}

/// The age crate's published X25519 test vector (a throwaway key pair).
const TEST_IDENTITY: &str =
    "AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33";
const TEST_RECIPIENT: &str = "age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa";

fn scratch_folders(backup_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(backup_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".offsite-drill-"))
        .collect()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn the_offsite_drill_fetches_the_newest_remote_snapshot_into_a_scratch_folder() {
    let remote = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let identity = keys.path().join("offsite.key");
    std::fs::write(&identity, format!("{TEST_IDENTITY}\n")).unwrap();
    let url = format!("file://{}", remote.path().display());
    let (_dir, paths) = sample_root(20_000);
    let mut s = Settings::for_root(&paths.storage_root);
    s.set("--offsite-url", &url)
        .set("--offsite-recipients", TEST_RECIPIENT);

    // Without the identity file the drill is refused and nothing is recorded.
    let sc = Sidecar::serve(s.config());
    let b = sc.post("/admin/backup", "{}");
    assert_eq!(b.status, 200, "{}", b.body);
    let stamp = b.json()["stamp"].as_str().unwrap().to_string();
    assert!(wait_until(std::time::Duration::from_secs(60), || {
        remote_stamps(remote.path()) == vec![stamp.clone()] && sc.state.gate.running().is_none()
    }));
    let refused = sc.post("/admin/drill", r#"{"offsite": true}"#);
    refused.assert_error(400, "offsite_not_configured");
    assert!(
        refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("ATOCORE_OFFSITE_IDENTITY_FILE"),
        "{}",
        refused.body
    );
    assert!(!paths.backup_dir.join("drills.jsonl").exists());
    sc.stop();

    s.set("--offsite-identity-file", identity.to_str().unwrap());
    let sc = Sidecar::serve(s.config());
    let live_before = std::fs::read(&paths.db).unwrap();
    let snapshots_before = snapshot_entries(&paths);
    let d = sc.post("/admin/drill", r#"{"offsite": true}"#);
    assert_eq!(d.status, 200, "{}", d.body);
    let v = d.json();
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["offsite"], true, "{v}");
    assert_eq!(v["stamp"], stamp.as_str(), "{v}");
    assert_eq!(
        v["offsite_checks"],
        serde_json::json!({"fetched": true, "valid": true, "scratch_removed": true}),
        "{v}"
    );
    assert!(v.get("error").is_none(), "{v}");
    // Live data and the real snapshots folder are untouched; the scratch is gone.
    assert_eq!(std::fs::read(&paths.db).unwrap(), live_before);
    assert_eq!(snapshot_entries(&paths), snapshots_before);
    assert_eq!(scratch_folders(&paths.backup_dir), Vec::<String>::new());
    let history = sc.get("/admin/drill").json();
    assert_eq!(history["drills"].as_array().unwrap().len(), 1, "{history}");
    assert_eq!(history["drills"][0]["offsite"], true, "{history}");
    assert_eq!(sc.get("/health").json()["last_drill"]["offsite"], true);

    // A damaged object fails the drill, named, and still leaves nothing behind.
    let chunk = files_under(&remote.path().join("chunks"))[0].clone();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();
    let d = sc.post("/admin/drill", r#"{"offsite": true}"#);
    assert_eq!(d.status, 500, "{}", d.body);
    let v = d.json();
    assert_eq!(v["passed"], false, "{v}");
    assert_eq!(v["error"], "drill_failed", "{v}");
    assert_eq!(v["offsite_checks"]["fetched"], false, "{v}");
    assert_eq!(v["offsite_checks"]["valid"], serde_json::Value::Null, "{v}");
    assert_eq!(v["offsite_checks"]["scratch_removed"], true, "{v}");
    let chunk_name = chunk.file_name().unwrap().to_str().unwrap();
    assert!(v["message"].as_str().unwrap().contains(chunk_name), "{v}");
    assert_eq!(snapshot_entries(&paths), snapshots_before);
    assert_eq!(scratch_folders(&paths.backup_dir), Vec::<String>::new());
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_drill_failures_total 1\n"), "{m}");
    assert!(m.contains("atocore_drill_last_passed 0\n"), "{m}");
}

/// The real binary on a free loopback port, with only the `ATOCORE_*` settings given.
struct Binary {
    child: std::process::Child,
    addr: String,
}

impl Binary {
    fn start(root: &std::path::Path, env: &[(&str, &str)]) -> Binary {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(bin());
        for (k, _) in std::env::vars() {
            if k.starts_with("ATOCORE_") || k == "DOCKER_HOST" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd
            .env("ATOCORE_STORAGE_ROOT", root)
            .env("ATOCORE_SIDECAR_ADDR", "127.0.0.1:0")
            .env("DOCKER_HOST", NO_DOCKER)
            .env("ATOCORE_URL", "http://127.0.0.1:9")
            .env("ATOCORE_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let addr = loop {
            let left = deadline
                .checked_duration_since(std::time::Instant::now())
                .expect("the sidecar did not start");
            let line = rx.recv_timeout(left).expect("the sidecar did not start");
            if line.contains("atocore-sidecar listening") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                break v["fields"]["addr"].as_str().unwrap().to_string();
            }
        };
        Binary { child, addr }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Resp {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(60)))
            .build()
            .new_agent();
        let url = format!("http://{}{path}", self.addr);
        let r = if method == "GET" {
            agent.get(&url).call()
        } else {
            agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.as_bytes())
        };
        Resp::from(r.unwrap())
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        assert_eq!(status.code(), Some(0));
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_binary_replicates_prunes_verifies_reports_and_drills_off_site() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    binary_flow(
        &[
            ("ATOCORE_OFFSITE_URL", url.as_str()),
            ("ATOCORE_OFFSITE_CONCURRENCY", "4"),
        ],
        None,
        &|| remote_stamps(remote.path()),
    );
}

/// The whole off-site life through the real binary, on the target `target_env` sets
/// (`target`: the URL `GET /admin/offsite` must name, when checked; `remote`: the
/// stamps on the target):
/// 1. on a schedule (every 3 s here): snapshot, push, the target's retention, verify
///    (reading every chunk);
/// 2. without a schedule: a manual snapshot is pushed after the answer; /health and
///    `GET /admin/offsite` report the lag; the off-site drill fetches it back.
fn binary_flow(
    target_env: &[(&str, &str)],
    target: Option<&str>,
    remote: &dyn Fn() -> Vec<String>,
) {
    let keys = tempfile::tempdir().unwrap();
    let identity = keys.path().join("offsite.key");
    std::fs::write(&identity, format!("{TEST_IDENTITY}\n")).unwrap();
    let (_dir, paths) = sample_root(20_000);
    let root = paths.storage_root.clone();
    let mut common = vec![
        ("ATOCORE_OFFSITE_RECIPIENTS", TEST_RECIPIENT),
        ("ATOCORE_OFFSITE_BANDWIDTH", "50MiB"),
    ];
    common.extend_from_slice(target_env);
    let verify_file = paths.backup_dir.join("offsite/sidecar-verify.json");

    // 1. On a schedule.
    let mut env = common.clone();
    env.extend([
        ("ATOCORE_BACKUP_SCHEDULE", "*/3 * * * * *"),
        ("ATOCORE_BACKUP_CHROMA_SCHEDULE", "off"),
        ("ATOCORE_MISSED_RUN", "skip"),
        ("ATOCORE_OFFSITE_VERIFY_READ_DATA", "100"),
    ]);
    let sc = Binary::start(&root, &env);
    assert!(
        wait_until(std::time::Duration::from_secs(60), || verify_file.exists()),
        "no verify ran"
    );
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&verify_file).unwrap()).unwrap();
    assert_eq!(record["ok"], true, "{record}");
    assert_eq!(record["read_data_percent"], 100.0, "{record}");
    assert!(record["chunks_read"].as_u64().unwrap() >= 1, "{record}");
    let m = sc.call("GET", "/metrics", "").body;
    assert!(m.contains("atocore_offsite_prune_runs_total 1\n"), "{m}");
    assert!(m.contains("atocore_offsite_push_failures_total 0\n"), "{m}");
    assert!(m.contains("atocore_offsite_verify_last_ok 1\n"), "{m}");
    assert!(
        m.contains("atocore_offsite_verify_last_problems 0\n"),
        "{m}"
    );
    sc.stop();
    assert!(!remote().is_empty());

    // 2. Without a schedule.
    let mut env = common.clone();
    env.extend([
        ("ATOCORE_SIDECAR_NO_SCHEDULE", "yes"),
        ("ATOCORE_OFFSITE_IDENTITY_FILE", identity.to_str().unwrap()),
    ]);
    let sc = Binary::start(&root, &env);
    let b = sc.call("POST", "/admin/backup", "{}");
    assert_eq!(b.status, 200, "{}", b.body);
    let stamp = b.json()["stamp"].as_str().unwrap().to_string();
    // Pushed, and the push finished (the drill below would get a 409 while it runs).
    assert!(
        wait_until(std::time::Duration::from_secs(60), || remote()
            .contains(&stamp)
            && sc.call("GET", "/health", "").json()["operation"].is_null()),
        "not pushed: {:?}",
        remote()
    );
    let l = sc.call("GET", "/admin/offsite", "");
    assert_eq!(l.status, 200, "{}", l.body);
    let v = l.json();
    assert_eq!(v["pending"], serde_json::json!([]), "{v}");
    assert!(
        (0..600).contains(&v["lag_seconds"].as_i64().unwrap()),
        "{v}"
    );
    assert_eq!(v["encrypted"], true, "{v}");
    if let Some(t) = target {
        assert_eq!(v["target"], t, "{v}");
    }
    let h = sc.call("GET", "/health", "").json();
    assert_eq!(h["offsite"]["newest_remote"], stamp.as_str(), "{h}");
    assert_eq!(h["offsite"]["last_verify"]["ok"], true, "{h}");
    assert_eq!(h["status"], "ok", "{h}");
    let snapshots_before = snapshot_entries(&paths);
    let d = sc.call("POST", "/admin/drill", r#"{"offsite": true}"#);
    assert_eq!(d.status, 200, "{}", d.body);
    let v = d.json();
    assert_eq!(v["offsite"], true, "{v}");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["stamp"], stamp.as_str(), "{v}");
    assert_eq!(snapshot_entries(&paths), snapshots_before);
    sc.stop();
}

/// A moto S3 server on a free loopback port with bucket `atocore-test`, killed on
/// drop; `None` (with a note) when it is not installed, outside CI.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Moto {
    fn start() -> Option<Moto> {
        let bin = std::env::var("ATOCORE_MOTO")
            .unwrap_or_else(|_| "/opt/atocore-moto/bin/moto_server".into());
        if !std::path::Path::new(&bin).exists() {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true"),
                "CI=true but there is no moto server at {bin}; .ci/run installs it"
            );
            eprintln!("skipped: no moto server at {bin} (see .ci/run to install it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let moto = Moto { child, port };
        assert!(
            wait_until(std::time::Duration::from_secs(60), || moto
                .create_bucket("atocore-test")),
            "moto did not start on {port}"
        );
        Some(moto)
    }

    /// `PUT /bucket`, unsigned (moto accepts any credentials).
    fn create_bucket(&self, bucket: &str) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let req = format!(
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.lines().next().is_some_and(|l| l.contains(" 200"))
    }

    /// The stamps under `snapshots/` of `prefix`, through moto's ListObjectsV2 (unsigned).
    fn remote_stamps(&self, prefix: &str) -> Vec<String> {
        let url = format!(
            "http://127.0.0.1:{}/atocore-test?list-type=2&prefix={prefix}/snapshots/",
            self.port
        );
        let body = ureq::get(&url)
            .call()
            .unwrap()
            .into_body()
            .read_to_string()
            .unwrap();
        let mut v: Vec<String> = body
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".json"))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_binary_does_the_same_on_s3() {
    let Some(moto) = Moto::start() else { return };
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    binary_flow(
        &[
            ("ATOCORE_OFFSITE_URL", "s3://atocore-test/sidecar"),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("ATOCORE_OFFSITE_CONCURRENCY", "2"),
        ],
        Some("s3://atocore-test/sidecar"),
        &|| moto.remote_stamps("sidecar"),
    );
}
