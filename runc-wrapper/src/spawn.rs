//! Starting a runtime: `posix_spawn(3)`, with no signal blocked and none ignored.
//!
//! A supervisor blocks the signals its loop reads from a signalfd (tether: SIGCHLD,
//! SIGTERM, SIGINT, SIGHUP), and may have been started with signals ignored (`nohup`, a
//! shell's `&`). std's `Command` passes both on to the child (measured, Rust 1.95: a
//! wrapper shell's `wait` for a background job never returned under tether's shim), and
//! resetting them in a `pre_exec` closure makes std fork the whole supervisor: its page
//! tables copied at every runc call, and every page any of its threads writes until then
//! faulted and copied. [`RuntimeCommand::spawn`] uses glibc's `posix_spawn` instead, which
//! clones with `CLONE_VM | CLONE_VFORK` (nothing copied; the calling thread waits until the
//! child has called `execve`), and asks it for an empty mask (`POSIX_SPAWN_SETSIGMASK`)
//! and every signal at its default action (`POSIX_SPAWN_SETSIGDEF`). The set of defaults
//! is written bit by bit: glibc's `sigfillset` leaves out its two internal signals (32,
//! 33), and `posix_spawn` would then leave those ignored in the child. No code of ours
//! runs in the child.
//!
//! A child whose `execve` fails is reaped by glibc inside `posix_spawn` (it reports the
//! error through memory it shares with the child, and then `waitpid`s it; a reaper that
//! got there first only makes that call fail, which glibc ignores). A reaping supervisor's
//! monitor holds its reaper off the child while `spawn` runs (see `ProcessMonitor::start`).
#![allow(unsafe_code)]

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// Where one of a runtime's standard streams leads.
#[derive(Debug, Default)]
pub enum ChildStdio {
    /// This process's own (nothing is done).
    #[default]
    Inherit,
    /// `/dev/null`, opened by the child.
    Null,
    /// This descriptor (a copy of it; this process keeps its own until the command is
    /// dropped).
    Fd(OwnedFd),
    /// A new pipe; this process's end is in [`RuntimeChild`].
    Piped,
}

/// A runtime to start: its program, arguments and stdio, and whether it leads a process
/// group of its own. The environment is this process's, read when it is started.
#[derive(Debug)]
pub struct RuntimeCommand {
    /// argv; `argv[0]` is the program.
    argv: Vec<CString>,
    /// An argument held a NUL byte (it cannot be passed; `spawn` fails).
    saw_nul: bool,
    stdio: [ChildStdio; 3],
    process_group: bool,
}

/// A started runtime: its pid and this process's ends of its piped streams.
#[derive(Debug)]
pub struct RuntimeChild {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
    /// The write end of the runtime's stdin, when it was [`ChildStdio::Piped`].
    pub stdin: Option<File>,
    /// The read end of its stdout, when it was [`ChildStdio::Piped`].
    pub stdout: Option<File>,
    /// The read end of its stderr, when it was [`ChildStdio::Piped`].
    pub stderr: Option<File>,
}

impl RuntimeCommand {
    /// `program` (a path, or a name looked up in `PATH`) with no arguments, all of its
    /// stdio inherited.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let mut cmd = RuntimeCommand {
            argv: Vec::with_capacity(16),
            saw_nul: false,
            stdio: Default::default(),
            process_group: false,
        };
        cmd.arg(program);
        cmd
    }

    /// Adds an argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Self {
        match CString::new(arg.as_ref().as_bytes()) {
            Ok(c) => self.argv.push(c),
            Err(_) => {
                self.saw_nul = true;
                self.argv.push(CString::default());
            }
        }
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&mut self, args: I) -> &mut Self {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// The runtime's stdin.
    pub fn stdin(&mut self, s: ChildStdio) -> &mut Self {
        self.stdio[0] = s;
        self
    }

    /// The runtime's stdout.
    pub fn stdout(&mut self, s: ChildStdio) -> &mut Self {
        self.stdio[1] = s;
        self
    }

    /// The runtime's stderr.
    pub fn stderr(&mut self, s: ChildStdio) -> &mut Self {
        self.stdio[2] = s;
        self
    }

    /// Starts the runtime as the leader of a new process group (so that it can be killed
    /// with whatever it started and has not detached yet).
    pub fn new_process_group(&mut self) -> &mut Self {
        self.process_group = true;
        self
    }

    /// The program.
    pub fn program(&self) -> &OsStr {
        OsStr::from_bytes(self.argv[0].as_bytes())
    }

    /// Starts the runtime (see the module's doc): no signal blocked, none ignored, stdio
    /// as set, every other descriptor as this process has it (this crate opens all of its
    /// own close-on-exec). Fails with the `execve` error when the program cannot be run,
    /// in which case nothing is left running or unreaped.
    pub fn spawn(&self) -> io::Result<RuntimeChild> {
        if self.saw_nul {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NUL byte in a runtime argument",
            ));
        }
        // The environment as std sees it (read under its lock), not `environ` itself,
        // which another thread's `set_var` may be changing.
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).ok()
            })
            .collect();

        let mut actions = FileActions::new()?;
        // Descriptors the child copies from: kept open until posix_spawn returns.
        let mut sources: Vec<OwnedFd> = Vec::new();
        let mut ours: [Option<File>; 3] = [None, None, None];
        for ((slot, target), stdio) in ours.iter_mut().zip(0..).zip(&self.stdio) {
            let (raw, keep) = match stdio {
                ChildStdio::Inherit => continue,
                ChildStdio::Null => {
                    let flags = if target == libc::STDIN_FILENO {
                        libc::O_RDONLY
                    } else {
                        libc::O_WRONLY
                    };
                    actions.open(target, c"/dev/null", flags)?;
                    continue;
                }
                ChildStdio::Fd(fd) => match above_stdio(fd.as_raw_fd())? {
                    Some(copy) => (copy.as_raw_fd(), Some(copy)),
                    None => (fd.as_raw_fd(), None),
                },
                ChildStdio::Piped => {
                    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                    let (mine, theirs) = if target == libc::STDIN_FILENO {
                        (w, r)
                    } else {
                        (r, w)
                    };
                    *slot = Some(File::from(mine));
                    let theirs = above_stdio(theirs.as_raw_fd())?.unwrap_or(theirs);
                    (theirs.as_raw_fd(), Some(theirs))
                }
            };
            actions.dup2(raw, target)?;
            sources.extend(keep);
        }

        let mut attr = SpawnAttr::new()?;
        attr.set_signals_clean()?;
        if self.process_group {
            attr.set_new_process_group()?;
        }
        attr.apply_flags()?;

        let program = &self.argv[0];
        let search = !program.as_bytes().contains(&b'/');
        let pid = posix_spawn(&self.argv, &env, search, &actions, &attr)?;
        // This process's copies of the child's ends close here (a pipe's reader sees EOF
        // once the child's copy is gone too).
        drop(sources);
        let [stdin, stdout, stderr] = ours;
        Ok(RuntimeChild {
            pid,
            status: None,
            stdin,
            stdout,
            stderr,
        })
    }
}

impl RuntimeChild {
    /// The runtime's pid, as std's `Child::id` gives it.
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// The runtime's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the runtime to exit and reaps it (once; later calls return the status).
    /// Only for a caller that is the only one to reap it (not under a reaping supervisor:
    /// see [`crate::ProcessMonitor`]).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.reap(0)? {
                Some(status) => return Ok(status),
                None => continue,
            }
        }
    }

    /// The runtime's status if it has exited (it is reaped then), `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// SIGKILLs the runtime, unless it has been reaped.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(io::Error::from)
    }

    /// One `waitpid` for this child with `flags` (retried on EINTR).
    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw: libc::c_int = 0;
        loop {
            // SAFETY: waitpid writes the status into the local `raw`, nothing else.
            let got = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            match got {
                0 => return Ok(None),
                p if p == self.pid => {
                    let status = ExitStatus::from_raw(raw);
                    self.status = Some(status);
                    return Ok(Some(status));
                }
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Pointers to `strings`, then a null pointer (what argv and envp are).
/// One `posix_spawn(3)` (`posix_spawnp` with `search`: `argv[0]` looked up on `PATH`) of
/// `argv[0]` with `argv` and `envp`, the child's descriptors as `actions` says and its
/// signals as `attr` says. Returns the child's pid; an `execve` that fails is an error
/// (glibc has reaped that child). The one place either face calls `posix_spawn`: runtimes
/// here, `binary://` loggers in the shim.
pub fn posix_spawn(
    argv: &[CString],
    envp: &[CString],
    search: bool,
    actions: &FileActions,
    attr: &SpawnAttr,
) -> io::Result<libc::pid_t> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no program to spawn",
        ));
    };
    let argv_ptrs = null_terminated(argv);
    let envp_ptrs = null_terminated(envp);
    let mut pid: libc::pid_t = 0;
    // SAFETY: `program`, every argv and envp string are NUL-terminated and alive (borrowed
    // from the caller) for the whole call; both pointer arrays end with a null pointer;
    // `actions` and `attr` are initialised. posix_spawn keeps none of them.
    let ret = unsafe {
        let spawn_fn = if search {
            libc::posix_spawnp
        } else {
            libc::posix_spawn
        };
        spawn_fn(
            &mut pid,
            program.as_ptr(),
            &actions.0,
            &attr.0,
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
        )
    };
    check(ret)?;
    Ok(pid)
}

fn null_terminated(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// A close-on-exec copy of `fd` numbered 3 or above when `fd` is 0, 1 or 2, so that no
/// `dup2` of the child overwrites a source a later one still needs (and each copies
/// between two different descriptors, which leaves the copy without FD_CLOEXEC).
fn above_stdio(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    if fd > libc::STDERR_FILENO {
        return Ok(None);
    }
    let copy = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(libc::STDERR_FILENO + 1))?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new descriptor; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(copy) }))
}

/// posix_spawn* functions return the error number instead of setting errno.
fn check(ret: libc::c_int) -> io::Result<()> {
    match ret {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// A `posix_spawn_file_actions_t`, destroyed on drop.
pub struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    /// No action yet.
    pub fn new() -> io::Result<Self> {
        let mut raw = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
        // SAFETY: init writes a valid empty file-actions object into `raw`.
        check(unsafe { libc::posix_spawn_file_actions_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above (init returned 0).
        Ok(FileActions(unsafe { raw.assume_init() }))
    }

    /// The child opens `path` as `fd`.
    pub fn open(&mut self, fd: RawFd, path: &std::ffi::CStr, flags: libc::c_int) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; glibc copies `path` (since 2.29).
        check(unsafe {
            libc::posix_spawn_file_actions_addopen(&mut self.0, fd, path.as_ptr(), flags, 0)
        })
    }

    /// The child copies `from` to `to`.
    pub fn dup2(&mut self, from: RawFd, to: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; both are plain descriptor numbers.
        check(unsafe { libc::posix_spawn_file_actions_adddup2(&mut self.0, from, to) })
    }

    /// The child closes every descriptor from `fd` up (glibc 2.34).
    #[cfg(target_env = "gnu")]
    pub fn close_from(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; the call records a close-from action.
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut self.0, fd) })
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in new() and destroyed exactly once, here.
        unsafe { libc::posix_spawn_file_actions_destroy(&mut self.0) };
    }
}

/// A `posix_spawnattr_t` and the flags to set on it, destroyed on drop.
pub struct SpawnAttr(libc::posix_spawnattr_t, libc::c_int);

impl SpawnAttr {
    /// Default attributes, no flag.
    pub fn new() -> io::Result<Self> {
        let mut raw = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
        // SAFETY: init writes a valid default attributes object into `raw`.
        check(unsafe { libc::posix_spawnattr_init(raw.as_mut_ptr()) })?;
        // SAFETY: initialised just above (init returned 0).
        Ok(SpawnAttr(unsafe { raw.assume_init() }, 0))
    }

    /// An empty mask, and every signal (1-64) at its default action.
    pub fn set_signals_clean(&mut self) -> io::Result<()> {
        // SAFETY: sigset_t is plain data: all zero bytes are the empty set.
        let empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        self.set_signals(&empty, &every_signal())
    }

    /// The child starts with `mask` as its signal mask and the signals in `default` at
    /// their default action.
    pub fn set_signals(
        &mut self,
        mask: &libc::sigset_t,
        default: &libc::sigset_t,
    ) -> io::Result<()> {
        // SAFETY: `self.0` is initialised; both sets are valid sigset_t values the calls copy.
        unsafe {
            check(libc::posix_spawnattr_setsigmask(&mut self.0, mask))?;
            check(libc::posix_spawnattr_setsigdefault(&mut self.0, default))?;
        }
        self.1 |= libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        Ok(())
    }

    /// The child leads a new process group (`setpgid(0, 0)`).
    pub fn set_new_process_group(&mut self) -> io::Result<()> {
        // SAFETY: `self.0` is initialised.
        check(unsafe { libc::posix_spawnattr_setpgroup(&mut self.0, 0) })?;
        self.1 |= libc::POSIX_SPAWN_SETPGROUP;
        Ok(())
    }

    /// Sets the flags the calls above asked for; call last, before [`posix_spawn`].
    pub fn apply_flags(&mut self) -> io::Result<()> {
        // Why the conversion cannot fail: the flags set here are 0x02, 0x04 and 0x08
        // (glibc's spawn.h), and posix_spawnattr_setflags takes them as a short.
        let flags = libc::c_short::try_from(self.1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "spawn flags"))?;
        // SAFETY: `self.0` is initialised.
        check(unsafe { libc::posix_spawnattr_setflags(&mut self.0, flags) })
    }
}

impl Drop for SpawnAttr {
    fn drop(&mut self) {
        // SAFETY: initialised in new() and destroyed exactly once, here.
        unsafe { libc::posix_spawnattr_destroy(&mut self.0) };
    }
}

/// Signals 1 to 64, glibc's internal 32 and 33 included (`sigfillset` and `sigaddset`
/// leave those out). SIGKILL and SIGSTOP are in it too: the child's sigaction for them
/// fails, and glibc goes on.
fn every_signal() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data: all zero bytes are the empty set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // Linux keeps signal n in bit n-1 of the set's first 64 bits, in either byte order
    // when all 64 are set.
    const FIRST_64_SIGNALS: usize = 8;
    debug_assert!(std::mem::size_of::<libc::sigset_t>() >= FIRST_64_SIGNALS);
    // SAFETY: sigset_t is at least 8 bytes (glibc: 128, musl: 128), written bytewise.
    unsafe {
        std::ptr::write_bytes(
            std::ptr::from_mut(&mut set).cast::<u8>(),
            0xff,
            FIRST_64_SIGNALS,
        );
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::{SigSet, Signal};
    use std::io::Read;

    /// `SigBlk` and `SigIgn` of a shell started through a [`RuntimeCommand`].
    fn masks_of_child() -> (u64, u64) {
        let mut cmd = RuntimeCommand::new("/bin/sh");
        cmd.args([
            "-c",
            "while read -r k v; do case \"$k\" in SigBlk:|SigIgn:) echo \"$v\" ;; esac; \
             done </proc/$$/status",
        ]);
        cmd.stdout(ChildStdio::Piped).stdin(ChildStdio::Null);
        let mut child = cmd.spawn().expect("run sh");
        let mut text = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut text)
            .expect("read");
        assert!(child.wait().expect("wait").success());
        let mut v = text
            .lines()
            .map(|l| u64::from_str_radix(l.trim(), 16).expect("hex"));
        (v.next().expect("SigBlk"), v.next().expect("SigIgn"))
    }

    #[test]
    fn a_runtime_starts_with_no_blocked_or_ignored_signal() {
        // On a thread of its own, so the harness's other threads keep their mask; the
        // dispositions are the process's, put back after.
        std::thread::spawn(|| {
            let mut set = SigSet::empty();
            set.add(Signal::SIGCHLD);
            set.add(Signal::SIGTERM);
            set.thread_block().expect("block");
            // SAFETY: SIG_IGN for SIGHUP, restored below; no handler is involved.
            let old = unsafe {
                nix::sys::signal::signal(Signal::SIGHUP, nix::sys::signal::SigHandler::SigIgn)
            }
            .expect("ignore SIGHUP");
            let (blocked, ignored) = masks_of_child();
            // SAFETY: puts back the disposition saved above.
            unsafe { nix::sys::signal::signal(Signal::SIGHUP, old) }.expect("restore");
            // Nothing at all: not the caller's SIGHUP, not the harness's SIGPIPE, not
            // glibc's internal 32 and 33.
            assert_eq!(blocked, 0, "blocked: {blocked:x}");
            assert_eq!(ignored, 0, "ignored: {ignored:x}");
        })
        .join()
        .expect("the test thread");
    }

    #[test]
    fn stdio_goes_where_it_is_set_and_a_missing_program_is_an_error() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let mut cmd = RuntimeCommand::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; cat"]);
        cmd.stdin(ChildStdio::Piped)
            .stdout(ChildStdio::Fd(w))
            .stderr(ChildStdio::Piped)
            .new_process_group();
        let mut child = cmd.spawn().expect("spawn");
        drop(cmd); // our copy of the stdout pipe's write end
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("piped stdin");
            input.write_all(b"in\n").expect("write");
        }
        let mut out = String::new();
        File::from(r).read_to_string(&mut out).expect("read");
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut err)
            .expect("read");
        assert_eq!(child.wait().expect("wait").code(), Some(0));
        assert_eq!(out, "out\nin\n");
        assert_eq!(err, "err\n");
        assert_eq!(child.wait().expect("once more").code(), Some(0));

        let e = RuntimeCommand::new("/nonexistent/runc")
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = RuntimeCommand::new("no-such-runtime-in-path")
            .spawn()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = RuntimeCommand::new("sh").arg("a\0b").spawn().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    }

    #[test]
    fn a_new_process_group_is_led_by_the_runtime() {
        let mut cmd = RuntimeCommand::new("sh");
        cmd.args([
            "-c",
            "ps -o pgid= -p $$ 2>/dev/null || cut -d' ' -f5 /proc/$$/stat",
        ])
        .stdout(ChildStdio::Piped)
        .new_process_group();
        let mut child = cmd.spawn().expect("spawn");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .expect("read");
        child.wait().expect("wait");
        assert_eq!(out.trim(), child.pid().to_string());
    }
}
