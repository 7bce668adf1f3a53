//! The protobuf type name of each task event, as containerd expects it in an event's
//! `Any.type_url` (`containerd.events.TaskExit`, …).
//!
//! Written out rather than asked of the generated code: `MessageFull::descriptor()` builds
//! rust-protobuf's reflection tables for the whole `.proto` file and its imports on first
//! use, which costs every shim ~400 KiB of heap for its lifetime and links ~300 KiB of
//! reflection code into the binary, all to learn a constant. A unit test checks every name
//! against the descriptor, so a renamed message cannot slip through.

use containerd_shim_protos::events::task as ev;

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
