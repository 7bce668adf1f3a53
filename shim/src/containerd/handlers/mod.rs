//! The Task service's handlers (task API v2 and v3), as methods of the loop-owned
//! [`Shim`]: one file per group of calls. A handler runs on the event loop and decides a
//! [`Step`]: answer now, park (Wait), wait on the loop (Delete), or hand a [`Job`] to a
//! worker when runc must run. A job gets copies of what it needs, never the table; its
//! [`Outcome`] comes back to the loop, which applies it here ([`Shim::apply`]) as the
//! process's transitions and answers the call.
//!
//! [`lifecycle`] (Create, Start), [`delete`] (Delete), [`exec`] (Exec, ResizePty,
//! CloseIO), [`signals`] (Kill, Pause, Resume), [`inspection`] (State, Pids, Stats),
//! [`checkpoint`] (Checkpoint, Update), [`wait`] (Wait, Connect, Shutdown).
//!
//! Calls that decide a process's fate go through its gate first (`process_table::gate`,
//! [`Shim::gate_of`]); the loop runs them when their turn comes.

mod checkpoint;
pub mod delete;
mod exec;
mod inspection;
mod lifecycle;
mod signals;
mod wait;

pub use lifecycle::{CreatedInit, StartedProcess};

use crate::containerd::call::CallRef;
use crate::containerd::decoded_call::TaskCall;
use crate::containerd::errors::*;
use crate::containerd::events::task_events::event_exit_status;
use crate::containerd::events::timestamp;
use crate::containerd::options::RuncOptions;
use crate::containerd::process_table::gate::ExitReport;
use crate::containerd::process_table::{Missing, ProcKey};
use crate::containerd::shim::Shim;
use crate::containerd::ttrpc::Reply;
use crate::process_core::epoll::Poller;
use containerd_shim_protos::shim::shim as api;
use protobuf::Message;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Work for a worker thread: runs runc (or reads cgroups) with what it was given.
pub type Job = Box<dyn FnOnce() -> Outcome + Send>;

/// What a handler decided.
pub enum Step {
    /// Answered now.
    Reply(Reply),
    /// A Wait, parked in its process's record until the exit is reported.
    Parked,
    /// A Delete waiting on the loop for the exit report and the output
    /// ([`Shim::progress_deletes`] carries it on).
    Waiting,
    /// Runs on a worker; its [`Outcome`] comes back to [`Shim::apply`].
    Work(Job),
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Reply(r) => f.debug_tuple("Reply").field(&r.is_ok()).finish(),
            Step::Parked => f.write_str("Parked"),
            Step::Waiting => f.write_str("Waiting"),
            Step::Work(_) => f.write_str("Work"),
        }
    }
}

/// What a worker's job found, for the loop to apply.
#[derive(Debug)]
pub enum Outcome {
    /// Create: the container made (or not); its id is reserved until then.
    Created {
        id: String,
        result: RpcResult<Box<CreatedInit>>,
    },
    /// Start: the process started (or not); it is `Starting` until then.
    Started {
        key: ProcKey,
        result: RpcResult<Box<StartedProcess>>,
    },
    Paused {
        id: String,
        result: RpcResult<()>,
    },
    Resumed {
        id: String,
        result: RpcResult<()>,
    },
    Checkpointed {
        id: String,
        image: String,
        result: RpcResult<()>,
    },
    /// Delete of a container: runc's state and the rootfs mount are gone (or not).
    ContainerDeleted {
        id: String,
        result: RpcResult<()>,
    },
    /// A call whose outcome changes nothing in the table (Kill, Update, Pids, Stats).
    Reply(Reply),
}

impl Outcome {
    /// A file the job is done with, for the worker to remove after handing the outcome to
    /// the loop (see `StartedProcess::spent_pid_file`).
    pub fn take_spent_file(&mut self) -> Option<std::path::PathBuf> {
        match self {
            Outcome::Started {
                result: Ok(started),
                ..
            } => started.spent_pid_file.take(),
            _ => None,
        }
    }
}

impl Shim {
    /// The gate a call goes through (its process, and whether it holds back that
    /// process's exit report), `None` for a call that takes no gate, or why the process
    /// is not there.
    pub fn gate_of(&self, request: &TaskCall) -> Option<Result<(ProcKey, ExitReport), Missing>> {
        use ExitReport::{Free, HeldBack};
        let (id, exec, exit) = match request {
            // Delete waits for the exit report it must come after; it cannot cause one.
            TaskCall::Delete(r) => (&r.id, r.exec_id.as_str(), Free),
            // A kill-all is the init's business: the init's exit waits for its reply.
            TaskCall::Kill(r) => (&r.id, if r.all { "" } else { r.exec_id.as_str() }, HeldBack),
            TaskCall::Pause(r) => (&r.id, "", HeldBack),
            TaskCall::Resume(r) => (&r.id, "", HeldBack),
            // A checkpoint without leave-running ends the init.
            TaskCall::Checkpoint(r) => (&r.id, "", HeldBack),
            TaskCall::Update(r) => (&r.id, "", HeldBack),
            _ => return None,
        };
        Some(self.table.find(id, exec).map(|key| (key, exit)))
    }

    /// Handles one decoded call (a gated one once its turn has come).
    pub fn handle(&mut self, call: &CallRef, request: TaskCall, poller: &Poller) -> Step {
        log::debug!("rpc {}", call.method);
        let reply = match request {
            TaskCall::Create(r) => return self.create(r),
            TaskCall::Start(r) => return self.start(r),
            TaskCall::Delete(r) => return self.delete(call, r, poller),
            TaskCall::Exec(r) => self.exec(r).and_then(encode),
            TaskCall::ResizePty(r) => self.resize_pty(r).and_then(encode),
            TaskCall::CloseIO(r) => self.close_io(r).and_then(encode),
            TaskCall::State(r) => self.state(r).and_then(encode),
            TaskCall::Kill(r) => return self.kill(r),
            TaskCall::Pids(r) => return self.pids(r),
            TaskCall::Pause(r) => return self.pause(r),
            TaskCall::Resume(r) => return self.resume(r),
            TaskCall::Checkpoint(r) => return self.checkpoint(r),
            TaskCall::Update(r) => return self.update(r),
            TaskCall::Stats(r) => return self.stats(r),
            TaskCall::Connect(r) => self.connect(r).and_then(encode),
            TaskCall::Shutdown(r) => self.shutdown(r).and_then(encode),
            TaskCall::Wait(r) => return self.wait(call, &r),
        };
        Step::Reply(reply)
    }

    /// Applies what a worker's job found; returns the reply to the call.
    pub fn apply(&mut self, outcome: Outcome, poller: &Poller) -> Reply {
        match outcome {
            Outcome::Created { id, result } => self.created(&id, result, poller),
            Outcome::Started { key, result } => self.started(key, result, poller),
            Outcome::Paused { id, result } => self.paused(&id, result),
            Outcome::Resumed { id, result } => self.resumed(&id, result),
            Outcome::Checkpointed { id, image, result } => {
                result?;
                self.events.checkpointed(&id, &image);
                encode(protobuf::well_known_types::empty::Empty::new())
            }
            Outcome::ContainerDeleted { id, result } => self.container_deleted(&id, result, poller),
            Outcome::Reply(reply) => reply,
        }
    }
}

/// A lookup's failure as containerd is told it.
impl From<Missing> for ttrpc::proto::Status {
    fn from(m: Missing) -> Self {
        not_found(m.to_string())
    }
}

pub(crate) fn encode<Resp: Message>(resp: Resp) -> Reply {
    resp.write_to_bytes()
        .map_err(|e| internal(format!("encode response: {e}")))
}

/// A job whose outcome is just its reply.
fn reply_job(f: impl FnOnce() -> Reply + Send + 'static) -> Step {
    Step::Work(Box::new(move || Outcome::Reply(f())))
}

/// An id refused by `fifo::validate_id`, named as what it is (a container or an exec id).
fn invalid_id(what: &str, e: fifo::Error) -> ttrpc::proto::Status {
    match e {
        fifo::Error::InvalidId { id, reason } => {
            invalid(format!("{what} id {id:?} is invalid: {reason}"))
        }
        other => invalid(other.to_string()),
    }
}

/// The reply to a Wait: the exit status and when.
pub(crate) fn wait_reply(code: i32, at: SystemTime) -> Reply {
    let mut w = api::WaitResponse::new();
    w.exit_status = event_exit_status(code);
    w.exited_at = timestamp(at);
    encode(w)
}

fn work_path(opts: &RuncOptions, bundle: &Path) -> PathBuf {
    if opts.criu_work_path.is_empty() {
        bundle.join("work")
    } else {
        PathBuf::from(&opts.criu_work_path)
    }
}
