#!/bin/sh
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 30) each, seeded from
# fuzz/seeds/<target> (real messages), growing fuzz/corpus/<target> (not committed).
# Fails on the first crash; libFuzzer leaves the input in fuzz/artifacts/<target>/, which
# becomes a unit test beside the parser, with the fix.
#
# Needs `cargo fuzz` (cargo install cargo-fuzz). cargo-fuzz wants a nightly compiler for
# its -Z flags; RUSTC_BOOTSTRAP=1 lets the stable one take them. FUZZ_SANITIZER picks
# the sanitizer (default: address; `none` when the address build is not wanted or fails).
# FUZZ_TARGETS="a b" picks targets. The build goes to FUZZ_TARGET_DIR (default
# /var/cache/tether/fuzz-target, outside the clone: an instrumented build of the
# dependencies takes 20 minutes on 2 cores the first time, a minute or two after).
set -eu
cd "$(dirname "$0")/../../fuzz"
seconds=${FUZZ_SECONDS:-30}
sanitizer=${FUZZ_SANITIZER:-address}
target_dir=${FUZZ_TARGET_DIR:-/var/cache/tether/fuzz-target}
mkdir -p "$target_dir"
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || {
  echo "error: cargo-fuzz not found: cargo install cargo-fuzz" >&2; exit 1; }
targets=${FUZZ_TARGETS:-$(cargo fuzz list)}
if ! cargo fuzz build -O -s "$sanitizer" --target-dir "$target_dir" >/dev/null 2>build.log; then
  if [ "$sanitizer" = none ]; then cat build.log >&2; exit 1; fi
  echo "fuzz: the $sanitizer build failed (build.log); building without a sanitizer" >&2
  sanitizer=none
  cargo fuzz build -O -s none --target-dir "$target_dir"
fi
rm -f build.log
start=$(date +%s)
for t in $targets; do
  mkdir -p "corpus/$t"
  printf 'fuzz: %-18s ' "$t"
  if ! cargo fuzz run -O -s "$sanitizer" --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -timeout=10 \
      >"corpus/$t.log" 2>&1; then
    echo "CRASH"; tail -40 "corpus/$t.log" >&2; exit 1
  fi
  tail -5 "corpus/$t.log" | grep -o 'Done [0-9]* runs in [0-9]* second(s)' || echo "ok"
done
echo "fuzz: $(echo $targets | wc -w) targets clean, $(( $(date +%s) - start )) s (FUZZ_SECONDS=$seconds, sanitizer $sanitizer)"
