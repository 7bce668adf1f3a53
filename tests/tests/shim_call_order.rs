//! The ordering contract of Kill, Wait, Delete and Shutdown on one task, proven with a
//! runc that returns late (the work itself lands on time), as containerd's CRI plugin
//! exercises it: CRI's Kill is still waiting on `runc kill` when the container dies;
//! containerd reacts to the exit with Wait, Delete and Shutdown at once.
//!
//! Each test drives tether's shim directly over ttrpc (`direct_shim`), so the calls are
//! placed exactly, and checks that every call is answered, the Kill that caused an exit
//! is answered before anyone learns of the exit, and nothing is left behind.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use std::thread;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::{ctx, DirectShim, RawConn, SlowRunc};

const SLOW: Duration = Duration::from_millis(300);

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
    let runc = SlowRunc::write(shim.dir(), &["kill"], SLOW);
    shim.create_and_start(&id, shim.options(runc.path()));

    // One connection, as containerd has: Wait parked first, then the Kill. The order of
    // the two replies on the socket is the order in which the shim wrote them.
    let mut conn = RawConn::connect(&shim);
    let sent = Instant::now();
    conn.wait_then_kill(&id, None);
    let (first, first_reply) = conn.recv();
    let kill_took = sent.elapsed();
    let (second, second_reply) = conn.recv();
    assert_eq!(
        (first, second),
        (3, 1),
        "the Wait was answered before the Kill that caused the exit:\n{}",
        shim.log()
    );
    assert_eq!(
        first_reply.status.code.value(),
        0,
        "Kill: {:?}",
        first_reply.status
    );
    assert!(
        kill_took >= SLOW,
        "the slow runc did not slow Kill down: the test proves nothing"
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

#[test]
fn a_delete_waits_for_a_kill_in_flight() {
    // Delete arrives while Kill waits on runc (e.g. containerd force-deletes on a
    // timeout): it must neither overtake the Kill nor leave it unanswered.
    let id = tether_tests::unique_id("order");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = SlowRunc::write(shim.dir(), &["kill"], SLOW);
    shim.create_and_start(&id, shim.options(runc.path()));

    thread::scope(|s| {
        let killer = s.spawn(|| {
            let mut kill = api::KillRequest::new();
            kill.id = id.clone();
            kill.signal = libc::SIGKILL as u32;
            let answer = shim.client().kill(ctx(), &kill).map_err(|e| e.to_string());
            (answer, Instant::now())
        });
        // Into the Kill's runc call, after the signal.
        thread::sleep(SLOW / 3);
        let mut delete = api::DeleteRequest::new();
        delete.id = id.clone();
        let deleted = shim.client().delete(ctx(), &delete);
        let delete_returned = Instant::now();
        let (kill, kill_returned) = killer.join().expect("the Kill thread");
        assert!(
            kill.is_ok(),
            "Kill was not answered: {kill:?}\n{}",
            shim.log()
        );
        let deleted = deleted.expect("Delete once the Kill is done");
        assert!(
            kill_returned <= delete_returned,
            "Delete returned before the Kill it raced"
        );
        assert_eq!(deleted.exit_status, 137);
    });
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
    let runc = SlowRunc::write(shim.dir(), &["create"], SLOW);
    let options = shim.options(runc.path());

    thread::scope(|s| {
        let creator = s.spawn(|| {
            let mut create = api::CreateTaskRequest::new();
            create.id = id.clone();
            create.bundle = shim.bundle().to_string_lossy().into_owned();
            create.options = Some(options).into();
            shim.client()
                .create(ctx(), &create)
                .map_err(|e| e.to_string())
        });
        thread::sleep(SLOW / 3);
        shim.client()
            .shutdown(ctx(), &api::ShutdownRequest::new())
            .expect("Shutdown while nothing is created yet");
        let created = creator.join().expect("the Create thread");
        assert!(created.is_ok(), "Create was not answered: {created:?}");
    });
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
