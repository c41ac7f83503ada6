//! Reading and writing [`Frame`]s on QUIC streams.

use bytes::{Bytes, BytesMut};
use mcp_tunnel_proto::frame::{EncodeError, data_header};
use mcp_tunnel_proto::{ErrorCode, Frame, FrameDecoder, ProtocolError, encode_frame};
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncReadExt;

/// How much the reader asks the stream for at a time.
const READ_CHUNK: usize = 4 * 1024;

/// A stream or connection failed underneath a frame reader or writer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer reset (or stopped) the stream with a code.
    #[error("stream reset by peer with code {0}")]
    Reset(ErrorCode),
    /// The connection is gone.
    #[error("connection lost: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// Any other I/O failure.
    #[error("stream I/O failed: {0}")]
    Io(String),
    /// A frame could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl LinkError {
    /// The code to close the stream with when this error is ours to report.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Protocol(p) => p.code(),
            Self::Reset(c) => *c,
            _ => ErrorCode::INTERNAL,
        }
    }
}

fn varint_code(v: quinn::VarInt) -> ErrorCode {
    ErrorCode(u32::try_from(v.into_inner()).unwrap_or(u32::MAX))
}

impl From<quinn::ReadError> for LinkError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => Self::Reset(varint_code(code)),
            quinn::ReadError::ConnectionLost(c) => Self::ConnectionLost(c),
            other => Self::Io(other.to_string()),
        }
    }
}

impl From<quinn::WriteError> for LinkError {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => Self::Reset(varint_code(code)),
            quinn::WriteError::ConnectionLost(c) => Self::ConnectionLost(c),
            other => Self::Io(other.to_string()),
        }
    }
}

impl From<std::io::Error> for LinkError {
    fn from(e: std::io::Error) -> Self {
        match e.downcast::<quinn::ReadError>() {
            Ok(r) => r.into(),
            Err(e) => Self::Io(e.to_string()),
        }
    }
}

/// Reads whole frames from a QUIC receive stream.
#[derive(Debug)]
pub struct FrameReader {
    recv: RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
    finished: bool,
}

impl FrameReader {
    /// Wraps `recv`, accepting `Data` payloads up to `max_data` bytes.
    pub fn new(recv: RecvStream, max_data: usize) -> Self {
        Self {
            recv,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: FrameDecoder::new(max_data),
            finished: false,
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream cleanly
    /// between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(frame));
            }
            if self.finished {
                self.decoder.finish(&self.buf)?;
                return Ok(None);
            }
            self.buf.reserve(READ_CHUNK);
            let n = self.recv.read_buf(&mut self.buf).await?;
            if n == 0 {
                self.finished = true;
            }
        }
    }

    /// Tells the peer to stop sending (we will not read the rest).
    pub fn stop(&mut self, code: ErrorCode) {
        let _ = self.recv.stop(code.0.into());
    }
}

/// Encodes and writes one frame.
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), LinkError> {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// Encodes several frames into one write (fewer packets for small messages).
pub async fn write_frames(send: &mut SendStream, frames: &[Frame]) -> Result<(), LinkError> {
    let mut buf = BytesMut::new();
    for f in frames {
        encode_frame(f, &mut buf)?;
    }
    send.write_all(&buf).await?;
    Ok(())
}

/// Writes a `Data` frame without copying its payload.
pub async fn write_data(send: &mut SendStream, data: Bytes) -> Result<(), LinkError> {
    let header = Bytes::copy_from_slice(&data_header(data.len())?);
    send.write_all_chunks(&mut [header, data]).await?;
    Ok(())
}
