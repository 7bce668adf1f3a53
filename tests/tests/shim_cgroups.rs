//! The shim's own cgroup work, driven as containerd drives it, without containerd:
//! Update through the Task API (`ctr` has no update command; containerd's API and CRI
//! send it), whose limits reach the kernel's files of the task's cgroup (`memory.max` and
//! `pids.max` on cgroup v2, `memory.limit_in_bytes` and `pids.max` on v1), and the
//! `ShimCgroup` option, which puts the shim itself in a cgroup at start.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::Options;
use std::path::PathBuf;
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
    let pid = i32::try_from(shim.create_and_start(&id, shim.options(&runc))).unwrap();

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

    shim.kill_and_wait(&id);
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

/// Removes the test's shim cgroup (every hierarchy that has it) once its shim is gone.
struct RemoveCgroup(String);

impl RemoveCgroup {
    fn dirs(&self) -> Vec<PathBuf> {
        let rel = self.0.trim_start_matches('/');
        let root = std::path::Path::new("/sys/fs/cgroup");
        let mut dirs = vec![root.join(rel)];
        if let Ok(entries) = std::fs::read_dir(root) {
            dirs.extend(entries.flatten().map(|e| e.path().join(rel)));
        }
        dirs.retain(|d| d.is_dir());
        dirs
    }
}

impl Drop for RemoveCgroup {
    fn drop(&mut self) {
        for dir in self.dirs() {
            // The shim leaves its cgroup a moment after it exits.
            for _ in 0..100 {
                if std::fs::remove_dir(&dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn shim_cgroup_option_puts_the_shim_in_that_cgroup() {
    let id = tether_tests::unique_id("scg");
    let path = format!("/tether-test-{id}");
    let remove = RemoveCgroup(path.clone());
    let mut options = Options::new();
    options.shim_cgroup = path.clone();
    {
        let shim = DirectShim::start_with_options(&id, &["sleep", "600"], &options);
        let pid = shim.shim_pid().expect("shim.pid");
        let dir = cgroup::dir_of(pid, "memory");
        assert_eq!(
            dir,
            std::path::Path::new("/sys/fs/cgroup")
                .join(match Hierarchy::current() {
                    Hierarchy::V1 => "memory",
                    Hierarchy::V2 => "",
                })
                .join(path.trim_start_matches('/')),
            "the shim's cgroup ({})",
            Hierarchy::current().name()
        );
        shim.client()
            .shutdown(ctx(), &api::ShutdownRequest::new())
            .expect("Shutdown");
        assert!(shim.wait_shim_exit(Duration::from_secs(10)));
    }
    drop(remove);
    let left = RemoveCgroup(path);
    assert!(left.dirs().is_empty(), "left: {:?}", left.dirs());
    std::mem::forget(left);
}
