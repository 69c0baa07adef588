//! Serving an [`App`] with the contract's shutdown sequence (CONTRACT.md §5, "Start and
//! stop"): when the shutdown signal comes, readiness turns 503, the listener stops accepting,
//! every client gets `health_status` `{"status":"shutting_down"}` then close 1001, and
//! [`serve`] returns within the hub's `shutdown_grace`, even if clients stopped reading.

use std::future::{Future, IntoFuture};
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::app::App;
use crate::ws::ConnInfo;

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down as described in the
/// module docs. Returns an error only if the server stopped by itself.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let grace = app.hub().config().shutdown_grace();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let service = app
        .router()
        .into_make_service_with_connect_info::<ConnInfo>();
    let server = axum::serve(NoDelay(listener), service).with_graceful_shutdown(async move {
        // A dropped sender also means stop.
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(server.into_future());
    tokio::select! {
        ended = &mut server => {
            return ended.unwrap_or_else(|e| Err(io::Error::other(format!("server task failed: {e}"))));
        }
        () = shutdown => {}
    }
    // Keep a little of the grace for the process to exit after this returns.
    let deadline =
        Instant::now() + grace.saturating_sub((grace / 20).min(Duration::from_millis(250)));
    tracing::info!(grace = ?grace, "shutting down");
    let _ = stop_tx.send(());
    if tokio::time::timeout_at(deadline, app.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("shutdown grace ended with clients still connected");
    }
    if tokio::time::timeout_at(deadline, &mut server)
        .await
        .is_err()
    {
        tracing::debug!("shutdown grace ended with HTTP requests in flight");
        server.abort();
    }
    Ok(())
}

/// A TCP listener that sends small frames at once: Nagle's algorithm is turned off on every
/// connection it accepts (events are small frames that should not wait for more data).
pub(crate) struct NoDelay(pub(crate) TcpListener);

impl Listener for NoDelay {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        // axum's accept retries the errors of single connections and pauses on the others.
        let (tcp, remote) = Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        (tcp, remote)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// Resolves at the first SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is
/// called, so a signal that arrives before the future is polled is not lost.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        })
    }
}
