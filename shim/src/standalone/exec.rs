//! `exec`: start a process in a running container from an OCI process spec.

use super::args::{self, Spec};
use super::depot::{ContainerMeta, Depot};
use super::errors::{CliError, CliResult};
use super::io_owner::{self, IoOwner, GID_FLAG, UID_FLAG};
use super::spool_flags::{self, SpoolFlags};
use super::start_supervisor::launch;
use super::supervise::{Kind, Plan};
use super::{external, pea};
use crate::process_core::go_json;
use runc_wrapper::ContainerStatus;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// `exec --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 exec (--process FILE | --bundle DIR [--share KINDS]) [--tty]
                                      [--io-uid UID --io-gid GID] [--spool-limit N]
                                      [--spool-policy P] [--json] CONTAINER-ID PROCESS-ID

Starts a process in the running container. It gets the process directory
<depot>/CONTAINER-ID/processes/PROCESS-ID/ and a detached supervisor. Prints its pid
(--json: {\"container\",\"process\",\"pid\",\"dir\"}).

  --process FILE  an OCI process spec (JSON, as for `runc exec --process`; \"-\" reads it
                  from stdin), run with `runc exec` in the container
  --bundle DIR    a pea: an OCI bundle (config.json + its own rootfs, mounts, resources)
                  run as its own runc container CONTAINER-ID.PROCESS-ID (`runc run
                  --detach`), its process directory being its bundle (config.json there);
                  it is killed when the container's init dies and its runc container is
                  deleted when it exits (and with the container)
  --share KINDS   with --bundle: join these namespaces of the container's init, comma-
                  separated (net ipc uts pid mnt user cgroup time; e.g. net,ipc,uts,pid);
                  namespace paths in the bundle's config.json are kept as they are
  --tty           give it a pty (sets process.terminal)

A container the depot does not know but runc runs under --runc-root (one containerd runs:
--runc-root /run/containerd/runc/NAMESPACE) gets a depot entry marked external: processes
started in it are supervised here; the container stays the other runtime's (delete
removes only the depot entry).";

const SPEC: Spec = Spec {
    valued: &[
        ("--process", Some("-p")),
        ("--bundle", Some("-b")),
        ("--share", None),
        (UID_FLAG, None),
        (GID_FLAG, None),
        (spool_flags::LIMIT_FLAG, None),
        (spool_flags::POLICY_FLAG, None),
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
    let spool = SpoolFlags::from_args(&p)?;
    let source = match (p.value("--process"), p.value("--bundle")) {
        (Some(file), None) => {
            if p.value("--share").is_some() {
                return Err(CliError::Usage("--share goes with --bundle".into()));
            }
            Source::Spec(file)
        }
        (None, Some(bundle)) => Source::Pea {
            bundle,
            share: pea::parse_share(p.value("--share").unwrap_or(""))?,
        },
        _ => {
            return Err(CliError::Usage(format!(
                "exactly one of --process, --bundle is required\n{USAGE}"
            )))
        }
    };

    let (meta, adopted) = container_or_adopt(depot, id)?;
    let cdepot = depot.for_container(&meta);
    let outer_pid = running_pid(&cdepot, id)?;
    let (kind, spec, tty) = match source {
        Source::Spec(file) => {
            let (spec, tty) = read_spec(file, p.flag("--tty"))?;
            (Kind::Exec, spec, tty)
        }
        Source::Pea { bundle, share } => {
            if meta.external.is_some() {
                return Err(CliError::Usage(format!(
                    "container {id:?} is run by another runtime: peas are made only in \
                     containers run here"
                )));
            }
            let runc_id = pea::runc_id(id, process_id)?;
            if cdepot.runc(None, None).state(&runc_id).is_ok() {
                return Err(CliError::Exists {
                    what: format!("runc container {runc_id:?} (the pea's name)"),
                    path: cdepot.runc_root.join(&runc_id),
                });
            }
            let prepared = pea::prepare(Path::new(bundle), &share, outer_pid, p.flag("--tty"))?;
            let kind = Kind::Pea {
                runc_id,
                outer_pid,
                bundle: prepared.bundle,
            };
            (kind, prepared.config, prepared.tty)
        }
    };
    let result = start_process(&cdepot, id, process_id, kind, &spec, tty, io_owner, spool);
    match result {
        Ok((pid, dir)) => {
            super::started::print_started(p.flag("--json"), id, process_id, pid, &dir);
            Ok(())
        }
        Err(e) => {
            if adopted {
                forget_if_unused(depot, id);
            }
            Err(e)
        }
    }
}

/// Where the process comes from.
enum Source<'a> {
    /// An OCI process spec file, for `runc exec`.
    Spec(&'a str),
    /// A bundle: a pea.
    Pea {
        bundle: &'a str,
        share: Vec<pea::NsKind>,
    },
}

/// Creates the process directory and launches the supervisor; on failure the directory
/// is removed again. Returns the pid and the directory.
#[allow(clippy::too_many_arguments)] // each is one of the command's own options
fn start_process(
    depot: &Depot,
    id: &str,
    process_id: &str,
    kind: Kind,
    spec: &[u8],
    tty: bool,
    io_owner: Option<IoOwner>,
    spool: SpoolFlags,
) -> CliResult<(i32, std::path::PathBuf)> {
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
        kind,
        tty,
        io_owner,
        spool,
    };
    match launch(&plan, spec) {
        Ok(pid) => Ok((pid, dir.path().to_path_buf())),
        Err(e) => {
            let _ = dir.remove();
            Err(e)
        }
    }
}

/// The depot's container `id`; or, when the depot does not know it but runc runs it under
/// the given root, a new external entry for it (true: made by this call).
fn container_or_adopt(depot: &Depot, id: &str) -> CliResult<(ContainerMeta, bool)> {
    match depot.container(id) {
        Ok(meta) => Ok((meta, false)),
        Err(CliError::NotFound(msg)) => match depot.runc(None, None).state(id) {
            Ok(state) if state.status == ContainerStatus::Running => {
                external::adopt(depot, id, &state).map(|m| (m, true))
            }
            Ok(state) => Err(CliError::NotFound(format!(
                "{msg}; runc under {} knows it but it is {}",
                depot.runc_root.display(),
                state.status
            ))),
            Err(_) => Err(CliError::NotFound(format!(
                "{msg}, nor does runc under {}",
                depot.runc_root.display()
            ))),
        },
        Err(e) => Err(e),
    }
}

/// Removes an external entry this `exec` made when it holds no process (the exec failed).
fn forget_if_unused(depot: &Depot, id: &str) {
    if std::fs::remove_dir(depot.processes_dir(id)).is_ok() {
        let cdir = depot.container_dir(id);
        let _ = std::fs::remove_file(cdir.join(super::depot::CONTAINER_JSON));
        let _ = std::fs::remove_dir(&cdir);
    }
}

/// The pid of the container's init, which must be running.
fn running_pid(depot: &Depot, id: &str) -> CliResult<i32> {
    match depot.runc(None, None).state(id) {
        Ok(s) if s.status == ContainerStatus::Running => Ok(s.pid),
        Ok(s) => Err(CliError::NotFound(format!(
            "container {id:?} is not running (status {})",
            s.status
        ))),
        Err(e) if e.is_not_found() => Err(CliError::NotFound(format!("container {id:?} is gone"))),
        Err(e) => Err(CliError::runc(e)),
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
