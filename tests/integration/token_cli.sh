#!/usr/bin/env bash
# token_cli.sh: the `dengbao token` command line (cmd/dengbao/cmd_token.c).
#
#   bash tests/integration/token_cli.sh build/dengbao
#
# Checks, one line each:
#   - `token issue` with HS256 and SM2 (bound to a device key with --device-pub, to a client
#     certificate with --device-cert) makes tokens that tests/tools/ztcheck verifies against a
#     JWKS built here from the same keys, with the claims asked for;
#   - `token sign` (token mode) and `token sign-request` (request mode, with a body) make
#     signatures ztcheck accepts, and that fail for another token, body or query;
#   - `token identity-verify` accepts an X-Auth-Identity value whose HMAC-SM3 was computed by
#     `openssl dgst -sm3 -mac HMAC` (independent implementation), and refuses a tampered one,
#     an old one, a malformed one with the documented exit codes;
#   - key files that are not 0600 are refused (exit 2) with one line naming the option;
#   - usage errors exit 2.
# Needs bash, coreutils, openssl and the ztcheck tool next to the binary.
# Ends with "token_cli: N passed, M failed"; exits 1 if any check failed, 2 if it cannot run.
# shellcheck disable=SC2016 # `check NAME '...'` expands when the check runs, on purpose
set -u

BIN=${1:-}
if [[ -z $BIN || ! -x $BIN ]]; then
    echo "usage: $0 path/to/dengbao (got '${BIN}', not an executable)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
ZTCHECK=$(dirname "$BIN")/ztcheck
if [[ ! -x $ZTCHECK ]]; then
    echo "token_cli: $ZTCHECK is missing (build the ztcheck target)" >&2
    exit 2
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/token_cli.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 2
exec </dev/null

PASS=0
FAIL=0
check() {
    local name=$1
    shift
    if eval "$1" >"$T/out.$PASS.$FAIL" 2>&1; then
        PASS=$((PASS + 1))
        echo "ok   $name"
    else
        FAIL=$((FAIL + 1))
        echo "FAIL $name"
        sed 's/^/     /' "$T/out.$PASS.$FAIL" | head -20
    fi
}

b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
hex2bin() { local h; h=$(cat); printf '%b' "$(sed 's/../\\x&/g' <<<"$h")"; }

# keys
printf 'a-shared-hs256-secret-of-32-bytes' >hs.secret
chmod 600 hs.secret
printf 'the-identity-key-0123456789\n' >id.key
chmod 600 id.key
"$BIN" gm keygen --out idp.pem --pub-out idp.pub.pem >/dev/null || exit 2
"$BIN" gm keygen --out dev.pem --pub-out dev.pub.pem >/dev/null || exit 2
"$BIN" gm keygen --out other.pem --pub-out other.pub.pem >/dev/null || exit 2
K=$(b64url <hs.secret)
IDP=$("$BIN" gm pub --key idp.pem --hex)
X=$(printf '%s' "${IDP:2:64}" | hex2bin | b64url)
Y=$(printf '%s' "${IDP:66:64}" | hex2bin | b64url)
DEVPUB=$("$BIN" gm pub --key dev.pem --hex)
OTHERPUB=$("$BIN" gm pub --key other.pem --hex)
cat >jwks.json <<EOF
{"keys":[{"kty":"oct","kid":"k1","k":"$K"},{"kty":"EC","crv":"SM2","kid":"s1","x":"$X","y":"$Y"}]}
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout c.key -out c.pem \
    -subj /CN=device -days 1 >/dev/null 2>&1 || exit 2

# ---- issue ----
check "issue HS256" '
    TOK=$("$BIN" token issue --key hs.secret --alg HS256 --kid k1 --sub alice --roles doctor,admin \
        --iss https://idp --aud api --ttl 10m) &&
    "$ZTCHECK" verify jwks.json "$TOK" --iss https://idp --aud api | grep -q "^ok alg=HS256 kid=k1 sub=alice roles=doctor,admin aud=api"'
check "issue SM2 bound to a device key" '
    TOK=$("$BIN" token issue --key idp.pem --alg SM2 --kid s1 --sub bob --device-pub dev.pub.pem) &&
    TH=$("$ZTCHECK" thumbprint "$DEVPUB") &&
    OUT=$("$ZTCHECK" verify jwks.json "$TOK" --require-cnf) && [[ $OUT == *"cnf=$TH"* ]]'
check "issue with --device-cert carries cnf x5t#S256" '
    TOK=$("$BIN" token issue --key hs.secret --alg HS256 --kid k1 --sub carol --device-cert c.pem) &&
    WANT=$(openssl x509 -in c.pem -outform DER | openssl dgst -sha256 -binary | b64url) &&
    PAY=$(cut -d. -f2 <<<"$TOK" | tr -- "-_" "+/") &&
    while (( ${#PAY} % 4 )); do PAY="$PAY="; done &&
    base64 -d <<<"$PAY" | grep -qF "\"x5t#S256\":\"$WANT\""'
check "issue --ttl bad is a usage error" '
    "$BIN" token issue --key hs.secret --alg HS256 --sub a --ttl 5x; [[ $? == 2 ]]'
check "issue refuses a key file that is not 0600" '
    cp hs.secret open.secret && chmod 644 open.secret &&
    { "$BIN" token issue --key open.secret --alg HS256 --sub a 2>err; [[ $? == 2 ]]; } &&
    grep -q "0600" err && [[ $(wc -l <err) == 1 ]]'
check "issue refuses a short HS256 secret" '
    printf short >short.secret && chmod 600 short.secret &&
    { "$BIN" token issue --key short.secret --alg HS256 --sub a; [[ $? != 0 ]]; }'

# ---- device signatures ----
check "sign (token mode) verifies, another device does not" '
    TOK=$("$BIN" token issue --key idp.pem --alg SM2 --kid s1 --sub bob --device-pub dev.pub.pem) &&
    SIG=$("$BIN" token sign --device-key dev.pem --token "$TOK") && [[ ${#SIG} == 86 ]] &&
    "$ZTCHECK" devsig-token jwks.json "$TOK" "$SIG" --pub-hex "$DEVPUB" | grep -q "^ok" &&
    SIG2=$("$BIN" token sign --device-key other.pem --token "$TOK") &&
    { "$ZTCHECK" devsig-token jwks.json "$TOK" "$SIG2" --pub-hex "$OTHERPUB"; [[ $? == 1 ]]; }'
check "sign-request with a body verifies; another body and query do not" '
    TOK=$("$BIN" token issue --key idp.pem --alg SM2 --kid s1 --sub bob --device-pub dev.pub.pem) &&
    printf "{\"a\":1}" >body.json && printf "{\"a\":2}" >body2.json &&
    H=$("$BIN" token sign-request --device-key dev.pem --method POST --url-path /v1/x \
        --query "b=2" --body-file body.json) &&
    [[ $(wc -l <<<"$H") == 4 ]] &&
    S=$(sed -n "s/^X-SM2-Signature: //p" <<<"$H") && TS=$(sed -n "s/^X-SM2-Timestamp: //p" <<<"$H") &&
    N=$(sed -n "s/^X-SM2-Nonce: //p" <<<"$H") && C=$(sed -n "s/^X-Content-SM3: //p" <<<"$H") &&
    "$ZTCHECK" devsig-request jwks.json "$TOK" POST /v1/x "b=2" "$TS" "$N" "$C" "$S" body.json \
        --pub-hex "$DEVPUB" | grep -q "^ok" &&
    { "$ZTCHECK" devsig-request jwks.json "$TOK" POST /v1/x "b=2" "$TS" "$N" "$C" "$S" body2.json \
        --pub-hex "$DEVPUB"; [[ $? == 1 ]]; } &&
    { "$ZTCHECK" devsig-request jwks.json "$TOK" POST /v1/x "b=3" "$TS" "$N" "$C" "$S" body.json \
        --pub-hex "$DEVPUB"; [[ $? == 1 ]]; }'
check "sign refuses a device key that is not 0600" '
    cp dev.pem dev-open.pem && chmod 644 dev-open.pem &&
    { "$BIN" token sign --device-key dev-open.pem --token a.b.c 2>err; [[ $? == 2 ]]; } &&
    grep -q -- "--device-key" err'

# ---- identity-verify against openssl's HMAC-SM3 ----
NOW=$(date +%s)
mkid() { # mkid SIGNED-PART -> full header value
    local mac
    mac=$(printf '%s' "$1" | openssl dgst -sm3 -mac HMAC -macopt "key:the-identity-key-0123456789" \
        -binary | b64url)
    printf '%s;sig=%s' "$1" "$mac"
}
if printf x | openssl dgst -sm3 -mac HMAC -macopt key:k >/dev/null 2>&1; then
    check "identity-verify accepts openssl's HMAC-SM3" '
        V=$(mkid "v1;sub=alice%40example;roles=doctor,a%2Cb;device=-;iat=$NOW;trace=0af7651916cd43dd8448eb211c80319c") &&
        OUT=$("$BIN" token identity-verify --key id.key --header "$V") &&
        [[ $OUT == "ok sub=alice@example roles=doctor,a,b device=- iat=$NOW trace=0af7651916cd43dd8448eb211c80319c" ]]'
    check "identity-verify refuses a tampered value (exit 1)" '
        V=$(mkid "v1;sub=alice;roles=doctor;device=-;iat=$NOW;trace=ab") &&
        V=${V/sub=alice/sub=admin} &&
        { "$BIN" token identity-verify --key id.key --header "$V"; [[ $? == 1 ]]; }'
    check "identity-verify refuses an old value (exit 1)" '
        V=$(mkid "v1;sub=alice;roles=;device=-;iat=$((NOW - 600));trace=ab") &&
        { "$BIN" token identity-verify --key id.key --header "$V" --max-age 60s; [[ $? == 1 ]]; } &&
        "$BIN" token identity-verify --key id.key --header "$V" --max-age 1h | grep -q "^ok sub=alice roles= "'
else
    echo "skip identity-verify interop: this openssl has no HMAC-SM3"
fi
check "identity-verify: malformed is exit 2" '
    { "$BIN" token identity-verify --key id.key --header "v1;sub=a"; [[ $? == 2 ]]; }'
check "unknown command and option are usage errors" '
    { "$BIN" token frobnicate; [[ $? == 2 ]]; } && { "$BIN" token issue --bogus 1; [[ $? == 2 ]]; }'
check "token --help" '"$BIN" token --help | grep -q "token issue"'

echo "token_cli: $PASS passed, $FAIL failed"
[[ $FAIL == 0 ]]
