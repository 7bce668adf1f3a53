//! The `binary://` and `binary-v2://` URI: which logger to run, with which arguments and
//! environment, parsed as Go's `net/url` and containerd read it (the parent module says
//! what each part becomes). Pure string work: nothing here starts or opens anything.

use std::io;
use std::path::PathBuf;

/// Query parameters with this prefix are environment variables of the logger.
const ENV_PREFIX: &str = "env.";
/// Set from the caller's ids only; `env.` parameters cannot override them (as containerd).
const RESERVED_ENV: [&str; 2] = ["CONTAINER_ID", "CONTAINER_NAMESPACE"];

/// The legacy scheme: EOF on fd 5 counts as ready.
const SCHEME: &str = "binary://";
/// The strict scheme: ready only once a byte arrived on fd 5.
const SCHEME_V2: &str = "binary-v2://";

/// Whether `uri` names a logging binary (`binary://` or `binary-v2://`).
pub fn is_logger_uri(uri: &str) -> bool {
    uri.starts_with(SCHEME) || uri.starts_with(SCHEME_V2)
}

/// A parsed `binary://` or `binary-v2://` URI: what to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerSpec {
    /// The logger binary (absolute).
    pub path: PathBuf,
    /// argv\[1..\]: the query's keys and values, flattened, sorted by key.
    pub args: Vec<String>,
    /// `env.NAME=value` parameters, sorted by name.
    pub env: Vec<(String, String)>,
    /// `binary-v2://`: the logger is ready only once it wrote a byte to fd 5.
    pub strict_ready: bool,
}

fn invalid(uri: &str, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("stdio {uri:?}: {why}"))
}

/// Parses `binary:///abs/path?k=v&...` or `binary-v2:///abs/path?k=v&...` (the scheme must
/// be there). Percent-escapes are decoded (and `+` in the query is a space), as Go's
/// `net/url` does; a host part, an empty path, bad escapes, `;` separators and NUL bytes are
/// refused.
pub fn parse(uri: &str) -> io::Result<LoggerSpec> {
    let (scheme, rest, strict_ready) = if let Some(rest) = uri.strip_prefix(SCHEME_V2) {
        (SCHEME_V2, rest, true)
    } else if let Some(rest) = uri.strip_prefix(SCHEME) {
        (SCHEME, rest, false)
    } else {
        return Err(invalid(uri, "not a binary:// or binary-v2:// URI"));
    };
    let rest = rest.split('#').next().unwrap_or(rest);
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !location.is_empty() && !location.starts_with('/') {
        return Err(invalid(
            uri,
            format!("a {scheme} logger URI has no host: write {scheme}/absolute/path"),
        ));
    }
    let path = unescape(location, false).map_err(|e| invalid(uri, e))?;
    if path.is_empty() {
        return Err(invalid(uri, "no logger path"));
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        if part.contains(';') {
            return Err(invalid(uri, "';' is not a query separator (use '&')"));
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let k = unescape(k, true).map_err(|e| invalid(uri, e))?;
        let v = unescape(v, true).map_err(|e| invalid(uri, e))?;
        // Go keeps every value and containerd uses the first.
        if !k.is_empty() && !pairs.iter().any(|(seen, _)| *seen == k) {
            pairs.push((k, v));
        }
    }
    pairs.sort();
    let mut spec = LoggerSpec {
        path: PathBuf::from(path),
        args: Vec::new(),
        env: Vec::new(),
        strict_ready,
    };
    for (k, v) in pairs {
        if let Some(name) = k.strip_prefix(ENV_PREFIX) {
            if name.is_empty() || name.contains('=') {
                return Err(invalid(uri, format!("bad environment name {name:?}")));
            }
            if !RESERVED_ENV.contains(&name) {
                spec.env.push((name.to_string(), v));
            }
        } else {
            spec.args.push(k);
            spec.args.push(v);
        }
    }
    Ok(spec)
}

/// Why a part of a logger URI does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum UnescapeError {
    /// A `%` not followed by two hex digits.
    #[error("bad escape in {0:?}")]
    BadEscape(String),
    /// `%00` somewhere: no NUL can reach argv or the environment.
    #[error("NUL byte in {0:?}")]
    Nul(String),
    /// The decoded bytes are not UTF-8.
    #[error("{0:?} is not UTF-8 once decoded")]
    NotUtf8(String),
}

/// Decodes `%XX` escapes (and `+` as a space in a query) into UTF-8 without NUL.
fn unescape(s: &str, query: bool) -> Result<String, UnescapeError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| UnescapeError::BadEscape(s.to_string()))?;
                out.push(hex);
                i += 3;
            }
            b'+' if query => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return Err(UnescapeError::Nul(s.to_string()));
    }
    String::from_utf8(out).map_err(|_| UnescapeError::NotUtf8(s.to_string()))
}
