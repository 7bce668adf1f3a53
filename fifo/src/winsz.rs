//! The `winsz` FIFO: a stream of JSON `{"columns":N,"rows":N}` objects, each a pty resize.
//!
//! Writers may send objects back to back, separated by blanks or newlines or by nothing, and
//! reads may split an object anywhere; the decoder copes with all of that. The messages are
//! flat objects of numbers, so an object is taken to run from a '{' to the next '}': that
//! lets the decoder resynchronise at the next '{' after a truncated object (a writer that
//! died mid-write), which depth counting could not.

use serde::{Deserialize, Serialize};

use crate::error::{snippet, Error, Result};

/// Longest object the decoder buffers; a window-size object is about 30 bytes.
pub const MAX_WINSZ_OBJECT: usize = 4096;

/// A terminal size, as sent on the `winsz` FIFO: `{"columns":80,"rows":24}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Width in character cells.
    pub columns: u16,
    /// Height in character cells.
    pub rows: u16,
}

/// One JSON object followed by '\n', ready to write to a `winsz` FIFO.
pub fn encode_winsz(size: WindowSize) -> String {
    format!("{{\"columns\":{},\"rows\":{}}}\n", size.columns, size.rows)
}

/// Where the decoder stands between two bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum State {
    /// Between objects.
    #[default]
    Between,
    /// Inside an object; its bytes so far are in the buffer.
    InObject,
    /// Dropping the rest of an over-long object (already reported) up to its '}' or the
    /// next '{'.
    Skipping,
}

/// Incremental decoder for the `winsz` FIFO stream. Memory use is bounded by
/// [`MAX_WINSZ_OBJECT`] whatever it is fed. Plain data (serde): a supervisor carries an
/// object read in part across a live upgrade.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinszDecoder {
    state: State,
    /// The current object, from its '{', while `state` is `InObject`.
    buf: Vec<u8>,
    /// Stray bytes seen between objects and not yet reported.
    stray: usize,
}

impl WinszDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes` (any split of the stream); returns, in stream order, every complete
    /// window size found. An incomplete trailing object is kept for the next push.
    ///
    /// Errors come in the list, never stop decoding, and are all `Error::BadWinsz`:
    /// a complete but malformed object (bad JSON, missing field, value beyond u16); an
    /// object cut short by a new '{' (the decoder resynchronises there); an object longer
    /// than [`MAX_WINSZ_OBJECT`] bytes (dropped up to its end); non-blank bytes between
    /// objects (one error per run of them within a push).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<WindowSize>> {
        let mut out = Vec::new();
        for &b in bytes {
            match self.state {
                State::Between | State::Skipping if b == b'{' => {
                    self.flush_stray(&mut out);
                    self.start_object();
                }
                State::Between => {
                    if !b.is_ascii_whitespace() {
                        self.stray += 1;
                    }
                }
                State::Skipping => {
                    if b == b'}' {
                        self.state = State::Between;
                    }
                }
                State::InObject => match b {
                    b'{' => {
                        out.push(Err(bad(format!(
                            "incomplete object {:?} cut short by a new '{{'",
                            snippet(&String::from_utf8_lossy(&self.buf))
                        ))));
                        self.start_object();
                    }
                    b'}' => {
                        self.buf.push(b);
                        out.push(
                            serde_json::from_slice::<WindowSize>(&self.buf).map_err(|e| {
                                bad(format!(
                                    "{:?}: {e}",
                                    snippet(&String::from_utf8_lossy(&self.buf))
                                ))
                            }),
                        );
                        self.end_object();
                    }
                    _ if self.buf.len() >= MAX_WINSZ_OBJECT => {
                        out.push(Err(bad(format!(
                            "object longer than {MAX_WINSZ_OBJECT} bytes"
                        ))));
                        self.end_object();
                        self.state = State::Skipping;
                    }
                    _ => self.buf.push(b),
                },
            }
        }
        self.flush_stray(&mut out);
        out
    }

    fn start_object(&mut self) {
        self.buf.clear();
        self.buf.push(b'{');
        self.state = State::InObject;
    }

    fn end_object(&mut self) {
        self.buf.clear();
        // Give back memory an over-long object took, keeping a small buffer for the next.
        self.buf.shrink_to(64);
        self.state = State::Between;
    }

    fn flush_stray(&mut self, out: &mut Vec<Result<WindowSize>>) {
        if self.stray > 0 {
            out.push(Err(bad(format!(
                "{} unexpected bytes between objects",
                self.stray
            ))));
            self.stray = 0;
        }
    }

    /// Bytes currently buffered (for tests and diagnostics).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

fn bad(reason: String) -> Error {
    Error::BadWinsz { reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W80: WindowSize = WindowSize {
        columns: 80,
        rows: 24,
    };
    const W120: WindowSize = WindowSize {
        columns: 120,
        rows: 40,
    };

    fn ok(v: Vec<Result<WindowSize>>) -> Vec<WindowSize> {
        v.into_iter().map(|r| r.unwrap()).collect()
    }

    fn is_bad(r: &Result<WindowSize>) -> bool {
        matches!(r, Err(Error::BadWinsz { .. }))
    }

    #[test]
    fn encode_is_one_line_of_json() {
        assert_eq!(encode_winsz(W80), "{\"columns\":80,\"rows\":24}\n");
        assert_eq!(
            serde_json::to_string(&W80).unwrap(),
            "{\"columns\":80,\"rows\":24}"
        );
        let mut d = WinszDecoder::new();
        assert_eq!(ok(d.push(encode_winsz(W120).as_bytes())), [W120]);
    }

    #[test]
    fn single_object() {
        let mut d = WinszDecoder::new();
        assert_eq!(ok(d.push(br#"{"columns":80,"rows":24}"#)), [W80]);
        assert_eq!(d.buffered(), 0);
        // Field order and blanks inside do not matter.
        assert_eq!(ok(d.push(b"{ \"rows\" : 24 ,\n \"columns\" : 80 }")), [W80]);
    }

    #[test]
    fn two_objects_without_separator() {
        let mut d = WinszDecoder::new();
        let got = d.push(br#"{"columns":80,"rows":24}{"columns":120,"rows":40}"#);
        assert_eq!(ok(got), [W80, W120]);
    }

    #[test]
    fn whitespace_between_objects() {
        let mut d = WinszDecoder::new();
        let got =
            d.push(b"\n  {\"columns\":80,\"rows\":24}\n\t\r\n {\"columns\":120,\"rows\":40}\n");
        assert_eq!(ok(got), [W80, W120]);
    }

    #[test]
    fn object_split_byte_by_byte_over_pushes() {
        let mut d = WinszDecoder::new();
        let text = br#"{"columns":80,"rows":24}"#;
        let mut got = Vec::new();
        // Three pushes: two single bytes, then the rest one byte at a time.
        assert!(d.push(&text[..1]).is_empty());
        assert!(d.push(&text[1..2]).is_empty());
        for b in &text[2..] {
            got.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(ok(got), [W80]);

        let mut d = WinszDecoder::new();
        assert!(d.push(&text[..7]).is_empty());
        assert!(d.push(&text[7..15]).is_empty());
        assert_eq!(ok(d.push(&text[15..])), [W80]);
    }

    #[test]
    fn malformed_then_good() {
        let mut d = WinszDecoder::new();
        let got = d.push(br#"{"columns":"wide","rows":24}{"columns":80,"rows":24}"#);
        assert_eq!(got.len(), 2);
        assert!(is_bad(&got[0]), "{got:?}");
        assert_eq!(got[1].as_ref().unwrap(), &W80);

        // Truncated object: resynchronises at the next '{'.
        let got = d.push(br#"{"colu{"columns":120,"rows":40}"#);
        assert_eq!(got.len(), 2);
        assert!(is_bad(&got[0]));
        assert_eq!(got[1].as_ref().unwrap(), &W120);

        // Missing field, not JSON, nested object.
        for text in [&br#"{"columns":80}"#[..], b"{not json}", b"{}"] {
            let got = d.push(text);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(is_bad(&got[0]));
        }
        assert_eq!(ok(d.push(br#"{"columns":80,"rows":24}"#)), [W80]);
    }

    #[test]
    fn out_of_range_values() {
        let mut d = WinszDecoder::new();
        for text in [
            &br#"{"columns":65536,"rows":24}"#[..],
            br#"{"columns":80,"rows":-1}"#,
            br#"{"columns":80.5,"rows":24}"#,
            br#"{"columns":99999999999999999999999,"rows":24}"#,
        ] {
            let got = d.push(text);
            assert_eq!(got.len(), 1);
            assert!(is_bad(&got[0]), "{got:?}");
        }
        assert_eq!(
            ok(d.push(br#"{"columns":65535,"rows":0}"#)),
            [WindowSize {
                columns: 65535,
                rows: 0
            }]
        );
    }

    #[test]
    fn stray_bytes_between_objects() {
        let mut d = WinszDecoder::new();
        let got = d.push(br#"junk{"columns":80,"rows":24}}more"#);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(is_bad(&got[0]));
        assert_eq!(got[1].as_ref().unwrap(), &W80);
        assert!(is_bad(&got[2]));
    }

    #[test]
    fn garbage_does_not_grow_memory() {
        let mut d = WinszDecoder::new();
        let junk = vec![b'x'; 1 << 20];
        let got = d.push(&junk);
        assert_eq!(got.len(), 1);
        assert_eq!(d.buffered(), 0);

        // An endless object is cut at the bound, then the decoder recovers.
        let mut got = d.push(b"{\"columns\":");
        for _ in 0..100 {
            got.extend(d.push(&junk[..10_000]));
            assert!(d.buffered() <= MAX_WINSZ_OBJECT);
        }
        assert_eq!(got.len(), 1, "one error for the over-long object");
        assert!(is_bad(&got[0]));
        assert!(d.buf.capacity() <= 2 * MAX_WINSZ_OBJECT);
        // The tail of the over-long object up to its '}' is dropped silently.
        assert_eq!(ok(d.push(br#"xx}{"columns":80,"rows":24}"#)), [W80]);
        assert!(d.buf.capacity() <= MAX_WINSZ_OBJECT);
    }
}
