//! Shared helpers: an isolated environment for the real binary, and transcript line builders.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

/// Where the real transcripts are, beside the checkout (CI lays shared/ at the same
/// relative place).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/transcripts")
}

/// The real transcripts, or `None` with a one-line note when they are absent (a lone
/// clone: the synthetic tests in rules.rs cover every rule without them). Under `CI=true`
/// they must be there, as the Docker tests must run: their absence fails the test.
pub fn real_fixtures(test: &str) -> Option<PathBuf> {
    let dir = fixtures_dir();
    if dir.is_dir() {
        return Some(dir);
    }
    if is_ci() {
        panic!(
            "{test}: CI=true but the real transcripts are absent ({} is not a folder); CI lays shared/ beside the checkout",
            dir.display()
        );
    }
    eprintln!(
        "skipped: {test}: the real transcripts at {} are absent",
        dir.display()
    );
    None
}

/// Whether `CI` is set to a true value (the same rule as the Docker tests').
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true" | "1" | "TRUE" | "True" | "yes")
    )
}

/// A temp folder with a state dir, a HOME, and the settings the binary reads. The binary
/// runs with a cleared environment, so the developer's own settings never leak in.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub home: PathBuf,
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn new(url: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let vars = vec![
            ("ATOCORE_URL".to_string(), url.to_string()),
            (
                "ATOCORE_CAPTURE_DIR".to_string(),
                state.to_string_lossy().into_owned(),
            ),
            ("HOME".to_string(), home.to_string_lossy().into_owned()),
        ];
        Env {
            tmp,
            state,
            home,
            vars,
        }
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Env {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The binary with this environment only.
    pub fn command(&self) -> assert_cmd::Command {
        let mut cmd = assert_cmd::Command::cargo_bin("atocore-capture").unwrap();
        cmd.env_clear();
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.timeout(std::time::Duration::from_secs(30));
        cmd
    }

    /// Runs the hook. Whatever happens it must exit 0 and print nothing on stdout.
    pub fn hook(&self, stdin: &str) -> Output {
        self.hook_args(&[], stdin)
    }

    pub fn hook_args(&self, args: &[&str], stdin: &str) -> Output {
        let out = self
            .command()
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "hook exit status; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.is_empty(),
            "hook wrote on stdout: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        out
    }

    /// Runs a people's command and parses its JSON stdout.
    pub fn json(&self, args: &[&str]) -> (i32, Value) {
        let out = self.command().args(args).output().unwrap();
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout of {args:?} is not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), v)
    }

    pub fn outbox(&self) -> Vec<String> {
        list(&self.state.join("outbox"))
    }

    pub fn dead(&self) -> Vec<String> {
        list(&self.state.join("dead"))
            .into_iter()
            .filter(|n| n.ends_with(".json"))
            .collect()
    }

    pub fn write_transcript(&self, name: &str, lines: &[String]) -> PathBuf {
        let mut text = String::new();
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `extract` on a transcript: (prompt, response) or None when nothing is captured.
    pub fn extract(&self, transcript: &Path) -> Option<(String, Option<String>)> {
        let (code, v) = self.json(&["extract", transcript.to_str().unwrap()]);
        assert_eq!(code, 0, "{v}");
        if v["found"] != "turn" {
            return None;
        }
        Some((
            v["prompt"].as_str().unwrap().to_string(),
            v["response"].as_str().map(str::to_string),
        ))
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The Stop hook's stdin.
pub fn stop_input(session: &str, transcript: &Path, cwd: &str, extra: Value) -> String {
    let mut v = json!({
        "session_id": session,
        "transcript_path": transcript,
        "cwd": cwd,
        "hook_event_name": "Stop",
        "stop_hook_active": false,
        "permission_mode": "default",
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    v.to_string()
}

// ---- transcript lines (keys in Claude Code's order where it matters) ----

fn entry(kind: &str, uuid: &str, body: Value, extra: Value) -> String {
    // Built as text so the top-level keys keep Claude Code's order (`type` before
    // `message`), which serde_json's sorted maps would not.
    let fields = |v: &Value| -> String {
        match v {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!(",{}:{}", json!(k), v))
                .collect(),
            _ => String::new(),
        }
    };
    format!(
        r#"{{"parentUuid":null,"isSidechain":false,"userType":"external","cwd":"/work/proj","sessionId":"s1","version":"2.1.38","type":{}{}{},"uuid":{},"timestamp":"2026-01-01T00:00:00.000Z"}}"#,
        json!(kind),
        fields(&body),
        fields(&extra),
        json!(uuid)
    )
}

/// A user entry whose content is a string.
pub fn user(uuid: &str, text: &str) -> String {
    user_with(uuid, json!(text), json!({}))
}

/// A user entry with any content and extra top-level fields.
pub fn user_with(uuid: &str, content: Value, extra: Value) -> String {
    entry(
        "user",
        uuid,
        json!({"message": {"role": "user", "content": content}}),
        extra,
    )
}

/// A tool_result user entry.
pub fn tool_result(uuid: &str, content: &str) -> String {
    user_with(
        uuid,
        json!([{"type": "tool_result", "content": content, "tool_use_id": "toolu_1"}]),
        json!({}),
    )
}

fn assistant(uuid: &str, msg_id: &str, block: Value) -> String {
    entry(
        "assistant",
        uuid,
        json!({"message": {"id": msg_id, "type": "message", "role": "assistant", "model": "m",
            "content": [block], "stop_reason": null}}),
        json!({}),
    )
}

pub fn say(uuid: &str, msg_id: &str, text: &str) -> String {
    assistant(uuid, msg_id, json!({"type": "text", "text": text}))
}

pub fn think(uuid: &str, msg_id: &str, text: &str) -> String {
    assistant(
        uuid,
        msg_id,
        json!({"type": "thinking", "thinking": text, "signature": "sig"}),
    )
}

pub fn tool_use(uuid: &str, msg_id: &str) -> String {
    assistant(
        uuid,
        msg_id,
        json!({"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}}),
    )
}

pub fn system(uuid: &str, subtype: &str, content: &str) -> String {
    entry(
        "system",
        uuid,
        json!({"subtype": subtype, "content": content, "level": "info"}),
        json!({"isMeta": false}),
    )
}

pub fn progress(uuid: &str, payload_bytes: usize) -> String {
    entry(
        "progress",
        uuid,
        json!({"data": {"type": "hook_progress", "output": "p".repeat(payload_bytes)}}),
        json!({}),
    )
}

pub fn queued(uuid: &str, prompt: &str) -> String {
    entry(
        "attachment",
        uuid,
        json!({"attachment": {"type": "queued_command", "commandMode": "prompt",
            "origin": {"kind": "human"}, "prompt": prompt}}),
        json!({}),
    )
}

/// The same line as written by a subagent (`isSidechain: true`).
pub fn sidechain(line: String) -> String {
    assert!(line.contains(r#""isSidechain":false"#), "{line}");
    line.replace(r#""isSidechain":false"#, r#""isSidechain":true"#)
}
