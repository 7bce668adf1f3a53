//! The processes of a container's cgroup, read from cgroupfs as `runc ps` reads them: the
//! `cgroup.procs` of the cgroup and of every cgroup below it, depth first, in name order.
//! `Task.Pids` answers from here without spawning the runtime.

use std::io;
use std::path::{Path, PathBuf};

/// The most cgroups one listing visits (the container's and those below it). A container
/// nests a few (systemd in a container: tens); more is refused rather than walked on.
pub const MAX_CGROUPS: usize = 4096;

/// Why a cgroup's processes could not be listed; each names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum ProcsError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: line {line:?} is no pid", path.display())]
    NotAPid { path: PathBuf, line: String },
    #[error("{} holds more than {MAX_CGROUPS} cgroups", dir.display())]
    TooMany { dir: PathBuf },
}

/// Every pid listed in `dir`'s `cgroup.procs` and in those of the cgroups below it (the
/// cgroup first, then each child's subtree in name order), as runc's `ps` lists them. A
/// cgroup that is gone, `dir` itself or one removed during the walk, lists nothing: a
/// stopped container's cgroup may have been removed already, as runc answers then.
pub fn all_pids(dir: &Path) -> Result<Vec<i32>, ProcsError> {
    let mut pids = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(cgroup) = pending.pop() {
        visited += 1;
        if visited > MAX_CGROUPS {
            return Err(ProcsError::TooMany {
                dir: dir.to_path_buf(),
            });
        }
        let procs = cgroup.join("cgroup.procs");
        match std::fs::read_to_string(&procs) {
            Ok(text) => pids.extend(parse_procs(&procs, &text)?),
            Err(e) if gone(&e) => continue,
            Err(source) => {
                return Err(ProcsError::Read {
                    path: procs,
                    source,
                })
            }
        }
        let mut children = match std::fs::read_dir(&cgroup) {
            // At most one past the bound is kept: a directory of a million cgroups
            // costs no more memory than one of the bound's size.
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .take(MAX_CGROUPS + 1)
                .collect::<Vec<_>>(),
            Err(e) if gone(&e) => continue,
            Err(source) => {
                return Err(ProcsError::Read {
                    path: cgroup,
                    source,
                })
            }
        };
        if visited + pending.len() + children.len() > MAX_CGROUPS {
            return Err(ProcsError::TooMany {
                dir: dir.to_path_buf(),
            });
        }
        // Popped from the end: reversed, the first name is walked first.
        children.sort_unstable_by(|a, b| b.cmp(a));
        pending.extend(children);
    }
    Ok(pids)
}

/// A cgroup removed under the walk (ENOENT; ENODEV when its files outlive it).
fn gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV))
}

/// The pids of one `cgroup.procs` text: one decimal pid per line.
fn parse_procs(path: &Path, text: &str) -> Result<Vec<i32>, ProcsError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            l.trim().parse().map_err(|_| ProcsError::NotAPid {
                path: path.to_path_buf(),
                line: l.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cgroup(dir: &Path, pids: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), pids).unwrap();
    }

    #[test]
    fn lists_the_cgroup_then_each_child_subtree_in_name_order() {
        let root = tempfile::tempdir().unwrap();
        let top = root.path().join("ctr");
        cgroup(&top, "10\n11\n");
        cgroup(&top.join("b"), "30\n");
        cgroup(&top.join("a"), "20\n");
        cgroup(&top.join("a/deep"), "21\n");
        std::fs::write(top.join("memory.max"), "max\n").unwrap();
        assert_eq!(all_pids(&top).unwrap(), vec![10, 11, 20, 21, 30]);
    }

    #[test]
    fn a_cgroup_that_is_gone_lists_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert!(all_pids(&root.path().join("removed")).unwrap().is_empty());
        cgroup(root.path(), "");
        assert!(all_pids(root.path()).unwrap().is_empty());
    }

    #[test]
    fn a_line_that_is_no_pid_is_named() {
        let root = tempfile::tempdir().unwrap();
        cgroup(root.path(), "12\nzz\n");
        let e = all_pids(root.path()).unwrap_err();
        assert!(
            matches!(e, ProcsError::NotAPid { ref line, .. } if line == "zz"),
            "{e}"
        );
        assert!(e.to_string().contains("cgroup.procs"), "{e}");
    }

    #[test]
    fn too_many_cgroups_are_refused() {
        let root = tempfile::tempdir().unwrap();
        cgroup(root.path(), "1\n");
        for i in 0..MAX_CGROUPS {
            std::fs::create_dir(root.path().join(format!("c{i}"))).unwrap();
        }
        let e = all_pids(root.path()).unwrap_err();
        assert!(matches!(e, ProcsError::TooMany { .. }), "{e}");
    }

    #[test]
    fn lists_this_process_from_its_own_cgroup() {
        let me = i32::try_from(std::process::id()).unwrap();
        let Some(dir) = crate::containerd::cgroups::of_pid(me)
            .ok()
            .and_then(|c| c.procs_dir().map(Path::to_path_buf))
        else {
            return; // no cgroupfs mounted here
        };
        assert!(all_pids(&dir).unwrap().contains(&me));
    }
}
