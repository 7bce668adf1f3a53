//! The shim under a careless or hostile client of its ttrpc socket (issue 12): each test
//! is a probe that found a defect, kept as a test. The Go shim's figures, measured the
//! same way on this machine, are in the comments.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};
use tether_tests::direct_shim::DirectShim;

/// A ttrpc request frame: 10-byte header (length, stream id, type 1) + `ttrpc.Request`
/// (service = 1, method = 2, payload = 3), encoded by hand so the probe does not depend on
/// the code under test.
fn frame(stream_id: u32, service: &str, method: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(1u8, service), (2, method)] {
        body.push(field << 3 | 2);
        body.push(u8::try_from(value.len()).expect("short strings"));
        body.extend_from_slice(value.as_bytes());
    }
    let len = u32::try_from(body.len()).expect("small frame");
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[1, 0]);
    f.extend_from_slice(&body);
    f
}

fn status_field(pid: i32, name: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: i32) -> u64 {
    status_field(pid, "VmRSS:")
}

fn threads(pid: i32) -> u64 {
    status_field(pid, "Threads:")
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the comm.
    fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0)
}

fn connect(shim: &DirectShim) -> UnixStream {
    UnixStream::connect(shim.socket().expect("the shim's socket")).expect("connect to the shim")
}

#[test]
fn a_client_that_never_reads_its_replies_does_not_grow_the_shim() {
    // Before: the shim read every request and queued every reply: 901 MiB in 20 s.
    // The Go shim stops reading such a connection at ~200 KB.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    let before = rss_kib(pid);
    let sock = connect(&shim);
    sock.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // State of an unknown task: answered on the loop with an error, at once.
    let request = frame(1, "containerd.task.v2.Task", "State");
    let burst: Vec<u8> = request.repeat(1024);
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut sent = 0usize;
    while Instant::now() < deadline {
        match (&sock).write(&burst) {
            Ok(n) => sent += n,
            Err(_) => break, // the shim stopped reading: what we want
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_kib(pid);
    eprintln!("sent {sent} bytes of calls never read; shim RSS {before} -> {after} KiB");
    assert!(
        after < before + 16 * 1024,
        "shim RSS grew from {before} KiB to {after} KiB after {sent} bytes of unread calls"
    );
    // The shim still serves others.
    let mut other = connect(&shim);
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other
        .write_all(&frame(3, "containerd.task.v2.Task", "Connect"))
        .unwrap();
    let mut header = [0u8; 10];
    other
        .read_exact(&mut header)
        .expect("another client is answered");
    assert_eq!(u32::from_be_bytes(header[4..8].try_into().unwrap()), 3);
}

#[test]
fn unknown_calls_take_no_worker_thread() {
    // Before: 10,000 pipelined unknown-method calls took a shim from 3 to 70 threads.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    let mut sock = connect(&shim);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // One round trip first: the shim has started all its threads by then.
    sock.write_all(&frame(1, "containerd.task.v2.Task", "Connect"))
        .unwrap();
    let mut reply = [0u8; 10];
    sock.read_exact(&mut reply).unwrap();
    let len = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
    sock.read_exact(&mut vec![0u8; len]).unwrap();
    let at_rest = threads(pid);
    let calls = 10_000u32;
    let writer = {
        let mut w = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..calls {
                let method = if i % 2 == 0 { "NoSuchMethod" } else { "Nope" };
                if w.write_all(&frame(2 * i + 3, "containerd.task.v2.Task", method))
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    let mut most = at_rest;
    let mut answered = 0u32;
    let mut header = [0u8; 10];
    while answered < calls {
        sock.read_exact(&mut header)
            .expect("an answer to each call");
        let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len];
        sock.read_exact(&mut body).unwrap();
        answered += 1;
        if answered.is_multiple_of(500) {
            most = most.max(threads(pid));
        }
    }
    writer.join().unwrap();
    assert!(
        most <= at_rest,
        "threads went from {at_rest} to {most} for calls that need no worker"
    );
}

#[test]
fn accept_failures_back_off_instead_of_spinning() {
    // Before: with the shim out of file descriptors, the level-triggered listener fired
    // again at once: ~2 CPU-seconds per 5 s, and a flood of identical warnings.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    // Count once the loop answers a call: `start` returns while the server may still be
    // opening its own descriptors (epoll, signalfd, eventfd), and a limit under those
    // ended the server before it served (seen at load ~15-40). This connection stays
    // open and counted.
    let mut first = connect(&shim);
    first
        .write_all(&frame(1, "containerd.task.v2.Task", "Connect"))
        .unwrap();
    let mut header = [0u8; 10];
    first.read_exact(&mut header).expect("an answer to Connect");
    let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
    first.read_exact(&mut vec![0u8; len]).unwrap();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let limit = open + 2;
    let prlimit = |soft: usize| {
        let status = Command::new("prlimit")
            .arg("--pid")
            .arg(pid.to_string())
            .arg(format!("--nofile={soft}:"))
            .status()
            .expect("run prlimit (util-linux)");
        assert!(status.success(), "prlimit --nofile={soft}");
    };
    prlimit(limit);
    // Two connections use the last descriptors; the rest wait in the backlog.
    let held: Vec<UnixStream> = (0..6).map(|_| connect(&shim)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let ticks_before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - ticks_before;
    // 100 ticks per second here: a spinning loop spends ~160 of 200.
    assert!(
        spent < 20,
        "the shim spent {spent} ticks of CPU in 2 s while out of descriptors"
    );
    prlimit(1024);
    // Once descriptors are back, every waiting connection is served.
    for (i, mut c) in held.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let stream = 2 * u32::try_from(i).unwrap() + 1;
        c.write_all(&frame(stream, "containerd.task.v2.Task", "Connect"))
            .unwrap();
        let mut header = [0u8; 10];
        c.read_exact(&mut header)
            .unwrap_or_else(|e| panic!("connection {i} not served after the limit rose: {e}"));
    }
    assert!(
        shim.wait_log("accepting connections again", Duration::from_secs(2)),
        "no recovery logged:\n{}",
        shim.log()
    );
    let log = shim.log();
    let warnings = log.matches("level=warning msg=\"accept:").count();
    assert!(
        warnings <= 1,
        "accept failures logged {warnings} times:\n{log}"
    );
}

#[test]
fn a_shim_that_never_gets_a_container_exits_by_itself() {
    // Before: a shim whose containerd failed between `start` and Create (or never sent
    // Shutdown) stayed for ever, with its socket, where a later create of the same group
    // could join it. The bound is 60 s; the test shortens it.
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start_with_env(&id, &["true"], &[("TETHER_IDLE_EXIT_SECS", "1")]);
    assert!(
        shim.wait_shim_exit(Duration::from_secs(10)),
        "the shim with no container still runs"
    );
    let socket = shim.socket().expect("the shim's socket");
    assert!(!socket.exists(), "{} left behind", socket.display());
    assert!(
        shim.wait_log("no container for", Duration::from_secs(2)),
        "{}",
        shim.log()
    );
}

/// Reads one reply frame (header and body) and returns its stream id.
fn read_reply(sock: &mut UnixStream) -> std::io::Result<u32> {
    let mut header = [0u8; 10];
    sock.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    sock.read_exact(&mut vec![0u8; len])?;
    Ok(u32::from_be_bytes(
        header[4..8].try_into().expect("4 bytes"),
    ))
}

/// How long a fresh connection waits for the answer to one `Connect`.
fn round_trip(shim: &DirectShim) -> Duration {
    let began = Instant::now();
    let mut c = connect(shim);
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&frame(1, "containerd.task.v2.Task", "Connect"))
        .unwrap();
    assert_eq!(read_reply(&mut c).expect("an answer to Connect"), 1);
    began.elapsed()
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raises this process's soft limit on open files to `want` with `prlimit` (the shim's
/// `start`, hence the server, inherits it).
fn raise_nofile(want: u64) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={want}:"))
        .status()
        .expect("run prlimit (util-linux)");
    assert!(
        status.success(),
        "prlimit --nofile={want}: the hard limit is lower"
    );
}

#[test]
fn two_thousand_idle_connections_neither_stop_the_shim_nor_grow_it() {
    // Measured here (release build): +0.45 MiB RSS for 2,000 idle connections, and a new
    // client answered in 0.3 ms with them open. The Go shim was not measured this way.
    const IDLE: usize = 2000;
    raise_nofile(IDLE as u64 + 256);
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    round_trip(&shim);
    let before = rss_kib(pid);
    let idle: Vec<UnixStream> = (0..IDLE).map(|_| connect(&shim)).collect();
    // Every one accepted (the kernel's backlog holds only a few hundred).
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) < IDLE && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        open_fds(pid) >= IDLE,
        "the shim holds {} fds",
        open_fds(pid)
    );
    let took = round_trip(&shim);
    let after = rss_kib(pid);
    eprintln!(
        "{IDLE} idle connections: shim RSS {before} -> {after} KiB, a new client answered in {took:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "a new client waited {took:?}"
    );
    assert!(
        after < before + 4 * 1024,
        "shim RSS grew from {before} KiB to {after} KiB with {IDLE} idle connections"
    );
    drop(idle);
    // Closed connections are dropped: their descriptors come back.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(open_fds(pid) <= 64, "{} fds still open", open_fds(pid));
    round_trip(&shim);
}

#[test]
fn a_slow_loris_client_does_not_hold_up_the_others() {
    // A client that sends its frame one byte per 100 ms: the shim reads what is there and
    // goes on serving; the slow frame is answered when it is complete. (The Go shim gives
    // each connection its own goroutine, so it is not held up either.)
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let request = frame(7, "containerd.task.v2.Task", "Connect");
    let mut loris = connect(&shim);
    loris
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let sender = {
        let mut w = loris.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in request {
                w.write_all(&[b]).expect("send one byte");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    while !sender.is_finished() {
        slowest = slowest.max(round_trip(&shim));
        served += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    sender.join().unwrap();
    eprintln!("{served} clients served during the slow frame, the slowest in {slowest:?}");
    assert!(
        served >= 10,
        "only {served} clients served in the slow frame's time"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a client waited {slowest:?}"
    );
    assert_eq!(read_reply(&mut loris).expect("the slow frame's answer"), 7);
}

/// A tmpfs of `size` mounted on a new dir under `parent`, unmounted when dropped.
struct TinyTmpfs {
    path: std::path::PathBuf,
}

impl TinyTmpfs {
    fn mount(parent: &std::path::Path, size: &str) -> Self {
        let path = parent.join("full");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", path.display());
        TinyTmpfs { path }
    }

    /// Writes a file until the file system is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.path.join("filler")).unwrap();
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for TinyTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Processes whose working directory is `dir` (the shim server runs in its bundle).
fn processes_in(dir: &std::path::Path) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .collect()
}

#[test]
fn start_on_a_full_state_disk_leaves_no_shim_and_no_socket() {
    // Before: writing `shim.pid` failed after the server was spawned, and the server ran
    // on, its socket in place (37 of 90 creates with a full state disk left one), where a
    // later create of the same group would join it. The Go shim (containerd's shim
    // library) fails the same way: it removes the socket and kills the server.
    tether_tests::require::root();
    let dir = tempfile::Builder::new()
        .prefix("td-")
        .tempdir_in("/tmp")
        .unwrap();
    let disk = TinyTmpfs::mount(dir.path(), "64k");
    let bundle = disk.path.clone();
    disk.fill();
    let id = tether_tests::unique_id("full");
    let namespace = format!("{}-x", tether_tests::unique_id("dns"));
    let address = dir.path().join("containerd.sock");
    let out = Command::new(tether_tests::containerd_env::shim_binary())
        .args(["-namespace", &namespace, "-id", &id, "-address"])
        .arg(&address)
        .arg("start")
        .current_dir(&bundle)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the shim's start");
    std::thread::sleep(Duration::from_millis(300));
    let left = processes_in(&bundle);
    for pid in &left {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // The socket containerd's shim library would name: sha256 of address/namespace/id.
    let socket = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}/{namespace}/{id}", address.display()));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        std::path::Path::new("/run/containerd/s").join(hex)
    };
    let socket_left = socket.exists();
    let _ = std::fs::remove_file(&socket);
    assert!(
        !out.status.success(),
        "start succeeded on a full disk: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!(
        "start failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(left.is_empty(), "shim server(s) {left:?} left running");
    assert!(!socket_left, "socket {} left behind", socket.display());
    for name in ["shim.pid", "address"] {
        assert!(!bundle.join(name).exists(), "{name} left in the bundle");
    }
}

/// A `BinaryName` wrapper around the real runc whose `create` fails as runc fails: the
/// error as a JSON line in the `--log` file (which the shim reads, as runc writes it
/// there) and on stderr.
fn failing_runc(dir: &std::path::Path) -> std::path::PathBuf {
    let real = tether_tests::require::tool("runc", "runc");
    let path = dir.join("failing-runc");
    let script = format!(
        "#!/bin/sh\n\
         log=/dev/null; prev=\n\
         for a in \"$@\"; do\n\
         \x20 [ \"$prev\" = --log ] && log=$a\n\
         \x20 case \"$a\" in create|run)\n\
         \x20   msg='injected failure: no space left on device'\n\
         \x20   printf '{{\"level\":\"error\",\"msg\":\"%s\",\"time\":\"2026-01-01T00:00:00Z\"}}\\n' \"$msg\" >>\"$log\"\n\
         \x20   echo \"$msg\" >&2; exit 1 ;;\n\
         \x20 esac\n\
         \x20 prev=$a\n\
         done\n\
         exec {} \"$@\"\n",
        real.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn runc_containers(state_dir: &std::path::Path) -> String {
    let out = Command::new(tether_tests::require::tool("runc", "runc"))
        .arg("--root")
        .arg(state_dir)
        .args(["list", "-q"])
        .output()
        .expect("runc list");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mounted_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&dir))
        .map(str::to_owned)
        .collect()
}

#[test]
fn create_with_a_missing_or_failing_runc_fails_clearly_and_leaves_nothing() {
    // The Go shim answers both with the error runc (or exec) gave, and leaves no container
    // and no rootfs mount; a Shutdown then ends the shim.
    use containerd_shim_protos::api;
    use tether_tests::direct_shim::ctx;
    for case in ["missing", "failing"] {
        let id = tether_tests::unique_id("fault");
        let shim = DirectShim::start(&id, &["true"]);
        let (binary, expect) = match case {
            "missing" => (shim.dir().join("no-such-runc"), "no-such-runc"),
            _ => (failing_runc(shim.dir()), "injected failure"),
        };
        let mut create = api::CreateTaskRequest::new();
        create.id = id.clone();
        create.bundle = shim.bundle().to_string_lossy().into_owned();
        create.options = Some(shim.options(&binary)).into();
        let err = shim
            .client()
            .create(ctx(), &create)
            .expect_err("Create with a runc that cannot create");
        let message = format!("{err:?}");
        eprintln!("{case} runc: {message}");
        assert!(
            message.contains(expect),
            "{case} runc: unclear error {message}"
        );
        let mut state = api::StateRequest::new();
        state.id = id.clone();
        assert!(
            shim.client().state(ctx(), &state).is_err(),
            "{case}: a task is left"
        );
        assert_eq!(
            runc_containers(&shim.runc_state_dir()),
            "",
            "{case}: a runc container is left"
        );
        assert_eq!(
            mounted_under(&shim.bundle()),
            Vec::<String>::new(),
            "{case}: mounts left"
        );
        shim.client()
            .shutdown(ctx(), &api::ShutdownRequest::new())
            .expect("Shutdown");
        assert!(
            shim.wait_shim_exit(Duration::from_secs(10)),
            "{case}: shim runs on"
        );
        let socket = shim.socket().expect("socket");
        assert!(!socket.exists(), "{case}: socket {} left", socket.display());
    }
}

#[test]
fn a_runtime_that_says_why_only_on_stderr_is_quoted() {
    // A BinaryName that fails create writing its reason to stderr and nothing to log.json
    // (a wrapper script, a runtime failing before its logging is set up): the error says
    // why, with a terminal (runc's stderr is then no process's) and without (the stderr
    // pipe holds only the runtime's words when create fails), not just "exit status 1".
    use containerd_shim_protos::api;
    use tether_tests::direct_shim::ctx;
    const REASON: &str = "my-runtime: cannot frobnicate the bundle";
    for terminal in [false, true] {
        let id = tether_tests::unique_id("stderr");
        let shim = DirectShim::start(&id, &["true"]);
        let binary = shim.dir().join("stderr-runc");
        std::fs::write(
            &binary,
            format!("#!/bin/sh\necho 'starting up' >&2\necho '{REASON}' >&2\nexit 1\n"),
        )
        .expect("write the runtime");
        std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("make the runtime executable");
        let mut create = api::CreateTaskRequest::new();
        create.id = id.clone();
        create.bundle = shim.bundle().to_string_lossy().into_owned();
        create.options = Some(shim.options(&binary)).into();
        create.terminal = terminal;
        if !terminal {
            let fifo = shim.dir().join("stderr.fifo");
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
            create.stderr = fifo.to_string_lossy().into_owned();
        }
        let err = shim
            .client()
            .create(ctx(), &create)
            .expect_err("Create with a failing runtime");
        let message = format!("{err:?}");
        assert!(
            message.contains(REASON),
            "terminal {terminal}: the runtime's reason is lost: {message}"
        );
        shim.client()
            .shutdown(ctx(), &api::ShutdownRequest::new())
            .expect("Shutdown");
        assert!(shim.wait_shim_exit(Duration::from_secs(10)), "shim runs on");
    }
}

/// Children of `pid` that are zombies (exited, not reaped).
fn zombie_children(pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let rest: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            rest.first() == Some(&"Z") && rest.get(1) == Some(&pid.to_string().as_str())
        })
        .collect()
}

#[test]
fn a_thousand_execs_leave_no_growth_and_no_zombies() {
    // Bounds: fds back to where they were, threads too once idle workers have exited (10 s),
    // RSS within +1 MiB of its level after a warm-up, no zombie. The probe measured +28 KiB over 1,000 execs (the Go shim
    // +0.3 MiB). TETHER_SOAK_EXECS overrides the count.
    use containerd_shim_protos::api;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use tether_tests::direct_shim::ctx;
    let execs: usize = std::env::var("TETHER_SOAK_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let id = tether_tests::unique_id("soak");
    let shim = DirectShim::start(&id, &["sleep", "600"]);
    let pid = shim.shim_pid().expect("shim pid");
    let runc = tether_tests::require::tool("runc", "runc");
    shim.create_and_start(&id, shim.options(&runc));
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shim.bundle().join("config.json")).unwrap()).unwrap();
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(["true"]);
    let process = serde_json::to_vec(&process).unwrap();
    let exec_once = |n: usize| {
        let exec_id = format!("e{n}");
        let mut exec = api::ExecProcessRequest::new();
        exec.id = id.clone();
        exec.exec_id = exec_id.clone();
        let mut any = Any::new();
        any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
        any.value = process.clone();
        exec.spec = Some(any).into();
        shim.client().exec(ctx(), &exec).expect("Exec");
        let mut start = api::StartRequest::new();
        start.id = id.clone();
        start.exec_id = exec_id.clone();
        shim.client().start(ctx(), &start).expect("Start the exec");
        let mut wait = api::WaitRequest::new();
        wait.id = id.clone();
        wait.exec_id = exec_id.clone();
        let status = shim.client().wait(ctx(), &wait).expect("Wait").exit_status;
        assert_eq!(status, 0, "exec {n} exited {status}");
        let mut delete = api::DeleteRequest::new();
        delete.id = id.clone();
        delete.exec_id = exec_id;
        shim.client()
            .delete(ctx(), &delete)
            .expect("Delete the exec");
    };
    // An exec's descriptors close in the loop turn that answered its Delete, right after
    // the reply (`Shim::retired`): a call answered after it comes after them.
    let settle = || {
        let mut connect = api::ConnectRequest::new();
        connect.id = id.clone();
        shim.client().connect(ctx(), &connect).expect("Connect");
    };
    for n in 0..20 {
        exec_once(n);
    }
    settle();
    let (fds, thr, rss) = (open_fds(pid), threads(pid), rss_kib(pid));
    let began = Instant::now();
    for n in 20..20 + execs {
        exec_once(n);
    }
    let took = began.elapsed();
    // Workers beyond the first exit after 10 s without work: wait for them.
    let deadline = Instant::now() + Duration::from_secs(15);
    while threads(pid) > thr && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    settle();
    let (fds2, thr2, rss2) = (open_fds(pid), threads(pid), rss_kib(pid));
    let zombies = zombie_children(pid);
    eprintln!(
        "{execs} execs in {took:?}: fds {fds} -> {fds2}, threads {thr} -> {thr2}, RSS {rss} -> {rss2} KiB"
    );
    assert!(fds2 <= fds, "fds grew from {fds} to {fds2}");
    assert!(thr2 <= thr, "threads grew from {thr} to {thr2}");
    assert!(rss2 <= rss + 1024, "RSS grew from {rss} KiB to {rss2} KiB");
    assert!(zombies.is_empty(), "zombie children {zombies:?}");
    shim.kill_delete_and_shut_down(&id);
}

#[test]
fn a_burst_of_ten_thousand_calls_leaves_the_shim_near_its_resting_size() {
    // The probe saw 6-9 MiB stay resident after a burst of 10,000 calls: replies queued
    // without bound and up to 70 threads (stacks, arenas). With both bounded, measured on
    // the release build (`make build`): resting 1.9-2.0 MiB, +0.36-0.7 MiB after 10,000
    // pipelined State/Pids/Stats/Delete/unknown calls, and it stays: glibc's brk heap grew
    // from 136 to ~680 KiB to serve the burst and is fragmented by allocations still live
    // at its top (`malloc_trim(0)` returns ~180 KiB of it; closing the connection nothing
    // more: the connection's buffers already shrink after a burst). The bound here, 2 MiB,
    // also holds for the debug build (+0.7 MiB).
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let pid = shim.shim_pid().expect("shim pid");
    round_trip(&shim);
    std::thread::sleep(Duration::from_millis(200));
    let resting = rss_kib(pid);
    let mut sock = connect(&shim);
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let calls = 10_000u32;
    let writer = {
        let mut w = sock.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..calls {
                let method = ["State", "Pids", "Stats", "NoSuchMethod"][i as usize % 4];
                if w.write_all(&frame(2 * i + 1, "containerd.task.v2.Task", method))
                    .is_err()
                {
                    return;
                }
            }
        })
    };
    for _ in 0..calls {
        read_reply(&mut sock).expect("an answer to each call");
    }
    writer.join().unwrap();
    drop(sock);
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(pid);
    eprintln!("{calls} calls: shim RSS {resting} -> {after} KiB");
    assert!(
        after < resting + 2 * 1024,
        "shim RSS {resting} KiB at rest, {after} KiB after {calls} calls"
    );
}

#[test]
fn a_hanging_runc_create_holds_up_no_other_call_and_leaves_nothing() {
    // runc `create` that hangs (then fails): the caller's deadline passes, the shim goes on
    // answering other calls, and once runc is gone nothing is left. (The Go shim kills runc
    // when the call's ttrpc deadline passes: go-runc runs it under the request's context.
    // tether does the same since its deadlines, `shim_deadline`; the wrapper also gives up
    // by itself, after 30 s, should that ever stop.)
    use containerd_shim_protos::api;
    use tether_tests::direct_shim::ctx;
    use tether_tests::direct_shim::pid_alive;
    use tether_tests::runc_gate::eventually;
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let real = tether_tests::require::tool("runc", "runc");
    let hanging = shim.dir().join("hanging-runc");
    let reached = shim.dir().join("hanging-runc.reached");
    // The mark (the hanging wrapper's pid) is renamed into place once it hangs, so the test
    // knows Create has reached runc; the hang is a foreground `sleep` (a child of runc, as
    // its own would be).
    std::fs::write(
        &hanging,
        format!(
            "#!/bin/sh\n\
             for a in \"$@\"; do case \"$a\" in create|run) \
             echo $$ >{mark}.tmp && mv {mark}.tmp {mark}; sleep 30; \
             echo 'injected hang' >&2; exit 1 ;; esac; done\n\
             exec {real} \"$@\"\n",
            mark = reached.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &hanging,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut create = api::CreateTaskRequest::new();
    create.id = id.clone();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    create.options = Some(shim.options(&hanging)).into();
    let began = Instant::now();
    let creator = {
        let client = shim.client().clone();
        std::thread::spawn(move || {
            let short = containerd_shim_protos::ttrpc::context::with_timeout(
                i64::try_from(Duration::from_secs(2).as_nanos()).unwrap(),
            );
            client.create(short, &create)
        })
    };
    // Create is in runc now, hanging.
    let wrapper: i32 = {
        let mut pid = None;
        assert!(
            eventually(Duration::from_secs(30), || {
                pid = std::fs::read_to_string(&reached)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                pid.is_some()
            }),
            "Create never reached runc:\n{}",
            shim.log()
        );
        pid.unwrap()
    };
    // Other calls are answered while runc hangs.
    let took = round_trip(&shim);
    assert!(
        took < Duration::from_secs(1),
        "Connect waited {took:?} behind a hanging runc"
    );
    let result = creator.join().unwrap();
    let waited = began.elapsed();
    assert!(result.is_err(), "Create with a hanging runc succeeded");
    assert!(
        waited < Duration::from_secs(4),
        "the caller waited {waited:?} past its deadline"
    );
    eprintln!(
        "hanging runc: Create gave up after {waited:?}: {:?}",
        result.err()
    );
    // Once runc is gone (killed at the deadline, or given up): no task, no container, no
    // mount.
    assert!(
        eventually(Duration::from_secs(60), || !pid_alive(wrapper)),
        "the hanging runc {wrapper} still runs"
    );
    let mut state = api::StateRequest::new();
    state.id = id.clone();
    let nothing_left = || {
        shim.client().state(ctx(), &state).is_err()
            && runc_containers(&shim.runc_state_dir()).is_empty()
            && mounted_under(&shim.bundle()).is_empty()
    };
    // What the failed Create undoes is undone before it answers; the poll only covers a
    // runc that gave up by itself after the answer.
    eventually(Duration::from_secs(10), nothing_left);
    assert!(
        shim.client().state(ctx(), &state).is_err(),
        "a task is left"
    );
    assert_eq!(
        runc_containers(&shim.runc_state_dir()),
        "",
        "a runc container is left"
    );
    assert_eq!(
        mounted_under(&shim.bundle()),
        Vec::<String>::new(),
        "mounts left"
    );
    shim.client()
        .shutdown(ctx(), &api::ShutdownRequest::new())
        .expect("Shutdown");
    assert!(
        shim.wait_shim_exit(Duration::from_secs(10)),
        "the shim runs on"
    );
}

#[test]
fn a_bad_container_id_is_named_as_a_container_id() {
    // Before: "process id \"../x\" is invalid", for a container id.
    use containerd_shim_protos::api;
    let id = tether_tests::unique_id("fault");
    let shim = DirectShim::start(&id, &["true"]);
    let mut create = api::CreateTaskRequest::new();
    create.id = "../x".into();
    create.bundle = shim.bundle().to_string_lossy().into_owned();
    let err = shim
        .client()
        .create(tether_tests::direct_shim::ctx(), &create)
        .expect_err("a container id with a slash");
    let text = err.to_string();
    assert!(
        text.contains("container id") && text.contains("../x") && text.contains("is invalid"),
        "{text}"
    );
}
