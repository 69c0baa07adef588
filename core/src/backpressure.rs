//! Backpressure: what one connection may have queued, and the one rule for queueing a frame.
//!
//! The hub counts every output it hands an adapter for a connection until the adapter
//! reports it written ([`crate::Input::Flushed`]). A frame is queued only if it fits the
//! connection's limits ([`SendQueue::try_push`]); one that does not makes the connection a
//! slow consumer, closed with 4008. Beyond the frame limit a queue has room for exactly
//! [`SLACK`] more outputs, each with an owner:
//!
//! | slots | taken by | rule |
//! | --- | --- | --- |
//! | 1, 2 | a Ping, an in-band `resync_required` | [`SendQueue::push_extra`]: while at most one such frame is past the limit, so a client that reads nothing cannot pile them up, and a catching-up client (whose queue is full by design) still learns of a hole in the log |
//! | 3 | the shutdown notice (`health_status`) | [`SendQueue::push_notice`]: always, it is the last frame |
//! | 4 | the close frame | not counted: it is the last output, and the writer never reports it |
//!
//! So an adapter queue of `send_queue_frames + SLACK` entries never overflows.

use bytes::Bytes;

use crate::config::HubConfig;

/// Outputs one connection can have beyond `send_queue_frames`: two extra frames (pings, an
/// in-band resync), the shutdown notice and the close (see the module's table).
pub(crate) const SLACK: usize = 4;

/// Frames past the limit that [`SendQueue::push_extra`] allows.
const EXTRA: usize = 2;

/// A connection's queue limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    frames: usize,
    bytes: usize,
}

impl Limits {
    pub(crate) fn new(config: &HubConfig) -> Limits {
        Limits {
            frames: config.send_queue_frames(),
            bytes: config.send_queue_bytes(),
        }
    }
}

/// Frames handed to the adapter for one connection and not yet reported written.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendQueue {
    /// Frames (pings included).
    pub(crate) frames: usize,
    /// Bytes of those frames' payloads.
    pub(crate) bytes: usize,
}

impl SendQueue {
    /// Counts `frame` if it fits: within the frame limit and, unless the queue is empty, the
    /// byte limit (one frame always fits an empty queue, so an event larger than the byte
    /// limit still reaches an idle client). `false`: the connection is a slow consumer.
    pub(crate) fn try_push(&mut self, frame: &Bytes, limits: Limits) -> bool {
        let fits = self.frames < limits.frames
            && (self.frames == 0 || self.bytes + frame.len() <= limits.bytes);
        if fits {
            self.count(frame.len());
        }
        fits
    }

    /// Counts a frame the client did not ask for and must not lose its connection over (a
    /// Ping, an in-band `resync_required`) if fewer than two are past the limit (slack slots
    /// 1 and 2); `false`: the queue is too far behind for it.
    pub(crate) fn push_extra(&mut self, len: usize, limits: Limits) -> bool {
        let fits = self.frames < limits.frames + EXTRA;
        if fits {
            self.count(len);
        }
        fits
    }

    /// Counts the shutdown notice, which always goes (slack slot 3).
    pub(crate) fn push_notice(&mut self, frame: &Bytes) {
        self.count(frame.len());
    }

    /// The adapter wrote this many frames and bytes.
    pub(crate) fn flushed(&mut self, frames: usize, bytes: usize) {
        self.frames = self.frames.saturating_sub(frames);
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    fn count(&mut self, len: usize) {
        self.frames += 1;
        self.bytes += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_slack_and_the_one_big_frame() {
        let limits = Limits {
            frames: 2,
            bytes: 10,
        };
        let mut queue = SendQueue::default();
        let big = Bytes::from(vec![b'x'; 100]);
        assert!(
            queue.try_push(&big, limits),
            "one frame fits an empty queue"
        );
        assert!(!queue.try_push(&Bytes::from_static(b"x"), limits), "bytes");
        queue.flushed(1, 100);
        assert!(queue.try_push(&Bytes::from_static(b"abc"), limits));
        assert!(queue.try_push(&Bytes::from_static(b"abc"), limits));
        assert!(!queue.try_push(&Bytes::from_static(b"a"), limits), "frames");
        assert!(queue.push_extra(0, limits), "a ping past the limit");
        assert!(queue.push_extra(10, limits), "a resync past the limit");
        assert!(!queue.push_extra(0, limits), "but no third");
        queue.push_notice(&Bytes::from_static(b"bye"));
        assert_eq!(queue.frames, limits.frames + SLACK - 1);
    }
}
