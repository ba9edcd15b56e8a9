#!/usr/bin/env bash
# saga_transfer.sh DENGBAO: the saga coordinator's fault-injection suite (issue 9, "Done means").
#
# A transfer between two banks: `dengbao saga participant` A (accounts A*, database bank_a) and B
# (accounts B*, database bank_b), each with its own PostgreSQL database and idempotency barrier,
# coordinated by `dengbao saga --config` as a 2-step saga: debit at A (compensation: credit back),
# credit at B (compensation: debit back). Everything runs on loopback: PostgreSQL through
# scripts/services.sh, the processes stopped by PID in a trap.
#
# The whole case list runs twice: with the coordinator's store on SQLite (embedded) and on
# PostgreSQL (a third database, `store`). Cases:
#   happy transfers; insufficient funds (-> compensated); a participant that fails (409), answers
#   5xx then succeeds, times out then succeeds, loses its response after committing (answers
#   twice), runs a call twice itself; a compensation that arrives first (the credit's action
#   times out every time and then lands late: null compensation, then hanging, no effect); a
#   compensation that keeps failing (-> parked with a reason; admin retry after the fault is
#   cleared -> compensated) and one that is refused (409 -> parked, admin resolve); coordinator
#   kill -9 at every crash point of SAGA-API.md (DENGBAO_SAGA_CRASH, restart, idempotent
#   resubmission, every saga ends final); a PostgreSQL restart while sagas run.
# After each case the invariants are checked: money is conserved (sum A + sum B constant), every
# saga is committed / compensated / parked with a reason (and the expected one where the case
# determines it), no (gid, branch, op) has two movements (no step ran twice with effect), a
# committed transfer has exactly one debit and one credit net of compensations, a compensated
# one nets to zero in both banks. Then the barrier cleanup, `dengbao audit verify` of the
# coordinator's audit log and saga.* records for a gid.
# Every check prints "ok - ..." or "FAIL - ..."; a summary at the end; exit 1 on any failure.
set -uo pipefail

bin=$(realpath "$1")
top=$(cd "$(dirname "$0")/../.." && pwd)
svc_sh=$top/scripts/services.sh
work=$(mktemp -d /tmp/dbao-saga-XXXXXX)
chmod 755 "$work" # PostgreSQL runs as postgres and must reach svc/
svc=$work/svc
mkdir -p "$svc"
pida="" pidb="" pidc=""
passed=0 failed=0

cleanup() {
  for p in $pidc $pida $pidb; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  bash "$svc_sh" stop "$svc" >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

ok() {
  echo "PASS - $*"
  passed=$((passed + 1))
}
bad() {
  echo "FAIL - $*"
  failed=$((failed + 1))
}
die() {
  echo "FAIL - $*"
  for f in coord.err a.err b.err; do
    [ -s "$f" ] && tail -n 20 "$f" | sed "s/^/  $f: /"
  done
  echo "summary: $passed passed, $((failed + 1)) failed"
  exit 1
}

# ---- PostgreSQL and the two banks ------------------------------------------------------------
pgport=$(bash "$svc_sh" start postgres "$svc") || die "PostgreSQL did not start"
pgsock=$svc/postgres
ci() { echo "host=$pgsock port=$pgport user=postgres dbname=$1"; }
psqlq() { psql -X -q -t -A -v ON_ERROR_STOP=1 "$(ci "$1")" -c "$2"; }
for db in bank_a bank_b store; do
  psqlq postgres "CREATE DATABASE $db" || die "create database $db"
done
ok "PostgreSQL on $pgport with bank_a, bank_b, store"

# port_of FILE PID: the port printed as "...:PORT" on the first "listening" line
port_of() {
  local f=$1 p=$2 port=""
  for _ in $(seq 200); do
    port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\)[^0-9]*$/\1/p' "$f" 2>/dev/null | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$p" 2>/dev/null || return 1
    sleep 0.025
  done
  [ -n "$port" ] && echo "$port"
}

start_bank() { # start_bank A|B -> sets pida/porta or pidb/portb
  local b=$1 lb
  lb=$(echo "$b" | tr AB ab)
  "$bin" saga participant --db "$(ci bank_$lb)" --listen 127.0.0.1:0 --bank "$b" --faults \
    --workers 8 >"$lb.out" 2>>"$lb.err" &
  local p=$!
  local port
  port=$(port_of "$lb.out" "$p") || die "participant $b did not start"
  if [ "$b" = A ]; then pida=$p porta=$port; else pidb=$p portb=$port; fi
}
start_bank A
start_bank B
ok "participants A on $porta, B on $portb"

NACC=4
INIT=1000000
TOTAL=$((2 * NACC * INIT))
seed() {
  local a="" b="" i
  for i in $(seq $NACC); do
    a="$a\"A$i\":$INIT,"
    b="$b\"B$i\":$INIT,"
  done
  curl -sf -XPOST "127.0.0.1:$porta/admin/seed" -d "{\"accounts\":{${a%,}}}" >/dev/null &&
    curl -sf -XPOST "127.0.0.1:$portb/admin/seed" -d "{\"accounts\":{${b%,}}}" >/dev/null
}
seed || die "seed"

# The participant refuses what it does not understand (400 naming the field), 404 elsewhere.
pneg() { # pneg WANT PATH BODY WHAT
  local c
  c=$(curl -s -o pneg.txt -w '%{http_code}' -XPOST "127.0.0.1:$porta$2" --data-binary "$3")
  if [ "$c" = "$1" ] && { [ -z "${5:-}" ] || grep -q "$5" pneg.txt; }; then
    ok "participant: $4 -> $c"
  else
    bad "participant: $4 -> $c $(cat pneg.txt)"
  fi
}
PB='"gid":"neg-1","step":0,"branch":"0"'
pneg 400 /debit "{$PB,\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":1},\"x\":1}" \
  "unknown body key" "unknown key"
pneg 400 /debit "{$PB,\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":1,\"y\":2}}" \
  "unknown payload key" "payload"
pneg 400 /debit "{$PB,\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":0}}" \
  "amount 0" "payload.amount"
pneg 400 /debit "{$PB,\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":1.5}}" \
  "fractional amount" "payload.amount"
pneg 400 /debit "{$PB,\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":\"1\"}}" \
  "amount as a string" "payload.amount"
pneg 400 /debit "{$PB,\"op\":\"compensate\",\"payload\":{\"account\":\"A1\",\"amount\":1}}" \
  "op not matching the endpoint" "op:"
pneg 400 /debit "{\"gid\":\"bad gid!\",\"step\":0,\"branch\":\"0\",\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":1}}" \
  "gid outside [A-Za-z0-9._:-]"
pneg 400 /debit "{$PB,\"op\":\"action\",\"payload\":{\"account\":\"A1\",\"amount\":1,\"fault\":\"explode\"}}" \
  "unknown fault" "fault"
pneg 400 /debit "{$PB,\"op\":\"action\",\"gid\":\"neg-2\",\"payload\":{\"account\":\"A1\",\"amount\":1}}" \
  "duplicate key"
pneg 400 /debit '[1,2' "truncated JSON"
pneg 404 /transfer '{}' "unknown endpoint"
pneg 400 /admin/faults '{"fault":"5xx"}' "global fault without its count"
[ "$(psqlq bank_a "SELECT count(*) FROM movements")" = 0 ] &&
  ok "participant: nothing moved by refused requests" || bad "refused requests moved money"
gfault() { # gfault A|B FAULT: a global fault on a participant
  local p=$porta
  [ "$1" = B ] && p=$portb
  curl -sf -XPOST "127.0.0.1:$p/admin/faults" -d "{\"fault\":\"$2\"}" >/dev/null
}

# ---- the node helper: waits for sagas to end (one process for many gids) ----------------------
cat >h.js <<'EOF'
// node h.js wait PORT GID...: prints "GID\tSTATE\tREASON_JSON\tSTEPS_JSON" per gid once the saga is
// committed, compensated or parked (or "GID timeout"/"GID missing" after WAIT_S seconds).
// node h.js field KEY: the value of a top-level key of the JSON on stdin.
const http = require('http');
const [, , cmd, port, ...gids] = process.argv;
if (cmd === 'field') {
  let b = '';
  process.stdin.on('data', (d) => (b += d));
  process.stdin.on('end', () => {
    try { const v = JSON.parse(b)[port]; console.log(typeof v === 'string' ? v : JSON.stringify(v)); }
    catch (e) { console.log('unparsable'); }
  });
  return;
}
const get = (path) => new Promise((res, rej) => {
  const r = http.get({ host: '127.0.0.1', port, path, agent: false }, (s) => {
    let b = '';
    s.on('data', (d) => (b += d));
    s.on('end', () => res({ code: s.statusCode, body: b }));
  });
  r.on('error', rej);
  r.setTimeout(15000, () => r.destroy(new Error('timeout')));
});
const FINAL = ['committed', 'compensated', 'parked'];
async function one(g, deadline) {
  let last = 'missing';
  for (;;) {
    try {
      const r = await get(`/v1/sagas/${g}?wait=5s`);
      if (r.code === 200) {
        const j = JSON.parse(r.body);
        last = j.state;
        if (FINAL.includes(j.state))
          return [g, j.state, JSON.stringify(j.reason), JSON.stringify(j.steps || [])].join('\t');
      }
    } catch (e) { /* coordinator restarting: retry */ }
    if (Date.now() > deadline) return [g, `timeout(${last})`, 'null', '[]'].join('\t');
    await new Promise((r) => setTimeout(r, 50));
  }
}
(async () => {
  const dl = Date.now() + (+process.env.WAIT_S || 60) * 1000;
  const out = await Promise.all(gids.map((g) => one(g, dl)));
  console.log(out.join('\n'));
})();
EOF

# ---- the coordinator ----------------------------------------------------------------------------
"$bin" audit init --dir audit --origin test.example/saga >/dev/null 2>audit.err || die "audit init"
store_url=""
write_config() {
  cport=$(bash "$svc_sh" freeport)
  aport=$(bash "$svc_sh" freeport)
  while [ "$aport" = "$cport" ]; do aport=$(bash "$svc_sh" freeport); done
  cat >saga.yaml <<EOF
listen: 127.0.0.1:$cport
admin_listen: 127.0.0.1:$aport
store: "$store_url"
audit: {dir: $work/audit}
workers: 2
drain: 2s
participants:
  allow: ["127.0.0.1:*"]
defaults:
  timeout: 30s
  call_timeout: 1s
  retry: {initial: 20ms, max: 100ms, max_attempts: 4}
claim_interval: 200ms
lease: 2s
EOF
}
start_coord() { # start_coord [ENV=VALUE...]
  : >coord.out
  env "$@" "$bin" saga --config saga.yaml >coord.out 2>>coord.err &
  pidc=$!
  for _ in $(seq 200); do
    curl -sf "127.0.0.1:$cport/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pidc" 2>/dev/null || die "coordinator exited at start"
    sleep 0.025
  done
  die "coordinator not healthy on $cport"
}
stop_coord() {
  [ -n "$pidc" ] || return 0
  kill -TERM "$pidc" 2>/dev/null
  local rc
  wait "$pidc"
  rc=$?
  pidc=""
  [ "$rc" -eq 0 ] || bad "coordinator exited $rc after SIGTERM"
}

# ---- sagas ----------------------------------------------------------------------------------
declare -A EXPECT AMT FROM TO
ALL=()
ATT=4  # max_attempts
CTO=1s # per-call timeout
spec() { # spec GID AMOUNT FROM TO FAULT_A FAULT_B
  local fa="" fb=""
  [ -n "${5:-}" ] && fa=",\"fault\":\"$5\""
  [ -n "${6:-}" ] && fb=",\"fault\":\"$6\""
  printf '{"gid":"%s","timeout":"30s","retry":{"initial":"20ms","max":"100ms","max_attempts":%s},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","steps":[{"name":"debit","action":"http://127.0.0.1:%s/debit","compensate":"http://127.0.0.1:%s/debit/undo","payload":{"account":"%s","amount":%s%s},"timeout":"%s"},{"name":"credit","action":"http://127.0.0.1:%s/credit","compensate":"http://127.0.0.1:%s/credit/undo","payload":{"account":"%s","amount":%s%s},"timeout":"%s"}]}' \
    "$1" "$ATT" "$porta" "$porta" "$3" "$2" "$fa" "$CTO" "$portb" "$portb" "$4" "$2" "$fb" "$CTO"
}
# submit GID AMOUNT FROM TO EXPECT [FAULT_A] [FAULT_B]: POST without waiting; sets $code
submit() {
  local g=$1
  EXPECT[$g]=$5 AMT[$g]=$2 FROM[$g]=$3 TO[$g]=$4
  ALL+=("$g")
  code=$(curl -s -o "sub.$g" -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$cport/v1/sagas" --data-binary "$(spec "$1" "$2" "$3" "$4" "${6:-}" "${7:-}")")
}
resubmit() { # resubmit GID: the same spec again (idempotent); sets $code
  local g=$1
  code=$(curl -s -o "sub.$g" -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$cport/v1/sagas" --data-binary "$(spec "$g" "${AMT[$g]}" "${FROM[$g]}" \
    "${TO[$g]}" "$(fa_of "$g")" "$(fb_of "$g")")")
}
declare -A FA FB
fa_of() { echo "${FA[$1]:-}"; }
fb_of() { echo "${FB[$1]:-}"; }
sub() { # sub GID AMOUNT FROM TO EXPECT [FAULT_A] [FAULT_B]: submit and check 201
  FA[$1]=${6:-} FB[$1]=${7:-}
  submit "$@"
  [ "$code" = 201 ] || bad "submit $1: status $code $(cat "sub.$1" 2>/dev/null)"
}

# wait_check CASE GID...: wait until final, check the expected state and the invariants
wait_check() {
  local case=$1
  shift
  local out g st reason rest okc=1
  out=$(WAIT_S=${WAIT_S:-60} node h.js wait "$cport" "$@")
  while IFS=$'\t' read -r g st reason rest; do
    [ -n "$g" ] || continue
    STATE[$g]=$st
    REASON[$g]=$reason
    case $st in
    committed | compensated) ;;
    parked)
      if [ "$reason" = null ] || [ "$reason" = '""' ]; then
        bad "$case: $g parked without a reason"
        okc=0
      fi
      ;;
    *)
      bad "$case: $g did not end: $st"
      okc=0
      continue
      ;;
    esac
    local want=${EXPECT[$g]}
    if [ "$want" != any ] && [ "$want" != "$st" ]; then
      bad "$case: $g ended $st, want $want (reason $reason; steps $rest)"
      okc=0
    fi
  done <<<"$out"
  check_money "$case" && check_movements "$case" "$@" || okc=0
  [ "$okc" = 1 ] && ok "$case: $# saga(s) ended as expected, invariants hold"
}
declare -A STATE REASON

sum_of() { # the "sum" of a bank's balances
  curl -sf "127.0.0.1:$1/admin/balances" | sed -n 's/.*"sum":\(-\{0,1\}[0-9]*\).*/\1/p'
}
# check_money CASE: the books agree with the balances in each bank (initial + movements), and
# money is conserved across the banks: the only money "in flight" is that of parked sagas (an
# operator's case), so sum A + sum B = TOTAL + the net of the parked sagas' movements.
check_money() {
  local sa sb ma mb parked="" g pn
  sa=$(sum_of "$porta")
  sb=$(sum_of "$portb")
  ma=$(psqlq bank_a "SELECT coalesce(sum(amount), 0) FROM movements")
  mb=$(psqlq bank_b "SELECT coalesce(sum(amount), 0) FROM movements")
  for g in "${ALL[@]}"; do
    [ "${STATE[$g]:-}" = parked ] && parked="$parked'$g',"
  done
  pn=0
  if [ -n "$parked" ]; then
    pn=$(($(psqlq bank_a "SELECT coalesce(sum(amount), 0) FROM movements WHERE gid IN \
(${parked%,})") + $(psqlq bank_b "SELECT coalesce(sum(amount), 0) FROM movements WHERE gid IN \
(${parked%,})")))
  fi
  if [ -z "$sa" ] || [ -z "$sb" ] || [ -z "$ma" ] || [ -z "$mb" ]; then
    bad "$1: balances or movements unavailable (A '$sa' B '$sb')"
    return 1
  fi
  if [ "$sa" -ne $((NACC * INIT + ma)) ] || [ "$sb" -ne $((NACC * INIT + mb)) ]; then
    bad "$1: books disagree: A $sa vs initial + movements $((NACC * INIT + ma)), B $sb vs \
$((NACC * INIT + mb))"
    return 1
  fi
  if [ $((sa + sb)) -ne $((TOTAL + pn)) ]; then
    bad "$1: money not conserved: A $sa + B $sb != $TOTAL + parked net $pn"
    return 1
  fi
  return 0
}
# check_movements CASE GID...: no double effect anywhere; per gid the net effect of its state
check_movements() {
  local case=$1 db dup
  shift
  for db in bank_a bank_b; do
    dup=$(psqlq "$db" "SELECT gid || '/' || branch || '/' || op FROM movements GROUP BY gid, \
branch, op HAVING count(*) > 1 LIMIT 5") || {
      bad "$case: cannot query $db"
      return 1
    }
    if [ -n "$dup" ]; then
      bad "$case: a step ran twice with effect in $db: $dup"
      return 1
    fi
  done
  local g in_list rc=0
  in_list=$(printf "'%s'," "$@")
  declare -A NA NB CA CB
  while IFS='|' read -r g n c; do
    [ -n "$g" ] && NA[$g]=$n CA[$g]=$c
  done < <(psqlq bank_a "SELECT gid, sum(amount), count(*) FROM movements WHERE gid IN \
(${in_list%,}) GROUP BY gid")
  while IFS='|' read -r g n c; do
    [ -n "$g" ] && NB[$g]=$n CB[$g]=$c
  done < <(psqlq bank_b "SELECT gid, sum(amount), count(*) FROM movements WHERE gid IN \
(${in_list%,}) GROUP BY gid")
  for g in "$@"; do
    local na=${NA[$g]:-0} nb=${NB[$g]:-0} ca=${CA[$g]:-0} cb=${CB[$g]:-0} amt=${AMT[$g]}
    case ${STATE[$g]:-} in
    committed)
      if [ "$na" -ne $((-amt)) ] || [ "$nb" -ne "$amt" ] || [ "$ca" -ne 1 ] || [ "$cb" -ne 1 ]; then
        bad "$case: committed $g: A net $na ($ca rows), B net $nb ($cb rows), amount $amt"
        rc=1
      fi
      ;;
    compensated)
      if [ "$na" -ne 0 ] || [ "$nb" -ne 0 ] || [ $((ca % 2)) -ne 0 ] || [ $((cb % 2)) -ne 0 ]; then
        bad "$case: compensated $g: A net $na ($ca rows), B net $nb ($cb rows)"
        rc=1
      fi
      ;;
    esac
  done
  return $rc
}

# ---- the cases ---------------------------------------------------------------------------------
run_cases() { # run_cases LABEL
  local L=$1 g i P
  write_config
  start_coord
  ok "$L: coordinator on $cport (admin $aport), store ${store_url%%:*}"

  # happy transfers, concurrently
  local gs=()
  for i in $(seq 8); do
    g=$L-happy-$i
    sub "$g" $((100 + i)) "A$((1 + i % NACC))" "B$((1 + (i + 1) % NACC))" committed
    gs+=("$g")
  done
  wait_check "$L happy" "${gs[@]}"

  # idempotent submission: same spec 200, other spec 409
  resubmit "$L-happy-1"
  [ "$code" = 200 ] && ok "$L: same gid, same spec: 200" || bad "$L: resubmit same spec: $code"
  code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$cport/v1/sagas" --data-binary "$(spec "$L-happy-1" 999 A1 B1)")
  [ "$code" = 409 ] && ok "$L: same gid, other spec: 409" || bad "$L: other spec: $code"
  code=$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$cport/v1/sagas/$L-nosuch")
  [ "$code" = 404 ] && ok "$L: unknown gid: 404" || bad "$L: unknown gid: $code"
  code=$(curl -s -o rej.txt -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$cport/v1/sagas" --data-binary \
    '{"steps":[{"action":"http://10.9.9.9:1/x","compensate":"http://10.9.9.9:1/y"}]}')
  [ "$code" = 400 ] && ok "$L: participant outside the allow-list: 400" ||
    bad "$L: host outside the allow-list: $code"
  code=$(curl -s -o rej.txt -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$cport/v1/sagas" --data-binary '{"bogus":1,"steps":[]}')
  [ "$code" = 400 ] && grep -q bogus rej.txt && ok "$L: unknown key refused naming it" ||
    bad "$L: unknown key: $code $(cat rej.txt)"

  # definite failures -> compensated
  sub "$L-poor" $((INIT * 5)) A1 B1 compensated           # insufficient funds at A
  sub "$L-noacct" 100 A2 B-none compensated              # credit refused (unknown account)
  sub "$L-fail" 100 A3 B3 compensated "" "fail"          # participant B answers 409
  wait_check "$L definite failures" "$L-poor" "$L-noacct" "$L-fail"

  # unknown outcomes that heal: 5xx then ok, timeout then ok, lost response, duplicate
  sub "$L-5xx" 101 A1 B2 committed "5xx:2" "5xx:2"
  sub "$L-timeout" 102 A2 B3 committed "" "timeout:1:1500"
  sub "$L-lost" 103 A3 B4 committed "lost:2" "lost:1"
  sub "$L-dup" 104 A4 B1 committed "dup" "dup"
  sub "$L-mixed" 105 A1 B1 committed "delay_ms:50,lost:1" "5xx:1,lost:1"
  wait_check "$L 5xx/timeout/lost/dup then ok" "$L-5xx" "$L-timeout" "$L-lost" "$L-dup" "$L-mixed"

  # compensation first: every credit action times out (and lands late, after the
  # compensation): the coordinator gives up (backward), compensates the credit (null
  # compensation) and the debit; the late actions are hanging and change nothing
  CTO=300ms sub "$L-late" 106 A2 B2 compensated "" "late:100:2500"
  sub "$L-5xxall" 107 A3 B3 compensated "" "5xx:100"
  wait_check "$L compensation first (null compensation)" "$L-late" "$L-5xxall"
  sleep 2.8 # the late actions land now (2.5 s after each attempt)
  local lateb
  lateb=$(psqlq bank_b "SELECT count(*) FROM movements WHERE gid = '$L-late'")
  [ "$lateb" = 0 ] && ok "$L: late actions after the compensation were hanging (no effect)" ||
    bad "$L: a late action took effect ($lateb movements)"
  lateb=$(psqlq bank_b "SELECT reason FROM dengbao_saga_barrier WHERE gid = '$L-late' AND \
op = 'action'")
  [ "$lateb" = compensate ] && ok "$L: the barrier recorded the null compensation" ||
    bad "$L: barrier row for the late action: '$lateb'"
  check_money "$L hanging" && check_movements "$L hanging" "$L-late"

  # a compensation that keeps failing -> parked with a reason; admin retry after the fix
  gfault A "compensate/5xx:1000"
  sub "$L-park" 108 A4 B4 parked "" "fail"
  wait_check "$L compensation keeps failing -> parked" "$L-park"
  gfault A ""
  code=$(curl -s -o adm.txt -w '%{http_code}' "127.0.0.1:$aport/v1/admin/sagas?state=parked")
  [ "$code" = 200 ] && grep -q "$L-park" adm.txt && ok "$L: admin lists the parked saga" ||
    bad "$L: admin list parked: $code $(head -c 300 adm.txt)"
  code=$(curl -s -o adm.txt -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$aport/v1/admin/sagas/$L-park/retry" -d '{"reason":"participant A fixed"}')
  [ "$code" = 200 ] && ok "$L: admin retry accepted" || bad "$L: admin retry: $code $(cat adm.txt)"
  EXPECT[$L-park]=compensated
  wait_check "$L parked -> retried -> compensated" "$L-park"

  # a compensation that is refused -> parked "compensation refused"; resolved by hand
  gfault A "compensate/fail"
  sub "$L-refused" 109 A1 B2 parked "" "fail"
  wait_check "$L compensation refused -> parked" "$L-refused"
  gfault A ""
  grep -q "compensation refused" <<<"${REASON[$L-refused]:-}" &&
    ok "$L: parked reason names the refusal: ${REASON[$L-refused]}" ||
    bad "$L: parked reason: ${REASON[$L-refused]:-}"
  # make the books right by hand (the debit stayed), then resolve as compensated
  psqlq bank_a "UPDATE accounts SET balance = balance + 109 WHERE id = 'A1'; INSERT INTO \
movements (trace_id, gid, branch, op, account, amount, pre_balance, post_balance) SELECT '', \
'$L-refused', '0', 'compensate', 'A1', 109, balance - 109, balance FROM accounts WHERE id = 'A1'" \
    >/dev/null
  code=$(curl -s -o adm.txt -w '%{http_code}' -XPOST -H 'Content-Type: application/json' \
    "127.0.0.1:$aport/v1/admin/sagas/$L-refused/resolve" \
    -d '{"state":"compensated","reason":"credited back by hand"}')
  [ "$code" = 200 ] && ok "$L: admin resolve accepted" || bad "$L: admin resolve: $code $(cat adm.txt)"
  EXPECT[$L-refused]=compensated
  wait_check "$L parked -> resolved" "$L-refused"

  # coordinator kill -9 at every crash point, then restart: every saga ends final
  for P in after_create before_call after_call after_store before_final after_final; do
    stop_coord
    start_coord "DENGBAO_SAGA_CRASH=$P:2"
    gs=()
    for i in 1 2 3 4 5; do
      g=$L-crash-$P-$i
      local e=committed fb=""
      [ "$i" = 3 ] && e=compensated fb=fail
      [ "$i" = 4 ] && fb="lost:1"
      FA[$g]="" FB[$g]=$fb
      submit "$g" $((200 + i)) "A$((1 + i % NACC))" "B$((1 + (i + 1) % NACC))" "$e" "" "$fb"
      gs+=("$g")
    done
    local rc=0
    for _ in $(seq 200); do kill -0 "$pidc" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pidc" 2>/dev/null; then
      bad "$L: crash point $P:2 never reached"
      kill -KILL "$pidc"
    fi
    { wait "$pidc"; } 2>/dev/null # (bash would report the SIGKILL on stderr)
    rc=$?
    pidc=""
    [ "$rc" = 137 ] || bad "$L: coordinator at $P exited $rc, want 137 (SIGKILL)"
    start_coord
    local resub=1
    for g in "${gs[@]}"; do
      resubmit "$g"
      [ "$code" = 200 ] || [ "$code" = 201 ] || {
        resub=0
        bad "$L: resubmit $g after the crash at $P: $code"
      }
    done
    [ "$resub" = 1 ] && ok "$L: kill -9 at $P, restart, resubmissions idempotent"
    wait_check "$L crash at $P" "${gs[@]}"
  done

  # PostgreSQL restart while sagas run (participants, and the store on the PostgreSQL run)
  gs=()
  for i in $(seq 6); do
    g=$L-pgrestart-$i
    FA[$g]="delay_ms:300" FB[$g]="delay_ms:300"
    # a retry horizon longer than the restart (40 attempts, <= 100 ms apart)
    ATT=40 submit "$g" $((300 + i)) "A$((1 + i % NACC))" "B$((1 + i % NACC))" any \
      "delay_ms:300" "delay_ms:300"
    [ "$code" = 201 ] || bad "submit $g: $code"
    gs+=("$g")
  done
  sleep 0.2
  bash "$svc_sh" stop "$svc" >/dev/null 2>&1
  sleep 0.5
  bash "$svc_sh" start postgres "$svc" "$pgport" >/dev/null || die "PostgreSQL did not restart"
  ok "$L: PostgreSQL restarted on $pgport while sagas ran"
  WAIT_S=90 wait_check "$L PostgreSQL restart" "${gs[@]}"
  local n_final=0
  for g in "${gs[@]}"; do
    case ${STATE[$g]:-} in committed | compensated) n_final=$((n_final + 1)) ;; esac
  done
  echo "     ($n_final of ${#gs[@]} ended committed/compensated, the rest parked with a reason)"

  # the whole run at once: no double effect anywhere, money conserved
  check_money "$L all" && check_movements "$L all" "${ALL[@]}" &&
    ok "$L: all ${#ALL[@]} sagas: money conserved, no double effect"
  stop_coord
}

store_url="sqlite:$work/store.db"
run_cases lite
store_url=$(ci store)
run_cases pg

# ---- barrier cleanup --------------------------------------------------------------------------
before=$(psqlq bank_a "SELECT count(*) FROM dengbao_saga_barrier")
sleep 1.1
out=$(curl -s -XPOST "127.0.0.1:$porta/admin/cleanup" -d '{"retention_s":1}')
left=$(psqlq bank_a "SELECT count(*) FROM dengbao_saga_barrier WHERE created_at < now() - \
interval '1 second'")
if grep -q '"deleted":' <<<"$out" && [ "$before" -gt 0 ] && [ "$left" = 0 ]; then
  ok "barrier cleanup: $out of $before rows, none older than the retention left"
else
  bad "barrier cleanup: $out (before $before, old rows left $left)"
fi
out=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "127.0.0.1:$porta/admin/cleanup" \
  -d '{"retention_s":0}')
[ "$out" = 400 ] && ok "barrier cleanup with retention 0 refused" || bad "cleanup retention 0: $out"

# ---- audit --------------------------------------------------------------------------------------
if "$bin" audit verify --dir audit >verify.txt 2>&1; then
  ok "audit verify of the coordinator's log"
else
  bad "audit verify: $(tail -n 3 verify.txt)"
fi
size=$("$bin" audit checkpoint --dir audit 2>/dev/null | sed -n 2p)
"$bin" audit get --dir audit --index 0 --count "${size:-1}" >records.txt 2>get.err || true
g=lite-happy-1
nrec=$(grep -c "\"$g\"" records.txt || true)
types=$(grep "\"$g\"" records.txt | grep -o '"event_type":"saga\.[a-z_.]*"' | sort -u | tr '\n' ' ')
if [ "${nrec:-0}" -ge 4 ] && grep -q "saga.committed" <<<"$types"; then
  ok "audit: $nrec records for $g: $types"
else
  bad "audit: records for $g: ${nrec:-0} ($types) $(head -c 200 get.err)"
fi
g=lite-park
types=$(grep "\"$g\"" records.txt | grep -o '"event_type":"saga\.[a-z_.]*"' | sort -u | tr '\n' ' ')
grep -q "saga.parked" <<<"$types" && ok "audit: $g has parked and admin records: $types" ||
  bad "audit: $g: $types"

# ---- clean stop of the participants (under ASan this is where leaks would show) ------------------
for v in pida pidb; do
  p=${!v}
  kill -TERM "$p"
  wait "$p"
  rc=$?
  printf -v "$v" '%s' ""
  [ "$rc" = 0 ] && ok "participant $v stopped cleanly on SIGTERM" || bad "participant exit $rc"
done

echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
