//! `atocore-capture status`: what the outbox holds and how the last deliveries went.

use crate::config::Config;
use crate::error::Result;
use crate::outbox::{self, Event, StatusRecord};
use crate::state_dir::StateDir;

/// The JSON `status` prints.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    /// The state directory.
    pub state_dir: String,
    /// Where captures go.
    pub url: String,
    /// The kill switch.
    pub disabled: bool,
    /// Pending captures.
    pub outbox: OutboxSummary,
    /// Captures refused for good, in `dead/`.
    pub dead: DeadSummary,
    /// The last successful delivery.
    pub last_delivery: Option<Event>,
    /// The last failed attempt.
    pub last_error: Option<Event>,
    /// Captures delivered so far.
    pub delivered_total: u64,
    /// Captures dead-lettered so far.
    pub dead_lettered_total: u64,
    /// Prompt keys in the dedup ledger.
    pub ledger_entries: usize,
}

/// The pending captures.
#[derive(Debug, serde::Serialize)]
pub struct OutboxSummary {
    /// The folder.
    pub path: String,
    /// How many.
    pub pending: usize,
    /// Their total size.
    pub bytes: u64,
    /// The oldest one's file name.
    pub oldest: Option<String>,
    /// When the oldest one was captured (from its name).
    pub oldest_at: Option<String>,
}

/// The dead letters.
#[derive(Debug, serde::Serialize)]
pub struct DeadSummary {
    /// The folder.
    pub path: String,
    /// How many.
    pub count: usize,
    /// Their file names, oldest first.
    pub files: Vec<String>,
}

/// Builds the report without creating or changing anything.
pub fn report(config: &Config) -> Result<StatusReport> {
    let dir = StateDir::at(&config.dir);
    let pending = outbox::pending(&dir)?;
    let dead = outbox::dead(&dir)?;
    let record = StatusRecord::load(&dir);
    let name = |p: &std::path::PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let oldest = pending.first().map(name);
    let oldest_at = oldest.as_deref().and_then(|n| {
        let micros: i64 = n.split('-').next()?.parse().ok()?;
        chrono::DateTime::from_timestamp_micros(micros)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    });
    Ok(StatusReport {
        state_dir: dir.root().to_string_lossy().into_owned(),
        url: config.interactions_url(),
        disabled: config.disabled,
        outbox: OutboxSummary {
            path: dir.outbox().to_string_lossy().into_owned(),
            pending: pending.len(),
            bytes: pending
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum(),
            oldest,
            oldest_at,
        },
        dead: DeadSummary {
            path: dir.dead().to_string_lossy().into_owned(),
            count: dead.len(),
            files: dead.iter().map(name).collect(),
        },
        last_delivery: record.last_delivery,
        last_error: record.last_error,
        delivered_total: record.delivered_total,
        dead_lettered_total: record.dead_lettered_total,
        ledger_entries: crate::ledger::load(&dir.ledger())?.len(),
    })
}
