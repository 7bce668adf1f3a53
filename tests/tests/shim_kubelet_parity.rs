//! What a kubelet driving tether through containerd's CRI showed tether doing differently
//! from containerd's Go shim (issue 25), each driven here as containerd drives it, on one
//! shim started by hand:
//!
//! * containerd asks for Stats of a container whose init exited 137, before it deletes
//!   it (its OOM check): the answer comes from the container's cgroup, which is there
//!   until Delete, not from the dead pid;
//! * a Kill of a process that has finished (kubelet's exec probes end that way) is a
//!   client's expected outcome: a debug line, not an info line;
//! * the log says the task API version containerd calls, not a fixed one;
//! * containerd 2.x's CRI asks every container's Stats once a second (issue 24): the
//!   cgroup files stay open between two calls and are closed at Delete.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use std::time::Duration;
use tether_tests::cgroup::Hierarchy;
use tether_tests::direct_shim::{ctx, DirectShim, RawConn};

/// containerd's `TaskService` error for a gone process, as the shim says it.
const FINISHED: &str = "process already finished";

fn delete_and_shut_down(shim: &DirectShim, id: &str) {
    let mut delete = api::DeleteRequest::new();
    delete.id = id.into();
    shim.client()
        .delete(ctx(), &delete)
        .unwrap_or_else(|e| panic!("Delete: {e}\n{}", shim.log()));
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
}

#[test]
fn stats_of_an_exited_container_come_from_its_cgroup_until_delete() {
    let id = tether_tests::unique_id("stx");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = tether_tests::require::tool("runc", "runc");
    shim.create_and_start(&id, shim.options(&runc));
    let mut stats = api::StatsRequest::new();
    stats.id = id.clone();
    let running = shim
        .client()
        .stats(ctx(), &stats)
        .unwrap_or_else(|e| panic!("Stats of the running container: {e}\n{}", shim.log()));

    let exit = shim.kill_and_wait(&id);
    assert_eq!(exit.exit_status, 137);
    // containerd's OOM check after a 137 exit, before Delete.
    let stopped = shim.client().stats(ctx(), &stats).unwrap_or_else(|e| {
        panic!(
            "Stats of an exited, not deleted container: {e}\n{}",
            shim.log()
        )
    });
    let type_url = stopped.stats.type_url.clone();
    assert_eq!(type_url, running.stats.type_url);
    match Hierarchy::current() {
        Hierarchy::V1 => {
            assert_eq!(type_url, "io.containerd.cgroups.v1.Metrics");
            let m = containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(
                &stopped.stats.value,
            )
            .expect("v1 Metrics");
            // The cgroup is empty now, but it is the container's: it has its memory
            // controller's files (the failcnt of a cgroup that never hit its limit is 0).
            assert!(m.memory.is_some(), "no memory metrics: {m:?}");
            assert_eq!(m.pids.current, 0, "{m:?}");
        }
        Hierarchy::V2 => {
            assert_eq!(type_url, "io.containerd.cgroups.v2.Metrics");
            let m = containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(
                &stopped.stats.value,
            )
            .expect("v2 Metrics");
            assert!(m.cpu.is_some() && m.memory.is_some(), "{m:?}");
            assert_eq!(m.pids.current, 0, "{m:?}");
        }
    }

    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
    let gone = shim.client().stats(ctx(), &stats);
    assert!(gone.is_err(), "Stats after Delete answered: {gone:?}");
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
}

/// The shim's descriptors open on cgroupfs files.
fn cgroup_files_open(shim: &DirectShim) -> usize {
    let pid = shim.shim_pid().expect("the shim's pid");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the shim's fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with("/sys/fs/cgroup"))
        .count()
}

/// The CPU usage a Stats answer gives, in ns, whichever hierarchy.
fn cpu_usage_ns(stats: &api::StatsResponse) -> u64 {
    match Hierarchy::current() {
        Hierarchy::V1 => {
            containerd_shim_protos::cgroups::metrics::Metrics::parse_from_bytes(&stats.stats.value)
                .expect("v1 Metrics")
                .cpu
                .usage
                .total
        }
        Hierarchy::V2 => {
            containerd_shim_protos::cgroups_v2::metrics::Metrics::parse_from_bytes(
                &stats.stats.value,
            )
            .expect("v2 Metrics")
            .cpu
            .usage_usec
                * 1000
        }
    }
}

/// containerd 2.x's CRI asks every container's Stats once a second: the shim keeps the
/// cgroup files open from one call to the next (issue 24), and the values it reads
/// through them still follow the container; Delete closes them.
#[test]
fn stats_called_again_follow_the_container_and_delete_closes_their_files() {
    let id = tether_tests::unique_id("stk");
    let shim = DirectShim::start(&id, &["sh", "-c", "while :; do :; done"]);
    let runc = tether_tests::require::tool("runc", "runc");
    shim.create_and_start(&id, shim.options(&runc));
    assert_eq!(cgroup_files_open(&shim), 0, "files open before any Stats");
    let mut stats = api::StatsRequest::new();
    stats.id = id.clone();
    let first = shim
        .client()
        .stats(ctx(), &stats)
        .unwrap_or_else(|e| panic!("Stats: {e}\n{}", shim.log()));
    let kept = cgroup_files_open(&shim);
    assert!(kept > 0, "no cgroup file kept open after a Stats");
    // The container spins: its CPU usage, read again through the same descriptors,
    // grows (within seconds even on a loaded machine).
    let before = cpu_usage_ns(&first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let again = shim
            .client()
            .stats(ctx(), &stats)
            .unwrap_or_else(|e| panic!("Stats again: {e}\n{}", shim.log()));
        if cpu_usage_ns(&again) > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "CPU usage read again stayed at {before} ns for 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        cgroup_files_open(&shim),
        kept,
        "a second Stats opened more files"
    );

    shim.kill_and_wait(&id);
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
    // They close in the loop turn that answered Delete, right after its reply
    // (`Shim::retired`): any call answered after it comes after them.
    let mut connect = api::ConnectRequest::new();
    connect.id = id.clone();
    shim.client()
        .connect(ctx(), &connect)
        .expect("Connect after Delete");
    assert_eq!(
        cgroup_files_open(&shim),
        0,
        "cgroup files left open after Delete (and the call after it)"
    );
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
}

#[test]
fn a_kill_of_a_finished_process_is_a_debug_line() {
    let id = tether_tests::unique_id("kfin");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = tether_tests::require::tool("runc", "runc");
    shim.create_and_start(&id, shim.options(&runc));
    // An exec that ends by itself, then the Kill kubelet's exec probe sends after it.
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shim.bundle().join("config.json")).unwrap()).unwrap();
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(["true"]);
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.clone();
    exec.exec_id = "probe".into();
    let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    any.value = serde_json::to_vec(&process).unwrap();
    exec.spec = Some(any).into();
    shim.client().exec(ctx(), &exec).expect("Exec");
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    start.exec_id = "probe".into();
    shim.client().start(ctx(), &start).expect("Start the exec");
    let mut wait = api::WaitRequest::new();
    wait.id = id.clone();
    wait.exec_id = "probe".into();
    assert_eq!(
        shim.client().wait(ctx(), &wait).expect("Wait").exit_status,
        0
    );
    let mut kill = api::KillRequest::new();
    kill.id = id.clone();
    kill.exec_id = "probe".into();
    kill.signal = libc::SIGKILL as u32;
    let err = shim
        .client()
        .kill(ctx(), &kill)
        .expect_err("a Kill of a finished exec fails");
    assert!(err.to_string().contains(FINISHED), "{err}");

    let line = format!("rpc Kill failed: {FINISHED}");
    assert!(
        shim.wait_log(&line, Duration::from_secs(10)),
        "the failed Kill is not logged at all (-debug)\n{}",
        shim.log()
    );
    let log = shim.log();
    let logged: Vec<&str> = log.lines().filter(|l| l.contains(&line)).collect();
    assert!(
        logged.iter().all(|l| l.contains("level=debug")),
        "an expected outcome logged above debug: {logged:?}"
    );
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    delete.exec_id = "probe".into();
    shim.client()
        .delete(ctx(), &delete)
        .expect("Delete the exec");
    shim.kill_and_wait(&id);
    delete_and_shut_down(&shim, &id);
}

#[test]
fn the_log_names_the_task_api_containerd_calls() {
    let id = tether_tests::unique_id("apiv");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    // A containerd 2.x that took version 3 from `start` calls containerd.task.v3.Task.
    let mut raw = RawConn::connect(&shim);
    let mut connect = api::ConnectRequest::new();
    connect.id = id.clone();
    raw.send_to("containerd.task.v3.Task", 1, "Connect", &connect, None);
    let (stream, resp) = raw.recv();
    assert_eq!(stream, 1);
    assert!(
        resp.status.code.value() == 0,
        "Connect over v3: {:?}",
        resp.status
    );
    assert!(
        shim.wait_log("serving task API v3", Duration::from_secs(10)),
        "the v3 call is not logged\n{}",
        shim.log()
    );
    let log = shim.log();
    assert!(
        !log.contains("msg=\"serving task API v2"),
        "the log names v2 while containerd called v3\n{log}"
    );
    drop(raw);
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    assert!(
        shim.wait_shim_exit(Duration::from_secs(10)),
        "the shim still runs after Shutdown"
    );
}

#[test]
fn a_shim_that_shuts_down_as_asked_says_so_at_debug() {
    // One such line per pod, every time a pod goes: the Go shim logs none.
    let id = tether_tests::unique_id("shut");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    assert!(
        shim.wait_shim_exit(Duration::from_secs(10)),
        "the shim still runs after Shutdown"
    );
    assert!(
        shim.wait_log("shim shut down", Duration::from_secs(10)),
        "no shutdown line at all (-debug)\n{}",
        shim.log()
    );
    let log = shim.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("shim shut down"))
        .collect();
    assert!(
        lines.iter().all(|l| l.contains("level=debug")),
        "an expected shutdown logged above debug: {lines:?}"
    );
}
