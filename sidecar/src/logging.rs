//! Logs: tracing to stderr, JSON when stderr is not a terminal (or as `--log-format`
//! says), filtered by `ATOCORE_LOG` (default `info`). Same setup as the restore job, so
//! both components' lines parse the same way.

pub use atocore_restore_job::logging::LogFormat;

/// Install the global subscriber (call once, from `main`).
pub fn init(format: LogFormat) {
    atocore_restore_job::logging::init_logging(format);
}
