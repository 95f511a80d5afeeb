//! The state shared by the server, the schedule and the operations.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::docker::Docker;
use crate::error::{Error, Result};
use crate::gate::{Gate, GateGuard};
use crate::metrics::Metrics;
use crate::quiesce::PauseFlag;
use crate::summary::SummaryCache;

/// Everything a request handler or the schedule needs; shared as `Arc<State>`.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub docker: Arc<Docker>,
    /// One mutating operation at a time.
    pub gate: Gate,
    /// Set while this sidecar holds atocore paused.
    pub paused: Arc<PauseFlag>,
    pub metrics: Metrics,
    pub summary: SummaryCache,
    /// Cancelled on SIGTERM/SIGINT: running backups stop at their next step.
    pub shutdown: CancellationToken,
    /// Blocking operations in flight; shutdown waits for them (bounded).
    pub tasks: TaskTracker,
    /// Continuous WAL capture (idle unless `ATOCORE_WAL_STREAM` is on).
    pub wal: Arc<crate::walstream::WalStream>,
    /// What is known of the off-site target.
    pub offsite: crate::offsite::OffsiteState,
}

impl State {
    /// Build the state; nothing is connected yet.
    pub fn new(config: Config, shutdown: CancellationToken) -> Arc<State> {
        let docker = Arc::new(Docker::new(
            &config.docker_host,
            // A stop call lasts up to the stop timeout; the client must outwait it.
            config
                .docker_timeout
                .max(config.stop_timeout + std::time::Duration::from_secs(15)),
            &config.atocore_container,
            &config.restore_container,
        ));
        Arc::new(State {
            docker,
            gate: Gate::default(),
            paused: Arc::new(PauseFlag::default()),
            metrics: Metrics::default(),
            summary: SummaryCache::default(),
            shutdown,
            tasks: TaskTracker::new(),
            wal: Arc::default(),
            offsite: crate::offsite::OffsiteState::default(),
            config,
        })
    }

    /// Take the operation gate for `operation` (refused during shutdown, or while
    /// another operation runs).
    pub fn begin(&self, operation: &'static str) -> Result<GateGuard> {
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        self.gate.try_begin(operation)
    }
}
