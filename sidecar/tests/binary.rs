//! The real binary: settings refusals, the healthcheck subcommand, and SIGTERM/SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

use crate::util::{NO_DOCKER, Sidecar, sample_root, snapshot_entries, stamps};

fn sidecar() -> Command {
    let mut c = Command::cargo_bin("atocore-sidecar").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("ATOCORE_") || k == "DOCKER_HOST" {
            c.env_remove(k);
        }
    }
    c
}

#[test]
fn refuses_a_non_loopback_address_without_a_token() {
    let out = sidecar()
        .args([
            "--addr",
            "0.0.0.0:0",
            "--storage-root",
            "/nonexistent",
            "--log-format",
            "text",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without a token"),
        "{err}"
    );
    assert!(err.contains("ATOCORE_SIDECAR_TOKEN"), "{err}");
    assert!(out.stdout.is_empty());
    // Besides the log line, one plain line says exactly what to do.
    assert_eq!(
        err.lines().last().unwrap(),
        "atocore-sidecar: refusing to listen on 0.0.0.0:0 without a token: anyone who can reach it could restore or delete snapshots. Set ATOCORE_SIDECAR_TOKEN (e.g. `openssl rand -hex 32`) or listen on loopback (ATOCORE_SIDECAR_ADDR=127.0.0.1:8101)"
    );

    let out = sidecar()
        .args(["--shutdown-secs", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: invalid value 'soon' for '--shutdown-secs <SHUTDOWN_SECS>': `soon` is not a duration (expected number at 0); write a number, or one with a unit: 90s, 2m, 1h\n\nFor more information, try '--help'.\n"
    );

    let out = sidecar()
        .args(["--schedule", "0 6 * * 1", "--log-format", "text"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names"));
}

#[test]
fn healthcheck_exits_0_when_the_sidecar_answers_and_1_otherwise() {
    let sc = Sidecar::start();
    let url = sc.url("/health");
    let ok = sidecar()
        .args(["healthcheck", "--url", &url])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // No snapshot yet: degraded, which --strict refuses.
    let strict = sidecar()
        .args(["healthcheck", "--strict", "--url", &url])
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
    sc.stop();
    let down = sidecar()
        .args(["healthcheck", "--timeout-ms", "500", "--url", &url])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
}

/// The binary, serving `root` on a free port; its stderr lines arrive on the channel.
struct Running {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Running {
    fn start(root: &std::path::Path, extra: &[&str]) -> Running {
        let mut args = vec!["--no-schedule"];
        args.extend_from_slice(extra);
        Running::spawn(root, &args, &[])
    }

    /// Like `start`, without `--no-schedule` unless `args` has it, with `env` set.
    fn spawn(root: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = sidecar()
            .envs(env.iter().copied())
            .args([
                "--storage-root",
                root.to_str().unwrap(),
                "--addr",
                "127.0.0.1:0",
            ])
            .args([
                "--docker-host",
                NO_DOCKER,
                "--atocore-url",
                "http://127.0.0.1:9",
            ])
            .args(["--log-format", "json"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut r = Running {
            child,
            addr: String::new(),
            lines,
            log: Vec::new(),
        };
        let line = r
            .wait_line(Duration::from_secs(20), "atocore-sidecar listening")
            .expect("the sidecar did not start");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        r.addr = v["fields"]["addr"].as_str().unwrap().to_string();
        r
    }

    fn wait_line(&mut self, timeout: Duration, needle: &str) -> Option<String> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0);
    }

    /// Wait for the exit; the exit code and how long it took.
    fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(l);
                }
                return (status.code(), started.elapsed());
            }
            if started.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "the sidecar did not exit within {timeout:?}:\n{}",
                    self.log.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_and_sigint_when_idle_exit_0_at_once() {
    let (_dir, paths) = sample_root(100);
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut r = Running::start(&paths.storage_root, &[]);
        let ok = ureq::get(&format!("http://{}/health", r.addr))
            .call()
            .unwrap();
        assert_eq!(ok.status(), 200);
        r.signal(sig);
        let (code, took) = r.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(0), "{}", r.log.join("\n"));
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
}

#[test]
fn sigterm_during_a_large_backup_leaves_no_partial_snapshot_and_exits_0() {
    let (_dir, paths) = sample_root(1_000_000);
    let mut r = Running::start(&paths.storage_root, &["--shutdown-secs", "30"]);
    let url = format!("http://{}/admin/backup", r.addr);
    let client = std::thread::spawn(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        agent
            .post(&url)
            .send("{\"include_chroma\": true}")
            .map(|r| {
                (
                    r.status().as_u16(),
                    r.into_body().read_to_string().unwrap_or_default(),
                )
            })
    });
    let snaps = paths.snapshots_dir();
    let started = Instant::now();
    let saw_partial = loop {
        let partial = std::fs::read_dir(&snaps)
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            })
            .unwrap_or(false);
        if partial {
            break true;
        }
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        saw_partial,
        "the backup never started: {:?}",
        snapshot_entries(&paths)
    );
    r.signal(libc::SIGTERM);
    let (code, took) = r.wait_exit(Duration::from_secs(40));
    let log = r.log.join("\n");
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(30), "{took:?}");
    let left: Vec<String> = snapshot_entries(&paths)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "hidden leftovers {left:?}\n{log}");
    // Either cancelled (nothing published) or finished (published and whole).
    let answer = client.join().unwrap();
    match stamps(&paths).as_slice() {
        [] => {
            assert!(log.contains("backup cancelled"), "{log}");
            eprintln!("SIGTERM cancelled the backup; exit after {took:?}");
        }
        [one] => {
            let v = atocore_restore_job::validate::validate(
                &paths,
                &atocore_restore_job::Stamp::parse(one).unwrap(),
            )
            .unwrap();
            assert!(v.valid, "{v:?}");
            eprintln!("the backup finished before the exit ({took:?})");
        }
        more => panic!("{more:?}"),
    }
    if let Ok((status, body)) = answer {
        assert!(status == 503 || status == 200, "{status} {body}");
    }
}

/// `GET /health` of a running binary: its `schedule` is null when no snapshots are scheduled.
fn schedule_of(r: &Running) -> serde_json::Value {
    let body = ureq::get(&format!("http://{}/health", r.addr))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["schedule"].clone()
}

#[test]
fn boolean_settings_take_the_spellings_env_files_use() {
    let (_dir, paths) = sample_root(50);
    // Keep a scheduled sidecar from starting a catch-up snapshot while it is looked at.
    let quiet = ["--missed-run", "skip"];
    let cases = [
        ("1", true),
        ("true", true),
        ("yes", true),
        ("on", true),
        ("TRUE", true),
        ("0", false),
        ("false", false),
        ("no", false),
        ("off", false),
        ("Off", false),
    ];
    for (value, off) in cases {
        let mut r = Running::spawn(
            &paths.storage_root,
            &quiet,
            &[("ATOCORE_SIDECAR_NO_SCHEDULE", value)],
        );
        let schedule = schedule_of(&r);
        assert_eq!(
            schedule.is_null(),
            off,
            "ATOCORE_SIDECAR_NO_SCHEDULE={value}: {schedule}"
        );
        if !off {
            assert_eq!(schedule["backup"], "0 6 * * *", "{value}: {schedule}");
        }
        r.signal(libc::SIGTERM);
        assert_eq!(r.wait_exit(Duration::from_secs(10)).0, Some(0), "{value}");
    }
    // The flag alone is true, `=value` takes the same spellings and beats the env.
    for (args, env, off) in [
        (vec!["--no-schedule"], None, true),
        (vec!["--no-schedule=no"], Some("yes"), false),
        (vec!["--no-schedule=on"], Some("0"), true),
    ] {
        let mut all = quiet.to_vec();
        all.extend(args.iter().copied());
        let env: Vec<(&str, &str)> = env
            .map(|v| ("ATOCORE_SIDECAR_NO_SCHEDULE", v))
            .into_iter()
            .collect();
        let mut r = Running::spawn(&paths.storage_root, &all, &env);
        assert_eq!(schedule_of(&r).is_null(), off, "{args:?} {env:?}");
        r.signal(libc::SIGTERM);
        assert_eq!(r.wait_exit(Duration::from_secs(10)).0, Some(0));
    }
    // Anything else is still a settings error (exit 2) that names the setting.
    let out = sidecar()
        .env("ATOCORE_SIDECAR_NO_SCHEDULE", "maybe")
        .args(["--storage-root", paths.storage_root.to_str().unwrap()])
        .args(["--log-format", "text"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("maybe") && err.contains("--no-schedule"),
        "{err}"
    );
}
