//! `exec`: start a process in a running container from an OCI process spec.

use super::args::{self, Spec};
use super::depot::Depot;
use super::errors::{CliError, CliResult};
use super::io_owner::{self, IoOwner, GID_FLAG, UID_FLAG};
use super::launch::launch;
use super::supervise::{Kind, Plan};
use crate::supervisor::go_json;
use runc_wrapper::ContainerStatus;
use serde_json::Value;
use std::io::Read;

/// `exec --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 exec --process FILE [--tty] [--io-uid UID --io-gid GID] [--json]
                                      CONTAINER-ID PROCESS-ID

Starts a process in the running container from FILE, an OCI process spec (JSON, as for
`runc exec --process`; \"-\" reads it from stdin). --tty gives it a pty (sets
process.terminal). It gets the process directory <depot>/CONTAINER-ID/processes/PROCESS-ID/
and a detached supervisor. Prints its pid (--json: {\"container\",\"process\",\"pid\",\"dir\"}).";

const SPEC: Spec = Spec {
    valued: &[
        ("--process", Some("-p")),
        (UID_FLAG, None),
        (GID_FLAG, None),
    ],
    flags: &[("--tty", Some("-t")), ("--json", None)],
};

/// Most bytes read from a process spec.
const MAX_SPEC: u64 = 4 << 20;

/// Runs the subcommand.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(2, 2, USAGE)?;
    let (id, process_id) = (pos[0].as_str(), pos[1].as_str());
    Depot::check_container_id(id)?;
    fifo::validate_id(process_id).map_err(CliError::fifo)?;
    let io_owner = IoOwner::from_args(&p)?;
    let file = p
        .value("--process")
        .ok_or_else(|| CliError::Usage(format!("--process is required\n{USAGE}")))?;
    let (spec, tty) = read_spec(file, p.flag("--tty"))?;

    depot.container(id)?;
    match depot.runc(None, None).state(id) {
        Ok(s) if s.status == ContainerStatus::Running => {}
        Ok(s) => {
            return Err(CliError::NotFound(format!(
                "container {id:?} is not running (status {})",
                s.status
            )))
        }
        Err(e) if e.is_not_found() => {
            return Err(CliError::NotFound(format!("container {id:?} is gone")))
        }
        Err(e) => return Err(CliError::runc(e)),
    }
    let procs = depot.processes_dir(id);
    let dir = io_owner::create_process_dir(&procs, process_id, io_owner).map_err(|e| match e {
        fifo::Error::AlreadyExists { path } => CliError::Exists {
            what: format!("process {process_id:?} of container {id:?}"),
            path,
        },
        other => CliError::fifo(other),
    })?;
    let plan = Plan {
        depot: depot.clone(),
        container: id.to_string(),
        dir: dir.path().to_path_buf(),
        kind: Kind::Exec,
        tty,
        io_owner,
    };
    match launch(&plan, &spec) {
        Ok(pid) => {
            super::cli::print_started(p.flag("--json"), id, process_id, pid, dir.path());
            Ok(())
        }
        Err(e) => {
            let _ = dir.remove();
            Err(e)
        }
    }
}

/// Reads and checks the process spec; returns it (with `terminal` forced on by `--tty`)
/// and whether it has a terminal.
fn read_spec(file: &str, force_tty: bool) -> CliResult<(Vec<u8>, bool)> {
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin().take(MAX_SPEC).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_SPEC).read_to_end(&mut bytes))
    };
    read.map_err(|e| CliError::InvalidSpec(format!("process spec {file}: {e}")))?;
    let bad = |why: &str| CliError::InvalidSpec(format!("process spec {file}: {why}"));
    // Bytes that are not UTF-8 (args and env are bytes) are read as runc reads them.
    let mut value: Value =
        serde_json::from_str(&go_json::as_go_reads(&bytes)).map_err(|e| bad(&e.to_string()))?;
    let obj = value
        .as_object_mut()
        .ok_or_else(|| bad("not a JSON object"))?;
    let args_ok = obj
        .get("args")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string));
    if !args_ok {
        return Err(bad("\"args\" must be a non-empty array of strings"));
    }
    if !obj.contains_key("cwd") {
        obj.insert("cwd".into(), Value::String("/".into()));
    }
    if force_tty {
        obj.insert("terminal".into(), Value::Bool(true));
    }
    let tty = obj
        .get("terminal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let spec = serde_json::to_vec(&value).map_err(|e| bad(&e.to_string()))?;
    Ok((spec, tty))
}
