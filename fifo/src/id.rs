//! Validation of container and process ids.
//!
//! Ids become directory names (`<depot>/<container-id>/processes/<process-id>/`), so an id
//! must be exactly one harmless path component: anything else could escape the depot or
//! confuse an operator reading `ls` output.

use crate::error::{Error, Result};

/// Longest id accepted, in bytes: the usual NAME_MAX of Linux file systems.
pub const MAX_ID_LEN: usize = 255;

/// Ok if `id` is a plain file name usable as a container or process id: non-empty, at most
/// 255 bytes, not "." or "..", no '/', no NUL, no control characters.
/// Returns `Error::InvalidId { id, reason }` otherwise. Never touches the file system.
pub fn validate_id(id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        Some("is empty")
    } else if id.len() > MAX_ID_LEN {
        Some("is longer than 255 bytes")
    } else if id == "." || id == ".." {
        Some("is \".\" or \"..\"")
    } else if id.contains('/') {
        Some("contains '/'")
    } else if id.contains('\0') {
        Some("contains a NUL byte")
    } else if id.chars().any(char::is_control) {
        Some("contains a control character")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(Error::InvalidId {
            id: id.to_owned(),
            reason,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(id: &str) -> &'static str {
        match validate_id(id) {
            Err(Error::InvalidId { id: got, reason }) => {
                assert_eq!(got, id);
                reason
            }
            other => panic!("{id:?}: expected InvalidId, got {other:?}"),
        }
    }

    #[test]
    fn good_ids() {
        for id in [
            "a",
            "init",
            "exec-1",
            "0123456789abcdef",
            "my_container.v2",
            "...",
            ".hidden",
            "ünïcödé",
            "with space",
            &"x".repeat(255),
        ] {
            validate_id(id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        }
    }

    #[test]
    fn bad_ids() {
        assert_eq!(reason(""), "is empty");
        assert_eq!(reason("."), "is \".\" or \"..\"");
        assert_eq!(reason(".."), "is \".\" or \"..\"");
        assert_eq!(reason("a/b"), "contains '/'");
        assert_eq!(reason("/"), "contains '/'");
        assert_eq!(reason("a\0b"), "contains a NUL byte");
        assert_eq!(reason(&"x".repeat(256)), "is longer than 255 bytes");
        // 128 two-byte characters: 256 bytes although only 128 chars.
        assert_eq!(reason(&"é".repeat(128)), "is longer than 255 bytes");
        assert_eq!(reason("a\nb"), "contains a control character");
        assert_eq!(reason("tab\there"), "contains a control character");
        assert_eq!(reason("esc\x1b[0m"), "contains a control character");
        assert_eq!(reason("del\x7f"), "contains a control character");
        assert_eq!(reason("c1\u{85}"), "contains a control character");
    }
}
