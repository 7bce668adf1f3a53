//! The shim bench's netlink decoding (tests/src/shim_bench/netlink_parse.rs): proc
//! connector events and generic netlink (taskstats) replies, every reader run on the same
//! bytes. No panic; every attribute value, nested ones too, lies within the input; what a
//! reader returns was read from the input.
#![no_main]
use libfuzzer_sys::fuzz_target;

// By path, not as a dependency: the test crate would bring its own heavy dependencies
// into the instrumented build.
#[path = "../../tests/src/shim_bench/netlink_parse.rs"]
mod netlink_parse;

use netlink_parse::{
    attrs, family_id, proc_event, reply_status, user_system_us, EventKind, ReplyStatus,
    EVENT_OFFSET, GENL_HEADERS,
};

/// How deep nested attributes are walked (taskstats nests two levels).
const NESTING: usize = 3;

fuzz_target!(|data: &[u8]| {
    check_proc_event(data);
    check_attrs(data, data, NESTING);
    if let Some(attributes) = data.get(GENL_HEADERS..) {
        check_attrs(data, attributes, NESTING);
    }
    check_reply(data);
});

/// The u32 at `offset`, as the kernel wrote it, if the input holds it.
fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        data.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// A parsed event's what, pids and time are the input's words at their places.
fn check_proc_event(data: &[u8]) {
    let Some(event) = proc_event(data) else {
        return;
    };
    let e = EVENT_OFFSET;
    let ns = data.get(e + 8..e + 16).expect("an event holds its time");
    assert_eq!(event.ns.to_ne_bytes(), ns);
    let word = |o: usize| u32_at(data, e + o).expect("an event holds its pids");
    let pid = u32::try_from(event.pid).expect("a pid is not negative");
    match event.kind {
        EventKind::Fork { parent_tgid } => {
            assert_eq!(word(0), netlink_parse::PROC_EVENT_FORK);
            assert_eq!(u32::try_from(parent_tgid).ok(), Some(word(20)));
            assert_eq!((pid, pid), (word(24), word(28)));
        }
        EventKind::Exec => {
            assert_eq!(word(0), netlink_parse::PROC_EVENT_EXEC);
            assert_eq!(pid, word(20));
        }
        EventKind::Exit { leader } => {
            assert_eq!(word(0), netlink_parse::PROC_EVENT_EXIT);
            assert_eq!(pid, word(20));
            assert_eq!(leader, word(16) == word(20));
        }
    }
}

/// Every value `attrs` yields from `buf` lies within `input` (and `buf`), the walk ends
/// (each attribute takes at least its 4-byte header), and so do the nested walks.
fn check_attrs(input: &[u8], buf: &[u8], depth: usize) {
    let within = |outer: &[u8], inner: &[u8]| {
        let (outer, inner) = (outer.as_ptr_range(), inner.as_ptr_range());
        outer.start <= inner.start && inner.end <= outer.end
    };
    let mut count = 0;
    for (kind, value) in attrs(buf) {
        count += 1;
        assert!(count <= buf.len() / 4, "more attributes than headers fit");
        assert!(kind <= 0x3fff, "the nested and byte-order bits are dropped");
        assert!(within(buf, value) && within(input, value));
        if depth > 0 {
            check_attrs(input, value, depth - 1);
        }
    }
}

/// The reply readers: the sequence check, and what the family id and CPU times are made of.
fn check_reply(data: &[u8]) {
    match u32_at(data, 8) {
        // Too short to carry a sequence number: never a reply.
        None => assert_eq!(reply_status(data, 0), ReplyStatus::OtherRequest),
        Some(seq) => {
            assert_ne!(reply_status(data, seq), ReplyStatus::OtherRequest);
            assert_eq!(
                reply_status(data, seq.wrapping_add(1)),
                ReplyStatus::OtherRequest
            );
            if let ReplyStatus::Failed { errno } = reply_status(data, seq) {
                assert_eq!(errno.is_some(), data.len() >= 20);
            }
        }
    }
    if let Some(id) = family_id(data) {
        let bytes = id.to_ne_bytes();
        assert!(data[GENL_HEADERS..].windows(2).any(|w| w == bytes));
    }
    match user_system_us(data) {
        Ok((user, system)) => {
            for counter in [user, system] {
                let bytes = counter.to_ne_bytes();
                assert!(data[GENL_HEADERS..].windows(8).any(|w| w == bytes));
            }
        }
        Err(gap) => assert!(!gap.message().is_empty()),
    }
}
