//! The command line: one clap-derive [`Arguments`] with environment mirrors.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::RawSettings;

/// Subcommands run by people (everything else is hook mode).
pub const PEOPLE_COMMANDS: &[&str] = &[
    "install",
    "status",
    "flush",
    "extract",
    "help",
    "--help",
    "-h",
    "--version",
    "-V",
];

/// Captures each Claude Code turn (your prompt and the final reply) into AtoCore.
///
/// Without a subcommand it is the Stop hook: it reads the hook's JSON on stdin, prints
/// nothing on stdout and always exits 0. See docs/capture.md.
#[derive(Debug, Parser)]
#[command(name = "atocore-capture", version, about, long_about)]
pub struct Arguments {
    /// Settings shared by every mode.
    #[command(flatten)]
    pub settings: RawSettings,
    /// What to do (default: run as the Stop hook).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as the Stop hook (the default): read the hook JSON on stdin, capture, deliver.
    Hook,
    /// Add the Stop hook to a Claude Code settings.json (idempotent; backs the file up first).
    Install {
        /// The settings file [default: $CLAUDE_CONFIG_DIR/settings.json or ~/.claude/settings.json].
        #[arg(long, value_name = "PATH")]
        settings: Option<PathBuf>,
        /// Print the resulting settings JSON instead of writing it.
        #[arg(long)]
        dry_run: bool,
        /// The hook command [default: the absolute path of this program].
        #[arg(long, value_name = "CMD")]
        command: Option<String>,
        /// Claude Code's timeout for the hook, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 5)]
        hook_timeout: u64,
    },
    /// Print the outbox size, the last delivery and the last error as JSON.
    Status,
    /// Deliver the outbox now; print the result as JSON (exit 1 when captures remain).
    Flush {
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        max_time: u64,
        /// First move the dead letters (captures the server refused) back to the outbox.
        #[arg(long)]
        retry_dead: bool,
    },
    /// Print, as JSON, the turn the hook would capture from a transcript (sends nothing).
    Extract {
        /// The transcript (a Claude Code session .jsonl file).
        transcript: PathBuf,
    },
}
