//! The AtoCore snapshot engine and the `atocore-restore-job` command.
//!
//! It takes consistent snapshots of a live AtoCore install (an online SQLite backup
//! that a busy writer cannot livelock, the project registry, and, when asked, an
//! incremental copy of the Chroma store), checks them (manifest hashes, integrity and
//! row counts), applies retention, and restores them crash-safely into bind-mounted
//! volumes. The sidecar calls this library; the CLI (`cli`) is a thin layer over it.
//!
//! Layout: one concept per module — [`config`] (paths and settings), [`stamp`],
//! [`metadata`], [`manifest`], [`db`] (SQLite), [`chroma`] (the vector store tree),
//! [`snapshot`] (backup, list), [`validate`], [`retention`] (the policy), [`prune`],
//! [`restore`] (with its journal), [`init`] (the init-job mode and request files),
//! [`durable`] (fsync, atomic writes, the backups lock), [`sample`] (a demo install),
//! [`offsite`] (encrypted, deduplicated replication to S3 or a folder).
//!
//! ```no_run
//! use atocore_restore_job::{snapshot, Paths, BackupOptions, Hooks};
//! let paths = Paths::from_root("/srv/storage/atocore");
//! let meta = snapshot::backup(&paths, &BackupOptions::default(), Hooks::default())?;
//! println!("{}", meta.stamp);
//! # Ok::<(), atocore_restore_job::Error>(())
//! ```

pub mod chroma;
pub mod cli;
pub mod config;
pub mod db;
pub mod durable;
pub mod error;
pub mod init;
pub mod manifest;
pub mod metadata;
pub mod offsite;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod sample;
pub mod snapshot;
pub mod stamp;
pub mod validate;

pub use config::{Paths, RetentionArgs, StorageArgs};
pub use error::{Error, ErrorBody, Result};
pub use metadata::{Kind, Metadata};
pub use restore::{ChromaChoice, RestoreOptions, RestoreReport};
pub use retention::Policy;
pub use snapshot::{BackupOptions, Hooks, ListReport, Quiesce};
pub use stamp::Stamp;
pub use validate::ValidationReport;
