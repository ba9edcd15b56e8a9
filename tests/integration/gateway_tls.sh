#!/usr/bin/env bash
# gateway_tls.sh DENGBAO: TLS and mutual TLS listeners of the gateway.
#
# Makes, in a temp dir with `openssl req/x509` (ECDSA P-256): a CA, a server certificate for
# 127.0.0.1 (IP SAN) signed by it, a client certificate signed by it, and a second CA with its
# own client certificate. Starts one Node upstream (gwupstream.js) and `dengbao gateway` with
# two listeners: TLS, and TLS with client_verify: require against the first CA. Checks:
# TLS 1.2 and TLS 1.3 work with curl --cacert, TLS 1.1 is refused, the upstream sees
# X-Forwarded-Proto: https, and on the mTLS listener a good client certificate gets 200 while
# no certificate or one from the other CA fails the handshake. Stopped by PID on exit.
#
# Development aid (not used by ctest): GW_IMPL=nginx runs the same checks against nginx.
set -uo pipefail
BIN=${1:?usage: gateway_tls.sh DENGBAO}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
UPJS=$HERE/gwupstream.js
IMPL=${GW_IMPL:-dengbao}
T=$(mktemp -d /tmp/gwtls.XXXXXX)
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
  [ -f "$T/gw.err" ] && tail -20 "$T/gw.err" >&2
  exit 1
}
check() { echo "-- $*"; }

if [ "$IMPL" = dengbao ] && ! "$BIN" gateway --help >/dev/null 2>&1; then
  echo "FAIL: '$BIN gateway --help' does not work" >&2
  exit 1
fi
for c in node curl openssl; do
  command -v "$c" >/dev/null || fail "$c is not installed (scripts/deps.sh)"
done

check "certificates: CA, server (IP SAN 127.0.0.1), client, and a foreign CA + client"
cd "$T" || fail "cannot enter $T"
mkcert() { # NAME SUBJECT ISSUER [EXT]: key NAME.key, cert NAME.pem signed by ISSUER (.key/.pem)
  local name=$1 subj=$2 issuer=$3 ext=${4:-}
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
    -subj "$subj" -out "$name.csr" 2>/dev/null || return 1
  if [ -n "$ext" ]; then
    printf '%s\n' "$ext" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
      -days 2 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
  else
    openssl x509 -req -in "$name.csr" -CA "$issuer.pem" -CAkey "$issuer.key" -CAcreateserial \
      -days 2 -sha256 -out "$name.pem" 2>/dev/null
  fi
}
mkca() { # NAME SUBJECT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" \
    -subj "$2" -days 2 -sha256 -out "$1.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
}
mkca ca "/CN=dengbao test CA" || fail "cannot make the CA"
mkca ca2 "/CN=foreign test CA" || fail "cannot make the foreign CA"
mkcert server "/CN=127.0.0.1" ca "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth" || fail "cannot make the server certificate"
mkcert client "/CN=client-a" ca "extendedKeyUsage=clientAuth" || fail "cannot make the client certificate"
mkcert client2 "/CN=client-b" ca2 "extendedKeyUsage=clientAuth" || fail "cannot make the foreign client certificate"
chmod 600 ./*.key

U=$("$SVC" freeport) P1=$("$SVC" freeport) P2=$("$SVC" freeport)
node "$UPJS" "$U" >"$T/up.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q ready "$T/up.out" 2>/dev/null && break
  sleep 0.05
done
grep -q ready "$T/up.out" || fail "the upstream did not start: $(cat "$T/up.out")"

if [ "$IMPL" = dengbao ]; then
  cat >"$T/gw.yaml" <<EOF
workers: 1
listeners:
  - listen: "127.0.0.1:$P1"
    tls: {cert: "$T/server.pem", key: "$T/server.key"}
  - listen: "127.0.0.1:$P2"
    tls: {cert: "$T/server.pem", key: "$T/server.key", client_ca: "$T/ca.pem",
          client_verify: require}
clusters:
  - name: up
    endpoints: ["127.0.0.1:$U"]
routes:
  - {prefix: /, cluster: up}
EOF
  "$BIN" gateway --config "$T/gw.yaml" 2>"$T/gw.err" &
  GW_PID=$!
  for _ in $(seq 1 100); do
    [ "$(grep -c 'gateway: listening on https://' "$T/gw.err" 2>/dev/null)" -ge 2 ] && break
    kill -0 "$GW_PID" 2>/dev/null || fail "the gateway exited during start-up"
    sleep 0.1
  done
  [ "$(grep -c 'gateway: listening on https://' "$T/gw.err")" -ge 2 ] ||
    fail "no 'gateway: listening on https://' lines after 10 s"
else
  mkdir -p "$T/tmp"
  cat >"$T/nginx.conf" <<EOF
worker_processes 1;
$([ "$(id -u)" = 0 ] && echo 'user root;')
daemon off;
pid $T/nginx.pid;
error_log $T/gw.err warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $T/tmp/cb; proxy_temp_path $T/tmp/px; fastcgi_temp_path $T/tmp/fc;
  uwsgi_temp_path $T/tmp/uw; scgi_temp_path $T/tmp/sc;
  ssl_certificate $T/server.pem; ssl_certificate_key $T/server.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  proxy_set_header X-Forwarded-Proto \$scheme;
  server { listen 127.0.0.1:$P1 ssl; location / { proxy_pass http://127.0.0.1:$U; } }
  server { listen 127.0.0.1:$P2 ssl; ssl_client_certificate $T/ca.pem; ssl_verify_client on;
           location / { proxy_pass http://127.0.0.1:$U; } }
}
EOF
  nginx -p "$T" -e "$T/gw.err" -c "$T/nginx.conf" &
  GW_PID=$!
  sleep 0.5
fi

S1=https://127.0.0.1:$P1 S2=https://127.0.0.1:$P2

check "TLS 1.2 (curl --tls-max 1.2) with --cacert: 200"
out=$(curl -sf --cacert ca.pem --tlsv1.2 --tls-max 1.2 "$S1/echo") || fail "TLS 1.2 request failed (curl exit $?)"
check "the upstream sees X-Forwarded-Proto: https"
[[ $out == *'"x-forwarded-proto":"https"'* ]] || fail "X-Forwarded-Proto is not https: $out"

check "TLS 1.3 (curl --tlsv1.3): 200; the handshake really is TLS 1.3 (openssl s_client)"
curl -sf -o /dev/null --cacert ca.pem --tlsv1.3 "$S1/id" || fail "TLS 1.3 request failed (curl exit $?)"
proto=$(openssl s_client -connect "127.0.0.1:$P1" -CAfile ca.pem -tls1_3 </dev/null 2>/dev/null |
  awk '/^ *Protocol *:/{print $3; exit} /^New, TLSv1.3/{print "TLSv1.3"; exit}')
[ "$proto" = TLSv1.3 ] || fail "openssl s_client -tls1_3: protocol '$proto'"
proto=$(openssl s_client -connect "127.0.0.1:$P1" -CAfile ca.pem -tls1_2 </dev/null 2>/dev/null |
  awk '/^ *Protocol *:/{print $3; exit}')
[ "$proto" = TLSv1.2 ] || fail "openssl s_client -tls1_2: protocol '$proto'"

check "the server certificate verifies for 127.0.0.1 (and is refused without the CA)"
curl -s -o /dev/null "$S1/id" && fail "curl without --cacert accepted a test-CA certificate?"

check "TLS 1.1 is refused (client allowed down to SECLEVEL 0)"
if openssl s_client -connect "127.0.0.1:$P1" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' </dev/null \
  >"$T/tls11.out" 2>&1 && grep -q 'Protocol *: TLSv1.1' "$T/tls11.out"; then
  fail "a TLS 1.1 handshake succeeded"
fi
curl -s -o /dev/null --cacert ca.pem --tlsv1.1 --tls-max 1.1 --ciphers 'DEFAULT:@SECLEVEL=0' "$S1/id" &&
  fail "curl over TLS 1.1 succeeded"

check "mTLS (client_verify: require): a client certificate from the CA gets 200"
got=$(curl -sf --cacert ca.pem --cert client.pem --key client.key "$S2/id") ||
  fail "mTLS with a good certificate failed (curl exit $?)"
[ "$got" = "$U" ] || fail "mTLS answer '$got'"

check "mTLS: no client certificate -> the handshake (or first read) fails, no 200"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem "$S2/id")
rc=$?
[ "$rc" != 0 ] || [ "$code" != 200 ] || fail "mTLS without a certificate got 200"
echo "   curl exit $rc, status $code"

check "mTLS: a certificate from another CA is refused"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert ca.pem --cert client2.pem --key client2.key "$S2/id")
rc=$?
[ "$rc" != 0 ] || [ "$code" != 200 ] || fail "mTLS with a foreign certificate got 200"
echo "   curl exit $rc, status $code"

check "the plain-TLS listener still serves after the refused handshakes"
curl -sf -o /dev/null --cacert ca.pem "$S1/id" || fail "TLS listener stopped serving"

kill -TERM "$GW_PID"
wait "$GW_PID"
rc=$?
GW_PID=
[ "$rc" = 0 ] || fail "the gateway exited with $rc on SIGTERM"
echo "PASS gateway_tls"
