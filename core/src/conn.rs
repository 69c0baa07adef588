//! Per-connection state: filter, liveness, send queue, replay progress, rate limit.

use std::time::{Duration, Instant};

use bytes::Bytes;

use std::collections::VecDeque;

use crate::backpressure::{FrameKey, SendQueue};
use crate::event::{EventId, Seq};
use crate::filter::TypeFilter;

/// A connection's id: assigned by [`crate::Hub::accept`] in increasing order, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "c{}", self.0)
    }
}

pub(crate) struct Conn {
    pub(crate) filter: TypeFilter,
    /// The last frame of any kind from the client (the handshake counts).
    pub(crate) last_life: Instant,
    /// Set once a close was decided: after it the connection gets no more frames, its input
    /// is ignored, and at this deadline the socket is aborted.
    pub(crate) closing: Option<Instant>,
    /// What the adapter holds for it, unwritten.
    pub(crate) queue: SendQueue,
    /// Set when its queued frames were dropped ([`crate::Output::Discard`]): what the writer
    /// reports written from then on is no longer counted.
    pub(crate) discarded: bool,
    /// The id of the last stream frame queued to it (events, heartbeats): where an in-band
    /// `resync_required` says it stopped.
    pub(crate) last_sent: Option<EventId>,
    /// Present while the connection replays from the buffer; live events wait in the buffer
    /// until it catches up, so replay and live never interleave.
    ///
    /// Boxed: it is rare and large, and fan-out walks every connection's state.
    pub(crate) catch_up: Option<Box<CatchUp>>,
    pub(crate) rate: RateLimiter,
}

/// Replay progress of a connection that is catching up.
pub(crate) struct CatchUp {
    /// The last event delivered or skipped by the filter.
    pub(crate) cursor: Seq,
    /// A heartbeat that ticked while catching up, with the seq it names (and which tick's
    /// frame it is): sent once the replay has reached that event, so that it never names one
    /// still to come.
    pub(crate) heartbeat: Option<(Seq, Bytes, FrameKey)>,
    /// Events older than the replay buffer, fetched from the log for this connection
    /// ([`crate::Output::Fetch`]), each with its frame's key; replayed before the buffer's.
    pub(crate) backlog: VecDeque<(crate::event::SequencedEvent, FrameKey)>,
    /// The fetch outstanding, `(after, before)`: nothing is replayed until it is answered.
    pub(crate) fetching: Option<(crate::event::EventId, Seq)>,
}

impl CatchUp {
    pub(crate) fn from(cursor: Seq) -> Box<CatchUp> {
        Box::new(CatchUp {
            cursor,
            heartbeat: None,
            backlog: Default::default(),
            fetching: None,
        })
    }
}

impl Conn {
    pub(crate) fn new(now: Instant, filter: TypeFilter) -> Conn {
        Conn {
            filter,
            last_life: now,
            closing: None,
            queue: SendQueue::default(),
            discarded: false,
            last_sent: None,
            catch_up: None,
            rate: RateLimiter { next_free: now },
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.closing.is_none()
    }
}

/// A token bucket in its GCRA form: one instant per connection, no floating point.
pub(crate) struct RateLimiter {
    /// When the bucket would be full again if no more messages came.
    next_free: Instant,
}

impl RateLimiter {
    /// Takes one token; `false` if the client is over `rate` per second with `burst` extra.
    pub(crate) fn allow(&mut self, now: Instant, rate: u32, burst: u32) -> bool {
        let interval = Duration::from_secs(1) / rate.max(1);
        let tolerance = interval * burst.saturating_sub(1);
        let start = self.next_free.max(now);
        if start.saturating_duration_since(now) > tolerance {
            return false;
        }
        self.next_free = start + interval;
        true
    }
}
