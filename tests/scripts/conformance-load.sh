#!/usr/bin/env bash
# containerd's own client suite against tether under CPU load: conformance.sh (the Go
# shim's baseline, one retry of the failed tests alone, the known flakes) run while a busy
# loop spins on every core. Under such load a shim that reported an exit before all of
# a TTY's output was written lost its end (issue 23: containerd 2.1's
# TestContainerExecLargeOutputWithTTY, 2 of 2 runs with busy loops on two cores).
#
# Usage: tests/scripts/conformance-load.sh [SHIM_DIR]   (as conformance.sh)
# Env:   CONFORMANCE_CONTAINERD   the suite and daemon (default here 2.1; 1.6 / 1.7 too)
#        CONFORMANCE_LOAD_LOOPS   busy loops (default: nproc)
#        CONFORMANCE_TEST_TIMEOUT the harness's bound per test (default here 600 s, not 120)
#        CONFORMANCE_TOTAL_BUDGET the harness's bound for the run (default here 3000 s)
#        and conformance.sh's / the harness's (CONFORMANCE_RUN, ...)
#
# Why 600 s per test: TestContainerExecLargeOutputWithTTY (100 execs of 6.9 MB each through
# a pty) takes 47 s on a quiet machine and, under these loops on 2 cores, longer than the
# harness's 120 s with either shim (measured: the Go shim 124 s and tether 122 s, both
# timed out, in the same minute); the test is here for what it checks, that each exec's
# output ends with its last bytes, not for how fast a loaded machine moves 690 MB.
#
# The loops run at the default priority, beside the suite, for the whole run (retry
# included), and are always ended: on exit, on failure, on a signal; a loop whose script
# was SIGKILLed ends itself (it checks every ~0.1 s that the script is still there).
set -euo pipefail
# The body is one compound command, parsed whole before it runs: editing this file while
# a run is in progress cannot change what that run executes.
{

here=$(cd "$(dirname "$0")" && pwd)
export CONFORMANCE_CONTAINERD=${CONFORMANCE_CONTAINERD:-2.1}
export CONFORMANCE_TEST_TIMEOUT=${CONFORMANCE_TEST_TIMEOUT:-600}
export CONFORMANCE_TOTAL_BUDGET=${CONFORMANCE_TOTAL_BUDGET:-3000}
loops=${CONFORMANCE_LOAD_LOOPS:-$(nproc)}
[[ "$loops" =~ ^[0-9]+$ ]] || { echo "conformance-load: CONFORMANCE_LOAD_LOOPS must be a number"; exit 1; }

pids=()
stop_loops() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_loops EXIT
trap 'exit 130' INT TERM HUP

# A busy loop: `:` in a shell loop (all user time, like `while :; do :; done`), with a
# look every 20000 turns whether this script still runs.
for _ in $(seq 1 "$loops"); do
  sh -c 'n=0; while :; do n=$((n + 1)); if [ $n -ge 20000 ]; then kill -0 "$1" 2>/dev/null || exit 0; n=0; fi; done' \
    busy-loop $$ &
  pids+=($!)
done
echo "conformance-load: containerd $CONFORMANCE_CONTAINERD's suite with $loops busy loops (pids ${pids[*]}); $(uptime | sed 's/.*load/load/')"
started=$SECONDS
rc=0
"$here/conformance.sh" "$@" || rc=$?
echo "conformance-load: $((SECONDS - started)) s under load; $(uptime | sed 's/.*load/load/')"
exit "$rc"
}
