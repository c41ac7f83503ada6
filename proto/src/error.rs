//! Error codes carried in QUIC `CONNECTION_CLOSE`, `RESET_STREAM`, `STOP_SENDING`,
//! [`Reject`](crate::Reject) and [`StreamError`](crate::StreamError), and the
//! protocol errors the decoder and sequencers report.

use std::fmt;

/// A numeric code one side tells the other when it closes a connection or a stream.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// Orderly close; nothing went wrong.
    pub const NO_ERROR: Self = Self(0);
    /// A frame broke the protocol in a way no finer code describes.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// A frame header announced a payload above the limit.
    pub const FRAME_TOO_LARGE: Self = Self(2);
    /// A frame type this side does not know.
    pub const UNKNOWN_FRAME: Self = Self(3);
    /// A known frame arrived where the stream's state does not allow it.
    pub const UNEXPECTED_FRAME: Self = Self(4);
    /// A frame's payload did not parse.
    pub const MALFORMED_FRAME: Self = Self(5);
    /// The credentials were missing, unknown or revoked.
    pub const UNAUTHORIZED: Self = Self(6);
    /// Another credential is serving this tunnel name.
    pub const NAME_TAKEN: Self = Self(7);
    /// The same credential connected again for this tunnel; this connection is replaced.
    pub const REPLACED: Self = Self(8);
    /// No protocol version in common.
    pub const VERSION_MISMATCH: Self = Self(9);
    /// The peer is shutting down; reconnect (elsewhere or later).
    pub const SHUTTING_DOWN: Self = Self(10);
    /// Heartbeats stopped arriving.
    pub const HEARTBEAT_TIMEOUT: Self = Self(11);
    /// A limit (streams, body size, header size) was exceeded.
    pub const LIMIT_EXCEEDED: Self = Self(12);
    /// The request was cancelled (the MCP client went away).
    pub const CANCELLED: Self = Self(13);
    /// The agent could not reach its upstream MCP server.
    pub const UPSTREAM_ERROR: Self = Self(14);
    /// A bug or an unexpected local failure.
    pub const INTERNAL: Self = Self(15);
    /// The tunnel name is not a valid name.
    pub const BAD_TUNNEL_NAME: Self = Self(16);
    /// The request's deadline passed before the upstream answered.
    pub const DEADLINE_EXCEEDED: Self = Self(17);
    /// The caller is authenticated but policy does not allow the request.
    pub const FORBIDDEN: Self = Self(18);
    /// The request names something that does not exist (tunnel, grant).
    pub const NOT_FOUND: Self = Self(19);
    /// The request itself is invalid (bad policy file, bad grant subject).
    pub const BAD_REQUEST: Self = Self(20);

    /// A short, stable, human-readable name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::NO_ERROR => "no_error",
            Self::PROTOCOL_ERROR => "protocol_error",
            Self::FRAME_TOO_LARGE => "frame_too_large",
            Self::UNKNOWN_FRAME => "unknown_frame",
            Self::UNEXPECTED_FRAME => "unexpected_frame",
            Self::MALFORMED_FRAME => "malformed_frame",
            Self::UNAUTHORIZED => "unauthorized",
            Self::NAME_TAKEN => "name_taken",
            Self::REPLACED => "replaced",
            Self::VERSION_MISMATCH => "version_mismatch",
            Self::SHUTTING_DOWN => "shutting_down",
            Self::HEARTBEAT_TIMEOUT => "heartbeat_timeout",
            Self::LIMIT_EXCEEDED => "limit_exceeded",
            Self::CANCELLED => "cancelled",
            Self::UPSTREAM_ERROR => "upstream_error",
            Self::INTERNAL => "internal",
            Self::BAD_TUNNEL_NAME => "bad_tunnel_name",
            Self::DEADLINE_EXCEEDED => "deadline_exceeded",
            Self::FORBIDDEN => "forbidden",
            Self::NOT_FOUND => "not_found",
            Self::BAD_REQUEST => "bad_request",
            _ => "unknown",
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl From<ErrorCode> for u32 {
    fn from(code: ErrorCode) -> u32 {
        code.0
    }
}

/// A peer broke the wire protocol. The stream (or, on the control stream, the
/// connection) is closed with [`ProtocolError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The header announced a payload larger than the receiver accepts.
    #[error("frame of type {frame_type:#04x} announces {len} bytes, over the {max}-byte limit")]
    FrameTooLarge {
        /// The raw frame type byte.
        frame_type: u8,
        /// The announced payload length.
        len: usize,
        /// The receiver's limit.
        max: usize,
    },
    /// The frame type byte is not one this version knows.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// A known frame arrived in a state that does not allow it.
    #[error("unexpected {frame} frame while {state}")]
    UnexpectedFrame {
        /// The frame that arrived.
        frame: &'static str,
        /// What the receiver was waiting for.
        state: &'static str,
    },
    /// The payload of a frame did not parse.
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        /// The frame whose payload was bad.
        frame: &'static str,
        /// Why it did not parse.
        reason: String,
    },
    /// The stream ended in the middle of a frame or before its final frame.
    #[error("stream ended early: {0}")]
    Truncated(&'static str),
}

impl ProtocolError {
    /// The code to close the stream or connection with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::FrameTooLarge { .. } => ErrorCode::FRAME_TOO_LARGE,
            Self::UnknownFrameType(_) => ErrorCode::UNKNOWN_FRAME,
            Self::UnexpectedFrame { .. } => ErrorCode::UNEXPECTED_FRAME,
            Self::Malformed { .. } => ErrorCode::MALFORMED_FRAME,
            Self::Truncated(_) => ErrorCode::PROTOCOL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_names_and_map_from_errors() {
        assert_eq!(ErrorCode::NAME_TAKEN.name(), "name_taken");
        assert_eq!(format!("{:?}", ErrorCode(999)), "unknown(999)");
        assert_eq!(
            ProtocolError::UnknownFrameType(0x7f).code(),
            ErrorCode::UNKNOWN_FRAME
        );
    }
}
