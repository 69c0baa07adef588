//! The application's side of a running hub: publish, read counters, admit handshakes, shut
//! down.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ferret_ws_core::{
    decide, ConnId, ConnParams, Decision, Epoch, Event, EventId, HandshakeRequest, HubConfig,
    Input, Metrics, PublishError, Refusal, Rejection,
};
use futures::channel::{mpsc, oneshot};
use futures::SinkExt;

use crate::conn::ConnEntry;
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

/// What the handle and the connection tasks share without going through the hub task.
pub(crate) struct Shared {
    config: HubConfig,
    epoch: Epoch,
    /// The writer queue capacity: [`ferret_ws_core::Hub::max_queued_outputs`].
    queue_capacity: usize,
    /// Connection slots taken by admitted handshakes that are not yet gone.
    slots: AtomicUsize,
    /// HTTP refusals not yet reported to the hub (for its metrics), by status. `admit` is
    /// synchronous and must not wait on the hub's channel, so it counts here and the hub task
    /// collects the counts at its next wake-up.
    refused: Mutex<BTreeMap<u16, u64>>,
    refused_pending: AtomicBool,
}

impl Shared {
    pub(crate) fn new(config: HubConfig, epoch: Epoch, queue_capacity: usize) -> Shared {
        Shared {
            config,
            epoch,
            queue_capacity,
            slots: AtomicUsize::new(0),
            refused: Mutex::new(BTreeMap::new()),
            refused_pending: AtomicBool::new(false),
        }
    }

    /// Takes the refusals counted since the last call.
    pub(crate) fn take_refused(&self) -> BTreeMap<u16, u64> {
        if !self.refused_pending.swap(false, Ordering::AcqRel) {
            return BTreeMap::new();
        }
        std::mem::take(&mut *self.refused.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn count_refused(&self, status: u16) {
        *self
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(status)
            .or_default() += 1;
        self.refused_pending.store(true, Ordering::Release);
    }

    fn try_reserve(self: &Arc<Self>) -> Option<Slot> {
        let max = self.config.max_connections();
        self.slots
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }
}

/// The outcome of [`HubHandle::admit`]: the core's handshake decision, with a connection
/// slot reserved for an accepted one.
#[derive(Debug)]
pub enum Admission {
    /// Upgrade, then serve the connection with this ticket.
    Accept(Ticket),
    /// Do not upgrade: answer with this HTTP status (403 or 503), and for 503 a
    /// `Retry-After` header.
    Refuse(Refusal),
    /// Upgrade, then send this close frame (4400 or 4401) and end the connection.
    Reject(Rejection),
}

/// An accepted handshake: the connection's parameters and its reserved slot, which is given
/// back when the connection (or the ticket, if it is never used) is dropped.
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

/// One of the `max_connections` slots; released on drop.
pub(crate) struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.slots.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HubHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, shared: Arc<Shared>) -> HubHandle {
        HubHandle { commands, shared }
    }

    /// Publishes an event to every connection whose filter it passes.
    ///
    /// Returns once the hub has sequenced it (its id is final and it is in the replay
    /// buffer); it never waits on a WebSocket client. Fails with
    /// [`PublishError::ShuttingDown`] once shutdown has begun.
    pub async fn publish(&self, event: Event) -> Result<EventId, PublishError> {
        self.ask(|reply| Command::Publish { event, reply })
            .await
            .unwrap_or(Err(PublishError::ShuttingDown))
    }

    /// The hub's counters and gauges, as of now.
    pub async fn metrics(&self) -> Metrics {
        self.ask(|reply| Command::Metrics { reply })
            .await
            .unwrap_or_default()
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.shared.config
    }

    /// This run's epoch (random at every start).
    pub fn epoch(&self) -> Epoch {
        self.shared.epoch
    }

    /// Decides a `/ws` handshake ([`ferret_ws_core::decide`]), reserving a connection slot
    /// (an atomic counter against `max_connections`) for an accepted one.
    ///
    /// Refusals are counted for the hub's metrics. Call it from the upgrade handler, with
    /// `local_port` set to the port the server listens on; then answer
    /// [`Admission::Refuse`] with its HTTP status yourself, and hand the upgraded stream and
    /// the admission to the adapter's `serve_upgraded`.
    pub fn admit(&self, request: &HandshakeRequest<'_>) -> Admission {
        let slot = self.shared.try_reserve();
        match decide(&self.shared.config, request, slot.is_some()) {
            Decision::Accept(params) => match slot {
                Some(slot) => Admission::Accept(Ticket { params, slot }),
                // `decide` accepts only when told there is room.
                None => unreachable!("decide accepted without a free slot"),
            },
            Decision::Refuse(refusal) => {
                self.shared.count_refused(refusal.status);
                Admission::Refuse(refusal)
            }
            Decision::Reject(rejection) => Admission::Reject(rejection),
        }
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

    /// Registers an upgraded connection; `None` if the hub task is gone.
    pub(crate) async fn register(&self, params: ConnParams, entry: ConnEntry) -> Option<ConnId> {
        self.ask(|reply| Command::Register {
            params,
            entry,
            reply,
        })
        .await
    }

    /// Reports a fact that has no connection yet (a rejected handshake).
    pub(crate) async fn report(&self, input: Input) {
        let _ = self.commands.clone().send(Command::Input(input)).await;
    }

    /// A sender of its own for a connection task, so that its inputs are bounded by the
    /// channel (each `futures` sender may have one message beyond the buffer in flight).
    pub(crate) fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    pub(crate) fn queue_capacity(&self) -> usize {
        self.shared.queue_capacity
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
            .field("epoch", &self.shared.epoch)
            .field("slots", &self.shared.slots.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
