//! The event publisher: task events to containerd over ttrpc, from one background thread.
//!
//! containerd hands every shim the address of its ttrpc socket in `TTRPC_ADDRESS`
//! and expects task events (`/tasks/exit`, ...) to be forwarded to the
//! `containerd.services.events.ttrpc.v1.Events/Forward` method there.
//!
//! The [`Publisher`] owns exactly one background thread and one unix-socket
//! connection ([`super::connection`]); events wait in a bounded queue ([`super::queue`]),
//! already encoded ([`super::envelope`]).
//!
//! Delivery is at-least-once and in publish order: if a connection breaks after a
//! request was written but before its answer was read, the event is sent again on
//! a new connection (containerd tolerates duplicates; losing a `TaskExit` would
//! leave a task that never exits in containerd's eyes).

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::connection::{Connection, Outcome};
use super::endpoint::{Endpoint, EndpointError};
use super::envelope::encode_request;
use super::queue::{Item, Pushed, Queue};
use super::types::EventMessage;

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
            let _ = p.inner.shared.queue.push(Item {
                topic: e.topic,
                request: e.request,
                queued_at: now
                    .checked_sub(Duration::from_millis(e.age_ms))
                    .unwrap_or(now),
            });
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

/// Marks the thread exited even if it unwinds, so `close` never waits for a
/// thread that is gone.
struct ExitGuard<'a>(&'a Queue);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let abandoned = self.0.exited();
        if abandoned > 0 {
            log::warn!("event publisher stopped: dropping {abandoned} undelivered events");
        }
    }
}

/// The event thread: takes events in order and delivers each before the next.
fn run(shared: &Shared) {
    let _exit = ExitGuard(&shared.queue);
    let mut conn: Option<Connection> = None;
    while let Some(item) = shared.queue.take() {
        let handed_over = !deliver(shared, &mut conn, &item) && shared.queue.handing_over();
        if handed_over {
            shared.queue.requeue(item);
        }
        shared.queue.done();
    }
}

/// Tries to deliver `item` until it is delivered, rejected, too old, or the
/// publisher is stopped; false only in the last case.
fn deliver(shared: &Shared, conn: &mut Option<Connection>, item: &Item) -> bool {
    let cfg = &shared.config;
    let queue = &shared.queue;
    let mut backoff = cfg.backoff_initial;
    let mut attempts: u32 = 0;
    loop {
        if queue.stopped() {
            if !queue.handing_over() {
                log::warn!(
                    "dropping event {}: the publisher was closed before containerd took it",
                    item.topic
                );
            }
            return false;
        }
        attempts = attempts.saturating_add(1);
        let reused = conn.is_some();
        let result = match conn {
            Some(c) => c.call(&item.request),
            None => match Connection::open(&shared.endpoint, cfg.io_timeout) {
                Ok(c) => {
                    queue.set_active(Some(c.stream()));
                    conn.insert(c).call(&item.request)
                }
                Err(e) => Err(e),
            },
        };
        let err = match result {
            Ok(Outcome::Delivered) => return true,
            Ok(Outcome::Rejected(status)) => {
                log::warn!(
                    "containerd rejected event {}: {status}; dropping it",
                    item.topic
                );
                return true;
            }
            Err(e) => e,
        };
        *conn = None;
        queue.set_active(None);
        if reused {
            // A connection that sat idle may have died with a containerd
            // restart; retry on a fresh one at once before backing off.
            log::debug!(
                "event {}: stale connection ({err}); reconnecting",
                item.topic
            );
            continue;
        }
        if item.queued_at.elapsed() > cfg.max_age {
            log::warn!(
                "dropping event {} after {attempts} attempts over {:?}: {err}",
                item.topic,
                cfg.max_age
            );
            return true;
        }
        log::debug!(
            "event {}: attempt {attempts} failed ({err}); retrying in {backoff:?}",
            item.topic
        );
        queue.sleep_unless_stopped(backoff);
        backoff = backoff.saturating_mul(2).min(cfg.backoff_max);
    }
}

#[cfg(test)]
mod tests {
    use super::super::endpoint::abstract_addr;
    use super::super::envelope::{EVENTS_SERVICE, FORWARD_METHOD, NAMESPACE_METADATA_KEY};
    use super::super::types::topics;
    use super::*;
    use crate::containerd::ttrpc::codec::{self, MessageType, MAX_MESSAGE};
    use crate::containerd::ttrpc::status;
    use containerd_shim_protos::shim::events::ForwardRequest;
    use protobuf::{Message, MessageField};
    use std::os::unix::net::UnixListener;
    use std::os::unix::net::UnixStream;
    use std::path::{Path, PathBuf};
    use std::sync::mpsc;
    use ttrpc::proto::{Code, Request, Response};

    /// What the fake containerd saw in one Forward call.
    #[derive(Debug, Clone, PartialEq)]
    struct Seen {
        topic: String,
        type_url: String,
        namespace: String,
        value: Vec<u8>,
    }

    /// How the fake containerd answers.
    #[derive(Clone, Copy)]
    enum Behaviour {
        Ok,
        /// Answer NOT_FOUND to the first request, OK afterwards.
        RejectFirst,
        /// Answer the first request, then drop the connection and the listener.
        CloseAfterFirst,
    }

    fn fast_config() -> Config {
        Config {
            capacity: QUEUE_CAPACITY,
            max_age: Duration::from_secs(20),
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            io_timeout: Duration::from_secs(5),
        }
    }

    fn read_frame(s: &mut UnixStream) -> Option<(u32, Vec<u8>)> {
        let (h, body) = codec::read_frame(s).ok()?;
        assert_eq!(h.message_type(), Some(MessageType::Request));
        Some((h.stream_id, body))
    }

    fn answer(s: &mut UnixStream, id: u32, code: Code) {
        use std::io::Write;
        let mut resp = Response::new();
        resp.status = MessageField::some(status(code, ""));
        let body = resp.write_to_bytes().unwrap();
        s.write_all(&codec::frame(id, MessageType::Response, &body).unwrap())
            .unwrap();
    }

    fn decode(body: &[u8]) -> Seen {
        let req = Request::parse_from_bytes(body).unwrap();
        assert_eq!(req.service, EVENTS_SERVICE);
        assert_eq!(req.method, FORWARD_METHOD);
        assert!(req.timeout_nano > 0);
        let fwd = ForwardRequest::parse_from_bytes(&req.payload).unwrap();
        let env = fwd.envelope.into_option().unwrap();
        assert!(env.timestamp.seconds > 0);
        let any = env.event.into_option().unwrap();
        assert_eq!(
            req.metadata
                .first()
                .map(|kv| (kv.key.as_str(), kv.value.as_str())),
            Some((NAMESPACE_METADATA_KEY, env.namespace.as_str()))
        );
        Seen {
            topic: env.topic,
            type_url: any.type_url,
            namespace: env.namespace,
            value: any.value,
        }
    }

    /// Serves Forward calls on `listener` until `want` events were seen, sending
    /// each to `tx`. Returns the number of connections accepted.
    fn serve(
        listener: UnixListener,
        path: &Path,
        want: usize,
        behaviour: Behaviour,
        tx: mpsc::Sender<Seen>,
    ) -> usize {
        let mut seen = 0;
        let mut conns = 0;
        while seen < want {
            let (mut s, _) = listener.accept().unwrap();
            conns += 1;
            while let Some((id, body)) = read_frame(&mut s) {
                assert_eq!(id % 2, 1, "client stream ids are odd");
                let ev = decode(&body);
                seen += 1;
                let code = match (behaviour, seen) {
                    (Behaviour::RejectFirst, 1) => Code::NOT_FOUND,
                    _ => Code::OK,
                };
                // Record before answering: once answered, the client may
                // consider the event delivered (close() may return).
                tx.send(ev).unwrap();
                answer(&mut s, id, code);
                if matches!(behaviour, Behaviour::CloseAfterFirst) && seen == 1 {
                    // containerd goes away: connection and socket file vanish.
                    drop(s);
                    drop(listener);
                    std::fs::remove_file(path).unwrap();
                    return conns;
                }
                if seen >= want {
                    break;
                }
            }
        }
        conns
    }

    fn spawn_server(
        path: PathBuf,
        want: usize,
        behaviour: Behaviour,
        delay: Duration,
    ) -> (mpsc::Receiver<Seen>, std::thread::JoinHandle<usize>) {
        let (tx, rx) = mpsc::channel();
        let listener = if delay.is_zero() {
            Some(UnixListener::bind(&path).unwrap())
        } else {
            None
        };
        let h = std::thread::spawn(move || {
            let listener = listener.unwrap_or_else(|| {
                std::thread::sleep(delay);
                UnixListener::bind(&path).unwrap()
            });
            serve(listener, &path, want, behaviour, tx)
        });
        (rx, h)
    }

    fn recv(rx: &mpsc::Receiver<Seen>) -> Seen {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("event not delivered within 10 s")
    }

    #[test]
    fn publisher_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Publisher>();
    }

    #[test]
    fn delivers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock.ttrpc");
        let (rx, server) = spawn_server(sock.clone(), 3, Behaviour::Ok, Duration::ZERO);
        let addr = format!("unix://{}", sock.display());
        let p = Publisher::start_with(&addr, "k8s.io", fast_config()).unwrap();
        for (i, topic) in [topics::TASK_CREATE, topics::TASK_START, topics::TASK_EXIT]
            .iter()
            .enumerate()
        {
            p.publish(
                topic,
                "containerd.events.Test",
                vec![u8::try_from(i).unwrap()],
            );
        }
        let got: Vec<Seen> = (0..3).map(|_| recv(&rx)).collect();
        for (i, topic) in ["/tasks/create", "/tasks/start", "/tasks/exit"]
            .iter()
            .enumerate()
        {
            assert_eq!(
                got[i],
                Seen {
                    topic: topic.to_string(),
                    type_url: "containerd.events.Test".into(),
                    namespace: "k8s.io".into(),
                    value: vec![u8::try_from(i).unwrap()],
                }
            );
        }
        assert_eq!(server.join().unwrap(), 1, "one connection for all events");
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn publish_message_uses_full_name_as_type_url() {
        use containerd_shim_protos::events::task::TaskExit;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let (rx, _server) = spawn_server(sock.clone(), 1, Behaviour::Ok, Duration::ZERO);
        let p = Publisher::start_with(sock.to_str().unwrap(), "default", fast_config()).unwrap();
        let mut ev = TaskExit::new();
        ev.container_id = "c1".into();
        ev.exit_status = 137;
        p.publish_message(topics::TASK_EXIT, &ev);
        let got = recv(&rx);
        assert_eq!(got.topic, "/tasks/exit");
        assert_eq!(got.type_url, "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&got.value).unwrap();
        assert_eq!(back.container_id, "c1");
        assert_eq!(back.exit_status, 137);
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn reconnects_after_containerd_restart() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let (rx1, first) =
            spawn_server(sock.clone(), 1, Behaviour::CloseAfterFirst, Duration::ZERO);
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        p.publish("/t/1", "x.One", vec![1]);
        assert_eq!(recv(&rx1).topic, "/t/1");
        first.join().unwrap();
        // containerd is down now; these wait in the queue.
        p.publish("/t/2", "x.Two", vec![2]);
        p.publish("/t/3", "x.Three", vec![3]);
        std::thread::sleep(Duration::from_millis(200));
        let (rx2, second) = spawn_server(sock.clone(), 2, Behaviour::Ok, Duration::ZERO);
        assert_eq!(recv(&rx2).topic, "/t/2");
        assert_eq!(recv(&rx2).topic, "/t/3");
        second.join().unwrap();
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn delivers_once_a_listener_appears() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("late.sock");
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        p.publish(topics::TASK_OOM, "containerd.events.TaskOOM", vec![]);
        p.publish(topics::TASK_DELETE, "containerd.events.TaskDelete", vec![]);
        let (rx, server) = spawn_server(sock.clone(), 2, Behaviour::Ok, Duration::from_millis(300));
        assert_eq!(recv(&rx).topic, "/tasks/oom");
        assert_eq!(recv(&rx).topic, "/tasks/delete");
        server.join().unwrap();
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn rejected_event_is_dropped_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let (rx, server) = spawn_server(sock.clone(), 2, Behaviour::RejectFirst, Duration::ZERO);
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        p.publish("/t/a", "x.A", vec![]);
        p.publish("/t/b", "x.B", vec![]);
        assert_eq!(recv(&rx).topic, "/t/a");
        // A retry of /t/a would show up here instead of /t/b.
        assert_eq!(recv(&rx).topic, "/t/b");
        server.join().unwrap();
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn expired_event_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let mut cfg = fast_config();
        cfg.max_age = Duration::from_millis(200);
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", cfg).unwrap();
        p.publish("/t/old", "x.Old", vec![]);
        std::thread::sleep(Duration::from_millis(600));
        let (rx, server) = spawn_server(sock.clone(), 1, Behaviour::Ok, Duration::ZERO);
        p.publish("/t/new", "x.New", vec![]);
        assert_eq!(recv(&rx).topic, "/t/new");
        server.join().unwrap();
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn full_queue_drops_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let mut cfg = fast_config();
        cfg.capacity = 2;
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", cfg).unwrap();
        p.publish("/t/1", "x.E", vec![]);
        // Let the thread take /t/1 (it stays in flight: nobody listens yet).
        let t0 = Instant::now();
        while !p.inner.shared.queue.lock().in_flight {
            assert!(t0.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 2..=5 {
            p.publish(&format!("/t/{i}"), "x.E", vec![]);
        }
        // The queue kept the newest two.
        let (rx, server) = spawn_server(sock.clone(), 3, Behaviour::Ok, Duration::ZERO);
        let got: Vec<String> = (0..3).map(|_| recv(&rx).topic).collect();
        let expect = ["/t/1", "/t/4", "/t/5"];
        assert_eq!(got, expect);
        server.join().unwrap();
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn close_drains_queue() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let (rx, server) = spawn_server(sock.clone(), 3, Behaviour::Ok, Duration::from_millis(100));
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        for i in 0..3 {
            p.publish(&format!("/t/{i}"), "x.E", vec![]);
        }
        p.close(Duration::from_secs(10));
        // All three were delivered before close returned.
        let got: Vec<String> = rx.try_iter().map(|s| s.topic).collect();
        assert_eq!(got, ["/t/0", "/t/1", "/t/2"]);
        server.join().unwrap();
        // Closed: further events are dropped, not queued; close is idempotent.
        p.publish("/t/late", "x.E", vec![]);
        assert!(p.inner.shared.queue.lock().queue.is_empty());
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn close_gives_up_after_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nobody-home");
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        p.publish("/t/x", "x.E", vec![]);
        let t0 = Instant::now();
        p.close(Duration::from_millis(200));
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        let st = p.inner.shared.queue.lock();
        assert!(st.exited && st.queue.is_empty());
    }

    #[test]
    fn close_interrupts_a_wedged_containerd() {
        // A listener that accepts but never answers: the thread blocks in recv.
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        p.publish("/t/x", "x.E", vec![]);
        let (_conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        p.close(Duration::from_millis(100));
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        assert!(p.inner.shared.queue.lock().exited);
    }

    #[test]
    fn dropping_last_clone_lets_thread_finish() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let (rx, server) = spawn_server(sock.clone(), 1, Behaviour::Ok, Duration::from_millis(100));
        let p = Publisher::start_with(sock.to_str().unwrap(), "ns", fast_config()).unwrap();
        let shared = Arc::clone(&p.inner.shared);
        let p2 = p.clone();
        std::thread::spawn(move || p2.publish("/t/from-thread", "x.E", vec![]))
            .join()
            .unwrap();
        drop(p);
        assert_eq!(recv(&rx).topic, "/t/from-thread");
        server.join().unwrap();
        let t0 = Instant::now();
        while !shared.queue.lock().exited {
            assert!(t0.elapsed() < Duration::from_secs(5), "thread did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wire compatibility: the ttrpc crate's own server (what the Rust
    /// ecosystem speaks, itself tested against Go ttrpc) accepts our frames.
    #[test]
    fn real_ttrpc_server_accepts_our_requests() {
        use containerd_shim_protos::types::empty::Empty;
        use containerd_shim_protos::{create_events, Events};

        struct Recorder(Mutex<mpsc::Sender<(Seen, Vec<String>)>>);
        impl Events for Recorder {
            fn forward(
                &self,
                ctx: &ttrpc::TtrpcContext,
                req: ForwardRequest,
            ) -> ttrpc::Result<Empty> {
                let env = req.envelope.into_option().unwrap_or_default();
                let any = env.event.clone().into_option().unwrap_or_default();
                let ns = ctx
                    .metadata
                    .get(NAMESPACE_METADATA_KEY)
                    .cloned()
                    .unwrap_or_default();
                let seen = Seen {
                    topic: env.topic,
                    type_url: any.type_url,
                    namespace: env.namespace,
                    value: any.value,
                };
                let _ = self.0.lock().unwrap().send((seen, ns));
                Ok(Empty::new())
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("containerd.sock.ttrpc");
        let (tx, rx) = mpsc::channel();
        let mut server = ttrpc::Server::new()
            .bind(&format!("unix://{}", sock.display()))
            .unwrap()
            .register_service(create_events(Arc::new(Recorder(Mutex::new(tx)))));
        server.start().unwrap();

        let p = Publisher::start_with(sock.to_str().unwrap(), "moby", fast_config()).unwrap();
        p.publish(
            topics::TASK_START,
            "containerd.events.TaskStart",
            vec![8, 1],
        );
        p.publish(topics::TASK_EXIT, "containerd.events.TaskExit", vec![]);
        let recv2 = || rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let (first, ns) = recv2();
        assert_eq!(
            first,
            Seen {
                topic: "/tasks/start".into(),
                type_url: "containerd.events.TaskStart".into(),
                namespace: "moby".into(),
                value: vec![8, 1],
            }
        );
        assert_eq!(ns, ["moby"]);
        assert_eq!(recv2().0.topic, "/tasks/exit");
        p.close(Duration::from_secs(1));
        server.shutdown();
    }

    #[test]
    fn abstract_socket_address() {
        let name = format!("tether-pub-test-{}", std::process::id());
        let addr = abstract_addr(name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        let (tx, rx) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (id, body) = read_frame(&mut s).unwrap();
            answer(&mut s, id, Code::OK);
            tx.send(decode(&body)).unwrap();
        });
        let p = Publisher::start_with(&format!("@{name}"), "ns", fast_config()).unwrap();
        p.publish("/t/abs", "x.E", vec![]);
        assert_eq!(recv(&rx).topic, "/t/abs");
        server.join().unwrap();
        p.close(Duration::from_secs(1));
    }

    #[test]
    fn start_rejects_bad_arguments() {
        assert!(matches!(
            Publisher::start("", "ns"),
            Err(PublishError::Address(EndpointError::Empty))
        ));
        assert!(matches!(
            Publisher::start("unix://", "ns"),
            Err(PublishError::Address(EndpointError::Invalid { .. }))
        ));
        assert!(matches!(
            Publisher::start("vsock://3:1024", "ns"),
            Err(PublishError::Address(EndpointError::Invalid { .. }))
        ));
        let long = format!("/{}", "x".repeat(200));
        let err = Publisher::start(&long, "ns").unwrap_err();
        assert!(err.to_string().contains("invalid ttrpc address"), "{err}");
        assert!(matches!(
            Publisher::start("/run/a\0b", "ns"),
            Err(PublishError::Address(EndpointError::Invalid { .. }))
        ));
        assert!(matches!(
            Publisher::start("/run/containerd/containerd.sock.ttrpc", ""),
            Err(PublishError::EmptyNamespace)
        ));
    }

    #[test]
    fn oversized_event_is_dropped_at_publish() {
        let dir = tempfile::tempdir().unwrap();
        let p = Publisher::start_with(dir.path().join("s").to_str().unwrap(), "ns", fast_config())
            .unwrap();
        p.publish("/t/huge", "x.E", vec![0u8; MAX_MESSAGE + 1]);
        let st = p.inner.shared.queue.lock();
        assert!(st.queue.is_empty() && !st.in_flight);
        drop(st);
        p.close(Duration::ZERO);
    }
}
