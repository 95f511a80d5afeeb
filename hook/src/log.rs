//! Diagnostics: one line per event to stderr and to `capture.log` in the state directory.
//!
//! Never fails and never panics: a closed stderr or an unwritable log is ignored. The log is
//! rotated to `capture.log.1` past 1 MiB.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Log file name inside the state directory.
pub const LOG_FILE: &str = "capture.log";
/// Size at which the log is rotated.
pub const LOG_MAX_BYTES: u64 = 1024 * 1024;

/// Where diagnostics go.
#[derive(Debug, Default)]
pub struct Log {
    file: Option<PathBuf>,
    quiet_stderr: bool,
}

impl Log {
    /// Logs to stderr only.
    pub fn stderr() -> Self {
        Log::default()
    }

    /// Also appends to `<dir>/capture.log` (when `dir` exists).
    pub fn with_dir(mut self, dir: &Path) -> Self {
        self.file = Some(dir.join(LOG_FILE));
        self
    }

    /// Stops writing to stderr (the log file still gets everything).
    pub fn quiet(mut self) -> Self {
        self.quiet_stderr = true;
        self
    }

    /// Writes one line: `<RFC 3339 time> atocore-capture[<pid>] <level>: <message>`.
    pub fn line(&self, level: &str, message: &str) {
        let line = format!(
            "{} atocore-capture[{}] {level}: {}\n",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            std::process::id(),
            message.replace('\n', " ")
        );
        if !self.quiet_stderr {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        if let Some(path) = &self.file
            && path.parent().is_some_and(Path::is_dir)
        {
            if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) > LOG_MAX_BYTES {
                let _ = std::fs::rename(path, path.with_extension("log.1"));
            }
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }

    /// An informational line.
    pub fn info(&self, message: &str) {
        self.line("info", message);
    }

    /// A problem that did not stop the run.
    pub fn warn(&self, message: &str) {
        self.line("warn", message);
    }

    /// A problem that stopped part of the run.
    pub fn error(&self, message: &str) {
        self.line("error", message);
    }
}
