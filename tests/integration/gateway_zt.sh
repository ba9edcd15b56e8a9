#!/usr/bin/env bash
# gateway_zt.sh DENGBAO: the attack suite of the zero-trust gateway (issue 6, "Done means"),
# end to end: real processes, real keys, curl as the attacker, the audit log read back.
#
# Everything is made here, in a temp folder, and every process is stopped by its PID:
#   keys     an HS256 secret (0600), a P-256 and an RSA-2048 key (openssl) published in a JWKS
#            file with an SM2 token-issuer key (`dengbao gm keygen`); SM2 device keys made by
#            `dengbao gm keygen` (dev1, dev2) and by sm-crypto from npm (devjs), their public
#            halves enrolled in devices/; the X-Auth-Identity HMAC-SM3 key (0600); a CA, a TLS
#            server certificate and two client certificates (openssl) for mTLS binding.
#   tokens   `dengbao token issue` (HS256, ES256, SM2, --device-pub) and, for interop and the
#            attacks the CLI refuses to make, jose from npm (tests/interop/zt_tool.js).
#   upstream a Node server (written below) that logs every request it gets (so "never reached
#            the upstream" is checked by counting lines) and echoes the headers it got as JSON;
#            /rec/* answers a patient record with a resident ID (masking); /flaky/* answers
#            500 while a flag file exists, /cached/* when the request has X-Fail: 1 (breakers,
#            static and last-good-cache fallbacks; the cache is per worker, so that sequence
#            runs on one client connection).
#   gateway  `dengbao gateway --config` with a `security:` section: an HTTP and an mTLS
#            listener, RBAC from a file (doctor: /v1/**, clerk: GET /v1/patients/**; every
#            role: deny /admin/**), a mask policy (a clerk sees 110105********002X, a doctor
#            the clear ID), durable audit; routes for auth none / jwt, device token / request /
#            mtls, a tiny route rate limit, a breaker with static and cache fallbacks.
# Each attack must be refused with its status, never reach the upstream, and leave a
# gateway.access record (found by the attack's own W3C trace id) with action deny and that
# code; device-signature failures also a gateway.alert. A second gateway whose audit log fails
# (DENGBAO_AUDIT_FAULT=eio-sync, the audit library's fault layer) must answer 503 on a durable
# route and never forward a request it could not record. A third gateway (one worker, durable
# audit) gets SIGHUPs under load from 8 keep-alive clients and must then stop within 8 s (a
# pool opened on a retired generation by a request parked at the reload used to hold the stop
# for the upstream idle timeout, 60 s).
#
# Prints PASS/FAIL per check and "gateway_zt: N passed, M failed"; exit 1 if any check failed,
# 2 if it cannot run (missing node modules, node, curl, openssl).
set -uo pipefail
BIN=${1:?usage: gateway_zt.sh DENGBAO}
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
INTEROP=$ROOT/tests/interop
T=$(mktemp -d /tmp/gwzt.XXXXXX)
PIDS=()
GW_PID=
GW2_PID=
GW3_PID=
PASS=0
FAIL=0

cleanup() {
  local p
  for p in $GW_PID $GW2_PID $GW3_PID "${PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
  for p in $GW_PID $GW2_PID $GW3_PID "${PIDS[@]}"; do
    wait "$p" 2>/dev/null
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
exec </dev/null

die() { # cannot run at all
  echo "gateway_zt: FAIL: $*" >&2
  for f in "$T/gw.err" "$T/gw2.err" "$T/gw3.err"; do
    [ -f "$f" ] && { echo "--- $(basename "$f") (last 30 lines):" >&2; tail -30 "$f" >&2; }
  done
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

for c in node curl openssl sha256sum; do
  command -v "$c" >/dev/null || die "$c is not installed (scripts/deps.sh)"
done
for pkg in jose sm-crypto; do
  [ -f "$INTEROP/node_modules/$pkg/package.json" ] ||
    die "$INTEROP/node_modules/$pkg is missing; run scripts/deps.sh (npm ci --prefix tests/interop)"
done
"$BIN" gateway --help >/dev/null 2>&1 || die "'$BIN gateway --help' does not work"
"$BIN" token --help >/dev/null 2>&1 || die "'$BIN token --help' does not work (dengbao token missing)"

ZT=("node" "$INTEROP/zt_tool.js")
cd "$T" || die "cd $T"
mkdir -p keys devices tls

# ---- keys ------------------------------------------------------------------------------------
openssl rand -hex 32 >keys/jwt.secret && chmod 600 keys/jwt.secret
openssl rand -hex 32 >keys/identity.key && chmod 600 keys/identity.key
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out keys/es1.pem 2>/dev/null &&
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out keys/es2.pem 2>/dev/null &&
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out keys/rs1.pem 2>/dev/null ||
  die "openssl genpkey"
chmod 600 keys/*.pem
openssl pkey -in keys/rs1.pem -pubout -out keys/rs1.pub.pem 2>/dev/null || die "openssl pkey"
openssl pkey -in keys/es1.pem -pubout -out keys/es1.pub.pem 2>/dev/null || die "openssl pkey"
"$BIN" gm keygen --out keys/sm2iss.pem --pub-out keys/sm2iss.pub.pem >/dev/null 2>&1 ||
  die "dengbao gm keygen (token issuer)"
SM2ISS_HEX=$("$BIN" gm pub --key keys/sm2iss.pem --hex) || die "dengbao gm pub --hex"
"${ZT[@]}" jwks keys/jwks.json keys/es1.pem:es1 keys/rs1.pem:rs1 "sm2:$SM2ISS_HEX:sm1" ||
  die "zt_tool.js jwks"
for d in dev1 dev2; do
  "$BIN" gm keygen --out "keys/$d.pem" --pub-out "devices/$d.pem" >/dev/null 2>&1 ||
    die "dengbao gm keygen ($d)"
done
THUMB_JS=$("${ZT[@]}" devkey keys/devjs.priv devices/devjs.pem) || die "zt_tool.js devkey"
THUMB1=$("${ZT[@]}" thumb devices/dev1.pem) || die "zt_tool.js thumb"

# TLS: a CA, the server certificate, two client certificates
mkcert() { # NAME CN [EXTRA openssl x509 args...]
  local n=$1 cn=$2
  shift 2
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "tls/$n.key" \
    -out "tls/$n.csr" -subj "/CN=$cn" 2>/dev/null &&
    openssl x509 -req -in "tls/$n.csr" -CA tls/ca.pem -CAkey tls/ca.key -CAcreateserial \
      -out "tls/$n.pem" -days 2 "$@" 2>/dev/null
}
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls/ca.key \
  -out tls/ca.pem -subj /CN=gwzt-test-ca -days 2 2>/dev/null || die "openssl CA"
printf 'subjectAltName=IP:127.0.0.1\n' >tls/san.ext
mkcert server 127.0.0.1 -extfile tls/san.ext || die "server certificate"
mkcert client1 device-one || die "client certificate 1"
mkcert client2 device-two || die "client certificate 2"
chmod 600 tls/*.key
X5T1=$("${ZT[@]}" x5t tls/client1.pem) || die "x5t"

# ---- policies ----------------------------------------------------------------------------------
cat >policy.yaml <<'EOF'
version: 1
roles:
  doctor:
    - {id: doc-v1, methods: "*", path: "/v1/**"}
    - {id: doc-dev, methods: "*", path: "/tok/**"}
    - {id: doc-req, methods: "*", path: "/req/**"}
    - {id: doc-mtls, methods: "*", path: "/mtls/**"}
    - {id: doc-rec, methods: [GET], path: "/rec/**"}
    - {id: doc-async, methods: [GET], path: "/async/**"}
  clerk:
    - {id: clerk-patients, methods: [GET], path: "/v1/patients/**"}
    - {id: clerk-rec, methods: [GET], path: "/rec/**"}
  "*":
    - {id: no-admin, effect: deny, methods: "*", path: "/admin/**"}
EOF
cat >mask.yaml <<'EOF'
fields:
  patient.id_no: {type: CN_RID18, roles: {doctor: clear}}
EOF
"$BIN" audit init --dir audit --origin gwzt.test/gateway >/dev/null 2>&1 || die "audit init"

# ---- upstream ------------------------------------------------------------------------------------
cat >up.js <<'EOF'
'use strict'
// The test upstream: logs "<METHOD> <url>" per request (synchronously), echoes what it got.
const http = require('http')
const fs = require('fs')
const crypto = require('crypto')
const [port, log, dir] = [parseInt(process.argv[2], 10), process.argv[3], process.argv[4]]
const REC = JSON.stringify({patient: {name: 'Li Lei', id_no: '11010519491231002X',
  ward: 'cardiology'}, visits: 3})
const srv = http.createServer((req, res) => {
  fs.appendFileSync(log, `${req.method} ${req.url}\n`)
  const h = crypto.createHash('sha256')
  let len = 0
  req.on('data', (d) => { len += d.length; h.update(d) })
  req.on('end', () => {
    const u = req.url
    if ((u.startsWith('/flaky/') && fs.existsSync(`${dir}/down-flaky`)) ||
        (u.startsWith('/cached/') && req.headers['x-fail'] === '1')) {
      res.writeHead(500, {'Content-Type': 'text/plain'})
      return res.end('upstream broken\n')
    }
    if (u.startsWith('/rec/big')) {
      const visits = []
      for (let i = 0; i < 3000; i++) visits.push({n: i, note: 'routine check'})
      const big = JSON.stringify({patient: JSON.parse(REC).patient, visits})
      res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(big)})
      return res.end(big)
    }
    if (u.startsWith('/rec/')) {
      res.writeHead(200, {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(REC)})
      return res.end(REC)
    }
    const headers = {}
    for (let i = 0; i < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i].toLowerCase()
      const v = req.rawHeaders[i + 1]
      headers[k] = k in headers ? [].concat(headers[k], v) : v
    }
    res.writeHead(200, {'Content-Type': 'application/json'})
    res.end(JSON.stringify({method: req.method, url: u, headers, body_length: len,
      body_sha256: h.digest('hex'), n: Date.now()}) + '\n')
  })
})
// idle upstream connections outlive the gateway's pool (as in gwupstream.js), so that a
// request never meets a connection the upstream is closing (the clusters have retries: 0)
srv.keepAliveTimeout = 120000
srv.headersTimeout = 130000
srv.listen(port, '127.0.0.1', () => console.log('ready'))
process.on('SIGTERM', () => process.exit(0))
EOF
U1=$("$SVC" freeport)
: >up.log
node up.js "$U1" "$T/up.log" "$T" >up.out 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q ready up.out 2>/dev/null && break
  sleep 0.05
done
grep -q ready up.out || die "the upstream did not start: $(cat up.out)"

# ---- the gateway ----------------------------------------------------------------------------------
GP=$("$SVC" freeport) GS=$("$SVC" freeport) AP=$("$SVC" freeport)
BREAKER='{window: 20s, buckets: 10, min_requests: 4, error_ratio: 50%, open: 60s, probes: 1, successes: 1}'
cat >gw.yaml <<EOF
workers: 2
listeners:
  - listen: "127.0.0.1:$GP"
  - listen: "127.0.0.1:$GS"
    tls: {cert: tls/server.pem, key: tls/server.key, client_ca: tls/ca.pem, client_verify: optional}
admin: "127.0.0.1:$AP"
access_log: access.log
security:
  identity:
    jwt:
      algorithms: [HS256, ES256, RS256, SM2]
      hs256_secret_file: keys/jwt.secret
      hs256_kid: k1
      jwks_file: keys/jwks.json
      issuer: https://idp.test
      audience: [api]
      clock_skew: 30s
      max_token: 8k
    devices:
      keys_dir: devices/
      request_window: 60s
  identity_header:
    name: X-Auth-Identity
    key_file: keys/identity.key
  strip_headers: [X-User, X-Roles]
  rbac:
    file: policy.yaml
  rate_limits:
    client_ip: {rate: 100000, period: 1s, burst: 100000}
  audit:
    dir: audit
    mode: durable
  masking:
    policy: mask.yaml
clusters:
  - name: api
    endpoints: ["127.0.0.1:$U1"]
    timeouts: {connect: 1s, read: 5s}
    retries: 0
  - name: flaky
    endpoints: ["127.0.0.1:$U1"]
    retries: 0
    breaker: $BREAKER
  - name: flaky2
    endpoints: ["127.0.0.1:$U1"]
    retries: 0
    breaker: $BREAKER
routes:
  - {name: open, prefix: /open/, cluster: api, auth: none}
  - {name: v1, prefix: /v1/, cluster: api}
  - name: rec
    prefix: /rec/
    cluster: api
    mask: {enabled: true, body_max: 64k, over_limit: block}
  - {name: tok, prefix: /tok/, cluster: api, device: token}
  - {name: req, prefix: /req/, cluster: api, device: request}
  - {name: mtls, prefix: /mtls/, cluster: api, device: mtls}
  - {name: async, prefix: /async/, cluster: api, audit: async}
  - name: limited
    prefix: /limited/
    cluster: api
    auth: none
    rate_limit: {rate: 1, period: 10s, burst: 2}
  - name: flaky
    prefix: /flaky/
    cluster: flaky
    auth: none
    fallback: {mode: static, status: 200, content_type: application/json, body: '{"degraded":true}'}
  - name: cached
    prefix: /cached/
    cluster: flaky2
    auth: none
    fallback: {mode: cache, cache_ttl: 5m}
  - {name: root, prefix: /, cluster: api}
EOF

# wait_gw ERRFILE PID N: N "listening on" lines
wait_gw() {
  for _ in $(seq 1 300); do
    [ "$(grep -c 'gateway: listening on' "$1" 2>/dev/null)" -ge "$3" ] && return 0
    kill -0 "$2" 2>/dev/null || die "the gateway exited during start-up"
    sleep 0.1
  done
  die "the gateway is not ready after 30 s"
}

check "--check validates the configuration and its security files"
if out=$("$BIN" gateway --config gw.yaml --check 2>&1); then ok "--check accepts gw.yaml"; else
  bad "--check refused gw.yaml: $out"
fi
chmod 644 keys/identity.key
if out=$("$BIN" gateway --config gw.yaml --check 2>&1); then bad "--check accepted an identity key readable by others"; else
  ok "--check refuses keys/identity.key mode 0644 ($out)"
fi
chmod 600 keys/identity.key

"$BIN" gateway --config gw.yaml 2>gw.err &
GW_PID=$!
wait_gw gw.err "$GW_PID" 2
B=http://127.0.0.1:$GP
BS=https://127.0.0.1:$GS

# ---- helpers ---------------------------------------------------------------------------------------
NT=0
AUD=()   # "tid|code|action|name|alert" checked against the audit log at the end
CODE=
# req CURL_ARGS...: CODE, headers in $T/h, body in $T/b
req() {
  CODE=$(curl -s -o "$T/b" -D "$T/h" -w '%{http_code}' --max-time 15 "$@")
}
hdr() { # NAME: the value of a response header (last one), CR stripped
  awk -v n="$(tr '[:upper:]' '[:lower:]' <<<"$1")" -F': ' 'tolower($1)==n { v=$2 } END { sub(/\r$/, "", v); print v }' "$T/h"
}
upcount() { wc -l <"$T/up.log"; }
newtid() {
  NT=$((NT + 1))
  TID=$(printf '6a7e%028x' "$NT")
  TP="traceparent: 00-$TID-00f067aa0ba902b7-01"
}
# attack NAME WANT [--alert] CURL_ARGS...: refused with WANT, never at the upstream, audited
attack() {
  local name=$1 want=$2 alert='' before
  shift 2
  if [ "${1:-}" = --alert ]; then
    alert=1
    shift
  fi
  newtid
  before=$(upcount)
  req -H "$TP" "$@"
  if [ "$CODE" = "$want" ]; then ok "$name: $CODE"; else bad "$name: status $CODE, want $want (body: $(head -c 200 "$T/b"))"; fi
  [ "$(upcount)" = "$before" ] || bad "$name: the request reached the upstream"
  AUD+=("$TID|$want|deny|$name|$alert")
}
# allow NAME CURL_ARGS...: 200 from the upstream, audited as allow
allow() {
  local name=$1 before
  shift
  newtid
  before=$(upcount)
  req -H "$TP" "$@"
  if [ "$CODE" = 200 ]; then ok "$name: 200"; else bad "$name: status $CODE, want 200 (body: $(head -c 200 "$T/b"))"; fi
  [ "$(upcount)" -gt "$before" ] || bad "$name: the upstream saw nothing"
  AUD+=("$TID|0|allow|$name|")
}
jget() { # EXPR over the JSON body in $T/b (as `o`)
  node -e 'const o = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
const v = eval(process.argv[1]);
console.log(v === undefined ? "undefined" : typeof v === "object" ? JSON.stringify(v) : v);' "$1" "$T/b" 2>/dev/null
}
NOW=$(date +%s)
tok() { # dengbao token issue ARGS (HS256, iss/aud right unless overridden)
  "$BIN" token issue --key keys/jwt.secret --alg HS256 --kid k1 --iss https://idp.test --aud api --ttl 15m "$@"
}
auth() { echo "Authorization: Bearer $1"; }

# ---- tokens -----------------------------------------------------------------------------------------
DOC=$(tok --sub alice --roles doctor) || die "dengbao token issue failed: $DOC"
CLERK=$(tok --sub bob --roles clerk) || die "token issue (clerk)"
DEV1TOK=$(tok --sub dave --roles doctor --device-pub devices/dev1.pem) || die "token issue --device-pub"
DEV1SIG=$("$BIN" token sign --device-key keys/dev1.pem --token "$DEV1TOK") || die "dengbao token sign"
DEV2SIG=$("$BIN" token sign --device-key keys/dev2.pem --token "$DEV1TOK") || die "token sign (dev2)"
DOCSIG=$("$BIN" token sign --device-key keys/dev1.pem --token "$DOC") || die "token sign (other token)"
ES_CLI=$("$BIN" token issue --key keys/es1.pem --alg ES256 --kid es1 --sub erin --roles doctor \
  --iss https://idp.test --aud api --ttl 15m) || die "token issue ES256"
SM2_CLI=$("$BIN" token issue --key keys/sm2iss.pem --alg SM2 --kid sm1 --sub sam --roles doctor \
  --iss https://idp.test --aud api --ttl 15m) || die "token issue SM2"
C() { # claims JSON for jose: SUB ROLE [EXTRA JSON members]
  echo "{\"sub\":\"$1\",\"roles\":[\"$2\"],\"iss\":\"https://idp.test\",\"aud\":\"api\",\"iat\":$NOW,\"exp\":$((NOW + 600))${3:+,$3}}"
}
J_HS=$("${ZT[@]}" jwt HS256 keys/jwt.secret "$(C jo doctor)" k1) || die "jose HS256"
J_ES=$("${ZT[@]}" jwt ES256 keys/es1.pem "$(C jo doctor)" es1) || die "jose ES256"
J_RS=$("${ZT[@]}" jwt RS256 keys/rs1.pem "$(C jo doctor)" rs1) || die "jose RS256"
J_DEVJS=$("${ZT[@]}" jwt ES256 keys/es1.pem "$(C jsdev doctor "\"cnf\":{\"sm3\":\"$THUMB_JS\"}")" es1) || die "jose cnf"
J_MTLS=$("${ZT[@]}" jwt HS256 keys/jwt.secret "$(C mia doctor "\"cnf\":{\"x5t#S256\":\"$X5T1\"}")" k1) || die "jose x5t"

# ---- 1. identity: the 401 matrix ----------------------------------------------------------------------
check "identity: bad or missing tokens -> 401 + WWW-Authenticate, never forwarded, audited"
attack "no Authorization header" 401 "$B/v1/patients/1"
w=$(hdr WWW-Authenticate)
[[ $w == Bearer* ]] && ok "401 carries WWW-Authenticate: $w" || bad "401 without WWW-Authenticate: Bearer (got '$w')"
attack "alg none" 401 -H "$(auth "$("${ZT[@]}" none "$(C alice doctor)")")" "$B/v1/patients/1"
w=$(hdr WWW-Authenticate)
[[ $w == *invalid_token* ]] && ok "bad token: WWW-Authenticate has error=\"invalid_token\"" || bad "bad token: WWW-Authenticate '$w'"
attack "HS256 keyed with the RSA public key (kid rs1): confusion" 401 \
  -H "$(auth "$("${ZT[@]}" confuse keys/rs1.pub.pem "$(C alice doctor)" rs1)")" "$B/v1/patients/1"
attack "HS256 keyed with the P-256 public key (kid es1): confusion" 401 \
  -H "$(auth "$("${ZT[@]}" confuse keys/es1.pub.pem "$(C alice doctor)" es1)")" "$B/v1/patients/1"
attack "HS256 keyed with the RSA public key under the HS256 kid" 401 \
  -H "$(auth "$("${ZT[@]}" confuse keys/rs1.pub.pem "$(C alice doctor)" k1)")" "$B/v1/patients/1"
EXP=$("${ZT[@]}" jwt HS256 keys/jwt.secret "{\"sub\":\"alice\",\"roles\":[\"doctor\"],\"iss\":\"https://idp.test\",\"aud\":\"api\",\"iat\":$((NOW - 7200)),\"exp\":$((NOW - 3600))}" k1)
attack "expired token" 401 -H "$(auth "$EXP")" "$B/v1/patients/1"
NBF=$("${ZT[@]}" jwt HS256 keys/jwt.secret "$(C alice doctor "\"nbf\":$((NOW + 3600))")" k1)
attack "nbf in the future" 401 -H "$(auth "$NBF")" "$B/v1/patients/1"
attack "wrong audience" 401 -H "$(auth "$(tok --sub alice --roles doctor --aud other)")" "$B/v1/patients/1"
attack "wrong issuer" 401 -H "$(auth "$("$BIN" token issue --key keys/jwt.secret --alg HS256 --kid k1 \
  --iss https://evil.test --aud api --sub alice --roles doctor)")" "$B/v1/patients/1"
attack "tampered payload (clerk made doctor, signature kept)" 401 \
  -H "$(auth "$("${ZT[@]}" tamper "$CLERK" "$(C bob doctor)")")" "$B/v1/patients/1"
attack "unknown kid" 401 -H "$(auth "$("${ZT[@]}" jwt HS256 keys/jwt.secret "$(C alice doctor)" nosuchkid)")" "$B/v1/patients/1"
attack "token signed by an unknown ES256 key under kid es1" 401 \
  -H "$(auth "$("${ZT[@]}" jwt ES256 keys/es2.pem "$(C alice doctor)" es1)")" "$B/v1/patients/1"
BIG=$("${ZT[@]}" jwt HS256 keys/jwt.secret "$(C alice doctor "\"pad\":\"$(head -c 9000 /dev/zero | tr '\0' x)\"")" k1)
attack "oversize token (> max_token 8k)" 401 -H "$(auth "$BIG")" "$B/v1/patients/1"
attack "Basic scheme" 401 -H "Authorization: Basic YWxpY2U6cHc=" "$B/v1/patients/1"
attack "two Authorization headers" 401 -H "$(auth "$DOC")" -H "$(auth "$DOC")" "$B/v1/patients/1"
attack "token in the query string only" 401 "$B/v1/patients/1?access_token=$DOC"

check "identity: good tokens are accepted (CLI and jose: HS256, ES256, RS256; CLI SM2)"
allow "dengbao token issue HS256 (doctor)" -H "$(auth "$DOC")" "$B/v1/patients/1"
w=$(hdr WWW-Authenticate)
[ -z "$w" ] || bad "200 with WWW-Authenticate '$w'"
allow "scheme case-insensitive (bearer)" -H "authorization: bearer $DOC" "$B/v1/patients/1"
allow "dengbao token issue ES256 (JWKS key es1)" -H "$(auth "$ES_CLI")" "$B/v1/patients/1"
allow "dengbao token issue SM2 (JWKS kty EC crv SM2)" -H "$(auth "$SM2_CLI")" "$B/v1/patients/1"
allow "interop: jose HS256" -H "$(auth "$J_HS")" "$B/v1/patients/1"
allow "interop: jose ES256 (JWKS)" -H "$(auth "$J_ES")" "$B/v1/patients/1"
allow "interop: jose RS256 (JWKS)" -H "$(auth "$J_RS")" "$B/v1/patients/1"

# ---- 2. header stripping and X-Auth-Identity ----------------------------------------------------------
check "spoofed identity headers removed; the gateway's X-Auth-Identity verifies"
SPOOF=(-H "X-Auth-Identity: v1;sub=root;roles=admin;device=-;iat=$NOW;trace=x;sig=AAAA"
  -H "X-Auth-Roles: admin" -H "x-auth-anything: 1" -H "X-User: root" -H "X-Roles: admin")
allow "jwt route with spoofed identity headers" -H "$(auth "$DOC")" "${SPOOF[@]}" "$B/v1/echo"
for h in x-auth-roles x-auth-anything x-user x-roles; do
  v=$(jget "o.headers['$h']")
  [ "$v" = undefined ] && ok "$h removed" || bad "$h reached the upstream: $v"
done
XAI=$(jget "o.headers['x-auth-identity']")
case $XAI in
undefined) bad "no X-Auth-Identity at the upstream" ;;
\[*) bad "two X-Auth-Identity headers at the upstream: $XAI" ;;
*sub=root*) bad "the spoofed X-Auth-Identity reached the upstream" ;;
v1\;sub=alice\;roles=doctor\;device=-\;iat=*\;trace=*\;sig=*) ok "X-Auth-Identity has the documented shape: ${XAI%%;sig=*};sig=..." ;;
*) bad "X-Auth-Identity has an unexpected shape: $XAI" ;;
esac
if out=$("$BIN" token identity-verify --key keys/identity.key --header "$XAI" --max-age 60s 2>&1); then
  ok "dengbao token identity-verify accepts the gateway's header ($out)"
else
  bad "identity-verify refused the gateway's X-Auth-Identity: $out"
fi
forged=${XAI/sub=alice/sub=admin}
if out=$("$BIN" token identity-verify --key keys/identity.key --header "$forged" 2>&1); then
  bad "identity-verify accepted a header with sub changed"
else ok "identity-verify refuses a header with sub changed"; fi
openssl rand -hex 32 >keys/other.key && chmod 600 keys/other.key
if "$BIN" token identity-verify --key keys/other.key --header "$XAI" >/dev/null 2>&1; then
  bad "identity-verify accepted the header under another key"
else ok "identity-verify refuses the header under another key"; fi
[[ $XAI == *"trace=$TID"* ]] && ok "X-Auth-Identity carries the request's trace id" || bad "X-Auth-Identity trace is not $TID: $XAI"
allow "auth none route with spoofed identity headers" "${SPOOF[@]}" "$B/open/echo"
for h in x-auth-roles x-auth-anything x-user x-roles; do
  v=$(jget "o.headers['$h']")
  [ "$v" = undefined ] || bad "auth none: $h reached the upstream: $v"
done
v=$(jget "o.headers['x-auth-identity']")
[[ $v == *sub=root* ]] && bad "auth none: the spoofed X-Auth-Identity reached the upstream" ||
  ok "auth none: spoofed identity headers removed (x-auth-identity: $v)"

# ---- 3. RBAC and path tricks -----------------------------------------------------------------------
check "RBAC: allow /v1/patients/** (clerk GET), deny by default, deny /admin/** for every role"
allow "clerk GET /v1/patients/7" -H "$(auth "$CLERK")" "$B/v1/patients/7"
attack "clerk POST /v1/patients/7 (method not allowed)" 403 -H "$(auth "$CLERK")" --data x "$B/v1/patients/7"
grep -q '"error":"forbidden"' "$T/b" && ok "403 body {\"error\":\"forbidden\"}" || bad "403 body: $(head -c 200 "$T/b")"
attack "clerk GET /v1/records/7 (default deny)" 403 -H "$(auth "$CLERK")" "$B/v1/records/7"
attack "doctor GET /admin/x" 403 -H "$(auth "$DOC")" "$B/admin/x"
check "path tricks against /admin/** (doctor token): refused, never at the upstream"
attack "/admin/../admin/x" 403 --path-as-is -H "$(auth "$DOC")" "$B/admin/../admin/x"
attack "/v1/%2e%2e/admin" 403 --path-as-is -H "$(auth "$DOC")" "$B/v1/%2e%2e/admin"
attack "/v1/patients/%2e%2e/%2E%2E/admin/x" 403 --path-as-is -H "$(auth "$DOC")" "$B/v1/patients/%2e%2e/%2E%2E/admin/x"
attack "//admin" 403 --path-as-is -H "$(auth "$DOC")" "$B//admin"
attack "//admin//x" 403 --path-as-is -H "$(auth "$DOC")" "$B//admin//x"
attack "/%61dmin/x" 403 --path-as-is -H "$(auth "$DOC")" "$B/%61dmin/x"
attack "/ADMIN (case: default deny)" 403 --path-as-is -H "$(auth "$DOC")" "$B/ADMIN"
attack "/v1/./../admin/x" 403 --path-as-is -H "$(auth "$DOC")" "$B/v1/./../admin/x"
attack "/v1/patients/..%2f.. (encoded slash)" 400 --path-as-is -H "$(auth "$DOC")" "$B/v1/patients/..%2f.."
attack "/v1/..%5cadmin (encoded backslash)" 400 --path-as-is -H "$(auth "$DOC")" "$B/v1/..%5cadmin"
attack "/../admin (above the root)" 400 --path-as-is -H "$(auth "$DOC")" "$B/../admin"

# ---- 4. device binding: token mode ------------------------------------------------------------------
check "device token mode (X-SM2-Signature over the JWT)"
allow "dengbao token sign: bound device's signature" -H "$(auth "$DEV1TOK")" -H "X-SM2-Signature: $DEV1SIG" "$B/tok/x"
allow "the same token and signature again (cache)" -H "$(auth "$DEV1TOK")" -H "X-SM2-Signature: $DEV1SIG" "$B/tok/x"
attack "missing X-SM2-Signature" 403 --alert -H "$(auth "$DEV1TOK")" "$B/tok/x"
attack "signature from another enrolled device (dev2)" 403 --alert -H "$(auth "$DEV1TOK")" -H "X-SM2-Signature: $DEV2SIG" "$B/tok/x"
attack "dev1's signature over another token" 403 --alert -H "$(auth "$DEV1TOK")" -H "X-SM2-Signature: $DOCSIG" "$B/tok/x"
flip=${DEV1SIG:0:40}$([ "${DEV1SIG:40:1}" = A ] && echo B || echo A)${DEV1SIG:41}
attack "signature with one character changed" 403 --alert -H "$(auth "$DEV1TOK")" -H "X-SM2-Signature: $flip" "$B/tok/x"
attack "token without cnf on a device route" 401 -H "$(auth "$DOC")" -H "X-SM2-Signature: $DOCSIG" "$B/tok/x"
allow "interop: jose ES256 token + sm-crypto X-SM2-Signature (sm-crypto device key enrolled)" \
  -H "$(auth "$J_DEVJS")" -H "X-SM2-Signature: $("${ZT[@]}" sign-token keys/devjs.priv "$J_DEVJS")" "$B/tok/x"

# ---- 5. device binding: request mode -----------------------------------------------------------------
check "device request mode (signature over method, path, query, time, nonce, body SM3)"
printf '{"patient":"110105199001010021","note":"check"}' >body.json
printf '{"patient":"110105199001010021","note":"CHECK"}' >body2.json
sreq() { # dengbao token sign-request ARGS -> SIGH array of -H arguments
  local out l
  out=$("$BIN" token sign-request --device-key "$@") || { bad "dengbao token sign-request $*: $out"; SIGH=(); return 1; }
  SIGH=()
  while IFS= read -r l; do [ -n "$l" ] && SIGH+=(-H "$l"); done <<<"$out"
}
jsreq() { # zt_tool.js sign-request PRIV METHOD PATH QUERY BODY [TS]
  local out l
  out=$("${ZT[@]}" sign-request "$@") || { bad "zt_tool.js sign-request: $out"; SIGH=(); return 1; }
  SIGH=()
  while IFS= read -r l; do [ -n "$l" ] && SIGH+=(-H "$l"); done <<<"$out"
}
sreq keys/dev1.pem --method POST --url-path /req/records/7 --query 'full=1&x=%2F' --body-file body.json
allow "dengbao token sign-request: POST with body and query" -H "$(auth "$DEV1TOK")" "${SIGH[@]}" \
  -H 'Content-Type: application/json' --data-binary @body.json "$B/req/records/7?full=1&x=%2F"
[ "$(jget o.body_sha256)" = "$(sha256sum <body.json | cut -c1-64)" ] && ok "the upstream got the signed body intact" ||
  bad "request mode: the body changed on the way"
attack "replay of the same signed request" 403 --alert -H "$(auth "$DEV1TOK")" "${SIGH[@]}" \
  -H 'Content-Type: application/json' --data-binary @body.json "$B/req/records/7?full=1&x=%2F"
sreq keys/dev1.pem --method POST --url-path /req/records/7 --query '' --body-file body.json
attack "tampered body" 403 --alert -H "$(auth "$DEV1TOK")" "${SIGH[@]}" --data-binary @body2.json "$B/req/records/7"
sreq keys/dev1.pem --method POST --url-path /req/records/7 --query '' --body-file body.json
attack "path changed (/req/records/8)" 403 --alert -H "$(auth "$DEV1TOK")" "${SIGH[@]}" --data-binary @body.json "$B/req/records/8"
sreq keys/dev1.pem --method GET --url-path /req/records/7 --query 'a=1'
attack "query changed" 403 --alert -H "$(auth "$DEV1TOK")" "${SIGH[@]}" "$B/req/records/7?a=2"
sreq keys/dev1.pem --method GET --url-path /req/records/7 --query ''
attack "method changed (signed GET, sent DELETE)" 403 --alert -X DELETE -H "$(auth "$DEV1TOK")" "${SIGH[@]}" "$B/req/records/7"
sreq keys/dev2.pem --method GET --url-path /req/records/7 --query ''
attack "request signed by another device (dev2)" 403 --alert -H "$(auth "$DEV1TOK")" "${SIGH[@]}" "$B/req/records/7"
attack "no signature headers" 403 --alert -H "$(auth "$DEV1TOK")" "$B/req/records/7"
J_REQ=$("${ZT[@]}" jwt HS256 keys/jwt.secret "$(C jsdev doctor "\"cnf\":{\"sm3\":\"$THUMB_JS\"}")" k1)
jsreq keys/devjs.priv GET /req/records/7 '' - $((NOW - 3600))
attack "stale timestamp (1 h old, window 60 s)" 403 --alert -H "$(auth "$J_REQ")" "${SIGH[@]}" "$B/req/records/7"
jsreq keys/devjs.priv GET /req/records/7 '' - $((NOW + 3600))
attack "timestamp 1 h in the future" 403 --alert -H "$(auth "$J_REQ")" "${SIGH[@]}" "$B/req/records/7"
jsreq keys/devjs.priv POST /req/records/9 'q=%E4%B8%AD' body.json
allow "interop: sm-crypto request signature (POST, body, escaped query)" -H "$(auth "$J_REQ")" "${SIGH[@]}" \
  --data-binary @body.json "$B/req/records/9?q=%E4%B8%AD"
jsreq keys/devjs.priv GET /req/records/9 '' -
allow "interop: sm-crypto request signature (GET, empty body)" -H "$(auth "$J_REQ")" "${SIGH[@]}" "$B/req/records/9"

# ---- 6. device binding: mTLS ------------------------------------------------------------------------------
check "device mtls (cnf x5t#S256 = SHA-256 of the client certificate)"
TLSC=(--cacert tls/ca.pem)
allow "client1 certificate bound in the token" "${TLSC[@]}" --cert tls/client1.pem --key tls/client1.key \
  -H "$(auth "$J_MTLS")" "$BS/mtls/x"
attack "another client certificate (client2)" 403 --alert "${TLSC[@]}" --cert tls/client2.pem --key tls/client2.key \
  -H "$(auth "$J_MTLS")" "$BS/mtls/x"
attack "no client certificate" 403 --alert "${TLSC[@]}" -H "$(auth "$J_MTLS")" "$BS/mtls/x"
attack "mtls route over plain HTTP" 403 --alert -H "$(auth "$J_MTLS")" "$B/mtls/x"

# ---- 7. rate limits ---------------------------------------------------------------------------------------
check "route rate limit (1 per 10 s, burst 2): 429 + Retry-After"
allow "limited #1" "$B/limited/a"
allow "limited #2" "$B/limited/a"
attack "limited #3" 429 "$B/limited/a"
ra=$(hdr Retry-After)
if [[ $ra =~ ^[0-9]+$ ]] && [ "$ra" -ge 1 ] && [ "$ra" -le 10 ]; then ok "Retry-After: $ra"; else
  bad "429 Retry-After '$ra' (want whole seconds 1..10)"
fi

# ---- 8. breaker and fallbacks --------------------------------------------------------------------------------
check "breaker: 500s trip it; the static and cache fallbacks answer with X-Dengbao-Fallback"
touch down-flaky
for _ in 1 2 3 4 5 6; do
  req "$B/flaky/x"
done
before=$(upcount)
newtid
req -H "$TP" "$B/flaky/x"
fb=$(hdr X-Dengbao-Fallback)
if [ "$CODE" = 200 ] && [ "$fb" = static ] && grep -q '"degraded":true' "$T/b"; then ok "static fallback: 200 {\"degraded\":true}, X-Dengbao-Fallback: static"; else
  bad "breaker open, static fallback: status $CODE, X-Dengbao-Fallback '$fb', body $(head -c 100 "$T/b")"
fi
FB_TID=$TID
[ "$(upcount)" = "$before" ] && ok "an open breaker sends nothing upstream" || bad "a request reached the upstream with the breaker open"
rm -f down-flaky
# The last-good cache is per worker (src/gateway/proxy.c), so the whole sequence runs on one
# client connection (one worker): a good GET, six GETs the upstream fails (X-Fail: 1) that
# open the breaker, then the GET the cache answers.
args=(-s --max-time 15 -o cached-good.json "$B/cached/item")
for _ in 1 2 3 4 5 6; do
  args+=(--next -s --max-time 15 -o /dev/null -H 'X-Fail: 1' "$B/cached/item")
done
before=$(upcount)
args+=(--next -s --max-time 15 -D cached.h -o cached-fb.json -H 'X-Fail: 1' "$B/cached/item")
curl "${args[@]}"
st=$(awk 'NR == 1 { print $2 }' cached.h)
fb=$(awk -F': ' 'tolower($1) == "x-dengbao-fallback" { sub(/\r$/, "", $2); print $2 }' cached.h)
if [ "$st" = 200 ] && [ "$fb" = cache ] && [ -s cached-good.json ] && cmp -s cached-fb.json cached-good.json; then
  ok "cache fallback: the last good answer, X-Dengbao-Fallback: cache"
else
  bad "breaker open, cache fallback: status $st, X-Dengbao-Fallback '$fb', same body: $(cmp -s cached-fb.json cached-good.json && echo yes || echo no)"
fi

# ---- 9. response masking --------------------------------------------------------------------------------------
check "response masking by role: clerk masked, doctor clear"
allow "clerk GET /rec/1" -H "$(auth "$CLERK")" "$B/rec/1"
v=$(jget o.patient.id_no)
[ "$v" = '110105********002X' ] && ok "clerk sees 110105********002X" || bad "clerk sees id_no '$v'"
allow "doctor GET /rec/1" -H "$(auth "$DOC")" "$B/rec/1"
v=$(jget o.patient.id_no)
[ "$v" = '11010519491231002X' ] && ok "doctor sees the clear ID" || bad "doctor sees id_no '$v'"
# over mask.body_max with over_limit block: 502 when the gateway knows before answering; a
# streaming masker that already sent 200 must cut the response (curl: transfer error), and
# never pass the clear value
curl -s -o "$T/b" -D "$T/h" --max-time 15 -H "$(auth "$CLERK")" "$B/rec/big"
rc=$?
st=$(awk 'NR == 1 { print $2 }' "$T/h")
if [ "$st" = 502 ]; then ok "body over mask body_max with over_limit block: 502"
elif [ "$rc" != 0 ]; then ok "body over mask body_max with over_limit block: cut after the head (status $st, curl exit $rc)"
else bad "over-limit body: status $st delivered complete (curl exit 0), want 502 or a cut response"; fi
grep -q 11010519491231002X "$T/b" && bad "over-limit body leaked the clear ID"

# ---- 10. async audit route, reload ---------------------------------------------------------------------------------
check "async audit route; SIGHUP reloads the JWKS file (rotation) and keeps the old policy on a bad one"
allow "async-audited route" -H "$(auth "$DOC")" "$B/async/x"
ES2=$("${ZT[@]}" jwt ES256 keys/es2.pem "$(C erin doctor)" es2)
attack "kid es2 before rotation" 401 -H "$(auth "$ES2")" "$B/v1/patients/1"
"${ZT[@]}" jwks keys/jwks.json keys/es1.pem:es1 keys/es2.pem:es2 keys/rs1.pem:rs1 "sm2:$SM2ISS_HEX:sm1"
kill -HUP "$GW_PID"
ok_rot=
for _ in $(seq 1 50); do
  req -H "$(auth "$ES2")" "$B/v1/patients/1"
  [ "$CODE" = 200 ] && ok_rot=1 && break
  sleep 0.1
done
[ -n "$ok_rot" ] && ok "kid es2 accepted after SIGHUP" || bad "kid es2 still refused ($CODE) 5 s after SIGHUP"
cp policy.yaml policy.good
printf 'version: 1\nroles:\n  clerk:\n    - {methods: [GTE], path: /x}\n' >policy.yaml
kill -HUP "$GW_PID"
sleep 1
allow "clerk still allowed after a bad policy file was refused" -H "$(auth "$CLERK")" "$B/v1/patients/7"
attack "clerk still denied /v1/records after the bad policy" 403 -H "$(auth "$CLERK")" "$B/v1/records/7"
grep -qiE 'policy|rbac' gw.err && ok "stderr reports the refused policy" || bad "nothing on stderr about the refused policy file"
cp policy.good policy.yaml
kill -0 "$GW_PID" 2>/dev/null && ok "the gateway survived the reloads" || bad "the gateway died"
m=$(curl -s "http://127.0.0.1:$AP/metrics")
if grep -Eq '^dengbao_gateway_zt_decisions_total\{result="deny_401"\} [1-9]' <<<"$m" &&
  grep -Eq '^dengbao_gateway_zt_decisions_total\{result="allow"\} [1-9]' <<<"$m" &&
  grep -q '^# TYPE dengbao_gateway_zt_audit_failures_total counter' <<<"$m"; then
  ok "zero-trust counters on /metrics"
else
  bad "zero-trust counters missing on /metrics: $(grep zt_ <<<"$m" | head -3)"
fi

# ---- 11. the audit trail ------------------------------------------------------------------------------------------
check "the audit trail: one record per decision, found by trace id, verifiable, no secrets"
kill -TERM "$GW_PID"
wait "$GW_PID"
rc=$?
GW_PID=
[ "$rc" = 0 ] && ok "the gateway stopped cleanly" || bad "gateway exit status $rc"
if v=$("$BIN" audit verify --dir audit 2>/dev/null); then ok "dengbao audit verify: $v"; else bad "audit verify: $v"; fi
size=$(sed -n 's/^OK records=\([0-9]*\) .*/\1/p' <<<"$v")
"$BIN" audit get --dir audit --index 0 --count "${size:-0}" >records.jsonl 2>/dev/null
echo "   $(wc -l <records.jsonl) records"
for a in "${AUD[@]}"; do
  IFS='|' read -r tid code action name alert <<<"$a"
  lines=$(grep -F "$tid" records.jsonl)
  acc=$(grep -F '"event_type":"gateway.access"' <<<"$lines")
  if [ -z "$acc" ]; then
    bad "audit: no gateway.access record for '$name' (trace $tid)"
    continue
  fi
  [ "$(grep -c . <<<"$acc")" = 1 ] || bad "audit: $(grep -c . <<<"$acc") gateway.access records for '$name'"
  if [[ $acc == *"\"action\":\"$action\""* ]] && { [ "$code" = 0 ] || [[ $acc == *"\"code\":$code"* ]]; }; then
    ok "audit: '$name' -> $action $code"
  else
    bad "audit: '$name' record does not say action $action code $code: ${acc:0:300}"
  fi
  if [ "$action" = deny ] && [[ $acc != *'"reason":'* ]]; then bad "audit: '$name' deny record without a reason"; fi
  if [ -n "$alert" ]; then
    grep -qF '"event_type":"gateway.alert"' <<<"$lines" && ok "audit: '$name' has a gateway.alert" ||
      bad "audit: no gateway.alert record for '$name'"
  fi
done
n=$(grep -cE '"subject":\{"id":"alice","role":"([^"]*,)?doctor[,"].*"event_type":"gateway.access"' records.jsonl)
[ "$n" -gt 0 ] && ok "allow records name the subject and its roles" || bad "no allow record with subject alice / role doctor"
n=$(grep -cF "\"$THUMB1\"" records.jsonl)
[ "$n" -gt 0 ] && ok "device records carry the device thumbprint" || bad "no record with dev1's thumbprint $THUMB1"
grep -qF '"event_type":"gateway.breaker"' records.jsonl && ok "breaker transition recorded (gateway.breaker)" ||
  bad "no gateway.breaker record"
grep -qF '"event_type":"gateway.fallback"' records.jsonl && ok "fallback answers recorded (gateway.fallback)" ||
  bad "no gateway.fallback record"
grep -F "$FB_TID" records.jsonl >fb.rec
grep -qF '"event_type":"gateway.fallback"' fb.rec && ok "the static fallback's record has its trace id" ||
  bad "no gateway.fallback record with the fallback request's trace id"
n=$(grep -cE '"event_type":"gateway.policy".*"result":"failure"' records.jsonl)
[ "$n" -gt 0 ] && ok "the refused policy file is in the audit log (gateway.policy)" || bad "no gateway.policy failure record"
grep -qF '"event_type":"gateway.mask"' records.jsonl && ok "masked responses recorded (gateway.mask)" ||
  bad "no gateway.mask record"
leak=
for secret in "${DOC##*.}" "${DEV1SIG:0:40}" "$(head -c 64 keys/jwt.secret)" "$(head -c 64 keys/identity.key)" \
  "full=1" "11010519491231002X" "110105199001010021" "access_token"; do
  grep -qF -- "$secret" records.jsonl && leak="$leak ${secret:0:12}..."
done
[ -z "$leak" ] && ok "no token, signature, secret, query string or body value in the records" ||
  bad "the audit records contain:$leak"

# ---- 12. fail closed: the audit log fails -----------------------------------------------------------------------
check "durable audit fails closed: a gateway whose log fails (EIO on fdatasync) answers 503"
"$BIN" audit init --dir audit2 --origin gwzt.test/gateway2 >/dev/null 2>&1 || die "audit init (2)"
GP2=$("$SVC" freeport)
sed -e "s/127.0.0.1:$GP\"/127.0.0.1:$GP2\"/" -e "/127.0.0.1:$GS/,+1d" -e "s/^admin: .*//" \
  -e "s/dir: audit$/dir: audit2/" gw.yaml >gw2.yaml
DENGBAO_AUDIT_FAULT=eio-sync=6 "$BIN" gateway --config gw2.yaml 2>gw2.err &
GW2_PID=$!
for _ in $(seq 1 300); do
  grep -q 'gateway: listening on' gw2.err 2>/dev/null && break
  kill -0 "$GW2_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q 'gateway: listening on' gw2.err || bad "the second gateway did not start: $(tail -3 gw2.err)"
served=0 refused=0 late=0 before=$(upcount)
for i in $(seq 1 15); do
  req -H "$(auth "$DOC")" "http://127.0.0.1:$GP2/v1/patients/$i"
  case $CODE in
  200)
    [ "$refused" = 0 ] || late=1
    served=$((served + 1))
    ;;
  503) refused=$((refused + 1)) ;;
  *) bad "durable route on a failing log: status $CODE" ;;
  esac
done
after=$(upcount)
[ "$refused" -gt 0 ] && ok "503 once the audit log failed ($served served, $refused refused)" ||
  bad "no 503 from a failing audit log ($served served)"
[ "$late" = 0 ] || bad "a request was served after the audit log had failed"
[ $((after - before)) -le "$served" ] && ok "no refused request reached the upstream" ||
  bad "$((after - before)) requests at the upstream, only $served served"
req "http://127.0.0.1:$GP2/open/x"
[ "$CODE" = 503 ] && ok "auth none route also refused (503) with the log failed" || bad "auth none on a failed log: $CODE"

kill -TERM "$GW2_PID" 2>/dev/null
wait "$GW2_PID" 2>/dev/null
GW2_PID=

# ---- 13. stop after a SIGHUP under load ----------------------------------------------------------------------
# A request parked by its durable audit record (GW_ASYNC) while its worker switched to the
# reloaded generation resumes on the retired one and opens a pool there; that pool must be
# closed once the generation's last request ends, or its idle upstream connection keeps the
# worker's loop alive until the pool's idle timeout (60 s) and the stop waits for it. One
# worker, 8 keep-alive clients and 16 reloads make such a request all but certain.
check "a stop after SIGHUPs under load (durable audit) does not wait for upstream idle timeouts"
"$BIN" audit init --dir audit3 --origin gwzt.test/gateway3 >/dev/null 2>&1 || die "audit init (3)"
GP3=$("$SVC" freeport)
cat >gw3.yaml <<EOF
workers: 1
listeners: [{listen: "127.0.0.1:$GP3"}]
security:
  identity: {jwt: {hs256_secret_file: keys/jwt.secret, hs256_kid: k1}}
  identity_header: {key_file: keys/identity.key}
  rbac: {file: policy.yaml}
  rate_limits: {client_ip: {rate: 100000, period: 1s, burst: 100000}}
  audit: {dir: audit3, mode: durable}
clusters: [{name: api, endpoints: ["127.0.0.1:$U1"], keepalive: 64, retries: 0}]
routes: [{name: v1, prefix: /v1/, cluster: api}]
EOF
"$BIN" gateway --config gw3.yaml 2>gw3.err &
GW3_PID=$!
wait_gw gw3.err "$GW3_PID" 1
before=$(upcount)
LOAD=()
for _ in 1 2 3 4 5 6 7 8; do # each: one kept-alive connection, sequential requests until killed
  curl -s -o /dev/null --max-time 20 -H "$(auth "$DOC")" \
    "http://127.0.0.1:$GP3/v1/patients/[1-1000000]" >/dev/null 2>&1 &
  LOAD+=($!)
done
for _ in $(seq 1 16); do # each reload is a chance for a request parked across it
  sleep 0.1
  kill -HUP "$GW3_PID"
done
sleep 0.3
for p in "${LOAD[@]}"; do kill -TERM "$p" 2>/dev/null; done
for p in "${LOAD[@]}"; do wait "$p" 2>/dev/null; done
n=$(($(upcount) - before))
[ "$n" -ge 50 ] && ok "load through the reloading gateway ($n requests at the upstream)" ||
  bad "the load did not get through ($n requests at the upstream)"
t0=$(date +%s%N)
kill -TERM "$GW3_PID"
for _ in $(seq 1 80); do
  kill -0 "$GW3_PID" 2>/dev/null || break
  sleep 0.1
done
ms=$((($(date +%s%N) - t0) / 1000000))
if kill -0 "$GW3_PID" 2>/dev/null; then
  bad "gateway 3 still runs ${ms} ms after SIGTERM with no client (an idle pool of a retired generation?)"
  kill -KILL "$GW3_PID" 2>/dev/null
  wait "$GW3_PID" 2>/dev/null
else
  wait "$GW3_PID"
  rc=$?
  [ "$rc" = 0 ] && ok "stopped in ${ms} ms after SIGHUPs under load" || bad "gateway 3 exit status $rc"
fi
GW3_PID=

check "no sanitizer report (ASan/UBSan builds) from any gateway"
if grep -qE 'Sanitizer|runtime error' gw.err gw2.err gw3.err; then
  bad "sanitizer report: $(grep -hE -m3 'Sanitizer|runtime error' gw.err gw2.err gw3.err)"
else ok "no sanitizer report"; fi

echo "gateway_zt: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
