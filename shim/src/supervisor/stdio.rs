//! A process's stdio as a supervisor serves it: the container side gets pipes (or a pty),
//! and pumps move the bytes to and from wherever the manager wants them (FIFOs, a file).
//!
//! Guarantees:
//! - the shim holds a read end of every output FIFO, so a container never gets SIGPIPE or
//!   loses output while containerd (or a manager) is away: output waits in the pipes and
//!   FIFO (and the container blocks once they are full, as with a slow reader);
//! - the shim holds a write end of the stdin FIFO until CloseIO, so the process sees EOF
//!   on stdin only when the manager says so, not when a client merely reconnects.

use crate::supervisor::pump::{Direction, Pump};
use nix::unistd::pipe;
use runc_wrapper::{ConsoleSocket, ProcessIo};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Where a process's stdio goes, as containerd (or a manager) names it. Empty = nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// A parsed output destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Null,
    Fifo(PathBuf),
    File(PathBuf),
}

/// Parses containerd's stdio URIs: a plain path or `fifo://` is a FIFO, `file://` a file
/// to append to. `binary://` loggers are refused with a clear error for now.
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
    if uri.starts_with("binary://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("stdio {uri:?}: binary:// loggers are not supported by tether yet"),
        ));
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
    /// Started by the loop; they run until their source reaches EOF.
    pub pumps: Vec<Pump>,
    /// A write end of the stdin FIFO; dropping it is CloseIO.
    pub stdin_closer: Option<File>,
    /// With a terminal: the socket runc sends the pty master to.
    pub console: Option<ConsoleSocket>,
    /// With a terminal: the FIFO ends to connect to the pty master once it arrives.
    pending_tty: Option<PendingTty>,
}

#[derive(Debug, Default)]
struct PendingTty {
    stdin: Option<File>,
    stdout: Option<(File, Option<File>)>,
}

/// Opens the manager's side of a process's stdio and makes the process's side.
///
/// `owner` (IoUid/IoGid) owns the process's pipe ends, so a process running as that user
/// can reopen them through /proc/self/fd.
pub fn prepare(cfg: &StdioConfig, owner: Option<(u32, u32)>) -> io::Result<Prepared> {
    let mut out = Prepared::default();
    let stdin_fifo = match cfg.stdin.as_str() {
        "" => None,
        p => Some(open_stdin_fifo(p)?),
    };
    if cfg.terminal {
        out.console = Some(ConsoleSocket::new().map_err(io::Error::other)?);
        let mut tty = PendingTty::default();
        if let Some((reader, closer)) = stdin_fifo {
            tty.stdin = Some(reader);
            out.stdin_closer = Some(closer);
        }
        tty.stdout = output_sink(&cfg.stdout)?;
        out.pending_tty = Some(tty);
        return Ok(out);
    }
    if let Some((reader, closer)) = stdin_fifo {
        let (r, w) = pipe()?;
        chown_fd(&r, owner)?;
        out.io.stdin = Some(r.into());
        out.pumps
            .push(Pump::new(Direction::Input, reader.into(), w, None)?);
        out.stdin_closer = Some(closer);
    }
    for (uri, is_stdout) in [(&cfg.stdout, true), (&cfg.stderr, false)] {
        let Some((sink, keepalive)) = output_sink(uri)? else {
            continue;
        };
        let (r, w) = pipe()?;
        chown_fd(&w, owner)?;
        if is_stdout {
            out.io.stdout = Some(w.into());
        } else {
            out.io.stderr = Some(w.into());
        }
        out.pumps
            .push(Pump::new(Direction::Output, r, sink.into(), keepalive)?);
    }
    Ok(out)
}

impl Prepared {
    /// How many pumps carry output (what a delete waits for).
    pub fn output_pumps(&self) -> usize {
        self.pumps
            .iter()
            .filter(|p| p.direction() == Direction::Output)
            .count()
    }

    /// With a terminal: receives the pty master from runc (call after runc create/exec
    /// succeeded) and adds the pumps between it and the FIFOs. Returns a handle on the
    /// master for resizing.
    pub fn attach_console(&mut self, timeout: std::time::Duration) -> io::Result<File> {
        let console = self
            .console
            .take()
            .ok_or_else(|| io::Error::other("no console socket for a terminal process"))?;
        let master = console.receive_master(timeout).map_err(io::Error::other)?;
        let tty = self.pending_tty.take().unwrap_or_default();
        if let Some((sink, keepalive)) = tty.stdout {
            self.pumps.push(Pump::new(
                Direction::Output,
                master.try_clone()?,
                sink.into(),
                keepalive,
            )?);
        }
        if let Some(reader) = tty.stdin {
            self.pumps.push(Pump::new(
                Direction::Input,
                reader.into(),
                master.try_clone()?,
                None,
            )?);
        }
        Ok(File::from(master))
    }
}

/// Opens a stdin FIFO: a non-blocking read end for the pump, then a write end the
/// supervisor holds until CloseIO (it cannot block: the read end exists).
fn open_stdin_fifo(path: &str) -> io::Result<(File, File)> {
    let reader = fifo::open_read(path.as_ref(), true).map_err(io::Error::other)?;
    let closer = fifo::open_write(path.as_ref(), true).map_err(io::Error::other)?;
    Ok((reader, closer))
}

/// The manager-side sink of an output stream and, for a FIFO, the keep-alive read end.
fn output_sink(uri: &str) -> io::Result<Option<(File, Option<File>)>> {
    match parse_target(uri)? {
        Target::Null => Ok(None),
        Target::Fifo(path) => {
            let (writer, keepalive) = fifo::KeepAliveWriter::open(&path)
                .map_err(io::Error::other)?
                .into_parts();
            Ok(Some((writer, Some(keepalive))))
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
            Ok(Some((file, None)))
        }
    }
}

fn chown_fd(fd: &OwnedFd, owner: Option<(u32, u32)>) -> io::Result<()> {
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
        assert!(parse_target("binary:///usr/bin/logger")
            .unwrap_err()
            .to_string()
            .contains("binary://"));
        assert!(parse_target("ftp://x").is_err());
    }
}
