//! The ordering contract of Kill, Wait, Delete and Shutdown on one task, proven with a
//! runc whose answer the test holds (the work itself lands on time), as containerd's CRI
//! plugin exercises it: CRI's Kill is still waiting on `runc kill` when the container dies;
//! containerd reacts to the exit with Wait, Delete and Shutdown at once.
//!
//! Each test drives tether's shim directly over ttrpc (`direct_shim`), one raw connection
//! as containerd has, so the calls are placed exactly and the replies read in the order
//! the shim wrote them. Nothing is ordered by sleeping: runc stops at a gate
//! (`runc_gate`) and the test goes on once it has seen it there; a probe (Connect,
//! answered on the shim's loop) sent after a call proves the loop has read that call.
//! Each test checks that every call is answered, the Kill that caused an exit is answered
//! before anyone learns of the exit, and nothing is left behind.
//!
//! The Kills here are `--all`: those go through `runc kill` (as do a paused container's,
//! a created one's and those of a container sharing a pid namespace). A plain Kill of a
//! running init is signalled by the shim itself and answered in the turn that read it,
//! which `shim_kill_direct` proves.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use std::time::Duration;
use tether_tests::direct_shim::{ctx, DirectShim, RawConn};
use tether_tests::runc_gate::{eventually, GateAt, RuncGate};

/// The ttrpc status code of a successful call.
const OK: i32 = 0;

/// Sends a Connect (answered on the shim's loop, needing no runc) on `stream` and reads
/// the next reply: it must be that Connect's. The loop reads a connection's frames in
/// order, so once it has answered the probe it has read every call sent before it, and
/// no reply to them had been written yet.
fn probe(conn: &mut RawConn, id: &str, stream: u32, what: &str) {
    let mut connect = api::ConnectRequest::new();
    connect.id = id.into();
    conn.send(stream, "Connect", &connect);
    let (got, reply) = conn.recv();
    assert_eq!(
        got, stream,
        "{what}: a reply on stream {got} came before the probe's"
    );
    assert_eq!(reply.status.code.value(), OK, "Connect: {:?}", reply.status);
}

/// Whether `pid` has been reaped (its /proc entry stays while it is a zombie).
fn reaped(pid: u32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits (30 s at most) until the shim has reaped `pid`; fails with the shim's log.
fn assert_reaped(shim: &DirectShim, pid: u32, what: &str) {
    assert!(
        eventually(Duration::from_secs(30), || reaped(pid)),
        "{what} {pid} was not reaped:\n{}",
        shim.log()
    );
}

/// What the "containerd" side saw after the exit: the exit status Wait gave, and the
/// results of the Delete and Shutdown it sent at once.
struct Reaction {
    exit_status: u32,
    delete: Result<api::DeleteResponse, String>,
    shutdown: Result<(), String>,
}

/// Wait for the task, then Delete it and Shut the shim down, as containerd does when it
/// learns of an exit.
fn react_to_exit(shim: &DirectShim, id: &str) -> Reaction {
    let mut wait = api::WaitRequest::new();
    wait.id = id.into();
    let waited = shim.client().wait(ctx(), &wait).expect("Wait");
    let mut delete = api::DeleteRequest::new();
    delete.id = id.into();
    let delete = shim
        .client()
        .delete(ctx(), &delete)
        .map_err(|e| e.to_string());
    let shutdown = shim
        .client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .map(|_| ())
        .map_err(|e| e.to_string());
    Reaction {
        exit_status: waited.exit_status,
        delete,
        shutdown,
    }
}

#[test]
fn a_slow_kill_is_answered_before_its_exit_is_reported() {
    let id = tether_tests::unique_id("order");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["kill"], GateAt::AfterWork);
    let pid = shim.create_and_start(&id, shim.options(gate.path()));

    // One connection, as containerd has: Wait parked first, then the Kill. The order of
    // the replies on the socket is the order in which the shim wrote them.
    let mut conn = RawConn::connect(&shim);
    conn.wait_then_kill(&id, None);
    // runc has sent SIGKILL and its answer is held; the shim reaps the dead init.
    gate.wait_reached("kill");
    assert_reaped(&shim, pid, "the killed init");
    // The exit is known to the shim now, its Kill still unanswered: nobody may learn of
    // the exit yet. A probe after the reap is answered first.
    probe(&mut conn, &id, 5, "while runc kill is held");
    gate.open("kill");
    let (first, first_reply) = conn.recv();
    let (second, second_reply) = conn.recv();
    assert_eq!(
        (first, second),
        (3, 1),
        "the Wait was answered before the Kill that caused the exit:\n{}",
        shim.log()
    );
    assert_eq!(
        first_reply.status.code.value(),
        OK,
        "Kill: {:?}",
        first_reply.status
    );
    let waited = api::WaitResponse::parse_from_bytes(&second_reply.payload).expect("WaitResponse");
    assert_eq!(waited.exit_status, 137, "SIGKILL's exit status");

    // Then what containerd does on the exit: Delete and Shutdown, answered.
    let reaction = react_to_exit(&shim, &id);
    assert_eq!(reaction.exit_status, 137);
    let deleted = reaction.delete.expect("Delete after the exit");
    assert_eq!(deleted.exit_status, 137);
    assert!(deleted.pid > 0, "Delete reports the real pid");
    reaction.shutdown.expect("Shutdown");
    shim.assert_nothing_left();
}

/// The init's exit goes to the bundle's `exit.json` (for `delete` after a shim crash) at
/// the end of the turn that reaped it, while `runc kill` is still held, not in the turn
/// that answers the Kill (where the next call would wait for the file): the file, made
/// empty at Create, holds the record before the Kill is answered.
#[test]
fn the_exit_is_recorded_while_a_slow_kill_is_held() {
    let id = tether_tests::unique_id("record");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["kill"], GateAt::AfterWork);
    let pid = shim.create_and_start(&id, shim.options(gate.path()));
    let exit_file = shim.bundle().join("exit.json");
    assert_eq!(
        std::fs::read(&exit_file).expect("exit.json made at Create"),
        b"",
        "no exit yet: the placeholder is empty"
    );

    let mut conn = RawConn::connect(&shim);
    let mut kill = api::KillRequest::new();
    kill.id = id.clone();
    kill.signal = libc::SIGKILL as u32;
    kill.all = true;
    conn.send(1, "Kill", &kill);
    gate.wait_reached("kill");
    assert_reaped(&shim, pid, "the killed init");
    // The probe is read in a turn after the reap's, whose end wrote the record; the
    // Kill is still unanswered (the probe's reply comes first).
    probe(&mut conn, &id, 3, "while runc kill is held");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&exit_file).expect("read exit.json"))
            .unwrap_or_else(|e| panic!("exit.json is no record yet ({e}):\n{}", shim.log()));
    assert_eq!(record["Pid"], serde_json::json!(pid), "{record}");
    assert_eq!(record["Status"], serde_json::json!(137), "{record}");

    gate.open("kill");
    let (stream, reply) = conn.recv();
    assert_eq!(stream, 1);
    assert_eq!(reply.status.code.value(), OK, "Kill: {:?}", reply.status);
    let reaction = react_to_exit(&shim, &id);
    assert_eq!(reaction.exit_status, 137);
    reaction.delete.expect("Delete after the exit");
    reaction.shutdown.expect("Shutdown");
    shim.assert_nothing_left();
}

#[test]
fn a_delete_waits_for_a_kill_in_flight() {
    // Delete arrives while Kill waits on runc (e.g. containerd force-deletes on a
    // timeout): it must neither overtake the Kill nor leave it unanswered.
    let id = tether_tests::unique_id("order");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["kill"], GateAt::AfterWork);
    let pid = shim.create_and_start(&id, shim.options(gate.path()));

    let mut conn = RawConn::connect(&shim);
    let mut kill = api::KillRequest::new();
    kill.id = id.clone();
    kill.signal = libc::SIGKILL as u32;
    kill.all = true;
    conn.send(1, "Kill", &kill);
    // Into the Kill's runc call, after the signal.
    gate.wait_reached("kill");
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    conn.send(3, "Delete", &delete);
    // The loop has read the Delete, and answered neither call.
    probe(&mut conn, &id, 5, "while runc kill is held");
    // The killed init gone (reaped by the shim) before runc kill returns, as it is when
    // containerd force-deletes: on a loaded machine the kernel may still be tearing its
    // pid namespace down when the gate opens, and a Delete of a live init is refused.
    assert_reaped(&shim, pid, "the killed init");
    gate.open("kill");
    let (first, kill_reply) = conn.recv();
    let (second, delete_reply) = conn.recv();
    assert_eq!(
        (first, second),
        (1, 3),
        "Delete was answered before the Kill it raced:\n{}",
        shim.log()
    );
    assert_eq!(
        kill_reply.status.code.value(),
        OK,
        "Kill was not answered: {:?}\n{}",
        kill_reply.status,
        shim.log()
    );
    assert_eq!(
        delete_reply.status.code.value(),
        OK,
        "Delete once the Kill is done: {:?}",
        delete_reply.status
    );
    let deleted =
        api::DeleteResponse::parse_from_bytes(&delete_reply.payload).expect("DeleteResponse");
    assert_eq!(deleted.exit_status, 137);
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
}

#[test]
fn shutdown_does_not_drop_a_create_in_flight() {
    // containerd 2.x sends Shutdown after every task delete; in a grouped shim (a pod) the
    // next container's Create can be in flight when it arrives. The shim must answer the
    // Create and keep serving, not exit under it.
    let id = tether_tests::unique_id("order");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["create"], GateAt::AfterWork);

    let mut conn = RawConn::connect(&shim);
    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.options = Some(shim.options(gate.path())).into();
    conn.send(1, "Create", &create);
    // runc has created the container; the shim does not know yet.
    gate.wait_reached("create");
    conn.send(3, "Shutdown", &api::ShutdownRequest::new());
    let (stream, shutdown) = conn.recv();
    assert_eq!(stream, 3, "a reply to Create before runc create returned");
    assert_eq!(
        shutdown.status.code.value(),
        OK,
        "Shutdown while nothing is created yet: {:?}",
        shutdown.status
    );
    gate.open("create");
    let (stream, created) = conn.recv();
    assert_eq!(stream, 1);
    assert_eq!(
        created.status.code.value(),
        OK,
        "Create was not answered: {:?}\n{}",
        created.status,
        shim.log()
    );
    assert!(
        !shim.wait_shim_exit(Duration::from_millis(500)),
        "the shim exited with a container to serve"
    );
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    shim.client()
        .start(ctx(), &start)
        .expect("Start after the cancelled shutdown");
    let mut kill = api::KillRequest::new();
    kill.id = id.clone();
    kill.signal = libc::SIGKILL as u32;
    shim.client().kill(ctx(), &kill).expect("Kill");
    let reaction = react_to_exit(&shim, &id);
    reaction.delete.expect("Delete");
    reaction.shutdown.expect("Shutdown");
    shim.assert_nothing_left();
}

#[test]
fn a_shutdown_during_a_create_that_fails_ends_the_shim() {
    // The other half of the contract above: the Create a Shutdown came during fails, so
    // nothing is left to serve and the shim exits (before: the Shutdown was dropped while
    // the Create was in flight, and the shim stayed until its idle timeout).
    let id = tether_tests::unique_id("order");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let gate = RuncGate::write(shim.dir(), &["create"], GateAt::BeforeWork);
    let mut conn = RawConn::connect(&shim);
    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.options = Some(shim.options(gate.path())).into();
    conn.send(1, "Create", &create);
    gate.wait_reached("create");
    conn.send(3, "Shutdown", &api::ShutdownRequest::new());
    let (stream, shutdown) = conn.recv();
    assert_eq!(stream, 3);
    assert_eq!(shutdown.status.code.value(), OK, "{:?}", shutdown.status);
    // runc create, once let go, finds a spec it cannot read.
    std::fs::write(shim.bundle().join("config.json"), b"{ not json").expect("spoil the spec");
    gate.open("create");
    let (stream, created) = conn.recv();
    assert_eq!(stream, 1);
    assert_ne!(created.status.code.value(), OK, "the Create was to fail");
    assert!(
        shim.wait_shim_exit(Duration::from_secs(10)),
        "the shim stayed after a Shutdown and a failed Create\n{}",
        shim.log()
    );
}
