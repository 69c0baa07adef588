//! Events: type names, ids, timestamps and the envelope, encoded once into shared bytes.
//!
//! An [`Event`] is what an application publishes. The hub gives it an [`EventId`] and a
//! [`Timestamp`] and encodes the envelope once into a [`SequencedEvent`], whose bytes every
//! recipient shares (`Bytes` clones are reference counts).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use time::OffsetDateTime;

/// Well-known and reserved event type names.
pub mod types {
    /// The hub-wide heartbeat (reserved: only the hub publishes it).
    pub const HEARTBEAT: &str = "heartbeat";
    /// Server health changes, such as `{"status":"shutting_down"}`.
    pub const HEALTH_STATUS: &str = "health_status";
    /// A directory scan started.
    pub const SCAN_STARTED: &str = "scan_started";
    /// A directory scan finished.
    pub const SCAN_COMPLETED: &str = "scan_completed";
    /// Progress of a background job.
    pub const JOB_PROGRESS: &str = "job_progress";
    /// A project was created.
    pub const PROJECT_CREATED: &str = "project_created";
    /// Control: the answer to a client's `ping` (reserved).
    pub const PONG: &str = "pong";
    /// Control: the answer to a client's `subscribe` (reserved).
    pub const SUBSCRIBED: &str = "subscribed";
    /// Control: a client message could not be handled (reserved).
    pub const ERROR: &str = "error";
    /// Control: the client's anchor cannot be resumed without a gap (reserved).
    pub const RESYNC_REQUIRED: &str = "resync_required";

    /// Names only the hub may send: the heartbeat, server health and the control types.
    pub const RESERVED: [&str; 6] = [
        HEARTBEAT,
        HEALTH_STATUS,
        PONG,
        SUBSCRIBED,
        ERROR,
        RESYNC_REQUIRED,
    ];

    /// Whether a frame of this type passes every type filter.
    pub fn always_delivered(name: &str) -> bool {
        RESERVED.contains(&name)
    }
}

/// The longest event type name in bytes.
pub const MAX_TYPE_LEN: usize = 64;

/// Whether `name` is a valid event type name: `^[a-z][a-z0-9_.]{0,63}$`.
pub fn is_valid_type_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes.len() <= MAX_TYPE_LEN
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.'))
}

/// A validated event type name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventType(Box<str>);

impl EventType {
    /// Validates `name` as an event type that applications may publish.
    ///
    /// Fails for a malformed name and for a reserved one (`heartbeat`, `health_status` and the
    /// control types).
    pub fn new(name: &str) -> Result<EventType, EventTypeError> {
        if !is_valid_type_name(name) {
            return Err(EventTypeError::Invalid);
        }
        if types::RESERVED.contains(&name) {
            return Err(EventTypeError::Reserved);
        }
        Ok(EventType(name.into()))
    }

    /// A type the hub itself sends (heartbeats, control frames); not for applications.
    pub(crate) fn internal(name: &'static str) -> EventType {
        debug_assert!(is_valid_type_name(name));
        EventType(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a name is not a publishable event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventTypeError {
    /// The name does not match `^[a-z][a-z0-9_.]{0,63}$`. Answer with 422.
    Invalid,
    /// The name is `heartbeat`, `health_status` or a control type, which only the hub sends.
    /// Answer with 422.
    Reserved,
}

impl fmt::Display for EventTypeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventTypeError::Invalid => "event type must match ^[a-z][a-z0-9_.]{0,63}$",
            EventTypeError::Reserved => "event type is reserved for the hub",
        })
    }
}

impl std::error::Error for EventTypeError {}

/// The epoch of a hub run: 32 random bits chosen at every start, written as 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u32);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A position in the stream of one epoch: the first event is 1, and `Seq(0)` stands for "before
/// the first event" (the head of an epoch that has none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Seq(pub u64);

impl Seq {
    /// The next position.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

/// The id of a stream frame, `<epoch>-<seq>` on the wire. An event's id is its own; a
/// heartbeat's names the newest event before it (`<epoch>-0` if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// The hub run that sequenced the frame.
    pub epoch: Epoch,
    /// The frame's position in that run.
    pub seq: Seq,
}

impl EventId {
    /// Parses `^[0-9a-f]{8}-(0|[1-9][0-9]*)$` exactly (no surrounding whitespace); `None`
    /// for anything else, including a seq that does not fit 64 bits.
    pub fn parse(text: &str) -> Option<EventId> {
        let (epoch, seq) = text.split_once('-')?;
        let hex = |b: &u8| matches!(b, b'0'..=b'9' | b'a'..=b'f');
        if epoch.len() != 8 || !epoch.as_bytes().iter().all(hex) || !is_seq_digits(seq) {
            return None;
        }
        Some(EventId {
            epoch: Epoch(u32::from_str_radix(epoch, 16).ok()?),
            seq: Seq(seq.parse().ok()?),
        })
    }
}

/// `0`, or digits without a leading zero.
pub(crate) fn is_seq_digits(seq: &str) -> bool {
    seq == "0"
        || (seq.starts_with(|c: char| matches!(c, '1'..='9'))
            && seq.bytes().all(|b| b.is_ascii_digit()))
}

impl EventId {
    /// The head of an epoch before its first event: `<epoch>-0`.
    pub fn start(epoch: Epoch) -> EventId {
        EventId { epoch, seq: Seq(0) }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq.0)
    }
}

/// A wall-clock instant, written as RFC 3339 UTC with microseconds and a `+00:00` offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// Wraps a wall-clock time; any offset is converted to UTC.
    pub fn new(at: OffsetDateTime) -> Timestamp {
        Timestamp(at.to_offset(time::UtcOffset::UTC))
    }

    /// The time `elapsed` after this one (saturating at the calendar's end).
    pub fn after(self, elapsed: Duration) -> Timestamp {
        Timestamp(
            self.0
                .checked_add(elapsed.try_into().unwrap_or(time::Duration::MAX))
                .unwrap_or(self.0),
        )
    }

    /// How long after `earlier` this is (zero if it is not later).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        (self.0 - earlier.0).try_into().unwrap_or(Duration::ZERO)
    }

    /// Appends `2026-04-26T17:24:55.055181+00:00`, always in this shape.
    fn write(self, out: &mut Vec<u8>) {
        use std::io::Write;
        let t = self.0;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond()
        );
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(32);
        self.write(&mut out);
        f.write_str(&String::from_utf8_lossy(&out))
    }
}

/// An event as an application publishes it: type, payload and the correlation id of its cause.
///
/// The payload is a JSON object. A [`serde_json::Value`] cannot hold NaN or an infinity, so an
/// event can always be encoded as valid JSON; parsers of peer input (the publish API) must
/// reject such numbers (serde_json does).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    event_type: EventType,
    payload: Map<String, Value>,
    correlation_id: Option<String>,
}

impl Event {
    /// An event with an empty payload and no correlation id.
    pub fn new(event_type: EventType) -> Event {
        Event {
            event_type,
            payload: Map::new(),
            correlation_id: None,
        }
    }

    /// Sets the payload object.
    pub fn with_payload(mut self, payload: Map<String, Value>) -> Event {
        self.payload = payload;
        self
    }

    /// Sets the id of the request that caused this event.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Event {
        self.correlation_id = Some(id.into());
        self
    }

    /// The type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The payload.
    pub fn payload(&self) -> &Map<String, Value> {
        &self.payload
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// Encodes the envelope once with its id and time: the step that makes it a stream frame
    /// ([`crate::Sequencer`] does it in the embedded mode).
    pub fn sequence(self, id: EventId, at: Timestamp) -> SequencedEvent {
        let frame = encode_envelope(
            self.event_type.as_str(),
            &self.payload,
            self.correlation_id.as_deref(),
            at,
            Some(id),
        );
        SequencedEvent {
            id,
            event_type: self.event_type,
            frame,
        }
    }

    /// Encodes the envelope once, with its time but before it has an id: everything up to
    /// `"event_id":`. An external log stores this [`EventBody`]; whoever reads the entry back
    /// with its id makes the frame with [`SequencedEvent::from_body`], and every reader gets
    /// the same bytes.
    pub fn encode_body(&self, at: Timestamp) -> EventBody {
        let out = envelope_start(
            self.event_type.as_str(),
            &self.payload,
            self.correlation_id.as_deref(),
            at,
        );
        EventBody {
            event_type: self.event_type.clone(),
            bytes: Bytes::from(out),
        }
    }
}

/// An envelope without its id ([`Event::encode_body`]): what an external log stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBody {
    event_type: EventType,
    bytes: Bytes,
}

impl EventBody {
    /// Takes a body read back from a log; `None` unless it is UTF-8 and shaped as
    /// [`Event::encode_body`] makes it (`{"type":"<event_type>",` … `,"event_id":`).
    pub fn from_stored(event_type: &str, bytes: Bytes) -> Option<EventBody> {
        let event_type = EventType::new(event_type).ok()?;
        let head = format!("{{\"type\":\"{}\",", event_type.as_str());
        let shaped = bytes.starts_with(head.as_bytes()) && bytes.ends_with(b",\"event_id\":");
        (shaped && std::str::from_utf8(&bytes).is_ok()).then_some(EventBody { event_type, bytes })
    }

    /// The type.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The stored bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

/// A stream event with its id, encoded once; cloning it shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedEvent {
    id: EventId,
    event_type: EventType,
    frame: Bytes,
}

impl SequencedEvent {
    /// The stream frame of a stored body with the id the log gave it: the body's bytes, then
    /// `"<id>"}`. Every reader of the same entry makes the same bytes.
    pub fn from_body(id: EventId, body: &EventBody) -> SequencedEvent {
        use std::io::Write;
        let mut out = Vec::with_capacity(body.bytes.len() + 24);
        out.extend_from_slice(&body.bytes);
        let _ = write!(out, "\"{id}\"}}"); // writing to a Vec cannot fail
        SequencedEvent {
            id,
            event_type: body.event_type.clone(),
            frame: Bytes::from(out),
        }
    }

    /// The id.
    pub fn id(&self) -> EventId {
        self.id
    }

    /// The type, for filters.
    pub fn event_type(&self) -> &EventType {
        &self.event_type
    }

    /// The encoded envelope: one JSON text frame, shared by every recipient.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

/// Encodes one envelope, keys in contract order: `type`, `payload`, `correlation_id`,
/// `timestamp`, `event_id`.
pub(crate) fn encode_envelope(
    event_type: &str,
    payload: &Map<String, Value>,
    correlation_id: Option<&str>,
    at: Timestamp,
    id: Option<EventId>,
) -> Bytes {
    use std::io::Write;
    let mut out = envelope_start(event_type, payload, correlation_id, at);
    match id {
        Some(id) => {
            let _ = write!(out, "\"{id}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Bytes::from(out)
}

/// The envelope up to and including `"event_id":`.
fn envelope_start(
    event_type: &str,
    payload: &Map<String, Value>,
    correlation_id: Option<&str>,
    at: Timestamp,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + event_type.len() + correlation_id.map_or(0, str::len));
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(event_type.as_bytes()); // valid names need no escaping
    out.extend_from_slice(b"\",\"payload\":");
    // A Map of Values always serialises (string keys, finite numbers).
    serde_json::to_writer(&mut out, payload).expect("a JSON object always serialises");
    out.extend_from_slice(b",\"correlation_id\":");
    match correlation_id {
        Some(id) => serde_json::to_writer(&mut out, id).expect("a string always serialises"),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"timestamp\":\"");
    at.write(&mut out);
    out.extend_from_slice(b"\",\"event_id\":");
    out
}

/// Encodes a control frame (`pong`, `subscribed`, `error`, `resync_required`): not part of the
/// stream, so its `event_id` is null.
pub(crate) fn encode_control(
    event_type: &str,
    payload: Map<String, Value>,
    at: Timestamp,
) -> Bytes {
    encode_envelope(event_type, &payload, None, at, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn type_names_follow_the_contract_pattern() {
        for ok in [
            "a",
            "scan_started",
            "preview.ready",
            "a1_.b",
            &"a".repeat(64),
        ] {
            assert!(is_valid_type_name(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1a",
            "_a",
            "a-b",
            "a b",
            "é",
            &"a".repeat(65),
            ".a",
        ] {
            assert!(!is_valid_type_name(bad), "{bad}");
        }
        assert_eq!(EventType::new("heartbeat"), Err(EventTypeError::Reserved));
        assert_eq!(
            EventType::new("resync_required"),
            Err(EventTypeError::Reserved)
        );
        assert_eq!(
            EventType::new("health_status"),
            Err(EventTypeError::Reserved)
        );
    }

    #[test]
    fn event_ids_round_trip_and_reject_bad_shapes() {
        let id = EventId {
            epoch: Epoch(0x00ab_cdef),
            seq: Seq(42),
        };
        assert_eq!(id.to_string(), "00abcdef-42");
        assert_eq!(EventId::parse("00abcdef-42"), Some(id));
        assert_eq!(
            EventId::parse("00abcdef-0"),
            Some(EventId::start(Epoch(0x00ab_cdef)))
        );
        for bad in [
            "",
            "00abcdef",
            "00abcdef-",
            "00abcdef-00",
            "00abcdef-01",
            " 00abcdef-1",
            "00abcdef-1 ",
            "00ABCDEF-1",
            "0abcdef-1",
            "00abcdef-1a",
            "00abcdef--1",
            "00abcdef-+1",
            "00abcdef-99999999999999999999999",
        ] {
            assert_eq!(EventId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_stored_body_with_its_id_is_the_same_frame() {
        let event = Event::new(EventType::new("render.done").unwrap()).with_correlation_id("c");
        let at = Timestamp::new(datetime!(2026-04-26 17:24:55.055181 UTC));
        let id = EventId {
            epoch: Epoch(7),
            seq: Seq(42),
        };
        let body = event.encode_body(at);
        let stored = EventBody::from_stored("render.done", body.bytes().clone()).unwrap();
        assert_eq!(
            SequencedEvent::from_body(id, &stored),
            event.sequence(id, at),
            "the same bytes as sequencing in one step"
        );
        assert_eq!(
            EventBody::from_stored("render.done", Bytes::from_static(b"{}")),
            None
        );
        assert_eq!(EventBody::from_stored("other", body.bytes().clone()), None);
        let mut bad = body.bytes().to_vec();
        bad[30] = 0xff;
        assert_eq!(
            EventBody::from_stored("render.done", Bytes::from(bad)),
            None
        );
    }

    #[test]
    fn timestamps_always_have_microseconds_and_utc_offset() {
        let t = Timestamp::new(datetime!(2026-04-26 17:24:55.055181 UTC));
        assert_eq!(t.to_string(), "2026-04-26T17:24:55.055181+00:00");
        let whole = Timestamp::new(datetime!(2026-01-02 03:04:05 +02:00));
        assert_eq!(whole.to_string(), "2026-01-02T01:04:05.000000+00:00");
    }

    #[test]
    fn envelope_keys_are_in_contract_order() {
        let payload = json!({"name": "x\"y", "n": 1.5})
            .as_object()
            .cloned()
            .unwrap();
        let event = Event::new(EventType::new("project_created").unwrap())
            .with_payload(payload)
            .with_correlation_id("req-1");
        let id = EventId {
            epoch: Epoch(1),
            seq: Seq(7),
        };
        let at = Timestamp::new(datetime!(2026-04-26 17:24:55.055181 UTC));
        let sequenced = event.sequence(id, at);
        assert_eq!(
            std::str::from_utf8(sequenced.frame()).unwrap(),
            r#"{"type":"project_created","payload":{"name":"x\"y","n":1.5},"correlation_id":"req-1","timestamp":"2026-04-26T17:24:55.055181+00:00","event_id":"00000001-7"}"#
        );
        let control = encode_control("pong", Map::new(), at);
        assert_eq!(
            std::str::from_utf8(&control).unwrap(),
            r#"{"type":"pong","payload":{},"correlation_id":null,"timestamp":"2026-04-26T17:24:55.055181+00:00","event_id":null}"#
        );
    }
}
