//! The wire format between `mcp-agent` and `mcp-relay`, with no I/O in it.
//!
//! ```text
//!  agent                                   relay
//!    | QUIC connect, ALPN "mcp-tunnel/1"      |
//!    |--- control stream (agent opens) ------>|  Hello{versions, tunnel, credentials}
//!    |<-------------------------------------- |  Welcome{version, public URL, limits} | Reject{code, message}
//!    |<--> Ping/Pong heartbeats, GoAway ----->|
//!    |                                        |
//!    |<== request stream (relay opens) ====== |  RequestHead, Data*, End
//!    | ======================================>|  ResponseHead, Data* (as produced), End | StreamError
//! ```
//!
//! Every stream carries length-prefixed [`Frame`]s (see [`frame`]). The
//! [`sequence`] state machines say which frame may come next on each kind of
//! stream; anything else is a [`ProtocolError`] with an [`ErrorCode`] that the
//! I/O shell uses to close the stream or the connection.

pub mod control;
pub mod error;
pub mod frame;
pub mod manage;
pub mod name;
pub mod secret;
pub mod sequence;
pub mod stream_head;
pub mod version;

pub use control::{
    Catalog, Credentials, DeviceUpdate, GoAway, Hello, Limits, PolicyFile, PolicyUpdate, Reject,
    RenewCert, ToolDescriptor, Welcome,
};
pub use error::{ErrorCode, ProtocolError};
pub use frame::{Frame, FrameDecoder, FrameType, MAX_FRAME_PAYLOAD, encode_frame};
pub use manage::{ManageRequest, ManageResponse};
pub use name::{InvalidTunnelName, TunnelName};
pub use secret::Secret;
pub use sequence::{ControlSide, ControlState, StreamKind, StreamState};
pub use stream_head::{RequestHead, ResponseHead, StreamError};
pub use version::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, SUPPORTED_VERSIONS, negotiate};

/// The ALPN protocol id both ends pin; a peer offering anything else fails the handshake.
pub const ALPN: &[u8] = b"mcp-tunnel/1";
