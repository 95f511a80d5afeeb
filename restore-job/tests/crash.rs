//! kill -9 during a restore, then the same restore (or `init`) again: the live state
//! must end up exactly the snapshot's.

use std::time::Duration;

use crate::util::*;

const POINTS: &[&str] = &[
    "after-journal",
    "mid-stage",
    "before-swap",
    "after-wal-removed",
    "after-db-swap",
    "chroma-moved-aside",
    "chroma-half-in",
    "before-verify",
    "before-cleanup",
];

/// A fresh install with a chroma snapshot taken and the live state mutated since.
fn prepared() -> (Install, String, Tree, i64) {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let snap_chroma = tree(&i.paths.chroma);
    i.add_memories(9, "after-snapshot");
    std::fs::write(i.paths.chroma.join("added.bin"), b"added").unwrap();
    let seg = std::fs::read_dir(&i.paths.chroma)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    std::fs::remove_file(seg.join("data_level3.bin")).unwrap();
    (
        i,
        m["stamp"].as_str().unwrap().to_string(),
        snap_chroma,
        200,
    )
}

fn assert_snapshot_state(i: &Install, snap_chroma: &Tree, rows: i64, ctx: &str) {
    assert_eq!(i.count_rows("memories"), rows, "{ctx}: database");
    assert_eq!(&tree(&i.paths.chroma), snap_chroma, "{ctx}: chroma");
    assert!(
        !i.paths.restore_dir().join("journal.json").exists(),
        "{ctx}: journal left"
    );
    let leftovers = names_in(i.paths.db.parent().unwrap(), |n| n.contains("restore-tmp"));
    assert!(leftovers.is_empty(), "{ctx}: {leftovers:?}");
    let hidden = names_in(&i.paths.snapshots_dir(), |n| n.starts_with('.'));
    assert!(hidden.is_empty(), "{ctx}: {hidden:?}");
}

#[test]
fn kill_9_at_each_point_then_rerun_ends_in_the_snapshot_state() {
    for point in POINTS {
        let (i, stamp, snap_chroma, rows) = prepared();
        let r = i.run_env(
            &["restore", &stamp, "--confirm-service-stopped"],
            &[("ATOCORE_RESTORE_JOB_CRASH_AT", point)],
        );
        assert_eq!(
            r.code, -1,
            "{point}: the process was not killed: {}",
            r.stderr
        );
        assert!(
            i.paths.restore_dir().join("journal.json").exists(),
            "{point}: no journal after the crash"
        );
        // Every published snapshot is still valid, and none is half made.
        for s in i.stamps() {
            let v = i.run(&["validate", &s]);
            assert_eq!(
                v.json["valid"], true,
                "{point}: snapshot {s} invalid after crash: {}",
                v.stdout
            );
        }
        let again = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
        assert_eq!(
            again.code, 0,
            "{point}: rerun failed: {}\n{}",
            again.stdout, again.stderr
        );
        assert_eq!(
            again.json["recovered_interrupted_restore"],
            stamp.as_str(),
            "{point}"
        );
        assert_snapshot_state(&i, &snap_chroma, rows, point);
        // The live state from before the restore survived the crash as the
        // pre-restore snapshot: the 9 rows and the chroma changes made after the snapshot.
        let pre = again.json["pre_restore_snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("{point}: no pre-restore snapshot: {}", again.stdout));
        assert_eq!(
            count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
            rows + 9,
            "{point}"
        );
        assert!(
            i.snapshot_dir(pre).join("chroma/added.bin").is_file(),
            "{point}"
        );
        assert!(
            !i.paths.restore_dir().join("aside.json").exists(),
            "{point}"
        );
    }
}

#[test]
fn a_crash_is_finished_by_the_next_init() {
    for point in ["mid-stage", "after-db-swap", "chroma-half-in"] {
        let (i, stamp, snap_chroma, rows) = prepared();
        let r = i.run_env(
            &["restore", &stamp, "--confirm-service-stopped"],
            &[("ATOCORE_RESTORE_JOB_CRASH_AT", point)],
        );
        assert_eq!(r.code, -1, "{point}");
        let init = i.run(&["init"]);
        assert_eq!(init.code, 0, "{point}: {}\n{}", init.stdout, init.stderr);
        assert_eq!(init.json["recovered"]["stamp"], stamp.as_str());
        assert_snapshot_state(&i, &snap_chroma, rows, point);
    }
}

#[test]
fn kill_9_at_random_moments_then_rerun() {
    let (i, stamp, snap_chroma, rows) = prepared();
    for delay_ms in [5u64, 15, 30, 60, 120] {
        let mut child = std::process::Command::new(BIN)
            .arg("--storage-root")
            .arg(i.root())
            .args(["restore", &stamp, "--confirm-service-stopped"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
    }
    let again = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_snapshot_state(&i, &snap_chroma, rows, "random kills");
}

#[test]
fn init_without_a_request_does_nothing_and_with_one_performs_it() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let stamp = m["stamp"].as_str().unwrap();
    let before = storage_tree(i.root());
    let r = i.run(&["init"]);
    assert_eq!(r.code, 0);
    assert!(
        r.json["request"].is_null() && r.json["result"].is_null(),
        "{}",
        r.stdout
    );
    assert_eq!(storage_tree(i.root()), before);

    i.add_memories(4, "before-init");
    let req = serde_json::json!({"request_id": "req-1", "stamp": stamp, "include_chroma": null, "pre_snapshot": true});
    std::fs::create_dir_all(i.paths.restore_dir()).unwrap();
    std::fs::write(i.paths.restore_dir().join("request.json"), req.to_string()).unwrap();
    let r = i.run(&["init"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(i.count_rows("memories"), 200);
    assert!(!i.paths.restore_dir().join("request.json").exists());
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(i.paths.restore_dir().join("result.json")).unwrap())
            .unwrap();
    assert_eq!(result["request_id"], "req-1");
    assert_eq!(result["ok"], true);
    assert_eq!(result["restored_integrity_ok"], true);
    assert_eq!(result["chroma_restored"], true);
    assert!(result["pre_restore_snapshot"].is_string());

    // A request for a snapshot that does not exist: result says so, exit 2, request gone.
    let req = serde_json::json!({"request_id": "req-2", "stamp": "20200101T000000Z"});
    std::fs::write(i.paths.restore_dir().join("request.json"), req.to_string()).unwrap();
    let r = i.run(&["init"]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["result"]["error"]["error"], "unknown_stamp");
    assert!(!i.paths.restore_dir().join("request.json").exists());
}

#[test]
fn a_prevalidated_request_still_refuses_bytes_damaged_after_validation() {
    let i = Install::with_rows(2000);
    let m = i.backup(&["--include-chroma"]);
    let stamp = m["stamp"].as_str().unwrap();
    i.add_memories(3, "live");
    // Damage the snapshot after it was validated: the quick check cannot see it.
    let db = i.snapshot_dir(stamp).join("db/atocore.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[30 * 4096 + 100] ^= 0xff;
    std::fs::write(&db, bytes).unwrap();
    let live_before = (tree(&i.paths.chroma), i.count_rows("memories"));
    let req = serde_json::json!({"request_id": "pv", "stamp": stamp, "prevalidated": true});
    std::fs::create_dir_all(i.paths.restore_dir()).unwrap();
    std::fs::write(i.paths.restore_dir().join("request.json"), req.to_string()).unwrap();
    let r = i.run(&["init"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["result"]["ok"], false);
    assert!(
        r.json["result"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match its manifest hash"),
        "{}",
        r.stdout
    );
    // Nothing live changed (so no safety copy was needed), no journal or staging is left.
    assert_eq!(
        (tree(&i.paths.chroma), i.count_rows("memories")),
        live_before
    );
    assert!(!i.paths.restore_dir().join("journal.json").exists());
    assert!(!i.paths.restore_dir().join("aside.json").exists());
    assert!(!i.paths.chroma.join(".atocore-restore").exists());
    assert!(r.json["result"]["pre_restore_snapshot"].is_null());
    assert_eq!(i.stamps().len(), 1);
}

/// Write a restore request for `init`.
fn request(i: &Install, body: serde_json::Value) {
    std::fs::create_dir_all(i.paths.restore_dir()).unwrap();
    std::fs::write(i.paths.restore_dir().join("request.json"), body.to_string()).unwrap();
}

#[test]
fn a_deferred_pre_restore_snapshot_is_made_by_finalize_and_survives_a_crash() {
    let (i, stamp, snap_chroma, rows) = prepared();
    request(
        &i,
        serde_json::json!({"request_id": "d1", "stamp": stamp, "defer_pre_snapshot": true, "prevalidated": true}),
    );
    let r = i.run(&["init"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["result"]["pre_restore_pending"], true);
    assert!(r.json["result"]["pre_restore_snapshot"].is_null());
    // Live data equals the snapshot; the safety copy waits in the staging folder.
    let live: Tree = tree(&i.paths.chroma)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".atocore-restore"))
        .collect();
    assert_eq!(&live, &snap_chroma);
    assert_eq!(i.count_rows("memories"), rows);
    assert!(
        i.paths
            .chroma
            .join(".atocore-restore/aside/added.bin")
            .is_file()
    );
    assert!(i.paths.restore_dir().join("aside.json").exists());
    assert_eq!(i.stamps().len(), 1, "no pre-restore snapshot yet");

    // The service may run again meanwhile; finalize reads only the aside copy.
    i.add_memories(2, "service-back");
    let crashed = i.run_env(
        &["finalize"],
        &[("ATOCORE_RESTORE_JOB_CRASH_AT", "finalize-published")],
    );
    assert_eq!(crashed.code, -1);
    let f = i.run(&["finalize"]);
    assert_eq!(f.code, 0, "{}\n{}", f.stdout, f.stderr);
    let pre = f.json["pre_restore_snapshot"].as_str().unwrap();
    let stamps = i.stamps();
    assert_eq!(
        stamps.len(),
        2,
        "a crash after publishing must not make a second snapshot: {stamps:?}"
    );
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        rows + 9
    );
    assert!(i.snapshot_dir(pre).join("chroma/added.bin").is_file());
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(i.snapshot_dir(pre).join("backup-metadata.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["kind"], "pre-restore");
    assert_eq!(meta["source"]["db_path"], i.paths.db.display().to_string());
    assert!(!i.paths.restore_dir().join("aside.json").exists());
    assert!(!i.paths.chroma.join(".atocore-restore").exists());
    assert_eq!(
        i.count_rows("memories"),
        rows + 2,
        "finalize touched the live database"
    );
    let again = i.run(&["finalize"]);
    assert!(again.json["pre_restore_snapshot"].is_null());
}

#[test]
fn init_without_a_request_finalizes_a_pending_aside_copy() {
    let (i, stamp, _, rows) = prepared();
    request(
        &i,
        serde_json::json!({"request_id": "d2", "stamp": stamp, "defer_pre_snapshot": true}),
    );
    assert_eq!(i.run(&["init"]).code, 0);
    let r = i.run(&["init"]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let pre = r.json["finalized_pre_restore_snapshot"].as_str().unwrap();
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        rows + 9
    );
}

#[test]
fn prepare_stages_while_the_service_runs_and_restore_only_swaps() {
    let (i, stamp, snap_chroma, rows) = prepared();
    // A connection held open, like the running service: prepare does not mind.
    let service = rusqlite::Connection::open(&i.paths.db).unwrap();
    service
        .execute_batch("SELECT count(*) FROM memories;")
        .unwrap();
    let p = i.run(&["prepare", &stamp]);
    assert_eq!(p.code, 0, "{}\n{}", p.stdout, p.stderr);
    assert_eq!(p.json["stamp"], stamp.as_str());
    assert_eq!(p.json["chroma"], true);
    // The service keeps writing after the staging; the restore must still win.
    service
        .execute(
            "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('e', 'late', 't', 1.0, 'now')",
            [],
        )
        .unwrap();
    let refused = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(refused.code, 2, "the database is still open");
    drop(service);
    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["staged_ahead"], true);
    assert_snapshot_state(&i, &snap_chroma, rows, "prepared");

    // A staged database written to after prepare is not trusted: it is staged again.
    let again = i.run(&["prepare", &stamp]);
    assert_eq!(again.code, 0, "{}", again.stdout);
    let tmp = i.paths.db.with_file_name(".atocore.db.restore-tmp");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let len = std::fs::metadata(&tmp).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&tmp).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[0u8; 16], len / 2).unwrap();
    drop(f);
    let r2 = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r2.code, 0, "{}\n{}", r2.stdout, r2.stderr);
    assert!(r2.json.get("staged_ahead").is_none(), "{}", r2.stdout);
    assert_snapshot_state(&i, &snap_chroma, rows, "restaged");
    let pre = r.json["pre_restore_snapshot"].as_str().unwrap();
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        rows + 10
    );
    assert!(!i.paths.restore_dir().join("staged.json").exists());
}

#[test]
fn a_database_only_restore_staged_ahead_swaps_and_unprepare_drops_staging() {
    let i = Install::new();
    let m = i.backup(&[]);
    let stamp = m["stamp"].as_str().unwrap();
    i.add_memories(4, "after");
    let p = i.run(&["prepare", stamp]);
    assert_eq!(p.code, 0, "{}", p.stdout);
    assert_eq!(p.json["chroma"], false);
    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["staged_ahead"], true);
    assert_eq!(i.count_rows("memories"), 200);
    assert!(!i.paths.restore_dir().join("journal.json").exists());
    assert!(!i.paths.restore_dir().join("staged.json").exists());

    // A caller that stages and then gives up leaves nothing behind.
    let with_chroma = i.backup(&["--include-chroma"]);
    let before = tree(&i.paths.chroma);
    atocore_restore_job::restore::prepare(
        &i.paths,
        with_chroma["stamp"].as_str().unwrap(),
        atocore_restore_job::ChromaChoice::Auto,
    )
    .unwrap();
    assert!(i.paths.chroma.join(".atocore-restore/new").is_dir());
    atocore_restore_job::restore::unprepare(&i.paths).unwrap();
    assert_eq!(tree(&i.paths.chroma), before);
    assert!(!i.paths.restore_dir().join("staged.json").exists());
    let tmp = i.paths.db.with_file_name(".atocore.db.restore-tmp");
    assert!(!tmp.exists());
}
