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
        let mut child = sidecar()
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
            .args(["--no-schedule", "--log-format", "json"])
            .args(extra)
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
