//! The HTTP server loop (hyper 1.x, HTTP/1.1): accepts on an already-bound listener,
//! runs the background heartbeat writer, and on shutdown drains connections (bounded),
//! stops the writer and closes the database.

use std::future::Future;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::api;
use crate::error::StandinError;
use crate::service::Service;

/// How long open connections may take to finish once shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves `service` on `listener` until `shutdown` completes, then closes cleanly.
pub async fn run(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StandinError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, "atocore-standin listening (a stand-in for the AtoCore service, not the real one)");

    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat(service.clone(), stop_rx));

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::warn!(cause = %e, "failed to accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let service = service.clone();
                let conn = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(move |req| api::handle(req, service.clone())));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, cause = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing anyway");
    }
    let _ = stop_tx.send(true);
    let _ = heartbeat.await;
    service.close()?;
    tracing::info!("database closed; bye");
    Ok(())
}

async fn heartbeat(service: Service, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(service.config().heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = service.beat().await {
                    tracing::warn!(cause = %e, "heartbeat write failed");
                }
            }
            _ = stop.changed() => return,
        }
    }
}
