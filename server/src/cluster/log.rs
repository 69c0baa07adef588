//! The stream's layout in Redis and the two scripts that change it.
//!
//! Keys, for a stream key `K` (`--redis-stream`):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `K` | stream | one entry per event, id `<seq>-0`, fields `epoch`, `type`, `body`, `ms` |
//! | `K:meta` | hash | `epoch` (8 hex digits) and `seq` (the newest seq handed out) |
//! | `K:idem:<key>` | string | the `event_id` a publish with that `Idempotency-Key` got; expires with the replay TTL |
//!
//! The append script gives an event the next seq of the epoch and adds its entry in one atomic
//! step, so seqs are consecutive whatever the number of publishers, and `XRANGE` by seq is
//! direct. An entry's `body` is the envelope without its id ([`EventBody`]); every node that
//! reads it appends the same id, so every node sends the same bytes.

use bytes::Bytes;
use ferret_ws_core::{Epoch, EventBody, EventId, Seq, SequencedEvent, Timestamp};
use redis::Value;
use time::OffsetDateTime;

/// Appends one event: creates the epoch if the stream has none (it is new, or was lost),
/// answers a repeated idempotency key with the first event's id, otherwise takes the next seq
/// and adds the entry, trimming the stream to about `maxlen`.
///
/// KEYS: stream, meta, idempotency key (unused unless ARGV[6] is `1`).
/// ARGV: candidate epoch, type, body, maxlen, publication ms, keyed, key TTL ms.
/// Returns `{event_id, repeated}`.
pub(crate) const APPEND: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'seq', 0)
end
if ARGV[6] == '1' then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {seen, 1} end
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], seq .. '-0',
  'epoch', epoch, 'type', ARGV[2], 'body', ARGV[3], 'ms', ARGV[5])
local id = epoch .. '-' .. seq
if ARGV[6] == '1' then redis.call('SET', KEYS[3], id, 'PX', ARGV[7]) end
return {id, 0}
"#;

/// The stream's epoch (created from the candidate if there is none) and its newest seq.
///
/// KEYS: meta. ARGV: candidate epoch. Returns `{epoch, seq}`.
pub(crate) const EPOCH: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
return {epoch, redis.call('HGET', KEYS[1], 'seq') or '0'}
"#;

/// The Redis keys of one stream.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) stream: String,
    pub(crate) meta: String,
    idem_prefix: String,
}

impl Keys {
    pub(crate) fn new(stream: &str) -> Keys {
        Keys {
            stream: stream.to_owned(),
            meta: format!("{stream}:meta"),
            idem_prefix: format!("{stream}:idem:"),
        }
    }

    pub(crate) fn idempotency(&self, key: Option<&str>) -> String {
        format!("{}{}", self.idem_prefix, key.unwrap_or("-"))
    }
}

/// One stream entry, decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub(crate) id: EventId,
    pub(crate) body: EventBody,
    pub(crate) at: Timestamp,
}

impl Entry {
    /// The frame every node makes of it.
    pub(crate) fn event(&self) -> SequencedEvent {
        SequencedEvent::from_body(self.id, &self.body)
    }
}

/// Parses `<8 hex>`.
pub(crate) fn parse_epoch(text: &str) -> Option<Epoch> {
    EventId::parse(&format!("{text}-0")).map(|id| id.epoch)
}

/// Decodes the entries of an `XRANGE`/`XREVRANGE` reply, or of one stream of an `XREAD`
/// reply: `[[id, [field, value, ...]], ...]`. Entries that are not ours (a foreign id or
/// field set) are skipped and counted in the second value.
pub(crate) fn decode_entries(reply: &Value) -> (Vec<Entry>, usize) {
    let (mut entries, mut skipped) = (Vec::new(), 0);
    let Value::Array(items) = reply else {
        return (entries, 0);
    };
    for item in items {
        match decode_entry(item) {
            Some(entry) => entries.push(entry),
            None => skipped += 1,
        }
    }
    (entries, skipped)
}

fn decode_entry(item: &Value) -> Option<Entry> {
    let Value::Array(pair) = item else {
        return None;
    };
    let [id, Value::Array(fields)] = pair.as_slice() else {
        return None;
    };
    let seq = text(id)?.strip_suffix("-0")?.parse::<u64>().ok()?;
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some(name))
            .and_then(|kv| bytes(&kv[1]))
    };
    let utf8 = |b: Bytes| String::from_utf8(b.to_vec()).ok();
    let epoch = parse_epoch(&utf8(field("epoch")?)?)?;
    let event_type = utf8(field("type")?)?;
    let body = EventBody::from_stored(&event_type, field("body")?)?;
    let ms: i128 = utf8(field("ms")?)?.parse().ok()?;
    let at = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()?;
    Some(Entry {
        id: EventId {
            epoch,
            seq: Seq(seq),
        },
        body,
        at: Timestamp::new(at),
    })
}

/// The entries of our stream in an `XREAD` reply: `[[stream, entries]]` (RESP2) or a map
/// (RESP3); nil when nothing arrived in time.
pub(crate) fn decode_xread(reply: &Value) -> (Vec<Entry>, usize) {
    match reply {
        Value::Array(streams) => streams
            .iter()
            .find_map(|s| match s {
                Value::Array(pair) if pair.len() == 2 => Some(decode_entries(&pair[1])),
                _ => None,
            })
            .unwrap_or_default(),
        Value::Map(streams) => streams
            .first()
            .map(|(_, entries)| decode_entries(entries))
            .unwrap_or_default(),
        _ => (Vec::new(), 0),
    }
}

pub(crate) fn text(value: &Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Int(n) => Some(Bytes::from(n.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferret_ws_core::{Event, EventType};

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn an_entry_decodes_to_the_frame_its_publisher_would_make() {
        let event = Event::new(EventType::new("render.done").unwrap());
        let at = Timestamp::new(OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap());
        let body = event.encode_body(at);
        let entry = Value::Array(vec![
            bulk(b"7-0"),
            Value::Array(vec![
                bulk(b"epoch"),
                bulk(b"0000beef"),
                bulk(b"type"),
                bulk(b"render.done"),
                bulk(b"body"),
                bulk(body.bytes()),
                bulk(b"ms"),
                bulk(b"1790000000000"),
            ]),
        ]);
        let (entries, skipped) = decode_entries(&Value::Array(vec![entry, bulk(b"junk")]));
        assert_eq!(skipped, 1);
        let id = EventId {
            epoch: Epoch(0xbeef),
            seq: Seq(7),
        };
        assert_eq!(entries[0].event(), event.sequence(id, at));
        assert_eq!(entries[0].at, at);
    }
}
