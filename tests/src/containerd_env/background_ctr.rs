//! A `ctr` kept running beside the test (`ctr events`, `ctr task attach`, an exec killed
//! from elsewhere), its output collected as it comes and looked at while it runs.

use super::bounded_run::collect_stream;
use super::{ContainerdEnv, READY_TIMEOUT};
use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

impl ContainerdEnv {
    /// Starts `ctr -a SOCK -n NS ARGS…` in the background (stdin /dev/null), capturing
    /// stdout and stderr; killed when the handle is dropped. For `ctr task attach`, a
    /// `ctr task exec` to kill from elsewhere, and the like.
    pub fn spawn_ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> BackgroundCtr {
        let mut cmd = self.ctr_command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("{cmd:?}");
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let (stdout, out_reader) = collect_stream(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let (stderr, err_reader) = collect_stream(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        BackgroundCtr {
            child,
            stdout,
            stderr,
            readers: [out_reader, err_reader].into_iter().flatten().collect(),
        }
    }

    /// Starts `ctr events` in the background and returns once it is subscribed (ctr
    /// subscribes asynchronously and says nothing when it is ready, so this labels the
    /// namespace, which makes containerd publish `/namespaces/update`, until the event
    /// shows). Every event of this containerd shows up in [`BackgroundCtr::stdout`].
    pub fn events(&self) -> BackgroundCtr {
        let watcher = self.spawn_ctr(&["events"]);
        let deadline = Instant::now() + READY_TIMEOUT;
        for n in 0.. {
            let label = format!("tether-test-probe={n}");
            self.ctr_ok(&["namespaces", "label", &self.namespace, &label]);
            if watcher
                .wait_for_line(
                    &["/namespaces/update", "tether-test-probe"],
                    Duration::from_millis(300),
                )
                .is_some()
            {
                break;
            }
            if Instant::now() >= deadline {
                panic!(
                    "ctr events did not report a namespace update within {READY_TIMEOUT:?}\n\
                     stdout: {}\nstderr: {}",
                    watcher.stdout(),
                    watcher.stderr()
                );
            }
        }
        watcher
    }
}

/// A `ctr` running in the background ([`ContainerdEnv::spawn_ctr`],
/// [`ContainerdEnv::events`]); killed when dropped.
pub struct BackgroundCtr {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl BackgroundCtr {
    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Polls stdout until a line contains every one of `needles`; returns that line, or
    /// `None` after `timeout`.
    pub fn wait_for_line(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .stdout()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return Some(line.to_string());
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until `pred(stdout, stderr)` holds; false after `timeout`.
    pub fn wait_output(&self, pred: impl Fn(&[u8], &[u8]) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.stdout.lock().unwrap_or_else(|p| p.into_inner());
                let err = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
                if pred(&out, &err) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for ctr to exit, killing it after `timeout`: its exit code (`None` if killed
    /// or signalled) and everything it printed.
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let deadline = Instant::now() + timeout;
        let code = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status.code(),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break None;
                }
            }
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        (code, self.stdout(), self.stderr())
    }
}

impl Drop for BackgroundCtr {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}
