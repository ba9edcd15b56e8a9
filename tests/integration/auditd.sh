#!/usr/bin/env bash
# auditd.sh DENGBAO: the audit log service end to end, with curl, on loopback.
#
# Creates a log with `dengbao audit init`, starts `dengbao auditd` on 127.0.0.1 with port 0 (the
# kernel picks a free port, which auditd prints), and checks every endpoint: appends (single
# and NDJSON), a bad batch (400 naming line and field, nothing appended), authentication and
# roles (401/403, tokens and mTLS), reads and their own audit records, proofs that verify
# offline with `dengbao audit verify-proof`, metrics, healthz; then TLS and mTLS (accepted CN,
# unknown CN, foreign CA). auditd is stopped by its PID with SIGTERM and must exit 0; finally
# `dengbao audit verify` must pass. Then fail closed: with the log's fault layer
# (DENGBAO_AUDIT_FAULT=eio-sync=N) the disk fails under the service: writes are acknowledged
# until then and refused (503) after, reads whose own audit record cannot be written are
# refused, /healthz says 503, auditd exits 3, and every acknowledged record is intact.
# Every check prints "ok - ..." or fails the script.
set -euo pipefail

bin=$(realpath "$1")
work=$(mktemp -d /tmp/dbao-auditd-XXXXXX)
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

fail() { echo "FAIL - $*" >&2; [ -f err.txt ] && sed 's/^/  auditd: /' err.txt >&2; exit 1; }
ok() { echo "ok - $*"; }

"$bin" audit init --dir log --origin test.example/audit >/dev/null
sm3() { printf %s "$1" | "$bin" gm sm3; }
cat >auth.json <<EOF
{"tokens":[{"sm3":"$(sm3 writer-secret)","subject":"svc-gateway","roles":["audit-writer"]},
           {"sm3":"$(sm3 admin-secret)","subject":"auditor-1","roles":["audit-admin"]}],
 "clients":[{"cn":"gateway-1","roles":["audit-writer","audit-admin"]}]}
EOF

# A group-writable auth file is refused.
chmod 620 auth.json
set +e
"$bin" auditd --dir log --listen 127.0.0.1:0 --auth auth.json >/dev/null 2>refuse.txt
rc=$?
set -e
[ "$rc" -eq 2 ] && grep -q "writable" refuse.txt || fail "group-writable auth file accepted (rc $rc)"
ok "group-writable auth file refused"
chmod 600 auth.json

start() { start_dir log "$@"; }
start_dir() {
  local d=$1
  shift
  : >out.txt
  "$bin" auditd --dir "$d" --listen 127.0.0.1:0 --auth auth.json "$@" >out.txt 2>err.txt &
  pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" out.txt && break
    kill -0 "$pid" 2>/dev/null || fail "auditd exited at start"
    sleep 0.05
  done
  port=$(sed -n 's/.*:\([0-9][0-9]*\)$/\1/p' out.txt)
  [ -n "$port" ] || fail "auditd did not print its port"
}
stop() {
  kill -TERM "$pid"
  set +e
  wait "$pid"
  rc=$?
  set -e
  pid=""
  [ "$rc" -eq "${1:-0}" ] || fail "auditd exited $rc after SIGTERM, want ${1:-0}"
}

start
U=http://127.0.0.1:$port
for _ in $(seq 100); do
  curl -sf "$U/healthz" >/dev/null && break
  sleep 0.05
done
[ "$(curl -s "$U/healthz")" = "ok" ] || fail "healthz"
ok "healthz on port $port"

W=(-H "Authorization: Bearer writer-secret")
A=(-H "Authorization: Bearer admin-secret")
JSON=(-H "Content-Type: application/json")
ND=(-H "Content-Type: application/x-ndjson")
# req METHOD PATH [curl args...]: sets $code and $body
req() {
  local m=$1 p=$2
  shift 2
  body=$(curl -s -o /dev/stdout -w '\n%{http_code}' -X "$m" "$@" "$U$p" || true)
  code=${body##*$'\n'}
  body=${body%$'\n'*}
}
expect() { [ "$code" = "$1" ] || fail "$2: status $code, want $1 (body: $body)"; ok "$2"; }

rec() { printf '{"subject":{"id":"%s","ip":"10.0.0.%s"},"event_type":"data.read","action":"select","object":"customers","result":"success","source":"gateway"}' "$1" "$2"; }

# ---- writing ----
req POST /v1/records "${W[@]}" "${JSON[@]}" --data "$(rec alice 1)"
expect 201 "POST one record"
[ "$body" = '{"first":0,"count":1}' ] || fail "POST one: body $body"
{ rec bob 2; echo; echo; rec carol 3; echo; rec dave 4; echo; } >batch.ndjson
req POST /v1/records "${W[@]}" "${ND[@]}" --data-binary @batch.ndjson
expect 201 "POST an NDJSON batch of 3 (blank line skipped)"
[ "$body" = '{"first":1,"count":3}' ] || fail "POST batch: body $body"
{ rec erin 5; echo; printf '{"subject":{"id":"x","ip":"300.1.1.1"},"event_type":"a.b","action":"a","result":"success","source":"g"}\n'; rec fay 6; echo; } >bad.ndjson
req POST /v1/records "${W[@]}" "${ND[@]}" --data-binary @bad.ndjson
expect 400 "POST a batch with a bad line"
echo "$body" | grep -q '"line":2' || fail "bad batch: no line 2 in $body"
echo "$body" | grep -q '"field":"subject.ip"' || fail "bad batch: no field in $body"
ok "400 names line 2 and field subject.ip"
req POST /v1/records "${W[@]}" "${ND[@]}" --data-binary $'{"subject":{"id":"x"},"event_type":"a.b","action":"a","result":"maybe","source":"g"}\n'
expect 400 "POST a record with a bad result"
echo "$body" | grep -q '"line":1' || fail "bad result: $body"
req POST /v1/records "${W[@]}" "${JSON[@]}" --data 'not json'
expect 400 "POST a body that is not JSON"
req POST /v1/records "${W[@]}" -H "Content-Type: text/plain" --data "$(rec x 1)"
expect 415 "POST with the wrong content type"
req POST /v1/records "${W[@]}" "${ND[@]}" --data-binary $'\n\n'
expect 400 "POST an empty batch"
req GET /v1/records/4 "${A[@]}"
expect 404 "nothing was appended by the bad requests (record 4 absent)"

# ---- authentication and roles ----
req GET /v1/records/0
expect 401 "read without credentials"
curl -s -D - -o /dev/null "$U/v1/records/0" | grep -qi '^www-authenticate: bearer' || fail "no WWW-Authenticate"
req GET /v1/records/0 -H "Authorization: Bearer wrong-secret"
expect 401 "read with a wrong token"
req GET /v1/records/0 -H "Authorization: Basic dXNlcjpwYXNz"
expect 401 "read with Basic auth"
req GET /v1/records/0 "${W[@]}"
expect 403 "read with a writer-only token"
req POST /v1/records "${A[@]}" "${JSON[@]}" --data "$(rec eve 9)"
expect 403 "write with an admin-only token"
req POST /v1/records -H "X-Subject: root" -H "X-Client-CN: gateway-1" "${JSON[@]}" --data "$(rec eve 9)"
expect 401 "identity headers from the client are ignored"

# ---- reading ----
req GET /v1/records/0 "${A[@]}"
expect 200 "read record 0"
echo "$body" | grep -q '"id":"alice"' || fail "record 0: $body"
echo "$body" >rec2.json
req GET /v1/records/2 "${A[@]}"
expect 200 "read record 2"
echo "$body" | grep -q '"id":"carol"' || fail "record 2: $body"
echo "$body" >rec2.json
req GET /v1/records/99999 "${A[@]}"
expect 404 "read a record past the end"
req GET /v1/records/abc "${A[@]}"
expect 400 "read a record with a bad index"
req DELETE /v1/records/0 "${A[@]}"
expect 405 "DELETE is not allowed"
req GET /v1/nothing "${A[@]}"
expect 404 "unknown endpoint"

# The checkpoint is cut within a second of appending.
for _ in $(seq 60); do
  req GET /v1/checkpoint "${A[@]}"
  [ "$code" = 200 ] && break
  sleep 0.1
done
expect 200 "checkpoint"
printf '%s' "$body" >checkpoint.txt
[ "$(head -1 checkpoint.txt)" = "test.example/audit" ] || fail "checkpoint origin: $(head -1 checkpoint.txt)"
size=$(sed -n 2p checkpoint.txt)
[ "$size" -ge 4 ] || fail "checkpoint size $size"
grep -q '^— test.example/audit ' checkpoint.txt || fail "no signature line"
ok "checkpoint: origin, size $size, signature line"

req GET "/v1/proof/inclusion?index=2&size=$size" "${A[@]}"
expect 200 "inclusion proof"
printf '%s\n' "$body" >proof.json
echo "$body" | grep -q "^{\"type\":\"inclusion\",\"index\":2,\"size\":$size,\"leaf_hash\":\"" || fail "proof shape: $body"
"$bin" audit verify-proof --pub log/signer.pub.pem --checkpoint checkpoint.txt --record rec2.json \
  --proof proof.json >/dev/null || fail "the inclusion proof does not verify offline"
ok "the inclusion proof verifies offline with the CLI"
cli_proof=$("$bin" audit prove --dir log --index 2 --size "$size")
[ "$cli_proof" = "$(cat proof.json)" ] || fail "auditd and CLI proofs differ"
ok "auditd's proof is byte-identical to the CLI's"
req GET "/v1/proof/inclusion?index=2" "${A[@]}"
expect 200 "inclusion proof at the latest checkpoint's size"
req GET "/v1/proof/inclusion?index=$size&size=$size" "${A[@]}"
expect 400 "inclusion proof with index >= size"
req GET "/v1/proof/inclusion?size=3" "${A[@]}"
expect 400 "inclusion proof without index"
req GET "/v1/proof/consistency?from=1&to=$size" "${A[@]}"
expect 200 "consistency proof"
echo "$body" | grep -q "^{\"type\":\"consistency\",\"from\":1,\"to\":$size,\"hashes\":\[" || fail "consistency shape: $body"
req GET "/v1/proof/consistency?from=3&to=2" "${A[@]}"
expect 400 "consistency proof with from > to"
req GET /metrics "${A[@]}"
expect 200 "metrics"
for m in dengbao_audit_log_size dengbao_audit_batches_total dengbao_audit_appended_total \
  dengbao_audit_bytes_total dengbao_audit_checkpoint_size dengbao_audit_fsync_seconds_total \
  dengbao_audit_failed dengbao_auditd_auth_failures_total 'dengbao_auditd_http_requests_total{code="201"}'; do
  echo "$body" | grep -qF "$m " || fail "metric $m missing"
done
af=$(echo "$body" | sed -n 's/^dengbao_auditd_auth_failures_total //p')
[ "$af" -ge 6 ] || fail "auth failures $af"
ok "metrics: every series present, $af auth failures"
req GET /metrics
expect 401 "metrics need credentials"

# The reads and refusals are themselves in the log.
req GET /v1/records/4 "${A[@]}"
expect 200 "the log holds more than the 4 client records"
n=$(curl -s "${A[@]}" "$U/metrics" | sed -n 's/^dengbao_audit_log_size //p')
all=""
for i in $(seq 4 $((n - 1))); do
  all+=$(curl -s "${A[@]}" "$U/v1/records/$i")$'\n'
done
grep -q '"event_type":"audit.read".*"object":"/v1/records/0".*"code":200' <<<"$all" || fail "no audit.read record"
grep -q '"subject":{"id":"auditor-1","role":"audit-admin"' <<<"$all" || fail "audit.read without the reader's identity"
grep -q '"event_type":"auth.failure".*"result":"failure","code":401' <<<"$all" || fail "no auth.failure 401 record"
grep -q '"subject":{"id":"svc-gateway".*"event_type":"auth.failure".*"code":403' <<<"$all" || fail "no auth.failure 403 record"
if grep -q 'secret' <<<"$all"; then fail "a token leaked into the log"; fi
ok "reads (audit.read) and refusals (auth.failure) are audited, no token in the log"
stop
ok "SIGTERM: graceful stop, exit 0"

# ---- TLS and mTLS ----
K=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2)
openssl req -x509 "${K[@]}" -keyout srv.key -out srv.pem -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 2>/dev/null
openssl req -x509 "${K[@]}" -keyout ca.key -out ca.pem -subj /CN=test-ca 2>/dev/null
for cn in gateway-1 stranger; do
  openssl req "${K[@]}" -keyout "$cn.key" -out "$cn.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$cn.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$cn.pem" \
    -days 2 2>/dev/null
done
openssl req -x509 "${K[@]}" -keyout rogue-ca.key -out rogue-ca.pem -subj /CN=rogue 2>/dev/null
openssl req "${K[@]}" -keyout rogue.key -out rogue.csr -subj /CN=gateway-1 2>/dev/null
openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial \
  -out rogue.pem -days 2 2>/dev/null

start --tls-cert srv.pem --tls-key srv.key --client-ca ca.pem
grep -q "https://" out.txt || fail "TLS listener not announced as https"
U=https://127.0.0.1:$port
T=(--cacert srv.pem)
for _ in $(seq 100); do
  curl -sf "${T[@]}" "$U/healthz" >/dev/null && break
  sleep 0.05
done
req GET /healthz "${T[@]}"
expect 200 "healthz over TLS"
req GET /v1/records/0 "${T[@]}" --tls-max 1.1 --tlsv1.1
[ "$code" = 000 ] || fail "TLS 1.1 accepted"
ok "TLS 1.1 refused"
req GET /v1/records/0 "${T[@]}" "${A[@]}"
expect 200 "token over TLS, no client certificate"
req GET /v1/records/0 "${T[@]}" --cert gateway-1.pem --key gateway-1.key
expect 200 "mTLS: gateway-1 reads (audit-admin)"
req POST /v1/records "${T[@]}" --cert gateway-1.pem --key gateway-1.key "${JSON[@]}" --data "$(rec gina 7)"
expect 201 "mTLS: gateway-1 writes (audit-writer)"
req GET /v1/records/0 "${T[@]}" --cert stranger.pem --key stranger.key
expect 401 "mTLS: a verified certificate with an unknown CN"
req GET /v1/records/0 "${T[@]}" --cert rogue.pem --key rogue.key
[ "$code" = 000 ] || fail "a certificate from a foreign CA was accepted ($code)"
ok "mTLS: a certificate from a foreign CA fails the handshake"
req GET /v1/records/0 "${T[@]}"
expect 401 "TLS without any credentials"
stop

start --tls-cert srv.pem --tls-key srv.key --client-ca ca.pem --client-verify require
for _ in $(seq 100); do
  curl -sf "${T[@]}" --cert gateway-1.pem --key gateway-1.key "$U/healthz" >/dev/null && break
  sleep 0.05
done
U=https://127.0.0.1:$port
req GET /v1/records/0 "${T[@]}" --cert gateway-1.pem --key gateway-1.key
expect 200 "mTLS require: with a certificate"
req GET /v1/records/0 "${T[@]}" "${A[@]}"
[ "$code" = 000 ] || fail "mTLS require: accepted a client without a certificate ($code)"
ok "mTLS require: a client without a certificate is refused"
stop

"$bin" audit verify --dir log >/dev/null 2>&1 || fail "audit verify after the service"
ok "dengbao audit verify passes"

# ---- fail closed: the disk fails under the service (the log's fault layer: EIO on fsync) ----
"$bin" audit init --dir flog --origin test.example/audit >/dev/null
# Writes: acknowledged until the log fails, 503 from then on, never an acknowledgement after.
DENGBAO_AUDIT_FAULT=eio-sync=6 start_dir flog
U=http://127.0.0.1:$port
acked=0 seen503=0
for i in $(seq 12); do
  req POST /v1/records "${W[@]}" "${JSON[@]}" --data "$(rec "fc$i" "$i")"
  if [ "$code" = 201 ]; then
    [ "$seen503" = 0 ] || fail "a record was acknowledged after the log failed"
    acked=$((acked + 1))
  elif [ "$code" = 503 ]; then
    seen503=1
  else
    fail "POST on a failing log: status $code"
  fi
done
[ "$seen503" = 1 ] && [ "$acked" -ge 1 ] || fail "no failure seen ($acked acknowledged)"
ok "EIO: $acked records acknowledged, then 503 for every write"
req GET /healthz
expect 503 "healthz says the log failed"
req GET /v1/records/0 "${A[@]}"
expect 503 "reads are refused once the log failed"
grep -q "the audit log failed" err.txt || fail "no alarm on stderr"
ok "the alarm is reported on stderr"
stop 3
ok "auditd exits 3 after a log failure"
"$bin" audit verify --dir flog >/dev/null 2>&1 || fail "audit verify after the failure"
for i in $(seq 0 $((acked - 1))); do
  "$bin" audit get --dir flog --index "$i" | grep -q "\"id\":\"fc$((i + 1))\"" ||
    fail "acknowledged record $i missing after the failure"
done
ok "every acknowledged record is intact and verify passes"

# Reads: a read whose own audit record cannot be written is refused (503), never served.
rm -rf flog
"$bin" audit init --dir flog --origin test.example/audit >/dev/null
DENGBAO_AUDIT_FAULT=eio-sync=6 start_dir flog
U=http://127.0.0.1:$port
served=0 seen503=0
for i in $(seq 12); do
  req GET /metrics "${A[@]}"
  if [ "$code" = 200 ]; then
    [ "$seen503" = 0 ] || fail "a read was served after its audit record failed"
    served=$((served + 1))
  elif [ "$code" = 503 ]; then
    seen503=1
  else
    fail "GET on a failing log: status $code"
  fi
done
[ "$seen503" = 1 ] || fail "no read failed"
ok "reads: $served served while audited, then 503 once their audit record cannot be written"
stop 3
echo "auditd.sh: all passed"
