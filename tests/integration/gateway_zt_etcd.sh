#!/usr/bin/env bash
# gateway_zt_etcd.sh DENGBAO: the gateway's RBAC policy from a real etcd, changed while wrk
# keeps the gateway busy (issue 6: "Policy from a real etcd ... changed while under load, takes
# effect without a failed request").
#
#   etcd      one node on 127.0.0.1 (scripts/services.sh start etcd); the policy lives at one
#             key and is written with the v3 JSON gateway (curl POST /v3/kv/put), as an
#             operator's tooling would
#   upstream  nginx answering a small JSON for every path (scripts/services.sh start nginx)
#   gateway   2 workers, HS256 tokens, `rbac: {etcd: ...}`, durable audit (the default: each
#             request waits for its record's group commit, so the load is what the log can
#             take; async audit under an unthrottled wrk fills the bounded queue and is
#             refused with 503 by design, which is not what this test is about)
#   load      two wrk runs at once, each with a Lua script (written below) that counts the
#             statuses it sees per phase (it reads the phase number from a file every 50
#             responses): /v1/stable/x, which every policy allows (every response must be 200),
#             and /v1/p/x, which the policy alternately allows and denies (each response must
#             be 200 or 403, nothing else: no 401, 5xx, reset or timeout)
# The policy is changed 5 times under that load (allow, deny, allow, ...); after each put a
# curl poller measures when the new decision is visible (must be within 1 s). Then a policy
# that does not parse is put: the old decisions stay, and the refusal is in the audit log.
# Prints PASS/FAIL per check; exit 1 if any failed, 2 if it cannot run.
set -uo pipefail
BIN=${1:?usage: gateway_zt_etcd.sh DENGBAO}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
T=$(mktemp -d /tmp/gwztetcd.XXXXXX)
PIDS=()
GW_PID=
SVC_DIRS=()
PASS=0
FAIL=0
WRK_DUR=${WRK_DUR:-20}

cleanup() {
  local p d
  for p in $GW_PID "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in $GW_PID "${PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  for d in "${SVC_DIRS[@]}"; do
    "$SVC" stop "$d"
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
exec </dev/null

die() {
  echo "gateway_zt_etcd: FAIL: $*" >&2
  [ -f "$T/gw.err" ] && { echo "--- gateway stderr (last 30 lines):" >&2; tail -30 "$T/gw.err" >&2; }
  exit 2
}
ok() {
  PASS=$((PASS + 1))
  echo "PASS $*"
}
bad() {
  FAIL=$((FAIL + 1))
  echo "FAIL $*"
}
check() { echo "-- [${SECONDS}s] $*"; }

for c in curl wrk nginx etcd openssl base64; do
  command -v "$c" >/dev/null || die "$c is not installed (scripts/deps.sh)"
done
"$BIN" token --help >/dev/null 2>&1 || die "'$BIN token --help' does not work (dengbao token missing)"
cd "$T" || die "cd $T"

# ---- etcd ---------------------------------------------------------------------------------------
KEY=/dengbao/gateway/policy
SVC_DIRS+=("$T/svc-etcd")
EP=$("$SVC" start etcd "$T/svc-etcd") || die "scripts/services.sh start etcd failed"
EP=$(tail -1 <<<"$EP")
echo "etcd on 127.0.0.1:$EP"
put() { # FILE: the policy key := the file's bytes (etcd v3 JSON gateway)
  local k v
  k=$(printf %s "$KEY" | base64 -w0)
  v=$(base64 -w0 <"$1")
  curl -sf --max-time 5 -X POST "http://127.0.0.1:$EP/v3/kv/put" -d "{\"key\":\"$k\",\"value\":\"$v\"}" >/dev/null
}

# policy N: allows /v1/p/** when N is even, denies it when N is odd; /v1/stable/** always
policy() {
  local n=$1
  {
    echo "version: 1"
    echo "roles:"
    echo "  reader:"
    echo "    - {id: stable-$n, methods: [GET], path: \"/v1/stable/**\"}"
    if [ $((n % 2)) = 0 ]; then
      echo "    - {id: p-allow-$n, methods: [GET], path: \"/v1/p/**\"}"
    else
      echo "    - {id: p-deny-$n, effect: deny, methods: [GET], path: \"/v1/p/**\"}"
    fi
  } >"policy$n.yaml"
}
want() { [ $(($1 % 2)) = 0 ] && echo 200 || echo 403; }
policy 0
put policy0.yaml || die "cannot put the first policy into etcd"

# ---- upstream, keys, gateway -------------------------------------------------------------------
SVC_DIRS+=("$T/svc-up")
UP=$("$SVC" start nginx "$T/svc-up" "" 1) || die "services.sh start nginx"
mkdir -p keys
openssl rand -hex 32 >keys/jwt.secret && chmod 600 keys/jwt.secret
openssl rand -hex 32 >keys/identity.key && chmod 600 keys/identity.key
"$BIN" audit init --dir audit --origin gwzt.test/etcd >/dev/null 2>&1 || die "audit init"
GP=$("$SVC" freeport)
cat >gw.yaml <<EOF
workers: 2
listeners:
  - listen: "127.0.0.1:$GP"
security:
  identity:
    jwt:
      hs256_secret_file: keys/jwt.secret
      hs256_kid: k1
      issuer: https://idp.test
      audience: [api]
  identity_header:
    key_file: keys/identity.key
  rbac:
    etcd:
      endpoints: ["http://127.0.0.1:$EP"]
      key: $KEY
      timeout: 2s
  audit:
    dir: audit
    mode: durable
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP"], keepalive: 64}
routes:
  - {name: v1, prefix: /v1/, cluster: up}
EOF
"$BIN" gateway --config gw.yaml 2>gw.err &
GW_PID=$!
for _ in $(seq 1 300); do
  grep -q 'gateway: listening on' gw.err 2>/dev/null && break
  kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited during start-up"
  sleep 0.1
done
grep -q 'gateway: listening on' gw.err || die "the gateway is not ready after 30 s"
B=http://127.0.0.1:$GP
TOKEN=$("$BIN" token issue --key keys/jwt.secret --alg HS256 --kid k1 --sub loader --roles reader \
  --iss https://idp.test --aud api --ttl 15m) || die "dengbao token issue: $TOKEN"
st() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H "Authorization: Bearer $TOKEN" "$B$1"; }

check "the first policy (from etcd at start): /v1/stable 200, /v1/p 200"
s1=$(st /v1/stable/x) s2=$(st /v1/p/x)
[ "$s1/$s2" = 200/200 ] && ok "policy 0 in force" || die "policy 0 not in force: stable $s1, p $s2"

# ---- load with policy changes ----------------------------------------------------------------------
cat >count.lua <<'EOF'
-- count.lua PHASE_FILE: counts response statuses per phase (phase read every 50 responses).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  phase_file = args[1]
  counts = {}
  n = 0
  phase = "0"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("ZT_TOKEN")
end
local function readphase()
  local f = io.open(phase_file, "r")
  if f then
    local p = f:read("*l")
    f:close()
    if p and p ~= "" then phase = p end
  end
end
function response(status, headers, body)
  n = n + 1
  if n % 50 == 1 then readphase() end
  local k = phase .. " " .. status
  counts[k] = (counts[k] or 0) + 1
end
function done(summary, latency, requests)
  local all = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do all[k] = (all[k] or 0) + v end
  end
  for k, v in pairs(all) do io.write(string.format("COUNT %s %d\n", k, v)) end
  local e = summary.errors
  io.write(string.format("ERRORS %d %d %d %d %d\n", e.connect, e.read, e.write, e.timeout, e.status))
  io.write(string.format("TOTAL %d\n", summary.requests))
end
EOF
echo 0 >phase
export ZT_TOKEN=$TOKEN
wrk -t1 -c8 -d"${WRK_DUR}s" -s count.lua "$B/v1/stable/x" -- "$T/phase" >wrk-stable.out 2>&1 &
PIDS+=($!)
WRK1=$!
wrk -t1 -c8 -d"${WRK_DUR}s" -s count.lua "$B/v1/p/x" -- "$T/phase" >wrk-p.out 2>&1 &
PIDS+=($!)
WRK2=$!
sleep 1.5
check "5 policy changes under load, each visible within 1 s"
for n in 1 2 3 4 5; do
  policy "$n"
  w=$(want "$n")
  echo "$n" >phase
  t0=$(date +%s%N)
  put "policy$n.yaml" || bad "put of policy $n failed"
  seen=
  while :; do
    s=$(st /v1/p/x)
    dt=$((($(date +%s%N) - t0) / 1000000))
    [ "$s" = "$w" ] && seen=1 && break
    case $s in 200 | 403) ;; *) bad "phase $n: /v1/p/x answered $s during the change" ;; esac
    [ "$dt" -gt 3000 ] && break
    sleep 0.02
  done
  if [ -n "$seen" ] && [ "$dt" -le 1000 ]; then ok "policy $n ($w for /v1/p) visible after $dt ms"; else
    bad "policy $n ($w for /v1/p) not visible within 1 s (after $dt ms: $s)"
  fi
  s1=$(st /v1/stable/x)
  [ "$s1" = 200 ] || bad "phase $n: /v1/stable/x $s1"
  sleep 1.2
done

check "a policy that does not parse is refused; the old decisions stay"
printf 'version: 1\nroles:\n  reader:\n    - {methods: [GTE], path: /v1/p/**}\n' >bad.yaml
put bad.yaml || bad "put of the bad policy failed"
sleep 1.5
s1=$(st /v1/stable/x) s2=$(st /v1/p/x)
[ "$s1/$s2" = "200/$(want 5)" ] && ok "after the bad put: stable $s1, p $s2 (policy 5 still in force)" ||
  bad "after the bad put: stable $s1, p $s2 (want 200/$(want 5))"
kill -0 "$GW_PID" 2>/dev/null || bad "the gateway died after the bad policy"

wait "$WRK1"
wait "$WRK2"
check "the load: zero failed requests"
for f in wrk-stable.out wrk-p.out; do
  if ! grep -q '^TOTAL' "$f"; then
    bad "$f: wrk did not finish: $(tail -5 "$f")"
    continue
  fi
  tot=$(awk '/^TOTAL/ { print $2 }' "$f")
  read -r _ ec er ew et _ <<<"$(grep '^ERRORS' "$f")"
  echo "   $f: $tot requests; $(grep '^COUNT' "$f" | sort -k2n | awk '{ printf "phase %s: %s x%s; ", $2, $3, $4 }')"
  [ "$((ec + er + ew + et))" = 0 ] && ok "$f: no socket errors" || bad "$f: socket errors connect $ec read $er write $ew timeout $et"
  [ "$tot" -gt 1000 ] || bad "$f: only $tot requests"
done
other=$(awk '/^COUNT/ && $3 != 200 { s += $4 } END { print s + 0 }' wrk-stable.out)
[ "$other" = 0 ] && ok "/v1/stable: every response 200 through 5 changes and a bad put" ||
  bad "/v1/stable: $other responses were not 200"
other=$(awk '/^COUNT/ && $3 != 200 && $3 != 403 { s += $4 } END { print s + 0 }' wrk-p.out)
[ "$other" = 0 ] && ok "/v1/p: every response 200 or 403" || bad "/v1/p: $other responses neither 200 nor 403"
for n in 0 1 2 3 4 5; do
  w=$(want "$n")
  good=$(awk -v p="$n" -v w="$w" '/^COUNT/ && $2 == p && $3 == w { s += $4 } END { print s + 0 }' wrk-p.out)
  wrong=$(awk -v p="$n" -v w="$w" '/^COUNT/ && $2 == p && $3 != w { s += $4 } END { print s + 0 }' wrk-p.out)
  # the phase file is written just before the put: responses decided by the old policy in the
  # propagation window are tagged with the new phase; they must stay a small minority
  if [ "$good" -gt 0 ] && [ "$wrong" -le "$good" ]; then ok "phase $n: $good x $w (demanded), $wrong in the switch-over"; else
    bad "phase $n: $good x $w (demanded), $wrong other"
  fi
done

check "the audit log: the refused policy is recorded"
t0=$(date +%s%N)
kill -TERM "$GW_PID"
wait "$GW_PID"
rc=$?
GW_PID=
dt=$((($(date +%s%N) - t0) / 1000000))
[ "$rc" = 0 ] || bad "gateway exit status $rc"
# no client connection is open any more (wrk and curl have exited): the stop must not need
# more than the drain timeout (10 s)
[ "$dt" -le 11000 ] && ok "the gateway stopped in $dt ms" || bad "the gateway took $dt ms to stop with no client connected (drain: 10 s)"
grep -qiE 'policy|rbac' gw.err && ok "stderr names the refused policy: $(grep -iE 'policy|rbac' gw.err | tail -1)" ||
  bad "no stderr message about the refused policy"
v=$("$BIN" audit verify --dir audit 2>/dev/null) || bad "audit verify: $v"
size=$(sed -n 's/^OK records=\([0-9]*\) .*/\1/p' <<<"$v")
"$BIN" audit get --dir audit --index 0 --count "${size:-0}" >records.jsonl 2>/dev/null
n=$(grep -ciE '"event_type":"[^"]*(policy|rbac)[^"]*".*"result":"failure"' records.jsonl)
[ "$n" -ge 1 ] && ok "the refused policy is in the audit log ($n record(s))" ||
  bad "no failure record about the refused policy (event types seen: $(grep -o '"event_type":"[^"]*"' records.jsonl | sort | uniq -c | tr -s ' \n' ' '))"

if grep -qE 'Sanitizer|runtime error' gw.err; then
  bad "sanitizer report: $(grep -hE -m3 'Sanitizer|runtime error' gw.err)"
fi

echo "gateway_zt_etcd: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
