//! The scenarios, each written once against [`Ctx`] and run for every runtime.
//!
//! A client proves it is registered with a `ping` answered by a `pong` (`sync`): the
//! contract guarantees it every event sequenced after that (PROTOCOL.md §5).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferret_ws_core::{Event, EventId, EventType};
use ferret_ws_runtime::tungstenite::protocol::frame::coding::{Data, OpCode};
use ferret_ws_runtime::tungstenite::protocol::frame::Frame;
use ferret_ws_runtime::tungstenite::{self, Message};
use ferret_ws_runtime::HubHandle;
use ferret_ws_runtime::PublishError;
use futures::future::{join, join_all};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use serde_json::{json, Value};

use crate::{config, seq_of, Client, Ctx, RawFrame, Received, PATIENCE};

fn event(name: &str, payload: Value) -> Event {
    let Value::Object(payload) = payload else {
        panic!("payloads are objects")
    };
    Event::new(EventType::new(name).expect("a valid type")).with_payload(payload)
}

async fn publish(hub: &HubHandle, name: &str, payload: Value) -> EventId {
    hub.publish(event(name, payload)).await.expect("published")
}

/// Sends `ping` and waits for the `pong`: afterwards the client gets every new event.
async fn sync(client: &mut Client) {
    client.send_text(r#"{"type":"ping"}"#).await;
    loop {
        let json = client.next_json().await;
        if json["type"] == "pong" {
            return;
        }
    }
}

async fn connect_synced(h: &Ctx, server: &crate::Server, query: &str) -> Client {
    let mut client = h.connect(server, query).await;
    sync(&mut client).await;
    client
}

async fn connections(hub: &HubHandle) -> usize {
    hub.metrics().await.connections
}

async fn closes(hub: &HubHandle, code: u16) -> u64 {
    hub.metrics().await.closes.get(&code).copied().unwrap_or(0)
}

/// Polls the hub until it counts `n` connections.
async fn until_connections(h: &Ctx, hub: &HubHandle, n: usize) {
    h.eventually(&format!("{n} connections"), || async {
        (connections(hub).await == n).then_some(())
    })
    .await;
}

/// A client connects, gets a broadcast, disconnects; the others carry on.
pub async fn connect_broadcast_disconnect(h: Ctx) {
    let server = h.server(config().build().unwrap()).await;
    let mut a = connect_synced(&h, &server, "").await;
    let mut b = connect_synced(&h, &server, "").await;
    assert_eq!(connections(&server.hub).await, 2);

    let id = publish(&server.hub, "project_created", json!({"name": "one"})).await;
    let (text_a, json_a) = a.next_event().await;
    let (text_b, _) = b.next_event().await;
    assert_eq!(text_a, text_b, "every recipient gets the same bytes");
    assert_eq!(json_a["event_id"], id.to_string());

    a.close().await;
    until_connections(&h, &server.hub, 1).await;
    assert_eq!(
        closes(&server.hub, 1000).await,
        1,
        "a client's normal close is counted as 1000"
    );

    publish(&server.hub, "project_created", json!({"name": "two"})).await;
    assert_eq!(b.next_json().await["payload"]["name"], "two");
    let metrics = server.hub.metrics().await;
    assert_eq!(metrics.connections_total, 2);
    assert_eq!(metrics.events_published, 2);
}

/// Every frame is one compact JSON object with the contract's keys, in order.
pub async fn envelope_shape(h: Ctx) {
    let server = h.server(config().build().unwrap()).await;
    let mut client = connect_synced(&h, &server, "").await;
    let epoch = server.hub.epoch();

    let id = server
        .hub
        .publish(
            event("scan_started", json!({"path": "/v", "n": 1.5})).with_correlation_id("req-1"),
        )
        .await
        .unwrap();
    let (text, json) = client.next_event().await;
    let prefix = r#"{"type":"scan_started","payload":{"path":"/v","n":1.5},"correlation_id":"req-1","timestamp":""#;
    assert!(text.starts_with(prefix), "{text}");
    assert!(
        text.ends_with(&format!(r#"","event_id":"{epoch}-{}"}}"#, id.seq.0)),
        "{text}"
    );
    assert_eq!(json["event_id"], id.to_string());
    assert_timestamp(json["timestamp"].as_str().unwrap());
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["type", "payload", "correlation_id", "timestamp", "event_id"]
    );

    // No payload means {}, no cause means null.
    publish(&server.hub, "job_progress", json!({})).await;
    let json = client.next_json().await;
    assert_eq!(
        (json["payload"].clone(), json["correlation_id"].clone()),
        (json!({}), Value::Null)
    );

    // Control frames are not part of the stream: their event_id is null.
    client.send_text(r#"{"type":"ping"}"#).await;
    let (text, json) = client.next_event().await;
    assert_eq!(json["type"], "pong");
    assert_eq!(json["event_id"], Value::Null);
    assert!(
        text.starts_with(r#"{"type":"pong","payload":{},"correlation_id":null,"timestamp":""#),
        "{text}"
    );
}

fn assert_timestamp(timestamp: &str) {
    // 2026-04-26T17:24:55.055181+00:00
    let (time, offset) = timestamp.split_at(timestamp.len().saturating_sub(6));
    let shape: String = time
        .chars()
        .map(|c| if c.is_ascii_digit() { 'd' } else { c })
        .collect();
    assert_eq!(
        (shape.as_str(), offset),
        ("dddd-dd-ddTdd:dd:dd.dddddd", "+00:00"),
        "{timestamp}"
    );
}

/// N clients get every event exactly once, in order, with identical bytes.
pub async fn n_clients_exactly_once(h: Ctx) {
    const CLIENTS: usize = 20;
    const EVENTS: usize = 150;
    let server = h.server(config().build().unwrap()).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect_synced(&h, &server, "").await);
    }
    let publisher = async {
        let mut ids = Vec::new();
        for i in 0..EVENTS {
            ids.push(publish(&server.hub, "job_progress", json!({"i": i})).await);
        }
        ids
    };
    let readers = join_all(clients.iter_mut().map(|client| async move {
        let mut texts = Vec::new();
        for _ in 0..EVENTS {
            texts.push(client.next_event().await.0);
        }
        texts
    }));
    let (ids, received) = join(publisher, readers).await;
    for texts in &received {
        assert_eq!(
            texts, &received[0],
            "identical bytes, same order, for every client"
        );
    }
    let got: Vec<String> = received[0]
        .iter()
        .map(|t| {
            serde_json::from_str::<Value>(t).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(got, want, "each event once, in publish order");
    for (i, text) in received[0].iter().enumerate() {
        assert_eq!(
            serde_json::from_str::<Value>(text).unwrap()["payload"]["i"],
            i
        );
    }
}

/// Exactly one heartbeat (and one ping) per interval reaches each of 50 clients.
pub async fn heartbeat_once_per_interval(h: Ctx) {
    const CLIENTS: usize = 50;
    let interval = Duration::from_millis(50);
    let config = config()
        .heartbeat_interval(interval)
        .liveness_timeout(Duration::from_secs(5));
    let server = h.server(config.build().unwrap()).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect_synced(&h, &server, "").await);
    }
    let window = Duration::from_millis(600);
    let publisher = async {
        // The hub sequences both markers within [start, start + elapsed].
        let start = Instant::now();
        let first = publish(&server.hub, "marker", json!({"n": 1})).await;
        h.sleep(window).await; // the measured window, not a synchronisation
        let last = publish(&server.hub, "marker", json!({"n": 2})).await;
        (first, last, start.elapsed())
    };
    let readers = join_all(clients.iter_mut().map(|client| async move {
        let (mut heartbeats, mut pings, mut counting) = (Vec::new(), 0usize, false);
        loop {
            match client.recv().await {
                Received::Text(_, json) if json["type"] == "marker" => {
                    if counting {
                        return (heartbeats, pings);
                    }
                    counting = true;
                }
                Received::Text(_, json) if json["type"] == "heartbeat" && counting => {
                    heartbeats.push(json);
                }
                Received::Ping if counting => pings += 1,
                Received::Text(..) | Received::Ping => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }));
    let ((first, last, elapsed), seen) = join(publisher, readers).await;
    let (heartbeats, _) = &seen[0];
    let ticks = elapsed.as_secs_f64() / interval.as_secs_f64();
    assert!(
        (heartbeats.len() as f64) <= ticks + 1.0 && (heartbeats.len() as f64) >= ticks / 2.0 - 1.0,
        "{} heartbeats in {elapsed:?} at {interval:?}",
        heartbeats.len()
    );
    // Between the markers the stream holds heartbeats only: they take no seq, so the two
    // markers are consecutive events, and every heartbeat names the newest event, the first.
    assert_eq!(last.seq.0, first.seq.0 + 1, "event seqs have no holes");
    for heartbeat in heartbeats {
        assert_eq!(heartbeat["event_id"], first.to_string(), "{heartbeat}");
    }
    for (client_heartbeats, pings) in &seen {
        assert_eq!(
            client_heartbeats, heartbeats,
            "every client gets each tick's heartbeat (one encoding) exactly once"
        );
        assert!(
            pings.abs_diff(heartbeats.len()) <= 1,
            "{pings} pings for {} heartbeats",
            heartbeats.len()
        );
    }
}

/// A client that answers pings (by reading) stays connected past the liveness timeout.
pub async fn answering_client_stays(h: Ctx) {
    // Five missed pings before a close: room for a loaded machine to be late with a pong.
    let (interval, liveness) = (Duration::from_millis(50), Duration::from_millis(300));
    let server = h
        .server(
            config()
                .heartbeat_interval(interval)
                .liveness_timeout(liveness)
                .build()
                .unwrap(),
        )
        .await;
    let mut client = connect_synced(&h, &server, "").await;
    let start = Instant::now();
    let mut heartbeats = 0;
    while start.elapsed() < liveness * 3 {
        match client.recv().await {
            Received::Text(_, json) if json["type"] == "heartbeat" => heartbeats += 1,
            Received::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        heartbeats >= 3,
        "{heartbeats} heartbeats in {:?}",
        start.elapsed()
    );
    sync(&mut client).await;
    assert_eq!(connections(&server.hub).await, 1);
    assert_eq!(closes(&server.hub, 4408).await, 0);
}

/// A client that stops reading and answering is closed with 4408 within
/// `[liveness, liveness + heartbeat]` of its last sign of life, and removed once the close
/// times out.
pub async fn silent_client_closed_4408(h: Ctx) {
    // The bystander answers pings while the machine may be loaded: five may go unanswered.
    let (interval, liveness) = (Duration::from_millis(50), Duration::from_millis(300));
    let close_timeout = Duration::from_millis(300);
    let config = config()
        .heartbeat_interval(interval)
        .liveness_timeout(liveness)
        .close_timeout(close_timeout);
    let server = h.server(config.build().unwrap()).await;
    let mut bystander = connect_synced(&h, &server, "").await;
    let mut silent = h.connect_raw(&server, "").await;
    let connected = Instant::now(); // the handshake is its last sign of life
    let silent_side = async {
        let mut frames = Vec::new();
        let closed_after = loop {
            match silent.next_frame().await {
                Some(RawFrame::Close(code)) => {
                    assert_eq!(code, 4408);
                    break connected.elapsed();
                }
                Some(frame) => frames.push(frame),
                None => panic!("ended without a close frame after {frames:?}"),
            }
        };
        assert!(
            closed_after >= liveness - Duration::from_millis(10),
            "closed early: {closed_after:?}"
        );
        let slack = Duration::from_millis(400); // a loaded machine
        assert!(
            closed_after <= liveness + interval + slack,
            "closed late: {closed_after:?}"
        );
        assert!(
            frames.contains(&RawFrame::Ping),
            "it was pinged: {frames:?}"
        );

        // It never answers the close: the hub aborts it after close_timeout.
        let rest = silent.read_to_end().await;
        let removed_after = connected.elapsed();
        assert!(
            rest.iter()
                .all(|f| matches!(f, RawFrame::Text(_) | RawFrame::Ping)),
            "{rest:?}"
        );
        assert!(
            removed_after <= closed_after + close_timeout + slack,
            "removed late: {removed_after:?}"
        );
        assert_eq!(connections(&server.hub).await, 1, "removed from the hub");
        assert_eq!(closes(&server.hub, 4408).await, 1);
        publish(&server.hub, "project_created", json!({})).await
    };
    // Meanwhile the bystander reads, which answers every ping, and stays.
    let bystander_side = async {
        loop {
            match bystander.recv().await {
                Received::Text(_, json) if json["type"] == "project_created" => return json,
                Received::Text(..) | Received::Ping => {}
                other => panic!("the bystander got {other:?}"),
            }
        }
    };
    let (id, json) = join(silent_side, bystander_side).await;
    assert_eq!(json["event_id"], id.to_string());
}

/// One client stops reading: the others still get everything promptly; it is closed with
/// 4008 and its connection released.
pub async fn slow_consumer(h: Ctx) {
    const READERS: usize = 3;
    // A batch fits a reader's queue (6 of 32 KiB < 256 KiB) even if its task gets no turn
    // until the batch has been published: a reader is never closed for the scheduler's sake.
    const BATCH: usize = 6;
    let config = config()
        .send_queue_frames(32)
        .send_queue_bytes(256 << 10)
        .close_timeout(Duration::from_millis(300));
    let server = h.server(config.build().unwrap()).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(connect_synced(&h, &server, "").await);
    }
    let mut slow = h.connect_raw(&server, "").await;
    until_connections(&h, &server.hub, READERS + 1).await;
    let blob = "x".repeat(32 << 10);
    let mut published = Vec::new();
    let mut worst_batch = Duration::ZERO;
    // Fill the slow client's socket buffers and then its send queue, in batches that the
    // readers must each receive promptly.
    while closes(&server.hub, 4008).await == 0 {
        assert!(
            published.len() < 2000,
            "no 4008 after {} events of 32 KiB",
            published.len()
        );
        let started = Instant::now();
        for _ in 0..BATCH {
            published.push(
                publish(&server.hub, "job_progress", json!({"blob": blob}))
                    .await
                    .to_string(),
            );
        }
        let got = join_all(readers.iter_mut().map(|reader| async move {
            let mut ids = Vec::new();
            for _ in 0..BATCH {
                ids.push(
                    reader.next_json().await["event_id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            ids
        }))
        .await;
        worst_batch = worst_batch.max(started.elapsed());
        for ids in got {
            assert_eq!(
                ids,
                published[published.len() - BATCH..],
                "readers get every event in order"
            );
        }
    }
    eprintln!(
        "slow consumer: 4008 after {} events, worst batch {worst_batch:?}",
        published.len()
    );
    assert!(
        worst_batch < Duration::from_secs(3),
        "a batch took {worst_batch:?} to reach the readers"
    );
    // Closed with 4008; it never takes the close frame, so the hub aborts it and forgets it.
    until_connections(&h, &server.hub, READERS).await;
    assert_eq!(closes(&server.hub, 4008).await, 1);
    let metrics = server.hub.metrics().await;
    assert_eq!(metrics.connections, READERS);

    // The others are unaffected.
    let id = publish(&server.hub, "project_created", json!({})).await;
    for reader in &mut readers {
        assert_eq!(reader.next_json().await["event_id"], id.to_string());
    }
    // The slow client's socket was dropped: reading it drains what was buffered, then ends.
    let frames = h
        .within(PATIENCE * 2, "the slow client's end", slow.read_to_end())
        .await;
    assert!(
        frames
            .iter()
            .all(|f| matches!(f, RawFrame::Text(_) | RawFrame::Close(4008))),
        "{:?}",
        frames.last()
    );
}

/// Reconnecting with `Last-Event-ID` or `last_event_id` replays what was missed, then goes
/// live, without gap or duplicate.
pub async fn replay_after_reconnect(h: Ctx) {
    let server = h.server(config().build().unwrap()).await;
    let mut first = connect_synced(&h, &server, "").await;
    let mut texts = Vec::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            publish(&server.hub, "job_progress", json!({"i": i}))
                .await
                .to_string(),
        );
        texts.push(first.next_event().await.0);
    }
    first.close().await;

    // By header: everything after the second event.
    let mut by_header = h
        .try_connect(&server, "", &[("Last-Event-ID", &ids[1])])
        .await
        .unwrap();
    assert_eq!(
        by_header.next_event().await.0,
        texts[2],
        "the replay is the same bytes"
    );
    let live = publish(&server.hub, "job_progress", json!({"i": 3}))
        .await
        .to_string();
    let (live_text, live_json) = by_header.next_event().await;
    assert_eq!(live_json["event_id"], live);

    // By query parameter, which wins over the header.
    let query = format!("last_event_id={}", ids[0]);
    let mut by_query = h
        .try_connect(&server, &query, &[("Last-Event-ID", &ids[2])])
        .await
        .unwrap();
    for expected in [&texts[1], &texts[2], &live_text] {
        assert_eq!(&by_query.next_event().await.0, expected);
    }
    // Then live, once.
    let next = publish(&server.hub, "job_progress", json!({"i": 4})).await;
    assert_eq!(by_query.next_json().await["event_id"], next.to_string());
    assert_eq!(by_header.next_json().await["event_id"], next.to_string());
    assert!(server.hub.metrics().await.replays >= 2);
}

/// Each `resync_required` reason, followed by the events still buffered.
pub async fn resync_reasons(h: Ctx) {
    let server = h.server(config().build().unwrap()).await;
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(
            publish(&server.hub, "job_progress", json!({"i": i}))
                .await
                .to_string(),
        );
    }
    let epoch = server.hub.epoch();
    let other_epoch = format!("{:08x}-1", epoch.0 ^ 1);
    let ahead = format!("{epoch}-999");
    for (anchor, reason) in [
        ("nonsense", "invalid"),
        (&other_epoch[..], "unknown_epoch"),
        (&ahead[..], "ahead"),
    ] {
        let mut client = h.connect(&server, &format!("last_event_id={anchor}")).await;
        let json = client.next_json().await;
        assert_eq!(json["type"], "resync_required");
        assert_eq!(
            json["payload"],
            json!({"reason": reason, "last_event_id": anchor})
        );
        assert_eq!(json["event_id"], Value::Null);
        // Then every buffered event that is still fresh.
        for id in &ids {
            assert_eq!(&client.next_json().await["event_id"], id, "after {reason}");
        }
    }

    // Evicted by size: a buffer of two, four events, anchored at the first.
    let small = h
        .server(config().replay_buffer_size(2).build().unwrap())
        .await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            publish(&small.hub, "job_progress", json!({"i": i}))
                .await
                .to_string(),
        );
    }
    let mut client = h
        .connect(&small, &format!("last_event_id={}", ids[0]))
        .await;
    let json = client.next_json().await;
    assert_eq!(
        json["payload"],
        json!({"reason": "evicted", "last_event_id": ids[0]})
    );
    assert_eq!(client.next_json().await["event_id"], ids[2]);
    assert_eq!(client.next_json().await["event_id"], ids[3]);
    // An anchor evicted itself, with every later event still there, needs no resync.
    let mut client = h
        .connect(&small, &format!("last_event_id={}", ids[1]))
        .await;
    assert_eq!(client.next_json().await["event_id"], ids[2]);

    // Expired: older than the TTL.
    let ttl = Duration::from_millis(200);
    let short = h.server(config().replay_ttl(ttl).build().unwrap()).await;
    let old = publish(&short.hub, "job_progress", json!({"i": 0}))
        .await
        .to_string();
    publish(&short.hub, "job_progress", json!({"i": 1})).await;
    h.sleep(ttl + Duration::from_millis(50)).await; // let the TTL pass
    let fresh = publish(&short.hub, "job_progress", json!({"i": 2}))
        .await
        .to_string();
    let mut client = h.connect(&short, &format!("last_event_id={old}")).await;
    let json = client.next_json().await;
    assert_eq!(
        json["payload"],
        json!({"reason": "expired", "last_event_id": old})
    );
    assert_eq!(client.next_json().await["event_id"], fresh);

    let resyncs = server.hub.metrics().await.resyncs;
    assert_eq!(resyncs.values().sum::<u64>(), 3);
}

/// Events published continuously while a client reconnects (closing cleanly, and dropping
/// its socket) arrive without gap, duplicate or reordering.
pub async fn reconnect_during_publishing(h: Ctx) {
    const EVENTS: u64 = 400;
    let server = h.server(config().build().unwrap()).await;
    let client = connect_synced(&h, &server, "").await;
    let publisher = async {
        for i in 0..EVENTS {
            publish(&server.hub, "job_progress", json!({"i": i})).await;
            if i % 4 == 0 {
                h.sleep(Duration::from_millis(1)).await; // spread the events over time
            }
        }
    };
    let reader = async {
        let mut client = Some(client);
        let mut seqs = Vec::new();
        let mut last = String::new();
        let mut reconnects = 0;
        while seqs.len() < EVENTS as usize {
            let current = client.as_mut().unwrap();
            let json = current.next_json().await;
            seqs.push(seq_of(&json));
            last = json["event_id"].as_str().unwrap().to_owned();
            if [60, 150, 240, 330].contains(&seqs.len()) {
                let old = client.take().unwrap();
                if reconnects % 2 == 0 {
                    old.close().await;
                } else {
                    drop(old); // abrupt: no close frame
                }
                reconnects += 1;
                let query = if reconnects % 2 == 0 {
                    format!("last_event_id={last}")
                } else {
                    String::new()
                };
                let header = [("Last-Event-ID", last.as_str())];
                let headers: &[(&str, &str)] = if query.is_empty() { &header } else { &[] };
                client = Some(h.try_connect(&server, &query, headers).await.unwrap());
            }
        }
        (seqs, last)
    };
    let ((), (seqs, _)) = join(publisher, reader).await;
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + EVENTS).collect::<Vec<_>>(),
        "no gap, duplicate or reordering"
    );
}

/// Bad input closes only the offending connection, with the contract's code; handshake
/// faults are refused or rejected as the contract says; a bystander sees nothing of it.
pub async fn bad_input(h: Ctx) {
    let max = 1024;
    let config = config()
        .max_client_message(max)
        .client_rate(5)
        .client_burst(5)
        .token(Some("s3cret".into()));
    let server = h.server(config.build().unwrap()).await;
    let mut bystander = connect_synced(&h, &server, "token=s3cret").await;
    let mut count = 0;
    let mut bystander_sees_next = async |bystander: &mut Client| {
        count += 1;
        let id = publish(&server.hub, "project_created", json!({"n": count})).await;
        let json = bystander.next_json().await;
        assert_eq!(
            json["event_id"],
            id.to_string(),
            "the bystander gets every event, in order"
        );
    };

    // Binary frame: 1003.
    let mut client = connect_synced(&h, &server, "token=s3cret").await;
    client.send_binary(vec![1, 2, 3]).await;
    assert_eq!(client.expect_close().await.0, 1003);
    bystander_sees_next(&mut bystander).await;

    // Invalid UTF-8 in a text frame: 1007.
    let mut client = connect_synced(&h, &server, "token=s3cret").await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    client.ws.send(Message::Frame(frame)).await.unwrap();
    assert_eq!(client.expect_close().await.0, 1007);
    bystander_sees_next(&mut bystander).await;

    // Exactly max_client_message is fine; one byte more is 1009.
    let mut client = connect_synced(&h, &server, "token=s3cret").await;
    let padded = |len: usize| {
        let text = format!(r#"{{"type":"ping","pad":"{}"}}"#, "p".repeat(len - 24));
        assert_eq!(text.len(), len);
        text
    };
    client.send_text(padded(max)).await;
    assert_eq!(client.next_json().await["type"], "pong");
    client.send_text(padded(max + 1)).await;
    assert_eq!(client.expect_close().await.0, 1009);
    bystander_sees_next(&mut bystander).await;

    // Malformed JSON: an error event, and the connection stays.
    let mut client = connect_synced(&h, &server, "token=s3cret").await;
    client.send_text("{not json").await;
    let json = client.next_json().await;
    assert_eq!(
        (json["type"].as_str(), json["payload"]["code"].as_str()),
        (Some("error"), Some("bad_message"))
    );
    client.send_text(r#"{"type":"launch"}"#).await;
    assert_eq!(client.next_json().await["payload"]["code"], "unknown_type");
    sync(&mut client).await;
    bystander_sees_next(&mut bystander).await;
    assert_eq!(
        client.next_json().await["type"],
        "project_created",
        "still subscribed"
    );

    // Flood: faster than client_rate closes with 4429 (the pongs of the burst come first).
    let mut client = h.connect(&server, "token=s3cret").await;
    for _ in 0..20 {
        client.send_text(r#"{"type":"ping"}"#).await;
    }
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 4429);
    bystander_sees_next(&mut bystander).await;

    // Bad handshake parameters: accepted, then closed with 4400 naming the parameter.
    for (query, named) in [
        ("token=s3cret&types=a,,b", "types:"),
        ("token=s3cret&types=Bad", "types:"),
        ("token=s3cret&subscribe_token=xyz", "subscribe_token:"),
    ] {
        let mut client = h.connect(&server, query).await;
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 4400, "{query}");
        assert!(reason.starts_with(named), "{query}: {reason}");
    }
    // A good subscribe_token is fine.
    connect_synced(
        &h,
        &server,
        "token=s3cret&subscribe_token=0123456789abcdef0123456789abcdef",
    )
    .await;
    bystander_sees_next(&mut bystander).await;

    // Missing or wrong token: 4401, by query or by header.
    for (query, header) in [("", None), ("token=nope", None), ("", Some("Bearer nope"))] {
        let headers: Vec<(&str, &str)> = header
            .map(|value| ("Authorization", value))
            .into_iter()
            .collect();
        let mut client = h.try_connect(&server, query, &headers).await.unwrap();
        assert_eq!(client.expect_close().await.0, 4401, "{query} {header:?}");
    }
    let mut client = h
        .try_connect(&server, "", &[("Authorization", "Bearer s3cret")])
        .await
        .unwrap();
    sync(&mut client).await;
    bystander_sees_next(&mut bystander).await;

    // A disallowed Origin: HTTP 403 before upgrading.
    let refused = h
        .try_connect(
            &server,
            "token=s3cret",
            &[("Origin", "http://evil.example")],
        )
        .await;
    assert_eq!(http_status(refused), 403);
    let own = format!("http://127.0.0.1:{}", server.addr.port());
    let mut client = h
        .try_connect(&server, "token=s3cret", &[("Origin", &own)])
        .await
        .unwrap();
    sync(&mut client).await;
    bystander_sees_next(&mut bystander).await;

    let metrics = server.hub.metrics().await;
    for code in [1003, 1007, 1009, 4429, 4400, 4401] {
        assert!(
            metrics.closes.get(&code).is_some_and(|n| *n >= 1),
            "{code} in {:?}",
            metrics.closes
        );
    }
    assert_eq!(metrics.handshakes_refused.get(&403), Some(&1));
}

fn http_status(result: Result<Client, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got a connection"),
    }
}

/// Past `max_connections` the handshake is refused with 503 and `Retry-After`; a freed
/// slot can be taken again.
pub async fn over_capacity_503(h: Ctx) {
    let server = h.server(config().max_connections(2).build().unwrap()).await;
    let mut a = connect_synced(&h, &server, "").await;
    let b = connect_synced(&h, &server, "").await;
    match h.try_connect(&server, "", &[]).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 503);
            assert_eq!(response.headers()["retry-after"], "5");
        }
        Err(other) => panic!("expected 503, got {other}"),
        Ok(_) => panic!("expected 503, got a connection"),
    }
    b.close().await;
    until_connections(&h, &server.hub, 1).await; // the slot is free once the hub forgot it
    let mut c = connect_synced(&h, &server, "").await;
    let id = publish(&server.hub, "project_created", json!({})).await;
    assert_eq!(a.next_json().await["event_id"], id.to_string());
    assert_eq!(c.next_json().await["event_id"], id.to_string());
    assert_eq!(
        server.hub.metrics().await.handshakes_refused.get(&503),
        Some(&1)
    );
}

/// Shutdown: every client's last event is `health_status` `shutting_down`, then close 1001;
/// nothing published before is lost; it completes within the grace even with a client that
/// stopped reading.
pub async fn graceful_shutdown(h: Ctx) {
    let grace = Duration::from_millis(700);
    let server = h
        .server(config().shutdown_grace(grace).build().unwrap())
        .await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(connect_synced(&h, &server, "").await);
    }
    let mut stalled = h.connect_raw(&server, "").await;
    until_connections(&h, &server.hub, 4).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            publish(&server.hub, "job_progress", json!({"i": i}))
                .await
                .to_string(),
        );
    }
    let started = Instant::now();
    h.within(PATIENCE, "shutdown", server.hub.shutdown()).await;
    let took = started.elapsed();
    assert!(
        took <= grace + Duration::from_millis(500),
        "shutdown took {took:?}"
    );
    assert_eq!(connections(&server.hub).await, 0);
    assert_eq!(
        server.hub.publish(event("job_progress", json!({}))).await,
        Err(PublishError::ShuttingDown)
    );

    for reader in &mut readers {
        for id in &ids {
            assert_eq!(
                &reader.next_json().await["event_id"],
                id,
                "no event published before is lost"
            );
        }
        let json = reader.next_json().await;
        assert_eq!(
            (json["type"].as_str(), &json["payload"]),
            (Some("health_status"), &json!({"status": "shutting_down"}))
        );
        assert_eq!(reader.expect_close().await.0, 1001);
    }
    let frames = stalled.read_to_end().await;
    let texts: Vec<Value> = frames
        .iter()
        .filter_map(|f| match f {
            RawFrame::Text(t) => Some(serde_json::from_str(t).unwrap()),
            _ => None,
        })
        .collect();
    let got: Vec<&str> = texts
        .iter()
        .map(|j| j["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got[..ids.len()],
        ids.iter().map(String::as_str).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        texts.last().unwrap()["payload"],
        json!({"status": "shutting_down"})
    );
    assert_eq!(frames.last(), Some(&RawFrame::Close(1001)));
    let codes: BTreeSet<u16> = server.hub.metrics().await.closes.keys().copied().collect();
    assert!(codes.contains(&1001), "{codes:?}");
}

/// One large event to many connections: each gets it whole, the queues count it once while
/// they hold it, and once everyone has it the hub's accounting is back to nothing queued
/// (PROTOCOL.md §5 Memory); small events flow on as before.
pub async fn large_event_memory_returns(h: Ctx) {
    const CLIENTS: usize = 30;
    let server = h.server(config().build().unwrap()).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(connect_synced(&h, &server, "").await);
    }
    // As large as the publish API takes (1 MiB bodies), and within one connection's send queue
    // beside a control frame still unreported.
    let pad = "x".repeat(1_000_000);
    let id = publish(&server.hub, "job_progress", json!({ "pad": pad })).await;
    let queued = server.hub.metrics().await.queued_bytes;
    assert!(
        queued < 2 << 20,
        "{queued} bytes queued: a frame shared by {CLIENTS} connections counts once"
    );
    let got = join_all(clients.iter_mut().map(|c| c.next_json())).await;
    for json in &got {
        assert_eq!(json["event_id"], id.to_string());
        assert_eq!(
            json["payload"]["pad"].as_str().map(str::len),
            Some(1_000_000)
        );
    }
    h.eventually("nothing queued", || async {
        (server.hub.metrics().await.queued_bytes == 0).then_some(())
    })
    .await;
    for i in 0..5 {
        let id = publish(&server.hub, "job_progress", json!({ "i": i })).await;
        for client in &mut clients {
            assert_eq!(client.next_json().await["event_id"], id.to_string());
        }
    }
    h.eventually("nothing queued", || async {
        (server.hub.metrics().await.queued_bytes == 0).then_some(())
    })
    .await;
    assert_eq!(closes(&server.hub, 4008).await, 0);
}

/// A client that pings in a tight loop while large frames are fanned out to it sees only
/// well-formed frames: tungstenite's Pongs go out between the hub's frames, never inside one
/// (RFC 6455 §5.4), also while the socket is full in the middle of a frame.
pub async fn pongs_never_split_a_frame(h: Ctx) {
    const EVENTS: usize = 80;
    let config = config().send_queue_bytes(64 << 20);
    let server = h.server(config.build().unwrap()).await;
    let pinger = connect_synced(&h, &server, "").await;
    let mut other = connect_synced(&h, &server, "").await;
    let pad = "y".repeat(256 << 10);
    let publisher = async {
        let mut ids = Vec::new();
        for i in 0..EVENTS {
            ids.push(publish(&server.hub, "job_progress", json!({ "i": i, "pad": pad })).await);
        }
        ids
    };
    let reader = async {
        let mut got = Vec::new();
        for _ in 0..EVENTS {
            got.push(other.next_json().await["event_id"].to_string());
        }
        got
    };
    // 20 MiB for the pinger, which stops reading now and then: more than the kernel's buffers
    // on both sides hold, so the server's socket fills in the middle of a frame.
    let pinging = pinger.read_events_while_pinging(Duration::from_millis(300), EVENTS);
    let (((events, pongs), ids), other_got) = join(join(pinging, publisher), reader).await;
    let seqs: Vec<String> = events.iter().map(|e| e["event_id"].to_string()).collect();
    let want: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    assert_eq!(seqs, want, "every event, whole and in order");
    for event in &events {
        assert_eq!(
            event["payload"]["pad"].as_str().map(str::len),
            Some(256 << 10)
        );
    }
    assert!(pongs > 0, "the server answered Pings meanwhile");
    assert_eq!(other_got, want, "the other client is not disturbed");
    assert_eq!(closes(&server.hub, 4008).await, 0);
}

/// A client that connects and never finishes its request head (slowloris) is dropped once
/// `handshake_timeout` has passed, without an answer and without ever reaching the hub; a
/// client that completes its handshake in time is served, also past that timeout.
pub async fn unfinished_handshake_dropped(h: Ctx) {
    let timeout = Duration::from_millis(300);
    let server = h
        .server(config().handshake_timeout(timeout).build().unwrap())
        .await;
    let started = Instant::now(); // before the server can have accepted it
    let mut socket = h.tcp(server.addr).await.expect("connect");
    socket
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("send part of a request head");
    let mut answer = Vec::new();
    // EOF or a reset: either way the server has let go of it.
    let _ = h
        .within(
            PATIENCE,
            "the server drops the connection",
            socket.read_to_end(&mut answer),
        )
        .await;
    let dropped_after = started.elapsed();
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert!(dropped_after >= timeout, "dropped early: {dropped_after:?}");
    assert!(
        dropped_after < Duration::from_secs(5),
        "dropped late: {dropped_after:?}"
    );
    assert_eq!(connections(&server.hub).await, 0);

    let mut client = connect_synced(&h, &server, "").await;
    h.sleep(timeout * 2).await; // the timeout is over; the connection stays
    let id = publish(&server.hub, "project_created", json!({})).await;
    assert_eq!(client.next_json().await["event_id"], id.to_string());
}

/// Registration at the 101 (PROTOCOL.md §5): a client that publishes the instant it has read
/// `101 Switching Protocols` gets the event, on every one of many fresh connections.
pub async fn registered_at_the_101(h: Ctx) {
    let server = h.server(config().build().unwrap()).await;
    for n in 0..1000 {
        let mut client = h.connect(&server, "").await; // returns once the 101 is read
        let id = publish(&server.hub, "right_after_the_101", json!({ "n": n })).await;
        let json = client.next_json().await;
        assert_eq!(json["type"], "right_after_the_101", "connection {n}");
        assert_eq!(json["event_id"], id.to_string(), "connection {n}");
    }
}
