#!/usr/bin/env bash
# bench/maskproxy/run.sh [DENGBAO]: pgbench directly against PostgreSQL 15 and through
# `dengbao maskproxy`, in the same run, interleaved, same database, same clients. Called by
# scripts/bench.sh (`make bench`); runs alone too: bench/maskproxy/run.sh build/dengbao.
#
#   database   PostgreSQL 15 (scripts/services.sh start postgres), pgbench -i -s $SCALE, and a
#              table `patients` of 100,000 fictitious people whose id_no and mobile columns are
#              sensitive for the benchmark's user (role clerk: masked)
#   workloads  select-only  the built-in `pgbench -S` (pgbench_accounts is not sensitive:
#                           "unmasked traffic"; the proxy still parses each statement once per
#                           prepared statement and scans result rows)
#              masked       SELECT id, name, id_no, mobile FROM patients WHERE id = :id
#                           (two masked columns per row; the rewrite runs once per prepared
#                           statement, the masking per row)
#   modes      simple    every statement is a Query message: the proxy analyses each one
#                        (pgbench's default mode, and what most ORMs without server-side
#                        prepared statements do)
#              prepared  Parse once per connection, then Bind/Execute: the proxy analyses the
#                        statement once, then only relays and masks rows
#   load       pgbench -M MODE -c $CLIENTS -j 2 -T $DUR -n, ROUNDS rounds, direct and proxy
#              interleaved; medians of TPS and of the average latency; the proxy has WORKERS
#              event-loop threads (2)
#
#   pinning    PIN=0 (default): nothing pinned, the proxy shares both cores with pgbench and
#              PostgreSQL (the worst case: every proxy cycle is taken from the database);
#              PIN=1: PostgreSQL and pgbench on CPU 1 in both runs, the proxy alone on CPU 0
#              (as deployed, where the proxy has its own CPU or host)
#
# Knobs: DUR (10), ROUNDS (3), CLIENTS (8), SCALE (10), WORKLOADS ("select-only masked"),
# MODES ("simple prepared"), WORKERS (2), AUDIT (durable; or async), OUT (a directory kept for the raw results). Every
# process is stopped by its PID.
set -uo pipefail
BIN=${1:-build/dengbao}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-8}
SCALE=${SCALE:-10}
WORKLOADS=${WORKLOADS:-"select-only masked"}
MODES=${MODES:-"simple prepared"}
PIN=${PIN:-0}
pin_db() { if [ "$PIN" = 1 ]; then taskset -c 1 "$@"; else "$@"; fi; }
PGBENCH=/usr/lib/postgresql/15/bin/pgbench
if [ -n "${OUT:-}" ]; then
  D=$OUT
  mkdir -p "$D"
  KEEP=1
else
  D=$(mktemp -d /tmp/mpbench.XXXXXX)
  KEEP=
fi
chmod 755 "$D"
MP_PID=

cleanup() {
  if [ -n "$MP_PID" ]; then
    kill -TERM "$MP_PID" 2>/dev/null
    wait "$MP_PID" 2>/dev/null
  fi
  "$SVC" stop "$D/svc" >/dev/null 2>&1
  [ -n "$KEEP" ] || rm -rf "$D"
}
trap cleanup EXIT
die() {
  echo "bench/maskproxy: $*" >&2
  exit 1
}

mkdir -p "$D/svc"
PGPORT=$("$SVC" start postgres "$D/svc") || die "cannot start PostgreSQL"
PGSOCK=$(cat "$D/svc/postgres/socket_dir" 2>/dev/null || echo "$D/svc/postgres")
su_sql() { psql -X -h "$PGSOCK" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
su_sql -d postgres -c "CREATE ROLE clerk LOGIN PASSWORD 'clerkpw'" \
  -c "CREATE ROLE dengbao_catalog LOGIN PASSWORD 'catpw'" -c "CREATE DATABASE bench OWNER clerk" ||
  die "setup"
PGPASSWORD=clerkpw "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U clerk bench \
  >"$D/init.log" 2>&1 || die "pgbench -i failed: $(tail -3 "$D/init.log")"
PGPASSWORD=clerkpw psql -X -h 127.0.0.1 -p "$PGPORT" -U clerk -d bench -qAt -v ON_ERROR_STOP=1 <<'EOF' || die "patients"
CREATE TABLE patients(id int PRIMARY KEY, name text, id_no text, mobile text, notes text);
INSERT INTO patients
SELECT i, 'patient ' || i,
       '110105' || to_char(date '1950-01-01' + (i % 20000), 'YYYYMMDD') || lpad((i % 1000)::text, 3, '0') || 'X',
       '138' || lpad((i % 100000000)::text, 8, '0'), 'notes'
FROM generate_series(1, 100000) i;
ANALYZE patients;
EOF

"$BIN" audit init --dir "$D/audit" --origin bench.example/maskproxy >/dev/null 2>&1 || die "audit init"
printf '127.0.0.1:%s:*:dengbao_catalog:catpw\n' "$PGPORT" >"$D/pgpass"
chmod 600 "$D/pgpass"
cat >"$D/policy.yaml" <<EOF
columns:
  public.patients.id_no: {type: CN_RID18}
  public.patients.mobile: {type: CN_MOBILE}
EOF
MPPORT=$("$SVC" freeport)
cat >"$D/mask.yaml" <<EOF
listen: 127.0.0.1:$MPPORT
workers: ${WORKERS:-2}
server: {address: "127.0.0.1:$PGPORT", tls: disable}
policy: policy.yaml
catalog: {conninfo: "host=127.0.0.1 port=$PGPORT user=dengbao_catalog passfile=$D/pgpass"}
users: {clerk: [clerk]}
audit: {dir: audit, mode: ${AUDIT:-durable}}
EOF
if [ "$PIN" = 1 ]; then
  # the postmaster and every backend it forks from now on
  taskset -a -p -c 1 "$(head -1 "$D/svc/postgres/data/postmaster.pid")" >/dev/null ||
    die "cannot pin PostgreSQL"
  taskset -c 0 "$BIN" maskproxy --config "$D/mask.yaml" 2>"$D/mp.err" &
else
  "$BIN" maskproxy --config "$D/mask.yaml" 2>"$D/mp.err" &
fi
MP_PID=$!
for _ in $(seq 1 100); do
  grep -q "listening on" "$D/mp.err" && break
  sleep 0.1
done
grep -q "listening on" "$D/mp.err" || die "maskproxy did not start: $(cat "$D/mp.err")"

cat >"$D/masked.sql" <<'EOF'
\set id random(1, 100000)
SELECT id, name, id_no, mobile FROM patients WHERE id = :id;
EOF
# The masked query through the proxy must come back masked (a benchmark of a proxy that does
# not mask would be meaningless).
out=$(PGPASSWORD=clerkpw psql -X -h 127.0.0.1 -p "$MPPORT" -U clerk -d bench -qAt \
  -c "SELECT id_no, mobile FROM patients WHERE id = 12345")
echo "$out" | grep -Eq '^110105\*{8}[0-9]{3}X\|138\*{4}[0-9]{4}$' || die "not masked: $out"

run() { # run TARGET WORKLOAD MODE ROUND -> "tps latency_ms"
  local port=$1 wl=$2 mode=$3 r=$4 args log
  if [ "$wl" = select-only ]; then args=(-S); else args=(-f "$D/masked.sql"); fi
  log=$D/$wl.$mode.$port.$r.log
  PGPASSWORD=clerkpw pin_db "$PGBENCH" -n -M "$mode" -c "$CLIENTS" -j 2 -T "$DUR" "${args[@]}" \
    -h 127.0.0.1 -p "$port" -U clerk bench >"$log" 2>&1
  local tps lat
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$log" | head -1)
  lat=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' "$log" | head -1)
  echo "${tps:-0} ${lat:-0}"
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print 0; else print a[int((NR+1)/2)]}'; }

echo "maskproxy vs direct PostgreSQL 15: pgbench -c $CLIENTS -j 2 -T $DUR, $ROUNDS rounds, proxy workers ${WORKERS:-2}, PIN=$PIN"
echo "machine: $(nproc) cores, $(uname -m), $(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)"
printf '%-12s %-9s %11s %11s %10s %10s %7s\n' workload mode direct_tps proxy_tps direct_ms \
  proxy_ms ratio
for wl in $WORKLOADS; do
  for mode in $MODES; do
    : >"$D/$wl.$mode.direct"
    : >"$D/$wl.$mode.proxy"
    for r in $(seq 1 "$ROUNDS"); do
      run "$PGPORT" "$wl" "$mode" "$r" >>"$D/$wl.$mode.direct"
      run "$MPPORT" "$wl" "$mode" "$r" >>"$D/$wl.$mode.proxy"
    done
    dt=$(cut -d' ' -f1 "$D/$wl.$mode.direct" | median)
    pt=$(cut -d' ' -f1 "$D/$wl.$mode.proxy" | median)
    dl=$(cut -d' ' -f2 "$D/$wl.$mode.direct" | median)
    pl=$(cut -d' ' -f2 "$D/$wl.$mode.proxy" | median)
    printf '%-12s %-9s %11.0f %11.0f %10.3f %10.3f %6.2fx\n' "$wl" "$mode" "$dt" "$pt" "$dl" \
      "$pl" "$(awk -v a="$pt" -v b="$dt" 'BEGIN {print (b > 0) ? a / b : 0}')"
  done
done

