//! The local sequencer: the one place that gives events their id and time and encodes them.
//!
//! In the embedded mode the adapter owns a [`Sequencer`] next to its [`Hub`](crate::Hub):
//! every publish is sequenced here and the result handed to
//! [`Hub::deliver`](crate::Hub::deliver). An external ordered log (cluster mode) replaces it
//! by handing the hub events it sequenced itself; the hub never invents a seq either way.
//!
//! It also decides idempotent publishes: an event published with an [`IdempotencyKey`] that
//! was already used within the replay TTL is not sequenced again, and the caller gets the
//! first event's id. The keys it remembers are bounded by age (the replay TTL) and by count
//! ([`HubConfig::max_idempotency_keys`]); past the count, the oldest key is forgotten first.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::clock::WallClock;
use crate::config::HubConfig;
use crate::event::{Epoch, Event, EventId, Seq, SequencedEvent};

/// The longest [`IdempotencyKey`] in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// A publisher's name for one publish (`Idempotency-Key`): 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(Box<str>);

impl IdempotencyKey {
    /// Validates a key; `None` if it is empty, too long, or has a character outside visible
    /// ASCII (`!` to `~`). Answer such a request with 400.
    pub fn new(key: &str) -> Option<IdempotencyKey> {
        let visible = key.bytes().all(|b| b.is_ascii_graphic());
        (!key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY && visible)
            .then(|| IdempotencyKey(key.into()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What [`Sequencer::sequence_once`] made of a publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Sequenced {
    /// A new event: deliver it.
    New(SequencedEvent),
    /// The key was used before, for this event: nothing new to deliver.
    Repeat(EventId),
}

/// Gives events consecutive ids of one epoch and a timestamp, and encodes each once.
#[derive(Debug)]
pub struct Sequencer {
    epoch: Epoch,
    head: Seq,
    clock: WallClock,
    keys: KeyMemory,
}

impl Sequencer {
    /// A sequencer for a fresh epoch (random at every start of the embedded hub); `now` and
    /// `wall` are the same moment on the monotonic and the wall clock.
    pub fn new(config: &HubConfig, epoch: Epoch, now: Instant, wall: OffsetDateTime) -> Sequencer {
        Sequencer {
            epoch,
            head: Seq(0),
            clock: WallClock::new(now, wall),
            keys: KeyMemory::new(config.replay_ttl(), config.max_idempotency_keys()),
        }
    }

    /// The epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The newest event's id (`<epoch>-0` before the first).
    pub fn head(&self) -> EventId {
        EventId {
            epoch: self.epoch,
            seq: self.head,
        }
    }

    /// Gives `event` the next id and the time of `now`, and encodes it.
    pub fn sequence(&mut self, now: Instant, event: Event) -> SequencedEvent {
        self.head = self.head.next();
        let at = self.clock.at(now);
        event.sequence(self.head(), at)
    }

    /// As [`Sequencer::sequence`], at most once per `key` within the replay TTL.
    pub fn sequence_once(&mut self, now: Instant, event: Event, key: IdempotencyKey) -> Sequenced {
        self.keys.prune(now);
        if let Some(id) = self.keys.get(&key) {
            return Sequenced::Repeat(id);
        }
        let event = self.sequence(now, event);
        self.keys.insert(now, key, event.id());
        Sequenced::New(event)
    }

    /// Re-anchors event timestamps to the wall clock (see [`crate::Hub::set_wall_clock`]).
    pub fn set_wall_clock(&mut self, now: Instant, wall: OffsetDateTime) {
        self.clock.anchor(now, wall);
    }

    /// How many idempotency keys are remembered.
    pub fn remembered_keys(&self) -> usize {
        self.keys.order.len()
    }
}

/// The idempotency keys of recent publishes, oldest first.
#[derive(Debug)]
struct KeyMemory {
    ttl: Duration,
    max: usize,
    ids: BTreeMap<IdempotencyKey, EventId>,
    order: VecDeque<(Instant, IdempotencyKey)>,
}

impl KeyMemory {
    fn new(ttl: Duration, max: usize) -> KeyMemory {
        KeyMemory {
            ttl,
            max,
            ids: BTreeMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &IdempotencyKey) -> Option<EventId> {
        self.ids.get(key).copied()
    }

    fn insert(&mut self, now: Instant, key: IdempotencyKey, id: EventId) {
        if self.max == 0 {
            return;
        }
        while self.order.len() >= self.max {
            self.forget_oldest();
        }
        self.ids.insert(key.clone(), id);
        self.order.push_back((now, key));
    }

    fn prune(&mut self, now: Instant) {
        while self
            .order
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.ttl)
        {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_front() {
            self.ids.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_1_to_128_bytes() {
        assert!(IdempotencyKey::new("order-42:retry").is_some());
        assert!(IdempotencyKey::new(&"k".repeat(128)).is_some());
        for bad in ["", " ", "a b", "é", "\t", &"k".repeat(129)] {
            assert!(IdempotencyKey::new(bad).is_none(), "{bad:?}");
        }
    }
}
