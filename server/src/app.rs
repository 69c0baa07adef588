//! The application: shared state, the builder, and the router with its middleware.
//!
//! The router reaches the hub through axum state. A test injects a hub it started itself
//! ([`AppBuilder::hub`]); otherwise [`AppBuilder::build`] starts one and the app owns it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use ferret_ws_core::HubConfig;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{events, health, projects, scan};
use crate::body::MAX_BODY;
use crate::hub::{self, HubHandle};
use crate::{auth, correlation, errors, head, metrics, page, ws};

/// The server application: build it with [`App::builder`], then serve [`App::router`].
///
/// Cloning is cheap; clones share the hub and the state.
#[derive(Clone)]
pub struct App {
    state: AppState,
}

impl App {
    /// A builder with no hub, the default hub configuration and scanning turned off.
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    /// The complete router: every route of PROTOCOL.md §3, the JSON 404 and 405, and the
    /// middleware (correlation ids, token check, request metrics, body limit, panic guard).
    ///
    /// Serve it with `into_make_service_with_connect_info::<ConnInfo>()` (as [`crate::serve`]
    /// does) so `/ws` knows the port it was reached on for the default Origin policy; without
    /// it, the port given to [`AppBuilder::local_port`] is used.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let open = Router::new()
            .route("/health/live", get(health::live))
            .route("/health/ready", get(health::ready))
            .route("/", get(page::index))
            .route("/ferret-ws.js", get(page::script))
            .route("/ws", get(ws::upgrade));
        let guarded = Router::new()
            .route(
                "/api/v1/projects",
                post(projects::create).get(projects::list),
            )
            .route("/api/v1/videos/scan", post(scan::start))
            .route("/api/v1/events", post(events::publish))
            .route("/metrics", get(metrics::render))
            .route_layer(from_fn_with_state(state.clone(), auth::require_token));
        open.merge(guarded)
            .fallback(errors::not_found)
            .method_not_allowed_fallback(errors::method_not_allowed)
            // Layers run outside in, from the last added: count, head, correlate, limit,
            // catch.
            .layer(CatchPanicLayer::custom(errors::panic_response))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(from_fn(correlation::correlate))
            .layer(from_fn_with_state(state.clone(), head::event_head))
            .layer(from_fn_with_state(state.clone(), metrics::count_requests))
            .with_state(state)
    }

    /// The hub this app publishes to.
    pub fn hub(&self) -> &HubHandle {
        &self.state.inner.hub
    }

    /// The state the handlers share.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Starts the contract's shutdown sequence: `/health/ready` answers 503 from now on, every
    /// client gets `health_status` `{"status":"shutting_down"}` and close 1001. Resolves when
    /// every client is gone or the hub's `shutdown_grace` has passed.
    pub async fn shutdown(&self) {
        self.state
            .inner
            .shutting_down
            .store(true, Ordering::Relaxed);
        self.hub().shutdown().await;
    }
}

/// Builds an [`App`].
#[derive(Default)]
pub struct AppBuilder {
    hub: Option<HubHandle>,
    hub_config: Option<HubConfig>,
    scan_roots: Vec<PathBuf>,
    scan_anywhere: bool,
    local_port: Option<u16>,
}

impl AppBuilder {
    /// Uses this hub (the caller started it, e.g. a test) instead of starting one.
    pub fn hub(mut self, hub: HubHandle) -> AppBuilder {
        self.hub = Some(hub);
        self
    }

    /// The configuration of the hub [`AppBuilder::build`] starts when none is injected
    /// (default: the contract's defaults).
    pub fn hub_config(mut self, config: HubConfig) -> AppBuilder {
        self.hub_config = Some(config);
        self
    }

    /// Directories `POST /api/v1/videos/scan` may scan, with everything below them. Give them
    /// canonical (symlinks resolved); requests are resolved before they are compared.
    pub fn scan_roots(mut self, roots: impl IntoIterator<Item = PathBuf>) -> AppBuilder {
        self.scan_roots.extend(roots);
        self
    }

    /// With no scan roots: whether any directory may be scanned (what the binary does on a
    /// loopback bind). Off by default, so an embedder opts in.
    pub fn scan_any_directory(mut self, allowed: bool) -> AppBuilder {
        self.scan_anywhere = allowed;
        self
    }

    /// The port the server listens on, for `/ws`'s default Origin policy when the router is
    /// not served with [`crate::ConnInfo`].
    pub fn local_port(mut self, port: u16) -> AppBuilder {
        self.local_port = Some(port);
        self
    }

    /// Builds the app, starting a hub if none was injected. Starting one needs a tokio runtime
    /// (call this inside it).
    pub fn build(self) -> App {
        let hub = match self.hub {
            Some(hub) => hub,
            None => hub::start(self.hub_config.unwrap_or_default()),
        };
        let scan = if !self.scan_roots.is_empty() {
            scan::ScanPolicy::Roots(self.scan_roots)
        } else if self.scan_anywhere {
            scan::ScanPolicy::Anywhere
        } else {
            scan::ScanPolicy::Off
        };
        App {
            state: AppState {
                inner: Arc::new(Inner {
                    hub,
                    scan,
                    scans: Arc::new(tokio::sync::Semaphore::new(scan::MAX_CONCURRENT_SCANS)),
                    projects: projects::Store::default(),
                    http_metrics: metrics::HttpMetrics::new(),
                    local_port: self.local_port,
                    shutting_down: AtomicBool::new(false),
                }),
            },
        }
    }
}

/// What the handlers share, reached through axum state. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    hub: HubHandle,
    /// Which directories the scan endpoint may read.
    scan: scan::ScanPolicy,
    /// Bounds the scans walking at once, so a burst of requests cannot take every blocking
    /// thread.
    scans: Arc<tokio::sync::Semaphore>,
    projects: projects::Store,
    http_metrics: metrics::HttpMetrics,
    local_port: Option<u16>,
    /// Set when shutdown starts, so readiness turns 503 before the listener closes.
    shutting_down: AtomicBool,
}

impl AppState {
    /// The hub.
    pub fn hub(&self) -> &HubHandle {
        &self.inner.hub
    }

    /// Whether shutdown has started.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn scan_policy(&self) -> &scan::ScanPolicy {
        &self.inner.scan
    }

    pub(crate) fn scan_permits(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.inner.scans
    }

    pub(crate) fn projects(&self) -> &projects::Store {
        &self.inner.projects
    }

    pub(crate) fn http_metrics(&self) -> &metrics::HttpMetrics {
        &self.inner.http_metrics
    }

    pub(crate) fn local_port(&self) -> Option<u16> {
        self.inner.local_port
    }
}
