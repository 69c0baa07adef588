//! The operations that drive a [`Sim`], shared by the proptests (`core/tests/props.rs`) and
//! the `hub_ops` fuzz target, and the checks run after every one of them.
//!
//! An input is bytes: [`CONFIG_BYTES`] of configuration, then operations, each an opcode byte
//! (modulo the number of operations, in the order of [`Op`]) followed by its fields, one byte
//! each unless noted; missing bytes read as zero. The proptests generate the same bytes, so
//! both explore one space and a failing case of either replays under the other.
//!
//! After every operation [`hub_ops`] checks, with a reference model of delivery:
//! - the simulation's own checks ([`Sim`]: stream order, frame shapes, nothing after a close,
//!   queue bounds), bounded replay buffer, nothing kept for removed connections, the bytes
//!   queued to all connections counted as the writers hold them (a shared frame once) and
//!   never past `max_queued_bytes` by more than one frame, and
//!   `poll_timeout` later than the last `handle_timeout`;
//! - liveness: a silent connection is closed within `[timeout, timeout + interval]` of its
//!   last sign of life, and one that answers every ping and never stalled is never closed for
//!   silence;
//! - delivery: a client that kept its filter gets exactly the events the log delivered after
//!   its start that it matches, in order, without duplicate, and a hole only right after a
//!   `resync_required` (at connect or in-band); once it has read everything it has all of
//!   them; a heartbeat never names an event it is still to receive;
//! - resume from any stream frame a client got continues without gap or duplicate
//!   ([`Op::ConnectFrom`]);
//! - one heartbeat per tick: a client that never stalled gets each tick's frame once;
//! - determinism: the same input gives the same transcript.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use ferret_ws_core::{
    decide, encode_client_message, parse_client_message, Capacity, ClientMessage, CloseCode,
    ConnId, Decision, Delivery, DisconnectCause, Epoch, EventId, HandshakeRequest, HubConfig,
    Input, TypeFilter, Violation,
};
use serde_json::{Map, Value};

use crate::sim::Sim;

/// How many bytes of a [`hub_ops`] input make up the configuration.
pub const CONFIG_BYTES: usize = 13;

/// At most this many operations are run per input, so one input cannot take long.
const MAX_OPS: usize = 400;

/// The event types the harness publishes.
pub const TYPES: [&str; 5] = ["a", "a.x", "b_1", "b_2", "c.d"];

/// Type filters for handshakes and `subscribe` messages; some of them bad.
pub const QUERIES: [&str; 8] = [
    "",
    "types=a",
    "types=b_*",
    "types=a,c.*",
    "types=*",
    "types=a,,b",
    "subscribe_token=0123456789abcdef0123456789abcdef",
    "types=a&types=b",
];

/// One step of a [`hub_ops`] run. `conn` fields pick a client by index among every client
/// accepted so far (removed ones included), or an id the hub never gave out.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // each variant's fields are described with it
pub enum Op {
    /// A handshake with one of [`QUERIES`] and an anchor made from `anchor` and `arg`.
    Connect { query: u8, anchor: u8, arg: u8 },
    /// The application publishes an event of one of [`TYPES`] with `size × 8` payload bytes.
    Publish { kind: u8, size: u8 },
    /// The log loses `lost % 4` entries, then sequences an event (0: the next event); with
    /// `new_epoch`, the log starts a new epoch first.
    LogJump { lost: u8, new_epoch: bool },
    /// The log hands over an event already delivered, `back` from the newest: ignored.
    LogRepeat { back: u8 },
    /// A handshake that resumes from one of the stream frames a client received
    /// (`frame`-th, counted from its newest).
    ConnectFrom { conn: u8, frame: u8, query: u8 },
    /// A well-formed or deliberately bad client message, by `kind`.
    Text { conn: u8, kind: u8 },
    /// A client message of arbitrary bytes (a length byte, then that many bytes).
    RawText { conn: u8, text: Vec<u8> },
    /// A binary message.
    Binary { conn: u8 },
    /// A WebSocket Ping or Pong from the client.
    Alive { conn: u8 },
    /// A frame the WebSocket layer rejected.
    Violation { conn: u8, kind: u8 },
    /// The socket ended.
    Disconnect { conn: u8, lost: bool },
    /// The writer of a stalled client reports its oldest `frames` frames written.
    Flush { conn: u8, frames: u8 },
    /// The client stops or resumes reading.
    Stall { conn: u8, on: bool },
    /// The client answers pings at once, or stops doing so.
    Responsive { conn: u8, on: bool },
    /// Time passes (two bytes, little-endian milliseconds, modulo 10 000), firing every
    /// timer on the way.
    Advance { ms: u16 },
    /// Time jumps to the next timer, which fires.
    Step,
    /// `handle_timeout` with the current time, whether or not anything is due.
    EarlyTimeout,
    /// `handle_timeout` with a time `back × 10 ms` before the current one.
    StaleTimeout { back: u8 },
    /// A publish stamped `back × 10 ms` before the current time.
    StalePublish { back: u8 },
    /// A wall-clock reading `skew` seconds off the simulated clock (re-anchoring).
    WallClock { skew: i8 },
    /// The server starts shutting down.
    Shutdown,
    /// A flush report for a connection the hub has forgotten or never had.
    StaleFlush { conn: u8, frames: u8, bytes: u8 },
    /// The log answers the oldest fetch (backfill runs only, see [`CONFIG_BYTES`]): it still
    /// holds the events after the `trim % 8`-th of the range, each `old × 100 ms` old.
    AnswerFetch { trim: u8, old: u8 },
}

const OP_COUNT: u8 = 23;

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Op> {
        let byte = |u: &mut Unstructured<'a>| u8::arbitrary(u);
        let flag = |u: &mut Unstructured<'a>| Ok::<_, arbitrary::Error>(u8::arbitrary(u)? & 1 == 1);
        Ok(match u8::arbitrary(u)? % OP_COUNT {
            0 => Op::Connect {
                query: byte(u)?,
                anchor: byte(u)?,
                arg: byte(u)?,
            },
            1 => Op::Publish {
                kind: byte(u)?,
                size: byte(u)?,
            },
            2 => Op::LogJump {
                lost: byte(u)?,
                new_epoch: flag(u)?,
            },
            3 => Op::Text {
                conn: byte(u)?,
                kind: byte(u)?,
            },
            4 => {
                let conn = byte(u)?;
                let len = usize::from(byte(u)?).min(u.len());
                Op::RawText {
                    conn,
                    text: u.bytes(len)?.to_vec(),
                }
            }
            5 => Op::Binary { conn: byte(u)? },
            6 => Op::Alive { conn: byte(u)? },
            7 => Op::Violation {
                conn: byte(u)?,
                kind: byte(u)?,
            },
            8 => Op::Disconnect {
                conn: byte(u)?,
                lost: flag(u)?,
            },
            9 => Op::Flush {
                conn: byte(u)?,
                frames: byte(u)?,
            },
            10 => Op::Stall {
                conn: byte(u)?,
                on: flag(u)?,
            },
            11 => Op::Responsive {
                conn: byte(u)?,
                on: flag(u)?,
            },
            12 => Op::Advance {
                ms: u16::from_le_bytes([byte(u)?, byte(u)?]) % 10_000,
            },
            13 => Op::Step,
            14 => Op::EarlyTimeout,
            15 => Op::StaleTimeout { back: byte(u)? },
            16 => Op::StalePublish { back: byte(u)? },
            17 => Op::Shutdown,
            18 => Op::StaleFlush {
                conn: byte(u)?,
                frames: byte(u)?,
                bytes: byte(u)?,
            },
            19 => Op::LogRepeat { back: byte(u)? },
            20 => Op::ConnectFrom {
                conn: byte(u)?,
                frame: byte(u)?,
                query: byte(u)?,
            },
            21 => Op::WallClock {
                skew: i8::arbitrary(u)?,
            },
            _ => Op::AnswerFetch {
                trim: byte(u)?,
                old: byte(u)?,
            },
        })
    }
}

/// Small limits, so that eviction, expiry, backpressure, rate limits and timeouts all happen
/// within a few operations.
fn hub_config(bytes: &[u8; CONFIG_BYTES]) -> HubConfig {
    let ms = |n: u64| Duration::from_millis(n);
    let heartbeat = 100 * (1 + u64::from(bytes[0] % 20));
    HubConfig::builder()
        .heartbeat_interval(ms(heartbeat))
        .liveness_timeout(ms(heartbeat + 100 * (1 + u64::from(bytes[1] % 40))))
        .replay_buffer_size(usize::from(bytes[2] % 9))
        .replay_buffer_bytes(100 * (1 + usize::from(bytes[3] % 16)))
        .replay_ttl(ms(500 * (1 + u64::from(bytes[4] % 20))))
        .send_queue_frames(1 + usize::from(bytes[5] % 8))
        // The byte's high bits: 0 (as in the seeds) leaves the default, far out of reach.
        .max_queued_bytes(match bytes[5] >> 3 {
            0 => 256 << 20,
            n => 64 * usize::from(n),
        })
        .send_queue_bytes(128 * (1 + usize::from(bytes[6] % 16)))
        .client_rate(1 + u32::from(bytes[7] % 50))
        .client_burst(1 + u32::from(bytes[8] % 10))
        .max_client_message(16 + 2 * usize::from(bytes[9]))
        .close_timeout(ms(100 * (1 + u64::from(bytes[10] % 50))))
        .shutdown_grace(ms(100 * (1 + u64::from(bytes[11] % 50))))
        .max_connections(1 + usize::from(bytes[12] % 8))
        .build()
        .expect("the fuzz configuration is always valid")
}

/// Runs a hub simulation driven by `data` (configuration, then operations) and checks the
/// hub's invariants after every step; then runs it again and compares the transcripts.
pub fn hub_ops(data: &[u8], start: Instant) {
    let (config, ops) = read_hub_ops(data);
    let first = Run::new(config.clone(), start).play(&ops);
    let second = Run::new(config, start).play(&ops);
    assert!(
        first == second,
        "the same operations gave different transcripts:\n{}\n---\n{}",
        first.join("\n"),
        second.join("\n")
    );
}

/// The configuration, operations and transcript of a [`hub_ops`] input, for reading a crash
/// file or checking what a seed does (`FUZZ_INPUT=path cargo test -p ferret-ws-core
/// --all-features --test fuzz_corpus -- --ignored --nocapture`). Checks as [`hub_ops`] does.
pub fn describe_hub_ops(data: &[u8], start: Instant) -> String {
    let (config, ops) = read_hub_ops(data);
    let mut out = format!("{:#?}\nbackfill: {}\n", config.0, config.1);
    for op in &ops {
        let _ = writeln!(out, "{op:?}");
    }
    for line in Run::new(config, start).play(&ops) {
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The configuration and whether the hub may fetch from the log (bit 7 of the last
/// configuration byte: a cluster node).
fn read_hub_ops(data: &[u8]) -> ((HubConfig, bool), Vec<Op>) {
    let mut u = Unstructured::new(data);
    let mut config_bytes = [0u8; CONFIG_BYTES];
    for byte in &mut config_bytes {
        *byte = u8::arbitrary(&mut u).unwrap_or(0);
    }
    let config = (
        hub_config(&config_bytes),
        config_bytes[CONFIG_BYTES - 1] & 0x80 != 0,
    );
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (config, ops)
}

/// What the harness remembers about a client beyond the simulation's model: where it is in
/// the log's sequence of delivered events, for the reference model of delivery.
struct Track {
    filter: TypeFilter,
    /// Whether it connected with an anchor (so it may catch up, and heartbeats may merge).
    anchored: bool,
    /// Set once it sent something that may have changed its filter.
    filter_changed: bool,
    /// Frames already checked by [`Run::check_delivery`].
    seen: usize,
    /// How many of the delivered events ([`Sim::published`]) lie at or before its position:
    /// every later one it matches is due, in order.
    at: usize,
    /// After a `resync_required`, until the next event: that event may be any later one.
    free: bool,
    /// Where the current epoch begins in [`Sim::published`]: a resync at connect replays
    /// from there at the earliest.
    epoch_start: usize,
    /// Heartbeat ticks seen when it was accepted.
    ticks_at_start: u64,
    /// It answered every ping from the start and never stopped reading.
    always_responsive: bool,
}

struct Run {
    sim: Sim,
    config: HubConfig,
    tracks: BTreeMap<ConnId, Track>,
    /// Whether [`Op::Shutdown`] has happened: publishing fails from then on.
    shut_down: bool,
    /// How many operations have run, for panic messages.
    step: usize,
}

impl Run {
    fn new((config, backfill): (HubConfig, bool), start: Instant) -> Run {
        let mut sim = Sim::new(config.clone(), start);
        if backfill {
            sim.hub.enable_backfill();
        }
        Run {
            sim,
            config,
            tracks: BTreeMap::new(),
            shut_down: false,
            step: 0,
        }
    }

    fn play(mut self, ops: &[Op]) -> Vec<String> {
        self.check("start");
        for op in ops {
            self.step += 1;
            self.apply(op);
            self.check_delivery(op);
            self.check(op);
        }
        self.sim.transcript
    }

    /// The client `index` picks, or an id the hub never handed out.
    fn conn(&self, index: u8) -> ConnId {
        let known = self.sim.clients.len();
        let index = usize::from(index) % (known + 1);
        self.sim
            .clients
            .keys()
            .nth(index)
            .copied()
            .unwrap_or(ConnId(u64::MAX - u64::from(index as u8)))
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Connect { query, anchor, arg } => self.connect(query, anchor, arg),
            Op::Publish { kind, size } => {
                let name = TYPES[usize::from(kind) % TYPES.len()];
                let mut payload = Map::new();
                payload.insert("p".into(), "x".repeat(usize::from(size % 64) * 8).into());
                self.log_publish(1, None, name, Some(Value::Object(payload)));
            }
            Op::LogJump { lost, new_epoch } => {
                let epoch = new_epoch.then(|| Epoch(self.sim.log.epoch.0.wrapping_add(1)));
                let name = TYPES[usize::from(lost) % TYPES.len()];
                self.log_publish(1 + u64::from(lost % 4), epoch, name, None);
            }
            Op::LogRepeat { back } => {
                let delivery = self.sim.repeat(usize::from(back % 8));
                assert!(
                    matches!(
                        delivery,
                        None | Some(Delivery::Stale | Delivery::ShuttingDown)
                    ),
                    "a repeat was delivered: {delivery:?}"
                );
            }
            Op::ConnectFrom { conn, frame, query } => self.connect_from(conn, frame, query),
            Op::WallClock { skew } => {
                let skew = time::Duration::seconds(i64::from(skew));
                let at = time::macros::datetime!(2026-04-26 17:00:00 UTC)
                    + time::Duration::try_from(self.sim.now.duration_since(self.sim.start))
                        .expect("short runs")
                    + skew;
                let now = self.sim.now;
                self.sim.hub.set_wall_clock(now, at);
                self.sim.drain();
            }
            Op::Text { conn, kind } => {
                let conn = self.conn(conn);
                let text = self.text(kind);
                self.note_text(conn, &text);
                self.sim.input(Input::Text {
                    conn,
                    text: Bytes::from(text),
                });
            }
            Op::RawText { conn, ref text } => {
                let conn = self.conn(conn);
                self.note_text(conn, text);
                self.sim.input(Input::Text {
                    conn,
                    text: Bytes::copy_from_slice(text),
                });
            }
            Op::Binary { conn } => {
                let conn = self.conn(conn);
                self.sim.input(Input::Binary { conn });
            }
            Op::Alive { conn } => {
                let conn = self.conn(conn);
                self.sim.input(Input::Alive { conn });
            }
            Op::Violation { conn, kind } => {
                let conn = self.conn(conn);
                let kind = match kind % 3 {
                    0 => Violation::MessageTooLarge,
                    1 => Violation::InvalidUtf8,
                    _ => Violation::Protocol,
                };
                self.sim.input(Input::Violation { conn, kind });
            }
            Op::Disconnect { conn, lost } => {
                let conn = self.conn(conn);
                let cause = if lost {
                    DisconnectCause::Lost
                } else {
                    DisconnectCause::Closed(Some(CloseCode::NORMAL))
                };
                self.sim.disconnect(conn, cause);
            }
            Op::Flush { conn, frames } => {
                let conn = self.conn(conn);
                let Some(client) = self.sim.clients.get_mut(&conn) else {
                    return;
                };
                let frames = usize::from(frames).min(client.unflushed.len());
                if client.removed || frames == 0 {
                    return;
                }
                let bytes = client.unflushed.drain(..frames).map(|f| f.len()).sum();
                let now = self.sim.now;
                self.sim.hub.handle_input(
                    now,
                    Input::Flushed {
                        conn,
                        frames,
                        bytes,
                    },
                );
                self.sim.drain();
            }
            Op::Stall { conn, on } => {
                let conn = self.conn(conn);
                if let Some(track) = self.tracks.get_mut(&conn).filter(|_| on) {
                    track.always_responsive = false;
                }
                self.sim.stall(conn, on);
            }
            Op::Responsive { conn, on } => {
                let conn = self.conn(conn);
                if let Some(track) = self.tracks.get_mut(&conn).filter(|_| !on) {
                    track.always_responsive = false;
                }
                self.sim.set_responsive(conn, on);
            }
            Op::Advance { ms } => {
                let target = self.sim.now + Duration::from_millis(u64::from(ms));
                while let Some(due) = self.sim.hub.poll_timeout().filter(|due| *due <= target) {
                    let now = self.sim.now.max(due);
                    self.fire(now);
                }
                self.sim.now = target;
            }
            Op::Step => {
                if let Some(due) = self.sim.hub.poll_timeout() {
                    let now = self.sim.now.max(due);
                    self.fire(now);
                }
            }
            Op::EarlyTimeout => self.fire(self.sim.now),
            Op::StaleTimeout { back } => {
                let at = self.before(back);
                self.sim.hub.handle_timeout(at);
                self.check_timeout(at);
                self.sim.drain();
            }
            Op::StalePublish { back } => {
                let at = self.before(back);
                let now = std::mem::replace(&mut self.sim.now, at);
                self.log_publish(1, None, "a", None);
                self.sim.now = now;
            }
            Op::Shutdown => {
                let now = self.sim.now;
                self.sim.hub.shutdown(now);
                self.shut_down = true;
                self.sim.drain();
            }
            Op::AnswerFetch { trim, old } => {
                let Some(&(_, after, before)) = self.sim.fetches.first() else {
                    return;
                };
                let span = before.0.saturating_sub(after.seq.0);
                let kept_from = after.seq.0 + span * u64::from(trim % 8) / 8;
                let age = Duration::from_millis(100 * u64::from(old));
                self.sim.answer_fetch(|seq| seq > kept_from, age);
            }
            Op::StaleFlush {
                conn,
                frames,
                bytes,
            } => {
                let conn = self.conn(conn);
                if self.sim.hub.queued(conn).is_none() {
                    let now = self.sim.now;
                    self.sim.hub.handle_input(
                        now,
                        Input::Flushed {
                            conn,
                            frames: usize::from(frames),
                            bytes: usize::from(bytes),
                        },
                    );
                    self.sim.drain();
                }
            }
        }
    }

    fn shutting_down(&self) -> bool {
        self.shut_down
    }

    fn before(&self, back: u8) -> Instant {
        let back = Duration::from_millis(10 * u64::from(back));
        self.sim
            .now
            .checked_sub(back)
            .unwrap_or(self.sim.start)
            .max(self.sim.start)
    }

    /// `handle_timeout(now)` with the simulation's clock at `now`, checked, then drained.
    fn fire(&mut self, now: Instant) {
        self.sim.now = now;
        let open: Vec<ConnId> = self
            .sim
            .clients
            .iter()
            .filter(|(_, c)| !c.is_closed())
            .map(|(id, _)| *id)
            .collect();
        self.sim.hub.handle_timeout(now);
        self.check_timeout(now);
        self.sim.drain();
        let liveness = self.config.liveness_timeout();
        for id in open {
            let client = &self.sim.clients[&id];
            if let Some((code, _)) = &client.closed {
                if *code == CloseCode::LIVENESS_TIMEOUT {
                    assert!(
                        !self.tracks.get(&id).is_some_and(|t| t.always_responsive),
                        "{id} answered every ping and was closed for silence"
                    );
                    let life = client.last_life.expect("set at accept");
                    assert!(
                        now.duration_since(life) >= liveness,
                        "{id} closed for silence {:?} after its last sign of life",
                        now.duration_since(life)
                    );
                }
            }
        }
    }

    fn check_timeout(&self, at: Instant) {
        if let Some(next) = self.sim.hub.poll_timeout() {
            assert!(
                next > at,
                "poll_timeout {:?} after handle_timeout at {:?}",
                next.duration_since(self.sim.start),
                at.duration_since(self.sim.start)
            );
        }
    }

    fn connect(&mut self, query: u8, anchor: u8, arg: u8) {
        let base = QUERIES[usize::from(query) % QUERIES.len()];
        let head = self.sim.hub.head();
        let (epoch, last) = (head.epoch, head.seq.0);
        let anchor = match anchor % 7 {
            0 => None,
            1 => Some(format!(
                "{epoch}-{}",
                last.saturating_sub(u64::from(arg % 16))
            )),
            2 => Some(format!("{epoch}-{}", last + 1 + u64::from(arg % 4))),
            3 => Some(format!("00000000-{}", 1 + u64::from(arg % 64))),
            4 => Some("not-an-id".to_owned()),
            5 => Some(format!(" {epoch}-{last}")),
            _ => Some(String::new()),
        };
        self.handshake(base, anchor, arg & 0x80 != 0);
    }

    /// Resumes from a stream frame another client received: the `frame`-th from its newest.
    fn connect_from(&mut self, conn: u8, frame: u8, query: u8) {
        let conn = self.conn(conn);
        let Some(client) = self.sim.clients.get(&conn) else {
            return;
        };
        let ids: Vec<EventId> = client.stream().filter_map(|f| f.id).collect();
        let Some(anchor) = ids.iter().rev().nth(usize::from(frame) % ids.len().max(1)) else {
            return;
        };
        let base = QUERIES[usize::from(query) % 5]; // the valid filters
        self.handshake(base, Some(anchor.to_string()), query & 0x80 != 0);
    }

    fn handshake(&mut self, base: &str, anchor: Option<String>, responsive: bool) {
        let mut query = base.to_owned();
        if let Some(anchor) = &anchor {
            if !query.is_empty() {
                query.push('&');
            }
            let _ = write!(query, "last_event_id={}", anchor.replace(' ', "%20"));
        }
        let open = self.sim.clients.values().filter(|c| !c.removed).count();
        let capacity = if open < self.config.max_connections() {
            Capacity::Free
        } else {
            Capacity::Full
        };
        let request = HandshakeRequest {
            query: Some(&query),
            ..Default::default()
        };
        match decide(&self.config, &request, capacity) {
            Decision::Accept(params) => {
                let filter = params.filter.clone();
                let at = self.start_position(params.anchor.as_deref());
                let anchored = params.anchor.is_some();
                let ticks_at_start = self.sim.hub.metrics(self.sim.now).heartbeat_ticks;
                let id = self.sim.accept(params);
                self.sim.set_responsive(id, responsive);
                self.tracks.insert(
                    id,
                    Track {
                        filter,
                        anchored,
                        filter_changed: false,
                        seen: 0,
                        at,
                        free: false,
                        epoch_start: self.start_position(Some("")),
                        ticks_at_start,
                        always_responsive: responsive,
                    },
                );
            }
            Decision::Refuse(refusal) => {
                assert_eq!(capacity, Capacity::Full, "refused with room: {refusal:?}");
            }
            Decision::Reject(_) => {}
        }
    }

    /// Where a client with this anchor starts in [`Sim::published`]: after every event up to
    /// the anchor, or after everything delivered without one. An anchor that cannot resume
    /// starts at the current epoch (it gets `resync_required` first, and then any later event).
    fn start_position(&self, anchor: Option<&str>) -> usize {
        let published = &self.sim.published;
        match anchor.map(EventId::parse) {
            None => published.len(),
            Some(Some(id)) if id.epoch == self.sim.hub.epoch() => position_after(published, id),
            Some(_) => published
                .iter()
                .position(|(id, _)| id.epoch == self.sim.hub.epoch())
                .unwrap_or(published.len()),
        }
    }

    /// The log sequences an event `step` after its head (in a new epoch if given); the hub
    /// must deliver it unless it is shutting down.
    fn log_publish(&mut self, step: u64, epoch: Option<Epoch>, name: &str, payload: Option<Value>) {
        if let Some(epoch) = epoch {
            self.sim.log = EventId::start(epoch);
        }
        let log = self.sim.log;
        let id = EventId {
            epoch: log.epoch,
            seq: ferret_ws_core::Seq(log.seq.0 + step),
        };
        self.sim.log = id;
        let delivery = self.sim.deliver(id, name, payload);
        if self.shutting_down() {
            assert_eq!(delivery, Delivery::ShuttingDown);
            return;
        }
        let expected = match (epoch.is_some(), step > 1) {
            (true, _) => Delivery::Resynced(ferret_ws_core::ResyncReason::UnknownEpoch),
            (false, true) => Delivery::Resynced(ferret_ws_core::ResyncReason::Evicted),
            (false, false) => Delivery::Delivered,
        };
        assert_eq!(delivery, expected, "delivery of {id}");
    }

    /// A client message: `kind` picks ping, pong, a subscribe, a bad or unknown message,
    /// invalid UTF-8, or a message of exactly the size limit or one byte over it.
    fn text(&self, kind: u8) -> Vec<u8> {
        let limit = self.config.max_client_message();
        let pad = |len: usize| {
            let ping = br#"{"type":"ping"}"#;
            let mut text = vec![b' '; len.saturating_sub(ping.len())];
            text.extend_from_slice(ping);
            text
        };
        match kind % 9 {
            0 => br#"{"type":"ping"}"#.to_vec(),
            1 => br#"{"type":"pong"}"#.to_vec(),
            2 => {
                let query = QUERIES[usize::from(kind / 9) % 5];
                let types = query.strip_prefix("types=").unwrap_or("");
                let filter = TypeFilter::parse_list(types).expect("the first five are valid");
                encode_client_message(&ClientMessage::Subscribe(filter)).into_bytes()
            }
            3 => br#"{"type":"subscribe","payload":{"types":["A"]}}"#.to_vec(),
            4 => br#"{"type":"hello"}"#.to_vec(),
            5 => b"{not json".to_vec(),
            6 => b"\xff\xfe{}".to_vec(),
            7 => pad(limit),
            _ => pad(limit + 1),
        }
    }

    /// Marks a client whose filter this message may change.
    fn note_text(&mut self, conn: ConnId, text: &[u8]) {
        if let Ok(ClientMessage::Subscribe(_)) = parse_client_message(text) {
            if let Some(track) = self.tracks.get_mut(&conn) {
                track.filter_changed = true;
            }
        }
    }

    /// Checks the hub's invariants; `after` names the step for the panic message.
    fn check(&self, after: impl std::fmt::Debug) {
        let sim = &self.sim;
        let context = || {
            let tail: Vec<&String> = sim.transcript.iter().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().map(String::as_str).collect();
            format!("step {} {after:?}\n{}", self.step, tail.join("\n"))
        };
        assert!(
            sim.violations.is_empty(),
            "{}\nviolations:\n{}",
            context(),
            sim.violations.join("\n")
        );
        let metrics = sim.hub.metrics(sim.now);
        assert!(
            metrics.replay_held <= self.config.replay_buffer_size(),
            "{}\nreplay holds {} events",
            context(),
            metrics.replay_held
        );
        assert!(
            metrics.replay_bytes <= self.config.replay_buffer_bytes(),
            "{}\nreplay holds {} bytes",
            context(),
            metrics.replay_bytes
        );
        // The global budget: the hub counts what the writers hold, each shared frame once, and
        // that never passes the budget by more than one frame (before the shutdown).
        let queued = metrics.queued_bytes;
        assert_eq!(
            queued,
            sim.queued_bytes(),
            "{}\nthe hub counts {queued} bytes queued, the writers hold {}",
            context(),
            sim.queued_bytes()
        );
        // Shutdown notices always go (each connection's last frame), budget or not.
        let bound = self.config.max_queued_bytes() + sim.largest_frame;
        assert!(
            queued <= bound || sim.hub.is_shutting_down(),
            "{}\n{queued} bytes queued, more than the budget and one frame ({bound})",
            context()
        );
        let deadline = self.config.liveness_timeout() + self.config.heartbeat_interval();
        for (id, client) in &sim.clients {
            let queued = sim.hub.queued(*id);
            if client.removed {
                assert_eq!(queued, None, "{}\n{id} removed but still known", context());
                continue;
            }
            let model = (
                client.unflushed.len(),
                client.unflushed.iter().map(|f| f.len()).sum(),
            );
            assert_eq!(queued, Some(model), "{}\n{id} queue", context());
            assert!(
                model.0 <= sim.hub.max_queued_outputs(),
                "{}\n{id} has {} outputs queued",
                context(),
                model.0
            );
            if !client.is_closed() {
                let life = client.last_life.expect("set at accept");
                assert!(
                    sim.now.duration_since(life) < deadline,
                    "{}\n{id} silent for {:?} and still open",
                    context(),
                    sim.now.duration_since(life)
                );
            }
        }
    }

    /// The reference model of delivery: a client that kept its filter gets exactly the
    /// delivered events after its start that it matches, in order, without duplicate, with a
    /// hole only right after a `resync_required`; a heartbeat never names an event it is still
    /// to receive; once it has read everything, it has all of them. Checked incrementally, so
    /// a long run stays linear in the frames sent.
    fn check_delivery(&mut self, op: &Op) {
        let Run {
            sim, tracks, step, ..
        } = self;
        let published = &sim.published;
        let fail = |why: String| -> ! {
            panic!("step {step} {op:?}: {why}\n{}", sim.transcript.join("\n"))
        };
        for (id, track) in tracks.iter_mut() {
            if track.filter_changed {
                continue;
            }
            let client = &sim.clients[id];
            let due_between = |from: usize, to: usize| {
                published[from.min(to)..to]
                    .iter()
                    .find(|(_, name)| track.filter.matches(name))
                    .map(|(id, _)| *id)
            };
            for (index, frame) in client.frames.iter().enumerate().skip(track.seen) {
                if frame.event_type == "resync_required" {
                    if index == 0 {
                        // The anchor could not resume: the replay starts at the epoch's
                        // oldest event still buffered.
                        track.at = track.at.min(track.epoch_start);
                    }
                    track.free = true;
                    continue;
                }
                let Some(event_id) = frame.id else { continue };
                if matches!(frame.event_type.as_str(), "heartbeat" | "health_status") {
                    let named = position_after(published, event_id);
                    if let Some(missed) = due_between(track.at, named).filter(|_| !track.free) {
                        fail(format!(
                            "{id} got a {} naming {event_id} before event {missed}",
                            frame.event_type
                        ));
                    }
                    continue;
                }
                let Some(k) = published[track.at..]
                    .iter()
                    .position(|(p, _)| *p == event_id)
                    .map(|k| k + track.at)
                else {
                    fail(format!(
                        "{id} got event {event_id}, not due after {} of {published:?}",
                        track.at
                    ));
                };
                if let Some(missed) = due_between(track.at, k).filter(|_| !track.free) {
                    fail(format!(
                        "{id} got event {event_id} before {missed}, with no resync"
                    ));
                }
                track.at = k + 1;
                track.free = false;
            }
            track.seen = client.frames.len();
            let fetching = sim.fetches.iter().any(|(conn, _, _)| conn == id);
            let caught_up = !client.is_closed()
                && !client.removed
                && !client.stalled
                && client.unflushed.is_empty()
                && !fetching
                && !track.free;
            if let Some(missing) = due_between(track.at, published.len()).filter(|_| caught_up) {
                fail(format!("{id} is idle without event {missing}"));
            }
            // One heartbeat per tick: a live reader from the start gets every tick's frame.
            let beats: Vec<&Bytes> = client.of_type("heartbeat").map(|f| &f.raw).collect();
            // Counted by the hub: a tick's frame may first reach anyone later (a catching-up
            // client), so the frames seen are no clock.
            let ticks = sim.hub.metrics(sim.now).heartbeat_ticks - track.ticks_at_start;
            let reader =
                !track.anchored && !client.stalled && !client.is_closed() && !client.removed;
            if reader && track.always_responsive && beats.len() as u64 != ticks {
                fail(format!(
                    "{id} got {} heartbeats for {ticks} ticks",
                    beats.len()
                ));
            }
        }
    }
}

/// How many of `published` lie at or before `id`: those of earlier epochs, and those of its
/// epoch up to its seq.
fn position_after(published: &[(EventId, String)], id: EventId) -> usize {
    match published
        .iter()
        .rposition(|(p, _)| p.epoch == id.epoch && p.seq <= id.seq)
    {
        Some(k) => k + 1,
        None => published
            .iter()
            .position(|(p, _)| p.epoch == id.epoch)
            .unwrap_or(published.len()),
    }
}
