//! An exec's pid file is the shim's to clean up, and not on any call's way: the worker
//! that ran `runc exec` removes it once Start's outcome is on its way to the loop (issue
//! 24: the unlink on an ext4 `/run` was 0.1-0.2 ms of every exec's Delete). The init's
//! stays: the `delete` subcommand reads it after a shim crash.

use containerd_shim_protos::api;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::{ctx, DirectShim};

/// How long the worker may take to get to the unlink after Start is answered.
const BOUND: Duration = Duration::from_secs(10);

#[test]
fn an_execs_pid_file_goes_after_its_start() {
    let id = tether_tests::unique_id("execpid");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    shim.create_and_start(
        &id,
        shim.options(&tether_tests::require::tool("runc", "runc")),
    );
    let init_pid_file = shim.bundle().join("init.pid");
    assert!(init_pid_file.exists(), "the init's pid file is kept");

    for n in 0..3 {
        let exec_id = format!("e{n}");
        let pid_file = shim.bundle().join(format!("{exec_id}.pid"));
        let mut exec = api::ExecProcessRequest::new();
        exec.id = id.clone();
        exec.exec_id = exec_id.clone();
        exec.spec = Some(shim.exec_spec(&["sleep", "600"], false)).into();
        shim.client().exec(ctx(), &exec).expect("Exec");
        let mut start = api::StartRequest::new();
        start.id = id.clone();
        start.exec_id = exec_id.clone();
        let pid = shim.client().start(ctx(), &start).expect("Start").pid;
        assert!(pid > 0);

        // Ordered by what the test sees: the file goes while the exec still runs.
        let deadline = Instant::now() + BOUND;
        while pid_file.exists() {
            assert!(
                Instant::now() < deadline,
                "{} still there {BOUND:?} after the exec's Start was answered\n{}",
                pid_file.display(),
                shim.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }

        let mut kill = api::KillRequest::new();
        kill.id = id.clone();
        kill.exec_id = exec_id.clone();
        kill.signal = 9;
        shim.client().kill(ctx(), &kill).expect("Kill of the exec");
        let mut wait = api::WaitRequest::new();
        wait.id = id.clone();
        wait.exec_id = exec_id.clone();
        let status = shim.client().wait(ctx(), &wait).expect("Wait").exit_status;
        assert_eq!(status, 137);
        let mut delete = api::DeleteRequest::new();
        delete.id = id.clone();
        delete.exec_id = exec_id;
        let deleted = shim
            .client()
            .delete(ctx(), &delete)
            .expect("Delete of the exec");
        assert_eq!(
            deleted.pid, pid,
            "Delete reports the exec's pid without its file"
        );
    }
    assert!(init_pid_file.exists(), "the init's pid file is still kept");

    shim.kill_delete_and_shut_down(&id);
    shim.assert_nothing_left();
}
