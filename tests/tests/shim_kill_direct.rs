//! A plain Kill of a running init is signalled by the shim itself, through the init's
//! pidfd, as `runc kill` would signal it (kill(2) on the init's pid), and answered in the
//! turn that read it: no runtime process, and no window in which the exit overtakes the
//! Kill's answer. Every Kill whose `runc kill` does more goes through runc: a paused
//! container's (runc thaws it for SIGKILL) and one sharing a pid namespace (runc 1.2 kills
//! every process of its cgroup); `--all` is in `shim_call_order`. Pids is read from the
//! container's cgroup, without `runc ps`.
//!
//! runc is a wrapper with a gate before `kill` and `ps` (`runc_gate`): a call that went
//! through runc would stop there, so a gate never reached proves runc was not run, and a
//! gate reached proves it was.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::ProcessDetails;
use tether_tests::direct_shim::{ctx, DirectShim, RawConn};
use tether_tests::runc_gate::{GateAt, RuncGate};

/// The ttrpc status code of a successful call.
const OK: i32 = 0;

fn kill_request(id: &str, signal: u32) -> api::KillRequest {
    let mut kill = api::KillRequest::new();
    kill.id = id.into();
    kill.signal = signal;
    kill
}

/// Sends a SIGKILL of task `id`'s init that must go through runc: it reaches the gate
/// before `runc kill`, which the test then opens; the Kill is answered OK and the init dies
/// of it (exit status 137), after which the task is deleted and the shim shut down.
fn kill_through_runc(shim: &DirectShim, gate: &RuncGate, id: &str) {
    let mut conn = RawConn::connect(shim);
    conn.send(1, "Kill", &kill_request(id, libc::SIGKILL as u32));
    gate.wait_reached("kill");
    gate.open("kill");
    let (stream, reply) = conn.recv();
    assert_eq!(stream, 1);
    assert_eq!(reply.status.code.value(), OK, "Kill: {:?}", reply.status);
    assert_eq!(shim.wait_delete_and_shut_down(id), 137);
    shim.assert_nothing_left();
}

#[test]
fn a_running_init_is_signalled_without_runc_and_answered_before_its_exit() {
    let id = tether_tests::unique_id("kdirect");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["kill", "ps"], GateAt::BeforeWork);
    let init = shim.create_and_start(&id, shim.options(gate.path()));

    // An exec beside the init; Pids lists both from the cgroup, the exec's with its id.
    let mut exec = api::ExecProcessRequest::new();
    exec.id = id.clone();
    exec.exec_id = "e1".into();
    exec.spec = Some(shim.exec_spec(&["sleep", "600"], false)).into();
    shim.client().exec(ctx(), &exec).expect("Exec");
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    start.exec_id = "e1".into();
    let exec_pid = shim.client().start(ctx(), &start).expect("Start e1").pid;
    let mut pids = api::PidsRequest::new();
    pids.id = id.clone();
    let listed = shim
        .client()
        .pids(ctx(), &pids)
        .unwrap_or_else(|e| panic!("Pids: {e}\n{}", shim.log()));
    let by_pid: Vec<(u32, String)> = listed
        .processes
        .iter()
        .map(|p| {
            let exec_id = p
                .info
                .as_ref()
                .map(|a| ProcessDetails::parse_from_bytes(&a.value).expect("ProcessDetails"))
                .map(|d| d.exec_id)
                .unwrap_or_default();
            (p.pid, exec_id)
        })
        .collect();
    assert!(by_pid.contains(&(init, String::new())), "{by_pid:?}");
    assert!(by_pid.contains(&(exec_pid, "e1".into())), "{by_pid:?}");
    assert!(!gate.reached("ps"), "Pids ran runc ps");

    // A signal number the kernel refuses is named.
    let err = shim
        .client()
        .kill(ctx(), &kill_request(&id, 1000))
        .expect_err("signal 1000");
    assert!(err.to_string().contains("bad signal 1000"), "{err}");

    // Wait parked first, then the Kill, on one connection as containerd has: the Kill's
    // answer comes first, and runc was never asked.
    let mut conn = RawConn::connect(&shim);
    let mut wait = api::WaitRequest::new();
    wait.id = id.clone();
    conn.send(1, "Wait", &wait);
    conn.send(3, "Kill", &kill_request(&id, libc::SIGKILL as u32));
    let (first, kill_reply) = conn.recv();
    assert_eq!(first, 3, "the Wait was answered before the Kill");
    assert_eq!(
        kill_reply.status.code.value(),
        OK,
        "Kill: {:?}",
        kill_reply.status
    );
    let (second, wait_reply) = conn.recv();
    assert_eq!(second, 1);
    let waited = api::WaitResponse::parse_from_bytes(&wait_reply.payload).expect("WaitResponse");
    assert_eq!(waited.exit_status, 137, "SIGKILL's exit status");
    assert!(!gate.reached("kill"), "the Kill ran runc kill");

    // The init gone, a second Kill is "already finished", as the Go shim answers.
    let err = shim
        .client()
        .kill(ctx(), &kill_request(&id, libc::SIGKILL as u32))
        .expect_err("a Kill after the exit");
    assert!(
        err.to_string().contains("process already finished"),
        "{err}"
    );

    let mut wait_exec = api::WaitRequest::new();
    wait_exec.id = id.clone();
    wait_exec.exec_id = "e1".into();
    shim.client().wait(ctx(), &wait_exec).expect("Wait e1");
    let mut delete_exec = api::DeleteRequest::new();
    delete_exec.id = id.clone();
    delete_exec.exec_id = "e1".into();
    shim.client()
        .delete(ctx(), &delete_exec)
        .expect("Delete e1");
    assert_eq!(shim.wait_delete_and_shut_down(&id), 137);
    shim.assert_nothing_left();
}

#[test]
fn a_paused_init_is_killed_through_runc() {
    let id = tether_tests::unique_id("kpaused");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["kill"], GateAt::BeforeWork);
    shim.create_and_start(&id, shim.options(gate.path()));
    let mut pause = api::PauseRequest::new();
    pause.id = id.clone();
    shim.client()
        .pause(ctx(), &pause)
        .unwrap_or_else(|e| panic!("Pause: {e}\n{}", shim.log()));

    // runc thaws the container for the SIGKILL: the init dies.
    kill_through_runc(&shim, &gate, &id);
}

#[test]
fn an_init_sharing_a_pid_namespace_is_killed_through_runc() {
    let id = tether_tests::unique_id("ksharedpid");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    // No pid namespace of its own: the host's.
    let path = shim.bundle().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read config.json"))
            .expect("config.json is JSON");
    config["linux"]["namespaces"]
        .as_array_mut()
        .expect("namespaces")
        .retain(|n| n["type"] != "pid");
    std::fs::write(&path, config.to_string()).expect("write config.json");
    let gate = RuncGate::write(shim.dir(), &["kill"], GateAt::BeforeWork);
    shim.create_and_start(&id, shim.options(gate.path()));

    kill_through_runc(&shim, &gate, &id);
}
