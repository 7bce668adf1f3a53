//! The watcher against fake `memory.events`/`cgroup.events` files (inotify sees regular
//! file writes as it sees cgroupfs notifications), and real OOM kills in real v1 and v2
//! memory cgroups when the machine has them (as root).

use super::*;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Waits up to `timeout` for `fd` to become readable.
fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

#[test]
fn parse_oom_kill_count() {
    assert_eq!(
        parse_oom_kills("low 0\nhigh 0\nmax 9\noom 3\noom_kill 2\noom_group_kill 0\n"),
        2
    );
    assert_eq!(parse_oom_kills(""), 0);
}

/// The v2 watcher's plumbing against a fake `memory.events` (inotify sees
/// regular-file writes the same way it sees cgroupfs notifications).
#[test]
fn v2_watcher_on_fake_events_file() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("memory.events");
    let cgroup_events = dir.path().join("cgroup.events");
    assert!(matches!(
        OomWatcher::v2(dir.path()),
        Err(OomError::NoMemoryCgroup)
    ));
    std::fs::write(&cgroup_events, "populated 1\nfrozen 0\n").unwrap();
    // A kill before the watch existed is the container's too: reported by the first
    // check (the loop checks once when it registers the watcher).
    std::fs::write(&events, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 1\n").unwrap();
    let mut w = OomWatcher::v2(dir.path()).unwrap();
    assert!(!readable(w.fd(), Duration::from_millis(50)));
    assert!(w.check().unwrap(), "the kill before the watch");
    assert!(!w.check().unwrap(), "nothing changed since");

    // A change that is not an OOM kill: a spurious wakeup.
    std::fs::write(&events, "low 0\nhigh 0\nmax 5\noom 0\noom_kill 1\n").unwrap();
    assert!(readable(w.fd(), Duration::from_secs(2)));
    assert!(!w.check().unwrap());
    assert!(!readable(w.fd(), Duration::from_millis(50)), "drained");

    std::fs::write(&events, "low 0\nhigh 0\nmax 6\noom 1\noom_kill 3\n").unwrap();
    assert!(readable(w.fd(), Duration::from_secs(2)));
    assert!(w.check().unwrap());
    assert!(!w.check().unwrap(), "reported once");

    std::fs::remove_file(&events).unwrap();
    assert!(readable(w.fd(), Duration::from_secs(2)));
    assert!(matches!(w.check(), Err(OomError::Gone)));
}

/// The container exits: `cgroup.events` says `populated 0` and the watcher ends,
/// after reporting an OOM kill that came in the same wakeup.
#[test]
fn v2_watcher_ends_when_the_cgroup_empties() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("memory.events");
    let cgroup_events = dir.path().join("cgroup.events");
    std::fs::write(&events, "oom 0\noom_kill 0\n").unwrap();
    std::fs::write(&cgroup_events, "populated 1\nfrozen 0\n").unwrap();
    let mut w = OomWatcher::v2(dir.path()).unwrap();
    assert!(!w.check().unwrap());

    // Emptied without an OOM kill: Gone.
    std::fs::write(&cgroup_events, "populated 0\nfrozen 0\n").unwrap();
    assert!(readable(w.fd(), Duration::from_secs(2)));
    assert!(matches!(w.check(), Err(OomError::Gone)));

    // An OOM kill and the exit it caused, seen in one wakeup: the kill, then Gone.
    std::fs::write(&cgroup_events, "populated 1\nfrozen 0\n").unwrap();
    let mut w = OomWatcher::v2(dir.path()).unwrap();
    assert!(!w.check().unwrap());
    std::fs::write(&events, "oom 1\noom_kill 1\n").unwrap();
    std::fs::write(&cgroup_events, "populated 0\nfrozen 0\n").unwrap();
    assert!(readable(w.fd(), Duration::from_secs(2)));
    assert!(w.check().unwrap(), "the OOM kill is reported");
    assert!(matches!(w.check(), Err(OomError::Gone)));
}

#[test]
fn parse_populated_values() {
    assert!(parse_populated("populated 1\nfrozen 0\n"));
    assert!(!parse_populated("populated 0\nfrozen 1\n"));
    assert!(parse_populated(""), "no key: not known to be empty");
}

#[test]
fn no_such_process() {
    assert!(matches!(
        OomWatcher::new(-1),
        Err(OomError::ProcCgroup { pid: -1, .. })
    ));
}

/// Removes the test cgroup and kills the child even when an assertion fails.
struct Cleanup {
    child: Option<Child>,
    /// A process that keeps the cgroup populated (v2).
    keeper: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mut c in [self.child.take(), self.keeper.take()]
            .into_iter()
            .flatten()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed task may linger in the cgroup for a moment.
        for _ in 0..50 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

/// A real OOM kill in a real cgroup v1 memory cgroup on this machine.
#[test]
fn v1_real_oom() {
    let root = Path::new("/sys/fs/cgroup/memory");
    if test_skip::unless_root() {
        return;
    }
    if host_hierarchy() != Hierarchy::V1 || !root.join("cgroup.event_control").exists() {
        test_skip::skip(&format!(
            "cgroup v1 only, and there is no v1 memory controller at {} (v2_real_oom covers v2)",
            root.display()
        ));
        return;
    }
    let dir = root.join(format!("tether-oomtest-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        test_skip::skip(&format!("cannot create {}: {e}", dir.display()));
        return;
    }
    let mut guard = Cleanup {
        child: None,
        keeper: None,
        dir: dir.clone(),
    };
    std::fs::write(dir.join("memory.limit_in_bytes"), "8M").unwrap();
    // Without a memsw limit the child could swap instead of being killed.
    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), "8M");

    // The child joins the cgroup, then waits for our go-ahead so the
    // watcher is registered before memory runs out.
    let procs = dir.join("cgroup.procs");
    let script = format!(
        "echo $$ > '{}' && echo ready && read go && exec tail /dev/zero",
        procs.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    guard.child = Some(child);
    let c = guard.child.as_mut().unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    let mut w = OomWatcher::new(pid).unwrap();
    assert!(!w.check().unwrap(), "no OOM yet");
    writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();

    assert!(
        readable(w.fd(), Duration::from_secs(10)),
        "no OOM within 10 s"
    );
    assert!(w.check().unwrap());
    let status = c.wait().unwrap();
    println!("child ended: {status:?}");
    guard.child = None;

    // Removing the cgroup signals the eventfd once more: check says Gone.
    for _ in 0..50 {
        if std::fs::remove_dir(&dir).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(readable(w.fd(), Duration::from_secs(2)));
    assert!(matches!(w.check(), Err(OomError::Gone)));
}

/// Runs `command` in a child that joins the cgroup `dir` first; with `wait_for_go`
/// it execs `command` only once it reads a line on stdin. Returns once the child is
/// in the cgroup.
fn spawn_in(dir: &Path, command: &str, wait_for_go: bool) -> Child {
    let procs = dir.join("cgroup.procs");
    let go = if wait_for_go { "&& read go " } else { "" };
    let script = format!(
        "echo $$ > '{}' && echo ready {go}&& exec {command}",
        procs.display()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    child
}

/// Real OOM kills in a real cgroup v2 memory cgroup on this machine (the cgroup v2
/// leg's guest): one before the watcher exists (reported by its first check, as
/// the shim relies on when a container is killed before its watch is set up), one
/// after (inotify on `memory.events` wakes the watcher), then the end of the watch
/// when the cgroup empties (`cgroup.events`).
#[test]
fn v2_real_oom() {
    let root = Path::new("/sys/fs/cgroup");
    if test_skip::unless_root() {
        return;
    }
    let subtree = std::fs::read_to_string(root.join("cgroup.subtree_control"));
    if host_hierarchy() != Hierarchy::V2
        || !subtree.is_ok_and(|s| s.split_whitespace().any(|c| c == "memory"))
    {
        test_skip::skip(
            "cgroup v2 only, and this is not a v2 host with the memory \
             controller enabled at its root (v1_real_oom covers v1)",
        );
        return;
    }
    let dir = root.join(format!("tether-oomtest-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        test_skip::skip(&format!("cannot create {}: {e}", dir.display()));
        return;
    }
    let mut guard = Cleanup {
        child: None,
        keeper: None,
        dir: dir.clone(),
    };
    std::fs::write(dir.join("memory.max"), "8M").unwrap();
    // Without a swap limit the child could swap instead of being killed.
    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    // A small process that keeps the cgroup populated between the kills (the OOM
    // killer picks the largest process: the hog).
    guard.keeper = Some(spawn_in(&dir, "sleep 600", false));

    // 1. Killed before the watcher exists: its first check reports it.
    let status = spawn_in(&dir, "tail /dev/zero", false).wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the OOM killer ended the first child: {status:?}"
    );
    let mut w = OomWatcher::v2(&dir).unwrap();
    assert!(w.check().unwrap(), "the kill before the watch is reported");
    assert!(!w.check().unwrap(), "and only once");

    // 2. Killed while watched: memory.events changes, the fd becomes readable.
    let mut hog = spawn_in(&dir, "tail /dev/zero", true);
    writeln!(hog.stdin.as_mut().unwrap(), "go").unwrap();
    guard.child = Some(hog);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no oom_kill counted within 30 s");
        // The fd may wake for another memory.events key first (max, high).
        if readable(w.fd(), Duration::from_millis(500)) && w.check().unwrap() {
            break;
        }
    }
    guard.child.take().unwrap().wait().unwrap();

    // 3. The cgroup empties (its last process exits): the watch ends.
    let mut keeper = guard.keeper.take().unwrap();
    keeper.kill().unwrap();
    keeper.wait().unwrap();
    assert!(readable(w.fd(), Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match w.check() {
            Err(OomError::Gone) => break,
            other => assert!(Instant::now() < deadline, "still watching: {other:?}"),
        }
        readable(w.fd(), Duration::from_millis(200));
    }
}
