//! The ferret-ws server: the event hub of `ferret-ws-tokio` behind axum, with the HTTP API,
//! Prometheus metrics and the live event page of PROTOCOL.md §3–§5.
//!
//! The binary `ferret-ws` is [`Settings`] + [`App`] + [`serve`].
//!
//! # Embedding
//!
//! To put the hub into your own axum app, start a hub, build an [`App`] around it and merge
//! its router with yours; publish from your handlers through the same [`HubHandle`], with the
//! request's [`CorrelationId`] (add the [`correlate`] middleware to your routes so they read
//! and echo `X-Correlation-ID` like the app's own):
//!
//! ```no_run
//! use axum::{extract::State, middleware::from_fn, routing::post, Router};
//! use ferret_ws_core::{Event, EventType, HubConfig};
//! use ferret_ws_server::{correlate, App, ConnInfo, CorrelationId, HubHandle};
//!
//! async fn render(State(hub): State<HubHandle>, cid: CorrelationId) -> &'static str {
//!     let event = Event::new(EventType::new("render.queued").expect("a valid name"))
//!         .with_correlation_id(cid.as_str());
//!     // Returns once the event is sequenced; never waits on WebSocket clients.
//!     let _ = hub.publish(event).await;
//!     "queued"
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let hub = ferret_ws_server::start_hub(HubConfig::builder().build()?);
//!     let ferret = App::builder().hub(hub.clone()).build();
//!     let router = Router::new()
//!         .route("/render", post(render))
//!         .layer(from_fn(correlate))
//!         .with_state(hub)
//!         .merge(ferret.router()); // /ws, /api/v1/..., /metrics, /health/..., /
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8765").await?;
//!     // ConnInfo tells /ws the port it was reached on (for the default Origin policy).
//!     // The router checks Host itself (AppBuilder::host_policy, loopback names by default);
//!     // unlike `ferret_ws_server::serve`, axum::serve bounds neither the time nor the size
//!     // of request heads, nor the number of connections.
//!     axum::serve(listener, router.into_make_service_with_connect_info::<ConnInfo>())
//!         .with_graceful_shutdown(async move {
//!             let _ = tokio::signal::ctrl_c().await;
//!             ferret.shutdown().await; // health_status + close 1001 to every client
//!         })
//!         .await?;
//!     Ok(())
//! }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod api;
mod app;
mod auth;
mod body;
mod cluster;
mod config;
mod correlation;
mod deadline;
mod errors;
mod head;
mod host;
mod hub;
mod metrics;
mod page;
mod publish;
mod serve;
mod ws;

pub use api::scan::VIDEO_EXTENSIONS;
pub use app::{
    App, AppBuilder, AppState, DEFAULT_MAX_HTTP_CONNECTIONS, DEFAULT_MAX_PROJECTS,
    DEFAULT_MAX_SCAN_JOBS, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SCAN_MAX_ENTRIES, DEFAULT_SCAN_TIMEOUT,
};
pub use body::{JsonObject, MAX_BODY};
pub use cluster::{
    Cluster, ClusterConfig, ClusterError, ClusterStatus, LogError, DEFAULT_MAXLEN, DEFAULT_STREAM,
    PUBLISH_TIMEOUT,
};
pub use config::{Settings, StartupError, DEFAULT_MAX_CONNECTIONS_PER_IP, SCAN_ROOT_ENV};
pub use correlation::{
    correlate, CorrelationId, InvalidCorrelationId, MAX_CORRELATION_ID_LEN, X_CORRELATION_ID,
};
pub use errors::ApiError;
pub use head::X_EVENT_HEAD;
pub use hub::{start as start_hub, Admission, HubHandle, PublishError};
pub use metrics::UNMATCHED_ROUTE;
pub use serve::{serve, shutdown_signal, ACCEPT_ERROR_LOG_INTERVAL, MAX_HEADERS, MAX_REQUEST_HEAD};
pub use ws::ConnInfo;
