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

mod inotify;

mod snapshot;
pub use snapshot::*;

#[cfg(test)]
mod tests;
