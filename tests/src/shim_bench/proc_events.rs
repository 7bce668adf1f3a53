//! The kernel's process events (the proc connector, `NETLINK_CONNECTOR` /
//! `CN_IDX_PROC`): when each process was forked (and by which process), exec'd and when
//! it exited, stamped by the kernel on CLOCK_MONOTONIC (`ktime_get_ns`, the bench's clock).
//!
//! The shim bench takes runc's part of a call from here: the span from the `execve` of
//! the process a shim spawned as its runtime to that process's exit, both as the kernel
//! saw them. Everything before the `execve` (the shim's fork or spawn, up to the moment
//! its `vfork` parent is released) and after the exit (the SIGCHLD, the reap, the reply)
//! is the shim's own; no calibration of the timer enters the figure, and what the timer
//! adds (its exec of the real runc, its exit) lies inside the runtime's span, the same for
//! both shims.
//!
//! The fork stamp splits the shim's own share further ([`super::split`]): the kernel
//! takes it at the end of `copy_process`, before the child first runs, and records the
//! forking process (`parent_tgid`, whichever thread forked), so the runtime a shim started
//! is told from the processes runc itself forks (`runc init`, the timer's runc).
//!
//! A process's end is the last exit of its threads: runc (Go) ends with `exit_group`, and
//! its leader may exit before the other threads, the last of which tears the memory down
//! (the parent can reap only after that); that is runc's part too.
//!
//! Needs root (CAP_NET_ADMIN) and a kernel with `CONFIG_PROC_EVENTS`. One thread reads the
//! socket and keeps, per pid, the fork, exec and exit seen (bounded: [`MAX_PIDS`]). The
//! datagrams are decoded by [`super::netlink_parse::proc_event`] (which is fuzzed).
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::netlink_parse::{proc_event, EventKind, ProcEvent};

/// Pids remembered at most; past it the oldest half is dropped (a lifecycle runs a few
/// dozen runtimes; the whole machine's processes pass through here).
pub const MAX_PIDS: usize = 1 << 16;

const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
/// `NLMSG_DONE`: the type of the one message a listener sends.
const NLMSG_DONE: u16 = 3;
/// `sizeof(c_int)`, `sizeof(struct sockaddr_nl)` as the kernel takes them.
const INT_LEN: libc::socklen_t = 4;
const SOCKADDR_NL_LEN: libc::socklen_t = 12;

/// What the kernel told of one pid (ns on CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidTimes {
    /// Its fork (the end of the kernel's `copy_process`), when this listener saw it.
    pub fork_ns: Option<u64>,
    /// The process that forked it (its thread group's id), with [`PidTimes::fork_ns`].
    pub parent_tgid: Option<i32>,
    /// Its first `execve` after the fork seen; its last one when the fork was not seen.
    pub exec_ns: Option<u64>,
    /// The end of the process: the last exit of any of its threads seen. A Go process
    /// such as runc ends with `exit_group`, and its leader may leave before its other
    /// threads, the last of which tears its memory down; its parent can reap it only after
    /// that. Set from the first exit seen; final once the leader has exited and
    /// [`ProcEvents::sync`] has returned.
    pub exit_ns: Option<u64>,
    /// Whether its thread-group leader's exit was seen.
    pub leader_exited: bool,
}

#[derive(Debug, Default)]
struct Seen {
    pids: HashMap<i32, (u64, PidTimes)>,
    /// Events read in all (an order for dropping the oldest).
    count: u64,
    /// Whether the socket overflowed at some point (events lost).
    lost: bool,
}

impl Seen {
    /// Takes one event in.
    fn record(&mut self, event: ProcEvent) {
        self.count += 1;
        let count = self.count;
        if self.pids.len() >= MAX_PIDS {
            let keep_from = count.saturating_sub(MAX_PIDS as u64 / 2);
            self.pids.retain(|_, (at, _)| *at >= keep_from);
        }
        let entry = self
            .pids
            .entry(event.pid)
            .or_insert((count, PidTimes::default()));
        entry.0 = count;
        match event.kind {
            EventKind::Fork { parent_tgid } => {
                // A new process under a recycled pid starts afresh.
                entry.1 = PidTimes {
                    fork_ns: Some(event.ns),
                    parent_tgid: Some(parent_tgid),
                    ..PidTimes::default()
                };
            }
            EventKind::Exec => {
                let t = &mut entry.1;
                if t.leader_exited {
                    // A recycled pid whose fork was not seen.
                    *t = PidTimes::default();
                }
                if t.fork_ns.is_none() || t.exec_ns.is_none() {
                    t.exec_ns = Some(event.ns);
                }
            }
            EventKind::Exit { leader } => {
                let t = &mut entry.1;
                t.exit_ns = Some(t.exit_ns.map_or(event.ns, |e| e.max(event.ns)));
                t.leader_exited |= leader;
            }
        }
    }
}

/// The listener: a thread reading the proc connector for as long as this lives.
#[derive(Debug)]
pub struct ProcEvents {
    seen: Arc<(Mutex<Seen>, Condvar)>,
}

impl ProcEvents {
    /// Subscribes to the kernel's process events. Fails without root or without
    /// `CONFIG_PROC_EVENTS`.
    pub fn listen() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just returned to us and owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        // A whole machine's events arrive here: a large buffer keeps a busy second.
        let size: libc::c_int = 8 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int and its size.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&size as *const libc::c_int).cast(),
                INT_LEN,
            );
        }
        // SAFETY: a zeroed sockaddr_nl is valid; the fields set below are plain integers.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::sa_family_t::try_from(libc::AF_NETLINK).unwrap_or_default();
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: bind with a pointer to a live sockaddr_nl and its size.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                SOCKADDR_NL_LEN,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // nlmsghdr + cn_msg + the op: PROC_CN_MCAST_LISTEN.
        let mut msg = Vec::with_capacity(40);
        msg.extend_from_slice(&40u32.to_ne_bytes()); // nlmsg_len
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
        msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cn_msg.id.idx
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cn_msg.id.val
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
        msg.extend_from_slice(&4u16.to_ne_bytes()); // len
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        // SAFETY: send of a live buffer of its own length.
        let sent = unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let shared = Arc::clone(&seen);
        std::thread::Builder::new()
            .name("proc-events".into())
            .spawn(move || read_events(&sock, &shared))?;
        Ok(ProcEvents { seen })
    }

    /// Returns once every event the kernel queued before this call has been read (up to
    /// `within`; false if not): a child is spawned and reaped, and its exit read (the
    /// socket delivers in order). What the other threads of a process that exited earlier
    /// reported is then known.
    pub fn sync(&self, within: Duration) -> bool {
        let Ok(mut child) = std::process::Command::new("/bin/true").spawn() else {
            return false;
        };
        let pid = i32::try_from(child.id()).unwrap_or(0);
        let _ = child.wait();
        self.exited(pid, within).is_some()
    }

    /// What the kernel said of `pid` once its leader's exit has been read, waiting up to
    /// `within` for it (the exit is queued on the socket before its parent can reap it,
    /// so by the time a shim answered the call, it is on its way here; the exits of its
    /// other threads may still follow: see [`ProcEvents::sync`]).
    pub fn exited(&self, pid: i32, within: Duration) -> Option<PidTimes> {
        let (lock, cv) = &*self.seen;
        let until = Instant::now() + within;
        let mut seen = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(&(_, t)) = seen.pids.get(&pid) {
                if t.leader_exited {
                    return Some(t);
                }
            }
            let left = until.checked_duration_since(Instant::now())?;
            seen = cv
                .wait_timeout(seen, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The processes (not threads) `parent` forked from `from_ns` on, oldest fork first,
    /// each with what is known of it now.
    pub fn children_of(&self, parent: i32, from_ns: u64) -> Vec<(i32, PidTimes)> {
        let seen = self.seen.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(i32, PidTimes)> = seen
            .pids
            .iter()
            .filter(|(_, (_, t))| {
                t.parent_tgid == Some(parent) && t.fork_ns.is_some_and(|f| f >= from_ns)
            })
            .map(|(&pid, &(_, t))| (pid, t))
            .collect();
        found.sort_by_key(|(_, t)| t.fork_ns);
        found
    }

    /// Forgets every pid whose exit came before `ns` (a lifecycle done with).
    pub fn forget_before(&self, ns: u64) {
        let mut seen = self.seen.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.pids
            .retain(|_, (_, t)| t.exit_ns.is_none_or(|exit| exit >= ns));
    }

    /// Whether events were lost (the socket overflowed) since the listener started.
    pub fn lost_any(&self) -> bool {
        self.seen.0.lock().map(|s| s.lost).unwrap_or(true)
    }
}

/// The listener thread: reads events until the process ends.
fn read_events(sock: &OwnedFd, seen: &(Mutex<Seen>, Condvar)) {
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: recv into a live buffer of its own length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => {
                    if let Ok(mut s) = seen.0.lock() {
                        s.lost = true;
                    }
                    continue;
                }
                _ => return,
            }
        }
        let Ok(n) = usize::try_from(n) else { return };
        let Some(event) = proc_event(&buf[..n]) else {
            continue;
        };
        let (lock, cv) = seen;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.record(event);
        drop(s);
        cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernels_sizes_are_the_ones_written_down() {
        assert_eq!(INT_LEN as usize, std::mem::size_of::<libc::c_int>());
        assert_eq!(
            SOCKADDR_NL_LEN as usize,
            std::mem::size_of::<libc::sockaddr_nl>()
        );
        assert_eq!(i32::from(NLMSG_DONE), libc::NLMSG_DONE);
        // The numbers netlink_parse.rs writes down (it may not use libc: the fuzz crate
        // builds it alone).
        use super::super::netlink_parse as parse;
        assert_eq!(i32::from(parse::NLMSG_ERROR), libc::NLMSG_ERROR);
        assert_eq!(
            (
                parse::PROC_EVENT_FORK,
                parse::PROC_EVENT_EXEC,
                parse::PROC_EVENT_EXIT
            ),
            (
                libc::PROC_EVENT_FORK,
                libc::PROC_EVENT_EXEC,
                libc::PROC_EVENT_EXIT
            )
        );
    }

    #[test]
    fn a_process_ends_with_its_last_thread() {
        let mut seen = Seen::default();
        let at = |kind, ns| ProcEvent { kind, pid: 42, ns };
        seen.record(at(EventKind::Fork { parent_tgid: 7 }, 10));
        seen.record(at(EventKind::Exec, 20));
        // The leader leaves first; another thread later, which ends the process.
        seen.record(at(EventKind::Exit { leader: true }, 30));
        seen.record(at(EventKind::Exit { leader: false }, 35));
        let t = seen.pids[&42].1;
        assert_eq!(
            (t.fork_ns, t.parent_tgid, t.exec_ns, t.exit_ns),
            (Some(10), Some(7), Some(20), Some(35))
        );
        assert!(t.leader_exited);
        // The pid recycled, its fork missed: its exec starts it afresh.
        seen.record(at(EventKind::Exec, 50));
        let t = seen.pids[&42].1;
        assert_eq!((t.fork_ns, t.exec_ns, t.exit_ns), (None, Some(50), None));
    }

    #[test]
    fn a_childs_exec_and_exit_are_seen_in_order() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let events = ProcEvents::listen().expect("proc connector");
        let before = crate::shim_bench::clock::now_ns();
        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("spawn");
        let pid = i32::try_from(child.id()).expect("pid");
        child.wait().expect("wait");
        let t = events
            .exited(pid, Duration::from_secs(5))
            .expect("its exit is seen");
        let (exec, exit) = (t.exec_ns.expect("its exec"), t.exit_ns.expect("its exit"));
        assert!(before <= exec && exec <= exit, "{before} {exec} {exit}");
        let fork = t.fork_ns.expect("its fork");
        assert!(before <= fork && fork <= exec, "{before} {fork} {exec}");
        let me = i32::try_from(std::process::id()).expect("pid");
        assert_eq!(t.parent_tgid, Some(me));
        let children = events.children_of(me, before);
        assert!(children.iter().any(|&(p, _)| p == pid), "{children:?}");
        assert!(exit <= crate::shim_bench::clock::now_ns());
    }
}
