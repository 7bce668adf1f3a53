//! Connecting a process to its pumps, for both faces: a pipe per stream for a process
//! without a terminal, or its pty master (once runc has handed it over) for one with a
//! terminal. What the pumps' other ends are (containerd's FIFOs, a `file://` log, the
//! standalone process directory's FIFOs) is the face's business: it passes them in.

use crate::process_core::process_stdio::{ProcessStdio, Stream};
use crate::process_core::pump::{Direction, Pump};
use crate::process_core::spool::{Spool, SpoolConfig};
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use runc_wrapper::ProcessIo;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Where an output pump delivers.
#[derive(Debug)]
pub struct Sink {
    /// The destination (a FIFO's or a file's write end).
    pub dst: OwnedFd,
    /// For a FIFO: a read end held (never read) while the pump lives, so its writes never
    /// fail with EPIPE while the real reader is away. `None` when the face holds one
    /// itself, or for a file.
    pub keepalive: Option<File>,
    /// Where the stream's output goes while the destination is full (see [`crate::process_core::spool`]).
    pub spool: Option<Spool>,
}

impl Sink {
    /// A sink without a spool.
    pub fn new(dst: OwnedFd, keepalive: Option<File>) -> Sink {
        Sink {
            dst,
            keepalive,
            spool: None,
        }
    }

    /// Gives the sink a spool per `cfg` (none if `cfg` is `None` or its limit 0), named
    /// `label` in log lines.
    pub fn spooled(mut self, cfg: Option<&SpoolConfig>, label: &str) -> io::Result<Sink> {
        if let Some(cfg) = cfg.filter(|c| c.enabled()) {
            self.spool = Some(Spool::open(cfg, label)?);
        }
        Ok(self)
    }

    /// The output pump from `src` into this sink.
    fn pump(self, src: OwnedFd) -> io::Result<Pump> {
        let pump = Pump::new(Direction::Output, src, self.dst, self.keepalive)?;
        Ok(match self.spool {
            Some(spool) => pump.with_spool(spool),
            None => pump,
        })
    }
}

/// How the pipes between a process and its pumps are made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeOptions {
    /// Owner (uid, gid) of the process's ends (containerd's IoUid/IoGid), so a process
    /// running as that user can reopen them through /proc/self/fd.
    pub owner: Option<(u32, u32)>,
    /// Buffer size to raise each pipe to, best effort (capped by the system's limits).
    pub size: Option<usize>,
}

/// Wires a process without a terminal. Each stream given a source (stdin: where the
/// manager writes) or a sink (stdout, stderr) gets a close-on-exec pipe: the process's
/// end goes into the returned [`ProcessIo`] (for runc), a pump serves the other; the
/// other streams are `/dev/null`. The pumps are not registered yet.
pub fn pipes(
    stdin: Option<OwnedFd>,
    stdout: Option<Sink>,
    stderr: Option<Sink>,
    opts: PipeOptions,
) -> io::Result<(ProcessIo, ProcessStdio)> {
    let mut io = ProcessIo::default();
    let mut stdio = ProcessStdio::default();
    if let Some(src) = stdin {
        let (r, w) = pipe(opts)?;
        chown(&r, opts.owner)?;
        io.stdin = Some(r);
        stdio.add(Stream::Stdin, Pump::new(Direction::Input, src, w, None)?);
    }
    for (stream, sink) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
        let Some(sink) = sink else {
            continue;
        };
        let (r, w) = pipe(opts)?;
        chown(&w, opts.owner)?;
        if stream == Stream::Stdout {
            io.stdout = Some(w);
        } else {
            io.stderr = Some(w);
            // For runc's own message should it fail before the process runs.
            io.stderr_reader = Some(r.try_clone()?);
        }
        stdio.add(stream, sink.pump(r)?);
    }
    Ok((io, stdio))
}

/// Wires a process with a terminal, once runc has handed over its pty `master`: the
/// master's output goes to `stdout`, `stdin` (where the manager writes) into the master.
/// The pumps use their own copies of `master`; the caller keeps it (for resizing). The
/// pumps are not registered yet.
pub fn terminal(
    master: &OwnedFd,
    stdin: Option<OwnedFd>,
    stdout: Option<Sink>,
) -> io::Result<ProcessStdio> {
    let mut stdio = ProcessStdio::default();
    if let Some(sink) = stdout {
        stdio.add(Stream::Stdout, sink.pump(master.try_clone()?)?);
    }
    if let Some(src) = stdin {
        stdio.add(
            Stream::Stdin,
            Pump::new(Direction::Input, src, master.try_clone()?, None)?,
        );
    }
    Ok(stdio)
}

fn pipe(opts: PipeOptions) -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC)?;
    if let Some(size) = opts.size {
        let _ = fifo::set_pipe_size(&r, size);
    }
    Ok((r, w))
}

/// Gives `fd` to `owner`, unless that is root (or nobody).
pub fn chown(fd: &OwnedFd, owner: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = owner {
        if uid != 0 || gid != 0 {
            nix::unistd::fchown(
                fd.as_raw_fd(),
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_core::epoll::Poller;
    use std::io::{Read, Write};

    fn pipe_pair() -> (File, OwnedFd) {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        (File::from(r), w)
    }

    fn sink(dst: OwnedFd) -> Sink {
        Sink::new(dst, None)
    }

    /// Runs every pump until none is left (the process and the writers are gone).
    fn drain(stdio: &mut ProcessStdio) {
        let poller = Poller::new().unwrap();
        for _ in 0..1000 {
            if stdio.is_empty() {
                return;
            }
            stdio.run_all(&poller);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("pumps never ended: {stdio:?}");
    }

    #[test]
    fn pipes_connect_a_process_to_its_sinks_and_source() {
        let (mut out, out_w) = pipe_pair();
        let (mut err, err_w) = pipe_pair();
        let (in_r, mut in_w) = {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
            (r, File::from(w))
        };
        let opts = PipeOptions {
            owner: None,
            size: Some(256 * 1024),
        };
        let (io, mut stdio) =
            pipes(Some(in_r), Some(sink(out_w)), Some(sink(err_w)), opts).unwrap();
        assert_eq!(stdio.open_outputs(), 2);
        in_w.write_all(b"from the manager\n").unwrap();
        drop(in_w);
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read line; echo \"got $line\"; echo err >&2"])
            .stdin(io.stdin.unwrap())
            .stdout(io.stdout.unwrap())
            .stderr(io.stderr.unwrap())
            .spawn()
            .unwrap();
        // The stdin pump must run for the child to read its line.
        let poller = Poller::new().unwrap();
        while stdio.is_open(Stream::Stdin) {
            stdio.run(&poller, Stream::Stdin);
        }
        assert!(child.wait().unwrap().success());
        drain(&mut stdio);
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        assert_eq!(text, "got from the manager\n");
        text.clear();
        err.read_to_string(&mut text).unwrap();
        assert_eq!(text, "err\n");
    }

    #[test]
    fn streams_without_a_sink_are_dev_null() {
        let (_out, out_w) = pipe_pair();
        let (io, stdio) = pipes(None, Some(sink(out_w)), None, PipeOptions::default()).unwrap();
        assert!(io.stdin.is_none() && io.stdout.is_some() && io.stderr.is_none());
        assert!(stdio.is_open(Stream::Stdout));
        assert!(!stdio.is_open(Stream::Stdin) && !stdio.is_open(Stream::Stderr));
    }

    #[test]
    fn a_terminal_pumps_the_master_both_ways() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (mut out, out_w) = pipe_pair();
        let (in_r, mut in_w) = {
            let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
            (r, File::from(w))
        };
        let mut stdio = terminal(&pty.master, Some(in_r), Some(sink(out_w))).unwrap();
        let poller = Poller::new().unwrap();
        let mut slave = File::from(pty.slave);
        slave.write_all(b"shown").unwrap();
        stdio.run(&poller, Stream::Stdout);
        let mut buf = [0u8; 64];
        let n = out.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"shown"), "{:?}", &buf[..n]);
        in_w.write_all(b"typed\n").unwrap();
        stdio.run(&poller, Stream::Stdin);
        let n = slave.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"typed\n");
    }
}
