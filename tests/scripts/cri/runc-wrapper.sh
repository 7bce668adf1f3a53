#!/bin/bash
# BinaryName of both CRI runtime handlers (runc and tether) in the CRI test bed: runs the
# real runc, and
#  - counts its calls per handler (one line per call in $CRI_RUNC_CALLS_DIR/<handler>), so
#    the test bed can show that each shim honoured the BinaryName option it was given;
#  - with a delay (CRI_KILL_DELAY_MS > 0), returns from `runc kill` that many ms after
#    runc itself returned. The signal lands on time; only the caller learns of it late.
#    This widens the window in which the container's exit overtakes the Kill reply.
#
# env.sh writes one copy per handler into the run's work dir with the values below
# filled in (a shim does not pass containerd's environment on to runc reliably).
REAL_RUNC=@REAL_RUNC@
HANDLER=@HANDLER@
CALLS_DIR=@CALLS_DIR@
KILL_DELAY_MS=@KILL_DELAY_MS@

# the verb is runc's first non-option argument (global options that take a value skipped)
verb=""
skip=0
for a in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$a" in
        --root|--log|--log-format|--criu|--rootless) skip=1 ;;
        -*) ;;
        *) verb=$a; break ;;
    esac
done
echo "${verb:-?}" >>"$CALLS_DIR/$HANDLER" 2>/dev/null

if [ "$verb" = kill ] && [ "$KILL_DELAY_MS" -gt 0 ]; then
    "$REAL_RUNC" "$@"
    rc=$?
    sleep "$(printf '%d.%03d' $((KILL_DELAY_MS / 1000)) $((KILL_DELAY_MS % 1000)))"
    exit "$rc"
fi
exec "$REAL_RUNC" "$@"
