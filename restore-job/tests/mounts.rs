//! Real bind mounts: the chroma directory and single files as mount points.

use crate::util::*;

fn require_mount() -> bool {
    if can_mount() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must run the bind-mount tests as root"
    );
    eprintln!("skipping: bind mounts need root");
    false
}

#[test]
fn chroma_directory_on_a_real_bind_mount_keeps_its_inode() {
    if !require_mount() {
        return;
    }
    let i = Install::new();
    let outside = i.dir.path().join("chroma-volume");
    std::fs::create_dir(&outside).unwrap();
    fs_extra::dir::copy(
        &i.paths.chroma,
        &outside,
        &fs_extra::dir::CopyOptions::new().content_only(true),
    )
    .unwrap();
    let _m = BindMount::new(&outside, &i.paths.chroma);
    // It really is a mount point: renaming it fails with EBUSY.
    let e = std::fs::rename(&i.paths.chroma, i.dir.path().join("moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EBUSY));

    let snap_tree = tree(&i.paths.chroma);
    let m = i.backup(&["--include-chroma"]);
    let ino = inode(&i.paths.chroma);
    std::fs::write(i.paths.chroma.join("added.bin"), b"added").unwrap();
    std::fs::remove_file(i.paths.chroma.join("chroma.sqlite3")).unwrap();

    let r = i.run(&[
        "restore",
        m["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(inode(&i.paths.chroma), ino);
    assert_eq!(tree(&i.paths.chroma), snap_tree);
    // And the data landed on the volume itself.
    assert_eq!(tree(&outside), snap_tree);
}

#[test]
fn database_and_registry_as_single_file_mounts_are_rewritten_in_place() {
    if !require_mount() {
        return;
    }
    let i = Install::new();
    let vol = i.dir.path().join("file-volumes");
    std::fs::create_dir(&vol).unwrap();
    // Checkpoint into the main file so the db is self-contained before mounting it.
    rusqlite::Connection::open(&i.paths.db)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::copy(&i.paths.db, vol.join("atocore.db")).unwrap();
    std::fs::copy(&i.paths.registry, vol.join("registry.json")).unwrap();
    let _db = BindMount::new(&vol.join("atocore.db"), &i.paths.db);
    let _reg = BindMount::new(&vol.join("registry.json"), &i.paths.registry);
    let e = std::fs::rename(
        i.dir.path().join("file-volumes/registry.json"),
        &i.paths.registry,
    )
    .unwrap_err();
    assert_eq!(
        e.raw_os_error(),
        Some(libc::EBUSY),
        "the registry is not a mount point"
    );

    let m = i.backup(&[]);
    i.add_memories(11, "mounted");
    std::fs::write(&i.paths.registry, b"{\"changed\": true}").unwrap();
    let r = i.run(&[
        "restore",
        m["stamp"].as_str().unwrap(),
        "--confirm-service-stopped",
    ]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("rewriting it in place"), "{}", r.stderr);
    assert_eq!(i.count_rows("memories"), 200);
    assert_eq!(count_rows(&vol.join("atocore.db"), "memories"), 200);
    assert_ne!(
        std::fs::read(vol.join("registry.json")).unwrap(),
        b"{\"changed\": true}"
    );
    // No staged temp file is left behind.
    let leftovers = names_in(i.paths.db.parent().unwrap(), |n| n.contains("restore-tmp"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
