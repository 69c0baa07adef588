//! Where this server's events go: the embedded hub's sequencer, or, in cluster mode, the
//! shared stream (whose tail brings them back to this node's hub with everyone else's).

use ferret_ws_core::{Event, EventId, IdempotencyKey};

use crate::cluster::{Cluster, LogError};
use crate::hub::{HubHandle, PublishError};

/// Publishes for the HTTP handlers and background jobs. Cloning is cheap.
#[derive(Clone, Debug)]
pub(crate) enum Publisher {
    /// The embedded hub sequences and delivers.
    Hub(HubHandle),
    /// The cluster's stream sequences; every node's tail delivers.
    Cluster(Cluster),
}

/// Why a publish failed, for [`crate::api::publish_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishFailure {
    /// The embedded hub refused it.
    Hub(PublishError),
    /// The stream did not take it (or did not say).
    Log(LogError),
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishFailure::Hub(e) => e.fmt(f),
            PublishFailure::Log(e) => e.fmt(f),
        }
    }
}

impl Publisher {
    /// Publishes `event` (at most once per `key` within the replay TTL) and resolves once it
    /// is sequenced; never waits on WebSocket clients.
    pub(crate) async fn publish(
        &self,
        event: Event,
        key: Option<IdempotencyKey>,
    ) -> Result<EventId, PublishFailure> {
        match (self, key) {
            (Publisher::Hub(hub), None) => hub.publish(event).await,
            (Publisher::Hub(hub), Some(key)) => hub.publish_once(event, key).await,
            (Publisher::Cluster(cluster), key) => {
                return cluster
                    .publish(event, key)
                    .await
                    .map_err(PublishFailure::Log)
            }
        }
        .map_err(PublishFailure::Hub)
    }
}
