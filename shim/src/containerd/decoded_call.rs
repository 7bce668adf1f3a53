//! A Task API call, decoded once, as it arrives on the loop: the one place that knows the
//! method names, which calls need a worker (runc, a process, cgroups) and which the loop
//! answers itself. The loop decodes; the handler gets the typed request.

use crate::containerd::errors::{invalid, unimplemented, RpcResult};
use crate::containerd::task_services::is_task_service;
use containerd_shim_protos::shim::shim as api;
use protobuf::Message;

/// One decoded call of `containerd.task.v2.Task` / `v3.Task`.
#[derive(Debug)]
pub enum TaskCall {
    Create(api::CreateTaskRequest),
    Start(api::StartRequest),
    Delete(api::DeleteRequest),
    Exec(api::ExecProcessRequest),
    ResizePty(api::ResizePtyRequest),
    CloseIO(api::CloseIORequest),
    State(api::StateRequest),
    Kill(api::KillRequest),
    Pids(api::PidsRequest),
    Pause(api::PauseRequest),
    Resume(api::ResumeRequest),
    Checkpoint(api::CheckpointTaskRequest),
    Update(api::UpdateTaskRequest),
    Stats(api::StatsRequest),
    Connect(api::ConnectRequest),
    Shutdown(api::ShutdownRequest),
    Wait(api::WaitRequest),
}

impl TaskCall {
    /// Decodes a request. An unknown service or method is `Unimplemented`, a payload that
    /// is not the method's message `InvalidArgument`; both are answered at once.
    pub fn decode(service: &str, method: &str, payload: &[u8]) -> RpcResult<Self> {
        if !is_task_service(service) {
            return Err(unimplemented(format!(
                "service {service} is not served by tether"
            )));
        }
        Ok(match method {
            "Create" => TaskCall::Create(parse(payload)?),
            "Start" => TaskCall::Start(parse(payload)?),
            "Delete" => TaskCall::Delete(parse(payload)?),
            "Exec" => TaskCall::Exec(parse(payload)?),
            "ResizePty" => TaskCall::ResizePty(parse(payload)?),
            "CloseIO" => TaskCall::CloseIO(parse(payload)?),
            "State" => TaskCall::State(parse(payload)?),
            "Kill" => TaskCall::Kill(parse(payload)?),
            "Pids" => TaskCall::Pids(parse(payload)?),
            "Pause" => TaskCall::Pause(parse(payload)?),
            "Resume" => TaskCall::Resume(parse(payload)?),
            "Checkpoint" => TaskCall::Checkpoint(parse(payload)?),
            "Update" => TaskCall::Update(parse(payload)?),
            "Stats" => TaskCall::Stats(parse(payload)?),
            "Connect" => TaskCall::Connect(parse(payload)?),
            "Shutdown" => TaskCall::Shutdown(parse(payload)?),
            "Wait" => TaskCall::Wait(parse(payload)?),
            other => return Err(unimplemented(format!("method {other} is not implemented"))),
        })
    }

    /// Whether the call may run runc, wait on a process or read cgroups, and so may run on
    /// a worker (a Kill only when it runs `runc kill`: a running init's plain Kill and an
    /// exec's are signalled on the loop); every other call only reads or updates the
    /// process table and is answered by the event loop itself, never queued behind a slow
    /// runc call.
    pub fn needs_worker(&self) -> bool {
        match self {
            TaskCall::Create(_)
            | TaskCall::Start(_)
            | TaskCall::Delete(_)
            | TaskCall::Kill(_)
            | TaskCall::Pids(_)
            | TaskCall::Pause(_)
            | TaskCall::Resume(_)
            | TaskCall::Checkpoint(_)
            | TaskCall::Update(_)
            | TaskCall::Stats(_) => true,
            TaskCall::Exec(_)
            | TaskCall::ResizePty(_)
            | TaskCall::CloseIO(_)
            | TaskCall::State(_)
            | TaskCall::Connect(_)
            | TaskCall::Shutdown(_)
            | TaskCall::Wait(_) => false,
        }
    }

    /// The method name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            TaskCall::Create(_) => "Create",
            TaskCall::Start(_) => "Start",
            TaskCall::Delete(_) => "Delete",
            TaskCall::Exec(_) => "Exec",
            TaskCall::ResizePty(_) => "ResizePty",
            TaskCall::CloseIO(_) => "CloseIO",
            TaskCall::State(_) => "State",
            TaskCall::Kill(_) => "Kill",
            TaskCall::Pids(_) => "Pids",
            TaskCall::Pause(_) => "Pause",
            TaskCall::Resume(_) => "Resume",
            TaskCall::Checkpoint(_) => "Checkpoint",
            TaskCall::Update(_) => "Update",
            TaskCall::Stats(_) => "Stats",
            TaskCall::Connect(_) => "Connect",
            TaskCall::Shutdown(_) => "Shutdown",
            TaskCall::Wait(_) => "Wait",
        }
    }
}

fn parse<M: Message>(payload: &[u8]) -> RpcResult<M> {
    M::parse_from_bytes(payload).map_err(|e| invalid(format!("bad {}: {e}", message_name::<M>())))
}

/// A request type's short name for error messages (`CreateTaskRequest`), taken from the
/// Rust type rather than the protobuf descriptor, which would build reflection tables.
fn message_name<M>() -> &'static str {
    let full = std::any::type_name::<M>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "containerd.task.v2.Task";

    #[test]
    fn decodes_every_method_of_both_versions() {
        let mut kill = api::KillRequest::new();
        kill.id = "c".into();
        kill.signal = 9;
        let bytes = kill.write_to_bytes().unwrap();
        for service in [V2, "containerd.task.v3.Task"] {
            match TaskCall::decode(service, "Kill", &bytes).unwrap() {
                TaskCall::Kill(k) => assert_eq!((k.id.as_str(), k.signal), ("c", 9)),
                other => panic!("{other:?}"),
            }
        }
        for method in [
            "Create",
            "Start",
            "Delete",
            "Exec",
            "ResizePty",
            "CloseIO",
            "State",
            "Kill",
            "Pids",
            "Pause",
            "Resume",
            "Checkpoint",
            "Update",
            "Stats",
            "Connect",
            "Shutdown",
            "Wait",
        ] {
            let call = TaskCall::decode(V2, method, &[]).unwrap();
            assert_eq!(call.name(), method);
        }
    }

    #[test]
    fn unknown_calls_and_bad_payloads_are_refused_with_their_codes() {
        let code = |r: RpcResult<TaskCall>| r.unwrap_err().code.value();
        assert_eq!(
            code(TaskCall::decode("containerd.task.v1.Task", "Kill", &[])),
            ttrpc::Code::UNIMPLEMENTED as i32
        );
        assert_eq!(
            code(TaskCall::decode(V2, "Nope", &[])),
            ttrpc::Code::UNIMPLEMENTED as i32
        );
        let err = TaskCall::decode(V2, "Kill", &[0xff, 0xff]).unwrap_err();
        assert_eq!(err.code.value(), ttrpc::Code::INVALID_ARGUMENT as i32);
        assert!(err.message.contains("KillRequest"), "{}", err.message);
    }

    #[test]
    fn only_runc_calls_need_a_worker() {
        assert!(TaskCall::Kill(Default::default()).needs_worker());
        assert!(TaskCall::Create(Default::default()).needs_worker());
        assert!(!TaskCall::State(Default::default()).needs_worker());
        assert!(!TaskCall::Wait(Default::default()).needs_worker());
        assert!(!TaskCall::Exec(Default::default()).needs_worker());
    }
}
