//! When a process's exit may be reported, given its output: one rule for everyone who
//! reports an exit after which a reader stops reading (issue 23: "an exit is reported only
//! after its pty master has given EOF or EIO and everything read from it is written").
//!
//! Two waits, each bounded, from the moment the process was reaped:
//!
//! 1. **The sources end.** Every output pump's source reaches its end: a pipe's last
//!    writer is gone, a pty master gives EIO. Once it has, everything the process wrote
//!    is in the destination or in the spool. A descendant that keeps the pipe (or the
//!    pty's slave) open would hold this for ever, so it is bounded by
//!    [`OUTPUT_DRAIN_WAIT`]. The containerd face reports its exits at this point
//!    (`containerd::exit_report`), and its Waits then wait for the spools.
//! 2. **The spools drain.** Bytes still spooled reach the destination as a reader takes
//!    what is ahead of them. This waits only while a reader is taking them, by the rule a
//!    delete uses ([`DeleteLinger`]: a reader that took bytes in the last
//!    [`READER_IDLE`](super::process_stdio::READER_IDLE), up to
//!    [`DELETE_LINGER`](super::process_stdio::DELETE_LINGER) after the exit): a process
//!    whose output nobody reads is reported at once, one whose reader is away no later
//!    than that.
//!
//! [`output_at_exit`] answers both for one process. The standalone face records the exit
//! (`exitcode`, then `exit`'s EOF) once it says so: a manager that stops copying output
//! at `exit`'s EOF finds the rest in the FIFO.

use super::process_stdio::{DeleteLinger, Linger, ProcessStdio};
use std::time::{Duration, Instant};

/// How long an exit waits for its output sources to end (a pipe's last writer gone, a
/// pty master's EIO) after the process was reaped. Clients (ctr 1.6, a manager reading
/// until `exit`'s EOF) stop reading output once they learn of the exit; bounded, because
/// a child the process left behind may hold its output open.
pub const OUTPUT_DRAIN_WAIT: Duration = Duration::from_millis(500);

/// Whether an exit may be reported now, as far as the process's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputAtExit {
    /// Every source has ended and everything read from it is in the destination.
    Delivered,
    /// Not yet: look again by then (or on the next event of the process's pumps).
    Wait(Instant),
    /// The waits are over with output still on its way: `sources` have not ended (a
    /// descendant holds them, or the destination is full without a spool), `spooled`
    /// bytes wait for a reader. The exit goes without them; they follow.
    Undelivered { sources: usize, spooled: u64 },
}

/// Where the output of a process reaped at `reaped` stands at `now` (see the module doc).
/// Call after [`ProcessStdio::exited`] (which moves what the sources hold and lets the
/// spool take the rest) and again on each of the pumps' events and by the instant a
/// [`OutputAtExit::Wait`] names.
pub fn output_at_exit(stdio: &ProcessStdio, reaped: Instant, now: Instant) -> OutputAtExit {
    let sources = stdio.open_sources();
    let backlog = stdio.backlog();
    if sources == 0 && backlog.spooled == 0 {
        return OutputAtExit::Delivered;
    }
    let sources_wait = reaped + OUTPUT_DRAIN_WAIT;
    if sources > 0 && now < sources_wait {
        return OutputAtExit::Wait(sources_wait);
    }
    match DeleteLinger::new(reaped).check(backlog, now) {
        Linger::Wait(at) => OutputAtExit::Wait(at),
        Linger::Drained | Linger::Drop { .. } => OutputAtExit::Undelivered {
            sources,
            spooled: backlog.spooled,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process_core::epoll::Poller;
    use crate::process_core::process_stdio::{Stream, READER_IDLE};
    use crate::process_core::pump::{set_nonblocking, Direction, Pump};
    use crate::process_core::test_fds::{close_writer, pipe};
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, OwnedFd};

    use crate::process_core::spool::test_spool_in as spool_in;

    /// One stdout pump from a pipe into a pipe nobody reads yet, with a spool.
    /// Also a copy of the source's read end, to see its writers gone ([`close_writer`]).
    fn stdout_pump(poller: &Poller, dir: &std::path::Path) -> (ProcessStdio, File, File, OwnedFd) {
        let (src_r, src_w) = pipe();
        let (dst_r, dst_w) = pipe();
        let hangup = src_r.try_clone().unwrap();
        let pump = Pump::new(Direction::Output, src_r, dst_w, None)
            .unwrap()
            .with_spool(spool_in(dir));
        let mut stdio = ProcessStdio::default();
        stdio.add(Stream::Stdout, pump);
        stdio.register(poller, 7).unwrap();
        (stdio, File::from(src_w), File::from(dst_r), hangup)
    }

    #[test]
    fn output_with_nothing_left_lets_the_exit_go_at_once() {
        let poller = Poller::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mut stdio, mut writer, mut reader, hangup) = stdout_pump(&poller, dir.path());
        writer.write_all(b"last words").unwrap();
        close_writer(writer, hangup.as_fd());
        let now = Instant::now();
        stdio.exited(&poller, now, Duration::from_secs(2));
        assert_eq!(output_at_exit(&stdio, now, now), OutputAtExit::Delivered);
        let mut got = [0u8; 16];
        let n = reader.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"last words");
    }

    #[test]
    fn a_source_still_open_holds_the_exit_for_the_drain_wait() {
        let poller = Poller::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A descendant holds the writer, idle.
        let (mut stdio, _writer, _reader, _) = stdout_pump(&poller, dir.path());
        let now = Instant::now();
        stdio.exited(&poller, now, Duration::from_secs(2));
        assert_eq!(
            output_at_exit(&stdio, now, now),
            OutputAtExit::Wait(now + OUTPUT_DRAIN_WAIT)
        );
        assert_eq!(
            output_at_exit(&stdio, now, now + OUTPUT_DRAIN_WAIT),
            OutputAtExit::Undelivered {
                sources: 1,
                spooled: 0
            }
        );
    }

    #[test]
    fn spooled_output_holds_the_exit_while_a_reader_takes_it() {
        let poller = Poller::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mut stdio, mut writer, mut reader, hangup) = stdout_pump(&poller, dir.path());
        set_nonblocking(writer.as_fd()).unwrap();
        set_nonblocking(reader.as_fd()).unwrap();
        // Fill the destination through the pump, then the source; the exit spools the
        // source's bytes.
        let chunk = [b'x'; 4096];
        let mut wrote = 0;
        for _ in 0..64 {
            wrote += writer.write(&chunk).unwrap_or(0);
            stdio.run(&poller, Stream::Stdout);
        }
        while let Ok(n) = writer.write(&chunk) {
            wrote += n;
        }
        close_writer(writer, hangup.as_fd());
        let reaped = Instant::now();
        stdio.exited(&poller, reaped, Duration::from_secs(2));
        assert_eq!(stdio.open_sources(), 0, "the source's end is in the spool");
        assert!(stdio.backlog().spooled > 0);
        // The reader took bytes a moment ago (the pump's last progress): wait.
        assert!(matches!(
            output_at_exit(&stdio, reaped, Instant::now()),
            OutputAtExit::Wait(_)
        ));
        // Nobody takes any for READER_IDLE: the exit goes, the rest follows.
        let later = Instant::now() + READER_IDLE;
        assert!(matches!(
            output_at_exit(&stdio, reaped, later),
            OutputAtExit::Undelivered { sources: 0, spooled } if spooled > 0
        ));
        // A reader takes everything: delivered once the spool has drained.
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        while output_at_exit(&stdio, reaped, Instant::now()) != OutputAtExit::Delivered {
            match reader.read(&mut buf) {
                Ok(n) => got += n,
                Err(_) => {
                    stdio.run(&poller, Stream::Stdout);
                }
            }
        }
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            got += n;
        }
        assert_eq!(got, wrote, "every byte reached the destination");
    }
}
