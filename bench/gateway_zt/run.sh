#!/usr/bin/env bash
# bench/gateway_zt/run.sh [DENGBAO]: the zero-trust gateway against nginx as a plain reverse
# proxy, in one run, with the same upstream, load and pinning (issue 6, "Done means": bench).
# Structure as bench/gateway/run.sh; runs alone: bench/gateway_zt/run.sh build-rel/dengbao.
#
#   upstream  nginx, 1 worker (own config here): /d/* answers a 4 KiB JSON of patient records
#             with personal data (resident IDs, mobiles) from a file, every other path the
#             84-byte JSON of scripts/services.sh's nginx; keep-alive
#   nginx     plain reverse proxy to it (scripts/services.sh start nginx-proxy): the anchor
#   dengbao   `dengbao gateway` with a `security:` section: HS256 tokens, RBAC from a file,
#             per-subject, per-client-IP and per-route token buckets far above the load (so
#             every check runs and nothing is refused), audit, masking; one route per case:
#     a-async    /a/  token + RBAC + rate limits + async audit record per request
#     a-durable  /ad/ the same with durable audit (the request waits for fdatasync; group commit)
#     b          /b/  + device token mode: one token and one X-SM2-Signature reused (verified
#                     once, then cached: the seed's SM2 token mode)
#     c          /c/  + device request mode: a fresh SM2 signature per request. wrk cannot sign,
#                     and a nonce is good once, so gen_signed.c (the build's gwzt_gen_signed
#                     target) signs SIGN_N requests before each gateway run and
#                     signed.lua sends each once (a run that runs out is flagged "wrapped")
#     d          /d/  + JSON response masking of the 4 KiB body (streaming scanner, clerk role)
#   load      wrk -t2 -c$CONNS -d${DUR}s --latency with headers.lua / signed.lua (the same
#             headers go to nginx), after a 2 s warm-up (not for c: nonces are single-use)
#
# PIN=1 (default): 1 gateway worker / 1 nginx worker on CPU 0, upstream and wrk on CPU 1 (as
# bench/gateway's pin1). PIN=0: nothing pinned, WORKERS (2) workers each. Each case starts a
# fresh gateway (and audit log), the two proxies run in interleaved rounds (ROUNDS), and the
# table gives medians: requests/s, p99, CPU per request of the proxy, and the ratio to nginx.
# For c it also gives the gateway's requests per CPU-second of the gateway against the bare
# SM2 verify rate of `dengbao gm speed` on the active path (sm2-verify: a key without a table;
# sm2-verify-hotkey: with one, as enrolled device keys have).
# Any answer other than 200 invalidates a run (shown in the "bad" column).
#
# Knobs: DUR (10), ROUNDS (5), CONNS (64), PIN (1), WORKERS (2, with PIN=0), CASES
# ("a-async a-durable b c d"), SIGN_N (400000 per gateway run of c), OUT (keep raw results).
set -uo pipefail
BIN=${1:-build/dengbao}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-64}
PIN=${PIN:-1}
WORKERS=${WORKERS:-2}
CASES=${CASES:-"a-async a-durable b c d"}
SIGN_N=${SIGN_N:-400000}
if [ -n "${OUT:-}" ]; then
  D=$OUT
  mkdir -p "$D"
  KEEP=1
else
  D=$(mktemp -d /tmp/gwztbench.XXXXXX)
  KEEP=
fi
D=$(cd "$D" && pwd)
GW_PID=
UP_PID=
SVC_DIRS=()

cleanup() {
  local d
  if [ -n "$GW_PID" ]; then
    kill -TERM "$GW_PID" 2>/dev/null
    wait "$GW_PID" 2>/dev/null
  fi
  if [ -n "$UP_PID" ]; then
    kill -TERM "$UP_PID" 2>/dev/null
    wait "$UP_PID" 2>/dev/null
  fi
  for d in "${SVC_DIRS[@]}"; do
    "$SVC" stop "$d"
  done
  [ -n "$KEEP" ] || rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

for c in nginx wrk curl openssl taskset cc pkg-config; do
  if ! command -v "$c" >/dev/null; then
    echo "gateway_zt bench skipped: $c is not installed (scripts/deps.sh)"
    exit 0
  fi
done
if ! "$BIN" token --help >/dev/null 2>&1; then
  echo "gateway_zt bench skipped: '$BIN token' is not available" >&2
  exit 0
fi
GEN_SIGNED=$(dirname "$BIN")/gwzt_gen_signed
[ -x "$GEN_SIGNED" ] || {
  echo "gateway_zt bench: $GEN_SIGNED is missing (build the gwzt_gen_signed target)" >&2
  exit 1
}
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  W=1 PCPU=0 UCPU=1 WCPU=1
else
  PIN=0 W=$WORKERS PCPU="" UCPU="" WCPU=""
fi

BENCH_NAME="gateway_zt bench"
# shellcheck source=bench/lib.sh
. "$HERE/../lib.sh"

# ---- keys, policies, the upstream ---------------------------------------------------------------
cd "$D" || exit 1
mkdir -p keys devices www up/tmp
openssl rand -hex 32 >keys/jwt.secret
openssl rand -hex 32 >keys/identity.key
chmod 600 keys/jwt.secret keys/identity.key
"$BIN" gm keygen --out keys/dev.pem --pub-out devices/dev.pem >/dev/null 2>&1 || exit 1
TOKEN=$("$BIN" token issue --key keys/jwt.secret --alg HS256 --kid k1 --sub bench --roles clerk \
  --iss https://idp.test --aud api --ttl 2h) || exit 1
DTOKEN=$("$BIN" token issue --key keys/jwt.secret --alg HS256 --kid k1 --sub benchdev --roles clerk \
  --iss https://idp.test --aud api --ttl 2h --device-pub devices/dev.pem) || exit 1
DSIG=$("$BIN" token sign --device-key keys/dev.pem --token "$DTOKEN") || exit 1
cat >policy.yaml <<'EOF'
version: 1
roles:
  clerk:
    - {id: bench, methods: [GET], path: "/**"}
  "*":
    - {id: no-admin, effect: deny, methods: "*", path: "/admin/**"}
EOF
cat >mask.yaml <<'EOF'
fields:
  patients.id_no: {type: CN_RID18, roles: {doctor: clear}}
  patients.phone: {type: CN_MOBILE, roles: {doctor: clear}}
EOF
# 4 KiB of patient records: IDs and mobiles in tagged fields, more in free text
node -e '
const ids = ["11010519491231002X", "110105199001010021", "310101198507150016", "440305199912310023"]
const p = []
for (let i = 0; ; i++) {
  const r = {id: 1000 + i, name: "Patient " + i, id_no: ids[i % 4], phone: "1380013" + String(8000 + i),
    ward: "cardiology", note: "call 13912345678 or mail p" + i + "@example.com", visits: [i, i + 1]}
  if (JSON.stringify({patients: [...p, r]}).length > 4096) break
  p.push(r)
}
process.stdout.write(JSON.stringify({patients: p}).padEnd(4096, " "))' >www/pii.json || exit 1
NGINX_BODY='{"id":1042,"name":"Zhang San","dept":"cardiology","status":"ok","items":[1,2,3,4,5]}'
UP=$("$SVC" freeport)
cat >up/nginx.conf <<EOF
worker_processes 1;
$([ "$(id -u)" = 0 ] && echo 'user root;')
daemon off;
pid $D/up/nginx.pid;
error_log $D/up/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    client_body_temp_path $D/up/tmp/cb; proxy_temp_path $D/up/tmp/px; fastcgi_temp_path $D/up/tmp/fc;
    uwsgi_temp_path $D/up/tmp/uw; scgi_temp_path $D/up/tmp/sc;
    open_file_cache max=16;
    server {
        listen 127.0.0.1:$UP backlog=4096;
        root $D/www;
        location /d/ { default_type application/json; try_files /pii.json =404; }
        location / { default_type application/json; return 200 '$NGINX_BODY'; }
    }
}
EOF
if [ -n "$UCPU" ]; then
  taskset -c "$UCPU" nginx -p "$D/up" -e "$D/up/error.log" -c "$D/up/nginx.conf" &
else
  nginx -p "$D/up" -e "$D/up/error.log" -c "$D/up/nginx.conf" &
fi
UP_PID=$!
wait_url "http://127.0.0.1:$UP/d/x" || exit 1
[ "$(curl -s "http://127.0.0.1:$UP/d/x" | wc -c)" = 4096 ] || {
  echo "gateway_zt bench: the upstream's 4 KiB body is not 4096 bytes" >&2
  exit 1
}

NP=$("$SVC" freeport)
SVC_DIRS+=("$D/nginx")
pin "$PCPU" "$SVC" start nginx-proxy "$D/nginx" "$NP" "$UP" "$W" >/dev/null || exit 1
NGINX_PID=$(cat "$D/nginx/nginx-proxy/pid")

LIMIT='{rate: 1000000, period: 1s, burst: 1000000}'
start_gw() { # CASE: a fresh gateway with a fresh audit log
  local port
  port=$("$SVC" freeport)
  rm -rf "$D/audit"
  "$BIN" audit init --dir "$D/audit" --origin bench.test/gateway >/dev/null 2>&1 || return 1
  cat >"$D/gw.yaml" <<EOF
workers: $W
listeners:
  - listen: "127.0.0.1:$port"
security:
  identity:
    jwt:
      algorithms: [HS256]
      hs256_secret_file: keys/jwt.secret
      hs256_kid: k1
      issuer: https://idp.test
      audience: [api]
    devices:
      keys_dir: devices/
      request_window: 30s
      nonce_cache: 4194304
  identity_header:
    key_file: keys/identity.key
  rbac:
    file: policy.yaml
  rate_limits:
    subject: $LIMIT
    client_ip: $LIMIT
  audit:
    dir: audit
    mode: async
    queue: 65536
  masking:
    policy: mask.yaml
clusters:
  - {name: up, endpoints: ["127.0.0.1:$UP"], keepalive: 64}
routes:
  - {name: a, prefix: /a/, cluster: up, rate_limit: $LIMIT, audit: async}
  - {name: ad, prefix: /ad/, cluster: up, rate_limit: $LIMIT, audit: durable}
  - {name: b, prefix: /b/, cluster: up, rate_limit: $LIMIT, device: token}
  - {name: c, prefix: /c/, cluster: up, rate_limit: $LIMIT, device: request}
  - name: d
    prefix: /d/
    cluster: up
    rate_limit: $LIMIT
    mask: {enabled: true, body_max: 64k, over_limit: block}
EOF
  if [ -n "$PCPU" ]; then
    taskset -c "$PCPU" "$BIN" gateway --config "$D/gw.yaml" 2>"$D/gw-$1.err" &
  else
    "$BIN" gateway --config "$D/gw.yaml" 2>"$D/gw-$1.err" &
  fi
  GW_PID=$!
  GW_URL=http://127.0.0.1:$port
  for _ in $(seq 1 100); do
    grep -q 'gateway: listening on' "$D/gw-$1.err" 2>/dev/null && return 0
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "gateway_zt bench: the gateway did not start:" >&2
  tail -5 "$D/gw-$1.err" >&2
  return 1
}
stop_gw() {
  kill -TERM "$GW_PID"
  wait "$GW_PID"
  GW_PID=
  rm -rf "$D/audit"
}

# run_wrk CASE PROXY URL PID ROUND LUA [LUA ARGS]: one measured run
run_wrk() {
  local cs=$1 px=$2 url=$3 pid=$4 round=$5 lua=$6 out t0 t1 rps n p99 cpu util bad
  shift 6
  if [ "$cs" != c ]; then
    pin "$WCPU" wrk -t2 -c"$CONNS" -d2s -s "$lua" "$url" -- "$@" >/dev/null 2>&1 # warm-up
  fi
  t0=$(ticks "$pid")
  out=$(pin "$WCPU" wrk -t2 -c"$CONNS" -d"${DUR}s" --latency -s "$lua" "$url" -- "$@" 2>&1)
  t1=$(ticks "$pid")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  if [ -z "$rps" ] || [ -z "$n" ] || [ "$n" = 0 ]; then
    echo "gateway_zt bench: wrk failed against $px ($url): $out" >&2
    return 1
  fi
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  bad=$(awk -v px="$px" '/^STATUS/ && $2 != 200 { s += $3 } /Socket errors/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 }
    /^WRAPPED/ && $2 > 0 && px == "dengbao" { w = 1 } END { printf "%d%s", s, w ? "w" : "" }' <<<"$out")
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
  util=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$DUR" 'BEGIN { printf "%.0f", d / hz / s * 100 }')
  printf '  %-9s %-7s r%d  %9.0f req/s  p99 %7.3f ms  %6s us/req  cpu %4s%%  bad %s\n' \
    "$cs" "$px" "$round" "$rps" "$p99" "$cpu" "$util" "$bad"
  echo "$cs $px $rps $p99 $cpu $bad" >>"$D/raw.txt"
}

case_path() {
  case $1 in
  a-async) echo /a/x ;;
  a-durable) echo /ad/x ;;
  b) echo /b/x ;;
  c) echo /c/x ;;
  d) echo /d/x ;;
  esac
}

: >"$D/raw.txt"
VPATH=$("$BIN" gm cpu 2>/dev/null | awk '$1 == "sm2" && $3 == "active" { print $2 }')
SPEED=$(pin "$PCPU" "$BIN" gm speed --seconds 2 --json sm2-verify sm2-verify-hotkey 2>/dev/null)
V_BARE=$(awk -v p="\"path\":\"$VPATH\"" -F'"ops_per_s":' 'index($0, "\"alg\":\"sm2-verify\"") && index($0, p) { split($2, a, ","); print a[1] }' <<<"$SPEED")
V_HOT=$(awk -v p="\"path\":\"$VPATH\"" -F'"ops_per_s":' 'index($0, "\"alg\":\"sm2-verify-hotkey\"") && index($0, p) { split($2, a, ","); print a[1] }' <<<"$SPEED")
echo "gateway_zt bench: $(date -u +%FT%TZ), nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk -t2 -c$CONNS -d${DUR}s, $ROUNDS interleaved rounds, PIN=$PIN workers $W, $(nproc) CPUs"
echo "  bare SM2 verify (dengbao gm speed, path $VPATH, one core): sm2-verify ${V_BARE:-?}/s, sm2-verify-hotkey ${V_HOT:-?}/s"
export ZT_TOKEN ZT_SIG ZT_PATH
for cs in $CASES; do
  path=$(case_path "$cs")
  [ -n "$path" ] || {
    echo "gateway_zt bench: unknown case $cs" >&2
    exit 1
  }
  start_gw "$cs" || exit 1
  ZT_TOKEN=$TOKEN ZT_SIG='' ZT_PATH=$path
  lua=$HERE/headers.lua
  case $cs in
  b) ZT_TOKEN=$DTOKEN ZT_SIG=$DSIG ;;
  c) ZT_TOKEN=$DTOKEN lua=$HERE/signed.lua ;;
  esac
  if [ "$cs" = c ]; then
    "$GEN_SIGNED" keys/dev.pem GET "$path" "" 1000 2 "$D/sig" || exit 1
  fi
  s=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ZT_TOKEN" \
    ${ZT_SIG:+-H "X-SM2-Signature: $ZT_SIG"} "$GW_URL$path")
  if [ "$cs" != c ] && [ "$s" != 200 ]; then
    echo "gateway_zt bench: $cs: the gateway answers $s for $path (want 200): $(tail -3 "$D/gw-$cs.err")" >&2
    stop_gw
    exit 1
  fi
  for r in $(seq 1 "$ROUNDS"); do
    run_wrk "$cs" nginx "http://127.0.0.1:$NP$path" "$NGINX_PID" "$r" "$lua" "$D/sig" || exit 1
    if [ "$cs" = c ]; then
      "$GEN_SIGNED" keys/dev.pem GET "$path" "" "$SIGN_N" 2 "$D/sig" || exit 1
    fi
    run_wrk "$cs" dengbao "$GW_URL$path" "$GW_PID" "$r" "$lua" "$D/sig" || exit 1
  done
  stop_gw
done

echo "gateway_zt bench: medians over $ROUNDS rounds (CPU: the proxy's processes, per request)"
printf '  %-10s %-8s %10s %9s %11s %9s %6s\n' case proxy "req/s" "p99 ms" "cpu us/req" "vs nginx" bad
awk -v vb="${V_BARE:-0}" -v vh="${V_HOT:-0}" '
{ k = $1 " " $2; n[k]++; r[k, n[k]] = $3; p[k, n[k]] = $4; c[k, n[k]] = $5
  if ($6 != "0") bad[k] = bad[k] " " $6
  if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
function med(a, k, cnt,   i, j, t, v) {
  for (i = 1; i <= cnt; i++) v[i] = a[k, i]
  for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
END {
  for (i = 1; i <= m; i++) { k = order[i]; R[k] = med(r, k, n[k]); P[k] = med(p, k, n[k]); C[k] = med(c, k, n[k]) }
  for (i = 1; i <= m; i++) { k = order[i]; split(k, a, " "); base = a[1] " nginx"
    printf "  %-10s %-8s %10.0f %9.3f %11.2f %9s %6s\n", a[1], a[2], R[k], P[k], C[k],
      (base in R) ? sprintf("%.3f", R[k] / R[base]) : "-", (k in bad) ? bad[k] : "0" }
  k = "c dengbao"
  if ((k in C) && C[k] > 0) {
    pc = 1e6 / C[k]
    printf "  c: %.0f signed requests per gateway CPU-second", pc
    if (vb > 0) printf "; %.3f x sm2-verify (%.0f/s)", pc / vb, vb
    if (vh > 0) printf "; %.3f x sm2-verify-hotkey (%.0f/s)", pc / vh, vh
    printf "\n" } }' "$D/raw.txt"
