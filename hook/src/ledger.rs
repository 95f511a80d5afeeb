//! The dedup ledger: keys of the prompts already captured.
//!
//! One line per captured prompt piece: `<key> <outbox file name> <RFC 3339 time>`. The key
//! is the first 32 hex digits of SHA-256 over `session_id`, a NUL byte and the piece's
//! identity (its transcript entry `uuid`). Read and appended under the state lock. Only the
//! newest [`KEEP`] lines are kept (rewritten once the file passes [`COMPACT_AT`] lines):
//! repeats, continuations and wake-ups come within minutes of the capture, not thousands
//! of captures later.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::state_dir::write_atomic_nosync;

/// Lines kept after compaction.
pub const KEEP: usize = 2000;
/// Line count that triggers compaction.
pub const COMPACT_AT: usize = 4000;

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Dedup key.
    pub key: String,
    /// The outbox file the capture was written to.
    pub file: String,
}

/// The dedup key of one prompt piece.
pub fn key(session_id: &str, identity: &str) -> String {
    let mut h = Sha256::new();
    h.update(session_id.as_bytes());
    h.update([0u8]);
    h.update(identity.as_bytes());
    let mut k = hex::encode(h.finalize());
    k.truncate(32);
    k
}

/// Reads the ledger (empty when missing). Malformed lines are ignored.
pub fn load(path: &Path) -> Result<Vec<LedgerEntry>> {
    let text = match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read ledger", path, e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let key = parts.next()?;
            let file = parts.next()?;
            (key.len() == 32).then(|| LedgerEntry {
                key: key.to_string(),
                file: file.to_string(),
            })
        })
        .collect())
}

/// Appends entries, compacting the file when it is too long. Call under the state lock.
pub fn append(path: &Path, existing: &[LedgerEntry], new: &[LedgerEntry]) -> Result<()> {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let render = |e: &LedgerEntry| format!("{} {} {now}\n", e.key, e.file);
    if existing.len() + new.len() > COMPACT_AT {
        let all: Vec<&LedgerEntry> = existing.iter().chain(new).collect();
        let keep = &all[all.len().saturating_sub(KEEP)..];
        let text: String = keep.iter().map(|e| render(e)).collect();
        return write_atomic_nosync(path, text.as_bytes());
    }
    let text: String = new.iter().map(render).collect();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("cannot open ledger", path, e))?;
    // Not fsynced: a line lost in an OS crash can only let a turn be captured twice.
    f.write_all(text.as_bytes())
        .map_err(|e| Error::io("cannot append to ledger", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_load_and_compact() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ledger");
        assert!(load(&p).unwrap().is_empty());
        let e = |i: usize| LedgerEntry {
            key: key("s", &i.to_string()),
            file: format!("f{i}.json"),
        };
        append(&p, &[], &[e(0)]).unwrap();
        assert_eq!(load(&p).unwrap(), vec![e(0)]);
        let many: Vec<LedgerEntry> = (1..=COMPACT_AT).map(e).collect();
        append(&p, &load(&p).unwrap(), &many).unwrap();
        let after = load(&p).unwrap();
        assert_eq!(after.len(), KEEP);
        assert_eq!(after.last(), Some(&e(COMPACT_AT)));
    }
}
