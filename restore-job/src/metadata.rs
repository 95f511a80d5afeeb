//! `backup-metadata.json`: the Python-era fields every reader must accept, plus the
//! fields this engine adds (always written).
//!
//! Reading is lenient, so snapshots made by the old Python service count like any
//! other: every field may be missing (and a Python-era one `null`); a missing `stamp` is
//! the folder's name; an empty `registry_snapshot_path` or `chroma_snapshot_path` means
//! "none". The paths in the file name the folder on the host that wrote it: nothing
//! reads through them, files are always read relative to the snapshot folder.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Result;
use crate::layout::METADATA_FILE;

/// The snapshot format this engine writes.
pub const FORMAT_VERSION: u32 = 2;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Manual,
    Scheduled,
    /// The database-only snapshot the WAL stream takes to start a generation's
    /// recoverable window. It counts in the calendar series like a scheduled one;
    /// retention keeps it (`pitr-base`) while a restore to a moment of the
    /// point-in-time window starts from it, as any other base.
    WalBase,
    PreRestore,
    Drill,
    /// The database rebuilt at a moment from a snapshot and the captured WAL.
    PointInTime,
}

impl Kind {
    /// `pre-restore`, `drill` and `point-in-time` snapshots are kept by age, not by the
    /// calendar buckets.
    pub fn is_special(self) -> bool {
        matches!(self, Kind::PreRestore | Kind::Drill | Kind::PointInTime)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Manual => "manual",
            Kind::Scheduled => "scheduled",
            Kind::WalBase => "wal-base",
            Kind::PreRestore => "pre-restore",
            Kind::Drill => "drill",
            Kind::PointInTime => "point-in-time",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "manual" => Ok(Kind::Manual),
            "scheduled" => Ok(Kind::Scheduled),
            "wal-base" => Ok(Kind::WalBase),
            "pre-restore" => Ok(Kind::PreRestore),
            "drill" => Ok(Kind::Drill),
            "point-in-time" => Ok(Kind::PointInTime),
            _ => Err(format!(
                "unknown kind `{s}`: use manual, scheduled, wal-base, pre-restore, drill or point-in-time"
            )),
        }
    }
}

/// Name and version of the tool that wrote a snapshot (informative: missing parts read
/// as empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

/// Where the snapshot came from (informative: missing parts read as empty).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Source {
    pub storage_root: String,
    pub db_path: String,
    pub registry_path: String,
    pub chroma_path: String,
    pub hostname: String,
    pub build_sha: Option<String>,
}

/// Mode and owner of a live file, restored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAttrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The content of `backup-metadata.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    // --- Python-era fields ---
    /// Absent in Python-era files: [`read`] fills it from the folder's name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub stamp: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub created_at: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub backup_root: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub db_snapshot_path: String,
    /// 0 when the file does not say (the size is then not checked).
    #[serde(default, deserialize_with = "null_as_default")]
    pub db_size_bytes: u64,
    #[serde(default)]
    pub registry_snapshot_path: Option<String>,
    #[serde(default)]
    pub chroma_snapshot_path: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub include_chroma: bool,
    // --- added by this engine ---
    #[serde(default)]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub format_version: Option<u32>,
    #[serde(default)]
    pub tool: Option<Tool>,
    #[serde(default)]
    pub source: Option<Source>,
    #[serde(default)]
    pub chroma_files: Option<u64>,
    #[serde(default)]
    pub chroma_bytes: Option<u64>,
    #[serde(default)]
    pub chroma_quiesced: Option<bool>,
    #[serde(default)]
    pub chroma_linked_files: Option<u64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub copy_ms: Option<u64>,
    #[serde(default)]
    pub validate_ms: Option<u64>,
    #[serde(default)]
    pub validated_at: Option<String>,
    /// Rows of each table at backup time: an empty or truncated copy is caught.
    #[serde(default)]
    pub row_counts: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    pub db_page_count: Option<u64>,
    #[serde(default)]
    pub db_file: Option<FileAttrs>,
    #[serde(default)]
    pub registry_file: Option<FileAttrs>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub warnings: Vec<String>,
    /// `false` when some chroma file kept changing while it was copied (or vanished
    /// before it could be copied); the paths are in `chroma_changed_paths`. Null
    /// without chroma.
    #[serde(default)]
    pub chroma_consistent: Option<bool>,
    #[serde(default)]
    pub chroma_changed_paths: Option<Vec<String>>,
    /// How the database was copied and where in the live WAL the copy stands (a base
    /// for point-in-time replay). Absent for snapshots made by the SQLite backup API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<SnapshotWal>,
    /// For a `point-in-time` snapshot: the moment asked for and what it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTime>,
    /// Fields written by other versions are kept as they are.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Where a snapshot's database copy stands in the live WAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotWal {
    /// `copy`: the file copied under a pinned read transaction, then the WAL's frames
    /// up to the pin replayed into it by SQLite.
    pub method: String,
    /// The WAL position the copy equals (none when the WAL was empty or absent).
    pub position: Option<crate::wal::WalPosition>,
    /// When the read transaction was pinned (every commit before it is in the copy).
    pub pinned_at: String,
    pub pinned_ms: i64,
}

/// What a `point-in-time` snapshot was rebuilt from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointInTime {
    /// The moment asked for.
    pub at: String,
    /// The moment the database was brought to: the capture time of the last segment
    /// replayed (or the base's pin when none was).
    pub restored_to: String,
    /// The snapshot whose database the replay started from.
    pub base: String,
    /// The snapshot the registry and chroma come from.
    pub files_from: String,
    pub generation: Option<String>,
    pub segments_replayed: u64,
    pub frames_replayed: u64,
}

impl Metadata {
    /// The kind, with legacy snapshots (no `kind`) counted as manual ones.
    pub fn kind_or_manual(&self) -> Kind {
        self.kind.unwrap_or(Kind::Manual)
    }

    /// Whether the snapshot should hold a registry copy (`null`, `""` or absent: no).
    pub fn has_registry(&self) -> bool {
        self.registry_snapshot_path
            .as_deref()
            .is_some_and(|p| !p.is_empty())
    }

    /// Whether the snapshot should hold a chroma copy (`include_chroma`, or a non-empty
    /// `chroma_snapshot_path`).
    pub fn has_chroma(&self) -> bool {
        self.include_chroma
            || self
                .chroma_snapshot_path
                .as_deref()
                .is_some_and(|p| !p.is_empty())
    }

    /// Bytes the snapshot accounts for (database plus chroma).
    pub fn total_bytes(&self) -> u64 {
        self.db_size_bytes + self.chroma_bytes.unwrap_or(0)
    }
}

/// `null` reads as the type's default (Python wrote `null` for fields it had no value for).
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Read the metadata of a snapshot folder. `Ok(None)` when the file is missing. A
/// missing `stamp` (Python-era files) is the folder's name.
pub fn read(dir: &Path) -> Result<Option<Metadata>> {
    let mut meta: Option<Metadata> = crate::durable::read_json(&dir.join(METADATA_FILE))?;
    if let Some(m) = meta.as_mut()
        && m.stamp.is_empty()
        && let Some(name) = dir.file_name()
    {
        m.stamp = name.to_string_lossy().into_owned();
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_and_write_their_names() {
        for (k, name) in [
            (Kind::Manual, "manual"),
            (Kind::Scheduled, "scheduled"),
            (Kind::WalBase, "wal-base"),
            (Kind::PreRestore, "pre-restore"),
            (Kind::Drill, "drill"),
            (Kind::PointInTime, "point-in-time"),
        ] {
            assert_eq!(k.as_str(), name);
            assert_eq!(name.parse::<Kind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), name);
            assert_eq!(serde_json::from_value::<Kind>(name.into()).unwrap(), k);
        }
        assert!(!Kind::WalBase.is_special());
        assert_eq!(
            "base".parse::<Kind>(),
            Err("unknown kind `base`: use manual, scheduled, wal-base, pre-restore, drill or point-in-time".to_string())
        );
    }

    #[test]
    fn python_era_metadata_parses() {
        let legacy = r#"{"stamp":"20260101T060000Z","created_at":"2026-01-01T06:00:00+00:00",
            "backup_root":"/srv/storage/atocore/backups/snapshots/20260101T060000Z",
            "db_snapshot_path":"/srv/storage/atocore/backups/snapshots/20260101T060000Z/db/atocore.db",
            "db_size_bytes":4096,"registry_snapshot_path":null,"chroma_snapshot_path":null,
            "include_chroma":false}"#;
        let m: Metadata = serde_json::from_str(legacy).unwrap();
        assert_eq!(m.kind_or_manual(), Kind::Manual);
        assert!(!m.has_chroma() && !m.has_registry());
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(back["stamp"], "20260101T060000Z");
    }

    #[test]
    fn python_metadata_without_stamp_reads_with_the_folder_name() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("20260101T060000Z");
        std::fs::create_dir(&snap).unwrap();
        std::fs::write(
            snap.join(METADATA_FILE),
            r#"{"created_at":"2026-01-01T06:00:00+00:00",
            "backup_root":"/srv/storage/atocore/backups/snapshots/20260101T060000Z",
            "db_snapshot_path":"/srv/storage/atocore/backups/snapshots/20260101T060000Z/db/atocore.db",
            "db_size_bytes":4096,"registry_snapshot_path":null,"chroma_snapshot_path":"",
            "include_chroma":false}"#,
        )
        .unwrap();
        let m = read(&snap).unwrap().unwrap();
        assert_eq!(m.stamp, "20260101T060000Z");
        assert_eq!(m.db_size_bytes, 4096);
        assert!(
            !m.has_chroma(),
            "an empty chroma_snapshot_path is no chroma"
        );
        assert!(!m.has_registry());
    }

    #[test]
    fn every_field_may_be_missing_or_null() {
        let m: Metadata = serde_json::from_str("{}").unwrap();
        assert!(m.stamp.is_empty() && !m.has_chroma() && m.db_size_bytes == 0);
        let m: Metadata = serde_json::from_str(
            r#"{"stamp":null,"created_at":null,"backup_root":null,"db_snapshot_path":null,
            "db_size_bytes":null,"include_chroma":null,"warnings":null}"#,
        )
        .unwrap();
        assert!(!m.has_chroma() && m.warnings.is_empty());
        let m: Metadata =
            serde_json::from_str(r#"{"include_chroma":true,"chroma_snapshot_path":null}"#).unwrap();
        assert!(m.has_chroma());
        let m: Metadata = serde_json::from_str(r#"{"chroma_snapshot_path":"/x/chroma"}"#).unwrap();
        assert!(m.has_chroma());
        let m: Metadata =
            serde_json::from_str(r#"{"tool":{"name":"x"},"source":{"hostname":"h"}}"#).unwrap();
        assert_eq!(m.source.unwrap().hostname, "h");
    }
}
