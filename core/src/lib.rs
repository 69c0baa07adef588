//! The sans-IO core of ferret-ws: every decision of the `/ws` event hub as a pure state
//! machine.
//!
//! # Run loop
//!
//! A [`Hub`] is owned by one task (an adapter such as `ferret-ws-tokio`), which feeds it facts
//! with the current time and carries out the commands it yields:
//!
//! 1. **Handshake.** For each `GET /ws`, call [`decide`] from the upgrade callback. `Refuse`
//!    means answer with that HTTP status; `Reject` means upgrade and send that close frame;
//!    `Accept` means upgrade and call [`Hub::accept`], which returns the [`ConnId`].
//! 2. **Facts.** Client frames, written frames and closed sockets go to
//!    [`Hub::handle_input`]; the application calls [`Hub::publish`]; a stop signal calls
//!    [`Hub::shutdown`].
//! 3. **Commands.** After every call, drain [`Hub::poll_output`] to `None` and carry out each
//!    [`Output`] in order, never waiting on a socket.
//! 4. **Time.** Sleep until [`Hub::poll_timeout`], then call [`Hub::handle_timeout`].
//!
//! The hub never reads a clock, never does IO and never spawns; the same calls give the
//! same outputs. See [`Hub`] for what it guarantees.
//!
//! # Example
//!
//! Driving the hub by hand, as a test or an adapter would (`examples/run_loop.rs`; the
//! example reads the clock, as an adapter does, never the hub):
//!
//! ```
#![doc = include_str!("../examples/run_loop.rs")]
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod close;
mod config;
mod conn;
mod event;
mod filter;
mod handshake;
mod host;
mod hub;
mod message;
mod metrics;
mod replay;

#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

pub use close::{truncate_reason, CloseCode, MAX_CLOSE_REASON};
pub use config::{ConfigError, HubConfig, HubConfigBuilder};
pub use conn::ConnId;
pub use event::{
    is_valid_type_name, types, Epoch, Event, EventId, EventType, EventTypeError, Seq,
    SequencedEvent, Timestamp, MAX_TYPE_LEN,
};
pub use filter::{FilterError, TypeFilter, MAX_PATTERNS};
pub use handshake::{
    decide, ConnParams, Decision, HandshakeRequest, OriginPolicy, Refusal, Rejection,
    OVERLOAD_RETRY_AFTER,
};
pub use host::{HostNameError, HostPolicy, HostVerdict, LOOPBACK_HOSTS};
pub use hub::{DisconnectCause, Hub, Input, Output, PublishError, Violation};
pub use message::{encode_client_message, parse_client_message, ClientMessage, ParseError};
pub use metrics::Metrics;
pub use replay::ResyncReason;
