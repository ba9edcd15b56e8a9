#!/usr/bin/env bash
# gm_cli.sh: the `dengbao gm` command-line contract and its interoperability with the OpenSSL 3
# command line.
#
#   bash tests/integration/gm_cli.sh build/dengbao
#
# Checks, one line each:
#   - known answers: SM3 (GB/T 32905), HMAC-SM3 (GM/T 0042), SM4 (GB/T 32907), SM4-GCM
#     (RFC 8998 A.1), SM2 public key, signature and e (GM/T 0003.5 / GB/T 32918.5 Annex A);
#   - the exit status of every kind of input: 0 success, 1 a well-formed input that fails
#     verification (signature, GCM tag, SM2 C3, CBC padding), 2 usage or malformed input; on
#     a non-zero exit exactly one line on stderr and nothing on stdout;
#   - input from --msg-hex, --in FILE and standard input, output to --out FILE, key files 0600;
#   - both directions against `openssl`: SM2 signatures with the default ID 1234567812345678
#     and custom IDs (OpenSSL must be given distid explicitly: its own default is the empty
#     ID), SM2 encryption (GM/T 0009 DER, and the raw forms converted here), keys made by each
#     side used by the other, SM4 ECB/CBC/CTR against `openssl enc`; DER integers of 31 bytes;
#   - fresh nonces and C1 on every call; the main answers again under DENGBAO_GM_IMPL=portable
#     and DENGBAO_GM_IMPL=sm2=openssl.
# Needs bash, coreutils, openssl (scripts/deps.sh); not xxd. Takes a few seconds.
# Ends with "gm_cli: N passed, M failed"; exits 1 if any check failed, 2 if it cannot run.
# shellcheck disable=SC2016,SC2034 # `check NAME eval '...'` expands (and uses variables) when the check runs, on purpose
set -u

BIN=${1:-}
if [[ -z $BIN || ! -x $BIN ]]; then
    echo "usage: $0 path/to/dengbao (got '${BIN}', not an executable)" >&2
    exit 2
fi
if ! command -v openssl >/dev/null 2>&1; then
    echo "gm_cli: openssl is not installed: run scripts/deps.sh" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
T=$(mktemp -d "${TMPDIR:-/tmp}/gm_cli.XXXXXX") || exit 2
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 2
exec </dev/null # nothing may wait for a terminal; tests that use stdin redirect it explicitly

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

# ---- helpers ------------------------------------------------------------------------------

# run CMD...: runs with a time limit; sets RC, OUT (stdout) and ERR (stderr).
run() {
    timeout 30 "$@" >"$T/out" 2>"$T/err"
    RC=$?
    { OUT=$(<"$T/out"); } 2>/dev/null # binary output: bash would warn about NUL bytes
    ERR=$(<"$T/err")
}

why() { echo "exit $RC, stdout '${OUT:0:160}', stderr '${ERR:0:200}'"; }

# expect_out NAME WANT CMD...: exit 0 and stdout WANT (one line).
expect_out() {
    local name=$1 want=$2
    shift 2
    run "$@"
    if [[ $RC -eq 0 && $OUT == "$want" ]]; then pass "$name"; else fail "$name" "want '$want'; $(why)"; fi
}

# expect_rc NAME WANT_RC CMD...: exit WANT_RC; when non-zero also exactly one line on stderr and
# nothing on stdout.
expect_rc() {
    local name=$1 want=$2 lines
    shift 2
    run "$@"
    if [[ $RC -ne $want ]]; then
        fail "$name" "want exit $want; $(why)"
        return
    fi
    if [[ $want -ne 0 ]]; then
        lines=$(wc -l <"$T/err")
        if [[ -z $ERR || $lines -ne 1 ]]; then
            fail "$name" "want exactly one line on stderr, got $lines: '${ERR:0:300}'"
            return
        fi
        if [[ -s $T/out ]]; then
            fail "$name" "want nothing on stdout on failure, got '${OUT:0:160}'"
            return
        fi
    fi
    pass "$name"
}

# check NAME CONDITION-COMMAND... : passes when the command succeeds.
check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "condition failed: $*; last dengbao run: $(why)"; fi
}

bin2hex() { od -An -v -tx1 "$1" | tr -d ' \n'; }
hex2bin() { # hex2bin HEX > file (pure bash: no xxd needed)
    local h=$1 i
    for ((i = 0; i < ${#h}; i += 4096)); do
        printf '%b' "$(printf '%s' "${h:i:4096}" | sed 's/../\\x&/g')"
    done
}
str2hex() { printf '%s' "$1" | od -An -v -tx1 | tr -d ' \n'; }
lower() { printf '%s' "$1" | tr 'A-F' 'a-f'; }
# flip_last HEX: the same hex with the last byte XORed with 01.
flip_last() {
    local h=$1
    printf '%s%02x' "${h:0:${#h}-2}" $((16#${h: -2} ^ 1))
}
# flip_at HEX BYTE: XOR byte number BYTE with 01.
flip_at() {
    local h=$1 i=$((2 * $2))
    printf '%s%02x%s' "${h:0:i}" $((16#${h:i:2} ^ 1)) "${h:i+2}"
}
# pad64 HEX: a big-endian integer as exactly 64 hex digits.
pad64() {
    local h=$1
    while ((${#h} > 64)) && [[ ${h:0:2} == 00 ]]; do h=${h:2}; done
    while ((${#h} < 64)); do h=0$h; done
    printf '%s' "$h"
}

# Minimal DER, enough for SM2 signatures and GM/T 0009 ciphertexts.
# der_tlv HEX POS: sets VAL and NEXT (positions in hex digits).
der_tlv() {
    local h=$1 p=$2 l n
    l=$((16#${h:p+2:2}))
    p=$((p + 4))
    if ((l > 128)); then
        n=$((l - 128))
        l=$((16#${h:p:2*n}))
        p=$((p + 2 * n))
    fi
    VAL=${h:p:2*l}
    NEXT=$((p + 2 * l))
}
der_len() { # der_len NBYTES
    if (($1 < 128)); then printf '%02x' "$1"; elif (($1 < 256)); then printf '81%02x' "$1"; else printf '82%04x' "$1"; fi
}
der_int() { # der_int HEX: INTEGER, minimal, with a sign byte when needed
    local h=$1
    while ((${#h} > 2)) && [[ ${h:0:2} == 00 ]]; do h=${h:2}; done
    if ((16#${h:0:1} >= 8)); then h=00$h; fi
    printf '02%s%s' "$(der_len $((${#h} / 2)))" "$h"
}
der_oct() { printf '04%s%s' "$(der_len $((${#1} / 2)))" "$1"; }
der_seq() { printf '30%s%s' "$(der_len $((${#1} / 2)))" "$1"; }
sig_raw2der() { der_seq "$(der_int "${1:0:64}")$(der_int "${1:64:64}")"; }
sig_der2raw() {
    local body r
    der_tlv "$1" 0
    body=$VAL
    der_tlv "$body" 0
    r=$VAL
    der_tlv "$body" "$NEXT"
    printf '%s%s' "$(pad64 "$r")" "$(pad64 "$VAL")"
}
# ct_der2raw DERHEX c1c3c2|c1c2c3
ct_der2raw() {
    local body x y c3
    der_tlv "$1" 0
    body=$VAL
    der_tlv "$body" 0
    x=$(pad64 "$VAL")
    der_tlv "$body" "$NEXT"
    y=$(pad64 "$VAL")
    der_tlv "$body" "$NEXT"
    c3=$VAL
    der_tlv "$body" "$NEXT"
    if [[ $2 == c1c3c2 ]]; then printf '04%s%s%s%s' "$x" "$y" "$c3" "$VAL"; else printf '04%s%s%s%s' "$x" "$y" "$VAL" "$c3"; fi
}
# ct_c1c3c2_to_der RAWHEX
ct_c1c3c2_to_der() {
    local h=$1
    der_seq "$(der_int "${h:2:64}")$(der_int "${h:66:64}")$(der_oct "${h:130:64}")$(der_oct "${h:194}")"
}

# ossl_key_hex FIELD(priv|pub) OPENSSL-PKEY-ARGS...: a key's scalar or 04||x||y, as hex.
ossl_key_hex() {
    local f=$1
    shift
    openssl pkey "$@" -noout -text 2>/dev/null | awk -v f="$f:" '$0 == f { on = 1; next } /^[^ ]/ { on = 0 } on' | tr -d ' :\n'
}

# ---- fixtures -----------------------------------------------------------------------------

K=0123456789abcdeffedcba9876543210 # GB/T 32907 key and plaintext
IV=000102030405060708090a0b0c0d0e0f
DEF_ID=1234567812345678

# GM/T 0003.5 Annex A (recommended curve, ID 1234567812345678, message "message digest").
KAT_D=3945208f7b2144b13f36e38ac6d39f95889393692860b51a42fb81ef4df7c5b8
KAT_P=0409f9df311e5421a150dd7d161e4bc5c672179fad1833fc076bb08ff356f35020ccea490ce26775a52dc6ea718cc1aa600aed05fbf35e084a6632f6072da9ad13
KAT_E=f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640
KAT_SIG=f5a03b0648d2c4630eeac513e1bb81a15944da3827d5b74143ac7eaceee720b3b1b6aa29df212fd8763182bc0d421ca1bb9038fd1f7f42d4840b69c485bbc1aa
KAT_MSG=$(str2hex "message digest")

# Made once by openssl 3.0 with the Annex A key over "short": DER whose first INTEGER is only 31
# bytes long (x1 < 2^248; r < 2^248), which every converter must left-pad to 32.
SHORT_MSG=73686f7274
SHORT_X1_CT=306c021f63a0c872dd7699b5f665a532b54f339d192c80f5cdee68d51418957e0d7b58022076200c6d01d1014e1c92d8b5d2a18a8fd4f9e6547582e915341d22de931e39be0420355d406e707331dd145e34b2e6c90f1fa124ad8d7d16a969c27e13e9cf636d7e040537b9e2c8ec
SHORT_R_SIG=3044021f6cddbc922a4837b27329b9910aee983111e8feedd379b483e5957f96a03f8c022100e65893c799b13a2155785581317c375183754e4d67538b08e694ae842676b403

# RFC 8998 Appendix A.1 (SM4-GCM).
GCM_IV=00001234567800000000abcd
GCM_AAD=feedfacedeadbeeffeedfacedeadbeefabaddad2
GCM_PT=aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccddddddddddddddddeeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa
GCM_CT=17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d
GCM_TAG=83de3541e4c2b58177e065a9bf7b62ec

head -c 1000 /dev/urandom >rand1000
head -c 100 /dev/urandom >rand100
head -c 50 /dev/urandom >rand50
printf 'The quick brown fox jumps over the lazy dog' >fox
FOX=$(bin2hex fox)
RK=$(bin2hex <(head -c 16 /dev/urandom))
RIV=$(bin2hex <(head -c 16 /dev/urandom))

# ---- SM3 and HMAC-SM3 ---------------------------------------------------------------------

expect_out "sm3 'abc' (GB/T 32905 A.1) from --msg-hex" \
    66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0 "$BIN" gm sm3 --msg-hex 616263
run "$BIN" gm sm3 --msg-hex 616263
check "sm3 output is exactly 64 lowercase hex digits and a newline" \
    test "$(bin2hex "$T/out")" == "$(str2hex 66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0)0a"
printf 'abc' >abc
expect_out "sm3 'abc' from standard input" \
    66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0 "$BIN" gm sm3 <abc
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do printf abcd; done >abcd16
expect_out "sm3 'abcd'x16 (GB/T 32905 A.2) from --in" \
    debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732 "$BIN" gm sm3 --in abcd16
expect_out "sm3 of 1000 random bytes equals openssl dgst -sm3" \
    "$(openssl dgst -sm3 -r rand1000 | cut -d' ' -f1)" "$BIN" gm sm3 --in rand1000
expect_out "sm3 of 1000 random bytes through a pipe on standard input" \
    "$(openssl dgst -sm3 -r rand1000 | cut -d' ' -f1)" bash -c "cat rand1000 | '$BIN' gm sm3"
expect_out "sm3 of empty standard input equals openssl" \
    "$(openssl dgst -sm3 -r </dev/null | cut -d' ' -f1)" "$BIN" gm sm3
expect_out "hmac-sm3 GM/T 0042 D.3 vector 1" ca05e144ed05d1857840d1f318a4a8669e559fc8391f414485bfdf7bb408963a \
    "$BIN" gm sm3 --hmac-key-hex 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20 \
    --msg-hex "$(str2hex abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopqabcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq)"
expect_out "hmac-sm3 GM/T 0042 D.3 vector 4 (key 'Jefe Jeferson Jr')" \
    ce791a34c59adef472997a249600f3f244d59e875be04055ba2ae12fc845e78c \
    "$BIN" gm sm3 --hmac-key-hex "$(str2hex 'Jefe Jeferson Jr')" --msg-hex "$(str2hex 'what do ya want for nothing?')"
LONGKEY=$(bin2hex rand100) # longer than a block: hashed first
expect_out "hmac-sm3 with a 100-byte key over --in equals openssl mac" \
    "$(lower "$(openssl mac -digest SM3 -macopt hexkey:"$LONGKEY" -in rand1000 HMAC)")" \
    "$BIN" gm sm3 --hmac-key-hex "$LONGKEY" --in rand1000

# ---- SM4 known answers and GCM --------------------------------------------------------------

printf '%s' $K >k.hex
expect_out "sm4 ecb --no-pad one block (GB/T 32907 A.1)" 681edf34d206965e86b3e94f536e4246 \
    "$BIN" gm sm4 --encrypt --mode ecb --key-hex $K --no-pad --hex --in k.hex
printf '%s\n' 681edf34d206965e86b3e94f536e4246 >blk.hex
expect_out "sm4 ecb --no-pad decrypt, hex text with newline on stdin" $K \
    "$BIN" gm sm4 --decrypt --mode ecb --key-hex $K --no-pad --hex <blk.hex
printf '%s' "$GCM_PT" >gcm_pt.hex
expect_out "sm4 gcm encrypt RFC 8998 A.1 -> ciphertext||tag" "$GCM_CT$GCM_TAG" \
    "$BIN" gm sm4 --encrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_pt.hex
printf '%s' "$GCM_CT$GCM_TAG" >gcm_ct.hex
expect_out "sm4 gcm decrypt RFC 8998 A.1" "$GCM_PT" \
    "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_ct.hex
printf '%s' "$GCM_CT$(flip_last $GCM_TAG)" >gcm_badtag.hex
expect_rc "sm4 gcm tampered tag -> 1, no plaintext" 1 \
    "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_badtag.hex
printf '%s' "$(flip_at "$GCM_CT" 5)$GCM_TAG" >gcm_badct.hex
expect_rc "sm4 gcm tampered ciphertext -> 1" 1 \
    "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_badct.hex
printf 'previous contents\n' >kept.out
run "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_badtag.hex --out kept.out
check "sm4 gcm tag mismatch with --out FILE: exit 1, the file left as it was" \
    eval '[[ $RC -eq 1 && $(<kept.out) == "previous contents" ]]'
expect_rc "sm4 gcm wrong AAD -> 1" 1 \
    "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex "$(flip_last $GCM_AAD)" --hex --in gcm_ct.hex
"$BIN" gm sm4 --encrypt --mode gcm --key-hex "$RK" --iv-hex "${RIV:0:24}" --in rand1000 --out gcm.bin 2>/dev/null
run "$BIN" gm sm4 --decrypt --mode gcm --key-hex "$RK" --iv-hex "${RIV:0:24}" --in gcm.bin --out gcm.dec
check "sm4 gcm binary round trip through --in/--out files (1000 bytes + 16-byte tag)" \
    eval '[[ $RC -eq 0 && $(stat -c %s gcm.bin) -eq 1016 ]] && cmp -s gcm.dec rand1000'

# ---- SM4 against openssl enc ----------------------------------------------------------------

openssl enc -sm4-cbc -K "$RK" -iv "$RIV" -in rand1000 -out cbc.ossl
run "$BIN" gm sm4 --encrypt --mode cbc --key-hex "$RK" --iv-hex "$RIV" --in rand1000 --out cbc.db
check "sm4 cbc (PKCS#7) encrypt --in/--out equals openssl enc -sm4-cbc" eval '[[ $RC -eq 0 ]] && cmp -s cbc.db cbc.ossl'
run "$BIN" gm sm4 --decrypt --mode cbc --key-hex "$RK" --iv-hex "$RIV" --out cbc.dec <cbc.ossl
check "sm4 cbc decrypts openssl's ciphertext from standard input" eval '[[ $RC -eq 0 ]] && cmp -s cbc.dec rand1000'
openssl enc -sm4-ecb -K "$RK" -in rand50 -out ecb.ossl
bin2hex rand50 >rand50.hex
expect_out "sm4 ecb (PKCS#7) encrypt --hex equals openssl enc -sm4-ecb" "$(bin2hex ecb.ossl)" \
    "$BIN" gm sm4 --encrypt --mode ecb --key-hex "$RK" --hex --in rand50.hex
run "$BIN" gm sm4 --decrypt --mode ecb --key-hex "$RK" <ecb.ossl
check "sm4 ecb decrypts openssl's ciphertext (binary stdout)" eval '[[ $RC -eq 0 ]] && cmp -s "$T/out" rand50'
head -c 96 rand1000 >rand96
bin2hex rand96 >rand96.hex
openssl enc -sm4-cbc -nopad -K "$RK" -iv "$RIV" -in rand96 -out cbcnp.ossl
expect_out "sm4 cbc --no-pad (96 bytes) equals openssl enc -nopad" "$(bin2hex cbcnp.ossl)" \
    "$BIN" gm sm4 --encrypt --mode cbc --no-pad --key-hex "$RK" --iv-hex "$RIV" --hex --in rand96.hex
openssl enc -sm4-ctr -K "$RK" -iv "$RIV" -in rand1000 -out ctr.ossl
run "$BIN" gm sm4 --encrypt --mode ctr --key-hex "$RK" --iv-hex "$RIV" --in rand1000 --out ctr.db
check "sm4 ctr (1000 bytes, not a multiple of 16) equals openssl enc -sm4-ctr" eval '[[ $RC -eq 0 ]] && cmp -s ctr.db ctr.ossl'
head -c 1000000 /dev/urandom >rand1m
openssl enc -sm4-ctr -K "$RK" -iv "$RIV" -in rand1m -out ctr1m.ossl
run bash -c "cat rand1m | '$BIN' gm sm4 --encrypt --mode ctr --key-hex $RK --iv-hex $RIV >ctr1m.db"
check "sm4 ctr of 1 MB piped through stdin/stdout equals openssl" eval '[[ $RC -eq 0 ]] && cmp -s ctr1m.db ctr1m.ossl'
CARRY_IV=0123456789abcdefffffffffffffffff # the low 64 bits wrap during the message
openssl enc -sm4-ctr -K "$RK" -iv $CARRY_IV -in rand100 -out ctr2.ossl
bin2hex ctr2.ossl >ctr2.hex
expect_out "sm4 ctr decrypt across a 64-bit counter carry equals openssl" "$(bin2hex rand100)" \
    "$BIN" gm sm4 --decrypt --mode ctr --key-hex "$RK" --iv-hex $CARRY_IV --hex --in ctr2.hex
head -c 32 /dev/zero >zero32
openssl enc -sm4-ecb -nopad -K "$RK" -in zero32 -out badpad.bin # decrypts to a last byte 00
openssl enc -sm4-cbc -nopad -K "$RK" -iv "$RIV" -in zero32 -out badpad_cbc.bin
expect_rc "sm4 ecb decrypt with a wrong PKCS#7 padding -> 1" 1 \
    "$BIN" gm sm4 --decrypt --mode ecb --key-hex "$RK" --in badpad.bin
expect_rc "sm4 cbc decrypt with a wrong PKCS#7 padding -> 1" 1 \
    "$BIN" gm sm4 --decrypt --mode cbc --key-hex "$RK" --iv-hex "$RIV" --in badpad_cbc.bin

# ---- SM4 usage errors -----------------------------------------------------------------------

expect_rc "sm4 key of 15 bytes -> 2" 2 "$BIN" gm sm4 --encrypt --mode ecb --key-hex "${K:0:30}" --hex --in abc
expect_rc "sm4 key with a bad hex digit -> 2" 2 "$BIN" gm sm4 --encrypt --mode ecb --key-hex "${K:0:31}g" --hex --in k.hex
expect_rc "sm4 cbc IV of 15 bytes -> 2" 2 "$BIN" gm sm4 --encrypt --mode cbc --key-hex $K --iv-hex "${IV:0:30}" --in abc
expect_rc "sm4 cbc IV of an odd number of hex digits -> 2" 2 "$BIN" gm sm4 --encrypt --mode cbc --key-hex $K --iv-hex "${IV:0:31}" --in abc
expect_rc "sm4 cbc without --iv-hex -> 2" 2 "$BIN" gm sm4 --encrypt --mode cbc --key-hex $K --in abc
expect_rc "sm4 without --mode -> 2" 2 "$BIN" gm sm4 --encrypt --key-hex $K --in abc
expect_rc "sm4 without --key-hex -> 2" 2 "$BIN" gm sm4 --encrypt --mode ecb --in abc
expect_rc "sm4 without --encrypt or --decrypt -> 2" 2 "$BIN" gm sm4 --mode ecb --key-hex $K --in abc
expect_rc "sm4 unknown mode 'xts' -> 2" 2 "$BIN" gm sm4 --encrypt --mode xts --key-hex $K --iv-hex $IV --in abc
expect_rc "sm4 ecb --no-pad on 3 bytes -> 2" 2 "$BIN" gm sm4 --encrypt --mode ecb --no-pad --key-hex $K --in abc
head -c 17 rand100 >rand17
expect_rc "sm4 cbc decrypt of 17 bytes -> 2" 2 "$BIN" gm sm4 --decrypt --mode cbc --key-hex $K --iv-hex $IV --in rand17
printf '%s' "${GCM_TAG:0:30}" >short.hex
expect_rc "sm4 gcm decrypt shorter than the tag -> 2" 2 \
    "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --hex --in short.hex
expect_rc "sm4 --hex with non-hex input -> 2" 2 "$BIN" gm sm4 --encrypt --mode ecb --key-hex $K --hex --in fox

# ---- SM2 known answers (GM/T 0003.5 Annex A) ------------------------------------------------

expect_out "sm2 pub --key-hex --hex (Annex A key)" $KAT_P "$BIN" gm pub --key-hex $KAT_D --hex
expect_out "sm2 verify Annex A signature (raw r||s) over 'message digest'" ok \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex $KAT_SIG --msg-hex "$KAT_MSG"
expect_out "sm2 verify Annex A signature (DER) with --digest-hex e" ok \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$(sig_raw2der $KAT_SIG)" --digest-hex $KAT_E
run "$BIN" gm sign --key-hex $KAT_D --raw --digest-hex $KAT_E
expect_out "sm2 sign --digest-hex --raw, verified over the message" ok \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$OUT" --msg-hex "$KAT_MSG"
expect_rc "sm2 Annex A signature over another message -> 1" 1 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex $KAT_SIG --msg-hex "$(flip_last "$KAT_MSG")"
expect_rc "sm2 Annex A signature with another ID -> 1" 1 \
    "$BIN" gm verify --pub-hex $KAT_P --id 1234567812345679 --sig-hex $KAT_SIG --msg-hex "$KAT_MSG"
expect_rc "sm2 signature with s changed -> 1" 1 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$(flip_last $KAT_SIG)" --msg-hex "$KAT_MSG"
expect_rc "sm2 raw signature with r = 0 -> 1" 1 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$(pad64 0)${KAT_SIG:64}" --msg-hex "$KAT_MSG"
SM2_N=fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123
expect_rc "sm2 raw signature with s = n -> 1" 1 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "${KAT_SIG:0:64}$SM2_N" --msg-hex "$KAT_MSG"
expect_rc "sm2 raw signature with r = 1, s = n - 1 (t = 0) -> 1" 1 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$(pad64 1)fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54122" --msg-hex "$KAT_MSG"

expect_out "sm2 decrypt of an openssl DER ciphertext whose x1 is 31 bytes" $SHORT_MSG \
    "$BIN" gm decrypt --key-hex $KAT_D --ct-hex $SHORT_X1_CT
expect_out "the same as raw c1c3c2 (x1 left-padded with 00)" $SHORT_MSG \
    "$BIN" gm decrypt --key-hex $KAT_D --format c1c3c2 --ct-hex "$(ct_der2raw $SHORT_X1_CT c1c3c2)"
expect_out "sm2 verify of an openssl DER signature whose r is 31 bytes" ok \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex $SHORT_R_SIG --msg-hex $SHORT_MSG
expect_out "the same signature as raw r||s (r left-padded with 00)" ok \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$(sig_der2raw $SHORT_R_SIG)" --msg-hex $SHORT_MSG

# ---- SM2 keys both ways -----------------------------------------------------------------------

run bash -c "umask 000; exec '$BIN' gm keygen --out db_key.pem --pub-out db_pub.pem"
check "sm2 keygen --out --pub-out (exit 0, both files)" eval '[[ $RC -eq 0 && -s db_key.pem && -s db_pub.pem ]]'
check "sm2 keygen key file has mode 0600 even under umask 000" test "$(stat -c %a db_key.pem 2>/dev/null)" == 600
DB_D=$(pad64 "$(ossl_key_hex priv -in db_key.pem)")
DB_P=$(ossl_key_hex pub -pubin -in db_pub.pem)
check "openssl reads dengbao's key pair and both halves match" \
    eval '[[ ${#DB_D} -eq 64 && ${#DB_P} -eq 130 && $(ossl_key_hex pub -in db_key.pem) == "$DB_P" ]]'
expect_out "dengbao pub --key --hex of its own key equals openssl's view" "$DB_P" "$BIN" gm pub --key db_key.pem --hex

openssl genpkey -algorithm SM2 -out os_key.pem 2>/dev/null
openssl pkey -in os_key.pem -pubout -out os_pub.pem
OS_D=$(pad64 "$(ossl_key_hex priv -in os_key.pem)")
OS_P=$(ossl_key_hex pub -pubin -in os_pub.pem)
run "$BIN" gm pub --key os_key.pem
check "dengbao pub of an openssl genpkey SM2 key gives openssl's public PEM" \
    eval '[[ $RC -eq 0 ]] && diff -q <(openssl pkey -pubin -outform DER <<<"$OUT" 2>/dev/null | od -An -v -tx1) <(openssl pkey -pubin -in os_pub.pem -outform DER | od -An -v -tx1) >/dev/null'
expect_out "dengbao pub --key-hex (openssl key's scalar) --hex" "$OS_P" "$BIN" gm pub --key-hex "$OS_D" --hex
openssl ec -in os_key.pem -out os_sec1.pem 2>/dev/null # OpenSSL 3.0 labels it "SM2 PRIVATE KEY"
expect_out "dengbao reads openssl ec's traditional SEC1 key ($(head -1 os_sec1.pem | tr -d -))" "$OS_P" \
    "$BIN" gm pub --key os_sec1.pem --hex
sed 's/BEGIN .*PRIVATE KEY/BEGIN EC PRIVATE KEY/; s/END .*PRIVATE KEY/END EC PRIVATE KEY/' os_sec1.pem >os_ec.pem
expect_out "dengbao reads the same key as SEC1 'EC PRIVATE KEY'" "$OS_P" "$BIN" gm pub --key os_ec.pem --hex

# ---- SM2 signatures: openssl -> dengbao ---------------------------------------------------------

openssl pkeyutl -sign -rawin -digest sm3 -inkey os_key.pem -in fox -pkeyopt distid:$DEF_ID -out s1.der
S1=$(bin2hex s1.der)
expect_out "openssl pkeyutl -sign (distid 1234567812345678) verifies with dengbao (DER, --in)" ok \
    "$BIN" gm verify --pub os_pub.pem --sig-hex "$S1" --in fox
expect_out "the same signature as raw r||s, --pub-hex, --msg-hex" ok \
    "$BIN" gm verify --pub-hex "$OS_P" --sig-hex "$(sig_der2raw "$S1")" --msg-hex "$FOX"
CUSTOM_ID=alice@example.com
openssl dgst -sm3 -sign os_key.pem -sigopt distid:$CUSTOM_ID -out s2.der fox
expect_out "openssl dgst -sm3 -sign with custom ID verifies with dengbao --id" ok \
    "$BIN" gm verify --pub os_pub.pem --id $CUSTOM_ID --sig-hex "$(bin2hex s2.der)" --in fox
expect_rc "the custom-ID signature with the default ID -> 1" 1 \
    "$BIN" gm verify --pub os_pub.pem --sig-hex "$(bin2hex s2.der)" --in fox
openssl pkeyutl -sign -rawin -digest sm3 -inkey os_key.pem -in fox -out s3.der
expect_rc "openssl's empty-ID signature (no distid) fails dengbao's default ID -> 1" 1 \
    "$BIN" gm verify --pub os_pub.pem --sig-hex "$(bin2hex s3.der)" --in fox
expect_rc "openssl signature verified with dengbao's (wrong) key -> 1" 1 \
    "$BIN" gm verify --pub db_pub.pem --sig-hex "$S1" --in fox

# ---- SM2 signatures: dengbao -> openssl ---------------------------------------------------------

ossl_verify_pkeyutl() { # PUBPEM SIGFILE MSGFILE ID
    openssl pkeyutl -verify -rawin -digest sm3 -pubin -inkey "$1" -sigfile "$2" -in "$3" -pkeyopt "distid:$4" >/dev/null 2>&1
}
ossl_verify_dgst() { # PUBPEM SIGFILE MSGFILE ID
    openssl dgst -sm3 -verify "$1" -sigopt "distid:$4" -signature "$2" "$3" >/dev/null 2>&1
}
run "$BIN" gm sign --key os_key.pem --in fox
D1=$OUT
hex2bin "$D1" >d1.der
check "dengbao sign (openssl key, default ID) is lowercase DER hex and verifies with openssl pkeyutl" \
    eval '[[ $RC -eq 0 && $D1 =~ ^30[0-9a-f]{10,142}$ ]] && ossl_verify_pkeyutl os_pub.pem d1.der fox $DEF_ID' 
run "$BIN" gm sign --key db_key.pem --id $CUSTOM_ID --msg-hex "$FOX"
hex2bin "$OUT" >d2.der
check "dengbao sign (own key, custom ID) verifies with openssl dgst -sigopt distid" ossl_verify_dgst db_pub.pem d2.der fox $CUSTOM_ID
check "...and not with openssl's empty ID" eval '! openssl dgst -sm3 -verify db_pub.pem -signature d2.der fox >/dev/null 2>&1'
UTF8_ID='张三@例子.中国'
run "$BIN" gm sign --key-hex "$OS_D" --raw --id "$UTF8_ID" --in fox
RAW=$OUT
hex2bin "$(sig_raw2der "$RAW")" >d3.der
check "dengbao sign --raw (UTF-8 ID) is 128 hex digits and verifies with openssl" \
    eval '[[ $RC -eq 0 && $RAW =~ ^[0-9a-f]{128}$ ]] && ossl_verify_pkeyutl os_pub.pem d3.der fox "$UTF8_ID"'
head -c 0 /dev/null >empty
run "$BIN" gm sign --key os_key.pem --id "" --in fox
hex2bin "$OUT" >d5.der
check "dengbao sign --id '' (empty ID) is what openssl verifies without distid" \
    eval '[[ $RC -eq 0 ]] && openssl pkeyutl -verify -rawin -digest sm3 -pubin -inkey os_pub.pem -in fox -sigfile d5.der >/dev/null 2>&1'
expect_out "openssl's default (empty-ID) signature verifies with dengbao --id ''" ok \
    "$BIN" gm verify --pub os_pub.pem --id "" --sig-hex "$(bin2hex s3.der)" --in fox
run "$BIN" gm sign --key db_key.pem --in empty
hex2bin "$OUT" >d4.der
check "dengbao sign of an empty message verifies with openssl" ossl_verify_dgst db_pub.pem d4.der empty $DEF_ID

# ---- SM2 encryption both ways ---------------------------------------------------------------------

openssl pkeyutl -encrypt -pubin -inkey db_pub.pem -in fox -out e1.der
E1=$(bin2hex e1.der)
expect_out "openssl pkeyutl -encrypt (GM/T 0009 DER) decrypts with dengbao" "$FOX" \
    "$BIN" gm decrypt --key db_key.pem --ct-hex "$E1"
expect_out "the same ciphertext converted to raw c1c3c2 decrypts with --format c1c3c2" "$FOX" \
    "$BIN" gm decrypt --key-hex "$DB_D" --format c1c3c2 --ct-hex "$(ct_der2raw "$E1" c1c3c2)"
expect_out "the same ciphertext converted to raw c1c2c3 decrypts with --format c1c2c3" "$FOX" \
    "$BIN" gm decrypt --key db_key.pem --format c1c2c3 --ct-hex "$(ct_der2raw "$E1" c1c2c3)"
run "$BIN" gm encrypt --pub os_pub.pem --in rand1000
hex2bin "$OUT" >e2.der
check "dengbao encrypt (DER, 1000 bytes) is lowercase hex and decrypts with openssl pkeyutl -decrypt" \
    eval '[[ $RC -eq 0 && $OUT =~ ^30[0-9a-f]+$ ]] && openssl pkeyutl -decrypt -inkey os_key.pem -in e2.der 2>/dev/null | cmp -s - rand1000'
run "$BIN" gm encrypt --pub-hex "$OS_P" --format c1c3c2 --msg-hex "$FOX"
E3=$OUT
hex2bin "$(ct_c1c3c2_to_der "$E3")" >e3.der
check "dengbao encrypt --format c1c3c2 is 04||x||y||C3||C2 (openssl decrypts it re-encoded)" \
    eval '[[ $RC -eq 0 && ${E3:0:2} == 04 && ${#E3} -eq $((2 * (97 + ${#FOX} / 2))) ]] && [[ $(openssl pkeyutl -decrypt -inkey os_key.pem -in e3.der 2>/dev/null | od -An -v -tx1 | tr -d " \n") == "$FOX" ]]'
run "$BIN" gm encrypt --pub os_pub.pem --format c1c2c3 --msg-hex "$FOX"
E4=$OUT
E4_AS_C1C3C2=${E4:0:130}${E4: -64}${E4:130:${#E4}-130-64}
hex2bin "$(ct_c1c3c2_to_der "$E4_AS_C1C3C2")" >e4.der
check "dengbao encrypt --format c1c2c3 is 04||x||y||C2||C3 (openssl decrypts it re-encoded)" \
    eval '[[ $RC -eq 0 ]] && [[ $(openssl pkeyutl -decrypt -inkey os_key.pem -in e4.der 2>/dev/null | od -An -v -tx1 | tr -d " \n") == "$FOX" ]]'
expect_rc "sm2 decrypt with the wrong key -> 1" 1 "$BIN" gm decrypt --key os_key.pem --ct-hex "$E1"
expect_rc "sm2 decrypt with C3 changed -> 1" 1 \
    "$BIN" gm decrypt --key-hex "$DB_D" --format c1c3c2 --ct-hex "$(flip_at "$(ct_der2raw "$E1" c1c3c2)" 70)"
expect_rc "sm2 decrypt of a truncated DER ciphertext -> 2" 2 "$BIN" gm decrypt --key db_key.pem --ct-hex "${E1:0:60}"
expect_rc "sm2 decrypt with C1 not on the curve -> 2" 2 \
    "$BIN" gm decrypt --key db_key.pem --format c1c3c2 --ct-hex "$(flip_at "$(ct_der2raw "$E1" c1c3c2)" 64)"
expect_rc "sm2 decrypt --format bogus -> 2" 2 "$BIN" gm decrypt --key db_key.pem --format bogus --ct-hex "$E1"

# ---- SM2 usage errors -----------------------------------------------------------------------------

expect_rc "sign --key-hex of 31 bytes -> 2" 2 "$BIN" gm sign --key-hex "${KAT_D:0:62}" --msg-hex 00
expect_rc "sign --key-hex zero (not a valid scalar) -> 2" 2 "$BIN" gm sign --key-hex "$(pad64 0)" --msg-hex 00
expect_rc "verify --pub-hex not on the curve -> 2" 2 \
    "$BIN" gm verify --pub-hex "$(flip_last $KAT_P)" --sig-hex $KAT_SIG --msg-hex "$KAT_MSG"
expect_rc "verify without --sig-hex -> 2" 2 "$BIN" gm verify --pub-hex $KAT_P --msg-hex "$KAT_MSG"
expect_rc "verify with a 10-byte signature (neither DER nor r||s) -> 2" 2 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex 00112233445566778899 --msg-hex "$KAT_MSG"
expect_rc "sign --digest-hex of 31 bytes -> 2" 2 "$BIN" gm sign --key-hex $KAT_D --digest-hex "${KAT_E:0:62}"
check "...and stderr says so once, not garbled" eval '[[ $(grep -o -- "--digest-hex" <<<"$ERR" | wc -l) -eq 1 && $ERR != *": " ]]'
expect_rc "verify with both --msg-hex and --digest-hex -> 2" 2 \
    "$BIN" gm verify --pub-hex $KAT_P --sig-hex $KAT_SIG --msg-hex "$KAT_MSG" --digest-hex $KAT_E
expect_rc "sign --id longer than 8191 bytes -> 2" 2 "$BIN" gm sign --key-hex $KAT_D --id "$(printf 'a%.0s' $(seq 8192))" --msg-hex 00
expect_rc "sign without a key -> 2" 2 "$BIN" gm sign --msg-hex 00
expect_rc "keygen without --out -> 2" 2 "$BIN" gm keygen
printf -- '-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n' >garbage.pem
expect_rc "sign with an unreadable PEM -> 2" 2 "$BIN" gm sign --key garbage.pem --msg-hex 00
expect_rc "sign with a missing key file -> 2" 2 "$BIN" gm sign --key does-not-exist.pem --msg-hex 00
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out p256.pem 2>/dev/null
expect_rc "sign with a P-256 key -> 2" 2 "$BIN" gm sign --key p256.pem --msg-hex 00
openssl pkey -in os_key.pem -aes256 -passout pass:secret -out os_enc.pem 2>/dev/null
expect_rc "sign with a password-protected PKCS#8 key -> 2" 2 "$BIN" gm sign --key os_enc.pem --msg-hex 00
expect_rc "sign with a public key PEM as --key -> 2" 2 "$BIN" gm sign --key os_pub.pem --msg-hex 00
expect_rc "encrypt with a bad hex message -> 2" 2 "$BIN" gm encrypt --pub-hex $KAT_P --msg-hex 0x41

# ---- fresh randomness -------------------------------------------------------------------------------

run "$BIN" gm sign --key-hex $KAT_D --raw --msg-hex "$KAT_MSG"
SA=$OUT
run "$BIN" gm sign --key-hex $KAT_D --raw --msg-hex "$KAT_MSG"
check "two signatures of the same message use different nonces (r differs)" eval '[[ ${#SA} -eq 128 && ${SA:0:64} != "${OUT:0:64}" ]]'
run "$BIN" gm encrypt --pub-hex $KAT_P --format c1c3c2 --msg-hex "$KAT_MSG"
CA=$OUT
run "$BIN" gm encrypt --pub-hex $KAT_P --format c1c3c2 --msg-hex "$KAT_MSG"
check "two encryptions of the same message differ (fresh C1)" eval '[[ ${#CA} -gt 130 && ${CA:0:130} != "${OUT:0:130}" ]]'
run bash -c "'$BIN' gm keygen --out k2.pem && '$BIN' gm pub --key k2.pem --hex"
check "two keygens give different keys" eval '[[ $RC -eq 0 && ${#OUT} -eq 130 && $OUT != "$DB_P" ]]'

# ---- every implementation path (DENGBAO_GM_IMPL) ---------------------------------------------------
# The default paths ran above; the same answers are required with everything on portable C and
# with SM2 on OpenSSL.

for impl in portable sm2=openssl; do
    export DENGBAO_GM_IMPL=$impl
    expect_out "[$impl] sm3 of 1000 bytes equals openssl" "$(openssl dgst -sm3 -r rand1000 | cut -d' ' -f1)" \
        "$BIN" gm sm3 --in rand1000
    expect_out "[$impl] hmac-sm3 GM/T 0042 vector 1" ca05e144ed05d1857840d1f318a4a8669e559fc8391f414485bfdf7bb408963a \
        "$BIN" gm sm3 --hmac-key-hex 0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20 \
        --msg-hex "$(str2hex abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopqabcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq)"
    run "$BIN" gm sm4 --encrypt --mode ctr --key-hex "$RK" --iv-hex "$RIV" --in rand1000
    check "[$impl] sm4 ctr of 1000 bytes equals openssl" eval '[[ $RC -eq 0 ]] && cmp -s "$T/out" ctr.ossl'
    run "$BIN" gm sm4 --decrypt --mode cbc --key-hex "$RK" --iv-hex "$RIV" --in cbc.ossl
    check "[$impl] sm4 cbc decrypt of openssl's 1000 bytes" eval '[[ $RC -eq 0 ]] && cmp -s "$T/out" rand1000'
    expect_out "[$impl] sm4 gcm RFC 8998 A.1" "$GCM_CT$GCM_TAG" \
        "$BIN" gm sm4 --encrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_pt.hex
    expect_rc "[$impl] sm4 gcm tampered tag -> 1" 1 \
        "$BIN" gm sm4 --decrypt --mode gcm --key-hex $K --iv-hex $GCM_IV --aad-hex $GCM_AAD --hex --in gcm_badtag.hex
    expect_out "[$impl] sm2 pub of the Annex A key" $KAT_P "$BIN" gm pub --key-hex $KAT_D --hex
    expect_out "[$impl] sm2 verify of the Annex A signature" ok \
        "$BIN" gm verify --pub-hex $KAT_P --sig-hex $KAT_SIG --msg-hex "$KAT_MSG"
    expect_rc "[$impl] sm2 verify of a changed signature -> 1" 1 \
        "$BIN" gm verify --pub-hex $KAT_P --sig-hex "$(flip_last $KAT_SIG)" --msg-hex "$KAT_MSG"
    expect_out "[$impl] openssl signature (custom ID) verifies" ok \
        "$BIN" gm verify --pub os_pub.pem --id $CUSTOM_ID --sig-hex "$(bin2hex s2.der)" --in fox
    run "$BIN" gm sign --key os_key.pem --id $CUSTOM_ID --in fox
    hex2bin "$OUT" >m1.der
    check "[$impl] dengbao signature verifies with openssl" ossl_verify_dgst os_pub.pem m1.der fox $CUSTOM_ID
    expect_out "[$impl] openssl ciphertext decrypts" "$FOX" "$BIN" gm decrypt --key db_key.pem --ct-hex "$E1"
    run "$BIN" gm encrypt --pub os_pub.pem --msg-hex "$FOX"
    hex2bin "$OUT" >m2.der
    check "[$impl] dengbao ciphertext decrypts with openssl" \
        eval '[[ $(openssl pkeyutl -decrypt -inkey os_key.pem -in m2.der 2>/dev/null | od -An -v -tx1 | tr -d " \n") == "$FOX" ]]'
    unset DENGBAO_GM_IMPL
done

# ---- generic usage ---------------------------------------------------------------------------------

expect_rc "sm3 --msg-hex with a bad digit -> 2" 2 "$BIN" gm sm3 --msg-hex 6z
expect_rc "sm3 --msg-hex of odd length -> 2" 2 "$BIN" gm sm3 --msg-hex abc
expect_rc "sm3 --hmac-key-hex bad -> 2" 2 "$BIN" gm sm3 --hmac-key-hex zz --msg-hex 00
expect_rc "unknown option -> 2" 2 "$BIN" gm sm3 --frobnicate
check "...and stderr carries a usage line" eval '[[ $ERR == *usage* ]]'
expect_rc "option without its value -> 2" 2 "$BIN" gm sm4 --encrypt --mode ecb --key-hex
expect_rc "unknown gm command -> 2" 2 "$BIN" gm frob
expect_rc "unknown top-level command -> 2" 2 "$BIN" frob
run "$BIN"
check "no command at all -> 2, usage on stderr, nothing on stdout" eval '[[ $RC -eq 2 && $ERR == *usage* && ! -s $T/out ]]'
helps_ok=1
for args in "--help" "gm --help" "gm sm3 --help" "gm sm4 --help" "gm keygen --help" "gm pub --help" \
    "gm sign --help" "gm verify --help" "gm encrypt --help" "gm decrypt --help"; do
    # shellcheck disable=SC2086
    run "$BIN" $args
    if [[ $RC -ne 0 || $OUT != *usage* ]]; then
        helps_ok=0
        echo "  'dengbao $args': $(why)"
    fi
done
check "--help at every level prints usage on stdout and exits 0" test $helps_ok -eq 1

echo "gm_cli: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
