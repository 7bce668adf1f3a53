//! Standalone supervisor: the depot under a careless umask, a hostile local user and a
//! runc that forgot a container (issue 12, point 6).
//!
//! * every directory and file gets its mode explicitly, under umask 000 too;
//! * a user who can rename entries of a (misconfigured) depot and plants a symlink cannot
//!   steer root's write of `exitcode`: the supervisor writes through a descriptor of its
//!   process directory;
//! * a depot a user other than root could change is refused (exit code 118);
//! * a fresh default depot (runc's root inside it) is 0711, so `--io-uid` works at once;
//! * `delete --force` of a container runc no longer knows kills its still-running init
//!   instead of reporting success and leaving it behind.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tether_tests::standalone_env::{output_bounded, output_bounded_with_input};
use tether_tests::StandaloneEnv;

const NOBODY: u32 = 65534;
const IO_ID: u32 = 1234;
const TIMEOUT: Duration = Duration::from_secs(30);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (uid, permission bits) of `path`, not following symlinks.
fn owner_mode(path: &Path) -> (u32, u32) {
    let m =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.mode() & 0o7777)
}

/// `sh -c script` as `id`:`id` (no supplementary groups, no capabilities), stdin /dev/null.
fn sh_as(id: u32, script: &str) -> Output {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", script]).stdin(Stdio::null()).uid(id).gid(id);
    output_bounded(c, TIMEOUT)
}

/// `cmd` run under umask 000 (through a shell: the umask is inherited).
fn under_umask_000(cmd: &Command) -> Command {
    let mut c = Command::new("/bin/sh");
    c.args(["-c", "umask 000; exec \"$@\"", "sh"])
        .arg(cmd.get_program())
        .args(cmd.get_args());
    c
}

/// Polls `cond` every 20 ms for at most `timeout`.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` names a process that has not exited (not a zombie).
fn alive(pid: i32) -> bool {
    fifo::StartRecord::of(pid).is_some()
}

#[test]
fn modes_are_explicit_under_umask_000() {
    let env = StandaloneEnv::new();
    let id = env.id("umask");
    // Runs until its stdin is closed: its files are all there while it runs.
    let bundle = env.bundle("b", &["sh", "-c", "read l; exit 3"]);
    let umask_000 = |sub: &str, args: &[&str]| {
        let mut c = env.cmd(sub);
        c.args(args);
        output_bounded(under_umask_000(&c), TIMEOUT)
    };
    let out = umask_000("run", &["--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(out.status.success(), "run: {}", text(&out.stderr));
    let dir = env.process_dir(&id, "init");
    // Written by the supervisor before `run` returns (checked with the modes below).
    let _ = eventually(Duration::from_secs(5), || dir.join("starttime").exists());
    let out = umask_000("close-stdin", &[&id]);
    assert!(out.status.success(), "close-stdin: {}", text(&out.stderr));
    let out = umask_000("wait", &[&id]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let depot = env.depot();
    let cdir = depot.join(&id);
    for (path, mode) in [
        (depot.to_path_buf(), 0o711),
        (cdir.clone(), 0o711),
        (cdir.join("processes"), 0o711),
        (cdir.join("container.json"), 0o644),
        (dir.clone(), 0o700),
        (dir.join("stdin"), 0o600),
        (dir.join("stdout"), 0o600),
        (dir.join("exit"), 0o600),
        (dir.join("control"), 0o600),
        (dir.join("exitcode"), 0o644),
        (dir.join("supervisor.pid"), 0o644),
        (dir.join("starttime"), 0o644),
        // Written by runc, under the umask the supervisor sets.
        (dir.join("pidfile"), 0o644),
    ] {
        assert_eq!(owner_mode(&path), (0, mode), "{}", path.display());
    }
}

#[test]
fn a_user_who_swaps_the_process_directory_does_not_steer_exitcode() {
    let env = StandaloneEnv::new();
    env.let_others_traverse();
    let id = env.id("swap");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    let pid = env.run(&id, &bundle);
    let procs = env.depot().join(&id).join("processes");
    // A depot an operator broke (or made before the modes were explicit): everybody may
    // rename entries in `processes/`.
    std::fs::set_permissions(&procs, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(
        env.depot().join(&id),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(env.depot(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let trap = env.runc_env().dir().join("trap");
    std::fs::create_dir(&trap).unwrap();
    std::os::unix::fs::chown(&trap, Some(NOBODY), Some(NOBODY)).unwrap();
    // The attack, as nobody: the process directory renamed away, a symlink in its place
    // pointing to a directory the user chose.
    let p = procs.display();
    let out = sh_as(
        NOBODY,
        &format!("mv {p}/init {p}/moved && ln -s {} {p}/init", trap.display()),
    );
    assert!(out.status.success(), "the attack: {}", text(&out.stderr));
    // The process exits; its supervisor records that.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let moved = procs.join("moved");
    assert!(
        eventually(TIMEOUT, || moved.join("exitcode").exists()),
        "exitcode in the real directory"
    );
    let planted: Vec<_> = std::fs::read_dir(&trap).unwrap().flatten().collect();
    assert!(
        planted.is_empty(),
        "root wrote into the user's directory: {planted:?}"
    );
    assert_eq!(
        std::fs::read_to_string(moved.join("exitcode"))
            .unwrap()
            .lines()
            .next(),
        Some("137")
    );
    // The CLI now refuses the depot.
    let out = env.output("ps", &[&id]);
    assert_eq!(out.status.code(), Some(118), "{out:?}");
    assert!(
        text(&out.stderr).contains("writable by every user"),
        "{}",
        text(&out.stderr)
    );
    // Put things back so that cleanup through the CLI works.
    std::fs::remove_file(procs.join("init")).unwrap();
    std::fs::rename(&moved, procs.join("init")).unwrap();
    for d in [procs.as_path(), &env.depot().join(&id), env.depot()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
}

#[test]
fn a_depot_other_users_can_write_is_refused() {
    let env = StandaloneEnv::new();
    let id = env.id("unsafe");
    let bundle = env.bundle("b", &["true"]);
    let b = bundle.path().to_str().unwrap();
    std::fs::create_dir(env.depot()).unwrap();
    for (mode, owner, says) in [
        (0o777, 0, "writable by every user"),
        (0o775, 0, "writable by its group"),
        (0o1777, 0, "writable by every user"),
        (0o755, NOBODY, "owned by uid 65534"),
    ] {
        std::os::unix::fs::chown(env.depot(), Some(owner), Some(0)).unwrap();
        std::fs::set_permissions(env.depot(), std::fs::Permissions::from_mode(mode)).unwrap();
        for (sub, args) in [("run", vec!["--bundle", b, id.as_str()]), ("list", vec![])] {
            let out = env.output(sub, &args);
            assert_eq!(out.status.code(), Some(118), "{sub} with {mode:o}: {out:?}");
            let err = text(&out.stderr);
            assert!(
                err.contains("unsafe depot") && err.contains(says),
                "{sub} {mode:o}: {err}"
            );
        }
        assert!(!env.depot().join(&id).exists(), "nothing created");
    }
    // A parent others may write to is refused too, unless it is sticky (like /tmp).
    std::os::unix::fs::chown(env.depot(), Some(0), Some(0)).unwrap();
    std::fs::set_permissions(env.depot(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let parent = env.runc_env().dir();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.output("list", &[]);
    assert_eq!(out.status.code(), Some(118), "{out:?}");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = env.output("list", &[]);
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    // runc's root too: root's runc trusts what is in it.
    let runc_root = env.runc_root();
    std::fs::create_dir_all(&runc_root).unwrap();
    std::fs::set_permissions(&runc_root, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = env.output("list", &[]);
    assert_eq!(out.status.code(), Some(118), "{out:?}");
    assert!(
        text(&out.stderr).contains(runc_root.to_str().unwrap()),
        "{out:?}"
    );
    std::fs::set_permissions(&runc_root, std::fs::Permissions::from_mode(0o700)).unwrap();
    // And the help lists the code.
    assert!(text(&env.output("run", &["--help"]).stdout).contains("118"));
}

#[test]
fn a_fresh_default_depot_lets_an_io_user_in() {
    let env = StandaloneEnv::with_runc_root_in_depot();
    env.let_others_traverse();
    let id = env.id("fresh");
    let bundle = env.bundle("b", &["sh", "-c", "read l; echo got:$l; exit 5"]);
    let uid = IO_ID.to_string();
    assert!(!env.depot().exists());
    env.run_with(&id, &bundle, &["--io-uid", &uid, "--io-gid", &uid]);
    assert_eq!(owner_mode(env.depot()), (0, 0o711));
    assert_eq!(
        owner_mode(&env.depot().join(".runc")).1 & 0o077,
        0,
        "runc's own"
    );
    let dir = env.process_dir(&id, "init");
    let mut attach = env.cmd("attach");
    attach
        .args(["--dir", dir.to_str().unwrap()])
        .uid(IO_ID)
        .gid(IO_ID);
    let out = output_bounded_with_input(attach, b"x\n", TIMEOUT);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(5), "got:x\n".to_string()),
        "{}",
        text(&out.stderr)
    );
}

/// The cgroup directories of `pid` (v1 hierarchies and v2), to remove once runc cannot.
fn cgroup_dirs(pid: i32) -> Vec<std::path::PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let root = Path::new("/sys/fs/cgroup");
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let base = match ctrl {
                "" if root.join("unified").is_dir() => root.join("unified"),
                "" => root.to_path_buf(),
                c => root.join(c.trim_start_matches("name=")),
            };
            Some(base.join(path.trim_start_matches('/')))
        })
        .filter(|d| d.is_dir())
        .collect()
}

/// Kills `pid` (if it is still the process `start` recorded) and removes its cgroups when
/// dropped: what runc would have done had it not lost the container.
struct Orphan {
    start: Option<fifo::StartRecord>,
    cgroups: Vec<std::path::PathBuf>,
}

impl Drop for Orphan {
    fn drop(&mut self) {
        if let Some(s) = self.start.filter(fifo::StartRecord::is_running) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(s.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for cg in &self.cgroups {
            let _ = eventually(Duration::from_secs(5), || std::fs::remove_dir(cg).is_ok());
        }
    }
}

#[test]
fn delete_force_kills_an_init_runc_forgot() {
    let env = StandaloneEnv::new();
    let id = env.id("forgot");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    let pid = env.run(&id, &bundle);
    let _orphan = Orphan {
        start: fifo::StartRecord::of(pid),
        cgroups: cgroup_dirs(pid),
    };
    // runc's state goes behind tether's back; the init runs on.
    std::fs::remove_dir_all(env.runc_root().join(&id)).unwrap();
    assert_eq!(
        env.ok("list", &[])
            .lines()
            .nth(1)
            .map(|l| l.contains("deleted")),
        Some(true)
    );
    let out = env.output("delete", &[&id]);
    assert_eq!(out.status.code(), Some(124), "{out:?}");
    assert!(
        text(&out.stderr).contains(&format!("pid {pid}")),
        "{}",
        text(&out.stderr)
    );
    assert!(alive(pid) && env.depot().join(&id).exists());

    let out = env.output("delete", &["--force", &id]);
    assert!(out.status.success(), "{out:?}");
    assert!(!alive(pid), "the init still runs after delete --force");
    assert!(!env.depot().join(&id).exists());
}
