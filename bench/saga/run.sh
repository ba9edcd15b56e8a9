#!/usr/bin/env bash
# bench/saga/run.sh [DENGBAO] [BENCH_SAGA_LOAD]: global transactions/s and latency of the saga
# coordinator on a 2-step transfer saga with barriers (issue 9), on this machine. Called by
# scripts/bench.sh; runs alone too: bench/saga/run.sh build/dengbao build/saga_load.
#
#   participants  two `dengbao saga participant` processes (banks A and B), each on its own
#                 PostgreSQL database with the idempotency barrier: every call is one local
#                 transaction (BEGIN, barrier INSERT, UPDATE ... RETURNING, movement INSERT,
#                 COMMIT: 5 round trips to PostgreSQL). Mode "memory" (--barrier memory): the
#                 same rules on in-memory state, to show the coordinator's own ceiling when the
#                 participants are not the limit (clearly labelled; not a durable participant).
#   coordinator   `dengbao saga --config`, store embedded (SQLite, WAL, synchronous=FULL) or on
#                 PostgreSQL (a third database); group commit of the state writes.
#   load          saga_load (libcurl multi): N sagas, at most C in flight, each
#                 POST /v1/sagas?wait=30s (then GET ?wait if not final); latency = submit ->
#                 final answer; tps = sagas / wall time.
#   PostgreSQL    scripts/services.sh (fsync off, as every test here; synchronous_commit on).
#
# Every (store, participant mode) pair runs ROUNDS rounds on fresh databases; the table gives
# medians. With PERF=1 a short `perf record` of the coordinator during one extra round per pair
# prints the top symbols (where the time goes).
# Knobs: N (20000), C (256), ROUNDS (3), STORES ("sqlite pg"), MODES ("pg memory"),
# PWORKERS (participant workers, 16), ACCOUNTS (256), OUT (keep raw results there).
set -uo pipefail
BIN=$(realpath "${1:-build/dengbao}")
LOAD=$(realpath "${2:-$(dirname "$BIN")/saga_load}")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
N=${N:-20000}
C=${C:-256}
ROUNDS=${ROUNDS:-3}
STORES=${STORES:-"sqlite pg"}
MODES=${MODES:-"pg memory"}
PWORKERS=${PWORKERS:-16}
ACCOUNTS=${ACCOUNTS:-256}
if [ -n "${OUT:-}" ]; then
  D=$OUT
  mkdir -p "$D"
  KEEP=1
else
  D=$(mktemp -d /tmp/sagabench.XXXXXX)
  KEEP=
fi
chmod 755 "$D"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  bash "$SVC" stop "$D/svc" >/dev/null 2>&1
  [ -n "$KEEP" ] || rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! "$BIN" saga --help >/dev/null 2>&1 || [ ! -x "$LOAD" ]; then
  echo "saga bench skipped: '$BIN saga' or '$LOAD' is not available"
  exit 0
fi
mkdir -p "$D/svc"
PG=$(bash "$SVC" start postgres "$D/svc") || {
  echo "saga bench: PostgreSQL did not start" >&2
  exit 1
}
ci() { echo "host=$D/svc/postgres port=$PG user=postgres dbname=$1"; }
psqlq() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$(ci "$1")" -c "$2"; }

port_of() { # port_of FILE PID
  local port=""
  for _ in $(seq 400); do
    port=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\)\( .*\)\{0,1\}$/\1/p' "$1" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.025
  done
  [ -n "$port" ] && echo "$port"
}

start_part() { # start_part A|B MODE -> PART_PID PART_PORT
  local lb
  lb=$(echo "$1" | tr AB ab)
  local args=(--db "$(ci "bank_$lb")")
  [ "$2" = memory ] && args=(--barrier memory)
  "$BIN" saga participant "${args[@]}" --listen 127.0.0.1:0 --bank "$1" \
    --workers "$PWORKERS" >"$D/$lb.out" 2>"$D/$lb.err" &
  PART_PID=$!
  PIDS+=("$PART_PID")
  PART_PORT=$(port_of "$D/$lb.out" "$PART_PID") || {
    echo "saga bench: participant $1 did not start" >&2
    exit 1
  }
  local a="" i
  for i in $(seq "$ACCOUNTS"); do a="$a\"$1$i\":100000000,"; done
  curl -sf -XPOST "127.0.0.1:$PART_PORT/admin/seed" -d "{\"accounts\":{${a%,}}}" >/dev/null || {
    echo "saga bench: seed $1 failed" >&2
    exit 1
  }
}

# ticks PID...: utime + stime (clock ticks) of the given processes, summed
ticks() {
  local p t=0 f
  for p in "$@"; do
    f=$(cut -d')' -f2 "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
# pg_pids: this cluster's postmaster and its children (backends, walwriter, ...)
pg_pids() {
  local pm
  pm=$(cat "$D/svc/postgres/pid" 2>/dev/null) || return 0
  echo "$pm $(pgrep -P "$pm" | tr '\n' ' ')"
}

stop_pid() {
  kill -TERM "$1" 2>/dev/null
  wait "$1" 2>/dev/null
}

one_round() { # one_round STORE MODE TAG [PERF]: prints the load line
  local store=$1 mode=$2 tag=$3 db
  for db in bank_a bank_b store; do
    psqlq postgres "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    psqlq postgres "CREATE DATABASE $db" >/dev/null
  done
  rm -rf "$D/coord"
  mkdir -p "$D/coord"
  "$BIN" audit init --dir "$D/coord/audit" --origin bench.example/saga >/dev/null
  start_part A "$mode"
  local pa=$PART_PID porta=$PART_PORT
  start_part B "$mode"
  local pb=$PART_PID portb=$PART_PORT
  local url="sqlite:$D/coord/saga.db"
  [ "$store" = pg ] && url=$(ci store)
  cat >"$D/coord/saga.yaml" <<EOF
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
store: "$url"
workers: 2
participants: {allow: ["127.0.0.1:*"]}
defaults: {timeout: 60s, call_timeout: 10s, retry: {initial: 100ms, max: 2s, max_attempts: 6}}
max_inflight: 4096
audit: {dir: $D/coord/audit}
EOF
  "$BIN" saga --config "$D/coord/saga.yaml" >"$D/coord/out" 2>"$D/coord/err" &
  local pc=$!
  PIDS+=("$pc")
  local cport
  cport=$(port_of "$D/coord/err" "$pc") || {
    echo "saga bench: coordinator did not start: $(tail -n 3 "$D/coord/err")" >&2
    exit 1
  }
  # warm-up (connections, caches)
  "$LOAD" --url "http://127.0.0.1:$cport" --a "http://127.0.0.1:$porta" \
    --b "http://127.0.0.1:$portb" -n $((C * 4)) -c "$C" --accounts "$ACCOUNTS" \
    --prefix "w$tag" >/dev/null 2>&1
  local perfpid=""
  if [ -n "${4:-}" ]; then
    perf record -F 999 -g -p "$pc" -o "$D/perf.$store.$mode.data" 2>/dev/null &
    perfpid=$!
  fi
  # CPU time of each party over the measured run (where the time goes), in us per saga
  local pgp t0c t0p t0g t1c t1p t1g hz line
  hz=$(getconf CLK_TCK)
  pgp=$(pg_pids)
  t0c=$(ticks "$pc")
  t0p=$(ticks "$pa" "$pb")
  t0g=$(ticks $pgp)
  line=$("$LOAD" --url "http://127.0.0.1:$cport" --a "http://127.0.0.1:$porta" \
    --b "http://127.0.0.1:$portb" -n "$N" -c "$C" --accounts "$ACCOUNTS" --prefix "r$tag")
  t1c=$(ticks "$pc")
  t1p=$(ticks "$pa" "$pb")
  t1g=$(ticks $(pg_pids))
  echo "$line cpu_us_coord=$(((t1c - t0c) * 1000000 / hz / N)) cpu_us_parts=$(((t1p - t0p) * \
1000000 / hz / N)) cpu_us_pg=$(((t1g - t0g) * 1000000 / hz / N))"
  if [ -n "$perfpid" ]; then
    kill -INT "$perfpid" 2>/dev/null
    wait "$perfpid" 2>/dev/null
  fi
  # the invariant after the run: money conserved across the banks
  local sa sb
  sa=$(curl -s "127.0.0.1:$porta/admin/balances" | sed -n 's/.*"sum":\([0-9]*\).*/\1/p')
  sb=$(curl -s "127.0.0.1:$portb/admin/balances" | sed -n 's/.*"sum":\([0-9]*\).*/\1/p')
  if [ $((sa + sb)) -ne $((2 * ACCOUNTS * 100000000)) ]; then
    echo "saga bench: money not conserved after the run: $sa + $sb" >&2
  fi
  stop_pid "$pc"
  stop_pid "$pa"
  stop_pid "$pb"
  PIDS=()
}

med() { sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]; else print "-"}'; }
field() { sed -n "s/.* $1=\([0-9.]*\).*/\1/p"; }

echo "saga bench: N=$N C=$C ROUNDS=$ROUNDS, $(nproc) cores, PostgreSQL 15 on $PG"
printf '%-8s %-26s %10s %9s %9s %7s   %s\n' store participants "sagas/s" "p50 ms" "p99 ms" errors \
  "CPU us/saga: coordinator, participants, PostgreSQL"
for store in $STORES; do
  for mode in $MODES; do
    : >"$D/res.$store.$mode"
    for r in $(seq "$ROUNDS"); do
      one_round "$store" "$mode" "$store$mode$r" | tee -a "$D/res.$store.$mode" >"$D/last"
    done
    label="PostgreSQL + barrier"
    [ "$mode" = memory ] && label="in memory (ceiling)"
    printf '%-8s %-26s %10s %9s %9s %7s   %s\n' "$store" "$label" \
      "$(field tps <"$D/res.$store.$mode" | med)" "$(field p50_ms <"$D/res.$store.$mode" | med)" \
      "$(field p99_ms <"$D/res.$store.$mode" | med)" \
      "$(sed -n 's/.* errors=\([0-9]*\).*/\1/p' "$D/res.$store.$mode" | awk '{s += $1} END {print s + 0}')" \
      "$(field cpu_us_coord <"$D/res.$store.$mode" | med), $(field cpu_us_parts \
        <"$D/res.$store.$mode" | med), $(field cpu_us_pg <"$D/res.$store.$mode" | med)"
    if [ -n "${PERF:-}" ] && command -v perf >/dev/null; then
      one_round "$store" "$mode" "$store${mode}perf" 1 >/dev/null
      echo "  perf (coordinator, $store, $mode): top symbols"
      perf report -i "$D/perf.$store.$mode.data" --no-children -g none --sort dso,symbol --stdio \
        2>/dev/null | grep -E '^ +[0-9]' | sed -n '1,12s/^/    /p'
    fi
  done
done
