//! The live restore drill (`POST /admin/drill`) and its history (`GET /admin/drill`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{CLI_RESTORE, Error, Result};
use crate::state::State;
use crate::summary::DRILLS_FILE;

/// Body of `POST /admin/drill` (no fields yet; unknown ones are refused).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillBody {}

/// One drill record.
#[derive(Debug, Clone, Serialize)]
pub struct DrillRecord {
    pub passed: bool,
}

/// `GET /admin/drill`.
#[derive(Debug, Clone, Serialize)]
pub struct DrillHistory {
    pub drills_file: String,
    pub drills: Vec<Value>,
}

/// Run the drill.
pub async fn run(_state: &Arc<State>) -> Result<DrillRecord> {
    Err(Error::Unavailable(format!(
        "the live drill needs the orchestrated restore, which is not available in this sidecar yet; restore by hand: {CLI_RESTORE}"
    )))
}

/// The drill records, oldest first.
pub async fn history(state: &Arc<State>) -> Result<DrillHistory> {
    let path = state.config.paths.backup_dir.join(DRILLS_FILE);
    let p = path.clone();
    let drills = tokio::task::spawn_blocking(move || match std::fs::read_to_string(&p) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", &p)(e)),
    })
    .await
    .map_err(|e| Error::Internal(format!("reading drills: {e}")))??;
    Ok(DrillHistory {
        drills_file: path.display().to_string(),
        drills,
    })
}
