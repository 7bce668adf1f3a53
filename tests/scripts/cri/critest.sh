#!/bin/bash
# critest (cri-tools v1.37.0), the CRI validation suite Kubernetes holds container runtimes
# to, run against the CRI test bed (env.sh) with `--runtime-handler runc` and then
# `--runtime-handler tether` in the same containerd, N times; the two result lists are
# printed side by side (compare.py). Exit status 1 when a spec passes for runc and not
# for tether in the same run; specs failing for both are listed with the reason.
#
#   critest.sh [--runs N] [--seed S] [--focus RE] [--skip RE] [--out DIR]
#
#   --runs N    N runs, each in a fresh bed (default 1)
#   --seed S    ginkgo seed of run 1 (run k uses S+k-1), with --randomize-all: the spec
#               order is shuffled, the same for both handlers of a run (default: random)
#   --focus/--skip RE   ginkgo focus/skip regexps (e.g. --focus 'Streaming')
#   --out DIR   keep reports and logs there (default: /var/tmp/tether-cri/results/<stamp>)
#
# Environment: CRI_CONTAINERD (1.6 | 2.3), CRI_KILL_DELAY_MS (delayed-kill mode: e.g. 300),
# CRI_UPGRADE_PEER (a second tether build: live-upgrade every tether shim between the two
# every CRI_UPGRADE_EVERY (2) seconds while critest runs on tether),
# TETHER_SHIM, CRITEST (default /var/cache/tether/go/cri-tools-v1.37.0/bin/critest),
# CRI_HANDLERS (default "runc tether"), CRI_CRITEST_TIMEOUT (per handler and run, ginkgo
# duration, default 30m: a hanging spec must not hold CI for ginkgo's default hour);
# see env.sh.
set -euo pipefail
# The body is one compound command, parsed whole before it runs: editing this file
# while a run is in progress cannot change what that run executes.
{
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { echo "critest.sh: $*" >&2; }

CRI_TOOLS_BIN=${CRI_TOOLS_BIN:-/var/cache/tether/go/cri-tools-v1.37.0/bin}
CRITEST=${CRITEST:-$CRI_TOOLS_BIN/critest}
CRICTL=${CRICTL:-$CRI_TOOLS_BIN/crictl}
HANDLERS=${CRI_HANDLERS:-runc tether}

# --- inside the bed: one run, every handler in turn -----------------------------------
if [ "${1:-}" = --in-bed ]; then
    out=$2 seed=$3 focus=$4 skip=$5
    crictl() { "$CRICTL" --config "$CRI_CRICTL_CONFIG" "$@"; }
    for h in $HANDLERS; do
        args=(--runtime-endpoint "$CRI_ENDPOINT" --image-endpoint "$CRI_ENDPOINT"
              --runtime-handler "$h" "-ginkgo.json-report=$out/$h.json" -ginkgo.no-color
              "-ginkgo.seed=$seed" -ginkgo.randomize-all
              "-ginkgo.timeout=${CRI_CRITEST_TIMEOUT:-30m}")
        [ -z "$focus" ] || args+=("-ginkgo.focus=$focus")
        [ -z "$skip" ] || args+=("-ginkgo.skip=$skip")
        say "handler $h: critest ${args[*]}"
        upgrader=
        if [ "$h" = tether ] && [ -n "${CRI_UPGRADE_PEER:-}" ]; then
            # Live upgrades while critest runs: every shim of the bed moves between this
            # build and the peer build, one upgrade every CRI_UPGRADE_EVERY seconds.
            a=$(command -v containerd-shim-tether-v2)
            (
                i=0
                while :; do
                    sleep "${CRI_UPGRADE_EVERY:-2}"
                    if [ $((i % 2)) = 0 ]; then to=$CRI_UPGRADE_PEER; else to=$a; fi
                    "$a" upgrade --all --binary "$to" --timeout 5s >>"$out/upgrades.log" 2>&1 || true
                    i=$((i + 1))
                done
            ) &
            upgrader=$!
        fi
        t0=$(date +%s)
        "$CRITEST" "${args[@]}" >"$out/$h.log" 2>&1 || true
        t1=$(date +%s)
        if [ -n "$upgrader" ]; then
            kill "$upgrader" 2>/dev/null || true
            wait "$upgrader" 2>/dev/null || true
            moved=$(grep -c ' -> ' "$out/upgrades.log" 2>/dev/null || true)
            refused=$(grep -c 'refused\|rolled back\|not asked' "$out/upgrades.log" 2>/dev/null || true)
            say "handler $h: ${moved:-0} shim upgrades during critest, ${refused:-0} refused (calls in flight) or not asked (shim gone)"
        fi
        # what the handler left behind; removed so the next handler starts clean
        pods=$(crictl pods -q 2>/dev/null | wc -l)
        ctrs=$(crictl ps -aq 2>/dev/null | wc -l)
        shims=$(pgrep -c -f "containerd-shim-$h-v2" 2>/dev/null || true)
        [ "$h" != runc ] || shims=$(pgrep -c -f "containerd-shim-runc-v2" 2>/dev/null || true)
        calls=$(wc -l <"$CRI_RUNC_CALLS_DIR/$h" 2>/dev/null || echo 0)
        roots=$(find "$CRI_WORK/runc-root/$h" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        printf 'seconds=%s\nleft_pods=%s\nleft_containers=%s\nleft_shims=%s\nrunc_calls=%s\nrunc_root_namespaces=%s\n' \
            "$((t1 - t0))" "$pods" "$ctrs" "${shims:-0}" "$calls" "$roots" >"$out/$h.stats"
        say "handler $h: $((t1 - t0)) s; left $pods pods, $ctrs containers, ${shims:-0} shims; runc (BinaryName wrapper) called $calls times"
        crictl rmp -fa >/dev/null 2>&1 || true
        crictl rm -fa >/dev/null 2>&1 || true
    done
    cp "$CRI_LOG" "$out/containerd.log" 2>/dev/null || true
    exit 0
fi

# --- host side --------------------------------------------------------------------------
RUNS=1 SEED="" FOCUS="" SKIP="" OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --focus) FOCUS=$2; shift 2 ;;
        --skip) SKIP=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) say "unknown argument $1"; exit 2 ;;
    esac
done
[ -x "$CRITEST" ] || { say "no critest at $CRITEST: run tests/scripts/go-tools.sh cri-tools"; exit 2; }
[ -x "$CRICTL" ] || { say "no crictl at $CRICTL"; exit 2; }
[ -n "$SEED" ] || SEED=$(( (RANDOM << 15 | RANDOM) % 100000 + 1 ))
if [ -z "$OUT" ]; then
    RESULTS=/var/tmp/tether-cri/results
    OUT=$RESULTS/$(date +%Y%m%d-%H%M%S)-ctd${CRI_CONTAINERD:-1.6}
    # keep the 20 newest default result dirs (containerd logs make them a few MB each)
    # (on a fresh machine there is none yet: ls fails, which pipefail must not make fatal)
    { ls -1dt "$RESULTS"/[0-9]*-ctd* 2>/dev/null || true; } | tail -n +20 | xargs -r rm -rf
fi
mkdir -p "$OUT"
say "containerd ${CRI_CONTAINERD:-1.6}, handlers: $HANDLERS, runs: $RUNS, seed $SEED, kill delay ${CRI_KILL_DELAY_MS:-0} ms, results in $OUT"
T0=$(date +%s)
for r in $(seq 1 "$RUNS"); do
    d="$OUT/run$r"
    mkdir -p "$d"
    s=$((SEED + r - 1))
    echo "$s" >"$d/seed"
    say "run $r/$RUNS (seed $s)"
    CRI_HANDLERS="$HANDLERS" CRITEST="$CRITEST" CRICTL="$CRICTL" \
        "$HERE/env.sh" run -- bash "$HERE/critest.sh" --in-bed "$d" "$s" "$FOCUS" "$SKIP" ||
        say "run $r: the bed failed (status $?)"
done
say "wall time $(( $(date +%s) - T0 )) s"
python3 "$HERE/compare.py" --handlers "$HANDLERS" --known-flaky "$HERE/known-flaky.txt" \
    --containerd "${CRI_CONTAINERD:-1.6}" "$OUT"/run*
exit
}
