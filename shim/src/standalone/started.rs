//! What `run` and `exec` print once their process has started.

use std::path::Path;

/// What `run` and `exec` print on success.
pub fn print_started(json: bool, container: &str, process: &str, pid: i32, dir: &Path) {
    if json {
        println!(
            "{}",
            serde_json::json!({"container": container, "process": process, "pid": pid, "dir": dir})
        );
    } else {
        println!("{pid}");
    }
}
