//! The standalone face: a reattachable process supervisor for managers that are not
//! containerd (the role Garden's `dadoo` plays), selected when argv[1] is a subcommand.
//!
//! One file per concern: [`cli`] (dispatch, help), [`args`] (option parsing), [`depot`]
//! (layout), [`errors`] (exit codes), [`launch`] + [`supervise`] (the resident
//! supervisor, built on `crate::supervisor`'s epoll loop, reaper, pumps, tty and
//! signals), and one file per verb.

pub mod args;
pub mod attach;
pub mod cli;
pub mod delete;
pub mod depot;
pub mod errors;
pub mod exec;
pub mod fionread;
pub mod kill;
pub mod launch;
pub mod run;
pub mod status;
pub mod supervise;
pub mod wait;

/// Whether `arg` (argv[1]) selects the standalone face.
pub fn is_subcommand(arg: &str) -> bool {
    cli::SUBCOMMANDS.contains(&arg)
}
