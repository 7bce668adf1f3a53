//! A typed driver for the runc command line, usable with any runc-compatible binary (runc, crun).
//!
//! [`Runc`] holds the binary and its global options and has one method per runc verb. Every
//! process is started and waited for through a [`ProcessMonitor`], so a supervisor that reaps
//! children itself can keep runc's exit statuses from being stolen. Failures are typed
//! [`Error`]s carrying runc's own message (from its JSON log file or its stderr).
//!
//! Verbs that hand their stdio to the container (`create`, `run`, `exec`, `restore`) never have
//! it piped back into this process: see [`ProcessIo`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod console;
mod error;
mod io;
mod monitor;
mod options;
mod runc;
mod runtime_log;
mod spawn;
mod stderr_tail;
mod types;

pub use console::ConsoleSocket;
pub use error::{Error, ErrorKind, Result};
pub use io::ProcessIo;
pub use monitor::{DefaultMonitor, ProcessMonitor};
pub use options::{CheckpointOpts, CreateOpts, ExecOpts, RestoreOpts};
pub use runc::{Runc, RuncBuilder};
pub use runtime_log::last_error;
pub use spawn::{posix_spawn, ChildStdio, FileActions, RuntimeChild, RuntimeCommand, SpawnAttr};
pub use types::{
    BlkioEntry, BlkioStats, ContainerStatus, CpuStats, CpuUsage, CpusetStats, HugetlbStats,
    MemoryEntry, MemoryStats, NetworkInterface, PidsStats, State, Stats, Throttling,
};
