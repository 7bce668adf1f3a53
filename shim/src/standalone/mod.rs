//! The standalone face: a reattachable process supervisor for managers that are not
//! containerd (the role Garden's `dadoo` plays), selected when argv[1] is a subcommand.
//!
//! One file per concern: [`cli`] (dispatch, help), [`args`] (option parsing), [`depot`]
//! (layout), [`errors`] (exit codes), [`io_owner`] (`--io-uid`/`--io-gid`: a process
//! directory for a non-root manager), [`launch`] + [`supervise`] (the resident
//! supervisor, built on `crate::supervisor`'s epoll loop, reaper, pumps, tty and
//! signals), [`keeper`] (the supervisor's parent: what a process keeps, its exit status
//! above all, if its supervisor is SIGKILLed), [`output_fifo`] (an output FIFO as a
//! supervisor or keeper holds it),
//! [`supervisor_log`] (its warnings), [`control`] (the `control` FIFO: requests to a supervisor), [`raw_mode`] +
//! [`winsize`] (`attach` from a terminal), [`detach_keys`] + [`keyed_input`] (`attach`'s
//! detach keys and the stdin forwarding that watches for them), [`pty_eof`] (a tty process's end of input),
//! [`pea`] (a process that is its own runc container), [`external`] (containers another
//! runtime runs), and one file per verb.

pub mod args;
pub mod attach;
pub mod cli;
pub mod close_stdin;
pub mod control;
pub mod delete;
pub mod depot;
pub mod detach_keys;
pub mod errors;
pub mod exec;
pub mod exit_record;
pub mod external;
pub mod io_owner;
pub mod keeper;
pub mod keyed_input;
pub mod kill;
pub mod output_fifo;
pub mod own_fds;
pub mod pea;
pub mod pty_eof;
pub mod raw_mode;
pub mod run;
pub mod spool_flags;
pub mod start_supervisor;
pub mod started;
pub mod status;
pub mod supervise;
pub mod supervisor_log;
pub mod upgrade;
pub mod wait;
pub mod winsize;

/// Whether `arg` (argv[1]) selects the standalone face.
pub fn is_subcommand(arg: &str) -> bool {
    cli::SUBCOMMANDS.contains(&arg)
}
