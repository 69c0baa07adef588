//! Correlation ids: every request has one, every response echoes it in `X-Correlation-ID`, and
//! every event the request causes carries it, also from work the request started in the
//! background (PROTOCOL.md §1, §3, §5).
//!
//! A client may send its own id (at most 128 visible ASCII characters); an empty header counts
//! as absent and then the server makes a fresh UUID v4. An invalid id is answered with 400 and a
//! fresh id, so the error can still be traced.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;

/// The header that carries the id both ways.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The longest id a client may send.
pub const MAX_CORRELATION_ID_LEN: usize = 128;

/// The correlation id of the request being handled.
///
/// Extract it in a handler (`cid: CorrelationId`) and pass it to the events the request
/// publishes, including those of background work it starts. Cloning is cheap.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(Arc<str>);

impl CorrelationId {
    /// A fresh random id (UUID v4).
    pub fn fresh() -> CorrelationId {
        CorrelationId(uuid::Uuid::new_v4().to_string().into())
    }

    /// Parses a client's header value: `Ok(None)` when empty, `Err` when longer than
    /// [`MAX_CORRELATION_ID_LEN`] or not all visible ASCII (`!` to `~`).
    pub fn parse(value: &[u8]) -> Result<Option<CorrelationId>, InvalidCorrelationId> {
        if value.is_empty() {
            return Ok(None);
        }
        if value.len() > MAX_CORRELATION_ID_LEN || !value.iter().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidCorrelationId);
        }
        // All bytes are ASCII, so this is valid UTF-8.
        let text = std::str::from_utf8(value).map_err(|_| InvalidCorrelationId)?;
        Ok(Some(CorrelationId(text.into())))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn header_value(&self) -> HeaderValue {
        // Fresh ids are UUIDs and client ids are checked to be visible ASCII: always valid.
        HeaderValue::from_str(&self.0).expect("a correlation id is visible ASCII")
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's `X-Correlation-ID` is too long or has characters other than visible ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCorrelationId;

impl fmt::Display for InvalidCorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "X-Correlation-ID must be 1 to {MAX_CORRELATION_ID_LEN} visible ASCII characters"
        )
    }
}

impl std::error::Error for InvalidCorrelationId {}

impl<S: Send + Sync> FromRequestParts<S> for CorrelationId {
    type Rejection = Infallible;

    /// The id the middleware attached; a fresh one if the router was built without it.
    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<CorrelationId, Infallible> {
        Ok(parts
            .extensions
            .get::<CorrelationId>()
            .cloned()
            .unwrap_or_else(CorrelationId::fresh))
    }
}

/// Middleware (`axum::middleware::from_fn(correlate)`): reads and checks `X-Correlation-ID`,
/// makes the id available to handlers ([`CorrelationId`] extractor) and echoes it on the
/// response, whatever the response is. An invalid id is answered with 400.
pub async fn correlate(mut request: Request, next: Next) -> Response {
    let mut values = request.headers().get_all(&X_CORRELATION_ID).iter();
    let parsed = match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => CorrelationId::parse(value.as_bytes()),
        (Some(_), Some(_)) => Err(InvalidCorrelationId),
    };
    let (id, mut response) = match parsed {
        Ok(given) => {
            let id = given.unwrap_or_else(CorrelationId::fresh);
            request.extensions_mut().insert(id.clone());
            (id, next.run(request).await)
        }
        Err(e) => {
            let id = CorrelationId::fresh();
            (
                id,
                ApiError::bad_request("invalid_correlation_id", e.to_string()).into_response(),
            )
        }
    };
    response.extensions_mut().insert(id.clone());
    response
        .headers_mut()
        .insert(X_CORRELATION_ID, id.header_value());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_visible_ascii_up_to_128_chars() {
        assert_eq!(CorrelationId::parse(b""), Ok(None));
        assert_eq!(
            CorrelationId::parse(b"req-1").unwrap().unwrap().as_str(),
            "req-1"
        );
        assert!(CorrelationId::parse(&[b'a'; 128]).unwrap().is_some());
        assert_eq!(
            CorrelationId::parse(&[b'a'; 129]),
            Err(InvalidCorrelationId)
        );
        for bad in [&b"a b"[..], b"a\tb", "é".as_bytes(), b"a\x7f"] {
            assert_eq!(
                CorrelationId::parse(bad),
                Err(InvalidCorrelationId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn fresh_ids_are_uuid_v4() {
        let id = CorrelationId::fresh();
        let uuid = uuid::Uuid::parse_str(id.as_str()).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
    }
}
