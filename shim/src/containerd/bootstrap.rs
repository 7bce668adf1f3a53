//! The short-lived actions containerd runs: `start` (spawn the long-running shim, print
//! its address) and `delete` (clean up after a shim that died).

use crate::containerd::address;
use crate::containerd::bundle;
use crate::containerd::flags::Flags;
use crate::containerd::options::{decode_options, RuncOptions};
use protobuf::well_known_types::any::Any;
use protobuf::Message;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable that marks the re-executed server (the listener is its stdin).
pub const LISTENER_ON_STDIN: &str = "TETHER_LISTENER_ON_STDIN";

/// `start`: reuse the running shim of the container's group, or spawn a new one; print
/// its ttrpc address on stdout.
pub fn start(flags: &Flags) -> Result<(), String> {
    let bundle_dir = bundle_dir(flags)?;
    let opts = read_start_options()?;
    let facts = bundle::read_spec(&bundle_dir).unwrap_or_default();
    let group = bundle::group_id(&facts, &flags.id);
    let socket = match &flags.socket {
        Some(s) => address::parse_uri(s).map_err(|e| e.to_string())?,
        None => address::socket_path(&flags.address, &flags.namespace, &group),
    };
    let uri = address::socket_uri(&socket);
    if UnixStream::connect(&socket).is_ok() {
        // The group's shim is alive: this container joins it.
        write_file(&bundle_dir.join("address"), uri.as_bytes())?;
        print_address(&uri)?;
        return Ok(());
    }
    let listener = address::bind_socket(&socket).map_err(|e| e.to_string())?;
    let _ = std::fs::write(bundle_dir.join("options.json"), opts.to_json());
    // The server removes its socket at exit: tell it where it is (the group's path, which
    // its own id would not give).
    let mut server_flags = flags.clone();
    server_flags.socket = Some(uri.clone());
    match spawn_server(&server_flags, &bundle_dir, listener, &opts) {
        Ok(pid) => {
            write_file(&bundle_dir.join("shim.pid"), pid.to_string().as_bytes())?;
            write_file(&bundle_dir.join("address"), uri.as_bytes())?;
            print_address(&uri)
        }
        Err(e) => {
            address::remove_socket(&socket);
            Err(e)
        }
    }
}

fn print_address(uri: &str) -> Result<(), String> {
    let mut out = std::io::stdout();
    out.write_all(uri.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("write address: {e}"))
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("write {}: {e}", path.display()))
}

fn bundle_dir(flags: &Flags) -> Result<PathBuf, String> {
    match &flags.bundle {
        Some(b) => Ok(b.clone()),
        None => std::env::current_dir().map_err(|e| format!("bundle dir: {e}")),
    }
}

/// Runtime options arrive on stdin as a protobuf Any (nothing when there are none).
fn read_start_options() -> Result<RuncOptions, String> {
    let mut raw = Vec::new();
    // containerd may give no stdin at all; an error reading it means "no options".
    let _ = std::io::stdin().read_to_end(&mut raw);
    if raw.is_empty() {
        return Ok(RuncOptions::default());
    }
    let any = Any::parse_from_bytes(&raw).map_err(|e| format!("runtime options on stdin: {e}"))?;
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(RuncOptions::default());
    }
    decode_options(&any.type_url, &any.value).map_err(|e| format!("runtime options: {e}"))
}

/// Re-executes this binary as the server, in its own session, with the listener as
/// stdin; moves it into the shim cgroup and gives it containerd's OOM score + 1 (the
/// kernel should pick the shim before containerd, and the containers before the shim).
fn spawn_server(
    flags: &Flags,
    bundle_dir: &Path,
    listener: UnixListener,
    opts: &RuncOptions,
) -> Result<u32, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let listener_fd: OwnedFd = listener.into();
    let child = Command::new(exe)
        .args(flags.to_server_args())
        .current_dir(bundle_dir)
        .env(LISTENER_ON_STDIN, "1")
        .stdin(Stdio::from(listener_fd))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn shim server: {e}"))?;
    let pid = child.id();
    let fail = |msg: String| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        msg
    };
    if !opts.shim_cgroup.is_empty() {
        move_pid_to(&opts.shim_cgroup, pid as i32)
            .map_err(|e| fail(format!("shim cgroup {}: {e}", opts.shim_cgroup)))?;
    }
    if let Err(e) = adjust_oom_score(pid) {
        log::warn!("oom score of shim {pid}: {e}");
    }
    // Not waited for: we exit now and the server is reparented to init.
    std::mem::forget(child);
    Ok(pid)
}

fn adjust_oom_score(pid: u32) -> std::io::Result<()> {
    let parent = nix::unistd::getppid();
    let theirs: i32 = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))?
        .trim()
        .parse()
        .map_err(|e| std::io::Error::other(format!("containerd oom_score_adj: {e}")))?;
    let ours = (theirs + 1).min(1000);
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), ours.to_string())
}

/// The server's side of the handoff: the listener `start` left on stdin. Stdin is then
/// pointed at /dev/null so nothing we spawn inherits the socket.
pub fn take_listener() -> Result<UnixListener, String> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("listener on stdin: {e}"))?;
    let devnull = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0).map_err(|e| format!("redirect stdin: {e}"))?;
    Ok(UnixListener::from(fd))
}

/// Moves `pid` into the cgroup at `path` (relative to each hierarchy's root) in every
/// hierarchy where that cgroup exists, creating it in v1 controllers that lack it.
fn move_pid_to(path: &str, pid: i32) -> Result<(), String> {
    let rel = path.trim_start_matches('/');
    let mut moved = 0;
    let mut last_err = String::new();
    for m in crate::cgroups::host_mounts() {
        let dir = m.mount_point.join(rel);
        if !dir.is_dir() && std::fs::create_dir_all(&dir).is_err() {
            continue;
        }
        match std::fs::write(dir.join("cgroup.procs"), pid.to_string()) {
            Ok(()) => moved += 1,
            Err(e) => last_err = format!("{}: {e}", dir.display()),
        }
    }
    if moved == 0 {
        return Err(if last_err.is_empty() {
            "no cgroup hierarchy found".into()
        } else {
            last_err
        });
    }
    Ok(())
}

/// `delete`: containerd lost its shim (it died or was killed). Force-delete the
/// container with runc, unmount its rootfs, remove the socket, and report it as killed.
pub fn delete(flags: &Flags) -> Result<(), String> {
    let bundle_dir = bundle_dir(flags)?;
    let opts = std::fs::read(bundle_dir.join("options.json"))
        .ok()
        .and_then(|b| RuncOptions::from_json(&b).ok())
        .unwrap_or_default();
    let root = if opts.root.is_empty() {
        "/run/containerd/runc".to_string()
    } else {
        opts.root.clone()
    };
    let runc = runc_wrapper::Runc::builder()
        .binary(if opts.binary_name.is_empty() {
            "runc".to_string()
        } else {
            opts.binary_name.clone()
        })
        .root(Path::new(&root).join(&flags.namespace))
        .log(bundle_dir.join("log.json"))
        .build();
    if let Err(e) = runc.delete(&flags.id, true) {
        if !e.is_not_found() {
            log::warn!("runc delete --force {}: {e}", flags.id);
        }
    }
    if let Err(e) = crate::mount::unmount_all(&bundle_dir.join("rootfs")) {
        log::warn!("unmount rootfs: {e}");
    }
    let facts = bundle::read_spec(&bundle_dir).unwrap_or_default();
    let group = bundle::group_id(&facts, &flags.id);
    if group == flags.id && flags.socket.is_none() {
        address::remove_socket(&address::socket_path(
            &flags.address,
            &flags.namespace,
            &group,
        ));
    }
    let mut resp = containerd_shim_protos::shim::shim::DeleteResponse::new();
    resp.exit_status = 128 + libc::SIGKILL as u32;
    resp.exited_at = crate::containerd::events::timestamp(std::time::SystemTime::now());
    let bytes = resp
        .write_to_bytes()
        .map_err(|e| format!("encode delete response: {e}"))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| format!("write delete response: {e}"))
}
