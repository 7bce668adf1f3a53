//! While a new image takes a shim's (or a standalone supervisor's) state over after a live
//! upgrade, a failure must not leave the containers
//! without their shim: the old image, kept open across the `execve`, is executed again
//! with the same state and serves on (and answers the Upgrade call with the reason).
//!
//! [`arm`] prepares everything the re-execution needs (argv, environment, the list of
//! carried descriptors) and installs handlers for the signals a crash raises (SIGSEGV,
//! SIGBUS, SIGILL, SIGFPE, SIGABRT: a panic aborts); the handler only calls
//! async-signal-safe functions (`fcntl`, `execveat`). [`back`] does the same from
//! ordinary code (a state the new image cannot take). [`disarm`] puts the previous
//! handlers back once the new image serves: from then on its own state is not the saved
//! one any more.
#![allow(unsafe_code)]

use std::ffi::{CString, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicPtr, Ordering};

/// The environment variable that names the state's memfd in the new image (both faces).
pub const STATE_FD_ENV: &str = "TETHER_UPGRADE_STATE_FD";
/// Set (to the reason) when the old image is executed again because the new one failed.
pub const ROLLBACK_ENV: &str = "TETHER_UPGRADE_ROLLBACK";

/// The signals a crash raises.
const CRASH_SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

/// What the handler needs, built before it can run (no allocation in the handler).
struct Prepared {
    image: RawFd,
    /// The state's memfd (the new image's start may already have taken its number out of
    /// the environment: [`back`] must not look for it there).
    state_fd: RawFd,
    /// Descriptors to keep across the re-execution (the taking-over clears
    /// close-on-exec again on those it took).
    fds: Vec<RawFd>,
    _argv: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    /// One environment per crash signal (the reason names it), and one for [`back`].
    _envs: Vec<Vec<CString>>,
    envs: Vec<Vec<*const libc::c_char>>,
    previous: Vec<(libc::c_int, libc::sigaction)>,
}

static ARMED: AtomicPtr<Prepared> = AtomicPtr::new(std::ptr::null_mut());

fn cstring(s: OsString) -> CString {
    CString::new(s.into_vec()).unwrap_or_default()
}

fn env_with(state_fd: RawFd, reason: &str) -> Vec<CString> {
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != STATE_FD_ENV && k != ROLLBACK_ENV)
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(kv)
        })
        .collect();
    env.push(cstring(format!("{STATE_FD_ENV}={state_fd}").into()));
    env.push(cstring(format!("{ROLLBACK_ENV}={reason}").into()));
    env
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Prepares the re-execution of `image` (the old image's descriptor) with the state in
/// `state_fd` and the descriptors `fds`, and installs the crash handlers.
pub fn arm(image: RawFd, state_fd: RawFd, fds: &[RawFd]) {
    let argv: Vec<CString> = std::env::args_os().map(cstring).collect();
    let mut envs: Vec<Vec<CString>> = CRASH_SIGNALS
        .iter()
        .map(|sig| env_with(state_fd, &format!("the new image crashed (signal {sig})")))
        .collect();
    envs.push(Vec::new()); // for `back`, filled when it is called
    let mut fds = fds.to_vec();
    fds.push(state_fd);
    fds.push(image);
    let mut p = Box::new(Prepared {
        image,
        state_fd,
        fds,
        argv: pointers(&argv),
        _argv: argv,
        envs: envs.iter().map(|e| pointers(e)).collect(),
        _envs: envs,
        previous: Vec::new(),
    });
    for sig in CRASH_SIGNALS {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
        // has the signature SA_SIGINFO-less handlers take; `old` receives the previous
        // action so that `disarm` can put it back.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_crash as *const () as usize;
            // SA_NODEFER: the signal must not stay blocked in the image executed from
            // the handler (the blocked mask survives execve).
            action.sa_flags = libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &action, &mut old) == 0 {
                p.previous.push((sig, old));
            }
        }
    }
    let old = ARMED.swap(Box::into_raw(p), Ordering::SeqCst);
    if !old.is_null() {
        // SAFETY: `old` came from `Box::into_raw` in an earlier `arm` and was swapped
        // out: nothing else can reach it now.
        drop(unsafe { Box::from_raw(old) });
    }
}

/// The new image serves: crashes are its own from now on.
pub fn disarm() {
    let p = ARMED.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from `Box::into_raw` in `arm` and was swapped out of `ARMED`: no
    // handler can reach it any more (a handler running right now on another thread
    // would be executing the old image, which ends this one).
    let p = unsafe { Box::from_raw(p) };
    for (sig, old) in &p.previous {
        // SAFETY: puts back the action `arm` saved for this signal.
        unsafe {
            libc::sigaction(*sig, old, std::ptr::null_mut());
        }
    }
}

/// Executes the old image again now (the new image cannot take the state over), with
/// `reason` for its answer. Returns only if that fails.
pub fn back(reason: &str) -> std::io::Error {
    let p = ARMED.load(Ordering::SeqCst);
    if p.is_null() {
        return std::io::Error::other("no old image to go back to");
    }
    // SAFETY: `p` stays valid while armed; only this thread changes it.
    let p = unsafe { &mut *p };
    let last = p.envs.len() - 1;
    let env = env_with(p.state_fd, reason);
    p.envs[last] = pointers(&env);
    p._envs[last] = env;
    exec_old(p, last);
    std::io::Error::last_os_error()
}

/// Clears close-on-exec on the carried descriptors and executes the old image with
/// environment `env`. Async-signal-safe. Returns only if `execveat` fails.
fn exec_old(p: &Prepared, env: usize) {
    for fd in &p.fds {
        // SAFETY: fcntl with integer arguments on a descriptor number.
        unsafe {
            libc::fcntl(*fd, libc::F_SETFD, 0);
        }
    }
    // SAFETY: execveat with the old image's descriptor, an empty path (AT_EMPTY_PATH),
    // and argv/envp arrays of pointers into CStrings that `p` keeps alive, each array
    // ending in a null pointer.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            p.image,
            c"".as_ptr(),
            p.argv.as_ptr(),
            p.envs[env].as_ptr(),
            libc::AT_EMPTY_PATH,
        );
    }
}

extern "C" fn on_crash(sig: libc::c_int) {
    let p = ARMED.load(Ordering::SeqCst);
    if !p.is_null() {
        if let Some(i) = CRASH_SIGNALS.iter().position(|s| *s == sig) {
            // SAFETY: `p` is valid while armed (see `disarm`).
            exec_old(unsafe { &*p }, i);
        }
    }
    // No old image, or it could not be executed: die of the signal as without us.
    // SAFETY: resetting a disposition and raising a signal are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}
