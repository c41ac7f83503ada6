//! Feeds arbitrary bytes, split at arbitrary points, to the frame decoder and
//! the stream sequencers: they must return frames or errors, never panic, and
//! every decoded frame must re-encode and decode to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mcp_tunnel_proto::{
    ControlSide, ControlState, FrameDecoder, StreamKind, StreamState, encode_frame,
};

fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let decoder = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    let mut req = StreamState::new(StreamKind::Request);
    let mut resp = StreamState::new(StreamKind::Response);
    let mut ctl = ControlState::new(ControlSide::Relay);
    let step = usize::from(split).max(1);
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => {
                    let _ = req.on_frame(&frame);
                    let _ = resp.on_frame(&frame);
                    let _ = ctl.on_frame(&frame);
                    let mut again = BytesMut::new();
                    if encode_frame(&frame, &mut again).is_ok() {
                        let back = decoder.decode(&mut again).expect("re-decode").expect("whole");
                        assert_eq!(back, frame);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
