# bench/lib.sh: helpers shared by the benchmark scripts (sourced, not run).
#   ticks PID          utime+stime, in clock ticks, of the process (all threads) and its children
#   to_ms V            a wrk latency ("850.00us", "3.21ms", "1.02s") in milliseconds
#   pin CPUS CMD...    run CMD pinned to CPUS with taskset ("" = not pinned)
#   wait_url URL [CURL ARGS]   wait up to 10 s for URL to answer 2xx; 1 (and a message) if not
# The caller sets BENCH_NAME (used in messages). HZ is set to the clock tick rate.
HZ=$(getconf CLK_TCK)

ticks() {
  local p t=0
  for p in $1 $(pgrep -P "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    t=$((t + $(awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$p/stat")))
  done
  echo "$t"
}

to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n;
    else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

pin() {
  local cpus=$1
  shift
  if [ -n "$cpus" ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

wait_url() {
  local u=$1
  shift
  for _ in $(seq 1 100); do
    curl -sf -o /dev/null "$@" "$u" && return 0
    sleep 0.1
  done
  echo "${BENCH_NAME:-bench}: $u is not ready" >&2
  return 1
}
