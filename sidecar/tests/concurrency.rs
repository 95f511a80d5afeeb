//! One mutating operation at a time: 409 for the second, reads keep working.

use std::time::Duration;

use atocore_restore_job::BackupLock;

use crate::util::{Settings, Sidecar, sample_root, stamps, wait_until};

#[test]
fn a_second_operation_while_one_runs_is_409_and_reads_still_work() {
    // Big enough that the backup runs for a while (copy + integrity check).
    let (_dir, paths) = sample_root(400_000);
    let sc = Sidecar::serve(Settings::for_root(&paths.storage_root).config());
    let first = sc.post("/admin/backup", "{}");
    assert_eq!(first.status, 200);

    let url = sc.url("/admin/backup");
    let running = std::thread::spawn(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let r = agent.post(&url).send("{\"include_chroma\": true}").unwrap();
        r.status().as_u16()
    });
    assert!(
        wait_until(Duration::from_secs(20), || sc
            .state
            .gate
            .running()
            .is_some()),
        "the backup never started"
    );
    sc.post("/admin/backup", "{}").assert_error(409, "busy");
    sc.post("/admin/backup/prune", r#"{"dry_run": true}"#)
        .assert_error(409, "busy");
    let h = sc.get("/health");
    assert_eq!(h.status, 200);
    let op = &h.json()["operation"];
    // The backup may have finished in the meantime; if not, health names it.
    assert!(op.is_null() || op["operation"] == "backup", "{op}");
    assert_eq!(sc.get("/admin/backup").status, 200);
    let stamp = &stamps(&sc.paths)[0];
    assert_eq!(
        sc.get(&format!("/admin/backup/{stamp}/validate")).status,
        200
    );
    assert_eq!(running.join().unwrap(), 200);
    assert_eq!(
        stamps(&sc.paths).len(),
        2,
        "the refused requests created nothing"
    );
}

#[test]
fn the_gate_refuses_with_409_while_held() {
    let sc = Sidecar::start();
    let guard = sc.state.begin("backup").unwrap();
    let r = sc.post("/admin/backup", "{}");
    r.assert_error(409, "busy");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("a backup is running")
    );
    sc.post("/admin/backup/prune", "{}")
        .assert_error(409, "busy");
    assert_eq!(sc.get("/admin/backup").status, 200);
    drop(guard);
    assert_eq!(sc.post("/admin/backup", "{}").status, 200);
}

#[test]
fn another_process_holding_the_backups_lock_is_409() {
    let sc = Sidecar::start();
    let lock = BackupLock::acquire(&sc.paths.backup_dir).unwrap();
    let r = sc.post("/admin/backup", "{}");
    r.assert_error(409, "busy");
    assert!(
        r.json()["message"].as_str().unwrap().contains(".lock"),
        "{}",
        r.body
    );
    sc.post("/admin/backup/prune", "{}")
        .assert_error(409, "busy");
    drop(lock);
    assert_eq!(sc.post("/admin/backup", "{}").status, 200);
    // The failure was counted.
    let m = sc.get("/metrics").body;
    assert!(
        m.contains("atocore_backup_failures_total{kind=\"manual\"} 1\n"),
        "{m}"
    );
}
