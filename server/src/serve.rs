//! Serving an [`App`] with the contract's shutdown sequence (PROTOCOL.md §5, "Start and
//! stop"): when the shutdown signal comes, readiness turns 503, the listener stops accepting,
//! every client gets `health_status` `{"status":"shutting_down"}` then close 1001, and
//! [`serve`] returns within the hub's `shutdown_grace`, even if clients stopped reading.
//!
//! [`serve`] runs its own small hyper accept loop rather than `axum::serve`, so that it can
//! bound what each HTTP connection may cost (PROTOCOL.md §3, "HTTP limits"; see
//! `accept_loop`): the time to send a request head, the head's size, and how many
//! connections are served at once.

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest request head (request line and headers) a connection may send: 64 KiB,
/// accepted exactly. A larger one is answered 431 and the connection closed. It is also the
/// most a connection buffers for reading, so 1024 connections hold at most 64 MiB of it.
pub const MAX_REQUEST_HEAD: usize = 64 << 10;

/// The most header fields a request may have (hyper's default, made explicit); more is 431.
pub const MAX_HEADERS: usize = 100;

/// While accepting keeps failing (out of file descriptors, typically), at most one log line
/// per this interval, counting the failures it did not report.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

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

/// The HTTP/1 accept loop, in place of `axum::serve`, which cannot bound what a connection
/// costs. Here:
///
/// - **Time.** Every connection gets the smaller of the hub's `handshake_timeout` and the
///   app's request timeout to send each request head (the first, and the next one on a
///   kept-alive connection); hyper closes it otherwise. (`axum::serve` installs no hyper
///   `Timer`, so `header_read_timeout` never fires there: tokio-rs/axum#2741.) The body is
///   bounded by the `deadline` middleware.
/// - **Size.** A request head over [`MAX_REQUEST_HEAD`] bytes or [`MAX_HEADERS`] fields is
///   answered 431 by hyper, and the connection closed.
/// - **Count.** The loop takes a permit of the app's `max_http_connections` before it
///   accepts; when none is left, new connections wait in the kernel's accept queue (and
///   beyond its backlog, the kernel refuses them). A connection gives its permit back when it
///   ends, or when it is upgraded to a WebSocket: from its `101` on, the hub's
///   `max_connections` counts it instead.
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
    let head_timeout = app
        .hub()
        .config()
        .handshake_timeout()
        .min(app.state().request_timeout());
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_header_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS);
    let slots = app.state().http_slots().clone();
    let mut accept_errors = AcceptErrorLog::default();
    // Every connection task holds a receiver: `closing.closed()` resolves when all are gone.
    let (closing, open) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.free() => permit,
            () = &mut stop => break,
        };
        let (tcp, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    accept_errors.succeeded(Instant::now().into_std());
                    accepted
                }
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    accept_errors.failed(&e, Instant::now().into_std());
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let slot = slots.occupy(permit);
        serve_connection(&http, router.clone(), tcp, remote, open.clone(), slot);
    }
    drop(listener);
    drop(open);
    let _ = closing.send(true);
    closing.closed().await;
    Ok(())
}

/// The HTTP connections the accept loop may serve at once (`max_http_connections`), and how
/// many it serves now.
#[derive(Debug)]
pub(crate) struct HttpSlots {
    permits: Arc<Semaphore>,
    /// Connections holding a slot (the loop also holds a permit while it waits to accept).
    open: AtomicUsize,
}

/// One connection's slot, given back when it is dropped.
struct HttpSlot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<HttpSlots>,
}

impl HttpSlots {
    /// `max` slots, at least one.
    pub(crate) fn new(max: usize) -> HttpSlots {
        HttpSlots {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            open: AtomicUsize::new(0),
        }
    }

    /// Connections being served now.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Waits for a free slot.
    async fn free(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so a permit always comes.
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore stays open")
    }

    /// Gives the slot of `permit` to an accepted connection.
    fn occupy(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> HttpSlot {
        self.open.fetch_add(1, Ordering::Relaxed);
        HttpSlot {
            _permit: permit,
            slots: self.clone(),
        }
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Rate-limits the accept loop's log lines: while accepting fails again and again (out of
/// file descriptors, a line every [`ACCEPT_ERROR_PAUSE`] otherwise), one line at the first
/// failure, then at most one per [`ACCEPT_ERROR_LOG_INTERVAL`] with the number of failures
/// in between. Pure: the caller passes the time.
#[derive(Debug, Default)]
struct AcceptErrorLog {
    /// When the last line was written.
    last_line: Option<std::time::Instant>,
    /// Failures since the last line that no line has reported.
    unreported: u64,
}

/// What the accept loop should log now.
#[derive(Debug, PartialEq, Eq)]
enum AcceptLogLine {
    /// A failure, after `unreported` earlier ones that were not logged.
    Failed { unreported: u64 },
    /// Accepting works again after `unreported` failures that were not logged.
    Recovered { unreported: u64 },
}

impl AcceptErrorLog {
    fn failed(&mut self, error: &io::Error, now: std::time::Instant) {
        if let Some(AcceptLogLine::Failed { unreported }) = self.on_failure(now) {
            tracing::warn!(
                %error,
                earlier_failures_not_logged = unreported,
                "accepting a connection failed; pausing (logged at most every {}s)",
                ACCEPT_ERROR_LOG_INTERVAL.as_secs()
            );
        }
    }

    fn succeeded(&mut self, now: std::time::Instant) {
        if let Some(AcceptLogLine::Recovered { unreported }) = self.on_success(now) {
            tracing::info!(
                failures_not_logged = unreported,
                "accepting connections again"
            );
        }
    }

    fn on_failure(&mut self, now: std::time::Instant) -> Option<AcceptLogLine> {
        if self.may_log(now) {
            self.last_line = Some(now);
            Some(AcceptLogLine::Failed {
                unreported: std::mem::take(&mut self.unreported),
            })
        } else {
            self.unreported += 1;
            None
        }
    }

    fn on_success(&mut self, now: std::time::Instant) -> Option<AcceptLogLine> {
        if self.unreported == 0 || !self.may_log(now) {
            return None;
        }
        self.last_line = Some(now);
        Some(AcceptLogLine::Recovered {
            unreported: std::mem::take(&mut self.unreported),
        })
    }

    fn may_log(&self, now: std::time::Instant) -> bool {
        self.last_line
            .is_none_or(|at| now.saturating_duration_since(at) >= ACCEPT_ERROR_LOG_INTERVAL)
    }
}

/// Serves one accepted connection in a task of its own: `router` over hyper's HTTP/1, with
/// upgrades, until the client closes it, it breaks or times out, it is upgraded, or `closing`
/// turns true (then it finishes its request in flight and closes). `slot` is held until
/// then.
fn serve_connection(
    http: &http1::Builder,
    router: Router,
    tcp: TcpStream,
    remote: SocketAddr,
    mut closing: watch::Receiver<bool>,
    slot: HttpSlot,
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
        // The connection is over, or upgraded: the hyper future resolves once it has handed
        // the stream to the upgrade, and a WebSocket no longer counts as an HTTP connection.
        drop(slot);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_failures_are_logged_once_per_interval_with_a_count() {
        let start = std::time::Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut log = AcceptErrorLog::default();
        assert_eq!(
            log.on_failure(at(0)),
            Some(AcceptLogLine::Failed { unreported: 0 })
        );
        // Out of descriptors: a failure every 100 ms, none of them logged...
        for ms in (100..10_000).step_by(100) {
            assert_eq!(log.on_failure(at(ms)), None, "{ms} ms");
        }
        // ...until the interval has passed; that line counts them.
        assert_eq!(
            log.on_failure(at(10_000)),
            Some(AcceptLogLine::Failed { unreported: 99 })
        );
        assert_eq!(log.on_failure(at(10_100)), None);
        // Accepting again: reported at once only if the interval allows it.
        assert_eq!(log.on_success(at(10_200)), None);
        assert_eq!(
            log.on_success(at(20_000)),
            Some(AcceptLogLine::Recovered { unreported: 1 })
        );
        // Nothing unreported, nothing to say.
        assert_eq!(log.on_success(at(40_000)), None);
        assert_eq!(
            log.on_failure(at(40_100)),
            Some(AcceptLogLine::Failed { unreported: 0 })
        );
    }

    #[test]
    fn alternating_failures_and_successes_do_not_flood_the_log() {
        let start = std::time::Instant::now();
        let mut log = AcceptErrorLog::default();
        let mut lines = 0;
        for step in 0..2000u64 {
            let now = start + Duration::from_millis(step * 10);
            let line = if step % 2 == 0 {
                log.on_failure(now)
            } else {
                log.on_success(now)
            };
            lines += usize::from(line.is_some());
        }
        // 20 s of it: the first line, and one when the interval has passed.
        assert_eq!(lines, 2);
    }
}
