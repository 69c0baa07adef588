//! A deterministic simulation of the hub, the log that feeds it, and its clients.
//!
//! [`Sim`] owns a [`Hub`], a simulated clock, a model of the ordered log that sequences
//! events (the embedded sequencer, or a cluster's stream, which can also skip entries, repeat
//! them or start a new epoch), and a model of every client: what it received, what its
//! writer still holds, whether it was closed. Every output goes through [`Sim::drain`], which
//! checks the hub's promises as it applies them and records a transcript
//! (`+1500ms send c1 heartbeat 3`), so tests read like timelines and two runs of the same
//! history can be compared line by line.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use time::OffsetDateTime;

use ferret_ws_core::{
    decide, Capacity, CloseCode, ConnId, ConnParams, Decision, Delivery, DisconnectCause, Epoch,
    Event, EventId, EventType, HandshakeRequest, Hub, HubConfig, Input, Output, Seq,
    SequencedEvent, Timestamp,
};

/// The epoch every simulation uses unless told otherwise.
pub const SIM_EPOCH: Epoch = Epoch(0x5eed_0001);

/// A simulated hub with its clients and clock.
pub struct Sim {
    /// The hub under test.
    pub hub: Hub,
    /// When the simulation began.
    pub start: Instant,
    /// The simulated time.
    pub now: Instant,
    /// Every client, also after it was removed.
    pub clients: BTreeMap<ConnId, Client>,
    /// Every event the hub delivered, in order: its id and type (repeats the hub ignored
    /// are not here).
    pub published: Vec<(EventId, String)>,
    /// The log's newest entry: the next event gets the seq after it, in its epoch.
    pub log: EventId,
    /// One line per output, as offsets from `start`.
    pub transcript: Vec<String>,
    /// Promises the hub broke, in order; empty in a correct run.
    pub violations: Vec<String>,
    /// Whether clients read promptly: after each drain, every client that is not stalled
    /// reports its frames flushed.
    pub auto_flush: bool,
    /// Heartbeat ticks seen: each tick's one frame (the shared allocation), in order of first
    /// appearance.
    pub heartbeats: Vec<Bytes>,
    /// Fetches the hub asked of the log ([`Output::Fetch`]), in order: the connection, the
    /// anchor and the end of the range. Answer them with [`Sim::answer_fetch`].
    pub fetches: Vec<(ConnId, EventId, Seq)>,
    /// The largest frame the hub has sent.
    pub largest_frame: usize,
    /// The wall-clock time of `start`, for the timestamps of the log's events.
    wall: OffsetDateTime,
}

/// What one simulated client has seen.
#[derive(Debug, Default)]
pub struct Client {
    /// Frames received, in order.
    pub frames: Vec<Frame>,
    /// Pings received.
    pub pings: usize,
    /// The close the hub sent, if any.
    pub closed: Option<(CloseCode, String)>,
    /// When the hub sent it.
    pub closed_at: Option<Instant>,
    /// Whether the hub aborted the socket.
    pub aborted: bool,
    /// Whether the hub has forgotten the connection (disconnected or aborted).
    pub removed: bool,
    /// A stalled client reads nothing: its frames stay queued.
    pub stalled: bool,
    /// A responsive client answers every ping at once.
    pub responsive: bool,
    /// The last time the client showed life.
    pub last_life: Option<Instant>,
    /// When it was accepted.
    pub accepted_at: Option<Instant>,
    /// The hub's head when it was accepted.
    pub accepted_head: Option<EventId>,
    /// Frames written to the socket but not yet flushed by the client, in order; a ping is
    /// empty.
    pub unflushed: VecDeque<Bytes>,
}

/// A frame a client received, decoded.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The raw bytes.
    pub raw: Bytes,
    /// `type`.
    pub event_type: String,
    /// `event_id`, for stream frames.
    pub id: Option<EventId>,
    /// `payload`.
    pub payload: Value,
    /// `correlation_id`.
    pub correlation_id: Option<String>,
}

impl Client {
    /// The stream frames (events and heartbeats), in order.
    pub fn stream(&self) -> impl Iterator<Item = &Frame> {
        self.frames.iter().filter(|f| f.id.is_some())
    }

    /// Received frames of this type.
    pub fn of_type<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Frame> + 'a {
        self.frames.iter().filter(move |f| f.event_type == name)
    }

    /// The types of every received frame, in order.
    pub fn types(&self) -> Vec<&str> {
        self.frames.iter().map(|f| f.event_type.as_str()).collect()
    }

    /// The seqs of received events (not heartbeats or notices), in order.
    pub fn event_seqs(&self) -> Vec<u64> {
        self.stream()
            .filter(|f| !matches!(f.event_type.as_str(), "heartbeat" | "health_status"))
            .map(|f| f.id.expect("stream").seq.0)
            .collect()
    }

    /// The `resync_required` frames received, as (reason, last_event_id).
    pub fn resyncs(&self) -> Vec<(String, Option<String>)> {
        self.of_type("resync_required")
            .map(|f| {
                let reason = f.payload["reason"].as_str().unwrap_or_default().to_owned();
                let last = f.payload["last_event_id"].as_str().map(str::to_owned);
                (reason, last)
            })
            .collect()
    }

    /// Whether the hub closed or aborted it.
    pub fn is_closed(&self) -> bool {
        self.closed.is_some() || self.aborted
    }
}

impl Sim {
    /// A simulation of a hub with this configuration whose clock starts at `start` (any
    /// instant: only offsets from it are ever shown).
    pub fn new(config: HubConfig, start: Instant) -> Sim {
        Sim::with_epoch(config, SIM_EPOCH, start)
    }

    /// The same, with a given epoch (a "restarted" hub).
    pub fn with_epoch(config: HubConfig, epoch: Epoch, start: Instant) -> Sim {
        let wall = time::macros::datetime!(2026-04-26 17:00:00 UTC);
        Sim {
            hub: Hub::new(config, epoch, start, wall),
            start,
            now: start,
            clients: BTreeMap::new(),
            published: Vec::new(),
            log: EventId::start(epoch),
            fetches: Vec::new(),
            wall,
            transcript: Vec::new(),
            violations: Vec::new(),
            auto_flush: true,
            heartbeats: Vec::new(),
            largest_frame: 0,
        }
    }

    /// Milliseconds since the start.
    pub fn elapsed_ms(&self) -> u128 {
        self.now.duration_since(self.start).as_millis()
    }

    /// Connects a client with this query string (`""` for none); panics unless accepted.
    pub fn connect(&mut self, query: &str) -> ConnId {
        let request = HandshakeRequest {
            query: Some(query),
            ..Default::default()
        };
        match decide(self.hub.config(), &request, Capacity::Free) {
            Decision::Accept(params) => self.accept(params),
            other => panic!("handshake {query:?} not accepted: {other:?}"),
        }
    }

    /// Registers a client with these parameters.
    pub fn accept(&mut self, params: ConnParams) -> ConnId {
        let accepted_head = self.hub.head();
        let id = self.hub.accept(self.now, params);
        let client = self.clients.entry(id).or_default();
        client.last_life = Some(self.now);
        client.accepted_at = Some(self.now);
        client.accepted_head = Some(accepted_head);
        self.line(format_args!("accept {id}"));
        self.drain();
        id
    }

    /// Publishes an event of this type and payload (`{}` if `None`): the log gives it the
    /// next seq, and the hub delivers it.
    pub fn publish(&mut self, name: &str, payload: Option<Value>) -> EventId {
        self.log_publish(1, name, payload)
    }

    /// Publishes an application's event as it is (payload, correlation id).
    pub fn publish_event(&mut self, event: Event) -> EventId {
        self.log = EventId {
            epoch: self.log.epoch,
            seq: Seq(self.log.seq.0 + 1),
        };
        let id = self.log;
        let at = Timestamp::new(self.wall).after(self.now.duration_since(self.start));
        let name = event.event_type().as_str().to_owned();
        let delivery = self.hub.deliver(self.now, event.sequence(id, at));
        if matches!(delivery, Delivery::Delivered | Delivery::Resynced(_)) {
            self.published.push((id, name.clone()));
        }
        self.line(format_args!("publish {name} {}", id.seq.0));
        self.drain();
        id
    }

    /// The log loses `lost` entries before this node reads them, then sequences the event.
    pub fn publish_after_loss(&mut self, lost: u64, name: &str) -> EventId {
        self.log_publish(1 + lost, name, None)
    }

    /// The log starts afresh in `epoch` (it was lost and recreated), then sequences the
    /// event, `lost` entries after the new epoch's start.
    pub fn publish_in_new_epoch(&mut self, epoch: Epoch, lost: u64, name: &str) -> EventId {
        self.log = EventId::start(epoch);
        self.log_publish(1 + lost, name, None)
    }

    /// The log hands the hub an event of its epoch it delivered before (the `back`-th
    /// newest): a repeat, which the hub must ignore. (An event of another epoch is always
    /// taken for a new epoch: epochs are random, so there is no "older" one.)
    pub fn repeat(&mut self, back: usize) -> Option<Delivery> {
        let epoch = self.hub.epoch();
        let (id, name) = self
            .published
            .iter()
            .rev()
            .filter(|(id, _)| id.epoch == epoch)
            .nth(back)?
            .clone();
        let event = self.sequenced(id, &name, None);
        let delivery = self.hub.deliver(self.now, event);
        self.line(format_args!("repeat {name} {}", id.seq.0));
        self.drain();
        Some(delivery)
    }

    /// Hands the hub the event `id` of this type, as a log would.
    pub fn deliver(&mut self, id: EventId, name: &str, payload: Option<Value>) -> Delivery {
        let event = self.sequenced(id, name, payload);
        let delivery = self.hub.deliver(self.now, event);
        if matches!(delivery, Delivery::Delivered | Delivery::Resynced(_)) {
            self.published.push((id, name.to_owned()));
        }
        self.line(format_args!("publish {name} {}", id.seq.0));
        self.drain();
        delivery
    }

    /// Answers the oldest fetch as a log that holds the events `holds` (seqs of the current
    /// epoch, re-encoded as they were delivered), each published `age` before now.
    pub fn answer_fetch(&mut self, holds: impl Fn(u64) -> bool, age: Duration) -> Option<ConnId> {
        if self.fetches.is_empty() {
            return None;
        }
        let (conn, after, before) = self.fetches.remove(0);
        let elapsed = self.now.duration_since(self.start);
        let signed = |d: Duration| time::Duration::try_from(d).expect("short runs");
        let at = Timestamp::new(self.wall + signed(elapsed) - signed(age));
        let events: Vec<(SequencedEvent, Timestamp)> = self
            .published
            .iter()
            .filter(|(id, _)| id.epoch == after.epoch && id.seq > after.seq && id.seq < before)
            .filter(|(id, _)| holds(id.seq.0))
            .map(|(id, name)| (self.sequenced(*id, name, None), at))
            .collect();
        self.hub.handle_input(
            self.now,
            Input::Fetched {
                conn,
                after,
                events,
            },
        );
        self.drain();
        Some(conn)
    }

    fn log_publish(&mut self, step: u64, name: &str, payload: Option<Value>) -> EventId {
        self.log = EventId {
            epoch: self.log.epoch,
            seq: Seq(self.log.seq.0 + step),
        };
        let id = self.log;
        let delivery = self.deliver(id, name, payload);
        assert!(
            !matches!(delivery, Delivery::Stale),
            "the hub took the log's next event {id} for a repeat"
        );
        id
    }

    fn sequenced(&self, id: EventId, name: &str, payload: Option<Value>) -> SequencedEvent {
        let mut event = Event::new(EventType::new(name).expect("valid type"));
        if let Some(Value::Object(map)) = payload {
            event = event.with_payload(map);
        }
        let at = Timestamp::new(self.wall).after(self.now.duration_since(self.start));
        event.sequence(id, at)
    }

    /// The client sends a text message.
    pub fn send_text(&mut self, conn: ConnId, text: &str) {
        self.input(Input::Text {
            conn,
            text: Bytes::copy_from_slice(text.as_bytes()),
        });
    }

    /// Feeds one input (and records the sign of life it stands for).
    pub fn input(&mut self, input: Input) {
        if let Input::Text { conn, .. }
        | Input::Binary { conn }
        | Input::Alive { conn }
        | Input::Violation { conn, .. } = &input
        {
            if let Some(client) = self.clients.get_mut(conn) {
                if !client.is_closed() {
                    client.last_life = Some(self.now);
                }
            }
        }
        self.hub.handle_input(self.now, input);
        self.drain();
    }

    /// The client's socket ends (it closed, or the adapter finished the hub's close).
    pub fn disconnect(&mut self, conn: ConnId, cause: DisconnectCause) {
        if let Some(client) = self.clients.get_mut(&conn) {
            client.removed = true;
            client.unflushed.clear();
        }
        self.line(format_args!("disconnect {conn}"));
        self.input(Input::Disconnected { conn, cause });
    }

    /// The client stops reading (or starts again).
    pub fn stall(&mut self, conn: ConnId, stalled: bool) {
        if let Some(client) = self.clients.get_mut(&conn) {
            client.stalled = stalled;
        }
        if !stalled {
            self.drain();
        }
    }

    /// Makes a client answer every ping at once (or stop doing so).
    pub fn set_responsive(&mut self, conn: ConnId, responsive: bool) {
        if let Some(client) = self.clients.get_mut(&conn) {
            client.responsive = responsive;
        }
    }

    /// Reports everything queued to `conn` as written.
    pub fn flush(&mut self, conn: ConnId) {
        if self.report_flushed(conn) {
            self.drain();
        }
    }

    /// Tells the hub everything queued to `conn` was written; `false` if there was nothing.
    fn report_flushed(&mut self, conn: ConnId) -> bool {
        let Some(client) = self.clients.get_mut(&conn) else {
            return false;
        };
        if client.unflushed.is_empty() || client.removed {
            return false;
        }
        let frames = client.unflushed.len();
        let bytes = client.unflushed.drain(..).map(|f| f.len()).sum();
        let flushed = Input::Flushed {
            conn,
            frames,
            bytes,
        };
        self.hub.handle_input(self.now, flushed);
        true
    }

    /// Moves the clock forward by `by`, firing every timer due on the way, in order.
    pub fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while self.hub.poll_timeout().is_some_and(|due| due <= target) {
            self.step();
            if self.hub.poll_timeout().is_some_and(|due| due <= self.now) {
                break; // a timer that does not move: already reported by `step`
            }
        }
        self.now = self.now.max(target);
    }

    /// Jumps to the next timer and fires it; `false` if none is set.
    pub fn step(&mut self) -> bool {
        let Some(due) = self.hub.poll_timeout() else {
            return false;
        };
        self.now = self.now.max(due);
        self.hub.handle_timeout(self.now);
        self.drain();
        true
    }

    /// Takes every output from the hub, checks it, and applies it to the client models; with
    /// `auto_flush`, flushes clients that read until nothing changes.
    pub fn drain(&mut self) {
        loop {
            while let Some(output) = self.hub.poll_output() {
                self.apply(output);
            }
            if !self.auto_flush {
                return;
            }
            let readers: Vec<ConnId> = self
                .clients
                .iter()
                .filter(|(_, c)| !c.stalled && !c.removed && !c.unflushed.is_empty())
                .map(|(id, _)| *id)
                .collect();
            if readers.is_empty() {
                return;
            }
            for conn in readers {
                self.report_flushed(conn);
            }
        }
    }

    /// Bytes of the distinct frames the clients' writers hold: a frame sent to several of
    /// them (one allocation) counts once. What the hub's `queued_bytes` should say.
    pub fn queued_bytes(&self) -> usize {
        let held: BTreeSet<(usize, usize)> = self
            .clients
            .values()
            .filter(|c| !c.removed)
            .flat_map(|c| c.unflushed.iter())
            .map(|f| (f.as_ptr() as usize, f.len()))
            .collect();
        held.iter().map(|(_, len)| len).sum()
    }

    /// Lines of the transcript, joined.
    pub fn transcript(&self) -> String {
        self.transcript.join("\n")
    }

    /// Panics with every violation found so far.
    pub fn assert_clean(&self) {
        assert!(
            self.violations.is_empty(),
            "hub broke its promises:\n{}",
            self.violations.join("\n")
        );
    }

    fn apply(&mut self, output: Output) {
        let max_queued = self.hub.max_queued_outputs();
        let now = self.now;
        let conn = match &output {
            Output::Send { conn, .. }
            | Output::Ping { conn }
            | Output::Discard { conn }
            | Output::Close { conn, .. }
            | Output::Abort { conn } => *conn,
            Output::Fetch {
                conn,
                after,
                before,
            } => {
                self.fetches.push((*conn, *after, *before));
                self.line(format_args!(
                    "fetch {conn} after {} before {}",
                    after.seq.0, before.0
                ));
                return;
            }
            other => {
                self.violations
                    .push(format!("an output the simulation does not know: {other:?}"));
                return;
            }
        };
        let Some(client) = self.clients.get_mut(&conn) else {
            self.violations.push(format!(
                "output for a connection never accepted: {output:?}"
            ));
            return;
        };
        // Once closed, a connection may still have its queue dropped (the global budget) or be
        // aborted; nothing else.
        let after_close = matches!(output, Output::Abort { .. } | Output::Discard { .. });
        if client.removed || (client.closed.is_some() && !after_close) {
            self.violations
                .push(format!("output after close or removal: {output:?}"));
        }
        let mut line = String::new();
        let mut answer_ping = false;
        match output {
            Output::Send { frame, .. } => {
                self.largest_frame = self.largest_frame.max(frame.len());
                client.unflushed.push_back(frame.clone());
                match decode(&frame) {
                    Ok(decoded) => {
                        if let Some(broken) = stream_order(client, &decoded) {
                            self.violations.push(format!("{conn}: {broken}"));
                        }
                        let _ = write!(line, "send {conn} {}", decoded.event_type);
                        if let Some(id) = decoded.id {
                            let _ = write!(line, " {}", id.seq.0);
                            // A tick's frame is one allocation shared by every recipient (its
                            // bytes may repeat: timestamps hold still after a clock step back).
                            let tick_seen = self
                                .heartbeats
                                .iter()
                                .rev()
                                .any(|beat| beat.as_ptr() == frame.as_ptr());
                            if decoded.event_type == "heartbeat" && !tick_seen {
                                self.heartbeats.push(frame.clone());
                            }
                        }
                        client.frames.push(decoded);
                    }
                    Err(why) => self
                        .violations
                        .push(format!("{conn}: bad frame {why}: {frame:?}")),
                }
            }
            Output::Ping { .. } => {
                client.unflushed.push_back(Bytes::new());
                client.pings += 1;
                answer_ping = client.responsive && !client.stalled;
                let _ = write!(line, "ping {conn}");
            }
            Output::Discard { .. } => {
                // The writer drops what it has not begun; in the model nothing is half-written.
                client.unflushed.clear();
                let _ = write!(line, "discard {conn}");
            }
            Output::Close { code, reason, .. } => {
                client.closed = Some((code, reason.to_owned()));
                client.closed_at = Some(now);
                let _ = write!(line, "close {conn} {code} {reason}");
            }
            Output::Abort { .. } => {
                client.aborted = true;
                client.removed = true;
                client.unflushed.clear();
                let _ = write!(line, "abort {conn}");
            }
            _ => unreachable!("unknown outputs are reported above"),
        }
        if client.unflushed.len() > max_queued {
            self.violations.push(format!(
                "{conn}: {} outputs unflushed, limit {max_queued}",
                client.unflushed.len()
            ));
        }
        if answer_ping {
            client.last_life = Some(now);
            self.hub.handle_input(now, Input::Alive { conn });
        }
        self.line(format_args!("{line}"));
    }

    fn line(&mut self, what: std::fmt::Arguments<'_>) {
        let line = format!("+{}ms {what}", self.elapsed_ms());
        self.transcript.push(line);
    }
}

/// Whether `next` keeps the stream order of what `client` received so far: events strictly
/// increase and no stream frame names a lower seq than an earlier one, within an epoch; a
/// move to another epoch comes only after a `resync_required` (since the last stream frame).
fn stream_order(client: &Client, next: &Frame) -> Option<String> {
    let id = next.id?;
    let event = !matches!(next.event_type.as_str(), "heartbeat" | "health_status");
    let prev = client.frames.iter().rev().find_map(|f| f.id)?;
    if prev.epoch != id.epoch {
        let after_resync = client
            .frames
            .iter()
            .rev()
            .take_while(|f| f.id.is_none())
            .any(|f| f.event_type == "resync_required");
        return (!after_resync)
            .then(|| format!("epoch {} after {} without a resync", id.epoch, prev.epoch));
    }
    let last_event = client
        .frames
        .iter()
        .rev()
        .filter(|f| f.id.is_some_and(|i| i.epoch == id.epoch))
        .find(|f| !matches!(f.event_type.as_str(), "heartbeat" | "health_status"))
        .and_then(|f| f.id);
    if event && last_event.is_some_and(|last| id.seq <= last.seq) {
        return Some(format!(
            "event {id} after event {}",
            last_event.expect("checked")
        ));
    }
    (id.seq < prev.seq).then(|| format!("{} {id} after {prev}", next.event_type))
}

/// Decodes an envelope and checks its shape: five keys in contract order, a valid timestamp
/// shape, and an `event_id` that is null exactly on control frames.
pub fn decode(frame: &[u8]) -> Result<Frame, String> {
    let value: Value = serde_json::from_slice(frame).map_err(|e| e.to_string())?;
    let object = value.as_object().ok_or("not an object")?;
    let keys: Vec<&str> = object.keys().map(String::as_str).collect();
    if keys != ["type", "payload", "correlation_id", "timestamp", "event_id"] {
        return Err(format!("keys {keys:?}"));
    }
    let event_type = object["type"].as_str().ok_or("type")?.to_owned();
    let timestamp = object["timestamp"].as_str().ok_or("timestamp")?;
    if timestamp.len() != 32 || !timestamp.ends_with("+00:00") || timestamp.as_bytes()[19] != b'.' {
        return Err(format!("timestamp {timestamp}"));
    }
    if !object["payload"].is_object() {
        return Err("payload".into());
    }
    let id = match &object["event_id"] {
        Value::Null => None,
        Value::String(id) => Some(EventId::parse(id).ok_or("event_id")?),
        _ => return Err("event_id".into()),
    };
    let control = ["pong", "subscribed", "error", "resync_required"].contains(&event_type.as_str());
    // Control frames and the stream are told apart by `event_id` alone.
    if control == id.is_some() {
        return Err(format!("{event_type} with event_id {id:?}"));
    }
    Ok(Frame {
        raw: Bytes::copy_from_slice(frame),
        event_type,
        id,
        payload: object["payload"].clone(),
        correlation_id: object["correlation_id"].as_str().map(str::to_owned),
    })
}
