//! The standalone face's command line: global options, help, dispatch to one file per
//! subcommand.

use super::depot::{Depot, DEFAULT_DEPOT};
use super::errors::{CliError, CliResult, EXIT_CODES_HELP};
use super::spool_flags;
use super::supervise::Plan;
use super::{attach, close_stdin, delete, exec, kill, run, status, supervise, wait};
use std::path::PathBuf;

/// The subcommands that select the standalone face (argv[1]).
pub const SUBCOMMANDS: &[&str] = &[
    "run",
    "exec",
    "attach",
    "close-stdin",
    "wait",
    "kill",
    "ps",
    "list",
    "state",
    "delete",
    "help",
    "supervise",
];

/// Top-level help.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 COMMAND [OPTIONS] ...

A reattachable process supervisor (the role of Garden's dadoo): every process gets a
directory <depot>/<container-id>/processes/<process-id>/ holding the FIFOs stdin stdout
stderr winsz exit control and the files exitcode pidfile log.json, so a manager that
knows only the directory can attach, resize ({\"columns\":N,\"rows\":N} on winsz), close
stdin (\"close-stdin\" on control) and wait.

Commands:
  run          create and start a container from a bundle
  exec         start a process in a running container (or a pea: its own container)
  attach       stream a process's stdin/stdout/stderr (again and again)
  close-stdin  close a process's stdin (it reads EOF)
  wait         wait for a process to exit; print and exit with its code
  kill         signal a container's init or one of its processes
  ps           list a container's processes
  list         list the depot's containers
  state        a container's state and processes
  delete       delete a container and its depot directory
Run COMMAND --help for its options.

Global options (every command):
  --depot DIR       the depot (default $TETHER_DEPOT, else /run/tether/depot)
  --runc PATH       the runc binary (default $TETHER_RUNC, else runc on PATH)
  --runc-root DIR   runc's --root (default <depot>/.runc)

Without a COMMAND the binary is a containerd shim v2 (see -h).";

fn global_help() -> String {
    format!("{USAGE}\n\n{EXIT_CODES_HELP}")
}

/// Runs the standalone face; `argv` starts with the subcommand. Returns the exit code.
pub fn main(argv: &[String]) -> u8 {
    let Some((cmd, rest)) = argv.split_first() else {
        println!("{}", global_help());
        return 0;
    };
    if cmd == "help" || rest.iter().any(|a| a == "--help" || a == "-h") {
        let topic = if cmd == "help" {
            rest.first().map(String::as_str).unwrap_or("")
        } else {
            cmd.as_str()
        };
        println!("{}\n\n{EXIT_CODES_HELP}", help_for(topic));
        return 0;
    }
    match dispatch(cmd, rest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("containerd-shim-tether-v2 {cmd}: {e}");
            e.exit_code()
        }
    }
}

fn help_for(cmd: &str) -> String {
    // Shared by the commands that create a process directory.
    let io_owner_help = matches!(cmd, "run" | "exec").then_some(super::io_owner::HELP);
    let text = match cmd {
        "run" => run::USAGE,
        "exec" => exec::USAGE,
        "attach" => attach::USAGE,
        "close-stdin" => close_stdin::USAGE,
        "wait" => wait::USAGE,
        "kill" => kill::USAGE,
        "ps" => status::PS_USAGE,
        "list" => status::LIST_USAGE,
        "state" => status::STATE_USAGE,
        "delete" => delete::USAGE,
        _ => USAGE,
    };
    if text == USAGE {
        text.to_string()
    } else {
        let extra = io_owner_help
            .map(|h| format!("\n\n{h}\n\n{}", spool_flags::HELP))
            .unwrap_or_default();
        format!(
            "{text}{extra}\n\nGlobal options: --depot DIR, --runc PATH, --runc-root DIR (see --help)."
        )
    }
}

/// The global options, from the command line or the environment.
fn depot_from(argv: &[String]) -> Depot {
    let mut depot: Option<PathBuf> = std::env::var_os("TETHER_DEPOT").map(PathBuf::from);
    let mut runc: Option<PathBuf> = std::env::var_os("TETHER_RUNC").map(PathBuf::from);
    let mut root: Option<PathBuf> = None;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        for (name, slot) in [
            ("--depot", &mut depot),
            ("--runc", &mut runc),
            ("--runc-root", &mut root),
        ] {
            if a == name {
                if let Some(v) = it.clone().next() {
                    *slot = Some(PathBuf::from(v));
                }
            } else if let Some(v) = a.strip_prefix(&format!("{name}=")) {
                *slot = Some(PathBuf::from(v));
            }
        }
    }
    let root_dir = depot.unwrap_or_else(|| PathBuf::from(DEFAULT_DEPOT));
    // Relative paths would change meaning in the supervisor, which works from "/".
    let abs = |p: PathBuf| {
        if p.is_absolute() {
            p
        } else {
            std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
        }
    };
    let runc = runc.map(|r| {
        if r.components().count() > 1 {
            abs(r)
        } else {
            r
        }
    });
    Depot::new(abs(root_dir), runc, root.map(abs))
}

fn dispatch(cmd: &str, rest: &[String]) -> CliResult<u8> {
    let depot = depot_from(rest);
    let ok = |r: CliResult<()>| r.map(|()| 0);
    match cmd {
        "run" => ok(run::main(&depot, rest)),
        "exec" => ok(exec::main(&depot, rest)),
        "attach" => attach::main(&depot, rest),
        "close-stdin" => ok(close_stdin::main(&depot, rest)),
        "wait" => wait::main(&depot, rest),
        "kill" => ok(kill::main(&depot, rest)),
        "ps" => ok(status::ps(&depot, rest)),
        "list" => ok(status::list(&depot, rest)),
        "state" => ok(status::state(&depot, rest)),
        "delete" => ok(delete::main(&depot, rest)),
        "supervise" => supervise_cmd(depot, rest),
        other => Err(CliError::Usage(format!("unknown command {other:?}"))),
    }
}

/// The hidden `supervise` subcommand (started by run/exec, never by people).
fn supervise_cmd(depot: Depot, rest: &[String]) -> CliResult<u8> {
    Ok(supervise::main(Plan::from_args(depot, rest)?))
}
