//! Snapshots made by the old Python service: fewer metadata fields (no `stamp`, empty or
//! missing chroma paths), no manifest, paths that name the host that wrote them.

use serde_json::{Value, json};

use crate::util::*;

/// A Python-style snapshot built by hand: a real SQLite copy of the live database,
/// `extra` merged over the Python fields, the fields in `absent` left out, no manifest.
/// The recorded paths point at the original host's folder, not this one.
fn python_snapshot(i: &Install, stamp: &str, extra: Value, absent: &[&str]) {
    let dir = i.snapshot_dir(stamp);
    std::fs::create_dir_all(dir.join("db")).unwrap();
    let src = rusqlite::Connection::open(&i.paths.db).unwrap();
    src.execute_batch(&format!(
        "VACUUM INTO '{}'",
        dir.join("db/atocore.db").display()
    ))
    .unwrap();
    drop(src);
    let size = std::fs::metadata(dir.join("db/atocore.db")).unwrap().len();
    let root = format!("/srv/storage/atocore/backups/snapshots/{stamp}");
    let mut meta = json!({
        "created_at": "2026-01-01T06:00:00+00:00",
        "backup_root": root,
        "db_snapshot_path": format!("{root}/db/atocore.db"),
        "db_size_bytes": size,
        "registry_snapshot_path": null,
        "chroma_snapshot_path": "",
        "include_chroma": false
    });
    for (k, v) in extra.as_object().unwrap() {
        meta[k] = v.clone();
    }
    for k in absent {
        meta.as_object_mut().unwrap().remove(*k);
    }
    std::fs::write(
        dir.join("backup-metadata.json"),
        serde_json::to_vec_pretty(&meta).unwrap(),
    )
    .unwrap();
}

fn memories(db: &std::path::Path) -> Vec<String> {
    let c = atocore_restore_job::open_immutable(db).unwrap();
    let mut st = c
        .prepare("SELECT content FROM memories ORDER BY id")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn a_python_snapshot_without_stamp_lists_validates_and_restores() {
    let i = Install::new();
    let stamp = "20260101T060000Z";
    python_snapshot(&i, stamp, json!({}), &[]);
    let snap_db = i.snapshot_dir(stamp).join("db/atocore.db");
    let want = memories(&snap_db);

    let l = i.run(&["list"]);
    assert_eq!(l.code, 0, "{}", l.stderr);
    let row = &l.json["backups"][0];
    assert_eq!(row["stamp"], stamp);
    assert_eq!(row["valid"], Value::Null, "{row}");
    assert_eq!(row.get("errors"), None, "{row}");
    assert_eq!(row["include_chroma"], false);

    let v = i.run(&["validate", stamp]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert_eq!(v.json["valid"], true);
    assert_eq!(v.json["errors"], json!([]));
    assert_eq!(v.json["warnings"], json!(["no_manifest"]));

    // The live registry is left alone: the snapshot has none.
    let registry = std::fs::read(&i.paths.registry).unwrap();
    i.add_memories(5, "after-python");
    assert_ne!(memories(&i.paths.db), want);
    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["db_restored"], true);
    assert_eq!(r.json["registry_restored"], false);
    assert_eq!(r.json["chroma_restored"], false);
    assert_eq!(memories(&i.paths.db), want);
    assert_eq!(std::fs::read(&i.paths.registry).unwrap(), registry);
}

#[test]
fn python_snapshots_count_in_retention_like_any_other() {
    let i = Install::new();
    // `chroma_snapshot_path` "", null or absent with include_chroma false: no chroma.
    python_snapshot(&i, "20260101T060000Z", json!({}), &[]);
    python_snapshot(
        &i,
        "20260101T070000Z",
        json!({"chroma_snapshot_path": null}),
        &[],
    );
    python_snapshot(&i, "20260102T060000Z", json!({}), &["chroma_snapshot_path"]);
    // A Python chroma snapshot counts in the chroma series.
    let chroma_dir = i.snapshot_dir("20260103T060000Z").join("chroma");
    std::fs::create_dir_all(&chroma_dir).unwrap();
    std::fs::write(chroma_dir.join("chroma.sqlite3"), b"vectors").unwrap();
    python_snapshot(
        &i,
        "20260103T060000Z",
        json!({"include_chroma": true,
               "chroma_snapshot_path": "/srv/storage/atocore/backups/snapshots/20260103T060000Z/chroma"}),
        &[],
    );
    python_snapshot(&i, "20260104T060000Z", json!({}), &[]);

    let l = i.run(&["list"]);
    let rows = l.json["backups"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.get("errors").is_none()), "{rows:?}");

    let r = i.run(&["prune", "--now", "2026-01-05T12:00:00Z"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json["invalid"], json!([]));
    assert_eq!(r.json["deleted"], json!(["20260101T060000Z"]));
    assert_eq!(
        r.json["reasons"]["20260101T060000Z"],
        "deleted: not the newest of a kept day, week or month"
    );
    assert_eq!(
        r.json["reasons"]["20260101T070000Z"],
        "kept: daily 2026-01-01"
    );
    assert_eq!(
        r.json["reasons"]["20260102T060000Z"],
        "kept: daily 2026-01-02"
    );
    assert_eq!(
        r.json["reasons"]["20260103T060000Z"],
        "kept: daily 2026-01-03, chroma daily 2026-01-03, chroma weekly 2026-W01, chroma monthly 2026-01, newest valid chroma snapshot"
    );
    assert_eq!(
        r.json["reasons"]["20260104T060000Z"],
        "kept: daily 2026-01-04, weekly 2026-W01, monthly 2026-01, newest valid snapshot"
    );
}
