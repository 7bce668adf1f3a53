//! Named pipes without open() deadlocks, and tether's process-directory contract.
//!
//! * [`create`], [`open_read`], [`open_write`], [`open_write_timeout`], [`open_rdwr`],
//!   [`KeepAliveWriter`]: FIFOs that are created with exact modes and opened without ever
//!   blocking in open(2), so a supervisor never hangs on a manager that is away.
//! * [`set_pipe_size`], [`pipe_size`]: bigger pipe buffers, so output is not stalled while
//!   nobody reads; [`unread`]: what a pipe or FIFO holds (has a manager read it all?).
//! * [`ProcessDir`]: the per-process directory of FIFOs and files (`stdin`, `stdout`,
//!   `stderr`, `winsz`, `exit`, `exitcode`, `pidfile`, `log.json`) through which a manager
//!   can die, restart, reattach and still learn the exit status.
//! * [`ExitRecord`], [`WindowSize`]/[`WinszDecoder`], [`read_pid_file`], [`StartRecord`]:
//!   the formats of that directory's files and streams; [`Fate`]: what the directory
//!   alone tells about a process whose supervisor is gone.
//! * [`PinnedDir`], [`write_atomic`]: a directory held by a descriptor and files written
//!   in it without following a symlink, so a path swapped under a writer cannot steer it;
//!   [`write_atomic_with`] is the one atomic replace of a file, durable or not.
//!
//! Linux only. Every descriptor is opened with `O_CLOEXEC`. No function panics on any input.

#![deny(unsafe_code)]

pub mod atomic_file;
pub mod error;
pub mod exit;
pub mod id;
pub mod open;
pub mod pidfile;
pub mod pinned;
pub mod process_dir;
pub mod rfc3339;
mod small_file;
pub mod start_time;
mod unread;
pub mod winsz;

pub use atomic_file::{write_atomic, write_atomic_with, Durability};
pub use error::{Error, Result};
pub use exit::{ExitRecord, UNKNOWN_EXIT_CODE};
pub use id::{validate_id, MAX_ID_LEN};
pub use open::{
    create, open_rdwr, open_read, open_write, open_write_timeout, pipe_size, set_pipe_size,
    KeepAliveReader, KeepAliveWriter,
};
pub use pidfile::read_pid_file;
pub use pinned::PinnedDir;
pub use process_dir::{
    Fate, ProcessDir, ProcessDirOptions, EXIT, EXITCODE, LOG_JSON, PIDFILE, STARTTIME, STDERR,
    STDIN, STDOUT, WINSZ,
};
pub use small_file::read as read_small_file;
pub use start_time::StartRecord;
pub use unread::unread;
pub use winsz::{encode_winsz, WindowSize, WinszDecoder, MAX_WINSZ_OBJECT};
