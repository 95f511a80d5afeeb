//! Chroma snapshots hold the same files as live (racy clean, every file hashed, files
//! that change while copied), stay inside their folders (links resolved as the kernel
//! would, crafted indexes refused) and survive odd entries.

use std::ffi::OsStr;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Long enough for files written before it to be clearly older than the next scan.
const SETTLE: Duration = Duration::from_millis(2500);

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn stamp_of(m: &Value) -> String {
    m["stamp"].as_str().unwrap().to_string()
}

fn version(p: &Path) -> (u64, i64, i64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

/// A sample install on tmpfs when there is one: tmpfs never writes pages back, so a
/// page dirtied through a mapping stays dirty (and later writes to it unseen in mtime)
/// however busy the machine is. `true` when on tmpfs.
fn install_on_tmpfs() -> (Install, bool) {
    match tempfile::tempdir_in("/dev/shm") {
        Ok(dir) => {
            let paths =
                atocore_restore_job::sample::create(&dir.path().join("storage"), 200, 6, 32 * 1024)
                    .unwrap();
            (Install { dir, paths }, true)
        }
        Err(_) => (Install::new(), false),
    }
}

#[test]
fn a_file_changed_in_the_tick_of_the_scan_is_copied_again_not_linked() {
    let (i, tmpfs) = install_on_tmpfs();
    std::thread::sleep(SETTLE);
    // Written just before the first snapshot's scan: racily clean.
    let f = i.paths.chroma.join("racy.bin");
    std::fs::write(&f, vec![b'a'; 8192]).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&f)
        .unwrap();
    // SAFETY: a shared mapping of an open 8 KiB file, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    } as *mut u8;
    assert_ne!(map as *mut libc::c_void, libc::MAP_FAILED);
    // SAFETY: within the mapping.
    unsafe { *map = b'b' };
    let first = i.backup(&["--include-chroma"]);
    let before = version(&f);
    // A write to a page that is already dirty changes neither size, mtime nor ctime.
    // SAFETY: within the mapping.
    unsafe { *map.add(1) = b'c' };
    // The test's premise: the change kept size, mtime and ctime. Elsewhere than on
    // tmpfs, a writeback between the two writes can make the second one fault and
    // update mtime; the content is still checked below.
    if tmpfs {
        assert_eq!(
            version(&f),
            before,
            "the change touched size, mtime or ctime"
        );
    } else if version(&f) != before {
        eprintln!("no tmpfs and the page was written back: the racy case was not reproduced");
    }
    let second = i.backup(&["--include-chroma"]);
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(map as *mut libc::c_void, 8192) };
    let live = std::fs::read(&f).unwrap();
    assert_eq!(&live[..2], b"bc");
    let a = i.snapshot_dir(&stamp_of(&first)).join("chroma/racy.bin");
    let b = i.snapshot_dir(&stamp_of(&second)).join("chroma/racy.bin");
    assert_eq!(&std::fs::read(&a).unwrap()[..2], b"ba");
    assert!(
        std::fs::read(&b).unwrap() == live,
        "snapshot 2 kept a stale copy"
    );
    assert_ne!(inode(&a), inode(&b));
    // The settled files are still linked; only the racy one was copied.
    let files = second["chroma_files"].as_u64().unwrap();
    assert_eq!(second["chroma_linked_files"], files - 1);
    let v = i.run(&["validate", &stamp_of(&second)]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn a_damaged_file_of_an_older_snapshot_is_not_linked_into_the_next() {
    let i = Install::new();
    std::thread::sleep(SETTLE);
    let first = i.backup(&["--include-chroma"]);
    let s1 = stamp_of(&first);
    let rel = "6f1c2a4e-0000-4000-8000-sample000001/data_level2.bin";
    let old = i.snapshot_dir(&s1).join("chroma").join(rel);
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&old).unwrap();
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.write_all(b"\xee").unwrap();
    }
    let second = i.backup(&["--include-chroma"]);
    let s2 = stamp_of(&second);
    let warnings = strings(&second["warnings"]);
    assert!(
        warnings.contains(&format!("chroma_link_source_damaged:{s1}/{rel}")),
        "{warnings:?}"
    );
    let files = second["chroma_files"].as_u64().unwrap();
    assert_eq!(second["chroma_linked_files"], files - 1);
    let new = i.snapshot_dir(&s2).join("chroma").join(rel);
    assert_eq!(
        std::fs::read(&new).unwrap(),
        std::fs::read(i.paths.chroma.join(rel)).unwrap()
    );
    assert_ne!(inode(&new), inode(&old));
    let v2 = i.run(&["validate", &s2]);
    assert_eq!(v2.code, 0, "{}", v2.stdout);
    let v1 = i.run(&["validate", &s1]);
    assert_eq!(v1.code, 1, "{}", v1.stdout);
    assert_eq!(
        v1.json["errors"],
        serde_json::json!([format!("manifest_mismatch:chroma/{rel}")])
    );
}

#[test]
fn a_file_that_keeps_changing_while_copied_is_reported_not_claimed_clean() {
    let i = Install::new();
    let busy = i.paths.chroma.join("busy.bin");
    std::fs::write(&busy, vec![7u8; 48 << 20]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            let f = std::fs::OpenOptions::new().write(true).open(&busy).unwrap();
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                f.write_at(&[(n % 200) as u8 + 1], (n * 4099) % (48 << 20))
                    .unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let m = i.backup(&["--include-chroma"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(m["chroma_consistent"], false, "{m}");
    assert_eq!(m["chroma_changed_paths"], serde_json::json!(["busy.bin"]));
    assert!(
        strings(&m["warnings"]).contains(&"chroma_changed_during_copy".to_string()),
        "{m}"
    );
    // What was kept is recorded as it is: the snapshot validates.
    let v = i.run(&["validate", &stamp_of(&m)]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn links_that_resolve_outside_are_left_out_and_the_database_is_still_backed_up() {
    let i = Install::new();
    let c = &i.paths.chroma;
    std::os::unix::fs::symlink(".", c.join("l")).unwrap();
    // Each passes a check of the link text alone; the kernel resolves them outside.
    std::os::unix::fs::symlink("l/..", c.join("m")).unwrap();
    std::os::unix::fs::symlink("l/../db/atocore.db", c.join("to-live-db")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", c.join("absolute")).unwrap();
    std::fs::create_dir(c.join("seg2")).unwrap();
    std::os::unix::fs::symlink("../chroma.sqlite3", c.join("seg2/inside")).unwrap();
    assert!(
        c.join("to-live-db").is_file(),
        "the link does reach the live database"
    );
    let m = i.backup(&["--include-chroma"]);
    let warnings = strings(&m["warnings"]);
    for name in ["m", "to-live-db", "absolute"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("chroma_entry_skipped:{name}: "))),
            "{name}: {warnings:?}"
        );
    }
    let snap = i.snapshot_dir(&stamp_of(&m));
    let sc = snap.join("chroma");
    for gone in ["m", "to-live-db", "absolute"] {
        assert!(
            std::fs::symlink_metadata(sc.join(gone)).is_err(),
            "{gone} kept"
        );
    }
    assert_eq!(std::fs::read_link(sc.join("l")).unwrap(), Path::new("."));
    assert_eq!(
        std::fs::read_link(sc.join("seg2/inside")).unwrap(),
        Path::new("../chroma.sqlite3")
    );
    assert!(snap.join("db/atocore.db").is_file());
    let v = i.run(&["validate", &stamp_of(&m)]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

/// Every path below `root` named `name`, links not followed.
fn find_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if e.file_name() == name {
                out.push(e.path());
            }
            if ft.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// Turn a chroma snapshot into one whose index, through a chain of links that each
/// look harmless, would write `x/escaped.txt` two levels above the staging folder.
fn craft(i: &Install, stamp: &str) {
    let snap = i.snapshot_dir(stamp);
    let sc = snap.join("chroma");
    std::fs::create_dir_all(sc.join("a/b")).unwrap();
    std::os::unix::fs::symlink("../..", sc.join("a/b/up")).unwrap();
    std::fs::create_dir(sc.join("x")).unwrap();
    std::fs::write(sc.join("x/escaped.txt"), b"escaped").unwrap();
    let index_path = snap.join("chroma-index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let entry = |path: &str, kind: &str, target: Option<&str>| {
        let mut e = serde_json::json!({"path": path, "kind": kind, "mode": 0o755,
            "uid": 0, "gid": 0, "size": 7, "mtime_ns": 0, "ctime_ns": 0});
        if let Some(t) = target {
            e["target"] = t.into();
        }
        e
    };
    let entries = index["entries"].as_array_mut().unwrap();
    entries.extend([
        entry("a", "dir", None),
        entry("a/b", "dir", None),
        entry("a/b/up", "symlink", Some("../..")),
        entry("x", "symlink", Some("a/b/up/../../..")),
        entry("x/escaped.txt", "file", None),
    ]);
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    std::fs::write(&index_path, serde_json::to_vec_pretty(&index).unwrap()).unwrap();
}

#[test]
fn a_crafted_index_is_refused_and_nothing_is_written_outside() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let stamp = stamp_of(&m);
    craft(&i, &stamp);
    let snap = i.snapshot_dir(&stamp);
    // Made to look like a snapshot without a manifest or format version, whose index
    // would not be compared with its tree.
    std::fs::remove_file(snap.join("manifest.sha256")).unwrap();
    let meta_path = snap.join("backup-metadata.json");
    let mut meta: Value = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("format_version");
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let v = i.run(&["validate", &stamp]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    let errors = strings(&v.json["errors"]);
    assert!(
        errors.contains(&"chroma_index_unsafe:x".to_string()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"chroma_index_unsafe:x/escaped.txt".to_string()),
        "{errors:?}"
    );
    let before = storage_tree(i.root());
    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json["error"], "snapshot_invalid");
    assert_eq!(
        storage_tree(i.root()),
        before,
        "a refused restore changed files"
    );
    assert_eq!(
        find_named(i.root(), "escaped.txt"),
        [snap.join("chroma/x/escaped.txt")]
    );
}

#[test]
fn staging_refuses_a_crafted_index_even_when_validation_was_skipped() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let stamp = stamp_of(&m);
    craft(&i, &stamp);
    // The manifest is made to agree with the crafted index: only staging can stop it.
    let snap = i.snapshot_dir(&stamp);
    rehash_in_manifest(&snap, "chroma-index.json");
    let data = i.paths.chroma.parent().unwrap().to_path_buf();
    let r = atocore_restore_job::restore::restore(
        &i.paths,
        &atocore_restore_job::RestoreOptions {
            stamp: stamp.clone(),
            confirmed_service_stopped: true,
            prevalidated: true,
            ..Default::default()
        },
    )
    .unwrap();
    // The restore reports its failure in its report; nothing was swapped in.
    assert!(!r.db_restored && !r.chroma_restored, "{r:?}");
    let e = r.error.expect("the restore was refused");
    assert!(
        e.message.contains(&format!(
            "snapshot `{stamp}` is damaged: its chroma index is unsafe"
        )),
        "{e:?}"
    );
    assert_eq!(
        find_named(i.root(), "escaped.txt"),
        [snap.join("chroma/x/escaped.txt")]
    );
    assert!(!data.join("escaped.txt").exists());
}

#[test]
fn validate_fails_when_part_of_the_tree_cannot_be_read() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let stamp = stamp_of(&m);
    let sc = i.snapshot_dir(&stamp).join("chroma");
    // A file hidden deeper than a path can name (ENAMETOOLONG even for root): build
    // it with short names, then lengthen the folders' names deepest first.
    let depth = 20;
    let mut p = sc.join("deep");
    for _ in 1..depth {
        p = p.join("d");
    }
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("hidden.bin"), b"not in the manifest").unwrap();
    let long = "n".repeat(250);
    for level in (1..depth).rev() {
        let mut parent = sc.join("deep");
        for _ in 1..level {
            parent = parent.join("d");
        }
        std::fs::rename(parent.join("d"), parent.join(&long)).unwrap();
    }
    let v = i.run(&["validate", &stamp]);
    assert_eq!(v.code, 1, "{}", v.stdout);
    let errors = strings(&v.json["errors"]);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("snapshot_tree_unreadable:chroma/deep/")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("chroma_tree_unreadable:deep/")),
        "{errors:?}"
    );
}

#[test]
fn odd_entries_never_stop_a_backup_and_every_snapshot_validates_and_restores() {
    let i = Install::new();
    let c = i.paths.chroma.clone();
    std::fs::write(c.join("new\nline.bin"), b"newline").unwrap();
    std::fs::write(c.join("back\\slash.bin"), b"backslash").unwrap();
    std::fs::write(c.join(OsStr::from_bytes(b"bad\xffname.bin")), b"x").unwrap();
    let fifo = std::ffi::CString::new(c.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(c.join("sock")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", c.join("absolute")).unwrap();

    let m = i.backup(&["--include-chroma"]);
    let stamp = stamp_of(&m);
    let warnings = strings(&m["warnings"]);
    for name in ["fifo", "sock", "absolute", "bad\\xffname.bin"] {
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&format!("chroma_entry_skipped:{name}: "))),
            "{name}: {warnings:?}"
        );
    }
    assert_eq!(m["chroma_consistent"], true);
    assert_eq!(m["chroma_changed_paths"], serde_json::json!([]));
    let snap = i.snapshot_dir(&stamp);
    assert_eq!(
        std::fs::read(snap.join("chroma/new\nline.bin")).unwrap(),
        b"newline"
    );
    let manifest = std::fs::read_to_string(snap.join("manifest.sha256")).unwrap();
    for name in ["chroma/new\\nline.bin", "chroma/back\\\\slash.bin"] {
        assert!(
            manifest
                .lines()
                .any(|l| l.starts_with('\\') && l.ends_with(&format!("  {name}"))),
            "{name}: {manifest}"
        );
    }
    let st = std::process::Command::new("sha256sum")
        .args(["-c", "--quiet", "manifest.sha256"])
        .current_dir(&snap)
        .status()
        .unwrap();
    assert!(st.success(), "sha256sum -c failed in {}", snap.display());
    let v = i.run(&["validate", &stamp]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert_eq!(v.json["valid"], true);

    let expected = tree(&snap.join("chroma"));
    std::fs::write(c.join("new\nline.bin"), b"changed").unwrap();
    std::fs::remove_file(c.join("back\\slash.bin")).unwrap();
    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(tree(&c), expected);
    // The pre-restore snapshot (taken from the live tree moved aside, fifo and all)
    // validates too.
    let pre = r.json["pre_restore_snapshot"].as_str().unwrap();
    let v = i.run(&["validate", pre]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn a_missing_chroma_folder_or_registry_costs_only_that_part() {
    let i = Install::new();
    std::fs::remove_dir_all(&i.paths.chroma).unwrap();
    std::fs::remove_file(&i.paths.registry).unwrap();
    let m = i.backup(&["--include-chroma"]);
    assert_eq!(m["include_chroma"], false);
    assert!(m["chroma_snapshot_path"].is_null());
    let warnings = strings(&m["warnings"]);
    assert!(
        warnings.contains(&"chroma_missing".to_string()),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&"registry_missing".to_string()),
        "{warnings:?}"
    );
    assert_eq!(m["row_counts"]["memories"], 200);
    let v = i.run(&["validate", &stamp_of(&m)]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn an_unparsable_registry_is_left_out_without_a_trace() {
    let i = Install::new();
    std::fs::write(&i.paths.registry, b"{not json").unwrap();
    let m = i.backup(&[]);
    assert!(
        strings(&m["warnings"]).contains(&"registry_invalid_json_skipped".to_string()),
        "{m}"
    );
    assert!(m["registry_snapshot_path"].is_null());
    let snap = i.snapshot_dir(&stamp_of(&m));
    assert!(!snap.join("config").exists());
    let v = i.run(&["validate", &stamp_of(&m)]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn a_chroma_file_damaged_after_validation_is_caught_while_staging_as_a_damaged_snapshot() {
    let i = Install::new();
    let m = i.backup(&["--include-chroma"]);
    let stamp = stamp_of(&m);
    let rel = "6f1c2a4e-0000-4000-8000-sample000001/data_level3.bin";
    {
        let path = i.snapshot_dir(&stamp).join("chroma").join(rel);
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_at(b"\xee", 5).unwrap();
    }
    let live_chroma = tree(&i.paths.chroma);
    // As the sidecar does: validated moments ago, so only the structural check runs.
    let r = atocore_restore_job::restore::restore(
        &i.paths,
        &atocore_restore_job::RestoreOptions {
            stamp: stamp.clone(),
            confirmed_service_stopped: true,
            prevalidated: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(!r.db_restored && !r.chroma_restored, "{r:?}");
    let e = r.error.expect("the restore was refused");
    assert!(
        e.message.contains(&format!(
            "snapshot `{stamp}` is damaged: chroma file {rel} does not match its recorded hash"
        )),
        "{e:?}"
    );
    assert_eq!(tree(&i.paths.chroma), live_chroma);
}
