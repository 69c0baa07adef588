//! Counters the hub keeps for `/metrics`.

use std::collections::BTreeMap;

use crate::replay::ResyncReason;

/// A snapshot of the hub's counters and gauges ([`crate::Hub::metrics`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Connections registered now (open or closing).
    pub connections: usize,
    /// Connections ever registered.
    pub connections_total: u64,
    /// Handshakes refused before upgrading, by HTTP status.
    pub handshakes_refused: BTreeMap<u16, u64>,
    /// Events delivered (heartbeats not included).
    pub events_published: u64,
    /// Frames the adapters reported written (events, control frames and pings).
    pub frames_sent: u64,
    /// Connections closed, by close code: the server's code when it closed, the client's
    /// (1005 without one) when the client did, 1006 when the connection was lost.
    pub closes: BTreeMap<u16, u64>,
    /// Connections that started with a replay from the buffer.
    pub replays: u64,
    /// Resuming connections whose replay was asked of the log ([`crate::Output::Fetch`]).
    pub fetches: u64,
    /// `resync_required` frames sent, by reason.
    pub resyncs: BTreeMap<ResyncReason, u64>,
    /// Events in the replay buffer that are still within the TTL.
    pub replay_buffered: usize,
    /// Events held by the replay buffer (some may be past their TTL until the next prune).
    pub replay_held: usize,
    /// Bytes held by the replay buffer.
    pub replay_bytes: usize,
    /// Bytes queued to every connection together and not yet written.
    pub queued_bytes: usize,
    /// Sequenced events ignored because they were not after the head (a log's repeats).
    pub stale_events: u64,
    /// Heartbeat ticks so far (each sends one heartbeat to every open connection).
    pub heartbeat_ticks: u64,
    /// Inputs for connections the hub no longer knows (normal: adapter tasks race).
    pub stale_inputs: u64,
}

impl Metrics {
    pub(crate) fn count_close(&mut self, code: u16) {
        *self.closes.entry(code).or_default() += 1;
    }
}
