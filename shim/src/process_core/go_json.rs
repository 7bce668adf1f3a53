//! JSON documents read the way runc (and containerd's Go shim) read them.
//!
//! Go's `encoding/json` does not refuse bytes that are not valid UTF-8 inside a string:
//! each such byte decodes as U+FFFD (`utf8.DecodeRune` consumes one invalid byte at a
//! time). Nor does it refuse a `\uXXXX` escape of a UTF-16 surrogate that is not half of
//! a pair: that decodes as U+FFFD too. serde_json refuses the whole document in both
//! cases. An OCI spec is bytes on Linux (args and env may be any bytes but NUL), and a
//! spec runc accepts must not be refused here: [`as_go_reads`] turns a document into
//! text serde_json decodes to exactly what Go decodes, so that parsing it, and handing
//! runc the result re-encoded, gives the process the argv and environment runc would
//! have given it from the original. (Outside strings an invalid byte is a syntax error
//! to both, before and after.)
//!
//! Hand-written on purpose: no JSON crate decodes invalid UTF-8 and lone surrogates as
//! Go does (serde_json and the others refuse the document, or replace more than Go).
//! This is only that rewrite, a pass over the bytes; the parsing is serde_json's.

/// `bytes` made into text that serde_json decodes as Go decodes `bytes`: [`lossy_utf8`],
/// then [`lone_surrogates_replaced`]. Borrowed when nothing had to change.
pub fn as_go_reads(bytes: &[u8]) -> Cow<'_, str> {
    match lossy_utf8(bytes) {
        Cow::Borrowed(text) => lone_surrogates_replaced(text),
        Cow::Owned(text) => Cow::Owned(lone_surrogates_replaced(&text).into_owned()),
    }
}

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

/// `text` with every `\uXXXX` escape (inside a JSON string) of a UTF-16 surrogate that
/// does not form a pair with the escape right after it replaced by `\ufffd`, as Go's
/// decoder reads it; a valid pair, every other escape and everything outside strings
/// are kept as they are (malformed escapes stay for the parser to refuse).
pub fn lone_surrogates_replaced(text: &str) -> Cow<'_, str> {
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    // Bytes of `text` before `copied` are in `out` already (when it exists).
    let mut copied = 0;
    let mut in_string = false;
    let mut i = 0;
    while i < b.len() {
        match (in_string, b[i]) {
            (false, b'"') => in_string = true,
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                let Some(unit) = utf16_escape(b, i) else {
                    // Any other escape: two bytes, whatever the second one is.
                    i += 2;
                    continue;
                };
                if !(0xd800..=0xdfff).contains(&unit) {
                    i += 6;
                    continue;
                }
                let paired = (0xd800..=0xdbff).contains(&unit)
                    && utf16_escape(b, i + 6).is_some_and(|u| (0xdc00..=0xdfff).contains(&u));
                if paired {
                    i += 12;
                    continue;
                }
                let o = out.get_or_insert_with(|| String::with_capacity(text.len()));
                o.push_str(&text[copied..i]);
                o.push_str("\\ufffd");
                i += 6;
                copied = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut o) => {
            o.push_str(&text[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The code unit of a `\uXXXX` escape starting at `b[i]`, if there is one.
fn utf16_escape(b: &[u8], i: usize) -> Option<u32> {
    let esc = b.get(i..i + 6)?;
    if esc[0] != b'\\' || esc[1] != b'u' {
        return None;
    }
    let hex = std::str::from_utf8(&esc[2..]).ok()?;
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
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

    /// What serde_json makes of the string in `json` after the rewrite.
    fn decoded(json: &str) -> String {
        let v: serde_json::Value = serde_json::from_str(&as_go_reads(json.as_bytes())).unwrap();
        v.as_str().unwrap().to_string()
    }

    #[test]
    fn lone_surrogate_escapes_become_replacements_as_in_go() {
        // Expected values as Go's json.Unmarshal gives them.
        for (json, want) in [
            (r#""a\ud800b""#, format!("a{R}b")),
            (r#""\udc00""#, R.to_string()),
            // A high surrogate followed by a non-surrogate escape: both decode.
            (r#""\ud800\u0041""#, format!("{R}A")),
            // Two high surrogates, then a low one: the second pair is valid.
            (r#""\ud800\ud83d\ude00""#, format!("{R}\u{1f600}")),
            // A valid pair is kept.
            (r#""\ud83d\ude00""#, "\u{1f600}".to_string()),
            // Lower-case and upper-case hex.
            (r#""\uDBFF\uDFFF""#, "\u{10ffff}".to_string()),
            // An escaped backslash before "u" is no escape of a surrogate.
            (r#""\\ud800""#, r"\ud800".to_string()),
        ] {
            assert_eq!(decoded(json), want, "{json}");
        }
    }

    #[test]
    fn text_without_lone_surrogates_is_borrowed_and_outside_strings_is_untouched() {
        for json in [r#"{"a":"\ud83d\ude00","b":"\n\"\\"}"#, "[1, 2]", ""] {
            assert!(
                matches!(lone_surrogates_replaced(json), Cow::Borrowed(_)),
                "{json}"
            );
        }
        // Not in a string: left for the parser to refuse, as Go does.
        assert_eq!(lone_surrogates_replaced(r"[\ud800]"), r"[\ud800]");
        // Malformed escapes stay too.
        assert_eq!(lone_surrogates_replaced(r#""\ud8""#), r#""\ud8""#);
        assert!(serde_json::from_str::<serde_json::Value>(&as_go_reads(br#""\ud8""#)).is_err());
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
