//! Which frame may come next on each kind of stream.
//!
//! ```text
//! request / response stream:  Head ─► Data* ─► End            (StreamError ends it at any point)
//! control stream (relay):     Hello ─► (Ping | Pong | GoAway)*
//! control stream (agent):     Welcome ─► (Ping | Pong | GoAway)*   or   Reject ─► closed
//! ```
//!
//! The I/O shells feed every received frame to one of these before acting on
//! it; an `Err` closes the stream (request streams) or the connection
//! (control stream) with the error's code.

use crate::error::ProtocolError;
use crate::frame::Frame;

/// Which kind of body stream is being received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A request stream, received by the agent (`RequestHead` first).
    Request,
    /// A response, received by the relay (`ResponseHead` first).
    Response,
}

/// Receiver state of a request or response stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamState {
    /// Nothing received yet; the head (or a `StreamError`) must come first.
    AwaitHead(StreamKind),
    /// Head received; body frames until `End`.
    Body,
    /// `End` or `StreamError` received; nothing more may come.
    Done,
}

impl StreamState {
    /// A fresh stream of `kind`.
    pub fn new(kind: StreamKind) -> Self {
        Self::AwaitHead(kind)
    }

    /// Advances on a received frame, or says why the frame is not allowed.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let next = match (*self, frame) {
            (Self::AwaitHead(_) | Self::Body, Frame::StreamError(_)) => Self::Done,
            (Self::AwaitHead(StreamKind::Request), Frame::RequestHead(_))
            | (Self::AwaitHead(StreamKind::Response), Frame::ResponseHead(_))
            | (Self::Body, Frame::Data(_)) => Self::Body,
            (Self::Body, Frame::End) => Self::Done,
            (state, frame) => {
                return Err(ProtocolError::UnexpectedFrame {
                    frame: frame.frame_type().name(),
                    state: match state {
                        Self::AwaitHead(StreamKind::Request) => "waiting for RequestHead",
                        Self::AwaitHead(StreamKind::Response) => "waiting for ResponseHead",
                        Self::Body => "reading the body",
                        Self::Done => "the stream already ended",
                    },
                });
            }
        };
        *self = next;
        Ok(())
    }
}

/// Which end of the control stream is receiving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlSide {
    /// The relay, receiving from the agent.
    Relay,
    /// The agent, receiving from the relay.
    Agent,
}

/// Receiver state of the control stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlState {
    /// Waiting for the opening message (`Hello` at the relay, `Welcome`/`Reject` at the agent).
    Opening(ControlSide),
    /// Established: heartbeats, `GoAway`, device-certificate renewal and
    /// policy sync (`RenewCert`/`Catalog` towards the relay,
    /// `DeviceUpdate`/`PolicyUpdate` towards the agent).
    Open(ControlSide),
    /// The agent received `Reject`; nothing more may come.
    Rejected,
}

impl ControlState {
    /// A fresh control stream as seen by `side`.
    pub fn new(side: ControlSide) -> Self {
        Self::Opening(side)
    }

    /// Advances on a received frame, or says why the frame is not allowed.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        let next = match (*self, frame) {
            (Self::Opening(ControlSide::Relay), Frame::Hello(_)) => Self::Open(ControlSide::Relay),
            (Self::Opening(ControlSide::Agent), Frame::Welcome(_)) => {
                Self::Open(ControlSide::Agent)
            }
            (Self::Opening(ControlSide::Agent), Frame::Reject(_)) => Self::Rejected,
            (Self::Open(side), Frame::Ping(_) | Frame::Pong(_) | Frame::GoAway(_)) => {
                Self::Open(side)
            }
            (Self::Open(ControlSide::Relay), Frame::RenewCert(_) | Frame::Catalog(_)) => {
                Self::Open(ControlSide::Relay)
            }
            (Self::Open(ControlSide::Agent), Frame::DeviceUpdate(_) | Frame::PolicyUpdate(_)) => {
                Self::Open(ControlSide::Agent)
            }
            (state, frame) => {
                return Err(ProtocolError::UnexpectedFrame {
                    frame: frame.frame_type().name(),
                    state: match state {
                        Self::Opening(ControlSide::Relay) => "waiting for Hello",
                        Self::Opening(ControlSide::Agent) => "waiting for Welcome or Reject",
                        Self::Open(_) => "on the open control stream",
                        Self::Rejected => "after Reject",
                    },
                });
            }
        };
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{ErrorCode, GoAway, ResponseHead, StreamError};

    fn data() -> Frame {
        Frame::Data(Bytes::from_static(b"x"))
    }
    fn resp_head() -> Frame {
        Frame::ResponseHead(ResponseHead {
            status: 200,
            headers: vec![],
        })
    }
    fn err() -> Frame {
        Frame::StreamError(StreamError {
            code: ErrorCode::UPSTREAM_ERROR,
            message: "x".into(),
        })
    }

    #[test]
    fn response_happy_path() {
        let mut s = StreamState::new(StreamKind::Response);
        for f in [resp_head(), data(), data(), Frame::End] {
            s.on_frame(&f).unwrap();
        }
        assert_eq!(s, StreamState::Done);
    }

    #[test]
    fn response_out_of_order() {
        let cases: Vec<Vec<Frame>> = vec![
            vec![data()],
            vec![Frame::End],
            vec![resp_head(), resp_head()],
            vec![resp_head(), Frame::End, data()],
            vec![Frame::Ping(1)],
            vec![err(), data()],
        ];
        for frames in cases {
            let mut s = StreamState::new(StreamKind::Response);
            let (last, init) = frames.split_last().unwrap();
            for f in init {
                s.on_frame(f).unwrap();
            }
            let e = s.on_frame(last).unwrap_err();
            assert_eq!(e.code(), ErrorCode::UNEXPECTED_FRAME, "{frames:?}");
        }
    }

    #[test]
    fn stream_error_ends_at_any_point() {
        let mut s = StreamState::new(StreamKind::Response);
        s.on_frame(&err()).unwrap();
        assert_eq!(s, StreamState::Done);
        let mut s = StreamState::new(StreamKind::Response);
        s.on_frame(&resp_head()).unwrap();
        s.on_frame(&err()).unwrap();
        assert_eq!(s, StreamState::Done);
    }

    #[test]
    fn request_needs_request_head() {
        let mut s = StreamState::new(StreamKind::Request);
        assert!(s.on_frame(&resp_head()).is_err());
    }

    #[test]
    fn control_stream_order() {
        let mut relay = ControlState::new(ControlSide::Relay);
        assert!(
            relay.on_frame(&Frame::Ping(1)).is_err(),
            "Hello must come first"
        );
        let mut agent = ControlState::new(ControlSide::Agent);
        agent
            .on_frame(&Frame::Reject(crate::Reject {
                code: ErrorCode::NAME_TAKEN,
                message: String::new(),
            }))
            .unwrap();
        assert!(
            agent.on_frame(&Frame::Ping(1)).is_err(),
            "nothing after Reject"
        );
        let mut open = ControlState::Open(ControlSide::Relay);
        open.on_frame(&Frame::Ping(1)).unwrap();
        open.on_frame(&Frame::GoAway(GoAway {
            code: ErrorCode::SHUTTING_DOWN,
            message: String::new(),
        }))
        .unwrap();
        assert!(open.on_frame(&data()).is_err());
        // Renewal flows one way each: agent asks, relay answers.
        let renew = Frame::RenewCert(crate::RenewCert { csr: String::new() });
        let update = Frame::DeviceUpdate(crate::DeviceUpdate::default());
        open.on_frame(&renew).unwrap();
        assert!(
            open.on_frame(&update).is_err(),
            "the relay is not sent updates"
        );
        let mut at_agent = ControlState::Open(ControlSide::Agent);
        at_agent.on_frame(&update).unwrap();
        assert!(
            at_agent.on_frame(&renew).is_err(),
            "the agent is not asked to renew"
        );
    }
}
