//! Reading pid files such as the one `runc --pid-file` writes.

use std::path::Path;

use crate::error::{snippet, Error, Result};
use crate::small_file;

/// A pid file is a few bytes; anything larger than this is garbage and not read whole.
const MAX_PID_FILE: usize = 64;

/// Reads the pid in `path`: decimal, surrounding blanks and a trailing newline allowed (runc
/// writes none). Returns `Ok(None)` if the file does not exist,
/// `Error::BadPidFile { path, content }` if it holds anything but a positive pid (including
/// an empty file), `Error::Io` ("read") if it cannot be read.
pub fn read_pid_file(path: &Path) -> Result<Option<i32>> {
    let Some(bytes) = small_file::read(path, MAX_PID_FILE)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim();
    let pid = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        trimmed.parse::<i32>().ok().filter(|&pid| pid > 0)
    } else {
        None
    };
    pid.map(Some).ok_or_else(|| Error::BadPidFile {
        path: path.into(),
        content: snippet(&text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_content(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pidfile");
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn absent_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_pid_file(&dir.path().join("pidfile")).unwrap(), None);
    }

    #[test]
    fn good_pids() {
        for (content, pid) in [
            (&b"1234"[..], 1234),
            (b"1234\n", 1234),
            (b" 1\r\n", 1),
            (b"2147483647", i32::MAX),
        ] {
            let (_dir, path) = with_content(content);
            assert_eq!(read_pid_file(&path).unwrap(), Some(pid), "{content:?}");
        }
    }

    #[test]
    fn bad_pids() {
        for content in [
            &b""[..],
            b"\n",
            b"0",
            b"-5",
            b"+5",
            b"abc",
            b"12 34",
            b"2147483648",
            b"\xff\xfe",
            &[b'1'; 1000],
        ] {
            let (_dir, path) = with_content(content);
            match read_pid_file(&path) {
                Err(Error::BadPidFile {
                    path: p,
                    content: c,
                }) => {
                    assert_eq!(p, path);
                    assert!(c.len() < 100, "{c}");
                }
                other => panic!("{content:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn unreadable_is_io_error() {
        // A directory cannot be read as a file.
        let dir = tempfile::tempdir().unwrap();
        match read_pid_file(dir.path()) {
            Err(Error::Io {
                op: "read", path, ..
            }) => assert_eq!(path, dir.path()),
            other => panic!("{other:?}"),
        }
    }
}
