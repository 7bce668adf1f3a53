//! The supervision core shared by both faces (containerd shim and standalone supervisor).
//!
//! Written once here: how a process is launched with runc and undone if that fails
//! ([`launch`]: console socket, create/run/exec/restore with a pid file, pid, pidfd, pty
//! master), the loop's base ([`event_base`]: epoll, signals through a signalfd,
//! deadlines), a child-subreaper that reaps with `waitpid(-1)` without ever stealing a
//! runc invocation's status ([`reaper`]), pidfd-tracked processes ([`pidfd`]), how a
//! process is connected to its pumps ([`wiring`]: pipes or a pty master), its pumps as a
//! loop serves them and how its output drains after it exits ([`process_stdio`] over
//! [`pump`]; when an exit may be reported, given its output: [`exit_output`]), terminal
//! resizing ([`tty`]), and JSON specs read as runc reads them ([`go_json`]). The faces
//! keep what differs for a reason: which exits to wait for and in what order they are
//! reported (`containerd::process_table` for the containerd face), and where the pumps'
//! other ends lead.

pub mod carried_fds;
pub mod epoll;
pub mod event_base;
pub mod exit_output;
pub mod fionread;
pub mod go_json;
pub mod launch;
pub mod pidfd;
pub mod process_stdio;
pub mod pump;
pub mod reaper;
pub mod rollback;
pub mod signals;
pub mod spool;
pub mod stream;
#[cfg(test)]
pub mod test_fds;
pub mod transition;
pub mod tty;
pub mod upgrade_exec;
pub mod wiring;
