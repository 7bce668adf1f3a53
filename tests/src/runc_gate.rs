//! A rendezvous between a test and the runc a shim runs: [`RuncGate`] writes a wrapper
//! around the real runc (to be named as the task's `BinaryName`) that, for the verbs it is
//! given, stops at a gate and says so, and goes on only when the test opens the gate.
//!
//! A test then orders its calls by what it observes (the gate reached: runc is running
//! that verb right now) instead of by a fixed sleep that hopes runc has got there, and
//! holds runc's answer for exactly as long as it needs to look at the shim meanwhile.
//! Dropping the gate opens every gate, so a failing test leaves no wrapper waiting (the
//! wrappers live in the shim's directory, whose cleanup kills what still runs from it).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the wrapper stops for a gated verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateAt {
    /// After the real runc returned: the work is done (a signal sent, a container
    /// created), the answer held.
    AfterWork,
    /// Before the real runc runs: nothing has happened yet.
    BeforeWork,
}

/// A runc wrapper with a gate per verb; see the module documentation.
#[derive(Debug)]
pub struct RuncGate {
    path: PathBuf,
    dir: PathBuf,
    verbs: Vec<String>,
}

/// How long a test waits for runc to reach a gate before it fails: far beyond any
/// scheduling delay of a loaded machine, short of a hang.
pub const REACH_TIMEOUT: Duration = Duration::from_secs(60);

impl RuncGate {
    /// Writes the wrapper into `dir` (the shim's directory): for each of `verbs` it stops
    /// at `at`, writes `gate.<verb>.reached` (its pid) and waits for `gate.<verb>.open`.
    /// Other verbs, and a verb whose gate is open, run straight through.
    pub fn write(dir: &Path, verbs: &[&str], at: GateAt) -> Self {
        let real = crate::require::tool("runc", "runc");
        let path = dir.join("gated-runc");
        let gates = dir.join("gates");
        fs::create_dir_all(&gates).expect("make the gates directory");
        // runc's global options come first (`--root X --log Y kill ID 9`); the first
        // argument that is one of the verbs decides. Test paths never equal a verb. The
        // mark is renamed into place, so a test never reads it half-written. The wait is a
        // loop of foreground `sleep`s (no background job: before issue 23 the shim's runc
        // children inherited its blocked SIGCHLD, with which `wait` never returned).
        let gate_step = format!(
            "if [ -n \"$verb\" ] && [ ! -e {gates}/$verb.open ]; then\n\
             \x20 echo $$ >{gates}/$verb.reached.tmp && mv {gates}/$verb.reached.tmp {gates}/$verb.reached\n\
             \x20 while [ ! -e {gates}/$verb.open ]; do sleep 0.01; done\n\
             fi\n",
            gates = gates.display(),
        );
        let (before, after) = match at {
            GateAt::BeforeWork => (gate_step.as_str(), ""),
            GateAt::AfterWork => ("", gate_step.as_str()),
        };
        let what = match at {
            GateAt::BeforeWork => "with a gate before it runs",
            GateAt::AfterWork => "with a gate after it returns",
        };
        write_wrapper(&path, &real, what, verbs, before, after);
        RuncGate {
            path,
            dir: gates,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    /// The wrapper's path, for `BinaryName`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until a runc running `verb` has reached its gate; returns the wrapper's pid.
    /// Panics after [`REACH_TIMEOUT`], naming the verb.
    pub fn wait_reached(&self, verb: &str) -> i32 {
        let mark = self.dir.join(format!("{verb}.reached"));
        let deadline = Instant::now() + REACH_TIMEOUT;
        loop {
            if let Some(pid) = fs::read_to_string(&mark)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "runc {verb} did not reach its gate in {REACH_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether a runc running `verb` has reached its gate (now or earlier).
    pub fn reached(&self, verb: &str) -> bool {
        self.dir.join(format!("{verb}.reached")).exists()
    }

    /// Opens the gate of `verb`: the runc waiting there goes on, later ones run through.
    pub fn open(&self, verb: &str) {
        fs::write(self.dir.join(format!("{verb}.open")), b"")
            .unwrap_or_else(|e| panic!("open the gate of runc {verb}: {e}"));
    }
}

impl Drop for RuncGate {
    fn drop(&mut self) {
        for verb in &self.verbs {
            let _ = fs::write(self.dir.join(format!("{verb}.open")), b"");
        }
    }
}

/// Writes an executable shell wrapper at `path` around the `real` runc: `$verb` is the
/// first argument that is one of `verbs` (runc's global options come first, `--root X
/// --log Y kill ID 9`; test paths never equal a verb), else empty; `before` runs before
/// the real runc, `after` once it returned, and the wrapper exits with runc's status.
/// `what` says in a comment what the wrapper does. The one template of the test bed's
/// runc wrappers ([`RuncGate`], `direct_shim::SlowRunc`).
pub(crate) fn write_wrapper(
    path: &Path,
    real: &Path,
    what: &str,
    verbs: &[&str],
    before: &str,
    after: &str,
) {
    let script = format!(
        "#!/bin/sh\n\
         # The real runc, {what} for: {verbs}.\n\
         verb=\n\
         for a in \"$@\"; do\n\
         \x20 case \"$a\" in {pattern}) verb=$a; break ;; esac\n\
         done\n\
         {before}\
         {real} \"$@\"\n\
         rc=$?\n\
         {after}\
         exit $rc\n",
        verbs = verbs.join(" "),
        pattern = verbs.join("|"),
        real = real.display(),
    );
    fs::write(path, script).expect("write the runc wrapper");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .expect("make the runc wrapper executable");
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes; whether it
/// held. For waiting on something a test observes (a pid gone, a file there), never to
/// decide an order.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
