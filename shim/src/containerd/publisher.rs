//! Task events to containerd over ttrpc.
//!
//! containerd hands every shim the address of its ttrpc socket in `TTRPC_ADDRESS`
//! and expects task events (`/tasks/exit`, ...) to be forwarded to the
//! `containerd.services.events.ttrpc.v1.Events/Forward` method there.
//!
//! The [`Publisher`] owns exactly one background thread and one unix-socket
//! connection. It speaks ttrpc framing itself instead of using `ttrpc::Client`,
//! because that client starts extra reader/writer threads per connection and the
//! shim stays resident for the life of every container.
//!
//! Delivery is at-least-once and in publish order: if a connection breaks after a
//! request was written but before its answer was read, the event is sent again on
//! a new connection (containerd tolerates duplicates; losing a `TaskExit` would
//! leave a task that never exits in containerd's eyes).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::containerd::event_types::EventMessage;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use protobuf::well_known_types::any::Any;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::{Message, MessageField};
use ttrpc::proto::{Code, KeyValue, Request, Response};

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

/// ttrpc service containerd serves events on.
const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";
/// Method of [`EVENTS_SERVICE`] that accepts an envelope from a shim.
const FORWARD_METHOD: &str = "Forward";
/// Metadata key the Go ttrpc client uses to carry the namespace; containerd's
/// Forward handler reads the envelope, but sending it keeps us wire-identical
/// with the Go shim for any interceptor that looks at it.
const NAMESPACE_METADATA_KEY: &str = "containerd-namespace-ttrpc";

/// ttrpc frame header: u32 length, u32 stream id, u8 type, u8 flags (big endian).
const HEADER_LEN: usize = 10;
const MESSAGE_TYPE_REQUEST: u8 = 1;
const MESSAGE_TYPE_RESPONSE: u8 = 2;
/// Largest frame payload either side of ttrpc accepts (4 MiB in Go and Rust ttrpc).
const MAX_MESSAGE_LEN: usize = 4 << 20;

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
    /// The address was empty (containerd sets `TTRPC_ADDRESS` for every shim).
    #[error("ttrpc address is empty: containerd passes it to the shim in TTRPC_ADDRESS")]
    EmptyAddress,
    /// The address is not a unix socket this publisher can dial.
    #[error("invalid ttrpc address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The namespace was empty; containerd rejects events without one.
    #[error("event namespace is empty: containerd requires every event to carry one")]
    EmptyNamespace,
    /// The background thread could not be created.
    #[error("cannot start the event publisher thread: {0}")]
    Spawn(#[source] io::Error),
}

/// Why one delivery attempt failed (internal: only ever logged).
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("send request: {0}")]
    Send(#[source] io::Error),
    #[error("read response: {0}")]
    Receive(#[source] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("stream ids exhausted on this connection")]
    StreamIdsExhausted,
}

/// Where containerd listens.
#[derive(Debug, Clone)]
enum Endpoint {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Endpoint {
    /// Accepts `/path`, `unix:///path`, a relative path, or `@name` (abstract
    /// namespace, as Go's net package spells it).
    fn parse(address: &str) -> Result<Endpoint, PublishError> {
        let invalid = |reason: &str| PublishError::InvalidAddress {
            address: address.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = address.trim();
        if trimmed.is_empty() {
            return Err(PublishError::EmptyAddress);
        }
        let rest = trimmed.strip_prefix("unix://").unwrap_or(trimmed);
        if rest.is_empty() {
            return Err(invalid("no socket path after unix://"));
        }
        if rest.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if let Some(name) = rest.strip_prefix('@') {
            // Validate now so a bad name fails start, not every later attempt.
            if let Err(e) = abstract_addr(name.as_bytes()) {
                return Err(invalid(&e.to_string()));
            }
            return Ok(Endpoint::Abstract(name.as_bytes().to_vec()));
        }
        if !rest.starts_with('/') && rest.contains("://") {
            return Err(invalid(
                "only unix sockets are supported (\"/path\", \"unix:///path\" or \"@name\")",
            ));
        }
        let path = PathBuf::from(rest);
        // sun_path holds 107 bytes; fail at start rather than on every attempt.
        if let Err(e) = SocketAddr::from_pathname(&path) {
            return Err(invalid(&e.to_string()));
        }
        Ok(Endpoint::Path(path))
    }

    fn connect(&self) -> io::Result<UnixStream> {
        match self {
            Endpoint::Path(p) => UnixStream::connect(p),
            Endpoint::Abstract(name) => UnixStream::connect_addr(&abstract_addr(name)?),
        }
    }
}

fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
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

/// One queued event: the ttrpc `Request` already encoded, so the thread only
/// has to frame and send it.
struct Item {
    topic: String,
    request: Vec<u8>,
    queued_at: Instant,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Item>,
    /// The thread holds an item taken from the queue (drain is not done yet).
    in_flight: bool,
    /// No new events accepted; the thread exits once the queue is empty.
    closing: bool,
    /// The thread must exit now, abandoning what is left.
    stop: bool,
    /// The thread has returned (or unwound).
    exited: bool,
    /// Duplicate of the thread's live socket so `close` can shut it down and
    /// interrupt blocking I/O instead of waiting out the I/O timeout.
    active: Option<UnixStream>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every state change; the thread and closers all wait on it
    /// (always `notify_all`, there are only ever a couple of waiters).
    changed: Condvar,
    endpoint: Endpoint,
    namespace: String,
    config: Config,
}

impl Shared {
    /// Locks the state, surviving poisoning: the state stays consistent across
    /// every critical section, and a publisher must not panic its callers.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
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
        let mut st = self.shared.lock();
        st.closing = true;
        self.shared.changed.notify_all();
    }
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
        mut config: Config,
    ) -> Result<Publisher, PublishError> {
        let endpoint = Endpoint::parse(ttrpc_address)?;
        if namespace.is_empty() {
            return Err(PublishError::EmptyNamespace);
        }
        config.capacity = config.capacity.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            endpoint,
            namespace: namespace.to_string(),
            config,
        });
        let worker = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tether-events".to_string())
            .stack_size(THREAD_STACK)
            .spawn(move || run(worker))
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
    /// `topic` e.g. [`topics::TASK_EXIT`]; `type_url` the event's full protobuf
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
        let evicted = {
            let mut st = shared.lock();
            if st.closing {
                drop(st);
                log::warn!("dropping event {topic}: the event publisher is closed");
                return;
            }
            let evicted = if st.queue.len() >= shared.config.capacity {
                st.queue.pop_front()
            } else {
                None
            };
            st.queue.push_back(item);
            shared.changed.notify_all();
            evicted
        };
        // Log outside the lock: a slow logger must not stall the event thread.
        if let Some(old) = evicted {
            log::warn!(
                "event queue full ({} events, containerd unreachable?): dropping oldest event {}",
                shared.config.capacity,
                old.topic
            );
        }
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

    /// Stops accepting events, blocks the caller up to `timeout` for queued
    /// events to be delivered (so `TaskExit`/`TaskDelete` survive shim shutdown),
    /// then stops the thread, dropping with a warning whatever is undelivered.
    ///
    /// After the deadline it interrupts the thread's socket and waits at most a
    /// further 500 ms for the thread to end, then joins it, or leaves it detached
    /// (with a warning) if it is stuck in `connect`. Idempotent; affects every
    /// clone.
    pub fn close(&self, timeout: Duration) {
        let shared = &self.inner.shared;
        let deadline = Instant::now().checked_add(timeout);
        let mut st = shared.lock();
        st.closing = true;
        shared.changed.notify_all();
        while (!st.queue.is_empty() || st.in_flight) && !st.exited {
            let (guard, timed_out) = wait_until(&shared.changed, st, deadline);
            st = guard;
            if timed_out {
                break;
            }
        }
        st.stop = true;
        if let Some(sock) = &st.active {
            // Interrupts a blocking send/recv at once instead of after IO_TIMEOUT.
            let _ = sock.shutdown(std::net::Shutdown::Both);
        }
        shared.changed.notify_all();
        let grace = Instant::now().checked_add(STOP_GRACE);
        while !st.exited {
            let (guard, timed_out) = wait_until(&shared.changed, st, grace);
            st = guard;
            if timed_out {
                break;
            }
        }
        let exited = st.exited;
        drop(st);
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

/// Waits on `cv` until notified or `deadline` (None: no deadline). Returns the
/// guard and whether the deadline has passed.
fn wait_until<'a>(
    cv: &Condvar,
    guard: MutexGuard<'a, State>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, State>, bool) {
    match deadline {
        None => (cv.wait(guard).unwrap_or_else(|e| e.into_inner()), false),
        Some(deadline) => {
            let now = Instant::now();
            if now >= deadline {
                return (guard, true);
            }
            let (guard, _) = cv
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
            (guard, Instant::now() >= deadline)
        }
    }
}

/// Builds the ttrpc `Request` carrying `ForwardRequest { Envelope }`.
fn encode_request(
    namespace: &str,
    topic: &str,
    type_url: &str,
    value: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let mut any = Any::new();
    any.type_url = type_url.to_string();
    any.value = value;
    let mut envelope = Envelope::new();
    envelope.timestamp = MessageField::some(now_timestamp());
    envelope.namespace = namespace.to_string();
    envelope.topic = topic.to_string();
    envelope.event = MessageField::some(any);
    let mut forward = ForwardRequest::new();
    forward.envelope = MessageField::some(envelope);
    let payload = forward
        .write_to_bytes()
        .map_err(|e| format!("cannot encode ForwardRequest: {e}"))?;

    let mut request = Request::new();
    request.service = EVENTS_SERVICE.to_string();
    request.method = FORWARD_METHOD.to_string();
    request.payload = payload;
    request.timeout_nano = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    let mut kv = KeyValue::new();
    kv.key = NAMESPACE_METADATA_KEY.to_string();
    kv.value = namespace.to_string();
    request.metadata.push(kv);
    let bytes = request
        .write_to_bytes()
        .map_err(|e| format!("cannot encode ttrpc request: {e}"))?;
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(format!(
            "encoded request is {} bytes, over the ttrpc limit of {MAX_MESSAGE_LEN}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Current time as a protobuf Timestamp. Done by hand because protobuf's
/// `From<SystemTime>` panics outside the Timestamp range.
fn now_timestamp() -> Timestamp {
    let mut ts = Timestamp::new();
    if let Ok(d) = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        // subsec_nanos() < 1e9 always fits.
        ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    }
    ts
}

/// One ttrpc client connection; requests are strictly one at a time.
struct Connection {
    stream: UnixStream,
    next_stream_id: u32,
}

/// What containerd said about one event.
enum Outcome {
    Delivered,
    Rejected(String),
}

impl Connection {
    fn open(endpoint: &Endpoint, io_timeout: Duration) -> Result<Connection, AttemptError> {
        let stream = endpoint.connect().map_err(AttemptError::Connect)?;
        // A zero Duration is rejected by set_*_timeout; never configured, but
        // fall back to "no timeout" rather than fail.
        let timeout = (!io_timeout.is_zero()).then_some(io_timeout);
        stream
            .set_read_timeout(timeout)
            .map_err(AttemptError::Connect)?;
        stream
            .set_write_timeout(timeout)
            .map_err(AttemptError::Connect)?;
        Ok(Connection {
            stream,
            next_stream_id: 1,
        })
    }

    /// Sends one encoded request and reads its response. `Err` means the
    /// connection is unusable and the event may be retried; `Ok(Rejected)` means
    /// containerd answered with an error status.
    fn call(&mut self, request: &[u8]) -> Result<Outcome, AttemptError> {
        let stream_id = self.next_stream_id;
        // Client streams are odd; running out needs a new connection.
        self.next_stream_id = stream_id
            .checked_add(2)
            .ok_or(AttemptError::StreamIdsExhausted)?;
        let len = u32::try_from(request.len())
            .ok()
            .filter(|&l| l as usize <= MAX_MESSAGE_LEN)
            .ok_or_else(|| AttemptError::Protocol("request too large".to_string()))?;
        let mut frame = Vec::with_capacity(HEADER_LEN + request.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&stream_id.to_be_bytes());
        frame.push(MESSAGE_TYPE_REQUEST);
        frame.push(0);
        frame.extend_from_slice(request);
        send_all(&self.stream, &frame).map_err(AttemptError::Send)?;

        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .map_err(AttemptError::Receive)?;
        let [l0, l1, l2, l3, s0, s1, s2, s3, kind, _flags] = header;
        let resp_len = u32::from_be_bytes([l0, l1, l2, l3]) as usize;
        let resp_stream = u32::from_be_bytes([s0, s1, s2, s3]);
        if kind != MESSAGE_TYPE_RESPONSE {
            return Err(AttemptError::Protocol(format!(
                "expected a response frame (type 2), got type {kind}"
            )));
        }
        if resp_stream != stream_id {
            return Err(AttemptError::Protocol(format!(
                "response for stream {resp_stream}, expected {stream_id}"
            )));
        }
        if resp_len > MAX_MESSAGE_LEN {
            return Err(AttemptError::Protocol(format!(
                "response of {resp_len} bytes exceeds the ttrpc limit"
            )));
        }
        let mut body = vec![0u8; resp_len];
        self.stream
            .read_exact(&mut body)
            .map_err(AttemptError::Receive)?;
        let response = Response::parse_from_bytes(&body)
            .map_err(|e| AttemptError::Protocol(format!("undecodable response: {e}")))?;
        match response.status.as_ref() {
            None => Ok(Outcome::Delivered),
            Some(status) => match status.code.enum_value() {
                Ok(Code::OK) => Ok(Outcome::Delivered),
                Ok(code) => Ok(Outcome::Rejected(format!("{code:?}: {}", status.message))),
                Err(code) => Ok(Outcome::Rejected(format!(
                    "code {code}: {}",
                    status.message
                ))),
            },
        }
    }
}

/// Writes all of `buf` with MSG_NOSIGNAL: a closed peer must yield EPIPE, not a
/// SIGPIPE that would kill the shim if the process has not ignored it.
fn send_all(stream: &UnixStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match nix::sys::socket::send(stream.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = buf.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Marks the thread exited even if it unwinds, so `close` never waits for a
/// thread that is gone.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.exited = true;
        st.active = None;
        let abandoned = st.queue.len();
        st.queue.clear();
        self.0.changed.notify_all();
        drop(st);
        if abandoned > 0 {
            log::warn!("event publisher stopped: dropping {abandoned} undelivered events");
        }
    }
}

/// The event thread: takes events in order and delivers each before the next.
fn run(shared: Arc<Shared>) {
    let _exit = ExitGuard(&shared);
    let mut conn: Option<Connection> = None;
    while let Some(item) = next_item(&shared) {
        deliver(&shared, &mut conn, &item);
        let mut st = shared.lock();
        st.in_flight = false;
        shared.changed.notify_all();
    }
}

/// Blocks until an event is queued (returns it, marking it in flight), or the
/// publisher is stopped, or closed with nothing left (returns None).
fn next_item(shared: &Shared) -> Option<Item> {
    let mut st = shared.lock();
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
        st = shared.changed.wait(st).unwrap_or_else(|e| e.into_inner());
    }
}

/// Publishes the live socket's duplicate for `close` to interrupt; if a stop
/// raced with connecting, shuts the new socket down at once.
fn set_active(shared: &Shared, stream: Option<&UnixStream>) {
    let dup = stream.and_then(|s| s.try_clone().ok());
    let mut st = shared.lock();
    if st.stop {
        if let Some(s) = &dup {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
    st.active = dup;
}

/// Tries to deliver `item` until it is delivered, rejected, too old, or the
/// publisher is stopped.
fn deliver(shared: &Shared, conn: &mut Option<Connection>, item: &Item) {
    let cfg = &shared.config;
    let mut backoff = cfg.backoff_initial;
    let mut attempts: u32 = 0;
    loop {
        if shared.lock().stop {
            log::warn!(
                "dropping event {}: the publisher was closed before containerd took it",
                item.topic
            );
            return;
        }
        attempts = attempts.saturating_add(1);
        let reused = conn.is_some();
        let result = match conn {
            Some(c) => c.call(&item.request),
            None => match Connection::open(&shared.endpoint, cfg.io_timeout) {
                Ok(c) => {
                    set_active(shared, Some(&c.stream));
                    conn.insert(c).call(&item.request)
                }
                Err(e) => Err(e),
            },
        };
        let err = match result {
            Ok(Outcome::Delivered) => return,
            Ok(Outcome::Rejected(status)) => {
                log::warn!(
                    "containerd rejected event {}: {status}; dropping it",
                    item.topic
                );
                return;
            }
            Err(e) => e,
        };
        *conn = None;
        set_active(shared, None);
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
            return;
        }
        log::debug!(
            "event {}: attempt {attempts} failed ({err}); retrying in {backoff:?}",
            item.topic
        );
        sleep_unless_stopped(shared, backoff);
        backoff = backoff.saturating_mul(2).min(cfg.backoff_max);
    }
}

/// Sleeps for `pause`, waking early if the publisher is stopped.
fn sleep_unless_stopped(shared: &Shared, pause: Duration) {
    let deadline = Instant::now().checked_add(pause);
    let mut st = shared.lock();
    while !st.stop {
        let (guard, timed_out) = wait_until(&shared.changed, st, deadline);
        st = guard;
        if timed_out {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::sync::mpsc;

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
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).ok()?;
        let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        assert_eq!(h[8], MESSAGE_TYPE_REQUEST);
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        Some((id, body))
    }

    fn answer(s: &mut UnixStream, id: u32, code: Code) {
        use std::io::Write;
        let mut resp = Response::new();
        let mut status = ttrpc::proto::Status::new();
        status.code = code.into();
        resp.status = MessageField::some(status);
        let body = resp.write_to_bytes().unwrap();
        let mut frame = Vec::new();
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.push(MESSAGE_TYPE_RESPONSE);
        frame.push(0);
        frame.extend_from_slice(&body);
        s.write_all(&frame).unwrap();
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
            p.publish(topic, "containerd.events.Test", vec![i as u8]);
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
                    value: vec![i as u8],
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
        while !p.inner.shared.lock().in_flight {
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
        assert!(p.inner.shared.lock().queue.is_empty());
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
        let st = p.inner.shared.lock();
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
        assert!(p.inner.shared.lock().exited);
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
        while !shared.lock().exited {
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
            Err(PublishError::EmptyAddress)
        ));
        assert!(matches!(
            Publisher::start("unix://", "ns"),
            Err(PublishError::InvalidAddress { .. })
        ));
        assert!(matches!(
            Publisher::start("vsock://3:1024", "ns"),
            Err(PublishError::InvalidAddress { .. })
        ));
        let long = format!("/{}", "x".repeat(200));
        let err = Publisher::start(&long, "ns").unwrap_err();
        assert!(err.to_string().contains("invalid ttrpc address"), "{err}");
        assert!(matches!(
            Publisher::start("/run/a\0b", "ns"),
            Err(PublishError::InvalidAddress { .. })
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
        p.publish("/t/huge", "x.E", vec![0u8; MAX_MESSAGE_LEN + 1]);
        let st = p.inner.shared.lock();
        assert!(st.queue.is_empty() && !st.in_flight);
        drop(st);
        p.close(Duration::ZERO);
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
}
