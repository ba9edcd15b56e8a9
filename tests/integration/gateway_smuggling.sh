#!/usr/bin/env bash
# gateway_smuggling.sh DENGBAO: request smuggling and malformed HTTP against the gateway.
#
# One Node upstream (tests/integration/gwupstream.js) logs one line per request it receives;
# the gateway (`dengbao gateway --config`, header timeout 2 s, header_max 16k, 100 headers)
# routes everything to it. Each case sends raw bytes with a small Node net client (written to
# the temp dir below) and checks: the status of the first answer, that the gateway closed the
# connection, that exactly one answer came back, and that the upstream never saw a request
# for /smuggled (the second request hidden in each payload) nor more requests than allowed.
# Every case runs; the failures are listed at the end. Every process is stopped by its PID.
#
# Development aid (not used by ctest): GW_IMPL=nginx runs the cases against nginx (which
# differs on several of them: the point is to exercise the harness).
set -uo pipefail
BIN=${1:?usage: gateway_smuggling.sh DENGBAO}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
UPJS=$HERE/gwupstream.js
IMPL=${GW_IMPL:-dengbao}
T=$(mktemp -d /tmp/gwsmug.XXXXXX)
PIDS=()
GW_PID=
FAILED=()

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
  [ -f "$T/gw.err" ] && tail -20 "$T/gw.err" >&2
  exit 1
}

if [ "$IMPL" = dengbao ] && ! "$BIN" gateway --help >/dev/null 2>&1; then
  echo "FAIL: '$BIN gateway --help' does not work" >&2
  exit 1
fi
command -v node >/dev/null || fail "node is not installed (scripts/deps.sh)"

# raw.js PORT FILE [trickle_ms]: sends FILE's bytes (all at once, or one byte every
# trickle_ms), reads until the server closes or 4 s pass (trickle: 15 s), prints JSON
# {status, closed, answers, ms, sent}.
cat >"$T/raw.js" <<'EOF'
'use strict';
const net = require('net');
const fs = require('fs');
const [port, file, trickle] = [+process.argv[2], process.argv[3], +(process.argv[4] || 0)];
const data = fs.readFileSync(file);
const t0 = Date.now();
let got = Buffer.alloc(0), closed = false, sent = 0, timer = null;
const s = net.connect(port, '127.0.0.1');
s.on('error', () => {});
function finish() {
  if (timer) clearInterval(timer);
  const txt = got.toString('latin1');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(txt);
  const answers = (txt.match(/HTTP\/1\.[01] \d{3} /g) || []).length; // also right after a body
  console.log(JSON.stringify({ status: m ? +m[1] : 0, closed, answers, ms: Date.now() - t0, sent }));
  s.destroy();
  process.exit(0);
}
s.on('connect', () => {
  if (!trickle) {
    s.write(data);
    sent = data.length;
    return;
  }
  timer = setInterval(() => {
    if (sent < data.length && !closed) s.write(data.subarray(sent, ++sent));
  }, trickle);
});
s.on('data', (d) => { got = Buffer.concat([got, d]); });
s.on('close', () => { closed = true; finish(); });
setTimeout(finish, trickle ? 15000 : 4000);
EOF

U=$("$SVC" freeport) GP=$("$SVC" freeport)
node "$UPJS" "$U" --log "$T/up.log" >"$T/up.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q ready "$T/up.out" 2>/dev/null && break
  sleep 0.05
done
grep -q ready "$T/up.out" || fail "the upstream did not start: $(cat "$T/up.out")"
: >"$T/up.log"

if [ "$IMPL" = dengbao ]; then
  cat >"$T/gw.yaml" <<EOF
workers: 1
listeners:
  - listen: "127.0.0.1:$GP"
limits: {header_max: 16k, headers_num_max: 100, body_max: 1m}
timeouts: {header: 2s, body: 5s, idle: 10s, drain: 2s}
clusters:
  - name: up
    endpoints: ["127.0.0.1:$U"]
    timeouts: {connect: 1s, read: 3s}
routes:
  - {prefix: /, cluster: up}
EOF
  "$BIN" gateway --config "$T/gw.yaml" 2>"$T/gw.err" &
  GW_PID=$!
else
  mkdir -p "$T/tmp"
  cat >"$T/nginx.conf" <<EOF
worker_processes 1;
$([ "$(id -u)" = 0 ] && echo 'user root;')
daemon off;
pid $T/nginx.pid;
error_log $T/gw.err warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_header_timeout 2s;
  large_client_header_buffers 4 16k;
  client_body_temp_path $T/tmp/cb; proxy_temp_path $T/tmp/px; fastcgi_temp_path $T/tmp/fc;
  uwsgi_temp_path $T/tmp/uw; scgi_temp_path $T/tmp/sc;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  upstream up { server 127.0.0.1:$U; keepalive 16; }
  server { listen 127.0.0.1:$GP; location / { proxy_pass http://up; } }
}
EOF
  nginx -p "$T" -e "$T/gw.err" -c "$T/nginx.conf" &
  GW_PID=$!
fi
ready=
for _ in $(seq 1 100); do
  if [ "$IMPL" != dengbao ] || grep -q 'gateway: listening on' "$T/gw.err" 2>/dev/null; then
    curl -sf -o /dev/null "http://127.0.0.1:$GP/healthz" && ready=1 && break
  fi
  kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited during start-up"
  sleep 0.1
done
[ -n "$ready" ] || fail "the gateway is not ready after 10 s (GET /healthz through it)"
: >"$T/up.log"

# case NAME STATUSES MAX_UPSTREAM: the request bytes are in $T/req (see put); STATUSES is a
# '|' list of accepted first statuses; MAX_UPSTREAM the most upstream log lines allowed.
# CLOSE=0 before the call for cases where the connection may stay open.
case_() {
  local name=$1 statuses=$2 maxup=$3 out st closed answers n
  : >"$T/up.log"
  out=$(node "$T/raw.js" "$GP" "$T/req")
  sleep 0.2 # let any smuggled request reach the upstream
  st=$(sed -E 's/.*"status":([0-9]+).*/\1/' <<<"$out")
  closed=$(sed -E 's/.*"closed":(true|false).*/\1/' <<<"$out")
  answers=$(sed -E 's/.*"answers":([0-9]+).*/\1/' <<<"$out")
  n=$(wc -l <"$T/up.log")
  local why=""
  [[ "|$statuses|" == *"|$st|"* ]] || why+=" status $st (want $statuses);"
  [ "${CLOSE:-1}" = 0 ] || [ "$closed" = true ] || why+=" connection left open;"
  [ "${CLOSE:-1}" = 0 ] || [ "$answers" -le 1 ] || why+=" $answers answers;"
  grep -q /smuggled "$T/up.log" && why+=" the upstream saw /smuggled;"
  [ "$n" -le "$maxup" ] || why+=" $n upstream requests (max $maxup);"
  if [ -z "$why" ]; then
    printf -- '-- ok   %-44s status %s, closed %s, upstream saw %s\n' "$name" "$st" "$closed" "$n"
  else
    printf -- '-- FAIL %-44s%s\n' "$name" "$why"
    sed 's/^/        upstream: /' "$T/up.log"
    FAILED+=("$name")
  fi
}
put() { printf "$@" >"$T/req"; } # printf-style escapes: \r\n, \x00
SMUG='GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n'

echo "== positive controls (the harness can see requests reach the upstream)"
put 'GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
: >"$T/up.log"
out=$(node "$T/raw.js" "$GP" "$T/req")
sleep 0.2
[ "$(wc -l <"$T/up.log")" = 2 ] || fail "pipelined control: the upstream saw $(wc -l <"$T/up.log") requests, want 2"
[[ $out == *'"answers":2'* ]] || fail "pipelined control: $out"
echo "-- ok   two pipelined requests: 2 answers, 2 upstream requests"

echo "== conflicting framing"
put "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n$SMUG"
case_ "CL.TE (Content-Length + chunked)" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /smuggled HTTP/1.1\r\nContent-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n"
case_ "TE.CL (chunked + Content-Length)" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n$SMUG"
case_ "TE.TE chunked + identity" "400|501" 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n$SMUG"
case_ "TE: xchunked" "400|501" 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n$SMUG"
case_ "TE obs-fold ' chunked'" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n$SMUG"
case_ "'Transfer-Encoding : chunked' (space)" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n$SMUG"
case_ "TE: chunked, identity" "400|501" 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello$SMUG"
case_ "duplicate Content-Length (equal)" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 42\r\n\r\nhello$SMUG"
case_ "duplicate Content-Length (different)" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello$SMUG"
case_ "Content-Length: 5, 5" 400 0
put "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello$SMUG"
case_ "Content-Length: +5" 400 0

echo "== malformed headers"
put "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n$SMUG"
case_ "obs-fold in an ordinary header" 400 0
put "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n$SMUG"
case_ "NUL in a header value" 400 0
put "GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n$SMUG"
case_ "bare CR in a header value" 400 0
put "GET /echo HTTP/1.1\nHost: x\n\n$SMUG"
case_ "bare LF line ends" 400 0
put "GET /echo HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n$SMUG"
case_ "space inside a header name" 400 0
put "GET /echo HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n$SMUG"
case_ "two Host headers" 400 0

echo "== bad chunked bodies (the head may already have gone upstream: at most 1 request)"
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n0123456789abcdef\r\n0\r\n\r\n$SMUG"
case_ "chunk size 0x10" "400|502" 1
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n$SMUG"
case_ "chunk size -1" "400|502" 1
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nx\r\n0\r\n\r\n$SMUG"
case_ "chunk size of 20 hex digits" "400|413|502" 1
put "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n$SMUG"
case_ "chunk longer than its size" "400|502" 1

echo "== limits"
{
  printf 'GET /echo HTTP/1.1\r\nHost: x\r\n'
  for i in $(seq 1 20); do printf 'X-Big-%d: %01000d\r\n' "$i" 0; done
  printf '\r\n'
} >"$T/req"
case_ "header section over 16 KiB" 431 0
{
  printf 'GET /echo HTTP/1.1\r\nHost: x\r\n'
  for i in $(seq 1 1000); do printf 'X-H%d: v\r\n' "$i"; done
  printf '\r\n'
} >"$T/req"
case_ "1000 header fields" 431 0
{
  printf 'GET /echo?q=%020000d HTTP/1.1\r\nHost: x\r\n\r\n' 0
} >"$T/req"
case_ "request line of 20 KB" "414|431" 0

echo "== request lines"
put "GET http://evil.test/echo HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSE=0 case_ "absolute-form target (accepted or refused)" "200|400|404" 1
put "G@T /echo HTTP/1.1\r\nHost: x\r\n\r\n$SMUG"
case_ "garbage method G@T" "400|501" 0
put "get /echo HTTP/1.1\r\nHost: x\r\n\r\n$SMUG"
case_ "lower-case method" "400|501" 0
put "GET /echo HTTP/1.1 extra\r\nHost: x\r\n\r\n$SMUG"
case_ "junk after the version" 400 0
put "GET /echo HTTP/2.0\r\nHost: x\r\n\r\n$SMUG"
case_ "HTTP/2.0 in an HTTP/1 request line" "400|505" 0

echo "== slowloris: headers trickled one byte per second are cut by the 2 s header timeout"
put 'GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n'
node "$T/raw.js" "$GP" "$T/req" 1000 >"$T/slow.out" &
slow=$!
sleep 0.5
okd=0
for _ in 1 2 3 4 5; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$GP/id")" = 200 ] && okd=$((okd + 1))
  sleep 0.3
done
wait "$slow"
out=$(cat "$T/slow.out")
ms=$(sed -E 's/.*"ms":([0-9]+).*/\1/' <<<"$out")
if [[ $out == *'"closed":true'* ]] && [ "$ms" -lt 5000 ] && [ "$okd" = 5 ]; then
  echo "-- ok   slowloris closed after ${ms} ms ($out); 5/5 other requests served meanwhile"
else
  echo "-- FAIL slowloris: $out; other requests served meanwhile: $okd/5"
  FAILED+=("slowloris")
fi

echo "== the gateway still serves after all that"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GP/id")" = 200 ] || FAILED+=("serving after the cases")

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "FAIL: ${#FAILED[@]} case(s): ${FAILED[*]}" >&2
  [ -f "$T/gw.err" ] && tail -20 "$T/gw.err" >&2
  exit 1
fi
echo "PASS gateway_smuggling"
