//! The process directory's FIFOs as the supervisor holds them: output FIFOs whose write
//! ends outlive the pumps until a manager has read them, and read ends with a held write
//! end so none reaches EOF between two managers.

use super::*;

impl OutputFifo {
    /// Opens the FIFO at `path` as a keep-alive writer, its buffer raised to
    /// [`PIPE_SIZE`].
    pub(super) fn open(path: &std::path::Path) -> CliResult<Self> {
        let (writer, keepalive) = fifo::KeepAliveWriter::open(path)
            .map_err(CliError::fifo)?
            .into_parts();
        let _ = fifo::set_pipe_size(&writer, PIPE_SIZE);
        Ok(OutputFifo {
            writer: Some(writer),
            keepalive: Some(keepalive),
        })
    }

    /// Where the pump from the process delivers: a copy of the write end (the keep-alive
    /// read end is held here, not by the pump).
    pub(super) fn sink(&self) -> CliResult<Sink> {
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
    pub(super) fn unread(&self) -> usize {
        self.keepalive
            .as_ref()
            .and_then(|k| fionread::pending(k.as_fd()))
            .unwrap_or(0)
    }

    /// Closes the FIFO: an attached manager reads EOF.
    pub(super) fn close(&mut self) {
        self.writer = None;
        self.keepalive = None;
    }

    /// Whether the FIFO is closed (everything delivered, or given up).
    pub(super) fn closed(&self) -> bool {
        self.writer.is_none()
    }
}

pub(super) fn open_fifos(dir: &ProcessDir, io_owner: Option<IoOwner>) -> CliResult<Fifos> {
    // `exit` first: a `wait` that starts as soon as we report must block, not see EOF.
    let exit_hold = fifo::open_rdwr(&dir.exit()).map_err(CliError::fifo)?;
    let outputs = [
        OutputFifo::open(&dir.stdout())?,
        OutputFifo::open(&dir.stderr())?,
    ];
    // Read ends with a held write end: none of them reaches EOF between two managers.
    let held = |path: &std::path::Path| {
        fifo::KeepAliveReader::open(path)
            .map(fifo::KeepAliveReader::into_parts)
            .map_err(CliError::fifo)
    };
    let (stdin_r, stdin_hold) = held(&dir.stdin())?;
    let (winsz, winsz_hold) = held(&dir.winsz())?;
    // Not one of the contract's FIFOs (the `fifo` crate makes those): ours to create.
    // Its requests are about the stdio, so it belongs to the stdio's owner (io_owner.rs).
    let control_path = dir.path().join(CONTROL);
    fifo::create(&control_path, 0o600, io_owner.map(IoOwner::pair)).map_err(CliError::fifo)?;
    let (control, control_hold) = held(&control_path)?;
    Ok(Fifos {
        exit_hold,
        outputs,
        stdin_r,
        stdin_hold,
        winsz,
        winsz_hold,
        control,
        control_hold,
    })
}

/// A copy of the `stdin` FIFO's read end, the source of the stdin pump.
pub(super) fn stdin_source(stdin_r: &File) -> CliResult<OwnedFd> {
    stdin_r
        .try_clone()
        .map(OwnedFd::from)
        .map_err(|e| CliError::Failed(format!("dup: {e}")))
}
