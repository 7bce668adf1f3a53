//! Skipping a test that cannot run here, visibly.
//!
//! Rust's test harness has no runtime skip: a test that returns early counts as passed.
//! [`skip`] therefore reports it through `test-skip` (the workspace's one skip mechanism: a
//! `SKIPPED <test>: <reason>` line on stderr that the harness does not capture, and the
//! count of skipped tests when the test binary exits) and, when `TETHER_SKIP_LOG` names a
//! file, appends `<test>\t<reason>` to it, so a runner (`tests/scripts/containerd-matrix.sh`)
//! can report the test as skipped, with the reason.

use std::io::Write;

/// The environment variable naming the file skip records are appended to.
pub const SKIP_LOG_ENV: &str = "TETHER_SKIP_LOG";

/// Records that `test` is skipped because of `reason`; the caller then returns.
pub fn skip(test: &str, reason: &str) {
    test_skip::skip_named(test, reason);
    let Some(path) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    // One write of one line with O_APPEND: parallel tests do not interleave.
    let line = format!("{test}\t{}\n", reason.replace(['\n', '\t'], " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(err) = written {
        eprintln!(
            "cannot record the skip in {}: {err}",
            path.to_string_lossy()
        );
    }
}
