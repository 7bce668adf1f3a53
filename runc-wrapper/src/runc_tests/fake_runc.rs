//! Fake runc shell scripts for the tests that run a runtime: [`Fake`] writes one and a
//! [`Runc`] driving it, [`RetryMonitor`] spawns it despite ETXTBSY, and [`NOPE_LINE`] is the
//! log line a runc writes when the process to run is missing.

use crate::spawn::{RuntimeChild, RuntimeCommand};
use crate::{ProcessMonitor, Runc};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

/// Retries spawning on ETXTBSY: a script just written by one test thread may still be open for
/// writing in a child forked concurrently by another.
#[derive(Debug)]
pub(super) struct RetryMonitor;

impl ProcessMonitor for RetryMonitor {
    fn start(&self, cmd: &RuntimeCommand) -> std::io::Result<RuntimeChild> {
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    }

    fn wait(&self, child: &mut RuntimeChild) -> std::io::Result<ExitStatus> {
        child.wait()
    }
}

/// A fake runc script in a temp dir of its own, and a [`Runc`] that runs it.
pub(super) struct Fake {
    pub(super) dir: tempfile::TempDir,
    pub(super) runc: Runc,
}

impl Fake {
    /// A fake runc running `body` (sh), with `$LOG` set to the value after `--log` and `$D` to the
    /// temp dir, and the positional args after the global options left in `$@`.
    pub(super) fn new(body: &str, with_log: bool) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("runc");
        let text = format!(
            "#!/bin/sh\nD='{d}'\nLOG=\nwhile [ $# -gt 0 ]; do case \"$1\" in\n  --log) LOG=\"$2\"; shift 2;;\n  --log-format|--root|--criu) shift 2;;\n  --debug|--systemd-cgroup) shift;;\n  *) break;;\nesac; done\n{body}\n",
            d = dir.path().display()
        );
        fs::write(&script, text).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let mut b = Runc::builder()
            .binary(&script)
            .root(dir.path().join("root"))
            .monitor(Arc::new(RetryMonitor));
        if with_log {
            b = b.log(dir.path().join("log.json"));
        }
        Fake {
            runc: b.build(),
            dir,
        }
    }

    /// `name` in the fake's temp dir.
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A runc's JSON log line for a process it cannot find.
pub(super) const NOPE_LINE: &str = r#"{"level":"error","msg":"exec: \"nope\": executable file not found in $PATH","time":"2024-01-01T00:00:00Z"}"#;
/// The message of [`NOPE_LINE`].
pub(super) const NOPE: &str = "exec: \"nope\": executable file not found in $PATH";
