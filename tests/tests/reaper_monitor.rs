//! The subreaper problem: a supervisor that reaps with `waitpid(-1)` must not steal the
//! exit status of a runc invocation. This binary holds one test only, because it turns
//! the whole test process into a reaper of all its children.

use runc_wrapper::{CreateOpts, ProcessMonitor, Runc, RuntimeChild, RuntimeCommand};
use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tether_tests::RuncEnv;

/// A reaper that collects every child exit with `waitpid(-1)`, like a shim does, and a
/// monitor that takes runc's status from it instead of calling waitpid on the pid.
#[derive(Debug, Default)]
struct Reaper {
    exits: Mutex<HashMap<i32, i32>>,
    changed: Condvar,
    reaped_total: Mutex<usize>,
}

impl Reaper {
    fn run(self: Arc<Self>) {
        use nix::sys::wait::{waitpid, WaitStatus};
        loop {
            match waitpid(None, None) {
                Ok(WaitStatus::Exited(pid, code)) => self.record(pid.as_raw(), code << 8),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.record(pid.as_raw(), sig as i32),
                Ok(_) => {}
                Err(nix::errno::Errno::ECHILD) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => {}
            }
        }
    }

    fn record(&self, pid: i32, raw: i32) {
        self.exits.lock().unwrap().insert(pid, raw);
        *self.reaped_total.lock().unwrap() += 1;
        self.changed.notify_all();
    }
}

#[derive(Debug)]
struct ReaperMonitor(Arc<Reaper>);

impl ProcessMonitor for ReaperMonitor {
    fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
        cmd.spawn()
    }
    fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
        let pid = i32::try_from(child.id()).unwrap();
        let mut exits = self.0.exits.lock().unwrap();
        loop {
            if let Some(raw) = exits.remove(&pid) {
                return Ok(ExitStatus::from_raw(raw));
            }
            exits = self.0.changed.wait(exits).unwrap();
        }
    }
}

#[test]
fn a_reaping_supervisor_still_gets_runc_exit_statuses() {
    let env = RuncEnv::new();
    let id = env.id("reap");
    // Built before the reaper starts: building runs `runc spec` through std's own wait.
    let bundle = env.bundle("b", &["sleep", "1000"]);
    let reaper = Arc::new(Reaper::default());
    let r = reaper.clone();
    std::thread::spawn(move || r.run());

    let runc = Runc::builder()
        .binary(env.runc_binary())
        .root(env.root())
        .log(env.log())
        .monitor(Arc::new(ReaperMonitor(reaper.clone())))
        .build();
    runc.create(&id, bundle.path(), CreateOpts::default())
        .expect("create succeeds although the reaper collects runc's exit");
    runc.start(&id).expect("start");
    assert!(runc.state(&id).is_ok());
    // A failing runc call must still surface as a failure, with runc's message.
    let err = runc
        .state("no-such-container")
        .expect_err("unknown container");
    assert!(err.is_not_found(), "{err}");
    runc.delete(&id, true).expect("delete --force");
    assert!(
        *reaper.reaped_total.lock().unwrap() >= 4,
        "the reaper, not the wrapper, collected the runc processes"
    );
}
