//! `POST /admin/restore`: the orchestrated restore (CONTRACT §4).
//!
//! Not available yet: it answers 503 with the CLI route an operator can use instead.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{CLI_RESTORE, Error, Result};
use crate::state::State;

/// Body of `POST /admin/restore`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    pub stamp: String,
    /// `null`: chroma when the snapshot has it; `true`: force; `false`: leave it.
    #[serde(default)]
    pub include_chroma: Option<bool>,
    /// Take a pre-restore snapshot first (default true).
    #[serde(default = "yes")]
    pub pre_snapshot: bool,
}

fn yes() -> bool {
    true
}

/// The answer of a restore.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreResponse {}

/// Run an orchestrated restore.
pub async fn restore(_state: &Arc<State>, body: RestoreBody) -> Result<RestoreResponse> {
    atocore_restore_job::Stamp::parse(&body.stamp)?;
    Err(Error::Unavailable(format!(
        "the orchestrated restore is not available in this sidecar yet; restore by hand: {CLI_RESTORE}"
    )))
}
