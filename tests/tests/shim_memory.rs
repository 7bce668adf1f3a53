//! The memory of one tether shim with one running container (RSS, PSS, USS from
//! `smaps_rollup`), measured where the test runs: the cgroup v2 leg runs it in its guest
//! (`tests/scripts/cgroup-v2/`), where timings are emulated but memory is real. `make
//! bench` measures the same on the host, against the Go shim; this is a report, not an
//! assertion, so it is `#[ignore]`d outside the runs that ask for it (`--ignored`).

use std::time::Duration;
use tether_tests::cgroup::Hierarchy;
use tether_tests::ContainerdEnv;

/// The file the measurement is appended to, when set (the guest's run directory).
const REPORT_ENV: &str = "TETHER_MEMORY_REPORT";

/// `Rss`, `Pss` and `Private_*` (USS) of `pid` in KiB.
fn memory_kib(pid: i32) -> (u64, u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/smaps_rollup: {e}"));
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let uss = field("Private_Clean") + field("Private_Dirty");
    (field("Rss"), field("Pss"), uss)
}

#[test]
#[ignore = "a measurement, run by the cgroup v2 leg (--ignored)"]
fn lone_shim_memory() {
    let env = ContainerdEnv::start();
    let id = env.run_sleeper("mem", Duration::from_secs(30));
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");
    // Let the shim settle (the start-up calls' buffers freed, the workers idle).
    std::thread::sleep(Duration::from_secs(2));
    let (rss, pss, uss) = memory_kib(shims[0]);
    let threads = std::fs::read_dir(format!("/proc/{}/task", shims[0]))
        .map(|d| d.count())
        .unwrap_or(0);
    let line = format!(
        "lone shim, one running container, {} ({}, containerd {}): RSS {rss} KiB, PSS {pss} KiB, USS {uss} KiB, {threads} threads",
        Hierarchy::current().name(),
        env.shim_binary().display(),
        env.version(),
    );
    println!("{line}");
    if let Some(path) = std::env::var_os(REPORT_ENV) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open the memory report");
        writeln!(f, "{line}").expect("write the memory report");
    }
    env.kill_and_remove(&id, Duration::from_secs(30));
    env.assert_no_leaks();
}
