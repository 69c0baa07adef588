//! The HTTP API of PROTOCOL.md §3, one module per resource.

pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod projects;
pub(crate) mod scan;

use std::time::Duration;

use axum::http::StatusCode;

use crate::cluster::LogError;
use crate::errors::ApiError;
use crate::hub::PublishError;
use crate::publish::PublishFailure;

/// How long a client should wait before retrying a publish that Redis could not take.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The answer when publishing fails: 503 while shutting down; 503 naming the hub when its
/// task is gone (a bug, logged with its panic message); in cluster mode, 503 with
/// `Retry-After` when the event is certainly not in the stream and 504 `outcome_unknown` when
/// Redis did not say (PROTOCOL.md §7).
pub(crate) fn publish_failed(error: PublishFailure) -> ApiError {
    match error {
        PublishFailure::Hub(PublishError::ShuttingDown) => ApiError::shutting_down(),
        PublishFailure::Hub(PublishError::HubGone) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hub_gone",
            "the event hub has stopped; the server needs a restart",
        ),
        PublishFailure::Log(LogError::Unavailable(why)) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "redis_unavailable",
            format!("the event was not published: {why}"),
        )
        .with_retry_after(REDIS_RETRY_AFTER),
        PublishFailure::Log(LogError::OutcomeUnknown(why)) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "outcome_unknown",
            format!(
                "the event may or may not have been published ({why}); retry with the same \
                 Idempotency-Key to publish it at most once"
            ),
        ),
        other => ApiError::internal(format!("publish failed: {other}")),
    }
}
