//! Reading JSON request bodies with the contract's statuses (PROTOCOL.md §5, "Publish API
//! statuses"): 415 for a missing or non-JSON `Content-Type`, 413 above [`MAX_BODY`], 400 for
//! malformed JSON (`NaN` and `Infinity` included), 422 for well-formed JSON of the wrong shape,
//! and 408 for a body that did not arrive within `--request-timeout`.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::deadline::RequestTimedOut;
use crate::errors::ApiError;

/// The largest request body the API reads: 1 MiB, accepted exactly.
pub const MAX_BODY: usize = 1 << 20;

/// A request body that is a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonObject(pub Map<String, Value>);

impl JsonObject {
    /// Reads the object into `T`; a field missing or of the wrong type is a 422 that names it.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T, ApiError> {
        serde_json::from_value(Value::Object(self.0))
            .map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<JsonObject, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if let Some(timed_out) = RequestTimedOut::find(&rejection) {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        timed_out.to_string(),
                    )
                } else if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body is larger than {MAX_BODY} bytes"),
                    )
                } else {
                    ApiError::bad_request("unreadable_body", rejection.body_text())
                }
            })?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(JsonObject(map)),
            other => Err(ApiError::unprocessable(
                "invalid_body",
                format!("the body must be a JSON object, not {}", kind(&other)),
            )),
        }
    }
}

/// `application/json` or any `+json` type, with or without parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// The JSON kind of a value, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let check = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            is_json(&headers)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/vnd.api+json"));
        assert!(!check("text/plain"));
        assert!(!check("application/jsonx"));
        assert!(!check("multipart/form-data"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
