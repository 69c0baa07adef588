//! One scenario suite for ferret-ws, run against every runtime adapter.
//!
//! Each scenario in [`scenarios`] is written once, as an `async fn(Ctx)`, against the small
//! harness in this file: start a server on `127.0.0.1:0` ([`Ctx::server`]: the standalone
//! accept loop of an adapter, or the `ferret-ws` server's own path), connect clients
//! made with async-tungstenite ([`Ctx::connect`]) or raw sockets that never answer anything
//! ([`Ctx::connect_raw`]), and expect frames with generous timeouts. `tests/suite.rs`
//! instantiates every scenario for each runtime, and some for mixed pairs (a tokio client
//! against the async-std server and back), with [`run`].
//!
//! Timing rules: no sleep is used to wait for something to happen (the harness awaits the
//! frame, or polls the hub's metrics until a condition holds, under a timeout); intervals are
//! tens of milliseconds and assertions on time are ranges.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod scenarios;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferret_ws_core::{HubConfig, HubConfigBuilder};
use ferret_ws_runtime::tungstenite::{self, Message};
use ferret_ws_runtime::HubHandle;
use futures::channel::oneshot;
use futures::future::{select, Either};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures::StreamExt;
use serde_json::Value;

/// How long any single expected thing may take before the scenario fails. Generous: the
/// suite must pass on a loaded two-core machine; success never waits this long.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The runtimes a server or a client can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rt {
    /// tokio: a multi-threaded runtime for servers, a current-thread one for clients.
    Tokio,
    /// async-std's global executor.
    AsyncStd,
    /// Servers only: the `ferret-ws` server's own production path on tokio (its accept loop,
    /// the axum `App` and its `/ws` handler), not the adapter's standalone `serve`.
    Server,
}

/// A boxed scenario.
pub type Scenario = fn(Ctx) -> Pin<Box<dyn Future<Output = ()>>>;

/// Runs `scenario` with its servers on `server` and its clients on `client`, then shuts
/// down every server it started.
pub fn run(server: Rt, client: Rt, scenario: Scenario) {
    assert_ne!(
        client,
        Rt::Server,
        "the server path is not a client runtime"
    );
    let server_runtime = match server {
        Rt::Tokio | Rt::Server => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a tokio runtime"),
        ),
        Rt::AsyncStd => None,
    };
    let ctx = Ctx {
        server,
        client,
        tokio: server_runtime.as_ref().map(|rt| rt.handle().clone()),
        hubs: Arc::default(),
    };
    let body = {
        let ctx = ctx.clone();
        async move {
            scenario(ctx.clone()).await;
            // Every server must stop within its grace once asked; serve() then returns.
            let hubs = std::mem::take(&mut *ctx.hubs.lock().unwrap());
            for (hub, served) in hubs {
                ctx.within(PATIENCE, "shutdown", hub.shutdown()).await;
                let served = ctx.within(PATIENCE, "serve to return", served).await;
                served.expect("serve's task").expect("serve's result");
            }
        }
    };
    match client {
        Rt::Tokio | Rt::Server => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(body),
        Rt::AsyncStd => async_std::task::block_on(body),
    }
    if let Some(rt) = server_runtime {
        rt.shutdown_background();
    }
}

/// The harness a scenario gets: where servers and clients run, and helpers.
#[derive(Clone)]
pub struct Ctx {
    server: Rt,
    client: Rt,
    tokio: Option<tokio::runtime::Handle>,
    /// Servers to shut down after the scenario, with the result of their `serve`.
    #[allow(clippy::type_complexity)]
    hubs: Arc<Mutex<Vec<(HubHandle, oneshot::Receiver<io::Result<()>>)>>>,
}

/// A server started by [`Ctx::server`]: the standalone accept loop of one adapter.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its hub.
    pub hub: HubHandle,
}

/// A test configuration: short intervals, everything else at the contract's defaults.
pub fn config() -> HubConfigBuilder {
    HubConfig::builder()
        .heartbeat_interval(Duration::from_secs(30))
        .liveness_timeout(Duration::from_secs(60))
        .close_timeout(Duration::from_millis(500))
        .shutdown_grace(Duration::from_millis(500))
}

impl Ctx {
    /// Which runtime the servers run on.
    pub fn server_runtime(&self) -> Rt {
        self.server
    }

    /// Starts a hub and its accept loop on `127.0.0.1:0` on the server runtime.
    pub async fn server(&self, config: HubConfig) -> Server {
        let (started, server) = oneshot::channel();
        let (served_tx, served) = oneshot::channel();
        match self.server {
            Rt::Tokio | Rt::Server => {
                let handle = self.tokio.as_ref().expect("a tokio server runtime");
                let production = self.server == Rt::Server;
                handle.spawn(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    let addr = listener.local_addr().expect("local address");
                    let hub = ferret_ws_tokio::start(config);
                    let _ = started.send(Server {
                        addr,
                        hub: hub.clone(),
                    });
                    let served = if production {
                        let app = ferret_ws_server::App::builder()
                            .hub(hub.clone())
                            .local_port(addr.port())
                            .build();
                        // The harness shuts the hub down; the server then stops serving.
                        let finished = async move { hub.finished().await };
                        ferret_ws_server::serve(listener, app, finished).await
                    } else {
                        ferret_ws_tokio::serve(listener, hub).await
                    };
                    let _ = served_tx.send(served);
                });
            }
            Rt::AsyncStd => {
                async_std::task::spawn(async move {
                    let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    let addr = listener.local_addr().expect("local address");
                    let hub = ferret_ws_async_std::start(config);
                    let _ = started.send(Server {
                        addr,
                        hub: hub.clone(),
                    });
                    let _ = served_tx.send(ferret_ws_async_std::serve(listener, hub).await);
                });
            }
        }
        let server = self
            .within(PATIENCE, "server start", server)
            .await
            .expect("server started");
        self.hubs.lock().unwrap().push((server.hub.clone(), served));
        server
    }

    /// Connects a client to `server` at `/ws?{query}`; panics if the handshake fails.
    pub async fn connect(&self, server: &Server, query: &str) -> Client {
        match self.try_connect(server, query, &[]).await {
            Ok(client) => client,
            Err(e) => panic!("connecting with {query:?} failed: {e}"),
        }
    }

    /// Connects a client with extra request headers; the handshake's error as is.
    pub async fn try_connect(
        &self,
        server: &Server,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        let url = format!("ws://{}/ws?{query}", server.addr);
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(url)?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                value.parse().expect("header value"),
            );
        }
        let socket = self.tcp(server.addr).await?;
        let connecting = async_tungstenite::client_async(request, socket);
        let (ws, _) = self.within(PATIENCE, "handshake", connecting).await?;
        Ok(Client {
            ws,
            ctx: self.clone(),
        })
    }

    /// Connects a raw client: it does the handshake by hand and then never writes a byte
    /// (no Pong, no close answer), but can read frames when asked.
    pub async fn connect_raw(&self, server: &Server, query: &str) -> RawClient {
        let mut socket = self.tcp(server.addr).await.expect("connect");
        let request = format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            server.addr
        );
        socket
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8];
            let read = self
                .within(PATIENCE, "handshake response", socket.read_exact(&mut byte))
                .await;
            read.expect("read the response");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "raw handshake refused: {head}"
        );
        RawClient {
            socket,
            ctx: self.clone(),
        }
    }

    async fn tcp(&self, addr: SocketAddr) -> io::Result<BoxIo> {
        Ok(match self.client {
            Rt::Tokio | Rt::Server => {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Box::new(async_tungstenite::tokio::TokioAdapter::new(stream))
            }
            Rt::AsyncStd => {
                let stream = async_std::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
        })
    }

    /// Waits `duration` on the client runtime. Only for letting time pass that the scenario
    /// measures (a heartbeat window, a TTL), never to wait for something to happen.
    pub async fn sleep(&self, duration: Duration) {
        match self.client {
            Rt::Tokio | Rt::Server => tokio::time::sleep(duration).await,
            Rt::AsyncStd => async_std::task::sleep(duration).await,
        }
    }

    /// `future`'s output, or `None` if it takes longer than `limit`.
    pub async fn timeout<F: Future>(&self, limit: Duration, future: F) -> Option<F::Output> {
        let future = std::pin::pin!(future);
        let sleep = std::pin::pin!(self.sleep(limit));
        match select(future, sleep).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(_) => None,
        }
    }

    /// `future`'s output; panics naming `what` if it takes longer than `limit`.
    pub async fn within<F: Future>(&self, limit: Duration, what: &str, future: F) -> F::Output {
        match self.timeout(limit, future).await {
            Some(output) => output,
            None => panic!("timed out after {limit:?} waiting for {what}"),
        }
    }

    /// Polls `check` (every few milliseconds) until it gives `Some`, for at most [`PATIENCE`].
    pub async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let polling = async {
            loop {
                if let Some(found) = check().await {
                    return found;
                }
                self.sleep(Duration::from_millis(5)).await;
            }
        };
        self.within(PATIENCE, what, polling).await
    }
}

/// The byte stream under a client, whatever its runtime.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

/// A WebSocket client made with async-tungstenite. It answers pings whenever it reads.
pub struct Client {
    ws: async_tungstenite::WebSocketStream<BoxIo>,
    ctx: Ctx,
}

/// What a client received next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A text frame: the raw text and its JSON.
    Text(String, Value),
    /// A ping from the server.
    Ping,
    /// A close frame: its code and reason.
    Close(u16, String),
    /// The connection ended without a close frame, or failed.
    Ended(String),
}

impl Client {
    /// The next message of any kind.
    pub async fn recv(&mut self) -> Received {
        let next = self.ctx.within(PATIENCE, "a frame", self.ws.next()).await;
        match next {
            Some(Ok(Message::Text(text))) => {
                let json = serde_json::from_str(&text).expect("the server sends JSON");
                Received::Text(text.to_string(), json)
            }
            Some(Ok(Message::Ping(_))) => Received::Ping,
            Some(Ok(Message::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                Received::Close(code, reason)
            }
            Some(Ok(other)) => panic!("unexpected message {other:?}"),
            Some(Err(e)) => Received::Ended(e.to_string()),
            None => Received::Ended("end of stream".into()),
        }
    }

    /// The next text frame that is not a heartbeat, as raw text and JSON; panics on a close.
    pub async fn next_event(&mut self) -> (String, Value) {
        loop {
            match self.recv().await {
                Received::Text(_, json) if json["type"] == "heartbeat" => continue,
                Received::Text(text, json) => return (text, json),
                Received::Ping => continue,
                other => panic!("expected an event, got {other:?}"),
            }
        }
    }

    /// The next non-heartbeat event's JSON.
    pub async fn next_json(&mut self) -> Value {
        self.next_event().await.1
    }

    /// Skips events until a close frame; returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        loop {
            match self.recv().await {
                Received::Close(code, reason) => return (code, reason),
                Received::Text(..) | Received::Ping => continue,
                Received::Ended(why) => {
                    panic!("expected a close frame, the connection ended: {why}")
                }
            }
        }
    }

    /// Sends a text message.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws
            .send(Message::text(text.into()))
            .await
            .expect("send text");
    }

    /// Sends a binary message.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::binary(bytes))
            .await
            .expect("send binary");
    }

    /// Sends Pings back to back, each with its number as payload, and meanwhile reads `count`
    /// events (heartbeats skipped), pausing for `hold` before each half of them, so that
    /// the server's socket fills in the middle of a frame. Returns the events and how many Pongs came back.
    /// tungstenite checks every frame the server sends (framing, UTF-8); this also checks that
    /// each event is whole JSON and each Pong echoes a Ping that was sent.
    pub async fn read_events_while_pinging(
        self,
        hold: Duration,
        count: usize,
    ) -> (Vec<Value>, u64) {
        use futures::future::poll_fn;
        use std::cell::Cell;
        use std::task::Poll;
        let ctx = self.ctx.clone();
        let (mut sender, mut receiver) = self.ws.split();
        let sent = Cell::new(0u64);
        let pinging = async {
            loop {
                let n = sent.get();
                let ping = Message::Ping(n.to_be_bytes().to_vec().into());
                if sender.send(ping).await.is_err() {
                    return;
                }
                sent.set(n + 1);
                // Let the reader run between two pings, whatever the socket does.
                let mut yielded = false;
                poll_fn(|cx| {
                    if std::mem::replace(&mut yielded, true) {
                        return Poll::Ready(());
                    }
                    cx.waker().wake_by_ref();
                    Poll::Pending
                })
                .await;
            }
        };
        let reading = async {
            let (mut events, mut pongs) = (Vec::new(), 0);
            let mut held = 0;
            while events.len() < count {
                if events.len() >= held * count.div_ceil(2) {
                    held += 1;
                    ctx.sleep(hold).await;
                }
                match ctx.within(PATIENCE, "a frame", receiver.next()).await {
                    Some(Ok(Message::Text(text))) => {
                        let json: Value = serde_json::from_str(&text)
                            .unwrap_or_else(|e| panic!("not whole JSON ({e}): {:.80}", &*text));
                        if json["type"] != "heartbeat" {
                            events.push(json);
                        }
                    }
                    Some(Ok(Message::Pong(payload))) => {
                        let n = u64::from_be_bytes(
                            payload[..]
                                .try_into()
                                .expect("a Pong echoes its 8-byte Ping"),
                        );
                        assert!(n < sent.get(), "a Pong for Ping {n}, never sent");
                        pongs += 1;
                    }
                    Some(Ok(Message::Ping(_))) => {}
                    other => panic!("expected events and Pongs, got {other:?}"),
                }
            }
            (events, pongs)
        };
        let (pinging, reading) = (std::pin::pin!(pinging), std::pin::pin!(reading));
        let outcome = select(pinging, reading).await;
        match outcome {
            Either::Right((read, _)) => read,
            Either::Left(_) => panic!("the server stopped taking Pings"),
        }
    }

    /// Closes with 1000 and reads until the server has answered.
    pub async fn close(mut self) {
        let normal = tungstenite::protocol::CloseFrame {
            code: tungstenite::protocol::frame::coding::CloseCode::Normal,
            reason: "bye".into(),
        };
        let _ = self.ws.close(Some(normal)).await;
        while let Some(Ok(_)) = self
            .ctx
            .within(PATIENCE, "the close answer", self.ws.next())
            .await
        {}
    }
}

/// A client that never writes after its handshake. It reads frames only when asked, so
/// until then it is a client that stopped reading.
pub struct RawClient {
    socket: BoxIo,
    ctx: Ctx,
}

/// A frame as a raw client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A text frame.
    Text(String),
    /// A ping.
    Ping,
    /// A close frame with its code.
    Close(u16),
    /// Any other opcode.
    Other(u8),
}

impl RawClient {
    /// The next frame; `None` at the end of the stream (or a reset).
    pub async fn next_frame(&mut self) -> Option<RawFrame> {
        let ctx = self.ctx.clone();
        ctx.within(PATIENCE, "a raw frame", self.read_frame()).await
    }

    async fn read_frame(&mut self) -> Option<RawFrame> {
        let mut head = [0u8; 2];
        self.socket.read_exact(&mut head).await.ok()?;
        let opcode = head[0] & 0x0f;
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                self.socket.read_exact(&mut ext).await.ok()?;
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                self.socket.read_exact(&mut ext).await.ok()?;
                u64::from_be_bytes(ext)
            }
            short => u64::from(short),
        };
        let mut payload = vec![0u8; usize::try_from(len).ok()?];
        self.socket.read_exact(&mut payload).await.ok()?;
        Some(match opcode {
            1 => RawFrame::Text(String::from_utf8(payload).expect("text frames are UTF-8")),
            8 => RawFrame::Close(
                payload
                    .get(..2)
                    .map_or(1005, |code| u16::from_be_bytes([code[0], code[1]])),
            ),
            9 => RawFrame::Ping,
            other => RawFrame::Other(other),
        })
    }

    /// Reads until the end of the stream; returns the frames read.
    pub async fn read_to_end(&mut self) -> Vec<RawFrame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame().await {
            frames.push(frame);
        }
        frames
    }
}

/// The `seq` of an `event_id` (`<epoch>-<seq>`).
pub fn seq_of(event: &Value) -> u64 {
    let id = event["event_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event_id in {event}"));
    id.split_once('-')
        .expect("epoch-seq")
        .1
        .parse()
        .expect("a decimal seq")
}

/// Elapsed time since `start`, for range assertions.
pub fn since(start: Instant) -> Duration {
    start.elapsed()
}
