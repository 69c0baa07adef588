//! Handshakes and the accept loop: from a byte stream to a served connection.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use ferret_ws_core::{HandshakeRequest, HubConfig, Rejection};
use futures::future::{select, Either};
use futures::io::{AsyncRead, AsyncWrite};
use futures::{Stream, StreamExt};

use async_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use async_tungstenite::tungstenite::http::{self, header, HeaderMap, StatusCode, Uri};
use async_tungstenite::tungstenite::protocol::frame::CloseFrame;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::WebSocketStream;

use crate::conn::{self, Connection, Socket};
use crate::handle::{Admission, HubHandle, Registration, Slot};
use crate::Runtime;

/// The path of the event stream (PROTOCOL.md §2); the standalone accept loop answers 404 to
/// any other.
pub const WS_PATH: &str = "/ws";

/// tungstenite's read buffer per connection, and the most it reads from the socket at once.
/// Client messages are small JSON (`{"type":"ping"}` is 21 bytes on the wire, a Pong 6): this
/// takes the usual ones in one read and costs little while a connection is idle; a longer
/// message (at most `max_client_message`) grows the buffer to its size. tungstenite's 128 KiB
/// default would cost ~135 KiB per idle connection, and 4 KiB was half of what an idle
/// connection cost.
pub const READ_BUFFER_SIZE: usize = 512;

/// The most tungstenite may hold of its own frames (Pongs, close frames) while the
/// connection's socket takes none (see `conn::Socket`). The hub's frames never pass through
/// tungstenite's write buffer: the connection writes them itself.
const MAX_REPLY_BUFFER: usize = 4 << 10;

/// How long an accept loop pauses after an accept error that is not about one connection (such
/// as running out of file descriptors), so that it does not spin while the condition lasts.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The tungstenite settings for a hub's connections: a small read buffer for small JSON
/// messages, a write buffer for tungstenite's own replies only, and, as defence in depth, the
/// client message limit of `config`.
///
/// A message of exactly `max_client_message` bytes is accepted; a larger message or frame
/// is a [`Violation::MessageTooLarge`](ferret_ws_core::Violation::MessageTooLarge), which the
/// hub closes with 1009.
pub fn websocket_config(config: &HubConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_SIZE)
        .write_buffer_size(0) // hand each reply over at once: they are rare and small
        .max_write_buffer_size(MAX_REPLY_BUFFER)
        .max_message_size(Some(config.max_client_message()))
        .max_frame_size(Some(config.max_client_message()))
}

/// The raw request fields the handshake decision reads, owned, so that they can be taken
/// from any HTTP library's request (`http` 1.x types, as tungstenite, hyper and axum use).
///
/// A header given several times is passed on as its values joined with `, ` (RFC 9110
/// §5.3), and a value that is not UTF-8 with replacement characters: either way the core
/// sees a value it does not accept, rather than no value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeFields {
    /// The query string without `?`.
    pub query: Option<String>,
    /// `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
}

impl HandshakeFields {
    /// Takes the fields from a request's URI and headers.
    pub fn from_parts(uri: &Uri, headers: &HeaderMap) -> HandshakeFields {
        let field = |name: &str| {
            let mut values = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
            let first = values.next()?;
            Some(
                values.fold(first.into_owned(), |mut all, next: Cow<'_, str>| {
                    all.push_str(", ");
                    all.push_str(&next);
                    all
                }),
            )
        };
        HandshakeFields {
            query: uri.query().map(str::to_owned),
            last_event_id: field("last-event-id"),
            authorization: field(header::AUTHORIZATION.as_str()),
            origin: field(header::ORIGIN.as_str()),
        }
    }

    /// The request for [`HubHandle::admit`]; `local_port` is the port the server listens on,
    /// `peer` the client's address.
    pub fn request(&self, local_port: Option<u16>, peer: Option<IpAddr>) -> HandshakeRequest<'_> {
        HandshakeRequest {
            query: self.query.as_deref(),
            last_event_id: self.last_event_id.as_deref(),
            authorization: self.authorization.as_deref(),
            origin: self.origin.as_deref(),
            local_port,
            peer,
        }
    }
}

/// The standalone accept loop: serves every stream of `incoming` (with its peer's address,
/// if known) as a `/ws` connection ([`serve_stream_on`], each in a task of its own) until
/// the hub has finished shutting down, then returns. `local_port` is the listening port,
/// for the default Origin check.
///
/// Errors of single connections are skipped; other accept errors (out of file descriptors)
/// are logged and retried after a short pause.
pub async fn serve_incoming_on<R, S, I>(
    runtime: R,
    hub: HubHandle,
    local_port: Option<u16>,
    mut incoming: I,
) -> io::Result<()>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: Stream<Item = io::Result<(S, Option<IpAddr>)>> + Unpin,
{
    let finished = hub.finished();
    let mut finished = std::pin::pin!(finished);
    loop {
        let (stream, peer) = match select(incoming.next(), finished.as_mut()).await {
            Either::Left((Some(Ok(stream)), _)) => stream,
            Either::Left((Some(Err(e)), _)) if is_per_connection(&e) => continue,
            Either::Left((Some(Err(e)), _)) => {
                tracing::warn!(error = %e, "accept failed; pausing");
                runtime
                    .sleep_until(runtime.now() + ACCEPT_ERROR_PAUSE)
                    .await;
                continue;
            }
            Either::Left((None, _)) | Either::Right(_) => return Ok(()),
        };
        let (task_runtime, hub) = (runtime.clone(), hub.clone());
        runtime.spawn(async move {
            serve_stream_on(&task_runtime, &hub, stream, local_port, peer).await
        });
    }
}

/// Whether an accept error concerns only the connection being accepted (the loop goes on at
/// once), rather than the listener or the process (the loop pauses [`ACCEPT_ERROR_PAUSE`]).
pub fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves one accepted byte stream: the HTTP handshake through async-tungstenite's
/// `accept_hdr` callback, which applies the hub's decision ([`HubHandle::admit`]): an HTTP
/// refusal (403, 429, 503, and 404 for a path other than [`WS_PATH`]) before upgrading, a
/// close frame (4400, 4401) right after it, or the connection until it ends. An accepted
/// connection is registered in the callback, before tungstenite writes the 101. A handshake
/// that takes longer than the hub's `handshake_timeout` is abandoned and the stream dropped.
#[allow(clippy::result_large_err)] // the callback's error type is tungstenite's
pub async fn serve_stream_on<R, S>(
    runtime: &R,
    hub: &HubHandle,
    stream: S,
    local_port: Option<u16>,
    peer: Option<IpAddr>,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The handshake and the registration run boxed: their state is large and needed once;
    // inline, it would stay part of this task's memory for as long as the connection lives.
    let mut connection = boxed(async {
        let mut upgraded = None;
        let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            if request.uri().path() != WS_PATH {
                return Err(refusal_response(StatusCode::NOT_FOUND, "not found", None));
            }
            let fields = HandshakeFields::from_parts(request.uri(), request.headers());
            match hub.admit(&fields.request(local_port, peer)) {
                Admission::Refuse(refusal) => {
                    let status = StatusCode::from_u16(refusal.status)
                        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    Err(refusal_response(
                        status,
                        &refusal.reason,
                        refusal.retry_after,
                    ))
                }
                // Registered now: tungstenite writes the 101 once this returns.
                Admission::Accept(ticket) => {
                    upgraded = Some(Upgraded::Accepted(hub.register(ticket)));
                    Ok(response)
                }
                Admission::Reject(rejection, slot) => {
                    upgraded = Some(Upgraded::Rejected(rejection, slot));
                    Ok(response)
                }
            }
        };
        let config = websocket_config(hub.config());
        // A client that connects and then sends its request head slowly, or never, must not
        // hold the socket and this task forever (slowloris): the whole handshake gets
        // `handshake_timeout`. The inner block ends the borrow of `upgraded` by the callback.
        let handshaken = {
            let handshake = std::pin::pin!(async_tungstenite::accept_hdr_async_with_config(
                Socket::new(stream),
                callback,
                Some(config)
            ));
            let timeout = hub.config().handshake_timeout();
            let deadline = std::pin::pin!(runtime.sleep_until(runtime.now() + timeout));
            match select(handshake, deadline).await {
                Either::Left((handshaken, _)) => handshaken,
                Either::Right(_) => {
                    tracing::debug!(?timeout, "handshake timed out; connection dropped");
                    return None;
                }
            }
        };
        let ws = match handshaken {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "handshake failed or refused");
                return None;
            }
        };
        match upgraded? {
            Upgraded::Accepted(registration) => conn::start(hub, ws, registration).await,
            Upgraded::Rejected(rejection, slot) => {
                reject(runtime, hub, ws, rejection, slot).await;
                None
            }
        }
    })
    .await;
    // Awaited where it lies, not moved out of the `Option` into a second place in this
    // future. `Err`: the hub aborted it.
    if let Some(connection) = &mut connection {
        let _ = connection.await;
    }
}

/// `future` on the heap, so that the future awaiting it holds only a pointer to its state.
fn boxed<'a, T>(
    future: impl Future<Output = T> + Send + 'a,
) -> std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>> {
    Box::pin(future)
}

/// What the handshake callback decided for an upgrade.
enum Upgraded {
    Accepted(Registration),
    Rejected(Rejection, Slot),
}

/// Serves a stream that a host framework (hyper, axum) has already upgraded, for a
/// connection it [registered](HubHandle::register) before sending the 101.
pub async fn serve_registered_on<R, S>(
    _runtime: &R, // the connection runs in the caller's task: nothing to spawn
    hub: &HubHandle,
    stream: S,
    registration: Registration,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut connection = boxed(registered(hub, stream, registration)).await; // see serve_stream_on
                                                                             // Awaited where it lies, not moved out of the `Option` into a second place in this
                                                                             // future. `Err`: the hub aborted it.
    if let Some(connection) = &mut connection {
        let _ = connection.await;
    }
}

async fn registered<S>(
    hub: &HubHandle,
    stream: S,
    registration: Registration,
) -> Option<futures::future::Abortable<Connection<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = websocket(hub, stream).await;
    conn::start(hub, ws, registration).await
}

/// Serves a stream that a host framework (hyper, axum) has already upgraded after answering
/// the handshake itself with [`HubHandle::admit`]'s decision.
///
/// [`Admission::Reject`] sends its close frame and ends. [`Admission::Accept`] registers the
/// connection only now, after the 101: an event delivered between the client reading the
/// 101 and this call is missed; register before the 101 and use [`serve_registered_on`]
/// instead. [`Admission::Refuse`] should have been answered with an HTTP status instead of
/// upgrading: the stream is dropped.
pub async fn serve_upgraded_on<R, S>(runtime: &R, hub: &HubHandle, stream: S, admission: Admission)
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Boxed setup, then the connection awaited where it lies: see serve_stream_on.
    let mut connection = boxed(async {
        match admission {
            Admission::Accept(ticket) => registered(hub, stream, hub.register(ticket)).await,
            Admission::Reject(rejection, slot) => {
                let ws = websocket(hub, stream).await;
                reject(runtime, hub, ws, rejection, slot).await;
                None
            }
            Admission::Refuse(refusal) => {
                let status = refusal.status;
                tracing::warn!(status, "an upgraded stream came with a refusal; dropped");
                None
            }
        }
    })
    .await;
    if let Some(connection) = &mut connection {
        let _ = connection.await;
    }
}

async fn websocket<S>(hub: &HubHandle, stream: S) -> WebSocketStream<Socket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = websocket_config(hub.config());
    WebSocketStream::from_raw_socket(Socket::new(stream), Role::Server, Some(config)).await
}

/// Sends the rejection's close frame and waits for the client's answer, as long as the hub
/// would wait for one of its own closes (`close_timeout`). The connection holds its slot
/// until then.
async fn reject<R, S>(
    runtime: &R,
    hub: &HubHandle,
    mut ws: WebSocketStream<Socket<S>>,
    rejection: Rejection,
    _slot: Slot,
) where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: rejection.code.0.into(),
        reason: rejection.reason.into(),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let answered = async { while let Some(Ok(_)) = ws.next().await {} };
    let deadline = runtime.sleep_until(runtime.now() + hub.config().close_timeout());
    select(std::pin::pin!(answered), std::pin::pin!(deadline)).await;
}

fn refusal_response(
    status: StatusCode,
    reason: &str,
    retry_after: Option<Duration>,
) -> ErrorResponse {
    let mut response = http::Response::new(Some(format!("{reason}\n")));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = retry_after {
        headers.insert(
            header::RETRY_AFTER,
            http::HeaderValue::from(after.as_secs().max(1)),
        );
    }
    response
}
