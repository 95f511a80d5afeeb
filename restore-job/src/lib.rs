//! The AtoCore snapshot engine and the `atocore-restore-job` command.
//!
//! It takes consistent snapshots of a live AtoCore install (an online SQLite backup
//! that a busy writer cannot livelock, the project registry, and, when asked, an
//! incremental copy of the Chroma store), checks them (manifest hashes, integrity and
//! row counts), applies retention, and restores them crash-safely into bind-mounted
//! volumes. The sidecar calls this library; the binary's command line is a thin layer
//! over it.
//!
//! Layout, one concept per module, dependencies running one way:
//! - basics: [`error`] (the one error type and the code table), [`stamp`], `durable`
//!   (fsync, atomic writes, the backups lock), `faults` (test crash points);
//! - formats: [`layout`] (every file name), [`metadata`], `manifest`, `db` (SQLite),
//!   `chroma` (the vector store tree), `control` (a restore's request, journal and
//!   aside records);
//! - [`validate`] and [`snapshot`] (backup, list);
//! - [`restore`] (stage, set aside, swap in, verify, finalize);
//! - [`init`] (the init-job mode) and [`prune`] (with [`retention`], the policy);
//! - [`config`] (paths and settings), [`logging`], [`sample`] (a demo install);
//! - [`offsite`] (encrypted, deduplicated replication to S3 or a folder, and back).
//!
//! ```no_run
//! use atocore_restore_job::{snapshot, Paths, BackupOptions, BackupHooks};
//! let paths = Paths::from_root("/srv/storage/atocore");
//! let meta = snapshot::backup(&paths, &BackupOptions::default(), BackupHooks::default())?;
//! println!("{}", meta.stamp);
//! # Ok::<(), atocore_restore_job::Error>(())
//! ```

pub(crate) mod chroma;
pub mod config;
pub(crate) mod control;
pub(crate) mod db;
pub(crate) mod durable;
pub mod error;
pub(crate) mod faults;
pub mod init;
pub mod layout;
pub mod logging;
pub(crate) mod manifest;
pub mod metadata;
pub mod offsite;
pub mod prune;
pub mod restore;
pub mod retention;
pub mod sample;
pub mod snapshot;
pub mod stamp;
pub mod validate;
pub mod wal;

pub use config::{Paths, RetentionArgs, StorageArgs};
pub use db::open_immutable;
pub use durable::BackupLock;
pub use error::{Error, ErrorBody, Result};
pub use metadata::{Kind, Metadata};
pub use restore::{ChromaChoice, RestoreOptions, RestoreReport};
pub use retention::Policy;
pub use snapshot::{BackupHooks, BackupOptions, ListReport, Quiesce};
pub use stamp::Stamp;
pub use validate::ValidationReport;

/// Make glibc's malloc give large buffers back to the system as soon as they are
/// freed. By default its mmap threshold grows to the size of the largest buffer freed
/// so far, after which megabyte-sized buffers (a chunk being packed, an object being
/// uploaded) come from per-thread heaps that are seldom trimmed: an off-site push's
/// resident size then grows to several times the data it holds. Called first by the
/// binaries; a no-op elsewhere than glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; it is called before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
