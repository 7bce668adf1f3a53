//! Task event topics, and the protobuf type name of each task event, as containerd expects
//! it in an event's `Any.type_url` (`containerd.events.TaskExit`, …).
//!
//! The type names are
//! written out rather than asked of the generated code: `MessageFull::descriptor()` builds
//! rust-protobuf's reflection tables for the whole `.proto` file and its imports on first
//! use, which costs every shim ~400 KiB of heap for its lifetime and links ~300 KiB of
//! reflection code into the binary, all to learn a constant. A unit test checks every name
//! against the descriptor, so a renamed message cannot slip through.

use containerd_shim_protos::events::task as ev;

/// Event topics a task shim publishes, as containerd names them.
///
/// Re-exported from `containerd_shim_protos::topics` so the strings have one
/// source of truth.
pub mod topics {
    /// A task was checkpointed (`TaskCheckpointed`).
    pub use containerd_shim_protos::topics::TASK_CHECKPOINTED_EVENT_TOPIC as TASK_CHECKPOINTED;
    /// A task was created (`TaskCreate`).
    pub use containerd_shim_protos::topics::TASK_CREATE_EVENT_TOPIC as TASK_CREATE;
    /// A task was deleted (`TaskDelete`).
    pub use containerd_shim_protos::topics::TASK_DELETE_EVENT_TOPIC as TASK_DELETE;
    /// An exec process was added to a task (`TaskExecAdded`).
    pub use containerd_shim_protos::topics::TASK_EXEC_ADDED_EVENT_TOPIC as TASK_EXEC_ADDED;
    /// An exec process was started (`TaskExecStarted`).
    pub use containerd_shim_protos::topics::TASK_EXEC_STARTED_EVENT_TOPIC as TASK_EXEC_STARTED;
    /// A task or exec process exited (`TaskExit`).
    pub use containerd_shim_protos::topics::TASK_EXIT_EVENT_TOPIC as TASK_EXIT;
    /// A task hit its memory limit (`TaskOOM`).
    pub use containerd_shim_protos::topics::TASK_OOM_EVENT_TOPIC as TASK_OOM;
    /// A task was paused (`TaskPaused`).
    pub use containerd_shim_protos::topics::TASK_PAUSED_EVENT_TOPIC as TASK_PAUSED;
    /// A task was resumed (`TaskResumed`).
    pub use containerd_shim_protos::topics::TASK_RESUMED_EVENT_TOPIC as TASK_RESUMED;
    /// A task was started (`TaskStart`).
    pub use containerd_shim_protos::topics::TASK_START_EVENT_TOPIC as TASK_START;
}

/// A task event message and its fully qualified protobuf name.
pub trait EventMessage: protobuf::Message {
    /// The message's full name, the type URL containerd decodes the event by.
    const TYPE_NAME: &'static str;
}

macro_rules! event_names {
    ($($ty:ident),* $(,)?) => {
        $(impl EventMessage for ev::$ty {
            const TYPE_NAME: &'static str = concat!("containerd.events.", stringify!($ty));
        })*
    };
}

event_names!(
    TaskCreate,
    TaskStart,
    TaskDelete,
    TaskIO,
    TaskExit,
    TaskOOM,
    TaskExecAdded,
    TaskExecStarted,
    TaskPaused,
    TaskResumed,
    TaskCheckpointed,
);

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::MessageFull;

    fn check<M: EventMessage + MessageFull>() {
        assert_eq!(M::TYPE_NAME, M::descriptor().full_name());
    }

    #[test]
    fn topic_constants() {
        assert_eq!(topics::TASK_CREATE, "/tasks/create");
        assert_eq!(topics::TASK_START, "/tasks/start");
        assert_eq!(topics::TASK_DELETE, "/tasks/delete");
        assert_eq!(topics::TASK_EXIT, "/tasks/exit");
        assert_eq!(topics::TASK_OOM, "/tasks/oom");
        assert_eq!(topics::TASK_EXEC_ADDED, "/tasks/exec-added");
        assert_eq!(topics::TASK_EXEC_STARTED, "/tasks/exec-started");
        assert_eq!(topics::TASK_PAUSED, "/tasks/paused");
        assert_eq!(topics::TASK_RESUMED, "/tasks/resumed");
        assert_eq!(topics::TASK_CHECKPOINTED, "/tasks/checkpointed");
    }

    #[test]
    fn names_match_the_generated_descriptors() {
        check::<ev::TaskCreate>();
        check::<ev::TaskStart>();
        check::<ev::TaskDelete>();
        check::<ev::TaskIO>();
        check::<ev::TaskExit>();
        check::<ev::TaskOOM>();
        check::<ev::TaskExecAdded>();
        check::<ev::TaskExecStarted>();
        check::<ev::TaskPaused>();
        check::<ev::TaskResumed>();
        check::<ev::TaskCheckpointed>();
    }
}
