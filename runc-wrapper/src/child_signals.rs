//! A runtime starts with no signal blocked and none ignored, whatever its caller's state.
//!
//! A supervisor blocks the signals its loop reads from a signalfd (tether: SIGCHLD,
//! SIGTERM, SIGINT, SIGHUP), and may have been started with signals ignored (`nohup`, a
//! shell's `&`). std's `Command` passes both on to the child (measured: every runc call of
//! tether's shim started with SIGCHLD, SIGTERM, SIGINT and SIGHUP blocked, so a wrapper
//! shell's `wait` for a background job never returned), and glibc's `posix_spawn` leaves
//! its two internal signals (32, 33) ignored in the child. [`start_clean`] makes the child
//! reset both between fork and exec, with raw system calls only (async-signal-safe: no
//! allocation, no lock, nothing of libc's state), so the runtime, and what it starts, sees
//! the defaults.
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Highest signal number on Linux (`_NSIG - 1`).
const MAX_SIGNAL: libc::c_int = 64;
/// The kernel's `sigset_t`: 64 bits.
const KERNEL_SIGSET_SIZE: usize = 8;

/// Makes the child of `cmd` start with an empty signal mask and every signal's default
/// action (SIG_IGN included: it would survive `exec`).
pub(crate) fn start_clean(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only issues
    // rt_sigaction and rt_sigprocmask system calls on locals: async-signal-safe, with no
    // allocation and no lock a thread of the parent could have held at the fork.
    unsafe {
        cmd.pre_exec(|| {
            reset_in_child();
            Ok(())
        });
    }
}

/// Every catchable signal to SIG_DFL, then the mask emptied (in that order: a signal
/// that arrives once unblocked finds its default action, never a handler of the parent's).
fn reset_in_child() {
    // The kernel's `struct sigaction` (handler, flags, restorer, mask on x86_64; no
    // restorer elsewhere): all zero is SIG_DFL with no flags and an empty mask; 32 bytes
    // cover every layout.
    let default_action = [0u64; 4];
    for sig in 1..=MAX_SIGNAL {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: a raw rt_sigaction with a valid, zeroed action and no old action to
        // fill; a signal the kernel refuses is left as it is (the call only fails).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                default_action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                KERNEL_SIGSET_SIZE,
            );
        }
    }
    let empty: u64 = 0;
    // SAFETY: a raw rt_sigprocmask setting the mask from a valid 8-byte set.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            KERNEL_SIGSET_SIZE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{SigSet, Signal};

    /// `SigBlk` and `SigIgn` of a shell started through `cmd`'s settings.
    fn masks_of_child(clean: bool) -> (u64, u64) {
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            "while read -r k v; do case \"$k\" in SigBlk:|SigIgn:) echo \"$v\" ;; esac; \
             done </proc/$$/status",
        ]);
        if clean {
            start_clean(&mut cmd);
        }
        let out = cmd.output().expect("run sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut v = text
            .lines()
            .map(|l| u64::from_str_radix(l.trim(), 16).expect("hex"));
        (v.next().expect("SigBlk"), v.next().expect("SigIgn"))
    }

    #[test]
    fn a_child_started_clean_has_no_blocked_or_ignored_signal() {
        // On a thread of its own, so the harness's other threads keep their mask.
        std::thread::spawn(|| {
            let mut set = SigSet::empty();
            set.add(Signal::SIGCHLD);
            set.add(Signal::SIGTERM);
            set.thread_block().expect("block");
            // What this guards against: std passes the caller's mask on (Rust 1.95:
            // SIGCHLD shows blocked in a plain child); printed, not asserted: a later std
            // may clear it itself.
            let (plain, _) = masks_of_child(false);
            eprintln!("a plain child's blocked mask: {plain:x}");
            let (blocked, ignored) = masks_of_child(true);
            assert_eq!(blocked, 0, "blocked: {blocked:x}");
            assert_eq!(ignored, 0, "ignored: {ignored:x}");
        })
        .join()
        .expect("the test thread");
    }
}
