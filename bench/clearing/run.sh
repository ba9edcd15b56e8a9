#!/usr/bin/env bash
# bench/clearing/run.sh [DENGBAO]: every clearing figure of issue 8 in one command. Builds
# nothing: uses DENGBAO (default build/dengbao) and the bench binaries next to it.
#
#   1 ring      bench_ring (the rings against ck_ring and a mutex+condvar queue), as it prints
#   2 engine    bench_clearing_engine [--pin]: one shard thread in process, throughput direct /
#               through ring_spsc / through the mutex queue (ratio), open-loop latency at
#               offered rates with RING_WAIT_SPIN and RING_WAIT_BLOCK, and the journal's cost
#   3 e2e       `dengbao clearing --config` with the durable journal ON (fdatasync group
#               commit) and a real audit log (`dengbao audit init`), loaded over loopback TCP
#               by clearing_loadgen (open loop, latency from the intended send time, HDR
#               histogram merged over LG_PROCS processes) at 2,000 and 5,000 connections and
#               the offered rates in RATES; ROUNDS rounds per point (back to back), medians of
#               achieved events/s and p50/p99/p99.9. Then, per connection count, the highest
#               offered rate whose median p99 <= 2 ms and whose median achieved rate is >= 97 %
#               of the offered one; once a rate saturates (median achieved < 90 % of offered)
#               the higher rates of that connection count are skipped. The issue's target:
#               >= 150,000 events/s at p99 <= 2 ms with 5,000 connections.
#
# Machine line first (CPU model, cores, kernel, disk of the journal dir), so figures carry
# their context. PERF=1 adds a `perf record` of the daemon during one extra run at PERF_RATE
# (default 150000) with 5,000 connections and prints the top of `perf report` (where the time
# goes).
#
# Knobs: PARTS ("ring engine e2e"), ROUNDS (3), RATES ("50000 100000 150000 200000 250000"),
# CONNS ("2000 5000"), DUR (5 s measured per run, after WARM 1 s), LG_PROCS (2), SHARDS (2),
# IO_THREADS (1), WAIT (block: the daemon's ring wait strategy), SETTLE (5 s of rest after a
# run that lost requests), OUT (keep the raw results and the daemon's files there; default a
# temp dir removed at exit),
# ENGINE_ENV (extra environment for bench_clearing_engine, e.g. "BENCH_CLR_SECONDS=2").
# Every process is started here and stopped by its PID.
set -uo pipefail
BIN=${1:-build/dengbao}
BIN=$(realpath "$BIN" 2>/dev/null || echo "$BIN")
BDIR=$(dirname "$BIN")
PARTS=${PARTS:-"ring engine e2e"}
ROUNDS=${ROUNDS:-3}
RATES=${RATES:-"50000 100000 150000 200000 250000"}
CONNS=${CONNS:-"2000 5000"}
DUR=${DUR:-5}
WARM=${WARM:-1}
LG_PROCS=${LG_PROCS:-2}
SHARDS=${SHARDS:-2}
PERF=${PERF:-}
PERF_RATE=${PERF_RATE:-150000}
if [ -n "${OUT:-}" ]; then
  D=$OUT
  mkdir -p "$D"
  KEEP=1
else
  D=$(mktemp -d /tmp/clrbench.XXXXXX)
  KEEP=
fi
D=$(realpath "$D")
DPID=
PERF_PID=

cleanup() {
  if [ -n "$PERF_PID" ] && kill -0 "$PERF_PID" 2>/dev/null; then
    kill -INT "$PERF_PID" 2>/dev/null
    wait "$PERF_PID" 2>/dev/null
  fi
  if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
    kill -TERM "$DPID" 2>/dev/null
    for _ in $(seq 1 100); do
      kill -0 "$DPID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
  fi
  [ -n "$KEEP" ] || rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

has_part() { [[ " $PARTS " == *" $1 "* ]]; }

median() { # numbers on stdin -> median
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2];
    else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

field() { # KEY LINE -> value of KEY=value
  awk -v k="$1" '{ for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == k) print a[2] } }' \
    <<<"$2"
}

# ---- machine line ----
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
[ -n "$cpu" ] || cpu=$(uname -m)
disk=$(df -P "$D" | awk 'NR == 2 { print $1 }')
fstype=$(df -PT "$D" 2>/dev/null | awk 'NR == 2 { print $2 }')
echo "machine: $cpu, $(nproc) CPUs, Linux $(uname -r), journal dir on $disk ($fstype)," \
  "ulimit -n $(ulimit -n) (hard $(ulimit -Hn)), load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- 1 ring ----
if has_part ring; then
  echo
  echo "== 1. rings (bench_ring) =="
  if [ -x "$BDIR/bench_ring" ]; then
    "$BDIR/bench_ring" || echo "clearing bench: bench_ring failed (rc $?)"
  else
    echo "clearing bench: $BDIR/bench_ring not built (libck-dev missing?): skipped"
  fi
fi

# ---- 2 engine ----
if has_part engine; then
  echo
  echo "== 2. engine in process (bench_clearing_engine) =="
  if [ -x "$BDIR/bench_clearing_engine" ]; then
    pinarg=
    [ "$(nproc)" -ge 2 ] && pinarg=--pin
    # shellcheck disable=SC2086
    env ${ENGINE_ENV:-} BENCH_CLR_DIR="$D" "$BDIR/bench_clearing_engine" $pinarg ||
      echo "clearing bench: bench_clearing_engine failed (rc $?)"
  else
    echo "clearing bench: $BDIR/bench_clearing_engine not built: skipped"
  fi
fi

# ---- 3 end to end ----
freeport() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

start_daemon() {
  local port=$1
  "$BIN" audit init --dir "$D/audit" --origin bench.example/clearing >/dev/null 2>"$D/audit-init.err" || {
    echo "clearing bench: dengbao audit init failed: $(cat "$D/audit-init.err")" >&2
    return 1
  }
  # the keys of docs/clearing-ops.md / deploy/clearing.yaml (src/clearing/config.c); the 500
  # securities the engine bench uses (tick 0.01 yuan, lot 100, no band); the loadgen trades
  # 600000 at 10.00 yuan
  {
    echo "# written by bench/clearing/run.sh"
    echo "data_dir: $D/data"
    echo "shards: $SHARDS"
    echo "listen: {host: 127.0.0.1, port: $port}"
    echo "http: {host: 127.0.0.1, port: $HTTP_PORT, workers: 1}"
    echo "io_threads: ${IO_THREADS:-1}"
    echo "max_connections: 20000"
    echo "wait: ${WAIT:-block}"
    echo "ring: {capacity: 65536, batch: 4096}"
    echo "journal: {segment_size: 64m, snapshot_every: 1000000, keep: 2, sync: true}"
    echo "audit: {dir: $D/audit}"
    echo "fees: {commission_ppm: 250, commission_min: \"5.00\", stamp_ppm: 500, transfer_ppm: 10}"
    echo "instruments:"
    for i in $(seq 1 200) $(seq 600000 600249) $(seq 830000 830049); do
      printf '  - {security: "%06d", tick: "0.01", lot: 100}\n' "$i"
    done
  } >"$D/clearing.yaml"
  "$BIN" clearing --config "$D/clearing.yaml" >"$D/daemon.out" 2>"$D/daemon.err" &
  DPID=$!
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    kill -0 "$DPID" 2>/dev/null || break
    sleep 0.1
  done
  echo "clearing bench: the daemon did not start: $(tail -5 "$D/daemon.err")" >&2
  return 1
}

daemon_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$DPID/stat" 2>/dev/null || echo 0; }

BASE=1
run_lg() { # CONNS RATE ROUND -> appends a raw line
  local c=$1 r=$2 k=$3 line t0 t1 cpu
  t0=$(daemon_ticks)
  line=$("$BDIR/clearing_loadgen" --port "$PORT" --conns "$c" --procs "$LG_PROCS" \
    --rate "$r" --duration "$DUR" --warmup "$WARM" --account-base "$BASE" --quiet 2>>"$D/lg.err")
  t1=$(daemon_ticks)
  BASE=$((BASE + c + 1000))
  # requests the loadgen gave up on may still be queued in the daemon: let it drain before
  # the next run, so runs do not leak into each other
  if [ "$(field lost "$line")" != 0 ]; then
    sleep "${SETTLE:-5}"
  fi
  if [ -z "$line" ]; then
    echo "  c=$c r=$r round $k: the loadgen printed nothing: $(tail -2 "$D/lg.err")"
    return 1
  fi
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v s="$((DUR + WARM))" \
    'BEGIN { printf "%.0f", d / hz / s * 100 }')
  printf '  c=%-5s offered %7s r%d: achieved %7s/s  p50 %8s us  p99 %8s us  p99.9 %8s us  max %9s us  err %s rej %s lost %s  daemon cpu %s%%\n' \
    "$c" "$r" "$k" "$(field achieved "$line")" "$(field p50_us "$line")" "$(field p99_us "$line")" \
    "$(field p999_us "$line")" "$(field max_us "$line")" "$(field errors "$line")" \
    "$(field rejects "$line")" "$(field lost "$line")" "$cpu"
  echo "$c $r $(field achieved "$line") $(field p50_us "$line") $(field p99_us "$line") $(field p999_us "$line") $(field errors "$line") $(field lost "$line")" >>"$D/raw.txt"
}

if has_part e2e; then
  echo
  echo "== 3. end to end over loopback TCP (dengbao clearing, durable journal, audit on) =="
  if [ ! -x "$BDIR/clearing_loadgen" ]; then
    echo "clearing bench: $BDIR/clearing_loadgen not built: skipped"
  elif ! "$BIN" clearing --help >/dev/null 2>&1; then
    echo "clearing bench: '$BIN clearing' is not available; loadgen self-test only (harness check)"
    "$BDIR/clearing_loadgen" --self-test --conns 2000 --procs "$LG_PROCS" --rate 50000 \
      --duration 2 --warmup 0.5
  else
    ulimit -n "$(ulimit -Hn)" 2>/dev/null
    PORT=$(freeport) && HTTP_PORT=$(freeport) && start_daemon "$PORT" || exit 1
    echo "daemon pid $DPID on 127.0.0.1:$PORT, $SHARDS shards; loadgen $LG_PROCS processes," \
      "${DUR}s measured after ${WARM}s warm-up, $ROUNDS rounds"
    : >"$D/raw.txt"
    for c in $CONNS; do
      for r in $RATES; do
        for k in $(seq 1 "$ROUNDS"); do
          run_lg "$c" "$r" "$k"
        done
        # saturated (median achieved < 90 % of offered): higher rates only add backlog
        a=$(awk -v c="$c" -v r="$r" '$1 == c && $2 == r { print $3 }' "$D/raw.txt" | median)
        if awk -v a="$a" -v r="$r" 'BEGIN { exit !(a == "-" || a < 0.9 * r) }'; then
          echo "  c=$c: saturated at offered $r (median achieved $a/s): higher rates skipped"
          break
        fi
      done
    done
    echo
    echo "medians (achieved events/s, p50 / p99 / p99.9 in us):"
    for c in $CONNS; do
      best=
      for r in $RATES; do
        sel=$(awk -v c="$c" -v r="$r" '$1 == c && $2 == r' "$D/raw.txt")
        [ -n "$sel" ] || continue
        a=$(awk '{ print $3 }' <<<"$sel" | median)
        p50=$(awk '{ print $4 }' <<<"$sel" | median)
        p99=$(awk '{ print $5 }' <<<"$sel" | median)
        p999=$(awk '{ print $6 }' <<<"$sel" | median)
        bad=$(awk '{ s += $7 + $8 } END { print s + 0 }' <<<"$sel")
        printf '  conns %-5s offered %7s  achieved %9s  p50 %9s  p99 %9s  p99.9 %9s  errors+lost %s\n' \
          "$c" "$r" "$a" "$p50" "$p99" "$p999" "$bad"
        if awk -v p="$p99" -v a="$a" -v r="$r" -v b="$bad" \
          'BEGIN { exit !(p <= 2000 && a >= 0.97 * r && b == 0) }'; then
          best=$r
        fi
      done
      echo "  => conns $c: max offered rate with median p99 <= 2 ms: ${best:-none of $RATES}" \
        "(target >= 150000 at 5000 connections)"
    done
    if [ -n "$PERF" ] && command -v perf >/dev/null; then
      echo
      echo "perf: the daemon during a run at $PERF_RATE events/s, 5000 connections"
      perf record -o "$D/perf.data" -p "$DPID" -- sleep $((DUR + WARM)) >/dev/null 2>&1 &
      PERF_PID=$!
      run_lg 5000 "$PERF_RATE" 0
      wait "$PERF_PID" 2>/dev/null
      PERF_PID=
      echo "  by object:"
      perf report -i "$D/perf.data" --stdio --sort dso 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | head -8
      echo "  top symbols:"
      perf report -i "$D/perf.data" --stdio --sort dso,sym 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | head -20
    fi
    kill -TERM "$DPID" 2>/dev/null
    wait "$DPID" 2>/dev/null
    echo "daemon stopped (exit $?)"
    DPID=
  fi
fi
