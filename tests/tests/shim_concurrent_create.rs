//! Two Creates of one container id at once (issue 21): the shim must not depend on its
//! client for its own integrity. With a runc slow to create, both calls are in flight
//! together; exactly one succeeds, the other is refused with ALREADY_EXISTS, and the
//! winner's rootfs mount and container are untouched (a loser that unmounted the rootfs
//! on its failure path, or overwrote the winner's record, would break the winner).

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::mount::Mount;
use std::time::Duration;
use tether_tests::direct_shim::{ctx, DirectShim, RawConn, SlowRunc};

/// How long the wrapper waits before the real `runc create`: both Creates are in flight
/// for at least this long.
const SLOW_CREATE: Duration = Duration::from_millis(500);

/// Whether `path` is a mount point now (by /proc/self/mountinfo).
fn mounted(path: &std::path::Path) -> bool {
    let target = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*target))
}

#[test]
fn concurrent_creates_of_one_id_leave_the_winner_untouched() {
    let id = tether_tests::unique_id("twice");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    // The rootfs comes as a bind mount the shim makes, as containerd's snapshotter's
    // mounts do: the loser of the race must not unmount it.
    let bundle = shim.bundle();
    let rootfs = bundle.join("rootfs");
    let source = shim.dir().join("rootfs-source");
    std::fs::rename(&rootfs, &source).expect("move the rootfs aside");
    std::fs::create_dir(&rootfs).expect("an empty mount point");
    let runc = SlowRunc::write_hanging_first(shim.dir(), &["create"], SLOW_CREATE);

    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = bundle.to_string_lossy().into_owned();
    create.options = Some(shim.options(runc.path())).into();
    let mut bind = Mount::new();
    bind.type_ = "bind".into();
    bind.source = source.to_string_lossy().into_owned();
    bind.options = vec!["rbind".into()];
    create.rootfs.push(bind);

    // Both on one connection, back to back: the second arrives while the first waits on
    // the slow runc.
    let mut conn = RawConn::connect(&shim);
    conn.send(1, "Create", &create);
    conn.send(3, "Create", &create);
    let mut replies = [conn.recv(), conn.recv()];
    // The duplicate is refused at once, without waiting for the winner's runc: its reply
    // is written first.
    let first_code = replies[0].1.status.code.value();
    replies.sort_by_key(|(stream, _)| *stream);
    let codes: Vec<i32> = replies.iter().map(|(_, r)| r.status.code.value()).collect();
    let ok = codes.iter().filter(|c| **c == 0).count();
    let exists = codes
        .iter()
        .filter(|c| **c == containerd_shim_protos::ttrpc::Code::ALREADY_EXISTS as i32)
        .count();
    assert_eq!(
        (ok, exists),
        (1, 1),
        "one Create succeeds, the other is refused as a duplicate: {:?}\n{}",
        replies
            .iter()
            .map(|(_, r)| r.status.message.clone())
            .collect::<Vec<_>>(),
        shim.log()
    );
    assert_eq!(
        first_code,
        containerd_shim_protos::ttrpc::Code::ALREADY_EXISTS as i32,
        "the duplicate waited for the winner's runc\n{}",
        shim.log()
    );
    // It never reached the mount or runc: one `runc create` ran, and no unmount of the
    // winner's rootfs was tried.
    let creates = std::fs::read_to_string(shim.dir().join("slow-runc.pids")).unwrap_or_default();
    assert_eq!(
        creates.lines().count(),
        1,
        "runc create ran {} times",
        creates.lines().count()
    );
    assert!(
        !shim.log().contains("unmount"),
        "an unmount was tried\n{}",
        shim.log()
    );
    let winner = replies
        .iter()
        .find(|(_, r)| r.status.code.value() == 0)
        .unwrap();
    let created = api::CreateTaskResponse::parse_from_bytes(&winner.1.payload).expect("reply");
    assert!(created.pid > 0);
    assert!(
        mounted(&rootfs),
        "the winner's rootfs is still mounted\n{}",
        shim.log()
    );

    // The winner's container is whole: it starts and runs from its rootfs.
    let mut start = api::StartRequest::new();
    start.id = id.clone();
    let started = shim
        .client()
        .start(ctx(), &start)
        .expect("Start the winner");
    assert_eq!(started.pid, created.pid);
    let mut state = api::StateRequest::new();
    state.id = id.clone();
    let s = shim.client().state(ctx(), &state).expect("State");
    assert_eq!(
        s.status.value(),
        containerd_shim_protos::types::task::Status::RUNNING as i32
    );
    assert!(mounted(&rootfs), "still mounted once running");

    let waited = shim.kill_and_wait(&id);
    assert_eq!(waited.exit_status, 137);
    let mut delete = api::DeleteRequest::new();
    delete.id = id.clone();
    shim.client().delete(ctx(), &delete).expect("Delete");
    assert!(!mounted(&rootfs), "Delete unmounts the rootfs");
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    shim.assert_nothing_left();
}
