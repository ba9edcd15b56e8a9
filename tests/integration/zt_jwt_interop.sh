#!/usr/bin/env bash
# zt_jwt_interop.sh: the zt token and device-signature verifiers (src/zt) against tokens and
# signatures made by independent implementations from npm: `jose` (JWS/JWT: ES256, RS256,
# HS256, keys exported as JWK) and `sm-crypto` (SM2 with SM3 and the default ID), both pinned
# in tests/interop/package.json.
#
#   bash tests/integration/zt_jwt_interop.sh build/dengbao
#
# The verifier is driven through tests/tools/ztcheck (built next to the dengbao binary). Needs
# node and tests/interop/node_modules (scripts/deps.sh runs `npm ci --prefix tests/interop`);
# without them the test FAILS, it never skips.
#
# A node script (written below) makes the keys and tokens: a JWKS with a jose P-256 key, a
# jose RSA-2048 key, an HS256 secret and an sm-crypto SM2 key (kty "EC", crv "SM2"); tokens
# signed by jose (ES256, RS256, HS256) and an SM2 JWT signed by sm-crypto over the JWS signing
# input; a device key pair made by sm-crypto, its SM3 thumbprint in cnf.sm3, a token-mode
# X-SM2-Signature over the JWT and a request-mode signature over the canonical string, all
# by sm-crypto. Then: each is accepted by ztcheck with the expected claims, and tampered,
# expired, wrong-audience, wrong-device and changed-request variants are refused.
# Ends with "zt_jwt_interop: N passed, M failed"; exits 1 if any check failed, 2 if it cannot
# run.
set -u

BIN=${1:-}
if [[ -z $BIN || ! -x $BIN ]]; then
    echo "usage: $0 path/to/dengbao (got '${BIN}', not an executable)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
ZTCHECK=$(dirname "$BIN")/ztcheck
INTEROP=$(cd "$(dirname "$0")/../interop" && pwd)
if [[ ! -x $ZTCHECK ]]; then
    echo "zt_jwt_interop: FAIL: $ZTCHECK is missing (cmake target ztcheck)" >&2
    exit 2
fi
if ! command -v node >/dev/null 2>&1; then
    echo "zt_jwt_interop: FAIL: node is not installed; run scripts/deps.sh" >&2
    exit 2
fi
for pkg in jose sm-crypto; do
    if [[ ! -f $INTEROP/node_modules/$pkg/package.json ]]; then
        echo "zt_jwt_interop: FAIL: $INTEROP/node_modules/$pkg is missing; run scripts/deps.sh (it runs 'npm ci --prefix tests/interop')" >&2
        exit 2
    fi
done
T=$(mktemp -d "${TMPDIR:-/tmp}/zt_jwt_interop.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 2
exec </dev/null

PASS=0
FAIL=0
pass() {
    PASS=$((PASS + 1))
    echo "PASS $1"
}
fail() {
    FAIL=$((FAIL + 1))
    echo "FAIL $1: $2"
}
run() {
    timeout 60 "$@" >"$T/out" 2>"$T/err"
    RC=$?
    { OUT=$(<"$T/out"); } 2>/dev/null
    ERR=$(<"$T/err")
}
why() { echo "exit $RC, stdout '${OUT:0:200}', stderr '${ERR:0:200}'"; }
# expect_ok NAME WANT_SUBSTRING ZTCHECK_ARGS...: exit 0 and "ok ..." containing WANT.
expect_ok() {
    local name=$1 want=$2
    shift 2
    run "$ZTCHECK" "$@"
    if [[ $RC -eq 0 && $OUT == ok* && $OUT == *"$want"* ]]; then pass "$name"; else fail "$name" "want ok with '$want'; $(why)"; fi
}
# expect_fail NAME REASON ZTCHECK_ARGS...: exit 1 and "fail <code> <message>" with REASON in
# the message (REASON "" accepts any).
expect_fail() {
    local name=$1 reason=$2
    shift 2
    run "$ZTCHECK" "$@"
    if [[ $RC -eq 1 && $OUT == fail* && $OUT == *"$reason"* ]]; then pass "$name"; else fail "$name" "want refusal (exit 1) for '$reason'; $(why)"; fi
}

cat >mint.js <<'EOF'
'use strict'
// Makes keys, tokens and signatures with jose and sm-crypto; writes them into the current
// folder. NOW is the clock used for iat/exp and the request timestamp.
const fs = require('fs')
const crypto = require('crypto')
const jose = require('jose')
const {sm2, sm3} = require('sm-crypto')

const NOW = Math.floor(Date.now() / 1000)
const b64u = (buf) => Buffer.from(buf).toString('base64url')
const hexToB64u = (h) => b64u(Buffer.from(h, 'hex'))
const bytes = (s) => Array.from(Buffer.from(s, 'utf8'))
const sm2sign = (msg, priv, pub) =>
  hexToB64u(sm2.doSignature(bytes(msg), priv, {hash: true, der: false, publicKey: pub}))

async function main() {
  const es = await jose.generateKeyPair('ES256', {extractable: true})
  const rs = await jose.generateKeyPair('RS256', {modulusLength: 2048, extractable: true})
  const hsSecret = crypto.randomBytes(32)
  const issuer = sm2.generateKeyPairHex() // the SM2 token issuer
  const dev = sm2.generateKeyPairHex() // the device
  const other = sm2.generateKeyPairHex() // another device

  const esJwk = await jose.exportJWK(es.publicKey)
  const rsJwk = await jose.exportJWK(rs.publicKey)
  const jwks = {keys: [
    {...esJwk, kid: 'es1', alg: 'ES256', use: 'sig'},
    {...rsJwk, kid: 'rs1', alg: 'RS256'},
    {kty: 'oct', kid: 'hs1', alg: 'HS256', k: b64u(hsSecret)},
    {kty: 'EC', crv: 'SM2', kid: 'sm1', x: hexToB64u(issuer.publicKey.slice(2, 66)),
      y: hexToB64u(issuer.publicKey.slice(66))},
  ]}
  fs.writeFileSync('jwks.json', JSON.stringify(jwks))

  // Device binding: SM3 over the 65 bytes 04||x||y, by sm-crypto.
  const thumb = hexToB64u(sm3(Array.from(Buffer.from(dev.publicKey, 'hex'))))
  const claims = {sub: 'alice', roles: ['doctor', 'auditor'], cnf: {sm3: thumb}}
  const mk = (alg, kid, key, extra = {}) =>
    new jose.SignJWT({...claims, ...extra}).setProtectedHeader({alg, kid, typ: 'JWT'})
      .setIssuer('https://idp.example').setAudience(['gateway', 'x']).setIssuedAt(NOW - 5)
      .setExpirationTime(NOW + 600).setJti(crypto.randomUUID()).sign(key)
  fs.writeFileSync('es.jwt', await mk('ES256', 'es1', es.privateKey))
  fs.writeFileSync('rs.jwt', await mk('RS256', 'rs1', rs.privateKey))
  fs.writeFileSync('hs.jwt', await mk('HS256', 'hs1', hsSecret))
  fs.writeFileSync('hs_nokid.jwt', await new jose.SignJWT({sub: 'bob', scope: 'read write'})
    .setProtectedHeader({alg: 'HS256'}).setIssuer('https://idp.example').setAudience('gateway')
    .setExpirationTime(NOW + 60).sign(hsSecret))
  fs.writeFileSync('expired.jwt', await new jose.SignJWT(claims)
    .setProtectedHeader({alg: 'ES256', kid: 'es1'}).setIssuer('https://idp.example')
    .setAudience('gateway').setIssuedAt(NOW - 7200).setExpirationTime(NOW - 3600)
    .sign(es.privateKey))
  fs.writeFileSync('future.jwt', await new jose.SignJWT(claims)
    .setProtectedHeader({alg: 'RS256', kid: 'rs1'}).setIssuer('https://idp.example')
    .setAudience('gateway').setNotBefore(NOW + 3600).setExpirationTime(NOW + 7200)
    .sign(rs.privateKey))
  // HS256 signed with the RSA public key's PEM as the secret (algorithm confusion).
  const rsPem = await jose.exportSPKI(rs.publicKey)
  fs.writeFileSync('confused.jwt', await mk('HS256', 'rs1', Buffer.from(rsPem)))

  // SM2 JWT signed by sm-crypto over the JWS signing input.
  const h = b64u(JSON.stringify({alg: 'SM2', typ: 'JWT', kid: 'sm1'}))
  const p = b64u(JSON.stringify({...claims, iss: 'https://idp.example', aud: 'gateway',
    iat: NOW, exp: NOW + 600}))
  const sm2jwt = `${h}.${p}.${sm2sign(`${h}.${p}`, issuer.privateKey, issuer.publicKey)}`
  fs.writeFileSync('sm2.jwt', sm2jwt)
  // The same with cnf.jwk (the device key inside the token).
  const p2 = b64u(JSON.stringify({sub: 'carol', iss: 'https://idp.example', aud: 'gateway',
    exp: NOW + 600, cnf: {sm3: thumb, jwk: {kty: 'EC', crv: 'SM2',
      x: hexToB64u(dev.publicKey.slice(2, 66)), y: hexToB64u(dev.publicKey.slice(66))}}}))
  const sm2jwk = `${h}.${p2}.${sm2sign(`${h}.${p2}`, issuer.privateKey, issuer.publicKey)}`
  fs.writeFileSync('sm2_jwk.jwt', sm2jwk)

  // Token mode: the device signs the exact JWT bytes.
  const hs = fs.readFileSync('hs.jwt', 'utf8')
  fs.writeFileSync('tok.sig', sm2sign(hs, dev.privateKey, dev.publicKey))
  fs.writeFileSync('tok_jwk.sig', sm2sign(sm2jwk, dev.privateKey, dev.publicKey))
  fs.writeFileSync('tok_other.sig', sm2sign(hs, other.privateKey, other.publicKey))

  // Request mode: METHOD LF PATH LF QUERY LF TIMESTAMP LF NONCE LF BODY-SM3.
  const body = '{"patient":"110105199001010021","note":"复查"}'
  fs.writeFileSync('body.bin', body)
  const bodySm3 = hexToB64u(sm3(bytes(body)))
  const nonce = b64u(crypto.randomBytes(18))
  const canon = ['POST', '/api/records/7', 'full=1&x=%2F', String(NOW), nonce, bodySm3].join('\n')
  fs.writeFileSync('canon.txt', canon)
  const env = {
    NOW, DEV_PUB: dev.publicKey, OTHER_PUB: other.publicKey, THUMB: thumb,
    REQ_TS: String(NOW), REQ_NONCE: nonce, REQ_SM3: bodySm3,
    REQ_SIG: sm2sign(canon, dev.privateKey, dev.publicKey),
    REQ_SIG_OTHER: sm2sign(canon, other.privateKey, other.publicKey),
  }
  fs.writeFileSync('env.sh', Object.entries(env).map(([k, v]) => `${k}='${v}'\n`).join(''))
}
main().catch((e) => { console.error(e); process.exit(2) })
EOF

run env NODE_PATH="$INTEROP/node_modules" node mint.js
if [[ $RC -ne 0 || ! -f env.sh ]]; then
    echo "zt_jwt_interop: FAIL: the node minting script does not work: $(why)" >&2
    exit 2
fi
# shellcheck disable=SC1091
. ./env.sh
V=(--iss https://idp.example --aud gateway --now "$NOW" --skew 30)

# ---- tokens -----------------------------------------------------------------------------------
expect_ok "jose ES256 token accepted (JWKS from jose.exportJWK)" \
    "alg=ES256 kid=es1 sub=alice roles=doctor,auditor aud=gateway cnf=$THUMB" verify jwks.json @es.jwt "${V[@]}"
expect_ok "jose RS256 token accepted" "alg=RS256 kid=rs1 sub=alice" verify jwks.json @rs.jwt "${V[@]}"
expect_ok "jose HS256 token accepted" "alg=HS256 kid=hs1 sub=alice" verify jwks.json @hs.jwt "${V[@]}"
expect_ok "jose HS256 token without kid (one HS256 key), scope as roles" "sub=bob roles=read,write" \
    verify jwks.json @hs_nokid.jwt "${V[@]}"
expect_ok "sm-crypto SM2-signed JWT accepted (JWKS kty EC crv SM2)" "alg=SM2 kid=sm1 sub=alice" \
    verify jwks.json @sm2.jwt "${V[@]}"
expect_ok "SM2 JWT accepted with --sm2-alg SM2 given explicitly" \
    "alg=SM2" verify jwks.json @sm2.jwt "${V[@]}" --sm2-alg SM2
expect_fail "SM2 JWT refused when the key set calls SM2 'SM2-SM3'" "unknown alg" verify jwks.json @sm2.jwt "${V[@]}" --sm2-alg SM2-SM3
expect_fail "jose ES256 token refused when only HS256 is allowed" "not allowed" verify jwks.json @es.jwt "${V[@]}" --algs HS256
expect_fail "jose expired token refused" "expired" verify jwks.json @expired.jwt "${V[@]}"
expect_fail "jose token with nbf in the future refused" "not yet valid" verify jwks.json @future.jwt "${V[@]}"
expect_fail "HS256 signed with the RSA public key PEM (algorithm confusion) refused" "kid belongs to a RS256 key" \
    verify jwks.json @confused.jwt "${V[@]}"
expect_fail "jose token with a wrong audience refused" "aud does not match" verify jwks.json @es.jwt --iss https://idp.example --aud other --now "$NOW"
expect_fail "jose token with a wrong issuer refused" "iss does not match" verify jwks.json @rs.jwt --iss https://evil.example --aud gateway --now "$NOW"
for f in es rs hs sm2; do
    tok=$(<$f.jwt)
    mid=$(((${#tok} * 2) / 3))
    c=${tok:mid:1}
    [[ $c == A ]] && r=B || r=A
    printf '%s' "${tok:0:mid}$r${tok:mid+1}" >tampered_$f.jwt
    expect_fail "$f token with one character changed refused" "" verify jwks.json @tampered_$f.jwt "${V[@]}"
done
padded=$(<hs.jwt)=
expect_fail "jose HS256 token with base64 padding appended refused" "base64url" verify jwks.json "$padded" "${V[@]}"

# ---- device binding -----------------------------------------------------------------------------
run "$ZTCHECK" thumbprint "$DEV_PUB"
if [[ $RC -eq 0 && $OUT == "$THUMB" ]]; then pass "SM3 thumbprint of the device key equals sm-crypto's"; else fail "thumbprint" "want $THUMB; $(why)"; fi
expect_ok "token mode: sm-crypto X-SM2-Signature over the jose JWT accepted" "sub=alice" \
    devsig-token jwks.json @hs.jwt "$(<tok.sig)" --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "token mode: signature by another device refused (its own key)" "does not match the token's cnf" \
    devsig-token jwks.json @hs.jwt "$(<tok_other.sig)" --pub-hex "$OTHER_PUB" "${V[@]}"
expect_fail "token mode: signature by another device refused (the bound key)" "bad device signature" \
    devsig-token jwks.json @hs.jwt "$(<tok_other.sig)" --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "token mode: device signature over another token refused" "bad device signature" \
    devsig-token jwks.json @es.jwt "$(<tok.sig)" --pub-hex "$DEV_PUB" "${V[@]}"
expect_ok "token mode with the key from cnf.jwk (SM2 JWT by sm-crypto)" "sub=carol" \
    devsig-token jwks.json @sm2_jwk.jwt "$(<tok_jwk.sig)" "${V[@]}"

run "$ZTCHECK" canonical POST /api/records/7 'full=1&x=%2F' "$REQ_TS" "$REQ_NONCE" "$REQ_SM3"
if [[ $RC -eq 0 && $OUT == "$(<canon.txt)" ]]; then pass "canonical request string equals the one built in JavaScript"; else fail "canonical" "$(why)"; fi
REQ=(POST /api/records/7 'full=1&x=%2F' "$REQ_TS" "$REQ_NONCE" "$REQ_SM3")
expect_ok "request mode: sm-crypto signature over method, path, query, time, nonce, body SM3 accepted" \
    "sub=alice" devsig-request jwks.json @hs.jwt "${REQ[@]}" "$REQ_SIG" body.bin --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "request mode: path changed" "bad device signature" devsig-request jwks.json @hs.jwt POST /api/records/8 'full=1&x=%2F' \
    "$REQ_TS" "$REQ_NONCE" "$REQ_SM3" "$REQ_SIG" body.bin --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "request mode: query changed" "bad device signature" devsig-request jwks.json @hs.jwt POST /api/records/7 'full=1&x=/' \
    "$REQ_TS" "$REQ_NONCE" "$REQ_SM3" "$REQ_SIG" body.bin --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "request mode: method changed" "bad device signature" devsig-request jwks.json @hs.jwt PUT /api/records/7 'full=1&x=%2F' \
    "$REQ_TS" "$REQ_NONCE" "$REQ_SM3" "$REQ_SIG" body.bin --pub-hex "$DEV_PUB" "${V[@]}"
printf 'other body' >body2.bin
expect_fail "request mode: body changed" "x-content-sm3" devsig-request jwks.json @hs.jwt "${REQ[@]}" "$REQ_SIG" body2.bin \
    --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "request mode: signature by another device" "bad device signature" devsig-request jwks.json @hs.jwt "${REQ[@]}" \
    "$REQ_SIG_OTHER" body.bin --pub-hex "$DEV_PUB" "${V[@]}"
expect_fail "request mode: timestamp outside the window" "window" devsig-request jwks.json @hs.jwt "${REQ[@]}" \
    "$REQ_SIG" body.bin --pub-hex "$DEV_PUB" --iss https://idp.example --aud gateway --now $((NOW + 400)) \
    --skew 30 --window 300

echo "zt_jwt_interop: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
