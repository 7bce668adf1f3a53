//! The shims' figures held against the paced floor ([`super::paced_floor`]): per server
//! call, the bench's pacing before it, the floor measured at that pacing, and what each
//! shim's own share (and, for the calls that run the runtime, its (a)+(d)) leaves beyond
//! that floor, with the ratios tether / Go of what is left. The floor a call is held
//! against is the median of the floor calls that replayed that call's gaps (of both shims'
//! lifecycles); beyond it is a difference of medians, clamped at 0.

use super::lifecycle::CALLS;
use super::paced_floor::FloorCall;
use super::report::{ms, quantile, ratio, table_head, ShimRuns};
use super::split::parts;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// The floors the bench measured, over the kept rounds.
#[derive(Debug, Clone, Default)]
pub struct Floors {
    /// The first floor: the median of 50 calls back to back to a thread of the bench (ns).
    pub back_to_back_ns: u64,
    /// Every paced floor call.
    pub paced: Vec<FloorCall>,
    /// The floor server's CPU over all the kept bursts (ns) and the calls they made.
    pub server_cpu_ns: u64,
    /// The calls of those bursts, each burst's untimed first one included.
    pub server_calls: u64,
}

/// What `own_ns` leaves beyond `floor_ns`: never negative; 0 when the floor is as large
/// as the figure or larger (within the noise, the call is all floor).
pub fn beyond(own_ns: u64, floor_ns: u64) -> u64 {
    own_ns.saturating_sub(floor_ns)
}

/// The ratio a / b of what `a_ns` and `b_ns` leave beyond the same floor; `None` when `b_ns`
/// leaves nothing (no ratio), `Some(0.0)` when only `a_ns` does not.
pub fn beyond_ratio(a_ns: u64, b_ns: u64, floor_ns: u64) -> Option<f64> {
    let (a, b) = (beyond(a_ns, floor_ns), beyond(b_ns, floor_ns));
    (b > 0).then(|| a as f64 / b as f64)
}

/// The server calls (not the subcommands): the calls a floor applies to.
fn server_calls() -> std::ops::Range<usize> {
    1..CALLS.len() - 1
}

/// A time in ms with three decimals (the gaps and floors are tens of µs).
fn ms3(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e6)
}

impl Floors {
    /// The paced floor's latencies, of the calls that replayed `call`'s gaps (`None`: all).
    fn paced_at(&self, call: Option<usize>) -> Vec<u64> {
        self.paced
            .iter()
            .filter(|f| call.is_none_or(|c| f.call == c))
            .map(|f| f.latency_ns)
            .collect()
    }

    /// The floor `call` is held against (ns): the median of the floor calls that replayed
    /// its gaps, or of all floor calls when none did.
    pub fn floor_for(&self, call: usize) -> u64 {
        let at = self.paced_at(Some(call));
        if at.is_empty() {
            return quantile(&self.paced_at(None), 50);
        }
        quantile(&at, 50)
    }

    /// The server's own CPU per floor call (ns; 0 when none was made).
    pub fn server_cpu_per_call_ns(&self) -> u64 {
        self.server_cpu_ns
            .checked_div(self.server_calls)
            .unwrap_or(0)
    }
}

/// The gaps before `call` (`None`: before every server call) in both shims' lifecycles.
fn gaps(a: &ShimRuns, b: &ShimRuns, call: Option<usize>) -> Vec<u64> {
    [a, b]
        .iter()
        .flat_map(|r| r.lifecycles.iter())
        .flat_map(|l| l.gaps.iter())
        .filter(|g| call.is_none_or(|c| g.call == c))
        .map(|g| g.gap_ns)
        .collect()
}

/// The two lines printed after the first floor's: the paced floor, said plainly with the
/// first beside it, and the bench's pacing it was measured at.
pub fn lines(floors: &Floors, a: &ShimRuns, b: &ShimRuns) -> String {
    let all = floors.paced_at(None);
    let p50 = quantile(&all, 50);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "the paced floor (a do-nothing server in its own process, epoll, at the bench's pacing: one thread answering each request with an empty reply, called by the same client after each lifecycle with that lifecycle's gaps replayed): p50 {} / p90 {} ms over {} calls, the server's own CPU {} ms per call (a debug build); the line above is the first floor, 50 calls back to back to a thread in this process{}",
        ms3(p50),
        ms3(quantile(&all, 90)),
        all.len(),
        ms3(floors.server_cpu_per_call_ns()),
        if p50 <= floors.back_to_back_ns {
            ": the paced floor is no higher than it"
        } else {
            ""
        }
    );
    let g = gaps(a, b, None);
    let _ = writeln!(
        out,
        "the bench's pacing: from a call's reply to the next request on the connection (the bench's own work between calls, while the shim waits) p50 {} / p90 {} ms over {} gaps of both shims; per call in the table \"beyond the floor\"",
        ms3(quantile(&g, 50)),
        ms3(quantile(&g, 90)),
        g.len()
    );
    out
}

/// The table, Markdown, `a` against `b`: per server call, its gap, its floor, the own
/// shares and what they leave beyond the floor, and the same of (a)+(d) where split.
pub fn table(a: &ShimRuns, b: &ShimRuns, floors: &Floors) -> String {
    let (an, bn) = (&a.name, &b.name);
    let mut out = table_head(&[
        "beyond the floor: call".into(),
        "gap before it, p50 (ms)".into(),
        "paced floor at it, p50 / p90 (ms)".into(),
        format!("own share {an} / {bn} (ms)"),
        format!("own beyond the floor {an} / {bn} (ms)"),
        format!("beyond {an}/{bn}"),
        format!("(a)+(d) beyond the floor {an} / {bn} (ms)"),
        format!("(a)+(d) beyond {an}/{bn}"),
    ]);
    let shown = |r: Option<f64>| r.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×"));
    for call in server_calls() {
        let floor = floors.floor_for(call);
        let at = floors.paced_at(Some(call));
        let (pa, pb) = (parts(a, call), parts(b, call));
        let (oa, ob) = (quantile(&pa.own, 50), quantile(&pb.own, 50));
        let deciding = if pa.ad.is_empty() && pb.ad.is_empty() {
            " | ".to_string()
        } else {
            let (da, db) = (quantile(&pa.ad, 50), quantile(&pb.ad, 50));
            format!(
                "{} / {} | {}",
                ms(beyond(da, floor)),
                ms(beyond(db, floor)),
                shown(beyond_ratio(da, db, floor))
            )
        };
        let _ = writeln!(
            out,
            "| beyond the floor: {} | {} | {} / {} | {} / {} | {} / {} | {} | {deciding} |",
            CALLS[call],
            ms3(quantile(&gaps(a, b, Some(call)), 50)),
            ms3(floor),
            ms3(quantile(&at, 90)),
            ms(oa),
            ms(ob),
            ms(beyond(oa, floor)),
            ms(beyond(ob, floor)),
            ratio(beyond(oa, floor), beyond(ob, floor)),
        );
    }
    let _ = writeln!(
        out,
        "(beyond the floor: the median own share (or (a)+(d)) less the paced floor's median at that call's gaps, clamped at 0: a floor as large as the figure leaves 0)"
    );
    out
}

/// The floors, the pacing and the per-call figures beyond the floor, as JSON (ns).
pub fn json(a: &ShimRuns, b: &ShimRuns, floors: &Floors) -> Value {
    let all = floors.paced_at(None);
    let g = gaps(a, b, None);
    let per_call: Vec<Value> = server_calls()
        .map(|call| {
            let floor = floors.floor_for(call);
            let at = floors.paced_at(Some(call));
            let shims: Vec<Value> = [a, b]
                .iter()
                .map(|r| {
                    let p = parts(r, call);
                    let own = quantile(&p.own, 50);
                    let deciding = (!p.ad.is_empty()).then(|| quantile(&p.ad, 50));
                    json!({
                        "name": r.name,
                        "own_p50_ns": own,
                        "own_beyond_floor_ns": beyond(own, floor),
                        "deciding_p50_ns": deciding,
                        "deciding_beyond_floor_ns": deciding.map(|d| beyond(d, floor)),
                    })
                })
                .collect();
            let (pa, pb) = (parts(a, call), parts(b, call));
            let deciding_ratio = (!pa.ad.is_empty() && !pb.ad.is_empty())
                .then(|| beyond_ratio(quantile(&pa.ad, 50), quantile(&pb.ad, 50), floor))
                .flatten();
            json!({
                "call": CALLS[call],
                "gap_p50_ns": quantile(&gaps(a, b, Some(call)), 50),
                "floor_p50_ns": floor,
                "floor_p90_ns": quantile(&at, 90),
                "floor_calls": at.len(),
                "shims": shims,
                "own_beyond_ratio": beyond_ratio(quantile(&pa.own, 50), quantile(&pb.own, 50), floor),
                "deciding_beyond_ratio": deciding_ratio,
            })
        })
        .collect();
    let samples: Vec<Value> = floors
        .paced
        .iter()
        .map(|f| json!({"call": CALLS[f.call], "gap_ns": f.gap_ns, "latency_ns": f.latency_ns}))
        .collect();
    json!({
        "what": "a do-nothing ttrpc server in its own process (one thread, epoll), called by the bench's client after each lifecycle with that lifecycle's gaps between calls replayed (the client spinning through each)",
        "back_to_back_floor_ns": floors.back_to_back_ns,
        "p50_ns": quantile(&all, 50),
        "p90_ns": quantile(&all, 90),
        "calls": all.len(),
        "server_cpu_per_call_ns": floors.server_cpu_per_call_ns(),
        "gap_p50_ns": quantile(&g, 50),
        "gap_p90_ns": quantile(&g, 90),
        "gaps": g.len(),
        "per_call": per_call,
        "samples": samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beyond_the_floor_is_clamped_at_zero() {
        assert_eq!(beyond(130, 50), 80);
        assert_eq!(beyond(50, 50), 0);
        // A floor larger than the call: the call is all floor, not a negative share.
        assert_eq!(beyond(40, 50), 0);
    }

    #[test]
    fn the_ratio_is_of_what_is_left_and_none_when_the_other_leaves_nothing() {
        assert_eq!(beyond_ratio(110, 170, 50), Some(0.5));
        assert_eq!(beyond_ratio(40, 170, 50), Some(0.0));
        assert_eq!(beyond_ratio(90, 50, 50), None);
        assert_eq!(beyond_ratio(40, 30, 50), None);
    }

    #[test]
    fn a_call_is_held_against_the_floor_at_its_own_gaps() {
        let f = |call, latency_ns| FloorCall {
            call,
            gap_ns: 0,
            latency_ns,
        };
        let floors = Floors {
            paced: vec![f(3, 40), f(3, 60), f(3, 50), f(4, 90)],
            server_cpu_ns: 100,
            server_calls: 4,
            ..Floors::default()
        };
        assert_eq!(floors.floor_for(3), 50);
        assert_eq!(floors.floor_for(4), 90);
        // No floor call replayed call 5's gaps: all of them stand in.
        assert_eq!(floors.floor_for(5), 60);
        assert_eq!(floors.server_cpu_per_call_ns(), 25);
        assert_eq!(Floors::default().server_cpu_per_call_ns(), 0);
    }
}
