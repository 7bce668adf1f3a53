use super::*;
use crate::supervisor::stdio::StdioConfig;

fn container(id: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        bundle: "/b".into(),
        init: ProcKey(0),
        execs: BTreeMap::new(),
        paused: false,
        shares_pid_ns: false,
        rootfs_mounted: None,
        options: Default::default(),
        runc: runc_wrapper::Runc::new(),
        cgroup_procs: None,
        oom: None,
    }
}

fn init_of(id: &str) -> ProcessRecord {
    ProcessRecord::new(id, "", StdioConfig::default(), LaunchSpec::CreatedInit)
}

fn exec_of(id: &str, exec: &str) -> ProcessRecord {
    ProcessRecord::new(
        id,
        exec,
        StdioConfig::default(),
        LaunchSpec::Exec(Vec::new()),
    )
}

/// A table with container `id`; returns the init's key.
fn table_with(id: &str) -> (Table, ProcKey) {
    let mut t = Table::default();
    t.reserve(id).unwrap();
    let key = t.insert_container(container(id), init_of(id));
    (t, key)
}

fn exit(pid: i32, code: i32) -> ChildExit {
    ChildExit {
        pid,
        status: code << 8,
        at: std::time::SystemTime::now(),
    }
}

// Pids far above pid_max so that no pidfd ever names a real process.
const P1: i32 = 1 << 30;
const P2: i32 = (1 << 30) + 1;

#[test]
fn a_reserved_id_is_taken_until_created_or_released() {
    let mut t = Table::default();
    t.reserve("c").unwrap();
    assert_eq!(t.reserve("c"), Err(Taken("c".into())), "a second Create");
    assert!(!t.is_empty());
    assert!(t.container("c").is_err(), "not usable while being created");
    t.release("c");
    assert!(t.is_empty());
    t.reserve("c").unwrap();
    t.insert_container(container("c"), init_of("c"));
    assert_eq!(t.reserve("c"), Err(Taken("c".into())), "created");
}

#[test]
fn lookups_name_what_is_missing() {
    let (t, init) = table_with("c");
    assert_eq!(t.find("c", ""), Ok(init));
    assert_eq!(
        t.find("d", "").unwrap_err().to_string(),
        "container d not found"
    );
    assert_eq!(
        t.find("c", "e").unwrap_err().to_string(),
        "process e of container c not found"
    );
}

#[test]
fn exit_during_start_is_held_until_start_is_reported() {
    let (mut t, init) = table_with("c");
    t.register_pid(init, P1, None);
    t.get_mut(init).unwrap().begin_start().unwrap();
    assert!(t.on_exits(&[exit(P1, 3)]).is_empty());
    t.get_mut(init).unwrap().launched().unwrap();
    assert!(t.on_exits(&[exit(P1, 4)]).is_empty());
    assert_eq!(t.start_done(init), vec![init]);
    assert_eq!(t.get(init).unwrap().exit().unwrap().code, 3);
}

#[test]
fn an_exit_held_by_a_start_that_failed_is_reported() {
    let (mut t, init) = table_with("c");
    t.register_pid(init, P1, None);
    t.get_mut(init).unwrap().begin_start().unwrap();
    assert!(t.on_exits(&[exit(P1, 137)]).is_empty(), "held");
    assert_eq!(t.start_failed(init), vec![init]);
    assert_eq!(t.get(init).unwrap().exit().unwrap().code, 137);
}

/// Container "c" with its init (P1) running and an exec "e" whose Start is in flight.
fn table_with_exec_starting() -> (Table, ProcKey, ProcKey) {
    let (mut t, init) = table_with("c");
    t.register_pid(init, P1, None);
    let e = t.insert_exec("c", exec_of("c", "e")).unwrap();
    t.get_mut(e).unwrap().begin_start().unwrap();
    (t, init, e)
}

#[test]
fn an_exec_whose_start_fails_releases_the_init_exit_it_held_back() {
    let (mut t, init, e) = table_with_exec_starting();
    assert!(
        t.on_exits(&[exit(P1, 1)]).is_empty(),
        "deferred for the exec"
    );
    assert_eq!(t.start_failed(e), vec![init]);
    assert_eq!(*t.get(e).unwrap().state(), ProcState::Created);
}

#[test]
fn early_exec_exit_is_claimed_by_pid() {
    let (mut t, init) = table_with("c");
    t.register_pid(init, P1, None);
    let e = t.insert_exec("c", exec_of("c", "e")).unwrap();
    assert!(t.on_exits(&[exit(P2, 5)]).is_empty());
    let early = t.register_pid(e, P2, None).expect("claimed");
    assert_eq!(early.code, 5);
}

#[test]
fn init_exit_is_reported_after_its_execs() {
    let (mut t, init, e) = table_with_exec_starting();
    t.get_mut(e).unwrap().launched().unwrap();
    t.register_pid(e, P2, None);
    assert!(t.start_done(e).is_empty());
    assert!(t.on_exits(&[exit(P1, 137)]).is_empty(), "init held back");
    assert!(!t.get(init).unwrap().state().exit_released());
    assert_eq!(t.on_exits(&[exit(P2, 0)]), vec![e, init]);
    assert_eq!(t.get(init).unwrap().exit().unwrap().code, 137);
    assert!(t.get(init).unwrap().state().exit_released());
}

#[test]
fn waits_parked_before_delivery_are_handed_over_once() {
    let (mut t, init) = table_with("c");
    t.register_pid(init, P1, None);
    assert_eq!(t.on_exits(&[exit(P1, 9)]), vec![init]);
    let p = t.get_mut(init).unwrap();
    assert!(
        matches!(p.state(), ProcState::ExitQueued(_)),
        "recorded, not reported"
    );
    let w = Waiter { conn: 1, stream: 3 };
    p.waiters.push(w);
    assert_eq!(t.exit_delivered(init), vec![w]);
    assert!(t.get(init).unwrap().state().exit_reported());
    assert!(t.exit_delivered(init).is_empty(), "handed over once");
    assert!(t.exit_delivered(ProcKey(999)).is_empty());
}

#[test]
fn unknown_pids_do_not_grow_without_bound() {
    let mut t = Table::default();
    let exits: Vec<_> = (0..3000).map(|i| exit(P1 + i, 0)).collect();
    t.on_exits(&exits);
    assert!(t.unclaimed.len() <= MAX_UNCLAIMED);
}

#[test]
fn a_removed_container_takes_its_processes_pids_and_queued_exits() {
    let (mut t, init, e) = table_with_exec_starting();
    t.get_mut(e).unwrap().launched().unwrap();
    t.register_pid(e, P2, None);
    t.start_done(e);
    for k in t.on_exits(&[exit(P2, 0)]) {
        t.queue_exit(k);
    }
    assert_eq!(t.exit_queue().len(), 1);
    let (c, procs) = t.remove_container("c").unwrap();
    assert_eq!(c.init, init);
    assert_eq!(procs.len(), 2);
    assert!(t.exit_queue().is_empty());
    assert!(t.pids.is_empty());
    assert!(t.is_empty());
}

#[test]
fn keys_are_not_reused_while_their_process_lives() {
    let (mut t, init) = table_with("c");
    t.next_key = init.0; // wrapped round to a live key
    let e = t.insert_exec("c", exec_of("c", "e")).unwrap();
    assert_ne!(e, init);
}
