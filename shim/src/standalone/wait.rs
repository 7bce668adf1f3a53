//! `wait`: block until a process has exited, print its exit code and exit with it.

use super::args::{self, Spec};
use super::attach::resolve_dir;
use super::depot::Depot;
use super::errors::{CliError, CliResult};
use super::exit_record::exit_record_of;
use std::io::Read;

/// `wait --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 wait [--json] (CONTAINER-ID [PROCESS-ID] | --dir DIR)

Blocks until the process has exited (reads the `exit` FIFO to EOF), then prints its exit
code (--json: {\"exit_code\":N,\"exited_at\":\"RFC 3339\"}) and exits with it. Works the same
after the process has exited, any number of times. A supervisor killed alone changes
nothing: its keeper records the exit code. If the keeper was killed too (nobody records
the exit code), says so at once instead: exit code 116 while the process still runs (its
pid is printed), 117 once it is gone and its status lost.";

const SPEC: Spec = Spec {
    valued: &[("--dir", None)],
    flags: &[("--json", None)],
};

/// Runs the subcommand; returns the process's exit code.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<u8> {
    let p = args::parse(argv, SPEC)?;
    let dir = resolve_dir(depot, &p, USAGE)?;
    let mut exit = fifo::open_read(&dir.exit(), false).map_err(CliError::fifo)?;
    let mut sink = [0u8; 64];
    loop {
        match exit.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CliError::io("read", &dir.exit(), &e)),
        }
    }
    let rec = exit_record_of(&dir)?;
    let code = u8::try_from(rec.code).unwrap_or(255);
    if p.flag("--json") {
        println!(
            "{}",
            serde_json::json!({"exit_code": rec.code, "exited_at": fifo::rfc3339::format(rec.exited_at)})
        );
    } else {
        println!("{code}");
    }
    Ok(code)
}
