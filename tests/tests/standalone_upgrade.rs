//! Live upgrade of standalone supervisors (issue 22, the standalone half), with real runc
//! and real containers: `upgrade --depot DIR` moves a supervisor onto another binary and
//! back while its process writes numbered lines as fast as it can and a manager is
//! attached. The supervisor keeps its pid (and its keeper, its parent, notices nothing),
//! `/proc/PID/exe` is the new binary after each step, every line arrives once and in
//! order, a new `attach` after the upgrades works, and the exit code lands in `exitcode`.
//! A binary that refuses the state, one that exits at once, a missing one, one that
//! crashes after `execve` and one that cannot take the state over leave the old image
//! supervising; a pea's supervisor moves too (its outer init's watch and its runc
//! container come along); a supervisor whose process has exited moves and delivers; only
//! root may ask.
//!
//! Every step is ordered by what the test observes (lines counted at the manager, a
//! supervisor's answer, a process's exit); B is a copy of the binary at another path, as
//! in `shim_upgrade`.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tether_tests::standalone_env::{output_bounded, wait_bounded};
use tether_tests::StandaloneEnv;

/// Numbered lines from 0, as fast as the shell goes, until `/stop` exists; then exit 7.
const WRITER: &str = "i=0; while [ ! -e /stop ]; do echo $i; i=$((i+1)); done; exit 7";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The shim under test copied to `dir/NAME/containerd-shim-tether-v2`.
fn copy_of_binary(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("binary dir");
    let path = d.join("containerd-shim-tether-v2");
    std::fs::copy(tether_tests::containerd_env::shim_binary(), &path).expect("copy the shim");
    path
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// `upgrade --depot <depot> args...`, bounded; its exit code and its output lines.
fn upgrade(env: &StandaloneEnv, args: &[&str]) -> (i32, Vec<String>, String) {
    let mut c = Command::new(tether_tests::containerd_env::shim_binary());
    c.arg("upgrade").arg("--depot").arg(env.depot()).args(args);
    let out = output_bounded(c, Duration::from_secs(90));
    let lines = text(&out.stdout).lines().map(str::to_string).collect();
    (out.status.code().unwrap_or(-1), lines, text(&out.stderr))
}

/// The pause a report line names, in ms.
fn pause_ms(line: &str) -> f64 {
    line.rsplit_once("paused ")
        .and_then(|(_, ms)| ms.trim_end_matches(" ms").parse().ok())
        .unwrap_or_else(|| panic!("no pause in {line:?}"))
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn exe_of(pid: i32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).expect("the supervisor's exe")
}

fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_default()
}

/// Gone, or a zombie.
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// A supervisor as the test watches it: its pid, its keeper's, its blocked signals.
struct Watched {
    dir: PathBuf,
    pid: i32,
    keeper: i32,
    blocked: String,
}

impl Watched {
    fn new(env: &StandaloneEnv, id: &str, process: &str) -> Self {
        let dir = env.process_dir(id, process);
        let pid = read_pid(&dir.join("supervisor.pid"));
        let keeper = read_pid(&dir.join("keeper.pid"));
        Watched {
            blocked: status_field(pid, "SigBlk:"),
            dir,
            pid,
            keeper,
        }
    }

    /// The same process, now running `exe`, still the keeper's child, the same blocked
    /// signals.
    fn assert_moved_to(&self, exe: &Path) {
        assert!(
            !dead(self.pid),
            "{}: the supervisor is gone",
            self.dir.display()
        );
        assert_eq!(exe_of(self.pid), exe, "/proc/PID/exe is the new binary");
        assert_eq!(status_field(self.pid, "PPid:"), self.keeper.to_string());
        assert!(!dead(self.keeper), "the keeper is gone");
        assert_eq!(status_field(self.pid, "SigBlk:"), self.blocked);
        assert_eq!(read_pid(&self.dir.join("supervisor.pid")), self.pid);
    }
}

/// A manager attached to a process: `attach` with its stdout read by a thread that
/// counts the lines and the longest wait between two reads.
struct Manager {
    child: Child,
    lines: Arc<AtomicU64>,
    longest_gap: Arc<Mutex<Duration>>,
    reader: JoinHandle<Vec<u8>>,
}

impl Manager {
    fn attach(env: &StandaloneEnv, args: &[&str]) -> Self {
        let mut child = env
            .cmd("attach")
            .arg("--no-stdin")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn attach");
        let mut out = child.stdout.take().unwrap();
        let lines = Arc::new(AtomicU64::new(0));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let (l, g) = (lines.clone(), longest_gap.clone());
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut last: Option<Instant> = None;
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let now = Instant::now();
                        if let Some(t) = last {
                            let mut g = g.lock().unwrap();
                            *g = (*g).max(now - t);
                        }
                        last = Some(now);
                        all.extend_from_slice(&buf[..n]);
                        let newlines = buf[..n].iter().filter(|b| **b == b'\n').count();
                        l.fetch_add(newlines as u64, Ordering::SeqCst);
                    }
                }
            }
            all
        });
        Manager {
            child,
            lines,
            longest_gap,
            reader,
        }
    }

    fn lines(&self) -> u64 {
        self.lines.load(Ordering::SeqCst)
    }

    /// Waits until `more` lines beyond what it has now have arrived.
    fn wait_for_more(&self, more: u64, what: &str) {
        let want = self.lines() + more;
        assert!(
            eventually(Duration::from_secs(60), || self.lines() >= want),
            "{what}: the output stopped at {} lines",
            self.lines()
        );
    }

    fn longest_gap(&self) -> Duration {
        *self.longest_gap.lock().unwrap()
    }

    /// SIGKILLs the manager mid-stream: what it had passed on, its pipe included.
    fn kill(mut self) -> Vec<u8> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.reader.join().unwrap()
    }

    /// Waits for the manager to end (the process's exit): its exit code and all it got.
    fn finish(mut self) -> (Option<i32>, Vec<u8>) {
        let status = wait_bounded(&mut self.child, Duration::from_secs(60));
        (status.and_then(|s| s.code()), self.reader.join().unwrap())
    }
}

/// Checks that `bytes` are the lines 0, 1, 2, ... each once, in order; returns how many.
fn assert_numbered_lines(bytes: &[u8]) -> u64 {
    let text = std::str::from_utf8(bytes).expect("utf-8 output");
    let mut n = 0u64;
    for line in text.lines() {
        assert_eq!(
            line.parse::<u64>().ok(),
            Some(n),
            "line {n} expected, got {line:?}"
        );
        n += 1;
    }
    assert!(text.ends_with('\n'), "a partial last line");
    n
}

fn exit_code_in(dir: &Path) -> i32 {
    fifo::ProcessDir::from_path(dir)
        .unwrap()
        .read_exit()
        .unwrap()
        .expect("exitcode")
        .code
}

#[test]
fn writing_processes_keep_their_supervisors_through_upgrades_with_nothing_lost() {
    let env = StandaloneEnv::new();
    let id = env.id("upg");
    let bundle = env.bundle("b", &["sh", "-c", WRITER]);
    env.run(&id, &bundle);
    // A process with a terminal beside it, which waits for a resize sent after the
    // upgrades (its pty master and its winsz FIFO come along).
    let tty = bundle.exec_process(
        &[
            "sh",
            "-c",
            "while [ \"$(stty size)\" != '37 91' ]; do sleep 0.05; done; echo resized; exit 3",
        ],
        true,
    );
    env.exec(&id, "t", &tty);
    let a = tether_tests::containerd_env::shim_binary();
    let b = copy_of_binary(env.runc_env().dir(), "b");
    let init = Watched::new(&env, &id, "init");
    let t = Watched::new(&env, &id, "t");

    let first = Manager::attach(&env, &[&id]);
    first.wait_for_more(2000, "before the upgrades");
    let mut pauses = Vec::new();
    for round in 0..6 {
        let to = if round % 2 == 0 { &b } else { &a };
        let (code, lines, err) = upgrade(&env, &["--id", &id, "--binary", to.to_str().unwrap()]);
        eprintln!("round {round}: {lines:?}");
        assert_eq!(code, 0, "round {round}: {lines:?} {err}");
        assert_eq!(lines.len(), 2, "one line per supervisor: {lines:?}");
        for line in &lines {
            assert!(line.contains(" -> ") && line.contains("paused"), "{line}");
            pauses.push(pause_ms(line));
        }
        init.assert_moved_to(to);
        t.assert_moved_to(to);
        first.wait_for_more(1000, "after an upgrade");
    }
    let stall = first.longest_gap();
    // A new manager after the upgrades takes over mid-stream.
    let mut got = first.kill();
    let second = Manager::attach(&env, &[&id]);
    second.wait_for_more(1000, "a new attach after the upgrades");
    let (code, lines, err) = upgrade(
        &env,
        &[
            "--id",
            &id,
            "--process",
            "init",
            "--binary",
            a.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{lines:?} {err}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    pauses.push(pause_ms(&lines[0]));
    init.assert_moved_to(&a);
    second.wait_for_more(1000, "after the last upgrade");

    // The terminal's process gets its size through the moved supervisor.
    let mut winsz = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(t.dir.join("winsz"))
        .expect("open winsz");
    std::io::Write::write_all(&mut winsz, b"{\"columns\":91,\"rows\":37}\n").unwrap();
    let out = env.output("attach", &["--no-stdin", &id, "t"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("resized"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(exit_code_in(&t.dir), 3);

    // The writer exits 7: the manager attached after the upgrades gets the rest and the
    // code, `exitcode` has it, and every line came once and in order.
    std::fs::write(bundle.rootfs().join("stop"), "").unwrap();
    let (code, rest) = second.finish();
    assert_eq!(code, Some(7), "attach ends with the exit code");
    got.extend_from_slice(&rest);
    let n = assert_numbered_lines(&got);
    assert_eq!(exit_code_in(&init.dir), 7);
    let wait = env.output("wait", &[&id]);
    assert_eq!(wait.status.code(), Some(7));
    // Everything delivered: the supervisors and keepers leave.
    for w in [&init, &t] {
        assert!(
            eventually(Duration::from_secs(20), || dead(w.pid) && dead(w.keeper)),
            "{}: the supervisor or its keeper stayed",
            w.dir.display()
        );
    }
    pauses.sort_by(f64::total_cmp);
    eprintln!(
        "{n} lines; pause per supervisor upgrade (ms): min {:.1} median {:.1} max {:.1} \
         over {}; longest wait between two reads of the attached manager across 6 upgrades: \
         {stall:?}",
        pauses[0],
        pauses[pauses.len() / 2],
        pauses[pauses.len() - 1],
        pauses.len()
    );
}

#[test]
fn binaries_that_refuse_or_fail_leave_the_old_image_supervising() {
    let env = StandaloneEnv::new();
    let id = env.id("upgno");
    let bundle = env.bundle("b", &["sh", "-c", WRITER]);
    env.run(&id, &bundle);
    let init = Watched::new(&env, &id, "init");
    let a = tether_tests::containerd_env::shim_binary();
    let manager = Manager::attach(&env, &[&id]);
    manager.wait_for_more(1000, "before");
    let dir = env.runc_env().dir();
    let refusals = [
        (
            script(
                dir,
                "refuses",
                "echo 'state format 1 is not one this binary takes over (2 to 2)'; exit 1",
            ),
            "is not one this binary takes over",
        ),
        (script(dir, "exits", "exit 0"), "it said nothing"),
        (
            PathBuf::from("/nonexistent/containerd-shim-tether-v2"),
            "No such file",
        ),
    ];
    for (binary, why) in &refusals {
        let (code, lines, err) = upgrade(&env, &["--all", "--binary", binary.to_str().unwrap()]);
        assert_eq!(code, 1, "{lines:?} {err}");
        assert!(
            lines.len() == 1 && lines[0].contains("refused") && lines[0].contains(why),
            "{lines:?}"
        );
        init.assert_moved_to(&a);
        manager.wait_for_more(1000, "after a refusal");
    }
    // Binaries that take the state and then crash, or fail to take it over: the old image
    // is executed again, with the same state, and supervises on.
    let rollbacks = [
        ("crashes", "abort-after-exec", "signal 6"),
        ("fails", "fail-after-exec", "could not take the state over"),
    ];
    for (name, fault, why) in rollbacks {
        let binary = copy_of_binary(dir, name);
        let (code, lines, err) = upgrade(
            &env,
            &[
                "--all",
                "--binary",
                binary.to_str().unwrap(),
                "--fault",
                fault,
            ],
        );
        assert_eq!(code, 1, "{lines:?} {err}");
        assert!(
            lines.len() == 1 && lines[0].contains("rolled back") && lines[0].contains(why),
            "{lines:?}"
        );
        init.assert_moved_to(&a);
        manager.wait_for_more(1000, "after a rollback");
    }
    // After all that, it still moves.
    let b = copy_of_binary(dir, "b");
    let (code, lines, err) = upgrade(&env, &["--all", "--binary", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{lines:?} {err}");
    init.assert_moved_to(&b);
    std::fs::write(bundle.rootfs().join("stop"), "").unwrap();
    let (code, got) = manager.finish();
    assert_eq!(code, Some(7));
    assert_numbered_lines(&got);
    assert_eq!(exit_code_in(&init.dir), 7);
}

#[test]
fn a_peas_supervisor_moves_with_its_watch_on_the_container() {
    let env = StandaloneEnv::new();
    let id = env.id("upgpea");
    env.run(&id, &env.bundle("outer", &["sleep", "1000"]));
    let pea = env.bundle("pea", &["sh", "-c", WRITER]);
    let out = env.output(
        "exec",
        &[
            "--bundle",
            pea.path().to_str().unwrap(),
            "--share",
            "net",
            "--json",
            &id,
            "p",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sup = Watched::new(&env, &id, "p");
    let manager = Manager::attach(&env, &[&id, "p"]);
    manager.wait_for_more(1000, "before");
    let b = copy_of_binary(env.runc_env().dir(), "b");
    let (code, lines, err) = upgrade(
        &env,
        &[
            "--id",
            &id,
            "--process",
            "p",
            "--binary",
            b.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{lines:?} {err}");
    sup.assert_moved_to(&b);
    manager.wait_for_more(1000, "after the upgrade");
    // The container's init goes: the moved supervisor, watching it, kills the pea (which
    // does not share its pid namespace), records 137, and deletes the pea's runc
    // container.
    env.ok("kill", &["--signal", "KILL", &id]);
    let (code, got) = manager.finish();
    assert_eq!(code, Some(137));
    assert_numbered_lines(&got);
    assert_eq!(exit_code_in(&sup.dir), 137);
    let runc = Command::new(env.runc_env().runc_binary())
        .arg("--root")
        .arg(env.runc_root())
        .args(["list", "-q"])
        .output()
        .unwrap();
    let listed = text(&runc.stdout);
    assert!(
        !listed.lines().any(|l| l == format!("{id}.p")),
        "the pea's runc container is left: {listed}"
    );
}

#[test]
fn a_supervisor_whose_process_has_exited_moves_and_delivers() {
    let env = StandaloneEnv::new();
    let id = env.id("upgexit");
    let bundle = env.bundle("b", &["sh", "-c", "seq 0 49999; exit 5"]);
    env.run(&id, &bundle);
    let init = Watched::new(&env, &id, "init");
    // Nobody reads: the supervisor holds the output after the exit.
    let wait = env.output("wait", &[&id]);
    assert_eq!(wait.status.code(), Some(5));
    assert!(!dead(init.pid), "it lingers until the output is read");
    let b = copy_of_binary(env.runc_env().dir(), "b");
    let (code, lines, err) = upgrade(&env, &["--all", "--binary", b.to_str().unwrap()]);
    assert_eq!(code, 0, "{lines:?} {err}");
    assert_eq!(exe_of(init.pid), b);
    let out = env.output("attach", &["--no-stdin", &id]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(assert_numbered_lines(&out.stdout), 50_000);
    assert!(
        eventually(Duration::from_secs(20), || dead(init.pid)),
        "the supervisor stayed after delivering"
    );
    // Gone supervisors are not asked; one named is named as gone.
    let (code, lines, err) = upgrade(&env, &["--all"]);
    assert_eq!(code, 1, "{lines:?}");
    assert!(err.contains("no running supervisor matches"), "{err}");
    let (code, lines, _) = upgrade(&env, &["--id", &id, "--process", "init"]);
    assert_eq!(code, 1);
    assert!(lines[0].contains("no supervisor runs"), "{lines:?}");
}

#[test]
fn only_root_may_ask() {
    let env = StandaloneEnv::new();
    env.let_others_traverse();
    let id = env.id("upgroot");
    let bundle = env.bundle("b", &["sleep", "1000"]);
    env.run_with(&id, &bundle, &["--io-uid", "65534", "--io-gid", "65534"]);
    let init = Watched::new(&env, &id, "init");
    let sock = init.dir.join("upgrade.sock");
    let meta = std::fs::metadata(&sock).expect("upgrade.sock");
    assert_eq!(
        std::os::unix::fs::MetadataExt::mode(&meta) & 0o777,
        0o600,
        "root's alone, whatever --io-uid gave the manager"
    );
    let as_nobody = |env: &StandaloneEnv| -> Output {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(tether_tests::containerd_env::shim_binary());
        c.args(["upgrade", "--depot"])
            .arg(env.depot())
            .args(["--id", &id, "--process", "init"])
            .uid(65534)
            .gid(65534);
        output_bounded(c, Duration::from_secs(60))
    };
    let out = as_nobody(&env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Permission denied"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Even through a socket anyone may connect to, the supervisor refuses anyone but root.
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let out = as_nobody(&env);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("refused") && text(&out.stdout).contains("only root"),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    init.assert_moved_to(&tether_tests::containerd_env::shim_binary());
}

/// Records the state a supervisor hands over (`tests/fixtures/supervisor-state-v1.json`,
/// the fixture later binaries must take over): a process writing into a spool nobody
/// reads. Run by hand when the format changes:
/// `cargo test -p tether-tests --test standalone_upgrade -- --ignored record`.
#[test]
#[ignore]
fn record_the_state_of_this_format() {
    let env = StandaloneEnv::new();
    let id = env.id("upgrec");
    let bundle = env.bundle("b", &["sh", "-c", "seq 1 400000; sleep 1000"]);
    env.run(&id, &bundle);
    // Spooled: more than the pipes and the FIFO hold.
    let dir = env.process_dir(&id, "init");
    assert!(eventually(Duration::from_secs(30), || {
        std::fs::read_to_string(dir.join("starttime")).is_ok()
    }));
    std::thread::sleep(Duration::from_secs(2));
    let real = tether_tests::containerd_env::shim_binary();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/supervisor-state-v1.json");
    let recorder = script(
        env.runc_env().dir(),
        "recorder",
        &format!(
            "if [ \"$1\" = upgrade-check ]; then tee {} | {} upgrade-check; exit $?; fi; exec {} \"$@\"",
            out.display(),
            real.display(),
            real.display()
        ),
    );
    let (code, lines, err) = upgrade(&env, &["--all", "--binary", recorder.to_str().unwrap()]);
    assert_eq!(code, 0, "{lines:?} {err}");
    eprintln!("recorded {}", out.display());
}
