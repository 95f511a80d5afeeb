//! The exact text a person sees for the main refusals of `atocore-restore-job`: the
//! whole JSON document on stdout, and the exit code. A change of wording is a change of
//! the interface, so these compare whole strings, not fragments.

use crate::util::*;

/// The JSON error document exactly as printed.
fn error_doc(code: &str, message: &str) -> String {
    format!(
        "{{\n  \"error\": \"{code}\",\n  \"message\": {}\n}}\n",
        serde_json::to_string(message).unwrap()
    )
}

fn assert_refused(r: &Run, exit: i32, code: &str, message: &str) {
    assert_eq!(r.code, exit, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, error_doc(code, message));
    // The log line on stderr carries the same message.
    assert!(r.stderr.contains(message), "{}", r.stderr);
}

#[test]
fn restore_without_confirmation() {
    let i = Install::new();
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let r = i.run(&["restore", &stamp]);
    assert_refused(
        &r,
        2,
        "not_confirmed",
        &format!(
            "refusing to restore `{stamp}` without --confirm-service-stopped: stop atocore first (docker compose stop atocore), then add the flag"
        ),
    );
}

#[test]
fn a_stamp_that_is_not_one() {
    let i = Install::new();
    let r = i.run(&["validate", "latest"]);
    assert_refused(
        &r,
        2,
        "bad_stamp",
        "`latest` is not a snapshot stamp: expected UTC YYYYMMDDTHHMMSSZ such as 20260407T060000Z; run `atocore-restore-job list` for the stamps",
    );
}

#[test]
fn another_operation_holds_the_lock() {
    let i = Install::new();
    let _held = atocore_restore_job::BackupLock::acquire(&i.paths.backup_dir).unwrap();
    let r = i.run(&["backup"]);
    assert_refused(
        &r,
        2,
        "busy",
        &format!(
            "another backup, restore or prune is running (it holds {}); wait for it to finish and try again",
            i.paths.backup_dir.join(".lock").display()
        ),
    );
}

#[test]
fn the_live_database_is_still_open() {
    let i = Install::new();
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    // Another process (this test) holds the database open in WAL mode.
    let c = rusqlite::Connection::open(&i.paths.db).unwrap();
    let _: i64 = c
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_refused(
        &r,
        2,
        "database_in_use",
        &format!(
            "refusing to restore: the live database {} is still open in another process (it holds the WAL shared-memory or file lock); stop atocore (and the sidecar, whose WAL streaming keeps the database open: docker compose stop atocore sidecar) and try again",
            i.paths.db.display()
        ),
    );
}

#[test]
fn a_backup_while_a_restore_is_unfinished() {
    let i = Install::new();
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    let crashed = i.run_env(
        &["restore", &stamp, "--confirm-service-stopped"],
        &[("ATOCORE_RESTORE_JOB_CRASH_AT", "before-swap")],
    );
    assert_eq!(crashed.code, -1);
    let r = i.run(&["backup"]);
    assert_refused(
        &r,
        2,
        "busy",
        &format!(
            "a restore is unfinished ({} exists): the live files may be half swapped, so no snapshot is taken of them; finish it with `atocore-restore-job init` (or `docker compose up -d`, which runs it), then back up",
            i.paths.restore_dir().join("journal.json").display()
        ),
    );
}

#[test]
fn an_invalid_snapshot_is_refused_by_restore() {
    let i = Install::new();
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    std::fs::remove_file(i.snapshot_dir(&stamp).join("db/atocore.db")).unwrap();
    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_refused(
        &r,
        1,
        "snapshot_invalid",
        &format!(
            "cannot restore: snapshot `{stamp}` failed validation (db_snapshot_missing, manifest_missing_file:db/atocore.db); pick an older one with `atocore-restore-job list`"
        ),
    );
}
