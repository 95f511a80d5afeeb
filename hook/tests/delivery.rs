//! The hook against a recording server: body, kill switch, bad input, outbox, dedup,
//! concurrency, time budget, panics.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::server::{Server, dead_url};
use crate::util::*;

fn simple_transcript(env: &Env, name: &str, prompt: &str, reply: &str) -> PathBuf {
    env.write_transcript(
        name,
        &[
            user(&format!("u-{prompt}"), prompt),
            say(&format!("a-{prompt}"), &format!("m-{prompt}"), reply),
        ],
    )
}

#[test]
fn body_has_every_contract_field() {
    let server = Server::start();
    let mut env = Env::new(&server.url());
    env.set("ATOCORE_PROJECT", "atocore");
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi there");
    env.hook(&stop_input("sess-1", &t, "/somewhere/else", json!({})));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/interactions");
    assert_eq!(
        reqs[0].body,
        json!({"prompt": "hello", "response": "hi there", "client": "claude-code",
            "session_id": "sess-1", "project": "atocore", "reinforce": false})
    );
}

#[test]
fn project_comes_from_the_map_then_git_root_then_folder() {
    let server = Server::start();
    let mut env = Env::new(&server.url());
    let map = env.path("projects.json");
    std::fs::write(&map, r#"{"/srv/code/atocore": "atocore-main"}"#).unwrap();
    env.set("ATOCORE_CAPTURE_PROJECTS", map.to_str().unwrap());
    let repo = env.path("repos/my-repo");
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    let cases = [
        ("/srv/code/atocore/hook", "atocore-main"),
        (
            repo.join("sub").to_str().unwrap().to_string().leak() as &str,
            "my-repo",
        ),
        ("/tmp/plain-folder", "plain-folder"),
    ];
    for (i, (cwd, want)) in cases.iter().enumerate() {
        let t = simple_transcript(&env, &format!("t{i}.jsonl"), &format!("p{i}"), "r");
        env.hook(&stop_input(&format!("s{i}"), &t, cwd, json!({})));
        assert_eq!(server.bodies()[i]["project"], *want, "cwd {cwd}");
    }
}

#[test]
fn kill_switch_does_nothing_at_all() {
    let server = Server::start();
    let mut env = Env::new(&server.url());
    env.set("ATOCORE_CAPTURE_DISABLED", "1");
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    let out = env.hook(&stop_input("s", &t, "/w", json!({})));
    assert!(out.stderr.is_empty());
    assert!(server.requests().is_empty());
    assert!(
        !env.state.exists(),
        "the state directory must not even be created"
    );
    // Garbage on stdin changes nothing either.
    env.hook("this is not json");
    assert!(!env.state.exists());
}

#[test]
fn malformed_stdin_and_missing_transcript_exit_0_quietly() {
    let server = Server::start();
    let env = Env::new(&server.url());
    for stdin in [
        "",
        "not json",
        "[1,2]",
        "{\"session_id\": 5}",
        "{\"transcript_path\": \"/does/not/exist.jsonl\", \"session_id\": \"s\"}",
        "{\"transcript_path\": \"/\", \"session_id\": \"s\"}",
    ] {
        let out = env.hook(stdin);
        assert!(
            !out.stderr.is_empty(),
            "a diagnostic on stderr for {stdin:?}"
        );
    }
    let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(5 << 20));
    env.hook(&huge);
    assert!(server.requests().is_empty());
    // Diagnostics also land in the log next to the outbox.
    let log = std::fs::read_to_string(env.state.join("capture.log")).unwrap();
    assert!(log.contains("cannot read transcript"), "{log}");
}

#[test]
fn other_hook_events_are_ignored() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    env.hook(&stop_input(
        "s",
        &t,
        "/w",
        json!({"hook_event_name": "SubagentStop"}),
    ));
    assert!(server.requests().is_empty());
}

#[test]
fn service_down_then_up_delivers_the_outbox_once_oldest_first() {
    let server = Server::start();
    let mut env = Env::new(&dead_url());
    for (i, p) in ["first", "second", "third"].iter().enumerate() {
        let t = simple_transcript(&env, &format!("t{i}.jsonl"), p, "r");
        let started = Instant::now();
        let out = env.hook(&stop_input(&format!("s{i}"), &t, "/w", json!({})));
        assert!(started.elapsed() < Duration::from_millis(1500));
        assert!(String::from_utf8_lossy(&out.stderr).contains("outbox"));
    }
    assert_eq!(env.outbox().len(), 3);
    let (_, status) = env.json(&["status"]);
    assert_eq!(status["outbox"]["pending"], 3);
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("POST")
    );

    // Up again: the next Stop (a repeat of the third turn) delivers all three, in order.
    env.set("ATOCORE_URL", &server.url());
    let t = env.path("t2.jsonl");
    env.hook(&stop_input("s2", &t, "/w", json!({})));
    let prompts: Vec<_> = server
        .bodies()
        .iter()
        .map(|b| b["prompt"].clone())
        .collect();
    assert_eq!(prompts, vec!["first", "second", "third"]);
    assert!(env.outbox().is_empty());
    env.hook(&stop_input("s2", &t, "/w", json!({})));
    assert_eq!(server.requests().len(), 3);
    let (_, status) = env.json(&["status"]);
    assert_eq!(status["delivered_total"], 3);
    assert_eq!(status["outbox"]["pending"], 0);
    assert!(status["last_delivery"]["at"].is_string());
}

#[test]
fn server_errors_keep_the_capture_and_client_errors_dead_letter_it() {
    let server = Server::start();
    let env = Env::new(&server.url());
    server.set_status(500);
    let t = simple_transcript(&env, "t1.jsonl", "one", "r");
    env.hook(&stop_input("s", &t, "/w", json!({})));
    assert_eq!(env.outbox().len(), 1);
    let (_, status) = env.json(&["status"]);
    assert_eq!(status["last_error"]["http_status"], 500);
    server.set_status(429);
    let (code, v) = env.json(&["flush"]);
    assert_eq!((code, v["pending"].as_u64()), (1, Some(1)), "{v}");

    server.set_status(422);
    let (code, v) = env.json(&["flush"]);
    assert_eq!((code, v["dead_lettered"].as_u64()), (0, Some(1)), "{v}");
    assert!(env.outbox().is_empty());
    assert_eq!(env.dead().len(), 1);
    let (_, status) = env.json(&["status"]);
    assert_eq!(status["dead"]["count"], 1);
    assert_eq!(status["last_error"]["http_status"], 422);
    assert!(
        status["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("dead-letter")
    );

    server.set_status(201);
    let (code, v) = env.json(&["flush", "--retry-dead"]);
    assert_eq!(
        (code, v["delivered"].as_u64(), v["requeued_dead"].as_u64()),
        (0, Some(1), Some(1)),
        "{v}"
    );
    assert!(env.dead().is_empty());
    // 500, 429 (flush), 422 (flush), 201: the same capture four times, accepted once.
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn repeated_stop_events_capture_once() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    for _ in 0..4 {
        env.hook(&stop_input("s", &t, "/w", json!({})));
    }
    // A wake-up: a background task notification and a new reply, same last prompt.
    let mut lines = vec![user("u-hello", "hello"), say("a-hello", "m-hello", "hi")];
    lines.push(user(
        "u-n",
        "<task-notification>job 1 done</task-notification>",
    ));
    lines.push(say("a-n", "m-n", "The job finished."));
    env.write_transcript("t.jsonl", &lines);
    env.hook(&stop_input("s", &t, "/w", json!({})));
    assert_eq!(server.requests().len(), 1);
    // A new prompt is a new capture.
    lines.push(user("u-2", "next question"));
    lines.push(say("a-2", "m-2", "next answer"));
    env.write_transcript("t.jsonl", &lines);
    env.hook(&stop_input("s", &t, "/w", json!({})));
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[1]["prompt"], "next question");
}

#[test]
fn hooks_running_at_once_send_each_capture_once() {
    let server = Server::start();
    server.set_delay(Duration::from_millis(50));
    let env = Env::new(&server.url());
    let same = simple_transcript(&env, "same.jsonl", "same turn", "r");
    let other = simple_transcript(&env, "other.jsonl", "other turn", "r");
    let bin = assert_cmd::cargo::cargo_bin("atocore-capture");
    let mut children = Vec::new();
    for i in 0..6 {
        let t = if i % 3 == 2 { &other } else { &same };
        let session = if i % 3 == 2 { "s-other" } else { "s-same" };
        let mut cmd = std::process::Command::new(&bin);
        cmd.env_clear()
            .env("ATOCORE_URL", server.url())
            .env("ATOCORE_CAPTURE_DIR", &env.state)
            .env("HOME", &env.home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let input = stop_input(session, t, "/w", json!({}));
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
        drop(child.stdin.take());
        children.push(child);
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(out.stdout.is_empty());
    }
    // Anything left (a hook that found the other delivering) goes with a flush.
    let (code, _) = env.json(&["flush"]);
    assert_eq!(code, 0);
    let mut prompts: Vec<String> = server
        .bodies()
        .iter()
        .map(|b| b["prompt"].as_str().unwrap().to_string())
        .collect();
    prompts.sort();
    assert_eq!(prompts, vec!["other turn", "same turn"]);
}

#[test]
fn a_slow_server_does_not_hold_the_hook_past_its_budget() {
    let server = Server::start();
    server.set_delay(Duration::from_secs(3));
    let mut env = Env::new(&server.url());
    env.set("ATOCORE_CAPTURE_TIMEOUT_MS", "400");
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    let started = Instant::now();
    env.hook(&stop_input("s", &t, "/w", json!({})));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(900), "took {took:?}");
    assert_eq!(env.outbox().len(), 1, "kept for the next run");
}

#[test]
fn a_panic_still_exits_0_with_nothing_on_stdout() {
    let server = Server::start();
    let mut env = Env::new(&server.url());
    env.set("ATOCORE_CAPTURE_FAULT", "panic");
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    let out = env.hook(&stop_input("s", &t, "/w", json!({})));
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected panic"));
}

#[test]
fn a_bad_command_line_or_bad_settings_still_capture() {
    let server = Server::start();
    let mut env = Env::new(&server.url());
    env.set("ATOCORE_CAPTURE_TIMEOUT_MS", "soon");
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    let out = env.hook_args(&["--no-such-flag"], &stop_input("s", &t, "/w", json!({})));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ignoring the command line"), "{err}");
    assert!(err.contains("ATOCORE_CAPTURE_TIMEOUT_MS"), "{err}");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn unusable_state_directory_sends_directly() {
    let server = Server::start();
    let mut env = Env::new(&server.url());
    let file = env.path("a-file");
    std::fs::write(&file, "").unwrap();
    env.set("ATOCORE_CAPTURE_DIR", file.join("state").to_str().unwrap());
    let t = simple_transcript(&env, "t.jsonl", "hello", "hi");
    let out = env.hook(&stop_input("s", &t, "/w", json!({})));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ATOCORE_CAPTURE_DIR"));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_stdin_that_is_never_closed_does_not_hold_the_hook() {
    let server = Server::start();
    let env = Env::new(&server.url());
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("atocore-capture"))
        .env_clear()
        .env("ATOCORE_URL", server.url())
        .env("ATOCORE_CAPTURE_DIR", &env.state)
        .env("ATOCORE_CAPTURE_TIMEOUT_MS", "300")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"{\"session_id\":").unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still running");
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(stdin);
    assert_eq!(status.code(), Some(0));
    assert!(server.requests().is_empty());
}
