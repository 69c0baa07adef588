//! `POST /api/v1/events`: publish any event, for processes other than this server.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use ferret_ws_core::{Event, EventType, IdempotencyKey};
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::body::{kind, JsonObject};
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// The header that makes a publish idempotent (PROTOCOL.md §3).
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `{"type": str, "payload": object}` → 202 `{"event_id"}` once the event is sequenced; the
/// request's correlation id goes into the event. A missing `payload` means `{}`. With an
/// `Idempotency-Key` (1 to 128 visible ASCII characters, else 400), the event is published at
/// most once per key within the replay TTL, and a repeat answers 202 with the first id.
pub(crate) async fn publish(
    State(state): State<AppState>,
    cid: CorrelationId,
    headers: HeaderMap,
    JsonObject(mut body): JsonObject,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(IdempotencyKey::new)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_idempotency_key",
                        "Idempotency-Key must be 1 to 128 visible ASCII characters",
                    )
                })?,
        ),
    };
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
        .publisher()
        .publish(event, key)
        .await
        .map_err(super::publish_failed)?;
    tracing::debug!(event_id = %id, event_type = %name, correlation_id = %cid, "published");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"event_id": id.to_string()})),
    ))
}
