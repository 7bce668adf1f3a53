//! The caller's deadline (ttrpc's `timeout_nano`) bounds the runc a call runs, as the Go
//! shim's `exec.CommandContext` does: a runc still running at the deadline is killed with
//! what it started, the call answers DEADLINE_EXCEEDED at once, and the worker it held is
//! free again. A call sent without a deadline waits for runc as long as it takes.
//!
//! Each test drives tether's shim directly over ttrpc (`direct_shim`) with a runc wrapper
//! that hangs 30 s in one verb, and checks the answer's code and time, that no process of
//! the hung runc is left, that the shim goes on serving, and that nothing is left after
//! Delete and Shutdown.

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::Response;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::{ctx, pid_alive, DirectShim, RawConn, SlowRunc};

/// How long the wrapper hangs: far beyond any deadline here.
const HANG: Duration = Duration::from_secs(30);
/// The caller's timeout.
const DEADLINE: Duration = Duration::from_secs(1);
/// How late after the deadline the answer may come (killing and reaping runc, a loaded
/// machine).
const SLACK: Duration = Duration::from_millis(1500);
const DEADLINE_EXCEEDED: i32 = 4;

/// Sends `method` with the test's deadline on a fresh connection and returns the answer
/// and how long it took.
fn call_with_deadline(
    shim: &DirectShim,
    method: &str,
    request: &impl Message,
) -> (Response, Duration) {
    let mut conn = RawConn::connect(shim);
    let sent = Instant::now();
    conn.send_with_timeout(1, method, request, Some(DEADLINE));
    let (_, reply) = conn.recv();
    (reply, sent.elapsed())
}

/// The answer is DEADLINE_EXCEEDED, names the runc verb, and came in time.
fn assert_deadline_exceeded(shim: &DirectShim, verb: &str, reply: &Response, took: Duration) {
    assert_eq!(
        reply.status.code.value(),
        DEADLINE_EXCEEDED,
        "{:?}\n{}",
        reply.status,
        shim.log()
    );
    assert!(
        reply.status.message.contains(&format!("runc {verb}")),
        "the message names the runc command: {:?}",
        reply.status.message
    );
    assert!(
        took >= DEADLINE && took < DEADLINE + SLACK,
        "answered after {took:?}, the deadline being {DEADLINE:?}"
    );
}

/// No process of the hung wrapper is left (the shim reaps the orphaned `sleep` soon).
fn assert_hung_runc_gone(runc: &SlowRunc) {
    let until = Instant::now() + Duration::from_secs(2);
    while !runc.alive().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        runc.alive(),
        Vec::<i32>::new(),
        "processes of the hung runc left"
    );
}

fn delete_and_shut_down(shim: &DirectShim, id: &str) -> api::DeleteResponse {
    let mut delete = api::DeleteRequest::new();
    delete.id = id.into();
    let deleted = shim
        .client()
        .delete(ctx(), &delete)
        .unwrap_or_else(|e| panic!("Delete: {e}\n{}", shim.log()));
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    deleted
}

#[test]
fn a_kill_whose_runc_hangs_past_the_deadline_answers_deadline_exceeded() {
    // runc delivers the signal, then hangs: the container dies meanwhile, and its exit is
    // reported only after the Kill's answer (the call gate), which comes at the deadline.
    let id = tether_tests::unique_id("dl-kill");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = SlowRunc::write(shim.dir(), &["kill"], HANG);
    shim.create_and_start(&id, shim.options(runc.path()));

    let mut conn = RawConn::connect(&shim);
    let sent = Instant::now();
    conn.wait_then_kill(&id, Some(DEADLINE));
    let (first, kill_reply) = conn.recv();
    let took = sent.elapsed();
    assert_eq!(
        first, 3,
        "the exit was reported before the Kill was answered"
    );
    assert_deadline_exceeded(&shim, "kill", &kill_reply, took);
    let (second, wait_reply) = conn.recv();
    assert_eq!(second, 1);
    let waited = api::WaitResponse::parse_from_bytes(&wait_reply.payload).expect("WaitResponse");
    assert_eq!(
        waited.exit_status, 137,
        "the signal was delivered before runc hung"
    );
    assert_hung_runc_gone(&runc);

    let deleted = delete_and_shut_down(&shim, &id);
    assert_eq!(deleted.exit_status, 137);
    shim.assert_nothing_left();
}

#[test]
fn a_pause_whose_runc_hangs_past_the_deadline_frees_its_worker() {
    // runc hangs before it does anything: the container still runs, and the next call
    // that needs a worker (Pids runs `runc ps`) is served.
    let id = tether_tests::unique_id("dl-pause");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = SlowRunc::write_hanging_first(shim.dir(), &["pause"], HANG);
    let pid = shim.create_and_start(&id, shim.options(runc.path()));

    let mut pause = api::PauseRequest::new();
    pause.id = id.clone();
    let (reply, took) = call_with_deadline(&shim, "Pause", &pause);
    assert_deadline_exceeded(&shim, "pause", &reply, took);
    assert_hung_runc_gone(&runc);

    let mut pids = api::PidsRequest::new();
    pids.id = id.clone();
    let listed = shim
        .client()
        .pids(ctx(), &pids)
        .unwrap_or_else(|e| panic!("Pids after the Pause: {e}\n{}", shim.log()));
    assert!(
        listed.processes.iter().any(|p| p.pid == pid),
        "the init runs on: {:?}",
        listed.processes
    );

    assert_eq!(shim.kill_and_wait(&id).exit_status, 137);
    delete_and_shut_down(&shim, &id);
    shim.assert_nothing_left();
}

#[test]
fn a_create_whose_runc_hangs_past_the_deadline_leaves_no_container() {
    // runc creates the container, then hangs: at the deadline the half-done Create is
    // undone (runc's process group killed, `delete --force`), and the task is unknown.
    let id = tether_tests::unique_id("dl-create");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = SlowRunc::write(shim.dir(), &["create"], HANG);

    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.options = Some(shim.options(runc.path())).into();
    let (reply, took) = call_with_deadline(&shim, "Create", &create);
    assert_deadline_exceeded(&shim, "create", &reply, took);
    assert_hung_runc_gone(&runc);
    let left = shim.runc_state_left();
    assert!(
        left.is_empty(),
        "the killed create left {left:?}\n{}",
        shim.log()
    );
    let init_pid = std::fs::read_to_string(shim.bundle().join("init.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    if let Some(pid) = init_pid {
        let until = Instant::now() + Duration::from_secs(2);
        while pid_alive(pid) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !pid_alive(pid),
            "the half-created container's init {pid} runs on"
        );
    }

    let mut state_req = api::StateRequest::new();
    state_req.id = id.clone();
    assert!(
        shim.client().state(ctx(), &state_req).is_err(),
        "the failed Create left a task"
    );
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
}

#[test]
fn a_call_without_a_deadline_waits_for_runc() {
    // timeout_nano 0 (ctr, a checkpoint): runc runs as long as it takes, as before.
    let slow = Duration::from_secs(2);
    let id = tether_tests::unique_id("dl-none");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let runc = SlowRunc::write_hanging_first(shim.dir(), &["pause"], slow);
    shim.create_and_start(&id, shim.options(runc.path()));

    let mut conn = RawConn::connect(&shim);
    let mut pause = api::PauseRequest::new();
    pause.id = id.clone();
    let sent = Instant::now();
    conn.send_with_timeout(1, "Pause", &pause, None);
    let (_, reply) = conn.recv();
    assert_eq!(reply.status.code.value(), 0, "{:?}", reply.status);
    assert!(
        sent.elapsed() >= slow,
        "the slow runc did not slow Pause down"
    );
    let mut resume = api::ResumeRequest::new();
    resume.id = id.clone();
    shim.client().resume(ctx(), &resume).expect("Resume");

    assert_eq!(shim.kill_and_wait(&id).exit_status, 137);
    delete_and_shut_down(&shim, &id);
    shim.assert_nothing_left();
}
