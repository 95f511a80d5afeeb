//! Shared helpers: a sample install in a temp dir, the real binary, whole-tree snapshots.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use atocore_restore_job::{Paths, sample};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_atocore-restore-job");

/// A sample AtoCore install in a temp dir.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub paths: Paths,
}

impl Install {
    pub fn new() -> Install {
        Install::with_rows(200)
    }

    pub fn with_rows(rows: u64) -> Install {
        let dir = tempfile::tempdir().unwrap();
        let paths = sample::create(&dir.path().join("storage"), rows, 6, 32 * 1024).unwrap();
        Install { dir, paths }
    }

    pub fn root(&self) -> &Path {
        &self.paths.storage_root
    }

    /// Run the real binary with this install's storage root.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(BIN);
        cmd.arg("--storage-root").arg(self.root()).args(args);
        cmd.env_remove("ATOCORE_DB_PATH")
            .env_remove("ATOCORE_REGISTRY_PATH")
            .env_remove("ATOCORE_CHROMA_PATH")
            .env_remove("ATOCORE_BACKUP_DIR")
            .env("ATOCORE_LOG_FORMAT", "text");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().unwrap())
    }

    /// `backup`, asserting success; the metadata.
    pub fn backup(&self, extra: &[&str]) -> Value {
        let mut args = vec!["backup"];
        args.extend_from_slice(extra);
        let r = self.run(&args);
        assert_eq!(r.code, 0, "backup failed: {}", r.stderr);
        r.json
    }

    pub fn snapshot_dir(&self, stamp: &str) -> PathBuf {
        self.paths.snapshots_dir().join(stamp)
    }

    /// Rows of `table` in the live database (through SQLite, WAL included).
    pub fn count_rows(&self, table: &str) -> i64 {
        let c = rusqlite::Connection::open(&self.paths.db).unwrap();
        c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    pub fn add_memories(&self, n: usize, tag: &str) {
        let c = rusqlite::Connection::open(&self.paths.db).unwrap();
        for i in 0..n {
            c.execute(
                "INSERT INTO memories (memory_type, content, project, confidence, created_at) VALUES ('episodic', ?1, 'test', 1.0, 'now')",
                [format!("{tag}-{i}")],
            )
            .unwrap();
        }
    }

    pub fn stamps(&self) -> Vec<String> {
        let r = self.run(&["list"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.json["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["stamp"].as_str().unwrap().to_string())
            .collect()
    }
}

/// Rows of `table`, reading the file without writing anything beside it (snapshot
/// files must stay as they are).
pub fn count_rows(db: &Path, table: &str) -> i64 {
    let c = atocore_restore_job::open_immutable(db).unwrap();
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        Run {
            code: o.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// One entry of a tree listing: kind, mode, content hash or link target.
pub type Tree = BTreeMap<String, String>;

/// A whole tree: every path below `root` with its kind, mode and content hash.
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Tree) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                format!(
                    "link {:o} -> {}",
                    mode,
                    std::fs::read_link(&p).unwrap().display()
                ),
            );
        } else if m.is_dir() {
            out.insert(rel, format!("dir {mode:o}"));
            walk(root, &p, out);
        } else {
            let h = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
            out.insert(rel, format!("file {mode:o} {} {h}", m.size()));
        }
    }
}

/// The tree of a storage root that a restore must leave alone on refusal: the live
/// data (database, registry, chroma) and the snapshots.
pub fn storage_tree(root: &Path) -> Tree {
    tree(root)
}

/// Names of the entries of `dir` that `keep` accepts (e.g. hidden partial snapshot
/// folders, staged temp files left behind).
pub fn names_in(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| keep(n))
        .collect()
}

/// Make a snapshot's manifest agree with the file `rel` as it is now (a crafted or
/// damaged file that only deeper checks can catch).
pub fn rehash_in_manifest(snap: &Path, rel: &str) {
    let sum = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(snap.join(rel)).unwrap(),
    ));
    let suffix = format!("  {rel}");
    let manifest: String = std::fs::read_to_string(snap.join("manifest.sha256"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.ends_with(&suffix) {
                format!("{sum}{suffix}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(snap.join("manifest.sha256"), manifest).unwrap();
}

pub fn inode(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

/// Whether this process may bind-mount (root, with mount available).
pub fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A bind mount that is undone on drop.
pub struct BindMount(PathBuf);

impl BindMount {
    pub fn new(src: &Path, dst: &Path) -> BindMount {
        let st = Command::new("mount")
            .arg("--bind")
            .arg(src)
            .arg(dst)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount --bind {} {} failed",
            src.display(),
            dst.display()
        );
        BindMount(dst.to_path_buf())
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
