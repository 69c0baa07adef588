//! Wall-clock time for envelopes, derived from the monotonic `now` the caller passes in.
//!
//! The core never reads a clock. It is given one wall-clock reading with the monotonic instant
//! it stands for, and derives every later timestamp by adding monotonic time to it, so that a
//! step of the system clock cannot make timestamps jump. The caller re-anchors it from time to
//! time ([`crate::Hub::set_wall_clock`], at every heartbeat tick in the adapters), so that a
//! suspend or an NTP step does not leave timestamps drifting for the rest of the run; the
//! timestamps handed out never go backwards across a re-anchoring.

use std::time::Instant;

use time::OffsetDateTime;

use crate::event::Timestamp;

/// Maps monotonic instants to non-decreasing wall-clock timestamps.
#[derive(Debug, Clone)]
pub(crate) struct WallClock {
    /// A monotonic instant and the wall-clock time it stands for.
    origin: (Instant, Timestamp),
    /// The latest timestamp handed out: none later is ever earlier.
    last: Timestamp,
}

impl WallClock {
    /// `now` and `wall` are the same moment on the monotonic and the wall clock.
    pub(crate) fn new(now: Instant, wall: OffsetDateTime) -> WallClock {
        let wall = Timestamp::new(wall);
        WallClock {
            origin: (now, wall),
            last: wall,
        }
    }

    /// The timestamp of `now`: the anchor plus the monotonic time since, never earlier than a
    /// timestamp already handed out.
    pub(crate) fn at(&mut self, now: Instant) -> Timestamp {
        let (origin, wall) = self.origin;
        let at = wall
            .after(now.saturating_duration_since(origin))
            .max(self.last);
        self.last = at;
        at
    }

    /// Takes a fresh reading: `now` and `wall` are the same moment.
    pub(crate) fn anchor(&mut self, now: Instant, wall: OffsetDateTime) {
        self.origin = (now, Timestamp::new(wall));
    }
}
