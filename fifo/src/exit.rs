//! The exit code record a supervisor leaves in `exitcode` when a process ends.
//!
//! The format is two lines so that shells can use it (`head -n1 exitcode`) and old dadoo
//! files (a bare code) still read:
//!
//! ```text
//! 137
//! 2026-11-23T03:24:45.123456789Z
//! ```

use std::os::unix::process::ExitStatusExt;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{snippet, Error, Result};
use crate::rfc3339;

/// The code recorded when a wait status is neither "exited" nor "killed by a signal"
/// (stopped/continued statuses are not terminations): containerd's "unknown exit status".
pub const UNKNOWN_EXIT_CODE: i32 = 255;

/// What a supervisor records when a process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// The exit code, or 128+N when the process was killed by signal N.
    pub code: i32,
    /// When the process ended.
    pub exited_at: SystemTime,
}

impl ExitRecord {
    /// From a raw wait(2) status: exited → its code; killed by signal N → 128+N; anything
    /// else (a stop/continue status, which is not a termination) → [`UNKNOWN_EXIT_CODE`].
    pub fn from_wait_status(status: i32, exited_at: SystemTime) -> Self {
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            UNKNOWN_EXIT_CODE
        };
        ExitRecord { code, exited_at }
    }

    /// From std's `ExitStatus`, with the same mapping as [`ExitRecord::from_wait_status`].
    pub fn from_exit_status(status: std::process::ExitStatus, exited_at: SystemTime) -> Self {
        Self::from_wait_status(status.into_raw(), exited_at)
    }

    /// The file format: line 1 the decimal code, line 2 the exit time in RFC 3339 UTC with
    /// nanoseconds (e.g. "2026-11-23T03:24:45.123456789Z"), each line ending in '\n'.
    /// Times outside years 0000–9999 are clamped.
    pub fn encode(&self) -> String {
        format!("{}\n{}\n", self.code, rfc3339::format(self.exited_at))
    }

    /// Parses what [`ExitRecord::encode`] writes. Also accepts a file holding only a code,
    /// with or without a newline (dadoo's old format): then `exited_at` is `UNIX_EPOCH`.
    /// Surrounding blanks and "\r\n" line ends are tolerated; the code must be a
    /// non-negative decimal fitting an i32.
    /// Errors: `Error::BadExitCode { path: None, reason }` on anything else.
    pub fn decode(text: &str) -> Result<Self> {
        let bad = |reason: String| Error::BadExitCode { path: None, reason };
        let mut lines = text.lines().map(str::trim);
        let code_text = lines.next().unwrap_or_default();
        if code_text.is_empty() {
            return Err(bad("empty; expected a decimal exit code".into()));
        }
        let code = parse_code(code_text).ok_or_else(|| {
            bad(format!(
                "{:?} is not a non-negative decimal exit code",
                snippet(code_text)
            ))
        })?;
        let exited_at = match lines.next().unwrap_or_default() {
            "" => UNIX_EPOCH,
            time => rfc3339::parse(time).map_err(|e| bad(format!("exit time: {e}")))?,
        };
        if lines.any(|l| !l.is_empty()) {
            return Err(bad("unexpected content after the exit time".into()));
        }
        Ok(ExitRecord { code, exited_at })
    }
}

/// Digits only (no sign, no blanks), fitting an i32.
fn parse_code(text: &str) -> Option<i32> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reason(text: &str) -> String {
        match ExitRecord::decode(text) {
            Err(Error::BadExitCode { path: None, reason }) => reason,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn round_trip_keeps_nanoseconds() {
        let rec = ExitRecord {
            code: 137,
            exited_at: UNIX_EPOCH + Duration::new(1_795_404_285, 123_456_789),
        };
        let text = rec.encode();
        assert_eq!(text, "137\n2026-11-23T03:24:45.123456789Z\n");
        assert_eq!(ExitRecord::decode(&text).unwrap(), rec);

        let now = ExitRecord {
            code: 0,
            exited_at: SystemTime::now(),
        };
        assert_eq!(ExitRecord::decode(&now.encode()).unwrap(), now);
    }

    #[test]
    fn edge_dates_round_trip() {
        for (secs, text) in [
            (0u64, "1970-01-01T00:00:00.000000000Z"),
            (1_709_208_000, "2024-02-29T12:00:00.000000000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000000000Z"),
        ] {
            let rec = ExitRecord {
                code: 1,
                exited_at: UNIX_EPOCH + Duration::from_secs(secs),
            };
            assert_eq!(rec.encode(), format!("1\n{text}\n"));
            assert_eq!(ExitRecord::decode(&rec.encode()).unwrap(), rec);
        }
        // 2100 is not a leap year.
        assert!(reason("1\n2100-02-29T00:00:00Z\n").starts_with("exit time: "));
    }

    #[test]
    fn from_wait_status_maps_codes() {
        let t = UNIX_EPOCH;
        // exit(3): code in bits 8..16, low 7 bits zero.
        assert_eq!(ExitRecord::from_wait_status(3 << 8, t).code, 3);
        assert_eq!(ExitRecord::from_wait_status(0, t).code, 0);
        // Killed by SIGKILL (9), with and without the core-dump bit.
        assert_eq!(ExitRecord::from_wait_status(libc::SIGKILL, t).code, 137);
        assert_eq!(
            ExitRecord::from_wait_status(libc::SIGSEGV | 0x80, t).code,
            139
        );
        // Stopped by SIGSTOP, and continued: not terminations.
        assert_eq!(
            ExitRecord::from_wait_status((libc::SIGSTOP << 8) | 0x7f, t).code,
            UNKNOWN_EXIT_CODE
        );
        assert_eq!(
            ExitRecord::from_wait_status(0xffff, t).code,
            UNKNOWN_EXIT_CODE
        );
        assert_eq!(ExitRecord::from_wait_status(3 << 8, t).exited_at, t);
    }

    #[test]
    fn from_exit_status_of_real_processes() {
        let t = SystemTime::now();
        let st = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .status()
            .unwrap();
        assert_eq!(ExitRecord::from_exit_status(st, t).code, 3);
        let st = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(ExitRecord::from_exit_status(st, t).code, 137);
    }

    #[test]
    fn decodes_code_only() {
        for text in ["42\n", "42", " 42 \r\n", "42\n\n"] {
            let rec = ExitRecord::decode(text).unwrap();
            assert_eq!(rec.code, 42, "{text:?}");
            assert_eq!(rec.exited_at, UNIX_EPOCH);
        }
        let rec = ExitRecord::decode("7\r\n2024-02-29T12:00:00Z\r\n").unwrap();
        assert_eq!(rec.code, 7);
        assert_eq!(
            rec.exited_at,
            UNIX_EPOCH + Duration::from_secs(1_709_208_000)
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(reason("").starts_with("empty"));
        assert!(reason("\n\n").starts_with("empty"));
        assert!(reason("abc").contains("not a non-negative decimal exit code"));
        assert!(reason("-1\n").contains("\"-1\""));
        assert!(reason("+1\n").contains("not a non-negative"));
        assert!(reason("1 2\n").contains("not a non-negative"));
        assert!(reason("99999999999\n").contains("not a non-negative"));
        assert!(reason("0x10\n").contains("not a non-negative"));
        assert!(reason("1\nyesterday\n").starts_with("exit time: "));
        assert_eq!(
            reason("1\n2024-02-29T12:00:00Z\nmore\n"),
            "unexpected content after the exit time"
        );
        // Huge garbage is quoted shortened.
        let long = "x".repeat(10_000);
        assert!(reason(&long).len() < 200);
    }
}
