//! Serving an [`App`] with the contract's shutdown sequence (PROTOCOL.md §5, "Start and
//! stop"): when the shutdown signal comes, readiness turns 503, the listener stops accepting,
//! every client gets `health_status` `{"status":"shutting_down"}` then close 1001, and
//! [`serve`] returns within the hub's `shutdown_grace`, even if clients stopped reading.
//!
//! [`serve`] runs its own small hyper accept loop rather than `axum::serve`, only so that a
//! client gets at most the hub's `handshake_timeout` to send a request head (see
//! `accept_loop`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::app::App;
use crate::ws::ConnInfo;
use ferret_ws_tokio::{is_per_connection, ACCEPT_ERROR_PAUSE};

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down as described in the
/// module docs. Returns an error only if the server stopped by itself.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let grace = app.hub().config().shutdown_grace();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = accept_loop(listener, app.clone(), async move {
        // A dropped sender also means stop.
        let _ = stop_rx.await;
    });
    let mut server = tokio::spawn(server);
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

/// The HTTP/1 accept loop, in place of `axum::serve`: that one installs no hyper `Timer`, so
/// hyper's `header_read_timeout` never fires there (tokio-rs/axum#2741), and a client that
/// connects and then dribbles its request head, or never sends it, holds a connection and a
/// task forever. Here every connection gets the hub's `handshake_timeout` to send each
/// request head (the first, and the next one on a kept-alive connection); hyper closes it
/// otherwise.
///
/// Like `axum::serve` with `into_make_service_with_connect_info::<ConnInfo>()`: TCP_NODELAY
/// on every connection, [`ConnectInfo<ConnInfo>`] on every request, upgrades (`/ws`) handed
/// on. When `stop` resolves, the listener is closed at once, every connection finishes the
/// request in flight and closes (idle ones at once), and the loop returns once they all have.
/// Upgraded connections are no longer HTTP: the hub closes them.
async fn accept_loop(
    listener: TcpListener,
    app: App,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let router = app.router();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.hub().config().handshake_timeout());
    // Every connection task holds a receiver: `closing.closed()` resolves when all are gone.
    let (closing, open) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        serve_connection(&http, router.clone(), tcp, remote, open.clone());
    }
    drop(listener);
    drop(open);
    let _ = closing.send(true);
    closing.closed().await;
    Ok(())
}

/// Serves one accepted connection in a task of its own: `router` over hyper's HTTP/1, with
/// upgrades, until the client closes it, it breaks or times out, or `closing` turns true
/// (then it finishes its request in flight and closes).
fn serve_connection(
    http: &http1::Builder,
    router: Router,
    tcp: TcpStream,
    remote: SocketAddr,
    mut closing: watch::Receiver<bool>,
) {
    // Events are small frames that should not wait for more data: no Nagle.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    let info = ConnInfo::of(&tcp, remote);
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(info));
        router.clone().oneshot(request)
    });
    let connection = http
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::spawn(async move {
        let mut connection = std::pin::pin!(connection);
        let ended = tokio::select! {
            ended = connection.as_mut() => ended,
            () = async { let _ = closing.wait_for(|&closing| closing).await; } => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = ended {
            tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
        }
        // `closing` is dropped only now: the accept loop waits for every receiver.
        drop(closing);
    });
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
