//! Signal handling for a supervisor: the signals it cares about are blocked and read from
//! a signalfd inside the event loop, so there are no async signal handlers at all.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;

/// The signals a supervisor's loop handles: children exiting, and the polite ways to stop
/// us (the standalone `attach` handles another set).
pub fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for sig in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(sig);
    }
    set
}

/// Blocks `set` in the calling thread (threads spawned later inherit the mask, so call
/// this before spawning any) and returns a non-blocking signalfd that reads them. Loops
/// get theirs through [`crate::process_core::event_base::EventBase::new`].
///
/// Children inherit the blocked mask through std's `Command` (it does not reset it): a
/// runtime is started clean by runc-wrapper (`RuntimeCommand`), a `binary://` logger by
/// its `posix_spawn` attributes (`containerd/logger_process/spawn.rs`); checked per path by
/// `tests/tests/runtime_signals.rs`.
pub fn block_and_open_set(set: &SigSet) -> io::Result<SignalFd> {
    set.thread_block()?;
    Ok(SignalFd::with_flags(
        set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// Drains the signalfd; returns the signals seen (duplicates folded).
pub fn drain(fd: &mut SignalFd) -> Vec<Signal> {
    let mut seen = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        let signal = i32::try_from(info.ssi_signo)
            .ok()
            .and_then(|n| Signal::try_from(n).ok());
        if let Some(sig) = signal {
            if !seen.contains(&sig) {
                seen.push(sig);
            }
        }
    }
    seen
}
