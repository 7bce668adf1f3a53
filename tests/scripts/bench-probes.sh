#!/bin/bash
# Exec probes at node scale (issue 24; `make bench-probes`): the CRI test bed (a private
# containerd with its CRI plugin and the handlers `runc`, the Go shim, and `tether`; see
# cri/env.sh), and in it execprobe (tests/tools/execprobe, built and cached by
# go-tools.sh): per handler BENCH_PROBE_PODS pods of one busybox container, each probed
# through CRI's ExecSync every BENCH_PROBE_INTERVAL s for BENCH_PROBE_SECONDS s, then torn
# down. Prints the side-by-side table; the results go to BENCH_PROBE_OUTPUT.
#
#   bench-probes.sh SHIM        SHIM: the containerd-shim-tether-v2 to measure
#
# Environment (all optional):
#   BENCH_PROBE_PODS      pods per handler (110: kubelet's default pod limit per node)
#   BENCH_PROBE_INTERVAL  seconds between two probes of one container (10: what this
#                         2-core machine sustains, shared, without a backlog; see
#                         docs/benchmarks.md)
#   BENCH_PROBE_SECONDS   seconds of probing per handler and round (120)
#   BENCH_PROBE_ROUNDS    rounds, each running both handlers, their order alternating (1)
#   BENCH_PROBE_CMD       the probe command ("true")
#   BENCH_PROBE_OUTPUT    JSON results (bench-results-probes.json in the repository root)
#   CRI_CONTAINERD        1.6 (Debian's containerd and Go shim, default) | 2.3
#
# Teardown: execprobe stops and removes its pods; whatever is left (a failure, Ctrl-C)
# dies with the bed's PID namespace, and env.sh removes the cgroups and the work dir. This
# script then checks that nothing of the bed is left (no process naming its work dir, no
# mount under it, no shim cgroup, the dir gone) and fails if something is.
set -euo pipefail
# The body is one compound command, parsed whole before it runs: editing this file
# while a run is in progress cannot change what that run executes.
{
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
say() { echo "bench-probes: $*" >&2; }

[ $# = 1 ] || { say "usage: bench-probes.sh SHIM"; exit 2; }
SHIM=$(readlink -f "$1")
[ -x "$SHIM" ] || { say "no shim at $1 (make build)"; exit 2; }
[ "$(id -u)" = 0 ] || { say "must run as root"; exit 2; }
PODS=${BENCH_PROBE_PODS:-110}
INTERVAL=${BENCH_PROBE_INTERVAL:-10}
SECONDS_=${BENCH_PROBE_SECONDS:-120}
ROUNDS=${BENCH_PROBE_ROUNDS:-1}
CMD=${BENCH_PROBE_CMD:-true}
OUTPUT=${BENCH_PROBE_OUTPUT:-$REPO/bench-results-probes.json}
case "$OUTPUT" in /*) ;; *) OUTPUT=$PWD/$OUTPUT ;; esac

EXECPROBE=$("$HERE/go-tools.sh" execprobe)/execprobe
if [ "${CRI_CONTAINERD:-1.6}" = 2.3 ]; then "$HERE/go-tools.sh" containerd 2.3 >/dev/null; fi

LOG=$(mktemp /tmp/bench-probes-XXXXXX.log)
# What the bed left, if anything: run after env.sh has returned, also on failure.
verify_teardown() {
    local rc=$? work left=0
    trap '' INT TERM
    work=$(sed -n 's|.*work dir \(/tmp/tether-cri-[A-Za-z0-9]*\)$|\1|p' "$LOG" | head -1)
    rm -f "$LOG"
    if [ -z "$work" ]; then
        say "the bed did not start"
        exit "$rc"
    fi
    if [ -e "$work" ]; then say "left behind: $work"; left=1; fi
    local pids
    # (the pattern from a file: given as an argument, it would be in grep's own cmdline)
    pids=$(grep -l -a -F -f <(echo "$work") /proc/[0-9]*/cmdline 2>/dev/null | cut -d/ -f3 || true)
    if [ -n "$pids" ]; then say "left behind: processes $(echo "$pids" | tr '\n' ' ')"; left=1; fi
    if grep -q -F "$work" /proc/self/mountinfo; then say "left behind: mounts under $work"; left=1; fi
    if [ -n "$(find /sys/fs/cgroup -maxdepth 2 -name "tether-cri-shims-$(basename "$work")" 2>/dev/null)" ]; then
        say "left behind: the shims' cgroup tether-cri-shims-$(basename "$work")"; left=1
    fi
    if [ "$left" = 0 ]; then
        say "teardown checked: no process, mount, shim cgroup or work dir of the bed ($work) left"
    elif [ "$rc" = 0 ]; then
        rc=1
    fi
    exit "$rc"
}
trap verify_teardown EXIT

# Both handlers' shims in containerd's cgroup (the bed gives tether's a ShimCgroup of its
# own otherwise, which under cgroup v1 competes for the CPU as one entity for all the
# shims and the runc they spawn: under load, every probe through tether waited longer).
# The bed runs as a background job so that a signal to this script reaches the trap at
# once: it is passed on to env.sh, whose teardown is then waited for.
CRI_TETHER_SHIM_CGROUP=0 TETHER_SHIM=$SHIM "$HERE/cri/env.sh" run -- "$EXECPROBE" \
    -pods "$PODS" -interval "$INTERVAL" -seconds "$SECONDS_" -rounds "$ROUNDS" \
    -cmd "$CMD" -output "$OUTPUT" 2> >(tee "$LOG" >&2) &
BED=$!
trap 'say "signalled: tearing the bed down"; kill -TERM "$BED" 2>/dev/null' INT TERM HUP
rc=0
wait "$BED" || rc=$?
# a signal ends `wait` early: wait again until env.sh has finished its teardown
while kill -0 "$BED" 2>/dev/null; do
    wait "$BED" || rc=$?
done
exit "$rc"
exit
}
