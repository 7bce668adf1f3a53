//! Extracting runc's own error message from its log (`--log-format json`) and from its stderr.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// At most this many bytes of a log region are examined (the tail is kept).
const MAX_LOG_READ: u64 = 1 << 20;

/// Returns the `msg` of the last `"level":"error"` (or `fatal`/`panic`) line in `log`, a chunk of
/// runc's JSON log (`--log-format json`, one JSON object per line).
///
/// Lines that are not JSON objects, or that have no string `msg`, are skipped; `None` when no such
/// line exists. Never panics, whatever the input.
pub fn last_error(log: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        #[serde(default)]
        level: Option<String>,
        #[serde(default)]
        msg: Option<String>,
    }
    log.split(|&b| b == b'\n')
        .rev()
        .filter_map(|line| serde_json::from_slice::<Line>(line.trim_ascii()).ok())
        .find_map(|line| match (line.level.as_deref(), line.msg) {
            (Some("error" | "fatal" | "panic"), Some(msg)) if !msg.trim().is_empty() => Some(msg),
            _ => None,
        })
}

/// Length of the log file now (0 if it does not exist yet): where this invocation's lines start.
pub(crate) fn log_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The last error message runc logged to `path` after byte `offset`.
///
/// If the file shrank below `offset` (truncated or replaced) it is read from the start. Only the
/// last [`MAX_LOG_READ`] bytes of the region are examined.
pub(crate) fn last_error_since(path: &Path, offset: u64) -> Option<String> {
    let mut file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let start = if len < offset { 0 } else { offset };
    let start = start.max(len.saturating_sub(MAX_LOG_READ));
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut buf = Vec::new();
    file.take(MAX_LOG_READ).read_to_end(&mut buf).ok()?;
    last_error(&buf)
}

/// The message in runc's stderr: the last logrus line at level error/fatal/panic (its `msg`), else
/// the last non-empty line (with a logrus wrapper reduced to its `msg`).
pub(crate) fn stderr_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let last = lines.clone().next_back()?;
    let message = lines
        .rev()
        .find_map(|l| match logrus_field(l, "level") {
            Some(level) if matches!(level.as_str(), "error" | "fatal" | "panic") => {
                logrus_field(l, "msg")
            }
            _ => None,
        })
        .or_else(|| logrus_field(last, "msg"))
        .unwrap_or_else(|| last.to_owned());
    Some(message)
}

/// The value of `key=value` / `key="quoted value"` in a logrus text line.
fn logrus_field(line: &str, key: &str) -> Option<String> {
    let mut rest = line;
    loop {
        let at = rest.find(key)?;
        let before_ok = at == 0 || rest.as_bytes()[at - 1] == b' ';
        let after = &rest[at + key.len()..];
        if before_ok {
            if let Some(value) = after.strip_prefix('=') {
                return Some(match value.strip_prefix('"') {
                    Some(quoted) => unquote(quoted),
                    None => value.split(' ').next().unwrap_or_default().to_owned(),
                });
            }
        }
        rest = after;
    }
}

/// Decodes a Go `%q` string body (the opening quote already removed), up to the closing quote.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(c @ ('x' | 'u' | 'U')) => {
                    let n = match c {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let hex: String = chars.by_ref().take(n).collect();
                    let decoded = (hex.len() == n)
                        .then(|| u32::from_str_radix(&hex, 16).ok())
                        .flatten()
                        .and_then(char::from_u32);
                    match decoded {
                        Some(ch) => out.push(ch),
                        None => {
                            out.push('\\');
                            out.push(c);
                            out.push_str(&hex);
                        }
                    }
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const NOPE: &str = r#"{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"2024-01-01T00:00:00Z"}"#;

    #[test]
    fn last_error_picks_the_last_error_line() {
        let log = format!(
            "{{\"level\":\"error\",\"msg\":\"old\",\"time\":\"t\"}}\n{NOPE}\n{{\"level\":\"warning\",\"msg\":\"w\"}}\n{{\"level\":\"debug\",\"msg\":\"d\"}}\n"
        );
        assert_eq!(
            last_error(log.as_bytes()).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
    }

    #[test]
    fn last_error_tolerates_garbage() {
        assert_eq!(last_error(b""), None);
        assert_eq!(last_error(b"\n\n"), None);
        assert_eq!(last_error(b"garbage\n\xff\xfe\n[1,2]\nnull\n"), None);
        assert_eq!(last_error(br#"{"level":"error"}"#), None);
        assert_eq!(last_error(br#"{"level":"error","msg":42}"#), None);
        assert_eq!(last_error(br#"{"level":"info","msg":"x"}"#), None);
        // A truncated last line does not hide an earlier complete one.
        assert_eq!(
            last_error(
                b"{\"level\":\"fatal\",\"msg\":\"boom\"}\r\n{\"level\":\"error\",\"msg\":\"tr"
            )
            .as_deref(),
            Some("boom")
        );
    }

    #[test]
    fn last_error_since_reads_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        assert_eq!(log_offset(&path), 0);
        assert_eq!(last_error_since(&path, 0), None);
        std::fs::write(&path, "{\"level\":\"error\",\"msg\":\"old\"}\n").unwrap();
        let off = log_offset(&path);
        assert_eq!(last_error_since(&path, off), None);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        writeln!(f, "{NOPE}").unwrap();
        assert_eq!(
            last_error_since(&path, off).as_deref(),
            Some("exec: \"nope\": executable file not found in $PATH")
        );
        // Truncated below the offset: read from the start.
        std::fs::write(&path, "{\"level\":\"error\",\"msg\":\"new\"}\n").unwrap();
        assert_eq!(last_error_since(&path, 10_000).as_deref(), Some("new"));
    }

    #[test]
    fn stderr_logrus_wrapper_is_stripped() {
        let s = b"time=\"2024-01-01T00:00:00Z\" level=error msg=\"container does not exist\"\n";
        assert_eq!(
            stderr_message(s).as_deref(),
            Some("container does not exist")
        );
        let s = br#"time="t" level=fatal msg="exec: \"nope\": not found\tx \u00e9\\" extra=1"#;
        assert_eq!(
            stderr_message(s).as_deref(),
            Some("exec: \"nope\": not found\tx \u{e9}\\")
        );
    }

    #[test]
    fn stderr_prefers_error_lines_then_last_line() {
        let s = b"time=\"t\" level=error msg=\"real\"\ntime=\"t\" level=debug msg=\"noise\"\n\n";
        assert_eq!(stderr_message(s).as_deref(), Some("real"));
        let s = b"first\ncontainer does not exist\n  \n";
        assert_eq!(
            stderr_message(s).as_deref(),
            Some("container does not exist")
        );
        assert_eq!(stderr_message(b""), None);
        assert_eq!(stderr_message(b" \n\n"), None);
        assert_eq!(
            stderr_message(b"\xff\xfe").as_deref(),
            Some("\u{fffd}\u{fffd}")
        );
        assert_eq!(stderr_message(b"level=").as_deref(), Some("level="));
        assert_eq!(stderr_message(b"msg=\"\\x4").as_deref(), Some("\\x4"));
        assert_eq!(stderr_message(b"msg=\"a\\").as_deref(), Some("a\\"));
    }
}
