//! `ctr` against the test's containerd: the command line (its socket, its namespace, no
//! deprecation warnings), each call bounded in time and reported with containerd's log when
//! it fails, and stdin written only once ctr can pass its EOF on.

use super::bounded_run::{run_bounded, Input};
use super::ContainerdEnv;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long one `ctr` call may take before the test fails.
const CTR_TIMEOUT: Duration = Duration::from_secs(30);

/// When [`ContainerdEnv::ctr_with_stdin`] writes the input (and closes stdin).
#[derive(Debug, Clone)]
pub enum StdinAfter {
    /// After a fixed pause (racy under load: see `ctr_with_stdin`).
    Delay(Duration),
    /// Once `ctr task ls` shows this task RUNNING (for `ctr run`).
    TaskRunning(String),
    /// Once `ctr task ps <id>` lists this exec (for `ctr task exec`).
    ExecRunning {
        /// The container.
        id: String,
        /// The exec id.
        exec_id: String,
    },
}

impl ContainerdEnv {
    /// A `ctr -a SOCK -n NS ARGS…` command, for callers that need to drive the process
    /// themselves (background `ctr events`, a pty). Prefer [`Self::ctr`].
    pub fn ctr_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = ctr_base(&self.ctr_bin, &self.address);
        cmd.arg("-n").arg(&self.namespace).args(args);
        cmd
    }

    /// The same command as one shell-quoted line (for `script -c`), with the same
    /// environment.
    pub fn ctr_shell_line<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut words = vec![
            self.ctr_bin.to_string_lossy().into_owned(),
            "-a".into(),
            self.address.to_string_lossy().into_owned(),
            "-n".into(),
            self.namespace.clone(),
        ];
        words.extend(
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned()),
        );
        let line = words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        format!("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS=1 {line}")
    }

    /// Runs `ctr -a SOCK -n NS ARGS…` with stdin from /dev/null; fails the test (with the
    /// output so far and containerd's log) if it takes longer than 30 s.
    pub fn ctr<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let cmd = self.ctr_command(args);
        self.finish(cmd, None, CTR_TIMEOUT)
    }

    /// [`Self::ctr`], asserting success; returns stdout.
    pub fn ctr_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.ctr(args);
        if !out.status.success() {
            panic!(
                "ctr {} failed ({}):\nstdout: {}\nstderr: {}\n--- containerd log ---\n{}",
                describe(args),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Self::ctr`] with `input` on its stdin through a pipe, written once `after` holds
    /// (polled for up to `READY_TIMEOUT`, 60 s), then the pipe is closed.
    ///
    /// Why wait: ctr 1.6 has a race with an early EOF. It copies stdin into the task's
    /// FIFO and calls CloseIO at EOF only if the task (or exec) object exists by then; an
    /// EOF that comes before `NewTask`/`Exec` returned is swallowed, so `cat` waits
    /// forever. ctr sets the closer before it calls Start, so a running task (or an exec
    /// listed by `ctr task ps`) means EOF will reach the container.
    pub fn ctr_with_stdin<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        input: &[u8],
        after: StdinAfter,
    ) -> Output {
        let cmd = self.ctr_command(args);
        let ctr_bin = self.ctr_bin.clone();
        let address = self.address.clone();
        let namespace = self.namespace.clone();
        let probe = move |args: &[&str]| -> String {
            let mut cmd = ctr_base(&ctr_bin, &address);
            cmd.arg("-n").arg(&namespace).args(args);
            run_bounded(cmd, None, Duration::from_secs(5))
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        let ready: Box<dyn FnMut() -> bool + Send> = match after {
            StdinAfter::Delay(d) => {
                let at = Instant::now() + d;
                Box::new(move || Instant::now() >= at)
            }
            StdinAfter::TaskRunning(id) => Box::new(move || {
                probe(&["task", "ls"]).lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    cols.first() == Some(&id.as_str()) && cols.get(2) == Some(&"RUNNING")
                })
            }),
            StdinAfter::ExecRunning { id, exec_id } => {
                Box::new(move || ps_lists_exec(&probe(&["task", "ps", &id]), &exec_id))
            }
        };
        self.finish(
            cmd,
            Some(Input {
                data: input.to_vec(),
                ready,
            }),
            CTR_TIMEOUT,
        )
    }

    /// Runs any command with the ctr timeout and failure report (e.g. `script -c`).
    pub fn run_with_timeout(&self, cmd: Command) -> Output {
        self.finish(cmd, None, CTR_TIMEOUT)
    }

    /// [`Self::run_with_timeout`] with `input` written to the command's stdin at once, then
    /// the pipe closed.
    pub fn run_with_input(&self, cmd: Command, input: &[u8]) -> Output {
        let input = Input {
            data: input.to_vec(),
            ready: Box::new(|| true),
        };
        self.finish(cmd, Some(input), CTR_TIMEOUT)
    }

    /// Runs `cmd` ([`run_bounded`]), failing the test with what it printed so far and
    /// containerd's log if it is not done within `timeout`.
    fn finish(&self, cmd: Command, input: Option<Input>, timeout: Duration) -> Output {
        let what = format!("{cmd:?}");
        match run_bounded(cmd, input, timeout) {
            Ok(out) => out,
            Err(partial) => panic!(
                "{what} did not finish within {timeout:?} (killed)\nstdout so far: {}\n\
                 stderr so far: {}\n--- containerd log ---\n{}",
                String::from_utf8_lossy(&partial.stdout),
                String::from_utf8_lossy(&partial.stderr),
                self.log_tail()
            ),
        }
    }

    /// Panics with everything useful (output, containerd's log) unless `out` exited with
    /// `code`.
    pub fn assert_exit(&self, out: &Output, code: i32, what: &str) {
        assert_eq!(
            out.status.code(),
            Some(code),
            "{what}: exit status {}\nstdout: {}\nstderr: {}\n--- containerd log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
    }
}

/// `ctr -a ADDRESS`, quiet about deprecations: from 2.2 on, ctr prints containerd's
/// deprecation warnings (cgroup v1 on this host) on its stderr, which tests compare.
pub(super) fn ctr_base(ctr: &Path, address: &Path) -> Command {
    let mut cmd = Command::new(ctr);
    cmd.env("CONTAINERD_SUPPRESS_DEPRECATION_WARNINGS", "1")
        .arg("-a")
        .arg(address);
    cmd
}

/// Whether the output of `ctr task ps` has a row for exec `exec_id`. The INFO column is the
/// shim's `containerd.runc.v1.ProcessDetails`, which ctr 1.x prints as
/// `&ProcessDetails{ExecID:e1,}` and ctr 2.x in protobuf text format, `exec_id:"e1"` (with
/// spacing that the Go library varies on purpose).
pub fn ps_lists_exec(ps: &str, exec_id: &str) -> bool {
    let v1 = format!("ExecID:{exec_id},");
    let v2 = format!("exec_id:\"{exec_id}\"");
    ps.lines().skip(1).any(|line| {
        let packed: String = line.split_whitespace().skip(1).collect();
        packed.contains(&v1) || packed.contains(&v2)
    })
}

/// `word` as one shell word: as it is when that is safe, else single-quoted.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `args` as a shell line, for failure messages.
fn describe<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| shell_quote(&a.as_ref().to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_rows_of_execs_in_both_ctr_formats() {
        let v1 = "PID     INFO\n8928    -\n9068    &ProcessDetails{ExecID:e2,}\n";
        let v2 = "PID     INFO\n8928    -\n9068    exec_id:\"e2\"\n9070    exec_id:  \"e22\"\n";
        assert!(ps_lists_exec(v1, "e2"));
        assert!(!ps_lists_exec(v1, "e"));
        assert!(ps_lists_exec(v2, "e2"));
        assert!(ps_lists_exec(v2, "e22"));
        assert!(!ps_lists_exec(v2, "e3"));
        assert!(!ps_lists_exec("PID INFO\n", "e2"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/bin/sh"), "/bin/sh");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
