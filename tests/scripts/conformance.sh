#!/usr/bin/env bash
# Runs containerd's own integration/client suite (../shared/conformance) against tether
# and fails if any test that the Go shim passes fails for tether, after one retry of the
# failed tests alone (upstream's suite has timing-dependent tests: see the harness README).
#
# Usage: tests/scripts/conformance.sh [SHIM_DIR]   (default: make build's target/<host>/release)
# Env:   CONFORMANCE_CONTAINERD=1.7|2.1 to run a newer containerd's suite (default 1.6).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
shim_dir=${1:-$top/target/$(rustc -vV | sed -n 's/^host: //p')/release}
harness=${TETHER_CONFORMANCE_DIR:-$top/../shared/conformance}
if [ ! -x "$harness/run.sh" ]; then
  echo "conformance: no harness at $harness (shared/ is not beside this checkout): skipped"
  exit 0
fi
[ -x "$shim_dir/containerd-shim-tether-v2" ] || { echo "conformance: $shim_dir/containerd-shim-tether-v2 missing (make build)"; exit 1; }

case "${CONFORMANCE_CONTAINERD:-1.6}" in
  1.6) baseline=$harness/BASELINE-runc-v2.txt ;;
  1.7) baseline=$harness/BASELINE-runc-v2-ctd1.7.txt ;;
  2.1) baseline=$harness/BASELINE-runc-v2-ctd2.1.txt ;;
  *) echo "conformance: unknown CONFORMANCE_CONTAINERD=$CONFORMANCE_CONTAINERD"; exit 1 ;;
esac

out=$(mktemp /tmp/tether-conformance.XXXXXX)
trap 'rm -f "$out" "$out.retry"' EXIT
set +e
CONFORMANCE_BASELINE=$baseline "$harness/run.sh" io.containerd.tether.v2 "$shim_dir" >"$out"
set -e
grep -E '^(PASS|FAIL|SKIP) |passed' "$out" | tail -n 1

# Tests the Go shim passes in the baseline, and tether did not.
regressions() {
  grep -E '^(FAIL|SKIP) ' "$1" | awk '{print $2}' | while read -r t; do
    grep -qE "^PASS $t( |$)" "$baseline" && echo "$t"
  done
}
mapfile -t failed < <(regressions "$out")
if [ ${#failed[@]} -eq 0 ]; then
  echo "conformance: every test the Go shim passes, tether passes"
  exit 0
fi
echo "conformance: retrying alone: ${failed[*]}"
pattern="^($(IFS='|'; echo "${failed[*]}"))\$"
set +e
CONFORMANCE_RUN=$pattern "$harness/run.sh" io.containerd.tether.v2 "$shim_dir" >"$out.retry"
set -e
cat "$out.retry"
mapfile -t still < <(regressions "$out.retry")
# Upstream tests whose outcome depends on containerd's own timing, not on the shim (the
# harness README): TestUserNamespaces/ReadonlyRootFS gets a read-only snapshot view when
# containerd's GC has already collected the remapped snapshot of the previous subtest
# (the Go shim fails it too); TestRestartMonitor has wall-clock deadlines;
# TestContentClient drives only containerd's content store (no task, no shim) and, under
# load, its CommitErrorState cleanup finds the ingest directory not yet empty
# ("unlinkat .../ingest/...: directory not empty"; seen with 2.1 under busy loops, twice).
known_flaky=" TestUserNamespaces TestRestartMonitor TestContentClient "
real=()
for t in "${still[@]}"; do
  if [[ "$known_flaky" == *" $t "* ]]; then
    echo "conformance: KNOWN FLAKE (containerd timing, fails with the Go shim too): $t"
  else
    real+=("$t")
  fi
done
if [ ${#real[@]} -ne 0 ]; then
  echo "conformance: REGRESSION vs the Go shim: ${real[*]}"
  exit 1
fi
echo "conformance: every test the Go shim passes, tether passes (after a retry)"
