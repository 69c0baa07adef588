//! The `Host` check against DNS rebinding (PROTOCOL.md §3), one middleware over every route,
//! `/ws` included, so that a refused request is answered before any handler, or upgrade, sees
//! it. The decision itself is the core's [`HostPolicy`](ferret_ws_core::HostPolicy).
//!
//! With the check on (a loopback bind, or `--allowed-host` given): a request without `Host`,
//! with two, or with one that is not a valid host (RFC 9112 §3.2 asks for 400 in each case) is
//! answered 400 `invalid_host`; one that names a host not on the list is answered 403
//! `host_not_allowed`. An absolute-form request target (`GET http://name/ HTTP/1.1`) names
//! its host too, and is judged the same way. With the check off (`--allowed-host '*'`, or a
//! non-loopback bind without `--allowed-host`), nothing is looked at.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferret_ws_core::{HostPolicy, HostVerdict};

use crate::app::AppState;
use crate::errors::ApiError;

/// Middleware on the whole router: refuses requests whose `Host` the policy does not allow.
pub(crate) async fn check_host(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match judge(state.host_policy(), &request) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            tracing::debug!(
                host = ?request.headers().get(header::HOST),
                code = error.code(),
                "request refused by the host check"
            );
            error.into_response()
        }
    }
}

fn judge(policy: &HostPolicy, request: &Request) -> Result<(), ApiError> {
    if policy.is_any() {
        return Ok(());
    }
    let mut values = request.headers().get_all(header::HOST).iter();
    let host = match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().map_err(|_| invalid("Host must be ASCII"))?,
        (None, _) => return Err(invalid("the request has no Host header")),
        (Some(_), Some(_)) => return Err(invalid("the request has more than one Host header")),
    };
    verdict(policy, host)?;
    if let Some(authority) = request.uri().authority() {
        verdict(policy, authority.as_str())?;
    }
    Ok(())
}

fn verdict(policy: &HostPolicy, host: &str) -> Result<(), ApiError> {
    match policy.judge(host) {
        HostVerdict::Allowed => Ok(()),
        HostVerdict::NotAllowed => Err(ApiError::forbidden(
            "host_not_allowed",
            "this server does not answer to that host name (see --allowed-host)",
        )),
        // Malformed, and any verdict a later core adds: refuse.
        _ => Err(invalid("Host is not a valid host[:port]")),
    }
}

fn invalid(message: &str) -> ApiError {
    ApiError::bad_request("invalid_host", message)
}
