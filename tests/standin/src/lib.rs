//! `atocore-standin`: a small STAND-IN for the AtoCore service, used by the tests and the
//! demo of AtoCore Ops. It is not the real service (a Python/FastAPI program that is not
//! part of this project) and not a mock of our own code: it speaks the endpoints our
//! components use, and keeps its data the way the real one does, so that backups and
//! restores meet realistic files:
//!
//! - a real WAL-mode SQLite database at `ATOCORE_DB_PATH`, kept open while it runs, with
//!   a heartbeat row written every 200 ms (`store`);
//! - chroma-like files under `ATOCORE_CHROMA_PATH`: a rollback-journal `chroma.sqlite3`
//!   and a segment folder of HNSW-like files rewritten in place (`chroma`);
//! - the project registry read fresh from `ATOCORE_REGISTRY_PATH` (`registry`).
//!
//! Layout: `config` (flags, env mirrors, validated `Config`), `api` (endpoints),
//! `payload` (body validation), `service` (shared state), `server` (hyper loop with
//! graceful shutdown), `signal` (SIGTERM/SIGINT), `healthcheck` (the image HEALTHCHECK
//! probe), `storage` (`prepare-storage` for the demo), `error` (the one error type).
//!
//! ```no_run
//! # async fn demo() -> Result<(), atocore_standin::StandinError> {
//! use atocore_standin::{Config, Service, server};
//! let service = Service::open(Config::for_root("/tmp/atocore-demo"))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! server::run(listener, service, atocore_standin::signal::shutdown_signal()).await
//! # }
//! ```

pub mod api;
pub mod chroma;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod payload;
pub mod registry;
pub mod server;
pub mod service;
pub mod signal;
pub mod storage;
pub mod store;

pub use config::{Arguments, Command, Config};
pub use error::StandinError;
pub use service::Service;
