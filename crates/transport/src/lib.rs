//! The thin async shell around [`mcp_tunnel_proto`]: how the relay and the
//! agent configure QUIC, and how they read and write frames on QUIC streams.
//!
//! Everything protocol-shaped (what a frame is, which may come next) lives in
//! the sans-IO `proto` crate; this crate only moves bytes.

pub mod framed;
pub mod quic;

pub use framed::{FrameReader, LinkError, write_data, write_frame, write_frames};
