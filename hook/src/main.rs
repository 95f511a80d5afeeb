//! `atocore-capture`: the command line. Hook mode (no subcommand) always exits 0 and
//! prints nothing on stdout; `install`, `status`, `flush` and `extract` print JSON.
//!
//! Exit codes of the people's commands: 0 done; 1 failed or (flush) captures remain;
//! 2 bad command line.

use std::ffi::OsString;
use std::panic::AssertUnwindSafe;
use std::process::ExitCode;
use std::time::Instant;

use atocore_capture::capture;
use atocore_capture::cli::{Arguments, PEOPLE_COMMANDS, run_command};
use atocore_capture::config::{self, RawSettings};
use atocore_capture::log::Log;
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
