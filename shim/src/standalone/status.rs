//! `list`, `state` and `ps`: what the depot and runc know, for people and (`--json`) for
//! managers.

use super::args::{self, Spec};
use super::depot::{live_keeper, live_supervisor, Depot};
use super::errors::{CliError, CliResult};
use super::pea::PeaRecord;
use serde_json::{json, Value};

/// `list --help`.
pub const LIST_USAGE: &str = "\
usage: containerd-shim-tether-v2 list [--json]

Lists the depot's containers: id, status (runc's, or \"deleted\" if runc no longer knows
it), init pid, bundle. --json: an array of {\"id\",\"status\",\"pid\",\"bundle\",\"init\",
\"external\"} (external: a container another runtime runs, see exec --help). Peas are
listed by ps, as processes of their container.";

/// `state --help`.
pub const STATE_USAGE: &str = "\
usage: containerd-shim-tether-v2 state [--json] CONTAINER-ID

Prints the container's state and its processes. --json:
{\"id\",\"status\",\"pid\",\"bundle\",\"init\",\"processes\":[...as ps --json...]}.";

/// `ps --help`.
pub const PS_USAGE: &str = "\
usage: containerd-shim-tether-v2 ps [--json] CONTAINER-ID

Lists the container's supervised processes: id, pid, status (running, exited; kept when
its supervisor was killed and its keeper has taken the process over: the output is still
delivered and the exit code will be recorded, but input and resizes no longer reach it;
when the keeper was killed too: unsupervised while the process still runs, lost once it
is gone with its exit status), exit code, directory. --json: an array of
{\"id\",\"kind\",\"runc_id\",\"pid\",\"status\",\"exit_code\",\"exited_at\",\"dir\"}, kind
\"process\" or \"pea\" (its own runc container, runc_id; see exec --help).";

const SPEC: Spec = Spec {
    valued: &[],
    flags: &[("--json", None)],
};

fn container_json(depot: &Depot, id: &str) -> CliResult<Value> {
    let meta = depot.container(id)?;
    let (status, pid) = match depot.for_container(&meta).runc(None, None).state(id) {
        Ok(s) => (s.status.to_string(), s.pid),
        Err(e) if e.is_not_found() => ("deleted".to_string(), 0),
        Err(e) => return Err(CliError::runc(e)),
    };
    Ok(json!({
        "id": id, "status": status, "pid": pid, "bundle": meta.bundle, "init": meta.init,
        "external": meta.external.is_some(),
    }))
}

fn processes_json(depot: &Depot, id: &str) -> CliResult<Vec<Value>> {
    let mut out = Vec::new();
    for pid_name in depot.process_ids(id)? {
        let dir = depot.process_dir(id, Some(&pid_name))?;
        let pid = dir.read_pid().ok().flatten().unwrap_or(0);
        let exit = dir.read_exit().ok().flatten();
        let status = match (&exit, live_supervisor(&dir)) {
            (Some(_), _) => "exited",
            (None, Some(_)) => "running",
            // The supervisor is gone without an exit code (killed); its keeper has the
            // process and will record its exit.
            (None, None) if live_keeper(&dir).is_some() => "kept",
            // Killed, and its keeper too.
            (None, None) => match dir.fate() {
                Ok(fifo::Fate::Exited(_)) => "exited",
                Ok(fifo::Fate::Running(_)) => "unsupervised",
                Ok(fifo::Fate::Lost(_)) | Err(_) => "lost",
            },
        };
        let pea = PeaRecord::read(dir.path());
        out.push(json!({
            "id": pid_name,
            "kind": if pea.is_some() { "pea" } else { "process" },
            "runc_id": pea.map(|p| p.runc_id),
            "pid": pid,
            "status": status,
            "exit_code": exit.map(|e| e.code),
            "exited_at": exit.map(|e| fifo::rfc3339::format(e.exited_at)),
            "dir": dir.path(),
        }));
    }
    Ok(out)
}

fn print_json(v: &Value) {
    println!("{v}");
}

/// `list`.
pub fn list(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    p.positionals(0, 0, LIST_USAGE)?;
    let mut all = Vec::new();
    for id in depot.container_ids()? {
        all.push(container_json(depot, &id)?);
    }
    if p.flag("--json") {
        print_json(&Value::Array(all));
    } else {
        println!("{:<24} {:<10} {:>8}  BUNDLE", "ID", "STATUS", "PID");
        for c in &all {
            println!(
                "{:<24} {:<10} {:>8}  {}",
                c["id"].as_str().unwrap_or_default(),
                c["status"].as_str().unwrap_or_default(),
                c["pid"],
                c["bundle"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn print_processes(procs: &[Value]) {
    println!(
        "{:<24} {:>8} {:<8} {:>5}  DIR",
        "PROCESS", "PID", "STATUS", "EXIT"
    );
    for p in procs {
        println!(
            "{:<24} {:>8} {:<8} {:>5}  {}",
            p["id"].as_str().unwrap_or_default(),
            p["pid"],
            p["status"].as_str().unwrap_or_default(),
            p["exit_code"]
                .as_i64()
                .map_or_else(|| "-".to_string(), |c| c.to_string()),
            p["dir"].as_str().unwrap_or_default()
        );
    }
}

/// `ps`.
pub fn ps(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(1, 1, PS_USAGE)?;
    depot.container(&pos[0])?;
    let procs = processes_json(depot, &pos[0])?;
    if p.flag("--json") {
        print_json(&Value::Array(procs));
    } else {
        print_processes(&procs);
    }
    Ok(())
}

/// `state`.
pub fn state(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(1, 1, STATE_USAGE)?;
    let mut c = container_json(depot, &pos[0])?;
    let procs = processes_json(depot, &pos[0])?;
    if p.flag("--json") {
        c["processes"] = Value::Array(procs);
        print_json(&c);
    } else {
        println!(
            "container {} {} pid {} bundle {}",
            pos[0],
            c["status"].as_str().unwrap_or_default(),
            c["pid"],
            c["bundle"].as_str().unwrap_or_default()
        );
        print_processes(&procs);
    }
    Ok(())
}
