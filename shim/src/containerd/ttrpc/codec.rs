//! The ttrpc frame codec, shared by the shim's server and its event client.
//!
//! A frame is a 10-byte header (u32 body length, u32 stream id, u8 message type, u8
//! flags, all big endian) followed by the body: a protobuf `ttrpc.Request` (type 1) or
//! `ttrpc.Response` (type 2); type 3 carries data of streaming calls, which neither side
//! of tether uses. A client numbers its streams with odd ids, starting at 1, and the server
//! answers on the stream id of the request.

use std::io::{self, Read};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 10;
/// Largest frame body either side of ttrpc accepts (4 MiB in Go and Rust ttrpc).
pub const MAX_MESSAGE: usize = 4 << 20;

/// What a frame carries (the header's type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// A `ttrpc.Request`, client to server.
    Request,
    /// A `ttrpc.Response`, server to client.
    Response,
    /// Data of a streaming call.
    Data,
}

impl MessageType {
    /// The header's type byte.
    pub fn byte(self) -> u8 {
        match self {
            MessageType::Request => 1,
            MessageType::Response => 2,
            MessageType::Data => 3,
        }
    }

    /// The message type a header's type byte names, if it names one.
    pub fn from_byte(b: u8) -> Option<MessageType> {
        match b {
            1 => Some(MessageType::Request),
            2 => Some(MessageType::Response),
            3 => Some(MessageType::Data),
            _ => None,
        }
    }
}

/// A frame declared (or asked to be) longer than ttrpc allows: the peer broke the
/// protocol, or a message is too large to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ttrpc frame of {len} bytes exceeds the {MAX_MESSAGE}-byte limit")]
pub struct OversizedFrame {
    /// The body length the frame header declared, or the body's length.
    pub len: usize,
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the body that follows, at most [`MAX_MESSAGE`].
    pub len: usize,
    /// The call the frame belongs to.
    pub stream_id: u32,
    /// The raw type byte ([`MessageType::from_byte`] names it; unknown types are kept so a
    /// reader can skip them).
    pub kind: u8,
    /// The flags byte (only streaming calls use it).
    pub flags: u8,
}

impl FrameHeader {
    /// Decodes the header at the front of `buf`: `Ok(None)` while fewer than
    /// [`HEADER_LEN`] bytes are there, `Err` when it declares a body over [`MAX_MESSAGE`].
    /// Never panics.
    pub fn decode(buf: &[u8]) -> Result<Option<FrameHeader>, OversizedFrame> {
        let Some(&[l0, l1, l2, l3, s0, s1, s2, s3, kind, flags]) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        // A u32 always fits in a usize on the 32- and 64-bit targets the shim builds for.
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > MAX_MESSAGE {
            return Err(OversizedFrame { len });
        }
        Ok(Some(FrameHeader {
            len,
            stream_id: u32::from_be_bytes([s0, s1, s2, s3]),
            kind,
            flags,
        }))
    }

    /// The message type, if the type byte names one.
    pub fn message_type(&self) -> Option<MessageType> {
        MessageType::from_byte(self.kind)
    }
}

/// Appends one frame (header and `body`) to `out`. Err, with `out` untouched, when `body`
/// is larger than [`MAX_MESSAGE`].
pub fn append_frame(
    out: &mut Vec<u8>,
    stream_id: u32,
    kind: MessageType,
    body: &[u8],
) -> Result<(), OversizedFrame> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= MAX_MESSAGE)
        .ok_or(OversizedFrame { len: body.len() })?;
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&stream_id.to_be_bytes());
    out.push(kind.byte());
    out.push(0);
    out.extend_from_slice(body);
    Ok(())
}

/// One frame (header and `body`) as a new buffer; see [`append_frame`].
pub fn frame(stream_id: u32, kind: MessageType, body: &[u8]) -> Result<Vec<u8>, OversizedFrame> {
    let mut out = Vec::new();
    append_frame(&mut out, stream_id, kind, body)?;
    Ok(out)
}

/// Why [`read_frame`] returned no frame.
#[derive(Debug, thiserror::Error)]
pub enum ReadFrameError {
    /// Reading failed (or the peer closed the stream mid-frame).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The header declared a body over [`MAX_MESSAGE`].
    #[error(transparent)]
    Oversized(#[from] OversizedFrame),
}

/// Reads one whole frame from a blocking reader (a client waiting for its answer).
pub fn read_frame<R: Read>(r: &mut R) -> Result<(FrameHeader, Vec<u8>), ReadFrameError> {
    let mut raw = [0u8; HEADER_LEN];
    r.read_exact(&mut raw)?;
    let header = FrameHeader::decode(&raw)?.ok_or(io::Error::from(io::ErrorKind::UnexpectedEof))?;
    let mut body = vec![0u8; header.len];
    r.read_exact(&mut body)?;
    Ok((header, body))
}

/// The stream ids of one client connection: odd, from 1 up; `None` once they run out
/// (the client must open a new connection).
#[derive(Debug, Clone)]
pub struct ClientStreamIds {
    next: Option<u32>,
}

impl Default for ClientStreamIds {
    fn default() -> Self {
        ClientStreamIds { next: Some(1) }
    }
}

impl ClientStreamIds {
    /// The id for the next call.
    pub fn next_id(&mut self) -> Option<u32> {
        let id = self.next?;
        self.next = id.checked_add(2);
        Some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let f = frame(7, MessageType::Response, b"abc").unwrap();
        assert_eq!(f, [0, 0, 0, 3, 0, 0, 0, 7, 2, 0, b'a', b'b', b'c']);
        let h = FrameHeader::decode(&f).unwrap().unwrap();
        assert_eq!(
            h,
            FrameHeader {
                len: 3,
                stream_id: 7,
                kind: 2,
                flags: 0
            }
        );
        assert_eq!(h.message_type(), Some(MessageType::Response));
        let (h2, body) = read_frame(&mut &f[..]).unwrap();
        assert_eq!((h2, body.as_slice()), (h, &b"abc"[..]));
    }

    #[test]
    fn short_and_oversized_headers() {
        assert_eq!(FrameHeader::decode(&[0; HEADER_LEN - 1]), Ok(None));
        let mut big = (u32::try_from(MAX_MESSAGE).unwrap() + 1)
            .to_be_bytes()
            .to_vec();
        big.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        assert_eq!(
            FrameHeader::decode(&big),
            Err(OversizedFrame {
                len: MAX_MESSAGE + 1
            })
        );
        assert!(matches!(
            read_frame(&mut &big[..]),
            Err(ReadFrameError::Oversized(_))
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 5, 0, 0, 0, 1, 2, 0, 1][..]),
            Err(ReadFrameError::Io(_))
        ));
        let mut out = vec![9];
        assert!(
            append_frame(&mut out, 1, MessageType::Request, &vec![0; MAX_MESSAGE + 1]).is_err()
        );
        assert_eq!(out, [9]);
        assert!(append_frame(&mut out, 1, MessageType::Request, &vec![0; MAX_MESSAGE]).is_ok());
    }

    #[test]
    fn unknown_types_are_kept_raw() {
        let h = FrameHeader::decode(&[0, 0, 0, 0, 0, 0, 0, 1, 9, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.kind, h.flags, h.message_type()), (9, 4, None));
        for t in [
            MessageType::Request,
            MessageType::Response,
            MessageType::Data,
        ] {
            assert_eq!(MessageType::from_byte(t.byte()), Some(t));
        }
    }

    #[test]
    fn client_stream_ids_are_odd_and_run_out() {
        let mut ids = ClientStreamIds::default();
        assert_eq!(
            (ids.next_id(), ids.next_id(), ids.next_id()),
            (Some(1), Some(3), Some(5))
        );
        let mut ids = ClientStreamIds {
            next: Some(u32::MAX),
        };
        assert_eq!(ids.next_id(), Some(u32::MAX));
        assert_eq!(ids.next_id(), None);
    }
}
