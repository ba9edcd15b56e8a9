#!/usr/bin/env bash
# gateway_proxy.sh DENGBAO: the gateway as a reverse proxy, end to end with curl and wrk.
#
# Starts on 127.0.0.1 (free ports): three Node test upstreams (tests/integration/gwupstream.js)
# U1, U2, U3, and `dengbao gateway --config` with 2 workers, an admin listener, an access log,
# and these routes:
#   host a.test, /     -> cluster two  (U2)
#   /v1/ (strip)       -> cluster one  (U1)          most checks go here
#   /u/ (strip)        -> cluster main (U1, U2)      balancing and active health
#   /solo/ (strip)     -> cluster solo (U3)          upstream down, 502/503, recovery
#   /echo              -> cluster one  (no strip)
# anything else: no route (404). Every process is stopped by its PID on exit.
#
# Development aid (not used by ctest): GW_IMPL=nginx runs the same checks against nginx
# configured alike, skipping what only dengbao does (X-Real-IP rules, traceparent, JSON
# access log, /metrics, active health checks).
set -uo pipefail
BIN=${1:?usage: gateway_proxy.sh DENGBAO}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
UPJS=$HERE/gwupstream.js
IMPL=${GW_IMPL:-dengbao}
T=$(mktemp -d /tmp/gwproxy.XXXXXX)
PIDS=()
GW_PID=

cleanup() {
  local p
  for p in "${PIDS[@]}" $GW_PID; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in "${PIDS[@]}" $GW_PID; do
    wait "$p" 2>/dev/null
  done
  rm -rf "$T"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [ -f "$T/gw.err" ]; then
    echo "--- gateway stderr (last 20 lines):" >&2
    tail -20 "$T/gw.err" >&2
  fi
  exit 1
}
check() { echo "-- $*"; }
gw_only() { [ "$IMPL" = dengbao ]; }

if [ "$IMPL" = dengbao ] && ! "$BIN" gateway --help >/dev/null 2>&1; then
  echo "FAIL: '$BIN gateway --help' does not work" >&2
  exit 1
fi
for c in node curl wrk sha256sum; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh)"
done

# jget EXPR: reads JSON on stdin, prints the JavaScript expression EXPR over it (as `o`)
jget() {
  node -e 'const o = JSON.parse(require("fs").readFileSync(0, "utf8"));
const v = eval(process.argv[1]);
console.log(v === undefined ? "undefined" : typeof v === "object" ? JSON.stringify(v) : v);' "$1"
}

# start_up NAME PORT [ARGS...]: a Node upstream, waits for its "ready"
start_up() {
  local name=$1 port=$2
  shift 2
  node "$UPJS" "$port" --log "$T/up.log" "$@" >"$T/$name.out" 2>&1 &
  PIDS+=($!)
  eval "PID_$name=$!"
  for _ in $(seq 1 100); do
    grep -q ready "$T/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  fail "upstream $name did not start: $(cat "$T/$name.out")"
}

# wait_gw N: waits for N "listening on" lines from the gateway (or its port, for nginx)
wait_gw() {
  for _ in $(seq 1 100); do
    if [ "$IMPL" = dengbao ]; then
      [ "$(grep -c 'gateway: listening on' "$T/gw.err" 2>/dev/null)" -ge "$1" ] && return 0
    else
      curl -s -o /dev/null "http://127.0.0.1:$GP/" && return 0
    fi
    kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited during start-up"
    sleep 0.1
  done
  fail "the gateway is not ready after 10 s"
}

U1=$("$SVC" freeport) U2=$("$SVC" freeport) U3=$("$SVC" freeport)
GP=$("$SVC" freeport) AP=$("$SVC" freeport)
WORKERS=2
start_up u1 "$U1"
start_up u2 "$U2" --down-file "$T/down2"
start_up u3 "$U3"

cat >"$T/gw.yaml" <<EOF
workers: $WORKERS
listeners:
  - listen: "127.0.0.1:$GP"
admin: "127.0.0.1:$AP"
limits: {header_max: 16k, headers_num_max: 100, body_max: 64m}
timeouts: {header: 10s, body: 60s, idle: 60s, drain: 5s}
trusted_proxies: ["127.0.0.2"]
access_log: "$T/access.log"
clusters:
  - name: one
    endpoints: ["127.0.0.1:$U1"]
    keepalive: 64
    timeouts: {connect: 1s, read: 2s}
    retries: 0
  - name: two
    endpoints: ["127.0.0.1:$U2"]
    timeouts: {connect: 1s, read: 2s}
  - name: main
    endpoints: ["127.0.0.1:$U1", "127.0.0.1:$U2"]
    balance: round_robin
    keepalive: 64
    timeouts: {connect: 1s, read: 2s}
    retries: 1
    health: {path: /healthz, interval: 200ms, timeout: 300ms, healthy: 1, unhealthy: 1,
             passive_failures: 3, passive_eject: 2s}
  - name: solo
    endpoints: ["127.0.0.1:$U3"]
    timeouts: {connect: 1s, read: 2s}
    retries: 0
    health: {path: /healthz, interval: 200ms, timeout: 300ms, healthy: 1, unhealthy: 1}
routes:
  - {name: host-a, host: "a.test", prefix: /, cluster: two}
  - {name: v1, prefix: /v1/, cluster: one, strip_prefix: true}
  - {name: u, prefix: /u/, cluster: main, strip_prefix: true}
  - {name: solo, prefix: /solo/, cluster: solo, strip_prefix: true}
  - {name: echo, prefix: /echo, cluster: one}
EOF

if [ "$IMPL" = dengbao ]; then
  check "config check: $BIN gateway --config gw.yaml --check"
  "$BIN" gateway --config "$T/gw.yaml" --check >"$T/check.out" 2>&1 ||
    fail "--check refused the configuration: $(cat "$T/check.out")"
  "$BIN" gateway --config "$T/gw.yaml" 2>"$T/gw.err" &
  GW_PID=$!
else
  mkdir -p "$T/tmp"
  cat >"$T/nginx.conf" <<EOF
worker_processes $WORKERS;
$([ "$(id -u)" = 0 ] && echo 'user root;')
daemon off;
pid $T/nginx.pid;
error_log $T/gw.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_max_body_size 64m;
  client_body_temp_path $T/tmp/cb; proxy_temp_path $T/tmp/px; fastcgi_temp_path $T/tmp/fc;
  uwsgi_temp_path $T/tmp/uw; scgi_temp_path $T/tmp/sc;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$http_host;
  proxy_set_header X-Real-IP \$remote_addr;
  proxy_set_header X-Forwarded-For \$remote_addr;
  proxy_connect_timeout 1s; proxy_read_timeout 2s;
  upstream one { server 127.0.0.1:$U1; keepalive 64; }
  upstream two { server 127.0.0.1:$U2; keepalive 64; }
  upstream main { server 127.0.0.1:$U1; server 127.0.0.1:$U2; keepalive 64; }
  upstream solo { server 127.0.0.1:$U3 max_fails=1 fail_timeout=1s; }
  server { listen 127.0.0.1:$GP; server_name a.test; location / { proxy_pass http://two; } }
  server {
    listen 127.0.0.1:$GP default_server;
    location /v1/ { proxy_pass http://one/; }
    location /u/ { proxy_pass http://main/; }
    location /solo/ { proxy_pass http://solo/; }
    location /echo { proxy_pass http://one; }
    location / { return 404; }
  }
}
EOF
  nginx -p "$T" -e "$T/gw.err" -c "$T/nginx.conf" &
  GW_PID=$!
fi
wait_gw 1
B=http://127.0.0.1:$GP

# status URL [CURL ARGS]: prints the HTTP status (000 on transport failure)
status() {
  local u=$1
  shift
  curl -s -o /dev/null -w '%{http_code}' "$@" "$u"
}
expect_status() { # WANT URL [CURL ARGS]
  local want=$1 got
  shift
  got=$(status "$@")
  [ "$got" = "$want" ] || fail "$1: status $got, want $want"
}

check "GET through the gateway: /v1/id answers U1's port"
got=$(curl -sf "$B/v1/id") || fail "GET /v1/id failed"
[ "$got" = "$U1" ] || fail "GET /v1/id: '$got', want '$U1'"

check "POST with a Content-Length body: the upstream sees the same bytes (strip_prefix: /v1/echo -> /echo)"
out=$(curl -sf --data-binary 'hello gateway' "$B/v1/echo?q=1") || fail "POST /v1/echo failed"
[ "$(jget o.url <<<"$out")" = "/echo?q=1" ] || fail "upstream saw url $(jget o.url <<<"$out"), want /echo?q=1"
[ "$(jget o.body_length <<<"$out")" = 13 ] || fail "upstream body length $(jget o.body_length <<<"$out")"
[ "$(jget o.method <<<"$out")" = POST ] || fail "method not kept"

check "Host is forwarded as received"
out=$(curl -sf -H 'Host: foo.test' "$B/v1/echo") || fail "GET /v1/echo failed"
[ "$(jget o.headers.host <<<"$out")" = foo.test ] || fail "upstream Host: $(jget o.headers.host <<<"$out")"

check "route without strip_prefix: /echo reaches the upstream as /echo"
out=$(curl -sf "$B/echo") || fail "GET /echo failed"
[ "$(jget o.url <<<"$out")" = /echo ] || fail "upstream url $(jget o.url <<<"$out")"

check "routing by host: Host a.test goes to cluster two (U2) whatever the path"
got=$(curl -sf -H 'Host: a.test' "$B/id") || fail "GET /id with Host a.test failed"
[ "$got" = "$U2" ] || fail "Host a.test reached '$got', want U2 ($U2)"
got=$(curl -sf -H 'Host: A.Test:8080' "$B/id") || fail "GET /id with Host A.Test:8080 failed"
[ "$got" = "$U2" ] || fail "Host A.Test:8080 (case, port) reached '$got', want U2"

check "no route: 404"
expect_status 404 "$B/nothing"
gw_only && expect_status 404 "$B/v1" # prefix "/v1/" does not match "/v1"

check "bad paths: 400 for /../x and /v1/..%2Fx, path normalised (/v1/%65cho -> /echo)"
expect_status 400 "$B/../x" --path-as-is
gw_only && expect_status 400 "$B/v1/..%2Fx" --path-as-is
out=$(curl -sf --path-as-is "$B/v1/./a/../%65cho") || fail "GET /v1/./a/../%65cho failed"
[ "$(jget o.url <<<"$out")" = /echo ] || fail "normalised path: upstream saw $(jget o.url <<<"$out"), want /echo"

check "hop-by-hop headers are not forwarded (Connection and what it names, Keep-Alive, TE, Upgrade, Proxy-Connection)"
out=$(curl -sf -H 'Connection: keep-alive, X-Private' -H 'X-Private: secret' -H 'Keep-Alive: 5' \
  -H 'TE: trailers' -H 'Proxy-Connection: keep-alive' -H 'Upgrade: websocket' -H 'X-Keep: yes' \
  "$B/v1/echo") || fail "GET with hop-by-hop headers failed"
hop="keep-alive te upgrade"
gw_only && hop="x-private proxy-connection $hop" # nginx forwards these two
for h in $hop; do
  [ "$(jget "o.headers['$h']" <<<"$out")" = undefined ] || fail "hop-by-hop header $h reached the upstream"
done
[ "$(jget "o.headers['x-keep']" <<<"$out")" = yes ] || fail "end-to-end header X-Keep was dropped"

check "keep-alive: 200 requests over 4 client connections open few upstream connections"
c0=$(curl -sf "http://127.0.0.1:$U1/count")
for _ in 1 2 3 4; do
  urls=()
  for _ in $(seq 1 50); do urls+=("$B/v1/id"); done
  curl -sf "${urls[@]}" >/dev/null || fail "keep-alive batch failed"
done
c1=$(curl -sf "http://127.0.0.1:$U1/count")
opened=$((c1 - c0)) # connections whose first request was /healthz or /count are not counted
echo "   upstream connections opened: $opened (workers $WORKERS)"
[ "$opened" -le $((WORKERS * 4)) ] || fail "$opened upstream connections for 200 requests: no keep-alive reuse"

check "chunked request body: curl -H 'Transfer-Encoding: chunked' (300 KB), the upstream gets the same bytes"
head -c 300000 /dev/urandom >"$T/body300k"
want=$(sha256sum <"$T/body300k" | cut -c1-64)
out=$(curl -sf -H 'Transfer-Encoding: chunked' --data-binary @"$T/body300k" "$B/v1/echo") ||
  fail "chunked POST failed"
[ "$(jget o.body_sha256 <<<"$out")" = "$want" ] || fail "chunked body: sha256 differs at the upstream"
[ "$(jget o.body_length <<<"$out")" = 300000 ] || fail "chunked body: length $(jget o.body_length <<<"$out")"

check "chunked response (1 MB in 10 chunks) arrives whole"
curl -sf -D "$T/h" -o "$T/chunked.bin" "$B/v1/chunked?n=1000000&parts=10" || fail "GET /chunked failed"
want=$(awk -F': ' 'tolower($1)=="x-body-sha256"{print $2}' "$T/h" | tr -d '\r')
[ "$(sha256sum <"$T/chunked.bin" | cut -c1-64)" = "$want" ] || fail "chunked response: sha256 differs"

check "20 MB upload: sha256 matches at the upstream"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$T/big.bin"
want=$(sha256sum <"$T/big.bin" | cut -c1-64)
out=$(curl -sf -H 'Expect:' --data-binary @"$T/big.bin" "$B/v1/echo") || fail "20 MB upload failed"
[ "$(jget o.body_sha256 <<<"$out")" = "$want" ] || fail "20 MB upload: sha256 differs"

check "20 MB download: sha256 matches the upstream's"
curl -sf -D "$T/h" -o "$T/down.bin" "$B/v1/big?n=$((20 * 1024 * 1024))" || fail "20 MB download failed"
want=$(awk -F': ' 'tolower($1)=="x-body-sha256"{print $2}' "$T/h" | tr -d '\r')
[ "$(sha256sum <"$T/down.bin" | cut -c1-64)" = "$want" ] || fail "20 MB download: sha256 differs"
[ "$(stat -c %s "$T/down.bin")" = $((20 * 1024 * 1024)) ] || fail "20 MB download: wrong size"

check "Expect: 100-continue upload (2 MB): answered, body complete, Expect not forwarded"
head -c 2000000 /dev/urandom >"$T/b2m"
want=$(sha256sum <"$T/b2m" | cut -c1-64)
out=$(curl -sf -H 'Expect: 100-continue' --expect100-timeout 5 --data-binary @"$T/b2m" "$B/v1/echo") ||
  fail "Expect: 100-continue upload failed"
[ "$(jget o.body_sha256 <<<"$out")" = "$want" ] || fail "100-continue upload: sha256 differs"
[ "$(jget o.headers.expect <<<"$out")" = undefined ] || fail "Expect was forwarded upstream"

check "HEAD keeps the upstream's Content-Length"
cl=$(curl -sfI "$B/v1/big?n=12345" | awk -F': ' 'tolower($1)=="content-length"{print $2}' | tr -d '\r')
[ "$cl" = 12345 ] || fail "HEAD Content-Length '$cl', want 12345"

check "balancing: /u/id over U1 and U2 sees both"
seen=$(for _ in $(seq 1 12); do curl -sf "$B/u/id"; done | sort -u | tr '\n' ' ')
[ "$seen" = "$(printf '%s\n' "$U1" "$U2" | sort | tr '\n' ' ')" ] || fail "balancing saw '$seen'"

if gw_only; then
  check "active health: U2 reports 503 on /healthz -> only U1 serves; back when it recovers"
  touch "$T/down2"
  sleep 1
  seen=$(for _ in $(seq 1 10); do curl -sf "$B/u/id"; done | sort -u | tr '\n' ' ')
  [ "$seen" = "$U1 " ] || fail "with U2 unhealthy, /u/id reached '$seen'"
  rm -f "$T/down2"
  sleep 1
  seen=$(for _ in $(seq 1 12); do curl -sf "$B/u/id"; done | sort -u | wc -l)
  [ "$seen" = 2 ] || fail "U2 did not come back after its health check passed"
fi

check "upstream down: /solo/ gives 502 or 503, then 200 again once it is back"
# shellcheck disable=SC2154 # PID_u3 is set by start_up (eval)
kill -TERM "$PID_u3"
wait "$PID_u3" 2>/dev/null
s=$(status "$B/solo/id")
case $s in 502 | 503) ;; *) fail "with the upstream down: status $s, want 502 or 503" ;; esac
sleep 0.5
s=$(status "$B/solo/id")
case $s in 502 | 503) ;; *) fail "with the upstream down (later): status $s, want 502 or 503" ;; esac
start_up u3 "$U3"
ok=
for _ in $(seq 1 50); do
  [ "$(status "$B/solo/id")" = 200 ] && ok=1 && break
  sleep 0.1
done
[ -n "$ok" ] || fail "no recovery within 5 s after the upstream came back"

check "upstream slower than the read timeout (2 s): 504"
t0=$(date +%s%N)
expect_status 504 "$B/v1/slow?ms=4000"
dt=$((($(date +%s%N) - t0) / 1000000))
echo "   answered after ${dt} ms"
[ "$dt" -lt 3900 ] || fail "504 came after ${dt} ms: the read timeout did not fire"

check "upstream dies mid-body: the client sees a failed transfer (curl exit 18), never a complete body"
curl -s -o "$T/mid.bin" "$B/v1/close-mid"
rc=$?
[ "$rc" = 18 ] || fail "close-mid: curl exit $rc, want 18 (partial file); size $(stat -c %s "$T/mid.bin")"

if gw_only; then
  check "X-Forwarded-For from an untrusted peer is not believed: X-Real-IP 127.0.0.1"
  out=$(curl -sf -H 'X-Forwarded-For: 6.6.6.6' -H 'X-Real-IP: 6.6.6.6' "$B/v1/echo") || fail "GET failed"
  [ "$(jget "o.headers['x-real-ip']" <<<"$out")" = 127.0.0.1 ] ||
    fail "X-Real-IP $(jget "o.headers['x-real-ip']" <<<"$out"), want 127.0.0.1"
  [ "$(jget "o.headers['x-forwarded-for']" <<<"$out")" = 127.0.0.1 ] ||
    fail "X-Forwarded-For $(jget "o.headers['x-forwarded-for']" <<<"$out"), want 127.0.0.1 (the spoofed list dropped)"
  [ "$(jget "o.headers['x-forwarded-proto']" <<<"$out")" = http ] || fail "X-Forwarded-Proto is not http"

  check "X-Forwarded-For from a trusted proxy (127.0.0.2) is believed"
  out=$(curl -sf --interface 127.0.0.2 -H 'X-Forwarded-For: 6.6.6.6' "$B/v1/echo") ||
    fail "GET from 127.0.0.2 failed"
  [ "$(jget "o.headers['x-real-ip']" <<<"$out")" = 6.6.6.6 ] ||
    fail "X-Real-IP $(jget "o.headers['x-real-ip']" <<<"$out"), want 6.6.6.6"
  [ "$(jget "o.headers['x-forwarded-for']" <<<"$out")" = "6.6.6.6, 127.0.0.2" ] ||
    fail "X-Forwarded-For '$(jget "o.headers['x-forwarded-for']" <<<"$out")', want '6.6.6.6, 127.0.0.2'"

  check "traceparent: the trace id is kept with a new span id"
  tp=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
  out=$(curl -sf -H "traceparent: $tp" "$B/v1/echo") || fail "GET failed"
  got=$(jget o.headers.traceparent <<<"$out")
  [[ $got =~ ^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$ ]] || fail "traceparent forwarded as '$got'"
  [ "$got" != "$tp" ] || fail "traceparent: the span id was not renewed"

  check "traceparent: created when absent (and when malformed)"
  for h in "X-None: 1" "traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01"; do
    out=$(curl -sf -H "$h" "$B/v1/echo") || fail "GET failed"
    got=$(jget o.headers.traceparent <<<"$out")
    [[ $got =~ ^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$ ]] || fail "no valid traceparent created ('$got')"
    [[ $got != 00-00000000000000000000000000000000-* ]] || fail "an all-zero trace id was kept"
  done

  check "admin: /healthz ok, /metrics has dengbao_gateway_requests_total"
  [ "$(curl -sf "http://127.0.0.1:$AP/healthz")" = ok ] || fail "admin /healthz"
  curl -sf "http://127.0.0.1:$AP/metrics" >"$T/metrics" || fail "admin /metrics"
  grep -q '^dengbao_gateway_requests_total{' "$T/metrics" || fail "/metrics lacks dengbao_gateway_requests_total"

  check "access log: every line is JSON; the 404 and 200 above are there with their status; no query"
  sleep 1.5 # flushed every second
  [ -s "$T/access.log" ] || fail "the access log is empty"
  node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").split("\n").filter((l) => l);
let n404 = 0, n200 = 0, n504 = 0;
for (const l of lines) {
  let o;
  try { o = JSON.parse(l); } catch (e) { console.error("not JSON: " + l); process.exit(1); }
  if (o.status === 404 && o.path === "/nothing") n404++;
  if (o.status === 200) n200++;
  if (o.status === 504) n504++;
  if (typeof o.path === "string" && o.path.includes("?")) { console.error("query logged: " + l); process.exit(1); }
}
if (!n404 || !n200 || !n504) { console.error(`missing lines: 404 ${n404} 200 ${n200} 504 ${n504}`); process.exit(1); }
console.log(`   ${lines.length} lines, all JSON`);' "$T/access.log" || fail "access log check"
fi

check "wrk 5 s through the gateway: no non-2xx, no socket errors"
wrk -t2 -c32 -d5s "$B/v1/id" >"$T/wrk.out" 2>&1 || fail "wrk failed: $(cat "$T/wrk.out")"
grep -E 'Requests/sec|Non-2xx|Socket errors' "$T/wrk.out" | sed 's/^/   /'
grep -q 'Non-2xx' "$T/wrk.out" && fail "wrk saw non-2xx answers"
grep -q 'Socket errors' "$T/wrk.out" && fail "wrk saw socket errors"

check "graceful stop: SIGTERM, exit 0"
kill -TERM "$GW_PID"
wait "$GW_PID"
rc=$?
GW_PID=
[ "$rc" = 0 ] || fail "the gateway exited with $rc on SIGTERM"
echo "PASS gateway_proxy"
