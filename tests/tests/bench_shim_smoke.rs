//! `make bench-shim` runs: one round of the shim bench (tether and the Go shim, each
//! driven directly over ttrpc) prints a line for every call, the split of the own share of
//! every call that runs runc, the shims' user and system CPU, each call against the paced
//! floor, and writes its JSON. Figures are not checked: a benchmark is never asserted in a
//! test.

use std::process::Command;
use tether_tests::shim_bench::lifecycle::CALLS;

const GO_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// The calls in which both shims' servers start runc.
const SPLIT_CALLS: &[&str] = &["Create", "Start", "Start (exec)", "Pids", "Kill", "Delete"];

#[test]
fn one_round_prints_every_call() {
    one_round("one_round_prints_every_call", "timer", false);
}

/// With the shims running runc itself (no timer), runc's part and the split come from the
/// kernel's stamps alone. Settled (`BENCH_SHIM_SETTLE=1`: an untimed Connect before each
/// server call): the same lines, and the run says so.
#[test]
fn one_round_with_runc_itself_prints_every_call_and_split() {
    one_round(
        "one_round_with_runc_itself_prints_every_call_and_split",
        "runc",
        true,
    );
}

/// One round of one exec with `BENCH_SHIM_RUNTIME=runtime` (and `BENCH_SHIM_SETTLE` when
/// `settle`): every line is there.
fn one_round(test: &str, runtime: &str, settle: bool) {
    tether_tests::require::root();
    if !std::path::Path::new(GO_SHIM).is_file() {
        tether_tests::skip(
            test,
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
        .env("BENCH_SHIM_RUNTIME", runtime)
        .env("BENCH_SHIM_OUTPUT", &json)
        .env("BENCH_SHIM_SETTLE", if settle { "1" } else { "0" })
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
    // Each server call held against the paced floor (a do-nothing server in its own
    // process at the bench's pacing); the subcommands are not ttrpc calls.
    for call in &CALLS[1..CALLS.len() - 1] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("| beyond the floor: {call} |"))),
            "no beyond-the-floor line for {call}:\n{stdout}"
        );
    }
    for row in [
        "| shim CPU per lifecycle, user / system |",
        "| shim CPU per exec, user / system |",
        "the same runtime (",
        "a ttrpc round trip of this client to a server that does nothing: ",
        "the paced floor (a do-nothing server in its own process, epoll, at the bench's pacing",
        "the bench's pacing: ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no line {row}:\n{stdout}"
        );
    }
    assert_eq!(
        stdout
            .lines()
            .any(|l| l.starts_with("settled (BENCH_SHIM_SETTLE=1)")),
        settle,
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON")).expect("JSON");
    assert_eq!(
        doc["machine"]["settle"].as_bool(),
        Some(settle),
        "{}",
        doc["machine"]
    );
    assert_eq!(doc["shims"].as_array().map(Vec::len), Some(2), "{doc}");
    // One floor call per server call of each lifecycle (a round: one of each shim).
    let floor = &doc["paced_floor"];
    assert_eq!(floor["calls"].as_u64(), floor["gaps"].as_u64(), "{floor}");
    assert!(floor["p50_ns"].as_u64().is_some_and(|n| n > 0), "{floor}");
    assert_eq!(
        floor["per_call"].as_array().map(Vec::len),
        Some(CALLS.len() - 2),
        "{floor}"
    );
}
