//! What a runtime (runc, crun, youki, runsc) keeps under its `--root`, as far as the
//! `delete` subcommand needs to know: whether anything there may still be a container's.

use std::path::Path;

/// Entries of a runtime's root that [`state_left`] looks at, at most; a larger root
/// counts as holding state (runc runs, as before).
const MAX_ROOT_ENTRIES: usize = 100_000;

/// Whether the runtime may still hold state for container `id` under `root`: an entry of
/// `root` names it (runc's, crun's and youki's directory `root/id`; runsc's
/// `<sandbox>_sandbox:<id>.state` files), or `root` cannot be read, or holds more than
/// [`MAX_ROOT_ENTRIES`]. When none does, `runc delete --force` would find nothing to do
/// (for a container it cannot load runc removes `root/id`, and only it), so `delete`
/// skips it. containerd 1.6-2.x run `delete` after every shim's shutdown, also when the
/// server's Delete already removed the container: for 30 containers deleted at once, 30
/// runc runs saved. A runtime that keeps its state outside its `--root` is not covered.
pub fn state_left(root: &Path, id: &str) -> bool {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return true;
    }
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) => return e.kind() != std::io::ErrorKind::NotFound,
    };
    let id = id.as_bytes();
    for (n, entry) in entries.enumerate() {
        let Ok(entry) = entry else {
            return true;
        };
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if n >= MAX_ROOT_ENTRIES || name.windows(id.len()).any(|w| w == id) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_runs_the_runtime_only_while_its_state_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("default");
        // No root, no container directory: nothing for `runc delete --force` to do.
        assert!(!state_left(&root, "c1"));
        std::fs::create_dir_all(root.join("c1")).unwrap();
        assert!(state_left(&root, "c1"));
        assert!(!state_left(&root, "c2"));
        // Any entry that names the container: runsc keeps state files, not a directory.
        std::fs::write(root.join("pod_sandbox:c3.state"), "").unwrap();
        assert!(state_left(&root, "c3"));
        assert!(!state_left(&root, "c4"));
        // Ids that would not name a directory of the root: runc decides.
        for odd in ["", ".", "..", "a/b"] {
            assert!(state_left(&root, odd), "{odd:?}");
        }
    }
}
