#!/usr/bin/env bash
# ct_gm.sh VALGRIND CT_BINARY: the constant-time test (ctgrind) and its negative control.
# The control (a secret-indexed table lookup) must be flagged by memcheck, or the harness
# proves nothing; then the real run must be clean.
set -u
vg=$1; bin=$2
# --vex-guest-max-insns=20: valgrind 3.19 runs out of an internal pool on the long unrolled
# AES-NI blocks otherwise.
opts=(--error-exitcode=9 --vex-guest-max-insns=20 -q)
out=$("$vg" "${opts[@]}" "$bin" --control 2>&1); rc=$?
if [ "$rc" -ne 9 ] || ! grep -q "uninitialised" <<<"$out"; then
  echo "ct_gm: the control leak was NOT detected (exit $rc): the harness is broken"
  echo "$out" | tail -20
  echo "ct_gm: 0 passed, 1 failed"
  exit 1
fi
echo "ct_gm: control leak detected by memcheck, as it must be"
"$vg" "${opts[@]}" --track-origins=yes "$bin"; rc=$?
if [ "$rc" -ne 0 ]; then
  echo "ct_gm: secret-dependent branch or address found (exit $rc)"
  exit 1
fi
