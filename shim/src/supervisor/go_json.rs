//! JSON documents read the way runc (and containerd's Go shim) read them.
//!
//! Go's `encoding/json` does not refuse bytes that are not valid UTF-8 inside a string:
//! each such byte decodes as U+FFFD (`utf8.DecodeRune` consumes one invalid byte at a
//! time). serde_json refuses the whole document. An OCI spec is bytes on Linux (args and
//! env may be any bytes but NUL), and a spec runc accepts must not be refused here:
//! [`lossy_utf8`] turns a document into the text Go would have decoded, byte for byte
//! the same replacement, so that parsing it, and handing runc the result re-encoded,
//! gives the process exactly the argv and environment runc would have given it from the
//! raw bytes. (Outside strings an invalid byte is a syntax error to both, before and
//! after.)

use std::borrow::Cow;

/// `bytes` as Go's JSON decoder sees them: valid UTF-8 unchanged (borrowed), each byte
/// that does not begin a valid UTF-8 sequence replaced by U+FFFD.
pub fn lossy_utf8(bytes: &[u8]) -> Cow<'_, str> {
    let mut rest = match std::str::from_utf8(bytes) {
        Ok(text) => return Cow::Borrowed(text),
        Err(_) => bytes,
    };
    let mut out = String::with_capacity(bytes.len() + 16);
    loop {
        match std::str::from_utf8(rest) {
            Ok(text) => {
                out.push_str(text);
                return Cow::Owned(out);
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                // `valid_up_to` bytes are valid UTF-8 by definition.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                out.push(char::REPLACEMENT_CHARACTER);
                // One byte, as Go: a truncated sequence gives one U+FFFD per byte.
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "\u{fffd}";

    #[test]
    fn valid_text_is_borrowed() {
        assert!(matches!(
            lossy_utf8(b"{\"a\":\"\xc3\xa9\"}"),
            Cow::Borrowed(_)
        ));
        assert_eq!(lossy_utf8(b""), "");
    }

    #[test]
    fn each_invalid_byte_becomes_one_replacement_as_in_go() {
        // Expected values as Go's json.Unmarshal gives them (utf8.DecodeRune: size 1).
        for (raw, want) in [
            (&b"a\xffb"[..], format!("a{R}b")),
            (b"\xfe\xff", format!("{R}{R}")),
            // A truncated 3-byte sequence: two bytes, two replacements (std's lossy
            // conversion would give one).
            (b"x\xe2\x82", format!("x{R}{R}")),
            (b"\xe2\x82y", format!("{R}{R}y")),
            // An encoded surrogate is invalid UTF-8: three bytes, three replacements.
            (b"\xed\xa0\x80", format!("{R}{R}{R}")),
            // Overlong encoding of '/'.
            (b"\xc0\xaf", format!("{R}{R}")),
            // Valid sequences around invalid ones are kept.
            (b"\xc3\xa9\x80\xe2\x82\xac", format!("\u{e9}{R}\u{20ac}")),
        ] {
            assert_eq!(lossy_utf8(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn a_spec_with_raw_bytes_parses_after() {
        let raw = b"{\"args\":[\"echo\",\"a\xffb\"],\"env\":[\"X=\xfe\"]}";
        assert!(serde_json::from_slice::<serde_json::Value>(raw).is_err());
        let v: serde_json::Value = serde_json::from_str(&lossy_utf8(raw)).unwrap();
        assert_eq!(v["args"][1], format!("a{R}b"));
        assert_eq!(v["env"][0], format!("X={R}"));
        // Outside a string it stays a syntax error.
        assert!(serde_json::from_str::<serde_json::Value>(&lossy_utf8(b"{\xff}")).is_err());
    }
}
