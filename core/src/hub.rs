//! The hub: every connection's state and every delivery decision, driven by its caller.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

use crate::close::CloseCode;
use crate::config::HubConfig;
use crate::conn::{CatchUp, Conn, ConnId};
use crate::event::{
    encode_control, types, Epoch, Event, EventId, EventType, Seq, SequencedEvent, Timestamp,
};
use crate::handshake::ConnParams;
use crate::message::{parse_client_message, ClientMessage};
use crate::metrics::Metrics;
use crate::replay::ReplayBuffer;

/// How many outputs beyond `send_queue_frames` one connection can have in flight: a ping, the
/// shutdown's `health_status` and a close. An adapter queue of
/// [`Hub::max_queued_outputs`] therefore never overflows.
const QUEUE_SLACK: usize = 3;

/// The event hub: a sans-IO state machine that owns every connection of `/ws`.
///
/// # Run loop
///
/// The hub never reads a clock, sleeps, spawns or touches a socket. Its caller (an adapter)
/// owns it outright and, for every fact it learns, calls in with the current time `now`:
///
/// 1. A handshake that [`decide`](crate::decide)d `Accept` becomes [`Hub::accept`]; a client
///    frame, a flushed write or a closed socket becomes [`Hub::handle_input`]; the app calls
///    [`Hub::publish`]; a stop signal becomes [`Hub::shutdown`].
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
/// - Each event is encoded once; every recipient gets a clone of the same [`Bytes`].
/// - Per connection, stream frames go out in strictly increasing `seq`, without duplicates;
///   a gap happens only after a `resync_required` or before a close.
/// - A connection never has more than [`Hub::max_queued_outputs`] outputs unflushed, as long
///   as the adapter reports written frames with [`Input::Flushed`].
/// - After [`Output::Close`] or [`Output::Abort`] for a connection, no other output names it.
/// - The same calls with the same arguments give the same outputs.
pub struct Hub {
    config: HubConfig,
    epoch: Epoch,
    /// The latest `now` seen.
    now: Instant,
    /// A monotonic instant and the wall-clock time it stands for: timestamps are derived from
    /// `now`, so they never jump backwards with the system clock.
    clock_origin: (Instant, Timestamp),
    next_conn: u64,
    conns: BTreeMap<ConnId, Conn>,
    /// Close deadlines, earliest first: a connection still here then is aborted.
    close_deadlines: BTreeSet<(Instant, ConnId)>,
    replay: ReplayBuffer,
    /// The newest stream position handed out (events and heartbeats).
    last_seq: Seq,
    next_heartbeat: Option<Instant>,
    /// Set by [`Hub::shutdown`]: when every remaining connection is aborted.
    shutdown_deadline: Option<Instant>,
    outputs: VecDeque<Output>,
    metrics: Metrics,
}

/// A fact the adapter reports about one connection, or about a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The writer put this many frames (and bytes) of the connection on the wire.
    Flushed {
        /// The connection.
        conn: ConnId,
        /// Frames written, pings included.
        frames: usize,
        /// Bytes of those frames' payloads.
        bytes: usize,
    },
    /// The socket is gone; the hub forgets the connection.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// How it ended.
        cause: DisconnectCause,
    },
    /// A handshake was refused with this HTTP status before upgrading (for metrics).
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// A handshake was answered with this close code right after upgrading (for metrics).
    Rejected {
        /// The close code.
        code: CloseCode,
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
    fn close_code(self) -> CloseCode {
        match self {
            Violation::MessageTooLarge => CloseCode::MESSAGE_TOO_BIG,
            Violation::InvalidUtf8 => CloseCode::INVALID_PAYLOAD,
            Violation::Protocol => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// How a connection ended, from the adapter's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectCause {
    /// The client sent a close frame, with this code if any.
    Closed(Option<CloseCode>),
    /// The socket ended without a close frame (EOF, reset, IO error), or the adapter finished
    /// a close the hub asked for.
    Lost,
}

/// A command for the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Send a close frame after the frames already queued, then end the connection and
    /// report [`Input::Disconnected`].
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
}

/// Why an event was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The hub is shutting down; nothing new is sent.
    ShuttingDown,
    /// A pre-sequenced event from another epoch than the hub's.
    ForeignEpoch,
    /// A pre-sequenced event whose seq is not after the newest one.
    OutOfOrder,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishError::ShuttingDown => "the hub is shutting down",
            PublishError::ForeignEpoch => "the event belongs to another epoch",
            PublishError::OutOfOrder => "the event's seq is not after the newest",
        })
    }
}

impl std::error::Error for PublishError {}

impl Hub {
    /// A hub for one run: `epoch` must be fresh and random for every start; `now` and `wall`
    /// are the same moment on the monotonic and the wall clock.
    pub fn new(config: HubConfig, epoch: Epoch, now: Instant, wall: OffsetDateTime) -> Hub {
        let replay = ReplayBuffer::new(
            config.replay_buffer_size(),
            config.replay_buffer_bytes(),
            config.replay_ttl(),
        );
        Hub {
            next_heartbeat: Some(now + config.heartbeat_interval()),
            config,
            epoch,
            now,
            clock_origin: (now, Timestamp::new(wall)),
            next_conn: 1,
            conns: BTreeMap::new(),
            close_deadlines: BTreeSet::new(),
            replay,
            last_seq: Seq(0),
            shutdown_deadline: None,
            outputs: VecDeque::new(),
            metrics: Metrics::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// This run's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The newest stream position handed out.
    pub fn last_seq(&self) -> Seq {
        self.last_seq
    }

    /// Registers a connection whose handshake completed; returns its new id.
    ///
    /// Registration and the replay snapshot are one step: the connection gets every matching
    /// event after its anchor (or, without one, every event published from now on), then
    /// live events, with no gap, duplicate or reordering. An anchor that cannot be honoured
    /// first gets `resync_required`. During shutdown the connection is closed with 1001.
    pub fn accept(&mut self, now: Instant, params: ConnParams) -> ConnId {
        self.advance(now);
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.metrics.connections_total += 1;
        self.conns.insert(
            id,
            Conn::new(self.now, params.filter, params.subscribe_token),
        );
        if self.shutdown_deadline.is_some() {
            self.close(id, CloseCode::GOING_AWAY, "server shutting down");
            return id;
        }
        self.replay.prune(self.now);
        let resume = self
            .replay
            .resume(params.anchor.as_deref(), self.epoch, self.last_seq);
        if let Some(reason) = resume.resync {
            *self.metrics.resyncs.entry(reason).or_default() += 1;
            let payload = json!({ "reason": reason.as_str(), "last_event_id": params.anchor });
            self.send_control(id, types::RESYNC_REQUIRED, payload);
        }
        if self.replay.next_after(resume.after).is_some() {
            self.metrics.replays += 1;
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.catch_up = Some(CatchUp {
                    cursor: resume.after,
                    heartbeat: None,
                });
            }
            self.pump(id);
        }
        id
    }

    /// Feeds one fact about a connection or a handshake. Inputs for unknown or closing
    /// connections are ignored (a closing one still has its flushes counted).
    pub fn handle_input(&mut self, now: Instant, input: Input) {
        self.advance(now);
        match input {
            Input::Text { conn, text } => self.on_text(conn, &text),
            Input::Binary { conn } => {
                if self.touch(conn) {
                    self.close(
                        conn,
                        CloseCode::UNSUPPORTED_DATA,
                        "binary frames are not accepted",
                    );
                }
            }
            Input::Alive { conn } => {
                self.touch(conn);
            }
            Input::Violation { conn, kind } => {
                if self.touch(conn) {
                    let reason = match kind {
                        Violation::MessageTooLarge => "message too large",
                        Violation::InvalidUtf8 => "invalid UTF-8",
                        Violation::Protocol => "WebSocket protocol error",
                    };
                    self.close(conn, kind.close_code(), reason);
                }
            }
            Input::Flushed {
                conn,
                frames,
                bytes,
            } => self.on_flushed(conn, frames, bytes),
            Input::Disconnected { conn, cause } => self.on_disconnected(conn, cause),
            Input::Refused { status } => {
                *self.metrics.handshakes_refused.entry(status).or_default() += 1;
            }
            Input::Rejected { code } => self.metrics.count_close(code.0),
        }
    }

    /// Sequences an event with the hub's next id and the current time, and delivers it to
    /// every connection whose filter it passes. Never waits: slow connections are closed
    /// with 4008 instead.
    pub fn publish(&mut self, now: Instant, event: Event) -> Result<EventId, PublishError> {
        self.advance(now);
        if self.shutdown_deadline.is_some() {
            return Err(PublishError::ShuttingDown);
        }
        let event = event.sequence(self.next_id(), self.timestamp());
        let id = event.id();
        self.deliver(event);
        Ok(id)
    }

    /// Delivers an event that was sequenced elsewhere (for example by a shared log that
    /// orders the events of several hubs). Its id must be of this hub's epoch and after
    /// [`Hub::last_seq`].
    pub fn publish_sequenced(
        &mut self,
        now: Instant,
        event: SequencedEvent,
    ) -> Result<(), PublishError> {
        self.advance(now);
        if self.shutdown_deadline.is_some() {
            return Err(PublishError::ShuttingDown);
        }
        if event.id().epoch != self.epoch {
            return Err(PublishError::ForeignEpoch);
        }
        if event.id().seq <= self.last_seq {
            return Err(PublishError::OutOfOrder);
        }
        self.last_seq = event.id().seq;
        self.deliver(event);
        Ok(())
    }

    /// Starts the shutdown: every open connection gets `health_status`
    /// `{"status":"shutting_down"}` and then close 1001; whatever remains after
    /// `shutdown_grace` is aborted. Publishing fails from now on. Repeated calls are no-ops.
    pub fn shutdown(&mut self, now: Instant) {
        self.advance(now);
        if self.shutdown_deadline.is_some() {
            return;
        }
        let deadline = self.now + self.config.shutdown_grace();
        self.shutdown_deadline = Some(deadline);
        self.next_heartbeat = None;
        let mut payload = Map::new();
        payload.insert("status".into(), "shutting_down".into());
        let event = Event::new(EventType::internal(types::HEALTH_STATUS)).with_payload(payload);
        let frame = event
            .sequence(self.next_id(), self.timestamp())
            .frame()
            .clone();
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_open())
            .map(|(id, _)| *id)
            .collect();
        for id in open {
            let conn = self.conns.get_mut(&id).expect("listed above");
            conn.catch_up = None; // the shutdown notice goes out now; replay is abandoned
            conn.count_queued(&frame);
            self.outputs.push_back(Output::Send {
                conn: id,
                frame: frame.clone(),
            });
            self.close(id, CloseCode::GOING_AWAY, "server shutting down");
        }
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
        if let Some(due) = self.next_heartbeat.filter(|due| self.now >= *due) {
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
    }

    /// The next command for the adapter, in order; `None` when there is nothing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Hub::handle_timeout`] must next be called; `None` if nothing is pending. After
    /// `handle_timeout(t)` this is `None` or later than `t`.
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
        metrics.replay_bytes = self.replay.bytes();
        metrics
    }

    /// How many connections are registered (open or closing).
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The client identity a connection gave in its handshake, if any.
    pub fn subscribe_token(&self, conn: ConnId) -> Option<&str> {
        self.conns.get(&conn)?.subscribe_token.as_deref()
    }

    /// The most outputs one connection can have unflushed: size adapter queues to this.
    pub fn max_queued_outputs(&self) -> usize {
        self.config.send_queue_frames() + QUEUE_SLACK
    }

    /// Frames and bytes queued to a connection and not yet flushed, if it is known.
    pub fn queued(&self, conn: ConnId) -> Option<(usize, usize)> {
        self.conns
            .get(&conn)
            .map(|c| (c.queued_frames, c.queued_bytes))
    }

    /// Events held by the replay buffer (some may be past their TTL).
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    fn timestamp(&self) -> Timestamp {
        let (origin, wall) = self.clock_origin;
        wall.after(self.now.saturating_duration_since(origin))
    }

    fn next_id(&mut self) -> EventId {
        self.last_seq = self.last_seq.next();
        EventId {
            epoch: self.epoch,
            seq: self.last_seq,
        }
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
            return self.close(id, CloseCode::MESSAGE_TOO_BIG, "message too large");
        }
        if !conn.rate.allow(
            self.now,
            self.config.client_rate(),
            self.config.client_burst(),
        ) {
            return self.close(id, CloseCode::RATE_LIMITED, "too many messages");
        }
        if std::str::from_utf8(text).is_err() {
            return self.close(id, CloseCode::INVALID_PAYLOAD, "invalid UTF-8");
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
        conn.count_flushed(frames, bytes);
        self.metrics.frames_sent += frames as u64;
        if conn.catch_up.is_some() {
            self.pump(id);
        }
    }

    fn on_disconnected(&mut self, id: ConnId, cause: DisconnectCause) {
        let Some(conn) = self.conns.remove(&id) else {
            self.metrics.stale_inputs += 1;
            return;
        };
        match conn.closing {
            Some(deadline) => {
                self.close_deadlines.remove(&(deadline, id));
            }
            None => self.metrics.count_close(match cause {
                DisconnectCause::Closed(code) => code.unwrap_or(CloseCode::NO_STATUS).0,
                DisconnectCause::Lost => CloseCode::ABNORMAL.0,
            }),
        }
    }

    /// Closes silent connections, then sends one heartbeat (one seq, one encoding) and one
    /// Ping to every open connection.
    fn tick(&mut self) {
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
            self.close(id, CloseCode::LIVENESS_TIMEOUT, "liveness timeout");
        }
        let heartbeat = Event::new(EventType::internal(types::HEARTBEAT));
        let heartbeat = heartbeat.sequence(self.next_id(), self.timestamp());
        let (max_frames, max_bytes) = (
            self.config.send_queue_frames(),
            self.config.send_queue_bytes(),
        );
        let mut slow = Vec::new();
        let mut catching_up = Vec::new();
        for (&id, conn) in self.conns.iter_mut().filter(|(_, c)| c.is_open()) {
            if let Some(catch_up) = &mut conn.catch_up {
                catch_up.heartbeat = Some(heartbeat.clone());
                catching_up.push(id);
            } else if conn.has_room(heartbeat.frame().len(), max_frames, max_bytes) {
                conn.count_queued(heartbeat.frame());
                self.outputs.push_back(Output::Send {
                    conn: id,
                    frame: heartbeat.frame().clone(),
                });
            } else {
                slow.push(id);
                continue;
            }
            // A ping may go one past the frame limit, never further: a catching-up client that
            // does not read must not pile them up (it is closed for liveness instead).
            if conn.queued_frames <= max_frames {
                conn.queued_frames += 1;
                self.outputs.push_back(Output::Ping { conn: id });
            }
        }
        self.close_slow(slow);
        for id in catching_up {
            self.pump(id);
        }
    }

    /// Buffers the event and sends it to every live connection it matches; connections that
    /// are catching up take it from the buffer in turn.
    fn deliver(&mut self, event: SequencedEvent) {
        self.metrics.events_published += 1;
        self.replay.push(self.now, event.clone());
        let (max_frames, max_bytes) = (
            self.config.send_queue_frames(),
            self.config.send_queue_bytes(),
        );
        let (name, frame) = (event.event_type().as_str(), event.frame());
        let mut slow = Vec::new();
        let mut catching_up = Vec::new();
        for (&id, conn) in self.conns.iter_mut() {
            if !conn.is_open() {
                continue;
            }
            if conn.catch_up.is_some() {
                catching_up.push(id);
            } else if !conn.filter.matches(name) {
                continue;
            } else if conn.has_room(frame.len(), max_frames, max_bytes) {
                conn.count_queued(frame);
                self.outputs.push_back(Output::Send {
                    conn: id,
                    frame: frame.clone(),
                });
            } else {
                slow.push(id);
            }
        }
        self.close_slow(slow);
        for id in catching_up {
            self.pump(id);
        }
    }

    /// Sends a catching-up connection the next buffered frames while its queue has room;
    /// switches it to live delivery once it has everything.
    fn pump(&mut self, id: ConnId) {
        let (max_frames, max_bytes) = (
            self.config.send_queue_frames(),
            self.config.send_queue_bytes(),
        );
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(mut catch_up) = conn.catch_up.take() else {
            return;
        };
        loop {
            if self.replay.lost_after(catch_up.cursor).is_some() {
                // Live traffic pushed out events this connection had yet to get.
                return self.close_slow(vec![id]);
            }
            let buffered = self.replay.next_after(catch_up.cursor);
            let heartbeat_first = match (&catch_up.heartbeat, buffered) {
                (Some(hb), Some(event)) => hb.id().seq < event.id().seq,
                (heartbeat, _) => heartbeat.is_some(),
            };
            let next = if heartbeat_first {
                catch_up.heartbeat.as_ref()
            } else {
                buffered
            };
            let Some(next) = next else {
                return; // caught up: live delivery from now on
            };
            let seq = next.id().seq;
            if conn.filter.matches(next.event_type().as_str()) {
                if !conn.has_room(next.frame().len(), max_frames, max_bytes) {
                    conn.catch_up = Some(catch_up);
                    return; // more when the writer reports a flush
                }
                conn.count_queued(next.frame());
                self.outputs.push_back(Output::Send {
                    conn: id,
                    frame: next.frame().clone(),
                });
            }
            catch_up.cursor = seq;
            if heartbeat_first {
                catch_up.heartbeat = None;
            }
        }
    }

    fn send_control(&mut self, id: ConnId, name: &'static str, payload: Value) {
        let Value::Object(payload) = payload else {
            unreachable!("control payloads are objects")
        };
        let frame = encode_control(name, payload, self.timestamp());
        let (max_frames, max_bytes) = (
            self.config.send_queue_frames(),
            self.config.send_queue_bytes(),
        );
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.has_room(frame.len(), max_frames, max_bytes) {
            conn.count_queued(&frame);
            self.outputs.push_back(Output::Send { conn: id, frame });
        } else {
            self.close_slow(vec![id]);
        }
    }

    fn close_slow(&mut self, ids: Vec<ConnId>) {
        for id in ids {
            self.close(
                id,
                CloseCode::SLOW_CONSUMER,
                "slow consumer: reconnect with last_event_id",
            );
        }
    }

    /// Decides a close: the close frame follows what is queued, nothing more is sent, and the
    /// socket is aborted if the close has not finished by the deadline.
    fn close(&mut self, id: ConnId, code: CloseCode, reason: &'static str) {
        let deadline = self
            .shutdown_deadline
            .unwrap_or(self.now + self.config.close_timeout());
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        conn.closing = Some(deadline);
        conn.catch_up = None;
        self.close_deadlines.insert((deadline, id));
        self.metrics.count_close(code.0);
        self.outputs.push_back(Output::Close {
            conn: id,
            code,
            reason,
        });
    }

    fn abort(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.remove(&id) {
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
            .field("epoch", &self.epoch)
            .field("last_seq", &self.last_seq)
            .field("connections", &self.conns.len())
            .field("replay_len", &self.replay.len())
            .finish_non_exhaustive()
    }
}
