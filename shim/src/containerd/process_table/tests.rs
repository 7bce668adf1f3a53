use super::*;
use crate::containerd::stdio_uris::StdioConfig;

fn container(id: &str) -> ContainerRecord {
    ContainerRecord {
        id: id.into(),
        bundle: "/b".into(),
        init: ProcKey(0),
        execs: BTreeMap::new(),
        paused: false,
        deleting: false,
        shares_pid_ns: false,
        rootfs_mounted: None,
        options: Default::default(),
        runc: runc_wrapper::Runc::new(),
        cgroup_procs: None,
        cgroups: None,
        stat_files: Default::default(),
        oom: None,
        exit_file: None,
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
    assert!(t.exit_delivered(init));
    let p = t.get(init).unwrap();
    assert!(p.state().exit_reported());
    assert_eq!(
        p.exit_settled().map(|e| e.code),
        Some(9),
        "its Waits may go"
    );
    assert_eq!(p.waiters, vec![w], "answered by the shim, not the table");
    assert!(!t.exit_delivered(init), "delivered once");
    assert!(!t.exit_delivered(ProcKey(999)));
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

mod round_trip {
    use super::*;
    use crate::containerd::shim::RuncFactory;
    use crate::process_core::carried_fds::{FdsIn, FdsOut};
    use crate::process_core::process_stdio::{ProcessStdio, Stream};
    use crate::process_core::pump::{Direction, Pump};
    use crate::process_core::spool::{Spool, SpoolPolicy};
    use snapshot::TableSnapshot;
    use std::fs::File;
    use std::time::{Duration, Instant};

    fn rec(code: i32) -> ExitRecord {
        ExitRecord {
            code,
            exited_at: std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    /// Every state a process can be saved in.
    fn every_state() -> Vec<ProcState> {
        use ProcState::*;
        vec![
            Created,
            Starting { held_exit: None },
            Starting {
                held_exit: Some(rec(1)),
            },
            Started { held_exit: None },
            Started {
                held_exit: Some(rec(1)),
            },
            Running,
            ExitDeferred(rec(2)),
            ExitQueued(rec(3)),
            ExitReported(rec(4)),
        ]
    }

    use crate::process_core::test_fds::pipe;

    /// A process with every descriptor a record can hold: a stdin closer, a console, an
    /// input pump and an output pump with a spool holding bytes.
    fn full_process(
        id: &str,
        exec: &str,
        state: ProcState,
        dir: &std::path::Path,
    ) -> ProcessRecord {
        let mut p = ProcessRecord::new(
            id,
            exec,
            StdioConfig {
                stdin: "/run/x/stdin".into(),
                stdout: "/run/x/stdout".into(),
                stderr: String::new(),
                terminal: true,
                spool: None,
            },
            LaunchSpec::Exec(br#"{"args":["sh"]}"#.to_vec()),
        );
        *p.state_mut() = state;
        p.pid = P1;
        let (closer, _) = pipe();
        p.stdin.closer = Some(File::from(closer));
        p.stdin.close_requested = exec.len() % 2 == 1;
        let (console, _) = pipe();
        p.console = Some(File::from(console));
        let mut stdio = ProcessStdio::default();
        let (in_r, _in_w) = pipe();
        let (_, in_dst) = pipe();
        stdio.add(
            Stream::Stdin,
            Pump::new(Direction::Input, in_r, in_dst, None).unwrap(),
        );
        let (out_r, out_w) = pipe();
        let (_, out_dst) = pipe();
        let spool_file = tempfile::tempfile_in(dir).unwrap();
        let mut spool =
            Spool::from_file(spool_file, 1 << 20, SpoolPolicy::DropOldest, "c/e stdout");
        assert_eq!(spool.append(b"spooled bytes"), 13);
        let (keep, _) = pipe();
        let pump = Pump::new(Direction::Output, out_r, out_dst, Some(File::from(keep)))
            .unwrap()
            .with_spool(spool);
        stdio.add(Stream::Stdout, pump);
        drop(out_w);
        p.pumps = stdio;
        p.open_outputs = 1;
        let now = Instant::now();
        p.exit_wait = Some(record::ExitWait {
            drain_deadline: now + Duration::from_millis(300),
            hold_limit: now + Duration::from_secs(30),
        });
        p.spool_waits.push(record::SpoolWait {
            stream: Stream::Stdout,
            until: now + Duration::from_secs(10),
        });
        p.waiters.push(Waiter { conn: 3, stream: 7 });
        p
    }

    fn factory() -> RuncFactory {
        RuncFactory::new("ns", std::sync::Arc::new(runc_wrapper::DefaultMonitor))
    }

    #[test]
    fn every_state_and_descriptor_survives_a_save_and_a_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Table::default();
        t.reserve("c").unwrap();
        let mut c = container("c");
        c.paused = true;
        c.shares_pid_ns = true;
        c.rootfs_mounted = Some("/b/rootfs".into());
        c.cgroup_procs = Some("/sys/fs/cgroup/x/cgroup.procs".into());
        c.options.binary_name = "/usr/bin/crun".into();
        let init = t.insert_container(c, full_process("c", "", ProcState::Running, dir.path()));
        t.register_pid(init, P1, None);
        for (i, state) in every_state().into_iter().enumerate() {
            let exec = format!("e{i}");
            let key = t
                .insert_exec("c", full_process("c", &exec, state, dir.path()))
                .unwrap();
            t.queue_exit(key);
        }
        t.unclaimed.insert(P2, rec(9));
        let now = Instant::now();
        let mut out = FdsOut::default();
        let saved = t.save(&mut out, now).unwrap();
        let json = serde_json::to_string(&saved).unwrap();
        // Handed over as across execve: the numbers now belong to the new table.
        std::mem::forget(t);
        let read: TableSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(read, saved, "the text form holds everything");
        let mut fds = FdsIn::new(out.fds());
        let restored = Table::restore(read, &mut fds, &factory(), now).unwrap();
        assert!(fds.untaken().is_empty(), "every descriptor found its owner");
        let mut again = FdsOut::default();
        let resaved = restored.save(&mut again, now).unwrap();
        assert_eq!(resaved, saved);
        assert_eq!(again.fds(), out.fds());
        let states: Vec<ProcState> = resaved.containers[0]
            .execs
            .iter()
            .map(|p| p.state)
            .collect();
        assert_eq!(states, every_state());
        // The restored table works as the saved one did.
        let c = restored.container("c").unwrap();
        assert_eq!(c.runc.binary(), std::path::Path::new("/usr/bin/crun"));
        assert_eq!(
            restored
                .find("c", "e5")
                .map(|k| restored.get(k).unwrap().pid),
            Ok(P1)
        );
        let spooled = restored.get(c.init).unwrap().pumps.spooled(Stream::Stdout);
        assert_eq!(spooled, 13);
    }

    #[test]
    fn a_table_is_saved_only_at_rest() {
        let (mut t, init) = table_with("c");
        let mut out = FdsOut::default();
        assert!(t.save(&mut out, Instant::now()).is_ok());
        t.reserve("d").unwrap();
        assert_eq!(
            t.save(&mut out, Instant::now()),
            Err(snapshot::NotAtRest::Creating("d".into()))
        );
        t.release("d");
        let p = t.get_mut(init).unwrap();
        assert!(p.gate.try_enter(gate::ExitReport::HeldBack));
        assert_eq!(
            t.save(&mut out, Instant::now()),
            Err(snapshot::NotAtRest::CallInFlight("c".into()))
        );
    }
}

/// The shim's answer to a process whose output source ended before its exit, with bytes
/// still spooled: the spool the reap's own run of the pumps empties ends the Waits' wait
/// for it (issue 23, part 3). Before, that run reported no end (it had been reported),
/// so the Waits waited out their 10 s bound unless an event of the same stream came
/// later (a TTY exec under load: a 10 s Wait in ~2 % of rounds).
mod spool_emptied_at_the_reap {
    use super::*;
    use crate::containerd::events::Events;
    use crate::containerd::shim::{RuncFactory, Shim};
    use crate::process_core::epoll::Poller;
    use crate::process_core::process_stdio::{ProcessStdio, Stream};
    use crate::process_core::pump::{set_nonblocking, Direction, Pump};
    use crate::process_core::reaper::ChildExit;
    use crate::process_core::spool::{Spool, SpoolPolicy};
    use crate::process_core::test_fds::{pipe, read_all_now};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::time::SystemTime;

    /// Writes into `w` (non-blocking) until it is full.
    fn fill(w: &File) {
        let mut w = w;
        let chunk = [b'x'; 4096];
        while w.write(&chunk).is_ok() {}
    }

    #[test]
    fn a_wait_stops_waiting_for_a_spool_the_reap_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let poller = Poller::new().unwrap();
        let mut shim = Shim::new(
            "ns".into(),
            Default::default(),
            Events::new(None),
            RuncFactory::new("ns", std::sync::Arc::new(runc_wrapper::DefaultMonitor)),
        );
        shim.table.reserve("c").unwrap();
        let key = shim.table.insert_container(container("c"), init_of("c"));
        shim.table.register_pid(key, P1, None);

        // stdout: the process's pipe, the FIFO (full: its reader is away), a spool
        // holding bytes.
        let (src_r, src_w) = pipe();
        let (fifo_r, fifo_w) = pipe();
        set_nonblocking(fifo_r.as_fd()).unwrap();
        set_nonblocking(fifo_w.as_fd()).unwrap();
        let fifo_r = File::from(fifo_r);
        let fifo_w = File::from(fifo_w);
        fill(&fifo_w);
        let mut spool = Spool::from_file(
            tempfile::tempfile_in(dir.path()).unwrap(),
            1 << 20,
            SpoolPolicy::Block,
            "c stdout",
        );
        assert_eq!(spool.append(b"spooled bytes"), 13);
        let pump = Pump::new(Direction::Output, src_r, OwnedFd::from(fifo_w), None)
            .unwrap()
            .with_spool(spool);
        {
            let p = shim.table.get_mut(key).unwrap();
            *p.state_mut() = ProcState::Running;
            let mut stdio = ProcessStdio::default();
            stdio.add(Stream::Stdout, pump);
            p.pumps = stdio;
            p.open_outputs = 1;
        }
        shim.start_pumps(key, &poller);

        // The source ends before the exit (the process closed its output): the pump
        // reports it, and the Waits are to wait for the spool.
        drop(src_w);
        shim.on_stdio(key, Stream::Stdout, &poller);
        let p = shim.table.get(key).unwrap();
        assert!(p.pumps.is_open(Stream::Stdout), "the spool holds bytes");
        assert_eq!(p.spool_waits.len(), 1);

        // The reader empties the FIFO and the process exits; the loop reaps before it
        // reads the FIFO's event: the reap's run of the pump moves the spool.
        assert!(read_all_now(&fifo_r) > 0);
        let report = shim.table.on_exits(&[ChildExit {
            pid: P1,
            status: 0,
            at: SystemTime::now(),
        }]);
        shim.queue_exits(report, &poller);
        let p = shim.table.get(key).unwrap();
        assert!(
            !p.pumps.is_open(Stream::Stdout),
            "the reap's run emptied the spool"
        );
        assert!(
            p.spool_waits.is_empty(),
            "the Waits still wait for a spool already empty: {:?}",
            p.spool_waits
        );
        assert!(p.exit_settled().is_some(), "the exit is settled");
        let mut rest = Vec::new();
        (&fifo_r).read_to_end(&mut rest).ok();
        assert_eq!(rest, b"spooled bytes");
    }
}
