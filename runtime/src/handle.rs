//! The application's side of a running hub: publish, read counters, admit and register
//! handshakes, shut down.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ferret_ws_core::{
    Admit, ConnId, ConnParams, Epoch, Event, EventId, HandshakeRequest, HubConfig, IdempotencyKey,
    Input, Metrics, Refusal, Rejection, SequencedEvent, Timestamp,
};
use futures::channel::{mpsc, oneshot};
use futures::future::{AbortHandle, AbortRegistration};
use futures::SinkExt;

use crate::conn::{ConnEntry, Flushes, Outbox};
use crate::hub_task::Command;

/// A cloneable, `Send + Sync` handle to a running hub task.
///
/// Every method talks to the hub task over one bounded channel; none of them waits on a
/// WebSocket client. Dropping every handle does not stop the hub: connections keep being
/// served until they end. Call [`HubHandle::shutdown`] to stop.
#[derive(Clone)]
pub struct HubHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// Why an event was not published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishError {
    /// The hub is shutting down; nothing new is sent. Answer 503.
    ShuttingDown,
    /// The hub task is gone: it panicked (a bug, logged with its message). Answer 503; the
    /// process needs a restart.
    HubGone,
    /// The hub takes its events from an external log ([`crate::start_external_on`]): publish
    /// to the log instead.
    External,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PublishError::ShuttingDown => "the hub is shutting down",
            PublishError::HubGone => "the hub task has stopped",
            PublishError::External => "this hub's events come from an external log",
        })
    }
}

impl std::error::Error for PublishError {}

/// What the handle, the connection tasks and the hub task share without a round trip.
pub(crate) struct Shared {
    config: HubConfig,
    /// The most outputs a connection can have unflushed:
    /// [`ferret_ws_core::Hub::max_queued_outputs`].
    queue_capacity: usize,
    /// The handshake decision and the connection slots (the core's; held here because
    /// handshakes are decided in the connections' own tasks).
    admission: Mutex<ferret_ws_core::Admission>,
    /// The newest event delivered, as the hub task last published it.
    head: Mutex<EventId>,
    /// Set when the hub task ended without a shutdown (it panicked).
    dead: AtomicBool,
    /// Which connections wrote frames the hub task has yet to count.
    pub(crate) flushes: Arc<Flushes>,
}

impl Shared {
    pub(crate) fn new(config: HubConfig, head: EventId, queue_capacity: usize) -> Shared {
        Shared {
            admission: Mutex::new(ferret_ws_core::Admission::new(&config)),
            config,
            queue_capacity,
            head: Mutex::new(head),
            dead: AtomicBool::new(false),
            flushes: Arc::default(),
        }
    }

    pub(crate) fn admission(&self) -> MutexGuard<'_, ferret_ws_core::Admission> {
        // The lock is only held for short, non-panicking calls; a poisoned one is still sound.
        self.admission
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_head(&self, head: EventId) {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner) = head;
    }

    pub(crate) fn mark_dead(&self) {
        self.dead.store(true, Ordering::Release);
    }
}

/// The outcome of [`HubHandle::admit`]: the core's handshake decision, with a connection
/// slot held for an upgrade.
#[derive(Debug)]
pub enum Admission {
    /// Upgrade, then serve the connection with this ticket (register it before sending the
    /// 101: [`HubHandle::register`]).
    Accept(Ticket),
    /// Do not upgrade: answer with this HTTP status (403, 429 or 503), and for 429 and 503 a
    /// `Retry-After` header.
    Refuse(Refusal),
    /// Upgrade, then send this close frame (4400 or 4401) and end the connection. The slot is
    /// held until the socket is gone.
    Reject(Rejection, Slot),
}

/// An accepted handshake: the connection's parameters and its slot, which is given back when
/// the connection (or the ticket, if it is never used) is dropped.
pub struct Ticket {
    pub(crate) params: ConnParams,
    pub(crate) slot: Slot,
}

impl Ticket {
    /// The parameters the handshake asked for (filter, anchor, client identity).
    pub fn params(&self) -> &ConnParams {
        &self.params
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// One of the `max_connections` slots; given back to the admission on drop.
pub struct Slot {
    shared: Arc<Shared>,
    slot: Option<ferret_ws_core::Slot>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.shared.admission().release(slot);
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").finish_non_exhaustive()
    }
}

/// A connection registered with the hub, waiting for its upgraded stream
/// ([`HubHandle::register`]). Every event delivered after the registration reaches it.
/// Dropped unused (the upgrade failed), it reports the connection gone.
pub struct Registration {
    /// Taken when the connection is served.
    pub(crate) parts: Option<Registered>,
    commands: mpsc::Sender<Command>,
}

/// What serving a registered connection needs.
pub(crate) struct Registered {
    pub(crate) id: oneshot::Receiver<ConnId>,
    pub(crate) queue: Outbox,
    pub(crate) task: AbortRegistration,
    pub(crate) slot: Slot,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(Registered { id, .. }) = self.parts.take() {
            // Unused: the hub must forget the connection. A fresh sender always has room.
            let _ = self.commands.clone().try_send(Command::Abandon { id });
        }
    }
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration").finish_non_exhaustive()
    }
}

impl HubHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, shared: Arc<Shared>) -> HubHandle {
        HubHandle { commands, shared }
    }

    /// Publishes an event to every connection whose filter it passes.
    ///
    /// Returns once the hub has sequenced it (its id is final and it is in the replay
    /// buffer); it never waits on a WebSocket client.
    pub async fn publish(&self, event: Event) -> Result<EventId, PublishError> {
        self.publish_inner(event, None).await
    }

    /// Publishes an event at most once per `key` within the replay TTL: a repeat returns the
    /// first publish's id and sends nothing.
    pub async fn publish_once(
        &self,
        event: Event,
        key: IdempotencyKey,
    ) -> Result<EventId, PublishError> {
        self.publish_inner(event, Some(key)).await
    }

    async fn publish_inner(
        &self,
        event: Event,
        key: Option<IdempotencyKey>,
    ) -> Result<EventId, PublishError> {
        self.ask(|reply| Command::Publish { event, key, reply })
            .await
            .unwrap_or(Err(PublishError::HubGone))
    }

    /// The hub's counters and gauges, as of now (all zero if the hub task is gone: see
    /// [`HubHandle::is_alive`]).
    pub async fn metrics(&self) -> Metrics {
        self.ask(|reply| Command::Metrics { reply })
            .await
            .unwrap_or_default()
    }

    /// Whether the hub task is running: `false` once it stopped without a shutdown (it
    /// panicked; the panic was logged). Readiness checks report it.
    pub fn is_alive(&self) -> bool {
        !self.shared.dead.load(Ordering::Acquire)
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// The epoch of the events being delivered (random at every start of the embedded hub).
    pub fn epoch(&self) -> Epoch {
        self.head().epoch
    }

    /// The newest event delivered (`<epoch>-0` before the first): the `X-Event-Head` of an
    /// HTTP response. A client that renders state read after this call and then resumes
    /// from this id misses nothing.
    pub fn head(&self) -> EventId {
        *self
            .shared
            .head
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides a `/ws` handshake (the core's [`ferret_ws_core::Admission`]), holding a
    /// connection slot for an upgrade.
    ///
    /// Call it from the upgrade handler, with `local_port` set to the port the server listens
    /// on and `peer` to the client's address; then answer [`Admission::Refuse`] with its HTTP
    /// status yourself. For [`Admission::Accept`], [`register`](HubHandle::register) the
    /// ticket before sending `101 Switching Protocols`, then hand the upgraded stream to the
    /// adapter's `serve_registered`; for [`Admission::Reject`], to `serve_upgraded`.
    pub fn admit(&self, request: &HandshakeRequest<'_>) -> Admission {
        let admitted = self.shared.admission().admit(request);
        let slot = |slot| Slot {
            shared: Arc::clone(&self.shared),
            slot: Some(slot),
        };
        match admitted {
            Admit::Accept(params, held) => Admission::Accept(Ticket {
                params,
                slot: slot(held),
            }),
            Admit::Reject(rejection, held) => Admission::Reject(rejection, slot(held)),
            Admit::Refuse(refusal) => Admission::Refuse(refusal),
        }
    }

    /// Registers an accepted connection with the hub at once, before its stream exists:
    /// every event delivered after this call reaches it (subject to its filter). Call it
    /// before sending `101 Switching Protocols`, so that a client that publishes the instant
    /// it reads the 101 gets the event. Never waits.
    pub fn register(&self, ticket: Ticket) -> Registration {
        let Ticket { params, slot } = ticket;
        let queue = Outbox::new(self.shared.queue_capacity);
        let (abort, task) = AbortHandle::new_pair();
        let entry = ConnEntry::new(queue.clone(), abort);
        let (reply, id) = oneshot::channel();
        // A fresh sender always has room for one message, and the channel keeps the order in
        // which messages were sent: this one is ahead of any publish that follows.
        let _ = self.commands.clone().try_send(Command::Register {
            params,
            entry,
            reply,
        });
        Registration {
            parts: Some(Registered {
                id,
                queue,
                task,
                slot,
            }),
            commands: self.commands.clone(),
        }
    }

    /// Hands the hub events sequenced by the external log, in the log's order (a hub started
    /// with [`crate::start_external_on`]): a batch costs one message to the hub task. The hub
    /// decides what a skip, a repeat or a new epoch means; this only waits for room in the
    /// hub's channel.
    pub async fn deliver(&self, events: Vec<SequencedEvent>) {
        if events.is_empty() {
            return;
        }
        let _ = self
            .commands
            .clone()
            .send(Command::Deliver { events })
            .await;
    }

    /// Tells the hub that the external log started a new epoch that has no event yet.
    pub async fn start_epoch(&self, epoch: Epoch) {
        let _ = self
            .commands
            .clone()
            .send(Command::StartEpoch { epoch })
            .await;
    }

    /// Answers a [`FetchRequest`](crate::FetchRequest): the log's events in its range, oldest
    /// first, with their publication times.
    pub async fn fetched(
        &self,
        conn: ConnId,
        after: EventId,
        events: Vec<(SequencedEvent, Timestamp)>,
    ) {
        let input = Input::Fetched {
            conn,
            after,
            events,
        };
        let _ = self.commands.clone().send(Command::Input(input)).await;
    }

    /// Whether new connections can be served (a cluster node: once it has reached its log).
    pub fn set_available(&self, available: bool) {
        self.shared.admission().set_available(available);
    }

    /// Runs the contract's shutdown: every client gets `health_status`
    /// `{"status":"shutting_down"}` and then close 1001; publishing fails from now on.
    ///
    /// Resolves when every connection is gone, which is at the latest `shutdown_grace` after
    /// the call (the hub aborts whatever is left then). Repeated calls are harmless.
    pub async fn shutdown(&self) {
        self.ask(|reply| Command::Shutdown { reply }).await;
    }

    /// Resolves once a shutdown (started by any handle) has completed: every connection is
    /// gone. Pending until [`HubHandle::shutdown`] is called.
    pub async fn finished(&self) {
        self.ask(|reply| Command::WaitFinished { reply }).await;
    }

    /// Where a connection task tells the hub task it wrote frames.
    pub(crate) fn flushes(&self) -> Arc<Flushes> {
        Arc::clone(&self.shared.flushes)
    }

    /// A sender of its own for a connection task, so that its inputs are bounded by the
    /// channel (each `futures` sender may have one message beyond the buffer in flight).
    pub(crate) fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// Sends a request to the hub task and waits for its answer; `None` if the task is gone.
    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.clone().send(request(reply)).await.ok()?;
        answer.await.ok()
    }
}

impl fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubHandle")
            .field("head", &self.head())
            .field("slots", &self.shared.admission().held())
            .finish_non_exhaustive()
    }
}
