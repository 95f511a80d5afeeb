//! `atocore-restore-job`: see the library's `cli` module.

use std::process::ExitCode;

use atocore_restore_job::cli;
use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Arguments::parse();
    cli::init_logging(args.log_format);
    let (json, code) = cli::run(args);
    cli::print(&json);
    ExitCode::from(code)
}
