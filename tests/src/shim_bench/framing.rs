//! ttrpc's frame header, the one piece of the wire the bench's client, its stand-in events
//! service and its floor server all read and write: length (4, big-endian), stream id (4),
//! message type (1), flags (1), then `length` bytes of body.

/// The header's size.
pub const HEADER: usize = 10;
/// ttrpc's largest frame body; a longer one ends the connection.
pub const MAX_FRAME: usize = 4 << 20;
/// ttrpc message types.
pub const REQUEST: u8 = 1;
pub const RESPONSE: u8 = 2;

/// One frame's header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The body's length in bytes (not bounded here: see [`MAX_FRAME`]).
    pub len: usize,
    /// The stream (call) the frame belongs to; a client's are odd.
    pub stream: u32,
    /// [`REQUEST`], [`RESPONSE`] or another type a reader skips.
    pub kind: u8,
    /// Flags (none of the bench's frames set any).
    pub flags: u8,
}

impl Header {
    /// Decodes the ten header bytes (every bit pattern is a header).
    pub fn parse(bytes: &[u8; HEADER]) -> Header {
        Header {
            len: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize,
            stream: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            kind: bytes[8],
            flags: bytes[9],
        }
    }

    /// The header of a request of `len` body bytes on `stream`; `None` when `len` does
    /// not fit ttrpc's 32-bit length.
    pub fn request(stream: u32, len: usize) -> Option<[u8; HEADER]> {
        let len = u32::try_from(len).ok()?;
        let mut out = [0u8; HEADER];
        out[..4].copy_from_slice(&len.to_be_bytes());
        out[4..8].copy_from_slice(&stream.to_be_bytes());
        out[8] = REQUEST;
        Some(out)
    }
}

/// A whole frame: the successful, empty response to the request on `stream`. An empty
/// `Response` (no status: OK; no payload: `Empty`) encodes to no bytes, so the frame is
/// its header alone: what containerd answers `Forward` and `Publish` with, and what any
/// call whose reply type is `Empty` gets.
pub fn empty_response(stream: u32) -> [u8; HEADER] {
    let mut out = [0u8; HEADER];
    out[4..8].copy_from_slice(&stream.to_be_bytes());
    out[8] = RESPONSE;
    out
}

/// Why a byte stream is not ttrpc frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A header announces a body longer than the reader accepts.
    TooLong { len: usize, bound: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLong { len, bound } => {
                write!(f, "a {len}-byte frame (this reader's bound is {bound})")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// The first whole frame at the start of `buf`, for a reader that gathers bytes as they
/// come (a nonblocking socket): its header and the length of header and body, which the
/// caller then drops from `buf`; `Ok(None)` while the frame is not all there yet; an
/// error when its body would be longer than `bound` (the caller's buffer would then never
/// hold it: the connection is to be closed).
pub fn next_frame(buf: &[u8], bound: usize) -> Result<Option<(Header, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER>() else {
        return Ok(None);
    };
    let header = Header::parse(head);
    if header.len > bound {
        return Err(FrameError::TooLong {
            len: header.len,
            bound,
        });
    }
    let whole = HEADER + header.len;
    Ok((buf.len() >= whole).then_some((header, whole)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_header_reads_back() {
        let h = Header::request(7, 300).expect("fits");
        assert_eq!(
            Header::parse(&h),
            Header {
                len: 300,
                stream: 7,
                kind: REQUEST,
                flags: 0
            }
        );
    }

    #[test]
    fn the_empty_response_is_a_bare_header_on_the_same_stream() {
        let r = empty_response(0x0102_0304);
        assert_eq!(r, [0, 0, 0, 0, 1, 2, 3, 4, RESPONSE, 0]);
        let h = Header::parse(&r);
        assert_eq!((h.len, h.stream, h.kind), (0, 0x0102_0304, RESPONSE));
    }

    #[test]
    fn frames_are_taken_whole_or_not_at_all() {
        let mut bytes = Header::request(1, 3).expect("fits").to_vec();
        // Not even a header, then a header without its body.
        assert_eq!(next_frame(&bytes[..5], 64), Ok(None));
        assert_eq!(next_frame(&bytes, 64), Ok(None));
        bytes.extend_from_slice(b"abc");
        // A second frame begun behind the first is left for later.
        bytes.extend_from_slice(&Header::request(3, 0).expect("fits")[..4]);
        let (h, n) = next_frame(&bytes, 64).expect("valid").expect("whole");
        assert_eq!((h.stream, h.len, n), (1, 3, HEADER + 3));
    }

    #[test]
    fn a_frame_longer_than_the_bound_is_an_error() {
        let bytes = Header::request(1, 65).expect("fits");
        assert_eq!(
            next_frame(&bytes, 64),
            Err(FrameError::TooLong { len: 65, bound: 64 })
        );
        // At the bound it is awaited, not refused.
        let bytes = Header::request(1, 64).expect("fits");
        assert_eq!(next_frame(&bytes, 64), Ok(None));
    }
}
