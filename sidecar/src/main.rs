//! `atocore-sidecar`: parse the settings, then serve (default) or probe /health.
//! Exit codes: 0 clean exit (also after SIGTERM/SIGINT) or healthy; 1 failure or
//! unhealthy; 2 bad settings.

use std::process::ExitCode;
use std::time::Duration;

use atocore_sidecar::{
    Arguments, Command, Config, Error, State, healthcheck, logging, server, shutdown,
};
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    atocore_restore_job::tune_allocator();
    let args = Arguments::parse();
    logging::init(args.log_format);
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let outcome = match args.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Healthcheck {
            url,
            timeout_ms,
            strict,
        } => {
            let url = url.unwrap_or_else(|| healthcheck::default_url(&config.addr));
            healthcheck::probe(&url, Duration::from_millis(timeout_ms), strict).map(|_| ())
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &Error) -> ExitCode {
    tracing::error!(code = e.code(), "{e}");
    eprintln!("atocore-sidecar: {e}");
    ExitCode::from(e.exit_code())
}

fn serve(config: Config) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let stop = CancellationToken::new();
    shutdown::cancel_on_signal(stop.clone())?;
    let result = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: config.addr.to_string(),
                source,
            })?;
        let state = State::new(config, stop.clone());
        server::run(listener, state, stop.cancelled_owned()).await
    });
    // Work abandoned at the bound must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    result
}
