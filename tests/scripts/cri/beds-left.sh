#!/usr/bin/env bash
# Fails when a CRI test bed (env.sh) of this checkout is still running: run after the
# tests that start beds (make test, test-cri-pods, test-upgrade), when none of them should
# be left. A bed outlives its own test's checks when env.sh dies before it has killed the
# bed's namespace (seen: a bed's unshare, containerd and registry left after cri_pod had
# passed), so only a look at the machine afterwards finds it.
#
# Ours: env.sh puts TETHER_CRI_BED=<this checkout's path> on unshare's command line and
# into the environment of everything in the bed, so beds of other checkouts on a shared
# machine (other worktrees, another CI clone) are not counted. A bed of this checkout that
# a run beside this one started on purpose would be, so run it when no bed should be up.
#
# Beds just torn down may take a moment to go (the kernel ends a PID namespace's
# processes after its init): it looks again for up to BEDS_LEFT_GRACE seconds (5). What
# is left is listed, then ended (SIGKILL to the bed's unshare: --kill-child takes its
# namespace along), and the status is 1.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../../.." && pwd -P)
marker="TETHER_CRI_BED=$repo"
grace=${BEDS_LEFT_GRACE:-5}

# The pids whose command line has the marker as an argument (a bed's unshare) or whose
# environment holds it (everything inside a bed); never this script's own pid.
ours() {
  # one grep over every /proc/PID/{cmdline,environ} (NUL-separated entries: -z, whole
  # entry: -x); files of processes that end meanwhile are skipped (-s). The pattern comes
  # from a file: as an argument it would be on grep's own command line.
  grep -lszxF -f <(printf '%s\n' "$marker") /proc/[0-9]*/cmdline /proc/[0-9]*/environ |
    sed -n 's|^/proc/\([0-9]*\)/.*|\1|p' | grep -vx "$$" | sort -un
  return 0
}

deadline=$((SECONDS + grace))
while :; do
  mapfile -t left < <(ours)
  [ ${#left[@]} -eq 0 ] && { echo "beds-left: no CRI test bed of $repo is running"; exit 0; }
  [ $SECONDS -ge $deadline ] && break
  sleep 0.2
done

echo "beds-left: FAIL: ${#left[@]} process(es) of a CRI test bed of $repo still running after the tests:"
for pid in "${left[@]}"; do
  echo "  $pid: $( (tr '\0' ' ' <"/proc/$pid/cmdline") 2>/dev/null | cut -c1-200)"
done
# End them: SIGKILL the beds' unshare (its --kill-child ends the namespace), then
# anything still carrying the marker (a bed without a PID namespace of its own).
for pid in "${left[@]}"; do
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = unshare ] && kill -KILL "$pid" 2>/dev/null
done
sleep 1
for pid in $(ours); do kill -KILL "$pid" 2>/dev/null || true; done
echo "beds-left: ended them"
exit 1
