//! What a kubelet driving tether through containerd's CRI showed tether doing differently
//! from containerd's Go shim (issue 25), each driven here as containerd drives it, on one
//! shim started by hand:
//!
//! * containerd asks for Stats of a container whose init exited 137, before it deletes
//!   it (its OOM check): the answer comes from the container's cgroup, which is there
//!   until Delete, not from the dead pid;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use tether_tests::cgroup::Hierarchy;
use tether_tests::direct_shim::{ctx, DirectShim};

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
