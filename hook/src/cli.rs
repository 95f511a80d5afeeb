//! The command line: one clap-derive [`Arguments`] with environment mirrors.

use std::path::PathBuf;

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use crate::config::{Config, Strictness};
use crate::log::Log;
use crate::state_dir::StateDir;
use crate::{capture, install, outbox, status};

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

/// Run one of the people's commands (`install`, `status`, `flush`, `extract`); the
/// result goes to stdout as JSON.
pub fn run_command(cli: Arguments) -> crate::Result<ExitCode> {
    let (config, _) = Config::resolve(&cli.settings, Strictness::Strict)?;
    match cli.command {
        None | Some(Command::Hook) => unreachable_hook(),
        Some(Command::Install {
            settings,
            dry_run,
            command,
            hook_timeout,
        }) => {
            let settings = match settings.or_else(install::default_settings_path) {
                Some(s) => s,
                None => {
                    return Err(crate::Error::BadSetting {
                        name: "--settings",
                        value: String::new(),
                        why: "HOME is not set; pass --settings PATH".into(),
                    });
                }
            };
            let command = match command {
                Some(c) => c,
                None => install::default_command()?,
            };
            let opts = install::InstallOptions {
                settings,
                command,
                timeout_secs: hook_timeout.max(1),
                dry_run,
            };
            let (report, doc) = install::install(&opts)?;
            if dry_run {
                print(doc.to_pretty());
            } else {
                print_json(&report);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Status) => {
            print_json(&status::report(&config)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Flush {
            max_time,
            retry_dead,
        }) => {
            let dir = StateDir::open(&config.dir)?;
            let requeued = if retry_dead {
                outbox::requeue_dead(&dir)?
            } else {
                0
            };
            let budget = Duration::from_secs(max_time.max(1));
            let log = Log::stderr().with_dir(dir.root());
            let report = outbox::deliver(
                &dir,
                &config.interactions_url(),
                Instant::now() + budget,
                budget.min(Duration::from_secs(10)),
                &log,
            );
            #[derive(serde::Serialize)]
            struct Flushed<'a> {
                #[serde(flatten)]
                report: &'a outbox::DeliveryReport,
                requeued_dead: u64,
            }
            print_json(&Flushed {
                report: &report,
                requeued_dead: requeued,
            });
            Ok(if report.pending == 0 && report.error.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Some(Command::Extract { transcript }) => {
            print_json(&capture::preview(&transcript, config.max_read_bytes)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn unreachable_hook() -> crate::Result<ExitCode> {
    // `hook` is not in PEOPLE_COMMANDS, so it never gets here.
    Ok(ExitCode::SUCCESS)
}

fn print_json<T: serde::Serialize>(value: &T) {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    print(text);
}

fn print(text: String) {
    // A closed stdout (e.g. piped into `head`) is not an error.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}
