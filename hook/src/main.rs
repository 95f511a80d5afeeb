//! `atocore-capture`: the command line. Hook mode (no subcommand) always exits 0 and
//! prints nothing on stdout; `install`, `status`, `flush` and `extract` print JSON.
//!
//! Exit codes of the people's commands: 0 done; 1 failed or (flush) captures remain;
//! 2 bad command line.

use std::ffi::OsString;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use atocore_capture::cli::{Arguments, Command, PEOPLE_COMMANDS};
use atocore_capture::config::{self, Config, RawSettings, Strictness};
use atocore_capture::log::Log;
use atocore_capture::state_dir::StateDir;
use atocore_capture::{capture, install, outbox, status};
use clap::Parser;

fn main() -> ExitCode {
    let started = Instant::now();
    let args: Vec<OsString> = std::env::args_os().collect();
    let people = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| PEOPLE_COMMANDS.contains(&a));
    if !people {
        // The kill switch comes before reading anything.
        if config::disabled_in_env() {
            return ExitCode::SUCCESS;
        }
        return hook_mode(&args, started);
    }
    let cli = match Arguments::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    match run_command(cli) {
        Ok(code) => code,
        Err(e) => {
            Log::stderr().error(&e.to_string());
            ExitCode::from(1)
        }
    }
}

/// The Stop hook: exit 0 whatever happens, stdout untouched.
fn hook_mode(args: &[OsString], started: Instant) -> ExitCode {
    let raw = match Arguments::try_parse_from(args) {
        Ok(cli) => cli.settings,
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("").to_string();
            Log::stderr().warn(&format!(
                "ignoring the command line ({first}); running as the Stop hook with the environment's settings"
            ));
            RawSettings::from_env()
        }
    };
    // SAFETY: isatty has no preconditions.
    if unsafe { libc::isatty(0) } == 1 {
        Log::stderr().info(
            "atocore-capture runs as a Claude Code Stop hook and reads the hook's JSON on stdin; see `atocore-capture --help`",
        );
        return ExitCode::SUCCESS;
    }
    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
        capture::run_hook(&raw, std::io::stdin(), started)
    }));
    ExitCode::SUCCESS
}

fn run_command(cli: Arguments) -> atocore_capture::Result<ExitCode> {
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
                    return Err(atocore_capture::Error::BadSetting {
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

fn unreachable_hook() -> atocore_capture::Result<ExitCode> {
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
