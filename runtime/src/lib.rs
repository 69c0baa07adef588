//! The runtime-agnostic async glue of ferret-ws, shared by `ferret-ws-tokio` and
//! `ferret-ws-async-std`.
//!
//! Everything here is written against the `futures` traits and async-tungstenite's generic
//! (runtime-neutral) functions. A runtime adapter supplies only what its runtime truly
//! differs in, through the small [`Runtime`] trait (spawn, clock, timer), plus its own TCP
//! types; applications use the adapters, which re-export this crate.
//!
//! # Theory of operation
//!
//! ```text
//!       admit + register (sync)      Register / Input / Publish / ...         push
//! handshake ──────────────► HubHandle ───────────────────────────► hub task ──────────► connection queue
//!                                        (bounded futures mpsc)    owns Hub     (per connection, shared)
//!   connection task ── Text / Binary / Alive / Violation / Disconnected ──►│
//!   connection task ── "I wrote": its id on a shared list, its counts in its queue ──►│
//! ```
//!
//! - **Handshakes** are decided in the connection's task by the core's
//!   [`Admission`](ferret_ws_core::Admission) (kept behind a lock, as handshakes run in many
//!   tasks), and an accepted connection is registered before its `101` is written: the
//!   `Register` command is queued ahead of anything the client can cause after reading it.
//! - **The hub task** owns the [`ferret_ws_core::Hub`] and, in the embedded mode, the
//!   [`Sequencer`](ferret_ws_core::Sequencer) outright. Each wake-up (a command or
//!   its one timer) it reads the clock once, feeds the hub, gives each frame its WebSocket
//!   header once and pushes every output into the connections' queues (never waiting on a
//!   socket), and sleeps until [`Hub::poll_timeout`](ferret_ws_core::Hub::poll_timeout).
//! - **Per connection**, one task reads the client's frames through tungstenite and turns
//!   them into core inputs, and writes what the hub queued straight to the socket: each
//!   frame's header and its payload, shared with every other recipient, in vectored writes;
//!   the hub task collects what it wrote, for many connections in one go, and feeds the core
//!   [`Input::Flushed`](ferret_ws_core::Input::Flushed). tungstenite's own
//!   replies (Pong, close frames) go out between two frames, never inside one. The core counts
//!   what is queued (at most [`Hub::max_queued_outputs`] per connection), so a stalled socket
//!   stalls only its own connection, and a queue's storage is given back when it drains.
//! - **No protocol decisions here.** Which frames go where, when to ping, when and how to
//!   close, what to drop: all of it comes from the core's outputs. The only limits set here
//!   are defence in depth taken from the [`HubConfig`](ferret_ws_core::HubConfig)
//!   ([`websocket_config`]).
//!
//! [`Hub::max_queued_outputs`]: ferret_ws_core::Hub::max_queued_outputs
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

use std::future::Future;
use std::time::Instant;

mod conn;
mod handle;
mod hub_task;
mod serve;
mod wire;

pub use async_tungstenite;
pub use async_tungstenite::tungstenite;
pub use handle::{Admission, HubHandle, PublishError, Registration, Slot, Ticket};
pub use hub_task::{start_external_on, start_on, start_with_epoch_on, FetchRequest};
pub use serve::{
    is_per_connection, serve_incoming_on, serve_registered_on, serve_stream_on, serve_upgraded_on,
    websocket_config, HandshakeFields, ACCEPT_ERROR_PAUSE, READ_BUFFER_SIZE, WS_PATH,
};

/// What a runtime adapter provides: the only things in which async runtimes truly differ
/// (besides their TCP types, which the adapters handle themselves).
///
/// Like quinn's `Runtime`, this is deliberately tiny; an implementation is a few lines.
pub trait Runtime: Clone + Send + Sync + 'static {
    /// The future returned by [`Runtime::sleep_until`].
    type Sleep: Future<Output = ()> + Send + 'static;

    /// The current monotonic time. The hub task reads it once per wake-up; besides it, the
    /// hub task reads the wall clock at start and at each timer wake-up (to re-anchor
    /// timestamps), and the accept loops read it for their handshake deadlines.
    fn now(&self) -> Instant;

    /// A future that completes at `deadline` (at once if it has passed).
    fn sleep_until(&self, deadline: Instant) -> Self::Sleep;

    /// Runs `future` to completion in the background (detached).
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;
}
