//! The `control` FIFO of a process directory: requests from a manager to the process's
//! supervisor, one short text line each. Today there is one: `close-stdin`.
//!
//! A FIFO rather than a signal to `supervisor.pid`: a manager that knows only the
//! directory can use it (`echo close-stdin > DIR/control`), a request can never reach a
//! recycled pid, and the FIFO's permissions are the directory's. The supervisor creates
//! it before it reports `started`, and holds a read end (plus a write end, so it never
//! reads EOF between two managers) while the process lives. After the exit nobody reads
//! it: a non-blocking open for writing fails (ENXIO) instead of hanging, and there is no
//! stdin left to close anyway.
//!
//! A line is far shorter than PIPE_BUF, so lines from concurrent managers never
//! interleave. Unknown and over-long lines are dropped: a newer manager's request must not
//! upset an older supervisor.

use super::depot::{live_keeper, TTY_MARKER};
use super::errors::{CliError, CliResult};
use fifo::ProcessDir;
use std::io::Write;

/// The FIFO's name in the process directory.
pub const CONTROL: &str = "control";
/// Longest line kept; a request is a single word.
const MAX_LINE: usize = 256;

/// A request to the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Stop holding the `stdin` FIFO open, so the process reads EOF once every manager
    /// has closed its end and what they wrote has been delivered.
    CloseStdin,
}

impl Request {
    /// The request as written to the FIFO.
    pub fn line(self) -> &'static str {
        match self {
            Request::CloseStdin => "close-stdin\n",
        }
    }

    fn parse(line: &[u8]) -> Option<Self> {
        match std::str::from_utf8(line).ok()?.trim() {
            "close-stdin" => Some(Request::CloseStdin),
            _ => None,
        }
    }
}

/// Splits the byte stream read from the FIFO into requests, whatever the reads' sizes.
/// Plain data (serde): a supervisor carries a line read in part across a live upgrade.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Decoder {
    line: Vec<u8>,
    /// Dropping the rest of an over-long line.
    skipping: bool,
}

impl Decoder {
    /// Feeds `bytes`; returns the requests completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Request> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if !self.skipping {
                    out.extend(Request::parse(&self.line));
                }
                self.line.clear();
                self.skipping = false;
            } else if self.line.len() >= MAX_LINE {
                self.line.clear();
                self.skipping = true;
            } else if !self.skipping {
                self.line.push(b);
            }
        }
        out
    }
}

/// What [`send`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The supervisor has the request.
    Delivered,
    /// The process has exited: nobody reads requests any more, and none is needed.
    Exited,
    /// Its supervisor was killed and its keeper has the process: a process without a
    /// terminal read EOF on its stdin when the supervisor (its only writer) died.
    ClosedWithSupervisor,
}

/// Sends `request` to the supervisor of the process in `dir`, without blocking.
pub fn send(dir: &ProcessDir, request: Request) -> CliResult<Delivery> {
    let path = dir.path().join(CONTROL);
    let mut fifo = match fifo::open_write(&path, true) {
        Ok(f) => f,
        Err(fifo::Error::NoReader { .. }) => {
            // The supervisor writes `exitcode` before it stops reading requests: without
            // one it was killed. Its keeper, if alive, has the process (and reads no
            // requests); else the error says what is known (116 or 117).
            let recorded = dir.read_exit().ok().flatten().is_some();
            if !recorded && live_keeper(dir).is_some() {
                return kept(dir);
            }
            return super::exit_record::exit_record_of(dir).map(|_| Delivery::Exited);
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(CliError::Failed(format!(
                "{} does not exist: the process's supervisor predates control requests",
                path.display()
            )))
        }
        Err(e) => return Err(CliError::fifo(e)),
    };
    // One write of a line shorter than PIPE_BUF: all of it or nothing (EAGAIN only if
    // 64 KiB of requests sit unread, i.e. the supervisor is stuck).
    fifo.write_all(request.line().as_bytes())
        .map_err(|e| CliError::io("write", &path, &e))?;
    Ok(Delivery::Delivered)
}

/// `close-stdin` for a process whose keeper has it: done already without a terminal; a
/// terminal's input has nobody left to send its EOF character.
fn kept(dir: &ProcessDir) -> CliResult<Delivery> {
    if dir.path().join(TTY_MARKER).exists() {
        return Err(CliError::Failed(format!(
            "{}: its supervisor is gone (killed?); its keeper delivers the output and will \
             record the exit code, but passes no input on: the terminal's input cannot be \
             closed",
            dir.path().display()
        )));
    }
    Ok(Delivery::ClosedWithSupervisor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_requests_split_anywhere() {
        let mut d = Decoder::default();
        let line = Request::CloseStdin.line().as_bytes();
        let (a, b) = line.split_at(4);
        assert!(d.push(a).is_empty());
        assert_eq!(d.push(b), [Request::CloseStdin]);
        let two = [line, line].concat();
        assert_eq!(d.push(&two), [Request::CloseStdin, Request::CloseStdin]);
        assert_eq!(d.push(b"  close-stdin \n"), [Request::CloseStdin]);
    }

    #[test]
    fn drops_unknown_and_over_long_lines() {
        let mut d = Decoder::default();
        assert!(d.push(b"detach\n\n\xff\n").is_empty());
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.extend_from_slice(b"close-stdin\n");
        assert!(
            d.push(&long).is_empty(),
            "the tail of a long line is no request"
        );
        assert_eq!(
            d.push(Request::CloseStdin.line().as_bytes()),
            [Request::CloseStdin]
        );
    }

    #[test]
    fn send_reports_a_missing_fifo_a_killed_supervisor_and_an_exited_process() {
        use crate::standalone::errors::{EXIT_STATUS_LOST, EXIT_UNSUPERVISED};
        let tmp = tempfile::tempdir().unwrap();
        let dir = ProcessDir::from_path(tmp.path()).unwrap();
        let err = send(&dir, Request::CloseStdin).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        fifo::create(&tmp.path().join(CONTROL), 0o600, None).unwrap();
        // No reader and no exitcode: the supervisor was killed. The process is gone (no
        // record of it), then "running" (the record names this test process).
        let err = send(&dir, Request::CloseStdin).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_STATUS_LOST, "{err}");
        let me = fifo::StartRecord::of(nix::unistd::getpid().as_raw()).unwrap();
        dir.write_start(&me).unwrap();
        let err = send(&dir, Request::CloseStdin).unwrap_err();
        assert_eq!(err.exit_code(), EXIT_UNSUPERVISED, "{err}");
        assert!(
            err.to_string().contains(&format!("pid {}", me.pid)),
            "{err}"
        );
        dir.write_exit(&fifo::ExitRecord::from_wait_status(
            0,
            std::time::SystemTime::now(),
        ))
        .unwrap();
        assert_eq!(send(&dir, Request::CloseStdin).unwrap(), Delivery::Exited);
        let reader = fifo::open_read(&tmp.path().join(CONTROL), true).unwrap();
        assert_eq!(
            send(&dir, Request::CloseStdin).unwrap(),
            Delivery::Delivered
        );
        let mut d = Decoder::default();
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut &reader, &mut buf).unwrap();
        assert_eq!(d.push(&buf[..n]), [Request::CloseStdin]);
    }
}
