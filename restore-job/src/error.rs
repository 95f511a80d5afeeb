//! The crate's one error type.
//!
//! Rules, as in rustic_core: every public function returns [`Error`]; a message names
//! the object it is about (a stamp, a path) and says what to do next. Each variant has
//! one stable code ([`Error::code`]); the one table [`CODES`] maps every code onto the
//! CLI's exit code (0 ok, 1 ran and failed, 2 refused) and the sidecar's HTTP status,
//! so a code read back from a result file maps the same way as a live error.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything that can go wrong in the snapshot engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stamp that is not `YYYYMMDDTHHMMSSZ` (this also catches path-like input).
    #[error(
        "`{0}` is not a snapshot stamp: expected UTC YYYYMMDDTHHMMSSZ such as 20260407T060000Z; run `atocore-restore-job list` for the stamps"
    )]
    BadStamp(String),

    /// A well-formed stamp with no snapshot folder behind it.
    #[error(
        "no snapshot `{stamp}` in {dir}; run `atocore-restore-job list` to see the stamps there"
    )]
    UnknownStamp { stamp: String, dir: PathBuf },

    /// `delete` of a snapshot that a pending or staged restore still needs.
    #[error(
        "refusing to delete `{stamp}`: {by} refers to it; let that restore run (or drop it) first, then try again"
    )]
    SnapshotInUse { stamp: String, by: String },

    /// Restore asked for without `--confirm-service-stopped`.
    #[error(
        "refusing to restore `{0}` without --confirm-service-stopped: stop atocore first (docker compose stop atocore), then add the flag"
    )]
    NotConfirmed(String),

    /// The live database is still open in another process.
    #[error(
        "refusing to restore: the live database {0} is still open in another process (it holds the WAL shared-memory or file lock); stop atocore (and the sidecar, whose WAL streaming keeps the database open: docker compose stop atocore sidecar) and try again"
    )]
    DatabaseInUse(PathBuf),

    /// Another mutating operation (backup, restore, prune) holds the backups lock.
    #[error(
        "another backup, restore or prune is running (it holds {0}); wait for it to finish and try again"
    )]
    Busy(PathBuf),

    /// A restore is unfinished (its journal exists): the live files may be half
    /// swapped, so no backup is taken of them until it is finished.
    #[error(
        "a restore is unfinished ({0} exists): the live files may be half swapped, so no snapshot is taken of them; finish it with `atocore-restore-job init` (or `docker compose up -d`, which runs it), then back up"
    )]
    RestorePending(PathBuf),

    /// Bad command-line or request input that is not about a stamp.
    #[error("{0}")]
    Usage(String),

    /// The snapshot failed validation.
    #[error("cannot restore: snapshot `{stamp}` failed validation ({}); pick an older one with `atocore-restore-job list`", codes.join(", "))]
    InvalidSnapshot { stamp: String, codes: Vec<String> },

    /// A snapshot's files no longer match what was recorded when it was made (a flipped
    /// byte, a truncated or missing file): the snapshot is damaged, not the request.
    #[error(
        "snapshot `{stamp}` is damaged: {why}; check it with `atocore-restore-job validate {stamp}` and pick another with `atocore-restore-job list`"
    )]
    DamagedSnapshot { stamp: String, why: String },

    /// There is no live database to back up.
    #[error(
        "no database at {0}: nothing to back up; check --db-path / ATOCORE_DB_PATH or --storage-root"
    )]
    MissingDatabase(PathBuf),

    /// A file-system call failed.
    #[error(
        "cannot {op} {path}: {source}; check that the path exists, is on the expected volume and is writable"
    )]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An SQLite call failed.
    #[error("SQLite could not {op} {path}: {source}; check the file with `sqlite3 {path} 'PRAGMA integrity_check'`", path = path.display())]
    Sqlite {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// A JSON file could not be read or written.
    #[error("{path} is not valid JSON ({source}); fix or remove the file")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The online backup did not finish in time.
    #[error(
        "the online backup of {path} did not finish within {secs} s; retry when the database is less busy or raise --backup-timeout-secs"
    )]
    BackupTimeout { path: PathBuf, secs: u64 },

    /// The operation was cancelled (shutdown); nothing was published.
    #[error("{0} was cancelled before it finished; nothing was published, run it again")]
    Cancelled(&'static str),

    /// A freshly made snapshot failed its own validation; it was not published.
    #[error("the new snapshot failed validation ({}) and was not published; check the disk and the live database, then retry", .0.join(", "))]
    NewSnapshotInvalid(Vec<String>),

    /// The chroma tree holds something the engine will not copy.
    #[error("{path}: {why}; fix the chroma directory and retry")]
    UnsafeEntry { path: PathBuf, why: String },

    /// The restore ran and did not end with a healthy database.
    #[error("restore of `{stamp}` failed: {why}")]
    RestoreFailed { stamp: String, why: String },

    /// Off-site replication is not set up (no target, no recipients, no identity, no
    /// repository key): a refusal, nothing was sent or changed.
    #[error("off-site: {0}")]
    OffsiteNotConfigured(String),

    /// The off-site target did not answer (network, DNS, server error).
    #[error(
        "off-site target {target} is unreachable: {why}; check ATOCORE_OFFSITE_URL, AWS_ENDPOINT_URL and the network, then retry"
    )]
    OffsiteUnreachable { target: String, why: String },

    /// The off-site target refused the credentials.
    #[error(
        "off-site target {target} refused access: {why}; check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket's permissions"
    )]
    OffsiteDenied { target: String, why: String },

    /// An object a snapshot needs is not on the target.
    #[error(
        "off-site object {object} is missing on {target}; run `atocore-restore-job offsite verify` and push the snapshot again"
    )]
    OffsiteObjectMissing { object: String, target: String },

    /// An object on the target is truncated, altered or not what its name says.
    #[error(
        "off-site object {object} is damaged: {why}; run `atocore-restore-job offsite verify --read-data 100` and fetch another snapshot with `offsite list`"
    )]
    OffsiteObjectDamaged { object: String, why: String },

    /// The identity given cannot decrypt the object.
    #[error(
        "off-site object {object} cannot be decrypted with the identity given: none of its keys matches a recipient the object was encrypted to; use the identity that belongs to ATOCORE_OFFSITE_RECIPIENTS"
    )]
    OffsiteWrongKey { object: String },

    /// An object on the target that only the holder of the repository key could have
    /// made is not authentic: planted by someone who can write the bucket (a forged
    /// reference or config, a substituted repository key, a plain repository where an
    /// encrypted one belongs).
    #[error(
        "off-site object {object} is not authentic: {why}; nothing from it was used: do not trust this target until you know who wrote it (check the bucket's access keys), and fetch from another copy"
    )]
    OffsiteNotAuthentic { object: String, why: String },

    /// A stamp that is not on the off-site target.
    #[error(
        "no snapshot `{stamp}` on {target}; run `atocore-restore-job offsite list` to see the stamps there"
    )]
    OffsiteUnknownStamp { stamp: String, target: String },

    /// Captured WAL frames that do not chain (a damaged or missing segment): the
    /// database cannot be brought to the moment asked for from this generation.
    #[error(
        "the captured WAL for {what} is broken: {why}; pick another moment (`atocore-restore-job list` shows the recoverable windows) or restore a snapshot"
    )]
    WalChainBroken { what: String, why: String },

    /// No snapshot and no captured WAL reach the moment asked for.
    #[error(
        "nothing can restore the database to {at}: {why}; `atocore-restore-job list` shows the snapshots and the recoverable windows"
    )]
    NoPointInTime { at: String, why: String },
}

/// Every error code with its CLI exit code and HTTP status. Codes not listed (from
/// newer or older versions) are failures: exit 1, HTTP 500.
pub const CODES: &[(&str, u8, u16)] = &[
    ("bad_stamp", 2, 400),
    ("bad_request", 2, 400),
    ("not_confirmed", 2, 400),
    ("unknown_stamp", 2, 404),
    ("snapshot_in_use", 2, 409),
    ("busy", 2, 409),
    ("database_in_use", 2, 409),
    ("snapshot_invalid", 1, 422),
    ("snapshot_damaged", 1, 422),
    ("cancelled", 1, 503),
    ("database_missing", 1, 500),
    ("io_error", 1, 500),
    ("sqlite_error", 1, 500),
    ("json_error", 1, 500),
    ("backup_timeout", 1, 500),
    ("new_snapshot_invalid", 1, 500),
    ("unsafe_entry", 1, 500),
    ("restore_failed", 1, 500),
    ("offsite_not_configured", 2, 400),
    ("offsite_unknown_stamp", 2, 404),
    ("offsite_unreachable", 1, 502),
    ("offsite_denied", 1, 502),
    ("offsite_object_missing", 1, 422),
    ("offsite_object_damaged", 1, 422),
    ("offsite_wrong_key", 1, 422),
    ("offsite_not_authentic", 1, 422),
    ("wal_chain_broken", 1, 422),
    ("no_point_in_time", 2, 404),
];

/// The CLI exit code of an error code ([`CODES`]).
pub fn exit_code_of(code: &str) -> u8 {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(1, |(_, exit, _)| *exit)
}

/// The HTTP status of an error code ([`CODES`]).
pub fn http_status_of(code: &str) -> u16 {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map_or(500, |(_, _, status)| *status)
}

impl Error {
    /// The CLI exit code: 2 for refusals and bad usage, 1 for operations that ran and failed.
    pub fn exit_code(&self) -> u8 {
        exit_code_of(self.code())
    }

    /// The HTTP status the sidecar answers this error with.
    pub fn http_status(&self) -> u16 {
        http_status_of(self.code())
    }

    /// A stable machine-readable code for the JSON error document.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadStamp(_) => "bad_stamp",
            Error::UnknownStamp { .. } => "unknown_stamp",
            Error::SnapshotInUse { .. } => "snapshot_in_use",
            Error::NotConfirmed(_) => "not_confirmed",
            Error::DatabaseInUse(_) => "database_in_use",
            Error::Busy(_) | Error::RestorePending(_) => "busy",
            Error::Usage(_) => "bad_request",
            Error::InvalidSnapshot { .. } => "snapshot_invalid",
            Error::DamagedSnapshot { .. } => "snapshot_damaged",
            Error::MissingDatabase(_) => "database_missing",
            Error::Io { .. } => "io_error",
            Error::Sqlite { .. } => "sqlite_error",
            Error::Json { .. } => "json_error",
            Error::BackupTimeout { .. } => "backup_timeout",
            Error::Cancelled(_) => "cancelled",
            Error::NewSnapshotInvalid(_) => "new_snapshot_invalid",
            Error::UnsafeEntry { .. } => "unsafe_entry",
            Error::RestoreFailed { .. } => "restore_failed",
            Error::OffsiteNotConfigured(_) => "offsite_not_configured",
            Error::OffsiteUnreachable { .. } => "offsite_unreachable",
            Error::OffsiteDenied { .. } => "offsite_denied",
            Error::OffsiteObjectMissing { .. } => "offsite_object_missing",
            Error::OffsiteObjectDamaged { .. } => "offsite_object_damaged",
            Error::OffsiteWrongKey { .. } => "offsite_wrong_key",
            Error::OffsiteUnknownStamp { .. } => "offsite_unknown_stamp",
            Error::OffsiteNotAuthentic { .. } => "offsite_not_authentic",
            Error::WalChainBroken { .. } => "wal_chain_broken",
            Error::NoPointInTime { .. } => "no_point_in_time",
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    pub(crate) fn sqlite(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(rusqlite::Error) -> Error {
        let path = path.into();
        move |source| Error::Sqlite { op, path, source }
    }
}

impl From<atocore_wal::Error> for Error {
    fn from(e: atocore_wal::Error) -> Error {
        match e {
            atocore_wal::Error::Io { op, path, source } => Error::Io { op, path, source },
            atocore_wal::Error::Sqlite { op, path, source } => Error::Sqlite { op, path, source },
            atocore_wal::Error::Broken { what, why } => Error::WalChainBroken { what, why },
        }
    }
}

/// An error as it appears in JSON documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

impl From<&Error> for ErrorBody {
    fn from(e: &Error) -> Self {
        ErrorBody {
            error: e.code().to_string(),
            message: e.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once() {
        let p = std::path::PathBuf::from("/x");
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let all = [
            Error::BadStamp("x".into()),
            Error::UnknownStamp {
                stamp: "s".into(),
                dir: p.clone(),
            },
            Error::SnapshotInUse {
                stamp: "s".into(),
                by: "b".into(),
            },
            Error::NotConfirmed("s".into()),
            Error::DatabaseInUse(p.clone()),
            Error::Busy(p.clone()),
            Error::RestorePending(p.clone()),
            Error::Usage("u".into()),
            Error::InvalidSnapshot {
                stamp: "s".into(),
                codes: vec![],
            },
            Error::DamagedSnapshot {
                stamp: "s".into(),
                why: "w".into(),
            },
            Error::MissingDatabase(p.clone()),
            Error::Io {
                op: "read",
                path: p.clone(),
                source: io(),
            },
            Error::BackupTimeout {
                path: p.clone(),
                secs: 1,
            },
            Error::Cancelled("x"),
            Error::NewSnapshotInvalid(vec![]),
            Error::UnsafeEntry {
                path: p.clone(),
                why: "w".into(),
            },
            Error::RestoreFailed {
                stamp: "s".into(),
                why: "w".into(),
            },
            Error::OffsiteNotConfigured("x".into()),
            Error::OffsiteUnreachable {
                target: "t".into(),
                why: "w".into(),
            },
            Error::OffsiteDenied {
                target: "t".into(),
                why: "w".into(),
            },
            Error::OffsiteObjectMissing {
                object: "o".into(),
                target: "t".into(),
            },
            Error::OffsiteObjectDamaged {
                object: "o".into(),
                why: "w".into(),
            },
            Error::OffsiteWrongKey { object: "o".into() },
            Error::OffsiteNotAuthentic {
                object: "o".into(),
                why: "w".into(),
            },
            Error::OffsiteUnknownStamp {
                stamp: "s".into(),
                target: "t".into(),
            },
            Error::WalChainBroken {
                what: "w".into(),
                why: "w".into(),
            },
            Error::NoPointInTime {
                at: "t".into(),
                why: "w".into(),
            },
        ];
        for e in &all {
            let n = CODES.iter().filter(|(c, _, _)| *c == e.code()).count();
            assert_eq!(n, 1, "{} must be in CODES once", e.code());
        }
        let mut codes: Vec<&str> = CODES.iter().map(|(c, _, _)| *c).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), CODES.len(), "a code listed twice");
        assert_eq!(Error::RestorePending(p.clone()).exit_code(), 2);
        assert_eq!(Error::RestorePending(p).http_status(), 409);
        assert_eq!(exit_code_of("from_a_newer_version"), 1);
        assert_eq!(http_status_of("snapshot_damaged"), 422);
        assert_eq!(Error::OffsiteNotConfigured("x".into()).exit_code(), 2);
        assert_eq!(exit_code_of("offsite_unknown_stamp"), 2);
        assert_eq!(exit_code_of("offsite_object_damaged"), 1);
    }
}
