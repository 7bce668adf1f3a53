//! One container's life through one shim, every call timed: what a round of the shim
//! bench measures.

use super::clock::{now_ns, threads_cpu_ns};
use super::fake_events::FakeEvents;
use super::proc_events::PidTimes;
use super::proc_events::ProcEvents;
use super::runc_log::{runc_within, RuncRun, RuncTimer};
use super::split::{runtimes_within, Split};
use super::taskstats::{TaskStats, UserSystem};
use super::wire_client::{BenchClient, ClientKind};
use crate::direct_shim::DirectShim;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

/// The calls of a lifecycle, in the order they are made (the table's lines).
pub const CALLS: &[&str] = &[
    "start (subcommand)",
    "Create",
    "Start",
    "State",
    "Exec",
    "Start (exec)",
    "Wait (exec)",
    "Delete (exec)",
    "Stats",
    "Pids",
    "Kill",
    "Wait",
    "Delete",
    "Shutdown",
    "delete (subcommand)",
];

/// One timed call: its latency, the time runc ran inside it (ns), and the split of the
/// shim's own share when the server started one runtime in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallSample {
    /// Index into [`CALLS`].
    pub call: usize,
    /// From sending the request to having the reply (or the subcommand's exit).
    pub latency_ns: u64,
    /// The part of it during which runc ran.
    pub runc_ns: u64,
    /// How many runtimes the shim server forked within the call (the kernel's fork events).
    pub runtimes: usize,
    /// The call split at the kernel's stamps of that runtime, when there was exactly one.
    pub split: Option<Split>,
}

/// The bench's pacing before one call: from the reply of the call before it on the same
/// connection (or from the connection's opening, for the first) to this call's request
/// (ns): the bench's own work between calls, during which the shim waits for the next
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallGap {
    /// Index into [`CALLS`] (a server call: not a subcommand).
    pub call: usize,
    /// The gap (ns).
    pub gap_ns: u64,
}

/// The Kill (SIGKILL) and the Wait after it, split at the kernel's stamp of the init's
/// exit: how long the container took to die once the Kill was sent (runc's run is inside it
/// when the shim runs `runc kill`), and how long the shim then took to answer the Wait (its
/// reaction to the exit: the reap, the output's end, the exit reported, the reply), which is
/// what a Wait's latency holds of the shim's when the exit comes inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillExit {
    /// The Kill sent → the init's exit (ns).
    pub to_exit_ns: u64,
    /// The later of the Wait's request and the init's exit → the Wait's reply (ns).
    pub wait_after_exit_ns: u64,
    /// The Kill sent → the Wait's reply: from SIGKILL asked to the exit known (ns).
    pub kill_to_wait_reply_ns: u64,
}

impl KillExit {
    /// The split from the Kill's and the Wait's spans `(from, to)` and the init's exit
    /// stamp (ns, the same clock); `None` unless the exit is after the Kill was sent and
    /// before the Wait was answered.
    pub fn of(kill: (u64, u64), wait: (u64, u64), exit_ns: u64) -> Option<KillExit> {
        if !(kill.0 <= exit_ns && exit_ns <= wait.1) {
            return None;
        }
        Some(KillExit {
            to_exit_ns: exit_ns - kill.0,
            wait_after_exit_ns: wait.1 - wait.0.max(exit_ns),
            kill_to_wait_reply_ns: wait.1 - kill.0,
        })
    }
}

/// What one lifecycle measured.
#[derive(Debug, Clone, Default)]
pub struct LifecycleSample {
    /// Every call, in order (execs repeated).
    pub calls: Vec<CallSample>,
    /// The gap before each server call, in order (the Stats called again are not timed
    /// calls, but the gap after them is measured from the last one's reply).
    pub gaps: Vec<CallGap>,
    /// The shim server's own CPU time from its start to just before Shutdown (ns).
    pub server_cpu_ns: u64,
    /// The server's own CPU time for each exec (Exec, its Start, Wait and Delete) (ns).
    pub exec_cpu_ns: Vec<u64>,
    /// The server's user and system time as the kernel's ticks sampled it ([`TaskStats`],
    /// ns), from its first call to just before Shutdown: a few ticks per lifecycle, so
    /// only their ratio summed over many lifecycles says something.
    pub server_ticks: UserSystem,
    /// The same over all of this lifecycle's execs (Exec, its Start, Wait and Delete).
    pub exec_ticks: UserSystem,
    /// The `start` subcommand's CPU time (ns).
    pub start_cpu_ns: u64,
    /// The `delete` subcommand's own CPU time: with its children, less runc's and the
    /// timer's (ns).
    pub delete_cpu_ns: u64,
    /// runc's CPU time over the whole lifecycle (ns).
    pub runc_cpu_ns: u64,
    /// The server's own CPU time per Stats call after the first (ns; the mean over
    /// [`Bench::stats_again`] calls; none when 0): containerd 2.x's CRI asks every
    /// container's Stats once a second.
    pub stats_again_cpu_ns: Option<u64>,
    /// The latency of each of those calls (ns).
    pub stats_again_ns: Vec<u64>,
    /// The container's end after the Kill, split at the kernel's stamp of its init's exit
    /// (none when the kernel's exit event was not read).
    pub kill_exit: Option<KillExit>,
    /// Events the shim published.
    pub events: u64,
    /// runc runs whose exec and exit the kernel's process events did not give (their
    /// span is the timer's own then; 0 unless events were lost).
    pub runs_without_kernel_span: u64,
}

/// What a lifecycle needs: the shim binary, runc behind its timer, the events service.
pub struct Bench<'a> {
    /// The timer every runc goes through (its log is read after each lifecycle).
    pub timer: &'a mut RuncTimer,
    /// Where the shims publish events.
    pub events: &'a FakeEvents,
    /// Execs per lifecycle.
    pub execs: usize,
    /// The kernel's process events: when each runtime the shims spawned was exec'd and
    /// when it exited (runc's part of a call).
    pub proc_events: &'a ProcEvents,
    /// Stats calls after the first, per lifecycle.
    pub stats_again: usize,
    /// The runtime to name as `BinaryName` instead of the timer (the real runc: what the
    /// shims execute is then runc itself). runc's part comes from the kernel's stamps
    /// alone then (the runtimes the server and the `delete` subcommand forked), and
    /// runc's CPU is not known (0; `delete`'s CPU includes its runc's).
    pub direct_runtime: Option<&'a Path>,
    /// Where the server's user and system ticks are read.
    pub taskstats: &'a mut TaskStats,
    /// How the timed calls are sent ([`ClientKind`]).
    pub client: ClientKind,
    /// Each server call is preceded by an untimed `Connect` (`BENCH_SHIM_SETTLE`): what
    /// the previous call left running on the machine when it answered (runc's and the
    /// container's processes ending or starting, the shim's own work after a reply, an
    /// event on its way) then falls on that `Connect`, not on the call, which is timed
    /// alone. For telling a call's own cost from the previous call's tail; the CPU figures
    /// then include the `Connect`s.
    pub settle: bool,
}

/// How long to wait for the kernel's report of a runtime's exit once the lifecycle is
/// over (it was queued before the shim could reap the runtime).
const EXIT_EVENT_WAIT: Duration = Duration::from_secs(2);

/// A call's timeout: a lifecycle that hangs fails the bench instead.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Bench<'_> {
    /// Runs one container (busybox `sleep`) through `shim_binary` from `start` to the
    /// `delete` subcommand, timing each call. Panics (failing the bench) when a call fails.
    pub fn lifecycle(&mut self, shim_binary: &Path, id: &str) -> LifecycleSample {
        let env_addr = self.events.address();
        let env = [("TTRPC_ADDRESS", env_addr.as_str())];
        let events_before = self.events.requests();
        let _ = self.timer.take_new();
        let mut out = LifecycleSample::default();
        let mut spans: Vec<(usize, u64, u64)> = Vec::new();

        let t0 = now_ns();
        let shim = DirectShim::start_binary(shim_binary, id, &["sleep", "3600"], &env);
        let started = shim.started();
        // The bundle is built inside start_binary: the subcommand's own time is `took`.
        let took = u64::try_from(started.took.as_nanos()).unwrap_or(u64::MAX);
        spans.push((0, t0, t0 + took));
        out.start_cpu_ns = u64::try_from(started.cpu.as_nanos()).unwrap_or(u64::MAX);
        let pid = shim.shim_pid().expect("the shim wrote shim.pid");
        let ticks_at_start = self.taskstats.user_system(pid).unwrap_or_default();
        let mut client = BenchClient::connect(
            self.client,
            shim.socket().expect("the shim's socket"),
            CALL_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", shim_binary.display()));
        // When the last reply came (at first: when the connection opened), for the gaps.
        let last_reply = Cell::new(now_ns());
        let mut gaps = Vec::new();
        let why = |what: &str, e: &dyn std::fmt::Display| {
            format!("{} {what}: {e}\n{}", shim_binary.display(), shim.log())
        };
        let settle = self.settle;
        let mut connect = api::ConnectRequest::new();
        connect.id = id.into();
        let mut timed =
            |client: &mut BenchClient, call: usize, f: &mut dyn FnMut(&mut BenchClient)| {
                let server_call = call != 0 && call != CALLS.len() - 1;
                if settle && server_call {
                    client
                        .call::<_, api::ConnectResponse>("Connect", &connect, CALL_TIMEOUT)
                        .unwrap_or_else(|e| panic!("{}", why("Connect (settling)", &e)));
                    last_reply.set(now_ns());
                }
                let from = now_ns();
                if server_call {
                    let gap_ns = from.saturating_sub(last_reply.get());
                    gaps.push(CallGap { call, gap_ns });
                }
                f(client);
                let to = now_ns();
                spans.push((call, from, to));
                if server_call {
                    last_reply.set(to);
                }
            };

        let mut create = api::CreateTaskRequest::new();
        create.id = id.into();
        create.bundle = shim.bundle().to_string_lossy().into_owned();
        let runtime = self.direct_runtime.unwrap_or(self.timer.path());
        create.options = Some(shim.options(runtime)).into();
        timed(&mut client, 1, &mut |client| {
            client
                .call::<_, api::CreateTaskResponse>("Create", &create, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Create", &e)));
        });
        let mut start = api::StartRequest::new();
        start.id = id.into();
        let mut init_pid = 0;
        timed(&mut client, 2, &mut |client| {
            init_pid = client
                .call::<_, api::StartResponse>("Start", &start, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Start", &e)))
                .pid;
        });
        let mut state = api::StateRequest::new();
        state.id = id.into();
        timed(&mut client, 3, &mut |client| {
            client
                .call::<_, api::StateResponse>("State", &state, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("State", &e)));
        });
        for n in 0..self.execs {
            let exec_id = format!("e{n}");
            let before = threads_cpu_ns(pid).unwrap_or(0);
            let ticks_before = self.taskstats.user_system(pid).unwrap_or_default();
            let mut exec = api::ExecProcessRequest::new();
            exec.id = id.into();
            exec.exec_id = exec_id.clone();
            exec.spec = Some(shim.exec_spec(&["/bin/true"], false)).into();
            timed(&mut client, 4, &mut |client| {
                client
                    .call::<_, Empty>("Exec", &exec, CALL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{}", why("Exec", &e)));
            });
            let mut start = api::StartRequest::new();
            start.id = id.into();
            start.exec_id = exec_id.clone();
            timed(&mut client, 5, &mut |client| {
                client
                    .call::<_, api::StartResponse>("Start", &start, CALL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{}", why("Start (exec)", &e)));
            });
            let mut wait = api::WaitRequest::new();
            wait.id = id.into();
            wait.exec_id = exec_id.clone();
            timed(&mut client, 6, &mut |client| {
                client
                    .call::<_, api::WaitResponse>("Wait", &wait, CALL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{}", why("Wait (exec)", &e)));
            });
            let mut delete = api::DeleteRequest::new();
            delete.id = id.into();
            delete.exec_id = exec_id;
            timed(&mut client, 7, &mut |client| {
                client
                    .call::<_, api::DeleteResponse>("Delete", &delete, CALL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{}", why("Delete (exec)", &e)));
            });
            let after = threads_cpu_ns(pid).unwrap_or(0);
            out.exec_cpu_ns.push(after.saturating_sub(before));
            let ticks = self
                .taskstats
                .user_system(pid)
                .unwrap_or_default()
                .since(ticks_before);
            out.exec_ticks = out.exec_ticks.plus(ticks);
        }
        let mut stats = api::StatsRequest::new();
        stats.id = id.into();
        timed(&mut client, 8, &mut |client| {
            client
                .call::<_, api::StatsResponse>("Stats", &stats, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Stats", &e)));
        });
        if self.stats_again > 0 {
            let before = threads_cpu_ns(pid).unwrap_or(0);
            for _ in 0..self.stats_again {
                let from = now_ns();
                client
                    .call::<_, api::StatsResponse>("Stats", &stats, CALL_TIMEOUT)
                    .unwrap_or_else(|e| panic!("{}", why("Stats (again)", &e)));
                let to = now_ns();
                out.stats_again_ns.push(to.saturating_sub(from));
                last_reply.set(to);
            }
            let spent = threads_cpu_ns(pid).unwrap_or(0).saturating_sub(before);
            out.stats_again_cpu_ns = Some(spent / self.stats_again as u64);
        }
        let mut pids = api::PidsRequest::new();
        pids.id = id.into();
        timed(&mut client, 9, &mut |client| {
            client
                .call::<_, api::PidsResponse>("Pids", &pids, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Pids", &e)));
        });
        let mut kill = api::KillRequest::new();
        kill.id = id.into();
        kill.signal = 9;
        timed(&mut client, 10, &mut |client| {
            client
                .call::<_, Empty>("Kill", &kill, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Kill", &e)));
        });
        let mut wait = api::WaitRequest::new();
        wait.id = id.into();
        timed(&mut client, 11, &mut |client| {
            client
                .call::<_, api::WaitResponse>("Wait", &wait, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Wait", &e)));
        });
        let mut delete = api::DeleteRequest::new();
        delete.id = id.into();
        timed(&mut client, 12, &mut |client| {
            client
                .call::<_, api::DeleteResponse>("Delete", &delete, CALL_TIMEOUT)
                .unwrap_or_else(|e| panic!("{}", why("Delete", &e)));
        });
        out.server_cpu_ns = threads_cpu_ns(pid).unwrap_or(0);
        out.server_ticks = self
            .taskstats
            .user_system(pid)
            .unwrap_or_default()
            .since(ticks_at_start);
        let mut shutdown = api::ShutdownRequest::new();
        shutdown.id = id.into();
        timed(&mut client, 13, &mut |client| {
            // The Go shim may exit before its reply is out: containerd ignores that too.
            let _ = client.call::<_, Empty>("Shutdown", &shutdown, CALL_TIMEOUT);
        });
        assert!(
            shim.wait_shim_exit(Duration::from_secs(10)),
            "{} still runs after Shutdown",
            shim_binary.display()
        );
        let mut delete_cpu = 0u64;
        timed(&mut client, 14, &mut |_| {
            let (run, _ok) = shim.delete_subcommand(&env);
            delete_cpu = u64::try_from(run.cpu.as_nanos()).unwrap_or(u64::MAX);
        });
        drop(shim);
        // Every runtime has been reaped: what the kernel said of their threads' exits is
        // queued; read it all.
        self.proc_events.sync(EXIT_EVENT_WAIT);

        let (delete_from, delete_to) = spans
            .last()
            .map(|&(_, from, to)| (from, to))
            .unwrap_or_default();
        // The runtimes the server itself forked (not what they forked), each with its exit.
        let children = self.children_exited(pid, t0, u64::MAX);
        let mut runs = self.timer.take_new();
        if self.direct_runtime.is_some() {
            // The `delete` subcommand is this process's child; its runtimes are its own.
            let me = i32::try_from(std::process::id()).unwrap_or(0);
            let subcommand_runtimes = self
                .children_exited(me, delete_from, delete_to)
                .into_iter()
                .flat_map(|(sub, _)| self.children_exited(sub, delete_from, delete_to));
            runs = children
                .iter()
                .cloned()
                .chain(subcommand_runtimes)
                .filter_map(|(pid, t)| {
                    let (exec, exit) = (t.exec_ns?, t.exit_ns?);
                    Some(RuncRun {
                        verb: "other".into(),
                        start_ns: exec,
                        end_ns: exit,
                        cpu_ns: 0,
                        wrapper_cpu_ns: 0,
                        pid,
                        lived: Some((exec, exit)),
                    })
                })
                .collect();
        }
        for run in runs.iter_mut().filter(|r| r.lived.is_none()) {
            run.lived = self
                .proc_events
                .exited(run.pid, EXIT_EVENT_WAIT)
                .and_then(|t| Some((t.exec_ns?, t.exit_ns?)))
                // The timer's pid execs once (runc runs under a pid of its own).
                .filter(|&(exec, exit)| exec <= run.start_ns && run.end_ns <= exit);
        }
        out.runs_without_kernel_span = runs.iter().filter(|r| r.lived.is_none()).count() as u64;
        let span_of = |call: usize| {
            spans
                .iter()
                .find(|&&(c, _, _)| c == call)
                .map(|&(_, from, to)| (from, to))
        };
        out.kill_exit = i32::try_from(init_pid)
            .ok()
            .and_then(|pid| self.proc_events.exited(pid, EXIT_EVENT_WAIT))
            .and_then(|t| t.exit_ns)
            .zip(span_of(10).zip(span_of(11)))
            .and_then(|(exit, (kill, wait))| KillExit::of(kill, wait, exit));
        self.proc_events.forget_before(t0);
        let inside_delete: u64 = runs
            .iter()
            .filter(|r| r.overlap(delete_from, delete_to) > 0)
            .map(|r| r.cpu_ns + r.wrapper_cpu_ns)
            .sum();
        out.delete_cpu_ns = delete_cpu.saturating_sub(inside_delete);
        out.runc_cpu_ns = runs
            .iter()
            .filter(|r| r.end_ns <= delete_from)
            .map(|r| r.cpu_ns)
            .sum();
        out.calls = spans
            .into_iter()
            .map(|(call, from, to)| {
                // The subcommands' runtimes are not the server's children.
                let server_call = call != 0 && call != CALLS.len() - 1;
                let kids: &[_] = if server_call { &children } else { &[] };
                CallSample {
                    call,
                    latency_ns: to.saturating_sub(from),
                    runc_ns: runc_within(&runs, from, to),
                    runtimes: runtimes_within(from, to, kids),
                    split: Split::of_call(from, to, kids),
                }
            })
            .collect();
        out.events = self.events.requests().saturating_sub(events_before);
        out.gaps = gaps;
        out
    }

    /// The processes `parent` forked within `[from, to]` (ns), each with its exit once the
    /// kernel reported it (waiting for it up to [`EXIT_EVENT_WAIT`]).
    fn children_exited(&self, parent: i32, from: u64, to: u64) -> Vec<(i32, PidTimes)> {
        self.proc_events
            .children_of(parent, from)
            .into_iter()
            .filter(|(_, t)| t.fork_ns.is_some_and(|f| f <= to))
            .map(|(child, t)| {
                let t = self.proc_events.exited(child, EXIT_EVENT_WAIT).unwrap_or(t);
                (child, t)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::KillExit;

    #[test]
    fn an_exit_inside_the_wait_leaves_the_wait_only_its_reaction() {
        // Kill 100..150, Wait 160..900, the init exits at 700.
        let k = KillExit::of((100, 150), (160, 900), 700).expect("a split");
        assert_eq!(
            (k.to_exit_ns, k.wait_after_exit_ns, k.kill_to_wait_reply_ns),
            (600, 200, 800)
        );
    }

    #[test]
    fn an_exit_inside_the_kill_leaves_the_wait_whole() {
        // runc kill 100..8000 (the init exits at 600 inside it), Wait 8010..8500.
        let k = KillExit::of((100, 8000), (8010, 8500), 600).expect("a split");
        assert_eq!(
            (k.to_exit_ns, k.wait_after_exit_ns, k.kill_to_wait_reply_ns),
            (500, 490, 8400)
        );
    }

    #[test]
    fn an_exit_outside_the_two_calls_is_no_split() {
        assert_eq!(KillExit::of((100, 150), (160, 900), 50), None);
        assert_eq!(KillExit::of((100, 150), (160, 900), 901), None);
    }
}
