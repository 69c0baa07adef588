//! The hub's rules, one scenario each, on a simulated clock: no sockets, no sleeps.

// The simulated clock needs one arbitrary origin; only offsets from it are ever compared.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferret_ws_core::{
    CloseCode, ConnId, ConnParams, Delivery, DisconnectCause, Epoch, Event, EventId, EventType,
    HubConfig, Input, ResyncReason, Seq, TypeFilter, Violation,
};
use ferret_ws_testkit::sim::{Sim, SIM_EPOCH};
use serde_json::json;

const MS: Duration = Duration::from_millis(1);

fn config() -> ferret_ws_core::HubConfigBuilder {
    HubConfig::builder()
        .heartbeat_interval(1000 * MS)
        .liveness_timeout(3000 * MS)
}

fn sim(config: ferret_ws_core::HubConfigBuilder) -> Sim {
    Sim::new(config.build().expect("valid config"), Instant::now())
}

fn close_code(sim: &Sim, conn: ConnId) -> Option<u16> {
    sim.clients[&conn].closed.as_ref().map(|(code, _)| code.0)
}

fn anchor(seq: u64) -> String {
    EventId {
        epoch: SIM_EPOCH,
        seq: Seq(seq),
    }
    .to_string()
}

fn resume(sim: &mut Sim, last_event_id: &str) -> ConnId {
    sim.accept(ConnParams {
        anchor: Some(last_event_id.into()),
        ..Default::default()
    })
}

fn resync_reason(sim: &Sim, conn: ConnId) -> Option<String> {
    let frame = sim.clients[&conn].of_type("resync_required").next()?;
    Some(frame.payload["reason"].as_str()?.to_owned())
}

// ---- broadcast -------------------------------------------------------------------------

#[test]
fn broadcast_reaches_each_client_once_with_identical_bytes() {
    let mut sim = sim(config());
    let clients: Vec<ConnId> = (0..5).map(|_| sim.connect("")).collect();
    sim.publish(
        "project_created",
        Some(json!({"project_id": "p1", "name": "Demo"})),
    );
    let first = &sim.clients[&clients[0]].frames[0];
    assert_eq!(first.event_type, "project_created");
    assert_eq!(first.payload, json!({"project_id": "p1", "name": "Demo"}));
    for conn in &clients {
        let frames = &sim.clients[conn].frames;
        assert_eq!(frames.len(), 1, "{conn} got {frames:?}");
        assert_eq!(frames[0].raw, first.raw);
    }
    sim.assert_clean();
}

#[test]
fn envelope_carries_the_correlation_id_and_the_stream_id() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    let event = Event::new(EventType::new("scan_started").unwrap()).with_correlation_id("req-42");
    let id = sim.publish_event(event);
    let frame = &sim.clients[&conn].frames[0];
    assert_eq!(frame.correlation_id.as_deref(), Some("req-42"));
    assert_eq!(frame.id, Some(id));
    assert_eq!(id.to_string(), format!("{SIM_EPOCH}-1"));
    sim.assert_clean();
}

#[test]
fn a_client_gets_only_events_published_after_it_registered() {
    let mut sim = sim(config());
    sim.publish("before", None);
    let conn = sim.connect("");
    sim.publish("after", None);
    let types = sim.clients[&conn].types();
    assert_eq!(types, ["after"]);
}

#[test]
fn filters_from_the_handshake_and_from_subscribe() {
    let mut sim = sim(config());
    let filtered = sim.connect("types=scan_*");
    let everything = sim.connect("");
    sim.publish("scan_started", None);
    sim.publish("project_created", None);
    assert_eq!(sim.clients[&filtered].event_seqs(), [1]);
    assert_eq!(sim.clients[&everything].event_seqs(), [1, 2]);

    sim.send_text(
        filtered,
        r#"{"type":"subscribe","payload":{"types":["project_*"]}}"#,
    );
    let subscribed = sim.clients[&filtered].of_type("subscribed").next().unwrap();
    assert_eq!(subscribed.payload, json!({"types": ["project_*"]}));
    sim.publish("scan_completed", None);
    sim.publish("project_created", None);
    assert_eq!(sim.clients[&filtered].event_seqs(), [1, 4]);

    // A bad subscribe keeps the old filter.
    sim.send_text(
        filtered,
        r#"{"type":"subscribe","payload":{"types":["Bad"]}}"#,
    );
    let error = sim.clients[&filtered].of_type("error").next().unwrap();
    assert_eq!(error.payload["code"], "bad_message");
    sim.publish("project_created", None);
    assert_eq!(sim.clients[&filtered].event_seqs(), [1, 4, 5]);
    sim.assert_clean();
}

// ---- client messages -------------------------------------------------------------------

#[test]
fn ping_gets_pong_pong_is_silent_and_bad_messages_get_errors() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    let other = sim.connect("");
    sim.send_text(conn, r#"{"type":"ping"}"#);
    sim.send_text(conn, r#"{"type":"pong"}"#);
    sim.send_text(conn, "{not json");
    sim.send_text(conn, r#"{"type":"dance"}"#);
    let client = &sim.clients[&conn];
    let types = client.types();
    assert_eq!(types, ["pong", "error", "error"]);
    assert_eq!(client.frames[1].payload["code"], "bad_message");
    assert_eq!(client.frames[2].payload["code"], "unknown_type");
    assert!(client.frames[2].payload["detail"]
        .as_str()
        .unwrap()
        .contains("dance"));
    assert!(!client.is_closed());
    assert!(sim.clients[&other].frames.is_empty());
    sim.assert_clean();
}

#[test]
fn binary_oversize_utf8_and_protocol_faults_close_with_their_codes() {
    let mut sim = sim(config().max_client_message(16));
    let binary = sim.connect("");
    let exact = sim.connect("");
    let oversize = sim.connect("");
    let bad_utf8 = sim.connect("");
    let protocol = sim.connect("");
    let bystander = sim.connect("");
    sim.input(Input::Binary { conn: binary });
    sim.send_text(exact, r#"{"type":"ping"} "#); // exactly 16 bytes: accepted
    sim.send_text(oversize, r#"{"type":"ping"}  "#); // 17 bytes
    sim.input(Input::Text {
        conn: bad_utf8,
        text: Bytes::from_static(b"\xff\xfe"),
    });
    sim.input(Input::Violation {
        conn: protocol,
        kind: Violation::Protocol,
    });
    assert_eq!(close_code(&sim, binary), Some(1003));
    assert_eq!(close_code(&sim, exact), None);
    assert_eq!(sim.clients[&exact].of_type("pong").count(), 1);
    assert_eq!(close_code(&sim, oversize), Some(1009));
    assert_eq!(close_code(&sim, bad_utf8), Some(1007));
    assert_eq!(close_code(&sim, protocol), Some(1002));
    sim.publish("still_here", None);
    assert_eq!(sim.clients[&bystander].event_seqs(), [1]);
    assert_eq!(sim.clients[&binary].event_seqs(), Vec::<u64>::new());
    sim.assert_clean();
}

#[test]
fn a_flood_closes_with_4429_and_spares_the_others() {
    let mut sim = sim(config().client_rate(5).client_burst(10));
    let flooder = sim.connect("");
    let calm = sim.connect("");
    for _ in 0..10 {
        sim.send_text(flooder, r#"{"type":"pong"}"#);
    }
    assert_eq!(close_code(&sim, flooder), None, "the burst is allowed");
    sim.send_text(flooder, r#"{"type":"pong"}"#);
    assert_eq!(close_code(&sim, flooder), Some(4429));
    // A client within its rate is never limited.
    for _ in 0..50 {
        sim.send_text(calm, r#"{"type":"pong"}"#);
        sim.advance(200 * MS);
        sim.input(Input::Alive { conn: calm });
    }
    assert_eq!(close_code(&sim, calm), None);
    sim.assert_clean();
}

// ---- heartbeat and liveness ----------------------------------------------------------

#[test]
fn one_heartbeat_and_one_ping_per_interval_per_connection() {
    let mut sim = sim(config());
    let conns: Vec<ConnId> = (0..50).map(|_| sim.connect("")).collect();
    for conn in &conns {
        sim.set_responsive(*conn, true);
    }
    sim.advance(5500 * MS);
    assert_eq!(sim.heartbeats.len(), 5, "five ticks, one encoding each");
    for conn in &conns {
        let client = &sim.clients[conn];
        let beats: Vec<_> = client.of_type("heartbeat").map(|f| f.raw.clone()).collect();
        assert_eq!(beats, sim.heartbeats, "{conn}");
        assert_eq!(client.pings, 5);
        assert!(!client.is_closed());
    }
    sim.assert_clean();
}

#[test]
fn a_silent_connection_is_closed_4408_within_its_deadline() {
    let mut sim = sim(config());
    sim.advance(400 * MS);
    let silent = sim.connect("");
    let talker = sim.connect("");
    sim.set_responsive(talker, true);
    let connected = sim.now;
    while close_code(&sim, silent).is_none() {
        assert!(sim.step());
    }
    let closed_after = sim.now - connected;
    assert!(closed_after >= 3000 * MS, "closed after {closed_after:?}");
    assert!(closed_after <= 4000 * MS, "closed after {closed_after:?}");
    assert_eq!(close_code(&sim, silent), Some(4408));
    assert_eq!(close_code(&sim, talker), None);
    // The close handshake never completes: the socket is aborted and the state freed.
    let closing_since = sim.now;
    while !sim.clients[&silent].aborted {
        assert!(sim.step());
    }
    assert_eq!(sim.now - closing_since, sim.hub.config().close_timeout());
    assert_eq!(sim.hub.queued(silent), None);
    sim.assert_clean();
}

#[test]
fn any_frame_counts_as_life() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    for _ in 0..10 {
        sim.advance(2500 * MS);
        sim.send_text(conn, r#"{"type":"pong"}"#);
    }
    assert_eq!(close_code(&sim, conn), None);
    sim.assert_clean();
}

#[test]
fn heartbeat_ids_are_valid_anchors() {
    let mut sim = sim(config());
    let first = sim.connect("");
    sim.set_responsive(first, true);
    sim.advance(1000 * MS);
    let heartbeat = sim.clients[&first]
        .of_type("heartbeat")
        .next()
        .unwrap()
        .id
        .unwrap();
    assert_eq!(
        heartbeat.to_string(),
        format!("{SIM_EPOCH}-0"),
        "no event yet"
    );
    sim.publish("after_heartbeat", None);
    let resumed = resume(&mut sim, &heartbeat.to_string());
    assert_eq!(resync_reason(&sim, resumed), None);
    assert_eq!(sim.clients[&resumed].event_seqs(), [1]);
    sim.assert_clean();
}

#[test]
fn heartbeats_take_no_seq_and_name_the_newest_event() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.set_responsive(conn, true);
    sim.publish("a", None);
    sim.publish("b", None);
    sim.advance(1000 * MS);
    sim.publish("c", None);
    let ids: Vec<String> = sim.clients[&conn]
        .stream()
        .map(|f| format!("{} {}", f.event_type, f.id.unwrap()))
        .collect();
    let e = SIM_EPOCH;
    assert_eq!(
        ids,
        [
            format!("a {e}-1"),
            format!("b {e}-2"),
            format!("heartbeat {e}-2"),
            format!("c {e}-3")
        ]
    );
    sim.assert_clean();
}

#[test]
fn a_heartbeat_never_names_an_event_a_catching_up_client_has_yet_to_get() {
    let mut sim = sim(config().send_queue_frames(2));
    for _ in 0..6 {
        sim.publish("e", None);
    }
    sim.auto_flush = false;
    let conn = resume(&mut sim, &anchor(0));
    sim.set_responsive(conn, true);
    sim.advance(1000 * MS); // the tick names event 6; the client holds events 1 and 2
    sim.auto_flush = true;
    sim.flush(conn);
    let stream: Vec<String> = sim.clients[&conn]
        .stream()
        .map(|f| format!("{} {}", f.event_type, f.id.unwrap().seq.0))
        .collect();
    assert_eq!(
        stream,
        ["e 1", "e 2", "e 3", "e 4", "e 5", "e 6", "heartbeat 6"]
    );
    sim.assert_clean();
}

// ---- replay ----------------------------------------------------------------------------

#[test]
fn replay_is_strictly_after_the_anchor_then_live() {
    let mut sim = sim(config());
    for n in 0..5 {
        sim.publish("e", Some(json!({ "n": n })));
    }
    let conn = resume(&mut sim, &anchor(2));
    assert_eq!(resync_reason(&sim, conn), None);
    sim.publish("e", None);
    assert_eq!(sim.clients[&conn].event_seqs(), [3, 4, 5, 6]);
    assert_eq!(sim.hub.metrics(sim.now).replays, 1);
    sim.assert_clean();
}

#[test]
fn an_anchor_at_the_newest_event_replays_nothing() {
    let mut sim = sim(config());
    sim.publish("e", None);
    let conn = resume(&mut sim, &anchor(1));
    assert!(sim.clients[&conn].frames.is_empty());
    assert_eq!(sim.hub.metrics(sim.now).replays, 0);
}

#[test]
fn every_resync_reason() {
    let mut sim = sim(config().replay_buffer_size(3).replay_ttl(10_000 * MS));
    for _ in 0..5 {
        sim.publish("e", None);
    }
    let cases = [
        ("garbage", "invalid"),
        ("00000000-1", "unknown_epoch"),
        (&*anchor(99), "ahead"),
        (&*anchor(1), "evicted"),
    ];
    for (last_event_id, reason) in cases {
        let conn = resume(&mut sim, last_event_id);
        assert_eq!(
            resync_reason(&sim, conn).as_deref(),
            Some(reason),
            "{last_event_id}"
        );
        let resync = sim.clients[&conn].frames[0].clone();
        assert_eq!(resync.event_type, "resync_required", "resync comes first");
        assert_eq!(resync.payload["last_event_id"], last_event_id);
        assert_eq!(
            sim.clients[&conn].event_seqs(),
            [3, 4, 5],
            "then every fresh buffered event"
        );
    }
    // The anchor itself was evicted but everything after it is buffered: no resync.
    let conn = resume(&mut sim, &anchor(2));
    assert_eq!(resync_reason(&sim, conn), None);
    assert_eq!(sim.clients[&conn].event_seqs(), [3, 4, 5]);

    sim.advance(10_000 * MS);
    sim.publish("e", None);
    let conn = resume(&mut sim, &anchor(4));
    assert_eq!(resync_reason(&sim, conn).as_deref(), Some("expired"));
    assert_eq!(
        sim.clients[&conn].event_seqs(),
        [6],
        "event seqs have no holes: heartbeats take none"
    );
    let metrics = sim.hub.metrics(sim.now);
    for reason in ResyncReason::ALL {
        assert!(metrics.resyncs[&reason] >= 1, "{reason:?}");
    }
}

#[test]
fn size_zero_turns_replay_off() {
    let mut sim = sim(config().replay_buffer_size(0));
    sim.publish("e", None);
    sim.publish("e", None);
    let conn = resume(&mut sim, &anchor(1));
    assert_eq!(resync_reason(&sim, conn).as_deref(), Some("evicted"));
    assert!(sim.clients[&conn].event_seqs().is_empty());
    assert_eq!(sim.hub.metrics(sim.now).replay_held, 0);
    let current = resume(&mut sim, &anchor(2));
    assert_eq!(resync_reason(&sim, current), None, "nothing was missed");
}

#[test]
fn replay_buffer_memory_stays_bounded() {
    let mut sim = sim(config().replay_buffer_size(200));
    for _ in 0..1000 {
        sim.publish("e", None);
    }
    assert_eq!(sim.hub.metrics(sim.now).replay_held, 200);
    assert_eq!(sim.hub.metrics(sim.now).replay_buffered, 200);
}

#[test]
fn a_restart_means_unknown_epoch() {
    let mut old = sim(config());
    old.connect("");
    let last = old.publish("e", None);
    let mut restarted = Sim::with_epoch(
        config().build().unwrap(),
        Epoch(0x0bad_cafe),
        Instant::now(),
    );
    restarted.publish("fresh", None);
    let conn = resume(&mut restarted, &last.to_string());
    assert_eq!(
        resync_reason(&restarted, conn).as_deref(),
        Some("unknown_epoch")
    );
    assert_eq!(restarted.clients[&conn].event_seqs(), [1]);
}

#[test]
fn replay_is_paced_by_the_send_queue_and_never_interleaves_with_live_events() {
    let mut sim = sim(config().send_queue_frames(4).replay_buffer_size(100));
    for _ in 0..40 {
        sim.publish("e", None);
    }
    sim.auto_flush = false; // the client reads nothing for now
    let conn = resume(&mut sim, &anchor(5));
    // Only a queue's worth goes out until the client reads.
    assert_eq!(sim.clients[&conn].event_seqs(), [6, 7, 8, 9]);
    // Live events published meanwhile wait their turn.
    for _ in 0..10 {
        sim.publish("e", None);
    }
    assert_eq!(
        close_code(&sim, conn),
        None,
        "replay alone never makes a slow consumer"
    );
    sim.auto_flush = true;
    sim.drain();
    sim.publish("e", None);
    assert_eq!(
        sim.clients[&conn].event_seqs(),
        (6..=51).collect::<Vec<_>>()
    );
    sim.assert_clean();
}

#[test]
fn a_catching_up_client_that_falls_out_of_the_buffer_is_a_slow_consumer() {
    let mut sim = sim(config().send_queue_frames(2).replay_buffer_size(10));
    for _ in 0..10 {
        sim.publish("e", None);
    }
    sim.auto_flush = false;
    let conn = resume(&mut sim, &anchor(1));
    for _ in 0..10 {
        sim.publish("e", None);
    }
    assert_eq!(close_code(&sim, conn), Some(4008));
    assert_eq!(sim.clients[&conn].event_seqs(), [2, 3]);
    sim.assert_clean();
}

#[test]
fn heartbeats_during_catch_up_keep_their_place_in_the_stream() {
    let mut sim = sim(config().send_queue_frames(2));
    for _ in 0..6 {
        sim.publish("e", None);
    }
    sim.auto_flush = false;
    let conn = resume(&mut sim, &anchor(1));
    sim.advance(1000 * MS); // the heartbeat names event 6 while the client is at 3
    sim.auto_flush = true;
    sim.drain();
    let stream: Vec<String> = sim.clients[&conn]
        .stream()
        .map(|f| format!("{} {}", f.event_type, f.id.unwrap().seq.0))
        .collect();
    assert_eq!(stream, ["e 2", "e 3", "e 4", "e 5", "e 6", "heartbeat 6"]);
    sim.assert_clean();
}

// ---- backpressure ------------------------------------------------------------------------

#[test]
fn a_stalled_client_is_closed_4008_and_nobody_else_notices() {
    let mut sim = sim(config().send_queue_frames(8));
    let slow = sim.connect("");
    let fast: Vec<ConnId> = (0..3).map(|_| sim.connect("")).collect();
    sim.stall(slow, true);
    for _ in 0..20 {
        sim.publish("e", None);
    }
    assert_eq!(close_code(&sim, slow), Some(4008));
    assert_eq!(sim.clients[&slow].event_seqs(), (1..=8).collect::<Vec<_>>());
    for conn in &fast {
        assert_eq!(sim.clients[conn].event_seqs(), (1..=20).collect::<Vec<_>>());
    }
    // Its state is released when the socket goes (or at the close deadline).
    sim.disconnect(slow, DisconnectCause::Lost);
    assert_eq!(sim.hub.queued(slow), None);
    assert_eq!(sim.hub.metrics(sim.now).connections, 3);
    sim.assert_clean();
}

#[test]
fn the_byte_limit_counts_too_but_one_big_frame_always_fits() {
    let mut sim = sim(config().send_queue_bytes(1000));
    let conn = sim.connect("");
    sim.stall(conn, true);
    let big = "x".repeat(2000);
    sim.publish("big", Some(json!({ "pad": big })));
    assert_eq!(
        close_code(&sim, conn),
        None,
        "an empty queue takes any one frame"
    );
    sim.publish("small", None);
    assert_eq!(close_code(&sim, conn), Some(4008));
}

#[test]
fn a_slow_consumers_queue_is_dropped_with_its_close() {
    let mut sim = sim(config().send_queue_frames(4));
    let slow = sim.connect("");
    sim.stall(slow, true);
    for _ in 0..5 {
        sim.publish("e", None);
    }
    assert_eq!(close_code(&sim, slow), Some(4008));
    assert_eq!(
        sim.hub.queued(slow),
        Some((0, 0)),
        "nothing is counted any more"
    );
    assert_eq!(sim.hub.metrics(sim.now).queued_bytes, 0);
    let tail: Vec<&String> = sim.transcript.iter().rev().take(2).collect();
    assert!(tail[1].ends_with(&format!("discard {slow}")), "{tail:?}");
    assert!(tail[0].contains(&format!("close {slow} 4008")), "{tail:?}");
    // What the writer still reports (frames it wrote before dropping the rest) changes nothing.
    sim.input(Input::Flushed {
        conn: slow,
        frames: 2,
        bytes: 10,
    });
    assert_eq!(sim.hub.queued(slow), Some((0, 0)));
    sim.assert_clean();
}

/// The length of the frame of event `seq` (1 to 9) with `payload`, as the hub encodes it.
fn frame_len(payload: &serde_json::Value) -> usize {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.publish("e", Some(payload.clone()));
    sim.clients[&conn].frames[0].raw.len()
}

#[test]
fn the_global_budget_sheds_the_heaviest_consumer_first() {
    let payload = json!({ "pad": "x".repeat(200) });
    let len = frame_len(&payload);
    // Room for three events queued together, whoever holds them.
    let mut sim = sim(config().max_queued_bytes(3 * len + len / 2));
    let (heavy, light, reader) = (sim.connect(""), sim.connect(""), sim.connect(""));
    sim.stall(heavy, true);
    sim.publish("e", Some(payload.clone()));
    sim.publish("e", Some(payload.clone()));
    sim.stall(light, true);
    sim.publish("e", Some(payload.clone()));
    // heavy holds events 1 to 3, light event 3: each frame counts once.
    assert_eq!(sim.hub.queued(heavy), Some((3, 3 * len)));
    assert_eq!(sim.hub.queued(light), Some((1, len)));
    assert_eq!(sim.hub.metrics(sim.now).queued_bytes, 3 * len);
    assert_eq!(close_code(&sim, heavy), None);

    // A fourth does not fit: the heaviest consumer goes, and its frames with it.
    sim.publish("e", Some(payload.clone()));
    assert_eq!(close_code(&sim, heavy), Some(4008));
    assert_eq!(close_code(&sim, light), None);
    assert_eq!(sim.clients[&light].event_seqs(), [1, 2, 3, 4]);
    assert_eq!(
        sim.hub.metrics(sim.now).queued_bytes,
        2 * len,
        "events 3 and 4"
    );
    let shed = sim
        .transcript
        .iter()
        .position(|l| l.ends_with(&format!("discard {heavy}")))
        .expect("heavy's queue was dropped");
    assert!(sim.transcript[shed + 1].contains(&format!("close {heavy} 4008")));
    assert!(
        sim.transcript[shed - 1].contains("publish e 4"),
        "at the publish"
    );

    // light fills up in turn; the reader never notices.
    sim.publish("e", Some(payload.clone()));
    sim.publish("e", Some(payload.clone()));
    assert_eq!(close_code(&sim, light), Some(4008));
    assert_eq!(sim.clients[&reader].event_seqs(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(close_code(&sim, reader), None);
    assert_eq!(sim.hub.metrics(sim.now).queued_bytes, 0);
    sim.assert_clean();
}

#[test]
fn one_frame_larger_than_the_budget_still_reaches_an_idle_client() {
    let mut sim = sim(config().max_queued_bytes(100));
    let conns: Vec<ConnId> = (0..3).map(|_| sim.connect("")).collect();
    for conn in &conns {
        sim.stall(*conn, true);
    }
    sim.publish("big", Some(json!({ "pad": "x".repeat(1000) })));
    for conn in &conns {
        assert_eq!(
            close_code(&sim, *conn),
            None,
            "one shared frame, nothing queued before"
        );
        assert_eq!(sim.clients[conn].event_seqs(), [1]);
    }
    // The next does not fit beside it: every holder of the first goes.
    sim.publish("small", None);
    for conn in &conns {
        assert_eq!(close_code(&sim, *conn), Some(4008));
    }
    assert_eq!(sim.hub.metrics(sim.now).queued_bytes, 0);
    sim.assert_clean();
}

// ---- shutdown ----------------------------------------------------------------------------

#[test]
fn shutdown_sends_health_status_then_1001_and_aborts_at_the_grace_deadline() {
    let mut sim = sim(config().shutdown_grace(2000 * MS));
    let polite = sim.connect("");
    let stuck = sim.connect("");
    sim.publish("last_words", None);
    sim.hub.shutdown(sim.now);
    sim.drain();
    for conn in [polite, stuck] {
        let client = &sim.clients[&conn];
        let types = client.types();
        assert_eq!(types, ["last_words", "health_status"]);
        assert_eq!(client.frames[1].payload, json!({"status": "shutting_down"}));
        assert_eq!(close_code(&sim, conn), Some(1001));
    }
    assert!(sim.hub.is_shutting_down());
    let ignored = sim.publish_event(Event::new(EventType::new("late").unwrap()));
    assert!(sim.published.iter().all(|(id, _)| *id != ignored));
    // A client that connects during the grace gets the notice, then 1001.
    let late = sim.connect("");
    assert_eq!(sim.clients[&late].types(), ["health_status"]);
    assert_eq!(close_code(&sim, late), Some(1001));
    sim.disconnect(polite, DisconnectCause::Lost);
    sim.disconnect(late, DisconnectCause::Lost);
    assert!(!sim.hub.is_finished());
    let started = sim.now;
    while sim.step() {}
    assert_eq!(sim.now - started, 2000 * MS);
    assert!(sim.clients[&stuck].aborted);
    assert!(sim.hub.is_finished());
    assert_eq!(sim.hub.poll_timeout(), None);
    sim.assert_clean();
}

// ---- bookkeeping -----------------------------------------------------------------------

#[test]
fn stale_ids_are_ignored_and_counted_and_ids_are_never_reused() {
    let mut sim = sim(config());
    let first = sim.connect("");
    sim.disconnect(first, DisconnectCause::Closed(Some(CloseCode::NORMAL)));
    sim.send_text(first, r#"{"type":"ping"}"#);
    sim.input(Input::Flushed {
        conn: first,
        frames: 3,
        bytes: 10,
    });
    sim.input(Input::Disconnected {
        conn: ConnId(999),
        cause: DisconnectCause::Lost,
    });
    let second = sim.connect("");
    assert!(second > first);
    let metrics = sim.hub.metrics(sim.now);
    assert_eq!(metrics.stale_inputs, 3);
    assert_eq!(metrics.closes[&1000], 1);
    sim.assert_clean();
}

#[test]
fn metrics_move() {
    let mut sim = sim(config());
    let a = sim.connect("");
    sim.connect("");
    sim.publish("e", None);
    sim.disconnect(a, DisconnectCause::Lost);
    let m = sim.hub.metrics(sim.now);
    assert_eq!((m.connections, m.connections_total), (1, 2));
    assert_eq!(m.events_published, 1);
    assert_eq!(m.frames_sent, 2);
    assert_eq!(m.closes[&1006], 1);
    assert_eq!(m.replay_buffered, 1);
}

#[test]
fn time_going_backwards_is_taken_as_the_latest_seen() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.advance(1500 * MS);
    let earlier = sim.now - 1000 * MS;
    sim.hub.handle_timeout(earlier);
    let now = std::mem::replace(&mut sim.now, earlier);
    sim.publish("e", None);
    sim.now = now;
    assert!(sim.hub.poll_timeout().unwrap() > sim.now);
    assert_eq!(sim.clients[&conn].event_seqs(), [1]);
    sim.assert_clean();
}

// ---- the log: skips, repeats, new epochs ------------------------------------------------

#[test]
fn the_next_seq_is_delivered_and_a_repeat_is_ignored_and_counted() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.publish("a", None);
    sim.publish("b", None);
    assert_eq!(sim.repeat(0), Some(Delivery::Stale));
    assert_eq!(sim.repeat(1), Some(Delivery::Stale));
    assert_eq!(sim.clients[&conn].event_seqs(), [1, 2]);
    assert_eq!(sim.hub.metrics(sim.now).stale_events, 2);
    sim.assert_clean();
}

#[test]
fn a_skip_in_the_log_is_an_in_band_resync_and_nobody_is_closed() {
    let mut sim = sim(config());
    let live = sim.connect("");
    let filtered = sim.connect("types=b");
    sim.publish("a", None);
    let id = sim.publish_after_loss(3, "a"); // entries 2, 3 and 4 never reached this node
    assert_eq!(id.seq, Seq(5));
    let client = &sim.clients[&live];
    assert_eq!(client.types(), ["a", "resync_required", "a"]);
    assert_eq!(
        client.resyncs(),
        [("evicted".to_owned(), Some(anchor(1)))],
        "last_event_id is the last stream frame it was sent"
    );
    assert_eq!(
        sim.clients[&filtered].resyncs(),
        [("evicted".to_owned(), None)],
        "nothing sent yet: null"
    );
    assert!(!client.is_closed());
    // An anchor inside the hole cannot resume; one at the new event can.
    let late = resume(&mut sim, &anchor(2));
    assert_eq!(resync_reason(&sim, late).as_deref(), Some("evicted"));
    let fine = resume(&mut sim, &anchor(5));
    assert_eq!(resync_reason(&sim, fine), None);
    assert_eq!(sim.hub.metrics(sim.now).resyncs[&ResyncReason::Evicted], 3);
    sim.assert_clean();
}

#[test]
fn a_new_epoch_in_the_log_empties_the_buffer_and_resyncs_everyone() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.publish("a", None);
    sim.publish("a", None);
    let next = Epoch(0x0000_beef);
    assert_eq!(
        sim.deliver(
            EventId {
                epoch: next,
                seq: Seq(1)
            },
            "b",
            None
        ),
        Delivery::Resynced(ResyncReason::UnknownEpoch)
    );
    assert_eq!(sim.hub.epoch(), next);
    let client = &sim.clients[&conn];
    assert_eq!(client.types(), ["a", "a", "resync_required", "b"]);
    assert_eq!(
        client.resyncs(),
        [("unknown_epoch".to_owned(), Some(anchor(2)))]
    );
    // The old epoch's anchors are unknown now; the new epoch's resume.
    let old = resume(&mut sim, &anchor(2));
    assert_eq!(resync_reason(&sim, old).as_deref(), Some("unknown_epoch"));
    let new = resume(&mut sim, "0000beef-0");
    assert_eq!(resync_reason(&sim, new), None);
    assert_eq!(sim.clients[&new].event_seqs(), [1]);
    sim.assert_clean();
}

#[test]
fn a_resync_during_catch_up_abandons_the_replay_and_goes_live() {
    let mut sim = sim(config().send_queue_frames(2));
    for _ in 0..5 {
        sim.publish("e", None);
    }
    sim.auto_flush = false;
    let conn = resume(&mut sim, &anchor(0));
    assert_eq!(
        sim.clients[&conn].event_seqs(),
        [1, 2],
        "paced by its queue"
    );
    sim.flush(conn);
    sim.publish_after_loss(2, "e"); // seq 8
    sim.auto_flush = true;
    sim.flush(conn);
    let client = &sim.clients[&conn];
    assert_eq!(client.event_seqs(), [1, 2, 3, 4, 8]);
    assert_eq!(client.resyncs(), [("evicted".to_owned(), Some(anchor(4)))]);
    sim.assert_clean();
}

// ---- backfill from the log (cluster mode) -----------------------------------------------

fn backfilled(replay: usize) -> Sim {
    let mut sim = sim(config().replay_buffer_size(replay).replay_ttl(60_000 * MS));
    sim.hub.enable_backfill();
    for _ in 0..10 {
        sim.publish("e", None);
    }
    sim
}

#[test]
fn an_anchor_older_than_the_buffer_is_served_from_the_log() {
    let mut sim = backfilled(3); // holds 8, 9, 10
    let conn = resume(&mut sim, &anchor(2));
    assert_eq!(
        sim.fetches,
        [(conn, EventId::parse(&anchor(2)).unwrap(), Seq(8))]
    );
    assert!(
        sim.clients[&conn].frames.is_empty(),
        "nothing before the log answers"
    );
    sim.publish("e", None); // 11 arrives while the fetch is out, and pushes 8 out
    sim.answer_fetch(|_| true, Duration::ZERO);
    // Past 7 the buffer starts at 9 now: the hub asks the log again, for 8.
    assert_eq!(sim.fetches.len(), 1);
    sim.answer_fetch(|_| true, Duration::ZERO);
    assert_eq!(resync_reason(&sim, conn), None);
    assert_eq!(
        sim.clients[&conn].event_seqs(),
        (3..=11).collect::<Vec<_>>()
    );
    assert_eq!(sim.hub.metrics(sim.now).fetches, 2);
    sim.assert_clean();
}

#[test]
fn what_the_log_trimmed_or_aged_out_is_a_resync_then_the_rest() {
    let mut sim = backfilled(3);
    let trimmed = resume(&mut sim, &anchor(2));
    sim.answer_fetch(|seq| seq >= 5, Duration::ZERO); // the stream kept 5.. only
    assert_eq!(resync_reason(&sim, trimmed).as_deref(), Some("evicted"));
    assert_eq!(
        sim.clients[&trimmed].event_seqs(),
        (5..=10).collect::<Vec<_>>()
    );
    let aged = resume(&mut sim, &anchor(2));
    sim.answer_fetch(|_| true, 61_000 * MS); // all past the TTL
    assert_eq!(resync_reason(&sim, aged).as_deref(), Some("expired"));
    assert_eq!(sim.clients[&aged].event_seqs(), [8, 9, 10]);
    sim.assert_clean();
}

#[test]
fn a_late_or_foreign_answer_is_ignored() {
    let mut sim = backfilled(3);
    let conn = resume(&mut sim, &anchor(2));
    let wrong = EventId::parse(&anchor(1)).unwrap();
    sim.input(Input::Fetched {
        conn,
        after: wrong,
        events: Vec::new(),
    });
    assert!(sim.clients[&conn].frames.is_empty());
    assert_eq!(sim.hub.metrics(sim.now).stale_inputs, 1);
    sim.answer_fetch(|_| true, Duration::ZERO);
    assert_eq!(
        sim.clients[&conn].event_seqs(),
        (3..=10).collect::<Vec<_>>()
    );
    sim.assert_clean();
}

#[test]
fn a_lost_log_is_a_new_epoch_for_everyone_even_without_events() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.set_responsive(conn, true);
    sim.publish("e", None);
    let next = Epoch(0x0000_cafe);
    assert!(sim.hub.start_epoch(sim.now, next));
    sim.drain();
    assert!(!sim.hub.start_epoch(sim.now, next), "once");
    assert_eq!(sim.hub.head().to_string(), "0000cafe-0");
    sim.advance(1000 * MS);
    sim.log = EventId::start(next);
    sim.publish("after", None);
    let client = &sim.clients[&conn];
    assert_eq!(
        client.types(),
        ["e", "resync_required", "heartbeat", "after"]
    );
    assert_eq!(
        client.resyncs(),
        [("unknown_epoch".to_owned(), Some(anchor(1)))]
    );
    let ids: Vec<String> = client.stream().map(|f| f.id.unwrap().to_string()).collect();
    assert_eq!(ids[1..], ["0000cafe-0", "0000cafe-1"]);
    sim.assert_clean();
}

#[test]
fn a_timeline_reads_as_a_transcript() {
    let mut sim = sim(config());
    let conn = sim.connect("");
    sim.publish("scan_started", None);
    sim.advance(1000 * MS);
    sim.send_text(conn, r#"{"type":"ping"}"#);
    let expected = "\
+0ms accept c1
+0ms publish scan_started 1
+0ms send c1 scan_started 1
+1000ms send c1 heartbeat 1
+1000ms ping c1
+1000ms send c1 pong";
    assert_eq!(sim.transcript(), expected);
}

#[test]
fn filters_apply_to_replayed_events() {
    let mut sim = sim(config());
    sim.publish("scan_started", None);
    sim.publish("project_created", None);
    sim.publish("scan_completed", None);
    let conn = sim.accept(ConnParams {
        anchor: Some(anchor(1).into()),
        filter: TypeFilter::parse_list("scan_*").unwrap(),
        ..Default::default()
    });
    assert_eq!(sim.clients[&conn].event_seqs(), [3]);
}

#[test]
fn the_replay_buffer_is_bounded_in_bytes_too() {
    let mut one = sim(config());
    one.publish("e", None);
    let size = one.hub.metrics(one.now).replay_bytes;

    let mut sim = sim(config().replay_buffer_bytes(size * 2));
    for _ in 0..4 {
        sim.publish("e", None);
    }
    assert_eq!(sim.hub.metrics(sim.now).replay_held, 2);
    assert!(sim.hub.metrics(sim.now).replay_bytes <= size * 2);
    let conn = resume(&mut sim, &anchor(1));
    assert_eq!(resync_reason(&sim, conn).as_deref(), Some("evicted"));
    assert_eq!(sim.clients[&conn].event_seqs(), [3, 4]);

    // An event larger than the whole bound is never stored and counts as evicted.
    let big = "x".repeat(size * 2);
    sim.publish("big", Some(json!({ "pad": big })));
    assert_eq!(sim.hub.metrics(sim.now).replay_held, 0);
    let late = resume(&mut sim, &anchor(4));
    assert_eq!(resync_reason(&sim, late).as_deref(), Some("evicted"));
}

#[test]
fn only_fresh_events_count_as_buffered() {
    let mut sim = sim(config().replay_ttl(5000 * MS));
    sim.publish("old", None);
    sim.advance(3000 * MS);
    sim.publish("new", None);
    assert_eq!(sim.hub.metrics(sim.now).replay_buffered, 2);
    sim.advance(2000 * MS);
    assert_eq!(sim.hub.metrics(sim.now).replay_buffered, 1);
}
