#!/usr/bin/env python3
"""Side-by-side critest results of two CRI runtime handlers (runc, tether) over N runs.

usage: compare.py [--handlers "runc tether"] [--markdown]
                  [--known-flaky FILE --containerd VERSION] RUN_DIR...

Each RUN_DIR holds <handler>.json (ginkgo's --json-report of critest) and <handler>.stats
(key=value lines written by critest.sh). A spec is a regression when, in the same run,
it passed for the first handler (the baseline) and not for the second; the exit status
is 1 when there is any, 0 otherwise (2: a report is missing or unreadable). Specs listed
in the known-flaky file for that containerd version (timing-dependent for every handler,
see known-flaky.txt) are reported but not counted.

Printed: one line per spec with each handler's result per run (P passed, F failed,
S skipped, - not run), the regressions with the failure message, the specs failing for
both with the baseline's reason, and a per-run summary (counts, leftovers, seconds).
"""
import argparse
import json
import os
import re
import sys

MARK = {"passed": "P", "failed": "F", "skipped": "S", "pending": "S",
        "panicked": "F", "interrupted": "F", "aborted": "F", "timedout": "F"}


def load_report(path):
    """{spec name: (state, first line of the failure message)} for the It nodes of a report."""
    with open(path) as f:
        suites = json.load(f)
    specs = {}
    for suite in suites:
        for s in suite.get("SpecReports") or []:
            if s.get("LeafNodeType") != "It":
                continue
            name = " ".join([t for t in s.get("ContainerHierarchyTexts") or [] if t] +
                            [s.get("LeafNodeText", "")]).strip()
            msg = ((s.get("Failure") or {}).get("Message") or "").strip()
            specs[name] = (s.get("State", "?"), " ".join(msg.split())[:300])
    return specs


def load_stats(path):
    stats = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                stats[k] = v
    return stats


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--handlers", default="runc tether")
    ap.add_argument("--markdown", action="store_true", help="also print a markdown summary table")
    ap.add_argument("--known-flaky", help="file of timing-dependent specs (known-flaky.txt)")
    ap.add_argument("--containerd", default="", help="containerd version of the runs")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    flaky = []  # (compiled regex, reason)
    if a.known_flaky:
        with open(a.known_flaky) as f:
            for line in f:
                if not line.strip() or line.startswith("#"):
                    continue
                ver, regex, reason = (line.rstrip("\n").split("\t") + ["", ""])[:3]
                if ver == a.containerd:
                    flaky.append((re.compile(regex), reason))
    base, cand = a.handlers.split()[:2]

    results = []  # per run: {handler: specs}
    missing = False
    for run in a.runs:
        r = {}
        for h in (base, cand):
            p = os.path.join(run, h + ".json")
            try:
                r[h] = load_report(p)
            except (OSError, ValueError) as e:
                print("compare: %s: no usable report (%s)" % (p, e))
                r[h] = {}
                missing = True
        results.append(r)

    names = sorted({n for r in results for h in r for n in r[h]})
    width = max([len(n) for n in names] + [10])
    width = min(width, 110)
    print("%-*s  %-*s  %s" % (width, "spec", len(results) + 2, base, cand))
    regressions, tolerated, both_fail = [], [], {}
    for n in names:
        cols = []
        for h in (base, cand):
            cols.append("".join(MARK.get(r[h].get(n, ("-", ""))[0], "?") if n in r[h] else "-"
                                for r in results))
        print("%-*s  %-*s  %s" % (width, n[:width], len(results) + 2, cols[0], cols[1]))
        for i, r in enumerate(results):
            b = r[base].get(n)
            c = r[cand].get(n)
            if b and b[0] == "passed" and (not c or c[0] != "passed"):
                known = [reason for rx, reason in flaky if rx.search(n)]
                if known:
                    tolerated.append((i + 1, n, known[0]))
                else:
                    regressions.append((i + 1, n, c[1] if c else "not run"))
            if b and c and b[0] in ("failed", "panicked", "timedout") and c[0] != "passed":
                both_fail.setdefault(n, b[1])

    print()
    print("== specs failing for both %s and %s (reason from %s):" % (base, cand, base))
    for n, msg in sorted(both_fail.items()):
        print("  %s\n      %s" % (n, msg or "(no message)"))
    if not both_fail:
        print("  none")
    print()
    print("== regressions (passed for %s, not for %s in the same run):" % (base, cand))
    for run, n, msg in regressions:
        print("  run %d: %s\n      %s" % (run, n, msg or "(no message)"))
    if not regressions:
        print("  none")
    if tolerated:
        print()
        print("== passed for %s only, but known to be timing-dependent for both (not counted):" % base)
        for run, n, reason in tolerated:
            print("  run %d: %s\n      %s" % (run, n, reason))
    print()
    print("== per run")
    for i, (run, r) in enumerate(zip(a.runs, results)):
        for h in (base, cand):
            states = [s for s, _ in r[h].values()]
            st = load_stats(os.path.join(run, h + ".stats"))
            seed = ""
            try:
                with open(os.path.join(run, "seed")) as f:
                    seed = f.read().strip()
            except OSError:
                pass
            print("  run %d (seed %s) %-7s passed %3d  failed %3d  skipped %3d  | %ss, left pods %s, "
                  "containers %s, shims %s; runc calls via BinaryName %s" % (
                      i + 1, seed, h, states.count("passed"),
                      sum(states.count(x) for x in ("failed", "panicked", "timedout", "interrupted", "aborted")),
                      states.count("skipped") + states.count("pending"),
                      st.get("seconds", "?"), st.get("left_pods", "?"), st.get("left_containers", "?"),
                      st.get("left_shims", "?"), st.get("runc_calls", "?")))
    if a.markdown:
        print()
        print("| handler | passed | failed | skipped |")
        print("|---|---|---|---|")
        for h in (base, cand):
            for i, r in enumerate(results):
                states = [s for s, _ in r[h].values()]
                print("| %s (run %d) | %d | %d | %d |" % (
                    h, i + 1, states.count("passed"),
                    sum(states.count(x) for x in ("failed", "panicked", "timedout")),
                    states.count("skipped")))
    print()
    verdict = "FAIL: %d regression(s)" % len(regressions) if regressions else "OK: no regression"
    print("compare: %s over %d run(s)" % (verdict, len(results)))
    if missing:
        sys.exit(2)
    sys.exit(1 if regressions else 0)


if __name__ == "__main__":
    main()
