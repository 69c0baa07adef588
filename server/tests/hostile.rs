//! The HTTP surface under hostile input (PROTOCOL.md §3, "Host check" and "HTTP limits"),
//! over real sockets: DNS-rebinding hosts, scan paths that escape through links, floods of
//! scan jobs and projects, slow and oversized requests, more connections than allowed. After
//! each hostile case the server must still do its job: an event published over HTTP reaches a
//! WebSocket client.

mod common;

use std::time::Duration;

use common::{eventually, http, raw_until_closed, sample, test_config, Server, Ws, WAIT};
use ferret_ws_core::HostPolicy;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw request on a fresh connection; what the server sent before closing it.
async fn raw(server: &Server, bytes: &[u8]) -> String {
    raw_until_closed(server.addr, bytes).await.0
}

/// The JSON body of a raw HTTP/1.1 answer.
fn body_of(answer: &str) -> Value {
    let (_, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no body in {answer:?}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

fn published(metrics: &str) -> f64 {
    sample(metrics, "ferret_ws_events_published_total").unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// Host check (DNS rebinding)
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_loopback_server_refuses_other_host_names_on_every_route_before_any_handler() {
    let server = Server::default().await;
    let mut watcher = server.live_ws("").await;
    let port = server.addr.port();
    let evil = format!("evil.example:{port}");

    for path in ["/health/live", "/", "/api/v1/projects", "/metrics", "/nope"] {
        let answer = server.request("GET", path, &[("host", &evil)], None).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (403, "host_not_allowed"),
            "{path}"
        );
        assert!(!answer.correlation_id().is_empty());
    }
    // A publish from a rebinding page never reaches the hub.
    let publish = server
        .request(
            "POST",
            "/api/v1/events",
            &[("host", &evil), ("content-type", "application/json")],
            Some(br#"{"type":"rebound"}"#),
        )
        .await;
    assert_eq!(publish.status, 403);
    // /ws is refused before the upgrade: a plain 403, no 101.
    let ws = Ws::connect(server.addr, "", &[("host", &evil)]).await;
    let err = ws.err().expect("refused");
    assert!(err.to_string().contains("403"), "{err}");

    // The names of the machine itself pass, with any port, in any case, with a trailing dot.
    for host in [
        format!("127.0.0.1:{port}"),
        "LOCALHOST:1".to_owned(),
        "localhost.".to_owned(),
        format!("[::1]:{port}"),
        "[0:0:0:0:0:0:0:1]".to_owned(),
    ] {
        let answer = server
            .request("GET", "/health/live", &[("host", &host)], None)
            .await;
        assert_eq!(answer.status, 200, "{host}: {}", answer.text);
    }

    // No Host, two, or garbage: 400 (RFC 9112 §3.2), JSON with a correlation id.
    for request in [
        "GET /health/live HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /health/live HTTP/1.0\r\n\r\n".to_owned(),
        "GET /health/live HTTP/1.1\r\nHost: localhost\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /health/live HTTP/1.1\r\nHost: user@localhost\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /health/live HTTP/1.1\r\nHost: localhost:99999\r\nConnection: close\r\n\r\n".to_owned(),
    ] {
        let answer = raw(&server, request.as_bytes()).await;
        assert!(
            answer.starts_with("HTTP/1.") && answer[8..].starts_with(" 400 "),
            "{request:?}: {answer}"
        );
        assert!(answer.to_ascii_lowercase().contains("x-correlation-id: "), "{answer}");
        assert_eq!(body_of(&answer)["error"]["code"], "invalid_host", "{request:?}");
    }
    // An absolute-form target names its host too.
    let absolute = raw(
        &server,
        b"GET http://evil.example/health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(absolute.starts_with("HTTP/1.1 403 "), "{absolute}");

    let metrics = server.get("/metrics").await.text;
    assert_eq!(published(&metrics), 0.0, "no refused request published");
    server.assert_still_serving().await;
    // The client that was connected all along got the event too, and nothing refused.
    assert_eq!(
        watcher.event_of_type("still.serving").await["type"],
        "still.serving"
    );
}

#[tokio::test]
async fn allowed_hosts_extend_the_list_and_a_star_turns_the_check_off() {
    let extended = Server::start(test_config(), |app| {
        app.host_policy(HostPolicy::for_bind(true, ["Media.Local"]).unwrap())
    })
    .await;
    for (host, status) in [
        ("media.local:8765", 200),
        ("MEDIA.LOCAL.", 200),
        ("localhost", 200),
        ("other.local", 403),
    ] {
        let answer = extended
            .request("GET", "/health/live", &[("host", host)], None)
            .await;
        assert_eq!(answer.status, status, "{host}");
    }
    let off = Server::start(test_config(), |app| app.host_policy(HostPolicy::any())).await;
    let answer = off
        .request("GET", "/health/live", &[("host", "evil.example")], None)
        .await;
    assert_eq!(answer.status, 200);
    let ws = Ws::connect(off.addr, "", &[("host", "evil.example")]).await;
    ws.expect("no check: the upgrade goes through")
        .close()
        .await;
    off.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Scan roots and scan jobs
// ---------------------------------------------------------------------------------------

/// Waits for the last `job_progress` (completed or failed) of the job started with
/// correlation id `cid`, and returns every event of the job in order.
async fn job_events(ws: &mut Ws, cid: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let frame = ws.next_event().await;
        if frame["correlation_id"] != cid {
            continue;
        }
        let status = frame["payload"]["status"].clone();
        events.push(frame);
        if status == "completed" || status == "failed" {
            return events;
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn scans_are_judged_on_resolved_paths_and_never_follow_links_out_of_a_root() {
    use std::os::unix::fs::symlink;

    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret-videos");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("hidden.mp4"), b"x").unwrap();
    std::fs::write(root.path().join("own.mp4"), b"x").unwrap();
    std::fs::create_dir(root.path().join("sub")).unwrap();
    std::fs::write(root.path().join("sub/deep.mkv"), b"x").unwrap();
    symlink(&secret, root.path().join("escape")).unwrap();
    symlink(secret.join("hidden.mp4"), root.path().join("alias.mp4")).unwrap();
    symlink(&secret, root.path().join("sub/deeper-escape")).unwrap();
    symlink(
        outside.path().join("gone-place"),
        root.path().join("dangling"),
    )
    .unwrap();
    let canonical_root = root.path().canonicalize().unwrap();
    let server = Server::start(test_config(), |app| {
        app.scan_roots([canonical_root.clone()])
    })
    .await;

    let outside_name = outside.path().file_name().unwrap();
    let cases = [
        (root.path().join("escape"), 403, "path_not_allowed"),
        (root.path().join("escape/../.."), 403, "path_not_allowed"),
        (
            root.path().join("..").join(outside_name),
            403,
            "path_not_allowed",
        ),
        (outside.path().to_path_buf(), 403, "path_not_allowed"),
        (root.path().join("dangling"), 400, "invalid_path"),
        (root.path().join("missing"), 400, "invalid_path"),
        (outside.path().join("missing"), 400, "invalid_path"),
        (root.path().join("own.mp4"), 400, "not_a_directory"),
    ];
    for (path, status, code) in cases {
        let answer = server
            .post_json("/api/v1/videos/scan", &json!({"path": path}), &[])
            .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (status, code),
            "{path:?}"
        );
        // No message says where a path or a link leads.
        let outside_text = outside.path().to_string_lossy();
        for hint in [outside_text.as_ref(), "secret", "gone-place", "/"] {
            assert!(!answer.text.contains(hint), "{hint:?} in {}", answer.text);
        }
    }

    // The root itself: links to outside files or directories are neither followed nor counted.
    let mut ws = server.live_ws("").await;
    let started = server
        .post_json(
            "/api/v1/videos/scan",
            &json!({"path": root.path(), "recursive": true}),
            &[("x-correlation-id", "scan-root")],
        )
        .await;
    assert_eq!(started.status, 202, "{}", started.text);
    let events = job_events(&mut ws, "scan-root").await;
    let completed = events
        .iter()
        .find(|e| e["type"] == "scan_completed")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(completed["payload"]["video_count"], 2, "{completed}");
    server.assert_still_serving().await;
}

/// Scan jobs waiting or running are bounded: the path checks of two jobs wait behind the one
/// blocking thread the test's runtime has, which the test holds, so both keep their slots
/// until it lets go, deterministically.
#[test]
fn scan_jobs_beyond_max_scan_jobs_are_answered_429_with_retry_after() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"x").unwrap();
        let server = Server::start(test_config(), |app| {
            app.scan_any_directory(true).max_scan_jobs(2)
        })
        .await;
        let mut ws = server.live_ws("").await;
        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        let body = serde_json::to_vec(&json!({"path": dir.path()})).unwrap();
        let scan = |cid: &'static str| {
            let (addr, body) = (server.addr, body.clone());
            tokio::spawn(async move {
                let headers = [
                    ("content-type", "application/json"),
                    ("x-correlation-id", cid),
                ];
                http(addr, "POST", "/api/v1/videos/scan", &headers, Some(&body)).await
            })
        };
        let first = scan("scan-1");
        let second = scan("scan-2");
        eventually("two scan jobs to hold their slots", || async {
            sample(&server.get("/metrics").await.text, "ferret_ws_scan_jobs") == Some(2.0)
        })
        .await;

        let refused = server
            .post_json("/api/v1/videos/scan", &json!({"path": dir.path()}), &[])
            .await;
        assert_eq!(
            (refused.status, refused.error_code().as_str()),
            (429, "too_many_scan_jobs")
        );
        assert_eq!(refused.header("retry-after"), Some("5"));

        release.send(()).unwrap();
        blocker.await.unwrap();
        let mut running = std::collections::BTreeSet::new();
        for job in [first, second] {
            let answer = job.await.unwrap();
            assert_eq!(answer.status, 202, "{}", answer.text);
            running.insert(answer.json()["job_id"].as_str().unwrap().to_owned());
        }
        while !running.is_empty() {
            let frame = ws.next_event().await;
            let payload = &frame["payload"];
            if frame["type"] == "job_progress" && payload["status"] != "running" {
                assert_eq!(payload["status"], "completed", "{frame}");
                running.remove(payload["job_id"].as_str().unwrap());
            }
        }
        eventually("the slots to be given back", || async {
            sample(&server.get("/metrics").await.text, "ferret_ws_scan_jobs") == Some(0.0)
        })
        .await;
        let again = server
            .post_json("/api/v1/videos/scan", &json!({"path": dir.path()}), &[])
            .await;
        assert_eq!(again.status, 202, "{}", again.text);
        server.assert_still_serving().await;
    });
}

#[tokio::test]
async fn a_walk_past_its_entry_or_time_budget_fails_the_job_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    for n in 0..5 {
        std::fs::write(dir.path().join(format!("{n}.mp4")), b"x").unwrap();
    }
    for (configure, limit) in [
        (
            (|app: ferret_ws_server::AppBuilder| app.scan_max_entries(3))
                as fn(ferret_ws_server::AppBuilder) -> ferret_ws_server::AppBuilder,
            "--scan-max-entries",
        ),
        (
            // A budget spent before the first entry is read.
            |app| app.scan_timeout(Duration::from_nanos(1)),
            "--scan-timeout",
        ),
    ] {
        let server =
            Server::start(test_config(), |app| configure(app.scan_any_directory(true))).await;
        let mut ws = server.live_ws("").await;
        let started = server
            .post_json(
                "/api/v1/videos/scan",
                &json!({"path": dir.path()}),
                &[("x-correlation-id", "limited")],
            )
            .await;
        assert_eq!(started.status, 202, "{}", started.text);
        let events = job_events(&mut ws, "limited").await;
        let last = events.last().unwrap();
        assert_eq!(last["payload"]["status"], "failed", "{events:?}");
        let error = last["payload"]["error"].as_str().unwrap();
        assert!(error.contains(limit), "{error}");
        assert!(events.iter().all(|e| e["type"] != "scan_completed"));
        server.assert_still_serving().await;
    }
}

// ---------------------------------------------------------------------------------------
// Projects
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn project_names_are_stored_trimmed_and_the_store_is_bounded() {
    let server = Server::start(test_config(), |app| app.max_projects(3)).await;
    let create = |name: String| {
        let server = &server;
        async move {
            server
                .post_json("/api/v1/projects", &json!({"name": name}), &[])
                .await
        }
    };
    // 200 characters (multi-byte ones) padded with 256 KiB of spaces: stored as 200.
    let longest = "é".repeat(200);
    let padded = format!(
        "{}{longest}{}",
        " ".repeat(128 << 10),
        "\n\t ".repeat(40 << 10)
    );
    let answer = create(padded).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.json()["name"], longest.as_str());
    assert!(
        answer.text.len() < 1024,
        "the answer holds the trimmed name only"
    );

    for name in [
        String::new(),
        " \t\n ".into(),
        format!(" {}x ", "é".repeat(200)),
    ] {
        let answer = create(name).await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (422, "invalid_name")
        );
    }
    assert_eq!(create("  two ".into()).await.json()["name"], "two");
    assert_eq!(create("three".into()).await.status, 201);
    let full = create("four".into()).await;
    assert_eq!(
        (full.status, full.error_code().as_str()),
        (409, "too_many_projects")
    );

    let listed = server.get("/api/v1/projects").await.json();
    let names: Vec<&str> = listed["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [longest.as_str(), "two", "three"]);
    assert_eq!(listed["next"], Value::Null);
    server.assert_still_serving().await;
}

#[tokio::test]
async fn projects_are_listed_a_page_at_a_time_oldest_first() {
    let server = Server::default().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let answer = server
            .post_json("/api/v1/projects", &json!({"name": format!("p{n}")}), &[])
            .await;
        ids.push(answer.json()["id"].as_str().unwrap().to_owned());
    }
    let page = |query: String| {
        let server = &server;
        async move { server.get(&format!("/api/v1/projects{query}")).await }
    };
    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let answer = page(query).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let body = answer.json();
        let projects = body["projects"].as_array().unwrap();
        assert!(projects.len() <= 2);
        seen.extend(
            projects
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned()),
        );
        match body["next"].as_str() {
            Some(next) => query = format!("?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every project once, oldest first");
    let all = page("?limit=999999999999".into()).await.json();
    assert_eq!(
        all["projects"].as_array().unwrap().len(),
        5,
        "a large limit is capped"
    );
    assert_eq!(page(String::new()).await.json()["next"], Value::Null);
    for bad in [
        "?limit=0",
        "?limit=-1",
        "?limit=ten",
        "?after=nobody",
        "?limit=1&limit=2",
    ] {
        let answer = page(bad.into()).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text);
        answer.error_code();
    }
    server.assert_still_serving().await;
}

// ---------------------------------------------------------------------------------------
// Slow, large and many requests
// ---------------------------------------------------------------------------------------

/// A server whose request timeout is short and whose head timeout is long, so that only the
/// request timeout can end a slow request within the tests' waits.
async fn impatient() -> Server {
    Server::start(
        test_config().handshake_timeout(Duration::from_secs(60)),
        |app| app.request_timeout(Duration::from_millis(300)),
    )
    .await
}

const SLOW_POST: &str = "POST /api/v1/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_closed() {
    let server = impatient().await;
    let answer = raw(&server, format!("{SLOW_POST}{{\"type\":").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(body_of(&answer)["error"]["code"], "request_timeout");
    server.assert_still_serving().await;
}

#[tokio::test]
async fn a_body_that_trickles_is_answered_408_although_bytes_keep_coming() {
    let server = impatient().await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut reader, mut writer) = tcp.into_split();
    writer.write_all(SLOW_POST.as_bytes()).await.unwrap();
    // A byte every 50 ms: a per-read idle timer would never fire.
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("answered and closed while the client still sends");
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    server.assert_still_serving().await;
}

#[tokio::test]
async fn a_head_that_stalls_is_closed_within_the_request_timeout() {
    let server = impatient().await;
    // The head timeout is 60 s; only the 300 ms request timeout can close this within WAIT.
    let answer = raw(&server, b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n").await;
    assert!(!answer.contains(" 200 "), "{answer}");
    server.assert_still_serving().await;
}

#[tokio::test]
async fn request_heads_over_64_kib_or_100_fields_are_refused() {
    let server = Server::default().await;
    let head_with = |header_bytes: usize| {
        format!(
            "GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(header_bytes)
        )
    };
    let fits = raw(&server, head_with(60 << 10).as_bytes()).await;
    assert!(
        fits.starts_with("HTTP/1.1 200 "),
        "{}",
        &fits[..fits.len().min(200)]
    );
    let over = raw(
        &server,
        head_with(ferret_ws_server::MAX_REQUEST_HEAD).as_bytes(),
    )
    .await;
    assert!(
        over.is_empty() || over.starts_with("HTTP/1.1 431 "),
        "{over}"
    );

    let mut many =
        "GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n".to_owned();
    for n in 0..ferret_ws_server::MAX_HEADERS {
        many.push_str(&format!("X-Field-{n}: {n}\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw(&server, many.as_bytes()).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431 "),
        "{answer}"
    );
    server.assert_still_serving().await;
}

/// A kept-alive HTTP/1.1 client connection, for requests while others wait.
struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>,
}

impl KeptAlive {
    async fn open(server: &Server) -> KeptAlive {
        let stream = TcpStream::connect(server.addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        KeptAlive { sender }
    }

    async fn get(&mut self, path: &str) -> String {
        use http_body_util::BodyExt;
        let request = hyper::Request::get(path)
            .header("host", "localhost")
            .body(http_body_util::Full::default())
            .unwrap();
        let exchange = async {
            let response = self.sender.send_request(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        tokio::time::timeout(WAIT, exchange)
            .await
            .expect("an answer in time")
    }

    /// Polls `/metrics` over this connection until `series` has `value`.
    async fn until_sample(&mut self, series: &str, value: f64) {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let now = sample(&self.get("/metrics").await, series);
            if now == Some(value) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{series} never became {value}; it is {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn http_connections_beyond_the_cap_wait_and_upgraded_websockets_do_not_count() {
    let server = Server::start(test_config(), |app| app.max_http_connections(2)).await;
    let mut kept = KeptAlive::open(&server).await;
    assert!(kept.get("/health/live").await.contains("ok"));
    let idle = TcpStream::connect(server.addr).await.unwrap();
    kept.until_sample("ferret_ws_http_connections", 2.0).await;

    // A third connection waits in the accept queue: its request is not served...
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut first)).await;
    assert!(early.is_err(), "served beyond the cap: {early:?}");
    let metrics = kept.get("/metrics").await;
    assert_eq!(sample(&metrics, "ferret_ws_http_connections"), Some(2.0));
    // ...until a slot is free.
    drop(idle);
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, waiting.read_to_end(&mut answer))
        .await
        .expect("served once a slot is free")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // WebSockets hold a slot only until their 101: three fit beside the kept-alive client.
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.live_ws("").await);
    }
    // (Each leaves it when its handshake's hyper connection ends, just after the 101.)
    kept.until_sample("ferret_ws_http_connections", 1.0).await;
    let publish = server
        .post_json("/api/v1/events", &json!({"type": "to.all"}), &[])
        .await;
    assert_eq!(publish.status, 202);
    for ws in &mut clients {
        assert_eq!(ws.event_of_type("to.all").await["type"], "to.all");
    }
    server.assert_still_serving().await;
}
