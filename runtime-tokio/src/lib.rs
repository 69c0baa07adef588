//! ferret-ws on tokio: serve real WebSocket clients with the sans-IO hub of
//! [`ferret_ws_core`].
//!
//! All the async glue (hub task, the task of each connection, handshake) lives in
//! [`ferret_ws_runtime`], shared with `ferret-ws-async-std` and re-exported here; this crate
//! only supplies what tokio does differently: spawning, the clock and timers ([`Tokio`]),
//! and its TCP and IO types.
//!
//! # Example
//!
//! A standalone server on `127.0.0.1:8765/ws` that publishes an event every second and
//! shuts down gracefully on Ctrl-C (the `signal` feature of tokio):
//!
//! ```no_run
//! use std::time::Duration;
//! use ferret_ws_tokio::core::{Event, EventType, HubConfig};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let hub = ferret_ws_tokio::start(HubConfig::builder().build()?);
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8765").await?;
//!     let server = tokio::spawn(ferret_ws_tokio::serve(listener, hub.clone()));
//!
//!     let publisher = hub.clone();
//!     tokio::spawn(async move {
//!         loop {
//!             tokio::time::sleep(Duration::from_secs(1)).await;
//!             let event = Event::new(EventType::new("tick").expect("valid name"));
//!             if publisher.publish(event).await.is_err() {
//!                 break; // shutting down
//!             }
//!         }
//!     });
//!
//!     tokio::signal::ctrl_c().await?;
//!     hub.shutdown().await; // health_status + close 1001 to everyone, within shutdown_grace
//!     server.await??;
//!     Ok(())
//! }
//! ```
//!
//! Behind a host framework that does the HTTP upgrade itself (hyper, axum), call
//! [`HubHandle::admit`] in the `/ws` handler and answer a [`Admission::Refuse`] with its HTTP
//! status; for [`Admission::Accept`], [`HubHandle::register`] the ticket, answer
//! `101 Switching Protocols` and hand the upgraded stream to [`serve_registered`]; for
//! [`Admission::Reject`], answer 101 and hand it to [`serve_upgraded`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

pub use ferret_ws_core as core;
pub use ferret_ws_runtime::*;

use ferret_ws_core::{Epoch, HubConfig};

/// The tokio [`Runtime`]: `tokio::spawn`, tokio's clock (so that paused-time tests work) and
/// its timers. Must be used from within a tokio runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tokio;

impl Runtime for Tokio {
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline.into())
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(future);
    }
}

/// Starts a hub with `config` and a random epoch; spawns its task on the current tokio
/// runtime.
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn start(config: HubConfig) -> HubHandle {
    start_on(Tokio, config)
}

/// As [`start`], with an epoch chosen by the caller (fresh for every start).
pub fn start_with_epoch(config: HubConfig, epoch: Epoch) -> HubHandle {
    start_with_epoch_on(Tokio, config, epoch)
}

/// Starts a hub fed by an external ordered log (a cluster's stream): see
/// [`start_external_on`]. It asks for older events on `fetches`.
pub fn start_external(
    config: HubConfig,
    epoch: Epoch,
    fetches: futures::channel::mpsc::UnboundedSender<FetchRequest>,
) -> HubHandle {
    start_external_on(Tokio, config, epoch, fetches)
}

/// Serves `/ws` on `listener` until the hub has finished shutting down
/// ([`HubHandle::shutdown`]), then returns.
///
/// Each connection gets the handshake (HTTP 403/429/503 before upgrading, 4400/4401 as a
/// close frame after it; an accepted one is registered before its 101), then one task that
/// reads and writes it.
pub async fn serve(listener: TcpListener, hub: HubHandle) -> io::Result<()> {
    let port = listener.local_addr()?.port();
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, peer)| {
            // Small frames must not wait for Nagle's algorithm; failing to set it is harmless.
            let _ = stream.set_nodelay(true);
            (Io(stream), Some(peer.ip()))
        });
        Some((accepted, listener))
    });
    serve_incoming_on(Tokio, hub, Some(port), Box::pin(incoming)).await
}

/// Serves a connection that a host framework has already upgraded (for axum:
/// `hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>`) after it [registered](HubHandle::register)
/// the connection, before sending the 101. Serves it in this task until it ends.
pub async fn serve_registered<S>(hub: &HubHandle, stream: S, registration: Registration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_registered_on(&Tokio, hub, Io(stream), registration).await;
}

/// Serves a connection that a host framework has already upgraded (for axum:
/// `hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>`), with the [`Admission`] that
/// [`HubHandle::admit`] gave for its request.
///
/// For [`Admission::Reject`] it sends the close frame and ends; for [`Admission::Accept`] it
/// registers the connection and serves it in this task until it ends.
pub async fn serve_upgraded<S>(hub: &HubHandle, stream: S, admission: Admission)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_upgraded_on(&Tokio, hub, Io(stream), admission).await;
}

/// A tokio stream seen through the `futures` IO traits that the shared glue is written
/// against. Unlike async-tungstenite's `TokioAdapter`, it passes vectored writes through, so
/// that a connection's queued frames go out in one `writev`.
struct Io<T>(T);

impl<T: AsyncRead + Unpin> futures::io::AsyncRead for Io<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut buf = ReadBuf::new(buf);
        match Pin::new(&mut self.get_mut().0).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> futures::io::AsyncWrite for Io<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
