#!/usr/bin/env bash
# gateway_reload.sh DENGBAO: configuration reload (SIGHUP) under load, a refused bad
# configuration, and access log reopening (SIGUSR1).
#
# One Node upstream (gwupstream.js) and `dengbao gateway --config` (2 workers). While wrk runs
# for 10 s against /v1/id, the configuration file is rewritten three times (each time with one
# more route, /new1/ .. /new3/) and SIGHUP is sent after each. Then: wrk must report no socket
# errors and no non-2xx answers, each new route must work, a bad file + SIGHUP must leave the
# running configuration serving (stderr says why it was refused), `--check` must refuse the
# bad file naming its line, and after the log file is moved away SIGUSR1 must make the
# gateway write a new one. Stopped by PID on exit.
#
# Development aid (not used by ctest): GW_IMPL=nginx reloads nginx the same way.
set -uo pipefail
BIN=${1:?usage: gateway_reload.sh DENGBAO}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
UPJS=$HERE/gwupstream.js
IMPL=${GW_IMPL:-dengbao}
T=$(mktemp -d /tmp/gwreload.XXXXXX)
PIDS=()
GW_PID=
WRK_PID=

cleanup() {
  local p
  for p in $WRK_PID "${PIDS[@]}" $GW_PID; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in $WRK_PID "${PIDS[@]}" $GW_PID; do
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
check() { echo "-- $*"; }
gw_only() { [ "$IMPL" = dengbao ]; }

if [ "$IMPL" = dengbao ] && ! "$BIN" gateway --help >/dev/null 2>&1; then
  echo "FAIL: '$BIN gateway --help' does not work" >&2
  exit 1
fi
for c in node curl wrk; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh)"
done

U=$("$SVC" freeport) GP=$("$SVC" freeport)
node "$UPJS" "$U" >"$T/up.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q ready "$T/up.out" 2>/dev/null && break
  sleep 0.05
done
grep -q ready "$T/up.out" || fail "the upstream did not start: $(cat "$T/up.out")"

# write_config N: the configuration with routes /new1/ .. /newN/ added
write_config() {
  local n=$1 i
  if gw_only; then
    {
      cat <<EOF
workers: 2
listeners:
  - listen: "127.0.0.1:$GP"
timeouts: {header: 10s, body: 60s, idle: 60s, drain: 5s}
access_log: "$T/access.log"
clusters:
  - name: one
    endpoints: ["127.0.0.1:$U"]
    keepalive: 64
    timeouts: {connect: 1s, read: 5s}
routes:
  - {name: v1, prefix: /v1/, cluster: one, strip_prefix: true}
EOF
      for i in $(seq 1 "$n"); do
        echo "  - {name: new$i, prefix: /new$i/, cluster: one, strip_prefix: true}"
      done
    } >"$T/gw.yaml.tmp"
    mv "$T/gw.yaml.tmp" "$T/gw.yaml" # atomic replace, as an operator's tool would
  else
    {
      cat <<EOF
worker_processes 2;
$([ "$(id -u)" = 0 ] && echo 'user root;')
daemon off;
pid $T/nginx.pid;
error_log $T/gw.err notice;
events { worker_connections 1024; }
http {
  access_log $T/access.log;
  client_body_temp_path $T/tmp/cb; proxy_temp_path $T/tmp/px; fastcgi_temp_path $T/tmp/fc;
  uwsgi_temp_path $T/tmp/uw; scgi_temp_path $T/tmp/sc;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  upstream one { server 127.0.0.1:$U; keepalive 64; }
  server {
    listen 127.0.0.1:$GP;
    location /v1/ { proxy_pass http://one/; }
EOF
      for i in $(seq 1 "$n"); do
        echo "    location /new$i/ { proxy_pass http://one/; }"
      done
      echo "  }"
      echo "}"
    } >"$T/nginx.conf"
  fi
}

write_config 0
if gw_only; then
  "$BIN" gateway --config "$T/gw.yaml" 2>"$T/gw.err" &
  GW_PID=$!
else
  mkdir -p "$T/tmp"
  nginx -p "$T" -e "$T/gw.err" -c "$T/nginx.conf" &
  GW_PID=$!
fi
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$GP/v1/id" && break
  kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited during start-up"
  sleep 0.1
done
B=http://127.0.0.1:$GP
[ "$(curl -s "$B/v1/id")" = "$U" ] || fail "the gateway does not serve /v1/id"

check "before reload: /new1/ has no route (404)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$B/new1/id")
[ "$code" = 404 ] || fail "/new1/id: $code before any reload, want 404"

check "wrk 10 s on /v1/id while the configuration is rewritten and SIGHUP sent 3 times"
wrk -t2 -c16 -d10s "$B/v1/id" >"$T/wrk.out" 2>&1 &
WRK_PID=$!
for i in 1 2 3; do
  sleep 2.5
  write_config "$i"
  kill -HUP "$GW_PID" || fail "SIGHUP failed: the gateway is gone"
  for _ in $(seq 1 30); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$B/new$i/id")" = 200 ] && break
    sleep 0.1
  done
  gw_only || sleep 1 # nginx: old workers still accept for a moment
  code=$(curl -s -o /dev/null -w '%{http_code}' "$B/new$i/id")
  echo "   reload $i: /new$i/id -> $code"
  [ "$code" = 200 ] || fail "after reload $i, /new$i/id gives $code"
done
wait "$WRK_PID"
WRK_PID=
grep -E 'requests in|Requests/sec|Non-2xx|Socket errors' "$T/wrk.out" | sed 's/^/   /'
grep -q 'requests in' "$T/wrk.out" || fail "wrk did not run: $(cat "$T/wrk.out")"
grep -q 'Non-2xx' "$T/wrk.out" && fail "wrk saw non-2xx answers during the reloads"
grep -q 'Socket errors' "$T/wrk.out" && fail "wrk saw socket errors during the reloads"
if gw_only; then
  n=$(grep -c 'gateway: reloaded' "$T/gw.err")
  [ "$n" = 3 ] || fail "stderr has $n 'gateway: reloaded' lines, want 3"
fi

check "every route added by the reloads works (/new1/ /new2/ /new3/ and /v1/)"
for r in v1 new1 new2 new3; do
  [ "$(curl -s "$B/$r/id")" = "$U" ] || fail "/$r/id does not reach the upstream after the reloads"
done

check "a bad configuration + SIGHUP: refused, the running one keeps serving"
if gw_only; then
  cp "$T/gw.yaml" "$T/good.yaml"
  sed -i 's/^timeouts:/timeuot:/' "$T/gw.yaml"
  "$BIN" gateway --config "$T/gw.yaml" --check >"$T/check.out" 2>&1
  rc=$?
  # exit 1 (the brief) or 2 (the CLI's "malformed input" convention, README): not 0, not 3
  case $rc in 1 | 2) ;; *) fail "--check on a bad file: exit $rc, want 1 or 2 ($(cat "$T/check.out"))" ;; esac
  grep -q "timeuot" "$T/check.out" || fail "--check does not name the bad key: $(cat "$T/check.out")"
  grep -Eq 'gw.yaml:[0-9]+' "$T/check.out" || fail "--check does not name the line: $(cat "$T/check.out")"
  echo "   --check: $(head -1 "$T/check.out")"
else
  echo "this is not nginx syntax" >>"$T/nginx.conf"
fi
kill -HUP "$GW_PID" || fail "SIGHUP failed"
sleep 1
kill -0 "$GW_PID" 2>/dev/null || fail "the gateway died on a bad configuration"
for r in v1 new3; do
  [ "$(curl -s "$B/$r/id")" = "$U" ] || fail "/$r/id stopped working after a refused reload"
done
if gw_only; then
  grep -q 'reload refused' "$T/gw.err" || fail "stderr does not say the reload was refused"
  echo "   stderr: $(grep 'reload refused' "$T/gw.err" | tail -1)"

  check "a configuration that changes the listeners is refused too (needs a restart)"
  sed "s/127.0.0.1:$GP/127.0.0.1:$("$SVC" freeport)/" "$T/good.yaml" >"$T/gw.yaml"
  kill -HUP "$GW_PID"
  sleep 1
  [ "$(grep -c 'reload refused' "$T/gw.err")" -ge 2 ] || fail "a listener change was not refused"
  [ "$(curl -s "$B/v1/id")" = "$U" ] || fail "/v1/id stopped working after a refused listener change"
  cp "$T/good.yaml" "$T/gw.yaml"

  check "SIGUSR1 reopens the access log (rotation)"
  curl -s -o /dev/null "$B/v1/id"
  sleep 1.2
  [ -s "$T/access.log" ] || fail "the access log is empty"
  mv "$T/access.log" "$T/access.log.1"
  kill -USR1 "$GW_PID"
  sleep 0.3
  curl -s -o /dev/null "$B/v1/id?after=rotation"
  for _ in $(seq 1 30); do
    [ -s "$T/access.log" ] && break
    sleep 0.1
  done
  [ -s "$T/access.log" ] || fail "no new access log after SIGUSR1"
fi

check "graceful stop: SIGTERM, exit 0"
kill -TERM "$GW_PID"
wait "$GW_PID"
rc=$?
GW_PID=
[ "$rc" = 0 ] || fail "the gateway exited with $rc on SIGTERM"
echo "PASS gateway_reload"
