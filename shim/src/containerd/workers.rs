//! The threads that run runc for the loop.
//!
//! A worker gets a [`Work`]: a job that owns copies of what it needs (never the process
//! table), runs it under the call's deadline (`call_deadline`), and hands the outcome back
//! to the loop through [`Completions`], waking it. One worker always exists; another is
//! started only when work arrives while every worker is busy (a `runc exec` blocked on a
//! frozen container must not hold up the other calls), up to [`MAX_WORKERS`]; extra
//! workers exit after a short idle time. At rest the shim has the loop, one worker and
//! the event publisher. The loop bounds how much work waits by not reading connections
//! past that bound.

use crate::containerd::call::CallRef;
use crate::containerd::call_deadline;
use crate::containerd::handlers::{Job, Outcome};
use crate::containerd::process_table::gate::ExitReport;
use crate::containerd::process_table::ProcKey;
use crate::process_core::epoll::Waker;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Most workers at once: work beyond waits in the queue (which the loop bounds).
pub const MAX_WORKERS: usize = 8;
/// How long an extra worker waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);
/// Stack of a worker: jobs are shallow; runc output is collected on the heap.
const WORKER_STACK: usize = 256 * 1024;

/// A call's work for a worker, and what the loop needs to answer it afterwards.
pub struct Work {
    pub call: CallRef,
    /// The gate the call holds (left once its reply is written).
    pub gate: Option<(ProcKey, ExitReport)>,
    pub job: Job,
}

/// A job done: the call, its gate and what the job found.
#[derive(Debug)]
pub struct Done {
    pub call: CallRef,
    pub gate: Option<(ProcKey, ExitReport)>,
    pub outcome: Outcome,
}

/// Finished work on its way back to the loop. Shared by the workers (which push) and the
/// loop (which takes): the one hand-off from the workers to the loop.
#[derive(Debug)]
pub struct Completions {
    done: Mutex<Vec<Done>>,
    waker: Waker,
}

impl Completions {
    pub fn new(waker: Waker) -> Self {
        Completions {
            done: Mutex::new(Vec::new()),
            waker,
        }
    }

    fn push(&self, d: Done) {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).push(d);
        self.waker.wake();
    }

    /// Takes what the workers have finished, oldest first.
    pub fn take(&self) -> Vec<Done> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The loop's wake-up (drained when it wakes).
    pub fn waker(&self) -> &Waker {
        &self.waker
    }
}

/// Work waiting for a worker, shared by the loop (which pushes) and the workers.
struct Shared {
    queue: Mutex<VecDeque<Work>>,
    ready: Condvar,
    idle: AtomicUsize,
    threads: AtomicUsize,
    completions: Arc<Completions>,
}

/// Hands work to the workers.
pub struct WorkerPool {
    shared: Arc<Shared>,
}

impl WorkerPool {
    /// Starts the permanent worker.
    pub fn start(completions: Arc<Completions>) -> io::Result<Self> {
        let pool = WorkerPool {
            shared: Arc::new(Shared {
                queue: Mutex::new(VecDeque::new()),
                ready: Condvar::new(),
                idle: AtomicUsize::new(0),
                threads: AtomicUsize::new(0),
                completions,
            }),
        };
        pool.spawn(true)?;
        Ok(pool)
    }

    /// Queues work; starts another worker when none is idle.
    pub fn submit(&self, work: Work) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(work);
        if self.shared.idle.load(Ordering::SeqCst) == 0
            && self.shared.threads.load(Ordering::SeqCst) < MAX_WORKERS
        {
            if let Err(e) = self.spawn(false) {
                log::warn!("no extra worker ({e}); the call waits for a busy one");
            }
        }
        self.shared.ready.notify_one();
    }

    /// Starts a worker, counted idle from now: a thread still on its way to its first
    /// wait takes the next job as soon as it gets there, so work submitted meanwhile (the
    /// first Create, right after the shim's start) starts no second thread.
    fn spawn(&self, permanent: bool) -> io::Result<()> {
        let shared = self.shared.clone();
        let n = shared.threads.fetch_add(1, Ordering::SeqCst);
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name(format!("tether-worker-{n}"))
            .stack_size(WORKER_STACK)
            .spawn(move || work(&shared, permanent));
        if spawned.is_err() {
            self.shared.idle.fetch_sub(1, Ordering::SeqCst);
            self.shared.threads.fetch_sub(1, Ordering::SeqCst);
        }
        spawned.map(|_| ())
    }
}

impl std::fmt::Debug for Work {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Work")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// A worker's life. It is counted in `idle` (by `spawn`) whenever it runs no job: it
/// leaves the count, under the queue's lock, as it takes a job or exits.
fn work(shared: &Shared, permanent: bool) {
    loop {
        let work = {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            let taken = loop {
                if let Some(w) = queue.pop_front() {
                    break Some(w);
                }
                let (q, timeout) = shared
                    .ready
                    .wait_timeout(queue, IDLE_EXIT)
                    .unwrap_or_else(|p| p.into_inner());
                queue = q;
                if timeout.timed_out() && !permanent && queue.is_empty() {
                    break None;
                }
            };
            shared.idle.fetch_sub(1, Ordering::SeqCst);
            taken
        };
        let Some(Work { call, gate, job }) = work else {
            shared.threads.fetch_sub(1, Ordering::SeqCst);
            return;
        };
        let mut outcome = call_deadline::during(call.deadline, job);
        let spent = outcome.take_spent_file();
        shared.completions.push(Done {
            call,
            gate,
            outcome,
        });
        // While the loop answers: no reply waits for the file system.
        if let Some(path) = spent {
            let _ = std::fs::remove_file(path);
        }
        shared.idle.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerd::errors::RpcResult;
    use std::time::Instant;

    fn paused(id: &str) -> Outcome {
        let result: RpcResult<()> = Ok(());
        Outcome::Paused {
            id: id.into(),
            result,
        }
    }

    fn work(id: &'static str) -> Work {
        Work {
            call: CallRef {
                conn: 0,
                stream: 1,
                deadline: None,
                method: "Pause",
                counted: true,
            },
            gate: None,
            job: Box::new(move || paused(id)),
        }
    }

    fn wait_done(completions: &Completions, n: usize) -> Vec<Done> {
        let until = Instant::now() + Duration::from_secs(10);
        let mut done = Vec::new();
        while done.len() < n {
            assert!(Instant::now() < until, "the work was not done");
            done.extend(completions.take());
            std::thread::sleep(Duration::from_millis(1));
        }
        done
    }

    #[test]
    fn work_submitted_as_the_pool_starts_takes_no_second_thread() {
        // The shim's first Create comes right after its start, often before the permanent
        // worker has reached its first wait: it used to count as busy then, and a second
        // thread was started on the first call's path.
        for _ in 0..20 {
            let completions = Arc::new(Completions::new(Waker::new().unwrap()));
            let pool = WorkerPool::start(completions.clone()).unwrap();
            pool.submit(work("first"));
            wait_done(&completions, 1);
            assert_eq!(pool.shared.threads.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn work_submitted_while_every_worker_is_busy_starts_another() {
        let completions = Arc::new(Completions::new(Waker::new().unwrap()));
        let pool = WorkerPool::start(completions.clone()).unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel::<()>();
        pool.submit(Work {
            job: Box::new(move || {
                started.send(()).unwrap();
                let _ = held.recv();
                paused("blocked")
            }),
            ..work("blocked")
        });
        running.recv().unwrap();
        pool.submit(work("second"));
        // The second is done while the first still holds the only other worker.
        let done = wait_done(&completions, 1);
        assert!(matches!(&done[0].outcome, Outcome::Paused { id, .. } if id == "second"));
        assert_eq!(pool.shared.threads.load(Ordering::SeqCst), 2);
        release.send(()).unwrap();
        wait_done(&completions, 1);
    }
}
