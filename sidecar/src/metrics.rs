//! `/metrics`: Prometheus text exposition (format 0.0.4).
//!
//! Per-snapshot facts come from the disk ([`Summary`]), so they survive restarts;
//! counters (failures, prunes, restores) live in memory since the sidecar started.
//! The full list with meanings is in docs/sidecar.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use atocore_restore_job::Kind;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::summary::Summary;

const KINDS: [Kind; 4] = [Kind::Manual, Kind::Scheduled, Kind::PreRestore, Kind::Drill];

#[derive(Debug, Default, Clone)]
struct Counters {
    backups: BTreeMap<&'static str, u64>,
    backup_failures: BTreeMap<&'static str, u64>,
    prunes: u64,
    prune_failures: u64,
    pruned_snapshots: u64,
    last_prune: Option<DateTime<Utc>>,
    restores: u64,
    restore_failures: u64,
    rollbacks: u64,
    last_restore_downtime_ms: Option<u64>,
    drills: u64,
    drill_failures: u64,
}

/// The in-memory counters.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<Counters>);

/// Facts gathered at scrape time besides the counters.
#[derive(Debug, Clone)]
pub struct Scrape<'a> {
    pub summary: &'a Summary,
    pub docker_up: bool,
    pub operation_running: Option<&'a str>,
    pub paused: bool,
    pub next_run: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn record_backup(&self, kind: Kind, ok: bool, _elapsed: Duration) {
        self.with(|c| {
            let map = if ok {
                &mut c.backups
            } else {
                &mut c.backup_failures
            };
            *map.entry(kind.as_str()).or_default() += 1;
        });
    }

    /// `deleted`: `None` when the prune failed.
    pub fn record_prune(&self, deleted: Option<usize>) {
        self.with(|c| match deleted {
            Some(n) => {
                c.prunes += 1;
                c.pruned_snapshots += n as u64;
                c.last_prune = Some(Utc::now());
            }
            None => c.prune_failures += 1,
        });
    }

    pub fn record_restore(&self, ok: bool, rolled_back: bool, downtime_ms: Option<u64>) {
        self.with(|c| {
            if ok {
                c.restores += 1;
            } else {
                c.restore_failures += 1;
            }
            if rolled_back {
                c.rollbacks += 1;
            }
            if downtime_ms.is_some() {
                c.last_restore_downtime_ms = downtime_ms;
            }
        });
    }

    pub fn record_drill(&self, passed: bool) {
        self.with(|c| {
            c.drills += 1;
            if !passed {
                c.drill_failures += 1;
            }
        });
    }

    /// The exposition text.
    pub fn render(&self, s: &Scrape<'_>) -> String {
        let c = self.with(|c| c.clone());
        let sum = s.summary;
        let mut o = String::with_capacity(4096);
        let ts = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
        let age = |t: DateTime<Utc>| (s.now - t).num_milliseconds().max(0) as f64 / 1000.0;

        family(
            &mut o,
            "atocore_sidecar_info",
            "gauge",
            "Sidecar version (value is always 1).",
        );
        let _ = writeln!(
            o,
            "atocore_sidecar_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        gauge(
            &mut o,
            "atocore_sidecar_docker_up",
            "1 when the Docker Engine answered the last ping.",
            s.docker_up as u8 as f64,
        );
        gauge(
            &mut o,
            "atocore_sidecar_operation_running",
            "1 while a backup, prune, restore or drill runs.",
            s.operation_running.is_some() as u8 as f64,
        );
        gauge(
            &mut o,
            "atocore_sidecar_atocore_paused",
            "1 while the sidecar holds the atocore container paused.",
            s.paused as u8 as f64,
        );
        if let Some(n) = s.next_run {
            gauge(
                &mut o,
                "atocore_backup_next_scheduled_timestamp_seconds",
                "When the next scheduled snapshot is due.",
                ts(n),
            );
        }

        family(
            &mut o,
            "atocore_backup_last_success_timestamp_seconds",
            "gauge",
            "When the newest published snapshot of each kind finished.",
        );
        for (kind, snap) in &sum.by_kind {
            let _ = writeln!(
                o,
                "atocore_backup_last_success_timestamp_seconds{{kind=\"{kind}\"}} {}",
                ts(snap.finished)
            );
        }
        family(
            &mut o,
            "atocore_backup_last_duration_seconds",
            "gauge",
            "How long the newest published snapshot of each kind took.",
        );
        for (kind, snap) in &sum.by_kind {
            if let Some(ms) = snap.duration_ms {
                let _ = writeln!(
                    o,
                    "atocore_backup_last_duration_seconds{{kind=\"{kind}\"}} {}",
                    ms as f64 / 1000.0
                );
            }
        }
        family(
            &mut o,
            "atocore_backups_total",
            "counter",
            "Snapshots this sidecar published since it started, by kind.",
        );
        for k in KINDS {
            let _ = writeln!(
                o,
                "atocore_backups_total{{kind=\"{}\"}} {}",
                k.as_str(),
                c.backups.get(k.as_str()).copied().unwrap_or(0)
            );
        }
        family(
            &mut o,
            "atocore_backup_failures_total",
            "counter",
            "Snapshots that failed or were cancelled since the sidecar started, by kind.",
        );
        for k in KINDS {
            let _ = writeln!(
                o,
                "atocore_backup_failures_total{{kind=\"{}\"}} {}",
                k.as_str(),
                c.backup_failures.get(k.as_str()).copied().unwrap_or(0)
            );
        }

        gauge(
            &mut o,
            "atocore_snapshots",
            "Published snapshots.",
            sum.count as f64,
        );
        gauge(
            &mut o,
            "atocore_snapshots_invalid",
            "Published snapshots that fail the structural check.",
            sum.invalid as f64,
        );
        gauge(
            &mut o,
            "atocore_snapshots_bytes",
            "Database plus chroma bytes recorded in all snapshots (shared chroma files counted in each).",
            sum.bytes as f64,
        );
        if let Some(x) = &sum.oldest {
            gauge(
                &mut o,
                "atocore_snapshot_oldest_age_seconds",
                "Age of the oldest snapshot.",
                age(x.taken),
            );
        }
        if let Some(x) = &sum.newest {
            gauge(
                &mut o,
                "atocore_snapshot_newest_age_seconds",
                "Age of the newest snapshot.",
                age(x.taken),
            );
        }
        if let Some(x) = &sum.newest_valid {
            gauge(
                &mut o,
                "atocore_snapshot_newest_valid_age_seconds",
                "Age of the newest snapshot not known to be broken.",
                age(x.taken),
            );
        }
        gauge(
            &mut o,
            "atocore_snapshots_list_error",
            "1 when the snapshots folder could not be listed.",
            sum.error.is_some() as u8 as f64,
        );

        counter(
            &mut o,
            "atocore_prune_runs_total",
            "Retention runs since the sidecar started.",
            c.prunes as f64,
        );
        counter(
            &mut o,
            "atocore_prune_failures_total",
            "Failed retention runs since the sidecar started.",
            c.prune_failures as f64,
        );
        counter(
            &mut o,
            "atocore_pruned_snapshots_total",
            "Snapshots deleted by retention since the sidecar started.",
            c.pruned_snapshots as f64,
        );
        if let Some(t) = c.last_prune {
            gauge(
                &mut o,
                "atocore_prune_last_success_timestamp_seconds",
                "When retention last ran successfully.",
                ts(t),
            );
        }

        counter(
            &mut o,
            "atocore_restores_total",
            "Orchestrated restores that ended healthy since the sidecar started.",
            c.restores as f64,
        );
        counter(
            &mut o,
            "atocore_restore_failures_total",
            "Orchestrated restores that failed since the sidecar started.",
            c.restore_failures as f64,
        );
        counter(
            &mut o,
            "atocore_restore_rollbacks_total",
            "Restores rolled back to their pre-restore snapshot.",
            c.rollbacks as f64,
        );
        if let Some(ms) = c.last_restore_downtime_ms {
            gauge(
                &mut o,
                "atocore_restore_last_downtime_seconds",
                "atocore's downtime during the last restore.",
                ms as f64 / 1000.0,
            );
        }

        counter(
            &mut o,
            "atocore_drills_total",
            "Drills run since the sidecar started.",
            c.drills as f64,
        );
        counter(
            &mut o,
            "atocore_drill_failures_total",
            "Drills that failed since the sidecar started.",
            c.drill_failures as f64,
        );
        if let Some(d) = &sum.last_drill {
            let passed = d.get("passed").and_then(Value::as_bool).unwrap_or(false);
            gauge(
                &mut o,
                "atocore_drill_last_passed",
                "1 when the last recorded drill passed.",
                passed as u8 as f64,
            );
            if let Some(t) = d
                .get("finished_at")
                .and_then(Value::as_str)
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            {
                let t = t.with_timezone(&Utc);
                gauge(
                    &mut o,
                    "atocore_drill_last_timestamp_seconds",
                    "When the last recorded drill finished.",
                    ts(t),
                );
                gauge(
                    &mut o,
                    "atocore_drill_last_age_seconds",
                    "Age of the last recorded drill.",
                    age(t),
                );
            }
        }
        o
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: f64) {
    family(o, name, "gauge", help);
    let _ = writeln!(o, "{name} {v}");
}

fn counter(o: &mut String, name: &str, help: &str, v: f64) {
    family(o, name, "counter", help);
    let _ = writeln!(o, "{name} {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_lines() {
        let m = Metrics::default();
        m.record_backup(Kind::Manual, false, Duration::ZERO);
        let sum = Summary::default();
        let text = m.render(&Scrape {
            summary: &sum,
            docker_up: false,
            operation_running: None,
            paused: false,
            next_run: None,
            now: Utc::now(),
        });
        assert!(
            text.contains("atocore_backup_failures_total{kind=\"manual\"} 1\n"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(!name.is_empty());
            value.parse::<f64>().unwrap();
        }
    }
}
