//! Off-site replication through the sidecar, on a real folder target: the push
//! endpoint, the listing, the push after a scheduled snapshot, metrics and health.

use atocore_sidecar::Config;

use crate::util::*;

fn remote_stamps(target: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(target.join("snapshots"))
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".json"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn push_list_metrics_and_health_on_a_folder_target() {
    let remote = tempfile::tempdir().unwrap();
    let url = format!("file://{}", remote.path().display());
    let sc = Sidecar::start_with(|s| {
        s.set("--offsite-url", &url)
            .set("--offsite-unencrypted", "true");
    });
    let b = sc.post("/admin/backup", "{}");
    assert_eq!(b.status, 200, "{}", b.body);
    let stamp = b.json()["stamp"].as_str().unwrap().to_string();

    let p = sc.post("/admin/offsite/push", "{}");
    assert_eq!(p.status, 200, "{}", p.body);
    let v = p.json();
    assert_eq!(v["pushed"][0]["stamp"], stamp.as_str(), "{v}");
    assert_eq!(v["encrypted"], false);
    assert_eq!(remote_stamps(remote.path()), vec![stamp.clone()]);

    // A second push finds it there and uploads nothing.
    let again = sc.post("/admin/offsite/push", "").json();
    assert_eq!(again["pushed"], serde_json::json!([]), "{again}");
    assert_eq!(again["already_there"], serde_json::json!([stamp]));

    let l = sc.get("/admin/offsite");
    assert_eq!(l.status, 200, "{}", l.body);
    assert_eq!(l.json()["snapshots"][0]["stamp"], stamp.as_str());

    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_pushes_total 2\n"), "{m}");
    assert!(m.contains("atocore_offsite_push_failures_total 0\n"), "{m}");
    assert!(
        m.contains("atocore_offsite_last_success_timestamp_seconds "),
        "{m}"
    );
    let h = sc.get("/health").json();
    assert!(h["offsite"]["last_success_at"].is_string(), "{h}");
    assert!(h["offsite"]["last_failure_at"].is_null(), "{h}");

    // Unknown fields are refused like everywhere else.
    sc.post("/admin/offsite/push", r#"{"stamp": "x"}"#)
        .assert_error(400, "bad_json");
}

#[test]
fn a_failed_push_is_counted_and_turns_health_degraded() {
    // The target is not a folder (a file sits where the backup disk should be).
    let dir = tempfile::tempdir().unwrap();
    let not_a_folder = dir.path().join("backup-disk");
    std::fs::write(&not_a_folder, b"not a folder").unwrap();
    let url = format!("file://{}", not_a_folder.display());
    let sc = Sidecar::start_with(|s| {
        s.set("--offsite-url", &url)
            .set("--offsite-unencrypted", "true");
    });
    sc.post("/admin/backup", "{}");
    let p = sc.post("/admin/offsite/push", "{}");
    assert!(p.status >= 400, "{}", p.body);
    let m = sc.get("/metrics").body;
    assert!(m.contains("atocore_offsite_push_failures_total 1\n"), "{m}");
    let h = sc.get("/health").json();
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().contains("off-site push failed")),
        "{h}"
    );
}

#[test]
fn without_a_target_the_endpoints_say_how_to_set_one() {
    let sc = Sidecar::start();
    sc.post("/admin/offsite/push", "{}")
        .assert_error(400, "offsite_not_configured");
    sc.get("/admin/offsite")
        .assert_error(400, "offsite_not_configured");
    assert!(sc.get("/health").json().get("offsite").is_none());
}

#[test]
fn a_target_without_recipients_is_refused_at_start() {
    let root = tempfile::tempdir().unwrap();
    let mut s = Settings::for_root(root.path());
    s.set("--offsite-url", "file:///mnt/backup/atocore");
    let mut args = vec!["atocore-sidecar".to_string()];
    args.extend(s.args());
    let err = Config::parse_from(args).unwrap_err();
    assert_eq!(err.code(), "bad_config");
    let msg = err.to_string();
    assert!(
        msg.starts_with("off-site: ") && msg.contains("ATOCORE_OFFSITE_RECIPIENTS"),
        "{msg}"
    );
    // A malformed target is refused at start too, not at the first push.
    let mut s = Settings::for_root(root.path());
    s.set("--offsite-url", "file://relative/folder")
        .set("--offsite-unencrypted", "true");
    let mut args = vec!["atocore-sidecar".to_string()];
    args.extend(s.args());
    let err = Config::parse_from(args).unwrap_err();
    assert_eq!(
        err.to_string(),
        "off-site: ATOCORE_OFFSITE_URL `file://relative/folder`: a folder target needs an absolute path, such as file:///mnt/backup/atocore"
    );
}
