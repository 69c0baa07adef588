//! The ferret-ws server: the event hub of `ferret-ws-tokio` behind axum, with the HTTP API,
//! Prometheus metrics and the live event page of CONTRACT.md §3–§5.
//!
//! The binary `ferret-ws` is [`Settings`] + [`App`] + [`serve`]. To embed the hub in your own
//! axum app, start a hub, build an [`App`] around it and merge its router with yours; publish
//! from your handlers through the same hub:
//!
//! ```no_run
//! use axum::{routing::post, Router};
//! use ferret_ws_core::{Event, EventType, HubConfig};
//! use ferret_ws_server::{App, CorrelationId};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = ferret_ws_server::start_hub(HubConfig::builder().build()?);
//! let ferret = App::builder().hub(hub.clone()).build();
//! let mine = Router::new().route(
//!     "/render",
//!     post(move |cid: CorrelationId| {
//!         let hub = hub.clone();
//!         async move {
//!             let event = Event::new(EventType::new("render.queued").unwrap())
//!                 .with_correlation_id(cid.as_str());
//!             let _ = hub.publish(event).await;
//!             "queued"
//!         }
//!     }),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8765").await?;
//! let app = App::builder().hub(ferret.hub().clone()).build();
//! # let _ = (mine, app);
//! ferret_ws_server::serve(listener, ferret, ferret_ws_server::shutdown_signal()?).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod api;
mod app;
mod auth;
mod body;
mod config;
mod correlation;
mod errors;
mod hub;
mod metrics;
mod page;
mod serve;
mod ws;

pub use app::{App, AppBuilder, AppState};
pub use body::{JsonObject, MAX_BODY};
pub use config::{Settings, StartupError, SCAN_ROOT_ENV};
pub use correlation::{CorrelationId, InvalidCorrelationId, MAX_CORRELATION_ID_LEN, X_CORRELATION_ID};
pub use errors::ApiError;
pub use hub::{start as start_hub, Admission, HubHandle};
pub use metrics::UNMATCHED_ROUTE;
pub use serve::{serve, shutdown_signal};
pub use ws::ConnInfo;
pub use api::scan::VIDEO_EXTENSIONS;
