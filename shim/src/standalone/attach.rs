//! `attach`: reopen a process's FIFOs and stream its stdio, as often as wanted.

use super::args::{self, Spec};
use super::depot::Depot;
use super::errors::{CliError, CliResult};
use crate::supervisor::epoll::{Poller, Ready, Token};
use crate::supervisor::pump::{Direction, Pump, PumpState};
use fifo::ProcessDir;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::stat::{fstat, SFlag};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// `attach --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 attach [--no-stdin] (CONTAINER-ID [PROCESS-ID] | --dir DIR)

Reopens the process's FIFOs: copies its stdout and stderr to ours and our stdin (unless
it is /dev/null, a regular file, or --no-stdin) to its stdin, until its output ends (the
process exited and everything it wrote was delivered). Then exits with the process's exit
code. Output the process wrote while nobody was attached comes first. Detaching (killing
attach) loses nothing: the next attach continues where this one stopped. Closing our
stdin does not close the process's (it stays open until the process exits). One attach
at a time: two concurrent attaches split the output between them.";

const SPEC: Spec = Spec {
    valued: &[("--dir", None)],
    flags: &[("--no-stdin", None)],
};

const OUT: u32 = 0;
const ERR: u32 = 1;
const IN: u32 = 2;

/// Runs the subcommand; returns the process's exit code.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<u8> {
    let p = args::parse(argv, SPEC)?;
    let dir = resolve_dir(depot, &p, USAGE)?;
    let saved: Vec<(i32, Option<i32>)> = (0..3)
        .map(|fd| (fd, fcntl(fd, FcntlArg::F_GETFL).ok()))
        .collect();
    let result = stream(&dir, !p.flag("--no-stdin"));
    // The pumps made our stdio non-blocking, which our parent shares: put it back.
    for (fd, flags) in saved {
        if let Some(f) = flags {
            let _ = fcntl(
                fd,
                FcntlArg::F_SETFL(nix::fcntl::OFlag::from_bits_truncate(f)),
            );
        }
    }
    result?;
    exit_code_of(&dir)
}

/// The process directory named by `--dir` or by `CONTAINER-ID [PROCESS-ID]`.
pub fn resolve_dir(depot: &Depot, p: &args::Parsed, usage: &str) -> CliResult<ProcessDir> {
    if let Some(d) = p.value("--dir") {
        p.positionals(0, 0, usage)?;
        return ProcessDir::from_path(Path::new(d)).map_err(CliError::fifo);
    }
    let pos = p.positionals(1, 2, usage)?;
    depot.process_dir(&pos[0], pos.get(1).map(String::as_str))
}

/// The exit code in `exitcode`, or an error if there is none (the supervisor died).
pub fn exit_code_of(dir: &ProcessDir) -> CliResult<u8> {
    match dir.read_exit().map_err(CliError::fifo)? {
        Some(rec) => Ok(u8::try_from(rec.code).unwrap_or(255)),
        None => Err(CliError::Failed(format!(
            "{}: the process's output ended but there is no exitcode (its supervisor died?)",
            dir.path().display()
        ))),
    }
}

/// Whether `fd` can be polled and spliced as a stream (pipe, socket, terminal).
fn is_stream(fd: BorrowedFd<'_>) -> bool {
    fstat(fd.as_raw_fd()).is_ok_and(|st| {
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        kind == SFlag::S_IFIFO || kind == SFlag::S_IFSOCK || kind == SFlag::S_IFCHR
    }) && !is_dev_null(fd)
}

fn is_dev_null(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|p| p == Path::new("/dev/null"))
}

fn dup(fd: BorrowedFd<'_>) -> CliResult<OwnedFd> {
    fd.try_clone_to_owned()
        .map_err(|e| CliError::Failed(format!("dup: {e}")))
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Failed(format!("{what}: {e}"))
}

/// Copies until both output FIFOs reach EOF.
fn stream(dir: &ProcessDir, with_stdin: bool) -> CliResult<()> {
    let poller = Poller::new().map_err(failed("epoll"))?;
    let mut pumps: [Option<Pump>; 3] = [None, None, None];
    for (i, (path, ours)) in [
        (dir.stdout(), std::io::stdout().as_fd()),
        (dir.stderr(), std::io::stderr().as_fd()),
    ]
    .into_iter()
    .enumerate()
    {
        let src = fifo::open_read(&path, true).map_err(CliError::fifo)?;
        let pump =
            Pump::new(Direction::Output, src.into(), dup(ours)?, None).map_err(failed("pump"))?;
        poller
            .add_edge(pump.src_fd(), Token::Pump(i as u32), true, false)
            .map_err(failed("epoll"))?;
        // A regular file as our stdout cannot be polled, and never needs to be.
        let _ = poller.add_edge(pump.dst_fd(), Token::Pump(i as u32), false, true);
        pumps[i] = Some(pump);
    }
    let stdin = std::io::stdin();
    if with_stdin && is_stream(stdin.as_fd()) {
        // No reader means the supervisor has gone: the process exited, no stdin to feed.
        if let Ok(dst) = fifo::open_write(&dir.stdin(), true) {
            let pump = Pump::new(Direction::Input, dup(stdin.as_fd())?, dst.into(), None)
                .map_err(failed("pump"))?;
            if poller
                .add_edge(pump.src_fd(), Token::Pump(IN), true, false)
                .is_ok()
            {
                let _ = poller.add_edge(pump.dst_fd(), Token::Pump(IN), false, true);
                pumps[IN as usize] = Some(pump);
            }
        }
    }
    let run = |pumps: &mut [Option<Pump>; 3], i: usize| {
        if let Some(p) = &mut pumps[i] {
            if p.run() == PumpState::Done {
                if let Some(p) = pumps[i].take() {
                    poller.remove(p.src_fd());
                    poller.remove(p.dst_fd());
                }
            }
        }
    };
    for i in 0..3 {
        run(&mut pumps, i);
    }
    let mut events: Vec<Ready> = Vec::new();
    while pumps[OUT as usize].is_some() || pumps[ERR as usize].is_some() {
        poller.wait(None, &mut events).map_err(failed("epoll"))?;
        for ev in &events {
            if let Token::Pump(i) = ev.token {
                if i <= IN {
                    run(&mut pumps, i as usize);
                }
            }
        }
    }
    Ok(())
}
