//! The publisher against a fake containerd (a unix listener speaking just enough ttrpc) and
//! against the ttrpc crate's own server: order, reconnects, rejection, expiry, the bounded
//! queue, and how `close` drains and gives up.

use super::*;
use crate::containerd::events::endpoint::abstract_addr;
use crate::containerd::events::envelope::{EVENTS_SERVICE, FORWARD_METHOD, NAMESPACE_METADATA_KEY};
use crate::containerd::events::types::topics;
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
    let (rx1, first) = spawn_server(sock.clone(), 1, Behaviour::CloseAfterFirst, Duration::ZERO);
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
        fn forward(&self, ctx: &ttrpc::TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
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
    let p =
        Publisher::start_with(dir.path().join("s").to_str().unwrap(), "ns", fast_config()).unwrap();
    p.publish("/t/huge", "x.E", vec![0u8; MAX_MESSAGE + 1]);
    let st = p.inner.shared.queue.lock();
    assert!(st.queue.is_empty() && !st.in_flight);
    drop(st);
    p.close(Duration::ZERO);
}
