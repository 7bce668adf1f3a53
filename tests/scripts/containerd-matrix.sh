#!/usr/bin/env bash
# Runs tether's ctr-driven integration tests against every containerd of the matrix, then
# the upgrade test (containers started under an older daemon, the daemon replaced by a
# newer one), and prints a table: daemon -> passed / failed / skipped (with reasons).
#
# Usage: tests/scripts/containerd-matrix.sh [SHIM]   (default: make build's release binary)
# Env:
#   TETHER_MATRIX          the containerd lines to run (default "1.6 1.7 2.1 2.2 2.3 2.4")
#   TETHER_MATRIX_UPGRADE  FROM:TO pairs for the upgrade test (default "1.7:2.3 2.1:2.3",
#                          the upgrades to the long-term-support line; "" = none)
#   TETHER_MATRIX_THREADS  --test-threads for each run (default 4: the tests mostly wait)
#   TETHER_MATRIX_LOGS     where each run's full output goes (default target/containerd-matrix)
#
# Each containerd comes from tests/scripts/containerd-daemon.sh (1.6: Debian's package;
# 1.7 and 2.1: the shared conformance harness's Debian trixie and sid packages; 2.2-2.4:
# built by go-tools.sh, cached). A line whose daemon cannot be had counts as failed. Exit status 0 iff nothing
# failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')
shim=${1:-$top/target/$host/release/containerd-shim-tether-v2}
[ -x "$shim" ] || { echo "containerd-matrix: $shim missing (make build)" >&2; exit 1; }
shim=$(cd "$(dirname "$shim")" && pwd)/$(basename "$shim")
lines=${TETHER_MATRIX:-1.6 1.7 2.1 2.2 2.3 2.4}
upgrades=${TETHER_MATRIX_UPGRADE-1.7:2.3 2.1:2.3}
threads=${TETHER_MATRIX_THREADS:-4}
logs=${TETHER_MATRIX_LOGS:-$top/target/containerd-matrix}
# The test files that drive containerd with ctr (each runs on every line).
TESTS=(containerd_run containerd_checkpoint)

mkdir -p "$logs"
cd "$top"
say() { echo "containerd-matrix: $*" >&2; }

test_args=()
for t in "${TESTS[@]}" containerd_upgrade; do test_args+=(--test "$t"); done
say "building the test binaries"
cargo test -p tether-tests --locked --no-run "${test_args[@]}" >"$logs/build.log" 2>&1 ||
  { cat "$logs/build.log" >&2; exit 1; }

declare -A dir_of
# daemon_dir LINE: the dir of that containerd, or empty (the reason in $logs/LINE.daemon).
daemon_dir() {
  if [ -z "${dir_of[$1]+set}" ]; then
    dir_of[$1]=$("$here/containerd-daemon.sh" "$1" 2>"$logs/$1.daemon" | tail -n 1) || dir_of[$1]=""
  fi
  echo "${dir_of[$1]}"
}

rows=()
failed_any=0
# run_row NAME LOG ENV... -- CARGO-TEST-ARGS...: runs one row and appends it to $rows.
run_row() {
  local name=$1 log=$2
  shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local skips="$log.skipped"
  rm -f "$skips"
  local started=$SECONDS
  set +e
  env "${envs[@]}" TETHER_SHIM="$shim" TETHER_SKIP_LOG="$skips" \
    cargo test -p tether-tests --locked --no-fail-fast "$@" -- --test-threads "$threads" >"$log" 2>&1
  set -e
  local took=$((SECONDS - started))
  local passed failed skipped
  passed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i } END { print s + 0 }' "$log")
  failed=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i } END { print s + 0 }' "$log")
  skipped=$( [ -f "$skips" ] && wc -l <"$skips" || echo 0)
  # A skipped test returns early: the harness counts it as passed.
  passed=$((passed - skipped))
  local notes=""
  if ! grep -q '^test result:' "$log"; then
    notes="no test ran (see $log)"
    failed=$((failed + 1))
  fi
  local f
  for f in $(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$log"); do notes="$notes FAILED:$f"; done
  [ -f "$skips" ] && while IFS=$'\t' read -r t why; do notes="$notes SKIPPED:$t ($why)"; done <"$skips"
  [ "$failed" -gt 0 ] && failed_any=1
  rows+=("$name|$passed|$failed|$skipped|${took}s|${notes# }")
  say "$name: $passed passed, $failed failed, $skipped skipped in ${took}s (log: $log)"
}

run_args=()
for t in "${TESTS[@]}"; do run_args+=(--test "$t"); done
for line in $lines; do
  dir=$(daemon_dir "$line")
  if [ -z "$dir" ] || [ ! -x "$dir/containerd" ]; then
    rows+=("containerd $line|0|1|0|-|unavailable: $(tail -n 1 "$logs/$line.daemon")")
    failed_any=1
    say "containerd $line: unavailable (see $logs/$line.daemon)"
    continue
  fi
  version=$("$dir/containerd" --version | awk '{ print $3 }')
  say "containerd $line ($version, $dir)"
  run_row "containerd $version" "$logs/$line.log" TETHER_CONTAINERD_DIR="$dir" -- "${run_args[@]}"
done

for pair in $upgrades; do
  from=${pair%%:*} to=${pair#*:}
  from_dir=$(daemon_dir "$from") to_dir=$(daemon_dir "$to")
  if [ -z "$from_dir" ] || [ -z "$to_dir" ]; then
    rows+=("upgrade $from -> $to|0|1|0|-|unavailable: containerd $from or $to")
    failed_any=1
    continue
  fi
  say "upgrade $from -> $to"
  run_row "upgrade $from -> $to" "$logs/upgrade-$from-$to.log" \
    TETHER_CONTAINERD_DIR="$from_dir" TETHER_CONTAINERD_UPGRADE_TO="$to_dir" -- --test containerd_upgrade
done

echo
printf '%-28s %7s %7s %8s %6s  %s\n' daemon passed failed skipped time notes
for row in "${rows[@]}"; do
  IFS='|' read -r name p f s t n <<<"$row"
  printf '%-28s %7s %7s %8s %6s  %s\n' "$name" "$p" "$f" "$s" "$t" "$n"
done
exit $failed_any
