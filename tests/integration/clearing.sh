#!/usr/bin/env bash
# clearing.sh DENGBAO: the clearing daemon end to end on loopback (issue 8).
#
# Creates an audit log with `dengbao audit init`, checks that a bad configuration is refused
# (exit 2, the key named), starts `dengbao clearing` with two shards on kernel-chosen ports
# (port 0; the daemon prints them), and drives it over both faces: HTTP/JSON with curl (accounts
# opened, deposits, custody transfers, orders, fills, a cancel, rejects with their reasons, bad
# JSON refused with 400 naming the field, queries of accounts, positions and totals, /metrics,
# /healthz) and the binary protocol with `dengbao clearing send` (pipelined, answers in request
# order across both shards) plus raw bytes through bash's /dev/tcp (a bad frame gets an ERROR
# frame, then the connection closes). Then EOD, a graceful stop (SIGTERM, exit 0), `clearing
# replay --from-scratch` (consistent), `clearing settle`, `clearing reconcile` (balanced; a
# tampered settlement file is refused with exit 1), `audit verify`, and the audit records: one
# "clearing.movement" per fund movement with pre and post balances, and a "clearing.eod".
# A restart recovers the same state. Every check prints "ok - ..." or fails the script.
set -euo pipefail

bin=$(realpath "$1")
work=$(mktemp -d /tmp/dbao-clearing-XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

passes=0
fail() { echo "FAIL - $*" >&2; [ -f err.txt ] && sed 's/^/  clearing: /' err.txt >&2; exit 1; }
ok() { echo "ok - $*"; passes=$((passes + 1)); }

"$bin" audit init --dir audit --origin test.example/clearing >/dev/null

cat >instruments.yaml <<'EOF'
- {security: "600000", tick: "0.01", lot: 100, band: ["9.00", "11.00"]}
- {security: "000001", tick: "0.01", lot: 100}
- {security: "830799", tick: "0.05", lot: 100}
EOF
cat >c.yaml <<'EOF'
data_dir: data
shards: 2
listen: {host: 127.0.0.1, port: 0}
http: {host: 127.0.0.1, port: 0}
journal: {segment_size: 1m, snapshot_every: 5, keep: 2}
audit: {dir: audit}
fees: {commission_ppm: 250, commission_min: "5.00", stamp_ppm: 500, transfer_ppm: 10}
instruments: instruments.yaml
EOF

# A bad configuration is refused, naming the key and line.
sed 's/^shards: 2/shards: 2\nshardz: 3/' c.yaml >bad.yaml
set +e
"$bin" clearing --config bad.yaml --check >/dev/null 2>bad.txt
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "shardz" bad.txt || fail "unknown key accepted (rc $rc)"
ok "unknown configuration key refused: $(cat bad.txt)"
printf 'data_dir: d\nhttp: {port: 0}\ninstruments: [{security: "600000", tick: 0.001}]\n' >bad2.yaml
set +e
"$bin" clearing --config bad2.yaml --check >/dev/null 2>bad.txt
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "tick" bad.txt || fail "a tick of 0.001 yuan accepted (rc $rc)"
ok "sub-fen tick refused"
"$bin" clearing --config c.yaml --check | grep -q "valid (2 shards, 3 instruments)" ||
  fail "--check"
ok "configuration valid"

start() {
  : >err.txt
  "$bin" clearing --config "${CFG:-c.yaml}" 2>err.txt &
  pid=$!
  for _ in $(seq 200); do
    grep -q "listening" err.txt && break
    kill -0 "$pid" 2>/dev/null || fail "the daemon exited at start"
    sleep 0.05
  done
  grep -q "listening" err.txt || fail "the daemon did not start"
  tcp=$(sed -n 's/.*listening tcp 127.0.0.1:\([0-9]*\) .*/\1/p' err.txt)
  http=$(sed -n 's/.*http 127.0.0.1:\([0-9]*\)$/\1/p' err.txt)
  H="http://127.0.0.1:$http"
}
stop() { # stop [WANT-EXIT-STATUS]
  kill -TERM "$pid"
  set +e
  wait "$pid"
  local rc=$?
  set -e
  pid=""
  [ "$rc" -eq "${1:-0}" ] || fail "the daemon exited $rc after SIGTERM"
}
start
ok "daemon started (tcp $tcp, http $http)"

# post JSON -> body in $out, status in $code
post() {
  code=$(curl -s -o out.json -w '%{http_code}' -X POST --data-binary "$1" "$H/v1/events")
  out=$(cat out.json)
}
expect() { # expect JSON WANT-SUBSTRING description
  post "$1"
  [[ "$out" == *"$2"* ]] || fail "$3: got $code $out"
  ok "$3"
}

TR=4bf92f3577b34da6a3ce929d0e0e4736
expect '{"type":"open","account":1001,"member":1}' '"status":"OK"' "open 1001 (shard 1)"
expect '{"type":"open","account":1002,"member":2}' '"status":"OK"' "open 1002 (shard 0)"
expect '{"type":"open","account":1001,"member":1}' '"reject":"ACCOUNT"' "second open refused"
expect '{"type":"deposit","account":1001,"amount":"100000.00","trace_id":"'$TR'"}' \
  '"cash_available":"100000.00"' "deposit 100000.00"
expect '{"type":"deposit","account":1002,"amount_fen":5000000}' '"cash_available":"50000.00"' \
  "deposit in fen"
expect '{"type":"deposit","account":9999,"amount":"1.00"}' '"reject":"ACCOUNT"' \
  "deposit to an unknown account refused"
expect '{"type":"xfer_in","account":1002,"security":"000001","qty":1000}' '"status":"OK"' \
  "custody transfer in"
expect '{"type":"order","account":1001,"order_id":1,"side":"B","security":"600000","price":"10.25","qty":1000}' \
  '"open_qty":1000' "buy order freezes cash"
[[ "$out" == *'"cash_frozen":"10255.10"'* ]] || fail "frozen amount: $out"
ok "frozen = price*qty + max fee (10250.00 + 5.00 + 0.10)"
expect '{"type":"order","account":1001,"order_id":1,"side":"B","security":"600000","price":"10.25","qty":100}' \
  '"reject":"DUP_ORDER"' "duplicate order id refused"
expect '{"type":"order","account":1001,"order_id":2,"side":"B","security":"600000","price":"12.00","qty":100}' \
  '"reject":"TICK"' "price outside the band refused"
expect '{"type":"order","account":1001,"order_id":3,"side":"B","security":"600000","price":"10.25","qty":50}' \
  '"reject":"LOT"' "odd lot buy refused"
expect '{"type":"order","account":1001,"order_id":4,"side":"B","security":"600001","price":"10.25","qty":100}' \
  '"reject":"INSTRUMENT"' "unknown security refused"
expect '{"type":"order","account":1001,"order_id":5,"side":"B","security":"600000","price":"10.00","qty":100000}' \
  '"reject":"CASH"' "buy beyond the cash refused"
expect '{"type":"order","account":1002,"order_id":1,"side":"S","security":"000001","price":"15.00","qty":2000}' \
  '"reject":"POSITION"' "sell beyond the position refused"
expect '{"type":"order","account":1002,"order_id":2,"side":"S","security":"000001","price":"15.00","qty":600}' \
  '"open_qty":600' "sell order freezes shares"
expect '{"type":"fill","account":1001,"order_id":1,"exec_id":77,"price":"10.20","qty":600}' \
  '"open_qty":400' "partial fill"
expect '{"type":"fill","account":1001,"order_id":1,"exec_id":77,"price":"10.20","qty":100}' \
  '"reject":"DUP_EXEC"' "duplicate execution id refused"
expect '{"type":"fill","account":1001,"order_id":1,"exec_id":78,"price":"10.30","qty":100}' \
  '"reject":"OVERFILL"' "fill above the buy limit refused"
expect '{"type":"cancel","account":1001,"order_id":1}' '"cash_frozen":"0.00"' \
  "cancel unfreezes the rest"
expect '{"type":"fill","account":1002,"order_id":2,"exec_id":1,"price":"15.00","qty":600}' \
  '"open_qty":0' "sell filled"
expect '{"type":"withdraw","account":1002,"amount":"1000000.00"}' '"reject":"CASH"' \
  "withdrawal beyond the cash refused"
expect '{"type":"withdraw","account":1002,"amount":"100.00"}' '"status":"OK"' "withdrawal"

# Bad JSON is refused with 400 naming the field, never applied.
for bad in '{"type":"deposit","account":1001,"amount":1.5}' \
  '{"type":"deposit","account":1001,"amount":"1.001"}' \
  '{"type":"deposit","account":1001,"amount":"1.00","color":"red"}' \
  '{"type":"teleport","account":1001}' 'not json' \
  '{"type":"order","account":1001,"order_id":9,"side":"X","security":"600000","price":"10.00","qty":100}'; do
  post "$bad"
  [ "$code" = 400 ] && [[ "$out" == *'"error"'* ]] || fail "bad event accepted: $bad -> $code $out"
done
ok "bad JSON events refused with 400 (float, 3 decimals, unknown key, type, syntax, side)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$H/v1/events")
[ "$code" = 405 ] || fail "GET /v1/events gave $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "$H/v1/nothing")
[ "$code" = 404 ] || fail "GET /v1/nothing gave $code"
ok "wrong method 405, unknown path 404"

acct=$(curl -s "$H/v1/accounts/1001")
# 100000 - 600*10.20 (6120.00) - fee max(5.00, 0.025% = 1.53) - transfer 0.06 = 93874.94
[[ "$acct" == *'"cash_available":"93874.94"'* && "$acct" == *'"cash_frozen":"0.00"'* ]] ||
  fail "account 1001: $acct"
ok "account 1001 balances after buy fill and cancel: $acct"
pos=$(curl -s "$H/v1/positions/1001/600000")
[[ "$pos" == *'"pending":600'* ]] || fail "position: $pos"
ok "bought shares pending until EOD (T+1): $pos"
pos=$(curl -s "$H/v1/positions/1002/000001")
[[ "$pos" == *'"available":400'* ]] || fail "position 1002: $pos"
ok "sold shares left the position: $pos"
code=$(curl -s -o /dev/null -w '%{http_code}' "$H/v1/accounts/424242")
[ "$code" = 404 ] || fail "unknown account gave $code"
ok "unknown account 404"

# Binary protocol: pipelined, one connection, accounts on both shards, answers in order.
{
  for i in $(seq 1 40); do
    a=$((2000 + i))
    echo '{"type":"open","account":'$a',"member":3}'
    echo '{"type":"deposit","account":'$a',"amount":"1000.00"}'
    echo '{"type":"withdraw","account":'$a',"amount":"2000.00"}'
  done
} >bin.ndjson
"$bin" clearing send --connect "127.0.0.1:$tcp" --window 32 <bin.ndjson >bin.out ||
  fail "clearing send failed: $(tail -3 bin.out)"
[ "$(wc -l <bin.out)" -eq 120 ] || fail "binary answers: $(wc -l <bin.out)"
seq 1 120 >want.ids
cut -d' ' -f2 bin.out >got.ids
cmp -s want.ids got.ids || fail "binary answers out of request order"
ok "120 pipelined binary events answered in request order across 2 shards"
[ "$(grep -c 'type=3 reject=CASH' bin.out)" -eq 40 ] || fail "withdraw rejects: $(head -3 bin.out)"
[ "$(grep -c 'type=2 reject=OK account=[0-9]* avail=100000 ' bin.out)" -eq 40 ] ||
  fail "deposits: $(head -3 bin.out)"
ok "binary results carry rejects and balances in fen"

# A bad frame gets an ERROR frame (type 3) and the connection is closed.
badframe() { # badframe HEXBYTES -> prints the answer as hex
  exec 3<>"/dev/tcp/127.0.0.1/$tcp"
  printf "$1" >&3
  timeout 5 cat <&3 | od -An -tx1 | tr -d ' \n'
  exec 3>&- 3<&- || true
}
ans=$(badframe '\x08\x00\x00\x00\x09\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00')
[ "${ans:8:4}" = 0300 ] || fail "bad message type: answer '$ans'"
ok "unknown message type: ERROR frame then close"
ans=$(badframe '\xff\xff\x00\x00\x01\x00\x01\x00')
[ "${ans:8:4}" = 0300 ] || fail "huge length: answer '$ans'"
ok "oversized length: ERROR frame then close"
ans=$(badframe '\x08\x00\x00\x00\x01\x00\x09\x00\x05\x00\x00\x00\x00\x00\x00\x00')
[ "${ans:8:4}" = 0300 ] || fail "newer version: answer '$ans'"
ok "unknown protocol version: ERROR frame then close"

curl -s "$H/metrics" >metrics.txt
grep -q 'dengbao_clearing_bad_frames_total 3' metrics.txt || fail "metrics: $(cat metrics.txt)"
grep -q 'dengbao_clearing_events_total{shard="1"}' metrics.txt || fail "metrics shards"
ok "metrics count events per shard and bad frames"
[ "$(curl -s "$H/healthz")" = '{"status":"ok"}' ] || fail "healthz"
ok "healthz ok"

expect '{"type":"eod","date":20261130}' '"status":"OK"' "EOD on every shard"
expect '{"type":"eod","date":20261130}' '"reject":"DATE"' "a second EOD of the same day refused"
pos=$(curl -s "$H/v1/positions/1001/600000")
[[ "$pos" == *'"available":600'* ]] || fail "T+1: $pos"
ok "EOD made the bought shares available: $pos"
tot=$(curl -s "$H/v1/totals")
[[ "$tot" == *'"balanced":true}' ]] || fail "totals: $tot"
ok "totals balanced over the shards"

stop
ok "SIGTERM: drained, snapshot, exit 0"

"$bin" clearing replay --config c.yaml --from-scratch >replay.txt || fail "replay: $(cat replay.txt)"
[ "$(grep -c ': consistent' replay.txt)" -eq 2 ] || fail "replay: $(cat replay.txt)"
ok "replay: snapshot-based load equals the from-scratch replay on both shards"
h1=$(grep 'shard 1: last seq' replay.txt)
"$bin" clearing settle --config c.yaml --out settle.txt >settle.out || fail "settle"
grep -q "trade_date 20261130 rows 2" settle.out || fail "settle: $(cat settle.out)"
ok "settle: $(head -1 settle.out)"
"$bin" clearing reconcile --config c.yaml --settlement settle.txt >rec.txt ||
  fail "reconcile: $(cat rec.txt)"
grep -q "reconcile: balanced" rec.txt || fail "reconcile"
ok "reconcile: balanced to the fen, settlement digest verified"
sed 's/^\(.*\)6120\(.*\)$/\16121\2/' settle.txt >tampered.txt
if cmp -s settle.txt tampered.txt; then fail "tampering did not change the file"; fi
set +e
"$bin" clearing reconcile --config c.yaml --settlement tampered.txt >rec2.txt 2>&1
rc=$?
set -e
[ "$rc" -eq 1 ] || fail "tampered settlement accepted (rc $rc): $(cat rec2.txt)"
ok "tampered settlement file refused (exit 1)"

"$bin" audit verify --dir audit >verify.txt 2>&1 || fail "audit verify: $(cat verify.txt)"
ok "audit verify: $(grep '^OK' verify.txt)"
n=$(sed -n 's/^OK records=\([0-9]*\).*/\1/p' verify.txt)
"$bin" audit get --dir audit --index 0 --count "$n" >records.ndjson
grep -q '"event_type":"clearing.movement"' records.ndjson || fail "no movement records"
dep=$(grep '"action":"deposit"' records.ndjson | grep '"object":"1001"' || true)
[[ "$dep" == *'"pre_balance":0'* && "$dep" == *'"post_balance":10000000'* &&
  "$dep" == *'"post_balance_yuan":"100000.00"'* && "$dep" == *"$TR"* ]] ||
  fail "deposit record: $dep"
ok "deposit movement audited with trace id, pre and post balance (fen and yuan)"
buy=$(grep '"action":"buy"' records.ndjson || true)
[[ "$buy" == *'"amount":-612000'* && "$buy" == *'"pre_balance":10000000'* &&
  "$buy" == *'"post_balance":9388000'* ]] || fail "buy record: $buy"
ok "buy movement audited: -6120.00 from 100000.00 to 93880.00"
[ "$(grep -c '"action":"fee"' records.ndjson)" -ge 2 ] || fail "fee records"
grep -q '"event_type":"clearing.eod"' records.ndjson || fail "no eod record"
ok "fee movements and the EOD settlement totals are audited"
moves=$(grep -c '"event_type":"clearing.movement"' records.ndjson)
# 42 deposits (1001, 1002, 40 binary), 1 withdrawal, the buy fill (buy + fee), the sell fill
# (sell + fee): 47; rejected events and freezes move nothing
[ "$moves" -eq 47 ] || fail "movement count $moves, want 47"
ok "exactly one audit record per fund movement (47)"

# Restart: the same state is recovered (from the shutdown snapshot).
start
acct2=$(curl -s "$H/v1/accounts/1001")
[[ "$acct2" == *'"cash_available":"93874.94"'* ]] || fail "after restart: $acct2"
grep -q "shard 1 recovered at seq" err.txt || fail "recovery note"
ok "restart recovered the state: $(grep 'shard 1 recovered' err.txt)"
stop
"$bin" clearing replay --config c.yaml --shard 1 >replay2.txt
[ "$(grep 'shard 1: last seq' replay2.txt)" = "$h1" ] || fail "state changed across restart"
ok "state hash unchanged across the restart"

# Fail closed: the audit log's disk fails under the daemon (the log's fault layer,
# DENGBAO_AUDIT_FAULT=eio-sync=N). Events are acknowledged until then and refused after (HTTP
# 503, binary ERROR code 5), /healthz says 503, the daemon exits 3, and every acknowledged
# deposit is in the journal.
"$bin" audit init --dir audit2 --origin test.example/clearing2 >/dev/null
sed 's/^data_dir: data/data_dir: data2/; s/dir: audit}/dir: audit2}/' c.yaml >c2.yaml
CFG=c2.yaml DENGBAO_AUDIT_FAULT=eio-sync=8 start
post '{"type":"open","account":7,"member":1}'
acked=0 seen503=0
for i in $(seq 1 15); do
  post '{"type":"deposit","account":7,"amount":"1.00"}'
  if [ "$code" = 200 ]; then
    [ "$seen503" = 0 ] || fail "a deposit was acknowledged after the audit log failed"
    acked=$((acked + 1))
  elif [ "$code" = 503 ]; then
    seen503=1
  else
    fail "deposit on a failing audit log: status $code $out"
  fi
done
[ "$seen503" = 1 ] && [ "$acked" -ge 1 ] || fail "fail closed: acked $acked, 503 seen $seen503"
ok "audit log failure: $acked deposits acknowledged, then refused with 503"
code=$(curl -s -o /dev/null -w '%{http_code}' "$H/healthz")
[ "$code" = 503 ] || fail "healthz on a failed shard: $code"
ok "healthz 503 after the failure"
echo '{"type":"deposit","account":7,"amount":"1.00"}' |
  "$bin" clearing send --connect "127.0.0.1:$tcp" >fc.out 2>&1 || true
grep -q '^error 1 code=5 ' fc.out || fail "binary on a failed shard: $(cat fc.out)"
ok "binary protocol on a failed shard: ERROR code 5 ($(cut -c1-60 fc.out | head -1)...)"
stop 3
ok "the daemon exits 3 after failing closed"
in_journal=$("$bin" clearing dump --config c2.yaml | awk '$3 == 2 && $4 == 7' | wc -l)
[ "$in_journal" -ge "$acked" ] || fail "acked $acked deposits, $in_journal in the journal"
ok "every acknowledged deposit is in the journal ($acked acked, $in_journal journaled)"

echo "PASS - clearing.sh: $passes checks"
