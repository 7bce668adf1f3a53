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
    /// How its source ended (`None`: the destination went away first).
    pub how: Option<crate::process_core::pump::SourceEnd>,
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
        let how = pump.source_end();
        if state == PumpState::Done {
            self.close(poller, stream);
        }
        first.then_some(Ended {
            stream,
            moved,
            read,
            how,
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

mod linger;
pub use linger::{Backlog, DeleteLinger, DropWhy, Linger, DELETE_LINGER, READER_IDLE};
mod snapshot;
pub use snapshot::*;

#[cfg(test)]
mod tests;
