//! SQLite's write-ahead log read from the outside, and the files that keep what was
//! read: the pure part of AtoCore's point-in-time recovery.
//!
//! - [`format`]: the WAL header, frames and their cumulative checksums, the salts that
//!   tell one epoch of the file from the next, and the wal-index header (`-shm`) that
//!   says which frames SQLite counts as committed;
//! - [`segment`]: one look's committed frames as a checked, compressed file;
//! - [`replay`]: frames written as a private copy's `-wal` and checkpointed by SQLite,
//!   which must take every one.
//!
//! Nothing here knows about snapshots, generations or the live service; the engine
//! (`atocore-restore-job`) builds capture and restore on top. Dependencies run one way:
//! `replay` and `segment` use `format`; `format` uses nothing of this crate but
//! [`error`].
//!
//! ```no_run
//! use atocore_wal::format::{scan, WalHeader};
//! let s = scan(std::path::Path::new("copy.db-wal"))?.expect("a WAL with a header");
//! println!("{} committed frames, page size {}", s.frames.len(), s.header.page_size());
//! # Ok::<(), atocore_wal::Error>(())
//! ```

pub mod error;
pub mod format;
pub mod replay;
pub mod segment;

pub use error::{Error, Result};
pub use format::{WalHeader, WalIndex, WalPosition};

/// `<db><suffix>`: the `-wal`, `-shm` or `-journal` file SQLite keeps beside `db`.
pub fn beside(db: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut s = db.as_os_str().to_os_string();
    s.push(suffix);
    std::path::PathBuf::from(s)
}
