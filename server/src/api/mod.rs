//! The HTTP API of PROTOCOL.md §3, one module per resource.

pub(crate) mod events;
pub(crate) mod health;
pub(crate) mod projects;
pub(crate) mod scan;

use ferret_ws_core::PublishError;

use crate::errors::ApiError;

/// The answer when publishing fails: the hub only refuses new events while shutting down.
pub(crate) fn publish_failed(error: PublishError) -> ApiError {
    match error {
        PublishError::ShuttingDown => ApiError::shutting_down(),
        other => ApiError::internal(format!("publish failed: {other}")),
    }
}
