use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn backup_has_contract_fields_and_a_manifest_sha256sum_accepts() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    for f in [
        "stamp",
        "created_at",
        "backup_root",
        "db_snapshot_path",
        "db_size_bytes",
        "registry_snapshot_path",
        "chroma_snapshot_path",
        "include_chroma",
        "kind",
        "format_version",
        "tool",
        "source",
        "chroma_files",
        "chroma_bytes",
        "chroma_quiesced",
        "chroma_linked_files",
        "duration_ms",
        "copy_ms",
        "validate_ms",
        "validated_at",
        "row_counts",
    ] {
        assert!(m.get(f).is_some(), "metadata lacks {f}: {m}");
    }
    assert_eq!(m["kind"], "manual");
    // `list` rows are flat objects with each key once.
    let listed = i.run(&["list"]);
    assert_eq!(
        listed.stdout.matches("\"stamp\"").count(),
        1,
        "{}",
        listed.stdout
    );
    assert_eq!(listed.json["backups"][0]["stamp"], m["stamp"]);
    assert_eq!(listed.json["backups"][0]["valid"], true);
    assert_eq!(listed.json["backups"][0]["kind"], "manual");
    assert_eq!(m["chroma_quiesced"], false);
    assert_eq!(m["row_counts"]["memories"], 200);
    assert_eq!(m["tool"]["name"], "atocore-restore-job");
    let stamp = m["stamp"].as_str().unwrap();
    let dir = i.snapshot_dir(stamp);
    assert_eq!(m["backup_root"], dir.display().to_string());
    let st = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "manifest.sha256"])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success(), "sha256sum -c failed in {}", dir.display());
    let manifest = std::fs::read_to_string(dir.join("manifest.sha256")).unwrap();
    assert!(manifest.contains("  db/atocore.db\n"));
    assert!(manifest.contains("  config/project-registry.json\n"));
    assert!(!manifest.contains("backup-metadata.json"));
    // No hidden partial folder is left.
    let hidden = names_in(&i.paths.snapshots_dir(), |n| n.starts_with('.'));
    assert!(hidden.is_empty(), "{hidden:?}");
}

#[test]
fn two_backups_in_one_second_get_distinct_stamps() {
    let i = Install::new();
    let a = i.backup(&[]);
    let b = i.backup(&[]);
    let c = i.backup(&["--kind", "scheduled"]);
    let stamps = [&a["stamp"], &b["stamp"], &c["stamp"]];
    assert_ne!(stamps[0], stamps[1]);
    assert_ne!(stamps[1], stamps[2]);
    assert_ne!(stamps[0], stamps[2]);
    assert_eq!(i.stamps().len(), 3);
    assert_eq!(c["kind"], "scheduled");
}

#[test]
fn absent_registry_is_fine() {
    let i = Install::new();
    std::fs::remove_file(&i.paths.registry).unwrap();
    let m = i.backup(&[]);
    assert!(m["registry_snapshot_path"].is_null());
    let v = i.run(&["validate", m["stamp"].as_str().unwrap()]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn missing_database_is_an_error_that_says_what_to_check() {
    let i = Install::new();
    std::fs::remove_file(&i.paths.db).unwrap();
    let r = i.run(&["backup"]);
    assert_eq!(r.code, 1);
    assert_eq!(r.json["error"], "database_missing");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("ATOCORE_DB_PATH")
    );
}

#[test]
fn chroma_snapshot_is_incremental_with_hard_links() {
    let i = Install::new();
    // Files written moments before a snapshot's scan are "racily clean" and are never
    // linked from it: let the sample's files settle first.
    std::thread::sleep(Duration::from_millis(2500));
    let first = i.backup(&["--include-chroma"]);
    assert_eq!(first["chroma_linked_files"], 0);
    // Change one segment file; the rest stay identical.
    let seg = std::fs::read_dir(&i.paths.chroma)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    std::fs::write(seg.join("data_level0.bin"), vec![9u8; 32 * 1024]).unwrap();
    let second = i.backup(&["--include-chroma"]);
    let files = second["chroma_files"].as_u64().unwrap();
    // chroma.sqlite3 + 6 segment files, one changed.
    assert_eq!(files, 7);
    assert_eq!(second["chroma_linked_files"], files - 1);
    let a = i
        .snapshot_dir(first["stamp"].as_str().unwrap())
        .join("chroma");
    let b = i
        .snapshot_dir(second["stamp"].as_str().unwrap())
        .join("chroma");
    let rel = seg.strip_prefix(&i.paths.chroma).unwrap();
    assert_eq!(
        inode(&a.join(rel).join("data_level1.bin")),
        inode(&b.join(rel).join("data_level1.bin"))
    );
    assert_ne!(
        inode(&a.join(rel).join("data_level0.bin")),
        inode(&b.join(rel).join("data_level0.bin"))
    );
    // Never a link into live data.
    assert_ne!(
        inode(&seg.join("data_level1.bin")),
        inode(&b.join(rel).join("data_level1.bin"))
    );
    let v = i.run(&["validate", second["stamp"].as_str().unwrap()]);
    assert_eq!(v.json["valid"], true, "{}", v.stdout);
}

#[test]
fn backup_under_a_concurrent_writer_is_consistent_and_complete() {
    let i = Install::with_rows(20_000);
    let stop = Arc::new(AtomicBool::new(false));
    let last_committed = Arc::new(AtomicI64::new(0));
    let commits = Arc::new(AtomicI64::new(0));
    let worst_ms = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, last, commits, worst) = (
            stop.clone(),
            last_committed.clone(),
            commits.clone(),
            worst_ms.clone(),
        );
        let db = i.paths.db.clone();
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                c.execute(
                    "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', 'w', 'w', 1.0, 'now')",
                    [],
                )
                .unwrap();
                worst.fetch_max(t.elapsed().as_millis() as i64, Ordering::Relaxed);
                last.store(c.last_insert_rowid(), Ordering::SeqCst);
                commits.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let committed_before = last_committed.load(Ordering::SeqCst);
    let commits_before = commits.load(Ordering::Relaxed);
    let m = i.backup(&[]);
    let commits_during = commits.load(Ordering::Relaxed) - commits_before;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        commits_during > 0,
        "the writer made no commit while the backup ran"
    );
    let stamp = m["stamp"].as_str().unwrap();
    let snap_db = i.snapshot_dir(stamp).join("db/atocore.db");
    let max_id: i64 = atocore_restore_job::open_immutable(&snap_db)
        .unwrap()
        .query_row("SELECT max(id) FROM memories", [], |r| r.get(0))
        .unwrap();
    assert!(
        max_id >= committed_before,
        "snapshot misses rows committed before the backup: {max_id} < {committed_before}"
    );
    assert_eq!(m["row_counts"]["memories"].as_i64().unwrap(), max_id);
    let v = i.run(&["validate", stamp]);
    assert_eq!(v.json["valid"], true, "{}", v.stdout);
    eprintln!(
        "writer: {commits_during} commits during backup, worst commit {} ms",
        worst_ms.load(Ordering::Relaxed)
    );
}

#[test]
fn snapshot_files_are_not_open_for_writing_and_db_has_no_wal_beside_it() {
    let i = Install::new();
    let m = i.backup(&[]);
    let dir = i.snapshot_dir(m["stamp"].as_str().unwrap());
    i.run(&["validate", m["stamp"].as_str().unwrap()]);
    assert!(!dir.join("db/atocore.db-wal").exists());
    assert!(!dir.join("db/atocore.db-shm").exists());
    let meta = std::fs::metadata(dir.join("db/atocore.db")).unwrap();
    assert_eq!(meta.len(), m["db_size_bytes"].as_u64().unwrap());
    let _ = meta.mode();
}
