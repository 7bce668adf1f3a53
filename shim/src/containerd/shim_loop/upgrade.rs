//! The old image's side of a live upgrade (`containerd::upgrade`): an Upgrade call holds
//! every connection (new calls wait in the sockets), the loop goes on until the calls in
//! flight are answered (bounded by the request's timeout: then it refuses and reads
//! again), saves its state, has the new binary check it (a dry run), hands the events
//! over, and executes the new binary with the state in a memfd. Anything that fails
//! before the `execve` leaves the shim as it was, answering "refused" with the reason.

use super::EventLoop;
use crate::containerd::errors::invalid;
use crate::containerd::events::Publisher;
use crate::containerd::ttrpc::{status, Reply};
use crate::containerd::upgrade::protocol::{version_line, Outcome, UpgradeReport, UpgradeRequest};
use crate::containerd::upgrade::state::{self, SavedShim, FORMAT, ROLLBACK_ENV, STATE_FD_ENV};
use crate::process_core::carried_fds::{offset_of, FdsOut};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long the new binary's dry run may take.
const DRY_RUN_LIMIT: Duration = Duration::from_secs(10);
/// How long undelivered events are given to reach containerd before they are handed
/// over instead.
const EVENTS_FLUSH: Duration = Duration::from_millis(500);
/// What a dry run prints first when the binary takes the state over.
pub const DRY_RUN_OK: &str = "ok";

/// An upgrade waiting for the calls in flight.
#[derive(Debug)]
pub(super) struct Upgrading {
    conn: u32,
    stream: u32,
    request: UpgradeRequest,
    binary: PathBuf,
    paused_at: Instant,
    paused_at_ns: u64,
    pub(super) deadline: Instant,
}

impl EventLoop {
    /// An Upgrade call arrived on connection `conn`: answered now (refused), or later.
    pub(super) fn on_upgrade_call(
        &mut self,
        conn: u32,
        stream: u32,
        payload: &[u8],
    ) -> Option<Reply> {
        let c = self.conns.get(&conn)?;
        let uid =
            nix::sys::socket::getsockopt(c.stream(), nix::sys::socket::sockopt::PeerCredentials)
                .map(|cred| cred.uid());
        if uid != Ok(0) {
            return Some(Err(status(
                ttrpc::Code::PERMISSION_DENIED,
                "only root may upgrade a shim",
            )));
        }
        let request: UpgradeRequest = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => return Some(Err(invalid(format!("upgrade request: {e}")))),
        };
        let binary = request
            .binary
            .clone()
            .unwrap_or_else(|| self.started_from.clone());
        if self.upgrading.is_some() {
            return Some(report(
                &binary,
                0,
                Outcome::Refused("an upgrade is in progress already".into()),
            ));
        }
        if let Err(why) = executable(&binary) {
            return Some(report(&binary, 0, Outcome::Refused(why)));
        }
        let now = Instant::now();
        log::info!(
            "upgrade to {} asked: holding new calls, {} in flight",
            binary.display(),
            self.calls_in_flight
        );
        self.upgrading = Some(Upgrading {
            conn,
            stream,
            binary,
            paused_at: now,
            paused_at_ns: state::monotonic_ns(),
            deadline: now + Duration::from_millis(request.timeout_ms),
            request,
        });
        let held: Vec<u32> = self.conns.keys().copied().collect();
        for n in held {
            if let Some(c) = self.conns.get_mut(&n) {
                c.hold();
            }
            self.update_interest(n);
        }
        None
    }

    /// Carries an upgrade on: once nothing is in flight, hands over (and does not come
    /// back unless that fails); at the deadline, refuses.
    pub(super) fn progress_upgrade(&mut self, now: Instant) {
        let Some(u) = &self.upgrading else {
            return;
        };
        if self.calls_in_flight > 0 {
            if now >= u.deadline {
                let why = format!(
                    "{} call(s) still in flight after {:?}",
                    self.calls_in_flight,
                    Duration::from_millis(u.request.timeout_ms)
                );
                self.refuse(why);
            }
            return;
        }
        if let Err(why) = self.hand_over() {
            self.refuse(why);
        }
    }

    /// Answers the Upgrade call with a refusal and serves on as before.
    fn refuse(&mut self, why: String) {
        let Some(u) = self.upgrading.take() else {
            return;
        };
        log::warn!("upgrade to {} refused: {why}", u.binary.display());
        let paused = u64::try_from(u.paused_at.elapsed().as_micros()).unwrap_or(u64::MAX);
        let reply = report(&u.binary, paused, Outcome::Refused(why));
        let held: Vec<u32> = self.conns.keys().copied().collect();
        for n in held {
            if let Some(c) = self.conns.get_mut(&n) {
                c.release();
            }
            self.update_interest(n);
        }
        if let Some(c) = self.conns.get_mut(&u.conn) {
            let _ = c.respond(u.stream, reply);
        }
    }

    /// Saves the state, has the new binary check it, and executes it. Returns only if
    /// something failed, with why; the shim is then as it was.
    fn hand_over(&mut self) -> Result<(), String> {
        let Some(u) = &self.upgrading else {
            return Ok(());
        };
        let now = Instant::now();
        let mut fds = FdsOut::default();
        let table = self
            .shim
            .table
            .save(&mut fds, now)
            .map_err(|e| e.to_string())?;
        let listener = fds.carry(&self.listener);
        let conns = self
            .conns
            .iter()
            .map(|(n, c)| (*n, c.save(&mut fds)))
            .collect();
        let old_image = std::fs::File::open("/proc/self/exe")
            .map_err(|e| format!("keep the running image open: {e}"))?;
        let old_image_fd = fds.carry(&old_image);
        let mut saved = SavedShim {
            format: FORMAT,
            saved_by: version_line(),
            paused_at_ns: u.paused_at_ns,
            started_from: self.started_from.clone(),
            old_image: old_image_fd,
            socket_path: self.socket_path.clone().unwrap_or_default(),
            listener,
            start_options: self.shim.start_options.clone(),
            conns,
            next_conn: self.next_conn,
            table,
            events: Vec::new(),
            upgrade_call: (u.conn, u.stream),
            request: u.request.clone(),
            empty_since: self.empty_since.map(|at| offset_of(at, now)),
            shutdown_requested: self.shim.shutdown_requested.map(|at| offset_of(at, now)),
            fds: Vec::new(),
        };
        saved.fds = fds.fds().to_vec();
        let checked = dry_run(&u.binary, &saved)?;
        log::info!(
            "upgrade: {} takes the state over ({checked})",
            u.binary.display()
        );
        saved.events = self.shim.events.hand_over(EVENTS_FLUSH);
        let binary = u.binary.clone();
        let failed = self.exec(&binary, &saved, &fds);
        // Still here: the shim serves on, with its events.
        fds.restore_cloexec();
        let publisher = self.events_address.as_deref().and_then(|addr| {
            Publisher::start_with_events(addr, &self.shim.namespace, saved.events.clone()).ok()
        });
        self.shim.events.resume(publisher);
        drop(old_image);
        Err(failed)
    }

    /// Executes `binary` with the state; returns why it could not.
    fn exec(&self, binary: &Path, saved: &SavedShim, fds: &FdsOut) -> String {
        let memfd = match state::write_memfd(saved) {
            Ok(fd) => fd,
            Err(e) => return format!("write the state: {e}"),
        };
        if let Err(e) = fds.keep_across_exec() {
            return format!("keep the descriptors across execve: {e}");
        }
        if let Err(e) = nix::fcntl::fcntl(
            memfd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        ) {
            return format!("keep the state across execve: {e}");
        }
        let argv: Vec<std::ffi::CString> = std::env::args_os()
            .filter_map(|a| std::ffi::CString::new(a.as_bytes()).ok())
            .collect();
        let mut env: Vec<std::ffi::CString> = std::env::vars_os()
            .filter(|(k, _)| k != STATE_FD_ENV && k != ROLLBACK_ENV)
            .filter_map(|(k, v)| {
                let mut kv: OsString = k;
                kv.push("=");
                kv.push(v);
                std::ffi::CString::new(kv.as_bytes()).ok()
            })
            .collect();
        if let Ok(e) =
            std::ffi::CString::new(format!("{STATE_FD_ENV}={}", memfd.as_fd().as_raw_fd()))
        {
            env.push(e);
        }
        let Ok(path) = std::ffi::CString::new(binary.as_os_str().as_bytes()) else {
            return format!("{}: not a path execve takes", binary.display());
        };
        log::info!("upgrade: executing {}", binary.display());
        let err = nix::unistd::execve(&path, &argv, &env).unwrap_err();
        format!("execve {}: {err}", binary.display())
    }
}

/// An Upgrade call's answer.
fn report(binary: &Path, pause_us: u64, outcome: Outcome) -> Reply {
    let r = UpgradeReport {
        pid: std::process::id(),
        from: version_line(),
        to: version_line(),
        binary: binary.to_path_buf(),
        pause_us,
        outcome,
    };
    serde_json::to_vec(&r).map_err(|e| crate::containerd::errors::internal(e.to_string()))
}

/// Whether `binary` is a file that can be executed (a clear refusal before anything
/// else happens).
fn executable(binary: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", binary.display()));
    }
    Ok(())
}

/// Runs `binary upgrade-check` with the state on its stdin: the binary says whether it
/// can take it over, before anything is handed to it. Returns what it said.
fn dry_run(binary: &Path, saved: &SavedShim) -> Result<String, String> {
    let bytes = serde_json::to_vec(saved).map_err(|e| format!("encode the state: {e}"))?;
    let mut child = Command::new(binary)
        .arg("upgrade-check")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("dry run of {}: {e}", binary.display()))?;
    // The state is written from a thread: a binary that does not read it must not block
    // the loop beyond the dry run's limit.
    let stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(mut s) = stdin {
            let _ = s.write_all(&bytes);
        }
    });
    let deadline = Instant::now() + DRY_RUN_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => break None,
        }
    };
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        let _ = writer.join();
        return Err(format!(
            "the dry run of {} did not finish within {DRY_RUN_LIMIT:?}",
            binary.display()
        ));
    };
    let _ = writer.join();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.by_ref().take(4096).read_to_string(&mut out);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(4096).read_to_string(&mut err);
    }
    let said = out.trim().to_string();
    if status.success() && said.starts_with(DRY_RUN_OK) {
        return Ok(said);
    }
    let why = [said.as_str(), err.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or("it said nothing")
        .to_string();
    Err(format!(
        "{} cannot take the state over ({status}): {why}",
        binary.display()
    ))
}
