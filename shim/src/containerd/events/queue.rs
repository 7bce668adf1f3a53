//! The publisher's bounded queue: events wait here, in publish order, for the one event
//! thread; when full the oldest is dropped, so a long containerd outage costs bounded
//! memory. It also carries the thread's lifecycle (closing, stopped, exited) and a
//! duplicate of its live socket, so a closer can interrupt blocking I/O.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One queued event: the ttrpc `Request` already encoded, so the thread only
/// has to frame and send it.
#[derive(Debug)]
pub struct Item {
    /// The event's topic (for log lines).
    pub topic: String,
    /// The encoded `ttrpc.Request`.
    pub request: Vec<u8>,
    /// When it was published.
    pub queued_at: Instant,
}

/// What the queue holds, under its lock.
#[derive(Debug, Default)]
pub struct State {
    /// Events waiting, oldest first.
    pub queue: VecDeque<Item>,
    /// The thread holds an item taken from the queue (drain is not done yet).
    pub in_flight: bool,
    /// No new events accepted; the thread exits once the queue is empty.
    pub closing: bool,
    /// The thread must exit now, abandoning what is left.
    pub stop: bool,
    /// The thread has returned (or unwound).
    pub exited: bool,
    /// Stopping to hand the queue to another image (a live upgrade): the thread puts the
    /// event it holds back at the front, and nothing is dropped.
    pub handing_over: bool,
    /// The thread sleeps in [`Queue::take`] for an event: only then does a push wake it
    /// (a wake-up costs a syscall even with nobody waiting, and each event is pushed by
    /// the loop while the thread is usually busy with the one before).
    taker_waiting: bool,
    /// The loop is in a turn ([`Queue::hold_wakes`]): a push does not wake the thread now
    /// but owes it a wake-up at [`Queue::release_wakes`], once the turn's answers are
    /// written (a thread woken earlier takes a CPU from the caller the answer wakes).
    held: bool,
    /// A push during the hold found the thread asleep.
    wake_owed: bool,
    /// Duplicate of the thread's live socket so `close` can shut it down and
    /// interrupt blocking I/O instead of waiting out the I/O timeout.
    active: Option<UnixStream>,
}

/// What [`Queue::push`] did.
#[derive(Debug)]
pub enum Pushed {
    /// The event waits in the queue.
    Queued,
    /// The event waits; the queue was full and this, its oldest, was dropped.
    Evicted(Item),
    /// The queue is closed: the event was not taken.
    Closed,
}

/// The queue and its condition variable, shared by publishers and the thread.
#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    /// Signalled on every state change someone may wait for (a push only while the
    /// thread waits for one, a finished event only while closing); the thread and
    /// closers all wait on it (always `notify_all`, there are only ever a couple of
    /// waiters).
    changed: Condvar,
    capacity: usize,
}

impl Queue {
    /// An empty queue that holds at most `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// How many events it holds at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Locks the state, surviving poisoning: the state stays consistent across
    /// every critical section, and a publisher must not panic its callers.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends an event, dropping the oldest when full. Never blocks on I/O: the lock is
    /// never held across I/O. Wakes the thread only if it sleeps for an event, and after
    /// the lock is released (woken under it, the thread would only block on the lock).
    pub fn push(&self, item: Item) -> Pushed {
        let mut st = self.lock();
        if st.closing {
            return Pushed::Closed;
        }
        let evicted = if st.queue.len() >= self.capacity {
            st.queue.pop_front()
        } else {
            None
        };
        st.queue.push_back(item);
        let wake = st.taker_waiting && !st.held;
        st.wake_owed |= st.taker_waiting && st.held;
        drop(st);
        if wake {
            self.changed.notify_all();
        }
        evicted.map_or(Pushed::Queued, Pushed::Evicted)
    }

    /// Holds the thread's wake-ups: pushes from now on wake it only at
    /// [`Queue::release_wakes`]. Closing and stopping still wake it at once.
    pub fn hold_wakes(&self) {
        self.lock().held = true;
    }

    /// Ends [`Queue::hold_wakes`]: wakes the thread if a push meanwhile found it asleep.
    pub fn release_wakes(&self) {
        let mut st = self.lock();
        st.held = false;
        let owed = std::mem::take(&mut st.wake_owed);
        drop(st);
        if owed {
            self.changed.notify_all();
        }
    }

    /// Accepts no more events; the thread leaves once the queue is empty.
    pub fn close(&self) {
        self.lock().closing = true;
        self.changed.notify_all();
    }

    /// Blocks until an event is queued (returns it, marking it in flight), or the
    /// queue is stopped, or closed with nothing left (returns None).
    pub fn take(&self) -> Option<Item> {
        let mut st = self.lock();
        loop {
            if st.stop {
                return None;
            }
            if let Some(item) = st.queue.pop_front() {
                st.in_flight = true;
                return Some(item);
            }
            if st.closing {
                return None;
            }
            st.taker_waiting = true;
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            st.taker_waiting = false;
        }
    }

    /// The event taken last is done with (delivered or dropped). Only a closer waits for
    /// that ([`Queue::drain_then_stop`], which sets `closing` first), so only then is
    /// anyone woken.
    pub fn done(&self) {
        let mut st = self.lock();
        st.in_flight = false;
        let closing = st.closing;
        drop(st);
        if closing {
            self.changed.notify_all();
        }
    }

    /// Whether the thread must stop now.
    pub fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Closes the queue and waits until it is drained or the thread exited, at most until
    /// `deadline`; then stops the thread, interrupting its socket, and waits at most
    /// `grace` for it to exit. Returns whether it did.
    pub fn drain_then_stop(&self, deadline: Option<Instant>, grace: Duration) -> bool {
        let mut st = self.lock();
        st.closing = true;
        self.changed.notify_all();
        while (!st.queue.is_empty() || st.in_flight) && !st.exited {
            let (guard, timed_out) = self.wait_until(st, deadline);
            st = guard;
            if timed_out {
                break;
            }
        }
        st.stop = true;
        if let Some(sock) = &st.active {
            // Interrupts a blocking send/recv at once instead of after the I/O timeout.
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        self.changed.notify_all();
        let grace = Instant::now().checked_add(grace);
        while !st.exited {
            let (guard, timed_out) = self.wait_until(st, grace);
            st = guard;
            if timed_out {
                break;
            }
        }
        st.exited
    }

    /// Stops the thread to hand what is queued to the next image: waits until the queue is
    /// empty (or `deadline`), then stops the thread (interrupting its socket), waits at
    /// most `grace` for it, and returns every event not delivered, oldest first (the one
    /// the thread held included).
    pub fn hand_over(&self, deadline: Option<Instant>, grace: Duration) -> Vec<Item> {
        self.lock().handing_over = true;
        self.drain_then_stop(deadline, grace);
        let mut st = self.lock();
        st.queue.drain(..).collect()
    }

    /// The thread was stopped for a hand-over while it held `item`: it goes back in front.
    pub fn requeue(&self, item: Item) {
        self.lock().queue.push_front(item);
        self.changed.notify_all();
    }

    /// Whether the thread is being stopped for a hand-over.
    pub fn handing_over(&self) -> bool {
        self.lock().handing_over
    }

    /// Records the thread's live socket (a duplicate) for [`Queue::drain_then_stop`] to
    /// interrupt; if a stop raced with connecting, shuts the new socket down at once.
    pub fn set_active(&self, stream: Option<&UnixStream>) {
        let dup = stream.and_then(|s| s.try_clone().ok());
        let mut st = self.lock();
        if st.stop {
            if let Some(s) = &dup {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        st.active = dup;
    }

    /// The thread is gone: clears what is left and returns how many events that was.
    pub fn exited(&self) -> usize {
        let mut st = self.lock();
        st.exited = true;
        st.active = None;
        if st.handing_over {
            self.changed.notify_all();
            return 0;
        }
        let abandoned = st.queue.len();
        st.queue.clear();
        self.changed.notify_all();
        abandoned
    }

    /// Sleeps for `pause`, waking early if the queue is stopped.
    pub fn sleep_unless_stopped(&self, pause: Duration) {
        let deadline = Instant::now().checked_add(pause);
        let mut st = self.lock();
        while !st.stop {
            let (guard, timed_out) = self.wait_until(st, deadline);
            st = guard;
            if timed_out {
                return;
            }
        }
    }

    /// Waits until notified or `deadline` (None: no deadline). Returns the guard and
    /// whether the deadline has passed.
    fn wait_until<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, State>, bool) {
        match deadline {
            None => (
                self.changed.wait(guard).unwrap_or_else(|e| e.into_inner()),
                false,
            ),
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return (guard, true);
                }
                let (guard, _) = self
                    .changed
                    .wait_timeout(guard, deadline - now)
                    .unwrap_or_else(|e| e.into_inner());
                (guard, Instant::now() >= deadline)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(topic: &str) -> Item {
        Item {
            topic: topic.into(),
            request: Vec::new(),
            queued_at: Instant::now(),
        }
    }

    #[test]
    fn a_held_push_wakes_the_thread_at_the_release() {
        let q = std::sync::Arc::new(Queue::new(4));
        let taker = {
            let q = q.clone();
            std::thread::spawn(move || q.take().map(|i| i.topic))
        };
        // Ordered by what the queue shows: the thread sleeps in take.
        while !q.lock().taker_waiting {
            std::thread::yield_now();
        }
        q.hold_wakes();
        assert!(matches!(q.push(item("exit")), Pushed::Queued));
        {
            let st = q.lock();
            assert!(st.wake_owed, "the push owes the sleeping thread a wake-up");
            assert_eq!(st.queue.len(), 1);
        }
        q.release_wakes();
        assert_eq!(taker.join().unwrap().as_deref(), Some("exit"));
        assert!(!q.lock().wake_owed && !q.lock().held);
    }

    #[test]
    fn a_held_push_to_a_busy_thread_owes_nothing() {
        let q = Queue::new(4);
        q.hold_wakes();
        assert!(matches!(q.push(item("a")), Pushed::Queued));
        assert!(!q.lock().wake_owed, "nobody sleeps: nothing to wake");
        q.release_wakes();
        assert_eq!(q.take().unwrap().topic, "a");
    }

    #[test]
    fn keeps_order_and_drops_the_oldest_when_full() {
        let q = Queue::new(2);
        assert!(matches!(q.push(item("a")), Pushed::Queued));
        assert!(matches!(q.push(item("b")), Pushed::Queued));
        match q.push(item("c")) {
            Pushed::Evicted(old) => assert_eq!(old.topic, "a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.take().unwrap().topic, "b");
        assert!(q.lock().in_flight);
        q.done();
        assert!(!q.lock().in_flight);
        q.close();
        assert!(matches!(q.push(item("d")), Pushed::Closed));
        assert_eq!(q.take().unwrap().topic, "c", "closing still drains");
        assert!(q.take().is_none());
    }

    #[test]
    fn a_stop_abandons_the_rest() {
        let q = Queue::new(0);
        assert_eq!(q.capacity(), 1);
        q.push(item("a"));
        // Nobody takes it: the drain times out at once, and no thread exits in the grace.
        let exited = q.drain_then_stop(Some(Instant::now()), Duration::ZERO);
        assert!(!exited);
        assert!(q.stopped());
        assert!(q.take().is_none());
        assert_eq!(q.exited(), 1);
        assert!(q.lock().queue.is_empty());
        let t0 = Instant::now();
        q.sleep_unless_stopped(Duration::from_secs(10));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
