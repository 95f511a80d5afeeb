//! A restore never leaves atocore unable to start and never drops live data: the
//! pre-restore snapshot is best effort once the new data is in place, leftovers are
//! moved aside rather than trusted, and backups wait for an unfinished restore.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::*;

/// The folders a restore reported as keeping the old live state.
fn kept_folders(r: &Value) -> Vec<PathBuf> {
    r["pre_restore_kept"]
        .as_array()
        .unwrap_or_else(|| panic!("no pre_restore_kept in {r}"))
        .iter()
        .map(|p| PathBuf::from(p.as_str().unwrap()))
        .collect()
}

fn warnings(r: &Value) -> Vec<String> {
    r["warnings"]
        .as_array()
        .map(|w| w.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Overwrite 8 KiB in the middle of a database file: it still opens, but its pages
/// are garbage (integrity_check fails, a backup of it cannot be validated).
fn corrupt_middle(db: &Path) {
    let mut bytes = fs::read(db).unwrap();
    assert!(
        bytes.len() > 16 * 1024,
        "sample database too small to damage"
    );
    let mid = bytes.len() / 2 / 4096 * 4096;
    for b in &mut bytes[mid..mid + 8192] {
        *b = 0xAB;
    }
    fs::write(db, &bytes).unwrap();
}

fn no_partials(i: &Install) {
    let left = names_in(&i.paths.snapshots_dir(), |n| n.starts_with('.'));
    assert!(
        left.is_empty(),
        "hidden folders left in snapshots: {left:?}"
    );
}

#[test]
fn restoring_over_a_corrupt_live_database_keeps_it_and_later_runs_work() {
    let i = Install::with_rows(2000);
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    fs::write(&i.paths.registry, b"{\"projects\": [\"before-restore\"]}").unwrap();
    corrupt_middle(&i.paths.db);
    let corrupt = fs::read(&i.paths.db).unwrap();

    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["restored_integrity_ok"], true);
    assert!(r.json["pre_restore_snapshot"].is_null(), "{}", r.stdout);
    assert_eq!(r.json["pre_restore_pending"], Value::Null, "{}", r.stdout);
    assert_eq!(i.count_rows("memories"), 2000);

    // The old state is kept, byte for byte, in clearly named folders the warning names.
    let kept = kept_folders(&r.json);
    let db_dir = i.paths.db.parent().unwrap();
    let kept_db = kept
        .iter()
        .find(|k| k.parent() == Some(db_dir))
        .expect("a kept folder beside the database");
    let name = kept_db.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("atocore-pre-restore-kept-"), "{name}");
    assert_eq!(fs::read(kept_db.join("atocore.db")).unwrap(), corrupt);
    let kept_reg = kept
        .iter()
        .find(|k| k.parent() == i.paths.registry.parent())
        .expect("a kept folder beside the registry");
    assert_eq!(
        fs::read(kept_reg.join("project-registry.json")).unwrap(),
        b"{\"projects\": [\"before-restore\"]}"
    );
    let w = warnings(&r.json).join("\n");
    assert!(w.contains("pre_restore_snapshot_failed"), "{w}");
    assert!(w.contains(&kept_db.display().to_string()), "{w}");
    assert_eq!(i.stamps(), vec![stamp.clone()], "no pre-restore snapshot");
    no_partials(&i);
    assert!(!i.paths.restore_dir().join("aside.json").exists());
    assert!(!i.paths.restore_dir().join("journal.json").exists());

    // Nothing is stuck: init, finalize and another restore all succeed.
    let init = i.run(&["init"]);
    assert_eq!(init.code, 0, "{}\n{}", init.stdout, init.stderr);
    let fin = i.run(&["finalize"]);
    assert_eq!(fin.code, 0, "{}\n{}", fin.stdout, fin.stderr);
    i.add_memories(5, "after");
    let again = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    let pre = again.json["pre_restore_snapshot"].as_str().unwrap();
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        2005
    );
    // The kept copy is still there: only the operator removes it.
    assert_eq!(fs::read(kept_db.join("atocore.db")).unwrap(), corrupt);
}

#[test]
fn a_deferred_pre_restore_snapshot_that_cannot_be_made_never_blocks_init() {
    let i = Install::with_rows(2000);
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    corrupt_middle(&i.paths.db);
    let corrupt = fs::read(&i.paths.db).unwrap();
    fs::create_dir_all(i.paths.restore_dir()).unwrap();
    fs::write(
        i.paths.restore_dir().join("request.json"),
        serde_json::json!({"request_id": "k1", "stamp": stamp, "defer_pre_snapshot": true})
            .to_string(),
    )
    .unwrap();
    let first = i.run(&["init"]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    assert_eq!(first.json["result"]["pre_restore_pending"], true);

    // The next init (the next `docker compose up`) finishes what was deferred.
    let second = i.run(&["init"]);
    assert_eq!(second.code, 0, "{}\n{}", second.stdout, second.stderr);
    assert!(second.json["finalized_pre_restore_snapshot"].is_null());
    let kept = kept_folders(&second.json);
    let kept_db = kept
        .iter()
        .find(|k| k.parent() == i.paths.db.parent())
        .unwrap();
    assert_eq!(fs::read(kept_db.join("atocore.db")).unwrap(), corrupt);
    assert!(
        warnings(&second.json)
            .iter()
            .any(|w| w.starts_with("pre_restore_snapshot_failed")),
        "{}",
        second.stdout
    );
    let third = i.run(&["init"]);
    assert_eq!(third.code, 0, "{}", third.stdout);
    assert!(third.json["pre_restore_kept"].is_null(), "{}", third.stdout);
    assert_eq!(i.count_rows("memories"), 2000);
}

/// A tmpfs mounted over a folder, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(at: &Path, bytes: u64) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs on {} failed", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn too_little_disk_for_the_pre_restore_snapshot_keeps_the_old_state() {
    if !can_mount() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: this test needs root (tmpfs mount)"
        );
        eprintln!("skipped: needs root to mount a small tmpfs for the backups folder");
        return;
    }
    let i = Install::with_rows(20_000);
    let db_bytes = fs::metadata(&i.paths.db).unwrap().len();
    // Room for one snapshot of the database and the restore's control files, not two.
    let _small = Tmpfs::new(&i.paths.backup_dir, db_bytes * 3 / 2 + 256 * 1024);
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    i.add_memories(50, "unsaved");
    let before = fs::read(&i.paths.db).unwrap();

    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["restored_integrity_ok"], true);
    assert!(r.json["pre_restore_snapshot"].is_null());
    assert_eq!(i.count_rows("memories"), 20_000);
    let kept = kept_folders(&r.json);
    let kept_db = kept
        .iter()
        .find(|k| k.parent() == i.paths.db.parent())
        .unwrap();
    // The 50 unsaved rows are in the kept copy (with its WAL, when it had one).
    let kept_file = kept_db.join("atocore.db");
    assert!(kept_file.is_file());
    let c = rusqlite::Connection::open(&kept_file).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM memories", [], |r| r.get(0))
        .unwrap();
    drop(c);
    assert_eq!(n, 20_050);
    assert!(!before.is_empty());
    let w = warnings(&r.json).join("\n");
    assert!(w.contains("pre_restore_snapshot_failed"), "{w}");
    assert!(
        w.contains("disk is full") || w.contains("No space left"),
        "{w}"
    );
    no_partials(&i);
    assert_eq!(i.run(&["init"]).code, 0);
}

#[test]
fn with_the_live_database_missing_the_replaced_registry_and_chroma_are_kept() {
    let i = Install::new();
    let stamp = i.backup(&["--include-chroma"])["stamp"]
        .as_str()
        .unwrap()
        .to_string();
    fs::write(&i.paths.registry, b"{\"projects\": [\"only-live\"]}").unwrap();
    fs::write(
        i.paths.chroma.join("added.bin"),
        b"added after the snapshot",
    )
    .unwrap();
    let live_chroma = tree(&i.paths.chroma);
    for f in ["", "-wal", "-shm"] {
        let mut p = i.paths.db.clone().into_os_string();
        p.push(f);
        let _ = fs::remove_file(PathBuf::from(p));
    }

    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.json["chroma_restored"], true);
    let kept = kept_folders(&r.json);
    let kept_reg = kept
        .iter()
        .find(|k| k.parent() == i.paths.registry.parent())
        .expect("kept registry folder");
    assert_eq!(
        fs::read(kept_reg.join("project-registry.json")).unwrap(),
        b"{\"projects\": [\"only-live\"]}"
    );
    let kept_chroma = kept
        .iter()
        .find(|k| k.starts_with(&i.paths.chroma))
        .expect("kept chroma folder");
    assert_eq!(tree(kept_chroma), live_chroma, "the replaced chroma tree");
    assert!(
        warnings(&r.json)
            .iter()
            .any(|w| w.contains("no live database")),
        "{}",
        r.stdout
    );
    // The restored chroma equals the snapshot's (the kept folder is in the staging
    // area, which atocore and the snapshots never see).
    let restored: Tree = tree(&i.paths.chroma)
        .into_iter()
        .filter(|(k, _)| !k.starts_with(".atocore-restore"))
        .collect();
    assert_eq!(restored, tree(&i.snapshot_dir(&stamp).join("chroma")));
}

#[test]
fn a_leftover_aside_file_without_its_record_is_moved_never_trusted() {
    let i = Install::new();
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    i.add_memories(7, "live");
    let leftover = i.paths.db.with_file_name(".atocore.db.aside");
    fs::write(&leftover, b"LEFTOVER FROM AN OLD CRASH").unwrap();

    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(i.count_rows("memories"), 200);
    // The live database was set aside and snapshotted, not the leftover.
    let pre = r.json["pre_restore_snapshot"]
        .as_str()
        .unwrap_or_else(|| panic!("no pre-restore snapshot: {}", r.stdout));
    assert_eq!(
        count_rows(&i.snapshot_dir(pre).join("db/atocore.db"), "memories"),
        207
    );
    // The leftover was moved to a unique folder, intact.
    let w = warnings(&r.json);
    let moved = w
        .iter()
        .find(|w| w.starts_with("moved_unexpected_leftover"))
        .unwrap_or_else(|| panic!("no leftover warning: {}", r.stdout));
    let to = PathBuf::from(moved.rsplit(" -> ").next().unwrap());
    assert!(
        to.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("atocore-restore-leftover-"),
        "{moved}"
    );
    assert_eq!(fs::read(&to).unwrap(), b"LEFTOVER FROM AN OLD CRASH");
    assert!(!leftover.exists());
}

#[test]
fn backups_refuse_while_a_restore_is_unfinished() {
    let i = Install::new();
    let stamp = i.backup(&["--include-chroma"])["stamp"]
        .as_str()
        .unwrap()
        .to_string();
    i.add_memories(3, "x");
    let crashed = i.run_env(
        &["restore", &stamp, "--confirm-service-stopped"],
        &[("ATOCORE_RESTORE_JOB_CRASH_AT", "after-wal-removed")],
    );
    assert_eq!(crashed.code, -1, "{}", crashed.stderr);
    assert!(i.paths.restore_dir().join("journal.json").exists());
    let before = i.stamps();

    for args in [&["backup"][..], &["backup", "--include-chroma"][..]] {
        let r = i.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stdout);
        assert_eq!(r.json["error"], "busy");
        let msg = r.json["message"].as_str().unwrap();
        assert!(
            msg.contains("journal.json") && msg.contains("init"),
            "{msg}"
        );
    }
    assert_eq!(i.stamps(), before, "nothing published");
    no_partials(&i);

    let init = i.run(&["init"]);
    assert_eq!(init.code, 0, "{}\n{}", init.stdout, init.stderr);
    let after = i.run(&["backup"]);
    assert_eq!(after.code, 0, "{}", after.stderr);
}

#[test]
fn a_snapshot_damaged_after_validation_is_snapshot_damaged_not_a_usage_error() {
    let i = Install::new();
    let stamp = i.backup(&[])["stamp"].as_str().unwrap().to_string();
    i.add_memories(3, "x");
    let before = storage_tree(i.root());
    // Flip a byte of the registry copy: the full validation catches it first.
    let reg = i.snapshot_dir(&stamp).join("config/project-registry.json");
    let mut b = fs::read(&reg).unwrap();
    b[1] ^= 0x20;
    fs::write(&reg, &b).unwrap();
    let r = i.run(&["restore", &stamp, "--confirm-service-stopped"]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.json["error"], "snapshot_invalid");
    let _ = before;
    // A request that says the caller just validated it runs only the structural
    // check; staging then finds the damage: snapshot_damaged, exit 1, nothing changed.
    let before = storage_tree(i.root());
    fs::create_dir_all(i.paths.restore_dir()).unwrap();
    fs::write(
        i.paths.restore_dir().join("request.json"),
        serde_json::json!({"request_id": "dmg", "stamp": stamp, "prevalidated": true}).to_string(),
    )
    .unwrap();
    let init = i.run(&["init"]);
    assert_eq!(init.code, 1, "{}", init.stdout);
    assert_eq!(init.json["result"]["error"]["error"], "snapshot_damaged");
    assert_eq!(init.json["result"]["exit_code"], 1);
    let msg = init.json["result"]["error"]["message"].as_str().unwrap();
    assert_eq!(
        msg,
        format!(
            "snapshot `{stamp}` is damaged: {} does not match its manifest hash; check it with `atocore-restore-job validate {stamp}` and pick another with `atocore-restore-job list`",
            reg.display()
        )
    );
    let mut after = storage_tree(i.root());
    let mut before = before;
    for t in [&mut after, &mut before] {
        t.retain(|k, _| !k.starts_with("backups/restore"));
    }
    assert_eq!(after, before, "a refused restore changed live data");
}
