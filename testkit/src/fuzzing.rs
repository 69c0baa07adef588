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
//! | [`handshake`] | [`decide`], then [`Hub::accept`] | the decision follows PROTOCOL.md §2 and §5 (checked against a model written here), and an accepted anchor gets the protocol's resync reason and replay |
//! | [`hub_ops`] | a [`Sim`](crate::sim::Sim) through a sequence of [`Op`](crate::ops::Op)s | the checks of [`crate::ops`] after every step, and the same transcript on a second run |
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
//! port, bit 6 a configured token, bit 7 the client's address at its own cap); byte 1 picks the Origin policy (`% 3`: own, any, list).
//! The rest is split at `\n` into the query, `Last-Event-ID`, `Authorization`, `Origin`, the
//! configured token and, one per remaining line, the allowed origins.
//!
//! [`hub_ops`]: see [`crate::ops`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferret_ws_core::{
    decide, encode_client_message, parse_client_message, Capacity, ClientMessage, ConnParams,
    Decision, Epoch, Event, EventId, EventType, HandshakeRequest, Hub, HubConfig, OriginPolicy,
    Output, Sequencer, MAX_CLOSE_REASON, MAX_PATTERNS, OVERLOAD_RETRY_AFTER,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::sim::SIM_EPOCH;

pub use crate::ops::{describe_hub_ops, hub_ops, CONFIG_BYTES};

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
    let decision = decide(&config, &request, case.capacity);
    assert_eq!(
        decide(&config, &request, case.capacity),
        decision,
        "the same request decided twice differs"
    );
    let expected = case.expected(&config);
    match (&decision, &expected) {
        (Decision::Refuse(refusal), Expected::Refuse(status)) => {
            assert_eq!(refusal.status, *status, "{case:?}");
            let retry = matches!(*status, 429 | 503).then_some(OVERLOAD_RETRY_AFTER);
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

#[derive(Debug)]
struct HandshakeCase {
    capacity: Capacity,
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
    /// The anchor exactly as given.
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
        let capacity = match (flags & 1 != 0, flags & (1 << 7) != 0) {
            (false, _) => Capacity::Full,
            (true, true) => Capacity::PeerFull,
            (true, false) => Capacity::Free,
        };
        HandshakeCase {
            capacity,
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
            peer: None,
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
        match self.capacity {
            Capacity::Full | Capacity::Unavailable => return Expected::Refuse(503),
            Capacity::PeerFull => return Expected::Refuse(429),
            Capacity::Free => {}
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
            && (*seq == "0"
                || (seq.starts_with(|c: char| matches!(c, '1'..='9'))
                    && seq.bytes().all(|b| b.is_ascii_digit())))
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
    let wall = OffsetDateTime::UNIX_EPOCH;
    let mut sequencer = Sequencer::new(&config, HANDSHAKE_EPOCH, start, wall);
    let mut hub = Hub::new(config, HANDSHAKE_EPOCH, start, wall);
    let event = || Event::new(EventType::new("e").expect("valid name"));
    for _ in 1..=6 {
        let _ = hub.deliver(start, sequencer.sequence(start, event()));
    }
    let later = start + Duration::from_secs(11);
    let _ = hub.deliver(later, sequencer.sequence(later, event()));
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
        assert_eq!(expected_resume(Some("5eed0001-0")).0, Some("evicted"));
        assert_eq!(expected_resume(Some(" 5eed0001-6")).0, Some("invalid"));
        assert_eq!(expected_resume(Some("5eed0001-5")).0, Some("expired"));
        assert_eq!(expected_resume(Some("5eed0001-6")), (None, vec![7]));
    }
}
