//! The process directory's FIFOs as the supervisor holds them: output FIFOs whose write
//! ends outlive the pumps until a manager has read them (`output_fifo`), and read ends
//! with a held write end so none reaches EOF between two managers.

use super::Fifos;
use crate::standalone::control::CONTROL;
use crate::standalone::errors::{CliError, CliResult};
use crate::standalone::io_owner::IoOwner;
use crate::standalone::output_fifo::OutputFifo;
use fifo::ProcessDir;
use std::fs::File;
use std::os::fd::OwnedFd;

/// Opens the FIFOs the supervisor holds (creating `control`), `exit` first.
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
