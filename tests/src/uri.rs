//! What the tests need of URIs: containerd's `binary://` logger URIs carry their
//! arguments in the query.

/// Percent-encodes what a URI query cannot hold as it is (everything but ASCII letters,
/// digits and `-_./`).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
