//! `GET /health/live` and `GET /health/ready`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::app::AppState;

/// `GET /health/live`: the process answers.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /health/ready`: 200 with the hub's numbers, or 503 once shutdown has started or when
/// the hub task is gone (`"status": "hub_gone"`), or, in cluster mode, while Redis is out of
/// reach (`"status": "redis_unavailable"`; connected clients keep their heartbeats).
///
/// Besides the contract's `connections` and `replay_buffered`, it tells browsers the
/// `heartbeat_interval_ms` (for their liveness watchdog) and the hub's `epoch` (which changes at
/// every start, so a client can tell a restart).
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let metrics = state.hub().metrics().await;
    let redis_down = state.cluster().is_some_and(|c| !c.status().redis_up);
    let (status, text) = if !state.hub().is_alive() {
        (StatusCode::SERVICE_UNAVAILABLE, "hub_gone")
    } else if redis_down {
        (StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable")
    } else if state.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else {
        (StatusCode::OK, "ok")
    };
    let heartbeat_ms =
        u64::try_from(state.hub().config().heartbeat_interval().as_millis()).unwrap_or(u64::MAX);
    let body = json!({
        "status": text,
        "connections": metrics.connections,
        "replay_buffered": metrics.replay_buffered,
        "heartbeat_interval_ms": heartbeat_ms,
        "epoch": state.hub().epoch().to_string(),
    });
    (status, Json(body))
}
