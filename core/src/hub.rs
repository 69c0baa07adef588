//! The hub: every connection's state and every delivery decision, driven by its caller.
//!
//! This module holds the [`Hub`] with its run loop, the inputs and outputs, and what happens to
//! one connection (accepting it, its messages, closing it). What concerns all connections
//! lives in its own module: delivering sequenced events and catching up (`broadcast`), the
//! heartbeat tick and liveness (`heartbeat`), queue limits (`backpressure`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::backpressure::{FrameKey, Limits, Queued, SLACK};
use crate::clock::WallClock;
use crate::close::{CloseCause, CloseCode};
use crate::config::HubConfig;
use crate::conn::{CatchUp, Conn, ConnId};
use crate::event::{
    encode_control, types, Epoch, Event, EventId, EventType, Seq, SequencedEvent, Timestamp,
};
use crate::handshake::ConnParams;
use crate::message::{parse_client_message, ClientMessage};
use crate::metrics::Metrics;
use crate::replay::{ReplayBuffer, ResyncReason};

/// The event hub: a sans-IO state machine that owns every connection of `/ws` and fans out
/// the events it is given.
///
/// The hub does not sequence events: a [`Sequencer`](crate::Sequencer) (embedded mode) or an
/// external ordered log (cluster mode) gives each its id and encoding, and the hub delivers
/// what it is handed ([`Hub::deliver`]), deciding what a skip, a repeat or a new epoch in that
/// sequence means for its connections.
///
/// # Run loop
///
/// The hub never reads a clock, sleeps, spawns or touches a socket. Its caller (an adapter)
/// owns it outright and, for every fact it learns, calls in with the current time `now`:
///
/// 1. A handshake that [`Admission`](crate::Admission) accepted becomes [`Hub::accept`]; a
///    client frame, a flushed write or a closed socket becomes [`Hub::handle_input`]; a
///    sequenced event becomes [`Hub::deliver`]; a stop signal becomes [`Hub::shutdown`].
/// 2. After each of those calls, drain [`Hub::poll_output`] until `None` and carry out every
///    [`Output`] in order, without second-guessing it: queue frames to the connection's writer
///    (never wait on a socket here), close or abort it.
/// 3. Set one timer for [`Hub::poll_timeout`]. When it fires, call [`Hub::handle_timeout`] and
///    go to 2. Early or repeated calls are harmless.
///
/// Guarantees:
/// - Time never runs backwards inside the hub: an earlier `now` than one already seen is
///   taken as the latest seen. Nothing panics on peer input or on stale [`ConnId`]s, which are
///   ignored (and counted in [`Metrics::stale_inputs`]).
/// - Each frame is encoded once; every recipient gets a clone of the same [`Bytes`].
/// - Per connection, events go out in strictly increasing `seq` without duplicates, and no
///   stream frame names a lower seq than an earlier one; a heartbeat never names an event the
///   connection is still to receive. A hole in the seqs comes only after a `resync_required`
///   (or before a close).
/// - A connection never has more than [`Hub::max_queued_outputs`] outputs unflushed, as long
///   as the adapter reports written frames with [`Input::Flushed`].
/// - The frames queued to all connections together, each counted once however many
///   connections it was sent to, never pass `max_queued_bytes` by more than one frame
///   (shutdown notices aside): the connections with the most queued are closed with 4008
///   first ([`Output::Discard`]).
/// - After [`Output::Close`] for a connection, only [`Output::Discard`] and [`Output::Abort`]
///   name it; after [`Output::Abort`], nothing does.
/// - The same calls with the same arguments give the same outputs.
pub struct Hub {
    pub(crate) config: HubConfig,
    pub(crate) limits: Limits,
    /// What all the queues hold together, against `max_queued_bytes`.
    pub(crate) queued: Queued,
    /// The newest event delivered (`<epoch>-0` before the first): what heartbeats name.
    pub(crate) head: EventId,
    /// The latest `now` seen.
    pub(crate) now: Instant,
    /// Timestamps of the frames the hub makes itself (heartbeats, control frames).
    pub(crate) clock: WallClock,
    pub(crate) next_conn: u64,
    pub(crate) conns: BTreeMap<ConnId, Conn>,
    /// Close deadlines, earliest first: a connection still here then is aborted.
    pub(crate) close_deadlines: BTreeSet<(Instant, ConnId)>,
    pub(crate) replay: ReplayBuffer,
    pub(crate) next_heartbeat: Option<Instant>,
    /// Set by [`Hub::shutdown`]: when every remaining connection is aborted.
    pub(crate) shutdown_deadline: Option<Instant>,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) metrics: Metrics,
    /// Whether the log behind the hub can re-read events older than the replay buffer
    /// ([`Hub::enable_backfill`]).
    pub(crate) backfill: bool,
}

/// A fact the adapter reports about one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The client sent a text message (reassembled from its fragments).
    Text {
        /// The connection.
        conn: ConnId,
        /// The message bytes as received.
        text: Bytes,
    },
    /// The client sent a binary message; the hub closes with 1003.
    Binary {
        /// The connection.
        conn: ConnId,
    },
    /// The client sent a Ping or Pong control frame: a sign of life.
    Alive {
        /// The connection.
        conn: ConnId,
    },
    /// The WebSocket layer rejected what the client sent.
    Violation {
        /// The connection.
        conn: ConnId,
        /// What was wrong.
        kind: Violation,
    },
    /// The writer put this many frames (and bytes) of the connection on the wire, the oldest
    /// ones it was given. After an [`Output::Discard`] for the connection, reports of frames
    /// written before the adapter dropped the rest are counted as sent and change nothing else.
    Flushed {
        /// The connection.
        conn: ConnId,
        /// Frames written, pings included.
        frames: usize,
        /// Bytes of those frames' payloads (the hub knows them; debug builds check they match).
        bytes: usize,
    },
    /// The log's answer to [`Output::Fetch`]: the events it still holds in that range, oldest
    /// first, each with the time it was published (for the replay TTL).
    Fetched {
        /// The connection.
        conn: ConnId,
        /// The `after` of the fetch answered.
        after: EventId,
        /// The events, with their publication times.
        events: Vec<(SequencedEvent, Timestamp)>,
    },
    /// The socket is gone; the hub forgets the connection.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// How it ended.
        cause: DisconnectCause,
    },
}

/// What the WebSocket layer found wrong in a client's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A message or frame over the size limit: closes with 1009.
    MessageTooLarge,
    /// A text message that is not UTF-8: closes with 1007.
    InvalidUtf8,
    /// Any other breach of RFC 6455 (bad opcode, masking, fragmentation): closes with 1002.
    Protocol,
}

impl Violation {
    fn cause(self) -> CloseCause {
        match self {
            Violation::MessageTooLarge => CloseCause::TooLarge,
            Violation::InvalidUtf8 => CloseCause::InvalidUtf8,
            Violation::Protocol => CloseCause::Protocol,
        }
    }
}

/// How a connection ended, from the adapter's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    /// The client closed first, with this code if its close frame had one.
    Closed(Option<CloseCode>),
    /// The close the hub asked for ([`Output::Close`]) finished.
    Finished,
    /// The socket ended without a close handshake (EOF, reset, IO error).
    Lost,
}

/// A command for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Queue this text frame to the connection's writer. Report it with [`Input::Flushed`]
    /// once written.
    Send {
        /// The connection.
        conn: ConnId,
        /// One JSON envelope, shared with every other recipient.
        frame: Bytes,
    },
    /// Queue a WebSocket Ping (RFC 6455 §5.5.2); it counts as one frame of zero bytes.
    Ping {
        /// The connection.
        conn: ConnId,
    },
    /// Drop every frame queued to this connection that the writer has not begun to write (one
    /// it is writing is finished, so that the frames on the wire stay whole): the hub no longer
    /// counts them, and reports of frames written from now on only count as sent. A
    /// [`Output::Close`] follows. Carry it out at once, ahead of what is queued: it is how a
    /// slow consumer's memory is given back.
    Discard {
        /// The connection.
        conn: ConnId,
    },
    /// Send a close frame after the frames already queued, then end the connection and
    /// report [`Input::Disconnected`] ([`DisconnectCause::Finished`] once the client
    /// answered).
    Close {
        /// The connection.
        conn: ConnId,
        /// The code.
        code: CloseCode,
        /// The reason, at most 123 bytes.
        reason: &'static str,
    },
    /// Drop the socket now without a close handshake; the hub has already forgotten it.
    Abort {
        /// The connection.
        conn: ConnId,
    },
    /// Read the log's events with `after < seq < before` (of `after`'s epoch) and report
    /// them with [`Input::Fetched`]: a resuming connection needs what the replay buffer lost.
    /// Only with [`Hub::enable_backfill`]. An answer that never comes leaves the connection
    /// without replay until it is closed for silence or slowness.
    Fetch {
        /// The connection.
        conn: ConnId,
        /// Its anchor.
        after: EventId,
        /// The oldest event the hub still has (or the one after its head).
        before: Seq,
    },
}

impl Hub {
    /// A hub whose events (until the log says otherwise) are of `epoch`; `now` and `wall` are
    /// the same moment on the monotonic and the wall clock.
    pub fn new(config: HubConfig, epoch: Epoch, now: Instant, wall: OffsetDateTime) -> Hub {
        let replay = ReplayBuffer::new(
            config.replay_buffer_size(),
            config.replay_buffer_bytes(),
            config.replay_ttl(),
        );
        Hub {
            next_heartbeat: Some(now + config.heartbeat_interval()),
            limits: Limits::new(&config),
            queued: Queued::new(&config),
            config,
            head: EventId::start(epoch),
            now,
            clock: WallClock::new(now, wall),
            next_conn: 1,
            conns: BTreeMap::new(),
            close_deadlines: BTreeSet::new(),
            replay,
            shutdown_deadline: None,
            outputs: VecDeque::new(),
            metrics: Metrics::default(),
            backfill: false,
        }
    }

    /// Declares that the log behind this hub keeps more events than the replay buffer (a
    /// cluster's stream): an anchor whose next events the buffer has lost is then answered by
    /// [`Output::Fetch`] instead of `resync_required`, and the hub judges what comes back.
    pub fn enable_backfill(&mut self) {
        self.backfill = true;
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The epoch of the events being delivered.
    pub fn epoch(&self) -> Epoch {
        self.head.epoch
    }

    /// The newest event delivered (`<epoch>-0` before the first): what a heartbeat sent now
    /// would name, and the `X-Event-Head` of the HTTP API.
    pub fn head(&self) -> EventId {
        self.head
    }

    /// Registers a connection whose handshake completed (at the `101 Switching Protocols`);
    /// returns its new id.
    ///
    /// Registration and the replay snapshot are one step: the connection gets every matching
    /// event after its anchor (or, without one, every event delivered from now on), then
    /// live events, with no gap, duplicate or reordering. An anchor that cannot be honoured
    /// first gets `resync_required`. During shutdown the connection gets the
    /// `health_status` notice and is closed with 1001.
    pub fn accept(&mut self, now: Instant, params: ConnParams) -> ConnId {
        self.advance(now);
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.metrics.connections_total += 1;
        self.conns.insert(id, Conn::new(self.now, params.filter));
        self.replay.prune(self.now);
        let resume = self.replay.resume(params.anchor.as_deref(), self.head);
        if self.shutdown_deadline.is_some() {
            if let Some(reason) = resume.resync {
                self.send_resync(id, reason, params.anchor.as_deref());
            }
            self.send_notice(id, resume.after);
            return id;
        }
        if let Some(after) = self.fetchable(params.anchor.as_deref(), resume.resync) {
            // The log may still hold what the buffer lost: ask for it before judging.
            self.metrics.replays += 1;
            self.fetch(id, CatchUp::from(after.seq), after);
            return id;
        }
        if let Some(reason) = resume.resync {
            self.send_resync(id, reason, params.anchor.as_deref());
        }
        if self.replay.next_after(resume.after).is_some() {
            self.metrics.replays += 1;
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.catch_up = Some(CatchUp::from(resume.after));
            }
            self.pump(id);
        }
        id
    }

    /// The anchor, if the log should be asked for the events after it: backfill is on, and
    /// the buffer lost some of them although the anchor is of this epoch and not ahead.
    fn fetchable(&self, anchor: Option<&str>, resync: Option<ResyncReason>) -> Option<EventId> {
        let anchor = EventId::parse(anchor?)?;
        let lost = resync == Some(ResyncReason::Evicted);
        (self.backfill && lost && anchor.epoch == self.head.epoch && anchor.seq < self.head.seq)
            .then_some(anchor)
    }

    /// Feeds one fact about a connection. Inputs for unknown or closing connections are
    /// ignored (a closing one still has its flushes counted).
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        self.advance(now);
        match input {
            Input::Text { conn, text } => self.on_text(conn, &text),
            Input::Binary { conn } => {
                if self.touch(conn) {
                    self.close(conn, CloseCause::Binary);
                }
            }
            Input::Alive { conn } => {
                self.touch(conn);
            }
            Input::Violation { conn, kind } => {
                if self.touch(conn) {
                    self.close(conn, kind.cause());
                }
            }
            Input::Flushed {
                conn,
                frames,
                bytes,
            } => self.on_flushed(conn, frames, bytes),
            Input::Fetched {
                conn,
                after,
                events,
            } => self.on_fetched(conn, after, events),
            Input::Disconnected { conn, cause } => self.on_disconnected(conn, cause),
        }
    }

    /// Starts the shutdown: every open connection gets `health_status`
    /// `{"status":"shutting_down"}` and then close 1001; whatever remains after
    /// `shutdown_grace` is aborted. [`Hub::deliver`] ignores events from now on. Repeated
    /// calls are no-ops.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.now + self.config.shutdown_grace());
        self.next_heartbeat = None;
        let open: Vec<(ConnId, Seq)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(id, c)| (*id, c.catch_up.as_ref().map_or(self.head.seq, |c| c.cursor)))
            .collect();
        // Most connections are live and share one notice; one catching up names its own place.
        let notice = self.notice_frame(self.head.seq);
        let shared = (notice.clone(), self.queued.new_frame(notice.len()));
        for (id, position) in open {
            let (frame, key) = if position == self.head.seq {
                (shared.0.clone(), shared.1)
            } else {
                (self.notice_frame(position), FrameKey::Own)
            };
            let conn = self.conns.get_mut(&id).expect("listed above");
            conn.catch_up = None; // the notice goes out now; replay is abandoned
            conn.queue.push_notice(key, frame.len(), &mut self.queued);
            conn.last_sent = Some(EventId {
                epoch: self.head.epoch,
                seq: position,
            });
            self.outputs.push_back(Output::Send { conn: id, frame });
            self.close(id, CloseCause::ShuttingDown);
        }
    }

    /// Whether [`Hub::shutdown`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown_deadline.is_some()
    }

    /// Whether shutdown has begun and every connection is gone.
    pub fn is_finished(&self) -> bool {
        self.shutdown_deadline.is_some() && self.conns.is_empty()
    }

    /// Runs what is due at `now`: heartbeats and liveness checks, aborts of closes that did
    /// not finish, the shutdown deadline. Safe to call early or repeatedly.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self
            .shutdown_deadline
            .is_some_and(|deadline| self.now >= deadline)
        {
            let ids: Vec<ConnId> = self.conns.keys().copied().collect();
            for id in ids {
                self.abort(id);
            }
        }
        while let Some(&(deadline, id)) = self.close_deadlines.first() {
            if deadline > self.now {
                break;
            }
            self.abort(id);
        }
        self.heartbeat_if_due();
    }

    /// Re-anchors the timestamps of the frames the hub makes to the wall clock: `now` and
    /// `wall` are the same moment. Adapters call it at every heartbeat tick, so that a
    /// suspend or a clock step does not leave timestamps drifting; they never go backwards.
    pub fn set_wall_clock(&mut self, now: Instant, wall: OffsetDateTime) {
        self.advance(now);
        self.clock.anchor(self.now, wall);
    }

    /// The next command for the adapter, in order; `None` when there is nothing to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Hub::handle_timeout`] must next be called; `None` if nothing is pending. After
    /// `handle_timeout(t)` this is `None` or later than `t`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let shutdown = self.shutdown_deadline.filter(|_| !self.conns.is_empty());
        let close = self.close_deadlines.first().map(|(deadline, _)| *deadline);
        [self.next_heartbeat, close, shutdown]
            .into_iter()
            .flatten()
            .min()
    }

    /// Counters and gauges as of `now`.
    pub fn metrics(&self, now: Instant) -> Metrics {
        let mut metrics = self.metrics.clone();
        metrics.connections = self.conns.len();
        metrics.replay_buffered = self.replay.fresh_len(now.max(self.now));
        metrics.replay_held = self.replay.len();
        metrics.replay_bytes = self.replay.bytes();
        metrics.queued_bytes = self.queued.total();
        metrics
    }

    /// The most outputs one connection can have unflushed: size adapter queues to this.
    pub fn max_queued_outputs(&self) -> usize {
        self.config.send_queue_frames() + SLACK
    }

    /// Frames and bytes queued to a connection and not yet flushed, if the hub knows it:
    /// what the adapter's queue for it should hold.
    pub fn queued(&self, conn: ConnId) -> Option<(usize, usize)> {
        self.conns
            .get(&conn)
            .map(|c| (c.queue.frames, c.queue.bytes))
    }

    pub(crate) fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Records a sign of life; `false` if the connection is unknown or closing.
    fn touch(&mut self, conn: ConnId) -> bool {
        match self.conns.get_mut(&conn) {
            Some(c) if c.is_open() => {
                c.last_life = self.now;
                true
            }
            _ => {
                self.metrics.stale_inputs += 1;
                false
            }
        }
    }

    fn on_text(&mut self, id: ConnId, text: &[u8]) {
        if !self.touch(id) {
            return;
        }
        let conn = self.conns.get_mut(&id).expect("touch checked it");
        if text.len() > self.config.max_client_message() {
            return self.close(id, CloseCause::TooLarge);
        }
        if !conn.rate.allow(
            self.now,
            self.config.client_rate(),
            self.config.client_burst(),
        ) {
            return self.close(id, CloseCause::RateLimited);
        }
        if std::str::from_utf8(text).is_err() {
            return self.close(id, CloseCause::InvalidUtf8);
        }
        match parse_client_message(text) {
            Ok(ClientMessage::Ping) => self.send_control(id, types::PONG, json!({})),
            Ok(ClientMessage::Pong) => {}
            Ok(ClientMessage::Subscribe(filter)) => {
                let items: Vec<String> = filter.items().collect();
                conn.filter = filter;
                self.send_control(id, types::SUBSCRIBED, json!({ "types": items }));
            }
            Err(e) => {
                let payload = json!({ "code": e.code(), "detail": e.detail() });
                self.send_control(id, types::ERROR, payload);
            }
        }
    }

    fn on_flushed(&mut self, id: ConnId, frames: usize, bytes: usize) {
        let Some(conn) = self.conns.get_mut(&id) else {
            self.metrics.stale_inputs += 1;
            return;
        };
        self.metrics.frames_sent += frames as u64;
        if conn.discarded {
            return; // written before the adapter dropped the rest: nothing is counted now
        }
        let before = conn.queue.bytes;
        conn.queue.flushed(frames, &mut self.queued);
        debug_assert!(
            frames > before || before - conn.queue.bytes == bytes,
            "{id}: the adapter reported {bytes} bytes for {frames} frames, the hub counted {}",
            before - conn.queue.bytes
        );
        if conn.catch_up.is_some() {
            self.pump(id);
        }
    }

    /// Judges the log's answer to a fetch: a fresh run of events right after the anchor is
    /// replayed as is; one that starts later (trimmed from the log, or past the TTL) is
    /// replayed after `resync_required`.
    fn on_fetched(&mut self, id: ConnId, after: EventId, events: Vec<(SequencedEvent, Timestamp)>) {
        let ttl = self.config.replay_ttl();
        let wall = self.clock.at(self.now);
        let Some(catch_up) = self
            .conns
            .get_mut(&id)
            .filter(|c| c.is_open())
            .and_then(|c| c.catch_up.as_mut())
            .filter(|c| c.fetching.is_some_and(|(asked, _)| asked == after))
        else {
            self.metrics.stale_inputs += 1;
            return;
        };
        let (_, before) = catch_up.fetching.take().expect("filtered above");
        let mut aged = false;
        let mut next = after.seq.next();
        let mut started = false;
        for (event, at) in events {
            let id = event.id();
            if id.epoch != after.epoch || id.seq < next || id.seq >= before {
                continue; // outside the range asked, or out of order
            }
            if wall.saturating_since(at) >= ttl {
                aged = true;
                continue;
            }
            if started && id.seq != next {
                break; // the log has no holes; keep the run that follows on
            }
            started = true;
            next = id.seq.next();
            let key = self.queued.new_frame(event.frame().len());
            catch_up.backlog.push_back((event, key));
        }
        let first = catch_up.backlog.front().map(|(e, _)| e.id().seq);
        if first.is_none() {
            // Nothing usable: go on with what the buffer has.
            catch_up.cursor = catch_up.cursor.max(Seq(before.0.saturating_sub(1)));
        }
        // Capped answers are fine (the rest is asked for next); a late start is a hole.
        if first != Some(after.seq.next()) {
            let reason = if aged {
                ResyncReason::Expired
            } else {
                ResyncReason::Evicted
            };
            let anchor = after.to_string();
            self.send_resync(id, reason, Some(&anchor));
        }
        self.pump(id);
    }

    fn on_disconnected(&mut self, id: ConnId, cause: DisconnectCause) {
        let Some(mut conn) = self.conns.remove(&id) else {
            self.metrics.stale_inputs += 1;
            return;
        };
        conn.queue.release(&mut self.queued);
        match conn.closing {
            // The hub's own close, counted when it was decided.
            Some(deadline) => {
                self.close_deadlines.remove(&(deadline, id));
            }
            None => self.metrics.count_close(match cause {
                DisconnectCause::Closed(code) => code.unwrap_or(CloseCode::NO_STATUS).0,
                DisconnectCause::Finished | DisconnectCause::Lost => CloseCode::ABNORMAL.0,
            }),
        }
    }

    /// Tells one connection its anchor cannot be resumed without a gap.
    fn send_resync(&mut self, id: ConnId, reason: ResyncReason, anchor: Option<&str>) {
        *self.metrics.resyncs.entry(reason).or_default() += 1;
        let payload = json!({ "reason": reason.as_str(), "last_event_id": anchor });
        self.send_control(id, types::RESYNC_REQUIRED, payload);
    }

    /// Queues a control frame (not part of the stream: no id) to one connection; one without
    /// room in its queue is closed as a slow consumer.
    pub(crate) fn send_control(&mut self, id: ConnId, name: &'static str, payload: Value) {
        let frame = self.control_frame(name, payload);
        self.make_room(frame.len());
        let Some(conn) = self.conns.get_mut(&id).filter(|c| c.is_open()) else {
            return;
        };
        if conn
            .queue
            .try_push(FrameKey::Own, frame.len(), self.limits, &mut self.queued)
        {
            self.outputs.push_back(Output::Send { conn: id, frame });
        } else {
            self.close(id, CloseCause::SlowConsumer);
        }
    }

    /// Encodes a control frame with the time of now.
    pub(crate) fn control_frame(&mut self, name: &'static str, payload: Value) -> Bytes {
        let Value::Object(payload) = payload else {
            unreachable!("control payloads are objects")
        };
        encode_control(name, payload, self.clock.at(self.now))
    }

    /// The `health_status` `shutting_down` notice, naming the event at `position`.
    fn notice_frame(&mut self, position: Seq) -> Bytes {
        let mut payload = Map::new();
        payload.insert("status".into(), "shutting_down".into());
        let id = EventId {
            epoch: self.head.epoch,
            seq: position,
        };
        Event::new(EventType::internal(types::HEALTH_STATUS))
            .with_payload(payload)
            .sequence(id, self.clock.at(self.now))
            .frame()
            .clone()
    }

    /// The notice for a connection accepted during the shutdown, then its close.
    fn send_notice(&mut self, id: ConnId, position: Seq) {
        let frame = self.notice_frame(position);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.queue
                .push_notice(FrameKey::Own, frame.len(), &mut self.queued);
            self.outputs.push_back(Output::Send { conn: id, frame });
        }
        self.close(id, CloseCause::ShuttingDown);
    }

    /// Decides a close: the close frame follows what is queued, nothing more is sent, and the
    /// socket is aborted if the close has not finished by the deadline. A slow consumer's
    /// queued frames are dropped first: it is not reading them, and it resumes from the last
    /// event it did read.
    pub(crate) fn close(&mut self, id: ConnId, cause: CloseCause) {
        let deadline = self
            .shutdown_deadline
            .unwrap_or(self.now + self.config.close_timeout());
        if self.conns.get(&id).is_none_or(|c| c.closing.is_some()) {
            return;
        }
        if cause == CloseCause::SlowConsumer {
            self.discard(id);
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.closing = Some(deadline);
        conn.catch_up = None;
        self.close_deadlines.insert((deadline, id));
        let (code, reason) = cause.frame();
        self.metrics.count_close(code.0);
        self.outputs.push_back(Output::Close {
            conn: id,
            code,
            reason,
        });
    }

    /// Drops the frames queued to a connection ([`Output::Discard`]); a no-op once done, or
    /// with nothing queued.
    fn discard(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.discarded || conn.queue.frames == 0 {
            return;
        }
        conn.queue.release(&mut self.queued);
        conn.discarded = true;
        self.outputs.push_back(Output::Discard { conn: id });
    }

    /// Makes room for `len` more bytes in the queues together (the global budget): while they
    /// do not fit, the connection with the most bytes queued (the older one of equals) has its
    /// frames dropped and, if still open, is closed with 4008.
    pub(crate) fn make_room(&mut self, len: usize) {
        if self.queued.fits(len) {
            return;
        }
        let mut heaviest: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.discarded && c.queue.bytes > 0)
            .map(|(id, c)| (c.queue.bytes, *id))
            .collect();
        heaviest.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, id) in heaviest {
            if self.queued.fits(len) {
                break;
            }
            self.discard(id);
            self.close(id, CloseCause::SlowConsumer);
        }
    }

    fn abort(&mut self, id: ConnId) {
        if let Some(mut conn) = self.conns.remove(&id) {
            conn.queue.release(&mut self.queued);
            if let Some(deadline) = conn.closing {
                self.close_deadlines.remove(&(deadline, id));
            }
            self.outputs.push_back(Output::Abort { conn: id });
        }
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("head", &self.head)
            .field("connections", &self.conns.len())
            .field("replay_len", &self.replay.len())
            .finish_non_exhaustive()
    }
}
