//! Broadcast: delivering sequenced events to every connection, and catching connections up.
//!
//! Theory of operation. Events arrive already sequenced ([`Hub::deliver`]), from the local
//! [`Sequencer`](crate::Sequencer) or from an external log. The hub compares each with its
//! head, the newest event it delivered:
//!
//! | the event's id | meaning | the hub |
//! | --- | --- | --- |
//! | same epoch, head + 1 | the next event | delivers it |
//! | same epoch, beyond head + 1 | the log lost entries before this node read them | tells every open connection `resync_required` (`evicted`), then delivers it |
//! | another epoch | the log started afresh (lost and recreated) | empties the replay buffer, moves to the new epoch, tells every open connection `resync_required` (`unknown_epoch`), then delivers it |
//! | same epoch, at or before head | a repeat | ignores it (counted in [`Metrics::stale_events`](crate::Metrics::stale_events)) |
//!
//! The in-band `resync_required` carries the last stream frame the connection was sent (or
//! null), and closes nobody. Delivery puts each event in the replay buffer and queues the one
//! shared frame to every live connection whose filter takes it. A connection that is catching
//! up (it resumed from an anchor) takes events from the buffer instead, as fast as its queue
//! drains ([`Hub::pump`]), so replay and live events never interleave; once it has everything,
//! it is live.

use std::time::Instant;

use serde_json::json;

use crate::backpressure::FrameKey;
use crate::close::CloseCause;
use crate::conn::{CatchUp, ConnId};
use crate::event::{types, Epoch, EventId, Seq, SequencedEvent};
use crate::hub::{Hub, Output};
use crate::replay::ResyncReason;

/// What [`Hub::deliver`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// The next event: delivered.
    Delivered,
    /// Delivered after telling every open connection to resync, for this reason: the log
    /// skipped events (`Evicted`) or started a new epoch (`UnknownEpoch`).
    Resynced(ResyncReason),
    /// Not after the head: a repeat, ignored.
    Stale,
    /// The hub is shutting down: ignored.
    ShuttingDown,
}

impl Hub {
    /// Delivers an event sequenced by the [`Sequencer`](crate::Sequencer) or an external
    /// log to every connection whose filter it passes, following the log rules of the
    /// module docs. Never waits: slow connections are closed with 4008 instead.
    pub fn deliver(&mut self, now: Instant, event: SequencedEvent) -> Delivery {
        self.advance(now);
        if self.shutdown_deadline.is_some() {
            return Delivery::ShuttingDown;
        }
        let id = event.id();
        let mut resync = None;
        if id.epoch != self.head.epoch {
            self.replay.reset();
            self.head = EventId::start(id.epoch);
            resync = Some(ResyncReason::UnknownEpoch);
        } else if id.seq <= self.head.seq {
            self.metrics.stale_events += 1;
            return Delivery::Stale;
        }
        if id.seq.0 > self.head.seq.0 + 1 {
            // The events in between will never come: anchors before them cannot resume.
            self.replay.mark_missing(Seq(id.seq.0 - 1));
            resync = resync.or(Some(ResyncReason::Evicted));
        }
        if let Some(reason) = resync {
            self.resync_all(reason, id.seq);
        }
        self.head = id;
        self.fan_out(event);
        match resync {
            Some(reason) => Delivery::Resynced(reason),
            None => Delivery::Delivered,
        }
    }

    /// The log started a new epoch and has no event in it yet (it was lost and recreated):
    /// empties the replay buffer, moves the head to `<epoch>-0` and tells every open
    /// connection `resync_required` (`unknown_epoch`). `false` if `epoch` is the current one
    /// (or the hub is shutting down): nothing changes.
    pub fn start_epoch(&mut self, now: Instant, epoch: Epoch) -> bool {
        self.advance(now);
        if self.shutdown_deadline.is_some() || epoch == self.head.epoch {
            return false;
        }
        self.replay.reset();
        self.head = EventId::start(epoch);
        self.resync_all(ResyncReason::UnknownEpoch, Seq(1));
        true
    }

    /// Tells every open connection that its stream has a hole before `next`; a catching-up
    /// connection abandons the rest of its replay and goes on with `next`, as its queue
    /// drains. The notice takes one of the queue's extra slots: nobody is closed for it unless
    /// already too far behind.
    fn resync_all(&mut self, reason: ResyncReason, next: Seq) {
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(id, _)| *id)
            .collect();
        let mut slow = Vec::new();
        for id in open {
            *self.metrics.resyncs.entry(reason).or_default() += 1;
            let conn = self.conns.get_mut(&id).expect("listed above");
            if let Some(catch_up) = &mut conn.catch_up {
                catch_up.cursor = Seq(next.0 - 1);
                catch_up.heartbeat = None;
                catch_up.backlog.clear();
                catch_up.fetching = None;
            }
            let last = conn.last_sent.map(|id| id.to_string());
            let payload = json!({ "reason": reason.as_str(), "last_event_id": last });
            let frame = self.control_frame(types::RESYNC_REQUIRED, payload);
            self.make_room(frame.len());
            let Some(conn) = self.conns.get_mut(&id).filter(|c| c.is_open()) else {
                continue; // shed to make room
            };
            let (len, limits) = (frame.len(), self.limits);
            if conn
                .queue
                .push_extra(FrameKey::Own, len, limits, &mut self.queued)
            {
                self.outputs.push_back(Output::Send { conn: id, frame });
            } else {
                slow.push(id);
            }
        }
        for id in slow {
            self.close(id, CloseCause::SlowConsumer);
        }
    }

    /// Buffers the event and queues it to every live connection it matches, after making
    /// room for it in the global budget; connections that are catching up take it from the
    /// buffer in turn.
    fn fan_out(&mut self, event: SequencedEvent) {
        self.metrics.events_published += 1;
        let key = self.queued.new_frame(event.frame().len());
        self.replay.push(self.now, event.clone(), key);
        let (id, name, frame) = (event.id(), event.event_type().as_str(), event.frame());
        self.make_room(self.queued.cost(key, frame.len()));
        let mut slow = Vec::new();
        let mut catching_up = Vec::new();
        let mut holders = 0;
        for (&conn_id, conn) in self.conns.iter_mut() {
            if !conn.is_open() {
                continue;
            }
            if conn.catch_up.is_some() {
                catching_up.push(conn_id);
            } else if !conn.filter.matches(name) {
                continue;
            } else if conn.queue.try_push_shared(key, frame.len(), self.limits) {
                holders += 1;
                conn.last_sent = Some(id);
                self.outputs.push_back(Output::Send {
                    conn: conn_id,
                    frame: frame.clone(),
                });
            } else {
                slow.push(conn_id);
            }
        }
        self.queued.add_holders(key, frame.len(), holders);
        for conn in slow {
            self.close(conn, CloseCause::SlowConsumer);
        }
        for conn in catching_up {
            self.pump(conn);
        }
    }

    /// Sends a catching-up connection the next buffered frames while its queue has room;
    /// switches it to live delivery once it has everything.
    pub(crate) fn pump(&mut self, id: ConnId) {
        let Some(mut catch_up) = self.conns.get_mut(&id).and_then(|c| c.catch_up.take()) else {
            return;
        };
        let epoch = self.head.epoch;
        loop {
            if catch_up.fetching.is_some() {
                return self.keep_catching_up(id, catch_up); // the log has not answered yet
            }
            if catch_up.backlog.is_empty() && self.replay.lost_after(catch_up.cursor).is_some() {
                if self.backfill {
                    // The buffer lost what comes next, but the log keeps more: ask it.
                    let after = EventId {
                        epoch,
                        seq: catch_up.cursor,
                    };
                    return self.fetch(id, catch_up, after);
                }
                // Live traffic pushed out events this connection had yet to get.
                return self.close(id, CloseCause::SlowConsumer);
            }
            // Events fetched from the log come first, then the buffer's.
            let next = match catch_up.backlog.front() {
                Some((fetched, key)) => Some((fetched, *key)),
                None => self.replay.next_after(catch_up.cursor),
            };
            let next = next.map(|(e, key)| {
                let wanted = self
                    .conns
                    .get(&id)
                    .is_some_and(|c| c.filter.matches(e.event_type().as_str()));
                (e.id().seq, e.frame().clone(), key, wanted)
            });
            // A heartbeat goes out in its place: once the replay has reached the event it
            // names, or is past it (a hole the log left, told by `resync_required`).
            if let Some((named, frame, key)) = catch_up.heartbeat.take() {
                let due = catch_up.cursor >= named || next.as_ref().is_none_or(|n| n.0 > named);
                if due {
                    let at = EventId { epoch, seq: named };
                    if !self.try_queue(id, &frame, key, at) {
                        catch_up.heartbeat = Some((named, frame, key));
                        return self.keep_catching_up(id, catch_up);
                    }
                    continue;
                }
                catch_up.heartbeat = Some((named, frame, key));
            }
            let Some((seq, frame, key, wanted)) = next else {
                return; // caught up: live delivery from now on
            };
            if wanted && !self.try_queue(id, &frame, key, EventId { epoch, seq }) {
                return self.keep_catching_up(id, catch_up); // more when the writer reports a flush
            }
            if catch_up
                .backlog
                .front()
                .is_some_and(|(e, _)| e.id().seq == seq)
            {
                catch_up.backlog.pop_front();
            }
            catch_up.cursor = seq;
        }
    }

    /// Queues a replayed frame if the queue has room, without closing anyone for it: replay
    /// is paced by the queue and never makes a slow consumer by itself. The global budget may
    /// shed others (or this connection) to make room.
    fn try_queue(
        &mut self,
        id: ConnId,
        frame: &bytes::Bytes,
        key: FrameKey,
        names: EventId,
    ) -> bool {
        if !self.conns.get(&id).is_some_and(|c| c.is_open()) {
            return false;
        }
        self.make_room(self.queued.cost(key, frame.len()));
        let Some(conn) = self.conns.get_mut(&id).filter(|c| c.is_open()) else {
            return false;
        };
        if !conn
            .queue
            .try_push(key, frame.len(), self.limits, &mut self.queued)
        {
            return false;
        }
        conn.last_sent = Some(names);
        self.outputs.push_back(Output::Send {
            conn: id,
            frame: frame.clone(),
        });
        true
    }

    /// Asks the log for the events after `after` that the buffer no longer has; replay
    /// waits for the answer ([`Input::Fetched`](crate::Input::Fetched)).
    pub(crate) fn fetch(&mut self, id: ConnId, mut catch_up: Box<CatchUp>, after: EventId) {
        let before = self.replay.first_seq().unwrap_or(self.head.seq.next());
        catch_up.fetching = Some((after, before));
        self.metrics.fetches += 1;
        self.outputs.push_back(Output::Fetch {
            conn: id,
            after,
            before,
        });
        self.keep_catching_up(id, catch_up);
    }

    fn keep_catching_up(&mut self, id: ConnId, catch_up: Box<CatchUp>) {
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.catch_up = Some(catch_up);
        }
    }
}
