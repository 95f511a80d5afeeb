//! The operation gate: one mutating operation (backup, prune, restore, drill) at a
//! time. A second one gets [`Error::Busy`] (409). The guard holds only the gate, not
//! the sidecar's whole state; dropping it lets the next operation in.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use crate::error::{Error, Result};

/// The operation that holds the gate.
#[derive(Debug, Clone, Serialize)]
pub struct Running {
    pub operation: &'static str,
    pub started_at: String,
    #[serde(skip)]
    pub since: Instant,
}

/// Admits one mutating operation at a time.
#[derive(Debug, Default)]
pub struct Gate(Arc<Mutex<Option<Running>>>);

/// Holds the gate; dropping it lets the next operation in.
#[derive(Debug)]
pub struct GateGuard(Arc<Mutex<Option<Running>>>);

impl Drop for GateGuard {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Gate {
    /// Take the gate for `operation`, or say what holds it.
    pub fn try_begin(&self, operation: &'static str) -> Result<GateGuard> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = slot.as_ref() {
            return Err(Error::Busy(format!(
                "a {} is running (started {} s ago, at {}); wait for it to finish and try again",
                r.operation,
                r.since.elapsed().as_secs(),
                r.started_at
            )));
        }
        *slot = Some(Running {
            operation,
            started_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            since: Instant::now(),
        });
        Ok(GateGuard(Arc::clone(&self.0)))
    }

    /// The operation running now, if any.
    pub fn running(&self) -> Option<Running> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
