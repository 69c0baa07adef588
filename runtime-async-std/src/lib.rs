//! ferret-ws on async-std: serve real WebSocket clients with the sans-IO hub of
//! [`ferret_ws_core`].
//!
//! **async-std is discontinued upstream** ([RUSTSEC-2025-0052]); its successor is smol.
//! This adapter therefore uses only async-tungstenite's runtime-neutral functions (never its
//! deprecated `async_std` module) through the shared glue in [`ferret_ws_runtime`], which is
//! re-exported here. What is async-std specific (spawning, the clock, timers in
//! [`AsyncStd`], and the TCP listener in [`serve`]) fits in a few lines, so moving to smol
//! is a small diff.
//!
//! [RUSTSEC-2025-0052]: https://rustsec.org/advisories/RUSTSEC-2025-0052
//!
//! # Example
//!
//! A standalone server on `127.0.0.1:8765/ws` that publishes an event every second and
//! shuts down after a minute:
//!
//! ```no_run
//! use std::time::Duration;
//! use ferret_ws_async_std::core::{Event, EventType, HubConfig};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     async_std::task::block_on(async {
//!         let hub = ferret_ws_async_std::start(HubConfig::builder().build()?);
//!         let listener = async_std::net::TcpListener::bind("127.0.0.1:8765").await?;
//!         let server = async_std::task::spawn(ferret_ws_async_std::serve(listener, hub.clone()));
//!
//!         for _ in 0..60 {
//!             async_std::task::sleep(Duration::from_secs(1)).await;
//!             hub.publish(Event::new(EventType::new("tick")?)).await?;
//!         }
//!         hub.shutdown().await; // health_status + close 1001 to everyone, within shutdown_grace
//!         server.await?;
//!         Ok(())
//!     })
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Instant;

use async_std::net::TcpListener;
use futures::io::{AsyncRead, AsyncWrite};

pub use ferret_ws_core as core;
pub use ferret_ws_runtime::*;

use ferret_ws_core::{Epoch, HubConfig};

/// The async-std [`Runtime`]: `async_std::task::spawn`, the std clock and async-std timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Self::Sleep {
        Box::pin(async_std::task::sleep(
            deadline.saturating_duration_since(Instant::now()),
        ))
    }

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        async_std::task::spawn(future);
    }
}

/// Starts a hub with `config` and a random epoch; spawns its task on async-std's executor.
pub fn start(config: HubConfig) -> HubHandle {
    start_on(AsyncStd, config)
}

/// As [`start`], with an epoch chosen by the caller (fresh for every start).
pub fn start_with_epoch(config: HubConfig, epoch: Epoch) -> HubHandle {
    start_with_epoch_on(AsyncStd, config, epoch)
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
            (stream, Some(peer.ip()))
        });
        Some((accepted, listener))
    });
    serve_incoming_on(AsyncStd, hub, Some(port), Box::pin(incoming)).await
}

/// Serves a connection that a host framework has already upgraded after it
/// [registered](HubHandle::register) the connection, before sending the 101.
pub async fn serve_registered<S>(hub: &HubHandle, stream: S, registration: Registration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_registered_on(&AsyncStd, hub, stream, registration).await;
}

/// Serves a connection that a host framework has already upgraded, with the [`Admission`]
/// that [`HubHandle::admit`] gave for its request.
///
/// For [`Admission::Reject`] it sends the close frame and ends; for [`Admission::Accept`] it
/// registers the connection and serves it in this task until it ends.
pub async fn serve_upgraded<S>(hub: &HubHandle, stream: S, admission: Admission)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_upgraded_on(&AsyncStd, hub, stream, admission).await;
}
