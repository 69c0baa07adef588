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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use time::macros::datetime;

    use super::*;

    #[test]
    fn re_anchoring_follows_the_wall_clock_and_never_goes_back() {
        #[allow(clippy::disallowed_methods)] // one arbitrary origin; only offsets matter
        let start = Instant::now();
        let mut clock = WallClock::new(start, datetime!(2026-01-01 00:00:00 UTC));
        let later = start + Duration::from_secs(10);
        assert_eq!(
            clock.at(later).to_string(),
            "2026-01-01T00:00:10.000000+00:00"
        );
        // The machine slept for an hour: monotonic time stood still, the wall clock did not.
        clock.anchor(later, datetime!(2026-01-01 01:00:10 UTC));
        assert_eq!(
            clock.at(later + Duration::from_secs(1)).to_string(),
            "2026-01-01T01:00:11.000000+00:00"
        );
        // An NTP step backwards: timestamps hold still until the wall clock catches up.
        clock.anchor(later, datetime!(2026-01-01 00:00:00 UTC));
        assert_eq!(
            clock.at(later + Duration::from_secs(2)).to_string(),
            "2026-01-01T01:00:11.000000+00:00"
        );
    }
}
