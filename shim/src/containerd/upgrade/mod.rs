//! Live upgrade: a running shim moves onto a new binary without touching its containers.
//!
//! The same pid re-executes the new binary and carries its state across `execve`: the
//! listening socket, every ttrpc connection (with what it read and what it has still to
//! write), every process's pidfd, pty master, stdin and pumps (with their spools), every
//! OOM watcher, the events not delivered yet, and the process table as plain data. The
//! subreaper setting, the session and the blocked-signal mask survive `execve` by
//! themselves. containerd's connections never close, the containers never notice.
//!
//! - [`protocol`]: how an operator asks (`tether.upgrade.v1.Upgrade` on the shim's own
//!   socket, root only) and what the shim answers.
//! - [`state`]: the saved state, versioned ([`state::FORMAT`]), written to a memfd.
//! - `supervisor::rollback` (shared with the standalone face): while the new image takes
//!   over, a crash re-executes the old image (kept open across the `execve`) with the same
//!   state.
//! - [`command`]: the shim's half of the operator's `containerd-shim-tether-v2 upgrade`
//!   (`crate::upgrade_command`): finding the running shims, asking one.
//!
//! The loop's side (waiting for the calls in flight, the dry run, the `execve`, and
//! rebuilding the loop in the new image) is in `shim_loop::upgrade` and
//! `shim_loop::resume`. `docs/upgrade.md` describes the whole and the format.

pub mod command;
pub mod protocol;
pub mod state;
