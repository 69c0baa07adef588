//! `serve_upgraded` behind a host framework that answers the HTTP upgrade itself, as the
//! axum server does: here a bare hyper server, with `TokioIo<hyper::upgrade::Upgraded>`.
//! Plus a paused-clock test of the hub timer, which only tokio can do.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use ferret_ws_tokio::core::{Event, EventType, HubConfig, OriginPolicy};
use ferret_ws_tokio::tungstenite::handshake::derive_accept_key;
use ferret_ws_tokio::tungstenite::{self, Message};
use ferret_ws_tokio::{Admission, HandshakeFields, HubHandle};
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, RETRY_AFTER, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Client = async_tungstenite::WebSocketStream<async_tungstenite::tokio::TokioAdapter<TcpStream>>;

const PATIENCE: Duration = Duration::from_secs(15);

/// The `/ws` handler of a host framework: decide, answer, and hand over the upgraded stream.
async fn ws_handler(
    hub: HubHandle,
    port: u16,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let fields = HandshakeFields::from_parts(request.uri(), request.headers());
    let admission = hub.admit(&fields.request(Some(port), None));
    if let Admission::Refuse(refusal) = &admission {
        let mut response = Response::new(Full::new(Bytes::from(refusal.reason.clone())));
        *response.status_mut() = StatusCode::from_u16(refusal.status).unwrap();
        if let Some(after) = refusal.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, after.as_secs().into());
        }
        return Ok(response);
    }
    let key = request
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .expect("a WebSocket request")
        .as_bytes()
        .to_vec();
    let upgrade = hyper::upgrade::on(&mut request);
    // An accepted connection is registered before the 101 goes out.
    let registration = match admission {
        Admission::Accept(ticket) => Ok(hub.register(ticket)),
        rejected => Err(rejected),
    };
    tokio::spawn(async move {
        let upgraded = TokioIo::new(upgrade.await.expect("upgraded"));
        match registration {
            Ok(registration) => {
                ferret_ws_tokio::serve_registered(&hub, upgraded, registration).await
            }
            Err(rejected) => ferret_ws_tokio::serve_upgraded(&hub, upgraded, rejected).await,
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, "websocket".parse().unwrap());
    headers.insert(CONNECTION, "Upgrade".parse().unwrap());
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        derive_accept_key(&key).parse().unwrap(),
    );
    Ok(response)
}

async fn hyper_server(config: HubConfig) -> (SocketAddr, HubHandle) {
    let hub = ferret_ws_tokio::start(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_hub = hub.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let hub = server_hub.clone();
            let service = hyper::service::service_fn(move |request| {
                ws_handler(hub.clone(), addr.port(), request)
            });
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                let _ = connection.with_upgrades().await;
            });
        }
    });
    (addr, hub)
}

async fn connect(
    addr: SocketAddr,
    query: &str,
    origin: Option<&str>,
) -> Result<Client, tungstenite::Error> {
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{addr}/ws?{query}"
    ))?;
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    let stream = TcpStream::connect(addr).await?;
    Ok(async_tungstenite::tokio::client_async(request, stream)
        .await?
        .0)
}

async fn next_text(client: &mut Client) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("a frame in time");
        match message.expect("open").expect("a message") {
            Message::Text(text) => return serde_json::from_str(&text).unwrap(),
            Message::Ping(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn close_code(client: &mut Client) -> u16 {
    loop {
        let message = tokio::time::timeout(PATIENCE, client.next())
            .await
            .expect("a frame in time");
        match message.expect("open").expect("a message") {
            Message::Close(Some(frame)) => return frame.code.into(),
            Message::Text(_) | Message::Ping(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_upgrade_serves_accept_reject_refuse_and_shutdown() {
    let config = HubConfig::builder()
        .allowed_origins(OriginPolicy::List(vec!["http://app.example".into()]))
        .shutdown_grace(Duration::from_secs(2))
        .build()
        .unwrap();
    let (addr, hub) = hyper_server(config).await;

    // Accept: registered (a ping answered by a pong proves it), then gets events.
    let mut client = connect(addr, "types=project_*", Some("http://app.example"))
        .await
        .unwrap();
    client
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert_eq!(next_text(&mut client).await["type"], "pong");
    hub.publish(Event::new(EventType::new("scan_started").unwrap()))
        .await
        .unwrap(); // filtered out
    let id = hub
        .publish(Event::new(EventType::new("project_created").unwrap()))
        .await
        .unwrap();
    let event = next_text(&mut client).await;
    assert_eq!(
        (event["type"].as_str(), event["event_id"].as_str()),
        (Some("project_created"), Some(&*id.to_string()))
    );

    // Reject: upgraded, then closed with 4400 naming the parameter.
    let mut rejected = connect(addr, "types=a,,b", None).await.unwrap();
    assert_eq!(close_code(&mut rejected).await, 4400);

    // Refuse: HTTP 403, no upgrade.
    match connect(addr, "", Some("http://evil.example")).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| "a connection")),
    }

    // Shutdown: health_status, then 1001.
    let t0 = std::time::Instant::now();
    let (stopped, ()) = tokio::join!(hub.shutdown(), async {
        let health = next_text(&mut client).await;
        assert_eq!(health["payload"]["status"], "shutting_down");
        assert_eq!(close_code(&mut client).await, 1001);
        // Reading on lets tungstenite answer the close.
        while let Some(Ok(_)) = client.next().await {}
    });
    let () = stopped;
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the client answered, so no need for the grace"
    );
    let metrics = hub.metrics().await;
    assert_eq!(metrics.connections, 0);
    assert_eq!(metrics.handshakes_refused.get(&403), Some(&1));
    assert_eq!(metrics.closes.get(&4400), Some(&1));
    assert_eq!(metrics.closes.get(&1001), Some(&1));
}

/// The hub reads tokio's clock and sleeps on tokio's timer: with the clock paused, a
/// 30-second heartbeat arrives as soon as the runtime is idle, a whole interval later in
/// virtual time and long before that in real time. (Its timestamp cannot show it: the hub
/// re-anchors timestamps to the real wall clock at every tick.)
#[tokio::test(start_paused = true)]
async fn hub_timer_follows_tokio_paused_clock() {
    let config = HubConfig::builder()
        .heartbeat_interval(Duration::from_secs(30))
        .liveness_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let hub = ferret_ws_tokio::start(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ferret_ws_tokio::serve(listener, hub.clone()));
    let anchor = hub
        .publish(Event::new(EventType::new("first").unwrap()))
        .await
        .unwrap();
    hub.publish(Event::new(EventType::new("second").unwrap()))
        .await
        .unwrap();
    // Any wait on real IO lets the paused clock jump to the next timer, so the replay (not a
    // ping) proves the registration, and the timeouts are long in virtual time.
    let mut client = connect(addr, &format!("last_event_id={anchor}"), None)
        .await
        .unwrap();
    let second = next_virtual(&mut client).await;
    assert_eq!(second["type"], "second");
    let (virtual_start, real_start) = (tokio::time::Instant::now(), std::time::Instant::now());
    let heartbeat = loop {
        let json = next_virtual(&mut client).await;
        if json["type"] == "heartbeat" {
            break json;
        }
    };
    assert_eq!(heartbeat["event_id"], format!("{}-2", hub.epoch()));
    let (virtual_wait, real_wait) = (virtual_start.elapsed(), real_start.elapsed());
    assert!(
        virtual_wait >= Duration::from_secs(29) && real_wait < Duration::from_secs(29),
        "heartbeat after {virtual_wait:?} of virtual and {real_wait:?} of real time"
    );
}

/// The next text frame as JSON (`null` for a ping), waiting up to an hour of virtual time.
async fn next_virtual(client: &mut Client) -> serde_json::Value {
    let next = tokio::time::timeout(Duration::from_secs(3600), client.next()).await;
    match next.expect("in time").expect("open").expect("a message") {
        Message::Text(text) => serde_json::from_str(&text).unwrap(),
        Message::Ping(_) => serde_json::Value::Null,
        other => panic!("unexpected {other:?}"),
    }
}
