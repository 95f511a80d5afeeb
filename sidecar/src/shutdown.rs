//! Shutdown: SIGTERM (`docker stop`) and SIGINT (a terminal) cancel one token, and the
//! clean-up that runs when work did not finish within the bound.
//!
//! Signals are caught by signal-hook's iterator on a plain thread (no async signal
//! handling needed); the first one cancels the token, later ones are logged and
//! ignored (the bound `ATOCORE_SIDECAR_SHUTDOWN_SECS` already limits how long the exit
//! takes).

use std::fs;

use atocore_restore_job::{Paths, Stamp};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Cancel `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::Internal(format!("cannot install the SIGTERM/SIGINT handler: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if token.is_cancelled() {
                    tracing::warn!(signal = name, "already shutting down; the exit is bounded by ATOCORE_SIDECAR_SHUTDOWN_SECS");
                } else {
                    tracing::info!(signal = name, "shutting down: no new connections, running work is cancelled or finishes");
                    token.cancel();
                }
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start the signal thread: {e}")))?;
    Ok(())
}

/// Remove the hidden `.<STAMP>.partial` folders of a backup this process is abandoning.
///
/// Only call while this process runs the backup (it holds the backups lock, so no other
/// process can be building a snapshot). A folder the backup publishes in the meantime
/// is simply no longer there.
pub fn remove_partials(paths: &Paths) -> Vec<String> {
    let dir = paths.snapshots_dir();
    let mut removed = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return removed;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let is_partial = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
            .is_some_and(|s| Stamp::parse(s).is_ok());
        if is_partial {
            match fs::remove_dir_all(e.path()) {
                Ok(()) => removed.push(name),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    tracing::error!(folder = %name, cause = %err, "could not remove a partial snapshot; the next backup or prune removes it")
                }
            }
        }
    }
    removed
}
