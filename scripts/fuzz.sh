#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS: runs every libFuzzer target built in BUILD_DIR for SECONDS each
# over a scratch copy of its seed corpus (tests/fuzz/corpus/<target>/), so the committed corpus
# stays small. A crash fails the run and leaves the reproducer in fuzz-artifacts/.
set -euo pipefail
build=${1:-build-fuzz}
secs=${2:-30}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$top/fuzz-artifacts"
failed=0; passed=0
for bin in "$build"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  mkdir -p "$work/$name"
  if [ -d "$top/tests/fuzz/corpus/$name" ]; then cp -r "$top/tests/fuzz/corpus/$name/." "$work/$name/"; fi
  echo "fuzz: $name for ${secs}s"
  if "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
       -artifact_prefix="$top/fuzz-artifacts/$name-" -print_final_stats=0 "$work/$name" \
       >"$work/$name.log" 2>&1; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "fuzz: $name FAILED; last lines of its log:"
    tail -40 "$work/$name.log"
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
