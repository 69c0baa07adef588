//! Close codes (RFC 6455 §7.4) and the reasons sent with them.

use std::fmt;

/// A WebSocket close code, as sent in a close frame (RFC 6455 §5.5.1, §7.4).
///
/// The named constants are the codes of the ferret-ws contract; see its "Close codes" table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure (the client closed).
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: a WebSocket protocol error by the peer.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the client sent a binary frame; the hub takes text only.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no code was present in the peer's close frame. Local reporting only.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection ended without a close frame. Local reporting only.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: the client sent a text frame that is not valid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1009: the client sent a message larger than `max_client_message`.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: an internal error of the server.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 4008: slow consumer; the client's send queue passed its limit.
    pub const SLOW_CONSUMER: CloseCode = CloseCode(4008);
    /// 4400: an invalid handshake parameter; the reason names it.
    pub const BAD_HANDSHAKE: CloseCode = CloseCode(4400);
    /// 4401: the access token is missing or wrong.
    pub const UNAUTHORIZED: CloseCode = CloseCode(4401);
    /// 4408: no sign of life from the client within `liveness_timeout`.
    pub const LIVENESS_TIMEOUT: CloseCode = CloseCode(4408);
    /// 4429: the client sent messages faster than `client_rate`.
    pub const RATE_LIMITED: CloseCode = CloseCode(4429);

    /// Whether this code may appear in a close frame on the wire.
    ///
    /// 1005, 1006 and 1015 are for local reporting only (RFC 6455 §7.4.1), as are codes below
    /// 1000 and the unassigned ranges.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Why the hub closes a connection: the one table of close codes and the reasons sent with
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CloseCause {
    /// The server is shutting down (1001).
    ShuttingDown,
    /// A breach of RFC 6455 found by the WebSocket layer (1002).
    Protocol,
    /// A binary message (1003).
    Binary,
    /// A text message that is not UTF-8 (1007).
    InvalidUtf8,
    /// A message over `max_client_message` (1009).
    TooLarge,
    /// The send queue passed its limit, or the global queue budget its own (4008).
    SlowConsumer,
    /// No sign of life within `liveness_timeout` (4408).
    Liveness,
    /// Messages faster than `client_rate` allows (4429).
    RateLimited,
}

impl CloseCause {
    /// Every cause.
    pub const ALL: [CloseCause; 8] = [
        CloseCause::ShuttingDown,
        CloseCause::Protocol,
        CloseCause::Binary,
        CloseCause::InvalidUtf8,
        CloseCause::TooLarge,
        CloseCause::SlowConsumer,
        CloseCause::Liveness,
        CloseCause::RateLimited,
    ];

    /// The code and the reason sent in the close frame.
    pub fn frame(self) -> (CloseCode, &'static str) {
        match self {
            CloseCause::ShuttingDown => (CloseCode::GOING_AWAY, "server shutting down"),
            CloseCause::Protocol => (CloseCode::PROTOCOL_ERROR, "WebSocket protocol error"),
            CloseCause::Binary => (
                CloseCode::UNSUPPORTED_DATA,
                "binary frames are not accepted",
            ),
            CloseCause::InvalidUtf8 => (CloseCode::INVALID_PAYLOAD, "invalid UTF-8"),
            CloseCause::TooLarge => (CloseCode::MESSAGE_TOO_BIG, "message too large"),
            CloseCause::SlowConsumer => (
                CloseCode::SLOW_CONSUMER,
                "slow consumer: reconnect with last_event_id",
            ),
            CloseCause::Liveness => (CloseCode::LIVENESS_TIMEOUT, "liveness timeout"),
            CloseCause::RateLimited => (CloseCode::RATE_LIMITED, "too many messages"),
        }
    }

    /// The close code.
    pub fn code(self) -> CloseCode {
        self.frame().0
    }

    /// The reason, at most [`MAX_CLOSE_REASON`] bytes.
    pub fn reason(self) -> &'static str {
        self.frame().1
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest close reason in bytes: a control frame carries at most 125 bytes, two of which
/// are the code (RFC 6455 §5.5).
pub const MAX_CLOSE_REASON: usize = 123;

/// Cuts `reason` to at most [`MAX_CLOSE_REASON`] bytes on a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_CLOSE_REASON {
        return reason;
    }
    let mut end = MAX_CLOSE_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_only_codes_are_not_sendable() {
        for code in [
            CloseCode::NO_STATUS,
            CloseCode::ABNORMAL,
            CloseCode(1015),
            CloseCode(999),
        ] {
            assert!(!code.is_sendable(), "{code}");
        }
        for code in [
            CloseCode::GOING_AWAY,
            CloseCode::SLOW_CONSUMER,
            CloseCode::RATE_LIMITED,
        ] {
            assert!(code.is_sendable(), "{code}");
        }
    }

    #[test]
    fn every_cause_has_a_sendable_code_and_a_short_reason() {
        for cause in CloseCause::ALL {
            assert!(cause.code().is_sendable(), "{cause:?}");
            assert!(cause.reason().len() <= MAX_CLOSE_REASON, "{cause:?}");
        }
    }

    #[test]
    fn reasons_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = truncate_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON);
        assert_eq!(cut.len(), 122);
        assert_eq!(truncate_reason("short"), "short");
    }
}
