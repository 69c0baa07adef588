//! One connection, served by one task: it reads the client's frames through tungstenite and
//! writes the hub's frames to the socket itself.
//!
//! Theory of operation. The hub task queues [`WriterCmd`]s into the connection's [`Outbox`]
//! (never waiting); the connection's task takes everything queued in one go and writes it with
//! vectored writes: each frame's header and its payload, shared with every other recipient
//! ([`WireFrame`]), so that no payload is copied per recipient. tungstenite stays the one
//! WebSocket implementation for everything else: it reads and validates what the client
//! sends, and it makes the protocol's own replies (a Pong for a Ping, the echo of a Close
//! frame) and the hub's close frames. Its writes do not reach the socket directly: the
//! [`Socket`] it writes to takes each of them whole, and the connection writes them at the next
//! frame boundary, so that a reply can never land in the middle of a frame (RFC 6455 §5.4).
//!
//! | event | the connection |
//! | --- | --- |
//! | client closes | stops writing the hub's frames (after the one being written), lets tungstenite echo the close, reads to the end, reports `Closed(code)` |
//! | socket fails or ends | reports `Lost` |
//! | hub `Close` | writes the frames queued before it, then has tungstenite send the close frame, keeps reading until the client answers, reports `Finished` |
//! | tungstenite rejects a frame | reports the `Violation`, writes on until the hub's close frame is out, then reads and discards until the client hangs up, reports `Lost` |
//! | write fails | reports `Lost` |
//! | hub `Abort` | the task is aborted |

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use ferret_ws_core::{CloseCode, ConnId, DisconnectCause, Input, Violation};
use futures::channel::mpsc;
use futures::future::{AbortHandle, Abortable};
use futures::io::{AsyncRead, AsyncWrite};
use futures::task::{waker_ref, ArcWake, AtomicWaker};
use futures::{Sink, StreamExt};

use async_tungstenite::tungstenite::error::ProtocolError;
use async_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use async_tungstenite::WebSocketStream;

use crate::handle::{HubHandle, Registered, Registration, Slot};
use crate::hub_task::Command;
use crate::wire::WireFrame;

/// The most buffers in one vectored write (two per frame): on the stack of each write.
const MAX_IOV: usize = 64;

/// How much of tungstenite's replies the socket takes before tungstenite has to wait (it then
/// keeps reading and retries later). A reply is at most 127 bytes (RFC 6455 §5.5); one write
/// is always taken whole when nothing is waiting, whatever its size.
const MAX_REPLIES: usize = 512;

/// Queue slots a connection keeps while it has nothing to write (48 bytes each): room for a
/// heartbeat and its Ping, or an event, without allocating, and no more.
const IDLE_SLOTS: usize = 4;

/// Rounds of reading and writing in one poll before the task yields to its runtime, so that a
/// connection that always has work cannot starve the others on its worker thread.
const MAX_ROUNDS: usize = 32;

/// One command for a connection, as the hub decided it.
pub(crate) enum WriterCmd {
    /// A frame the hub counts (a text frame or a Ping): report it flushed once written.
    Frame(WireFrame),
    /// A close frame, after everything queued before it.
    Close(CloseCode, &'static str),
}

/// The hub task's handle on one connection.
pub(crate) struct ConnEntry {
    pub(crate) queue: Outbox,
    task: AbortHandle,
}

impl ConnEntry {
    pub(crate) fn new(queue: Outbox, task: AbortHandle) -> ConnEntry {
        ConnEntry { queue, task }
    }

    /// Stops the connection's task; the socket is dropped without a close handshake.
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// The commands queued for one connection: filled by the hub task, emptied by the connection's
/// task. Its storage grows with what is queued and is given back when the connection has
/// nothing left to write.
///
/// Unbounded by itself: the core never has more than `Hub::max_queued_outputs` outputs
/// unflushed per connection, so this never holds more.
///
/// The same allocation tells the connection when its socket has become readable (the waker
/// its reads register), so that a task woken to write does not try to read as well: every
/// read attempt costs tungstenite a pass over its read buffer.
#[derive(Clone)]
pub(crate) struct Outbox(Arc<Shared>);

struct Shared {
    queued: Mutex<Queued>,
    /// The socket may have something to read: it said so, or it has not yet said otherwise.
    readable: AtomicBool,
    /// The connection's task, waiting for the socket to become readable.
    reader: AtomicWaker,
    /// The hub dropped the frames queued to it: those the task has taken but not begun go too.
    discard: AtomicBool,
}

impl ArcWake for Shared {
    fn wake_by_ref(shared: &Arc<Shared>) {
        shared.readable.store(true, Ordering::Release);
        shared.reader.wake();
    }
}

struct Queued {
    commands: VecDeque<WriterCmd>,
    /// The most commands the hub can have queued ([`ferret_ws_core::Hub::max_queued_outputs`]
    /// and the close): more is a bug of ours, caught in debug builds.
    capacity: usize,
    /// The connection's task, waiting for commands.
    waker: Option<Waker>,
    /// The connection's task has ended: nothing queued is ever written.
    ended: bool,
    /// Frames and payload bytes written since the hub task last collected them.
    flushed: (usize, usize),
}

impl Outbox {
    pub(crate) fn new(capacity: usize) -> Outbox {
        Outbox(Arc::new(Shared {
            queued: Mutex::new(Queued {
                commands: VecDeque::new(),
                capacity: capacity + 1,
                waker: None,
                ended: false,
                flushed: (0, 0),
            }),
            readable: AtomicBool::new(true),
            reader: AtomicWaker::new(),
            discard: AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Held only for short, non-panicking operations; a poisoned lock is still sound.
        self.0.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether reading might find something.
    fn readable(&self) -> bool {
        self.0.readable.load(Ordering::Acquire)
    }

    /// After a read found nothing: wake the task (not tungstenite's waker, which only its own
    /// reads register again) once the socket becomes readable. `false` if it already has.
    fn watch_reads(&self, cx: &mut Context<'_>) -> bool {
        self.0.reader.register(cx.waker());
        !self.readable()
    }

    /// Reading must be tried again (tungstenite has a reply to hand over, which it does
    /// when it reads).
    fn set_readable(&self) {
        self.0.readable.store(true, Ordering::Release);
    }

    /// Reads from `io`, noting whether it ran dry (until its waker says otherwise).
    fn poll_read<S: AsyncRead + Unpin>(
        &self,
        io: &mut S,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.0.readable.store(false, Ordering::Release);
        let waker = waker_ref(&self.0);
        let read = Pin::new(io).poll_read(&mut Context::from_waker(&waker), buf);
        if read.is_ready() {
            self.set_readable();
        }
        read
    }

    /// Queues a command and wakes the connection (the hub task's side; never waits). `false`
    /// if the connection's task has ended: its end is about to be reported.
    pub(crate) fn push(&self, command: WriterCmd) -> bool {
        let waker = {
            let mut queued = self.lock();
            if queued.ended {
                return false;
            }
            if queued.commands.capacity() == 0 {
                // Storage was given back when the connection went idle.
                queued.commands.reserve(IDLE_SLOTS);
            }
            queued.commands.push_back(command);
            debug_assert!(
                queued.commands.len() <= queued.capacity,
                "the hub queued more than it accounts for"
            );
            queued.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// The hub task's side of [`ferret_ws_core::Output::Discard`]: drops every queued frame
    /// (a close stays), and has the connection drop those it took and has not begun writing.
    pub(crate) fn discard(&self) {
        let (dropped, waker) = {
            let mut queued = self.lock();
            let (close, dropped): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut queued.commands)
                .into_iter()
                .partition(|c| matches!(c, WriterCmd::Close(..)));
            queued.commands = close;
            (dropped, queued.waker.take())
        };
        drop(dropped);
        self.0.discard.store(true, Ordering::Release);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the hub dropped what is queued since the last call.
    fn discarded(&self) -> bool {
        // A load first: this is asked at every write, and a swap is a locked instruction.
        self.0.discard.load(Ordering::Acquire) && self.0.discard.swap(false, Ordering::AcqRel)
    }

    /// Moves everything queued into the empty `into` (swapping the two queues, so that
    /// storage is reused while busy); `false` and the task's waker registered when nothing is
    /// queued, and then the two keep [`IDLE_SLOTS`] slots of storage between them, for the
    /// next frame, and give the rest back.
    fn take(&self, into: &mut VecDeque<WriterCmd>, cx: &mut Context<'_>) -> bool {
        debug_assert!(into.is_empty());
        let mut queued = self.lock();
        if queued.commands.is_empty() {
            let kept = [queued.commands.capacity(), into.capacity()]
                .into_iter()
                .position(|capacity| (1..=IDLE_SLOTS).contains(&capacity));
            let keep = match kept {
                Some(0) => std::mem::take(&mut queued.commands),
                Some(_) => std::mem::take(into),
                None => VecDeque::new(),
            };
            queued.commands = keep;
            *into = VecDeque::new();
            match &queued.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => queued.waker = Some(cx.waker().clone()),
            }
            return false;
        }
        std::mem::swap(&mut queued.commands, into);
        true
    }

    /// Adds frames written for the hub task to collect; `true` if none were waiting yet (the
    /// connection is then to be listed in [`Flushes`]).
    fn add_flushed(&self, (frames, bytes): (usize, usize)) -> bool {
        let mut queued = self.lock();
        let first = queued.flushed.0 == 0;
        queued.flushed.0 += frames;
        queued.flushed.1 += bytes;
        first
    }

    /// The hub task's side: the frames and payload bytes written since the last call.
    pub(crate) fn take_flushed(&self) -> (usize, usize) {
        std::mem::take(&mut self.lock().flushed)
    }

    /// The connection's task ends: drops what is queued and refuses more.
    fn end(&self) {
        let commands = {
            let mut queued = self.lock();
            queued.ended = true;
            queued.waker = None;
            std::mem::take(&mut queued.commands)
        };
        drop(commands); // outside the lock
    }
}

/// Which connections wrote frames since the hub task last looked: each connection's task adds
/// itself when it writes the first frames the hub has not collected, and wakes the hub task
/// if the list was empty; the hub task takes the list in one go and collects each
/// connection's counts from its [`Outbox`]. So a write costs no message through the hub's
/// channel, and a busy hub task collects the writes of many connections per wake-up.
#[derive(Default)]
pub(crate) struct Flushes {
    wrote: Mutex<Vec<ConnId>>,
    /// Whether `wrote` has anything: asked before every command the hub task handles.
    any: AtomicBool,
    /// The hub task, waiting for writes (among other things).
    hub: AtomicWaker,
}

impl Flushes {
    fn lock(&self) -> MutexGuard<'_, Vec<ConnId>> {
        // Held only to push or swap; a poisoned lock is still sound.
        self.wrote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `conn` wrote frames the hub has not collected.
    fn add(&self, conn: ConnId) {
        let first = {
            let mut wrote = self.lock();
            wrote.push(conn);
            wrote.len() == 1
        };
        if first {
            self.any.store(true, Ordering::Release);
            self.hub.wake();
        }
    }

    /// The hub task's side: the connections that wrote since the last call, into `into`
    /// (emptied first, so that its storage is reused); `false` if none did.
    pub(crate) fn take(&self, into: &mut Vec<ConnId>) -> bool {
        into.clear();
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut wrote = self.lock();
        self.any.store(false, Ordering::Release);
        std::mem::swap(&mut *wrote, into);
        !into.is_empty()
    }

    /// Wakes the hub task when a connection writes.
    pub(crate) fn register(&self, cx: &mut Context<'_>) {
        self.hub.register(cx.waker());
    }
}

/// The stream tungstenite reads and writes. Reads go to the socket. Writes go to the socket
/// until the handshake is done; after it ([`Socket::capture`]) each write of tungstenite's
/// (a Pong, a close frame) is taken whole into `replies`, which the connection writes to the
/// socket between two of its own frames.
pub(crate) struct Socket<S> {
    io: S,
    /// Set once the handshake is done: tungstenite's writes go to `replies`, and reads tell
    /// this connection's queue whether the socket ran dry.
    capture: Option<Outbox>,
    /// tungstenite's frames, not yet written to the socket.
    replies: Vec<u8>,
    /// How much of `replies` the socket has taken.
    replies_written: usize,
    /// tungstenite, waiting for room in `replies`.
    blocked: Option<Waker>,
}

impl<S> Socket<S> {
    pub(crate) fn new(io: S) -> Socket<S> {
        Socket {
            io,
            capture: None,
            replies: Vec::new(),
            replies_written: 0,
            blocked: None,
        }
    }

    /// From now on tungstenite's writes wait in `replies` for the connection to write them.
    fn capture(&mut self, queue: Outbox) {
        self.capture = Some(queue);
    }

    /// `n` more bytes of `replies` went out; once all have, their storage is given back.
    fn replies_sent(&mut self, n: usize) {
        self.replies_written += n;
        if self.replies_written == self.replies.len() {
            self.replies = Vec::new();
            self.replies_written = 0;
            if let Some(waker) = self.blocked.take() {
                if let Some(queue) = &self.capture {
                    queue.set_readable(); // tungstenite retries its write when it reads
                }
                waker.wake();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match &this.capture {
            Some(queue) => queue.poll_read(&mut this.io, buf),
            None => Pin::new(&mut this.io).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.capture.is_none() {
            return Pin::new(&mut this.io).poll_write(cx, buf);
        }
        // Whole or not at all: tungstenite hands over whole frames, and a frame must not be
        // split around one of the connection's.
        if !this.replies.is_empty() && this.replies.len() + buf.len() > MAX_REPLIES {
            this.blocked = Some(cx.waker().clone());
            return Poll::Pending;
        }
        this.replies.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.capture.is_some() {
            return Poll::Ready(Ok(())); // the connection writes the replies
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// Starts serving an upgraded connection that was registered before its 101: returns the
/// connection, a future for the caller to run until the connection ends (`None` if the hub
/// task is gone).
///
/// The caller runs this setup boxed and then awaits the returned future inline, so that a
/// connection's task holds the connection's state only, not the setup's as well.
pub(crate) async fn start<S>(
    hub: &HubHandle,
    mut ws: WebSocketStream<Socket<S>>,
    mut registration: Registration,
) -> Option<Abortable<Connection<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Registered {
        id,
        queue,
        task,
        slot,
    } = registration.parts.take()?;
    // `Err`: the hub task is gone; dropping the socket is all there is to do.
    let conn = id.await.ok()?;
    ws.get_mut().capture(queue.clone());
    let connection = Connection {
        conn,
        ws,
        queue,
        writing: VecDeque::new(),
        written: 0,
        commands: hub.commands(),
        flushes: hub.flushes(),
        input: None,
        written_frames: (0, 0),
        peer_close: None,
        closed_by_us: false,
        close_sent: false,
        stream_ended: false,
        violated: false,
        slot: Some(slot),
        end: None,
    };
    Some(Abortable::new(connection, task))
}

/// A connection's state, owned by its task; as a future, it serves the connection until it
/// ends and then reports the end.
pub(crate) struct Connection<S> {
    conn: ConnId,
    ws: WebSocketStream<Socket<S>>,
    queue: Outbox,
    /// Commands taken from the queue, in order; the front one is being written.
    writing: VecDeque<WriterCmd>,
    /// Bytes of the front frame already written.
    written: usize,
    commands: mpsc::Sender<Command>,
    /// Where the hub task learns that this connection wrote frames.
    flushes: Arc<Flushes>,
    /// An input for the hub, waiting for room in its channel; reading waits meanwhile.
    input: Option<Input>,
    /// Frames and payload bytes written by the current [`Connection::write`].
    written_frames: (usize, usize),
    /// The code of the client's close frame, once one arrived.
    peer_close: Option<Option<CloseCode>>,
    /// Whether the hub's close frame went out before the client's arrived: its answer then
    /// finishes the close the hub asked for.
    closed_by_us: bool,
    /// The hub's close frame has been handed to tungstenite: nothing else is written.
    close_sent: bool,
    /// tungstenite's stream has ended (closed, failed, or rejected what the client sent).
    stream_ended: bool,
    /// tungstenite rejected what the client sent.
    violated: bool,
    /// Freed before the end is reported, so that "the hub forgot it" implies "the slot is free".
    slot: Option<Slot>,
    /// Set once the connection is over; what is left is telling the hub.
    end: Option<End>,
}

/// How the connection ended.
#[derive(Clone, Copy)]
enum End {
    /// Report this to the hub.
    Disconnected(DisconnectCause),
    /// The hub task is gone: there is nobody to tell.
    HubGone,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// Reads, writes and reports until the connection ends.
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        for _ in 0..MAX_ROUNDS {
            let mut progress = false;
            match self.report(cx) {
                Ok(reported) => progress |= reported,
                Err(()) => return Poll::Ready(End::HubGone),
            }
            let wrote = self.write(cx);
            let written = std::mem::take(&mut self.written_frames);
            if written.0 > 0 && self.queue.add_flushed(written) {
                self.flushes.add(self.conn);
            }
            match wrote {
                Ok(wrote) => progress |= wrote,
                Err(e) => {
                    tracing::debug!(conn = %self.conn, error = %e, "write failed");
                    return Poll::Ready(End::Disconnected(self.cause()));
                }
            }
            if let Some(end) = self.ended(cx) {
                return Poll::Ready(end);
            }
            if self.input.is_none() && !self.stream_ended && self.queue.readable() {
                progress |= self.read(cx);
            }
            if !progress {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref(); // more to do: come back after the others had their turn
        Poll::Pending
    }

    /// How a connection that ends now ended.
    fn cause(&self) -> DisconnectCause {
        match (self.peer_close, self.closed_by_us) {
            (Some(_), true) => DisconnectCause::Finished,
            (Some(code), false) => DisconnectCause::Closed(code),
            (None, _) => DisconnectCause::Lost,
        }
    }

    /// Whether the connection is over, once what must still be written is written.
    fn ended(&mut self, cx: &mut Context<'_>) -> Option<End> {
        if !self.stream_ended {
            return None;
        }
        let replies_pending = !self.ws.get_ref().replies.is_empty();
        if !self.violated {
            // The close handshake finished (or the socket ended): the last reply (a close
            // echo) goes out first.
            return (!replies_pending || self.peer_close.is_none())
                .then(|| End::Disconnected(self.cause()));
        }
        // After a violation: wait for the hub's close frame to be out, then read and discard
        // until the client hangs up, since closing a socket with unread data resets the
        // connection and the client could lose the close frame. The hub aborts this task if
        // the client takes longer than its close timeout.
        if !self.close_sent || replies_pending {
            return None;
        }
        let mut scratch = [0u8; 512];
        loop {
            match Pin::new(&mut self.ws.get_mut().io).poll_read(cx, &mut scratch) {
                Poll::Ready(Ok(1..)) => continue,
                Poll::Ready(_) => return Some(End::Disconnected(DisconnectCause::Lost)),
                Poll::Pending => return None,
            }
        }
    }

    /// Sends the waiting input, if the hub's channel has room. `Ok(true)` if it was sent;
    /// `Err` if the hub task is gone.
    fn report(&mut self, cx: &mut Context<'_>) -> Result<bool, ()> {
        if self.input.is_none() {
            return Ok(false);
        }
        match self.commands.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Err(()),
            Poll::Pending => return Ok(false),
        }
        let input = self.input.take().expect("checked above");
        match self.commands.start_send(Command::Input(input)) {
            Ok(()) => Ok(true),
            Err(_) => Err(()),
        }
    }

    /// Reads what the client sent, until the socket has nothing more or an input has to wait
    /// for the hub. `true` if anything was read.
    fn read(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while self.input.is_none() && !self.stream_ended {
            let message = match self.ws.poll_next_unpin(cx) {
                Poll::Pending if self.queue.watch_reads(cx) => return progress,
                Poll::Pending => continue, // readable again meanwhile
                Poll::Ready(message) => message,
            };
            progress = true;
            let conn = self.conn;
            self.input = match message {
                Some(Ok(Message::Text(text))) => Some(Input::Text {
                    conn,
                    text: Bytes::from(text),
                }),
                Some(Ok(Message::Binary(_))) => Some(Input::Binary { conn }),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Some(Input::Alive { conn }),
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queues the echo (unless this answers our close) and writes
                    // it on the next read; nothing of the hub's may follow it.
                    self.peer_close = Some(frame.map(|f| CloseCode(u16::from(f.code))));
                    self.writing.truncate(usize::from(self.written > 0));
                    None
                }
                Some(Ok(Message::Frame(_))) => None, // never produced by reading
                Some(Err(e)) => {
                    self.stream_ended = true;
                    match violation(&e) {
                        Some(kind) if self.peer_close.is_none() => {
                            self.violated = true;
                            Some(Input::Violation { conn, kind })
                        }
                        _ => None,
                    }
                }
                None => {
                    self.stream_ended = true;
                    None
                }
            };
        }
        progress
    }

    /// Writes what is queued, at each frame boundary tungstenite's replies first, in vectored
    /// writes until the socket is full or nothing is left. `true` if anything was written.
    fn write(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let mut progress = false;
        loop {
            if self.queue.discarded() {
                self.drop_unbegun();
            }
            let takes_frames = self.peer_close.is_none() && !self.close_sent;
            if self.writing.is_empty() && takes_frames && self.queue.take(&mut self.writing, cx) {
                progress = true;
            }
            let at_boundary = self.written == 0 && self.ws.get_ref().replies.is_empty();
            if let (true, Some(WriterCmd::Close(code, reason))) =
                (at_boundary, self.writing.front())
            {
                let (code, reason) = (*code, *reason);
                if !self.close(cx, code, reason) {
                    return Ok(progress);
                }
                self.writing.pop_front();
                progress = true;
                continue;
            }
            let Socket {
                io,
                replies,
                replies_written,
                ..
            } = self.ws.get_mut();
            let mut bufs = [IoSlice::new(&[]); MAX_IOV];
            let replies = &replies[*replies_written..];
            let count = gather(&self.writing, self.written, replies, &mut bufs);
            if count == 0 {
                return Ok(progress);
            }
            let n = match Pin::new(io).poll_write_vectored(cx, &bufs[..count]) {
                Poll::Pending => return Ok(progress),
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Err(e),
            };
            progress = true;
            self.consume(n);
        }
    }

    /// Drops the frames taken from the queue and not begun (the one being written is
    /// finished, so that the frames on the wire stay whole); a close stays.
    fn drop_unbegun(&mut self) {
        let begun = usize::from(self.written > 0);
        let mut index = 0;
        self.writing.retain(|command| {
            index += 1;
            index <= begun || matches!(command, WriterCmd::Close(..))
        });
    }

    /// Hands the hub's close frame to tungstenite (its encoding, and its state machine then
    /// knows the close handshake has begun); `false` if it has to wait.
    fn close(&mut self, cx: &mut Context<'_>, code: CloseCode, reason: &'static str) -> bool {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Pending => return false,
            Poll::Ready(Ok(())) => {
                let frame = CloseFrame {
                    code: code.0.into(),
                    reason: Utf8Bytes::from_static(reason),
                };
                if let Err(e) = Pin::new(&mut self.ws).start_send(Message::Close(Some(frame))) {
                    tracing::debug!(conn = %self.conn, error = %e, "close frame not sent");
                }
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(conn = %self.conn, error = %e, "close frame not sent");
            }
        }
        self.close_sent = true;
        self.closed_by_us = self.peer_close.is_none();
        true
    }

    /// Accounts for `n` bytes the socket took, in the order [`gather`] laid them out.
    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            let socket = self.ws.get_mut();
            if self.written == 0 && !socket.replies.is_empty() {
                let take = n.min(socket.replies.len() - socket.replies_written);
                socket.replies_sent(take);
                n -= take;
                continue;
            }
            let Some(WriterCmd::Frame(frame)) = self.writing.front() else {
                unreachable!("the socket took more than was gathered");
            };
            let take = n.min(frame.wire_len() - self.written);
            self.written += take;
            n -= take;
            if self.written == frame.wire_len() {
                self.written_frames.0 += 1;
                self.written_frames.1 += frame.payload_len();
                self.written = 0;
                self.writing.pop_front();
            }
        }
    }
}

impl<S> Future for Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let end = match this.end {
            Some(end) => end,
            None => {
                let Poll::Ready(end) = this.drive(cx) else {
                    return Poll::Pending;
                };
                this.queue.end();
                drop(this.slot.take());
                this.end = Some(end);
                end
            }
        };
        if let End::Disconnected(cause) = end {
            match this.commands.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {
                    let conn = this.conn;
                    let input = Input::Disconnected { conn, cause };
                    let _ = this.commands.start_send(Command::Input(input));
                }
                Poll::Ready(Err(_)) => {} // the hub task is gone
            }
            this.end = Some(End::HubGone); // reported: done
        }
        Poll::Ready(())
    }
}

/// Lays out the next vectored write into `bufs`: the rest of the frame being written, then,
/// at the first frame boundary, tungstenite's `replies` (what is left of them), then whole
/// frames up to a close or the end of `bufs`. Returns how many buffers it filled.
fn gather<'a>(
    writing: &'a VecDeque<WriterCmd>,
    written: usize,
    replies: &'a [u8],
    bufs: &mut [IoSlice<'a>; MAX_IOV],
) -> usize {
    let mut count = 0;
    let mut push = |buf: &'a [u8], count: &mut usize| {
        if !buf.is_empty() && *count < MAX_IOV {
            bufs[*count] = IoSlice::new(buf);
            *count += 1;
        }
    };
    let mut skip = written;
    let mut replies_pending = !replies.is_empty();
    for command in writing {
        if count + 3 > MAX_IOV {
            break; // room for the replies and one frame's two buffers
        }
        if skip == 0 && replies_pending {
            push(replies, &mut count);
            replies_pending = false;
        }
        let WriterCmd::Frame(frame) = command else {
            break; // a close goes through tungstenite, once everything before it is out
        };
        let (head, payload) = (frame.head(), frame.payload());
        let from_head = skip.min(head.len());
        push(&head[from_head..], &mut count);
        push(&payload[skip - from_head..], &mut count);
        skip = 0;
    }
    if replies_pending && skip == 0 {
        push(replies, &mut count);
    }
    count
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
