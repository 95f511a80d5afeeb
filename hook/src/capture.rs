//! The hook itself: stdin → transcript → dedup → outbox → delivery, within the budget.
//!
//! [`run_hook`] never returns an error and never panics out (the binary also wraps it in
//! `catch_unwind`): every problem is logged (stderr and `capture.log`) and the run ends.
//!
//! Order of work, so that nothing is lost and nothing is doubled:
//! 1. read and parse stdin (capped at [`MAX_STDIN_BYTES`]);
//! 2. find the last turn in the transcript (capped bytes, part of the time budget); when the
//!    transcript looks unfinished and stdin has no `last_assistant_message`, look again a
//!    few times, 100 ms apart;
//! 3. under `.state.lock`: drop the prompt pieces the ledger already holds; write the
//!    capture to the outbox (atomic), then add its keys to the ledger;
//! 4. deliver the outbox, oldest first, with the time left.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::classify;
use crate::client::{self, Delivery};
use crate::config::{Config, MAX_STDIN_BYTES, RawSettings, Strictness, env};
use crate::error::{Error, Result};
use crate::input::HookInput;
use crate::ledger::{self, LedgerEntry};
use crate::lock::FileLock;
use crate::log::Log;
use crate::outbox::{self, Interaction};
use crate::project;
use crate::state_dir::StateDir;
use crate::transcript::{self, Found, ScanLimits};

/// The `client` field of every capture.
pub const CLIENT: &str = "claude-code";
/// Pause between two looks at a transcript that seems not yet written to the end.
pub const SETTLE_PAUSE: Duration = Duration::from_millis(100);
/// Extra looks at such a transcript.
pub const SETTLE_TRIES: u32 = 3;

/// What the hook did with the turn (for the log and the tests of the library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written to the outbox under this file name.
    Captured(String),
    /// Every prompt piece was in the ledger already.
    AlreadyCaptured {
        /// The pending capture's response was replaced by a continuation's newer reply.
        updated: bool,
    },
    /// Sent straight to the server because the state directory is unusable.
    SentWithoutOutbox,
    /// Nothing to capture (the reason says why).
    Nothing(String),
}

/// Runs the hook. Never fails: problems are logged.
pub fn run_hook(
    raw: &RawSettings,
    stdin: impl Read + Send + 'static,
    started: Instant,
) -> Option<Outcome> {
    let (config, warnings) = match Config::resolve(raw, Strictness::Lenient) {
        Ok(c) => c,
        Err(e) => {
            Log::stderr().error(&format!("{e}; nothing captured"));
            return None;
        }
    };
    if config.disabled {
        return None;
    }
    let deadline = started + config.timeout;
    let state = StateDir::open(&config.dir);
    let log = match &state {
        Ok(d) => Log::stderr().with_dir(d.root()),
        Err(_) => Log::stderr(),
    };
    for w in &warnings {
        log.warn(w);
    }
    if let Err(e) = &state {
        log.error(&e.to_string());
    }
    if std::env::var(env::FAULT).as_deref() == Ok("panic") {
        panic!("{}=panic: injected panic (self-test)", env::FAULT);
    }
    let state = state.ok();

    let outcome = match capture(&config, stdin, started, deadline, state.as_ref(), &log) {
        Ok(o) => {
            if let Outcome::Nothing(why) = &o {
                log.info(&format!("nothing captured: {why}"));
            }
            Some(o)
        }
        Err(e) => {
            log.error(&format!("{e}"));
            None
        }
    };

    if let Some(state) = &state {
        let report = outbox::deliver(
            state,
            &config.interactions_url(),
            deadline,
            config.timeout,
            &log,
        );
        if let Some(Outcome::Captured(name)) = &outcome
            && let Err(e) = outbox::make_durable(state, name)
        {
            log.error(&format!("{e}; the capture may not survive an OS crash"));
        }
        if report.pending > 0 && !report.busy {
            log.warn(&format!(
                "{} capture(s) wait in {} for the next run (`atocore-capture flush` sends them now)",
                report.pending,
                state.outbox().display()
            ));
        }
    }
    outcome
}

/// Reads the hook input on a helper thread, so that a stdin that is never closed cannot
/// hold the hook past a third of its budget.
fn read_input(stdin: impl Read + Send + 'static, until: Instant) -> Result<HookInput> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(HookInput::read(stdin, MAX_STDIN_BYTES));
    });
    match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        Ok(result) => result,
        Err(_) => Err(Error::BadInput(
            "stdin was not closed in time (is this run by Claude Code?)".into(),
        )),
    }
}

fn capture(
    config: &Config,
    stdin: impl Read + Send + 'static,
    started: Instant,
    deadline: Instant,
    state: Option<&StateDir>,
    log: &Log,
) -> Result<Outcome> {
    let input = read_input(stdin, started + config.timeout / 3)?;
    if let Some(event) = input.hook_event_name.as_deref()
        && event != "Stop"
    {
        return Ok(Outcome::Nothing(format!(
            "hook_event_name is `{event}`; atocore-capture handles Stop only (remove it from the other hook events)"
        )));
    }
    let Some(path) = input.transcript_path.as_deref() else {
        return Ok(Outcome::Nothing(
            "the hook input has no transcript_path".into(),
        ));
    };
    let session_id = input
        .session_id
        .clone()
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown".into());

    // Scanning may use two thirds of the budget; the rest is for delivery.
    let scan_deadline = started + config.timeout * 2 / 3;
    let want_reply = input.last_assistant_message.is_none();
    let limits = ScanLimits {
        max_read_bytes: config.max_read_bytes,
        deadline: Some(scan_deadline),
        want_reply,
    };
    let mut scan = transcript::find_last_turn(path, limits)?;
    let mut tries = 0;
    while want_reply
        && !scan.settled
        && matches!(scan.found, Found::Turn(_))
        && tries < SETTLE_TRIES
    {
        if Instant::now() + SETTLE_PAUSE * 2 > scan_deadline {
            break;
        }
        std::thread::sleep(SETTLE_PAUSE);
        tries += 1;
        scan = transcript::find_last_turn(path, limits)?;
    }
    let turn = match scan.found {
        Found::Turn(t) => t,
        Found::Wordless(why) | Found::NotFound(why) => return Ok(Outcome::Nothing(why)),
    };
    if want_reply && !scan.settled {
        log.warn(
            "the transcript does not end with a reply yet; capturing the last reply written so far",
        );
    }
    let response = input
        .last_assistant_message
        .clone()
        .or_else(|| turn.reply.clone())
        .unwrap_or_default();

    let (project, source, warning) = project::resolve(
        config.project.as_deref(),
        config.projects_file.as_deref(),
        input.cwd.as_deref(),
    );
    if let Some(w) = warning {
        log.warn(&format!("{w}; using the folder name"));
    }

    let Some(state) = state else {
        // No outbox: send it now, once; if that fails the capture is lost (logged).
        let body = Interaction {
            prompt: turn.prompt(),
            response,
            client: CLIENT.into(),
            session_id,
            project,
            reinforce: false,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        return match client::post(&config.interactions_url(), &bytes, left) {
            Delivery::Delivered(_) => Ok(Outcome::SentWithoutOutbox),
            Delivery::Retry(e) | Delivery::Rejected(e) => Err(e),
        };
    };

    let lock = FileLock::acquire(&state.state_lock(), deadline)?;
    let known = ledger::load(&state.ledger())?;
    let keyed: Vec<(&classify::PromptPiece, String)> = turn
        .pieces
        .iter()
        .map(|p| (p, ledger::key(&session_id, &p.identity)))
        .collect();
    let fresh: Vec<&(&classify::PromptPiece, String)> = keyed
        .iter()
        .filter(|(_, k)| !known.iter().any(|e| &e.key == k))
        .collect();

    if fresh.is_empty() {
        // Repeated Stop, continuation or wake-up: the prompt is captured already.
        let last_file = keyed
            .last()
            .and_then(|(_, k)| known.iter().rev().find(|e| &e.key == k))
            .map(|e| e.file.clone());
        drop(lock);
        let mut updated = false;
        if input.stop_hook_active
            && let Some(file) = last_file
        {
            match outbox::replace_response(state, &file, &response, deadline) {
                Ok(u) => updated = u,
                Err(e) => log.warn(&format!("cannot update the pending capture {file}: {e}")),
            }
        }
        log.info(&format!(
            "already captured ({}){}",
            if input.stop_hook_active {
                "continuation"
            } else {
                "repeat or wake-up"
            },
            if updated {
                "; the pending capture now has the newer reply"
            } else {
                ""
            }
        ));
        return Ok(Outcome::AlreadyCaptured { updated });
    }

    let prompt = fresh
        .iter()
        .map(|(p, _)| p.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    let body = Interaction {
        prompt,
        response,
        client: CLIENT.into(),
        session_id,
        project,
        reinforce: false,
    };
    let name = outbox::enqueue(state, &body, &fresh[0].1)?;
    let entries: Vec<LedgerEntry> = fresh
        .iter()
        .map(|(_, k)| LedgerEntry {
            key: k.clone(),
            file: name.clone(),
        })
        .collect();
    if let Err(e) = ledger::append(&state.ledger(), &known, &entries) {
        log.warn(&format!(
            "{e}; a repeated Stop for this turn may capture it again"
        ));
    }
    drop(lock);
    log.info(&format!(
        "captured {name}: prompt {} chars, response {} chars, project `{}` ({:?}), {} transcript bytes read",
        body.prompt.chars().count(),
        body.response.chars().count(),
        body.project,
        source,
        scan.bytes_read
    ));
    Ok(Outcome::Captured(name))
}

/// What `atocore-capture extract` prints: the turn the hook would capture from a transcript.
#[derive(Debug, serde::Serialize)]
pub struct Preview {
    /// `turn`, `wordless` or `not_found`.
    pub found: &'static str,
    /// The prompt that would be sent.
    pub prompt: Option<String>,
    /// The reply found in the transcript.
    pub response: Option<String>,
    /// The pieces of the prompt and their identities.
    pub pieces: Vec<classify::PromptPiece>,
    /// Why nothing would be captured.
    pub reason: Option<String>,
    /// Whether the transcript ends with a reply (or an interrupt).
    pub settled: bool,
    /// Transcript bytes read.
    pub bytes_read: u64,
    /// Lines looked at.
    pub lines: u64,
    /// Time taken.
    pub elapsed_us: u128,
}

/// Scans a transcript like the hook does, without a deadline, and reports the turn.
pub fn preview(path: &Path, max_read_bytes: u64) -> Result<Preview, Error> {
    let t0 = Instant::now();
    let scan = transcript::find_last_turn(
        path,
        ScanLimits {
            max_read_bytes,
            deadline: None,
            want_reply: true,
        },
    )?;
    let elapsed_us = t0.elapsed().as_micros();
    let (found, prompt, response, pieces, reason) = match scan.found {
        Found::Turn(t) => ("turn", Some(t.prompt()), t.reply.clone(), t.pieces, None),
        Found::Wordless(r) => ("wordless", None, None, Vec::new(), Some(r)),
        Found::NotFound(r) => ("not_found", None, None, Vec::new(), Some(r)),
    };
    Ok(Preview {
        found,
        prompt,
        response,
        pieces,
        reason,
        settled: scan.settled,
        bytes_read: scan.bytes_read,
        lines: scan.lines,
        elapsed_us,
    })
}
