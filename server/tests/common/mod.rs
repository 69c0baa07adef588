//! Test helpers: a server on `127.0.0.1:0` with an injected hub, a minimal HTTP client and a
//! WebSocket client that waits with timeouts (never sleeps as synchronisation).
#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_tungstenite::tokio::{connect_async, ConnectStream};
use async_tungstenite::tungstenite::client::IntoClientRequest;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::WebSocketStream;
use ferret_ws_core::{HubConfig, HubConfigBuilder};
use ferret_ws_server::{App, AppBuilder, HubHandle};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait may take: generous, for a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);

/// The headers of a WebSocket opening handshake (RFC 6455 §4.1), for raw `/ws` requests.
pub const UPGRADE: [(&str, &str); 4] = [
    ("connection", "Upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

/// Short intervals, so that heartbeats flow during tests without slowing them.
pub fn test_config() -> HubConfigBuilder {
    HubConfig::builder()
        .heartbeat_interval(Duration::from_millis(200))
        .liveness_timeout(Duration::from_secs(10))
        .shutdown_grace(Duration::from_secs(2))
}

/// A served [`App`] on a free port, stopped through its shutdown future.
pub struct Server {
    pub addr: SocketAddr,
    pub hub: HubHandle,
    pub app: App,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Starts a hub with `config`, an app around it configured by `app`, and serves it.
    pub async fn start(
        config: HubConfigBuilder,
        app: impl FnOnce(AppBuilder) -> AppBuilder,
    ) -> Server {
        let hub = ferret_ws_server::start_hub(config.build().expect("valid test config"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let app = app(App::builder().hub(hub.clone())).build();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ferret_ws_server::serve(listener, app.clone(), async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            hub,
            app,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts with the test config and scanning of any directory.
    pub async fn default() -> Server {
        Server::start(test_config(), |app| app.scan_any_directory(true)).await
    }

    /// Triggers the shutdown and waits for `serve` to return; returns how long that took.
    pub async fn stop(&mut self) -> Duration {
        let started = Instant::now();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("serve returns")
                .expect("no panic")
                .expect("serve ok");
        }
        started.elapsed()
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        http(self.addr, method, path, headers, body).await
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], None).await
    }

    /// A POST with a JSON body and `Content-Type: application/json`, plus `headers`.
    pub async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Response {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        let bytes = serde_json::to_vec(body).expect("serialise");
        self.request("POST", path, &all, Some(&bytes)).await
    }

    /// Proves the server still does its job after a hostile client: a fresh WebSocket client
    /// gets an event published over HTTP.
    pub async fn assert_still_serving(&self) {
        let mut ws = self.live_ws("").await;
        let answer = self
            .post_json(
                "/api/v1/events",
                &serde_json::json!({"type": "still.serving"}),
                &[],
            )
            .await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        assert_eq!(
            ws.event_of_type("still.serving").await["type"],
            "still.serving"
        );
        ws.close().await;
    }

    /// Opens `/ws` with `query` (without `?`).
    pub async fn ws(&self, query: &str) -> Ws {
        Ws::connect(self.addr, query, &[])
            .await
            .expect("websocket connects")
    }

    /// Opens `/ws` and proves its registration (ping → pong), so it sees every later event.
    pub async fn live_ws(&self, query: &str) -> Ws {
        let mut ws = self.ws(query).await;
        ws.prove_live().await;
        ws
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub text: String,
}

impl Response {
    /// The body as JSON (panics with the text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn correlation_id(&self) -> &str {
        self.header("x-correlation-id")
            .expect("X-Correlation-ID on every response")
    }

    /// The error code of a JSON error body, checking its shape.
    pub fn error_code(&self) -> String {
        let body = self.json();
        let error = body["error"]
            .as_object()
            .unwrap_or_else(|| panic!("not an error body: {body}"));
        assert!(error["message"].is_string(), "{body}");
        error["code"].as_str().expect("code").to_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("http handshake");
        tokio::spawn(conn);
        let mut request = hyper::Request::builder().method(method).uri(path);
        // The server's own address, unless the test sends a Host of its own.
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            request = request.header("host", addr.to_string());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_vec())))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Response {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("HTTP answer in time")
}

/// A WebSocket client of `/ws`.
pub struct Ws {
    stream: WebSocketStream<ConnectStream>,
}

/// What a client saw at the end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl Ws {
    pub async fn connect(
        addr: SocketAddr,
        query: &str,
        headers: &[(&'static str, &str)],
    ) -> Result<Ws, async_tungstenite::tungstenite::Error> {
        let mut request = format!("ws://{addr}/ws?{query}").into_client_request()?;
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_str(value).expect("header value"));
        }
        let (stream, _) = tokio::time::timeout(WAIT, connect_async(request))
            .await
            .expect("handshake in time")?;
        Ok(Ws { stream })
    }

    /// The next message, within [`WAIT`]; `None` when the stream ended.
    pub async fn next_message(&mut self) -> Option<Message> {
        match tokio::time::timeout(WAIT, self.stream.next()).await {
            Ok(Some(Ok(message))) => Some(message),
            Ok(Some(Err(_))) | Ok(None) => None,
            Err(_) => panic!("no WebSocket message within {WAIT:?}"),
        }
    }

    /// The next frame of any type as JSON (heartbeats included); panics at a close.
    pub async fn next_frame(&mut self) -> Value {
        loop {
            match self.next_message().await {
                Some(Message::Text(text)) => {
                    return serde_json::from_str(text.as_str()).expect("frames are JSON")
                }
                Some(Message::Close(frame)) => {
                    panic!("closed while waiting for a frame: {frame:?}")
                }
                Some(_) => continue,
                None => panic!("connection ended while waiting for a frame"),
            }
        }
    }

    /// The next frame that is not a heartbeat.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["type"] != "heartbeat" {
                return frame;
            }
        }
    }

    /// Skips frames until one of type `name`.
    pub async fn event_of_type(&mut self, name: &str) -> Value {
        loop {
            let frame = self.next_frame().await;
            if frame["type"] == name {
                return frame;
            }
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    /// Sends `ping` and waits for the `pong`: from then on every new event reaches this
    /// client (PROTOCOL.md §5, "Registration").
    pub async fn prove_live(&mut self) {
        self.send_text(r#"{"type":"ping"}"#).await;
        self.event_of_type("pong").await;
    }

    /// Reads to the end; returns the non-heartbeat frames seen and the close frame.
    pub async fn until_closed(&mut self) -> (Vec<Value>, Option<Closed>) {
        let mut frames = Vec::new();
        loop {
            match self.next_message().await {
                Some(Message::Text(text)) => {
                    let frame: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    if frame["type"] != "heartbeat" {
                        frames.push(frame);
                    }
                }
                Some(Message::Close(frame)) => {
                    let closed = frame.map(|f| Closed {
                        code: u16::from(f.code),
                        reason: f.reason.to_string(),
                    });
                    // Keep reading so that tungstenite sends its answering close frame, as a
                    // well-behaved client does, and the server sees the handshake complete.
                    while self.next_message().await.is_some() {}
                    return (frames, closed);
                }
                Some(_) => {}
                None => return (frames, None),
            }
        }
    }

    /// Closes normally (1000) and reads until the server's answer.
    pub async fn close(mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.stream.close(Some(frame)).await;
        while self.next_message().await.is_some() {}
    }
}

/// The close code constant for tests that compare with tungstenite's.
pub fn close_code(code: u16) -> CloseCode {
    CloseCode::from(code)
}

/// The value of a sample in Prometheus text, e.g. `ferret_ws_connections` or
/// `ferret_ws_closes_total{code="1000"}`; `None` if absent. Panics on a line that does not
/// parse as `name[{labels}] value`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        if name == series {
            found = Some(value);
        }
    }
    found
}

/// Polls `check` until it is true, within [`WAIT`] (for conditions that no event announces,
/// such as a gauge going down after a disconnect).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `bytes` on a fresh raw connection and reads until the server closes it; returns
/// what it sent back and how long after connecting it closed. Panics after [`WAIT`].
pub async fn raw_until_closed(addr: SocketAddr, bytes: &[u8]) -> (String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(bytes).await.expect("send");
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let reading = async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break, // EOF or a reset: closed either way
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, reading)
        .await
        .expect("the server closes the connection in time");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}
