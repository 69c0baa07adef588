//! The HTTP API of PROTOCOL.md §3, one module per resource.

pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod projects;
pub(crate) mod scan;

use axum::http::StatusCode;

use crate::errors::ApiError;
use crate::hub::PublishError;

/// The answer when publishing fails: 503 while shutting down, and 503 naming the hub when its
/// task is gone (a bug, logged with its panic message).
pub(crate) fn publish_failed(error: PublishError) -> ApiError {
    match error {
        PublishError::ShuttingDown => ApiError::shutting_down(),
        PublishError::HubGone => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "hub_gone",
            "the event hub has stopped; the server needs a restart",
        ),
        other => ApiError::internal(format!("publish failed: {other}")),
    }
}
