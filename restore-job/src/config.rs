//! Settings shared by every component: the storage root and the four paths below it.
//!
//! [`StorageArgs`] is the clap surface (flags with environment mirrors, docs/design.md §1);
//! [`Paths`] is the validated result that everything else takes.

use std::path::{Path, PathBuf};

/// The default storage root of an AtoCore install.
pub const DEFAULT_STORAGE_ROOT: &str = "/srv/storage/atocore";

/// Storage flags, each with its environment mirror. Flatten into any clap parser.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StorageArgs {
    /// Root of AtoCore's storage; the four paths below derive from it.
    #[arg(long, env = "ATOCORE_STORAGE_ROOT", global = true, value_name = "DIR")]
    pub storage_root: Option<PathBuf>,
    /// The live SQLite database [default: <root>/data/db/atocore.db].
    #[arg(long, env = "ATOCORE_DB_PATH", global = true, value_name = "FILE")]
    pub db_path: Option<PathBuf>,
    /// The project registry JSON [default: <root>/config/project-registry.json].
    #[arg(
        long,
        env = "ATOCORE_REGISTRY_PATH",
        global = true,
        value_name = "FILE"
    )]
    pub registry_path: Option<PathBuf>,
    /// The Chroma vector store directory [default: <root>/data/chroma].
    #[arg(long, env = "ATOCORE_CHROMA_PATH", global = true, value_name = "DIR")]
    pub chroma_path: Option<PathBuf>,
    /// Where snapshots live (in `snapshots/` below it) [default: <root>/backups].
    #[arg(long, env = "ATOCORE_BACKUP_DIR", global = true, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
}

/// Retention counts, each with its environment mirror.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionArgs {
    /// Keep the newest snapshot of each of this many most recent days that have one.
    #[arg(long, env = "ATOCORE_KEEP_DAILY", default_value_t = 7, global = true)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of this many most recent ISO weeks that have one.
    #[arg(long, env = "ATOCORE_KEEP_WEEKLY", default_value_t = 4, global = true)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of this many most recent months that have one.
    #[arg(long, env = "ATOCORE_KEEP_MONTHLY", default_value_t = 6, global = true)]
    pub keep_monthly: u32,
    /// The chroma series: keep the newest snapshot with chroma of each of this many
    /// most recent days that have one.
    #[arg(
        long,
        env = "ATOCORE_KEEP_CHROMA_DAILY",
        default_value_t = 7,
        global = true
    )]
    pub keep_chroma_daily: u32,
    /// The chroma series, by ISO week.
    #[arg(
        long,
        env = "ATOCORE_KEEP_CHROMA_WEEKLY",
        default_value_t = 4,
        global = true
    )]
    pub keep_chroma_weekly: u32,
    /// The chroma series, by month.
    #[arg(
        long,
        env = "ATOCORE_KEEP_CHROMA_MONTHLY",
        default_value_t = 6,
        global = true
    )]
    pub keep_chroma_monthly: u32,
    /// Keep `pre-restore` and `drill` snapshots at least this many days.
    #[arg(
        long,
        env = "ATOCORE_KEEP_SPECIAL_DAYS",
        default_value_t = 30,
        global = true
    )]
    pub keep_special_days: u32,
    /// Point-in-time recovery reaches back this many days: captured WAL segments older
    /// than the snapshot that covers that moment are removed by prune.
    #[arg(long, env = "ATOCORE_PITR_DAYS", default_value_t = 7, global = true)]
    pub pitr_days: u32,
    /// Keep every snapshot younger than this, on top of the series (restic's
    /// `--keep-within`): `24h`, `90m`, `2d`, or a number of seconds; `0` turns it off.
    #[arg(
        long,
        env = "ATOCORE_KEEP_WITHIN",
        default_value = "24h",
        value_parser = parse_duration_secs,
        global = true
    )]
    pub keep_within: std::time::Duration,
}

/// The resolved, absolute paths of one AtoCore install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub storage_root: PathBuf,
    pub db: PathBuf,
    pub registry: PathBuf,
    pub chroma: PathBuf,
    pub backup_dir: PathBuf,
}

impl Paths {
    /// All paths derived from one storage root.
    pub fn from_root(root: impl Into<PathBuf>) -> Paths {
        let root = absolute(&root.into());
        Paths {
            db: root.join("data/db/atocore.db"),
            registry: root.join("config/project-registry.json"),
            chroma: root.join("data/chroma"),
            backup_dir: root.join("backups"),
            storage_root: root,
        }
    }

    /// The folder that holds the published snapshots.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.backup_dir.join("snapshots")
    }

    /// The folder of one snapshot.
    pub fn snapshot_dir(&self, stamp: &crate::Stamp) -> PathBuf {
        self.snapshots_dir().join(stamp.as_str())
    }

    /// The folder of restore requests, results and the restore journal.
    pub fn restore_dir(&self) -> PathBuf {
        self.backup_dir.join("restore")
    }
}

impl From<&StorageArgs> for Paths {
    fn from(a: &StorageArgs) -> Paths {
        let mut p = Paths::from_root(
            a.storage_root
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STORAGE_ROOT)),
        );
        if let Some(v) = &a.db_path {
            p.db = absolute(v);
        }
        if let Some(v) = &a.registry_path {
            p.registry = absolute(v);
        }
        if let Some(v) = &a.chroma_path {
            p.chroma = absolute(v);
        }
        if let Some(v) = &a.backup_dir {
            p.backup_dir = absolute(v);
        }
        p
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A duration setting in seconds, as every component reads it: a plain number of
/// seconds (`90`), or a duration with its unit (`90s`, `2m`, `1h30m`).
pub fn parse_duration_secs(v: &str) -> std::result::Result<std::time::Duration, String> {
    parse_duration_or(v, std::time::Duration::from_secs)
}

/// A duration setting in milliseconds: a plain number of milliseconds (`1500`), or a
/// duration with its unit (`1500ms`, `2s`, `1m`).
pub fn parse_duration_ms(v: &str) -> std::result::Result<std::time::Duration, String> {
    parse_duration_or(v, std::time::Duration::from_millis)
}

fn parse_duration_or(
    v: &str,
    plain: fn(u64) -> std::time::Duration,
) -> std::result::Result<std::time::Duration, String> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Ok(plain(n));
    }
    humantime::parse_duration(v).map_err(|e| {
        format!("`{v}` is not a duration ({e}); write a number, or one with a unit: 90s, 2m, 1h")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_derive_from_root_and_overrides_win() {
        let a = StorageArgs {
            storage_root: Some("/x".into()),
            chroma_path: Some("/y/chroma".into()),
            ..Default::default()
        };
        let p = Paths::from(&a);
        assert_eq!(p.db, PathBuf::from("/x/data/db/atocore.db"));
        assert_eq!(p.registry, PathBuf::from("/x/config/project-registry.json"));
        assert_eq!(p.chroma, PathBuf::from("/y/chroma"));
        assert_eq!(p.backup_dir, PathBuf::from("/x/backups"));
        assert_eq!(p.snapshots_dir(), PathBuf::from("/x/backups/snapshots"));
    }
}
