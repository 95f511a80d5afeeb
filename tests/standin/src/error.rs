//! The stand-in's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the stand-in. Each message names the object and,
/// where there is one, the next step.
#[derive(Debug, thiserror::Error)]
pub enum StandinError {
    /// A setting could not be turned into a usable value.
    #[error("invalid setting {name}: {message}")]
    Config { name: &'static str, message: String },

    /// A file or directory operation failed.
    #[error("{action} `{}`: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A SQLite operation failed.
    #[error("sqlite error on `{}` while {action}: {source}", path.display())]
    Sqlite {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The project registry exists but is not the JSON the stand-in understands.
    #[error("project registry `{}` is not valid JSON ({message}); fix or remove the file", path.display())]
    Registry { path: PathBuf, message: String },

    /// The listening socket could not be bound or accepted on.
    #[error("cannot listen on {addr}: {source}; is another service using the port?")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    /// `healthcheck` could not get a healthy answer.
    #[error("health check of {url} failed: {message}")]
    Unhealthy { url: String, message: String },

    /// A blocking task panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl StandinError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sqlite(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: rusqlite::Error,
    ) -> Self {
        Self::Sqlite {
            action,
            path: path.into(),
            source,
        }
    }
}
