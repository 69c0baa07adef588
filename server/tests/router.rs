//! The router on its own (`tower::ServiceExt::oneshot`, no sockets): every endpoint, every
//! error status of PROTOCOL.md §3 and §5, correlation ids and the token check.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use ferret_ws_core::HubConfig;
use ferret_ws_server::{App, AppBuilder, MAX_BODY};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    fn cid(&self) -> &str {
        self.headers
            .get("x-correlation-id")
            .expect("X-Correlation-ID")
            .to_str()
            .unwrap()
    }

    fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error: {}", self.text))
    }
}

fn router_with(config: HubConfig, app: impl FnOnce(AppBuilder) -> AppBuilder) -> Router {
    let hub = ferret_ws_server::start_hub(config);
    app(App::builder().hub(hub)).build().router()
}

fn router() -> Router {
    router_with(HubConfig::default(), |app| {
        app.scan_any_directory(true).local_port(8765)
    })
}

async fn send(router: &Router, mut request: Request<Body>) -> Answer {
    // As every HTTP/1.1 client does (the Host check needs it).
    if !request.headers().contains_key("host") {
        let host = "localhost:8765".parse().unwrap();
        request.headers_mut().insert("host", host);
    }
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    assert!(
        headers.contains_key("x-correlation-id"),
        "every response has X-Correlation-ID"
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut request = Request::post(path);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    request.body(body.into()).unwrap()
}

fn post_json(path: &str, body: &Value) -> Request<Body> {
    post(
        path,
        Some("application/json"),
        serde_json::to_vec(body).unwrap(),
    )
}

#[tokio::test]
async fn health_endpoints() {
    let router = router();
    let live = send(&router, get("/health/live")).await;
    assert_eq!(
        (live.status, &live.body),
        (StatusCode::OK, &json!({"status": "ok"}))
    );
    let ready = send(&router, get("/health/ready")).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["status"], "ok");
    assert_eq!(ready.body["connections"], 0);
    assert_eq!(ready.body["replay_buffered"], 0);
    assert_eq!(ready.body["heartbeat_interval_ms"], 30_000);
    let epoch = ready.body["epoch"].as_str().unwrap();
    assert!(
        epoch.len() == 8
            && epoch
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "{epoch}"
    );
}

#[tokio::test]
async fn correlation_ids_are_echoed_generated_or_refused() {
    let router = router();
    let mine = send(
        &router,
        Request::get("/health/live")
            .header("x-correlation-id", "req-42")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(mine.cid(), "req-42");

    let fresh = send(&router, get("/health/live")).await;
    let uuid = uuid::Uuid::parse_str(fresh.cid()).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 4);

    let empty = send(
        &router,
        Request::get("/health/live")
            .header("x-correlation-id", "")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(
        uuid::Uuid::parse_str(empty.cid()).is_ok(),
        "an empty id counts as absent"
    );

    let longest = "x".repeat(128);
    let ok = send(
        &router,
        Request::get("/health/live")
            .header("x-correlation-id", &longest)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!((ok.status, ok.cid()), (StatusCode::OK, longest.as_str()));

    for bad in [
        "y".repeat(129),
        "has space".to_owned(),
        "tab\there".to_owned(),
    ] {
        let answer = send(
            &router,
            Request::get("/health/live")
                .header("x-correlation-id", &bad)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(answer.code(), "invalid_correlation_id");
        assert!(
            uuid::Uuid::parse_str(answer.cid()).is_ok(),
            "an invalid id gets a fresh one"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let router = router();
    let missing = send(&router, get("/nope")).await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let wrong = send(
        &router,
        Request::delete("/api/v1/events")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.code()),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
}

#[tokio::test]
async fn projects_are_created_and_listed() {
    let router = router();
    let created = send(
        &router,
        post_json("/api/v1/projects", &json!({"name": "demo"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["name"], "demo");
    assert!(uuid::Uuid::parse_str(created.body["id"].as_str().unwrap()).is_ok());
    let at = created.body["created_at"].as_str().unwrap();
    assert!(at.ends_with("+00:00") && at.len() == 32, "{at}");
    let keys: Vec<&String> = created.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["id", "name", "created_at"]);

    let list = send(&router, get("/api/v1/projects")).await;
    assert_eq!(list.body["projects"][0], created.body);

    for (body, status) in [
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": 5}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"name": "  "}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!(["demo"]), StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let answer = send(&router, post_json("/api/v1/projects", &body)).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.text);
        answer.code();
    }
}

#[tokio::test]
async fn publish_answers_202_with_the_event_id() {
    let router = router();
    let epoch = send(&router, get("/health/ready")).await.body["epoch"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = send(
        &router,
        post_json(
            "/api/v1/events",
            &json!({"type": "render.done", "payload": {"n": 1}}),
        ),
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    assert_eq!(first.body, json!({"event_id": format!("{epoch}-1")}));
    // A missing payload means {}.
    let second = send(
        &router,
        post_json("/api/v1/events", &json!({"type": "render.done"})),
    )
    .await;
    assert_eq!(second.body, json!({"event_id": format!("{epoch}-2")}));
}

/// State, then stream, without a gap (PROTOCOL.md §3): every response names the newest event
/// sequenced before it was made.
#[tokio::test]
async fn every_response_carries_the_event_head() {
    let router = router();
    let head = |answer: &Answer| {
        answer
            .headers
            .get("x-event-head")
            .expect("X-Event-Head on every response")
            .to_str()
            .unwrap()
            .to_owned()
    };
    let ready = send(&router, get("/health/ready")).await;
    let epoch = ready.body["epoch"].as_str().unwrap().to_owned();
    assert_eq!(head(&ready), format!("{epoch}-0"), "before any event");
    let created = send(
        &router,
        post_json("/api/v1/projects", &json!({"name": "Holiday cut"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let listed = send(&router, get("/api/v1/projects")).await;
    assert_eq!(
        head(&listed),
        format!("{epoch}-1"),
        "the project_created event"
    );
    let missing = send(&router, get("/nowhere")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(head(&missing), format!("{epoch}-1"), "errors carry it too");
}

/// `Idempotency-Key`: one event per key; a retry answers 202 with the first id.
#[tokio::test]
async fn a_publish_with_an_idempotency_key_happens_once() {
    let router = router();
    let keyed = |key: &str| {
        Request::post("/api/v1/events")
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(Body::from(r#"{"type":"render.done"}"#))
            .unwrap()
    };
    let first = send(&router, keyed("render-42")).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    let retry = send(&router, keyed("render-42")).await;
    assert_eq!(retry.status, StatusCode::ACCEPTED);
    assert_eq!(retry.body, first.body, "the first event's id");
    let other = send(&router, keyed("render-43")).await;
    assert_ne!(other.body, first.body);
    let metrics = send(&router, get("/metrics")).await;
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l == "ferret_ws_events_published_total 2"),
        "{}",
        metrics.text
    );
    for bad in ["", "with space", &"k".repeat(129)] {
        let answer = send(&router, keyed(bad)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(answer.code(), "invalid_idempotency_key");
    }
}

#[tokio::test]
async fn publish_errors_have_the_contract_statuses() {
    let router = router();
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post("/api/v1/events", None, r#"{"type":"a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "no content type",
        ),
        (
            post("/api/v1/events", Some("text/plain"), r#"{"type":"a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "text",
        ),
        (
            post("/api/v1/events", Some("application/json"), "{"),
            StatusCode::BAD_REQUEST,
            "truncated",
        ),
        (
            post("/api/v1/events", Some("application/json"), ""),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            post(
                "/api/v1/events",
                Some("application/json"),
                r#"{"type":"a","payload":{"x":NaN}}"#,
            ),
            StatusCode::BAD_REQUEST,
            "NaN",
        ),
        (
            post(
                "/api/v1/events",
                Some("application/json"),
                r#"{"type":"a","payload":{"x":Infinity}}"#,
            ),
            StatusCode::BAD_REQUEST,
            "Infinity",
        ),
        (
            post(
                "/api/v1/events",
                Some("application/json"),
                r#"{"type":"a","payload":{"x":1e999}}"#,
            ),
            StatusCode::BAD_REQUEST,
            "overflow",
        ),
        (
            post_json("/api/v1/events", &json!([1])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "array",
        ),
        (
            post_json("/api/v1/events", &json!("text")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "string",
        ),
        (
            post_json("/api/v1/events", &json!({"payload": {}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no type",
        ),
        (
            post_json("/api/v1/events", &json!({"type": 7})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "numeric type",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "Bad-Name"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad name",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "heartbeat"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "health_status"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved for the server (v2)",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "pong"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "control",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "a", "payload": [1]})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "array payload",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "a", "payload": null})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "null payload",
        ),
        (
            post_json("/api/v1/events", &json!({"type": "a", "payload": "x"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "string payload",
        ),
    ];
    for (request, status, what) in cases {
        let answer = send(&router, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.text);
        answer.code();
    }
}

/// A JSON event body of exactly `size` bytes.
fn body_of_size(size: usize) -> Vec<u8> {
    let frame = r#"{"type":"big","payload":{"s":""}}"#;
    let mut body = String::with_capacity(size);
    body.push_str(&frame[..frame.len() - 3]);
    body.push_str(&"x".repeat(size - frame.len()));
    body.push_str(r#""}}"#);
    assert_eq!(body.len(), size);
    body.into_bytes()
}

#[tokio::test]
async fn bodies_up_to_one_mib_are_accepted() {
    let router = router();
    let exact = send(
        &router,
        post(
            "/api/v1/events",
            Some("application/json"),
            body_of_size(MAX_BODY),
        ),
    )
    .await;
    assert_eq!(exact.status, StatusCode::ACCEPTED, "{}", exact.text);
    let over = send(
        &router,
        post(
            "/api/v1/events",
            Some("application/json"),
            body_of_size(MAX_BODY + 1),
        ),
    )
    .await;
    assert_eq!(
        (over.status, over.code()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    // The same without Content-Length (a streamed body).
    let chunks = futures::stream::iter(
        body_of_size(MAX_BODY + 1)
            .chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let streamed = send(
        &router,
        post(
            "/api/v1/events",
            Some("application/json"),
            Body::from_stream(chunks),
        ),
    )
    .await;
    assert_eq!(streamed.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn scan_checks_the_path() {
    let router = router();
    let dir = tempfile::tempdir().unwrap();
    let ok = send(
        &router,
        post_json(
            "/api/v1/videos/scan",
            &json!({"path": dir.path(), "recursive": false}),
        ),
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    assert!(uuid::Uuid::parse_str(ok.body["job_id"].as_str().unwrap()).is_ok());

    let missing = send(
        &router,
        post_json(
            "/api/v1/videos/scan",
            &json!({"path": dir.path().join("nope")}),
        ),
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    let file = dir.path().join("a.mp4");
    std::fs::write(&file, b"x").unwrap();
    let not_dir = send(
        &router,
        post_json("/api/v1/videos/scan", &json!({"path": file})),
    )
    .await;
    assert_eq!(not_dir.status, StatusCode::BAD_REQUEST);
    let empty = send(
        &router,
        post_json("/api/v1/videos/scan", &json!({"path": ""})),
    )
    .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let no_field = send(
        &router,
        post_json("/api/v1/videos/scan", &json!({"recursive": true})),
    )
    .await;
    assert_eq!(no_field.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_flag = send(
        &router,
        post_json(
            "/api/v1/videos/scan",
            &json!({"path": dir.path(), "recursive": "yes"}),
        ),
    )
    .await;
    assert_eq!(bad_flag.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn scan_roots_confine_the_scan() {
    let root = tempfile::tempdir().unwrap();
    let inside = root.path().join("videos");
    std::fs::create_dir(&inside).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let canonical = root.path().canonicalize().unwrap();
    let router = router_with(HubConfig::default(), |app| app.scan_roots([canonical]));

    let ok = send(
        &router,
        post_json("/api/v1/videos/scan", &json!({"path": inside})),
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text);
    for path in [outside.path().to_path_buf(), inside.join("../..")] {
        let answer = send(
            &router,
            post_json("/api/v1/videos/scan", &json!({"path": path})),
        )
        .await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::FORBIDDEN, "path_not_allowed"),
            "{path:?}"
        );
    }
    // A path that does not resolve cannot be judged by where it leads: 400, wherever it is.
    let missing = send(
        &router,
        post_json(
            "/api/v1/videos/scan",
            &json!({"path": outside.path().join("missing")}),
        ),
    )
    .await;
    assert_eq!(
        (missing.status, missing.code()),
        (StatusCode::BAD_REQUEST, "invalid_path")
    );
    // A symlink inside the root that leads out of it is judged by where it leads.
    #[cfg(unix)]
    {
        let link = root.path().join("escape");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let answer = send(
            &router,
            post_json("/api/v1/videos/scan", &json!({"path": link})),
        )
        .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }

    // No roots and no permission to scan anywhere (a non-loopback bind): every path is refused.
    let closed = router_with(HubConfig::default(), |app| app);
    let answer = send(
        &closed,
        post_json("/api/v1/videos/scan", &json!({"path": root.path()})),
    )
    .await;
    assert_eq!(
        (answer.status, answer.code()),
        (StatusCode::FORBIDDEN, "scan_roots_required")
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let router = router();
    send(&router, post_json("/api/v1/events", &json!({"type": "a"}))).await;
    let metrics = send(&router, get("/metrics")).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    for name in [
        "ferret_ws_connections",
        "ferret_ws_connections_total",
        "ferret_ws_handshakes_refused_total",
        "ferret_ws_events_published_total",
        "ferret_ws_frames_sent_total",
        "ferret_ws_replays_total",
        "ferret_ws_resyncs_total",
        "ferret_ws_replay_buffered",
        "ferret_ws_http_requests_total",
    ] {
        assert!(
            metrics.text.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{}",
            metrics.text
        );
    }
    assert!(
        metrics
            .text
            .contains("ferret_ws_events_published_total 1\n"),
        "{}",
        metrics.text
    );
    assert!(metrics
        .text
        .contains(r#"ferret_ws_http_requests_total{route="/api/v1/events",status="202"} 1"#));
}

#[tokio::test]
async fn page_and_script_are_served() {
    let router = router();
    let page = send(&router, get("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert!(
        page.text.contains("<html")
            || page.text.contains("<!doctype")
            || page.text.contains("<!DOCTYPE")
    );
    let script = send(&router, get("/ferret-ws.js")).await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(!script.text.is_empty());
}

#[tokio::test]
async fn the_token_guards_the_api_but_not_health_page_or_ws() {
    let config = HubConfig::builder()
        .token(Some("sesame".into()))
        .build()
        .unwrap();
    let router = router_with(config, |app| app.scan_any_directory(true));
    for path in ["/health/live", "/health/ready", "/", "/ferret-ws.js"] {
        assert_eq!(
            send(&router, get(path)).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    let guarded = [
        post_json("/api/v1/projects", &json!({"name": "x"})),
        post_json("/api/v1/events", &json!({"type": "a"})),
        post_json("/api/v1/videos/scan", &json!({"path": "/"})),
        get("/metrics"),
    ];
    for request in guarded {
        let path = request.uri().path().to_owned();
        let answer = send(&router, request).await;
        assert_eq!(
            (answer.status, answer.code()),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{path}"
        );
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    let wrong = Request::get("/metrics")
        .header("authorization", "Bearer open")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, wrong).await.status, StatusCode::UNAUTHORIZED);
    let right = Request::get("/metrics")
        .header("authorization", "Bearer sesame")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&router, right).await.status, StatusCode::OK);
    let mut publish = post_json("/api/v1/events", &json!({"type": "a"}));
    publish
        .headers_mut()
        .insert("authorization", "Bearer sesame".parse().unwrap());
    assert_eq!(send(&router, publish).await.status, StatusCode::ACCEPTED);
}

fn ws_request(origin: Option<&str>) -> Request<Body> {
    let mut request = Request::get("/ws")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn ws_refuses_plain_requests_and_foreign_origins() {
    let router = router();
    let plain = send(&router, get("/ws")).await;
    assert_eq!(
        (plain.status, plain.code()),
        (StatusCode::BAD_REQUEST, "not_websocket")
    );
    let foreign = send(&router, ws_request(Some("https://evil.example"))).await;
    assert_eq!(
        (foreign.status, foreign.code()),
        (StatusCode::FORBIDDEN, "origin_not_allowed")
    );
    // The default policy allows the server's own origins (port from `local_port` here).
    let own = send(&router, ws_request(Some("http://localhost:8765"))).await;
    assert_ne!(own.status, StatusCode::FORBIDDEN);
    let metrics = send(&router, get("/metrics")).await;
    assert!(
        metrics
            .text
            .contains(r#"ferret_ws_handshakes_refused_total{status="403"} 1"#),
        "{}",
        metrics.text
    );
}
