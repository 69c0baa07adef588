//! Server frames in their wire form (RFC 6455 §5.2): a header formatted by tungstenite and the
//! payload's shared bytes, which every recipient's connection writes as they are.
//!
//! The hub encodes each envelope once; here each frame gets its header, also once: a fan-out
//! hands the same frame to every recipient in a row, and the header of an unmasked, final text
//! frame depends on nothing but the payload's length, so [`Encoder`] formats a header only when
//! the length changes. The payload is never copied: a [`WireFrame`] holds a clone of the hub's
//! `Bytes` (a reference count), and the connection's vectored write sends header and payload
//! straight from there.

use bytes::Bytes;

use async_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use async_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The longest header of an unmasked frame: 2 bytes and a 64-bit length (RFC 6455 §5.2).
const MAX_HEAD: usize = 10;

/// One server frame ready for the wire: header and payload, written in this order.
#[derive(Clone)]
pub(crate) struct WireFrame {
    head: Head,
    payload: Bytes,
}

/// A formatted frame header, inline.
#[derive(Clone, Copy)]
struct Head {
    bytes: [u8; MAX_HEAD],
    len: u8,
}

impl Head {
    fn new(opcode: OpCode, payload_len: usize) -> Head {
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default() // final, no reserved bits, no mask: a server frame
        };
        let mut bytes = [0u8; MAX_HEAD];
        let mut out = &mut bytes[..];
        // An unmasked header always fits MAX_HEAD bytes, and writing to a slice cannot fail
        // otherwise.
        header
            .format(payload_len as u64, &mut out)
            .expect("an unmasked frame header fits 10 bytes");
        let len = (MAX_HEAD - out.len()) as u8;
        Head { bytes, len }
    }
}

impl WireFrame {
    /// A Ping with an empty payload (RFC 6455 §5.5.2).
    pub(crate) fn ping() -> WireFrame {
        WireFrame {
            head: Head::new(OpCode::Control(Control::Ping), 0),
            payload: Bytes::new(),
        }
    }

    /// The header bytes.
    pub(crate) fn head(&self) -> &[u8] {
        &self.head.bytes[..usize::from(self.head.len)]
    }

    /// The payload bytes, shared with every other recipient.
    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Header and payload: the bytes this frame takes on the wire.
    pub(crate) fn wire_len(&self) -> usize {
        usize::from(self.head.len) + self.payload.len()
    }

    /// The payload's length: what the hub counts for this frame.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload.len()
    }
}

/// Makes the wire form of the hub's frames, formatting each text header once per length.
#[derive(Default)]
pub(crate) struct Encoder {
    /// The header made last, and the payload length it is for.
    last_text: Option<(usize, Head)>,
}

impl Encoder {
    /// The hub's JSON envelope as a text frame (RFC 6455 §5.6). The bytes are not checked for
    /// UTF-8 again: the hub encodes every envelope from valid strings.
    pub(crate) fn text(&mut self, payload: Bytes) -> WireFrame {
        let len = payload.len();
        let head = match self.last_text {
            Some((last, head)) if last == len => head,
            _ => {
                let head = Head::new(OpCode::Data(Data::Text), len);
                self.last_text = Some((len, head));
                head
            }
        };
        WireFrame { head, payload }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use async_tungstenite::tungstenite::protocol::frame::Frame;

    /// The header tungstenite itself writes for the same frame.
    fn tungstenite_bytes(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let frame = match opcode {
            OpCode::Data(_) => Frame::message(payload.to_vec(), opcode, true),
            OpCode::Control(_) => Frame::ping(payload.to_vec()),
        };
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    #[test]
    fn frames_are_tungstenites_own_encoding() {
        let mut encoder = Encoder::default();
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let payload = Bytes::from(vec![b'x'; len]);
            for _ in 0..2 {
                let frame = encoder.text(payload.clone());
                let mut wire = frame.head().to_vec();
                wire.extend_from_slice(frame.payload());
                assert_eq!(wire, tungstenite_bytes(OpCode::Data(Data::Text), &payload));
                assert_eq!(frame.wire_len(), wire.len());
                assert_eq!(frame.payload_len(), len);
                assert_eq!(
                    frame.payload().as_ptr(),
                    payload.as_ptr(),
                    "shared, not copied"
                );
            }
        }
        let ping = WireFrame::ping();
        assert_eq!(
            ping.head(),
            tungstenite_bytes(OpCode::Control(Control::Ping), &[])
        );
        assert_eq!(ping.wire_len(), 2);
    }
}
