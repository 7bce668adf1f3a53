//! The shim bench's figures: medians and p90s per call, ratios tether / Go, as a
//! Markdown table and as JSON.

use super::lifecycle::{LifecycleSample, CALLS};
use serde_json::{json, Value};
use std::fmt::Write;

/// Every lifecycle one shim ran (warm-ups excluded).
#[derive(Debug, Clone, Default)]
pub struct ShimRuns {
    /// The name in the table (`tether`, `Go shim`).
    pub name: String,
    /// The binary.
    pub binary: String,
    /// Its lifecycles.
    pub lifecycles: Vec<LifecycleSample>,
}

/// The value at `percent` (0..=100, nearest rank) of `values`; 0 when empty.
pub fn quantile(values: &[u64], percent: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let last = v.len() - 1;
    v[(last * percent.min(100) + 50) / 100]
}

/// One call's samples of one shim: latencies, runc's part, the shim's own part (ns).
struct CallFigures {
    latency: Vec<u64>,
    runc: Vec<u64>,
    own: Vec<u64>,
}

fn call_figures(runs: &ShimRuns, call: usize) -> CallFigures {
    let samples = runs
        .lifecycles
        .iter()
        .flat_map(|l| l.calls.iter())
        .filter(|c| c.call == call);
    let mut f = CallFigures {
        latency: Vec::new(),
        runc: Vec::new(),
        own: Vec::new(),
    };
    for s in samples {
        f.latency.push(s.latency_ns);
        f.runc.push(s.runc_ns);
        f.own.push(s.latency_ns.saturating_sub(s.runc_ns));
    }
    f
}

pub(super) fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

/// A Markdown table's first two lines: the header row of `cells` and the alignment row,
/// the first column to the left and the others to the right (figures).
pub(super) fn table_head(cells: &[String]) -> String {
    let right = cells.len().saturating_sub(1);
    format!(
        "| {} |\n| --- |{}\n",
        cells.join(" | "),
        " ---: |".repeat(right)
    )
}

pub(super) fn ratio(a: u64, b: u64) -> String {
    if b == 0 {
        return "–".into();
    }
    format!("{:.2}×", a as f64 / b as f64)
}

/// Per-lifecycle CPU and event figures of one shim: (label, values in ns or a count).
fn cpu_rows(runs: &ShimRuns) -> Vec<(&'static str, Vec<u64>)> {
    let l = &runs.lifecycles;
    vec![
        (
            "shim CPU per lifecycle (ms; start → Delete)",
            l.iter().map(|s| s.server_cpu_ns).collect(),
        ),
        (
            "shim CPU per exec (ms; Exec, Start, Wait, Delete)",
            l.iter()
                .flat_map(|s| s.exec_cpu_ns.iter().copied())
                .collect(),
        ),
        (
            "shim CPU per Stats called again (ms; the 2nd and later of one container)",
            l.iter().filter_map(|s| s.stats_again_cpu_ns).collect(),
        ),
        (
            "latency of a Stats called again (ms)",
            l.iter()
                .flat_map(|s| s.stats_again_ns.iter().copied())
                .collect(),
        ),
        (
            "SIGKILL → exit known: Kill sent → the Wait after it answered (ms)",
            l.iter()
                .filter_map(|s| s.kill_exit.map(|k| k.kill_to_wait_reply_ns))
                .collect(),
        ),
        (
            "… of it, Kill sent → the init's exit, kernel-stamped (ms; runc kill's run inside when runc is run)",
            l.iter()
                .filter_map(|s| s.kill_exit.map(|k| k.to_exit_ns))
                .collect(),
        ),
        (
            "… of it, the Wait after the later of its request and the init's exit (ms; the shim reacting to the exit)",
            l.iter()
                .filter_map(|s| s.kill_exit.map(|k| k.wait_after_exit_ns))
                .collect(),
        ),
        (
            "`start` subcommand CPU (ms)",
            l.iter().map(|s| s.start_cpu_ns).collect(),
        ),
        (
            "`delete` subcommand CPU, runc's excluded (ms)",
            l.iter().map(|s| s.delete_cpu_ns).collect(),
        ),
        (
            "runc CPU per lifecycle (ms; the floor)",
            l.iter().map(|s| s.runc_cpu_ns).collect(),
        ),
    ]
}

/// The per-call table and the CPU table, Markdown, `a` against `b` (ratios a / b).
pub fn table(a: &ShimRuns, b: &ShimRuns) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| call | {an} p50 / p90 (ms) | {bn} p50 / p90 (ms) | latency {an}/{bn} | runc inside {an} / {bn} (ms) | own share {an} / {bn} (ms) | own {an}/{bn} |",
        an = a.name,
        bn = b.name
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, name) in CALLS.iter().enumerate() {
        let fa = call_figures(a, i);
        let fb = call_figures(b, i);
        let (la, lb) = (quantile(&fa.latency, 50), quantile(&fb.latency, 50));
        let (oa, ob) = (quantile(&fa.own, 50), quantile(&fb.own, 50));
        let _ = writeln!(
            out,
            "| {name} | {} / {} | {} / {} | {} | {} / {} | {} / {} | {} |",
            ms(la),
            ms(quantile(&fa.latency, 90)),
            ms(lb),
            ms(quantile(&fb.latency, 90)),
            ratio(la, lb),
            ms(quantile(&fa.runc, 50)),
            ms(quantile(&fb.runc, 50)),
            ms(oa),
            ms(ob),
            ratio(oa, ob),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| CPU, medians | {an} | {bn} | {an}/{bn} |",
        an = a.name,
        bn = b.name
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    for ((label, va), (_, vb)) in cpu_rows(a).into_iter().zip(cpu_rows(b)) {
        let (ma, mb) = (quantile(&va, 50), quantile(&vb, 50));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} |",
            ms(ma),
            ms(mb),
            ratio(ma, mb)
        );
    }
    let ea: Vec<u64> = a.lifecycles.iter().map(|l| l.events).collect();
    let eb: Vec<u64> = b.lifecycles.iter().map(|l| l.events).collect();
    let _ = writeln!(
        out,
        "| events published per lifecycle | {} | {} | |",
        quantile(&ea, 50),
        quantile(&eb, 50)
    );
    out
}

/// Every sample of both shims, with the medians, as JSON.
pub fn json(runs: &[&ShimRuns], machine: Value) -> Value {
    let shims: Vec<Value> = runs
        .iter()
        .map(|r| {
            let calls: Vec<Value> = CALLS
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let f = call_figures(r, i);
                    json!({
                        "call": name,
                        "latency_ns": f.latency,
                        "runc_ns": f.runc,
                        "own_ns": f.own,
                        "latency_p50_ns": quantile(&f.latency, 50),
                        "latency_p90_ns": quantile(&f.latency, 90),
                        "runc_p50_ns": quantile(&f.runc, 50),
                        "own_p50_ns": quantile(&f.own, 50),
                    })
                })
                .collect();
            let cpu: Vec<Value> = cpu_rows(r)
                .into_iter()
                .map(|(label, v)| json!({"what": label, "ns": v, "p50_ns": quantile(&v, 50)}))
                .collect();
            let events: Vec<u64> = r.lifecycles.iter().map(|l| l.events).collect();
            let ticks = |f: fn(&LifecycleSample) -> super::taskstats::UserSystem| {
                let t: Vec<[u64; 2]> = r
                    .lifecycles
                    .iter()
                    .map(|l| [f(l).user, f(l).system])
                    .collect();
                t
            };
            json!({
                "split": super::split::json(r),
                "server_ticks_user_system": ticks(|l| l.server_ticks),
                "exec_ticks_user_system": ticks(|l| l.exec_ticks),
                "name": r.name,
                "binary": r.binary,
                "lifecycles": r.lifecycles.len(),
                "calls": calls,
                "cpu": cpu,
                "events": events,
            })
        })
        .collect();
    json!({ "machine": machine, "shims": shims })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_take_the_nearest_rank() {
        assert_eq!(quantile(&[], 50), 0);
        assert_eq!(quantile(&[3, 1, 2], 50), 2);
        assert_eq!(quantile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
        assert_eq!(quantile(&[5], 90), 5);
    }

    #[test]
    fn a_table_head_aligns_its_figures_right() {
        let cells = ["call", "a (ms)", "b"].map(String::from);
        assert_eq!(
            table_head(&cells),
            "| call | a (ms) | b |\n| --- | ---: | ---: |\n"
        );
    }
}
