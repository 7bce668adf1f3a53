//! Killing every process of a container's cgroup: what must happen when the init of a
//! container without its own pid namespace dies (the kernel only does it for us when the
//! init was pid 1 of a namespace).

use std::path::{Path, PathBuf};

/// The `cgroup.procs` file that lists a container's processes, found from its init pid
/// while that pid is alive (`ProcessCgroups::procs_dir`).
pub fn procs_file_of(pid: i32) -> Option<PathBuf> {
    let cgroups = crate::containerd::cgroups::of_pid(pid).ok()?;
    cgroups
        .procs_dir()
        .map(|dir| dir.join("cgroup.procs"))
        .filter(|f| f.exists())
}

/// SIGKILLs every process listed in `procs`, a few passes so that processes forked
/// meanwhile are caught too. Returns how many signals were sent. Never blocks for long:
/// it runs on the event loop.
pub fn kill_all(procs: &Path) -> usize {
    let me = nix::unistd::getpid().as_raw();
    let mut sent = 0;
    for _ in 0..3 {
        let Ok(text) = std::fs::read_to_string(procs) else {
            break;
        };
        let pids: Vec<i32> = text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&p| p > 1 && p != me)
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
            {
                sent += 1;
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_what_the_file_lists_and_never_pid_1_or_us() {
        let mut child = std::process::Command::new("sleep")
            .arg("100")
            .spawn()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let procs = dir.path().join("cgroup.procs");
        std::fs::write(
            &procs,
            format!("1\n{}\n{}\n", std::process::id(), child.id()),
        )
        .unwrap();
        assert!(kill_all(&procs) >= 1);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(kill_all(&dir.path().join("missing")), 0);
    }

    #[test]
    fn finds_our_own_cgroup() {
        // Every process is in some cgroup; the file must exist when found.
        if let Some(f) = procs_file_of(nix::unistd::getpid().as_raw()) {
            assert!(f.ends_with("cgroup.procs"));
        }
    }
}
