//! Per-connection state: filter, liveness, send-queue accounting, replay progress, rate limit.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::{Seq, SequencedEvent};
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
    /// The client identity from the handshake, kept for the host's logs and targeting.
    pub(crate) subscribe_token: Option<Box<str>>,
    /// The last frame of any kind from the client (the handshake counts).
    pub(crate) last_life: Instant,
    /// Set once a close was decided: after it the connection gets no more frames, its input
    /// is ignored, and at this deadline the socket is aborted.
    pub(crate) closing: Option<Instant>,
    /// Frames handed to the adapter and not yet reported flushed (pings included).
    pub(crate) queued_frames: usize,
    /// Bytes of those frames.
    pub(crate) queued_bytes: usize,
    /// Present while the connection replays from the buffer; live events wait in the buffer
    /// until it catches up, so replay and live never interleave.
    pub(crate) catch_up: Option<CatchUp>,
    pub(crate) rate: RateLimiter,
}

/// Replay progress of a connection that is catching up.
pub(crate) struct CatchUp {
    /// The last stream position delivered or skipped by the filter.
    pub(crate) cursor: Seq,
    /// A heartbeat that ticked while catching up; sent once the replay reaches its position.
    pub(crate) heartbeat: Option<SequencedEvent>,
}

impl Conn {
    pub(crate) fn new(now: Instant, filter: TypeFilter, subscribe_token: Option<Box<str>>) -> Conn {
        Conn {
            filter,
            subscribe_token,
            last_life: now,
            closing: None,
            queued_frames: 0,
            queued_bytes: 0,
            catch_up: None,
            rate: RateLimiter { next_free: now },
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.closing.is_none()
    }

    /// Whether a frame of `len` bytes fits the send queue. One frame always fits an empty
    /// queue, so an event larger than the byte limit still reaches an idle client.
    pub(crate) fn has_room(&self, len: usize, max_frames: usize, max_bytes: usize) -> bool {
        self.queued_frames < max_frames
            && (self.queued_frames == 0 || self.queued_bytes + len <= max_bytes)
    }

    pub(crate) fn count_queued(&mut self, frame: &Bytes) {
        self.queued_frames += 1;
        self.queued_bytes += frame.len();
    }

    pub(crate) fn count_flushed(&mut self, frames: usize, bytes: usize) {
        self.queued_frames = self.queued_frames.saturating_sub(frames);
        self.queued_bytes = self.queued_bytes.saturating_sub(bytes);
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
