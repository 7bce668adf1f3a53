//! `close-stdin`: end a process's input (EOF), which its supervisor otherwise keeps open
//! for ever so that managers can come and go.

use super::args::{self, Spec};
use super::attach::resolve_dir;
use super::control::{self, Request};
use super::depot::Depot;
use super::errors::CliResult;

/// `close-stdin --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 close-stdin (CONTAINER-ID [PROCESS-ID] | --dir DIR)

Closes the process's stdin, so that a process reading it (cat, sh -c 'cat; ...') gets
EOF. Its supervisor holds the stdin FIFO open while the process lives, so a manager that
closes its end (or dies) does not end the process's input; this tells the supervisor to
let go. The process then reads EOF as soon as every manager still writing to the FIFO
has closed it and everything written before has been delivered: nothing is lost. A tty
process is sent its terminal's EOF character (Ctrl-D) instead, as if typed: EOF at the
start of a line, the end of a partial line otherwise, nothing if its terminal is in raw
mode. Final (later attaches cannot write to stdin), asynchronous (returns before the
process has read its input), and fine to repeat or to use after the exit. After its
supervisor was killed (its keeper has the process): done already for a process without a
terminal (its stdin closed with the supervisor), refused for a tty process (nobody is
left to send the EOF character). See also `attach --close-stdin`.

A manager that knows only the directory writes the line \"close-stdin\" to the
directory's `control` FIFO (open it non-blocking: no reader means the process exited).";

const SPEC: Spec = Spec {
    valued: &[("--dir", None)],
    flags: &[],
};

/// Runs the subcommand.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let dir = resolve_dir(depot, &p, USAGE)?;
    control::send(&dir, Request::CloseStdin).map(drop)
}
