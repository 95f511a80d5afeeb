//! `atocore-capture`: the Claude Code Stop hook that captures each turn into AtoCore.
//!
//! After every turn Claude Code runs the hook with a JSON event on stdin. The hook finds, at
//! the end of the session transcript, the last prompt the person typed and the final reply
//! they saw, and POSTs them to `<ATOCORE_URL>/interactions` with `reinforce: false`. It never
//! gets in the way: exit 0 always, nothing on stdout, a bounded time
//! (`ATOCORE_CAPTURE_TIMEOUT_MS`). It never loses a turn: every capture goes through an
//! on-disk outbox that later runs deliver, oldest first, once each. It never captures a turn
//! twice: a ledger of prompt keys absorbs repeated Stop events, continuations and wake-ups.
//!
//! # Layout
//!
//! | module | holds |
//! |---|---|
//! | [`capture`] | the hook run: stdin → transcript → dedup → outbox → delivery |
//! | [`transcript`] | the backward chunked reader and the turn finder |
//! | [`line_parser`] | one transcript line: the streaming parser that keeps only what is needed |
//! | [`classify`] | what a parsed line means: the skip rules, commands, queued prompts |
//! | [`input`] | the Stop hook's stdin JSON |
//! | [`project`] | the `project` field: env, cwd map, git root, folder |
//! | [`outbox`] | the capture body, the outbox files, delivery, dead letters, `status.json` |
//! | [`ledger`] | dedup keys of captured prompts |
//! | [`client`] | the HTTP POST |
//! | [`state_dir`] | the state directory's paths, atomic writes |
//! | [`lock`] | `flock` with a deadline |
//! | [`install`], [`ordered_json`] | adding the hook to settings.json, key order kept |
//! | [`status`] | the `status` report |
//! | [`config`], [`cli`] | settings and the command line |
//! | [`log`] | diagnostics to stderr and `capture.log` |
//! | [`error`] | the one error type |
//!
//! # Example
//!
//! Find the turn the hook would capture from a transcript:
//!
//! ```no_run
//! use atocore_capture::transcript::{find_last_turn, Found, ScanLimits};
//!
//! let scan = find_last_turn(
//!     std::path::Path::new("/home/me/.claude/projects/p/session.jsonl"),
//!     ScanLimits { max_read_bytes: 64 << 20, deadline: None, want_reply: true },
//! )?;
//! if let Found::Turn(turn) = scan.found {
//!     println!("{} => {:?}", turn.prompt(), turn.reply);
//! }
//! # Ok::<(), atocore_capture::error::Error>(())
//! ```

pub mod capture;
pub mod classify;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod input;
pub mod install;
pub mod ledger;
pub mod line_parser;
pub mod lock;
pub mod log;
pub mod ordered_json;
pub mod outbox;
pub mod project;
pub mod state_dir;
pub mod status;
pub mod transcript;

pub use error::{Error, Result};
