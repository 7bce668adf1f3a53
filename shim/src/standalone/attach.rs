//! `attach`: reopen a process's FIFOs and stream its stdio, as often as wanted.
//!
//! Single-threaded: one epoll loop over the pumps and a signalfd, on the core's
//! [`EventBase`] and [`ProcessStdio`] (our stdio is served as a supervisor serves its
//! process's: the output FIFOs into our stdout and stderr, our stdin into the FIFO).
//! Attached from a terminal to a tty process, our terminal goes into raw mode
//! ([`RawMode`]) and its size is sent on `winsz` at once and on every SIGWINCH. SIGINT,
//! SIGTERM and SIGHUP are read from the signalfd instead of killing us outright, so that
//! every way out restores the terminal and our stdio's file flags (which our parent
//! shares); then the signal is raised again, so our parent still sees us die of it.
//!
//! While our stdin is forwarded from a terminal, the detach keys (`--detach-keys`, default
//! ctrl-p,ctrl-q) end `attach` the same quiet way, with [`EXIT_DETACHED`]: our stdin is
//! then read and scanned ([`KeyedInput`]) instead of spliced, since a splice never shows
//! the bytes. Piped stdin is never scanned: a manager's (possibly binary) input must reach
//! the process byte for byte, and no byte pair in it may detach by accident.

use super::args::{self, Spec};
use super::control::{self, Request};
use super::depot::{Depot, TTY_MARKER};
use super::detach_keys::{self, DetachKeys};
use super::errors::{CliError, CliResult, EXIT_DETACHED};
use super::exit_record::exit_code_of;
use super::keyed_input::{KeyedInput, Progress};
use super::raw_mode::RawMode;
use super::winsize;
use crate::process_core::epoll::{Ready, Token};
use crate::process_core::event_base::EventBase;
use crate::process_core::process_stdio::{ProcessStdio, Stream};
use crate::process_core::pump::{Direction, Pump};
use crate::standalone::own_fds::OwnFd;
use fifo::ProcessDir;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{fstat, SFlag};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// `attach --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 attach [--no-stdin] [--close-stdin] [--detach-keys KEYS]
                                      (CONTAINER-ID [PROCESS-ID] | --dir DIR)

Reopens the process's FIFOs: copies its stdout and stderr to ours and our stdin (unless
it is /dev/null, a regular file, or --no-stdin) to its stdin, until its output ends (the
process exited and everything it wrote was delivered). Then exits with the process's exit
code. Output the process wrote while nobody was attached comes first. Detaching (the
detach keys below, or killing attach) loses no output: the next attach continues where
this one stopped. One attach at a time: two concurrent attaches split the output.

Closing our stdin does not close the process's (it stays open until the process exits),
unless --close-stdin: then, once our stdin has reached EOF and everything read from it
has been passed on, the process's stdin is closed as by `close-stdin` (at once when our
stdin is not forwarded). With --close-stdin a regular file on stdin is refused: pipe it.

A tty process (exec --tty, or process.terminal in the bundle) attached from a terminal
(our stdin is one): the terminal is put into raw mode, so every key (Ctrl-C, Ctrl-D,
Ctrl-Z) goes to the process, whose own terminal echoes and interprets it; its size is
sent on `winsz` at once and again on every SIGWINCH (--no-stdin: the size only, no raw
mode).

Detaching leaves the process running. Typing the detach keys (while our stdin is
forwarded and is a terminal; default ctrl-p,ctrl-q) stops forwarding, restores the
terminal and exits with
code 119; the keys themselves never reach the process, and keys that only begin the
sequence are passed on once the next one does not continue it (ctrl-p x sends both).
--detach-keys KEYS: comma-separated keys, each ctrl-<a..z, @, [, \\, ], ^, _> or one
printable character (docker's format); '' disables detaching. Piped stdin is never
scanned for them: it is spliced to the process byte for byte. SIGINT, SIGTERM and
SIGHUP (closing the terminal) detach too: attach restores the terminal, then dies of that
signal.";

const SPEC: Spec = Spec {
    valued: &[("--dir", None), ("--detach-keys", None)],
    flags: &[("--no-stdin", None), ("--close-stdin", None)],
};

/// Our stdio's slot in its pumps' tokens.
const SLOT: u32 = 0;
/// With detach keys: our stdin is `Token::Stdio(SLOT, Stream::Stdin)` (as its pump would
/// be) and the process's `stdin` FIFO, written to directly, this one.
const STDIN_FIFO_TOKEN: Token = OwnFd::AttachStdin.token();

/// The signals that detach us; SIGWINCH is handled too, when there is a terminal.
const DETACH_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// What the command line and our stdio asked for.
struct Options<'a> {
    /// Our stdin is copied to the process's.
    forward_stdin: bool,
    /// Close the process's stdin once ours is done.
    close_stdin: bool,
    /// Our terminal, when we are attached from one to a tty process.
    terminal: Option<BorrowedFd<'a>>,
    /// The detach keys, when in effect (our stdin is forwarded and they are not disabled).
    detach_keys: Option<DetachKeys>,
}

/// Why the stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The process's output ended: it exited and everything was delivered.
    Output,
    /// A detaching signal.
    Signal(Signal),
    /// The detach keys were typed.
    Keys,
}

/// Runs the subcommand; returns the process's exit code, or [`EXIT_DETACHED`] if the
/// detach keys were typed.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<u8> {
    let p = args::parse(argv, SPEC)?;
    // Checked even where unused (--no-stdin): a typo is reported, not ignored.
    let detach_keys = detach_keys::parse(p.value("--detach-keys").unwrap_or(detach_keys::DEFAULT))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let dir = resolve_dir(depot, &p, USAGE)?;
    let stdin = std::io::stdin();
    let stdin = stdin.as_fd();
    let close_stdin = p.flag("--close-stdin");
    let forward_stdin = !p.flag("--no-stdin") && is_stream(stdin);
    if close_stdin && !p.flag("--no-stdin") && is_regular_file(stdin) {
        return Err(CliError::Usage(
            "--close-stdin: stdin is a regular file, which attach does not forward; \
             pipe it (cat FILE | attach --close-stdin ...)"
                .into(),
        ));
    }
    let has_tty = dir.path().join(TTY_MARKER).is_file();
    let stdin_is_terminal = nix::unistd::isatty(stdin.as_raw_fd()).unwrap_or(false);
    let terminal = (has_tty && stdin_is_terminal).then_some(stdin);
    // Blocked before anything is changed: a signal from here on waits for the loop, so
    // it cannot kill us between entering raw mode and restoring it.
    let mut set = SigSet::empty();
    for sig in DETACH_SIGNALS.into_iter().chain([Signal::SIGWINCH]) {
        set.add(sig);
    }
    let mut base = EventBase::new(&set).map_err(failed("signalfd"))?;
    let ended = {
        let _stdio = StdioFlags::save();
        let _raw = match terminal {
            Some(t) if forward_stdin => {
                Some(RawMode::enter(t).map_err(failed("raw mode on the terminal"))?)
            }
            _ => None,
        };
        let opts = Options {
            forward_stdin,
            close_stdin,
            terminal,
            // Only a person at a terminal types them; piped input passes untouched.
            detach_keys: detach_keys.filter(|_| forward_stdin && stdin_is_terminal),
        };
        stream(&dir, &opts, &mut base)
        // The guards restore the terminal and our stdio here, whatever the outcome.
    };
    match ended? {
        Ended::Output => exit_code_of(&dir),
        Ended::Signal(sig) => Ok(die_of(sig, &set)),
        Ended::Keys => Ok(EXIT_DETACHED),
    }
}

/// Dies of `sig` by its default action, now that everything is restored: a shell or a
/// manager waiting for us learns what ended us. Returns 128+N only if that fails.
fn die_of(sig: Signal, blocked: &SigSet) -> u8 {
    // Raised while blocked it stays pending; unblocking delivers it.
    let _ = nix::sys::signal::raise(sig);
    let _ = blocked.thread_unblock();
    128u8.saturating_add(sig as u8)
}

/// The file status flags of our stdin, stdout and stderr, put back when dropped: the
/// pumps make them non-blocking, and the open file descriptions are our parent's too.
struct StdioFlags(Vec<(i32, Option<i32>)>);

impl StdioFlags {
    fn save() -> Self {
        StdioFlags(
            (0..3)
                .map(|fd| (fd, fcntl(fd, FcntlArg::F_GETFL).ok()))
                .collect(),
        )
    }
}

impl Drop for StdioFlags {
    fn drop(&mut self) {
        for (fd, flags) in &self.0 {
            if let Some(f) = flags {
                let _ = fcntl(*fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(*f)));
            }
        }
    }
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

fn file_kind(fd: BorrowedFd<'_>) -> Option<SFlag> {
    fstat(fd.as_raw_fd())
        .ok()
        .map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT)
}

/// Whether `fd` can be polled and spliced as a stream (pipe, socket, terminal).
fn is_stream(fd: BorrowedFd<'_>) -> bool {
    matches!(
        file_kind(fd),
        Some(SFlag::S_IFIFO) | Some(SFlag::S_IFSOCK) | Some(SFlag::S_IFCHR)
    ) && !is_dev_null(fd)
}

fn is_regular_file(fd: BorrowedFd<'_>) -> bool {
    file_kind(fd) == Some(SFlag::S_IFREG)
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

/// Sends our terminal's size on `winsz`. Best effort: a size that does not arrive
/// leaves the process's layout wrong, which is no reason to stop streaming.
fn send_size(winsz: Option<&File>, terminal: Option<BorrowedFd<'_>>) {
    if let (Some(mut w), Some(t)) = (winsz, terminal) {
        if let Ok(Some(size)) = winsize::of(t) {
            // Shorter than PIPE_BUF: written whole or not at all (full, or no reader).
            let _ = w.write_all(fifo::encode_winsz(size).as_bytes());
        }
    }
}

/// Copies until both output FIFOs reach EOF, or a detaching signal comes.
fn stream(dir: &ProcessDir, opts: &Options<'_>, base: &mut EventBase) -> CliResult<Ended> {
    let mut stdio = ProcessStdio::default();
    for (stream, path, ours) in [
        (Stream::Stdout, dir.stdout(), std::io::stdout().as_fd()),
        (Stream::Stderr, dir.stderr(), std::io::stderr().as_fd()),
    ] {
        let src = fifo::open_read(&path, true).map_err(CliError::fifo)?;
        let pump =
            Pump::new(Direction::Output, src.into(), dup(ours)?, None).map_err(failed("pump"))?;
        stdio.add(stream, pump);
    }
    // The size before any input: the process's first screen already fits. No reader
    // means the process has exited and there is nothing to resize.
    let winsz = match opts.terminal {
        Some(_) => fifo::open_write(&dir.winsz(), true).ok(),
        None => None,
    };
    send_size(winsz.as_ref(), opts.terminal);
    let mut keyed = None;
    if let Some(keys) = &opts.detach_keys {
        // No reader: as below, nothing to feed; our stdin is still watched for the keys.
        let dst = fifo::open_write(&dir.stdin(), true).ok().map(OwnedFd::from);
        let src = dup(std::io::stdin().as_fd())?;
        let stdin_token = Token::Stdio(SLOT, Stream::Stdin);
        // Our stdin may be a device epoll cannot watch: then it is not forwarded, as
        // with /dev/null (and as the pump below does).
        keyed = KeyedInput::new(
            base.poller(),
            src,
            stdin_token,
            dst,
            STDIN_FIFO_TOKEN,
            keys.clone(),
        )
        .ok();
    } else if opts.forward_stdin {
        // No reader: the process exited, or its stdin was closed; nothing to feed.
        if let Ok(dst) = fifo::open_write(&dir.stdin(), true) {
            let src = dup(std::io::stdin().as_fd())?;
            let pump =
                Pump::new(Direction::Input, src, dst.into(), None).map_err(failed("pump"))?;
            stdio.add(Stream::Stdin, pump);
        }
    }
    if let Err(dropped) = stdio.register(base.poller(), SLOT) {
        // Our stdin alone may be a device epoll cannot watch: then it is not forwarded
        // (dropping its pump closed our end of the FIFO), as with /dev/null.
        if dropped.streams.outputs() > 0 {
            return Err(failed("epoll")(dropped.error));
        }
    }
    let mut close_pending = opts.close_stdin;
    // Our stdin has ended once its pump is gone (or the keyed input passes nothing on any
    // more): ask for the process's to be closed.
    let mut close_when_done = |stdio: &ProcessStdio, keyed: &Option<KeyedInput>| {
        let passing_on =
            stdio.is_open(Stream::Stdin) || keyed.as_ref().is_some_and(KeyedInput::passing_on);
        if close_pending && !passing_on {
            close_pending = false;
            control::send(dir, Request::CloseStdin)?;
        }
        CliResult::Ok(())
    };
    stdio.run_all(base.poller());
    // What our stdin held before the loop; an input that ends at once (a detach, EOF) is
    // handled as in the loop.
    if let Some(ended) = run_keyed(&mut keyed, base)? {
        return Ok(ended);
    }
    close_when_done(&stdio, &keyed)?;
    let mut events: Vec<Ready> = Vec::new();
    while stdio.is_open(Stream::Stdout) || stdio.is_open(Stream::Stderr) {
        base.wait(None, &mut events).map_err(failed("epoll"))?;
        for ev in &events {
            match ev.token {
                Token::Signals => {
                    for sig in base.signals() {
                        if sig == Signal::SIGWINCH {
                            send_size(winsz.as_ref(), opts.terminal);
                        } else if DETACH_SIGNALS.contains(&sig) {
                            return Ok(Ended::Signal(sig));
                        }
                    }
                }
                Token::Stdio(_, Stream::Stdin) | STDIN_FIFO_TOKEN if keyed.is_some() => {
                    if ev.token == STDIN_FIFO_TOKEN && ev.hangup {
                        if let Some(k) = keyed.as_mut() {
                            k.fifo_hung_up(base.poller());
                        }
                    }
                    if let Some(ended) = run_keyed(&mut keyed, base)? {
                        return Ok(ended);
                    }
                }
                // Dropping the ended stdin pump closes our write end of the FIFO.
                Token::Stdio(_, stream) => {
                    stdio.run(base.poller(), stream);
                }
                _ => {}
            }
        }
        close_when_done(&stdio, &keyed)?;
    }
    if let Some(k) = keyed.take() {
        k.close(base.poller());
    }
    Ok(Ended::Output)
}

/// Runs the keyed input, if there is one: closes and drops it once it is done, and says
/// [`Ended::Keys`] if the detach keys were typed.
fn run_keyed(keyed: &mut Option<KeyedInput>, base: &EventBase) -> CliResult<Option<Ended>> {
    let Some(k) = keyed.as_mut() else {
        return Ok(None);
    };
    let progress = k.run(base.poller()).map_err(failed("epoll"))?;
    if progress == Progress::Open {
        return Ok(None);
    }
    if let Some(k) = keyed.take() {
        k.close(base.poller());
    }
    Ok((progress == Progress::Detach).then_some(Ended::Keys))
}
