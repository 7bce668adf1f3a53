//! Task events, built from the process table's facts and handed to the publisher.

use super::envelope::timestamp;
use super::publisher::Publisher;
use super::types::{topics, EventMessage};
use crate::containerd::process_table::Exited;
use containerd_shim_protos::events::task as ev;
use protobuf::MessageField;
use std::time::SystemTime;

/// A pid as an event carries it (0 for none).
pub fn event_pid(pid: i32) -> u32 {
    u32::try_from(pid).unwrap_or(0)
}

/// An exit status as containerd carries it: Go's `uint32(status)`, the same bits.
pub fn event_exit_status(code: i32) -> u32 {
    u32::from_ne_bytes(code.to_ne_bytes())
}

/// Publishes through `publisher` when there is one (there is none in unit tests or when
/// containerd gave no event address).
#[derive(Debug, Clone, Default)]
pub struct Events {
    publisher: Option<Publisher>,
}

impl Events {
    pub fn new(publisher: Option<Publisher>) -> Self {
        Events { publisher }
    }

    /// Stops publishing and hands over what is not delivered yet (a live upgrade; see
    /// [`Publisher::hand_over`]). Events published afterwards are dropped.
    pub fn hand_over(
        &mut self,
        timeout: std::time::Duration,
    ) -> Vec<super::publisher::CarriedEvent> {
        self.publisher
            .take()
            .map(|p| p.hand_over(timeout))
            .unwrap_or_default()
    }

    /// Publishes through `publisher` from now on (after a hand-over that did not happen).
    pub fn resume(&mut self, publisher: Option<Publisher>) {
        self.publisher = publisher;
    }

    /// Holds the event thread's wake-ups until [`Events::release_wakes`]: the loop's
    /// turn writes its answers first.
    pub fn hold_wakes(&self) {
        if let Some(p) = &self.publisher {
            p.hold_wakes();
        }
    }

    /// Wakes the event thread for the events of the turn.
    pub fn release_wakes(&self) {
        if let Some(p) = &self.publisher {
            p.release_wakes();
        }
    }

    fn send<M: EventMessage>(&self, topic: &str, event: &M) {
        if let Some(p) = &self.publisher {
            p.publish_message(topic, event);
        }
    }

    pub fn exit(&self, e: &Exited) {
        let mut m = ev::TaskExit::new();
        m.container_id = e.container_id.clone();
        m.id = if e.exec_id.is_empty() {
            e.container_id.clone()
        } else {
            e.exec_id.clone()
        };
        m.pid = event_pid(e.pid);
        m.exit_status = event_exit_status(e.record.code);
        m.exited_at = timestamp(e.record.exited_at);
        self.send(topics::TASK_EXIT, &m);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        id: &str,
        bundle: &str,
        rootfs: Vec<containerd_shim_protos::types::mount::Mount>,
        stdio: &crate::containerd::stdio_uris::StdioConfig,
        checkpoint: &str,
        pid: i32,
    ) {
        let mut m = ev::TaskCreate::new();
        m.container_id = id.into();
        m.bundle = bundle.into();
        m.rootfs = rootfs;
        let mut io = ev::TaskIO::new();
        io.stdin = stdio.stdin.clone();
        io.stdout = stdio.stdout.clone();
        io.stderr = stdio.stderr.clone();
        io.terminal = stdio.terminal;
        m.io = MessageField::some(io);
        m.checkpoint = checkpoint.into();
        m.pid = event_pid(pid);
        self.send(topics::TASK_CREATE, &m);
    }

    pub fn start(&self, id: &str, pid: i32) {
        let mut m = ev::TaskStart::new();
        m.container_id = id.into();
        m.pid = event_pid(pid);
        self.send(topics::TASK_START, &m);
    }

    pub fn delete(&self, id: &str, pid: i32, code: i32, at: SystemTime) {
        let mut m = ev::TaskDelete::new();
        m.container_id = id.into();
        m.id = id.into();
        m.pid = event_pid(pid);
        m.exit_status = event_exit_status(code);
        m.exited_at = timestamp(at);
        self.send(topics::TASK_DELETE, &m);
    }

    pub fn exec_added(&self, id: &str, exec_id: &str) {
        let mut m = ev::TaskExecAdded::new();
        m.container_id = id.into();
        m.exec_id = exec_id.into();
        self.send(topics::TASK_EXEC_ADDED, &m);
    }

    pub fn exec_started(&self, id: &str, exec_id: &str, pid: i32) {
        let mut m = ev::TaskExecStarted::new();
        m.container_id = id.into();
        m.exec_id = exec_id.into();
        m.pid = event_pid(pid);
        self.send(topics::TASK_EXEC_STARTED, &m);
    }

    pub fn paused(&self, id: &str) {
        let mut m = ev::TaskPaused::new();
        m.container_id = id.into();
        self.send(topics::TASK_PAUSED, &m);
    }

    pub fn resumed(&self, id: &str) {
        let mut m = ev::TaskResumed::new();
        m.container_id = id.into();
        self.send(topics::TASK_RESUMED, &m);
    }

    pub fn oom(&self, id: &str) {
        let mut m = ev::TaskOOM::new();
        m.container_id = id.into();
        self.send(topics::TASK_OOM, &m);
    }

    pub fn checkpointed(&self, id: &str, path: &str) {
        let mut m = ev::TaskCheckpointed::new();
        m.container_id = id.into();
        m.checkpoint = path.into();
        self.send(topics::TASK_CHECKPOINTED, &m);
    }

    /// Waits for queued events to reach containerd (at shutdown).
    pub fn flush(&self, timeout: std::time::Duration) {
        if let Some(p) = &self.publisher {
            p.close(timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_and_statuses_as_containerd_carries_them() {
        assert_eq!(event_pid(42), 42);
        assert_eq!(event_pid(-1), 0);
        assert_eq!(event_exit_status(137), 137);
        assert_eq!(event_exit_status(-1), u32::MAX);
    }
}
