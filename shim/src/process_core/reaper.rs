//! One reaper for everything the supervisor is parent of.
//!
//! The supervisor is a child subreaper, so container processes (whose parent, runc, exits)
//! are reparented to it and it must reap them with `waitpid(-1)`. That same call would
//! steal the exit status of a runc invocation another thread is waiting for — the bug
//! every shim has had. [`RuncMonitor`] closes that hole: runc children are registered
//! under a lock while they are spawned, the reaper hands their status over instead of
//! treating it as a container exit, and the monitor also reaps its own child directly, so
//! it works even when no reaper loop runs (the `delete` action, tests).

use fifo::ExitRecord;
use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runc_wrapper::{ProcessMonitor, RuntimeChild, RuntimeCommand};
use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

/// How often `wait_until` looks for its child itself between the reaper's notifications
/// (which never come where no reaper loop runs), when it has no pidfd of the child.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// A child that exited and is not a runc invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildExit {
    pub pid: i32,
    /// Raw wait(2) status.
    pub status: i32,
    pub at: SystemTime,
}

impl ChildExit {
    /// The exit as both faces report it: the code (128+N if killed by signal N) and when
    /// it was reaped.
    pub fn record(&self) -> ExitRecord {
        ExitRecord::from_wait_status(self.status, self.at)
    }
}

#[derive(Debug, Default)]
struct RuncChildren {
    /// runc invocations started through the monitor and not yet waited for.
    running: HashSet<i32>,
    /// Their statuses, when the reaper got there first.
    done: HashMap<i32, i32>,
    /// A pidfd of each, opened at its spawn (none where the kernel has no `pidfd_open`):
    /// `wait_until` sleeps on it, so the kernel wakes the waiting thread at runc's exit
    /// rather than the reaper after its own wake-up. Taken out by the one thread that
    /// waits for that child while it waits, put back if it is still running.
    pidfds: HashMap<i32, OwnedFd>,
}

#[derive(Debug, Default)]
struct Shared {
    children: Mutex<RuncChildren>,
    reaped: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, RuncChildren> {
        // A poisoned lock only means another thread panicked while holding it; the sets
        // are still consistent (every update is a single insert/remove).
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Collects child exits for the supervisor's loop.
#[derive(Debug, Clone, Default)]
pub struct Reaper {
    shared: Arc<Shared>,
}

impl Reaper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The [`ProcessMonitor`] to give every `Runc` this supervisor uses.
    pub fn monitor(&self) -> Arc<dyn ProcessMonitor> {
        Arc::new(RuncMonitor {
            shared: self.shared.clone(),
        })
    }

    /// Reaps every child that has exited (never blocks). runc invocations are handed to
    /// their monitor; every other exit is returned in reap order.
    ///
    /// Callers that track processes by pid call this while holding the lock that guards
    /// their process table, so a pid cannot be reaped (and recycled) between a lookup and
    /// a signal.
    ///
    /// Each exit is peeked at before it is reaped ([`Reaper::reap_announced`]): a child
    /// whose `exec` failed inside a monitor's `start` is reaped by glibc's `posix_spawn`
    /// itself before `start` returns (std's fork + exec path, which runtimes took before,
    /// did so too, and aborted the process if it found the child gone); the peek leaves
    /// it to the spawn, and the lock `start` holds keeps the reaper from it until then.
    pub fn reap(&self) -> Vec<ChildExit> {
        self.reap_announced(|_| {})
    }

    /// [`Reaper::reap`], telling `announce` of each exit (not a runc invocation's) while
    /// the child is still an unreaped zombie, before it is reaped: a face that must hand
    /// the status on (the standalone supervisor, to its keeper) does so before it could
    /// be lost with the face. Each status is peeked (`waitid` with `WNOWAIT`), announced,
    /// then that child is reaped by its pid; the record is the peeked one. `announce`
    /// runs under the reaper's lock: it must not start or wait for a runc invocation.
    pub fn reap_announced(&self, mut announce: impl FnMut(&ChildExit)) -> Vec<ChildExit> {
        let mut exits = Vec::new();
        loop {
            let (pid, status) = match peek(Id::All) {
                Peeked::Exit(pid, status) => (pid, status),
                Peeked::Interrupted => continue,
                Peeked::Nothing => break,
            };
            let mut children = self.shared.lock();
            // A runc invocation is registered under this lock before it can exit, and
            // leaves `running` only under it, after its monitor reaped it (without the
            // lock): one that is not registered any more may be gone already.
            let runc = children.running.contains(&pid);
            if !runc && !matches!(peek(Id::Pid(Pid::from_raw(pid))), Peeked::Exit(..)) {
                continue;
            }
            let exit = ChildExit {
                pid,
                status,
                at: SystemTime::now(),
            };
            if !runc {
                announce(&exit);
            }
            match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(_) => {}
                // Its runc monitor reaped it meanwhile (and has its status).
                Err(Errno::ECHILD) => continue,
                Err(_) => break,
            }
            if runc {
                children.done.insert(pid, status);
                drop(children);
                self.shared.reaped.notify_all();
            } else {
                drop(children);
                exits.push(exit);
            }
        }
        exits
    }
}

/// What a peek at exited children found.
enum Peeked {
    /// A child that exited, still unreaped: its pid and raw wait(2) status.
    Exit(i32, i32),
    Interrupted,
    /// No exited child (or no child at all).
    Nothing,
}

/// Looks at an exited child among `id` without reaping it (`WNOWAIT`).
fn peek(id: Id<'_>) -> Peeked {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    match waitid(id, flags) {
        // Only exits are asked for (WEXITED): anything else is no exit to act on.
        Ok(ws) => match raw_exit(ws) {
            Some((pid, status)) => Peeked::Exit(pid, status),
            None => Peeked::Nothing,
        },
        Err(Errno::EINTR) => Peeked::Interrupted,
        Err(_) => Peeked::Nothing, // ECHILD: no children at all
    }
}

/// The pid and raw wait(2) status of an exit (`None` for a stop or a continue).
fn raw_exit(ws: WaitStatus) -> Option<(i32, i32)> {
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), (code & 0xff) << 8)),
        WaitStatus::Signaled(pid, sig, core) => {
            Some((pid.as_raw(), sig as i32 | if core { 0x80 } else { 0 }))
        }
        _ => None,
    }
}

/// Starts runc children registered with the reaper and waits for them without racing it.
#[derive(Debug)]
struct RuncMonitor {
    shared: Arc<Shared>,
}

/// The pid of a child we spawned, as the kernel's signed `pid_t`.
pub fn pid_of(child: &Child) -> i32 {
    // Why the cast is exact: `Child::id` is the kernel's pid_t, which is positive and at
    // most pid_max (at most 2^22, PID_MAX_LIMIT), given back as a u32.
    #[allow(clippy::cast_possible_wrap)]
    let pid = child.id() as i32;
    pid
}

impl ProcessMonitor for RuncMonitor {
    fn start(&self, cmd: &RuntimeCommand) -> io::Result<RuntimeChild> {
        // Hold the lock across spawn: a reaper that collects the child before it is
        // registered blocks on this lock, then finds it registered.
        let mut children = self.shared.lock();
        let child = cmd.spawn()?;
        children.running.insert(child.pid());
        // Not reaped yet (that takes this lock): the pid is still the child's.
        if let Ok(fd) = crate::process_core::pidfd::open(child.pid()) {
            children.pidfds.insert(child.pid(), fd);
        }
        Ok(child)
    }

    fn wait(&self, child: &mut RuntimeChild) -> io::Result<ExitStatus> {
        let pid = child.pid();
        // Reap it ourselves if the reaper has not: one of the two calls gets the status,
        // the other sees ECHILD.
        let direct = loop {
            match waitpid(Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, code)) => break Some((code & 0xff) << 8),
                Ok(WaitStatus::Signaled(_, sig, core)) => {
                    break Some(sig as i32 | if core { 0x80 } else { 0 })
                }
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => break None,
                Err(e) => return Err(e.into()),
            }
        };
        let mut children = self.shared.lock();
        children.pidfds.remove(&pid);
        if let Some(raw) = direct {
            children.running.remove(&pid);
            children.done.remove(&pid);
            return Ok(ExitStatus::from_raw(raw));
        }
        loop {
            if let Some(raw) = children.done.remove(&pid) {
                children.running.remove(&pid);
                return Ok(ExitStatus::from_raw(raw));
            }
            if !children.running.contains(&pid) {
                return Err(io::Error::other(format!(
                    "exit status of runc child {pid} was lost"
                )));
            }
            children = self
                .shared
                .reaped
                .wait(children)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    fn wait_until(
        &self,
        child: &mut RuntimeChild,
        deadline: Instant,
    ) -> io::Result<Option<ExitStatus>> {
        let pid = child.pid();
        let pidfd = self.shared.lock().pidfds.remove(&pid);
        loop {
            // Reaped here, or by the reaper (ECHILD), which then files the status in `done`
            // under the lock taken below (so it is there once that lock is ours).
            let direct = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Some((code & 0xff) << 8),
                Ok(WaitStatus::Signaled(_, sig, core)) => {
                    Some(sig as i32 | if core { 0x80 } else { 0 })
                }
                Ok(_) | Err(Errno::EINTR) | Err(Errno::ECHILD) => None,
                Err(e) => return Err(e.into()),
            };
            let mut children = self.shared.lock();
            if let Some(raw) = direct.or_else(|| children.done.remove(&pid)) {
                children.running.remove(&pid);
                children.done.remove(&pid);
                return Ok(Some(ExitStatus::from_raw(raw)));
            }
            if !children.running.contains(&pid) {
                return Err(io::Error::other(format!(
                    "exit status of runc child {pid} was lost"
                )));
            }
            let now = Instant::now();
            if now >= deadline {
                // Still running: its `wait` comes next (after a kill), or another
                // `wait_until`, which sleeps on the pidfd again.
                if let Some(fd) = pidfd {
                    children.pidfds.insert(pid, fd);
                }
                return Ok(None);
            }
            match &pidfd {
                // Readable once runc has exited: the kernel wakes this thread itself,
                // whoever reaps runc.
                Some(fd) => {
                    drop(children);
                    // Rounded up: a timeout of 0 would spin through the last millisecond.
                    let left = (deadline - now).as_micros().div_ceil(1000);
                    let timeout = i32::try_from(left)
                        .ok()
                        .and_then(|ms| nix::poll::PollTimeout::try_from(ms).ok())
                        .unwrap_or(nix::poll::PollTimeout::MAX);
                    let mut fds = [nix::poll::PollFd::new(
                        fd.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    match nix::poll::poll(&mut fds, timeout) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    let pause = (deadline - now).min(WAIT_POLL);
                    let _ = self
                        .shared
                        .reaped
                        .wait_timeout(children, pause)
                        .unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn an_exit_records_its_code_or_128_plus_the_signal() {
        let at = SystemTime::now();
        let exited = ChildExit {
            pid: 1,
            status: 3 << 8,
            at,
        };
        assert_eq!(exited.record().code, 3);
        assert_eq!(exited.record().exited_at, at);
        let killed = ChildExit {
            pid: 1,
            status: libc::SIGKILL,
            at,
        };
        assert_eq!(killed.record().code, 137);
    }

    /// `waitpid(-1)` would steal the children of tests running in parallel in this
    /// process, so the real check runs alone in a child copy of the test binary.
    #[test]
    fn monitor_gets_the_status_even_when_the_reaper_runs_concurrently() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture"])
            .arg("process_core::reaper::tests::isolated_monitor_and_reaper")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    #[test]
    #[ignore = "run by monitor_gets_the_status_even_when_the_reaper_runs_concurrently"]
    fn isolated_monitor_and_reaper() {
        let reaper = Reaper::new();
        let monitor = reaper.monitor();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (reaper.clone(), stop.clone());
        let collector = std::thread::spawn(move || {
            let mut others = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                others.extend(r.reap());
                std::thread::yield_now();
            }
            others
        });
        let exit_with = |code: i32| {
            let mut cmd = RuntimeCommand::new("sh");
            cmd.args(["-c", &format!("exit {code}")]);
            cmd
        };
        for code in [0, 3, 7, 0, 1] {
            let mut child = monitor.start(&exit_with(code)).unwrap();
            let status = monitor.wait(&mut child).unwrap();
            assert_eq!(status.code(), Some(code));
            // The same through the deadline-bounded wait.
            let mut child = monitor.start(&exit_with(code)).unwrap();
            let far = Instant::now() + Duration::from_secs(10);
            let status = monitor.wait_until(&mut child, far).unwrap();
            assert_eq!(status.and_then(|s| s.code()), Some(code));
        }
        // A runtime that cannot be executed: posix_spawn reaps the failed child before
        // it returns (std's fork + exec path did too, and aborted if the reaper took it).
        let missing = RuntimeCommand::new("/nonexistent/runc");
        for _ in 0..200 {
            assert!(monitor.start(&missing).is_err());
        }
        // A child still running at the deadline is left to the caller, who kills it and
        // gets its status from `wait`.
        let mut child = monitor
            .start(RuntimeCommand::new("sleep").arg("10"))
            .unwrap();
        let asked = Instant::now();
        let soon = asked + Duration::from_millis(100);
        assert!(monitor.wait_until(&mut child, soon).unwrap().is_none());
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        child.kill().unwrap();
        let status = monitor.wait(&mut child).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let others = collector.join().unwrap();
        assert!(
            others.is_empty(),
            "no runc child reported as a container exit: {others:?}"
        );
    }

    #[test]
    fn an_exit_is_announced_while_its_child_is_still_unreaped() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "--nocapture"])
            .arg("process_core::reaper::tests::isolated_reap_announced")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("1 passed"), "{text}");
    }

    /// Whether `pid` is a zombie (exited, not reaped).
    fn zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    #[test]
    #[ignore = "run by an_exit_is_announced_while_its_child_is_still_unreaped"]
    fn isolated_reap_announced() {
        let reaper = Reaper::new();
        let monitor = reaper.monitor();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, s) = (reaper.clone(), stop.clone());
        // (pid, a zombie when announced, code) of every announced exit; and the exits.
        let collector = std::thread::spawn(move || {
            let mut announced = Vec::new();
            let mut exits = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                exits.extend(r.reap_announced(|e| {
                    announced.push((e.pid, zombie(e.pid), e.record().code));
                }));
                std::thread::yield_now();
            }
            (announced, exits)
        });
        // runc children, waited for by their monitor: never announced.
        for code in [0, 3] {
            let mut child = monitor
                .start(RuntimeCommand::new("sh").args(["-c", &format!("exit {code}")]))
                .unwrap();
            assert_eq!(monitor.wait(&mut child).unwrap().code(), Some(code));
        }
        // A plain child: announced (still a zombie then), then reaped and returned.
        let plain = pid_of(&Command::new("sh").args(["-c", "exit 5"]).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{plain}")).exists() {
            assert!(Instant::now() < deadline, "never reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (announced, exits) = collector.join().unwrap();
        assert_eq!(announced, [(plain, true, 5)]);
        assert_eq!(exits.len(), 1);
        assert_eq!((exits[0].pid, exits[0].record().code), (plain, 5));
    }
}
