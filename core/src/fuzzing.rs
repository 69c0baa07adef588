//! Harnesses for the cargo-fuzz targets in `fuzz/`, and for the test that replays their
//! corpora (`core/tests/fuzz_corpus.rs`).
//!
//! Each target in `fuzz/fuzz_targets/` is one line that calls a function here, so a crash
//! file found by the fuzzer replays under plain `cargo test` through the same code. A harness
//! accepts any bytes; it panics only when the code under test breaks one of its promises, and
//! the panic message says which.
//!
//! | harness | drives | checks |
//! | --- | --- | --- |
//! | [`parse_message`] | [`parse_client_message`] | no panic; a parsed message re-encodes to text that parses to the same message |
//! | [`handshake`] | [`decide`], then [`Hub::accept`] | the decision follows PROTOCOL.md §2 and §5 (checked against a model written here), and an accepted anchor gets the contract's resync reason and replay |
//! | [`hub_ops`] | a [`Sim`] through a sequence of inputs and time steps | after every step: the simulation's own checks, bounded queues and replay buffer, nothing for removed connections, `poll_timeout` later than the last `handle_timeout`, liveness bounds, delivery without gap or duplicate, and the same transcript on a second run |
//!
//! # Time
//!
//! The core never reads a clock, and neither does this module: the harnesses that build a
//! hub take the instant it starts at as their second argument, and the fuzz targets pass
//! the current time. Which instant it is does not matter: the hub only ever looks at offsets
//! from it, so every run of the same bytes is the same run.
//!
//! # Input formats
//!
//! Any bytes are a valid input; the formats below only matter for writing seeds by hand
//! (`fuzz/seeds.py` writes the committed ones).
//!
//! [`handshake`]: byte 0 holds flags (bit 0 a free connection slot, bits 1–4 whether the
//! query, `Last-Event-ID`, `Authorization` and `Origin` are present, bit 5 a known local
//! port, bit 6 a configured token); byte 1 picks the Origin policy (`% 3`: own, any, list).
//! The rest is split at `\n` into the query, `Last-Event-ID`, `Authorization`, `Origin`, the
//! configured token and, one per remaining line, the allowed origins.
//!
//! [`hub_ops`]: [`CONFIG_BYTES`] bytes of configuration, then operations, each an opcode
//! byte (modulo the number of operations, in the order of the private `Op` enum) followed by
//! its fields, one byte each unless noted. Missing bytes read as zero.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::sim::{Sim, SIM_EPOCH};
use crate::{
    decide, encode_client_message, parse_client_message, ClientMessage, CloseCode, ConnId,
    ConnParams, Decision, DisconnectCause, Epoch, Event, EventId, EventType, HandshakeRequest, Hub,
    HubConfig, Input, OriginPolicy, Output, Seq, Timestamp, TypeFilter, Violation,
    MAX_CLOSE_REASON, MAX_PATTERNS, OVERLOAD_RETRY_AFTER,
};

// ---------------------------------------------------------------------------------------
// parse_message

/// Parses `data` as a client message. On success the message must survive
/// [`encode_client_message`] and a second parse unchanged, and encoding must be stable; on
/// failure the error must carry one of the contract's two codes.
pub fn parse_message(data: &[u8]) {
    match parse_client_message(data) {
        Ok(message) => {
            assert!(
                std::str::from_utf8(data).is_ok(),
                "accepted a message that is not UTF-8: {data:?}"
            );
            let encoded = encode_client_message(&message);
            let reparsed = parse_client_message(encoded.as_bytes());
            assert_eq!(
                reparsed.as_ref(),
                Ok(&message),
                "re-parse of {encoded:?} differs"
            );
            assert_eq!(
                encode_client_message(&message),
                encoded,
                "encoding is not stable"
            );
            if let ClientMessage::Subscribe(filter) = &message {
                assert!(filter.items().count() <= MAX_PATTERNS);
            }
        }
        Err(error) => {
            assert!(
                matches!(error.code(), "bad_message" | "unknown_type"),
                "code {:?} is not in the contract",
                error.code()
            );
            let _ = error.detail();
        }
    }
}

// ---------------------------------------------------------------------------------------
// handshake

/// The epoch of the hub that [`handshake`] resumes anchors against.
const HANDSHAKE_EPOCH: Epoch = SIM_EPOCH;

/// Decides a `/ws` request made of `data` and checks the decision against a model of the
/// contract; an accepted request is then registered with a hub that has a known history
/// (a 4-event buffer with a 10 s TTL; events 1–6 at the start and 7 eleven seconds later, so
/// 1–3 were pushed out by size and 4–6 expire at the accept) and its resync reason and replay
/// are checked too.
pub fn handshake(data: &[u8], start: Instant) {
    let case = HandshakeCase::read(data);
    let request = case.request();
    let config = case.config();
    let decision = decide(&config, &request, case.has_room);
    assert_eq!(
        decide(&config, &request, case.has_room),
        decision,
        "the same request decided twice differs"
    );
    let expected = case.expected(&config);
    match (&decision, &expected) {
        (Decision::Refuse(refusal), Expected::Refuse(status)) => {
            assert_eq!(refusal.status, *status, "{case:?}");
            let retry = (*status == 503).then_some(OVERLOAD_RETRY_AFTER);
            assert_eq!(refusal.retry_after, retry, "{case:?}");
        }
        (Decision::Reject(rejection), Expected::Reject(code, prefix)) => {
            assert_eq!(rejection.code.0, *code, "{case:?}: {rejection:?}");
            assert!(rejection.code.is_sendable());
            assert!(rejection.reason.len() <= MAX_CLOSE_REASON);
            assert!(
                rejection.reason.starts_with(prefix.as_str()),
                "{case:?}: reason {:?} should start with {prefix:?}",
                rejection.reason
            );
        }
        (Decision::Accept(params), Expected::Accept(model)) => {
            assert_eq!(
                params.filter.items().collect::<Vec<_>>(),
                model.types,
                "{case:?}"
            );
            assert_eq!(
                params.subscribe_token.as_deref(),
                model.subscribe_token.as_deref()
            );
            match (&params.anchor, &model.anchor) {
                (None, None) => {}
                (Some(got), Some(raw)) => assert_eq!(&**got, raw, "{case:?}: anchor kept whole"),
                (got, want) => panic!("{case:?}: anchor {got:?}, expected {want:?}"),
            }
            check_resume(params, model, start);
        }
        (got, want) => panic!("{case:?}\n decided {got:?}\n expected {want:?}"),
    }
}

#[derive(Debug, Default)]
struct HandshakeCase {
    has_room: bool,
    query: Option<String>,
    last_event_id: Option<String>,
    authorization: Option<String>,
    origin: Option<String>,
    local_port: Option<u16>,
    token: Option<String>,
    policy: u8,
    allowed: Vec<String>,
}

#[derive(Debug)]
enum Expected {
    Refuse(u16),
    Reject(u16, String),
    Accept(AcceptModel),
}

#[derive(Debug)]
struct AcceptModel {
    types: Vec<String>,
    subscribe_token: Option<String>,
    /// The anchor as given (trimmed).
    anchor: Option<String>,
}

impl HandshakeCase {
    fn read(data: &[u8]) -> HandshakeCase {
        let flags = data.first().copied().unwrap_or(0);
        let policy = data.get(1).copied().unwrap_or(0);
        let rest = data.get(2..).unwrap_or(&[]);
        let mut lines = rest
            .split(|b| *b == b'\n')
            .map(|line| String::from_utf8_lossy(line).into_owned());
        let mut field = |bit: u8| {
            let line = lines.next().unwrap_or_default();
            (flags & (1 << bit) != 0).then_some(line)
        };
        let query = field(1);
        let last_event_id = field(2);
        let authorization = field(3);
        let origin = field(4);
        let token = field(6).filter(|t| !t.is_empty());
        HandshakeCase {
            has_room: flags & 1 != 0,
            query,
            last_event_id,
            authorization,
            origin,
            local_port: (flags & (1 << 5) != 0).then_some(8765),
            token,
            policy: policy % 3,
            allowed: lines.collect(),
        }
    }

    fn request(&self) -> HandshakeRequest<'_> {
        HandshakeRequest {
            query: self.query.as_deref(),
            last_event_id: self.last_event_id.as_deref(),
            authorization: self.authorization.as_deref(),
            origin: self.origin.as_deref(),
            local_port: self.local_port,
        }
    }

    fn config(&self) -> HubConfig {
        let policy = match self.policy {
            0 => OriginPolicy::Own,
            1 => OriginPolicy::Any,
            _ => OriginPolicy::List(self.allowed.clone()),
        };
        HubConfig::builder()
            .allowed_origins(policy)
            .token(self.token.clone())
            .build()
            .expect("a non-empty token and default limits are valid")
    }

    /// What the contract says about this request, worked out without the code under test.
    fn expected(&self, config: &HubConfig) -> Expected {
        if let Some(origin) = &self.origin {
            if !self.origin_allowed(origin) {
                return Expected::Refuse(403);
            }
        }
        if !self.has_room {
            return Expected::Refuse(503);
        }
        let mut params: BTreeMap<&str, String> = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
        {
            let Some(known) = ["last_event_id", "types", "subscribe_token", "token"]
                .into_iter()
                .find(|known| *known == name)
            else {
                continue;
            };
            if params.insert(known, value.into_owned()).is_some() {
                return Expected::Reject(4400, format!("{known}: given more than once"));
            }
        }
        if let Some(expected) = config.token() {
            let bearer = self.authorization.as_deref().and_then(|header| {
                let (scheme, token) = header.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
            let given = params.get("token").map(String::as_str).or(bearer);
            if given != Some(expected) {
                return Expected::Reject(4401, String::new());
            }
        }
        let types = params.get("types").map(String::as_str).unwrap_or("");
        let items: Vec<String> = if types.is_empty() {
            Vec::new()
        } else {
            types.split(',').map(str::to_owned).collect()
        };
        if items.len() > MAX_PATTERNS || !items.iter().all(|item| filter_item_ok(item)) {
            return Expected::Reject(4400, "types:".into());
        }
        let subscribe_token = params.get("subscribe_token").cloned();
        if let Some(token) = &subscribe_token {
            let hex = token
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if token.len() != 32 || !hex {
                return Expected::Reject(4400, "subscribe_token:".into());
            }
        }
        let anchor = params
            .get("last_event_id")
            .map(String::as_str)
            .or(self.last_event_id.as_deref())
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        Expected::Accept(AcceptModel {
            types: items,
            subscribe_token,
            anchor,
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        match self.policy {
            0 => self.local_port.is_some_and(|port| {
                ["127.0.0.1", "localhost", "[::1]"]
                    .iter()
                    .any(|host| origin == format!("http://{host}:{port}"))
            }),
            1 => true,
            _ => self
                .allowed
                .iter()
                .any(|a| a.trim_end_matches('/').to_ascii_lowercase() == origin),
        }
    }
}

/// `^[a-z][a-z0-9_.]{0,63}$`, written out again for the model.
fn type_name_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && name.len() <= 64
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn filter_item_ok(item: &str) -> bool {
    match item.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => prefix.len() < 64 && type_name_ok(prefix),
        None => type_name_ok(item),
    }
}

/// The contract's resync reason for `anchor` against the history [`handshake`] builds, and
/// the seqs replayed after it.
fn expected_resume(anchor: Option<&str>) -> (Option<&'static str>, Vec<u64>) {
    const NEWEST: u64 = 7;
    let fresh = |after: u64| (after + 1..=NEWEST).filter(|seq| *seq >= 7).collect();
    let Some(anchor) = anchor else {
        return (None, Vec::new());
    };
    let shaped = anchor.split_once('-').filter(|(epoch, seq)| {
        epoch.len() == 8
            && epoch
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && seq.starts_with(|c: char| matches!(c, '1'..='9'))
            && seq.bytes().all(|b| b.is_ascii_digit())
    });
    let Some((epoch, seq)) = shaped else {
        return (Some("invalid"), fresh(0));
    };
    if epoch != HANDSHAKE_EPOCH.to_string() {
        return (Some("unknown_epoch"), fresh(0));
    }
    let seq: u64 = match seq.parse() {
        Ok(seq) if seq <= NEWEST => seq,
        _ => return (Some("ahead"), fresh(0)),
    };
    match seq {
        0..=2 => (Some("evicted"), fresh(0)),
        3..=5 => (Some("expired"), fresh(0)),
        _ => (None, (seq + 1..=NEWEST).collect()),
    }
}

fn check_resume(params: &ConnParams, model: &AcceptModel, start: Instant) {
    let raw_anchor = model.anchor.as_deref();
    // The history's events are all of type `e`; the connection's filter applies to replay.
    let passes = model.types.is_empty()
        || model.types.iter().any(|item| match item.strip_suffix('*') {
            Some(prefix) => "e".starts_with(prefix),
            None => item == "e",
        });
    let config = HubConfig::builder()
        .replay_buffer_size(4)
        .replay_ttl(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .expect("valid config");
    let mut hub = Hub::new(config, HANDSHAKE_EPOCH, start, OffsetDateTime::UNIX_EPOCH);
    let event = || Event::new(EventType::new("e").expect("valid name"));
    for _ in 1..=6 {
        hub.publish(start, event()).expect("publish");
    }
    let later = start + Duration::from_secs(11);
    hub.publish(later, event()).expect("publish");
    while hub.poll_output().is_some() {}

    let conn = hub.accept(later, params.clone());
    let mut frames = Vec::new();
    while let Some(output) = hub.poll_output() {
        match output {
            Output::Send { conn: to, frame } if to == conn => frames.push(frame),
            other => panic!("unexpected output at accept: {other:?}"),
        }
    }
    let (reason, mut replay) = expected_resume(raw_anchor);
    if !passes {
        replay.clear();
    }
    let mut frames = frames
        .iter()
        .map(|frame| serde_json::from_slice::<Value>(frame).expect("the hub sends JSON"));
    if let Some(reason) = reason {
        let first = frames.next().unwrap_or(Value::Null);
        assert_eq!(
            first["type"], "resync_required",
            "anchor {raw_anchor:?}: {first}"
        );
        assert_eq!(
            first["payload"]["reason"], reason,
            "anchor {raw_anchor:?}: {first}"
        );
        assert_eq!(
            first["payload"]["last_event_id"].as_str(),
            params.anchor.as_deref()
        );
    }
    let replayed: Vec<u64> = frames
        .map(|frame| {
            let id = frame["event_id"].as_str().and_then(EventId::parse);
            id.unwrap_or_else(|| panic!("not a stream frame: {frame}"))
                .seq
                .0
        })
        .collect();
    assert_eq!(replayed, replay, "anchor {raw_anchor:?}");
}

// ---------------------------------------------------------------------------------------
// hub_ops

/// How many bytes of a [`hub_ops`] input make up the configuration.
pub const CONFIG_BYTES: usize = 13;

/// At most this many operations are run per input, so one input cannot take long.
const MAX_OPS: usize = 400;

/// The event types the harness publishes.
const TYPES: [&str; 5] = ["a", "a.x", "b_1", "b_2", "c.d"];

/// Type filters for handshakes and `subscribe` messages; some of them bad.
const QUERIES: [&str; 8] = [
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
enum Op {
    /// A handshake with one of [`QUERIES`] and an anchor made from `anchor` and `arg`.
    Connect { query: u8, anchor: u8, arg: u8 },
    /// The application publishes an event of one of [`TYPES`] with `size × 8` payload bytes.
    Publish { kind: u8, size: u8 },
    /// An event sequenced elsewhere, `delta` after the newest (0: out of order), maybe from
    /// another epoch.
    PublishSequenced { delta: u8, foreign: bool },
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
    /// The server starts shutting down.
    Shutdown,
    /// A flush report for a connection the hub has forgotten or never had.
    StaleFlush { conn: u8, frames: u8, bytes: u8 },
    /// A handshake refused or rejected by the adapter, for the metrics.
    Refused { status: u8 },
}

const OP_COUNT: u8 = 20;

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
            2 => Op::PublishSequenced {
                delta: byte(u)?,
                foreign: flag(u)?,
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
            _ => Op::Refused { status: byte(u)? },
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
    let mut out = format!("{config:#?}\n");
    for op in &ops {
        let _ = writeln!(out, "{op:?}");
    }
    for line in Run::new(config, start).play(&ops) {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn read_hub_ops(data: &[u8]) -> (HubConfig, Vec<Op>) {
    let mut u = Unstructured::new(data);
    let mut config_bytes = [0u8; CONFIG_BYTES];
    for byte in &mut config_bytes {
        *byte = u8::arbitrary(&mut u).unwrap_or(0);
    }
    let config = hub_config(&config_bytes);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (config, ops)
}

/// What the harness remembers about a client beyond the simulation's model.
struct Track {
    filter: TypeFilter,
    /// The anchor it connected with, if any.
    anchor: Option<Box<str>>,
    /// Set once it sent something that may have changed its filter.
    filter_changed: bool,
    /// Frames already checked by [`Run::check_delivery`].
    seen: usize,
    /// Events among them, each the next one due.
    matched: usize,
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
    fn new(config: HubConfig, start: Instant) -> Run {
        Run {
            sim: Sim::new(config.clone(), start),
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
                if self.shutting_down() {
                    let event = Event::new(EventType::new(name).expect("valid"));
                    assert!(self.sim.hub.publish(self.sim.now, event).is_err());
                } else {
                    self.sim.publish(name, Some(Value::Object(payload)));
                }
            }
            Op::PublishSequenced { delta, foreign } => {
                let epoch = if foreign { Epoch(0) } else { SIM_EPOCH };
                let seq = Seq(self.sim.hub.last_seq().0 + u64::from(delta % 4));
                let name = TYPES[usize::from(delta) % TYPES.len()];
                let at = Timestamp::new(OffsetDateTime::UNIX_EPOCH);
                let event = Event::new(EventType::new(name).expect("valid"))
                    .sequence(EventId { epoch, seq }, at);
                let ok = self.sim.hub.publish_sequenced(self.sim.now, event).is_ok();
                let should = !foreign && delta % 4 != 0 && !self.shutting_down();
                assert_eq!(
                    ok, should,
                    "publish_sequenced of {seq:?}, foreign {foreign}"
                );
                if ok {
                    self.sim.published.push((seq.0, name.to_owned()));
                }
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
                let bytes = client.unflushed.drain(..frames).sum();
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
                self.sim.stall(conn, on);
            }
            Op::Responsive { conn, on } => {
                let conn = self.conn(conn);
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
                let event = Event::new(EventType::new("a").expect("valid"));
                match self.sim.hub.publish(at, event) {
                    Ok(id) => {
                        assert!(!self.shutting_down());
                        self.sim.published.push((id.seq.0, "a".into()));
                    }
                    Err(_) => assert!(self.shutting_down()),
                }
                self.sim.drain();
            }
            Op::Shutdown => {
                let now = self.sim.now;
                self.sim.hub.shutdown(now);
                self.shut_down = true;
                self.sim.drain();
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
            Op::Refused { status } => {
                let now = self.sim.now;
                let input = if status & 1 == 0 {
                    Input::Refused {
                        status: 400 + u16::from(status),
                    }
                } else {
                    Input::Rejected {
                        code: CloseCode(4000 + u16::from(status)),
                    }
                };
                self.sim.hub.handle_input(now, input);
                self.sim.drain();
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
        let last = self.sim.hub.last_seq().0;
        let anchor = match anchor % 6 {
            0 => None,
            1 => Some(format!(
                "{SIM_EPOCH}-{}",
                last.saturating_sub(u64::from(arg % 16))
            )),
            2 => Some(format!("{SIM_EPOCH}-{}", last + 1 + u64::from(arg % 4))),
            3 => Some(format!("00000000-{}", 1 + u64::from(arg))),
            4 => Some("not-an-id".to_owned()),
            _ => Some(String::new()),
        };
        let mut query = base.to_owned();
        if let Some(anchor) = &anchor {
            if !query.is_empty() {
                query.push('&');
            }
            let _ = write!(query, "last_event_id={anchor}");
        }
        let has_room = self.sim.hub.connection_count() < self.config.max_connections();
        let request = HandshakeRequest {
            query: Some(&query),
            ..Default::default()
        };
        let now = self.sim.now;
        match decide(&self.config, &request, has_room) {
            Decision::Accept(params) => {
                let filter = params.filter.clone();
                let anchor = params.anchor.clone();
                let id = self.sim.accept(params);
                self.tracks.insert(
                    id,
                    Track {
                        filter,
                        anchor,
                        filter_changed: false,
                        seen: 0,
                        matched: 0,
                    },
                );
            }
            Decision::Refuse(refusal) => {
                assert!(!has_room, "refused with room: {refusal:?}");
                self.sim.hub.handle_input(
                    now,
                    Input::Refused {
                        status: refusal.status,
                    },
                );
                self.sim.drain();
            }
            Decision::Reject(rejection) => {
                self.sim.hub.handle_input(
                    now,
                    Input::Rejected {
                        code: rejection.code,
                    },
                );
                self.sim.drain();
            }
        }
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
        assert!(
            sim.hub.replay_len() <= self.config.replay_buffer_size(),
            "{}\nreplay holds {} events",
            context(),
            sim.hub.replay_len()
        );
        let metrics = sim.hub.metrics(sim.now);
        assert!(
            metrics.replay_bytes <= self.config.replay_buffer_bytes(),
            "{}\nreplay holds {} bytes",
            context(),
            metrics.replay_bytes
        );
        let deadline = self.config.liveness_timeout() + self.config.heartbeat_interval();
        for (id, client) in &sim.clients {
            let queued = sim.hub.queued(*id);
            if client.removed {
                assert_eq!(queued, None, "{}\n{id} removed but still known", context());
                continue;
            }
            let model = (client.unflushed.len(), client.unflushed.iter().sum());
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

    /// A client that kept its filter got the published events it matches after its start,
    /// in order, without gap or duplicate: all of them once it has caught up. Checked
    /// incrementally, so a long run stays linear in the frames sent.
    fn check_delivery(&mut self, op: &Op) {
        let Run {
            sim, tracks, step, ..
        } = self;
        for (id, track) in tracks.iter_mut() {
            let client = &sim.clients[id];
            let resynced = client
                .frames
                .first()
                .is_some_and(|f| f.event_type == "resync_required");
            if track.filter_changed || resynced {
                continue;
            }
            let after = match track.anchor.as_deref().and_then(EventId::parse) {
                Some(anchor) => anchor.seq.0,
                None => client.accepted_after,
            };
            let expected: Vec<u64> = sim
                .published
                .iter()
                .filter(|(seq, name)| *seq > after && track.filter.matches(name))
                .map(|(seq, _)| *seq)
                .collect();
            for frame in &client.frames[track.seen..] {
                let Some(event_id) = frame.id else { continue };
                if matches!(frame.event_type.as_str(), "heartbeat" | "health_status") {
                    continue;
                }
                let due = expected.get(track.matched);
                assert!(
                    due == Some(&event_id.seq.0),
                    "step {step} {op:?}: {id} got event {} where {due:?} was due of {expected:?}\n{}",
                    event_id.seq.0,
                    sim.transcript.join("\n")
                );
                track.matched += 1;
            }
            track.seen = client.frames.len();
            let caught_up = !client.is_closed()
                && !client.removed
                && !client.stalled
                && client.unflushed.is_empty();
            assert!(
                !caught_up || track.matched == expected.len(),
                "step {step} {op:?}: {id} is idle with {} of the events {expected:?}\n{}",
                track.matched,
                sim.transcript.join("\n")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_model_matches_the_contract_table() {
        assert_eq!(expected_resume(None), (None, vec![]));
        assert_eq!(expected_resume(Some("x")), (Some("invalid"), vec![7]));
        assert_eq!(expected_resume(Some("00000000-1")).0, Some("unknown_epoch"));
        assert_eq!(expected_resume(Some("5eed0001-8")).0, Some("ahead"));
        assert_eq!(expected_resume(Some("5eed0001-2")).0, Some("evicted"));
        assert_eq!(expected_resume(Some("5eed0001-5")).0, Some("expired"));
        assert_eq!(expected_resume(Some("5eed0001-6")), (None, vec![7]));
    }
}
