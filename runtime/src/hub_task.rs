//! The hub task: the one owner of the [`Hub`], driven by commands and one timer.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ferret_ws_core::{
    ConnId, ConnParams, DisconnectCause, Epoch, Event, EventId, Hub, HubConfig, IdempotencyKey,
    Input, Metrics, Output, Seq, Sequenced, SequencedEvent, Sequencer,
};
use futures::channel::{mpsc, oneshot};
use futures::{FutureExt, StreamExt};
use time::OffsetDateTime;

use crate::conn::{ConnEntry, WriterCmd};
use crate::handle::{HubHandle, PublishError, Shared};
use crate::wire::{Encoder, WireFrame};
use crate::Runtime;

/// Room in the hub's inbound channel. Each sender may have one more message in flight, so
/// this bounds what the readers and writers can queue before they wait (and, through them,
/// TCP pushes back on clients).
const COMMAND_QUEUE: usize = 1024;

/// Commands handled per wake-up before the task yields to its runtime, so that a flood of
/// inputs cannot starve the other tasks of a worker thread.
const MAX_COMMANDS_PER_WAKE: usize = 256;

/// What the handle and the connection tasks ask of the hub task.
pub(crate) enum Command {
    /// An accepted connection, about to be sent its 101: register it and answer with its id.
    Register {
        params: ConnParams,
        entry: ConnEntry,
        reply: oneshot::Sender<ConnId>,
    },
    /// A registered connection whose upgrade failed: forget it (its id is in the receiver).
    Abandon {
        id: oneshot::Receiver<ConnId>,
    },
    /// A fact from a connection's reader or writer.
    Input(Input),
    Publish {
        event: Event,
        key: Option<IdempotencyKey>,
        reply: oneshot::Sender<Result<EventId, PublishError>>,
    },
    Metrics {
        reply: oneshot::Sender<Metrics>,
    },
    /// Start the shutdown; answer when every connection is gone.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
    /// Answer when a shutdown has completed.
    WaitFinished {
        reply: oneshot::Sender<()>,
    },
    /// Events sequenced by the external log, in its order (one batch of a read).
    Deliver {
        events: Vec<SequencedEvent>,
    },
    /// The external log started a new epoch with no event yet.
    StartEpoch {
        epoch: Epoch,
    },
}

/// Starts a hub with a fresh random epoch (from the OS RNG) and its local sequencer, and
/// spawns its task on `runtime`; returns the handle to it.
///
/// This is what the adapters' `start` calls with their runtime.
pub fn start_on<R: Runtime>(runtime: R, config: HubConfig) -> HubHandle {
    start_with_epoch_on(runtime, config, random_epoch())
}

/// As [`start_on`], with the epoch chosen by the caller (it must be fresh for every start:
/// clients that resume with another epoch's anchor are told `unknown_epoch`).
pub fn start_with_epoch_on<R: Runtime>(runtime: R, config: HubConfig, epoch: Epoch) -> HubHandle {
    let (now, wall) = (runtime.now(), OffsetDateTime::now_utc());
    let sequencer = Sequencer::new(&config, epoch, now, wall);
    spawn(runtime, config, epoch, Source::Local(sequencer))
}

/// A request of the hub for events of the external log ([`Output::Fetch`]): read the log's
/// events with `after < seq < before` and answer with [`HubHandle::fetched`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchRequest {
    /// The connection that resumes.
    pub conn: ConnId,
    /// Its anchor.
    pub after: EventId,
    /// The end of the range (exclusive).
    pub before: Seq,
}

/// Starts a hub whose events come from an external ordered log (a cluster's stream) instead
/// of a local sequencer, and spawns its task on `runtime`. Feed it with
/// [`HubHandle::deliver`] and [`HubHandle::start_epoch`]; it asks for older events on
/// `fetches` ([`FetchRequest`]), to be answered with [`HubHandle::fetched`]. Until
/// [`HubHandle::set_available`] it refuses handshakes with 503. [`HubHandle::publish`] fails
/// with [`PublishError::External`]: publish to the log.
pub fn start_external_on<R: Runtime>(
    runtime: R,
    config: HubConfig,
    epoch: Epoch,
    fetches: mpsc::UnboundedSender<FetchRequest>,
) -> HubHandle {
    spawn(runtime, config, epoch, Source::External(fetches))
}

/// Where the hub task's events come from.
enum Source {
    /// The embedded mode's order: every publish is sequenced here, then delivered.
    Local(Sequencer),
    /// An external log delivers sequenced events and answers fetches.
    External(mpsc::UnboundedSender<FetchRequest>),
}

fn spawn<R: Runtime>(runtime: R, config: HubConfig, epoch: Epoch, source: Source) -> HubHandle {
    let (now, wall) = (runtime.now(), OffsetDateTime::now_utc());
    let mut hub = Hub::new(config.clone(), epoch, now, wall);
    if matches!(source, Source::External(_)) {
        hub.enable_backfill();
    }
    let shared = Arc::new(Shared::new(config, hub.head(), hub.max_queued_outputs()));
    if matches!(source, Source::External(_)) {
        shared.admission().set_available(false);
    }
    let (commands, inbox) = mpsc::channel(COMMAND_QUEUE);
    let task = HubTask {
        runtime: runtime.clone(),
        hub,
        source,
        conns: HashMap::new(),
        finished: Vec::new(),
        shared: Arc::clone(&shared),
        wire: Encoder::default(),
    };
    let watched = Arc::clone(&shared);
    runtime.spawn(async move {
        // A panic here is a bug: say so loudly, and let the handles report the hub gone
        // rather than answer with zeros.
        if let Err(panic) = std::panic::AssertUnwindSafe(task.run(inbox))
            .catch_unwind()
            .await
        {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            tracing::error!(panic = %message, "the hub task panicked; the hub is gone");
            watched.mark_dead();
        }
    });
    HubHandle::new(commands, shared)
}

/// 32 random bits from the OS. Should the OS RNG fail (it practically cannot on the systems
/// we run on), the clock and the process id still make a repeated epoch very unlikely.
fn random_epoch() -> Epoch {
    Epoch(getrandom::u32().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "OS RNG unavailable; deriving the epoch from the clock");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    }))
}

struct HubTask<R: Runtime> {
    runtime: R,
    hub: Hub,
    source: Source,
    /// The adapter side of each connection the hub knows: its writer queue and how to stop
    /// its tasks.
    conns: HashMap<ConnId, ConnEntry>,
    /// Who waits for the shutdown to complete.
    finished: Vec<oneshot::Sender<()>>,
    shared: Arc<Shared>,
    /// Gives each frame its wire header, once for all its recipients.
    wire: Encoder,
}

/// Why the task woke up.
enum Wake {
    Command(Command),
    /// Connections wrote frames: collect how many from their queues.
    Flushed,
    /// Every sender is gone: no handle and no connection task is left.
    Closed,
    Timer,
}

impl<R: Runtime> HubTask<R> {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut timer: Option<(Instant, Pin<Box<R::Sleep>>)> = None;
        let flushes = Arc::clone(&self.shared.flushes);
        let mut wrote = Vec::new();
        loop {
            let wake = poll_fn(|cx| {
                flushes.register(cx);
                if flushes.take(&mut wrote) {
                    return Poll::Ready(Wake::Flushed);
                }
                if let Poll::Ready(command) = inbox.poll_next_unpin(cx) {
                    return Poll::Ready(command.map_or(Wake::Closed, Wake::Command));
                }
                match &mut timer {
                    Some((_, sleep)) => sleep.as_mut().poll(cx).map(|()| Wake::Timer),
                    None => Poll::Pending,
                }
            })
            .await;
            let now = self.runtime.now(); // the one clock read of this wake-up
            let mut handled = 0;
            match wake {
                Wake::Closed => break,
                Wake::Timer => {
                    // Fired: never poll it again. Heartbeat ticks wake the task at least once
                    // an interval: a fresh wall-clock reading keeps timestamps true across a
                    // suspend or a step.
                    timer = None;
                    let wall = OffsetDateTime::now_utc();
                    self.hub.set_wall_clock(now, wall);
                    if let Source::Local(sequencer) = &mut self.source {
                        sequencer.set_wall_clock(now, wall);
                    }
                }
                Wake::Flushed => self.flushed(now, &wrote),
                Wake::Command(command) => {
                    self.handle(now, command);
                    handled = 1;
                    while handled < MAX_COMMANDS_PER_WAKE {
                        let Ok(command) = inbox.try_recv() else { break };
                        // Writes first, as they came: they make room in the queues.
                        if flushes.take(&mut wrote) {
                            self.flushed(now, &wrote);
                        }
                        self.handle(now, command);
                        handled += 1;
                    }
                }
            }
            // Due work runs whether or not the timer was what woke us.
            if self
                .hub
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now)
            {
                self.hub.handle_timeout(now);
                self.drain();
            }
            if self.hub.is_finished() {
                for waiter in self.finished.drain(..) {
                    let _ = waiter.send(());
                }
            }
            let deadline = self.hub.poll_timeout();
            if timer.as_ref().map(|(at, _)| *at) != deadline {
                timer = deadline.map(|at| (at, Box::pin(self.runtime.sleep_until(at))));
            }
            if handled == MAX_COMMANDS_PER_WAKE {
                yield_now().await;
            }
        }
    }

    fn handle(&mut self, now: Instant, command: Command) {
        match command {
            Command::Register {
                params,
                entry,
                reply,
            } => {
                let conn = self.hub.accept(now, params);
                tracing::debug!(%conn, "connection registered");
                self.conns.insert(conn, entry);
                if reply.send(conn).is_err() {
                    // The connection's task is gone before it learnt its id: nothing will
                    // ever report for it, so report its end now.
                    self.disconnected(now, conn, DisconnectCause::Lost);
                }
            }
            Command::Abandon { mut id } => {
                // Registered earlier on the same channel, so its id has been sent.
                if let Ok(Some(conn)) = id.try_recv() {
                    self.disconnected(now, conn, DisconnectCause::Lost);
                }
            }
            Command::Input(Input::Disconnected { conn, cause }) => {
                self.disconnected(now, conn, cause)
            }
            Command::Input(input) => self.hub.handle_input(now, input),
            Command::Publish { event, key, reply } => {
                let _ = reply.send(self.publish(now, event, key));
            }
            Command::Metrics { reply } => {
                let mut metrics = self.hub.metrics(now);
                self.shared.admission().record(&mut metrics);
                let _ = reply.send(metrics);
            }
            Command::Shutdown { reply } => {
                self.hub.shutdown(now);
                self.finished.push(reply);
            }
            Command::WaitFinished { reply } => self.finished.push(reply),
            Command::Deliver { events } => {
                for event in events {
                    let _ = self.hub.deliver(now, event);
                    self.drain();
                }
                self.shared.set_head(self.hub.head());
            }
            Command::StartEpoch { epoch } => {
                self.hub.start_epoch(now, epoch);
                self.shared.set_head(self.hub.head());
            }
        }
        self.drain();
    }

    /// Collects what these connections wrote from their queues, in one go.
    fn flushed(&mut self, now: Instant, wrote: &[ConnId]) {
        for &conn in wrote {
            let flushed = self.conns.get(&conn).map(|e| e.queue.take_flushed());
            if let Some((frames @ 1.., bytes)) = flushed {
                let input = Input::Flushed {
                    conn,
                    frames,
                    bytes,
                };
                self.hub.handle_input(now, input);
                self.drain();
            }
        }
    }

    fn disconnected(&mut self, now: Instant, conn: ConnId, cause: DisconnectCause) {
        tracing::debug!(%conn, ?cause, "connection ended");
        self.hub
            .handle_input(now, Input::Disconnected { conn, cause });
        self.drain(); // nothing for `conn`, but keep "drain after every call"
        self.conns.remove(&conn);
    }

    /// Sequences an event (at most once per key) and delivers it.
    fn publish(
        &mut self,
        now: Instant,
        event: Event,
        key: Option<IdempotencyKey>,
    ) -> Result<EventId, PublishError> {
        if self.hub.is_shutting_down() {
            return Err(PublishError::ShuttingDown);
        }
        let Source::Local(sequencer) = &mut self.source else {
            return Err(PublishError::External);
        };
        let event = match key {
            None => sequencer.sequence(now, event),
            Some(key) => match sequencer.sequence_once(now, event, key) {
                Sequenced::New(event) => event,
                Sequenced::Repeat(id) => return Ok(id),
            },
        };
        let id = event.id();
        let _ = self.hub.deliver(now, event);
        // Before the publisher hears back: its next response's `X-Event-Head` names it.
        self.shared.set_head(self.hub.head());
        Ok(id)
    }

    /// Carries out every pending output, in order, without waiting on any socket.
    fn drain(&mut self) {
        while let Some(output) = self.hub.poll_output() {
            let (conn, command) = match output {
                Output::Send { conn, frame } => (conn, WriterCmd::Frame(self.wire.text(frame))),
                Output::Ping { conn } => (conn, WriterCmd::Frame(WireFrame::ping())),
                Output::Close { conn, code, reason } => {
                    tracing::debug!(%conn, %code, reason, "closing connection");
                    (conn, WriterCmd::Close(code, reason))
                }
                Output::Discard { conn } => {
                    if let Some(entry) = self.conns.get(&conn) {
                        entry.queue.discard();
                    }
                    continue;
                }
                Output::Abort { conn } => {
                    tracing::debug!(%conn, "aborting connection: its close did not finish in time");
                    if let Some(entry) = self.conns.remove(&conn) {
                        entry.abort();
                    }
                    continue;
                }
                Output::Fetch {
                    conn,
                    after,
                    before,
                } => {
                    if let Source::External(fetches) = &self.source {
                        // Unbounded, yet bounded: at most one fetch per connection is out.
                        let _ = fetches.unbounded_send(FetchRequest {
                            conn,
                            after,
                            before,
                        });
                    }
                    continue;
                }
                other => {
                    debug_assert!(false, "an output this adapter does not know: {other:?}");
                    continue;
                }
            };
            if let Some(entry) = self.conns.get_mut(&conn) {
                // Refused only once the connection's task has ended: its end is about to be
                // reported. The core bounds what is queued (`max_queued_outputs`).
                entry.queue.push(command);
            }
        }
    }
}

/// Returns `Pending` once, to let the runtime run other tasks.
async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}
