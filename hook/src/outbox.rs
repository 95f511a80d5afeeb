//! The outbox: every capture is written here first, then delivered oldest first.
//!
//! - [`enqueue`] writes one file per capture atomically (temp file, fsync, rename, fsync of
//!   the folder). The name `<UTC microseconds, 20 digits>-<pid>-<key>.json` sorts oldest
//!   first; the content is exactly the JSON body that is POSTed.
//! - [`deliver`] holds `.deliver.lock` (so two hooks never send the same file), sends files
//!   in name order within the deadline, removes a file only after a 2xx, moves it to
//!   `dead/` on a 4xx other than 408/429, and stops at the first connection error, timeout,
//!   408, 429 or 5xx (the rest waits for the next run). Files that arrive while it runs are
//!   picked up before it lets go of the lock.
//! - The outcome is kept in `status.json` for `atocore-capture status`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::client::{self, Delivery};
use crate::error::{Error, Result};
use crate::lock::FileLock;
use crate::log::Log;
use crate::state_dir::{StateDir, sync_dir, sync_file, write_atomic, write_atomic_nosync};

/// The body POSTed to `/interactions` (docs/design.md §1, docs/capture.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// What the person typed.
    pub prompt: String,
    /// The assistant's final reply.
    pub response: String,
    /// Always `claude-code`.
    pub client: String,
    /// Claude Code's session id.
    pub session_id: String,
    /// The project.
    pub project: String,
    /// Always false: capture only.
    pub reinforce: bool,
}

/// A request is not started with less time than this left.
pub const MIN_REQUEST_TIME: Duration = Duration::from_millis(25);

/// Writes a capture to the outbox atomically; returns its file name. Not fsynced: the hook
/// tries to deliver it at once and calls [`make_durable`] when it is still there at the end.
pub fn enqueue(dir: &StateDir, body: &Interaction, key: &str) -> Result<String> {
    let micros = chrono::Utc::now().timestamp_micros().max(0);
    let short: String = key.chars().take(16).collect();
    let name = format!("{micros:020}-{:07}-{short}.json", std::process::id());
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    write_atomic_nosync(&dir.outbox().join(&name), &bytes)?;
    Ok(name)
}

/// fsyncs an outbox file (and the folder) if it is still waiting. Returns whether it was.
pub fn make_durable(dir: &StateDir, name: &str) -> Result<bool> {
    let path = dir.outbox().join(name);
    match sync_file(&path) {
        Ok(()) => Ok(true),
        // Delivered meanwhile (by this run or another hook).
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pending captures, oldest first.
pub fn pending(dir: &StateDir) -> Result<Vec<PathBuf>> {
    list_json(&dir.outbox())
}

/// Captures in the dead-letter folder, oldest first.
pub fn dead(dir: &StateDir) -> Result<Vec<PathBuf>> {
    list_json(&dir.dead())
}

fn list_json(folder: &Path) -> Result<Vec<PathBuf>> {
    let rd = match fs::read_dir(folder) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", folder, e)),
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Persistent delivery record (`status.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The last successful delivery.
    #[serde(default)]
    pub last_delivery: Option<Event>,
    /// The last failed attempt.
    #[serde(default)]
    pub last_error: Option<Event>,
    /// Captures delivered since the state directory was made.
    #[serde(default)]
    pub delivered_total: u64,
    /// Captures moved to `dead/` since the state directory was made.
    #[serde(default)]
    pub dead_lettered_total: u64,
}

/// One delivery event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The outbox file.
    pub file: String,
    /// HTTP status, when there was one.
    #[serde(default)]
    pub http_status: Option<u16>,
    /// What went wrong (errors only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StatusRecord {
    /// Reads `status.json` (default when missing or unreadable).
    pub fn load(dir: &StateDir) -> StatusRecord {
        fs::read(dir.status())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, dir: &StateDir) -> Result<()> {
        // A lost update after an OS crash only makes `status` older: no fsync.
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        write_atomic_nosync(&dir.status(), &bytes)
    }
}

/// What one delivery round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// Files sent and removed.
    pub delivered: u64,
    /// Files moved to `dead/`.
    pub dead_lettered: u64,
    /// Files still waiting.
    pub pending: u64,
    /// Another process was delivering; this one left it to it.
    pub busy: bool,
    /// The error that stopped the round, if any.
    pub error: Option<String>,
}

fn now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Delivers the outbox, oldest first, until it is empty, the server fails, or `deadline`.
/// `per_request` caps each request's timeout (the hook passes its whole budget).
pub fn deliver(
    dir: &StateDir,
    url: &str,
    deadline: Instant,
    per_request: Duration,
    log: &Log,
) -> DeliveryReport {
    let mut report = DeliveryReport::default();
    let _lock = match FileLock::acquire(&dir.deliver_lock(), deadline) {
        Ok(l) => l,
        Err(Error::LockBusy { .. }) => {
            report.busy = true;
            report.pending = pending(dir).map(|p| p.len() as u64).unwrap_or(0);
            return report;
        }
        Err(e) => {
            log.error(&e.to_string());
            report.error = Some(e.to_string());
            return report;
        }
    };
    let mut status = StatusRecord::load(dir);
    let mut changed = false;
    'rounds: loop {
        let files = match pending(dir) {
            Ok(f) => f,
            Err(e) => {
                report.error = Some(e.to_string());
                break;
            }
        };
        if files.is_empty() {
            break;
        }
        let mut progressed = false;
        for file in files {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < MIN_REQUEST_TIME {
                report.error.get_or_insert_with(|| {
                    "time budget used up; the rest waits for the next run".into()
                });
                break 'rounds;
            }
            let name = file_name(&file);
            let body = match fs::read(&file) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let err = Error::io("cannot read outbox file", &file, e);
                    report.error = Some(err.to_string());
                    break 'rounds;
                }
            };
            let outcome = if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
                Delivery::Rejected(Error::BadInput(format!("outbox file {name} is not JSON")))
            } else {
                client::post(url, &body, left.min(per_request))
            };
            changed = true;
            match outcome {
                Delivery::Delivered(code) => {
                    if let Err(e) = fs::remove_file(&file) {
                        // Sent but not removed: stop before it is sent twice.
                        let err = Error::io("delivered but cannot remove outbox file", &file, e);
                        log.error(&err.to_string());
                        report.error = Some(err.to_string());
                        break 'rounds;
                    }
                    report.delivered += 1;
                    progressed = true;
                    status.delivered_total += 1;
                    status.last_delivery = Some(Event {
                        at: now(),
                        file: name.clone(),
                        http_status: Some(code),
                        message: None,
                    });
                    log.info(&format!("delivered {name} (HTTP {code})"));
                }
                Delivery::Rejected(err) => {
                    let code = match &err {
                        Error::Rejected { status, .. } => Some(*status),
                        _ => None,
                    };
                    let msg = err.to_string();
                    log.error(&format!("{name}: {msg}"));
                    if let Err(e) = move_to_dead(dir, &file, &msg) {
                        log.error(&e.to_string());
                        report.error = Some(e.to_string());
                        break 'rounds;
                    }
                    report.dead_lettered += 1;
                    progressed = true;
                    status.dead_lettered_total += 1;
                    status.last_error = Some(Event {
                        at: now(),
                        file: name,
                        http_status: code,
                        message: Some(msg),
                    });
                }
                Delivery::Retry(err) => {
                    let code = match &err {
                        Error::Retryable { status, .. } => Some(*status),
                        _ => None,
                    };
                    let msg = err.to_string();
                    log.warn(&format!("{name}: {msg}"));
                    report.error = Some(msg.clone());
                    status.last_error = Some(Event {
                        at: now(),
                        file: name,
                        http_status: code,
                        message: Some(msg),
                    });
                    break 'rounds;
                }
            }
        }
        if !progressed {
            break;
        }
    }
    if changed && let Err(e) = status.save(dir) {
        log.warn(&e.to_string());
    }
    report.pending = pending(dir).map(|p| p.len() as u64).unwrap_or(0);
    report
}

fn move_to_dead(dir: &StateDir, file: &Path, reason: &str) -> Result<()> {
    let target = dir.dead().join(file_name(file));
    fs::rename(file, &target)
        .map_err(|e| Error::io("cannot move to dead-letter folder", file, e))?;
    let _ = fs::write(target.with_extension("json.reason"), format!("{reason}\n"));
    let _ = sync_dir(&dir.dead());
    let _ = sync_dir(&dir.outbox());
    Ok(())
}

/// Moves every dead letter back to the outbox (for `flush --retry-dead`). Returns how many.
pub fn requeue_dead(dir: &StateDir) -> Result<u64> {
    let mut n = 0;
    for file in dead(dir)? {
        let target = dir.outbox().join(file_name(&file));
        fs::rename(&file, &target)
            .map_err(|e| Error::io("cannot move back to the outbox", &file, e))?;
        let _ = fs::remove_file(file.with_extension("json.reason"));
        n += 1;
    }
    let _ = sync_dir(&dir.outbox());
    Ok(n)
}

/// Replaces the `response` of a capture still waiting in the outbox (a continuation's
/// newer reply). Holds the delivery lock so the file is not being sent meanwhile.
/// Returns false when the file is gone (already delivered) or unchanged.
pub fn replace_response(
    dir: &StateDir,
    file: &str,
    response: &str,
    deadline: Instant,
) -> Result<bool> {
    let _lock = FileLock::acquire(&dir.deliver_lock(), deadline)?;
    let path = dir.outbox().join(file);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io("cannot read outbox file", &path, e)),
    };
    let Ok(mut body) = serde_json::from_slice::<Interaction>(&bytes) else {
        return Ok(false);
    };
    if body.response == response {
        return Ok(false);
    }
    body.response = response.to_string();
    write_atomic(&path, &serde_json::to_vec(&body).unwrap_or_default())?;
    Ok(true)
}
