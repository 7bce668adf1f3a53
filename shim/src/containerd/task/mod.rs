//! The containerd Task service (task API v2): one handler per RPC, over the supervision
//! core. Handlers run on the shim's worker thread, one at a time (so runc calls are
//! serialised per shim, as containerd expects); `Wait` parks its call in the process
//! table and the event loop answers it when the process exits.
//!
//! One file per group of handlers: [`lifecycle`] (Create, Start, Delete), [`exec`]
//! (Exec, ResizePty, CloseIO), [`signals`] (Kill, Pause, Resume), [`inspection`] (State,
//! Pids, Stats), [`checkpoint`] (Checkpoint, Update), [`wait`] (Wait, Connect, Shutdown);
//! here: what the threads share ([`Shim`]), the dispatch and the helpers they all use.

mod checkpoint;
mod exec;
mod inspection;
mod lifecycle;
mod signals;
mod wait;

use crate::containerd::call_gate::{CallGate, ExitReport, GateHold, ENTER_WAIT};
use crate::containerd::errors::*;
use crate::containerd::events::task_events::event_exit_status;
use crate::containerd::events::{timestamp, Events};
use crate::containerd::options::RuncOptions;
use crate::containerd::task_call::TaskCall;
use crate::containerd::tasks::{Exited, Tasks};
use crate::containerd::ttrpc::Reply;
use crate::supervisor::process_stdio::ProcessStdio;
use crate::supervisor::reaper::Reaper;
use containerd_shim_protos::shim::shim as api;
use protobuf::Message;
use runc_wrapper::Runc;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;
/// Where runc keeps container state unless the options say otherwise.
const DEFAULT_RUNC_ROOT: &str = "/run/containerd/runc";

/// Work for the event loop, posted by the worker.
#[derive(Debug)]
pub enum LoopMsg {
    /// A worker's reply to write; then drop `hold`, which opens the process's call gate.
    Answered {
        conn: u32,
        stream: u32,
        reply: Reply,
        hold: Option<GateHold>,
    },
    /// The reply to a parked Wait.
    Respond {
        conn: u32,
        stream: u32,
        reply: Reply,
    },
    AddPumps {
        container: String,
        exec: String,
        stdio: ProcessStdio,
    },
    /// Stop serving a process's stdio (it was deleted).
    DropPumps {
        container: String,
        exec: String,
    },
    /// Register a container's OOM watcher (made by the worker while its init was known
    /// to be alive) and report at once what it already counts.
    WatchOom {
        container: String,
        watcher: crate::cgroups::oom::OomWatcher,
    },
    /// Exits to report once the processes' output has drained (see the loop).
    Exited(Vec<Exited>),
    /// A Delete waits for the process's spooled output (`delete_linger`): answer on
    /// `done` once it may go on.
    AwaitSpools {
        container: String,
        exec: String,
        done: std::sync::mpsc::SyncSender<()>,
    },
    Shutdown,
}

/// What a handled call gives back: its reply, and the hold on its process's call gate
/// that the loop drops once the reply is written.
#[derive(Debug)]
pub struct Answer {
    pub reply: Reply,
    pub hold: Option<GateHold>,
}

impl Answer {
    fn now(reply: Reply) -> Self {
        Answer { reply, hold: None }
    }
}

/// Everything the two shim threads share.
pub struct Shim {
    pub namespace: String,
    pub tasks: Mutex<Tasks>,
    /// Signalled when a pump finishes or an exit is reported (Delete waits for both).
    pub pumps_done: Condvar,
    /// Orders Kill, Delete, … of one process against each other and its exit report.
    pub gate: Arc<CallGate>,
    pub reaper: Reaper,
    pub events: Events,
    /// Options given to `start` (stdin), the base for every container's.
    pub start_options: RuncOptions,
    outbox: Mutex<Vec<LoopMsg>>,
    waker: crate::supervisor::epoll::Waker,
}

impl Shim {
    pub fn new(
        namespace: String,
        reaper: Reaper,
        events: Events,
        start_options: RuncOptions,
        waker: crate::supervisor::epoll::Waker,
    ) -> Self {
        Shim {
            namespace,
            tasks: Mutex::new(Tasks::default()),
            pumps_done: Condvar::new(),
            gate: CallGate::new(),
            reaper,
            events,
            start_options,
            outbox: Mutex::new(Vec::new()),
            waker,
        }
    }

    pub fn waker(&self) -> &crate::supervisor::epoll::Waker {
        &self.waker
    }

    /// Locks the process table. A poisoned lock (a panicking handler) still holds a
    /// consistent table: every update is done before anything that can fail.
    pub fn lock(&self) -> MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts work for the loop and wakes it.
    pub fn post(&self, msg: LoopMsg) {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        self.waker.wake();
    }

    /// Takes the loop's pending work.
    pub fn take_outbox(&self) -> Vec<LoopMsg> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Hands exits found by the worker to the loop, which reports them in order once the
    /// processes' output has drained.
    fn report_exits(&self, exits: Vec<Exited>) {
        if !exits.is_empty() {
            self.post(LoopMsg::Exited(exits));
        }
    }

    /// Reports exits now: TaskExit events, then answers to the parked Wait calls.
    pub fn deliver(&self, exits: Vec<Exited>) {
        for e in exits {
            log::debug!(
                "exit container={} exec={} pid={} status={}",
                e.container_id,
                e.exec_id,
                e.pid,
                e.record.code
            );
            if e.exec_id.is_empty() {
                if let Some(bundle) = self.bundle_of(&e.container_id) {
                    crate::containerd::exit_status::record(&bundle, e.pid, &e.record);
                }
            }
            self.events.exit(&e);
            let waiters = self.lock().exit_delivered(&e.container_id, &e.exec_id);
            self.pumps_done.notify_all();
            if waiters.is_empty() {
                continue;
            }
            let reply = wait_reply(e.record.code, e.record.exited_at);
            for (conn, stream) in waiters {
                self.post(LoopMsg::Respond {
                    conn,
                    stream,
                    reply: reply.clone(),
                });
            }
        }
    }

    /// One of a process's spools has drained after its exit, or Wait has waited for it
    /// long enough: answers the parked Waits if it was the last.
    pub fn spool_settled(&self, container: &str, exec: &str) {
        let settled = self.lock().spool_settled(container, exec);
        let Some((exit, waiters)) = settled else {
            return;
        };
        let reply = wait_reply(exit.code, exit.exited_at);
        for (conn, stream) in waiters {
            self.post(LoopMsg::Respond {
                conn,
                stream,
                reply: reply.clone(),
            });
        }
    }

    /// Handles one decoded call on `stream` of connection `conn`. `None` means the call
    /// was parked (Wait) and is answered later.
    pub fn handle(&self, conn: u32, stream: u32, call: TaskCall) -> Option<Answer> {
        let name = call.name();
        log::debug!("rpc {name}");
        use ExitReport::{Free, HeldBack};
        let answer = match call {
            TaskCall::Create(r) => Answer::now(self.create(r).and_then(encode)),
            TaskCall::Start(r) => Answer::now(self.start(r).and_then(encode)),
            // Delete waits for the exit report it must come after; it cannot cause one.
            TaskCall::Delete(r) => {
                self.ordered(process_of(&r.id, &r.exec_id), Free, || self.delete(r))
            }
            TaskCall::Exec(r) => Answer::now(self.exec(r).and_then(encode)),
            TaskCall::ResizePty(r) => Answer::now(self.resize_pty(r).and_then(encode)),
            TaskCall::CloseIO(r) => Answer::now(self.close_io(r).and_then(encode)),
            TaskCall::State(r) => Answer::now(self.state(r).and_then(encode)),
            // A kill-all is the init's business: the init's exit waits for its reply.
            TaskCall::Kill(r) => {
                let process = process_of(&r.id, if r.all { "" } else { &r.exec_id });
                self.ordered(process, HeldBack, || self.kill(r))
            }
            TaskCall::Pids(r) => Answer::now(self.pids(r).and_then(encode)),
            TaskCall::Pause(r) => self.ordered(process_of(&r.id, ""), HeldBack, || self.pause(r)),
            TaskCall::Resume(r) => self.ordered(process_of(&r.id, ""), HeldBack, || self.resume(r)),
            // A checkpoint without leave-running ends the init.
            TaskCall::Checkpoint(r) => {
                self.ordered(process_of(&r.id, ""), HeldBack, || self.checkpoint(r))
            }
            TaskCall::Update(r) => self.ordered(process_of(&r.id, ""), HeldBack, || self.update(r)),
            TaskCall::Stats(r) => Answer::now(self.stats(r).and_then(encode)),
            TaskCall::Connect(r) => Answer::now(self.connect(r).and_then(encode)),
            TaskCall::Shutdown(r) => Answer::now(self.shutdown(r).and_then(encode)),
            TaskCall::Wait(r) => return self.wait(conn, stream, &r).map(Answer::now),
        };
        if let Err(st) = &answer.reply {
            log::log!(failure_level(st), "rpc {name} failed: {}", st.message);
        }
        Some(answer)
    }

    /// Runs a call inside its process's call gate (see `call_gate`): after the previous
    /// call on that process has been answered, and, for `HeldBack`, with the process's
    /// exit report held until this call's reply has been written.
    fn ordered<Resp: Message>(
        &self,
        (container, exec): (String, String),
        exit: ExitReport,
        f: impl FnOnce() -> RpcResult<Resp>,
    ) -> Answer {
        let hold = self.gate.enter(&container, &exec, exit, ENTER_WAIT);
        Answer {
            reply: f().and_then(encode),
            hold: Some(hold),
        }
    }

    fn runc_for(&self, opts: &RuncOptions, bundle: &Path) -> Runc {
        let root = if opts.root.is_empty() {
            DEFAULT_RUNC_ROOT
        } else {
            opts.root.as_str()
        };
        let mut b = Runc::builder()
            .binary(if opts.binary_name.is_empty() {
                "runc"
            } else {
                opts.binary_name.as_str()
            })
            .root(Path::new(root).join(&self.namespace))
            .log(bundle.join("log.json"))
            .systemd_cgroup(opts.systemd_cgroup)
            // Kills runc at the deadline of the call it runs for.
            .monitor(crate::containerd::call_deadline::monitor(
                self.reaper.monitor(),
            ));
        if !opts.criu_path.is_empty() {
            b = b.criu(&opts.criu_path);
        }
        b.build()
    }

    /// Watches the memory cgroup of a container whose init `pid` was just created: here,
    /// while the pid surely is that process (the loop would get it only later, maybe dead).
    fn watch_oom(&self, container: &str, pid: i32) {
        match crate::cgroups::oom::OomWatcher::new(pid) {
            Ok(watcher) => self.post(LoopMsg::WatchOom {
                container: container.to_string(),
                watcher,
            }),
            Err(e) => log::info!("no OOM events for {container}: {e}"),
        }
    }

    fn add_pumps(&self, container: &str, exec: &str, stdio: ProcessStdio) {
        if !stdio.is_empty() {
            self.post(LoopMsg::AddPumps {
                container: container.into(),
                exec: exec.into(),
                stdio,
            });
        }
    }

    fn bundle_of(&self, id: &str) -> Option<PathBuf> {
        self.lock().container(id).map(|c| c.bundle.clone())
    }

    fn runc_of(&self, id: &str) -> RpcResult<Runc> {
        self.lock()
            .container(id)
            .map(|c| c.runc.clone())
            .ok_or_else(|| not_found(format!("container {id} not found")))
    }
}

fn encode<Resp: Message>(resp: Resp) -> Reply {
    resp.write_to_bytes()
        .map_err(|e| internal(format!("encode response: {e}")))
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

/// The call gate key of a process.
fn process_of(id: &str, exec_id: &str) -> (String, String) {
    (id.to_string(), exec_id.to_string())
}

fn wait_reply(code: i32, at: SystemTime) -> Reply {
    let mut w = api::WaitResponse::new();
    w.exit_status = event_exit_status(code);
    w.exited_at = timestamp(at);
    w.write_to_bytes()
        .map_err(|e| internal(format!("encode wait response: {e}")))
}

fn work_path(opts: &RuncOptions, bundle: &Path) -> PathBuf {
    if opts.criu_work_path.is_empty() {
        bundle.join("work")
    } else {
        PathBuf::from(&opts.criu_work_path)
    }
}

fn display_id(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        id.to_string()
    } else {
        format!("{id}/{exec_id}")
    }
}
