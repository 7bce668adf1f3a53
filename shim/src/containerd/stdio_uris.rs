//! A process's stdio as the containerd face names it (URIs) and opens it: the manager's
//! ends (FIFOs, a file, a logging binary); the process is connected to pumps by
//! [`wiring`], which the standalone face shares.
//!
//! Guarantees:
//! - the shim holds a read end of every output FIFO, so a container never gets SIGPIPE or
//!   loses output while containerd (or a manager) is away: output waits in the pipes and
//!   FIFO (and the container blocks once they are full, as with a slow reader);
//! - the shim holds a write end of the stdin FIFO until CloseIO, so the process sees EOF
//!   on stdin only when the manager says so, not when a client merely reconnects.
//!
//! A `binary://` or `binary-v2://` stdout (see [`logger_process`]) is the exception: the
//! logger reads the container's pipes itself, so there are no pumps, and the shim keeps
//! nothing of it. With a terminal the logger's stdout pipe is the sink of the pty master's
//! pump instead of a FIFO (its stderr pipe gets nothing), as containerd's runc shim does:
//! the pump's end is what orders the exit after the last byte of output, as for a FIFO.

use crate::containerd::logger_process::{self, LoggerSpec, Streams};
use crate::process_core::process_stdio::ProcessStdio;
use crate::process_core::spool::SpoolConfig;
use crate::process_core::wiring::{self, chown, PipeOptions, Sink};
use runc_wrapper::ProcessIo;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Where a process's stdio goes, as containerd (or a manager) names it. Empty = nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The output streams' spool (none: the process blocks while the FIFO is full).
    pub spool: Option<SpoolConfig>,
}

/// A parsed output destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Null,
    Fifo(PathBuf),
    File(PathBuf),
    /// A logging binary that reads the container's stdout and stderr pipes itself.
    Binary(LoggerSpec),
}

/// Parses containerd's stdio URIs: a plain path or `fifo://` is a FIFO, `file://` a file
/// to append to, `binary://` and `binary-v2://` a logging binary ([`logger_process::parse`]).
pub fn parse_target(uri: &str) -> io::Result<Target> {
    if uri.is_empty() {
        return Ok(Target::Null);
    }
    if let Some(rest) = uri.strip_prefix("file://") {
        return Ok(Target::File(PathBuf::from(strip_query(rest))));
    }
    if let Some(rest) = uri.strip_prefix("fifo://") {
        return Ok(Target::Fifo(PathBuf::from(rest)));
    }
    if logger_process::is_logger_uri(uri) {
        return logger_process::parse(uri).map(Target::Binary);
    }
    if let Some((scheme, _)) = uri.split_once("://") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("stdio {uri:?}: unknown scheme {scheme:?}"),
        ));
    }
    Ok(Target::Fifo(PathBuf::from(uri)))
}

fn strip_query(s: &str) -> &str {
    s.split('?').next().unwrap_or(s)
}

/// What [`prepare`] hands back: the fds runc passes to the process, pumps to start once
/// runc has run, and the handles the supervisor keeps for the life of the process.
#[derive(Debug, Default)]
pub struct Prepared {
    /// runc's stdio (= the process's, without a terminal).
    pub io: ProcessIo,
    /// The pumps, handed to the loop once runc has run; they run until their source
    /// reaches EOF.
    pub stdio: ProcessStdio,
    /// A write end of the stdin FIFO; dropping it is CloseIO.
    pub stdin_closer: Option<File>,
    /// With a terminal: the FIFO ends to connect to the pty master once it arrives
    /// (the launch receives it: `supervisor::launch`).
    pending_tty: Option<PendingTty>,
    /// With a `binary://` logger: its pid (informational; nobody waits for it).
    logger_pid: Option<i32>,
}

#[derive(Debug, Default)]
struct PendingTty {
    stdin: Option<File>,
    stdout: Option<Sink>,
}

/// The environment containerd gives a `binary://` logger: pass it to [`prepare_with_env`].
// Unused until the containerd face passes its ids (containerd/task/, see prepare_with_env).
#[allow(dead_code)]
pub fn logger_env(container_id: &str, namespace: &str) -> Vec<(String, String)> {
    vec![
        ("CONTAINER_ID".to_string(), container_id.to_string()),
        ("CONTAINER_NAMESPACE".to_string(), namespace.to_string()),
    ]
}

/// Opens the manager's side of a process's stdio and makes the process's side.
///
/// `owner` (IoUid/IoGid) owns the process's pipe ends, so a process running as that user
/// can reopen them through /proc/self/fd.
///
/// A `binary://` logger started from here gets an empty environment (no `CONTAINER_ID`,
/// `CONTAINER_NAMESPACE`): use [`prepare_with_env`] with [`logger_env`] to give it those.
// Kept for callers without ids: unused once the containerd face passes its ids.
#[allow(dead_code)]
pub fn prepare(cfg: &StdioConfig, owner: Option<(u32, u32)>) -> io::Result<Prepared> {
    prepare_with_env(cfg, owner, &[])
}

/// [`prepare`], with `logger_env` as the environment of a `binary://` logger.
///
/// With a `binary://` stdout (stderr must then be the same URI or empty) the logger is
/// started and ready before this returns. Without a terminal the process's stdout and
/// stderr are pipes it reads, there are no pumps, and a stdin is refused. With a terminal
/// the pty master's pump writes into the logger's stdout pipe, and a stdin FIFO feeds the
/// master as usual.
pub fn prepare_with_env(
    cfg: &StdioConfig,
    owner: Option<(u32, u32)>,
    logger_env: &[(String, String)],
) -> io::Result<Prepared> {
    let logger = binary_logger(cfg)?;
    if let (Some(spec), false) = (&logger, cfg.terminal) {
        let started = logger_process::start(spec, logger_env, Streams::Pipes)?;
        let mut out = Prepared::default();
        for end in std::iter::once(&started.stdout).chain(&started.stderr) {
            chown(end, owner)?;
        }
        out.io.stdout = Some(started.stdout);
        out.io.stderr = started.stderr;
        out.logger_pid = Some(started.pid);
        return Ok(out);
    }
    let mut out = Prepared::default();
    let stdin_fifo = match cfg.stdin.as_str() {
        "" => None,
        p => Some(open_stdin_fifo(p)?),
    };
    if cfg.terminal {
        let mut tty = PendingTty::default();
        if let Some((reader, closer)) = stdin_fifo {
            tty.stdin = Some(reader);
            out.stdin_closer = Some(closer);
        }
        tty.stdout = match &logger {
            // The pump owns the only write end: the logger reads EOF once the pty is done.
            Some(spec) => {
                let started = logger_process::start(spec, logger_env, Streams::Terminal)?;
                out.logger_pid = Some(started.pid);
                Some(Sink::new(started.stdout, None))
            }
            None => spooled(output_sink(&cfg.stdout)?, cfg, "stdout")?,
        };
        out.pending_tty = Some(tty);
        return Ok(out);
    }
    let stdin = stdin_fifo.map(|(reader, closer)| {
        out.stdin_closer = Some(closer);
        OwnedFd::from(reader)
    });
    let stdout = spooled(output_sink(&cfg.stdout)?, cfg, "stdout")?;
    let stderr = spooled(output_sink(&cfg.stderr)?, cfg, "stderr")?;
    let opts = PipeOptions { owner, size: None };
    (out.io, out.stdio) = wiring::pipes(stdin, stdout, stderr, opts)?;
    Ok(out)
}

/// The logger a `binary://` stdout names, after checking the rest of `cfg` fits with it.
fn binary_logger(cfg: &StdioConfig) -> io::Result<Option<LoggerSpec>> {
    let is_binary = logger_process::is_logger_uri;
    if !is_binary(&cfg.stdout) {
        if is_binary(&cfg.stderr) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "stdio: a binary:// stderr ({:?}) needs the same URI as stdout",
                    cfg.stderr
                ),
            ));
        }
        return Ok(None);
    }
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    // Without a terminal the logger holds the process's output pipes and nothing pumps
    // stdin (containerd's runc shim leaves it unconnected); with one the master is pumped
    // both ways.
    if !cfg.stdin.is_empty() && !cfg.terminal {
        return refuse(format!(
            "stdio: stdin ({:?}) cannot be used with a binary:// logger without a terminal",
            cfg.stdin
        ));
    }
    if !cfg.stderr.is_empty() && cfg.stderr != cfg.stdout {
        return refuse(format!(
            "stdio: stderr ({:?}) must be empty or the same binary:// URI as stdout ({:?}): \
             one logger reads both",
            cfg.stderr, cfg.stdout
        ));
    }
    logger_process::parse(&cfg.stdout).map(Some)
}

impl Prepared {
    /// The pid of the `binary://` logger started for this process, if any (for a caller
    /// that wants to signal it, as containerd SIGTERMs its logger when the IO closes).
    #[allow(dead_code)]
    pub fn logger_pid(&self) -> Option<i32> {
        self.logger_pid
    }

    /// Whether the process gets a terminal (its pumps wait for the pty master).
    pub fn has_terminal(&self) -> bool {
        self.pending_tty.is_some()
    }

    /// How many pumps carry output (what a delete waits for).
    pub fn output_pumps(&self) -> usize {
        self.stdio.open_outputs()
    }

    /// With a terminal: adds the pumps between the pty `master` runc handed over (see
    /// `supervisor::launch`) and the FIFOs. Returns a handle on the master for resizing.
    pub fn attach_terminal(&mut self, master: OwnedFd) -> io::Result<File> {
        let tty = self
            .pending_tty
            .take()
            .ok_or_else(|| io::Error::other("a pty master for a process without a terminal"))?;
        self.stdio = wiring::terminal(&master, tty.stdin.map(OwnedFd::from), tty.stdout)?;
        Ok(File::from(master))
    }
}

/// Opens a stdin FIFO: a non-blocking read end for the pump and a write end the
/// supervisor holds until CloseIO.
fn open_stdin_fifo(path: &str) -> io::Result<(File, File)> {
    fifo::KeepAliveReader::open(path.as_ref())
        .map(fifo::KeepAliveReader::into_parts)
        .map_err(io::Error::other)
}

/// `sink` with the spool `cfg` asks for: a FIFO's only (a file never makes the process
/// wait).
fn spooled(sink: Option<Sink>, cfg: &StdioConfig, stream: &str) -> io::Result<Option<Sink>> {
    match sink {
        Some(sink) if sink.keepalive.is_some() => {
            let label = cfg
                .spool
                .as_ref()
                .map(|c| format!("{} {stream}", c.name))
                .unwrap_or_default();
            sink.spooled(cfg.spool.as_ref(), &label).map(Some)
        }
        other => Ok(other),
    }
}

/// The manager-side sink of an output stream and, for a FIFO, the keep-alive read end.
fn output_sink(uri: &str) -> io::Result<Option<Sink>> {
    match parse_target(uri)? {
        Target::Null => Ok(None),
        Target::Fifo(path) => {
            let (writer, keepalive) = fifo::KeepAliveWriter::open(&path)
                .map_err(io::Error::other)?
                .into_parts();
            Ok(Some(Sink::new(writer.into(), Some(keepalive))))
        }
        Target::File(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            Ok(Some(Sink::new(file.into(), None)))
        }
        Target::Binary(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("stdio {uri:?}: a binary:// logger is only possible on stdout (and the same on stderr)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stdio_uris() {
        assert_eq!(parse_target("").unwrap(), Target::Null);
        assert_eq!(
            parse_target("/run/x/stdout").unwrap(),
            Target::Fifo("/run/x/stdout".into())
        );
        assert_eq!(
            parse_target("file:///var/log/c.log?x=1").unwrap(),
            Target::File("/var/log/c.log".into())
        );
        assert_eq!(
            parse_target("binary:///usr/bin/logger?b=2&a=1").unwrap(),
            Target::Binary(LoggerSpec {
                path: "/usr/bin/logger".into(),
                args: vec!["a".into(), "1".into(), "b".into(), "2".into()],
                env: Vec::new(),
                strict_ready: false,
            })
        );
        assert_eq!(
            parse_target("binary-v2:///usr/bin/logger?a=1").unwrap(),
            Target::Binary(LoggerSpec {
                path: "/usr/bin/logger".into(),
                args: vec!["a".into(), "1".into()],
                env: Vec::new(),
                strict_ready: true,
            })
        );
        assert!(parse_target("binary://host/logger")
            .unwrap_err()
            .to_string()
            .contains("binary:///"));
        assert!(parse_target("ftp://x").is_err());
    }

    fn binary_cfg(stdout: &str, stderr: &str) -> StdioConfig {
        StdioConfig {
            stdout: stdout.into(),
            stderr: stderr.into(),
            ..Default::default()
        }
    }

    #[test]
    fn binary_logging_refuses_what_it_cannot_serve() {
        let logger = "binary:///bin/true";
        let cases = [
            (
                StdioConfig {
                    stdin: "/run/x/stdin".into(),
                    ..binary_cfg(logger, logger)
                },
                "stdin",
            ),
            (binary_cfg(logger, "/run/x/stderr"), "same binary:// URI"),
            (
                binary_cfg(logger, "binary:///bin/false"),
                "same binary:// URI",
            ),
            (binary_cfg("/run/x/stdout", logger), "same URI as stdout"),
            (binary_cfg("", logger), "same URI as stdout"),
        ];
        for (cfg, why) in cases {
            let e = prepare(&cfg, None).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{cfg:?}");
            assert!(e.to_string().contains(why), "{cfg:?}: {e}");
        }
    }

    /// The way runc uses `Prepared::io`: a process with those as its stdout and stderr.
    fn run_with(prepared: &mut Prepared, script: &str) {
        let io = std::mem::take(&mut prepared.io);
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", script])
            .stdin(std::process::Stdio::null())
            .stdout(io.stdout.unwrap())
            .stderr(io.stderr.unwrap());
        assert!(cmd.status().unwrap().success());
    }

    #[test]
    fn a_binary_logger_gets_stdout_and_stderr_without_pumps() {
        let dir = tempfile::tempdir().unwrap();
        use crate::containerd::logger_process::tests::{sh_logger, COPYING_LOGGER};
        let uri = sh_logger(COPYING_LOGGER, dir.path());
        for stderr in [uri.clone(), String::new()] {
            for f in ["out", "err"] {
                let _ = std::fs::remove_file(dir.path().join(f));
            }
            let mut prepared = prepare_with_env(
                &binary_cfg(&uri, &stderr),
                None,
                &logger_env("ctr-1", "default"),
            )
            .unwrap();
            assert!(prepared.stdio.is_empty() && prepared.stdin_closer.is_none());
            assert_eq!(prepared.output_pumps(), 0);
            let pid = prepared.logger_pid().expect("a logger pid");
            run_with(&mut prepared, "echo hello; echo err >&2; echo again");
            drop(prepared);
            // The test has no reaper: collect the logger here (the shim never does).
            let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
            assert!(
                matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
                "{status:?}"
            );
            let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
            assert_eq!(read("out"), "hello\nagain\n");
            assert_eq!(read("err"), "err\n");
            let env = read("env");
            assert!(env.lines().any(|l| l == "CONTAINER_ID=ctr-1"), "{env}");
            assert!(
                env.lines().any(|l| l == "CONTAINER_NAMESPACE=default"),
                "{env}"
            );
        }
    }

    #[test]
    fn a_terminal_with_a_binary_logger_pumps_the_master_into_its_stdout_pipe() {
        use crate::containerd::logger_process::tests::{sh_logger, COPYING_LOGGER};
        use crate::process_core::epoll::Poller;
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let uri = sh_logger(COPYING_LOGGER, dir.path());
        let stdin_path = dir.path().join("stdin");
        nix::unistd::mkfifo(&stdin_path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let cfg = StdioConfig {
            stdin: stdin_path.to_string_lossy().into_owned(),
            terminal: true,
            ..binary_cfg(&uri, &uri)
        };
        let mut prepared = prepare_with_env(&cfg, None, &logger_env("ctr-1", "default")).unwrap();
        assert!(prepared.has_terminal() && prepared.stdin_closer.is_some());
        let pid = prepared.logger_pid().expect("a logger pid");
        // What runc's console socket hands over: the master; the slave is the process's.
        let pty = nix::pty::openpty(None, None).unwrap();
        let _console = prepared.attach_terminal(pty.master).unwrap();
        assert_eq!(prepared.output_pumps(), 1);
        let mut slave = File::from(pty.slave);
        let mut manager = fifo::open_write(&stdin_path, false).unwrap();
        manager.write_all(b"typed\n").unwrap();
        let poller = Poller::new().unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"typed\n") {
            prepared.stdio.run_all(&poller);
            let mut buf = [0u8; 64];
            // The slave is blocking: read only once the stdin pump has fed the master.
            if nix::poll::poll(
                &mut [nix::poll::PollFd::new(
                    std::os::fd::AsFd::as_fd(&slave),
                    nix::poll::PollFlags::POLLIN,
                )],
                nix::poll::PollTimeout::from(10u8),
            )
            .unwrap()
                > 0
            {
                let n = slave.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
        }
        // The pty echoes the input and maps \n to \r\n on output.
        slave.write_all(b"shown\n").unwrap();
        drop(slave);
        // Up to 10 s: a child another test is spawning may hold a copy of the slave until
        // its exec (process_core::test_fds), and EIO comes only once every copy is gone.
        for _ in 0..10_000 {
            if prepared.stdio.open_outputs() == 0 {
                break;
            }
            prepared.stdio.run_all(&poller);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(
            prepared.stdio.open_outputs(),
            0,
            "the master's pump ends at EIO"
        );
        drop(prepared);
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert!(
            matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
            "{status:?}"
        );
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("out"), "typed\r\nshown\r\n");
        assert_eq!(read("err"), "", "a terminal has no stderr");
        assert!(read("env").lines().any(|l| l == "CONTAINER_ID=ctr-1"));
    }
}
