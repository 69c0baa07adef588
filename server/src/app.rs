//! The application: shared state, the builder, and the router with its middleware.
//!
//! The router reaches the hub through axum state. A test injects a hub it started itself
//! ([`AppBuilder::hub`]); otherwise [`AppBuilder::build`] starts one and the app owns it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use ferret_ws_core::{HostPolicy, HubConfig};
use tokio::sync::Semaphore;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::{events, health, projects, scan};
use crate::body::MAX_BODY;
use crate::cluster::{Cluster, ClusterConfig};
use crate::hub::{self, HubHandle};
use crate::publish::Publisher;
use crate::{auth, correlation, deadline, errors, head, host, metrics, page, ws};

/// The default of [`AppBuilder::request_timeout`] (`--request-timeout`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of [`AppBuilder::max_http_connections`] (`--max-http-connections`).
pub const DEFAULT_MAX_HTTP_CONNECTIONS: usize = 1024;
/// The default of [`AppBuilder::max_projects`] (`--max-projects`).
pub const DEFAULT_MAX_PROJECTS: usize = 10_000;
/// The default of [`AppBuilder::max_scan_jobs`] (`--max-scan-jobs`).
pub const DEFAULT_MAX_SCAN_JOBS: usize = 16;
/// The default of [`AppBuilder::scan_max_entries`] (`--scan-max-entries`).
pub const DEFAULT_SCAN_MAX_ENTRIES: u64 = 1_000_000;
/// The default of [`AppBuilder::scan_timeout`] (`--scan-timeout`).
pub const DEFAULT_SCAN_TIMEOUT: Duration = Duration::from_secs(300);

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
    /// middleware (request metrics, `X-Event-Head`, correlation ids, the `Host` check, the request deadline,
    /// body limit, panic guard, and the token check on the guarded routes).
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
            // Layers run outside in, from the last added: count, note the event head,
            // correlate, check the Host (before anything else looks at the request, /ws
            // included), bound the body in time and size, catch panics.
            .layer(CatchPanicLayer::custom(errors::panic_response))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .layer(from_fn_with_state(
                state.clone(),
                deadline::limit_request_time,
            ))
            .layer(from_fn_with_state(state.clone(), host::check_host))
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
pub struct AppBuilder {
    hub: Option<HubHandle>,
    cluster: Option<ClusterConfig>,
    hub_config: Option<HubConfig>,
    scan_roots: Vec<PathBuf>,
    scan_anywhere: bool,
    local_port: Option<u16>,
    host_policy: HostPolicy,
    request_timeout: Duration,
    max_http_connections: usize,
    max_projects: usize,
    scan_limits: scan::ScanLimits,
}

impl Default for AppBuilder {
    fn default() -> AppBuilder {
        AppBuilder {
            hub: None,
            cluster: None,
            hub_config: None,
            scan_roots: Vec::new(),
            scan_anywhere: false,
            local_port: None,
            host_policy: HostPolicy::loopback(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_http_connections: DEFAULT_MAX_HTTP_CONNECTIONS,
            max_projects: DEFAULT_MAX_PROJECTS,
            scan_limits: scan::ScanLimits {
                max_jobs: DEFAULT_MAX_SCAN_JOBS,
                max_entries: DEFAULT_SCAN_MAX_ENTRIES,
                timeout: DEFAULT_SCAN_TIMEOUT,
            },
        }
    }
}

impl AppBuilder {
    /// Uses this hub (the caller started it, e.g. a test) instead of starting one.
    pub fn hub(mut self, hub: HubHandle) -> AppBuilder {
        self.hub = Some(hub);
        self
    }

    /// Cluster mode (PROTOCOL.md §7): [`AppBuilder::build`] starts a node of the cluster on
    /// this Redis stream instead of an embedded hub (unless a hub is injected).
    pub fn cluster(mut self, config: ClusterConfig) -> AppBuilder {
        self.cluster = Some(config);
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

    /// Which `Host` header values every route answers, `/ws` included (PROTOCOL.md §3):
    /// 403 `host_not_allowed` for a name it does not list, 400 `invalid_host` for a missing,
    /// repeated or malformed `Host`. Default: [`HostPolicy::loopback`], right for a server on
    /// a loopback address; a server on another address takes
    /// `HostPolicy::for_bind(false, names)` (or [`HostPolicy::any`]).
    pub fn host_policy(mut self, policy: HostPolicy) -> AppBuilder {
        self.host_policy = policy;
        self
    }

    /// How long a client may take to send a request body after its head (and, served by
    /// [`crate::serve`], the longest time for the head as well): 408 and the connection closed
    /// beyond. Default [`DEFAULT_REQUEST_TIMEOUT`]; at least 1 ms.
    pub fn request_timeout(mut self, timeout: Duration) -> AppBuilder {
        self.request_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// HTTP connections [`crate::serve`] serves at once; more wait in the kernel's accept
    /// queue. An upgraded WebSocket connection stops counting at its `101` (the hub's
    /// `max_connections` bounds those). Default [`DEFAULT_MAX_HTTP_CONNECTIONS`]; at least 1.
    pub fn max_http_connections(mut self, max: usize) -> AppBuilder {
        self.max_http_connections = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Projects kept at most; creating more answers 409 `too_many_projects`. Default
    /// [`DEFAULT_MAX_PROJECTS`]; at least 1.
    pub fn max_projects(mut self, max: usize) -> AppBuilder {
        self.max_projects = max.max(1);
        self
    }

    /// Scan jobs waiting or running at once; more are answered 429 with `Retry-After`.
    /// Default [`DEFAULT_MAX_SCAN_JOBS`]; at least 1.
    pub fn max_scan_jobs(mut self, max: usize) -> AppBuilder {
        self.scan_limits.max_jobs = max.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Directory entries one scan may read; a walk that needs more fails its job, the error
    /// naming the limit. Default [`DEFAULT_SCAN_MAX_ENTRIES`]; at least 1.
    pub fn scan_max_entries(mut self, max: u64) -> AppBuilder {
        self.scan_limits.max_entries = max.max(1);
        self
    }

    /// How long one scan's walk may take; a longer one fails its job, the error naming the
    /// limit. Default [`DEFAULT_SCAN_TIMEOUT`].
    pub fn scan_timeout(mut self, timeout: Duration) -> AppBuilder {
        self.scan_limits.timeout = timeout;
        self
    }

    /// Builds the app, starting a hub if none was injected. Starting one needs a tokio runtime
    /// (call this inside it).
    ///
    /// # Panics
    ///
    /// With [`AppBuilder::cluster`], outside a tokio runtime, or with a Redis URL that
    /// [`ClusterConfig::check`] refuses (check it first).
    pub fn build(self) -> App {
        let config = self.hub_config.unwrap_or_default();
        let (hub, cluster) = match (self.hub, self.cluster) {
            (Some(hub), _) => (hub, None),
            (None, None) => (hub::start(config), None),
            (None, Some(cluster)) => {
                let (cluster, hub) =
                    Cluster::start(cluster, config).unwrap_or_else(|e| panic!("{e}"));
                (hub, Some(cluster))
            }
        };
        let publisher = match &cluster {
            Some(cluster) => Publisher::Cluster(cluster.clone()),
            None => Publisher::Hub(hub.clone()),
        };
        let scan = if !self.scan_roots.is_empty() {
            // Requests are judged on resolved paths, so the roots must be resolved too.
            let roots = self.scan_roots.into_iter();
            scan::ScanPolicy::Roots(roots.map(|r| r.canonicalize().unwrap_or(r)).collect())
        } else if self.scan_anywhere {
            scan::ScanPolicy::Anywhere
        } else {
            scan::ScanPolicy::Off
        };
        App {
            state: AppState {
                inner: Arc::new(Inner {
                    hub,
                    cluster,
                    publisher,
                    scans: scan::Scans::new(scan, self.scan_limits),
                    projects: projects::Store::new(self.max_projects),
                    http_metrics: metrics::HttpMetrics::new(),
                    local_port: self.local_port,
                    shutting_down: AtomicBool::new(false),
                    host_policy: self.host_policy,
                    request_timeout: self.request_timeout,
                    http_slots: Arc::new(crate::serve::HttpSlots::new(self.max_http_connections)),
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
    /// In cluster mode, the link to the stream.
    cluster: Option<Cluster>,
    /// Where the handlers publish: the hub, or the stream.
    publisher: Publisher,
    /// Which directories the scan endpoint may read, its limits and its job slots.
    scans: scan::Scans,
    projects: projects::Store,
    http_metrics: metrics::HttpMetrics,
    local_port: Option<u16>,
    /// Set when shutdown starts, so readiness turns 503 before the listener closes.
    shutting_down: AtomicBool,
    host_policy: HostPolicy,
    request_timeout: Duration,
    /// The HTTP connections [`crate::serve`] may serve at once, and serves now.
    http_slots: Arc<crate::serve::HttpSlots>,
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

    /// In cluster mode, the link to the stream.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.inner.cluster.as_ref()
    }

    pub(crate) fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    pub(crate) fn scans(&self) -> &scan::Scans {
        &self.inner.scans
    }

    pub(crate) fn host_policy(&self) -> &HostPolicy {
        &self.inner.host_policy
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    /// The slots of [`crate::serve`]'s accept loop: one per HTTP connection served.
    pub(crate) fn http_slots(&self) -> &Arc<crate::serve::HttpSlots> {
        &self.inner.http_slots
    }

    /// HTTP connections being served now (by [`crate::serve`]).
    pub(crate) fn http_connections(&self) -> usize {
        self.inner.http_slots.open()
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
