//! The short-lived actions containerd runs: `start` (spawn the long-running shim, print
//! its address, in either of containerd's bootstrap protocols: see `bootstrap_protocol.rs`)
//! and `delete` (clean up after a shim that died, and say how its container ended).

use crate::containerd::address::{self, AddressError};
use crate::containerd::bootstrap_protocol::{
    encode_result, parse_start_input, StartInput, StartInputError, PROTOCOL, TASK_API_VERSION,
};
use crate::containerd::bundle;
use crate::containerd::exit_status::{self, RecordedExit};
use crate::containerd::flags::Flags;
use crate::containerd::options::{decode_options, OptionsError, RuncOptions};
use crate::containerd::runtime_root;
use protobuf::well_known_types::any::Any;
use protobuf::Message;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable that marks the re-executed server (the listener is its stdin).
pub const LISTENER_ON_STDIN: &str = "TETHER_LISTENER_ON_STDIN";

/// Environment variable that carries the runtime options `start` was given to the server
/// it spawns ([`RuncOptions::to_json`]); the server takes it out of its environment before
/// it starts anything.
pub const START_OPTIONS_ENV: &str = "TETHER_START_OPTIONS";

/// Where the server finds containerd's ttrpc address (containerd sets it for every shim).
pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

/// Why `start`, `delete` or the server's handoff failed; each says what it was doing.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// `start`'s stdin is neither bootstrap parameters nor runtime options.
    #[error(transparent)]
    Input(#[from] StartInputError),
    /// The runtime options do not decode.
    #[error("runtime options: {0}")]
    Options(#[source] OptionsError),
    /// The socket address is bad, or the socket could not be made.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The bundle directory (the working directory) is unknown.
    #[error("bundle dir: {0}")]
    BundleDir(#[source] std::io::Error),
    /// A file in the bundle could not be written.
    #[error("write {}: {source}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The reply to containerd could not be written on stdout.
    #[error("write address: {0}")]
    WriteReply(#[source] std::io::Error),
    /// Our own executable cannot be found to re-execute it.
    #[error("own executable: {0}")]
    OwnExecutable(#[source] std::io::Error),
    /// The server could not be spawned.
    #[error("spawn shim server: {0}")]
    Spawn(#[source] std::io::Error),
    /// The server could not be moved into the shim cgroup the options name.
    #[error("shim cgroup {cgroup}: {source}")]
    ShimCgroup {
        cgroup: String,
        #[source]
        source: CgroupMoveError,
    },
    /// The server found no listener on its stdin.
    #[error("listener on stdin: {0}")]
    ListenerOnStdin(#[source] std::io::Error),
    /// `/dev/null` cannot be opened.
    #[error("/dev/null: {0}")]
    DevNull(#[source] std::io::Error),
    /// Stdin could not be pointed at `/dev/null`.
    #[error("redirect stdin: {0}")]
    RedirectStdin(#[source] nix::Error),
    /// `delete`'s answer could not be encoded.
    #[error("encode delete response: {0}")]
    EncodeDeleteResponse(#[source] protobuf::Error),
    /// `delete`'s answer could not be written on stdout.
    #[error("write delete response: {0}")]
    WriteDeleteResponse(#[source] std::io::Error),
}

/// Why a process could not be moved into a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupMoveError {
    /// No hierarchy is mounted.
    #[error("no cgroup hierarchy found")]
    NoHierarchy,
    /// No hierarchy took it; the last refusal.
    #[error("{}: {source}", dir.display())]
    Write {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How `start` was asked to start: the flags as the server will get them, the runtime
/// options, where the socket goes and how to answer. Built from the command line and stdin by
/// [`StartConfig::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct StartConfig {
    /// The flags to hand the server: `-debug` also when the bootstrap log level asks for it,
    /// `-address` and `-publish-binary` from the parameters when they carry them.
    pub flags: Flags,
    /// The runtime options: the bootstrap parameters' runtime-options extension, or the legacy
    /// bare `Any`, or the defaults.
    pub options: RuncOptions,
    /// `socket_dir` from the bootstrap parameters, if any.
    pub socket_dir: Option<PathBuf>,
    /// containerd's ttrpc address from the bootstrap parameters, for publishing events (else
    /// the server reads `TTRPC_ADDRESS`, which every containerd sets).
    pub ttrpc_address: Option<String>,
    /// A containerd 2.3+ daemon started us with `BootstrapParams`: answer with a
    /// `BootstrapResult` and serve task API v3. Older daemons get the plain address.
    pub bootstrap: bool,
}

impl StartConfig {
    /// Interprets `stdin` (see [`parse_start_input`]) against `flags`.
    ///
    /// Errors: stdin that is neither bootstrap parameters for this shim nor an `Any`, and
    /// runtime options that do not decode (an options type tether does not know is an error in
    /// the legacy form, where the `Any` can only be runtime options, and skipped among the
    /// bootstrap extensions, which may carry other configuration).
    pub fn new(flags: &Flags, stdin: &[u8]) -> Result<StartConfig, BootstrapError> {
        let input = parse_start_input(stdin, &flags.id, &flags.namespace)?;
        let mut flags = flags.clone();
        match input {
            StartInput::Legacy(None) => Ok(StartConfig {
                flags,
                options: RuncOptions::default(),
                socket_dir: None,
                ttrpc_address: None,
                bootstrap: false,
            }),
            StartInput::Legacy(Some(any)) => Ok(StartConfig {
                flags,
                options: decode_options(&any.type_url, &any.value)
                    .map_err(BootstrapError::Options)?,
                socket_dir: None,
                ttrpc_address: None,
                bootstrap: false,
            }),
            StartInput::Bootstrap(params) => {
                flags.debug |= params.debug();
                if !params.containerd_grpc_address.is_empty() {
                    flags.address = params.containerd_grpc_address.clone();
                }
                if !params.containerd_binary.is_empty() {
                    flags.publish_binary = params.containerd_binary.clone();
                }
                Ok(StartConfig {
                    flags,
                    options: options_from_extensions(&params.extensions)?,
                    socket_dir: params
                        .socket_dir
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from),
                    ttrpc_address: Some(params.containerd_ttrpc_address).filter(|a| !a.is_empty()),
                    bootstrap: true,
                })
            }
        }
    }

    /// Where the group's socket is: `-socket` if given, else the name containerd's shims
    /// compute, under `socket_dir` or the default directory.
    pub fn socket(&self, group: &str) -> Result<PathBuf, AddressError> {
        if let Some(s) = &self.flags.socket {
            return address::parse_uri(s);
        }
        let dir = self
            .socket_dir
            .as_deref()
            .unwrap_or(Path::new(address::SOCKET_DIR));
        Ok(address::socket_path_in(
            dir,
            &self.flags.address,
            &self.flags.namespace,
            group,
        ))
    }

    /// What to print on stdout for the socket at `uri`.
    pub fn reply(&self, uri: &str) -> Vec<u8> {
        if self.bootstrap {
            encode_result(TASK_API_VERSION, uri, PROTOCOL)
        } else {
            uri.as_bytes().to_vec()
        }
    }
}

/// The runtime options among the bootstrap extensions: the first extension of a runtime
/// options type tether knows (runc `Options`, legacy `CreateOptions`/`RuncOptions`, CRI's
/// `runtimeoptions.v1.Options`); extensions of other types are skipped. Defaults when none.
fn options_from_extensions(extensions: &[Any]) -> Result<RuncOptions, BootstrapError> {
    for ext in extensions {
        match decode_options(&ext.type_url, &ext.value) {
            Ok(o) => return Ok(o),
            Err(OptionsError::UnknownType(_)) => continue,
            Err(e) => return Err(BootstrapError::Options(e)),
        }
    }
    Ok(RuncOptions::default())
}

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

fn bundle_dir(flags: &Flags) -> Result<PathBuf, BootstrapError> {
    match &flags.bundle {
        Some(b) => Ok(b.clone()),
        None => std::env::current_dir().map_err(BootstrapError::BundleDir),
    }
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

/// What `start` hands the server it spawned: the listening socket and the runtime options.
#[derive(Debug)]
pub struct Handoff {
    /// The ttrpc socket, bound and listening (containerd may already have connected).
    pub listener: UnixListener,
    /// The runtime options `start` was given (the defaults when none came).
    pub options: RuncOptions,
}

/// The server's side of the handoff, when `start` spawned it (else `Ok(None)`): takes the
/// listener `start` left on stdin (stdin is then pointed at /dev/null, so nothing we spawn
/// inherits the socket) and the runtime options from the environment (taken out of it, so
/// runc does not inherit them either). Call it before any thread starts.
///
/// Errors: no listener on stdin, or `/dev/null` missing. Options that do not parse (never
/// from our own `start`) are logged and the defaults taken.
pub fn take_handoff() -> Result<Option<Handoff>, BootstrapError> {
    if std::env::var_os(LISTENER_ON_STDIN).is_none() {
        return Ok(None);
    }
    std::env::remove_var(LISTENER_ON_STDIN);
    let options = std::env::var_os(START_OPTIONS_ENV)
        .map(|json| {
            RuncOptions::from_json(json.as_bytes()).unwrap_or_else(|e| {
                log::warn!("runtime options from start: {e}; using the defaults");
                RuncOptions::default()
            })
        })
        .unwrap_or_default();
    std::env::remove_var(START_OPTIONS_ENV);
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(BootstrapError::ListenerOnStdin)?;
    let devnull = std::fs::File::open("/dev/null").map_err(BootstrapError::DevNull)?;
    nix::unistd::dup2(devnull.as_raw_fd(), 0).map_err(BootstrapError::RedirectStdin)?;
    Ok(Some(Handoff {
        listener: UnixListener::from(fd),
        options,
    }))
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

/// `delete`: containerd lost its shim (it died or was killed). Force-delete the
/// container with runc, unmount its rootfs, remove the socket, and report the init's exit:
/// the status the server recorded in the bundle (`exit_status.rs`) when there is one, else
/// "killed" (137) with the pid from `init.pid` (0 if there is none), as containerd's runc shim
/// answers.
pub fn delete(flags: &Flags) -> Result<(), BootstrapError> {
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
    let runc_root = Path::new(&root).join(&flags.namespace);
    if runtime_root::state_left(&runc_root, &flags.id) {
        let runc = runc_wrapper::Runc::builder()
            .binary(if opts.binary_name.is_empty() {
                "runc".to_string()
            } else {
                opts.binary_name.clone()
            })
            .root(runc_root)
            .log(bundle_dir.join("log.json"))
            .build();
        if let Err(e) = runc.delete(&flags.id, true) {
            if !e.is_not_found() {
                log::warn!("runc delete --force {}: {e}", flags.id);
            }
        }
    }
    // The time the container was last known to run, if no record says better.
    let killed_at = std::time::SystemTime::now();
    if let Err(e) = crate::containerd::mount::unmount_all(&bundle_dir.join("rootfs")) {
        log::warn!("unmount rootfs: {e}");
    }
    remove_dead_socket(&bundle_dir, flags);
    let exit = exit_after_shim_died(&bundle_dir, killed_at);
    let mut resp = containerd_shim_protos::shim::shim::DeleteResponse::new();
    resp.pid = exit.pid;
    resp.exit_status = exit.status;
    resp.exited_at = crate::containerd::events::timestamp(exit.exited_at);
    let bytes = resp
        .write_to_bytes()
        .map_err(BootstrapError::EncodeDeleteResponse)?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(BootstrapError::WriteDeleteResponse)
}

/// Removes the socket of a shim that died, when it was this container's own (a grouped
/// container's socket belongs to its group's shim, which may still serve the others). It is
/// under the socket_dir containerd 2.3+ chose at start (the bundle's `s` link), else under
/// the default directory; an explicit `-socket` is left to whoever chose it.
fn remove_dead_socket(bundle_dir: &Path, flags: &Flags) {
    let facts = bundle::read_spec(bundle_dir).unwrap_or_default();
    let group = bundle::group_id(&facts, &flags.id);
    if group == flags.id && flags.socket.is_none() {
        address::remove_socket(&address::socket_path_in(
            &address::socket_dir_of(bundle_dir),
            &flags.address,
            &flags.namespace,
            &group,
        ));
    }
}

/// The exit `delete` reports for the container in `bundle`: the recorded one when it is there
/// and valid, else 137 at `killed_at` with the pid in `init.pid` (0 when that is missing or
/// unreadable). Problems with either file are logged, never fatal.
fn exit_after_shim_died(bundle: &Path, killed_at: std::time::SystemTime) -> RecordedExit {
    match exit_status::read(bundle) {
        Ok(Some(recorded)) => return recorded,
        Ok(None) => {}
        Err(e) => log::warn!("recorded exit status: {e}"),
    }
    let pid = match fifo::read_pid_file(&bundle.join(INIT_PID_FILE)) {
        Ok(pid) => pid.and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
        Err(e) => {
            log::warn!("init pid: {e}");
            0
        }
    };
    RecordedExit {
        pid,
        status: 128 + libc::SIGKILL as u32,
        exited_at: killed_at,
    }
}

/// The init process's pid file in the bundle (`runc create --pid-file`).
const INIT_PID_FILE: &str = "init.pid";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::bootstrap_protocol::vectors::*;

    fn flags(id: &str, namespace: &str) -> Flags {
        Flags {
            namespace: namespace.into(),
            id: id.into(),
            address: "/run/containerd/containerd.sock".into(),
            publish_binary: "/usr/bin/containerd".into(),
            ..Flags::default()
        }
    }

    #[test]
    fn containerd_2_3_start_takes_everything_from_the_params() {
        let c = StartConfig::new(&flags("ctr-1", "default"), &unhex(PARAMS_FULL)).unwrap();
        assert!(c.bootstrap);
        assert!(
            c.flags.debug,
            "log_level debug turns -debug on for the server"
        );
        assert_eq!(c.options.binary_name, "crun");
        assert_eq!(c.options.root, "/run/tether-test");
        assert!(c.options.systemd_cgroup);
        assert_eq!(c.socket_dir, Some(PathBuf::from("/tmp/tether-s")));
        assert_eq!(
            c.ttrpc_address.as_deref(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        // printf '%s' '/run/containerd/containerd.sock/default/ctr-1' | sha256sum
        let sock = c.socket("ctr-1").unwrap();
        assert_eq!(sock.parent(), Some(Path::new("/tmp/tether-s")));
        assert_eq!(
            sock,
            address::socket_path_in(
                Path::new("/tmp/tether-s"),
                "/run/containerd/containerd.sock",
                "default",
                "ctr-1"
            )
        );
        // The answer is the BootstrapResult containerd's runc shim gives: task API v3.
        let addr =
            "unix:///run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59";
        assert_eq!(c.reply(addr), unhex(RESULT_V3));
    }

    #[test]
    fn containerd_2_2_start_answers_with_the_plain_address() {
        let c = StartConfig::new(&flags("ctr-1", "default"), &unhex(LEGACY_ANY)).unwrap();
        assert!(!c.bootstrap);
        assert!(!c.flags.debug);
        assert_eq!(c.options.binary_name, "runc");
        assert_eq!(c.options.root, "/run/r");
        assert_eq!(c.socket_dir, None);
        assert_eq!(c.ttrpc_address, None);
        assert_eq!(c.flags, flags("ctr-1", "default"));
        assert_eq!(
            c.socket("ctr-1").unwrap(),
            address::socket_path("/run/containerd/containerd.sock", "default", "ctr-1")
        );
        assert_eq!(c.reply("unix:///x"), b"unix:///x");
    }

    #[test]
    fn empty_stdin_means_defaults_and_the_plain_address() {
        let c = StartConfig::new(&flags("ctr-1", "default"), b"").unwrap();
        assert!(!c.bootstrap);
        assert_eq!(c.options, RuncOptions::default());
        assert_eq!(c.reply("unix:///x"), b"unix:///x");
    }

    #[test]
    fn params_for_another_container_are_not_taken_for_ours() {
        // Bytes that are BootstrapParams for ctr-1, given to -id ctr-9: the legacy path,
        // where they are an Any of the unknown type "ctr-1".
        let e = StartConfig::new(&flags("ctr-9", "default"), &unhex(PARAMS_FULL)).unwrap_err();
        assert!(e.to_string().contains("ctr-1"), "{e}");
    }

    #[test]
    fn minimal_params_keep_the_flags_and_default_socket_dir() {
        let c = StartConfig::new(&flags("ctr-2", "k8s.io"), &unhex(PARAMS_MIN)).unwrap();
        assert!(c.bootstrap);
        assert!(!c.flags.debug);
        // No containerd_binary in the params: -publish-binary stays.
        assert_eq!(c.flags.publish_binary, "/usr/bin/containerd");
        assert_eq!(c.options, RuncOptions::default());
        assert_eq!(
            c.socket("ctr-2").unwrap().parent(),
            Some(Path::new(address::SOCKET_DIR))
        );
        // An explicit -socket wins over everything.
        let mut f = flags("ctr-2", "k8s.io");
        f.socket = Some("unix:///tmp/explicit.sock".into());
        let c = StartConfig::new(&f, &unhex(PARAMS_MIN)).unwrap();
        assert_eq!(
            c.socket("ctr-2").unwrap(),
            PathBuf::from("/tmp/explicit.sock")
        );
    }

    #[test]
    fn unknown_extensions_are_skipped() {
        let mut other = Any::new();
        other.type_url = "containerd.io/cri.v1.PodSandboxConfig".into();
        other.value = vec![1, 2, 3];
        let mut runc = Any::new();
        runc.type_url = "containerd.runc.v1.Options".into();
        runc.value = vec![0x32, 0x04, b'c', b'r', b'u', b'n'];
        assert_eq!(
            options_from_extensions(&[other.clone(), runc])
                .unwrap()
                .binary_name,
            "crun"
        );
        assert_eq!(
            options_from_extensions(&[other]).unwrap(),
            RuncOptions::default()
        );
        let mut broken = Any::new();
        broken.type_url = "containerd.runc.v1.Options".into();
        broken.value = vec![0x32, 0x09];
        assert!(options_from_extensions(&[broken]).is_err());
    }

    #[test]
    fn delete_reports_the_recorded_exit_else_137_with_the_init_pid() {
        use std::time::{Duration, UNIX_EPOCH};
        let dir = tempfile::tempdir().unwrap();
        let killed_at = UNIX_EPOCH + Duration::from_secs(1_796_083_200);
        // Nothing at all: 137, pid 0, now.
        assert_eq!(
            exit_after_shim_died(dir.path(), killed_at),
            RecordedExit {
                pid: 0,
                status: 137,
                exited_at: killed_at
            }
        );
        // A pid file: the real pid.
        std::fs::write(dir.path().join("init.pid"), "4242").unwrap();
        assert_eq!(exit_after_shim_died(dir.path(), killed_at).pid, 4242);
        assert_eq!(exit_after_shim_died(dir.path(), killed_at).status, 137);
        // A garbage record is ignored; a valid one wins.
        std::fs::write(dir.path().join("exit.json"), "{").unwrap();
        assert_eq!(exit_after_shim_died(dir.path(), killed_at).pid, 4242);
        let recorded = RecordedExit {
            pid: 4242,
            status: 3,
            exited_at: killed_at - Duration::from_secs(60),
        };
        exit_status::write(dir.path(), &recorded).unwrap();
        assert_eq!(exit_after_shim_died(dir.path(), killed_at), recorded);
    }

    #[test]
    fn delete_finds_the_socket_under_the_socket_dir_of_start() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle_dir = tmp.path().join("bundle");
        std::fs::create_dir(&bundle_dir).unwrap();
        let socket_dir = tmp.path().join("s");
        let f = flags("ctr-1", "default");
        // What start does for a 2.3 daemon's socket_dir.
        address::write_socket_dir_link(&bundle_dir, &socket_dir).unwrap();
        let sock = address::socket_path_in(&socket_dir, &f.address, &f.namespace, &f.id);
        drop(address::bind_socket(&sock).unwrap());
        assert!(sock.exists());
        remove_dead_socket(&bundle_dir, &f);
        assert!(!sock.exists());

        // A container of a group leaves the group's socket alone.
        std::fs::write(
            bundle_dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod"}}"#,
        )
        .unwrap();
        let group_sock = address::socket_path_in(&socket_dir, &f.address, &f.namespace, "pod");
        drop(address::bind_socket(&group_sock).unwrap());
        remove_dead_socket(&bundle_dir, &f);
        assert!(group_sock.exists());
    }
}
