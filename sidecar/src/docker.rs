//! The sidecar's only door to the Docker Engine, and its allowlist.
//!
//! Calls (the allowlist of docs/design.md §1), nothing else: `GET /_ping`, `GET /version`, and on the two named
//! containers only ([`Target`]: `ATOCORE_CONTAINER`, `ATOCORE_RESTORE_CONTAINER`)
//! `GET /containers/<name>/json` (inspect), `POST .../stop`, `.../start`, `.../pause`,
//! `.../unpause`, `.../wait`, `GET .../logs`. A container name never comes from a
//! request: callers pick a [`Target`] and the name comes from the settings, so a socket
//! proxy in front of Docker can allow exactly these paths.
//!
//! The client connects lazily and negotiates the API version on first use (the engine
//! here speaks 1.41, older than bollard's default); a failed negotiation is retried on
//! the next call. Errors: the engine not answering is [`Error::DockerUnreachable`]; an
//! HTTP error from the engine is [`Error::Docker`] with its status (404 no such container,
//! 409 already paused / not running, ...).

use std::time::{Duration, Instant};

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    InspectContainerOptions, LogsOptions, StartContainerOptions, StopContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::OnceCell;

use crate::error::{Error, Result};

/// One of the two containers the sidecar may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `ATOCORE_CONTAINER`: the service (paused for chroma copies, stopped for restores).
    Atocore,
    /// `ATOCORE_RESTORE_CONTAINER`: the restore-job (init) container.
    RestoreJob,
}

/// What the sidecar needs to know about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerStatus {
    /// Docker's state: created, running, paused, restarting, exited, dead.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub exit_code: Option<i64>,
    /// Health status when the image has a HEALTHCHECK: starting, healthy, unhealthy.
    pub health: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// A Docker Engine client restricted to the allowlist.
#[derive(Debug)]
pub struct Docker {
    host: String,
    timeout: Duration,
    atocore: String,
    restore_job: String,
    client: OnceCell<bollard::Docker>,
    reach: tokio::sync::Mutex<Option<(Instant, Reachability)>>,
}

/// Whether the engine answered a recent ping (cached for [`REACH_TTL`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reachability {
    pub reachable: bool,
    /// The engine's version when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How long a [`Docker::reachability`] answer is reused.
pub const REACH_TTL: Duration = Duration::from_secs(10);

impl Docker {
    /// A client for the engine at `host` (`unix:///var/run/docker.sock`), touching only
    /// the containers `atocore` and `restore_job`. Does not connect yet.
    pub fn new(host: &str, timeout: Duration, atocore: &str, restore_job: &str) -> Docker {
        Docker {
            host: host.to_string(),
            timeout,
            atocore: atocore.to_string(),
            restore_job: restore_job.to_string(),
            client: OnceCell::new(),
            reach: tokio::sync::Mutex::new(None),
        }
    }

    /// Whether the engine answers (`/version` within 2 s), cached for [`REACH_TTL`].
    pub async fn reachability(&self) -> Reachability {
        let mut slot = self.reach.lock().await;
        if let Some((at, r)) = slot.as_ref()
            && at.elapsed() < REACH_TTL
        {
            return r.clone();
        }
        let r = match tokio::time::timeout(Duration::from_secs(2), self.version()).await {
            Ok(Ok(v)) => Reachability {
                reachable: true,
                version: Some(v),
                error: None,
            },
            Ok(Err(e)) => Reachability {
                reachable: false,
                version: None,
                error: Some(e.to_string()),
            },
            Err(_) => Reachability {
                reachable: false,
                version: None,
                error: Some(format!("{} did not answer within 2 s", self.host)),
            },
        };
        *slot = Some((Instant::now(), r.clone()));
        r
    }

    /// The container name behind a target.
    pub fn name(&self, t: Target) -> &str {
        match t {
            Target::Atocore => &self.atocore,
            Target::RestoreJob => &self.restore_job,
        }
    }

    async fn client(&self) -> Result<&bollard::Docker> {
        self.client
            .get_or_try_init(|| async {
                let secs = self.timeout.as_secs().max(1);
                let c = if let Some(path) = self.host.strip_prefix("unix://") {
                    bollard::Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION)
                } else {
                    bollard::Docker::connect_with_http(
                        &self.host,
                        secs,
                        bollard::API_DEFAULT_VERSION,
                    )
                }
                .map_err(|e| Error::DockerUnreachable(format!("{}: {e}", self.host)))?;
                c.negotiate_version()
                    .await
                    .map_err(|e| Error::DockerUnreachable(format!("{}: {e}", self.host)))
            })
            .await
    }

    fn map(&self, op: &'static str, t: Option<Target>) -> impl FnOnce(BollardError) -> Error {
        let container = t.map(|t| self.name(t).to_string()).unwrap_or_default();
        let host = self.host.clone();
        move |e| match e {
            BollardError::DockerResponseServerError {
                status_code,
                message,
            } => Error::Docker {
                op,
                container,
                status: status_code,
                message,
            },
            other => Error::DockerUnreachable(format!("{host}: {other}")),
        }
    }

    /// `GET /_ping`.
    pub async fn ping(&self) -> Result<()> {
        let c = self.client().await?;
        c.ping().await.map_err(self.map("ping", None))?;
        Ok(())
    }

    /// `GET /version`: the engine's version string.
    pub async fn version(&self) -> Result<String> {
        let c = self.client().await?;
        let v = c.version().await.map_err(self.map("version", None))?;
        Ok(v.version.unwrap_or_default())
    }

    /// `GET /containers/<name>/json`.
    pub async fn inspect(&self, t: Target) -> Result<ContainerStatus> {
        let c = self.client().await?;
        let r = c
            .inspect_container(self.name(t), None::<InspectContainerOptions>)
            .await
            .map_err(self.map("inspect", Some(t)))?;
        let s = r.state.unwrap_or_default();
        Ok(ContainerStatus {
            status: s.status.map(|v| v.to_string()).unwrap_or_default(),
            running: s.running.unwrap_or(false),
            paused: s.paused.unwrap_or(false),
            exit_code: s.exit_code,
            health: s
                .health
                .and_then(|h| h.status)
                .map(|v| v.to_string())
                .filter(|v| !v.is_empty() && v != "none"),
            started_at: s.started_at,
            finished_at: s.finished_at,
        })
    }

    /// `POST /containers/<name>/stop?t=<grace>`. Stopping a stopped container is fine.
    pub async fn stop(&self, t: Target, grace: Duration) -> Result<()> {
        let c = self.client().await?;
        let opts = StopContainerOptions {
            t: Some(grace.as_secs().min(i32::MAX as u64) as i32),
            signal: None,
        };
        match c.stop_container(self.name(t), Some(opts)).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.map("stop", Some(t))(e)),
        }
    }

    /// `POST /containers/<name>/start`. Starting a running container is fine.
    pub async fn start(&self, t: Target) -> Result<()> {
        let c = self.client().await?;
        match c
            .start_container(self.name(t), None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.map("start", Some(t))(e)),
        }
    }

    /// `POST /containers/<name>/pause`.
    pub async fn pause(&self, t: Target) -> Result<()> {
        let c = self.client().await?;
        c.pause_container(self.name(t))
            .await
            .map_err(self.map("pause", Some(t)))
    }

    /// `POST /containers/<name>/unpause`.
    pub async fn unpause(&self, t: Target) -> Result<()> {
        let c = self.client().await?;
        c.unpause_container(self.name(t))
            .await
            .map_err(self.map("unpause", Some(t)))
    }

    /// `POST /containers/<name>/wait?condition=not-running`: the exit code.
    ///
    /// The engine answers when the container stops; the call's own timeout is the
    /// client's, so callers wrap it in their own deadline (and poll [`Docker::inspect`]
    /// when it errors).
    pub async fn wait(&self, t: Target) -> Result<i64> {
        let c = self.client().await?;
        let mut s = c.wait_container(self.name(t), None::<WaitContainerOptions>);
        match s.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.map("wait for", Some(t))(e)),
            None => Err(Error::Docker {
                op: "wait for",
                container: self.name(t).to_string(),
                status: 0,
                message: "the engine closed the wait without an exit code".into(),
            }),
        }
    }

    /// `GET /containers/<name>/logs?tail=<n>`: stdout and stderr, last `tail` lines.
    pub async fn logs(&self, t: Target, tail: usize) -> Result<String> {
        let c = self.client().await?;
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: tail.to_string(),
            ..Default::default()
        };
        let mut s = c.logs(self.name(t), Some(opts));
        let mut out = String::new();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(self.map("read the logs of", Some(t)))?;
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        Ok(out)
    }
}
