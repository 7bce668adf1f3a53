//! Skipping a test at run time, visibly.
//!
//! Rust's test harness has no run-time skip: a test that returns early counts as passed,
//! and what it prints is captured (shown only with `--nocapture` or when it fails). A test
//! that cannot run here (it needs root, a tool, a kernel feature) calls [`skip`] and
//! returns; [`skip`] then
//!
//! - writes `SKIPPED <test>: <reason>` straight to the process's stderr, which the
//!   harness does not capture, so the line shows in every run;
//! - counts it, and when the test binary exits prints how many of its tests were skipped
//!   (after the harness's `test result:` line, which counted them as passed).
//!
//! The unit tests of every crate of the workspace (`make unit-test`, runnable as any
//! user) and the integration test bed (`tether-tests`, which also records skips for the
//! containerd matrix's table) share it.
#![deny(unsafe_code)]

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// How many tests of this binary skipped themselves so far.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// The name of the running test: the harness runs each test on a thread named after it.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Records that the running test is skipped because of `reason`; the caller then returns.
/// See the crate documentation for what is shown.
pub fn skip(reason: &str) {
    skip_named(&current_test(), reason);
}

/// [`skip`] for a test named by the caller.
pub fn skip_named(test: &str, reason: &str) {
    SKIPPED.fetch_add(1, Ordering::Relaxed);
    report_at_exit();
    // One write of one line: parallel tests' lines do not interleave.
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `true` (and the test is recorded as skipped, "needs root") when this process is not
/// root: `if test_skip::unless_root() { return; }`.
pub fn unless_root() -> bool {
    if euid_is_root() {
        return false;
    }
    skip("needs root");
    true
}

/// How many tests of this binary have skipped themselves so far.
pub fn skipped() -> usize {
    SKIPPED.load(Ordering::Relaxed)
}

#[allow(unsafe_code)]
fn euid_is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Prints the count when the process exits (once per process).
#[allow(unsafe_code)]
fn report_at_exit() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // SAFETY: `print_count` is an `extern "C" fn()` that neither unwinds (it only does
        // a write whose error it ignores) nor calls `exit`; atexit only stores the pointer.
        let registered = unsafe { libc::atexit(print_count) };
        if registered != 0 {
            let _ = std::io::stderr()
                .write_all(b"test-skip: cannot register the skipped-tests count at exit\n");
        }
    });
}

extern "C" fn print_count() {
    let n = skipped();
    let line = format!(
        "{n} test{s} of this binary skipped (counted as passed above)\n",
        s = if n == 1 { "" } else { "s" }
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_counted_under_the_tests_name() {
        let before = skipped();
        assert!(current_test().contains("a_skip_is_counted_under_the_tests_name"));
        skip_named("some::test", "needs nothing, a unit test of the counter");
        assert!(skipped() > before);
    }
}
