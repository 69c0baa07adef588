//! `GET /metrics` in the Prometheus text format (version 0.0.4), and the per-route request
//! counter (PROTOCOL.md §5, "Metrics").
//!
//! The hub keeps its own counters; each scrape takes one snapshot ([`HubHandle::metrics`]) and
//! writes it out with the `prometheus` crate's encoder, next to the HTTP counter this module
//! keeps. The 0.0.4 text format is used rather than OpenMetrics because the contract's names
//! have a gauge `ferret_ws_connections` beside a counter `ferret_ws_connections_total`, which
//! OpenMetrics would read as two families of one name.
//!
//! [`HubHandle::metrics`]: crate::HubHandle::metrics

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferret_ws_core::{Metrics, ResyncReason};
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::app::AppState;
use crate::correlation::CorrelationId;
use crate::errors::ApiError;

/// The route label of requests no route matched (one label value, whatever the path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The counter of HTTP requests by route template and status.
pub(crate) struct HttpMetrics {
    requests: IntCounterVec,
}

impl HttpMetrics {
    pub(crate) fn new() -> HttpMetrics {
        let opts = Opts::new(
            "ferret_ws_http_requests_total",
            "HTTP requests answered, by route and status",
        );
        // The name and labels are constants that satisfy Prometheus' rules.
        let requests =
            IntCounterVec::new(opts, &["route", "status"]).expect("valid metric definition");
        HttpMetrics { requests }
    }
}

/// Middleware: counts every answered request by route template (not by raw path, which would
/// let clients grow the label set) and logs it at debug with its correlation id.
pub(crate) async fn count_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || UNMATCHED_ROUTE.to_owned(),
        |path| path.as_str().to_owned(),
    );
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    state
        .http_metrics()
        .requests
        .with_label_values(&[route.as_str(), status.as_str()])
        .inc();
    let cid = response
        .extensions()
        .get::<CorrelationId>()
        .map(CorrelationId::as_str);
    tracing::debug!(%method, %route, status = status.as_u16(), correlation_id = cid, "http request");
    response
}

/// `GET /metrics`.
pub(crate) async fn render(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = state.hub().metrics().await;
    let registry =
        hub_registry(&snapshot).map_err(|e| ApiError::internal(format!("metrics: {e}")))?;
    let mut families = registry.gather();
    families.extend(state.http_metrics().requests.collect());
    families
        .extend(server_gauges(&state).map_err(|e| ApiError::internal(format!("metrics: {e}")))?);
    // A family without samples (no request counted yet) is not valid in the text format.
    families.retain(|family| !family.get_metric().is_empty());
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut text = Vec::with_capacity(4096);
    TextEncoder::new()
        .encode(&families, &mut text)
        .map_err(|e| ApiError::internal(format!("metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response())
}

/// The server's own gauges, beside the contract's metrics: HTTP connections being served by
/// [`crate::serve`] (upgraded WebSocket connections are in `ferret_ws_connections`), and scan
/// jobs waiting or running; in cluster mode, whether Redis answers, the last stream seq this
/// node delivered and how far it lags the stream's head.
fn server_gauges(state: &AppState) -> prometheus::Result<Vec<prometheus::proto::MetricFamily>> {
    let mut families = Vec::new();
    let mut gauges = vec![
        (
            "ferret_ws_http_connections",
            "HTTP connections being served now (upgraded WebSocket connections not counted)",
            state.http_connections(),
        ),
        (
            "ferret_ws_scan_jobs",
            "scan jobs waiting or running now",
            state.scans().jobs_in_flight(),
        ),
    ];
    if let Some(cluster) = state.cluster() {
        let status = cluster.status();
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        gauges.extend([
            (
                "ferret_ws_redis_up",
                "1 while Redis answers (cluster mode)",
                usize::from(status.redis_up),
            ),
            (
                "ferret_ws_stream_delivered_seq",
                "seq of the newest stream entry this node delivered (cluster mode)",
                size(status.delivered_seq),
            ),
            (
                "ferret_ws_stream_lag",
                "stream entries beyond the newest this node delivered (cluster mode)",
                size(status.lag),
            ),
        ]);
    }
    for (name, help, value) in gauges {
        let gauge = IntGauge::new(name, help)?;
        gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        families.extend(gauge.collect());
    }
    Ok(families)
}

/// The hub's snapshot as Prometheus metrics. Label sets that are known in advance (refusal
/// statuses, resync reasons) are written even at zero, so dashboards see them from the start.
fn hub_registry(m: &Metrics) -> prometheus::Result<Registry> {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, value: usize| -> prometheus::Result<()> {
        let g = IntGauge::new(name, help)?;
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        registry.register(Box::new(g))
    };
    let counter = |name: &str, help: &str, value: u64| -> prometheus::Result<()> {
        let c = IntCounter::new(name, help)?;
        c.inc_by(value);
        registry.register(Box::new(c))
    };
    let labelled = |name: &str,
                    help: &str,
                    label: &str,
                    values: Vec<(String, u64)>|
     -> prometheus::Result<()> {
        let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
        for (value, count) in values {
            c.with_label_values(&[value.as_str()]).inc_by(count);
        }
        registry.register(Box::new(c))
    };

    gauge(
        "ferret_ws_connections",
        "WebSocket connections open now",
        m.connections,
    )?;
    counter(
        "ferret_ws_connections_total",
        "WebSocket connections ever registered",
        m.connections_total,
    )?;
    let mut refused: Vec<(String, u64)> = [403u16, 503]
        .iter()
        .map(|s| {
            (
                s.to_string(),
                m.handshakes_refused.get(s).copied().unwrap_or(0),
            )
        })
        .collect();
    refused.extend(
        m.handshakes_refused
            .iter()
            .filter(|(s, _)| !matches!(s, 403 | 503))
            .map(|(s, n)| (s.to_string(), *n)),
    );
    labelled(
        "ferret_ws_handshakes_refused_total",
        "WebSocket handshakes refused before upgrading, by HTTP status",
        "status",
        refused,
    )?;
    counter(
        "ferret_ws_events_published_total",
        "Events published (heartbeats not included)",
        m.events_published,
    )?;
    counter(
        "ferret_ws_frames_sent_total",
        "Frames written to WebSocket clients",
        m.frames_sent,
    )?;
    labelled(
        "ferret_ws_closes_total",
        "WebSocket connections closed, by close code",
        "code",
        close_labels(&m.closes),
    )?;
    counter(
        "ferret_ws_replays_total",
        "Connections that started with a replay",
        m.replays,
    )?;
    labelled(
        "ferret_ws_resyncs_total",
        "resync_required frames sent, by reason",
        "reason",
        ResyncReason::ALL
            .iter()
            .map(|r| {
                (
                    r.as_str().to_owned(),
                    m.resyncs.get(r).copied().unwrap_or(0),
                )
            })
            .collect(),
    )?;
    gauge(
        "ferret_ws_replay_buffered",
        "Replayable events within the TTL",
        m.replay_buffered,
    )?;
    gauge(
        "ferret_ws_queued_bytes",
        "Bytes queued to all WebSocket connections together",
        m.queued_bytes,
    )?;
    Ok(registry)
}

/// The close codes a `code` label may name: the protocol's table (PROTOCOL.md §2), 1002
/// (which the server sends for a protocol error) and the local 1005 / 1006 (no code, lost).
/// A client's code outside them is counted as `other`, so that clients cannot grow the
/// label set.
const LABELLED_CLOSE_CODES: [u16; 14] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1009, 1011, 4008, 4400, 4401, 4408, 4429,
];

fn close_labels(closes: &std::collections::BTreeMap<u16, u64>) -> Vec<(String, u64)> {
    let mut labels: std::collections::BTreeMap<String, u64> = Default::default();
    for (code, count) in closes {
        let label = if LABELLED_CLOSE_CODES.contains(code) {
            code.to_string()
        } else {
            "other".to_owned()
        };
        *labels.entry(label).or_default() += count;
    }
    labels.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_has_every_contract_metric() {
        let mut m = Metrics::default();
        m.connections = 2;
        m.closes.insert(1001, 3);
        m.closes.insert(4999, 1);
        m.closes.insert(3000, 2);
        let families = hub_registry(&m).unwrap().gather();
        let mut text = Vec::new();
        TextEncoder::new().encode(&families, &mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        for line in [
            "# TYPE ferret_ws_connections gauge",
            "ferret_ws_connections 2",
            "ferret_ws_connections_total 0",
            "ferret_ws_handshakes_refused_total{status=\"403\"} 0",
            "ferret_ws_handshakes_refused_total{status=\"503\"} 0",
            "ferret_ws_events_published_total 0",
            "ferret_ws_frames_sent_total 0",
            "ferret_ws_closes_total{code=\"1001\"} 3",
            "ferret_ws_closes_total{code=\"other\"} 3",
            "ferret_ws_queued_bytes 0",
            "ferret_ws_replays_total 0",
            "ferret_ws_resyncs_total{reason=\"unknown_epoch\"} 0",
            "ferret_ws_replay_buffered 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
