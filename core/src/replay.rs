//! The replay buffer: recent events, bounded by count, bytes and age, and the resume rules.
//!
//! Theory of operation: events enter at the back in sequence order and leave from the front,
//! so what has left is always a prefix of the stream. Two high-water marks remember the
//! newest event that left by size (`last_evicted`) and by age (`last_expired`); with them the
//! buffer answers "is any event after X gone, and why?" in O(1), which is all the resume
//! rules need. Heartbeats take no `seq` and are never stored, so they can never be missing;
//! a hole in the stream that the log itself left (entries lost before this node read them)
//! counts as evicted ([`ReplayBuffer::mark_missing`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::backpressure::FrameKey;
use crate::event::{is_seq_digits, Epoch, EventId, Seq, SequencedEvent};

/// Why a client must refetch state instead of resuming (`resync_required`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResyncReason {
    /// The anchor is not of the form `<8 hex>-<seq>`.
    Invalid,
    /// The anchor is from another run of the hub (a restart).
    UnknownEpoch,
    /// The anchor's seq is beyond the newest frame.
    Ahead,
    /// An event after the anchor was pushed out by the buffer's size, or replay is off.
    Evicted,
    /// Events after the anchor are older than the replay TTL.
    Expired,
}

impl ResyncReason {
    /// Every reason, in the contract's order of precedence.
    pub const ALL: [ResyncReason; 5] = [
        ResyncReason::Invalid,
        ResyncReason::UnknownEpoch,
        ResyncReason::Ahead,
        ResyncReason::Evicted,
        ResyncReason::Expired,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::Invalid => "invalid",
            ResyncReason::UnknownEpoch => "unknown_epoch",
            ResyncReason::Ahead => "ahead",
            ResyncReason::Evicted => "evicted",
            ResyncReason::Expired => "expired",
        }
    }
}

/// Where a new connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Sent first when the anchor cannot be honoured without a gap.
    pub(crate) resync: Option<ResyncReason>,
    /// Replay every buffered event with a greater seq; never before an event that has left.
    pub(crate) after: Seq,
}

struct Entry {
    event: SequencedEvent,
    at: Instant,
    /// Which frame the event is, for the queues' accounting: the one every recipient shares,
    /// live or replayed.
    key: FrameKey,
}

/// Recent events for replay.
pub(crate) struct ReplayBuffer {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_len: usize,
    max_bytes: usize,
    ttl: Duration,
    /// The newest seq pushed out by size (or never stored); `Seq(0)` if none.
    last_evicted: Seq,
    /// The newest seq dropped for age; `Seq(0)` if none.
    last_expired: Seq,
}

impl ReplayBuffer {
    pub(crate) fn new(max_len: usize, max_bytes: usize, ttl: Duration) -> ReplayBuffer {
        ReplayBuffer {
            entries: VecDeque::with_capacity(max_len.min(1024)),
            bytes: 0,
            max_len,
            max_bytes,
            ttl,
            last_evicted: Seq(0),
            last_expired: Seq(0),
        }
    }

    /// Stores an event, evicting the oldest to stay within count and bytes. An event that
    /// cannot fit at all empties the buffer and is itself counted as evicted.
    pub(crate) fn push(&mut self, now: Instant, event: SequencedEvent, key: FrameKey) {
        let size = event.frame().len();
        if self.max_len == 0 || size > self.max_bytes {
            while self.evict_front() {}
            self.last_evicted = event.id().seq;
            return;
        }
        while self.entries.len() >= self.max_len || self.bytes + size > self.max_bytes {
            self.evict_front();
        }
        self.bytes += size;
        self.entries.push_back(Entry {
            event,
            at: now,
            key,
        });
    }

    /// Drops events older than the TTL.
    pub(crate) fn prune(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if now.saturating_duration_since(front.at) < self.ttl {
                break;
            }
            let entry = self.entries.pop_front().expect("front exists");
            self.bytes -= entry.event.frame().len();
            self.last_expired = entry.event.id().seq;
        }
    }

    /// Forgets everything: the stream starts a new epoch.
    pub(crate) fn reset(&mut self) {
        self.entries.clear();
        self.bytes = 0;
        self.last_evicted = Seq(0);
        self.last_expired = Seq(0);
    }

    /// Records that every event up to `through` that is not buffered will never be: the log
    /// skipped them.
    pub(crate) fn mark_missing(&mut self, through: Seq) {
        self.last_evicted = self.last_evicted.max(through);
    }

    /// Where a connection with this raw anchor starts, given the newest event (PROTOCOL.md
    /// §5, "Anchors").
    pub(crate) fn resume(&self, anchor: Option<&str>, head: EventId) -> Resume {
        let (epoch, newest) = (head.epoch, head.seq);
        let Some(raw) = anchor else {
            return Resume {
                resync: None,
                after: newest,
            };
        };
        // After a resync the client gets every buffered event: start past what has left.
        let resync = |reason| Resume {
            resync: Some(reason),
            after: self.last_evicted.max(self.last_expired),
        };
        let Some(EventId {
            epoch: anchor_epoch,
            seq,
        }) = EventId::parse(raw)
        else {
            // An id of the right shape whose seq overflows 64 bits is still an id: it is ahead
            // of anything sequenced, or from another epoch (contract §5, "Anchors").
            return resync(match oversized_anchor_epoch(raw) {
                None => ResyncReason::Invalid,
                Some(other) if other != epoch => ResyncReason::UnknownEpoch,
                Some(_) => ResyncReason::Ahead,
            });
        };
        if anchor_epoch != epoch {
            return resync(ResyncReason::UnknownEpoch);
        }
        if seq > newest {
            return resync(ResyncReason::Ahead);
        }
        match self.lost_after(seq) {
            Some(reason) => resync(reason),
            None => Resume {
                resync: None,
                after: seq,
            },
        }
    }

    /// Whether some event after `seq` has left the buffer, and why (size before age).
    pub(crate) fn lost_after(&self, seq: Seq) -> Option<ResyncReason> {
        if self.last_evicted > seq {
            Some(ResyncReason::Evicted)
        } else if self.last_expired > seq {
            Some(ResyncReason::Expired)
        } else {
            None
        }
    }

    /// The oldest buffered event's seq.
    pub(crate) fn first_seq(&self) -> Option<Seq> {
        self.entries.front().map(|e| e.event.id().seq)
    }

    /// The oldest buffered event after `seq`, with its frame's key.
    pub(crate) fn next_after(&self, seq: Seq) -> Option<(&SequencedEvent, FrameKey)> {
        let index = self.entries.partition_point(|e| e.event.id().seq <= seq);
        self.entries.get(index).map(|e| (&e.event, e.key))
    }

    /// How many events are buffered (some may be past their TTL until the next prune).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of the buffered frames.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// How many buffered events are still within their TTL at `now`.
    pub(crate) fn fresh_len(&self, now: Instant) -> usize {
        let stale = self
            .entries
            .partition_point(|e| now.saturating_duration_since(e.at) >= self.ttl);
        self.entries.len() - stale
    }

    fn evict_front(&mut self) -> bool {
        match self.entries.pop_front() {
            Some(entry) => {
                self.bytes -= entry.event.frame().len();
                self.last_evicted = entry.event.id().seq;
                true
            }
            None => false,
        }
    }
}

/// The epoch of an anchor shaped like an event id (`^[0-9a-f]{8}-(0|[1-9][0-9]*)$`) whose seq
/// does not fit 64 bits, which [`EventId::parse`] refuses; `None` for any other anchor.
fn oversized_anchor_epoch(raw: &str) -> Option<Epoch> {
    let (epoch, seq) = raw.split_once('-')?;
    let id = EventId::parse(&format!("{epoch}-1")).filter(|_| is_seq_digits(seq))?;
    Some(id.epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: Epoch = Epoch(0xabcd_ef01);

    fn anchor(seq: u64) -> String {
        EventId {
            epoch: EPOCH,
            seq: Seq(seq),
        }
        .to_string()
    }

    #[test]
    fn anchor_reasons_in_precedence_order() {
        let buffer = ReplayBuffer::new(10, usize::MAX, Duration::from_secs(60));
        let head = EventId {
            epoch: EPOCH,
            seq: Seq(5),
        };
        let reason = |a: &str| buffer.resume(Some(a), head).resync;
        assert_eq!(reason("garbage"), Some(ResyncReason::Invalid));
        assert_eq!(reason("00000000-1"), Some(ResyncReason::UnknownEpoch));
        assert_eq!(reason(&anchor(6)), Some(ResyncReason::Ahead));
        assert_eq!(reason(&anchor(5)), None);
        assert_eq!(
            reason(&anchor(0)),
            None,
            "from the first event of the epoch"
        );
        assert_eq!(
            reason(&format!(" {}", anchor(5))),
            Some(ResyncReason::Invalid)
        );
        assert_eq!(
            buffer.resume(None, head),
            Resume {
                resync: None,
                after: Seq(5)
            }
        );
    }
}
