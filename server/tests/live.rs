//! A served app on a real port with real WebSocket clients: every event the API causes reaches
//! a client with its payload and correlation id (the scan's background events too), the
//! handshake outcomes, metrics that move, and the shutdown sequence.

mod common;

use std::time::Duration;

use common::{eventually, raw_until_closed, sample, test_config, Server, Ws};
use serde_json::{json, Value};

/// Checks the envelope of a stream event and returns its payload.
fn envelope(frame: &Value, kind: &str, cid: &str) -> Value {
    assert_eq!(frame["type"], kind, "{frame}");
    assert_eq!(frame["correlation_id"], cid, "{frame}");
    let keys: Vec<&String> = frame.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["type", "payload", "correlation_id", "timestamp", "event_id"],
        "{frame}"
    );
    assert!(
        frame["event_id"].is_string() && frame["timestamp"].as_str().unwrap().ends_with("+00:00")
    );
    frame["payload"].clone()
}

#[tokio::test]
async fn project_created_reaches_clients_with_the_request_id() {
    let server = Server::default().await;
    let mut ws = server.live_ws("").await;
    let answer = server
        .post_json(
            "/api/v1/projects",
            &json!({"name": "Ferret"}),
            &[("x-correlation-id", "proj-1")],
        )
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.correlation_id(), "proj-1");
    let project = answer.json();
    let payload = envelope(&ws.next_event().await, "project_created", "proj-1");
    assert_eq!(
        payload,
        json!({"project_id": project["id"], "name": "Ferret"})
    );
}

#[tokio::test]
async fn published_events_reach_clients_and_filters_apply() {
    let server = Server::default().await;
    let mut all = server.live_ws("").await;
    let mut renders = server.live_ws("types=render.*").await;

    let other = server
        .post_json(
            "/api/v1/events",
            &json!({"type": "preview.ready", "payload": {"n": 1}}),
            &[],
        )
        .await;
    assert_eq!(other.status, 202);
    let generated_cid = other.correlation_id().to_owned();
    let render = server
        .post_json(
            "/api/v1/events",
            &json!({"type": "render.done", "payload": {"ok": true}}),
            &[("x-correlation-id", "r-7")],
        )
        .await;
    let render_id = render.json()["event_id"].clone();

    let first = all.next_event().await;
    assert_eq!(
        envelope(&first, "preview.ready", &generated_cid),
        json!({"n": 1})
    );
    assert_eq!(first["event_id"], other.json()["event_id"]);
    let second = all.next_event().await;
    assert_eq!(envelope(&second, "render.done", "r-7"), json!({"ok": true}));
    // The filtered client sees only the render event.
    let only = renders.next_event().await;
    assert_eq!(
        (only["type"].clone(), only["event_id"].clone()),
        (json!("render.done"), render_id)
    );
}

#[tokio::test]
async fn a_scan_publishes_its_background_events_with_the_request_id() {
    let server = Server::default().await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.mp4", "b.MOV", "c.txt"] {
        std::fs::write(dir.path().join(name), b"x").unwrap();
    }
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/d.mkv"), b"x").unwrap();
    let path = dir
        .path()
        .canonicalize()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let mut ws = server.live_ws("").await;
    let answer = server
        .post_json(
            "/api/v1/videos/scan",
            &json!({"path": dir.path(), "recursive": true}),
            &[("x-correlation-id", "scan-1")],
        )
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    let job_id = answer.json()["job_id"].clone();

    assert_eq!(
        envelope(&ws.next_event().await, "scan_started", "scan-1"),
        json!({"path": path})
    );
    let mut running = Vec::new();
    let completed = loop {
        let frame = ws.next_event().await;
        if frame["type"] == "scan_completed" {
            break frame;
        }
        let payload = envelope(&frame, "job_progress", "scan-1");
        assert_eq!(
            (&payload["job_id"], &payload["status"]),
            (&job_id, &json!("running")),
            "{payload}"
        );
        running.push(payload["progress"].as_f64().unwrap());
    };
    assert_eq!(running.first(), Some(&0.0), "a running 0.0 first");
    assert!(
        running.windows(2).all(|w| w[0] < w[1]) && running.iter().all(|p| *p < 1.0),
        "{running:?}"
    );
    assert_eq!(
        envelope(&completed, "scan_completed", "scan-1"),
        json!({"path": path, "video_count": 3})
    );
    let last = ws.next_event().await;
    assert_eq!(
        envelope(&last, "job_progress", "scan-1"),
        json!({"job_id": job_id, "progress": 1.0, "status": "completed"})
    );
}

#[tokio::test]
async fn metrics_move_with_connections_and_events() {
    let server = Server::default().await;
    let scrape = || async { server.get("/metrics").await.text };
    let before = scrape().await;
    assert_eq!(sample(&before, "ferret_ws_connections"), Some(0.0));

    let mut ws = server.live_ws("").await;
    server
        .post_json("/api/v1/events", &json!({"type": "tick"}), &[])
        .await;
    ws.event_of_type("tick").await;
    let during = scrape().await;
    assert_eq!(sample(&during, "ferret_ws_connections"), Some(1.0));
    assert_eq!(sample(&during, "ferret_ws_connections_total"), Some(1.0));
    assert_eq!(
        sample(&during, "ferret_ws_events_published_total"),
        Some(1.0)
    );
    assert!(
        sample(&during, "ferret_ws_frames_sent_total").unwrap() >= 2.0,
        "{during}"
    );
    assert_eq!(sample(&during, "ferret_ws_replay_buffered"), Some(1.0));
    let ready = server.get("/health/ready").await.json();
    assert_eq!(
        (
            ready["connections"].clone(),
            ready["replay_buffered"].clone()
        ),
        (json!(1), json!(1))
    );

    ws.close().await;
    eventually("the connection gauge to drop", || async {
        let text = scrape().await;
        sample(&text, "ferret_ws_connections") == Some(0.0)
            && sample(&text, "ferret_ws_closes_total{code=\"1000\"}") == Some(1.0)
    })
    .await;
    let after = scrape().await;
    assert!(
        sample(
            &after,
            "ferret_ws_http_requests_total{route=\"/metrics\",status=\"200\"}"
        )
        .unwrap()
            >= 3.0
    );
}

#[tokio::test]
async fn replay_resumes_after_an_anchor() {
    let server = Server::default().await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let answer = server
            .post_json(
                "/api/v1/events",
                &json!({"type": "step", "payload": {"n": n}}),
                &[],
            )
            .await;
        ids.push(answer.json()["event_id"].as_str().unwrap().to_owned());
    }
    let mut ws = server.ws(&format!("last_event_id={}", ids[0])).await;
    assert_eq!(ws.next_event().await["event_id"], ids[1].as_str());
    assert_eq!(ws.next_event().await["event_id"], ids[2].as_str());
    let metrics = server.get("/metrics").await.text;
    assert_eq!(sample(&metrics, "ferret_ws_replays_total"), Some(1.0));
}

#[tokio::test]
async fn handshake_refusals_and_rejections() {
    let server = Server::start(
        test_config()
            .max_connections(1)
            .token(Some("sesame".into())),
        |app| app,
    )
    .await;

    // Origin: HTTP 403 before upgrading.
    let foreign = Ws::connect(
        server.addr,
        "token=sesame",
        &[("origin", "https://evil.example")],
    )
    .await;
    let err = foreign.err().expect("refused");
    assert!(err.to_string().contains("403"), "{err}");
    // The server's own origin is fine.
    let own = format!("http://127.0.0.1:{}", server.addr.port());
    let mut first = Ws::connect(server.addr, "token=sesame", &[("origin", &own)])
        .await
        .expect("own origin");
    first.prove_live().await;

    // Full: HTTP 503 with Retry-After.
    let full = server
        .request("GET", "/ws?token=sesame", &common::UPGRADE, None)
        .await;
    assert_eq!(
        (full.status, full.error_code().as_str()),
        (503, "overloaded")
    );
    assert_eq!(full.header("retry-after"), Some("5"));
    first.close().await;

    // A wrong token upgrades, then closes with 4401 (browsers can read that).
    let mut wrong = loop {
        // The slot of the closed client is given back when its close completes.
        match Ws::connect(server.addr, "token=wrong", &[]).await {
            Ok(ws) => break ws,
            Err(e) if e.to_string().contains("503") => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    };
    let (_, closed) = wrong.until_closed().await;
    assert_eq!(closed.expect("a close frame").code, 4401);
    // A bad parameter: 4400 naming it.
    let mut bad = Ws::connect(server.addr, "token=sesame&types=a,,b", &[])
        .await
        .expect("upgrade");
    let (_, closed) = bad.until_closed().await;
    let closed = closed.expect("a close frame");
    assert_eq!(closed.code, 4400);
    assert!(closed.reason.contains("types"), "{closed:?}");

    let metrics = server
        .request(
            "GET",
            "/metrics",
            &[("authorization", "Bearer sesame")],
            None,
        )
        .await
        .text;
    assert_eq!(
        sample(
            &metrics,
            "ferret_ws_handshakes_refused_total{status=\"403\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "ferret_ws_handshakes_refused_total{status=\"503\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn shutdown_sends_health_status_then_1001_within_the_grace() {
    // A long grace: clients that answer the close let serve return long before it.
    let mut server = Server::start(
        test_config().shutdown_grace(Duration::from_secs(10)),
        |app| app,
    )
    .await;
    let mut a = server.live_ws("").await;
    let mut b = server.live_ws("types=nothing.*").await;
    let stopping = tokio::spawn(async move {
        let took = server.stop().await;
        (server, took)
    });
    for ws in [&mut a, &mut b] {
        let (frames, closed) = ws.until_closed().await;
        let last = frames.last().expect("a last event");
        assert_eq!(last["type"], "health_status");
        assert_eq!(last["payload"], json!({"status": "shutting_down"}));
        assert_eq!(last["correlation_id"], Value::Null);
        assert_eq!(closed.expect("a close frame").code, 1001);
    }
    let (server, took) = stopping.await.unwrap();
    assert!(
        took < Duration::from_secs(5),
        "serve returned after {took:?}: it waited for clients that had answered"
    );
    // The listener is closed.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

#[tokio::test]
async fn shutdown_does_not_wait_past_the_grace_for_a_client_that_stopped_reading() {
    let mut server = Server::start(
        test_config().shutdown_grace(Duration::from_secs(1)),
        |app| app,
    )
    .await;
    // A raw TCP client that completes the handshake and then never reads again.
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let handshake = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    stalled.write_all(handshake.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    eventually("the stalled client to register", || async {
        server.get("/health/ready").await.json()["connections"] == 1
    })
    .await;
    let took = server.stop().await;
    // serve aims to return 50 ms before the grace ends; 400 ms of slack for a loaded machine.
    assert!(
        took < Duration::from_millis(1400),
        "serve returned after {took:?} for a 1 s grace"
    );
    drop(stalled);
}

#[tokio::test]
async fn readiness_turns_503_and_publishing_stops_during_shutdown() {
    let server = Server::default().await;
    server.app.shutdown().await;
    let ready = server.get("/health/ready").await;
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (503, json!("shutting_down"))
    );
    let publish = server
        .post_json("/api/v1/events", &json!({"type": "late"}), &[])
        .await;
    assert_eq!(
        (publish.status, publish.error_code().as_str()),
        (503, "shutting_down")
    );
}

/// `axum::serve` (no hyper timer) would keep both raw connections below open forever: one
/// never finishes its request head, the other stays idle after a kept-alive request. Both
/// are closed once `handshake_timeout` has passed; requests and WebSocket clients still work,
/// and a WebSocket connection stays past the timeout.
#[tokio::test]
async fn slow_or_idle_request_heads_are_closed_after_the_handshake_timeout() {
    let timeout = Duration::from_millis(300);
    let mut server = Server::start(test_config().handshake_timeout(timeout), |app| app).await;
    let bound = timeout..Duration::from_secs(5);

    let (answer, closed_after) = raw_until_closed(
        server.addr,
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n",
    )
    .await;
    assert!(
        bound.contains(&closed_after),
        "closed after {closed_after:?}"
    );
    assert!(!answer.contains(" 200 "), "{answer}");

    let (answer, closed_after) = raw_until_closed(
        server.addr,
        b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        bound.contains(&closed_after),
        "closed after {closed_after:?}"
    );

    assert_eq!(server.get("/health/live").await.status, 200);
    let mut ws = server.live_ws("").await;
    tokio::time::sleep(timeout * 2).await; // lets the timeout pass; nothing to wait for
    let published = server
        .post_json(
            "/api/v1/events",
            &json!({"type": "still.here", "payload": {}}),
            &[],
        )
        .await;
    assert_eq!(published.status, 202);
    assert_eq!(ws.event_of_type("still.here").await["type"], "still.here");
    ws.close().await;
    server.stop().await;
}

/// `--max-connections-per-ip`: one address cannot take every slot (429 with Retry-After).
#[tokio::test]
async fn one_address_is_capped_when_asked() {
    let config = test_config().max_connections_per_ip(Some(2));
    let server = Server::start(config, |app| app).await;
    let mut first = server.live_ws("").await;
    let mut second = server.live_ws("").await;
    let third = server.request("GET", "/ws", &common::UPGRADE, None).await;
    assert_eq!(
        (third.status, third.error_code().as_str()),
        (429, "too_many_connections")
    );
    assert_eq!(third.header("retry-after"), Some("5"));
    // The capped ones are untouched.
    first.prove_live().await;
    second.prove_live().await;
}
