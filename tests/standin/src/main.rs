//! `atocore-standin`: a stand-in for the AtoCore service (see the library docs).
//! Exit codes: 0 ok (or clean shutdown), 1 failure (unhealthy, storage or listen error),
//! 2 bad usage. Logs go to stderr, filtered by `ATOCORE_LOG` (default `info`), like the
//! other components.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use atocore_standin::{
    Arguments, Command, Config, Service, StandinError, config, healthcheck, server, signal, storage,
};
use clap::Parser;

fn main() -> ExitCode {
    let args = Arguments::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ATOCORE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match Config::try_from(&args) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match &args.command {
        None | Some(Command::Serve) => serve(config),
        Some(Command::Healthcheck { url, timeout_ms }) => {
            let url = url.clone().unwrap_or_else(|| config.local_health_url());
            healthcheck::probe(&url, Duration::from_millis(*timeout_ms)).map(|body| {
                let _ = writeln!(std::io::stdout(), "{body}");
            })
        }
        Some(Command::PrepareStorage { owner }) => owner
            .as_deref()
            .map(config::parse_owner)
            .transpose()
            .and_then(|owner| storage::prepare(&config, owner))
            .map(|dirs| {
                let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::json!({ "prepared": dirs })
                );
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ StandinError::Config { .. }) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), StandinError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| StandinError::Task(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| StandinError::Listen {
                addr: config.listen.to_string(),
                source,
            })?;
        let service = Service::open(config)?;
        server::run(listener, service, signal::shutdown_signal()).await
    })
}
