//! An output FIFO of a process directory (`stdout`, `stderr`) as its supervisor, and
//! after it its keeper, holds it: the write end apart from the pump (which writes to a
//! copy), so the FIFO stays open until a manager has read what was delivered, and a
//! keep-alive read end, so a write never fails with EPIPE while no manager is attached.

use super::errors::{CliError, CliResult};
use crate::process_core::epoll::Poller;
use crate::process_core::fionread;
use crate::process_core::process_stdio::{ProcessStdio, Stream};
use crate::process_core::wiring::Sink;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Pipe and FIFO buffers are raised to this (best effort) so output waits for a manager.
pub const PIPE_SIZE: usize = 1 << 20;
/// After the exit, an output source that is still open (a descendant holds it) but idle
/// for this long is abandoned; what it already delivered to the FIFO is still kept.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);
/// Poll interval while waiting for a manager to read the remaining output (nothing
/// signals that a FIFO has been emptied).
pub const LINGER_POLL: Duration = Duration::from_millis(100);

/// One output FIFO's write end and keep-alive read end; both `None` once closed.
#[derive(Debug, Default)]
pub struct OutputFifo {
    writer: Option<File>,
    keepalive: Option<File>,
}

impl OutputFifo {
    /// Opens the FIFO at `path` as a keep-alive writer, its buffer raised to
    /// [`PIPE_SIZE`].
    pub fn open(path: &std::path::Path) -> CliResult<Self> {
        let (writer, keepalive) = fifo::KeepAliveWriter::open(path)
            .map_err(CliError::fifo)?
            .into_parts();
        let _ = fifo::set_pipe_size(&writer, PIPE_SIZE);
        Ok(OutputFifo {
            writer: Some(writer),
            keepalive: Some(keepalive),
        })
    }

    /// The FIFO from ends received from elsewhere (the keeper's, from its supervisor).
    pub fn from_parts(writer: Option<File>, keepalive: Option<File>) -> Self {
        OutputFifo { writer, keepalive }
    }

    /// The write end and the keep-alive read end, while open (to hand them to a keeper).
    pub fn ends(&self) -> Option<(BorrowedFd<'_>, BorrowedFd<'_>)> {
        Some((
            self.writer.as_ref()?.as_fd(),
            self.keepalive.as_ref()?.as_fd(),
        ))
    }

    /// Each end while open, the write end first (to carry them across a live upgrade).
    pub fn parts(&self) -> (Option<BorrowedFd<'_>>, Option<BorrowedFd<'_>>) {
        (
            self.writer.as_ref().map(AsFd::as_fd),
            self.keepalive.as_ref().map(AsFd::as_fd),
        )
    }

    /// Where the pump from the process delivers: a copy of the write end (the keep-alive
    /// read end is held here, not by the pump).
    pub fn sink(&self) -> CliResult<Sink> {
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| CliError::Failed("output FIFO already closed".into()))?;
        let dst = writer
            .try_clone()
            .map_err(|e| CliError::Failed(format!("dup: {e}")))?;
        Ok(Sink::new(dst.into(), None))
    }

    /// Bytes in the FIFO that no manager has read yet.
    pub fn unread(&self) -> usize {
        self.keepalive
            .as_ref()
            .and_then(|k| fionread::pending(k.as_fd()))
            .unwrap_or(0)
    }

    /// Closes the FIFO: an attached manager reads EOF.
    pub fn close(&mut self) {
        self.writer = None;
        self.keepalive = None;
    }

    /// Whether the FIFO is closed (everything delivered, or given up).
    pub fn closed(&self) -> bool {
        self.writer.is_none()
    }
}

/// After the process's exit: drops the output pumps that are idle past their grace (a
/// descendant holds the pipe), then closes each FIFO whose pump is gone and whose content
/// a manager has read. True once all are closed.
pub fn close_delivered(
    outputs: &mut [OutputFifo; 2],
    stdio: &mut ProcessStdio,
    poller: &Poller,
    now: Instant,
) -> bool {
    stdio.abandon_idle_outputs(poller, now);
    for (stream, out) in Stream::OUTPUTS.into_iter().zip(outputs.iter_mut()) {
        if !stdio.is_open(stream) && out.unread() == 0 {
            out.close();
        }
    }
    outputs.iter().all(OutputFifo::closed)
}
