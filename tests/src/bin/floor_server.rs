//! `floor_server <socket>`: a ttrpc server that does nothing, in a process of its own, for
//! `make bench-shim`'s paced floor (`tether_tests::shim_bench::floor_server`). Its stdin
//! is a pipe whose other end the bench holds: when the bench ends, however it ends, the
//! pipe hangs up and the server removes its socket and exits.
#![deny(unsafe_code)]

use std::os::fd::AsFd;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(socket) = std::env::args_os().nth(1) else {
        eprintln!("usage: floor_server <socket> (stdin: a pipe from the parent)");
        return ExitCode::from(2);
    };
    let stdin = std::io::stdin();
    match tether_tests::shim_bench::floor_server::serve(socket.as_ref(), stdin.as_fd()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor_server: {e}");
            ExitCode::FAILURE
        }
    }
}
