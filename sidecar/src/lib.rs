//! The AtoCore sidecar: a small long-running service next to atocore that takes
//! snapshots on a schedule and on request, applies retention, reports health and
//! Prometheus metrics, and (with the restore-job container) restores atocore with one
//! call. Every snapshot operation goes through the `atocore_restore_job` engine.
//!
//! Layout, one concept per module:
//! [`config`] (flags, env mirrors, validated [`Config`]), [`server`] (accept loop,
//! connection cap, timeouts, bounded drain), [`routes`] (the endpoints), [`auth`]
//! (bearer token), [`json`] (capped bodies, responses), [`operation`] (one mutating
//! operation at a time, logged and counted), [`schedule`] (cron times, missed runs),
//! [`health`], [`metrics`], [`summary`] (cached view of the snapshots for both),
//! [`docker`] (the Docker allowlist), [`quiesce`] (pause atocore for chroma copies),
//! [`orchestrator`] (restore, one method per step), [`containers`] (its container
//! steps), [`leftover`] (an orphaned pre-restore snapshot), [`drill`], [`atocore`] (atocore's HTTP API),
//! [`shutdown`] (signals, forced clean-up), [`healthcheck`] (the probe subcommand),
//! [`logging`], [`state`], [`walstream`] (continuous WAL capture), [`error`] (the one
//! error type).
//!
//! The binary binds the socket and hands it to [`server::run`]; tests bind
//! `127.0.0.1:0` and run the real server in-process:
//!
//! ```no_run
//! use std::sync::Arc;
//! use atocore_sidecar::{Config, State, server};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), atocore_sidecar::Error> {
//! let config = Config::parse_from(["atocore-sidecar", "--storage-root", "/srv/storage/atocore"])?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let stop = CancellationToken::new();
//! let state = State::new(config, stop.clone());
//! server::run(listener, state, stop.cancelled_owned()).await?;
//! # Ok(()) }
//! ```

pub mod atocore;
pub mod auth;
pub mod config;
pub mod containers;
pub mod docker;
pub mod drill;
pub mod error;
pub mod gate;
pub mod health;
pub mod healthcheck;
pub mod json;
pub mod leftover;
pub mod logging;
pub mod metrics;
pub mod offsite;
pub mod operation;
pub mod orchestrator;
pub mod quiesce;
pub mod routes;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod shutdown;
pub mod state;
pub mod summary;
pub mod walstream;

pub use config::{Arguments, Command, Config};
pub use error::{Error, Result};
pub use state::State;
