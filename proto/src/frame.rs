//! Length-prefixed frames.
//!
//! ```text
//! +------------+----------------------+---------------------+
//! | type (u8)  | payload length (u32) | payload             |
//! |            | big-endian           | (length bytes)      |
//! +------------+----------------------+---------------------+
//! ```
//!
//! Control and head frames carry JSON (unknown fields are ignored, so a newer
//! peer may add fields); `Data` carries raw body bytes; `End` is empty; `Ping`
//! and `Pong` carry a big-endian `u64`. The decoder refuses an unknown type or
//! an oversize length as soon as the 5-byte header has arrived, before
//! buffering any payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::control::{
    Catalog, DeviceUpdate, GoAway, Hello, PolicyUpdate, Reject, RenewCert, Welcome,
};
use crate::error::ProtocolError;
use crate::manage::{ManageRequest, ManageResponse};
use crate::stream_head::{RequestHead, ResponseHead, StreamError};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;

/// Hard ceiling on any frame's payload (1 MiB). A receiver may set a lower one.
pub const MAX_FRAME_PAYLOAD: usize = 1024 * 1024;

/// Ceiling on the JSON payload of control and head frames (64 KiB): heads are
/// small, and a peer must not make the other side buffer much before parsing.
pub const MAX_HEAD_PAYLOAD: usize = 64 * 1024;

/// The one-byte frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// Agent → relay, first frame of the control stream.
    Hello = 0x01,
    /// Relay → agent, accepts the Hello.
    Welcome = 0x02,
    /// Relay → agent, refuses the Hello; the relay then closes the connection.
    Reject = 0x03,
    /// Heartbeat request (either side).
    Ping = 0x04,
    /// Heartbeat answer.
    Pong = 0x05,
    /// The sender is going away; finish in-flight work and reconnect.
    GoAway = 0x06,
    /// Agent → relay: renew my device certificate.
    RenewCert = 0x07,
    /// Relay → agent: a renewed certificate and/or new assertion keys.
    DeviceUpdate = 0x08,
    /// Agent → relay: the owner's policy and the upstream's tools.
    Catalog = 0x09,
    /// Relay → agent: the tunnel's owner and grants.
    PolicyUpdate = 0x0a,
    /// Management client → relay, the only frame of its stream.
    ManageRequest = 0x0b,
    /// Relay → management client, the answer.
    ManageResponse = 0x0c,
    /// Relay → agent, first frame of a request stream.
    RequestHead = 0x10,
    /// Agent → relay, first frame of a response.
    ResponseHead = 0x11,
    /// Body bytes.
    Data = 0x12,
    /// The body is complete.
    End = 0x13,
    /// The sender gives up on this stream (with a code and message).
    StreamError = 0x14,
}

impl FrameType {
    /// Maps a type byte to a known frame type.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Reject,
            0x04 => Self::Ping,
            0x05 => Self::Pong,
            0x06 => Self::GoAway,
            0x07 => Self::RenewCert,
            0x08 => Self::DeviceUpdate,
            0x09 => Self::Catalog,
            0x0a => Self::PolicyUpdate,
            0x0b => Self::ManageRequest,
            0x0c => Self::ManageResponse,
            0x10 => Self::RequestHead,
            0x11 => Self::ResponseHead,
            0x12 => Self::Data,
            0x13 => Self::End,
            0x14 => Self::StreamError,
            _ => return None,
        })
    }

    /// The largest payload this type may carry, given the receiver's data limit.
    fn max_payload(self, data_limit: usize) -> usize {
        match self {
            Self::Data => data_limit,
            Self::End => 0,
            Self::Ping | Self::Pong => 8,
            // Tool lists, policies, grant lists and audit pages can be large;
            // they travel on authenticated streams only.
            Self::Catalog | Self::PolicyUpdate | Self::ManageRequest | Self::ManageResponse => {
                MAX_FRAME_PAYLOAD
            }
            _ => MAX_HEAD_PAYLOAD,
        }
    }

    /// A name for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "Hello",
            Self::Welcome => "Welcome",
            Self::Reject => "Reject",
            Self::Ping => "Ping",
            Self::Pong => "Pong",
            Self::GoAway => "GoAway",
            Self::RenewCert => "RenewCert",
            Self::DeviceUpdate => "DeviceUpdate",
            Self::Catalog => "Catalog",
            Self::PolicyUpdate => "PolicyUpdate",
            Self::ManageRequest => "ManageRequest",
            Self::ManageResponse => "ManageResponse",
            Self::RequestHead => "RequestHead",
            Self::ResponseHead => "ResponseHead",
            Self::Data => "Data",
            Self::End => "End",
            Self::StreamError => "StreamError",
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Reject`].
    Reject(Reject),
    /// Heartbeat with a sequence number.
    Ping(u64),
    /// Heartbeat answer echoing the sequence number.
    Pong(u64),
    /// See [`GoAway`].
    GoAway(GoAway),
    /// See [`RenewCert`].
    RenewCert(RenewCert),
    /// See [`DeviceUpdate`].
    DeviceUpdate(DeviceUpdate),
    /// See [`Catalog`].
    Catalog(Catalog),
    /// See [`PolicyUpdate`].
    PolicyUpdate(PolicyUpdate),
    /// See [`ManageRequest`].
    ManageRequest(ManageRequest),
    /// See [`ManageResponse`].
    ManageResponse(ManageResponse),
    /// See [`RequestHead`].
    RequestHead(RequestHead),
    /// See [`ResponseHead`].
    ResponseHead(ResponseHead),
    /// Body bytes.
    Data(Bytes),
    /// End of body.
    End,
    /// See [`StreamError`].
    StreamError(StreamError),
}

impl Frame {
    /// This frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Hello(_) => FrameType::Hello,
            Self::Welcome(_) => FrameType::Welcome,
            Self::Reject(_) => FrameType::Reject,
            Self::Ping(_) => FrameType::Ping,
            Self::Pong(_) => FrameType::Pong,
            Self::GoAway(_) => FrameType::GoAway,
            Self::RenewCert(_) => FrameType::RenewCert,
            Self::DeviceUpdate(_) => FrameType::DeviceUpdate,
            Self::Catalog(_) => FrameType::Catalog,
            Self::PolicyUpdate(_) => FrameType::PolicyUpdate,
            Self::ManageRequest(_) => FrameType::ManageRequest,
            Self::ManageResponse(_) => FrameType::ManageResponse,
            Self::RequestHead(_) => FrameType::RequestHead,
            Self::ResponseHead(_) => FrameType::ResponseHead,
            Self::Data(_) => FrameType::Data,
            Self::End => FrameType::End,
            Self::StreamError(_) => FrameType::StreamError,
        }
    }
}

/// Appends `frame`, encoded, to `out`.
///
/// Fails only if a JSON payload would exceed [`MAX_HEAD_PAYLOAD`] or a `Data`
/// payload [`MAX_FRAME_PAYLOAD`]: the sender must respect the limits it
/// expects its peer to enforce.
pub fn encode_frame(frame: &Frame, out: &mut BytesMut) -> Result<(), EncodeError> {
    match frame {
        Frame::Hello(m) => encode_json(FrameType::Hello, m, out),
        Frame::Welcome(m) => encode_json(FrameType::Welcome, m, out),
        Frame::Reject(m) => encode_json(FrameType::Reject, m, out),
        Frame::GoAway(m) => encode_json(FrameType::GoAway, m, out),
        Frame::RenewCert(m) => encode_json(FrameType::RenewCert, m, out),
        Frame::DeviceUpdate(m) => encode_json(FrameType::DeviceUpdate, m, out),
        Frame::Catalog(m) => encode_json(FrameType::Catalog, m, out),
        Frame::PolicyUpdate(m) => encode_json(FrameType::PolicyUpdate, m, out),
        Frame::ManageRequest(m) => encode_json(FrameType::ManageRequest, m, out),
        Frame::ManageResponse(m) => encode_json(FrameType::ManageResponse, m, out),
        Frame::RequestHead(m) => encode_json(FrameType::RequestHead, m, out),
        Frame::ResponseHead(m) => encode_json(FrameType::ResponseHead, m, out),
        Frame::StreamError(m) => encode_json(FrameType::StreamError, m, out),
        Frame::Ping(n) | Frame::Pong(n) => {
            out.reserve(HEADER_LEN + 8);
            out.put_u8(frame.frame_type() as u8);
            out.put_u32(8);
            out.put_u64(*n);
            Ok(())
        }
        Frame::Data(b) => {
            out.extend_from_slice(&data_header(b.len())?);
            out.extend_from_slice(b);
            Ok(())
        }
        Frame::End => {
            out.put_u8(FrameType::End as u8);
            out.put_u32(0);
            Ok(())
        }
    }
}

/// The 5-byte header of a `Data` frame of `len` bytes, for writers that send
/// the payload separately without copying it.
pub fn data_header(len: usize) -> Result<[u8; HEADER_LEN], EncodeError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(EncodeError::TooLarge {
            frame: "Data",
            len,
            max: MAX_FRAME_PAYLOAD,
        });
    }
    let mut h = [0u8; HEADER_LEN];
    h[0] = FrameType::Data as u8;
    // Cannot truncate: len <= MAX_FRAME_PAYLOAD < u32::MAX.
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(h)
}

/// A frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload is over the protocol limit.
    #[error("{frame} payload of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The frame type.
        frame: &'static str,
        /// The payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

fn encode_json<T: Serialize>(
    ty: FrameType,
    msg: &T,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u8(ty as u8);
    out.put_u32(0);
    // Writing JSON into a BytesMut cannot fail: the types are plain data.
    let mut w = out.writer();
    let max = ty.max_payload(MAX_FRAME_PAYLOAD);
    serde_json::to_writer(&mut w, msg).map_err(|_| EncodeError::TooLarge {
        frame: ty.name(),
        len: 0,
        max,
    })?;
    let out = w.into_inner();
    let len = out.len() - start - HEADER_LEN;
    if len > max {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            frame: ty.name(),
            len,
            max,
        });
    }
    out[start + 1..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Incremental decoder: feed it bytes as they arrive, take frames out.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    data_limit: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_PAYLOAD)
    }
}

impl FrameDecoder {
    /// A decoder accepting `Data` payloads up to `data_limit` bytes (capped at
    /// [`MAX_FRAME_PAYLOAD`]).
    pub fn new(data_limit: usize) -> Self {
        Self {
            data_limit: data_limit.min(MAX_FRAME_PAYLOAD),
        }
    }

    /// Takes one whole frame off the front of `buf`, if one has arrived.
    ///
    /// `Ok(None)` means "need more bytes". An error means the peer broke the
    /// protocol; the stream cannot be resynchronised.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let type_byte = buf[0];
        let ty = FrameType::from_u8(type_byte).ok_or(ProtocolError::UnknownFrameType(type_byte))?;
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        let max = ty.max_payload(self.data_limit);
        if len > max {
            return Err(ProtocolError::FrameTooLarge {
                frame_type: type_byte,
                len,
                max,
            });
        }
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        parse_payload(ty, payload).map(Some)
    }

    /// Called when the stream has ended: leftover bytes mean a cut-off frame.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), ProtocolError> {
        if buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::Truncated("inside a frame"))
        }
    }
}

fn parse_payload(ty: FrameType, payload: Bytes) -> Result<Frame, ProtocolError> {
    Ok(match ty {
        FrameType::Hello => Frame::Hello(json(ty, &payload)?),
        FrameType::Welcome => Frame::Welcome(json(ty, &payload)?),
        FrameType::Reject => Frame::Reject(json(ty, &payload)?),
        FrameType::GoAway => Frame::GoAway(json(ty, &payload)?),
        FrameType::RenewCert => Frame::RenewCert(json(ty, &payload)?),
        FrameType::DeviceUpdate => Frame::DeviceUpdate(json(ty, &payload)?),
        FrameType::Catalog => Frame::Catalog(json(ty, &payload)?),
        FrameType::PolicyUpdate => Frame::PolicyUpdate(json(ty, &payload)?),
        FrameType::ManageRequest => Frame::ManageRequest(json(ty, &payload)?),
        FrameType::ManageResponse => Frame::ManageResponse(json(ty, &payload)?),
        FrameType::RequestHead => Frame::RequestHead(json(ty, &payload)?),
        FrameType::ResponseHead => Frame::ResponseHead(json(ty, &payload)?),
        FrameType::StreamError => Frame::StreamError(json(ty, &payload)?),
        FrameType::Ping | FrameType::Pong => {
            let n = <[u8; 8]>::try_from(&payload[..]).map_err(|_| ProtocolError::Malformed {
                frame: ty.name(),
                reason: format!("payload is {} bytes, expected 8", payload.len()),
            })?;
            let n = u64::from_be_bytes(n);
            if ty == FrameType::Ping {
                Frame::Ping(n)
            } else {
                Frame::Pong(n)
            }
        }
        FrameType::Data => Frame::Data(payload),
        FrameType::End => Frame::End,
    })
}

fn json<T: DeserializeOwned>(ty: FrameType, payload: &[u8]) -> Result<T, ProtocolError> {
    serde_json::from_slice(payload).map_err(|e| ProtocolError::Malformed {
        frame: ty.name(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Credentials, ErrorCode, Limits, Secret, TunnelName};

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello(Hello {
                protocol_versions: vec![1],
                agent_version: "0.1.0".into(),
                tunnel: TunnelName::parse("shop").unwrap(),
                credentials: Credentials::AgentToken {
                    token: Secret::new("t0k"),
                },
            }),
            Frame::Welcome(Welcome {
                protocol_version: 1,
                public_url: "https://r.example/t/shop/mcp".into(),
                relay_version: "0.1.0".into(),
                heartbeat_interval_ms: 1000,
                limits: Limits::default(),
                assertion_keys: Some(serde_json::json!({"keys": []})),
            }),
            Frame::Reject(Reject {
                code: ErrorCode::NAME_TAKEN,
                message: "taken".into(),
            }),
            Frame::Ping(7),
            Frame::Pong(u64::MAX),
            Frame::RenewCert(crate::RenewCert { csr: "MIIB".into() }),
            Frame::Catalog(crate::Catalog {
                policy: Some(crate::PolicyFile {
                    name: "shop.cedar".into(),
                    text: "permit(principal, action, resource);".into(),
                }),
                tools: Some(vec![crate::ToolDescriptor {
                    name: "read_query".into(),
                    annotations: Some(serde_json::json!({"readOnlyHint": true})),
                }]),
            }),
            Frame::PolicyUpdate(crate::PolicyUpdate {
                owner: Some("alice@example.com".into()),
                grants: vec![serde_json::json!({"id": "g1"})],
                open: false,
            }),
            Frame::ManageRequest(crate::ManageRequest::Share {
                tunnel: None,
                subject: "bob@example.com".into(),
                tools: Some(vec!["read_query".into()]),
                read_only: true,
                expires_in_secs: Some(3600),
            }),
            Frame::ManageResponse(crate::ManageResponse::Error {
                code: ErrorCode::FORBIDDEN,
                message: "no".into(),
            }),
            Frame::DeviceUpdate(crate::DeviceUpdate {
                certificate: Some("-----BEGIN CERTIFICATE-----".into()),
                expires_at: Some(1_800_000_000),
                ..Default::default()
            }),
            Frame::GoAway(GoAway {
                code: ErrorCode::SHUTTING_DOWN,
                message: "bye".into(),
            }),
            Frame::RequestHead(RequestHead {
                request_id: 42,
                method: "POST".into(),
                path: "/mcp?x=1".into(),
                headers: vec![("content-type".into(), "application/json".into())],
                deadline_ms: Some(30_000),
                assertion: None,
            }),
            Frame::ResponseHead(ResponseHead {
                status: 200,
                headers: vec![("mcp-session-id".into(), "abc".into())],
            }),
            Frame::Data(Bytes::from_static(b"{\"jsonrpc\":\"2.0\"}")),
            Frame::Data(Bytes::new()),
            Frame::End,
            Frame::StreamError(StreamError {
                code: ErrorCode::UPSTREAM_ERROR,
                message: "connection refused".into(),
            }),
        ]
    }

    #[test]
    fn round_trips_every_frame() {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        for f in samples() {
            encode_frame(&f, &mut buf).unwrap();
        }
        for f in samples() {
            assert_eq!(d.decode(&mut buf).unwrap(), Some(f));
        }
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        d.finish(&buf).unwrap();
    }

    #[test]
    fn decodes_byte_by_byte() {
        let d = FrameDecoder::default();
        let mut all = BytesMut::new();
        for f in samples() {
            encode_frame(&f, &mut all).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in all.iter() {
            buf.put_u8(*b);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, samples());
    }

    #[test]
    fn rejects_unknown_type_from_header_alone() {
        let mut buf = BytesMut::from(&[0x7f, 0, 0, 0, 1][..]);
        assert_eq!(
            FrameDecoder::default().decode(&mut buf),
            Err(ProtocolError::UnknownFrameType(0x7f))
        );
    }

    #[test]
    fn rejects_oversize_before_buffering() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u8(FrameType::Data as u8);
        buf.put_u32(1025);
        let err = d.decode(&mut buf).unwrap_err();
        assert_eq!(err.code(), ErrorCode::FRAME_TOO_LARGE);

        let mut buf = BytesMut::new();
        buf.put_u8(FrameType::RequestHead as u8);
        buf.put_u32((MAX_HEAD_PAYLOAD + 1) as u32);
        assert!(matches!(
            d.decode(&mut buf),
            Err(ProtocolError::FrameTooLarge { .. })
        ));

        let mut buf = BytesMut::new();
        buf.put_u8(FrameType::End as u8);
        buf.put_u32(1);
        assert!(d.decode(&mut buf).is_err(), "End must be empty");
    }

    #[test]
    fn rejects_malformed_payloads() {
        let d = FrameDecoder::default();
        for (ty, payload) in [
            (FrameType::Hello, &b"not json"[..]),
            (FrameType::RequestHead, &b"{}"[..]),
            (FrameType::Ping, &b"1234"[..]),
            (
                FrameType::Hello,
                &br#"{"protocol_versions":[1],"agent_version":"x","tunnel":"BAD NAME","credentials":{"kind":"agent_token","token":"t"}}"#[..],
            ),
        ] {
            let mut buf = BytesMut::new();
            buf.put_u8(ty as u8);
            buf.put_u32(payload.len() as u32);
            buf.extend_from_slice(payload);
            let err = d.decode(&mut buf).unwrap_err();
            assert_eq!(err.code(), ErrorCode::MALFORMED_FRAME, "{ty:?}: {err}");
        }
    }

    #[test]
    fn ignores_unknown_json_fields_for_forward_compatibility() {
        let payload = br#"{"status":204,"headers":[],"future_field":true}"#;
        let mut buf = BytesMut::new();
        buf.put_u8(FrameType::ResponseHead as u8);
        buf.put_u32(payload.len() as u32);
        buf.extend_from_slice(payload);
        let f = FrameDecoder::default().decode(&mut buf).unwrap().unwrap();
        assert!(matches!(f, Frame::ResponseHead(h) if h.status == 204));
    }

    #[test]
    fn truncated_stream_is_an_error() {
        let d = FrameDecoder::default();
        let mut buf = BytesMut::new();
        encode_frame(&Frame::Data(Bytes::from_static(b"hello")), &mut buf).unwrap();
        buf.truncate(7);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(d.finish(&buf).is_err());
    }

    #[test]
    fn encoder_refuses_oversize() {
        let mut buf = BytesMut::new();
        let big = Frame::Data(Bytes::from(vec![0u8; MAX_FRAME_PAYLOAD + 1]));
        assert!(encode_frame(&big, &mut buf).is_err());
        let head = Frame::ResponseHead(ResponseHead {
            status: 200,
            headers: vec![("x".into(), "y".repeat(MAX_HEAD_PAYLOAD))],
        });
        assert!(encode_frame(&head, &mut buf).is_err());
        assert!(buf.is_empty(), "a refused frame leaves nothing behind");
    }
}
