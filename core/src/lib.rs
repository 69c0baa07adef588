//! The sans-IO core of ferret-ws: every decision of the `/ws` event hub as a pure state
//! machine.
//!
//! # Layout
//!
//! Two state machines, each with one owner and `&mut self`:
//!
//! - [`Sequencer`] gives published events their id (`<epoch>-<seq>`, consecutive), their
//!   timestamp and their one encoding, and decides idempotent publishes. It is the embedded
//!   mode's order; an external ordered log (cluster mode) takes its place.
//! - [`Hub`] fans out what it is given: connections, filters, send queues, replay and
//!   catch-up, heartbeats and liveness, closes. It never invents a seq; it decides what a
//!   skip, a repeat or a new epoch in the events it is handed means for its clients.
//!
//! [`Admission`] decides handshakes ([`decide`]) and holds the connection slots.
//!
//! # Run loop
//!
//! The adapter owns a [`Hub`] (and, embedded, a [`Sequencer`]), feeds it facts with the
//! current time and carries out the commands it yields:
//!
//! 1. **Handshake.** For each `GET /ws`, call [`Admission::admit`]. `Refuse` means answer
//!    with that HTTP status; `Reject` means upgrade and send that close frame; `Accept`
//!    means call [`Hub::accept`] (before sending `101 Switching Protocols`: the connection is
//!    registered at the 101), which returns the [`ConnId`].
//! 2. **Facts.** Client frames, written frames and closed sockets go to
//!    [`Hub::handle_input`]; a publish goes through [`Sequencer::sequence`] into
//!    [`Hub::deliver`]; a stop signal calls [`Hub::shutdown`].
//! 3. **Commands.** After every call, drain [`Hub::poll_output`] to `None` and carry out each
//!    [`Output`] in order, never waiting on a socket.
//! 4. **Time.** Sleep until [`Hub::poll_timeout`], then call [`Hub::handle_timeout`].
//!
//! The core never reads a clock, never does IO and never spawns; the same calls give the
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

mod admission;
mod backpressure;
mod broadcast;
mod clock;
mod close;
mod config;
mod conn;
mod event;
mod filter;
mod handshake;
mod heartbeat;
mod host;
mod hub;
mod message;
mod metrics;
mod replay;
mod sequencer;

pub use admission::{Admission, Admit, Slot};
pub use broadcast::Delivery;

pub use close::{truncate_reason, CloseCause, CloseCode, MAX_CLOSE_REASON};
pub use config::{ConfigError, HubConfig, HubConfigBuilder};
pub use conn::ConnId;
pub use event::{
    is_valid_type_name, types, Epoch, Event, EventBody, EventId, EventType, EventTypeError, Seq,
    SequencedEvent, Timestamp, MAX_TYPE_LEN,
};
pub use filter::{FilterError, TypeFilter, MAX_PATTERNS};
pub use handshake::{
    decide, Capacity, ConnParams, Decision, HandshakeRequest, OriginPolicy, Refusal, Rejection,
    OVERLOAD_RETRY_AFTER,
};
pub use host::{HostNameError, HostPolicy, HostVerdict, LOOPBACK_HOSTS};
pub use hub::{DisconnectCause, Hub, Input, Output, Violation};
pub use message::{encode_client_message, parse_client_message, ClientMessage, ParseError};
pub use metrics::Metrics;
pub use replay::ResyncReason;
pub use sequencer::{IdempotencyKey, Sequenced, Sequencer, MAX_IDEMPOTENCY_KEY};
