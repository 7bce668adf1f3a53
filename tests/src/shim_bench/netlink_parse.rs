//! The decoding of the kernel's netlink messages the shim bench reads, apart from the
//! sockets they arrive on: the proc connector's process events ([`proc_event`], read by
//! `proc_events.rs`) and generic netlink's replies ([`reply_status`], [`attrs`],
//! [`family_id`], [`user_system_us`], read by `taskstats.rs`: the `TASKSTATS` family's id,
//! then a thread group's CPU times).
//!
//! Every function here takes whatever bytes arrived and answers `None` (or the gap it
//! found) where they fall short; none panics, whatever the bytes. Integers are in the
//! host's byte order, as netlink sends them.
//!
//! `fuzz/fuzz_targets/bench_netlink.rs` drives every function here with arbitrary bytes.
//! It includes this file by path (`#[path = ...] mod netlink_parse;`) so that the fuzz
//! build does not compile the test crate and its dependencies: hence nothing here but
//! `core`/`std`, no `libc` (the kernel's numbers are written down; the tests of
//! `proc_events.rs` check the public ones against `libc`).
#![forbid(unsafe_code)]

// ---- The proc connector (linux/cn_proc.h) ----

/// `PROC_EVENT_FORK` (`enum proc_cn_event`): a process or thread was forked.
pub const PROC_EVENT_FORK: u32 = 0x0000_0001;
/// `PROC_EVENT_EXEC`: a process called `execve`.
pub const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// `PROC_EVENT_EXIT`: a thread exited.
pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// `struct nlmsghdr` (16) + `struct cn_msg` (20): where `struct proc_event` starts.
pub const EVENT_OFFSET: usize = 36;

/// What a process event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A new process (not a thread), forked by a thread of `parent_tgid`.
    Fork {
        /// The thread group (process) of the thread that forked it.
        parent_tgid: i32,
    },
    /// An `execve`.
    Exec,
    /// The exit of a thread of the process (`leader`: of its thread-group leader).
    Exit {
        /// Whether the thread that exited is the process's thread-group leader.
        leader: bool,
    },
}

/// One process event, keyed by its process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEvent {
    /// What happened.
    pub kind: EventKind,
    /// The process (thread group id) it happened to: the new child of a fork.
    pub pid: i32,
    /// When, as the kernel stamped it (`timestamp_ns`: ns on CLOCK_MONOTONIC).
    pub ns: u64,
}

/// One proc-connector datagram's event, if it is the fork of a process, an exec or the
/// exit of a thread (keyed by its process). `None` for any other event (a thread's
/// creation, a uid change, ...), for a datagram too short to hold its event, and for a
/// pid that does not fit an `i32`.
pub fn proc_event(msg: &[u8]) -> Option<ProcEvent> {
    let u32_at = |o: usize| Some(u32::from_ne_bytes(msg.get(o..o + 4)?.try_into().ok()?));
    let i32_at = |o: usize| i32::try_from(u32_at(o)?).ok();
    // struct proc_event: what (u32), cpu (u32), timestamp_ns (u64), event_data (union).
    let e = EVENT_OFFSET;
    let what = u32_at(e)?;
    let ns = u64::from_ne_bytes(msg.get(e + 8..e + 16)?.try_into().ok()?);
    if what == PROC_EVENT_FORK {
        // event_data: parent_pid, parent_tgid, child_pid, child_tgid. A new thread has
        // its process's tgid (and its parent is the process's parent): not a fork here.
        let (parent_tgid, child, child_tgid) = (i32_at(e + 20)?, i32_at(e + 24)?, i32_at(e + 28)?);
        if child != child_tgid {
            return None;
        }
        return Some(ProcEvent {
            kind: EventKind::Fork { parent_tgid },
            pid: child,
            ns,
        });
    }
    // event_data: process_pid, process_tgid, ...
    let pid = i32_at(e + 16)?;
    let tgid = i32_at(e + 20)?;
    let kind = match what {
        PROC_EVENT_EXEC => EventKind::Exec,
        // A thread's exit counts toward its process's end, not as the leader's.
        PROC_EVENT_EXIT => EventKind::Exit {
            leader: pid == tgid,
        },
        _ => return None,
    };
    Some(ProcEvent {
        kind,
        pid: tgid,
        ns,
    })
}

// ---- Generic netlink (linux/netlink.h, linux/genetlink.h, linux/taskstats.h) ----

/// `NLMSG_ERROR`: the type of a message carrying a `struct nlmsgerr` (a request failed).
pub const NLMSG_ERROR: u16 = 2;
/// `struct nlmsghdr` (16) + `struct genlmsghdr` (4): where a generic netlink message's
/// attributes start.
pub const GENL_HEADERS: usize = 20;
/// `CTRL_ATTR_FAMILY_ID`: the id a family's messages are sent under (u16).
const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `TASKSTATS_TYPE_STATS`: a `struct taskstats`.
const TASKSTATS_TYPE_STATS: u16 = 3;
/// `TASKSTATS_TYPE_AGGR_TGID`: a thread group's answer, nesting its id and its stats.
const TASKSTATS_TYPE_AGGR_TGID: u16 = 5;
/// `offsetof(struct taskstats, ac_utime)` and `ac_stime` (µs; stable since version 1 of
/// the struct).
const AC_UTIME: usize = 152;
const AC_STIME: usize = 160;

/// `n` rounded up to netlink's alignment (4 bytes: `NLMSG_ALIGN`, `NLA_ALIGN`).
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The netlink attributes in `buf`, in order: (type without the nested/byte-order bits,
/// value). Every value is a slice of `buf`; the walk ends at the first attribute whose
/// header or value runs past the end of `buf`. A length below the header's 4 bytes is
/// read as 4 (an empty value), so the walk always moves on.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = buf.get(at..at + 4)?;
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        let value = buf.get(at + 4..at + len.max(4))?;
        at += align4(len.max(4));
        Some((kind, value))
    })
}

/// What one message read from a generic netlink socket is to the request numbered `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Not its reply (a late reply to an earlier request, or too short to say): skip it.
    OtherRequest,
    /// An `NLMSG_ERROR`: the request failed with `errno` (`-nlmsgerr.error`, saturated),
    /// `None` when the message ends before the error code.
    Failed {
        /// The errno the kernel answered, when the message holds it.
        errno: Option<i32>,
    },
    /// The reply itself: its attributes start at [`GENL_HEADERS`].
    Answer,
}

/// Whether `reply` answers the request numbered `seq`, and how (see [`ReplyStatus`]).
pub fn reply_status(reply: &[u8], seq: u32) -> ReplyStatus {
    let u16_at = |o: usize| {
        reply
            .get(o..o + 2)
            .map(|b| u16::from_ne_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        reply
            .get(o..o + 4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    // nlmsghdr: len (u32), type (u16), flags (u16), seq (u32), pid (u32).
    if u32_at(8) != Some(seq) {
        return ReplyStatus::OtherRequest;
    }
    if u16_at(4) == Some(NLMSG_ERROR) {
        // nlmsgerr.error, right after the header: a negative errno.
        let errno = u32_at(16).map(|c| c.cast_signed().saturating_neg());
        return ReplyStatus::Failed { errno };
    }
    ReplyStatus::Answer
}

/// The family id in a `CTRL_CMD_GETFAMILY` reply: the first `CTRL_ATTR_FAMILY_ID`
/// attribute's u16. `None` without one, or when that attribute is shorter than 2 bytes.
pub fn family_id(reply: &[u8]) -> Option<u16> {
    attrs(reply.get(GENL_HEADERS..).unwrap_or_default())
        .find(|&(kind, _)| kind == CTRL_ATTR_FAMILY_ID)
        .and_then(|(_, v)| Some(u16::from_ne_bytes(v.get(..2)?.try_into().ok()?)))
}

/// What a taskstats reply lacked for [`user_system_us`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsGap {
    /// No `TASKSTATS_TYPE_AGGR_TGID` attribute.
    NoAggregate,
    /// No `TASKSTATS_TYPE_STATS` inside the (first) aggregate.
    NoStats,
    /// A `struct taskstats` that ends before `ac_stime`.
    ShortStats,
}

impl StatsGap {
    /// The gap, said in a few words (for an error message).
    pub fn message(self) -> &'static str {
        match self {
            StatsGap::NoAggregate => "no aggregate in the taskstats reply",
            StatsGap::NoStats => "no stats in the taskstats reply",
            StatsGap::ShortStats => "short taskstats",
        }
    }
}

/// The `ac_utime` and `ac_stime` (µs, as the kernel wrote them) of a `TASKSTATS_CMD_GET`
/// reply for a thread group: the first `TASKSTATS_TYPE_AGGR_TGID` attribute, its first
/// nested `TASKSTATS_TYPE_STATS`, the two u64 counters in it.
pub fn user_system_us(reply: &[u8]) -> Result<(u64, u64), StatsGap> {
    let aggr = attrs(reply.get(GENL_HEADERS..).unwrap_or_default())
        .find(|&(kind, _)| kind == TASKSTATS_TYPE_AGGR_TGID)
        .map(|(_, v)| v)
        .ok_or(StatsGap::NoAggregate)?;
    let stats = attrs(aggr)
        .find(|&(kind, _)| kind == TASKSTATS_TYPE_STATS)
        .map(|(_, v)| v)
        .ok_or(StatsGap::NoStats)?;
    let u64_at = |o: usize| {
        stats
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_ne_bytes)
            .ok_or(StatsGap::ShortStats)
    };
    Ok((u64_at(AC_UTIME)?, u64_at(AC_STIME)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attribute: header (len, type) and value, padded to its alignment.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = u16::try_from(4 + value.len()).expect("small attribute");
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    /// A generic netlink message: nlmsghdr (type, seq), genlmsghdr, then `payload`.
    fn genl_message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(GENL_HEADERS + payload.len()).expect("small message");
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes()); // flags
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
        out.extend_from_slice(&[2, 1, 0, 0]); // genlmsghdr: TASKSTATS_CMD_NEW, version 1
        out.extend_from_slice(payload);
        out
    }

    /// A taskstats reply for thread group 42: AGGR_TGID nesting PID 42 and STATS.
    fn taskstats_reply(stats_len: usize) -> Vec<u8> {
        let mut stats = vec![0u8; stats_len];
        if stats_len >= AC_STIME + 8 {
            stats[AC_UTIME..AC_UTIME + 8].copy_from_slice(&12_000u64.to_ne_bytes());
            stats[AC_STIME..AC_STIME + 8].copy_from_slice(&4_000u64.to_ne_bytes());
        }
        let mut nested = attr(1, &42i32.to_ne_bytes()); // TASKSTATS_TYPE_PID
        nested.extend(attr(TASKSTATS_TYPE_STATS, &stats));
        genl_message(0x17, 7, &attr(TASKSTATS_TYPE_AGGR_TGID, &nested))
    }

    /// A proc-connector datagram: nlmsghdr, cn_msg, proc_event (`what`, its data).
    fn proc_datagram(what: u32, ns: u64, data: [u32; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&76u32.to_ne_bytes()); // nlmsg_len
        out.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
        out.extend_from_slice(&[0; 10]); // flags, seq, pid
        out.extend_from_slice(&1u32.to_ne_bytes()); // cn_msg.id.idx: CN_IDX_PROC
        out.extend_from_slice(&1u32.to_ne_bytes()); // cn_msg.id.val: CN_VAL_PROC
        out.extend_from_slice(&[0; 8]); // seq, ack
        out.extend_from_slice(&40u16.to_ne_bytes()); // len: sizeof(struct proc_event)
        out.extend_from_slice(&0u16.to_ne_bytes()); // flags
        assert_eq!(out.len(), EVENT_OFFSET);
        out.extend_from_slice(&what.to_ne_bytes());
        out.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        out.extend_from_slice(&ns.to_ne_bytes());
        for word in data {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        out.resize(76, 0);
        out
    }

    #[test]
    fn attributes_are_walked_at_their_aligned_lengths() {
        // (len 6, type 1, "ab" + 2 bytes of padding), (len 8, type 0x4002: nested bit).
        let mut buf = Vec::new();
        for (len, kind, value) in [(6u16, 1u16, &b"ab\0\0"[..]), (8, 0x4002, &[1, 2, 3, 4])] {
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
            buf.extend_from_slice(value);
        }
        let found: Vec<_> = attrs(&buf).collect();
        assert_eq!(found, vec![(1, &b"ab"[..]), (2, &[1u8, 2, 3, 4][..])]);
    }

    #[test]
    fn attribute_lengths_below_the_header_or_past_the_end_stop_or_step_by_four() {
        // len 0 and len 2 read as empty values 4 bytes apart; the walk moves on.
        let mut buf = Vec::new();
        for (len, kind) in [(0u16, 1u16), (2, 2)] {
            buf.extend_from_slice(&len.to_ne_bytes());
            buf.extend_from_slice(&kind.to_ne_bytes());
        }
        // len 200 with 4 bytes of value: runs past the end, so the walk ends there.
        buf.extend_from_slice(&200u16.to_ne_bytes());
        buf.extend_from_slice(&3u16.to_ne_bytes());
        buf.extend_from_slice(&[9; 4]);
        let found: Vec<_> = attrs(&buf).collect();
        assert_eq!(found, vec![(1, &[][..]), (2, &[][..])]);
        // A header cut short yields nothing.
        assert_eq!(attrs(&[8, 0, 1]).count(), 0);
        assert_eq!(attrs(&[]).count(), 0);
    }

    #[test]
    fn a_process_events_fields_come_from_its_datagram() {
        let exec = proc_datagram(PROC_EVENT_EXEC, 1_000, [41, 42, 0, 0]);
        assert_eq!(
            proc_event(&exec),
            Some(ProcEvent {
                kind: EventKind::Exec,
                pid: 42,
                ns: 1_000
            })
        );
        // A fork of a process; a new thread (child pid != child tgid) is not one.
        let fork = proc_datagram(PROC_EVENT_FORK, 2_000, [7, 8, 50, 50]);
        assert_eq!(
            proc_event(&fork),
            Some(ProcEvent {
                kind: EventKind::Fork { parent_tgid: 8 },
                pid: 50,
                ns: 2_000
            })
        );
        let thread = proc_datagram(PROC_EVENT_FORK, 2_000, [7, 8, 51, 50]);
        assert_eq!(proc_event(&thread), None);
        // A thread's exit is its process's, not the leader's; the leader's says so.
        let thread_exit = proc_datagram(PROC_EVENT_EXIT, 3_000, [51, 50, 0, 0]);
        let leader_exit = proc_datagram(PROC_EVENT_EXIT, 3_500, [50, 50, 0, 0]);
        assert_eq!(
            proc_event(&thread_exit).map(|e| (e.kind, e.pid)),
            Some((EventKind::Exit { leader: false }, 50))
        );
        assert_eq!(
            proc_event(&leader_exit).map(|e| e.kind),
            Some(EventKind::Exit { leader: true })
        );
        // Events other than these three (here PROC_EVENT_UID) are not kept.
        assert_eq!(proc_event(&proc_datagram(4, 1, [1, 1, 0, 0])), None);
    }

    #[test]
    fn a_short_or_odd_process_event_is_none() {
        let exec = proc_datagram(PROC_EVENT_EXEC, 1_000, [41, 42, 0, 0]);
        // Cut before the timestamp, before the pid, before the tgid.
        for len in [0, 4, EVENT_OFFSET + 4, EVENT_OFFSET + 16, EVENT_OFFSET + 23] {
            assert_eq!(proc_event(&exec[..len]), None, "cut at {len}");
        }
        assert!(proc_event(&exec[..EVENT_OFFSET + 24]).is_some());
        // A fork cut before the child's tgid.
        let fork = proc_datagram(PROC_EVENT_FORK, 2_000, [7, 8, 50, 50]);
        assert_eq!(proc_event(&fork[..EVENT_OFFSET + 31]), None);
        // A pid past i32::MAX is no pid.
        let odd = proc_datagram(PROC_EVENT_EXEC, 1, [1, 0x8000_0000, 0, 0]);
        assert_eq!(proc_event(&odd), None);
    }

    #[test]
    fn a_reply_is_told_by_its_sequence_and_type() {
        let answer = genl_message(0x17, 7, &[]);
        assert_eq!(reply_status(&answer, 7), ReplyStatus::Answer);
        assert_eq!(reply_status(&answer, 6), ReplyStatus::OtherRequest);
        // Too short to carry a sequence number: not the reply.
        assert_eq!(reply_status(&answer[..11], 7), ReplyStatus::OtherRequest);
        // NLMSG_ERROR with nlmsgerr.error -ENOENT (2); cut before the code, no errno.
        let mut error = genl_message(NLMSG_ERROR, 7, &[]);
        error.truncate(16);
        assert_eq!(reply_status(&error, 7), ReplyStatus::Failed { errno: None });
        error.extend_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(
            reply_status(&error, 7),
            ReplyStatus::Failed { errno: Some(2) }
        );
        // i32::MIN cannot be negated: it saturates.
        error.truncate(16);
        error.extend_from_slice(&i32::MIN.to_ne_bytes());
        assert_eq!(
            reply_status(&error, 7),
            ReplyStatus::Failed {
                errno: Some(i32::MAX)
            }
        );
    }

    #[test]
    fn the_family_id_is_the_first_family_id_attribute() {
        let mut payload = attr(2, b"TASKSTATS\0"); // CTRL_ATTR_FAMILY_NAME
        payload.extend(attr(CTRL_ATTR_FAMILY_ID, &0x17u16.to_ne_bytes()));
        let reply = genl_message(0x10, 1, &payload);
        assert_eq!(family_id(&reply), Some(0x17));
        // Without the attribute, with a 1-byte one, with the headers cut short.
        assert_eq!(family_id(&genl_message(0x10, 1, &attr(2, b"X\0"))), None);
        let short = genl_message(0x10, 1, &attr(CTRL_ATTR_FAMILY_ID, &[1]));
        assert_eq!(family_id(&short), None);
        assert_eq!(family_id(&reply[..GENL_HEADERS - 1]), None);
    }

    #[test]
    fn cpu_times_come_from_the_stats_nested_in_the_aggregate() {
        // version 14 of struct taskstats is 440 bytes long.
        assert_eq!(user_system_us(&taskstats_reply(440)), Ok((12_000, 4_000)));
        assert_eq!(
            user_system_us(&taskstats_reply(AC_STIME + 8)),
            Ok((12_000, 4_000))
        );
    }

    #[test]
    fn a_truncated_or_incomplete_taskstats_reply_says_what_it_lacks() {
        // Stats ending before ac_stime.
        assert_eq!(
            user_system_us(&taskstats_reply(AC_STIME + 7)),
            Err(StatsGap::ShortStats)
        );
        // An aggregate without stats, and no aggregate at all.
        let pid_only = attr(TASKSTATS_TYPE_AGGR_TGID, &attr(1, &42i32.to_ne_bytes()));
        assert_eq!(
            user_system_us(&genl_message(0x17, 7, &pid_only)),
            Err(StatsGap::NoStats)
        );
        assert_eq!(
            user_system_us(&genl_message(0x17, 7, &attr(1, &[0; 4]))),
            Err(StatsGap::NoAggregate)
        );
        // The whole reply cut anywhere: the nested stats are cut (or the aggregate runs
        // past the end and is not seen at all); never a panic.
        let whole = taskstats_reply(440);
        for len in 0..whole.len() {
            let cut = user_system_us(&whole[..len]);
            assert!(
                matches!(cut, Err(StatsGap::NoAggregate)),
                "cut at {len}: {cut:?}"
            );
        }
        // The aggregate's own length claiming more than its parent holds: the nested
        // walk stops at the aggregate's end, which cuts the stats.
        let mut lying = whole.clone();
        let stats_len_at = GENL_HEADERS + 4 + 8;
        lying[stats_len_at..stats_len_at + 2].copy_from_slice(&u16::MAX.to_ne_bytes());
        assert_eq!(user_system_us(&lying), Err(StatsGap::NoStats));
        assert_eq!(StatsGap::ShortStats.message(), "short taskstats");
    }
}
