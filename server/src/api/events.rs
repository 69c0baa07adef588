//! `POST /api/v1/events`: publish any event, for processes other than this server.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ferret_ws_core::{Event, EventType};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::body::{kind, JsonObject};
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// `{"type": str, "payload": object}` → 202 `{"event_id"}` once the event is sequenced; the
/// request's correlation id goes into the event. A missing `payload` means `{}`.
pub(crate) async fn publish(
    State(state): State<AppState>,
    cid: CorrelationId,
    JsonObject(mut body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let event_type = match body.get("type") {
        Some(Value::String(name)) => EventType::new(name).map_err(|e| {
            ApiError::unprocessable("invalid_event_type", format!("type {name:?}: {e}"))
        })?,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_body",
                format!("type must be a string, not {}", kind(other)),
            ))
        }
        None => {
            return Err(ApiError::unprocessable(
                "invalid_body",
                "missing field `type`",
            ))
        }
    };
    let payload = match body.remove("payload") {
        None => Map::new(),
        Some(Value::Object(payload)) => payload,
        Some(other) => {
            return Err(ApiError::unprocessable(
                "invalid_payload",
                format!("payload must be an object, not {}", kind(&other)),
            ))
        }
    };
    let event = Event::new(event_type)
        .with_payload(payload)
        .with_correlation_id(cid.as_str());
    let name = event.event_type().to_string();
    let id = state
        .hub()
        .publish(event)
        .await
        .map_err(super::publish_failed)?;
    tracing::debug!(event_id = %id, event_type = %name, correlation_id = %cid, "published");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": id.to_string()})),
    ))
}
