use std::io::{Seek, SeekFrom, Write};

use crate::util::*;

fn corrupt(path: &std::path::Path, at: u64) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(b"\xde\xad\xbe\xef garbage garbage garbage")
        .unwrap();
}

fn chroma_file(i: &Install, stamp: &str) -> (std::path::PathBuf, String) {
    let snap = i.snapshot_dir(stamp);
    let text = std::fs::read_to_string(snap.join("manifest.sha256")).unwrap();
    let rel = text
        .lines()
        .map(|l| l.split_once("  ").unwrap().1)
        .find(|p| p.starts_with("chroma/") && p.ends_with(".bin"))
        .unwrap()
        .to_string();
    (snap.join(&rel), rel)
}

#[test]
fn corrupted_chroma_file_is_caught_and_restore_refuses_it() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let stamp = m["stamp"].as_str().unwrap();
    let (path, rel) = chroma_file(&i, stamp);
    corrupt(&path, 100);
    let v = i.run(&["validate", stamp]);
    assert_eq!(v.code, 1);
    assert_eq!(v.json["valid"], false);
    assert_eq!(
        v.json["errors"],
        serde_json::json!([format!("manifest_mismatch:{rel}")])
    );
    let before = storage_tree(i.root());
    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json["error"], "snapshot_invalid");
    assert_eq!(
        storage_tree(i.root()),
        before,
        "a refused restore changed files"
    );
}

#[test]
fn corrupted_database_is_caught_and_restore_refuses_it() {
    let i = Install::with_rows(3000);
    let m = i.backup(&[]);
    let stamp = m["stamp"].as_str().unwrap();
    let db = i.snapshot_dir(stamp).join("db/atocore.db");
    // Damage a b-tree page in the middle of the file.
    corrupt(&db, 40 * 4096 + 8);
    let v = i.run(&["validate", stamp]);
    assert_eq!(v.code, 1);
    let errors: Vec<String> = serde_json::from_value(v.json["errors"].clone()).unwrap();
    assert!(
        errors.contains(&"manifest_mismatch:db/atocore.db".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"db_integrity_check_failed".to_string()),
        "{errors:?}"
    );
    let before = storage_tree(i.root());
    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 1);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("pick an older one")
    );
    assert_eq!(storage_tree(i.root()), before);
}

#[test]
fn an_emptied_database_that_passes_integrity_check_is_still_caught() {
    let i = Install::new();
    let m = i.backup(&[]);
    let stamp = m["stamp"].as_str().unwrap();
    let db = i.snapshot_dir(stamp).join("db/atocore.db");
    // What an abandoned backup leaves: a valid, empty database. Rewrite the manifest
    // so only the row counts can tell.
    std::fs::remove_file(&db).unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE memories (id INTEGER);")
        .unwrap();
    let dir = i.snapshot_dir(stamp);
    let manifest = std::fs::read_to_string(dir.join("manifest.sha256")).unwrap();
    let fixed: String = manifest
        .lines()
        .filter(|l| !l.ends_with("  db/atocore.db"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("manifest.sha256"), fixed).unwrap();
    let v = i.run(&["validate", stamp]);
    assert_eq!(v.json["valid"], false);
    let errors: Vec<String> = serde_json::from_value(v.json["errors"].clone()).unwrap();
    assert!(
        errors.contains(&"db_row_count_mismatch:memories".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"db_page_count_mismatch".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"manifest_unexpected_file:db/atocore.db".to_string()),
        "{errors:?}"
    );
}

#[test]
fn path_like_and_malformed_stamps_are_refused_with_exit_2() {
    let i = Install::new();
    i.backup(&[]);
    let before = storage_tree(i.root());
    for bad in [
        "../../etc",
        "/etc/passwd",
        "20260101T000000Z/../..",
        "..",
        "latest",
        "20261301T000000Z",
        "",
    ] {
        for cmd in [
            vec!["validate", bad],
            vec!["restore", bad, "--confirm-service-stopped"],
        ] {
            let r = i.run(&cmd);
            assert_eq!(r.code, 2, "{cmd:?}: {}", r.stdout);
            assert_eq!(r.json["error"], "bad_stamp", "{cmd:?}");
        }
    }
    assert_eq!(storage_tree(i.root()), before);
}

#[test]
fn unknown_stamp_is_refused_by_validate_and_restore_as_usage() {
    let i = Install::new();
    i.backup(&[]);
    let before = storage_tree(i.root());
    let snapshots = i.root().join("backups/snapshots");
    let message = format!(
        "no snapshot `20200101T000000Z` in {}; run `atocore-restore-job list` to see the stamps there",
        snapshots.display()
    );
    let v = i.run(&["validate", "20200101T000000Z"]);
    assert_eq!(v.code, 2, "{}", v.stdout);
    assert_eq!(
        v.json,
        serde_json::json!({"error": "unknown_stamp", "message": message})
    );
    assert_eq!(
        v.stdout,
        format!(
            "{{\n  \"error\": \"unknown_stamp\",\n  \"message\": {}\n}}\n",
            serde_json::to_string(&message).unwrap()
        )
    );
    assert!(v.stderr.contains(&message), "{}", v.stderr);
    let r = i.run(&["restore", "20200101T000000Z", "--confirm-service-stopped"]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["error"], "unknown_stamp");
    assert_eq!(storage_tree(i.root()), before);
}

#[test]
fn legacy_python_snapshot_lists_validates_and_restores() {
    let i = Install::new();
    let stamp = "20260101T060000Z";
    let dir = i.snapshot_dir(stamp);
    std::fs::create_dir_all(dir.join("db")).unwrap();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    // The Python service used sqlite3's Connection.backup: a plain copy of the db.
    let src = rusqlite::Connection::open(&i.paths.db).unwrap();
    src.execute_batch(&format!(
        "VACUUM INTO '{}'",
        dir.join("db/atocore.db").display()
    ))
    .unwrap();
    drop(src);
    std::fs::write(
        dir.join("config/project-registry.json"),
        b"{\"projects\": []}",
    )
    .unwrap();
    let size = std::fs::metadata(dir.join("db/atocore.db")).unwrap().len();
    let meta = serde_json::json!({
        "stamp": stamp,
        "created_at": "2026-01-01T06:00:00+00:00",
        "backup_root": dir.display().to_string(),
        "db_snapshot_path": dir.join("db/atocore.db").display().to_string(),
        "db_size_bytes": size,
        "registry_snapshot_path": dir.join("config/project-registry.json").display().to_string(),
        "chroma_snapshot_path": null,
        "include_chroma": false
    });
    std::fs::write(
        dir.join("backup-metadata.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();

    let l = i.run(&["list"]);
    assert_eq!(l.json["backups"][0]["stamp"], stamp);
    assert_eq!(l.json["backups"][0]["valid"], serde_json::Value::Null);
    let v = i.run(&["validate", stamp]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert_eq!(v.json["valid"], true);
    assert_eq!(v.json["warnings"], serde_json::json!(["no_manifest"]));
    i.add_memories(5, "after-legacy");
    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(i.count_rows("memories"), 200);
    assert_eq!(
        std::fs::read(&i.paths.registry).unwrap(),
        b"{\"projects\": []}"
    );
}
