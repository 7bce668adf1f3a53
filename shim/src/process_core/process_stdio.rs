//! The stdio pumps of one process as an event loop serves them, and how its output drains
//! after it exits: written once for both faces. The containerd face keeps one
//! [`ProcessStdio`] per process, the standalone supervisor one for its process, and
//! `attach` one for its own stdio.
//!
//! A [`ProcessStdio`] owns at most one [`Pump`] per [`Stream`]. It registers them with the
//! loop's [`Poller`] under `Token::Stdio(slot, stream)` (both fds edge-triggered: an idle
//! stream never wakes the loop), runs a pump when its token is ready, and deregisters and
//! drops it once it has ended, which closes its fds.
//!
//! The output drain: when the process exits, [`ProcessStdio::exited`] moves what its pipes
//! hold at once and starts a grace period. An output stream has drained once its pump has
//! reached EOF, i.e. every writer of the pipe is gone, the process's descendants included;
//! since a descendant may hold the pipe open for ever, the wait is bounded by the grace
//! ([`ProcessStdio::drain_overdue`]). What a face waits for differs, and stays with the
//! face: the containerd face holds the exit *report* until the output has drained or the
//! grace is over (clients stop reading at the exit), and lets the pumps run on; the
//! standalone supervisor records the exit once its output is in the FIFOs, spool
//! included (bounded: both by [`super::exit_output`]), and holds its *FIFOs* open,
//! abandoning after the grace only the sources that have gone idle
//! ([`ProcessStdio::abandon_idle_outputs`]), then waiting for a manager to read.
//!
//! A delete after the exit (containerd's Delete, the standalone `delete`'s SIGTERM) waits
//! for output still spooled while a reader is taking it, bounded ([`DeleteLinger`], one
//! rule for both faces): not at all when nobody reads, so a teardown with no reader stays
//! fast; what is still spooled then is dropped and reported.

use crate::process_core::epoll::{Poller, Token};
use crate::process_core::fionread;
use crate::process_core::pump::{Pump, PumpState};
pub use crate::process_core::stream::Stream;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// A set of streams: the pumps an operation ended or dropped. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams(u8);

impl From<Stream> for Streams {
    fn from(stream: Stream) -> Self {
        let mut s = Streams::default();
        s.insert(stream);
        s
    }
}

impl Streams {
    pub fn insert(&mut self, stream: Stream) {
        self.0 |= 1 << stream.index();
    }

    pub fn contains(self, stream: Stream) -> bool {
        self.0 & (1 << stream.index()) != 0
    }

    /// How many of the streams carry output.
    pub fn outputs(self) -> usize {
        Stream::OUTPUTS
            .iter()
            .filter(|s| self.contains(**s))
            .count()
    }
}

/// The pumps [`ProcessStdio::register`] could not register: they were dropped, so their
/// streams are closed (an output's source pipe, an input's destination).
#[derive(Debug)]
pub struct Unregistered {
    pub streams: Streams,
    /// The first registration error.
    pub error: io::Error,
}

/// A pump that has just ended (its source reached EOF or its destination went away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub stream: Stream,
    /// Bytes it moved in its life.
    pub moved: u64,
    /// Bytes it took from its source (more than `moved` while the spool holds some).
    pub read: u64,
}

/// How long a delete waits for spooled output that a reader is taking: the Go shim's
/// bound on its IO wait at delete.
pub const DELETE_LINGER: Duration = Duration::from_secs(10);
/// A reader that has taken nothing for this long is not taking the spool: a delete does
/// not wait for it (a reader that is gone, or that stopped reading, keeps no delete).
pub const READER_IDLE: Duration = Duration::from_secs(1);

/// Output still spooled, and when a reader last took bytes from a stream that has some.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    pub spooled: u64,
    pub last_taken: Option<Instant>,
}

impl Backlog {
    /// Both backlogs together (the processes of one container).
    pub fn and(self, other: Backlog) -> Backlog {
        Backlog {
            spooled: self.spooled + other.spooled,
            last_taken: self.last_taken.max(other.last_taken),
        }
    }
}

/// What a delete does about output still spooled, now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linger {
    /// Nothing is spooled: go on.
    Drained,
    /// A reader is taking the spool: look again by then (or on the next event).
    Wait(Instant),
    /// Go on without it: `spooled` bytes are dropped, for `why`.
    Drop { spooled: u64, why: DropWhy },
}

/// Why a delete stopped waiting for spooled output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropWhy {
    /// No reader has taken any for [`READER_IDLE`].
    NoReader,
    /// [`DELETE_LINGER`] is over.
    TimedOut,
}

impl std::fmt::Display for DropWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropWhy::NoReader => write!(f, "no reader took any for {READER_IDLE:?}"),
            DropWhy::TimedOut => write!(f, "still spooled after {DELETE_LINGER:?}"),
        }
    }
}

/// A delete's wait for spooled output, from when the delete came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteLinger {
    since: Instant,
}

impl DeleteLinger {
    pub fn new(now: Instant) -> Self {
        DeleteLinger { since: now }
    }

    /// When the delete came.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Whether the delete waits on, given what is spooled: while a reader took bytes in
    /// the last [`READER_IDLE`], up to [`DELETE_LINGER`] after the delete came.
    pub fn check(&self, backlog: Backlog, now: Instant) -> Linger {
        if backlog.spooled == 0 {
            return Linger::Drained;
        }
        let limit = self.since + DELETE_LINGER;
        let drop = |why| Linger::Drop {
            spooled: backlog.spooled,
            why,
        };
        if now >= limit {
            return drop(DropWhy::TimedOut);
        }
        match backlog.last_taken.map(|t| t + READER_IDLE) {
            Some(idle_at) if now < idle_at => Linger::Wait(idle_at.min(limit)),
            _ => drop(DropWhy::NoReader),
        }
    }
}

/// The stdio pumps of one process, and the state of its output drain.
#[derive(Debug, Default)]
pub struct ProcessStdio {
    /// Indexed by [`Stream::index`].
    pumps: [Option<Pump>; 3],
    /// Set by the first [`ProcessStdio::exited`]: when the output's grace ends.
    drain_deadline: Option<Instant>,
    /// By stream index: the read end of an output FIFO whose pump has gone (taken from
    /// the pump as it closed), held until the process is deleted, so that what the FIFO
    /// still holds stays for a reader and [`ProcessStdio::fifo_unread`] can see it.
    ended_fifos: [Option<File>; 3],
}

impl ProcessStdio {
    /// Adds the pump of `stream`, whose direction must be the stream's; call before
    /// [`ProcessStdio::register`]. A pump already there for the stream is dropped.
    pub fn add(&mut self, stream: Stream, pump: Pump) {
        debug_assert_eq!(pump.direction(), stream.direction(), "{stream:?}");
        self.pumps[stream.index()] = Some(pump);
    }

    /// No pump left (or none ever).
    pub fn is_empty(&self) -> bool {
        self.pumps.iter().all(Option::is_none)
    }

    /// Whether the pump of `stream` is still there (has not ended, been closed or dropped).
    pub fn is_open(&self, stream: Stream) -> bool {
        self.pumps[stream.index()].is_some()
    }

    /// The descriptor through which the pump of `stream` faces the process (for an
    /// output: the read end of its pipe, or the pty master), while the pump is there:
    /// whoever else holds a copy keeps the process's writes from failing with EPIPE (or
    /// its terminal from hanging up) should the pumps go away, and can take over (the
    /// standalone face's keeper).
    pub fn source(&self, stream: Stream) -> Option<BorrowedFd<'_>> {
        self.pumps[stream.index()].as_ref().map(Pump::src_fd)
    }

    /// How many output pumps are still there.
    pub fn open_outputs(&self) -> usize {
        Stream::OUTPUTS.iter().filter(|s| self.is_open(**s)).count()
    }

    /// How many output pumps are still there whose source has not ended (a pipe with a
    /// writer left, a pty master that has not given EIO): what they will read is in
    /// neither the destination nor the spool yet.
    pub fn open_sources(&self) -> usize {
        Stream::OUTPUTS
            .iter()
            .filter_map(|s| self.pumps[s.index()].as_ref())
            .filter(|p| !p.source_ended())
            .count()
    }

    /// Registers every pump with `poller` under `Token::Stdio(slot, stream)`: its source
    /// for readability, its destination for writability, both edge-triggered (a pump
    /// moves until EAGAIN on every wakeup). A destination epoll cannot watch (`EPERM`: a
    /// regular file, such as a `file://` log or `attach`'s stdout redirected to one) is
    /// left out: it is always writable and its writes never wait.
    ///
    /// A pump that cannot be registered is dropped, the others stay registered; the error
    /// names the dropped streams. Call once, after every [`ProcessStdio::add`].
    pub fn register(&mut self, poller: &Poller, slot: u32) -> Result<(), Unregistered> {
        let mut dropped = Streams::default();
        let mut first = None;
        for stream in Stream::ALL {
            let Some(pump) = &self.pumps[stream.index()] else {
                continue;
            };
            if let Err(e) = register_pump(poller, pump, Token::Stdio(slot, stream)) {
                self.close(poller, stream);
                dropped.insert(stream);
                first.get_or_insert(e);
            }
        }
        match first {
            None => Ok(()),
            Some(error) => Err(Unregistered {
                streams: dropped,
                error,
            }),
        }
    }

    /// Runs the pump of `stream`: call on every readiness of its token. When it has just
    /// ended, it is deregistered and dropped (closing both its fds) and `Some` says so;
    /// `None` if it waits for more, or was gone already.
    ///
    /// With a spool, an output's source may end while the spool still holds bytes: that
    /// is reported as its end (what the process wrote is all in the destination or the
    /// spool: its exit can be reported), and the pump stays to drain the spool, dropped
    /// silently once it is empty.
    pub fn run(&mut self, poller: &Poller, stream: Stream) -> Option<Ended> {
        let pump = self.pumps[stream.index()].as_mut()?;
        let state = pump.run();
        if state == PumpState::Open {
            return None;
        }
        let first = pump.report_end();
        let moved = pump.moved();
        let read = pump.read_from_source();
        if state == PumpState::Done {
            self.close(poller, stream);
        }
        first.then_some(Ended {
            stream,
            moved,
            read,
        })
    }

    /// When an output pump wants to run again without an event: it declined to spool
    /// because its reader was active a moment ago (see `Pump::should_spool`). A face
    /// wakes by then and calls [`ProcessStdio::due_rechecks`].
    pub fn next_recheck(&self) -> Option<Instant> {
        self.pumps
            .iter()
            .flatten()
            .filter_map(Pump::recheck_at)
            .min()
    }

    /// The output streams whose recheck is due at `now`: run them (with
    /// [`ProcessStdio::run`], which reports what ended).
    pub fn due_rechecks(&self, now: Instant) -> Vec<Stream> {
        Stream::OUTPUTS
            .into_iter()
            .filter(|s| {
                self.pumps[s.index()]
                    .as_ref()
                    .and_then(Pump::recheck_at)
                    .is_some_and(|at| at <= now)
            })
            .collect()
    }

    /// Bytes waiting in the spool of `stream` (0 without one).
    pub fn spooled(&self, stream: Stream) -> u64 {
        self.pumps[stream.index()].as_ref().map_or(0, Pump::spooled)
    }

    /// The output still spooled, and when a reader last took some (see [`DeleteLinger`]).
    pub fn backlog(&self) -> Backlog {
        Stream::OUTPUTS
            .iter()
            .filter_map(|s| self.pumps[s.index()].as_ref())
            .filter(|p| p.spooled() > 0)
            .map(|p| Backlog {
                spooled: p.spooled(),
                last_taken: p.last_taken(),
            })
            .fold(Backlog::default(), Backlog::and)
    }

    /// When the destination of `stream` last took bytes, if its pump has a spool.
    pub fn last_taken(&self, stream: Stream) -> Option<Instant> {
        self.pumps[stream.index()]
            .as_ref()
            .and_then(Pump::last_taken)
    }

    /// Bytes the spool of `stream` has discarded under `drop-oldest`.
    pub fn dropped(&self, stream: Stream) -> u64 {
        self.pumps[stream.index()].as_ref().map_or(0, Pump::dropped)
    }

    /// Runs every pump (bytes that arrived before the pumps were registered, or that a
    /// face wants moved now); returns the streams whose pumps ended.
    pub fn run_all(&mut self, poller: &Poller) -> Streams {
        self.run_each(poller, &Stream::ALL)
    }

    fn run_each(&mut self, poller: &Poller, streams: &[Stream]) -> Streams {
        let mut ended = Streams::default();
        for stream in streams {
            if self.run(poller, *stream).is_some() {
                ended.insert(*stream);
            }
        }
        ended
    }

    /// Stops serving `stream` at once: deregisters and drops its pump (an input pump's
    /// destination, the process's stdin, is closed; an output's unread bytes stay in the
    /// process's pipe). False if there was none.
    pub fn close(&mut self, poller: &Poller, stream: Stream) -> bool {
        match self.pumps[stream.index()].take() {
            Some(mut pump) => {
                poller.remove(pump.src_fd());
                poller.remove(pump.dst_fd());
                if let Some(fifo) = pump.take_keepalive() {
                    self.ended_fifos[stream.index()] = Some(fifo);
                }
                true
            }
            None => false,
        }
    }

    /// [`ProcessStdio::close`] for every stream, and lets go of the FIFOs (the process is
    /// deleted).
    pub fn close_all(&mut self, poller: &Poller) {
        for stream in Stream::ALL {
            self.close(poller, stream);
        }
        self.ended_fifos = Default::default();
    }

    /// Bytes the process's output FIFOs hold that no reader has taken yet (`FIONREAD` on
    /// the shim's read end of each, whether its pump is there or gone), summed over
    /// stdout and stderr; `None` when no output goes to a FIFO (null IO, files, a
    /// `binary://` logger).
    pub fn fifo_unread(&self) -> Option<usize> {
        Stream::OUTPUTS
            .iter()
            .filter_map(|s| {
                let i = s.index();
                match &self.pumps[i] {
                    Some(pump) => pump.keepalive(),
                    None => self.ended_fifos[i].as_ref().map(File::as_fd),
                }
            })
            .map(|fd| fionread::pending(fd).unwrap_or(0))
            .reduce(|a, b| a + b)
    }

    /// The process has exited: moves what its output pipes hold right now (before its
    /// exit is acted on, and it saves a wakeup; into the spool, if any, when the
    /// destination is full), and starts the grace its output gets to
    /// drain: [`ProcessStdio::drain_overdue`] from `now + grace` on. Only the first call
    /// starts the grace. Returns the output streams whose pumps ended.
    pub fn exited(&mut self, poller: &Poller, now: Instant, grace: Duration) -> Streams {
        self.drain_deadline.get_or_insert(now + grace);
        for stream in Stream::OUTPUTS {
            if let Some(pump) = self.pumps[stream.index()].as_mut() {
                pump.spool_eagerly();
            }
        }
        self.run_each(poller, &Stream::OUTPUTS)
    }

    /// When the output's grace ends; `None` before [`ProcessStdio::exited`].
    pub fn drain_deadline(&self) -> Option<Instant> {
        self.drain_deadline
    }

    /// Whether the process has exited and its output's grace is over: a face stops
    /// waiting for output pumps that are still open (a descendant holds the pipe).
    pub fn drain_overdue(&self, now: Instant) -> bool {
        self.drain_deadline.is_some_and(|d| now >= d)
    }

    /// Once the grace is over, drops the output pumps whose source holds nothing right
    /// now: a descendant keeps the pipe open but is not writing, and waiting for its EOF
    /// would keep the output open for ever. A source still carrying bytes, or a spool
    /// still holding some, keeps its pump (nothing is cut off mid-stream). Returns the streams dropped.
    pub fn abandon_idle_outputs(&mut self, poller: &Poller, now: Instant) -> Streams {
        let mut dropped = Streams::default();
        if !self.drain_overdue(now) {
            return dropped;
        }
        for stream in Stream::OUTPUTS {
            let idle = self.pumps[stream.index()].as_ref().is_some_and(|p| {
                p.spooled() == 0 && fionread::pending(p.src_fd()).unwrap_or(0) == 0
            });
            if idle && self.close(poller, stream) {
                dropped.insert(stream);
            }
        }
        dropped
    }
}

fn register_pump(poller: &Poller, pump: &Pump, token: Token) -> io::Result<()> {
    poller.add_edge(pump.src_fd(), token, true, false)?;
    match poller.add_edge(pump.dst_fd(), token, false, true) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
        Err(e) => {
            poller.remove(pump.src_fd());
            Err(e)
        }
        Ok(()) => Ok(()),
    }
}

mod snapshot;
pub use snapshot::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_core::epoll::Ready;
    use crate::process_core::pump::Direction;
    use nix::fcntl::OFlag;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;

    use crate::process_core::test_fds::{close_writer, pipe, read_all_now};

    fn output(src: OwnedFd, dst: OwnedFd) -> Pump {
        Pump::new(Direction::Output, src, dst, None).unwrap()
    }

    /// Waits for readiness and runs what is ready, as a loop would; returns the pumps
    /// that ended.
    fn turn(poller: &Poller, stdio: &mut ProcessStdio, ready: &mut Vec<Ready>) -> Vec<Ended> {
        poller.wait(Some(1000), ready).unwrap();
        let mut ended = Vec::new();
        for r in ready.iter() {
            let Token::Stdio(7, stream) = r.token else {
                panic!("unexpected token {:?}", r.token)
            };
            ended.extend(stdio.run(poller, stream));
        }
        ended
    }

    #[test]
    fn a_delete_waits_for_a_spool_only_while_a_reader_takes_it() {
        let t0 = Instant::now();
        let linger = DeleteLinger::new(t0);
        let ms = Duration::from_millis;
        let backlog = |spooled, taken: Option<Duration>| Backlog {
            spooled,
            last_taken: taken.map(|d| t0 + d),
        };
        // Nothing spooled: no wait, whoever reads.
        assert_eq!(linger.check(backlog(0, None), t0), Linger::Drained);
        assert_eq!(
            linger.check(backlog(0, Some(ms(0))), t0 + ms(20_000)),
            Linger::Drained
        );
        // A reader took some a moment ago: wait until it has been idle for READER_IDLE.
        assert_eq!(
            linger.check(backlog(5, Some(ms(0))), t0 + ms(200)),
            Linger::Wait(t0 + READER_IDLE)
        );
        // Nobody took any for READER_IDLE (or ever): drop at once.
        let no_reader = Linger::Drop {
            spooled: 5,
            why: DropWhy::NoReader,
        };
        assert_eq!(
            linger.check(backlog(5, Some(ms(0))), t0 + READER_IDLE),
            no_reader
        );
        assert_eq!(linger.check(backlog(5, None), t0), no_reader);
        // A reader that keeps taking: waited for up to DELETE_LINGER, then dropped.
        let late = t0 + DELETE_LINGER - ms(100);
        assert_eq!(
            linger.check(backlog(5, Some(DELETE_LINGER - ms(200))), late),
            Linger::Wait(t0 + DELETE_LINGER)
        );
        assert_eq!(
            linger.check(backlog(7, Some(DELETE_LINGER)), t0 + DELETE_LINGER),
            Linger::Drop {
                spooled: 7,
                why: DropWhy::TimedOut
            }
        );
        // Streams together: the bytes add up, the latest reader counts.
        assert_eq!(
            backlog(1, Some(ms(5))).and(backlog(2, Some(ms(9)))),
            backlog(3, Some(ms(9)))
        );
        assert_eq!(backlog(1, None).and(Backlog::default()), backlog(1, None));
    }

    use crate::process_core::spool::test_spool_in as spool_in;

    #[test]
    fn the_backlog_counts_spooled_streams_only() {
        use crate::process_core::pump::set_nonblocking;
        use std::os::fd::AsFd;
        let poller = Poller::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (src_r, src_w) = pipe();
        // Nobody reads the destination: once it is full, the rest is spooled.
        let (_dst_r, dst_w) = pipe();
        let mut stdio = ProcessStdio::default();
        stdio.add(
            Stream::Stdout,
            output(src_r, dst_w).with_spool(spool_in(dir.path())),
        );
        stdio.register(&poller, 7).unwrap();
        assert_eq!(stdio.backlog(), Backlog::default());
        // Fill the destination through the pump, then the source (the writer would block).
        let mut writer = File::from(src_w);
        set_nonblocking(writer.as_fd()).unwrap();
        let chunk = [b'x'; 4096];
        for _ in 0..64 {
            let _ = writer.write(&chunk);
            stdio.run(&poller, Stream::Stdout);
        }
        while writer.write(&chunk).is_ok() {}
        assert_eq!(
            stdio.backlog(),
            Backlog::default(),
            "a moment ago the reader took some"
        );
        // The exit spools what the source holds.
        stdio.exited(&poller, Instant::now(), Duration::ZERO);
        let backlog = stdio.backlog();
        assert!(backlog.spooled > 0, "{backlog:?}");
        assert!(backlog.last_taken.is_some_and(|t| t <= Instant::now()));
    }

    #[test]
    fn a_fifos_unread_bytes_are_seen_after_its_pump_has_gone() {
        let poller = Poller::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (writer, keepalive) = fifo::KeepAliveWriter::open(&path).unwrap().into_parts();
        let (src_r, src_w) = pipe();
        let hangup = src_r.try_clone().unwrap();
        let mut stdio = ProcessStdio::default();
        assert_eq!(stdio.fifo_unread(), None, "no FIFO");
        let pump = Pump::new(Direction::Output, src_r, writer.into(), Some(keepalive)).unwrap();
        stdio.add(Stream::Stdout, pump);
        stdio.register(&poller, 7).unwrap();
        let mut src_w = File::from(src_w);
        src_w.write_all(&[b'x'; 1000]).unwrap();
        close_writer(src_w, hangup.as_fd());
        assert!(stdio.run(&poller, Stream::Stdout).is_some(), "EOF");
        assert!(!stdio.is_open(Stream::Stdout), "the pump is gone");
        assert_eq!(stdio.fifo_unread(), Some(1000), "kept for a reader");
        let mut reader = fifo::open_read(&path, true).unwrap();
        let mut got = [0u8; 600];
        assert_eq!(reader.read(&mut got).unwrap(), 600);
        assert_eq!(stdio.fifo_unread(), Some(400));
        // Carried across a live upgrade.
        let now = Instant::now();
        let mut out = crate::process_core::carried_fds::FdsOut::default();
        let saved = stdio.save(&mut out, now);
        assert!(saved.ended_fifos[Stream::Stdout.index()].is_some());
        std::mem::forget(stdio);
        let mut fds = crate::process_core::carried_fds::FdsIn::new(out.fds());
        let mut stdio = ProcessStdio::restore(saved, &mut fds, now).unwrap();
        assert!(fds.untaken().is_empty());
        assert_eq!(stdio.fifo_unread(), Some(400));
        stdio.close_all(&poller);
        assert_eq!(stdio.fifo_unread(), None, "let go at delete");
    }

    /// The CPU time of the calling thread, in ns (schedstat: no unsafe, ns resolution).
    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// Moves `bytes` from a writer thread through one output pump (with a spool or
    /// without) to a reader thread that keeps up, as a face's loop would; returns the
    /// CPU time the pumping thread took.
    fn pump_cpu_ns(bytes: usize, spool: Option<crate::process_core::spool::Spool>) -> u64 {
        let poller = Poller::new().unwrap();
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let mut pump = output(src_r, dst_w);
        if let Some(spool) = spool {
            pump = pump.with_spool(spool);
        }
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stdout, pump);
        stdio.register(&poller, 7).unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = File::from(src_w);
            let chunk = vec![b'x'; 64 << 10];
            for _ in 0..bytes / chunk.len() {
                w.write_all(&chunk).unwrap();
            }
        });
        let reader = std::thread::spawn(move || read_all_now(File::from(dst_r)));
        let mut ready = Vec::new();
        let started = thread_cpu_ns();
        while stdio.is_open(Stream::Stdout) {
            let timeout = stdio.next_recheck().map(|at| {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                u16::try_from(ms).unwrap_or(u16::MAX)
            });
            poller.wait(timeout.or(Some(1000)), &mut ready).unwrap();
            stdio.run(&poller, Stream::Stdout);
            for stream in stdio.due_rechecks(Instant::now()) {
                stdio.run(&poller, stream);
            }
        }
        let cpu = thread_cpu_ns() - started;
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), bytes, "every byte");
        cpu
    }

    /// What the spool costs the direct path (issue 13: streaming must not slow down):
    /// the pumping thread's CPU time for 256 MiB with a spool attached (and never used:
    /// the reader keeps up) and without, interleaved. Not a wall-clock rate: CPU time
    /// moves far less with the machine's load. `cargo test --release -- --ignored`.
    #[test]
    #[ignore]
    fn the_direct_path_costs_the_same_with_a_spool() {
        let dir = tempfile::tempdir().unwrap();
        const BYTES: usize = 256 << 20;
        const ROUNDS: usize = 25;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let spool = || Some(spool_in(dir.path()));
            if round % 2 == 0 {
                with.push(pump_cpu_ns(BYTES, spool()));
                without.push(pump_cpu_ns(BYTES, None));
            } else {
                without.push(pump_cpu_ns(BYTES, None));
                with.push(pump_cpu_ns(BYTES, spool()));
            }
        }
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let ms = |v: &[u64]| v.iter().map(|n| *n as f64 / 1e6).collect::<Vec<_>>();
        let ratios: Vec<f64> = with
            .iter()
            .zip(&without)
            .map(|(w, wo)| *w as f64 / *wo as f64)
            .collect();
        eprintln!(
            "pump CPU for 256 MiB, median of {ROUNDS}: with a spool {:.1} ms, without {:.1} \
             ms; median of the rounds' ratios {:.3}",
            median(&ms(&with)),
            median(&ms(&without)),
            median(&ratios)
        );
    }

    #[test]
    fn streams_are_a_small_set() {
        let mut s = Streams::default();
        assert_eq!(s.outputs(), 0);
        s.insert(Stream::Stdin);
        s.insert(Stream::Stderr);
        assert!(s.contains(Stream::Stdin) && s.contains(Stream::Stderr));
        assert!(!s.contains(Stream::Stdout));
        assert_eq!(s.outputs(), 1);
        for stream in Stream::ALL {
            assert_eq!(Stream::from_bits(stream.to_bits()), Some(stream));
        }
        assert_eq!(Stream::from_bits(3), None);
        assert_eq!(Streams::from(Stream::Stdin).outputs(), 0);
        assert_eq!(Streams::from(Stream::Stdout).outputs(), 1);
    }

    #[test]
    fn runs_on_readiness_and_drops_an_ended_pump() {
        let poller = Poller::new().unwrap();
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let hangup = src_r.try_clone().unwrap();
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stdout, output(src_r, dst_w));
        stdio.register(&poller, 7).unwrap();
        assert_eq!(stdio.open_outputs(), 1);
        let mut ready = Vec::new();
        let mut writer = File::from(src_w);
        writer.write_all(b"hello").unwrap();
        assert!(turn(&poller, &mut stdio, &mut ready).is_empty());
        close_writer(writer, hangup.as_fd());
        let ended = turn(&poller, &mut stdio, &mut ready);
        assert_eq!(
            ended,
            [Ended {
                stream: Stream::Stdout,
                moved: 5,
                read: 5
            }]
        );
        assert!(stdio.is_empty() && !stdio.is_open(Stream::Stdout));
        let mut out = String::new();
        File::from(dst_r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello", "EOF: the pump's write end was closed");
        poller.wait(Some(0), &mut ready).unwrap();
        assert!(ready.is_empty(), "deregistered: {ready:?}");
    }

    #[test]
    fn a_regular_file_destination_needs_no_registration() {
        let poller = Poller::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = File::create(&path).unwrap();
        let (src_r, src_w) = pipe();
        let hangup = src_r.try_clone().unwrap();
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stderr, output(src_r, file.into()));
        stdio.register(&poller, 7).unwrap();
        let mut src_w = File::from(src_w);
        src_w.write_all(b"to a file").unwrap();
        close_writer(src_w, hangup.as_fd());
        let mut ready = Vec::new();
        let ended = turn(&poller, &mut stdio, &mut ready);
        assert_eq!(ended.len(), 1, "EOF after the bytes: {ended:?}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "to a file");
    }

    #[test]
    fn a_pump_that_cannot_be_registered_is_dropped_and_named() {
        let poller = Poller::new().unwrap();
        let (src_r, _src_w) = pipe();
        let (_dst_r, dst_w) = pipe();
        let file = tempfile::tempfile().unwrap();
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stdout, output(src_r, dst_w));
        // epoll cannot watch a regular file as a source.
        let (_in_r, in_w) = pipe();
        stdio.add(
            Stream::Stdin,
            Pump::new(Direction::Input, file.into(), in_w, None).unwrap(),
        );
        let err = stdio.register(&poller, 7).unwrap_err();
        assert_eq!(err.error.raw_os_error(), Some(libc::EPERM));
        assert!(err.streams.contains(Stream::Stdin) && err.streams.outputs() == 0);
        assert!(!stdio.is_open(Stream::Stdin) && stdio.is_open(Stream::Stdout));
    }

    #[test]
    fn the_exit_moves_what_is_buffered_and_starts_the_grace() {
        let poller = Poller::new().unwrap();
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let (_dst2_r, dst2_w) = pipe();
        let hangup = out_r.try_clone().unwrap();
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stdout, output(out_r, dst_w));
        stdio.add(Stream::Stderr, output(err_r, dst2_w));
        stdio.register(&poller, 7).unwrap();
        let mut out = File::from(out_w);
        out.write_all(b"last words").unwrap();
        close_writer(out, hangup.as_fd());
        // stderr's writer lives on (a descendant holds it), idle.
        let _held = err_w;
        let now = Instant::now();
        assert!(
            !stdio.drain_overdue(now + Duration::from_secs(100)),
            "no exit yet"
        );
        let ended = stdio.exited(&poller, now, Duration::from_secs(2));
        assert!(ended.contains(Stream::Stdout) && ended.outputs() == 1);
        assert_eq!(stdio.drain_deadline(), Some(now + Duration::from_secs(2)));
        // A second exit does not restart the grace.
        stdio.exited(
            &poller,
            now + Duration::from_secs(1),
            Duration::from_secs(2),
        );
        assert_eq!(stdio.drain_deadline(), Some(now + Duration::from_secs(2)));
        let mut moved = vec![0u8; 64];
        let n = File::from(dst_r).read(&mut moved).unwrap();
        assert_eq!(&moved[..n], b"last words");

        assert!(!stdio.drain_overdue(now + Duration::from_millis(1999)));
        let none = Streams::default();
        let early = stdio.abandon_idle_outputs(&poller, now + Duration::from_millis(1999));
        assert_eq!(early, none);
        assert!(stdio.drain_overdue(now + Duration::from_secs(2)));
        let dropped = stdio.abandon_idle_outputs(&poller, now + Duration::from_secs(2));
        assert!(dropped.contains(Stream::Stderr));
        assert_eq!(stdio.open_outputs(), 0);
    }

    #[test]
    fn a_source_still_carrying_bytes_is_not_abandoned() {
        let poller = Poller::new().unwrap();
        let (src_r, src_w) = pipe();
        // A full destination: the bytes stay in the source.
        let (_dst_r, dst_w) = pipe();
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stdout, output(src_r, dst_w));
        stdio.register(&poller, 7).unwrap();
        let mut fill = File::from(src_w);
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fill),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        )
        .unwrap();
        let chunk = [1u8; 4096];
        // Fill the destination through the pump, then the source.
        for _ in 0..64 {
            let _ = fill.write(&chunk);
            stdio.run(&poller, Stream::Stdout);
        }
        while fill.write(&chunk).is_ok() {}
        let now = Instant::now();
        stdio.exited(&poller, now, Duration::ZERO);
        assert!(stdio.drain_overdue(now));
        assert_eq!(stdio.abandon_idle_outputs(&poller, now), Streams::default());
        assert!(stdio.is_open(Stream::Stdout));
    }
}
