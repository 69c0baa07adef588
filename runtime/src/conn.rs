//! One connection: a reader task that turns WebSocket messages into core inputs, and a writer
//! task that writes what the hub queued and reports it flushed.
//!
//! Theory of operation. The hub keeps a [`ConnEntry`] per connection: the writer's bounded
//! queue and the abort handles of both tasks. The reader owns the connection's lifetime: it
//! reports the end ([`Input::Disconnected`]) exactly once, after stopping the writer, unless
//! the hub aborted it (then the hub has already forgotten the connection).
//!
//! | event | reader | writer |
//! | --- | --- | --- |
//! | client closes | reads its close frame, lets tungstenite answer it, reads to the end, reports `Closed(code)` | aborted by the reader |
//! | socket fails or ends | reports `Lost` | aborted by the reader |
//! | hub `Close` | keeps reading until the client answers | sends the queued frames, then the close frame, then hands its half back to the reader |
//! | tungstenite rejects a frame | reports the `Violation`, waits for the writer to send the hub's close frame, then reads and discards until the client hangs up, reports `Lost` | as for `Close` |
//! | write fails | reports `Lost` | tells the reader and ends |
//! | hub `Abort` | aborted | aborted |

use std::future::Future;

use bytes::Bytes;
use ferret_ws_core::{CloseCode, ConnId, DisconnectCause, Input, Violation};
use futures::channel::{mpsc, oneshot};
use futures::future::{select, AbortHandle, Abortable, Either};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use futures::{FutureExt, SinkExt, StreamExt};

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::{WebSocketReceiver, WebSocketSender, WebSocketStream};

use crate::handle::{HubHandle, Registered, Registration, Slot};
use crate::hub_task::Command;
use crate::Runtime;

/// Frames the writer feeds before it flushes and reports, so that a busy queue is written in
/// a few large socket writes but the hub still hears back regularly.
const MAX_WRITE_BATCH: usize = 64;

/// One command for a connection's writer, as the hub decided it.
pub(crate) enum WriterCmd {
    /// A JSON text frame (shared bytes, valid UTF-8 by construction).
    Text(Bytes),
    /// A WebSocket Ping with an empty payload.
    Ping,
    /// A close frame, after everything queued before it.
    Close(CloseCode, &'static str),
}

/// The hub task's handle on one connection.
pub(crate) struct ConnEntry {
    /// Capacity [`ferret_ws_core::Hub::max_queued_outputs`]: `try_send` never finds it full.
    pub(crate) queue: mpsc::Sender<WriterCmd>,
    reader: AbortHandle,
    writer: AbortHandle,
}

impl ConnEntry {
    pub(crate) fn new(
        queue: mpsc::Sender<WriterCmd>,
        reader: AbortHandle,
        writer: AbortHandle,
    ) -> ConnEntry {
        ConnEntry {
            queue,
            reader,
            writer,
        }
    }

    /// Stops both tasks at once; the socket is dropped without a close handshake.
    pub(crate) fn abort(self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// How the writer ended, as the reader learns it.
enum WriterEnd<S> {
    /// The close frame is out; here is the write half, to keep the socket open until the
    /// client answers.
    Closed(WebSocketSender<S>),
    /// Writing failed: the socket is unusable.
    Failed,
}

/// Starts serving an upgraded connection that was registered before its 101: spawns its
/// writer and returns its reader, for the caller to run until the connection ends (`None`
/// if the hub task is gone).
///
/// The caller runs this setup boxed and then awaits the reader inline, so that a
/// connection's task holds the reader's state only, not the setup's as well.
pub(crate) async fn start<R, S>(
    runtime: &R,
    hub: &HubHandle,
    ws: WebSocketStream<S>,
    mut registration: Registration,
) -> Option<impl Future<Output = ()> + Send + 'static>
where
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Registered {
        id,
        queued,
        reader: reader_registration,
        writer: writer_registration,
        writer_abort,
        slot,
    } = registration.parts.take()?;
    // `Err`: the hub task is gone; dropping the socket is all there is to do.
    let conn = id.await.ok()?;
    let (sink, stream) = ws.split();
    let (writer_done, writer_end) = oneshot::channel();
    let writer = write_half(conn, sink, queued, hub.commands(), writer_done);
    runtime.spawn(Abortable::new(writer, writer_registration).map(drop));
    let reader = read_half(conn, stream, writer_end, hub.commands(), writer_abort, slot);
    Some(Abortable::new(reader, reader_registration).map(drop))
}

/// What ended the read loop.
enum ReadEnd {
    /// The stream ended (EOF, reset, or the close handshake finished).
    Ended,
    /// tungstenite rejected what the client sent; the stream cannot be read any more.
    Violation(Violation),
    /// The writer failed.
    WriterFailed,
}

async fn read_half<S>(
    conn: ConnId,
    mut stream: WebSocketReceiver<S>,
    writer_end: oneshot::Receiver<WriterEnd<S>>,
    mut commands: mpsc::Sender<Command>,
    writer: AbortHandle,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut writer_end = Some(writer_end);
    // The writer's half once it has sent a close frame; holding it keeps nothing alive that
    // the reader does not already (both halves share the socket), but it is needed to
    // reunite the halves after a violation.
    let mut sink = None;
    // The code of the client's close frame, once one arrived.
    let mut peer_close: Option<Option<CloseCode>> = None;
    // Whether the hub's close frame went out before the client's arrived: its answer then
    // finishes the close the hub asked for.
    let mut closed_by_us = false;
    let end = loop {
        let next = match &mut writer_end {
            Some(end) => match select(stream.next(), end).await {
                Either::Left((message, _)) => Ok(message),
                Either::Right((end, _)) => Err(end),
            },
            None => Ok(stream.next().await),
        };
        let message = match next {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(e))) => match violation(&e) {
                Some(kind) if peer_close.is_none() => break ReadEnd::Violation(kind),
                _ => break ReadEnd::Ended,
            },
            Ok(None) => break ReadEnd::Ended,
            Err(Ok(WriterEnd::Closed(half))) => {
                writer_end = None;
                sink = Some(half);
                if peer_close.is_none() {
                    closed_by_us = true;
                }
                continue;
            }
            // After the client's close, a failed write (sending after closing) is expected:
            // keep reading so that tungstenite answers the close.
            Err(Ok(WriterEnd::Failed) | Err(_)) if peer_close.is_some() => {
                writer_end = None;
                continue;
            }
            Err(Ok(WriterEnd::Failed) | Err(_)) => break ReadEnd::WriterFailed,
        };
        let input = match message {
            Message::Text(text) => Input::Text {
                conn,
                text: Bytes::from(text),
            },
            Message::Binary(_) => Input::Binary { conn },
            Message::Ping(_) | Message::Pong(_) => Input::Alive { conn },
            Message::Close(frame) => {
                // tungstenite queues the answer and sends it on the next read.
                peer_close = Some(frame.map(|f| CloseCode(u16::from(f.code))));
                continue;
            }
            Message::Frame(_) => continue, // never produced by reading
        };
        if commands.send(Command::Input(input)).await.is_err() {
            return; // the hub task is gone
        }
    };
    if let ReadEnd::Violation(kind) = end {
        let _ = commands
            .send(Command::Input(Input::Violation { conn, kind }))
            .await;
        // The hub answers with a close frame. Once the writer has sent it, read and discard
        // whatever the client still sends until it hangs up: closing a socket with unread
        // data resets the connection, and the client could lose the close frame. The hub
        // aborts this task if the client takes longer than its close timeout.
        if let Some(end) = writer_end.take() {
            if let Ok(WriterEnd::Closed(half)) = end.await {
                sink = Some(half);
            }
        }
        if let Some(half) = sink.take() {
            if let Ok(ws) = WebSocketStream::reunite(half, stream) {
                discard_until_eof(ws.into_inner()).await;
            }
        }
    }
    writer.abort();
    drop(slot); // free before reporting, so that "the hub forgot it" implies "the slot is free"
    let cause = match (peer_close, closed_by_us) {
        (Some(_), true) => DisconnectCause::Finished,
        (Some(code), false) => DisconnectCause::Closed(code),
        (None, _) => DisconnectCause::Lost,
    };
    let _ = commands
        .send(Command::Input(Input::Disconnected { conn, cause }))
        .await;
}

async fn discard_until_eof<S: AsyncRead + Unpin>(mut socket: S) {
    let mut buf = vec![0u8; 512]; // on the heap: most readers never get here
    while let Ok(1..) = socket.read(&mut buf).await {}
}

/// Maps what tungstenite rejected to a core [`Violation`]; `None` when the socket simply ended.
fn violation(error: &WsError) -> Option<Violation> {
    match error {
        WsError::Capacity(_) => Some(Violation::MessageTooLarge),
        WsError::Utf8(_) => Some(Violation::InvalidUtf8),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None, // EOF
        WsError::Protocol(_) => Some(Violation::Protocol),
        _ => None, // IO errors, closed connections
    }
}

async fn write_half<S>(
    conn: ConnId,
    mut sink: WebSocketSender<S>,
    mut queued: mpsc::Receiver<WriterCmd>,
    mut commands: mpsc::Sender<Command>,
    done: oneshot::Sender<WriterEnd<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let end = match write_loop(conn, &mut sink, &mut queued, &mut commands).await {
        Ok(true) => WriterEnd::Closed(sink),
        Ok(false) => return, // the hub let go of the connection: the reader is gone too
        Err(e) => {
            tracing::debug!(%conn, error = %e, "write failed");
            WriterEnd::Failed
        }
    };
    let _ = done.send(end);
}

/// Writes queued frames in batches (feed many, flush once, report once). `Ok(true)` after
/// sending a close frame, `Ok(false)` when the queue ended.
async fn write_loop<S>(
    conn: ConnId,
    sink: &mut WebSocketSender<S>,
    queued: &mut mpsc::Receiver<WriterCmd>,
    commands: &mut mpsc::Sender<Command>,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(first) = queued.next().await {
        let (mut frames, mut bytes) = (0, 0);
        let mut next = Some(first);
        let mut closed = false;
        let mut batch = 0;
        while let Some(command) = next.take() {
            match command {
                WriterCmd::Text(frame) => {
                    (frames, bytes) = (frames + 1, bytes + frame.len());
                    sink.feed(Message::Text(text(frame))).await?;
                }
                WriterCmd::Ping => {
                    frames += 1;
                    sink.feed(Message::Ping(Bytes::new())).await?;
                }
                WriterCmd::Close(code, reason) => {
                    let frame = CloseFrame {
                        code: code.0.into(),
                        reason: Utf8Bytes::from_static(reason),
                    };
                    sink.feed(Message::Close(Some(frame))).await?;
                    closed = true;
                    break;
                }
            }
            batch += 1;
            if batch < MAX_WRITE_BATCH {
                next = queued.try_recv().ok();
            }
        }
        sink.flush().await?;
        if frames > 0 {
            let flushed = Input::Flushed {
                conn,
                frames,
                bytes,
            };
            if commands.send(Command::Input(flushed)).await.is_err() {
                return Ok(false);
            }
        }
        if closed {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The frame as a text message, without copying: the core encodes valid UTF-8 only.
fn text(frame: Bytes) -> Utf8Bytes {
    Utf8Bytes::try_from(frame).unwrap_or_else(|e| {
        // The core builds every frame with serde_json from valid strings.
        unreachable!("the core sent a frame that is not UTF-8: {e}")
    })
}
