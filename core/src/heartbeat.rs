//! The heartbeat tick and liveness: one heartbeat and one Ping per connection per interval,
//! and the close of connections that stopped showing life.
//!
//! A heartbeat takes no seq of its own: its `event_id` names the head, the newest event
//! delivered (`<epoch>-0` before the first), so that any heartbeat is a safe anchor. It is
//! encoded once per tick and shared by every connection. A connection that is catching up
//! gets it in its place in the stream: once its replay has reached the event it names.
//!
//! Liveness is checked at the ticks: a connection silent for `liveness_timeout` is closed
//! with 4408, so the close falls within `[timeout, timeout + interval]` of its last sign of
//! life.

use crate::backpressure::FrameKey;
use crate::close::CloseCause;
use crate::conn::ConnId;
use crate::event::{types, Event, EventType};
use crate::hub::{Hub, Output};

impl Hub {
    /// Ticks if the heartbeat is due, and schedules the next.
    pub(crate) fn heartbeat_if_due(&mut self) {
        let Some(due) = self.next_heartbeat.filter(|due| self.now >= *due) else {
            return;
        };
        self.tick();
        let interval = self.config.heartbeat_interval();
        // Keep the cadence; after a long stall (a suspended machine) start afresh.
        let next = due + interval;
        self.next_heartbeat = Some(if next <= self.now {
            self.now + interval
        } else {
            next
        });
    }

    /// Closes silent connections, then sends one heartbeat (one encoding) and one Ping to
    /// every open connection.
    fn tick(&mut self) {
        self.metrics.heartbeat_ticks += 1;
        let timeout = self.config.liveness_timeout();
        let silent: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.is_open() && self.now.saturating_duration_since(c.last_life) >= timeout
            })
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            self.close(id, CloseCause::Liveness);
        }
        let head = self.head;
        let frame = Event::new(EventType::internal(types::HEARTBEAT))
            .sequence(head, self.clock.at(self.now))
            .frame()
            .clone();
        let key = self.queued.new_frame(frame.len());
        self.make_room(frame.len());
        let mut slow = Vec::new();
        let mut catching_up = Vec::new();
        let (limits, queued) = (self.limits, &mut self.queued);
        let mut holders = 0;
        for (&id, conn) in self.conns.iter_mut().filter(|(_, c)| c.is_open()) {
            if let Some(catch_up) = &mut conn.catch_up {
                catch_up.heartbeat = Some((head.seq, frame.clone(), key));
                catching_up.push(id);
            } else if conn.queue.try_push_shared(key, frame.len(), limits) {
                holders += 1;
                conn.last_sent = Some(head);
                self.outputs.push_back(Output::Send {
                    conn: id,
                    frame: frame.clone(),
                });
            } else {
                slow.push(id);
                continue;
            }
            if conn.queue.push_extra(FrameKey::Own, 0, limits, queued) {
                self.outputs.push_back(Output::Ping { conn: id });
            }
        }
        queued.add_holders(key, frame.len(), holders);
        for id in slow {
            self.close(id, CloseCause::SlowConsumer);
        }
        for id in catching_up {
            self.pump(id);
        }
    }
}
