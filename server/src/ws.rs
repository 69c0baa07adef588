//! `GET /ws`: the WebSocket handshake over hyper, handed to the tokio adapter.
//!
//! axum routes the request; this module checks that it is a WebSocket upgrade (RFC 6455
//! §4.2.1), asks the hub whether to admit it (Origin, capacity, token, parameters: the core's
//! decision), answers `101 Switching Protocols` (§4.2.2) and passes the upgraded stream to
//! `ferret-ws-tokio`, the one WebSocket implementation. axum's own `ws` feature is not used.

use std::net::SocketAddr;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::app::AppState;
use crate::errors::ApiError;
use crate::hub::{serve_registered, serve_upgraded, Admission, HandshakeFields};

/// The addresses of an accepted TCP connection, attached to each of its requests by
/// [`crate::serve`], or when an embedder serves the router with
/// `into_make_service_with_connect_info::<ConnInfo>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Our side: its port is the one the default Origin policy allows.
    pub local: Option<SocketAddr>,
    /// The peer, for logs.
    pub remote: SocketAddr,
}

impl Connected<IncomingStream<'_, TcpListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> ConnInfo {
        ConnInfo::of(stream.io(), *stream.remote_addr())
    }
}

impl ConnInfo {
    pub(crate) fn of(tcp: &TcpStream, remote: SocketAddr) -> ConnInfo {
        ConnInfo {
            local: tcp.local_addr().ok(),
            remote,
        }
    }
}

/// `GET /ws`.
pub(crate) async fn upgrade(State(state): State<AppState>, mut request: Request) -> Response {
    let conn = request
        .extensions()
        .get::<ConnectInfo<ConnInfo>>()
        .map(|info| info.0);
    let key = match check_upgrade(request.headers()) {
        Ok(key) => key,
        Err(e) => {
            tracing::debug!(remote = ?conn.map(|c| c.remote), reason = e.message(), "not a websocket handshake");
            let mut response = e.into_response();
            // RFC 6455 §4.4: tell the client which version we speak.
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
            return response;
        }
    };
    let fields = HandshakeFields::from_parts(request.uri(), request.headers());
    let local_port = conn
        .and_then(|c| c.local)
        .map(|a| a.port())
        .or(state.local_port());
    let handshake = fields.request(local_port, conn.map(|c| c.remote.ip()));
    let admission = state.hub().admit(&handshake);
    if let Admission::Refuse(refusal) = &admission {
        tracing::debug!(
            remote = ?conn.map(|c| c.remote),
            status = refusal.status,
            reason = %refusal.reason,
            origin = handshake.origin,
            "websocket handshake refused"
        );
        let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::FORBIDDEN);
        let code = match status {
            StatusCode::FORBIDDEN => "origin_not_allowed",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded",
            StatusCode::TOO_MANY_REQUESTS => "too_many_connections",
            _ => "refused",
        };
        let mut error = ApiError::new(status, code, refusal.reason.clone());
        if let Some(after) = refusal.retry_after {
            error = error.with_retry_after(after);
        }
        return error.into_response();
    }
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        // Served by something other than a hyper HTTP/1 connection (e.g. a test calling the
        // router directly): nothing to upgrade.
        return ApiError::internal("this connection cannot be upgraded").into_response();
    };
    let hub = state.hub().clone();
    let remote = conn.map(|c| c.remote);
    // Registered before the 101 is written (when this handler returns): an event published
    // the instant the client reads it is delivered (PROTOCOL.md §5, "Registration").
    let upgraded = match admission {
        Admission::Accept(ticket) => Upgraded::Accepted(hub.register(ticket)),
        Admission::Reject(rejection, slot) => {
            Upgraded::Rejected(Admission::Reject(rejection, slot))
        }
        Admission::Refuse(_) => unreachable!("answered above"),
    };
    tokio::spawn(async move {
        // A failed upgrade drops the registration, which reports the connection gone.
        let stream = match on_upgrade.await {
            Ok(upgraded) => TokioIo::new(upgraded),
            Err(e) => return tracing::debug!(?remote, error = %e, "websocket upgrade failed"),
        };
        match upgraded {
            Upgraded::Accepted(registration) => {
                tracing::debug!(?remote, "websocket connected");
                let opened = std::time::Instant::now();
                serve_registered(&hub, stream, registration).await;
                tracing::debug!(?remote, duration = ?opened.elapsed(), "websocket closed");
            }
            Upgraded::Rejected(rejected) => {
                if let Admission::Reject(rejection, _) = &rejected {
                    tracing::debug!(
                        ?remote,
                        code = rejection.code.0,
                        reason = %rejection.reason,
                        "websocket handshake rejected with a close frame"
                    );
                }
                serve_upgraded(&hub, stream, rejected).await;
            }
        }
    });
    let accept = ferret_ws_tokio::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    // The accept key is base64: always a valid header value.
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
    );
    response
}

/// What the spawned task does with the upgraded stream.
enum Upgraded {
    Accepted(ferret_ws_tokio::Registration),
    Rejected(Admission),
}

/// Checks the headers of an opening handshake (RFC 6455 §4.2.1) and returns the client's key.
fn check_upgrade(headers: &HeaderMap) -> Result<String, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(ApiError::bad_request(
            "not_websocket",
            "/ws takes a WebSocket handshake (Connection: Upgrade, Upgrade: websocket)",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(ApiError::bad_request(
            "not_websocket",
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| is_handshake_key(k))
        .ok_or_else(|| {
            ApiError::bad_request(
                "not_websocket",
                "Sec-WebSocket-Key must be 16 bytes in base64",
            )
        })?;
    Ok(key.to_owned())
}

/// A base64 encoding of 16 bytes: 22 base64 characters and `==`.
fn is_handshake_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    bytes.len() == 24
        && bytes.ends_with(b"==")
        && bytes[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const GOOD: [(&str, &str); 4] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "WebSocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn accepts_a_proper_handshake() {
        assert_eq!(
            check_upgrade(&headers(&GOOD)).unwrap(),
            "dGhlIHNhbXBsZSBub25jZQ=="
        );
        // RFC 6455 §1.3's example.
        assert_eq!(
            ferret_ws_tokio::tungstenite::handshake::derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refuses_what_is_not_a_handshake() {
        for drop in 0..GOOD.len() {
            let partial: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, p)| *p)
                .collect();
            let err = check_upgrade(&headers(&partial)).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
        let mut bad = GOOD;
        bad[3].1 = "short";
        assert!(check_upgrade(&headers(&bad)).is_err());
        let mut old = GOOD;
        old[2].1 = "8";
        assert!(check_upgrade(&headers(&old)).is_err());
    }
}
