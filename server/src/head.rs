//! `X-Event-Head` on every response: state, then stream, without a gap (PROTOCOL.md §3).
//!
//! The header names the newest event the hub had delivered when the request came in. Every
//! handler changes state before it publishes the event that announces it, so whatever state
//! a response shows includes the effects of every event up to that head; a client that
//! renders it and then connects to `/ws` with `last_event_id` set to the header gets every
//! later event (some of whose effects it may already show: a repeat, never a gap).

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;

/// The header's name.
pub const X_EVENT_HEAD: &str = "x-event-head";

/// Middleware: reads the head before the handler runs and sets it on the response.
pub(crate) async fn event_head(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let head = state.hub().head();
    let mut response = next.run(request).await;
    // `<8 hex>-<digits>` is always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&head.to_string()) {
        response.headers_mut().insert(X_EVENT_HEAD, value);
    }
    response
}
