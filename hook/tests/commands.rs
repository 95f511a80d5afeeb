//! The commands people run: install, status, flush, extract, help.

use serde_json::{Value, json};

use crate::util::Env;

const SETTINGS: &str = r#"{
  "model": "opus",
  "permissions": {
    "allow": ["Bash(ls:*)"]
  },
  "hooks": {
    "PreToolUse": [
      {"matcher": "Bash", "hooks": [{"type": "command", "command": "/usr/local/bin/guard"}]}
    ],
    "Stop": [
      {"hooks": [{"type": "command", "command": "/usr/local/bin/notify-done", "timeout": 3}]}
    ]
  },
  "env": {"FOO": "1"}
}
"#;

fn install(env: &Env, settings: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "install",
        "--settings",
        settings.to_str().unwrap(),
        "--command",
        "/opt/atocore/bin/atocore-capture",
    ];
    args.extend_from_slice(extra);
    env.json(&args)
}

fn backups(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(env.path("claude"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bak"))
        .collect();
    v.sort();
    v
}

#[test]
fn install_adds_the_hook_keeps_everything_else_and_is_idempotent() {
    let env = Env::new("http://127.0.0.1:9");
    std::fs::create_dir_all(env.path("claude")).unwrap();
    let settings = env.path("claude/settings.json");
    std::fs::write(&settings, SETTINGS).unwrap();

    // Dry run: prints the result, writes nothing.
    let (code, printed) = install(&env, &settings, &["--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), SETTINGS);
    assert!(backups(&env).is_empty());

    let (code, report) = install(&env, &settings, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["action"], "added");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(
        after, printed,
        "the dry run printed what install then wrote"
    );

    let mut expected: Value = serde_json::from_str(SETTINGS).unwrap();
    expected["hooks"]["Stop"].as_array_mut().unwrap().push(json!(
        {"hooks": [{"type": "command", "command": "/opt/atocore/bin/atocore-capture", "timeout": 5}]}
    ));
    assert_eq!(after, expected);
    // Key order is the person's.
    let text = std::fs::read_to_string(&settings).unwrap();
    let pos = |k: &str| text.find(k).unwrap();
    assert!(pos("\"model\"") < pos("\"permissions\"") && pos("\"hooks\"") < pos("\"env\""));
    // The backup is the original file.
    let baks = backups(&env);
    assert_eq!(baks.len(), 1);
    assert_eq!(
        std::fs::read_to_string(env.path("claude").join(&baks[0])).unwrap(),
        SETTINGS
    );
    assert_eq!(
        report["backup"],
        env.path("claude").join(&baks[0]).to_str().unwrap()
    );

    // Again: unchanged, no new backup, same bytes.
    let (code, report) = install(&env, &settings, &[]);
    assert_eq!((code, report["action"].as_str()), (0, Some("unchanged")));
    assert_eq!(std::fs::read_to_string(&settings).unwrap(), text);
    assert_eq!(backups(&env).len(), 1);

    // A moved binary: the entry is updated in place, not duplicated.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_, report) = env.json(&[
        "install",
        "--settings",
        settings.to_str().unwrap(),
        "--command",
        "/home/me/bin/atocore-capture",
    ]);
    assert_eq!(report["action"], "updated");
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    let stop = after["hooks"]["Stop"].as_array().unwrap();
    assert_eq!(stop.len(), 2);
    assert_eq!(
        stop[1]["hooks"][0]["command"],
        "/home/me/bin/atocore-capture"
    );
    assert_eq!(
        after["hooks"]["PreToolUse"],
        expected["hooks"]["PreToolUse"]
    );
    assert_eq!(backups(&env).len(), 2);
}

#[test]
fn install_creates_a_missing_file_and_refuses_a_broken_one() {
    let env = Env::new("http://127.0.0.1:9");
    let settings = env.path("new/dir/settings.json");
    let (code, report) = install(&env, &settings, &[]);
    assert_eq!((code, report["action"].as_str()), (0, Some("added")));
    assert_eq!(report["backup"], Value::Null);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(v["hooks"]["Stop"][0]["hooks"][0]["type"], "command");

    let broken = env.path("broken.json");
    std::fs::write(&broken, "{\"hooks\": ").unwrap();
    let out = env
        .command()
        .args(["install", "--settings", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.json") && err.contains("not valid JSON"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "{\"hooks\": ");

    let odd = env.path("odd.json");
    std::fs::write(&odd, r#"{"hooks": {"Stop": {"not": "an array"}}}"#).unwrap();
    let out = env
        .command()
        .args(["install", "--settings", odd.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`hooks.Stop` is not an array"));
}

#[test]
fn install_defaults_to_this_binary_and_the_home_settings() {
    let env = Env::new("http://127.0.0.1:9");
    let (code, report) = env.json(&["install"]);
    assert_eq!(code, 0, "{report}");
    let settings = env.home.join(".claude/settings.json");
    assert_eq!(
        report["settings"],
        settings.canonicalize().unwrap().to_str().unwrap()
    );
    let command = report["command"].as_str().unwrap();
    assert!(
        command.ends_with("atocore-capture") && command.starts_with('/'),
        "{command}"
    );
}

#[test]
fn status_on_a_fresh_machine_and_flush_of_nothing() {
    let env = Env::new("http://127.0.0.1:9");
    let (code, v) = env.json(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(v["outbox"]["pending"], 0);
    assert_eq!(v["dead"]["count"], 0);
    assert_eq!(v["last_delivery"], Value::Null);
    assert_eq!(v["last_error"], Value::Null);
    assert_eq!(v["url"], "http://127.0.0.1:9/interactions");
    assert_eq!(v["disabled"], false);
    assert!(!env.state.exists(), "status creates nothing");
    let (code, v) = env.json(&["flush"]);
    assert_eq!(code, 0);
    assert_eq!(
        v,
        json!({"delivered": 0, "dead_lettered": 0, "pending": 0, "busy": false, "error": null, "requeued_dead": 0})
    );
}

#[test]
fn people_commands_refuse_bad_settings_and_help_works() {
    let mut env = Env::new("ftp://wrong");
    let out = env.command().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ATOCORE_URL") && err.contains("http://"),
        "{err}"
    );
    env.set("ATOCORE_URL", "http://127.0.0.1:9");
    let out = env.command().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["install", "status", "flush", "extract", "ATOCORE_URL"] {
        assert!(help.contains(word), "{word} in {help}");
    }
    let out = env.command().args(["flush", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn install_leaves_unusual_entries_alone() {
    let env = Env::new("http://127.0.0.1:9");
    let settings = env.path("settings.json");
    let original = r#"{"hooks":{"Stop":[{"matcher":"","hooks":[]},"odd",{"hooks":[{"type":"command","command":"other"}]}]},"x":[1.5,null]}"#;
    std::fs::write(&settings, original).unwrap();
    let (code, _) = install(&env, &settings, &[]);
    assert_eq!(code, 0);
    let after: Value = serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    let mut expected: Value = serde_json::from_str(original).unwrap();
    expected["hooks"]["Stop"].as_array_mut().unwrap().push(json!(
        {"hooks": [{"type": "command", "command": "/opt/atocore/bin/atocore-capture", "timeout": 5}]}
    ));
    assert_eq!(after, expected);
}

/// The one error line a people's command prints, without its timestamp and pid.
fn error_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().last().unwrap_or_default();
    line.split_once(" error: ")
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| panic!("no error line in {text:?}"))
}

#[test]
fn the_main_errors_say_exactly_what_is_wrong() {
    let mut env = Env::new("ftp://wrong");
    let out = env.command().arg("status").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        error_line(&out.stderr),
        "ATOCORE_URL=\"ftp://wrong\" is not valid: expected a plain http:// URL such as http://127.0.0.1:8100 (https is not built in: AtoCore is a local service)"
    );
    env.set("ATOCORE_URL", "http://127.0.0.1:9");
    let missing = env.tmp.path().join("no-such-transcript.jsonl");
    let out = env.command().arg("extract").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        error_line(&out.stderr),
        format!(
            "cannot read transcript `{}`: No such file or directory (os error 2)",
            missing.display()
        )
    );
}
