//! Helpers for the orchestrated-restore and drill tests: the sidecar's admin API with
//! long timeouts, the restore files on the backups volume, container facts (start time,
//! pause, log lines), fingerprints of the storage tree, and a slow client that holds
//! atocore's shutdown open.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::docker;
use crate::stack::Stack;

pub use crate::http::{Answer, request};

/// How long a restore or a drill may take in the tests (the 2-core machine is shared).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(180);

impl Stack {
    /// `GET` on the sidecar with the token.
    pub fn admin_get(&self, path: &str) -> Answer {
        request(
            "GET",
            &self.sidecar_url(path),
            Some(&self.bearer()),
            None,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `POST` on the sidecar with the token and a JSON body (long timeout: restores and
    /// drills answer when they are done).
    pub fn admin_post(&self, path: &str, body: &str) -> Answer {
        request(
            "POST",
            &self.sidecar_url(path),
            Some(&self.bearer()),
            Some(body),
            OPERATION_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The sidecar's `/metrics` text.
    pub fn metrics(&self) -> String {
        request(
            "GET",
            &self.sidecar_url("/metrics"),
            None,
            None,
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .text
    }

    /// A snapshot's row in `GET /admin/backup`, if listed.
    pub fn listed(&self, stamp: &str) -> Option<Value> {
        let list = self.admin_get("/admin/backup");
        assert_eq!(list.status, 200, "{}", list.text);
        list.json["backups"]
            .as_array()
            .expect("a backups array")
            .iter()
            .find(|b| b["stamp"] == stamp)
            .cloned()
    }

    /// `<root>/backups/restore/<name>` (request.json, result.json, journal.json,
    /// aside.json, staged.json).
    pub fn restore_file(&self, name: &str) -> PathBuf {
        self.root.join("backups/restore").join(name)
    }

    /// A restore file parsed, or `None` when it is absent.
    pub fn read_restore_file(&self, name: &str) -> Option<Value> {
        let text = std::fs::read(self.restore_file(name)).ok()?;
        Some(serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{name}: {e}")))
    }

    /// The restore files present now, of the five the engine writes.
    pub fn restore_files_present(&self) -> Vec<&'static str> {
        [
            "request.json",
            "result.json",
            "journal.json",
            "aside.json",
            "staged.json",
        ]
        .into_iter()
        .filter(|f| self.restore_file(f).exists())
        .collect()
    }

    /// Leftovers of a restore beside the live files (staged copies, aside copies,
    /// chroma staging), as paths relative to the storage root.
    pub fn restore_leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for dir in ["data/db", "config"] {
            if let Ok(rd) = std::fs::read_dir(self.root.join(dir)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.contains(".restore-tmp") || name.contains(".aside") {
                        found.push(format!("{dir}/{name}"));
                    }
                }
            }
        }
        let chroma_staging = self.root.join("data/chroma/.atocore-restore");
        for (path, _) in tree(&chroma_staging) {
            found.push(format!("data/chroma/.atocore-restore/{path}"));
        }
        found
    }

    /// Memory contents of one project, oldest first.
    pub fn memories(&self, project: &str) -> Vec<String> {
        let (status, body) =
            crate::http::get(&self.url(&format!("/memory?project={project}"))).unwrap();
        assert_eq!(status, 200, "{body}");
        body["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Stores a memory through atocore; panics unless it was created.
    pub fn remember(&self, content: &str, project: &str) {
        let body = serde_json::json!({"memory_type": "episodic", "content": content,
                                      "project": project, "confidence": 0.9});
        let (status, answer) = crate::http::post(&self.url("/memory"), &body).unwrap();
        assert_eq!(status, 201, "POST /memory {content}: {answer}");
    }

    /// atocore's `/stats` (memories, embeddings, ...).
    pub fn stats(&self) -> Value {
        let (status, body) = crate::http::get(&self.url("/stats")).unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Memory contents of one project read straight from a database file (immutable: no
/// lock, nothing written), e.g. a snapshot's `db/atocore.db`.
pub fn memories_in_file(db: &Path, project: &str) -> Vec<String> {
    let uri = format!("file:{}?immutable=1", db.display());
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
    let conn = rusqlite::Connection::open_with_flags(&uri, flags)
        .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
    let mut stmt = conn
        .prepare("SELECT content FROM memories WHERE project = ?1 ORDER BY created_at, rowid")
        .unwrap();
    stmt.query_map([project], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A container's `State.StartedAt` (changes on every start), its `Id`, whether it is
/// paused, and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub id: String,
    pub started_at: String,
    pub status: String,
    pub paused: bool,
    pub exit_code: i64,
}

/// The facts of a container by name; panics when it does not exist.
pub fn facts(container: &str) -> Facts {
    let v = docker::inspect(container).unwrap_or_else(|| panic!("no container {container}"));
    let state = &v["State"];
    Facts {
        id: v["Id"].as_str().unwrap_or_default().to_owned(),
        started_at: state["StartedAt"].as_str().unwrap_or_default().to_owned(),
        status: state["Status"].as_str().unwrap_or_default().to_owned(),
        paused: state["Paused"].as_bool().unwrap_or(false),
        exit_code: state["ExitCode"].as_i64().unwrap_or(-1),
    }
}

/// How many lines of a container's log (all its runs) contain `needle`.
pub fn log_lines_containing(container: &str, needle: &str) -> usize {
    let out = docker::docker(&["logs", container]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().filter(|l| l.contains(needle)).count()
}

/// The value of a metric line `name value` (exact name, no labels) in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (n, v) = l.split_once(' ')?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// Every entry under `dir` (recursively, not following links) with its kind, size,
/// modification time and inode, keyed by relative path. Empty when `dir` is absent.
pub fn tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = if m.is_dir() {
                "dir"
            } else if m.file_type().is_symlink() {
                "link"
            } else {
                "file"
            };
            let size = if m.is_dir() { 0 } else { m.len() };
            out.insert(
                rel,
                format!(
                    "{kind} size={size} mtime={}.{} ino={}",
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ino()
                ),
            );
            if m.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Names (no sizes) of the entries under `dir`: for folders whose files are written
/// while atocore runs (the live database, its WAL, chroma), where only new or missing
/// entries mean something.
pub fn names(dir: &Path) -> Vec<String> {
    tree(dir).into_keys().collect()
}

/// Polls every millisecond until `path` exists (or `give_up` says stop, or `limit`
/// passes); `true` when it appeared.
pub fn wait_for_file(path: &Path, limit: Duration, give_up: impl Fn() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if path.exists() {
            return true;
        }
        if give_up() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    path.exists()
}

/// A client that started a `POST /memory` and never finishes its body: while it is
/// open, atocore's graceful shutdown waits for it (the stand-in drains connections for
/// at most 3 s), which holds `docker stop atocore` open for that long. Dropping it
/// closes the connection.
pub struct HeldRequest {
    stream: TcpStream,
}

impl HeldRequest {
    /// Opens the connection and sends the head and part of the body.
    pub fn open(port: u16) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to atocore");
        let head = "POST /memory HTTP/1.1\r\nHost: atocore\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"memory_type\": ";
        stream
            .write_all(head.as_bytes())
            .expect("send a partial request");
        stream.flush().ok();
        Self { stream }
    }

    /// Closes the connection now.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Waits until Docker reports `event` (e.g. `kill`, `die`, `start`) for `container` at
/// or after `since` (unix seconds: events from then on are replayed, so none is missed
/// between the call and the subscription). `Err` after `limit`.
pub fn wait_for_event(
    container: &str,
    event: &str,
    since: std::time::SystemTime,
    limit: Duration,
) -> Result<String, String> {
    use std::io::BufRead;
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let until = since + limit.as_secs_f64() + 5.0;
    let mut child = std::process::Command::new("docker")
        .args([
            "events",
            "--since",
            &format!("{since:.3}"),
            "--until",
            &format!("{until:.3}"),
            "--filter",
            &format!("container={container}"),
            "--filter",
            &format!("event={event}"),
            "--format",
            "{{.Action}} {{.TimeNano}}",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run docker events: {e}"))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let got = rx.recv_timeout(limit);
    let _ = child.kill();
    let _ = child.wait();
    match got {
        Ok(line) if !line.trim().is_empty() => Ok(line.trim().to_owned()),
        _ => Err(format!(
            "no `{event}` event for {container} within {limit:?}"
        )),
    }
}
