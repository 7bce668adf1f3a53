//! `start`: reuse the group's running shim or spawn a new one (this binary re-executed, in
//! its own session, the listener on its stdin), move it into the shim cgroup, give it its
//! OOM score, and answer containerd; undo a spawned server when the answer cannot be given.

use crate::containerd::address;
use crate::containerd::bundle;
use crate::containerd::flags::Flags;
use crate::containerd::options::RuncOptions;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};

use super::{
    bundle_dir, BootstrapError, CgroupMoveError, StartConfig, LISTENER_ON_STDIN, START_OPTIONS_ENV,
    TTRPC_ADDRESS_ENV,
};

/// `start`: reuse the running shim of the container's group, or spawn a new one; print
/// its address on stdout (a `BootstrapResult` to containerd 2.3+). Writes nothing to stderr
/// unless it fails: containerd reads stdout and stderr together.
///
/// containerd waits for this process to exit before it sends its first call: a new shim's
/// `start` writes only what must be there before the answer, `shim.pid` and `address`
/// (so that a full disk fails here, with no server left). The runtime options reach the
/// server in its environment ([`START_OPTIONS_ENV`]); `options.json` is Create's to write.
pub fn start(flags: &Flags) -> Result<(), BootstrapError> {
    let bundle_dir = bundle_dir(flags)?;
    let mut raw = Vec::new();
    // containerd may give no stdin at all; an error reading it means "no options".
    let _ = std::io::stdin().take(MAX_STDIN_BYTES).read_to_end(&mut raw);
    let config = StartConfig::new(flags, &raw)?;
    let facts = bundle::read_spec(&bundle_dir).unwrap_or_default();
    let group = bundle::group_id(&facts, &flags.id);
    if let Some(dir) = &config.socket_dir {
        address::write_socket_dir_link(&bundle_dir, dir)?;
    }
    let socket = config.socket(&group)?;
    let uri = address::socket_uri(&socket);
    if UnixStream::connect(&socket).is_ok() {
        // The group's shim is alive: this container joins it.
        write_file(&bundle_dir.join("address"), uri.as_bytes())?;
        return print_reply(&config.reply(&uri));
    }
    let listener = address::bind_socket(&socket)?;
    // The server removes its socket at exit and writes it into the bundle's `address`:
    // tell it where it is (the group's path, which its own id would not give).
    let mut server_flags = config.flags.clone();
    server_flags.socket = Some(uri.clone());
    match spawn_server(
        &server_flags,
        &bundle_dir,
        listener,
        &config.options,
        config.ttrpc_address.as_deref(),
    ) {
        Ok(pid) => {
            let published = write_file(&bundle_dir.join("shim.pid"), pid.to_string().as_bytes())
                .and_then(|()| write_file(&bundle_dir.join("address"), uri.as_bytes()))
                .and_then(|()| print_reply(&config.reply(&uri)));
            if published.is_err() {
                abandon_server(pid, &socket, &bundle_dir);
            }
            published
        }
        Err(e) => {
            address::remove_socket(&socket);
            Err(e)
        }
    }
}

/// Undoes a spawned server whose start could not be completed (a full disk for `shim.pid`
/// or `address`, containerd gone before it read the reply): containerd will never know
/// of it, so it must not outlive `start`, nor its socket let a later create of the group
/// join it. Kills and reaps it (it is our child), removes its socket and what `start`
/// wrote of it into the bundle.
fn abandon_server(pid: i32, socket: &Path, bundle_dir: &Path) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    address::remove_socket(socket);
    for name in ["shim.pid", "address"] {
        let _ = std::fs::remove_file(bundle_dir.join(name));
    }
}

/// The most of stdin `start` reads (containerd's own shim library reads at most 10 MiB).
const MAX_STDIN_BYTES: u64 = 10 << 20;

fn print_reply(reply: &[u8]) -> Result<(), BootstrapError> {
    let mut out = std::io::stdout();
    out.write_all(reply)
        .and_then(|()| out.flush())
        .map_err(BootstrapError::WriteReply)
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), BootstrapError> {
    std::fs::write(path, data).map_err(|source| BootstrapError::WriteFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Re-executes this binary as the server, in its own session, with the listener as
/// stdin; moves it into the shim cgroup and gives it containerd's OOM score + 1 (the
/// kernel should pick the shim before containerd, and the containers before the shim).
fn spawn_server(
    flags: &Flags,
    bundle_dir: &Path,
    listener: UnixListener,
    opts: &RuncOptions,
    ttrpc_address: Option<&str>,
) -> Result<i32, BootstrapError> {
    let exe = std::env::current_exe().map_err(BootstrapError::OwnExecutable)?;
    let listener_fd: OwnedFd = listener.into();
    let mut command = Command::new(exe);
    if let Some(addr) = ttrpc_address {
        command.env(TTRPC_ADDRESS_ENV, addr);
    }
    let child = command
        .args(flags.to_server_args())
        .current_dir(bundle_dir)
        .env(LISTENER_ON_STDIN, "1")
        .env(START_OPTIONS_ENV, OsStr::from_bytes(&opts.to_json()))
        .stdin(Stdio::from(listener_fd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(BootstrapError::Spawn)?;
    let pid = crate::process_core::reaper::pid_of(&child);
    let fail = |msg: BootstrapError| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        msg
    };
    if !opts.shim_cgroup.is_empty() {
        move_pid_to(&opts.shim_cgroup, pid).map_err(|source| {
            fail(BootstrapError::ShimCgroup {
                cgroup: opts.shim_cgroup.clone(),
                source,
            })
        })?;
    }
    if let Err(e) = adjust_oom_score(pid) {
        log::warn!("oom score of shim {pid}: {e}");
    }
    // Not waited for: we exit now and the server is reparented to init.
    std::mem::forget(child);
    Ok(pid)
}

fn adjust_oom_score(pid: i32) -> std::io::Result<()> {
    let parent = nix::unistd::getppid();
    let theirs: i32 = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::other(format!("containerd oom_score_adj: {e}")))?;
    let ours = (theirs + 1).min(1000);
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), ours.to_string())
}

/// Moves `pid` into the cgroup at `path` (relative to each hierarchy's root) in every
/// hierarchy where that cgroup exists, creating it in v1 controllers that lack it.
fn move_pid_to(path: &str, pid: i32) -> Result<(), CgroupMoveError> {
    let rel = path.trim_start_matches('/');
    let mut moved = 0;
    let mut last_err = None;
    for m in crate::containerd::cgroups::host_mounts() {
        let dir = m.mount_point.join(rel);
        if !dir.is_dir() && std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        match std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => moved += 1,
            Err(source) => last_err = Some(CgroupMoveError::Write { dir, source }),
        }
    }
    if moved == 0 {
        return Err(last_err.unwrap_or(CgroupMoveError::NoHierarchy));
    }
    Ok(())
}
