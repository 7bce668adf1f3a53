//! `bench-shim` (`make bench-shim`): tether against containerd's Go shim, each driven
//! directly over ttrpc, in interleaved rounds; prints the per-call table and writes every
//! sample as JSON. See `tether_tests::shim_bench` and docs/benchmarks.md. It starts
//! `floor_server` (beside it) for the paced floor and ends it before it exits.
//!
//! Usage: `bench_shim <tether shim binary>`, as root. Environment: `BENCH_SHIM_ROUNDS`
//! (20), `BENCH_SHIM_WARMUP` (2), `BENCH_SHIM_EXECS` (execs per lifecycle, 3),
//! `BENCH_SHIM_STATS` (Stats calls per lifecycle after the first, 10: containerd 2.x's CRI
//! asks each container's once a second), `BENCH_SHIM_RUNTIME` (`timer`: the shims run
//! `runc-timer`, which runs runc and logs its CPU; `runc`: the shims run runc itself, its
//! part from the kernel's stamps alone, its CPU unknown),
//! `BENCH_GO_SHIM` (`/usr/bin/containerd-shim-runc-v2`; any shim v2 binary, e.g. an
//! older tether for a before/after, named by `BENCH_SHIM_OTHER_NAME`), `BENCH_SHIM_OUTPUT`
//! (`bench-results-shim.json`; empty: none), `BENCH_SHIM_ONLY` (`tether` or `go`: one
//! shim alone, e.g. under a profiler), `BENCH_SHIM_CLIENT` (`wire`: each request one write
//! from the calling thread, as containerd's Go client sends; `crate`: the `ttrpc` crate's
//! client with its sender and receiver threads, the bench's first client),
//! `BENCH_SHIM_SETTLE` (`1`: an untimed `Connect` before every server call, so that a
//! call is timed without the tail of the one before it).
#![deny(unsafe_code)]

use serde_json::json;
use std::path::PathBuf;
use tether_tests::shim_bench::clock;
use tether_tests::shim_bench::fake_events::FakeEvents;
use tether_tests::shim_bench::floor_report::{self, Floors};
use tether_tests::shim_bench::lifecycle::Bench;
use tether_tests::shim_bench::paced_floor::FloorServer;
use tether_tests::shim_bench::proc_events::ProcEvents;
use tether_tests::shim_bench::report::{self, ShimRuns};
use tether_tests::shim_bench::runc_log::RuncTimer;
use tether_tests::shim_bench::split;
use tether_tests::shim_bench::taskstats::TaskStats;
use tether_tests::shim_bench::wire_client::{BenchClient, ClientKind};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn machine() -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let runc_version = std::process::Command::new(tether_tests::require::tool("runc", "runc"))
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    json!({ "nproc": nproc, "kernel": kernel, "load": load, "runc": runc_version })
}

/// The median time of `n` calls of this bench's ttrpc client to the stand-in events
/// service, which answers at once: what any call costs before a shim does anything (ns).
fn round_trip_floor(events: &FakeEvents, kind: ClientKind, n: usize) -> u64 {
    use containerd_shim_protos::api::StateRequest;
    use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
    let path = PathBuf::from(events.address());
    let Ok(mut client) = BenchClient::connect(kind, &path, std::time::Duration::from_secs(30))
    else {
        return 0;
    };
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let from = clock::now_ns();
        let answered = client.call::<_, Empty>(
            "State",
            &StateRequest::new(),
            std::time::Duration::from_secs(30),
        );
        if answered.is_ok() {
            took.push(clock::now_ns().saturating_sub(from));
        }
    }
    report::quantile(&took, 50)
}

/// The fork → execve span (ns, the kernel's stamps) of `runtime --version` spawned by
/// this bench itself (Rust's std, from a small process), once: what starting that binary
/// costs a spawner other than the shims, taken in the same rounds to hold their (b)
/// against. `None` when it could not be spawned or its stamps were not seen.
fn spawn_once(proc_events: &ProcEvents, runtime: &std::path::Path) -> Option<u64> {
    let mut child = std::process::Command::new(runtime)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let pid = i32::try_from(child.id()).ok()?;
    let _ = child.wait();
    let t = proc_events.exited(pid, std::time::Duration::from_secs(2))?;
    Some(t.exec_ns?.saturating_sub(t.fork_ns?))
}

/// The bench's own binary `name` beside this one (cargo builds them together); exits the
/// bench with a message when it is not there.
fn sibling_bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join(name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| {
            eprintln!("bench-shim: {name} is not beside this binary (cargo build -p tether-tests)");
            std::process::exit(2);
        })
}

fn main() {
    let Some(tether) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: bench_shim <containerd-shim-tether-v2> (as root)");
        std::process::exit(2);
    };
    let go = std::env::var_os("BENCH_GO_SHIM").map_or_else(
        || PathBuf::from("/usr/bin/containerd-shim-runc-v2"),
        PathBuf::from,
    );
    let rounds = env_num("BENCH_SHIM_ROUNDS", 20);
    let warmup = env_num("BENCH_SHIM_WARMUP", 2);
    let execs = env_num("BENCH_SHIM_EXECS", 3);
    let stats_again = env_num("BENCH_SHIM_STATS", 10);
    let only = std::env::var("BENCH_SHIM_ONLY").unwrap_or_default();
    let direct = match std::env::var("BENCH_SHIM_RUNTIME").as_deref() {
        Err(_) | Ok("" | "timer") => false,
        Ok("runc") => true,
        Ok(other) => {
            eprintln!("bench-shim: BENCH_SHIM_RUNTIME is `timer` or `runc`, not `{other}`");
            std::process::exit(2);
        }
    };
    let client = ClientKind::from_env().unwrap_or_else(|e| {
        eprintln!("bench-shim: {e}");
        std::process::exit(2);
    });
    let settle = match std::env::var("BENCH_SHIM_SETTLE").as_deref() {
        Err(_) | Ok("" | "0") => false,
        Ok("1") => true,
        Ok(other) => {
            eprintln!("bench-shim: BENCH_SHIM_SETTLE is `1` or `0`, not `{other}`");
            std::process::exit(2);
        }
    };
    let output = std::env::var("BENCH_SHIM_OUTPUT")
        .unwrap_or_else(|_| "bench-results-shim.json".to_string());
    for (what, p) in [("tether", &tether), ("Go shim", &go)] {
        if !p.is_file() {
            eprintln!("bench-shim: the {what} binary {} is missing", p.display());
            std::process::exit(2);
        }
    }
    let timer_bin = sibling_bin("runc_timer");
    let floor_bin = sibling_bin("floor_server");
    let dir = tempfile::Builder::new()
        .prefix("tbench-")
        .tempdir_in("/tmp")
        .expect("make the bench's temp dir");
    let real_runc = tether_tests::require::tool("runc", "runc");
    let mut timer =
        RuncTimer::install(dir.path(), &timer_bin, &real_runc).expect("install runc-timer");
    // runc's part of each call: from the exec of what the shim spawned to its exit.
    let proc_events = ProcEvents::listen().unwrap_or_else(|e| {
        eprintln!("bench-shim: the kernel's process events (proc connector, root): {e}");
        std::process::exit(2);
    });
    let mut taskstats = TaskStats::open().unwrap_or_else(|e| {
        eprintln!("bench-shim: the kernel's taskstats (generic netlink): {e}");
        std::process::exit(2);
    });
    let events = FakeEvents::serve(&dir.path().join("events.sock")).expect("serve fake events");
    let floor_ns = round_trip_floor(&events, client, 50);
    // The paced floor's server; dropped (and so ended, its socket removed) before `dir`.
    let floor_server = FloorServer::start(&floor_bin, &dir.path().join("floor.sock"))
        .unwrap_or_else(|e| {
            eprintln!("bench-shim: the floor server: {e}");
            std::process::exit(2);
        });
    let mut floors = Floors {
        back_to_back_ns: floor_ns,
        ..Floors::default()
    };
    let runtime = if direct {
        real_runc.clone()
    } else {
        timer.path().to_path_buf()
    };
    let mut spawns = Vec::new();
    let machine = machine();
    println!(
        "bench-shim: {rounds} rounds (+{warmup} warm-up), {execs} execs and 1+{stats_again} Stats each; machine {machine}"
    );
    println!("the client: {}", client.describe());
    if settle {
        println!(
            "settled (BENCH_SHIM_SETTLE=1): every server call follows an untimed Connect, which takes what the previous call left running (runc's and the container's processes, the shim's work after its reply, an event on its way); each call is timed alone; the CPU figures include the Connects"
        );
    }

    if direct {
        println!(
            "runc's part of a call: from the execve of runc, which the shim spawned itself, to its exit, as the kernel stamped them; the rest is the shim's (runc's CPU is not known in this mode: its rows are 0, and `delete`'s CPU includes its runc's)"
        );
    } else {
        println!(
            "runc's part of a call: from the execve of the runtime the shim spawned (runc-timer, then runc) to its exit, as the kernel stamped them; the rest is the shim's"
        );
    }
    let mut runs = [
        ShimRuns {
            name: "tether".into(),
            binary: tether.display().to_string(),
            lifecycles: Vec::new(),
        },
        ShimRuns {
            name: std::env::var("BENCH_SHIM_OTHER_NAME").unwrap_or_else(|_| "Go".into()),
            binary: go.display().to_string(),
            lifecycles: Vec::new(),
        },
    ];
    // Absolute: each shim starts in its bundle directory.
    let binaries = [tether.clone(), go.clone()].map(|p| std::fs::canonicalize(&p).unwrap_or(p));
    let mut bench = Bench {
        timer: &mut timer,
        events: &events,
        execs,
        proc_events: &proc_events,
        stats_again,
        direct_runtime: direct.then_some(real_runc.as_path()),
        taskstats: &mut taskstats,
        client,
        settle,
    };
    for round in 0..warmup + rounds {
        // Alternate which shim goes first, so the machine's drift falls on both.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            if (only == "tether" && which == 1) || (only == "go" && which == 0) {
                continue;
            }
            let id = tether_tests::unique_id(if which == 0 { "bt" } else { "bg" });
            let sample = bench.lifecycle(&binaries[which], &id);
            // The same calls' pacing against the do-nothing server, right after.
            match floor_server.burst(client, &sample.gaps) {
                Ok(burst) if round >= warmup => {
                    floors.server_calls += burst.calls.len() as u64 + 1;
                    floors.server_cpu_ns += burst.server_cpu_ns;
                    floors.paced.extend(burst.calls);
                }
                Ok(_) => {}
                Err(e) => eprintln!("bench-shim: a paced floor burst failed: {e}"),
            }
            if round >= warmup {
                spawns.extend(spawn_once(&proc_events, &runtime));
            }
            if round >= warmup {
                runs[which].lifecycles.push(sample);
            }
        }
        eprint!(".");
    }
    eprintln!();
    drop(floor_server);
    let [a, b] = &runs;
    println!(
        "a ttrpc round trip of this client to a server that does nothing: {:.2} ms (the floor of every call)",
        floor_ns as f64 / 1e6
    );
    print!("{}", floor_report::lines(&floors, a, b));
    print!("{}", report::table(a, b));
    println!();
    println!(
        "the own share of a call that starts a runtime, split at the kernel's stamps of the runtime the shim server forked: (a) request sent → its fork, (b) fork → its execve, (c) execve → exit (runc's part), (d) exit → reply received; (a)+(d) is the shim deciding and answering, (b) the start of the runtime; medians of each part (ms)"
    );
    print!("{}", split::table(a, b));
    let spawn_floor_ns = report::quantile(&spawns, 50);
    println!(
        "the same runtime ({}) spawned by this bench itself (Rust's std, from a small process) after each lifecycle: fork → execve {:.2} ms, median of {} (what (b) costs a spawner other than the shims)",
        runtime.display(),
        spawn_floor_ns as f64 / 1e6,
        spawns.len()
    );
    println!();
    println!(
        "each call's own share beyond the paced floor (the do-nothing server in its own process at the bench's pacing; measured for each call at the gaps that call had), and for the calls that start a runtime (a)+(d) beyond it: what is left when any server's cost at this pacing is taken out; ratios of what is left"
    );
    print!("{}", floor_report::table(a, b, &floors));
    println!();
    print!("{}", split::cpu_table(a, b));
    let unmatched: u64 = runs
        .iter()
        .flat_map(|r| r.lifecycles.iter())
        .map(|l| l.runs_without_kernel_span)
        .sum();
    if unmatched > 0 || proc_events.lost_any() {
        println!(
            "warning: {unmatched} runc runs without the kernel's exec/exit (events lost: {}); their span is the timer's own",
            proc_events.lost_any()
        );
    }
    let after = machine.clone();
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the end: {}", load_after.trim());
    if !output.is_empty() {
        let mut doc = report::json(
            &[a, b],
            json!({ "start": after, "runtime": if direct { "runc" } else { "timer" }, "load_end": load_after.trim(), "runs_without_kernel_span": unmatched, "round_trip_floor_ns": floor_ns, "client": format!("{client:?}"), "settle": settle, "spawn_floor_ns": spawn_floor_ns }),
        );
        doc["paced_floor"] = floor_report::json(a, b, &floors);
        match std::fs::write(&output, serde_json::to_vec_pretty(&doc).unwrap_or_default()) {
            Ok(()) => println!("samples: {output}"),
            Err(e) => eprintln!("bench-shim: write {output}: {e}"),
        }
    }
}
