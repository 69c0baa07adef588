//! Backpressure: what one connection may have queued, what all of them may have queued
//! together, and the rules for queueing a frame.
//!
//! The hub counts every output it hands an adapter for a connection until the adapter
//! reports it written ([`crate::Input::Flushed`]), in order: each connection's [`SendQueue`]
//! remembers which frames it holds. A frame is queued only if it fits the connection's limits
//! ([`SendQueue::try_push`]); one that does not makes the connection a slow consumer, closed
//! with 4008. Beyond the frame limit a queue has room for exactly [`SLACK`] more outputs, each
//! with an owner:
//!
//! | slots | taken by | rule |
//! | --- | --- | --- |
//! | 1, 2 | a Ping, an in-band `resync_required` | [`SendQueue::push_extra`]: while at most one such frame is past the limit, so a client that reads nothing cannot pile them up, and a catching-up client (whose queue is full by design) still learns of a hole in the log |
//! | 3 | the shutdown notice (`health_status`) | [`SendQueue::push_notice`]: always, it is the last frame |
//! | 4 | the close frame | not counted: it is the last output, and the writer never reports it |
//!
//! So an adapter queue of `send_queue_frames + SLACK` entries never overflows.
//!
//! # The global budget
//!
//! [`Queued`] adds up what all the queues hold: the bytes of every frame queued to some
//! connection and not yet written (PROTOCOL.md §5 Memory). A frame that several connections
//! are sent (an event, a heartbeat tick) is one shared allocation, so it counts once, for as
//! long as any queue holds it; a frame made for one connection (a control frame) counts on its
//! own. Before the hub queues a frame that is not held yet, it makes room for it
//! (`Hub::make_room`): while the total and the new frame would pass `max_queued_bytes`, the
//! connection with the most bytes queued is shed: its queued frames are dropped
//! ([`crate::Output::Discard`]) and it is closed with 4008. A frame always fits when nothing is
//! queued, so the total never passes the budget by more than one frame.

use std::collections::{BTreeMap, VecDeque};

use crate::config::HubConfig;

/// Outputs one connection can have beyond `send_queue_frames`: two extra frames (pings, an
/// in-band resync), the shutdown notice and the close (see the module's table).
pub(crate) const SLACK: usize = 4;

/// Frames past the limit that [`SendQueue::push_extra`] allows.
const EXTRA: usize = 2;

/// The storage (in frames) a queue keeps when it empties: a burst's is given back.
const KEPT_SLOTS: usize = 4;

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

/// Which frame a queued output is: what tells a frame that several queues share (counted once)
/// from one made for a single connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FrameKey {
    /// A frame made for this connection alone: a control frame, a Ping, a shutdown notice
    /// naming the connection's own place in the stream.
    Own,
    /// A frame made once for many connections (an event, live or replayed; a heartbeat tick;
    /// the shutdown notice): the n-th such frame, numbered by [`Queued::new_frame`].
    Shared(u64),
}

/// Frames handed to the adapter for one connection and not yet reported written.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SendQueue {
    /// Frames (pings included).
    pub(crate) frames: usize,
    /// Bytes of those frames' payloads.
    pub(crate) bytes: usize,
    /// Each of those frames, oldest first: the writer reports them in this order. Its storage
    /// is given back whenever the queue empties.
    held: VecDeque<(FrameKey, usize)>,
}

impl SendQueue {
    /// Counts the frame `key` of `len` bytes if it fits: within the frame limit and, unless
    /// the queue is empty, the byte limit (one frame always fits an empty queue, so an event
    /// larger than the byte limit still reaches an idle client). `false`: the connection is a
    /// slow consumer.
    pub(crate) fn try_push(
        &mut self,
        key: FrameKey,
        len: usize,
        limits: Limits,
        queued: &mut Queued,
    ) -> bool {
        let fits = self.try_push_shared(key, len, limits);
        if fits {
            queued.add_holders(key, len, 1);
        }
        fits
    }

    /// As [`SendQueue::try_push`] for a frame being queued to many connections at once: counts
    /// it in this queue only; the caller adds all its new holders with
    /// [`Queued::add_holders`] afterwards, once for the frame rather than once per queue.
    pub(crate) fn try_push_shared(&mut self, key: FrameKey, len: usize, limits: Limits) -> bool {
        let fits =
            self.frames < limits.frames && (self.frames == 0 || self.bytes + len <= limits.bytes);
        if fits {
            self.hold(key, len);
        }
        fits
    }

    /// Counts a frame the client did not ask for and must not lose its connection over (a
    /// Ping, an in-band `resync_required`) if fewer than two are past the limit (slack slots
    /// 1 and 2); `false`: the queue is too far behind for it.
    pub(crate) fn push_extra(
        &mut self,
        key: FrameKey,
        len: usize,
        limits: Limits,
        queued: &mut Queued,
    ) -> bool {
        let fits = self.frames < limits.frames + EXTRA;
        if fits {
            self.count(key, len, queued);
        }
        fits
    }

    /// Counts the shutdown notice, which always goes (slack slot 3).
    pub(crate) fn push_notice(&mut self, key: FrameKey, len: usize, queued: &mut Queued) {
        self.count(key, len, queued);
    }

    /// The adapter wrote the oldest `frames` frames.
    pub(crate) fn flushed(&mut self, frames: usize, queued: &mut Queued) {
        for _ in 0..frames.min(self.held.len()) {
            let (key, len) = self.held.pop_front().expect("counted above");
            self.frames -= 1;
            self.bytes -= len;
            queued.remove(key, len);
        }
        // An idle queue keeps a little storage (a heartbeat and its Ping need 2 slots), not
        // what a burst needed.
        if self.held.is_empty() && self.held.capacity() > KEPT_SLOTS {
            self.held = VecDeque::new();
        }
    }

    /// Forgets every frame: the connection is gone, or its frames are being dropped.
    pub(crate) fn release(&mut self, queued: &mut Queued) {
        for (key, len) in self.held.drain(..) {
            queued.remove(key, len);
        }
        *self = SendQueue::default();
    }

    fn count(&mut self, key: FrameKey, len: usize, queued: &mut Queued) {
        self.hold(key, len);
        queued.add_holders(key, len, 1);
    }

    fn hold(&mut self, key: FrameKey, len: usize) {
        self.frames += 1;
        self.bytes += len;
        self.held.push_back((key, len));
    }
}

/// What all the queues hold together, each frame once (see the module docs).
///
/// Shared frames are numbered in the order they are made, and most are written soon after:
/// their holder counts live in a window indexed by number, from the oldest frame still held
/// (or not yet given out) on. A frame that stays held while [`WINDOW`] newer ones are made
/// moves to a map, and so does one that is queued again after leaving the window (a replayed
/// event, a heartbeat a catching-up client gets late).
#[derive(Debug)]
pub(crate) struct Queued {
    max: usize,
    /// Bytes of the distinct frames held.
    total: usize,
    /// The number of the first frame in `window`.
    base: u64,
    /// Holders of frames `base..`, one entry per number.
    window: VecDeque<Holders>,
    /// Holders of frames older than `base` that are still held.
    old: BTreeMap<u64, Holders>,
}

/// The most shared frames [`Queued`] indexes directly (16 bytes each).
const WINDOW: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Holders {
    count: usize,
    len: usize,
}

impl Queued {
    pub(crate) fn new(config: &HubConfig) -> Queued {
        Queued {
            max: config.max_queued_bytes(),
            total: 0,
            base: 0,
            window: VecDeque::new(),
            old: BTreeMap::new(),
        }
    }

    /// Bytes of the distinct frames held by the queues.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// A key for a new frame of `len` bytes made once for many connections.
    pub(crate) fn new_frame(&mut self, len: usize) -> FrameKey {
        let number = self.base + self.window.len() as u64;
        self.window.push_back(Holders { count: 0, len });
        while self.window.len() > WINDOW {
            let front = self.window.pop_front().expect("longer than the window");
            if front.count > 0 {
                self.old.insert(self.base, front);
            }
            self.base += 1;
        }
        FrameKey::Shared(number)
    }

    /// What queueing the frame `key` of `len` bytes would add to the total: nothing if some
    /// queue already holds it.
    pub(crate) fn cost(&self, key: FrameKey, len: usize) -> usize {
        let held = match key {
            FrameKey::Own => false,
            FrameKey::Shared(n) => match n.checked_sub(self.base) {
                Some(at) => self.window.get(at as usize).is_some_and(|h| h.count > 0),
                None => self.old.contains_key(&n),
            },
        };
        if held {
            0
        } else {
            len
        }
    }

    /// Whether `more` bytes fit the budget: within it, or into an empty one (so that one frame
    /// larger than the budget still goes out).
    pub(crate) fn fits(&self, more: usize) -> bool {
        more == 0 || self.total == 0 || self.total + more <= self.max
    }

    /// `count` more queues hold the frame `key` of `len` bytes.
    pub(crate) fn add_holders(&mut self, key: FrameKey, len: usize, count: usize) {
        if count == 0 {
            return;
        }
        let n = match key {
            FrameKey::Own => {
                self.total += len * count;
                return;
            }
            FrameKey::Shared(n) => n,
        };
        let holders = match n.checked_sub(self.base) {
            Some(at) if (at as usize) < self.window.len() => &mut self.window[at as usize],
            Some(_) => {
                debug_assert!(false, "frame {n} was never numbered");
                return;
            }
            None => self.old.entry(n).or_insert(Holders { count: 0, len }),
        };
        if holders.count == 0 {
            self.total += len;
        }
        holders.count += count;
    }

    fn remove(&mut self, key: FrameKey, len: usize) {
        let n = match key {
            FrameKey::Own => {
                self.total -= len;
                return;
            }
            FrameKey::Shared(n) => n,
        };
        let holders = match n.checked_sub(self.base) {
            Some(at) => self.window.get_mut(at as usize),
            None => self.old.get_mut(&n),
        };
        let Some(holders) = holders.filter(|h| h.count > 0) else {
            debug_assert!(false, "a shared frame nobody holds: {n}");
            return;
        };
        holders.count -= 1;
        if holders.count > 0 {
            return;
        }
        self.total -= holders.len;
        if n < self.base {
            self.old.remove(&n);
        }
        // The window starts at the oldest frame still held (or not queued yet).
        while self.window.len() > 1 && self.window.front().is_some_and(|h| h.count == 0) {
            self.window.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_queued_bytes: usize) -> HubConfig {
        HubConfig::builder()
            .send_queue_frames(2)
            .send_queue_bytes(10)
            .max_queued_bytes(max_queued_bytes)
            .build()
            .unwrap()
    }

    #[test]
    fn limits_slack_and_the_one_big_frame() {
        let config = config(1000);
        let (limits, mut queued) = (Limits::new(&config), Queued::new(&config));
        let mut queue = SendQueue::default();
        let own = FrameKey::Own;
        assert!(
            queue.try_push(own, 100, limits, &mut queued),
            "one frame fits an empty queue"
        );
        assert!(!queue.try_push(own, 1, limits, &mut queued), "bytes");
        queue.flushed(1, &mut queued);
        assert!(queue.try_push(own, 3, limits, &mut queued));
        assert!(queue.try_push(own, 3, limits, &mut queued));
        assert!(!queue.try_push(own, 1, limits, &mut queued), "frames");
        assert!(
            queue.push_extra(own, 0, limits, &mut queued),
            "a ping past the limit"
        );
        assert!(
            queue.push_extra(own, 10, limits, &mut queued),
            "a resync past the limit"
        );
        assert!(
            !queue.push_extra(own, 0, limits, &mut queued),
            "but no third"
        );
        queue.push_notice(own, 3, &mut queued);
        assert_eq!(queue.frames, limits.frames + SLACK - 1);
        assert_eq!((queue.bytes, queued.total()), (19, 19));
        queue.release(&mut queued);
        assert_eq!((queue.frames, queue.bytes, queued.total()), (0, 0, 0));
    }

    #[test]
    fn a_shared_frame_counts_once_while_any_queue_holds_it() {
        let config = config(15);
        let (limits, mut queued) = (Limits::new(&config), Queued::new(&config));
        let (mut a, mut b) = (SendQueue::default(), SendQueue::default());
        let event = queued.new_frame(10);
        assert_eq!(queued.cost(event, 10), 10);
        assert!(a.try_push(event, 10, limits, &mut queued));
        assert_eq!(queued.cost(event, 10), 0, "already held");
        assert!(b.try_push(event, 10, limits, &mut queued));
        assert_eq!(queued.total(), 10);
        assert!(!queued.fits(6) && queued.fits(5));
        a.flushed(1, &mut queued);
        assert_eq!(queued.total(), 10, "b still holds it");
        b.flushed(1, &mut queued);
        assert_eq!(queued.total(), 0);
        assert!(queued.fits(100), "an empty budget takes any one frame");
    }

    #[test]
    fn a_frame_held_long_leaves_the_window_and_is_still_counted() {
        let config = config(usize::MAX);
        let limits = Limits::new(&config);
        let mut queued = Queued::new(&config);
        let (mut stuck, mut reader) = (SendQueue::default(), SendQueue::default());
        let pinned = queued.new_frame(7);
        assert!(stuck.try_push(pinned, 7, limits, &mut queued));
        // A frame made now and queued only after many newer ones (a replayed event).
        let late = queued.new_frame(5);
        for _ in 0..3 * WINDOW {
            let key = queued.new_frame(3);
            assert!(reader.try_push(key, 3, limits, &mut queued));
            assert_eq!(queued.total(), 10);
            reader.flushed(1, &mut queued);
        }
        assert!(queued.window.len() <= WINDOW && queued.old.len() == 1);
        assert_eq!(queued.cost(pinned, 7), 0, "still held, out of the window");
        assert_eq!(queued.cost(late, 5), 5);
        assert!(reader.try_push(late, 5, limits, &mut queued));
        assert_eq!(queued.total(), 12);
        reader.flushed(1, &mut queued);
        stuck.flushed(1, &mut queued);
        assert_eq!((queued.total(), queued.old.len()), (0, 0));
    }
}
