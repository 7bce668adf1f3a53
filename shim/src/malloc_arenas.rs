//! One malloc arena for the whole process.
//!
//! glibc gives each thread that allocates while another holds the main arena an arena of
//! its own: a 64 MiB reservation whose touched pages (tens of KiB, the worker's runc
//! calls and the publisher's frames) stay private to each shim for its lifetime. The
//! shim's threads allocate a few times per RPC, so sharing the main arena's lock costs
//! nothing measurable, while the extra arena costs every container ~20 KiB of USS
//! (measured: 223 -> 202 KiB per shim with 10 running).
#![allow(unsafe_code)]

/// Limits malloc to the main arena. Call first thing in `main`, before any thread starts
/// (arenas already handed out stay); harmless if glibc refuses (the default stays).
pub fn use_one_arena() {
    // SAFETY: mallopt only adjusts glibc's malloc parameters; M_ARENA_MAX with a positive
    // value is a documented setting, valid at any time, and no allocation is in flight on
    // another thread because none has been started yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
