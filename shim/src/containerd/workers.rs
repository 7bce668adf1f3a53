//! The threads that run runc-calling Task handlers.
//!
//! One worker always exists; another is started only when a call arrives while every
//! worker is busy (a `runc exec` blocked on a frozen container must not hold up the
//! other calls), up to [`MAX_WORKERS`]; extra workers exit after a short idle time. At
//! rest the shim has the loop, one worker and the event publisher. Only calls that need
//! runc, a process or cgroups come here (`Shim::needs_worker`); the loop bounds how many
//! wait in the queue by not reading connections past that bound.

use crate::containerd::call_deadline;
use crate::containerd::task::{LoopMsg, Shim};
use crate::containerd::task_call::TaskCall;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Most workers at once: calls beyond wait in the queue (which the loop bounds).
pub const MAX_WORKERS: usize = 8;
/// How long an extra worker waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Stack of a worker: handlers are shallow; runc output is collected on the heap.
const WORKER_STACK: usize = 256 * 1024;

/// A call waiting for a worker.
struct Job {
    conn: u32,
    stream: u32,
    call: TaskCall,
    /// The caller's deadline (see `call_deadline`).
    deadline: Option<Instant>,
}

struct Shared {
    /// Calls waiting for a worker.
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    idle: AtomicUsize,
    threads: AtomicUsize,
    /// Calls queued or running whose answer has not been posted to the loop yet.
    in_flight: AtomicUsize,
    shim: Arc<Shim>,
}

/// Hands calls to the workers.
pub struct WorkerPool {
    shared: Arc<Shared>,
}

impl WorkerPool {
    /// Starts the permanent worker.
    pub fn start(shim: Arc<Shim>) -> io::Result<Self> {
        let pool = WorkerPool {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                idle: AtomicUsize::new(0),
                threads: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                shim,
            }),
        };
        pool.spawn(true)?;
        Ok(pool)
    }

    /// Queues a call, to run under its caller's `deadline` (see `call_deadline`); starts
    /// another worker when none is idle.
    pub fn submit(&self, conn: u32, stream: u32, call: TaskCall, deadline: Option<Instant>) {
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Job {
                conn,
                stream,
                call,
                deadline,
            });
        if self.shared.idle.load(Ordering::SeqCst) == 0
            && self.shared.threads.load(Ordering::SeqCst) < MAX_WORKERS
        {
            if let Err(e) = self.spawn(false) {
                log::warn!("no extra worker ({e}); the call waits for a busy one");
            }
        }
        self.shared.ready.notify_one();
    }

    /// Calls handed to the workers whose answer is not in the loop's outbox yet (the
    /// shim does not exit while there are any: their callers would go unanswered).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    fn spawn(&self, permanent: bool) -> io::Result<()> {
        let shared = self.shared.clone();
        let n = shared.threads.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("tether-worker-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || work(&shared, permanent));
        if spawned.is_err() {
            self.shared.threads.fetch_sub(1, Ordering::SeqCst);
        }
        spawned.map(|_| ())
    }
}

fn work(shared: &Shared, permanent: bool) {
    loop {
        let job = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = queue.pop_front() {
                    break Some(job);
                }
                shared.idle.fetch_add(1, Ordering::SeqCst);
                let (q, timeout) = shared
                    .ready
                    .wait_timeout(queue, IDLE_EXIT)
                    .unwrap_or_else(|p| p.into_inner());
                shared.idle.fetch_sub(1, Ordering::SeqCst);
                queue = q;
                if timeout.timed_out() && !permanent && queue.is_empty() {
                    break None;
                }
            }
        };
        let Some(Job {
            conn,
            stream,
            call,
            deadline,
        }) = job
        else {
            shared.threads.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let answer = call_deadline::during(deadline, || shared.shim.handle(conn, stream, call));
        if let Some(answer) = answer {
            shared.shim.post(LoopMsg::Answered {
                conn,
                stream,
                reply: answer.reply,
                hold: answer.hold,
            });
        }
        // After the post: the loop sees no call in flight only once its answer is queued;
        // and woken again, as it may have looked in between.
        shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        shared.shim.waker().wake();
    }
}
