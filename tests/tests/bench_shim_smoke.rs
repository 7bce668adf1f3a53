//! `make bench-shim` runs: one round of the shim bench (tether and the Go shim, each
//! driven directly over ttrpc) prints a line for every call, the split of the own share of
//! every call that runs runc, the shims' user and system CPU, and writes its JSON. Figures
//! are not checked: a benchmark is never asserted in a test.

use std::process::Command;
use tether_tests::shim_bench::lifecycle::CALLS;

const GO_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// The calls in which both shims' servers start runc.
const SPLIT_CALLS: &[&str] = &["Create", "Start", "Start (exec)", "Pids", "Kill", "Delete"];

#[test]
fn one_round_prints_every_call() {
    tether_tests::require::root();
    if !std::path::Path::new(GO_SHIM).is_file() {
        tether_tests::skip(
            "one_round_prints_every_call",
            "no containerd-shim-runc-v2 (apt-get install containerd)",
        );
        return;
    }
    let shim = tether_tests::containerd_env::shim_binary();
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("samples.json");
    let out = Command::new(env!("CARGO_BIN_EXE_bench_shim"))
        .arg(&shim)
        .env("BENCH_SHIM_ROUNDS", "1")
        .env("BENCH_SHIM_WARMUP", "0")
        .env("BENCH_SHIM_EXECS", "1")
        .env("BENCH_SHIM_OUTPUT", &json)
        .output()
        .expect("run bench_shim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench_shim failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for call in CALLS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("| {call} |"))),
            "no line for {call}:\n{stdout}"
        );
    }
    // The own share split at the kernel's stamps of the runtime each call started, and
    // the shim's CPU split into user and system time.
    for call in SPLIT_CALLS {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("| split: {call} |"))),
            "no split line for {call}:\n{stdout}"
        );
    }
    for row in [
        "| shim CPU per lifecycle, user / system |",
        "| shim CPU per exec, user / system |",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no line {row}:\n{stdout}"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON")).expect("JSON");
    assert_eq!(doc["shims"].as_array().map(Vec::len), Some(2), "{doc}");
}
