#!/bin/sh
# Runs inside the cgroup v2 guest (started by guest-init.sh): every line of
# <run>/tests.list (build-tests.sh), one test binary at a time, and prints a summary.
# Exits 0 only when every run passed.
# Arguments: <run directory>.
set -u
run=$1
TETHER_SHIM=$(cat "$run/shim")
TETHER_SKIP_LOG=$run/skipped
TETHER_MEMORY_REPORT=$run/memory
export TETHER_SHIM TETHER_SKIP_LOG TETHER_MEMORY_REPORT
# Two test threads: the guest has few (emulated) CPUs.
export RUST_TEST_THREADS=2 RUST_BACKTRACE=1

[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] || { echo "guest: /sys/fs/cgroup is not cgroup2"; exit 1; }

failed=0
: >"$run/summary"
tab=$(printf '\t')
while IFS=$tab read -r label dir binary args; do
  [ -n "$label" ] || continue
  start=$(date +%s)
  echo "=== $label: $args"
  # shellcheck disable=SC2086
  (cd "$dir" && "$binary" $args)
  status=$?
  took=$(($(date +%s) - start))
  if [ "$status" = 0 ]; then
    echo "ok     $label (${took}s)" >>"$run/summary"
  else
    echo "FAILED $label (exit $status, ${took}s)" >>"$run/summary"
    failed=1
  fi
done <"$run/tests.list"

echo "=== cgroup v2 leg summary"
cat "$run/summary"
if [ -s "$run/skipped" ]; then
  echo "--- skipped (test, reason):"
  cat "$run/skipped"
fi
if [ -s "$run/memory" ]; then
  echo "--- lone shim memory in the guest:"
  cat "$run/memory"
fi
# Anything the tests left behind in the cgroup tree is a failure too.
left=$(find /sys/fs/cgroup -mindepth 1 -type d | grep -v -e '^/sys/fs/cgroup/init$' || true)
if [ -n "$left" ]; then
  echo "--- cgroups left behind:"
  echo "$left"
  failed=1
fi
exit "$failed"
