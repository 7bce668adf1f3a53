//! The process monitor every runc goes through, and deadlines: a runc past its deadline is
//! killed with its children, a passed one runs nothing, a `create` killed at it is deleted,
//! and the monitor's deadline applies unless the [`Runc`] has its own.

use super::fake_runc::{Fake, RetryMonitor};
use crate::spawn::{RuntimeChild, RuntimeCommand};
use crate::{CreateOpts, Error, ExecOpts, ProcessMonitor, Runc};
use std::fs;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn custom_monitor_is_used() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    #[derive(Debug, Default)]
    struct Counting {
        started: AtomicUsize,
        waited: AtomicUsize,
    }
    impl ProcessMonitor for Counting {
        fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
            self.started.fetch_add(1, Ordering::SeqCst);
            RetryMonitor.start(cmd)
        }
        fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
            self.waited.fetch_add(1, Ordering::SeqCst);
            child.wait()
        }
    }
    let f = Fake::new("echo '[1]'", false);
    let m = Arc::new(Counting::default());
    let r = Runc::builder()
        .binary(f.runc.binary())
        .monitor(m.clone())
        .build();
    assert_eq!(r.ps("c1").unwrap(), vec![1]);
    r.create("c1", f.dir.path(), CreateOpts::default()).unwrap();
    r.exec(
        "c1",
        b"{}",
        ExecOpts {
            process_dir: Some(f.dir.path().to_owned()),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(m.started.load(Ordering::SeqCst), 3);
    assert_eq!(m.waited.load(Ordering::SeqCst), 3);
}

/// A fake runc that, for `verb`, writes its pid and its `sleep` child's to `$D/pids` and hangs;
/// every verb it was called with goes to `$D/verbs`.
fn hanging(verb: &str) -> Fake {
    Fake::new(
        &format!(
            "echo \"$1\" >> \"$D/verbs\"\n[ \"$1\" = {verb} ] && sh -c 'echo $PPID $$ >> \"$1\"; exec sleep 30' - \"$D/pids\"\nexit 0"
        ),
        false,
    )
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The pids a [`hanging`] fake wrote: its own and its `sleep`'s.
fn pids_of(f: &Fake) -> Vec<i32> {
    fs::read_to_string(f.path("pids"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn a_runc_past_its_deadline_is_killed_with_its_children() {
    for verb in ["kill", "pause", "update"] {
        let f = hanging(verb);
        let runc = f
            .runc
            .with_deadline(Instant::now() + Duration::from_millis(300));
        let started = Instant::now();
        let e = match verb {
            "kill" => runc.kill("c1", 9, false),
            "pause" => runc.pause("c1"),
            _ => runc.update("c1", b"{}"),
        }
        .unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(&e, Error::DeadlineExceeded { command, ran: Some(_), .. } if *command == verb),
            "{e:?}"
        );
        assert_eq!(e.kind(), crate::ErrorKind::DeadlineExceeded);
        assert!(took < Duration::from_secs(5), "{verb}: {took:?}");
        let pids = pids_of(&f);
        assert_eq!(pids.len(), 2, "{verb}: the fake ran its sleep");
        // The wrapper is reaped; its sleep child (the same process group) was killed.
        let until = Instant::now() + Duration::from_secs(2);
        while pids.iter().any(|p| alive(*p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!pids.iter().any(|p| alive(*p)), "{verb}: {pids:?} left");
    }
}

#[test]
fn a_passed_deadline_runs_nothing_and_none_waits() {
    let f = hanging("never");
    let past = f.runc.with_deadline(Instant::now());
    let e = past.pause("c1").unwrap_err();
    assert!(
        matches!(
            &e,
            Error::DeadlineExceeded {
                command: "pause",
                ran: None,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!f.path("verbs").exists(), "runc was started");
    // No deadline: as before; a far one changes nothing for a runc that finishes.
    f.runc.pause("c1").unwrap();
    f.runc
        .with_deadline(Instant::now() + Duration::from_secs(60))
        .resume("c1")
        .unwrap();
    assert_eq!(
        fs::read_to_string(f.path("verbs")).unwrap(),
        "pause\nresume\n"
    );
}

#[test]
fn a_create_killed_at_its_deadline_is_deleted() {
    let f = hanging("create");
    let e = f
        .runc
        .with_deadline(Instant::now() + Duration::from_millis(300))
        .create("c1", f.dir.path(), CreateOpts::default())
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::DeadlineExceeded {
                command: "create",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        fs::read_to_string(f.path("verbs")).unwrap(),
        "create\ndelete\n",
        "delete --force follows the killed create"
    );
}

#[test]
fn the_monitors_deadline_applies_unless_the_runc_has_its_own() {
    #[derive(Debug)]
    struct Due(Instant);
    impl ProcessMonitor for Due {
        fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
            RetryMonitor.start(cmd)
        }
        fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
            child.wait()
        }
        fn deadline(&self) -> Option<Instant> {
            Some(self.0)
        }
    }
    let f = hanging("never");
    let passed = Instant::now();
    let runc = Runc::builder()
        .binary(f.runc.binary())
        .monitor(Arc::new(Due(passed)))
        .build();
    assert_eq!(runc.deadline(), Some(passed));
    assert!(matches!(
        runc.pause("c1").unwrap_err(),
        Error::DeadlineExceeded { ran: None, .. }
    ));
    let later = Instant::now() + Duration::from_secs(60);
    assert_eq!(runc.with_deadline(later).deadline(), Some(later));
    runc.with_deadline(later).pause("c1").unwrap();
}
