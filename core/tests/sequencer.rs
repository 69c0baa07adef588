//! The sequencer: consecutive ids, idempotent publishes, and timestamps that follow the wall
//! clock without ever going back.

// The simulated clock needs one arbitrary origin; only offsets from it are ever compared.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use ferret_ws_core::{Epoch, Event, EventType, HubConfig, IdempotencyKey, Sequenced, Sequencer};
use time::macros::datetime;
use time::OffsetDateTime;

fn event() -> Event {
    Event::new(EventType::new("a").expect("valid"))
}

fn timestamp(sequencer: &mut Sequencer, now: Instant) -> String {
    let frame = sequencer.sequence(now, event()).frame().clone();
    let json: serde_json::Value = serde_json::from_slice(&frame).expect("JSON");
    json["timestamp"].as_str().expect("a timestamp").to_owned()
}

#[test]
fn ids_are_consecutive_from_one_and_the_head_follows() {
    let now = Instant::now();
    let config = HubConfig::builder().build().expect("valid");
    let mut seq = Sequencer::new(&config, Epoch(9), now, OffsetDateTime::UNIX_EPOCH);
    assert_eq!(seq.head().to_string(), "00000009-0");
    let ids: Vec<String> = (0..3)
        .map(|_| seq.sequence(now, event()).id().to_string())
        .collect();
    assert_eq!(ids, ["00000009-1", "00000009-2", "00000009-3"]);
    assert_eq!(seq.head().to_string(), "00000009-3");
}

#[test]
fn a_key_publishes_once_within_the_ttl_and_memory_is_capped() {
    let start = Instant::now();
    let config = HubConfig::builder()
        .replay_ttl(Duration::from_secs(10))
        .max_idempotency_keys(2)
        .build()
        .expect("valid");
    let mut seq = Sequencer::new(&config, Epoch(1), start, OffsetDateTime::UNIX_EPOCH);
    let key = |k: &str| IdempotencyKey::new(k).expect("valid key");
    let Sequenced::New(first) = seq.sequence_once(start, event(), key("a")) else {
        panic!("the first use of a key publishes");
    };
    assert_eq!(
        seq.sequence_once(start, event(), key("a")),
        Sequenced::Repeat(first.id())
    );
    // Past the TTL the key is forgotten and publishes again.
    let later = start + Duration::from_secs(10);
    assert!(matches!(
        seq.sequence_once(later, event(), key("a")),
        Sequenced::New(_)
    ));
    // Past the count, the oldest key goes first.
    seq.sequence_once(later, event(), key("b"));
    seq.sequence_once(later, event(), key("c"));
    assert_eq!(seq.remembered_keys(), 2);
    assert!(matches!(
        seq.sequence_once(later, event(), key("a")),
        Sequenced::New(_)
    ));
}

#[test]
fn re_anchoring_follows_the_wall_clock_and_never_goes_back() {
    let start = Instant::now();
    let config = HubConfig::builder().build().expect("valid");
    let mut seq = Sequencer::new(&config, Epoch(1), start, datetime!(2026-01-01 00:00:00 UTC));
    let later = start + Duration::from_secs(10);
    assert_eq!(
        timestamp(&mut seq, later),
        "2026-01-01T00:00:10.000000+00:00"
    );
    // The machine slept for an hour: monotonic time stood still, the wall clock did not.
    seq.set_wall_clock(later, datetime!(2026-01-01 01:00:10 UTC));
    assert_eq!(
        timestamp(&mut seq, later + Duration::from_secs(1)),
        "2026-01-01T01:00:11.000000+00:00"
    );
    // An NTP step backwards: timestamps hold still until the wall clock catches up.
    seq.set_wall_clock(later, datetime!(2026-01-01 00:00:00 UTC));
    assert_eq!(
        timestamp(&mut seq, later + Duration::from_secs(2)),
        "2026-01-01T01:00:11.000000+00:00"
    );
}
