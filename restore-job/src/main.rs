//! `atocore-restore-job`: the engine's command line (the `cli` module: clap arguments
//! and one function per command over the `atocore_restore_job` library).

use std::process::ExitCode;

use atocore_restore_job::logging;
use clap::Parser;

mod cli;

fn main() -> ExitCode {
    atocore_restore_job::tune_allocator();
    let args = cli::Arguments::parse();
    logging::init_logging(args.log_format);
    let (json, code) = cli::run(args);
    cli::print(&json);
    ExitCode::from(code)
}
