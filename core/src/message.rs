//! Client messages: a pure parser for what browsers send over `/ws`, and its inverse.

use std::fmt;

use serde_json::Value;

use crate::filter::{FilterError, TypeFilter};

/// A message a client may send, as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// `{"type":"ping"}`: answered with a `pong` control frame to this client.
    Ping,
    /// `{"type":"pong"}`: accepted silently (a sign of life like any other frame).
    Pong,
    /// `{"type":"subscribe","payload":{"types":[...]}}`: replaces the connection's filter.
    Subscribe(TypeFilter),
}

/// Why a client message was not understood. The connection stays open; the client gets an
/// `error` control frame whose `code` is [`ParseError::code`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Not a JSON object with a string `type`, or a `subscribe` with a bad payload.
    BadMessage(String),
    /// A well-formed message of a type the hub does not know.
    UnknownType(String),
}

impl ParseError {
    /// The `code` of the `error` frame: `bad_message` or `unknown_type`.
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::BadMessage(_) => "bad_message",
            ParseError::UnknownType(_) => "unknown_type",
        }
    }

    /// A human-readable explanation for the `error` frame's `detail`.
    pub fn detail(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadMessage(why) => f.write_str(why),
            ParseError::UnknownType(name) => {
                let shown: String = name.chars().take(64).collect();
                write!(
                    f,
                    "unknown message type {shown:?}; expected ping, pong or subscribe"
                )
            }
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one client text message. Pure, total: any bytes give a message or an error.
///
/// Size limits are the hub's concern (it closes with 1009 before parsing); this function
/// accepts any length.
pub fn parse_client_message(bytes: &[u8]) -> Result<ClientMessage, ParseError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ParseError::BadMessage(format!("not valid JSON: {e}")))?;
    let Value::Object(mut object) = value else {
        return Err(ParseError::BadMessage(
            "a message must be a JSON object".into(),
        ));
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => return Err(ParseError::BadMessage("\"type\" must be a string".into())),
        None => return Err(ParseError::BadMessage("missing \"type\"".into())),
    };
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "pong" => Ok(ClientMessage::Pong),
        "subscribe" => parse_subscribe(object.remove("payload")).map(ClientMessage::Subscribe),
        other => Err(ParseError::UnknownType(other.to_owned())),
    }
}

fn parse_subscribe(payload: Option<Value>) -> Result<TypeFilter, ParseError> {
    let bad = |why: &str| ParseError::BadMessage(format!("subscribe: {why}"));
    let Some(Value::Object(payload)) = payload else {
        return Err(bad("\"payload\" must be an object with \"types\""));
    };
    let Some(Value::Array(items)) = payload.get("types") else {
        return Err(bad("\"payload.types\" must be an array of strings"));
    };
    let names = items
        .iter()
        .map(|item| {
            item.as_str()
                .ok_or_else(|| bad("\"payload.types\" must be an array of strings"))
        })
        .collect::<Result<Vec<&str>, _>>()?;
    TypeFilter::from_items(names).map_err(|e: FilterError| bad(&e.to_string()))
}

/// Encodes a client message as the JSON text a client would send; `parse_client_message` of
/// the result gives the message back.
pub fn encode_client_message(message: &ClientMessage) -> String {
    match message {
        ClientMessage::Ping => r#"{"type":"ping"}"#.to_owned(),
        ClientMessage::Pong => r#"{"type":"pong"}"#.to_owned(),
        ClientMessage::Subscribe(filter) => serde_json::json!({
            "type": "subscribe",
            "payload": { "types": filter.items().collect::<Vec<_>>() },
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_messages_parse() {
        assert_eq!(
            parse_client_message(br#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse_client_message(br#"{"type":"pong","extra":1}"#),
            Ok(ClientMessage::Pong)
        );
        let sub = parse_client_message(br#"{"type":"subscribe","payload":{"types":["a","b_*"]}}"#);
        assert_eq!(
            sub,
            Ok(ClientMessage::Subscribe(
                TypeFilter::from_items(["a", "b_*"]).unwrap()
            ))
        );
    }

    #[test]
    fn errors_carry_contract_codes() {
        let code = |bytes: &[u8]| parse_client_message(bytes).unwrap_err().code();
        assert_eq!(code(b"not json"), "bad_message");
        assert_eq!(code(b"[1,2]"), "bad_message");
        assert_eq!(code(br#"{"type":5}"#), "bad_message");
        assert_eq!(code(br#"{}"#), "bad_message");
        assert_eq!(code(b"\xff\xfe"), "bad_message");
        assert_eq!(code(br#"{"type":"subscribe"}"#), "bad_message");
        assert_eq!(
            code(br#"{"type":"subscribe","payload":{"types":[1]}}"#),
            "bad_message"
        );
        assert_eq!(
            code(br#"{"type":"subscribe","payload":{"types":["A"]}}"#),
            "bad_message"
        );
        assert_eq!(code(br#"{"type":"hello"}"#), "unknown_type");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            parse_client_message(deep.as_bytes()).unwrap_err().code(),
            "bad_message"
        );
    }

    #[test]
    fn encode_round_trips() {
        for message in [
            ClientMessage::Ping,
            ClientMessage::Pong,
            ClientMessage::Subscribe(TypeFilter::all()),
            ClientMessage::Subscribe(TypeFilter::from_items(["x", "y.*"]).unwrap()),
        ] {
            assert_eq!(
                parse_client_message(encode_client_message(&message).as_bytes()),
                Ok(message)
            );
        }
    }
}
