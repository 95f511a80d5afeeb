//! The crate's one error type.
//!
//! Rules: every public function returns [`Error`]; each message names the object it is
//! about (a path, a URL, a setting) and, where there is one, the next step for the person
//! reading it. In hook mode no error ever reaches Claude Code: they are logged and the
//! process exits 0 (see [`crate::capture`]).

use std::path::PathBuf;

/// Everything that can go wrong in `atocore-capture`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory operation failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        /// What was being done, e.g. "cannot create outbox directory".
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// The hook's standard input was not the Stop hook JSON.
    #[error("stdin is not a Claude Code hook event: {0}; nothing captured")]
    BadInput(String),

    /// A JSON file (settings.json, status.json, a projects map) could not be parsed.
    #[error("`{}` is not valid JSON ({source}); {hint}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// The parser's error, with line and column.
        source: serde_json::Error,
        /// What to do about it.
        hint: &'static str,
    },

    /// settings.json parses but does not have the shape Claude Code uses.
    #[error("`{}`: {what}; fix that part of the file by hand, or pass --settings to another file", path.display())]
    BadSettings {
        /// The settings file.
        path: PathBuf,
        /// Which part is wrong, e.g. "`hooks.Stop` is not an array".
        what: String,
    },

    /// A setting (environment variable or flag) has an unusable value.
    #[error("{name}={value:?} is not valid: {why}")]
    BadSetting {
        /// The variable or flag name.
        name: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused and what is expected.
        why: String,
    },

    /// A lock on the state directory could not be taken before the deadline.
    #[error("lock `{}` is held by another atocore-capture process; try again in a moment", path.display())]
    LockBusy {
        /// The lock file.
        path: PathBuf,
    },

    /// The AtoCore service could not be reached or timed out.
    #[error(
        "POST {url} failed: {reason}; the capture stays in the outbox and is retried on the next run (is AtoCore running? check ATOCORE_URL)"
    )]
    Unreachable {
        /// The full URL.
        url: String,
        /// The transport error.
        reason: String,
    },

    /// The AtoCore service answered with a status that is worth retrying (408, 429, 5xx, 3xx).
    #[error(
        "POST {url} answered HTTP {status}; the capture stays in the outbox and is retried on the next run"
    )]
    Retryable {
        /// The full URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },

    /// The AtoCore service refused the capture for good (a 4xx other than 408 and 429).
    #[error(
        "POST {url} answered HTTP {status} ({body}); the capture was moved to the dead-letter folder, see `atocore-capture status`"
    )]
    Rejected {
        /// The full URL.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body.
        body: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
