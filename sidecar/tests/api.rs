//! Every endpoint with good input: status, body shape, and what changed on disk.

use atocore_restore_job::{Paths, Stamp, snapshot, validate};
use serde_json::Value;

use crate::util::{Sidecar, stamps};

fn list_body(paths: &Paths) -> Value {
    serde_json::to_value(snapshot::list(paths).unwrap()).unwrap()
}

#[test]
fn health_reports_version_docker_and_staleness() {
    let sc = Sidecar::start();
    let r = sc.get("/health");
    assert_eq!(r.status, 200);
    let h = r.json();
    assert_eq!(h["service"], "atocore-sidecar");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["docker"]["reachable"], false);
    assert_eq!(h["status"], "degraded", "no snapshot yet: {h}");
    assert!(h["last_backup"].is_null());
    assert_eq!(h["stale_after_seconds"], 26 * 3600);
    assert!(h["last_drill"].is_null());

    let b = sc.post("/admin/backup", "{}");
    assert_eq!(b.status, 200, "{}", b.body);
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["last_backup"]["stamp"], b.json()["stamp"]);
    assert_eq!(h["last_backup"]["kind"], "manual");
    assert!(h["last_backup"]["age_seconds"].as_i64().unwrap() < 60);
    assert_eq!(h["snapshots"], 1);
    assert!(h["reasons"].as_array().unwrap().is_empty());
}

#[test]
fn health_is_degraded_when_the_newest_snapshot_is_stale() {
    let sc = Sidecar::start_with(|s| {
        s.set("--stale-hours", "1");
    });
    let stamp = sc.post("/admin/backup", "{}").json()["stamp"]
        .as_str()
        .unwrap()
        .to_string();
    // Age the snapshot by two hours: rename its folder to an older stamp.
    let old = Stamp::from_time(Stamp::parse(&stamp).unwrap().time() - chrono::TimeDelta::hours(2));
    let snaps = sc.paths.snapshots_dir();
    std::fs::rename(snaps.join(&stamp), snaps.join(old.as_str())).unwrap();
    sc.state.summary.invalidate();
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["reasons"][0].as_str().unwrap().contains("2 h old"), "{h}");
}

#[test]
fn backup_returns_the_validated_metadata_of_a_manual_snapshot() {
    let sc = Sidecar::start();
    let r = sc.post("/admin/backup", r#"{"include_chroma": false}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    let stamp = m["stamp"].as_str().unwrap();
    assert_eq!(m["kind"], "manual");
    assert_eq!(m["include_chroma"], false);
    assert!(m["validated_at"].is_string());
    assert!(m["row_counts"]["memories"].as_u64().unwrap() >= 200);
    assert_eq!(stamps(&sc.paths), vec![stamp.to_string()]);
    let v = validate::validate(&sc.paths, &Stamp::parse(stamp).unwrap()).unwrap();
    assert!(v.valid, "{v:?}");
    // An empty body means the defaults.
    let r = sc.post("/admin/backup", "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(stamps(&sc.paths).len(), 2);
}

#[test]
fn backup_with_chroma_and_no_docker_is_taken_unquiesced_and_says_so() {
    let sc = Sidecar::start();
    let r = sc.post("/admin/backup", r#"{"include_chroma": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let m = r.json();
    assert_eq!(m["include_chroma"], true);
    assert_eq!(m["chroma_quiesced"], false);
    assert!(m["chroma_files"].as_u64().unwrap() >= 4);
    let w: Vec<&str> = m["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(w.contains(&"chroma_not_quiesced"), "{m}");
}

#[test]
fn list_has_the_body_of_the_cli_list() {
    let sc = Sidecar::start();
    let empty = sc.get("/admin/backup");
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json()["backups"], serde_json::json!([]));
    sc.post("/admin/backup", "{}");
    sc.post("/admin/backup", r#"{"include_chroma": true}"#);
    let r = sc.get("/admin/backup");
    assert_eq!(r.status, 200);
    let body = r.json();
    assert_eq!(body, list_body(&sc.paths));
    assert_eq!(body["backups"].as_array().unwrap().len(), 2);
    assert_eq!(body["backups"][0]["valid"], true);
    assert_eq!(
        body["backup_dir"],
        sc.paths.backup_dir.display().to_string()
    );
}

#[test]
fn validate_reports_valid_and_broken_snapshots() {
    let sc = Sidecar::start();
    let stamp = sc.post("/admin/backup", "{}").json()["stamp"]
        .as_str()
        .unwrap()
        .to_string();
    let r = sc.get(&format!("/admin/backup/{stamp}/validate"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["stamp"], stamp.as_str());
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], serde_json::json!([]));

    // Damage the database copy: same size, different bytes.
    let db = sc.paths.snapshots_dir().join(&stamp).join("db/atocore.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 2..n / 2 + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&db, bytes).unwrap();
    let r = sc.get(&format!("/admin/backup/{stamp}/validate"));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["valid"], false);
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(errors.contains(&"manifest_mismatch:db/atocore.db"), "{v}");
}

#[test]
fn validate_of_an_unknown_stamp_is_404_and_of_a_malformed_one_400() {
    let sc = Sidecar::start();
    sc.get("/admin/backup/20200101T000000Z/validate")
        .assert_error(404, "unknown_stamp");
    for bad in [
        "2020",
        "..",
        "20200101T000000Z%2F..",
        "..%2F..%2Fetc",
        "20201301T000000Z",
        "%00",
    ] {
        sc.get(&format!("/admin/backup/{bad}/validate"))
            .assert_error(400, "bad_stamp");
    }
}

#[test]
fn prune_dry_run_reports_and_prune_deletes() {
    // Snapshots seconds old are all kept by the default `--keep-within 24h`; this is
    // about the series.
    let sc = Sidecar::start_with(|s| {
        s.set("--keep-within", "0");
    });
    for _ in 0..3 {
        assert_eq!(sc.post("/admin/backup", "{}").status, 200);
    }
    let before = stamps(&sc.paths);
    assert_eq!(before.len(), 3);
    let r = sc.post("/admin/backup/prune", r#"{"dry_run": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let p = r.json();
    assert_eq!(p["dry_run"], true);
    // Three on one day: the daily bucket keeps the newest one.
    assert_eq!(p["kept"], serde_json::json!([before[2]]), "{p}");
    assert_eq!(p["deleted"].as_array().unwrap().len(), 2);
    assert!(p["reasons"][&before[0]].is_string());
    assert_eq!(stamps(&sc.paths), before, "a dry run deletes nothing");

    let r = sc.post("/admin/backup/prune", "{}");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["dry_run"], false);
    assert_eq!(stamps(&sc.paths), vec![before[2].clone()]);
}

#[test]
fn metrics_are_prometheus_text_with_the_snapshot_facts() {
    let sc = Sidecar::start();
    sc.post("/admin/backup", "{}");
    sc.post("/admin/backup/prune", "{}");
    let r = sc.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text; version=1.0.0")
    );
    let t = &r.body;
    for want in [
        "atocore_backup_last_success_timestamp_seconds{kind=\"manual\"} ",
        "atocore_backup_last_duration_seconds{kind=\"manual\"} ",
        "atocore_backups_total{kind=\"manual\"} 1\n",
        "atocore_backup_failures_total{kind=\"scheduled\"} 0\n",
        "atocore_snapshots 1\n",
        "atocore_snapshots_bytes ",
        "atocore_snapshot_oldest_age_seconds ",
        "atocore_snapshot_newest_age_seconds ",
        "atocore_prune_runs_total 1\n",
        "atocore_sidecar_docker_up 0\n",
        "# TYPE atocore_backup_failures counter\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    for line in t.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').unwrap();
        v.parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample line {line}"));
    }
}

#[test]
fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    let sc = Sidecar::start();
    sc.get("/nope").assert_error(404, "not_found");
    sc.get("/").assert_error(404, "not_found");
    sc.get("/admin/backup/20200101T000000Z")
        .assert_error(404, "not_found");
    let r = sc.request("DELETE", "/admin/backup", &[], "");
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, POST"));
    let r = sc.request("POST", "/health", &[], "");
    r.assert_error(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"));
    sc.request("GET", "/admin/backup/prune", &[], "")
        .assert_error(405, "method_not_allowed");
    sc.request("PUT", "/admin/restore", &[], "{}")
        .assert_error(405, "method_not_allowed");
    assert!(stamps(&sc.paths).is_empty());
}

#[test]
fn drill_history_is_empty_at_first() {
    let sc = Sidecar::start();
    let r = sc.get("/admin/drill");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["drills"], serde_json::json!([]));
}
