//! Chroma quiesce: the engine's [`Quiesce`] hook, implemented by pausing the atocore
//! container through Docker for the length of the chroma copy.
//!
//! It runs on the blocking thread of a backup and drives the async Docker client with
//! the runtime's [`Handle`]. Whatever happens, a container this sidecar paused is
//! unpaused: by the engine (it calls [`Quiesce::resume`] once after a successful pause),
//! by this type's `Drop` (a panic), and by [`PauseFlag::unpause_if_paused`] on shutdown.
//!
//! | what Docker says on pause | result |
//! |---|---|
//! | paused | `true`; unpaused after the copy |
//! | already paused (by someone else) | `true`; left paused as found |
//! | not running | `true` (nothing writes); nothing to undo |
//! | no such container, engine unreachable, other errors | `false`: copied unquiesced |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use atocore_restore_job::Quiesce;
use tokio::runtime::Handle;

use crate::docker::{Docker, Target};
use crate::error::Error;

/// Set while this sidecar holds the atocore container paused.
#[derive(Debug, Default)]
pub struct PauseFlag(AtomicBool);

impl PauseFlag {
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Unpause atocore if this sidecar paused it and did not undo that yet (shutdown path).
    pub async fn unpause_if_paused(&self, docker: &Docker) {
        if !self.is_set() {
            return;
        }
        match unpause_with_retries(docker).await {
            Ok(()) => {
                self.0.store(false, Ordering::SeqCst);
                tracing::warn!(
                    container = docker.name(Target::Atocore),
                    "unpaused the atocore container left paused by an interrupted backup"
                );
            }
            Err(e) => tracing::error!(
                container = docker.name(Target::Atocore),
                cause = %e,
                "could not unpause the atocore container; run `docker unpause {}`",
                docker.name(Target::Atocore)
            ),
        }
    }
}

async fn unpause_with_retries(docker: &Docker) -> Result<(), Error> {
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match docker.unpause(Target::Atocore).await {
            Ok(()) => return Ok(()),
            // 409 "is not paused": someone else already unpaused it.
            Err(Error::Docker { status: 409, .. }) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::Internal("unpause retries".into())))
}

/// The [`Quiesce`] handed to [`atocore_restore_job::snapshot::backup`].
pub struct DockerQuiesce {
    docker: Arc<Docker>,
    flag: Arc<PauseFlag>,
    handle: Handle,
    /// This instance paused the container and has not unpaused it yet.
    holding: bool,
}

impl DockerQuiesce {
    /// Must be created on (or with a handle to) the runtime that owns `docker`.
    pub fn new(docker: Arc<Docker>, flag: Arc<PauseFlag>, handle: Handle) -> DockerQuiesce {
        DockerQuiesce {
            docker,
            flag,
            handle,
            holding: false,
        }
    }

    fn release(&mut self) {
        if !self.holding {
            return;
        }
        let docker = Arc::clone(&self.docker);
        let started = std::time::Instant::now();
        match self.handle.block_on(unpause_with_retries(&docker)) {
            Ok(()) => {
                self.holding = false;
                self.flag.0.store(false, Ordering::SeqCst);
                tracing::info!(
                    container = docker.name(Target::Atocore),
                    unpause_ms = started.elapsed().as_millis() as u64,
                    "atocore unpaused after the chroma copy"
                );
            }
            Err(e) => tracing::error!(
                container = docker.name(Target::Atocore),
                cause = %e,
                "could not unpause atocore after the chroma copy; the sidecar retries on shutdown, or run `docker unpause {}`",
                docker.name(Target::Atocore)
            ),
        }
    }
}

impl Quiesce for DockerQuiesce {
    fn pause(&mut self) -> bool {
        let docker = Arc::clone(&self.docker);
        let name = docker.name(Target::Atocore).to_string();
        let outcome = self.handle.block_on(async {
            match docker.pause(Target::Atocore).await {
                Ok(()) => Ok(true),
                Err(Error::Docker {
                    status: 409,
                    message,
                    ..
                }) => {
                    // Either paused already or not running: both are quiet.
                    match docker.inspect(Target::Atocore).await {
                        Ok(s) if s.paused || !s.running => Ok(false),
                        Ok(_) => Err(Error::Docker {
                            op: "pause",
                            container: name.clone(),
                            status: 409,
                            message,
                        }),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            }
        });
        match outcome {
            Ok(true) => {
                self.holding = true;
                self.flag.0.store(true, Ordering::SeqCst);
                tracing::info!(container = %name, "atocore paused for the chroma copy");
                true
            }
            Ok(false) => {
                tracing::info!(container = %name, "atocore is not running or already paused: chroma is quiet, copying without pausing");
                true
            }
            Err(e) => {
                tracing::warn!(container = %name, cause = %e, "cannot pause atocore: chroma is copied unquiesced (chroma_quiesced: false)");
                false
            }
        }
    }

    fn resume(&mut self) {
        self.release();
    }
}

impl Drop for DockerQuiesce {
    fn drop(&mut self) {
        // Only reached with `holding` set if the engine never called resume (a panic).
        self.release();
    }
}
