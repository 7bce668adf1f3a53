//! A process's user and system CPU time as the kernel sampled them, from taskstats
//! (generic netlink, `TASKSTATS_CMD_GET` of a thread group): `ac_utime` and `ac_stime`,
//! the raw per-thread counters summed over its threads (and its ended threads).
//!
//! Why not `/proc/PID/stat`: on a kernel with tick-based accounting (no
//! `VIRT_CPU_ACCOUNTING`, as here) user and system time are only known by sampling, each
//! tick (`HZ`, 250 here: 4 ms) charged whole to the thread it interrupts, as user or
//! system. `/proc/PID/stat` scales that split onto the precise runtime and truncates each
//! field to clock ticks (10 ms): a shim lifecycle of a few ms reads as 0 or 1 there, which
//! biases a difference. The raw counters here are whole kernel ticks, untruncated; the
//! bench sums them over many samples and splits the precise runtime (schedstat) by their
//! ratio. Needs root for nothing but a kernel with `CONFIG_TASKSTATS`.
//!
//! This file does the socket I/O; the replies are decoded by [`super::netlink_parse`]
//! (which is fuzzed).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::netlink_parse::{
    align4, family_id, reply_status, user_system_us, ReplyStatus, GENL_HEADERS,
};

const NETLINK_GENERIC: libc::c_int = 16;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const TASKSTATS_CMD_GET: u8 = 1;
const TASKSTATS_CMD_ATTR_TGID: u16 = 2;
const NLM_F_REQUEST: u16 = 1;

/// A generic netlink socket bound to the taskstats family.
#[derive(Debug)]
pub struct TaskStats {
    sock: OwnedFd,
    family: u16,
    seq: u32,
}

impl TaskStats {
    /// Opens the socket and looks the family up. Fails without `CONFIG_TASKSTATS`.
    pub fn open() -> io::Result<Self> {
        // SAFETY: socket(2) with constant arguments; the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_GENERIC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just returned to us and owned by nothing else.
        let sock = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut me = TaskStats {
            sock,
            family: GENL_ID_CTRL,
            seq: 0,
        };
        let reply = me.ask(
            GENL_ID_CTRL,
            CTRL_CMD_GETFAMILY,
            CTRL_ATTR_FAMILY_NAME,
            b"TASKSTATS\0",
        )?;
        let id = family_id(&reply)
            .ok_or_else(|| io::Error::other("no TASKSTATS family id in the reply"))?;
        me.family = id;
        Ok(me)
    }

    /// The user and system time of thread group `tgid` (ns; whole kernel ticks).
    pub fn user_system(&mut self, tgid: i32) -> io::Result<UserSystem> {
        let reply = self.ask(
            self.family,
            TASKSTATS_CMD_GET,
            TASKSTATS_CMD_ATTR_TGID,
            &tgid.to_ne_bytes(),
        )?;
        let (user_us, system_us) =
            user_system_us(&reply).map_err(|gap| io::Error::other(gap.message()))?;
        Ok(UserSystem {
            user: user_us * 1000,
            system: system_us * 1000,
        })
    }

    /// Sends one request (one attribute) and returns its reply message.
    fn ask(&mut self, family: u16, cmd: u8, attr: u16, value: &[u8]) -> io::Result<Vec<u8>> {
        self.seq = self.seq.wrapping_add(1);
        let attr_len = 4 + value.len();
        let len = GENL_HEADERS + align4(attr_len);
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&u32::try_from(len).unwrap_or(0).to_ne_bytes());
        msg.extend_from_slice(&family.to_ne_bytes());
        msg.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel's
        msg.extend_from_slice(&[cmd, 1, 0, 0]); // genlmsghdr: cmd, version, reserved
        msg.extend_from_slice(&u16::try_from(attr_len).unwrap_or(0).to_ne_bytes());
        msg.extend_from_slice(&attr.to_ne_bytes());
        msg.extend_from_slice(value);
        msg.resize(len, 0);
        // SAFETY: send of a live buffer of its own length.
        let sent = unsafe { libc::send(self.sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 4096];
        loop {
            // SAFETY: recv into a live buffer of its own length.
            let n =
                unsafe { libc::recv(self.sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            let reply = &buf[..usize::try_from(n).unwrap_or(0)];
            match reply_status(reply, self.seq) {
                // A late reply to an earlier request (none is expected) is skipped.
                ReplyStatus::OtherRequest => continue,
                ReplyStatus::Failed { errno } => {
                    return Err(io::Error::from_raw_os_error(errno.unwrap_or(libc::EIO)));
                }
                ReplyStatus::Answer => return Ok(reply.to_vec()),
            }
        }
    }
}

/// CPU time split into user and system (in whatever unit the reader says).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserSystem {
    /// Time in user space.
    pub user: u64,
    /// Time in the kernel on the process's behalf.
    pub system: u64,
}

impl UserSystem {
    /// `self - earlier`, field by field (0 where a counter went back).
    pub fn since(self, earlier: UserSystem) -> UserSystem {
        UserSystem {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// `self + other`, field by field.
    pub fn plus(self, other: UserSystem) -> UserSystem {
        UserSystem {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_charged_ticks_while_it_spins() {
        let Ok(mut ts) = TaskStats::open() else {
            return; // a kernel without taskstats
        };
        let me = i32::try_from(std::process::id()).expect("pid");
        let before = ts.user_system(me).expect("own taskstats");
        let from = super::super::clock::now_ns();
        // 100 ms of user-space work: ~25 ticks at HZ 250, at least one even at HZ 100.
        while super::super::clock::now_ns() - from < 100_000_000 {
            std::hint::black_box(0u64);
        }
        let after = ts.user_system(me).expect("own taskstats");
        let d = after.since(before);
        assert!(d.user > 0, "{before:?} → {after:?}");
    }
}
