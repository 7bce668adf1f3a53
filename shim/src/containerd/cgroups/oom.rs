//! OOM notifications for a container's memory cgroup, for an epoll loop.
//!
//! [`OomWatcher::fd`] is registered for readability; when it fires the loop
//! calls [`OomWatcher::check`], which drains the descriptor without blocking
//! and says whether new OOM kills happened (containerd's `TaskOOM` event).
//!
//! * cgroup v1: an eventfd registered through `cgroup.event_control` against
//!   `memory.oom_control`. The kernel also signals it when the cgroup is
//!   removed, which `check` tells apart by looking for the directory.
//! * cgroup v2: inotify on `memory.events` (the kernel raises `IN_MODIFY` on
//!   every change), comparing the `oom_kill` counter with the last one seen.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::containerd::cgroups::files::flat_keyed;
use crate::containerd::cgroups::{host_hierarchy, of_pid, Hierarchy, ProcessCgroups};

/// Why OOM events cannot be watched, or no longer can.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    /// `/proc/<pid>/cgroup` could not be read (usually: the process is gone).
    #[error("cannot read the cgroups of process {pid}: {source}")]
    ProcCgroup {
        /// The process asked about.
        pid: i32,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The process is in no mounted memory cgroup (v1 controller not mounted,
    /// or v2 memory controller not enabled for its cgroup).
    #[error("no memory cgroup to watch")]
    NoMemoryCgroup,
    /// A cgroup file could not be opened, read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("open", "read", "write to").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// A system call on the watcher's own descriptors failed.
    #[error("{action}: {source}")]
    Sys {
        /// The call that failed.
        action: &'static str,
        /// The errno.
        #[source]
        source: Errno,
    },
    /// The memory cgroup was removed: no more events will come; deregister
    /// and drop the watcher.
    #[error("the memory cgroup was removed")]
    Gone,
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OomError {
    let path = path.to_path_buf();
    move |source| OomError::Io {
        action,
        path,
        source,
    }
}

/// Watches one memory cgroup for OOM kills. Owns its descriptors; dropping it
/// closes them (which, in v1, also unregisters the kernel event).
#[derive(Debug)]
pub struct OomWatcher {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    V1 {
        /// The eventfd the kernel signals (an `OwnedFd`, so that a live upgrade can hand
        /// it over: nix's `EventFd` cannot be rebuilt from a descriptor).
        efd: OwnedFd,
        dir: PathBuf,
    },
    V2 {
        inotify: OwnedFd,
        events: PathBuf,
        /// `cgroup.events`, whose `populated` says when the cgroup has emptied.
        cgroup_events: PathBuf,
        oom_kills: u64,
        /// The cgroup was found empty while an OOM kill was being reported: the next
        /// check says [`OomError::Gone`].
        ended: bool,
    },
}

impl OomWatcher {
    /// Watches the memory cgroup of `pid`.
    ///
    /// v1: an eventfd (`EFD_CLOEXEC|EFD_NONBLOCK`) registered by writing
    /// `"<eventfd> <fd of memory.oom_control>"` to `cgroup.event_control`.
    /// v2: a non-blocking inotify watch (`IN_MODIFY`) on `memory.events`, counting
    /// `oom_kill` from 0 as containerd's Go watcher does: the cgroup is the
    /// container's own, made with it, so every kill it counts is the container's,
    /// including one before the watch existed (the first [`OomWatcher::check`]
    /// reports it). A second watch on `cgroup.events` ends the watcher once the cgroup
    /// is empty (`populated 0`: the container has exited), as the Go watcher ends:
    /// removing a v2 cgroup sends an inotify watch on its files nothing, so without it
    /// the watch would outlive the container.
    /// Fails with [`OomError::NoMemoryCgroup`] if the process has no memory
    /// cgroup; callers log that and carry on without OOM events.
    pub fn new(pid: i32) -> Result<Self, OomError> {
        let cgroups = of_pid(pid).map_err(|source| OomError::ProcCgroup { pid, source })?;
        Self::from_cgroups(&cgroups)
    }

    /// Like [`OomWatcher::new`], for cgroups resolved earlier.
    pub fn from_cgroups(cgroups: &ProcessCgroups) -> Result<Self, OomError> {
        match host_hierarchy() {
            Hierarchy::V1 => Self::v1(cgroups.v1_dir("memory").ok_or(OomError::NoMemoryCgroup)?),
            Hierarchy::V2 => Self::v2(cgroups.unified_dir().ok_or(OomError::NoMemoryCgroup)?),
        }
    }

    fn v1(dir: &Path) -> Result<Self, OomError> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|source| OomError::Sys {
                action: "eventfd",
                source,
            })?;
        let control_path = dir.join("memory.oom_control");
        let control = match File::open(&control_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.exists() => {
                return Err(OomError::Gone)
            }
            Err(e) => return Err(io_err("open", &control_path)(e)),
        };
        let event_control = dir.join("cgroup.event_control");
        let line = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        OpenOptions::new()
            .write(true)
            .open(&event_control)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(io_err("write to", &event_control))?;
        // The kernel holds its own references now; `control` may be closed.
        Ok(OomWatcher {
            kind: Kind::V1 {
                efd: efd.into(),
                dir: dir.to_path_buf(),
            },
        })
    }

    fn v2(dir: &Path) -> Result<Self, OomError> {
        let events = dir.join("memory.events");
        if !events.exists() {
            // No directory: the cgroup is already gone; no file: the memory
            // controller is not enabled for it.
            return Err(if dir.exists() {
                OomError::NoMemoryCgroup
            } else {
                OomError::Gone
            });
        }
        let inotify = inotify::init().map_err(|source| OomError::Sys {
            action: "inotify_init1",
            source,
        })?;
        inotify::add_watch(inotify.as_fd(), &events, inotify::IN_MODIFY)
            .map_err(io_err("watch", &events))?;
        let cgroup_events = dir.join("cgroup.events");
        inotify::add_watch(inotify.as_fd(), &cgroup_events, inotify::IN_MODIFY)
            .map_err(io_err("watch", &cgroup_events))?;
        Ok(OomWatcher {
            kind: Kind::V2 {
                inotify,
                events,
                cgroup_events,
                oom_kills: 0,
                ended: false,
            },
        })
    }

    /// The descriptor to poll for readability. Valid as long as the watcher.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match &self.kind {
            Kind::V1 { efd, .. } => efd.as_fd(),
            Kind::V2 { inotify, .. } => inotify.as_fd(),
        }
    }

    /// Call when [`OomWatcher::fd`] is readable: drains it without blocking and
    /// returns `Ok(true)` if one or more new OOM events happened, `Ok(false)`
    /// for a spurious or unrelated wakeup. `Err(OomError::Gone)` once the
    /// cgroup has been removed (v2: or has emptied): deregister the fd and drop the
    /// watcher. After `Ok(true)`, check again: the same wakeup may also have ended
    /// the cgroup (an OOM kill and the exit it causes come together).
    pub fn check(&mut self) -> Result<bool, OomError> {
        match &mut self.kind {
            Kind::V1 { efd, dir } => {
                let mut signalled = false;
                loop {
                    let mut count = [0u8; 8];
                    match nix::unistd::read(efd.as_raw_fd(), &mut count) {
                        Ok(_) => signalled |= u64::from_ne_bytes(count) > 0,
                        Err(Errno::EAGAIN) => break,
                        Err(Errno::EINTR) => continue,
                        Err(source) => {
                            return Err(OomError::Sys {
                                action: "read eventfd",
                                source,
                            })
                        }
                    }
                }
                // The kernel signals the eventfd when the cgroup goes away too.
                if !dir.join("memory.oom_control").exists() {
                    return Err(OomError::Gone);
                }
                Ok(signalled)
            }
            Kind::V2 {
                inotify,
                events,
                cgroup_events,
                oom_kills,
                ended,
            } => {
                if *ended {
                    return Err(OomError::Gone);
                }
                let watch_removed =
                    inotify::drain(inotify.as_fd()).map_err(|source| OomError::Sys {
                        action: "read inotify",
                        source,
                    })?;
                // Read before the OOM count: an OOM kill that emptied the cgroup is
                // counted before the exit that followed it, so it is not lost.
                let empty = !read_populated(cgroup_events)?.unwrap_or(false);
                let Some(now) = read_oom_kills(events)? else {
                    return Err(OomError::Gone);
                };
                if now > *oom_kills {
                    *oom_kills = now;
                    *ended = empty;
                    return Ok(true);
                }
                // The counter can only restart if the cgroup was recreated.
                *oom_kills = now;
                if watch_removed || empty {
                    return Err(OomError::Gone);
                }
                Ok(false)
            }
        }
    }
}

/// The `oom_kill` count in a v2 `memory.events`; `None` if the file is gone
/// (ENOENT, or ENODEV while the cgroup is being torn down).
fn read_oom_kills(events: &Path) -> Result<Option<u64>, OomError> {
    match std::fs::read_to_string(events) {
        Ok(s) => Ok(Some(parse_oom_kills(&s))),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(e) => Err(io_err("read", events)(e)),
    }
}

/// `populated` of a v2 `cgroup.events`: whether any process is in the cgroup or below;
/// `None` if the file is gone (the cgroup was removed).
fn read_populated(cgroup_events: &Path) -> Result<Option<bool>, OomError> {
    match std::fs::read_to_string(cgroup_events) {
        Ok(s) => Ok(Some(parse_populated(&s))),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(e) => Err(io_err("read", cgroup_events)(e)),
    }
}

/// `populated` from `cgroup.events` text (a file without the key counts as populated:
/// only the kernel's `populated 0` ends a watcher).
fn parse_populated(s: &str) -> bool {
    !flat_keyed(s).any(|(k, v)| k == "populated" && v == 0)
}

/// `oom_kill` from `memory.events` text (0 if absent).
fn parse_oom_kills(s: &str) -> u64 {
    flat_keyed(s)
        .find(|(k, _)| *k == "oom_kill")
        .map_or(0, |(_, v)| v)
}

/// The few inotify calls the v2 watcher needs. nix's `inotify` feature is not
/// enabled in this workspace, so they go through libc directly.
#[allow(unsafe_code)]
mod inotify {
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use nix::errno::Errno;

    pub(super) const IN_MODIFY: u32 = libc::IN_MODIFY;

    /// A non-blocking, close-on-exec inotify instance.
    pub(super) fn init() -> Result<OwnedFd, Errno> {
        // SAFETY: inotify_init1 takes only flags and touches no memory of ours.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        let fd = Errno::result(fd)?;
        // SAFETY: `fd` was just returned by inotify_init1, is open, and is
        // owned by nothing else; OwnedFd takes sole ownership and closes it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Adds a watch for `mask` on `path`.
    pub(super) fn add_watch(fd: BorrowedFd<'_>, path: &Path, mask: u32) -> io::Result<()> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c_path` is a NUL-terminated string alive for the whole
        // call; `fd` is a live descriptor borrowed for the call; the kernel
        // only reads the path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads every pending event without blocking; returns whether any says
    /// the watch is gone (`IN_IGNORED`, `IN_DELETE_SELF`, `IN_UNMOUNT`).
    pub(super) fn drain(fd: BorrowedFd<'_>) -> Result<bool, Errno> {
        // Room for many events; each is a 16-byte header plus a name, and a
        // file watch carries no name.
        let mut buf = [0u8; 4096];
        let mut removed = false;
        loop {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(Errno::EAGAIN) => return Ok(removed),
                Ok(n) => removed |= events_say_removed(&buf[..n.min(buf.len())]),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Walks `struct inotify_event { i32 wd; u32 mask; u32 cookie; u32 len; char name[len]; }` records.
    pub(super) fn events_say_removed(mut bytes: &[u8]) -> bool {
        let gone = libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_UNMOUNT;
        let mut removed = false;
        while bytes.len() >= 16 {
            let word =
                |i: usize| u32::from_ne_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            let mask = word(4);
            let len = word(12) as usize;
            removed |= mask & gone != 0;
            let Some(rest) = bytes.get(16usize.saturating_add(len)..) else {
                break;
            };
            bytes = rest;
        }
        removed
    }
}

mod snapshot;
pub use snapshot::*;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Waits up to `timeout` for `fd` to become readable.
    fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) if n > 0 => return true,
                Ok(_) if left.is_zero() => return false,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => panic!("poll: {e}"),
            }
        }
    }

    #[test]
    fn parse_oom_kill_count() {
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 0\n"),
            2
        );
        assert_eq!(parse_oom_kills(""), 0);
    }

    #[test]
    fn inotify_records() {
        let mut rec = Vec::new();
        for (mask, len) in [(libc::IN_MODIFY, 0u32), (libc::IN_MODIFY, 16)] {
            rec.extend_from_slice(&1i32.to_ne_bytes());
            rec.extend_from_slice(&mask.to_ne_bytes());
            rec.extend_from_slice(&0u32.to_ne_bytes());
            rec.extend_from_slice(&len.to_ne_bytes());
            rec.resize(rec.len() + len as usize, 0);
        }
        assert!(!inotify::events_say_removed(&rec));
        let mut with_ignored = rec.clone();
        with_ignored.extend_from_slice(&1i32.to_ne_bytes());
        with_ignored.extend_from_slice(&libc::IN_IGNORED.to_ne_bytes());
        with_ignored.extend_from_slice(&[0; 8]);
        assert!(inotify::events_say_removed(&with_ignored));
        // Truncated or lying lengths do not panic.
        assert!(!inotify::events_say_removed(&rec[..20]));
        let mut lying = rec[..16].to_vec();
        lying[12..16].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(!inotify::events_say_removed(&lying));
    }

    /// The v2 watcher's plumbing against a fake `memory.events` (inotify sees
    /// regular-file writes the same way it sees cgroupfs notifications).
    #[test]
    fn v2_watcher_on_fake_events_file() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        let cgroup_events = dir.path().join("cgroup.events");
        assert!(matches!(
            OomWatcher::v2(dir.path()),
            Err(OomError::NoMemoryCgroup)
        ));
        std::fs::write(&cgroup_events, "populated 1\nfrozen 0\n").unwrap();
        // A kill before the watch existed is the container's too: reported by the first
        // check (the loop checks once when it registers the watcher).
        std::fs::write(&events, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\n").unwrap();
        let mut w = OomWatcher::v2(dir.path()).unwrap();
        assert!(!readable(w.fd(), Duration::from_millis(50)));
        assert!(w.check().unwrap(), "the kill before the watch");
        assert!(!w.check().unwrap(), "nothing changed since");

        // A change that is not an OOM kill: a spurious wakeup.
        std::fs::write(&events, "low 0\nhigh 0\nmax 5\noom 0\noom_kill 1\n").unwrap();
        assert!(readable(w.fd(), Duration::from_secs(2)));
        assert!(!w.check().unwrap());
        assert!(!readable(w.fd(), Duration::from_millis(50)), "drained");

        std::fs::write(&events, "low 0\nhigh 0\nmax 6\noom 1\noom_kill 3\n").unwrap();
        assert!(readable(w.fd(), Duration::from_secs(2)));
        assert!(w.check().unwrap());
        assert!(!w.check().unwrap(), "reported once");

        std::fs::remove_file(&events).unwrap();
        assert!(readable(w.fd(), Duration::from_secs(2)));
        assert!(matches!(w.check(), Err(OomError::Gone)));
    }

    /// The container exits: `cgroup.events` says `populated 0` and the watcher ends,
    /// after reporting an OOM kill that came in the same wakeup.
    #[test]
    fn v2_watcher_ends_when_the_cgroup_empties() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("memory.events");
        let cgroup_events = dir.path().join("cgroup.events");
        std::fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
        std::fs::write(&cgroup_events, "populated 1\nfrozen 0\n").unwrap();
        let mut w = OomWatcher::v2(dir.path()).unwrap();
        assert!(!w.check().unwrap());

        // Emptied without an OOM kill: Gone.
        std::fs::write(&cgroup_events, "populated 0\nfrozen 0\n").unwrap();
        assert!(readable(w.fd(), Duration::from_secs(2)));
        assert!(matches!(w.check(), Err(OomError::Gone)));

        // An OOM kill and the exit it caused, seen in one wakeup: the kill, then Gone.
        std::fs::write(&cgroup_events, "populated 1\nfrozen 0\n").unwrap();
        let mut w = OomWatcher::v2(dir.path()).unwrap();
        assert!(!w.check().unwrap());
        std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
        std::fs::write(&cgroup_events, "populated 0\nfrozen 0\n").unwrap();
        assert!(readable(w.fd(), Duration::from_secs(2)));
        assert!(w.check().unwrap(), "the OOM kill is reported");
        assert!(matches!(w.check(), Err(OomError::Gone)));
    }

    #[test]
    fn parse_populated_values() {
        assert!(parse_populated("populated 1\nfrozen 0\n"));
        assert!(!parse_populated("populated 0\nfrozen 1\n"));
        assert!(parse_populated(""), "no key: not known to be empty");
    }

    #[test]
    fn no_such_process() {
        assert!(matches!(
            OomWatcher::new(-1),
            Err(OomError::ProcCgroup { pid: -1, .. })
        ));
    }

    /// Removes the test cgroup and kills the child even when an assertion fails.
    struct Cleanup {
        child: Option<Child>,
        /// A process that keeps the cgroup populated (v2).
        keeper: Option<Child>,
        dir: PathBuf,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for mut c in [self.child.take(), self.keeper.take()]
                .into_iter()
                .flatten()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
            // A killed task may linger in the cgroup for a moment.
            for _ in 0..50 {
                match std::fs::remove_dir(&self.dir) {
                    Ok(()) => return,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            eprintln!("could not remove {}", self.dir.display());
        }
    }

    /// A real OOM kill in a real cgroup v1 memory cgroup on this machine.
    #[test]
    fn v1_real_oom() {
        let root = Path::new("/sys/fs/cgroup/memory");
        if test_skip::unless_root() {
            return;
        }
        if host_hierarchy() != Hierarchy::V1 || !root.join("cgroup.event_control").exists() {
            test_skip::skip(&format!(
                "cgroup v1 only, and there is no v1 memory controller at {} (v2_real_oom covers v2)",
                root.display()
            ));
            return;
        }
        let dir = root.join(format!("tether-oomtest-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            test_skip::skip(&format!("cannot create {}: {e}", dir.display()));
            return;
        }
        let mut guard = Cleanup {
            child: None,
            keeper: None,
            dir: dir.clone(),
        };
        std::fs::write(dir.join("memory.limit_in_bytes"), "8M").unwrap();
        // Without a memsw limit the child could swap instead of being killed.
        let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), "8M");

        // The child joins the cgroup, then waits for our go-ahead so the
        // watcher is registered before memory runs out.
        let procs = dir.join("cgroup.procs");
        let script = format!(
            "echo $$ > '{}' && echo ready && read go && exec tail /dev/zero",
            procs.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        guard.child = Some(child);
        let c = guard.child.as_mut().unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");

        let mut w = OomWatcher::new(pid).unwrap();
        assert!(!w.check().unwrap(), "no OOM yet");
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();

        assert!(
            readable(w.fd(), Duration::from_secs(10)),
            "no OOM within 10 s"
        );
        assert!(w.check().unwrap());
        let status = c.wait().unwrap();
        println!("child ended: {status:?}");
        guard.child = None;

        // Removing the cgroup signals the eventfd once more: check says Gone.
        for _ in 0..50 {
            if std::fs::remove_dir(&dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(readable(w.fd(), Duration::from_secs(2)));
        assert!(matches!(w.check(), Err(OomError::Gone)));
    }

    /// Runs `command` in a child that joins the cgroup `dir` first; with `wait_for_go`
    /// it execs `command` only once it reads a line on stdin. Returns once the child is
    /// in the cgroup.
    fn spawn_in(dir: &Path, command: &str, wait_for_go: bool) -> Child {
        let procs = dir.join("cgroup.procs");
        let go = if wait_for_go { "&& read go " } else { "" };
        let script = format!(
            "echo $$ > '{}' && echo ready {go}&& exec {command}",
            procs.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    }

    /// Real OOM kills in a real cgroup v2 memory cgroup on this machine (the cgroup v2
    /// leg's guest): one before the watcher exists (reported by its first check, as
    /// the shim relies on when a container is killed before its watch is set up), one
    /// after (inotify on `memory.events` wakes the watcher), then the end of the watch
    /// when the cgroup empties (`cgroup.events`).
    #[test]
    fn v2_real_oom() {
        let root = Path::new("/sys/fs/cgroup");
        if test_skip::unless_root() {
            return;
        }
        let subtree = std::fs::read_to_string(root.join("cgroup.subtree_control"));
        if host_hierarchy() != Hierarchy::V2
            || !subtree.is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
        {
            test_skip::skip(
                "cgroup v2 only, and this is not a v2 host with the memory \
                 controller enabled at its root (v1_real_oom covers v1)",
            );
            return;
        }
        let dir = root.join(format!("tether-oomtest-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            test_skip::skip(&format!("cannot create {}: {e}", dir.display()));
            return;
        }
        let mut guard = Cleanup {
            child: None,
            keeper: None,
            dir: dir.clone(),
        };
        std::fs::write(dir.join("memory.max"), "8M").unwrap();
        // Without a swap limit the child could swap instead of being killed.
        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        // A small process that keeps the cgroup populated between the kills (the OOM
        // killer picks the largest process: the hog).
        guard.keeper = Some(spawn_in(&dir, "sleep 600", false));

        // 1. Killed before the watcher exists: its first check reports it.
        let status = spawn_in(&dir, "tail /dev/zero", false).wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the OOM killer ended the first child: {status:?}"
        );
        let mut w = OomWatcher::v2(&dir).unwrap();
        assert!(w.check().unwrap(), "the kill before the watch is reported");
        assert!(!w.check().unwrap(), "and only once");

        // 2. Killed while watched: memory.events changes, the fd becomes readable.
        let mut hog = spawn_in(&dir, "tail /dev/zero", true);
        writeln!(hog.stdin.as_mut().unwrap(), "go").unwrap();
        guard.child = Some(hog);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no oom_kill counted within 30 s");
            // The fd may wake for another memory.events key first (max, high).
            if readable(w.fd(), Duration::from_millis(500)) && w.check().unwrap() {
                break;
            }
        }
        guard.child.take().unwrap().wait().unwrap();

        // 3. The cgroup empties (its last process exits): the watch ends.
        let mut keeper = guard.keeper.take().unwrap();
        keeper.kill().unwrap();
        keeper.wait().unwrap();
        assert!(readable(w.fd(), Duration::from_secs(5)));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match w.check() {
                Err(OomError::Gone) => break,
                other => assert!(Instant::now() < deadline, "still watching: {other:?}"),
            }
            readable(w.fd(), Duration::from_millis(200));
        }
    }
}
