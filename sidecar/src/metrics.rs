//! `/metrics`: the OpenMetrics text exposition, encoded by `prometheus-client`.
//!
//! Per-snapshot facts come from the disk ([`Summary`]), so they survive restarts;
//! counters (failures, prunes, restores) live in memory since the sidecar started.
//! The full list with meanings is in docs/sidecar.md.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use atocore_restore_job::Kind;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::Value;

use crate::summary::Summary;

const KINDS: [Kind; 6] = [
    Kind::Manual,
    Kind::Scheduled,
    Kind::WalBase,
    Kind::PreRestore,
    Kind::Drill,
    Kind::PointInTime,
];

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
    offsite_pushes: u64,
    offsite_push_failures: u64,
    offsite_bytes_uploaded: u64,
    last_offsite_push: Option<DateTime<Utc>>,
    last_offsite_failure: Option<DateTime<Utc>>,
    offsite_prunes: u64,
    offsite_prune_failures: u64,
    offsite_pruned_snapshots: u64,
    /// The newest snapshot on the target, as last seen.
    offsite_newest: Option<DateTime<Utc>>,
    /// The last verify: when, whether it passed, how many problems.
    offsite_verify: Option<(DateTime<Utc>, bool, usize)>,
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
    /// The WAL stream.
    pub wal: crate::walstream::WalStatus,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn record_backup(&self, kind: Kind, ok: bool) {
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

    /// `uploaded`: the bytes written by a successful push; `None` when it failed.
    pub fn record_offsite_push(&self, uploaded: Option<u64>) {
        self.with(|c| match uploaded {
            Some(n) => {
                c.offsite_pushes += 1;
                c.offsite_bytes_uploaded += n;
                c.last_offsite_push = Some(Utc::now());
            }
            None => {
                c.offsite_push_failures += 1;
                c.last_offsite_failure = Some(Utc::now());
            }
        });
    }

    /// When the last off-site push succeeded and when one last failed.
    pub fn offsite_status(&self) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        self.with(|c| (c.last_offsite_push, c.last_offsite_failure))
    }

    /// `deleted`: snapshots deleted from the target; `None` when the prune failed.
    pub fn record_offsite_prune(&self, deleted: Option<usize>) {
        self.with(|c| match deleted {
            Some(n) => {
                c.offsite_prunes += 1;
                c.offsite_pruned_snapshots += n as u64;
            }
            None => c.offsite_prune_failures += 1,
        });
    }

    /// What is known of the target at scrape time: its newest snapshot's time, and
    /// the last verify (when, passed, problems).
    pub fn note_offsite(
        &self,
        newest: Option<DateTime<Utc>>,
        verify: Option<(DateTime<Utc>, bool, usize)>,
    ) {
        self.with(|c| {
            c.offsite_newest = newest;
            c.offsite_verify = verify;
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

    /// The exposition text (OpenMetrics), encoded by `prometheus-client` from a
    /// registry built for this scrape: most values are read from disk at scrape time.
    pub fn render(&self, s: &Scrape<'_>) -> String {
        let c = self.with(|c| c.clone());
        let sum = s.summary;
        let ts = |t: DateTime<Utc>| t.timestamp_millis() as f64 / 1000.0;
        let age = |t: DateTime<Utc>| (s.now - t).num_milliseconds().max(0) as f64 / 1000.0;
        let flag = |b: bool| i64::from(b);
        let mut r = Exposition::default();

        r.int_gauge_family(
            "atocore_sidecar_info",
            "Sidecar version (value is always 1)",
            [(vec![("version", env!("CARGO_PKG_VERSION").to_string())], 1)],
        );
        r.int_gauge(
            "atocore_sidecar_docker_up",
            "1 when the Docker Engine answered the last ping",
            flag(s.docker_up),
        );
        r.int_gauge(
            "atocore_sidecar_operation_running",
            "1 while a backup, prune, restore or drill runs",
            flag(s.operation_running.is_some()),
        );
        r.int_gauge(
            "atocore_sidecar_atocore_paused",
            "1 while the sidecar holds the atocore container paused",
            flag(s.paused),
        );
        if let Some(n) = s.next_run {
            r.gauge(
                "atocore_backup_next_scheduled_timestamp_seconds",
                "When the next scheduled snapshot is due",
                ts(n),
            );
        }

        let by_kind = |f: &dyn Fn(&crate::summary::Snap) -> Option<f64>| {
            sum.by_kind
                .iter()
                .filter_map(|(kind, snap)| f(snap).map(|v| (vec![("kind", kind.to_string())], v)))
                .collect::<Vec<_>>()
        };
        r.gauge_family(
            "atocore_backup_last_success_timestamp_seconds",
            "When the newest published snapshot of each kind finished",
            by_kind(&|snap| Some(ts(snap.finished))),
        );
        r.gauge_family(
            "atocore_backup_last_duration_seconds",
            "How long the newest published snapshot of each kind took",
            by_kind(&|snap| snap.duration_ms.map(|ms| ms as f64 / 1000.0)),
        );
        let per_kind = |m: &BTreeMap<&'static str, u64>| {
            KINDS
                .iter()
                .map(|k| {
                    (
                        vec![("kind", k.as_str().to_string())],
                        m.get(k.as_str()).copied().unwrap_or(0),
                    )
                })
                .collect::<Vec<_>>()
        };
        r.counter_family(
            "atocore_backups",
            "Snapshots this sidecar published since it started, by kind",
            per_kind(&c.backups),
        );
        r.counter_family(
            "atocore_backup_failures",
            "Snapshots that failed or were cancelled since the sidecar started, by kind",
            per_kind(&c.backup_failures),
        );

        r.int_gauge("atocore_snapshots", "Published snapshots", sum.count as i64);
        r.int_gauge(
            "atocore_snapshots_invalid",
            "Published snapshots that fail the structural check",
            sum.invalid as i64,
        );
        r.int_gauge(
            "atocore_snapshots_bytes",
            "Database plus chroma bytes recorded in all snapshots (shared chroma files counted in each)",
            i64::try_from(sum.bytes).unwrap_or(i64::MAX),
        );
        if let Some(x) = &sum.oldest {
            r.gauge(
                "atocore_snapshot_oldest_age_seconds",
                "Age of the oldest snapshot",
                age(x.taken),
            );
        }
        if let Some(x) = &sum.newest {
            r.gauge(
                "atocore_snapshot_newest_age_seconds",
                "Age of the newest snapshot",
                age(x.taken),
            );
        }
        if let Some(x) = &sum.newest_valid {
            r.gauge(
                "atocore_snapshot_newest_valid_age_seconds",
                "Age of the newest snapshot not known to be broken",
                age(x.taken),
            );
        }
        r.int_gauge(
            "atocore_snapshots_list_error",
            "1 when the snapshots folder could not be listed",
            flag(sum.error.is_some()),
        );

        r.int_gauge(
            "atocore_wal_streaming",
            "1 when WAL streaming is on and a generation is being written",
            flag(s.wal.enabled && s.wal.generation.is_some()),
        );
        if s.wal.enabled {
            if let Some(lag) = s.wal.lag_seconds {
                r.gauge(
                    "atocore_wal_lag_seconds",
                    "Seconds since every committed WAL frame was last captured",
                    lag,
                );
            }
            if let Some(frames) = s.wal.lag_frames {
                r.int_gauge(
                    "atocore_wal_lag_frames",
                    "Committed frames of the live WAL (its wal-index's end) not captured yet",
                    frames as i64,
                );
            }
            r.counter(
                "atocore_wal_frames_captured",
                "WAL frames captured into segments since the sidecar started",
                s.wal.frames_captured,
            );
            r.counter(
                "atocore_wal_commits_captured",
                "Transactions captured since the sidecar started",
                s.wal.commits_captured,
            );
            r.counter(
                "atocore_wal_bytes_captured",
                "WAL bytes captured (before compression) since the sidecar started",
                s.wal.bytes_captured,
            );
            r.counter(
                "atocore_wal_generations_started",
                "WAL generations started since the sidecar started",
                s.wal.generations_started,
            );
            if let Some(lag) = s.wal.offsite.as_ref().and_then(|o| o.lag_seconds) {
                r.gauge(
                    "atocore_wal_offsite_lag_seconds",
                    "Seconds since every captured WAL segment was last on the off-site target",
                    lag,
                );
            }
            r.int_gauge(
                "atocore_wal_needs_base",
                "1 while the current generation waits for its base snapshot",
                flag(s.wal.needs_base),
            );
        }

        r.counter(
            "atocore_prune_runs",
            "Retention runs since the sidecar started",
            c.prunes,
        );
        r.counter(
            "atocore_prune_failures",
            "Failed retention runs since the sidecar started",
            c.prune_failures,
        );
        r.counter(
            "atocore_pruned_snapshots",
            "Snapshots deleted by retention since the sidecar started",
            c.pruned_snapshots,
        );
        if let Some(t) = c.last_prune {
            r.gauge(
                "atocore_prune_last_success_timestamp_seconds",
                "When retention last ran successfully",
                ts(t),
            );
        }

        r.counter(
            "atocore_restores",
            "Orchestrated restores that ended healthy since the sidecar started",
            c.restores,
        );
        r.counter(
            "atocore_restore_failures",
            "Orchestrated restores that failed since the sidecar started",
            c.restore_failures,
        );
        r.counter(
            "atocore_restore_rollbacks",
            "Restores rolled back to their pre-restore snapshot",
            c.rollbacks,
        );
        if let Some(ms) = c.last_restore_downtime_ms {
            r.gauge(
                "atocore_restore_last_downtime_seconds",
                "atocore's downtime during the last restore",
                ms as f64 / 1000.0,
            );
        }

        r.counter(
            "atocore_offsite_pushes",
            "Off-site pushes that succeeded since the sidecar started",
            c.offsite_pushes,
        );
        r.counter(
            "atocore_offsite_push_failures",
            "Off-site pushes that failed since the sidecar started",
            c.offsite_push_failures,
        );
        r.counter(
            "atocore_offsite_uploaded_bytes",
            "Bytes written to the off-site target since the sidecar started",
            c.offsite_bytes_uploaded,
        );
        if let Some(t) = c.last_offsite_push {
            r.gauge(
                "atocore_offsite_last_success_timestamp_seconds",
                "When the last off-site push succeeded",
                ts(t),
            );
        }

        r.counter(
            "atocore_offsite_prune_runs",
            "Scheduled off-site prunes that succeeded since the sidecar started",
            c.offsite_prunes,
        );
        r.counter(
            "atocore_offsite_prune_failures",
            "Scheduled off-site prunes that failed since the sidecar started",
            c.offsite_prune_failures,
        );
        r.counter(
            "atocore_offsite_pruned_snapshots",
            "Snapshots deleted from the off-site target since the sidecar started",
            c.offsite_pruned_snapshots,
        );
        if let Some(t) = c.offsite_newest {
            r.gauge(
                "atocore_offsite_newest_age_seconds",
                "Age of the newest snapshot on the off-site target (as last seen)",
                age(t),
            );
        }
        if let Some((t, ok, problems)) = c.offsite_verify {
            r.gauge(
                "atocore_offsite_verify_last_timestamp_seconds",
                "When the last scheduled off-site verify ran",
                ts(t),
            );
            r.int_gauge(
                "atocore_offsite_verify_last_ok",
                "1 when the last off-site verify ran and found nothing wrong",
                flag(ok),
            );
            r.int_gauge(
                "atocore_offsite_verify_last_problems",
                "Objects the last off-site verify found missing or damaged",
                problems as i64,
            );
        }

        r.counter(
            "atocore_drills",
            "Drills run since the sidecar started",
            c.drills,
        );
        r.counter(
            "atocore_drill_failures",
            "Drills that failed since the sidecar started",
            c.drill_failures,
        );
        if let Some(d) = &sum.last_drill {
            let passed = d.get("passed").and_then(Value::as_bool).unwrap_or(false);
            r.int_gauge(
                "atocore_drill_last_passed",
                "1 when the last recorded drill passed",
                flag(passed),
            );
            if let Some(t) = d
                .get("finished_at")
                .and_then(Value::as_str)
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            {
                let t = t.with_timezone(&Utc);
                r.gauge(
                    "atocore_drill_last_timestamp_seconds",
                    "When the last recorded drill finished",
                    ts(t),
                );
                r.gauge(
                    "atocore_drill_last_age_seconds",
                    "Age of the last recorded drill",
                    age(t),
                );
            }
        }
        r.encode()
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// A registry filled for one scrape.
#[derive(Default)]
struct Exposition(Registry);

impl Exposition {
    fn int_gauge(&mut self, name: &str, help: &str, v: i64) {
        let g = Gauge::<i64>::default();
        g.set(v);
        self.0.register(name, help, g);
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        let g = FloatGauge::default();
        g.set(v);
        self.0.register(name, help, g);
    }

    fn int_gauge_family(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, i64)>,
    ) {
        let f = Family::<Labels, Gauge<i64>>::default();
        for (labels, v) in samples {
            f.get_or_create(&labels).set(v);
        }
        self.0.register(name, help, f);
    }

    fn gauge_family(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) {
        let f = Family::<Labels, FloatGauge>::default();
        for (labels, v) in samples {
            f.get_or_create(&labels).set(v);
        }
        self.0.register(name, help, f);
    }

    /// A counter: the sample is named `<name>_total`.
    fn counter(&mut self, name: &str, help: &str, v: u64) {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        self.0.register(name, help, c);
    }

    fn counter_family(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) {
        let f = Family::<Labels, Counter<u64>>::default();
        for (labels, v) in samples {
            f.get_or_create(&labels).inc_by(v);
        }
        self.0.register(name, help, f);
    }

    fn encode(self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_lines() {
        let m = Metrics::default();
        m.record_backup(Kind::Manual, false);
        let sum = Summary::default();
        let text = m.render(&Scrape {
            summary: &sum,
            docker_up: false,
            operation_running: None,
            paused: false,
            next_run: None,
            now: Utc::now(),
            wal: crate::walstream::WalStatus::default(),
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
        // Counters are typed by family name, sampled as `_total`; the text ends in EOF.
        assert!(
            text.contains("# TYPE atocore_backup_failures counter\n"),
            "{text}"
        );
        assert!(text.contains("atocore_sidecar_docker_up 0\n"), "{text}");
        assert!(text.contains("atocore_snapshots 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains(&format!(
                "atocore_sidecar_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
    }
}
