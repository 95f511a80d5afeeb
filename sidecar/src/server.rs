//! The server loop: accepts on an already-bound listener, serves HTTP/1.1 with hyper,
//! runs the schedule, and on shutdown drains everything within a bound.
//!
//! - At most `ATOCORE_SIDECAR_MAX_CONNECTIONS` connections are served at once (a
//!   semaphore); one more gets an immediate `503 too_many_connections` and is closed.
//! - A client must send its headers within `ATOCORE_SIDECAR_HEADER_TIMEOUT_MS` (this
//!   also closes idle keep-alive connections) and its body within
//!   `ATOCORE_SIDECAR_BODY_TIMEOUT_MS`.
//! - A request answered without its body read in full (413, or refused from its
//!   headers) gets `connection: close`, and the rest of the body is read and thrown
//!   away for a bounded size and time ([`crate::json::finish`]): closing a socket with
//!   unread data resets it, and a client still writing its body would lose the answer.
//! - HTTP/1.1 only: an admin API has no use for HTTP/2, and h2c would bypass the
//!   header timeout.
//!
//! Shutdown, when `shutdown` completes: stop accepting; cancel the state's token (a
//! running backup stops at its next step and removes its partial folder; the schedule
//! stops); let open requests finish; wait for blocking work; unpause atocore if this
//! sidecar still holds it paused. All of it within `ATOCORE_SIDECAR_SHUTDOWN_SECS`;
//! past the bound, the partial folder of an abandoned backup is removed here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::Result;
use crate::scheduler::{self, SystemClock};
use crate::state::State;
use crate::{routes, shutdown as cleanup};

/// Serve on `listener` until `shutdown` completes, then drain (bounded) and return.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(
        %addr,
        auth = state.config.token.is_some(),
        storage_root = %state.config.paths.storage_root.display(),
        backup_dir = %state.config.paths.backup_dir.display(),
        "atocore-sidecar listening"
    );
    tokio::spawn(crate::leftover::finish_orphaned_pre_restore(Arc::clone(
        &state,
    )));
    let schedule = state
        .config
        .schedule
        .is_some()
        .then(|| tokio::spawn(scheduler::run(Arc::clone(&state), Arc::new(SystemClock))));
    let wal = state.config.wal.clone().map(|w| {
        let every = w.offsite_every;
        let offsite = state.config.offsite.clone().map(|o| {
            state
                .wal
                .spawn_offsite(state.config.paths.clone(), o, every)
        });
        (state.wal.spawn(state.config.paths.clone(), w), offsite)
    });

    let permits = Arc::new(Semaphore::new(state.config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_timeout)
        .max_buf_size(64 * 1024);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(cause = %e, "failed to accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::warn!(%peer, max = state.config.max_connections, "too many connections; refusing one");
                    tokio::spawn(refuse(stream));
                    continue;
                };
                let st = Arc::clone(&state);
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| routes::handle(req, Arc::clone(&st))),
                );
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, cause = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            () = &mut shutdown => break,
            () = state.shutdown.cancelled() => break,
        }
    }
    drop(listener);
    state.wal.stop();
    drain(&state, graceful).await;
    if let Some(s) = schedule {
        s.abort();
    }
    // The stream thread lets go of the database before the process ends; an off-site
    // WAL push in flight is not waited for (the next start pushes what it missed).
    if let Some((w, _offsite)) = wal {
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
    Ok(())
}

/// The bounded shutdown sequence.
async fn drain(state: &Arc<State>, graceful: GracefulShutdown) {
    let bound = state.config.shutdown_timeout;
    let deadline = Instant::now() + bound;
    state.shutdown.cancel();
    tracing::info!(bound_secs = bound.as_secs(), running = ?state.gate.running().map(|r| r.operation), "draining");
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open at the shutdown bound; closing them");
    }
    state.tasks.close();
    if tokio::time::timeout_at(deadline, state.tasks.wait())
        .await
        .is_err()
    {
        let running = state.gate.running();
        tracing::error!(
            running = ?running.as_ref().map(|r| r.operation),
            "work still running at the shutdown bound; abandoning it"
        );
        if running.is_some_and(|r| r.operation == "backup") {
            let removed = cleanup::remove_partials(&state.config.paths);
            tracing::warn!(?removed, "removed the abandoned backup's partial folder");
        }
    }
    // Whatever happened above: never leave atocore paused.
    let unpause = state.paused.unpause_if_paused(&state.docker);
    if tokio::time::timeout(Duration::from_secs(5), unpause)
        .await
        .is_err()
    {
        tracing::error!(
            "could not unpause atocore in time; run `docker unpause {}`",
            state.config.atocore_container
        );
    }
    tracing::info!("sidecar stopped");
}

/// Answer a connection over the cap with a 503 and close it.
async fn refuse(mut stream: TcpStream) {
    let body = br#"{"error":"too_many_connections","message":"the sidecar serves a limited number of connections at once (ATOCORE_SIDECAR_MAX_CONNECTIONS); retry shortly"}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        // Read what the client sent first, so closing does not reset the connection
        // before it reads the answer.
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        stream.shutdown().await
    })
    .await;
}
