//! The event publisher: task events to containerd over ttrpc, from one background thread.
//!
//! containerd hands every shim the address of its ttrpc socket in `TTRPC_ADDRESS`
//! and expects task events (`/tasks/exit`, ...) to be forwarded to the
//! `containerd.services.events.ttrpc.v1.Events/Forward` method there.
//!
//! The [`Publisher`] owns exactly one background thread (its loop in `delivery.rs`) and one
//! unix-socket connection ([`super::connection`]); events wait in a bounded queue
//! ([`super::queue`]), already encoded ([`super::envelope`]). This file is the API the
//! shim calls: start, publish, hand over, close.
//!
//! Delivery is at-least-once and in publish order: if a connection breaks after a
//! request was written but before its answer was read, the event is sent again on
//! a new connection (containerd tolerates duplicates; losing a `TaskExit` would
//! leave a task that never exits in containerd's eyes).

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::endpoint::{Endpoint, EndpointError};
use super::envelope::encode_request;
use super::queue::{Item, Pushed, Queue};
use super::types::EventMessage;

mod delivery;
use delivery::run;

/// Events kept waiting at most; when full the oldest is dropped (with a warning),
/// so a long containerd outage costs bounded memory.
pub const QUEUE_CAPACITY: usize = 4096;
/// An event is retried until delivered or until it has been queued this long.
/// Long enough to ride out a containerd restart, short enough that a shim whose
/// containerd is gone for good does not keep retrying stale events forever.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(60);
/// First pause after a failed attempt; doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Socket read and write timeout, also sent as the request's deadline, so a
/// wedged containerd cannot hang the event thread.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Publisher::close`] waits, after its drain deadline, for the thread
/// to notice it must stop before leaving it detached.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// The event thread needs little stack: it encodes nothing (events are encoded
/// by the publisher) and only does socket I/O.
const THREAD_STACK: usize = 256 * 1024;

/// Why a [`Publisher`] could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The address is empty or not a unix socket this publisher can dial.
    #[error(transparent)]
    Address(#[from] EndpointError),
    /// The namespace was empty; containerd rejects events without one.
    #[error("event namespace is empty: containerd requires every event to carry one")]
    EmptyNamespace,
    /// The background thread could not be created.
    #[error("cannot start the event publisher thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Tunables; the public API uses the documented constants, tests shrink them.
#[derive(Debug, Clone)]
struct Config {
    capacity: usize,
    max_age: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    io_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            capacity: QUEUE_CAPACITY,
            max_age: MAX_EVENT_AGE,
            backoff_initial: BACKOFF_INITIAL,
            backoff_max: BACKOFF_MAX,
            io_timeout: IO_TIMEOUT,
        }
    }
}

/// What the publishers and the thread share.
struct Shared {
    queue: Queue,
    endpoint: Endpoint,
    namespace: String,
    config: Config,
}

/// Owns the thread handle; dropping the last [`Publisher`] clone drops this.
struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// Without an explicit `close`, let the thread deliver what is queued (same
    /// bounds as always) and then exit on its own; never blocks.
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// An event not delivered yet, as a live upgrade carries it: its topic, the encoded
/// ttrpc request, and how long it had been queued.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CarriedEvent {
    pub topic: String,
    pub request: Vec<u8>,
    pub age_ms: u64,
}

/// Forwards task events to containerd, in order, from one background thread.
///
/// Cloning is cheap (an `Arc`); all clones feed the same queue and thread.
/// `Send + Sync`: may be used from any number of threads.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.inner.shared.endpoint)
            .field("namespace", &self.inner.shared.namespace)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Starts ONE background thread (`tether-events`, 256 KiB stack) that
    /// delivers queued events in publish order over one blocking unix-socket
    /// connection to `ttrpc_address` (`/path`, `unix:///path` or `@abstract`).
    ///
    /// Does not connect: the connection is made lazily by the thread and re-made
    /// after any error (containerd restarts), pausing 50 ms doubling to 2 s
    /// between failed attempts. Each event is retried until delivered or until it
    /// has been queued for more than [`MAX_EVENT_AGE`] (60 s), then dropped with
    /// a warning. An event containerd answers with a non-OK status is dropped
    /// with a warning, not retried. Socket I/O times out after [`IO_TIMEOUT`].
    ///
    /// Fails only on an empty or undialable address, an empty namespace, or if
    /// the thread cannot be spawned. Never blocks.
    pub fn start(ttrpc_address: &str, namespace: &str) -> Result<Publisher, PublishError> {
        Self::start_with(ttrpc_address, namespace, Config::default())
    }

    fn start_with(
        ttrpc_address: &str,
        namespace: &str,
        config: Config,
    ) -> Result<Publisher, PublishError> {
        let endpoint = Endpoint::parse(ttrpc_address)?;
        if namespace.is_empty() {
            return Err(PublishError::EmptyNamespace);
        }
        let shared = Arc::new(Shared {
            queue: Queue::new(config.capacity),
            endpoint,
            namespace: namespace.to_string(),
            config,
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tether-events".to_string())
            .stack_size(THREAD_STACK)
            .spawn(move || run(&worker))
            .map_err(PublishError::Spawn)?;
        Ok(Publisher {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Queues one event for delivery; never blocks on I/O (only takes a mutex
    /// that is never held across I/O).
    ///
    /// `topic` e.g. [`super::topics::TASK_EXIT`]; `type_url` the event's full protobuf
    /// name, e.g. `"containerd.events.TaskExit"` (what the Go shim sends, without
    /// a `type.googleapis.com/` prefix); `value` the encoded event. The envelope
    /// is stamped with the current time.
    ///
    /// If the queue already holds [`QUEUE_CAPACITY`] events, the oldest queued one
    /// is dropped with a warning. After [`Publisher::close`] events are dropped
    /// with a warning. Events too large for a ttrpc frame (4 MiB) are dropped
    /// with a warning.
    pub fn publish(&self, topic: &str, type_url: &str, value: Vec<u8>) {
        let shared = &self.inner.shared;
        let request = match encode_request(
            &shared.namespace,
            topic,
            type_url,
            value,
            shared.config.io_timeout,
        ) {
            Ok(r) => r,
            Err(reason) => {
                log::warn!("dropping event {topic} ({type_url}): {reason}");
                return;
            }
        };
        let item = Item {
            topic: topic.to_string(),
            request,
            queued_at: Instant::now(),
        };
        // Log outside the queue's lock: a slow logger must not stall the event thread.
        match shared.queue.push(item) {
            Pushed::Queued => {}
            Pushed::Evicted(old) => log::warn!(
                "event queue full ({} events, containerd unreachable?): dropping oldest event {}",
                shared.queue.capacity(),
                old.topic
            ),
            Pushed::Closed => log::warn!("dropping event {topic}: the event publisher is closed"),
        }
    }

    /// Events published from now on wake the event thread only at
    /// [`Publisher::release_wakes`] (the loop holds them for a turn; see
    /// [`Queue::hold_wakes`](super::queue::Queue::hold_wakes)).
    pub fn hold_wakes(&self) {
        self.inner.shared.queue.hold_wakes();
    }

    /// Wakes the event thread for what was published since [`Publisher::hold_wakes`].
    pub fn release_wakes(&self) {
        self.inner.shared.queue.release_wakes();
    }

    /// [`Publisher::publish`] for a protobuf message: the type URL is the
    /// message's full name (e.g. `containerd.events.TaskExit`). Never blocks; an
    /// event that cannot be encoded is dropped with a warning.
    pub fn publish_message<M: EventMessage>(&self, topic: &str, event: &M) {
        let type_url = M::TYPE_NAME;
        match event.write_to_bytes() {
            Ok(value) => self.publish(topic, type_url, value),
            Err(e) => log::warn!("dropping event {topic} ({type_url}): cannot encode it: {e}"),
        }
    }

    /// Stops the publisher to hand its queue to the next image (a live upgrade): waits up
    /// to `timeout` for what is queued to be delivered, then stops the thread and
    /// returns what was not, in order, with each event's age, for
    /// [`Publisher::start_with_events`]. Nothing is dropped.
    pub fn hand_over(&self, timeout: Duration) -> Vec<CarriedEvent> {
        let deadline = Instant::now().checked_add(timeout);
        let items = self.inner.shared.queue.hand_over(deadline, STOP_GRACE);
        if let Some(handle) = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if self.inner.shared.queue.lock().exited {
                let _ = handle.join();
            } else {
                log::warn!("event publisher thread did not stop in time; leaving it detached");
            }
        }
        let now = Instant::now();
        items
            .into_iter()
            .map(|i| CarriedEvent {
                topic: i.topic,
                request: i.request,
                age_ms: u64::try_from(now.saturating_duration_since(i.queued_at).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// [`Publisher::start`] with events handed over by the previous image queued first.
    pub fn start_with_events(
        ttrpc_address: &str,
        namespace: &str,
        events: Vec<CarriedEvent>,
    ) -> Result<Publisher, PublishError> {
        let p = Self::start(ttrpc_address, namespace)?;
        let now = Instant::now();
        for e in events {
            let pushed = p.inner.shared.queue.push(Item {
                topic: e.topic,
                request: e.request,
                queued_at: now
                    .checked_sub(Duration::from_millis(e.age_ms))
                    .unwrap_or(now),
            });
            // The previous image's queue had the same bound, so this only happens when
            // it carried more than this image holds: say which event is lost, as publish does.
            if let Pushed::Evicted(old) = pushed {
                log::warn!(
                    "event queue full while taking over carried events: dropping oldest event {}",
                    old.topic
                );
            }
        }
        Ok(p)
    }

    /// Stops accepting events, blocks the caller up to `timeout` for queued
    /// events to be delivered (so `TaskExit`/`TaskDelete` survive shim shutdown),
    /// then stops the thread, dropping with a warning whatever is undelivered.
    ///
    /// After the deadline it interrupts the thread's socket and waits at most a
    /// further 500 ms for the thread to end, then joins it, or leaves it detached
    /// (with a warning) if it is stuck in `connect`. Idempotent; affects every
    /// clone.
    pub fn close(&self, timeout: Duration) {
        let deadline = Instant::now().checked_add(timeout);
        let exited = self
            .inner
            .shared
            .queue
            .drain_then_stop(deadline, STOP_GRACE);
        let handle = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            if exited {
                // The thread has returned, so this does not block.
                let _ = handle.join();
            } else {
                log::warn!("event publisher thread did not stop in time; leaving it detached");
            }
        }
    }
}

#[cfg(test)]
mod tests;
