//! `run`: create and start a container from a bundle; its init becomes a supervised
//! process with its own process directory.

use super::args::{self, Spec};
use super::depot::{ContainerMeta, Depot};
use super::errors::{CliError, CliResult};
use super::io_owner::{self, IoOwner, GID_FLAG, UID_FLAG};
use super::spool_flags::{self, SpoolFlags};
use super::start_supervisor::launch;
use super::supervise::{Kind, Plan};
use crate::process_core::go_json;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// `run --help`.
pub const USAGE: &str = "\
usage: containerd-shim-tether-v2 run --bundle DIR [--process-id ID] [--io-uid UID --io-gid GID]
                                     [--spool-limit N] [--spool-policy P] [--json] CONTAINER-ID

Creates and starts a container from the OCI bundle DIR (config.json + rootfs). Its init
process gets the process directory <depot>/CONTAINER-ID/processes/ID/ (ID default
\"init\") and a detached supervisor. process.terminal in config.json gives it a pty.
Prints the init's pid (--json: {\"container\",\"process\",\"pid\",\"dir\"}).
The container stays (status stopped) after its init exits, until `delete`.";

const SPEC: Spec = Spec {
    valued: &[
        ("--bundle", Some("-b")),
        ("--process-id", None),
        (UID_FLAG, None),
        (GID_FLAG, None),
        (spool_flags::LIMIT_FLAG, None),
        (spool_flags::POLICY_FLAG, None),
    ],
    flags: &[("--json", None)],
};

/// Runs the subcommand.
pub fn main(depot: &Depot, argv: &[String]) -> CliResult<()> {
    let p = args::parse(argv, SPEC)?;
    let pos = p.positionals(1, 1, USAGE)?;
    let id = pos[0].as_str();
    Depot::check_container_id(id)?;
    let process_id = p.value("--process-id").unwrap_or("init");
    fifo::validate_id(process_id).map_err(CliError::fifo)?;
    let io_owner = IoOwner::from_args(&p)?;
    let spool = SpoolFlags::from_args(&p)?;
    let bundle = p
        .value("--bundle")
        .ok_or_else(|| CliError::Usage(format!("--bundle is required\n{USAGE}")))?;
    let (bundle, tty) = check_bundle(Path::new(bundle))?;

    // Before runc runs: it would make the depot 0700 as the parent of its root.
    depot.prepare()?;
    if depot.runc(None, None).state(id).is_ok() {
        return Err(CliError::Exists {
            what: format!("container {id:?}"),
            path: depot.runc_root.join(id),
        });
    }
    let cdir = depot.container_dir(id);
    depot.create_container_dirs(id).map_err(|e| {
        if !matches!(e, CliError::Exists { .. }) {
            let _ = std::fs::remove_dir_all(&cdir);
        }
        e
    })?;
    // From here on, any failure removes the container's directory again.
    let result = (|| {
        let procs = depot.processes_dir(id);
        depot.write_container(
            id,
            &ContainerMeta {
                bundle: bundle.clone(),
                init: process_id.to_string(),
                external: None,
            },
        )?;
        let dir =
            io_owner::create_process_dir(&procs, process_id, io_owner).map_err(CliError::fifo)?;
        let plan = Plan {
            depot: depot.clone(),
            container: id.to_string(),
            dir: dir.path().to_path_buf(),
            kind: Kind::Run { bundle },
            tty,
            io_owner,
            spool,
        };
        let pid = launch(&plan, &[])?;
        Ok((pid, dir))
    })();
    match result {
        Ok((pid, dir)) => {
            super::started::print_started(p.flag("--json"), id, process_id, pid, dir.path());
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&cdir);
            Err(e)
        }
    }
}

/// Checks that `dir` is an OCI bundle; returns its absolute path and whether its process
/// has a terminal.
fn check_bundle(dir: &Path) -> CliResult<(PathBuf, bool)> {
    let not_bundle = |why: String| {
        CliError::InvalidSpec(format!("{} is not an OCI bundle: {why}", dir.display()))
    };
    let abs = std::fs::canonicalize(dir).map_err(|e| not_bundle(e.to_string()))?;
    let config = abs.join("config.json");
    let bytes = std::fs::read(&config).map_err(|e| not_bundle(format!("config.json: {e}")))?;
    // Read as runc reads it (bytes that are not UTF-8 are no error); runc gets the file
    // itself, untouched.
    let value: Value = serde_json::from_str(&go_json::as_go_reads(&bytes))
        .map_err(|e| not_bundle(format!("config.json: {e}")))?;
    let process = value
        .get("process")
        .filter(|p| p.is_object())
        .ok_or_else(|| not_bundle("config.json has no process".into()))?;
    let root = value
        .pointer("/root/path")
        .and_then(Value::as_str)
        .ok_or_else(|| not_bundle("config.json has no root.path".into()))?;
    if !abs.join(root).is_dir() {
        return Err(not_bundle(format!("rootfs {root:?} is not a directory")));
    }
    let tty = process
        .get("terminal")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((abs, tty))
}
