//! Test faults: named crash points where a test can make the process kill itself.
//!
//! When `ATOCORE_RESTORE_JOB_CRASH_AT` names a point, the process sends itself SIGKILL
//! there, so tests can crash a restore (or a chroma move, or a finalize) at exact
//! moments and check that the next run finishes the work. Unset in production, a point
//! costs one environment lookup.

/// Kill this process with SIGKILL when `ATOCORE_RESTORE_JOB_CRASH_AT` names `name`.
pub(crate) fn crash_point(name: &str) {
    if std::env::var("ATOCORE_RESTORE_JOB_CRASH_AT").is_ok_and(|v| v == name) {
        tracing::warn!(
            point = name,
            "crash point reached: killing this process (test hook)"
        );
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
