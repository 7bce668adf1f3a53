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

/// The task API version of a task service name: 2 or 3; `None` for anything else.
pub fn version_of(service: &str) -> Option<u8> {
    match service {
        TASK_V2 => Some(2),
        TASK_V3 => Some(3),
        _ => None,
    }
}

/// Says once per version which task API containerd speaks to this shim, from the service
/// of the calls it sends: which one it picked depends on the daemon and on what `start`
/// answered it, so the server cannot know it beforehand. Owned by the event loop.
#[derive(Debug, Default)]
pub struct ApiSeen {
    seen: [bool; 2],
}

impl ApiSeen {
    /// Notes a call to `service`; returns the version when it is the first call of it (the
    /// caller logs it), `None` for a version seen before or a service that is no task API.
    pub fn first_call(&mut self, service: &str) -> Option<u8> {
        let v = version_of(service)?;
        let slot = &mut self.seen[usize::from(v - 2)];
        if *slot {
            return None;
        }
        *slot = true;
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_is_reported_once_and_only_a_task_service_counts() {
        let mut seen = ApiSeen::default();
        assert_eq!(
            seen.first_call("containerd.runtime.sandbox.v1.Sandbox"),
            None
        );
        assert_eq!(seen.first_call(TASK_V3), Some(3));
        assert_eq!(seen.first_call(TASK_V3), None);
        assert_eq!(seen.first_call(TASK_V2), Some(2));
        assert_eq!(seen.first_call(TASK_V2), None);
    }

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
