//! Which ttrpc task services the shim answers.
//!
//! containerd talks to a shim through `containerd.task.v2.Task` (1.6 to 2.2, and 2.3+ when the
//! shim reports version 2) or `containerd.task.v3.Task` (2.0+ when the shim reports version 3,
//! which tether does to a daemon that sent `BootstrapParams`: see `bootstrap_protocol.rs`).
//! The two are the same service: containerd's `api/runtime/task/v3/shim.proto` differs from
//! `v2/shim.proto` only in its package name (checked against api v1.11.1, containerd 2.3.7,
//! and v1.12.0, 2.4.2), so every method name and every request and response message is
//! wire-identical and one set of handlers serves both.

/// The task service of containerd 1.6 and later.
pub const TASK_V2: &str = "containerd.task.v2.Task";
/// The task service containerd 2.0 and later use with a shim that reports version 3.
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// Whether `service` (a ttrpc request's service name) is a task service tether serves.
pub fn is_task_service(service: &str) -> bool {
    service == TASK_V2 || service == TASK_V3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_task_versions_and_nothing_else() {
        assert!(is_task_service("containerd.task.v2.Task"));
        assert!(is_task_service("containerd.task.v3.Task"));
        for other in [
            "",
            "containerd.task.v1.Task",
            "containerd.task.v4.Task",
            "containerd.runtime.sandbox.v1.Sandbox",
            "containerd.task.v3.Task ",
            "containerd.task.v3.task",
        ] {
            assert!(!is_task_service(other), "{other:?}");
        }
    }
}
