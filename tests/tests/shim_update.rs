//! Update through the Task API, as containerd and CRI send it (`ctr` has no update
//! command): the limits reach the kernel's files of the task's cgroup, `memory.max` and
//! `pids.max` on cgroup v2, `memory.limit_in_bytes` and `pids.max` on v1.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use std::time::Duration;
use tether_tests::cgroup::{self, Hierarchy};
use tether_tests::direct_shim::{ctx, DirectShim};

/// containerd's type URL for the OCI `LinuxResources` it puts in UpdateTaskRequest (JSON).
const LINUX_RESOURCES: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

#[test]
fn update_sets_memory_max_and_pids_max() {
    let id = tether_tests::unique_id("upd");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = tether_tests::require::tool("runc", "runc");
    let pid = shim.create_and_start(&id, shim.options(&runc)) as i32;

    let memory = 48 * 1024 * 1024;
    let pids = 42;
    let mut update = api::UpdateTaskRequest::new();
    update.id = id.clone();
    let mut resources = Any::new();
    resources.type_url = LINUX_RESOURCES.into();
    resources.value =
        format!(r#"{{"memory":{{"limit":{memory}}},"pids":{{"limit":{pids}}}}}"#).into_bytes();
    update.resources = Some(resources).into();
    shim.client()
        .update(ctx(), &update)
        .unwrap_or_else(|e| panic!("Update: {e}\n{}", shim.log()));

    let memory_file = match Hierarchy::current() {
        Hierarchy::V1 => "memory.limit_in_bytes",
        Hierarchy::V2 => "memory.max",
    };
    let memcg = cgroup::dir_of(pid, "memory");
    assert_eq!(
        cgroup::read(&memcg, memory_file),
        memory.to_string(),
        "{}/{memory_file} after Update ({})",
        memcg.display(),
        Hierarchy::current().name()
    );
    let pidscg = cgroup::dir_of(pid, "pids");
    assert_eq!(
        cgroup::read(&pidscg, "pids.max"),
        pids.to_string(),
        "{}/pids.max after Update",
        pidscg.display()
    );

    let mut kill = api::KillRequest::new();
    kill.id = id.clone();
    kill.signal = libc::SIGKILL as u32;
    shim.client().kill(ctx(), &kill).expect("Kill");
    let mut wait = api::WaitRequest::new();
    wait.id = id.clone();
    shim.client().wait(ctx(), &wait).expect("Wait");
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
    assert!(
        !memcg.exists(),
        "Delete removes the task's cgroup {}",
        memcg.display()
    );
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    assert!(shim.wait_shim_exit(Duration::from_secs(10)));
}
