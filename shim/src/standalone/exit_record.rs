//! What a process directory tells a manager about its process's end, as the CLI reports
//! it (`attach`, `wait`, `close-stdin`): the exit record, or why there is none.

use super::errors::{CliError, CliResult};
use fifo::{Fate, ProcessDir};

/// The exit code in `exitcode`, once the process's `exit` or output has reached EOF.
/// Without one its supervisor and its keeper are gone (killed: each writes `exitcode`
/// before closing anything), and the error says exactly what is known instead
/// ([`fifo::ProcessDir::fate`]): [`CliError::Unsupervised`] with the pid the process still
/// runs as, or [`CliError::StatusLost`].
pub fn exit_code_of(dir: &ProcessDir) -> CliResult<u8> {
    Ok(u8::try_from(exit_record_of(dir)?.code).unwrap_or(255))
}

/// [`exit_code_of`], the whole record.
pub fn exit_record_of(dir: &ProcessDir) -> CliResult<fifo::ExitRecord> {
    let gone = "its supervisor and its keeper are gone (killed?) without recording an exit \
                code";
    match dir.fate().map_err(CliError::fifo)? {
        Fate::Exited(rec) => Ok(rec),
        Fate::Running(pid) => Err(CliError::Unsupervised(format!(
            "{}: {gone}; the process still runs as pid {pid}, unsupervised: its output is \
             no longer delivered and its exit code will not be recorded",
            dir.path().display()
        ))),
        Fate::Lost(pid) => Err(CliError::StatusLost(format!(
            "{}: {gone}; the process{} is gone and its exit status was lost",
            dir.path().display(),
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
        ))),
    }
}
