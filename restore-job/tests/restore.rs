use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::util::*;

#[test]
fn refuses_without_confirmation_and_changes_nothing() {
    let i = Install::new();
    let m = i.backup(&[]);
    i.add_memories(3, "x");
    let before = storage_tree(i.root());
    let r = i.run(&["restore", m["stamp"].as_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert_eq!(r.json["error"], "not_confirmed");
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("--confirm-service-stopped")
    );
    assert_eq!(storage_tree(i.root()), before);
}

#[test]
fn round_trip_reverses_a_mutation_and_the_pre_restore_snapshot_keeps_it() {
    let i = Install::new();
    let m = i.backup(&[]);
    let stamp = m["stamp"].as_str().unwrap();
    i.add_memories(7, "mutation");
    std::fs::write(&i.paths.registry, b"{\"projects\": [\"edited\"]}").unwrap();
    assert_eq!(i.count_rows("memories"), 207);

    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    for (k, v) in [
        ("db_restored", true),
        ("registry_restored", true),
        ("chroma_restored", false),
        ("restored_integrity_ok", true),
        ("dry_run", false),
    ] {
        assert_eq!(r.json[k], v, "{k}: {}", r.stdout);
    }
    assert!(r.json["duration_ms"].is_u64());
    assert_eq!(r.json["stamp"], stamp);
    assert_eq!(i.count_rows("memories"), 200);
    assert_ne!(
        std::fs::read(&i.paths.registry).unwrap(),
        b"{\"projects\": [\"edited\"]}"
    );

    let pre = r.json["pre_restore_snapshot"].as_str().unwrap();
    let listed = i.run(&["list"]);
    let pre_row = listed.json["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["stamp"] == pre)
        .unwrap()
        .clone();
    assert_eq!(pre_row["kind"], "pre-restore");
    assert_eq!(pre_row["valid"], true);
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        207
    );
    assert_eq!(
        std::fs::read(i.snapshot_dir(pre).join("config/project-registry.json")).unwrap(),
        b"{\"projects\": [\"edited\"]}"
    );
    // Restoring the pre-restore snapshot brings the mutation back.
    let back = i.run(&[
        "restore",
        pre,
        "--confirm-service-stopped",
        "--no-pre-snapshot",
    ]);
    assert_eq!(back.code, 0, "{}", back.stdout);
    assert_eq!(i.count_rows("memories"), 207);
}

#[test]
fn chroma_round_trip_makes_the_tree_equal_the_snapshot() {
    let i = Install::new();
    let chroma = i.paths.chroma.clone();
    std::os::unix::fs::symlink("chroma.sqlite3", chroma.join("link-inside")).unwrap();
    std::fs::set_permissions(
        chroma.join("chroma.sqlite3"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let snap_tree = tree(&chroma);
    let m = i.backup(&["--include-chroma"]);
    let stamp = m["stamp"].as_str().unwrap();
    let ino = inode(&chroma);

    // Mutate: change a file, add files and a folder, delete one, change a mode.
    let seg = std::fs::read_dir(&chroma)
        .unwrap()
        .flatten()
        .find(|e| e.path().is_dir())
        .unwrap()
        .path();
    std::fs::write(seg.join("data_level0.bin"), b"changed").unwrap();
    std::fs::write(chroma.join("added-since.bin"), b"new").unwrap();
    std::fs::create_dir(chroma.join("new-segment")).unwrap();
    std::fs::write(chroma.join("new-segment/x.bin"), b"x").unwrap();
    std::fs::remove_file(seg.join("data_level1.bin")).unwrap();
    std::fs::set_permissions(
        seg.join("data_level2.bin"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    assert_ne!(tree(&chroma), snap_tree);

    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["chroma_restored"], true);
    assert_eq!(
        tree(&chroma),
        snap_tree,
        "live chroma differs from the snapshot"
    );
    assert_eq!(inode(&chroma), ino, "the chroma directory was replaced");
    // The pre-restore snapshot took chroma too, with the mutation in it.
    let pre = r.json["pre_restore_snapshot"].as_str().unwrap();
    assert!(i.snapshot_dir(pre).join("chroma/added-since.bin").exists());
}

#[test]
fn stale_wal_and_shm_are_removed_and_never_replayed() {
    let i = Install::new();
    let m = i.backup(&[]);
    let stamp = m["stamp"].as_str().unwrap();
    // Leave a hot WAL with 50 extra rows beside the live database.
    let db = i.paths.db.clone();
    let wal = db.with_file_name("atocore.db-wal");
    let shm = db.with_file_name("atocore.db-shm");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
        for n in 0..50 {
            c.execute(
                "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', ?1, 'wal', 1.0, 'now')",
                [n],
            )
            .unwrap();
        }
        std::fs::copy(&wal, db.with_file_name("wal.keep")).unwrap();
        std::fs::copy(&shm, db.with_file_name("shm.keep")).unwrap();
    }
    std::fs::rename(db.with_file_name("wal.keep"), &wal).unwrap();
    std::fs::rename(db.with_file_name("shm.keep"), &shm).unwrap();
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);

    let r = i.run(&["restore", stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        !wal.exists(),
        "stale -wal left beside the restored database"
    );
    assert!(
        !shm.exists(),
        "stale -shm left beside the restored database"
    );
    assert_eq!(i.count_rows("memories"), 200, "the stale WAL was replayed");
    // The pre-restore snapshot went through SQLite, which replayed the hot WAL into it.
    let pre = r.json["pre_restore_snapshot"].as_str().unwrap();
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        250
    );
}

#[test]
fn no_pre_snapshot_takes_none() {
    let i = Install::new();
    let m = i.backup(&[]);
    let r = i.run(&[
        "restore",
        m["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
        "--no-pre-snapshot",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.json["pre_restore_snapshot"].is_null());
    assert_eq!(i.stamps().len(), 1);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    i.add_memories(2, "dry");
    let before = storage_tree(i.root());
    let r = i.run(&[
        "restore",
        m["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.json["dry_run"], true);
    assert_eq!(r.json["plan"]["would_take_pre_restore_snapshot"], true);
    // The plan carries the validation's warnings (this snapshot was not quiesced).
    assert_eq!(
        r.json["plan"]["validation_warnings"],
        serde_json::json!(["chroma_not_quiesced"])
    );
    assert_eq!(
        r.json["plan"]["chroma"],
        i.paths.chroma.display().to_string()
    );
    assert_eq!(storage_tree(i.root()), before);
}

#[test]
fn no_chroma_leaves_chroma_alone_and_chroma_flag_needs_a_chroma_snapshot() {
    let i = Install::new();
    let with = i.backup(&["--include-chroma"]);
    let without = i.backup(&[]);
    std::fs::write(i.paths.chroma.join("after.bin"), b"after").unwrap();
    let live = tree(&i.paths.chroma);
    let r = i.run(&[
        "restore",
        with["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
        "--no-chroma",
        "--no-pre-snapshot",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert_eq!(r.json["chroma_restored"], false);
    assert_eq!(tree(&i.paths.chroma), live);
    let r = i.run(&[
        "restore",
        without["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
        "--chroma",
    ]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.json["message"]
            .as_str()
            .unwrap()
            .contains("has no chroma copy")
    );
    let r = i.run(&[
        "restore",
        with["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
        "--chroma",
        "--no-chroma",
    ]);
    assert_eq!(r.code, 2, "clap must refuse conflicting flags");
}

#[test]
fn refuses_while_the_database_is_open_in_another_process() {
    let i = Install::new();
    let m = i.backup(&[]);
    // A separate process holding a WAL connection, like a running atocore.
    let mut holder = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1]); c.execute('select count(*) from memories').fetchall(); print('ready', flush=True); time.sleep(60)",
            i.paths.db.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    let before = storage_tree(i.root());
    let r = i.run(&[
        "restore",
        m["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
    ]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert_eq!(r.json["error"], "database_in_use");
    assert_eq!(storage_tree(i.root()), before);
    std::thread::sleep(Duration::from_millis(50));
    let r = i.run(&[
        "restore",
        m["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
    ]);
    assert_eq!(r.code, 0, "{}", r.stdout);
}
