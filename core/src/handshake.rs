//! The `/ws` handshake decision: Origin, connection cap, token and query parameters.
//!
//! The decision is a pure function of the request and the configuration, made before the
//! upgrade (the adapters call it from their handshake callback). Its outcomes follow the
//! contract: faults a browser must see become a close frame after accepting; Origin and
//! overload are refused with an HTTP status before upgrading.

use std::net::IpAddr;
use std::time::Duration;

use crate::close::{truncate_reason, CloseCode};
use crate::config::HubConfig;
use crate::filter::TypeFilter;

/// How long an overloaded server asks clients to wait (`Retry-After`).
pub const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(5);

/// The parts of a `GET /ws` request that the decision reads. Header values are raw.
#[derive(Debug, Clone, Copy, Default)]
pub struct HandshakeRequest<'a> {
    /// The query string without `?`, if any.
    pub query: Option<&'a str>,
    /// The `Last-Event-ID` header.
    pub last_event_id: Option<&'a str>,
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The port the server listens on, for the default Origin allow-list (its own origins).
    pub local_port: Option<u16>,
    /// The client's IP address, for the per-address connection cap.
    pub peer: Option<IpAddr>,
}

/// Which browser origins may open `/ws`. A request without `Origin` (not a browser) is always
/// allowed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OriginPolicy {
    /// The server's own origins: `http://127.0.0.1:PORT`, `http://localhost:PORT` and
    /// `http://[::1]:PORT`, with PORT from [`HandshakeRequest::local_port`].
    #[default]
    Own,
    /// Exactly these origins (compared without case and trailing `/`).
    List(Vec<String>),
    /// Every origin (`--allowed-origin '*'`).
    Any,
}

impl OriginPolicy {
    fn allows(&self, origin: &str, local_port: Option<u16>) -> bool {
        let origin = origin.trim_end_matches('/');
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::List(list) => list
                .iter()
                .any(|allowed| allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)),
            OriginPolicy::Own => local_port.is_some_and(|port| {
                ["127.0.0.1", "localhost", "[::1]"]
                    .iter()
                    .any(|host| origin.eq_ignore_ascii_case(&format!("http://{host}:{port}")))
            }),
        }
    }
}

/// What to do with a `/ws` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upgrade, then register the connection with these parameters ([`crate::Hub::accept`]).
    Accept(ConnParams),
    /// Answer with an HTTP error and do not upgrade.
    Refuse(Refusal),
    /// Upgrade, then send a close frame with this code and reason and drop the connection.
    Reject(Rejection),
}

/// An HTTP refusal of the upgrade (403 for Origin, 503 when full).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// A short explanation for the response body.
    pub reason: String,
    /// For 503: the `Retry-After` header.
    pub retry_after: Option<Duration>,
}

/// A close sent right after accepting (4400, 4401), which browsers can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The close code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes, naming the offending parameter.
    pub reason: String,
}

/// The parameters of an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnParams {
    /// The type filter (`types`).
    pub filter: TypeFilter,
    /// The raw resume anchor (`last_event_id` query, else `Last-Event-ID`), if non-empty, as
    /// sent; the hub validates it and answers a bad one with `resync_required` (`invalid`).
    pub anchor: Option<Box<str>>,
    /// The client identity (`subscribe_token`): 32 lowercase hex characters.
    pub subscribe_token: Option<Box<str>>,
}

/// Whether a connection slot is free for a handshake ([`crate::Admission`] knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// A slot is free.
    Free,
    /// `max_connections` are open: 503 with `Retry-After`.
    Full,
    /// The client's address has `max_connections_per_ip` open: 429 with `Retry-After`.
    PeerFull,
    /// The hub cannot serve yet (a cluster node that has not reached its log): 503 with
    /// `Retry-After`.
    Unavailable,
}

/// Decides a `/ws` request, given whether a connection slot is free.
///
/// Checks, first failure wins: Origin (403), capacity (503, or 429 for the client's address),
/// token (4401), `types` and `subscribe_token` (4400). A query parameter given twice is a
/// 4400 as well, since its meaning would be ambiguous; unknown parameters are ignored. Most
/// callers go through [`crate::Admission::admit`], which also keeps the slots.
pub fn decide(config: &HubConfig, request: &HandshakeRequest<'_>, capacity: Capacity) -> Decision {
    if let Some(origin) = request.origin {
        if !config.allowed_origins().allows(origin, request.local_port) {
            return Decision::Refuse(Refusal {
                status: 403,
                reason: "origin not allowed".into(),
                retry_after: None,
            });
        }
    }
    match capacity {
        Capacity::Free => {}
        Capacity::Full => {
            return Decision::Refuse(Refusal {
                status: 503,
                reason: "connection limit reached".into(),
                retry_after: Some(OVERLOAD_RETRY_AFTER),
            })
        }
        Capacity::PeerFull => {
            return Decision::Refuse(Refusal {
                status: 429,
                reason: "too many connections from this address".into(),
                retry_after: Some(OVERLOAD_RETRY_AFTER),
            })
        }
        Capacity::Unavailable => {
            return Decision::Refuse(Refusal {
                status: 503,
                reason: "the event log is not reachable yet".into(),
                retry_after: Some(OVERLOAD_RETRY_AFTER),
            })
        }
    }
    let query = match Query::parse(request.query.unwrap_or("")) {
        Ok(query) => query,
        Err(name) => {
            return reject(
                CloseCode::BAD_HANDSHAKE,
                &format!("{name}: given more than once"),
            )
        }
    };
    if let Some(expected) = config.token() {
        let bearer = request.authorization.and_then(bearer_token);
        let given = query.token.as_deref().or(bearer);
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            return reject(CloseCode::UNAUTHORIZED, "missing or wrong token");
        }
    }
    let filter = match TypeFilter::parse_list(query.types.as_deref().unwrap_or("")) {
        Ok(filter) => filter,
        Err(e) => return reject(CloseCode::BAD_HANDSHAKE, &format!("types: {e}")),
    };
    let subscribe_token = match query.subscribe_token {
        Some(token) if !is_subscribe_token(&token) => {
            return reject(
                CloseCode::BAD_HANDSHAKE,
                "subscribe_token: must be 32 lowercase hex characters",
            )
        }
        other => other.map(String::into_boxed_str),
    };
    // Judged exactly as sent (no trimming): the hub answers a malformed one with `invalid`.
    let anchor = query.last_event_id.as_deref().or(request.last_event_id);
    let anchor = anchor.filter(|a| !a.is_empty()).map(Into::into);
    Decision::Accept(ConnParams {
        filter,
        anchor,
        subscribe_token,
    })
}

fn reject(code: CloseCode, reason: &str) -> Decision {
    Decision::Reject(Rejection {
        code,
        reason: truncate_reason(reason).to_owned(),
    })
}

/// The query parameters the hub reads, each at most once.
#[derive(Default)]
struct Query {
    last_event_id: Option<String>,
    types: Option<String>,
    subscribe_token: Option<String>,
    token: Option<String>,
}

impl Query {
    /// Percent-decodes the query; `Err` names a parameter given twice.
    fn parse(query: &str) -> Result<Query, &'static str> {
        let mut parsed = Query::default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let (slot, name) = match &*name {
                "last_event_id" => (&mut parsed.last_event_id, "last_event_id"),
                "types" => (&mut parsed.types, "types"),
                "subscribe_token" => (&mut parsed.subscribe_token, "subscribe_token"),
                "token" => (&mut parsed.token, "token"),
                _ => continue,
            };
            if slot.replace(value.into_owned()).is_some() {
                return Err(name);
            }
        }
        Ok(parsed)
    }
}

fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares without an early exit on the first differing byte, so timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_subscribe_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> HubConfig {
        HubConfig::builder().build().unwrap()
    }

    fn request(query: &str) -> HandshakeRequest<'_> {
        HandshakeRequest {
            query: Some(query),
            local_port: Some(8765),
            ..Default::default()
        }
    }

    fn rejected(decision: Decision) -> (u16, String) {
        match decision {
            Decision::Reject(r) => (r.code.0, r.reason),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn accepted(decision: Decision) -> ConnParams {
        match decision {
            Decision::Accept(params) => params,
            other => panic!("expected accept, got {other:?}"),
        }
    }

    #[test]
    fn plain_request_is_accepted_with_defaults() {
        let params = accepted(decide(&config(), &request(""), Capacity::Free));
        assert_eq!(params, ConnParams::default());
    }

    #[test]
    fn origin_checks_default_to_own_origins() {
        let cfg = config();
        for (origin, ok) in [
            ("http://127.0.0.1:8765", true),
            ("http://localhost:8765/", true),
            ("http://LOCALHOST:8765", true),
            ("http://[::1]:8765", true),
            ("http://127.0.0.1:9999", false),
            ("https://evil.example", false),
            ("null", false),
        ] {
            let req = HandshakeRequest {
                origin: Some(origin),
                ..request("")
            };
            let decision = decide(&cfg, &req, Capacity::Free);
            assert_eq!(
                matches!(decision, Decision::Accept(_)),
                ok,
                "{origin}: {decision:?}"
            );
            if !ok {
                assert!(matches!(
                    decision,
                    Decision::Refuse(Refusal { status: 403, .. })
                ));
            }
        }
    }

    #[test]
    fn origin_list_and_any() {
        let list = HubConfig::builder()
            .allowed_origins(OriginPolicy::List(vec!["https://app.example".into()]))
            .build()
            .unwrap();
        let req = |o| HandshakeRequest {
            origin: Some(o),
            ..request("")
        };
        assert!(matches!(
            decide(&list, &req("https://app.example"), Capacity::Free),
            Decision::Accept(_)
        ));
        assert!(matches!(
            decide(&list, &req("http://127.0.0.1:8765"), Capacity::Free),
            Decision::Refuse(_)
        ));
        let any = HubConfig::builder()
            .allowed_origins(OriginPolicy::Any)
            .build()
            .unwrap();
        assert!(matches!(
            decide(&any, &req("https://x.example"), Capacity::Free),
            Decision::Accept(_)
        ));
    }

    #[test]
    fn full_server_refuses_with_503_and_retry_after() {
        match decide(&config(), &request(""), Capacity::Full) {
            Decision::Refuse(r) => {
                assert_eq!(r.status, 503);
                assert_eq!(r.retry_after, Some(OVERLOAD_RETRY_AFTER));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_full_address_is_429_with_retry_after() {
        match decide(&config(), &request(""), Capacity::PeerFull) {
            Decision::Refuse(r) => {
                assert_eq!(r.status, 429);
                assert_eq!(r.retry_after, Some(OVERLOAD_RETRY_AFTER));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn token_by_query_or_bearer_header() {
        let cfg = HubConfig::builder()
            .token(Some("s3cret".into()))
            .build()
            .unwrap();
        assert_eq!(rejected(decide(&cfg, &request(""), Capacity::Free)).0, 4401);
        assert_eq!(
            rejected(decide(&cfg, &request("token=nope"), Capacity::Free)).0,
            4401
        );
        accepted(decide(&cfg, &request("token=s3cret"), Capacity::Free));
        let header = HandshakeRequest {
            authorization: Some("Bearer s3cret"),
            ..request("")
        };
        accepted(decide(&cfg, &header, Capacity::Free));
        let wrong = HandshakeRequest {
            authorization: Some("Basic s3cret"),
            ..request("")
        };
        assert_eq!(rejected(decide(&cfg, &wrong, Capacity::Free)).0, 4401);
    }

    #[test]
    fn bad_parameters_are_4400_naming_them() {
        let cfg = config();
        let (code, reason) = rejected(decide(&cfg, &request("types=a,,b"), Capacity::Free));
        assert_eq!(code, 4400);
        assert!(reason.starts_with("types:"), "{reason}");
        let (code, reason) = rejected(decide(
            &cfg,
            &request("subscribe_token=xyz"),
            Capacity::Free,
        ));
        assert_eq!(code, 4400);
        assert!(reason.starts_with("subscribe_token:"), "{reason}");
        let (code, reason) = rejected(decide(&cfg, &request("types=a&types=b"), Capacity::Free));
        assert_eq!(
            (code, reason.as_str()),
            (4400, "types: given more than once")
        );
    }

    #[test]
    fn parameters_are_percent_decoded() {
        let params = accepted(decide(
            &config(),
            &request("types=render_*%2Cpreview.*&subscribe_token=0123456789abcdef0123456789abcdef"),
            Capacity::Free,
        ));
        assert_eq!(
            params.filter.items().collect::<Vec<_>>(),
            ["render_*", "preview.*"]
        );
        assert_eq!(
            params.subscribe_token.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn query_anchor_wins_over_header_and_empty_means_none() {
        let cfg = config();
        let both = HandshakeRequest {
            last_event_id: Some("aaaaaaaa-1"),
            ..request("last_event_id=bbbbbbbb-2")
        };
        assert_eq!(
            accepted(decide(&cfg, &both, Capacity::Free))
                .anchor
                .as_deref(),
            Some("bbbbbbbb-2")
        );
        let header = HandshakeRequest {
            last_event_id: Some("aaaaaaaa-1"),
            ..request("")
        };
        assert_eq!(
            accepted(decide(&cfg, &header, Capacity::Free))
                .anchor
                .as_deref(),
            Some("aaaaaaaa-1")
        );
        let empty = HandshakeRequest {
            last_event_id: Some(""),
            ..request("last_event_id=")
        };
        assert_eq!(accepted(decide(&cfg, &empty, Capacity::Free)).anchor, None);
        // Whitespace is kept, so that the hub judges the anchor `invalid`.
        let padded = request("last_event_id=%20aaaaaaaa-1");
        assert_eq!(
            accepted(decide(&cfg, &padded, Capacity::Free))
                .anchor
                .as_deref(),
            Some(" aaaaaaaa-1")
        );
        let long = format!("last_event_id={}", "x".repeat(1000));
        // Kept whole: the hub judges it (`invalid`) and echoes exactly what was sent.
        assert_eq!(
            accepted(decide(&cfg, &request(&long), Capacity::Free))
                .anchor
                .unwrap()
                .len(),
            1000
        );
    }

    #[test]
    fn origin_is_checked_before_capacity_and_token() {
        let cfg = HubConfig::builder()
            .token(Some("t".into()))
            .build()
            .unwrap();
        let req = HandshakeRequest {
            origin: Some("https://evil.example"),
            ..request("")
        };
        assert!(matches!(
            decide(&cfg, &req, Capacity::Full),
            Decision::Refuse(Refusal { status: 403, .. })
        ));
    }
}
