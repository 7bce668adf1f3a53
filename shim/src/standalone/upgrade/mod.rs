//! Live upgrade of a standalone supervisor (issue 22, the standalone half): root asks a
//! running supervisor to move onto another binary, and the same pid re-executes it,
//! carrying its whole state across `execve`; its process, its keeper (its parent) and an
//! attached manager notice nothing.
//!
//! - [`wire`]: how root asks (`upgrade.sock` in the process directory, root only) and
//!   how the supervisor answers, both ends.
//! - [`ask`]: the operator command's side (`upgrade --depot DIR`): which supervisors run,
//!   asking each.
//! - [`saved`]: the state handed over, versioned ([`saved::FORMAT`]), told from a shim's
//!   by its `face`.
//!
//! The supervisor's side is in `supervise`: `door` (the socket in its loop), `hand_over`
//! (the old image: save, dry run, `execve`) and `resume` (the new image: rebuild, answer,
//! serve on; or go back to the old image). The dry run and the `execve` are the core's
//! (`process_core::upgrade_exec`), as are the carried descriptors and the rollback.
//! `docs/upgrade.md` describes the whole.

pub mod ask;
pub mod saved;
pub mod wire;
