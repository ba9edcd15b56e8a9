#!/usr/bin/env bash
# mask_cli.sh: the `dengbao mask` command-line contract (detect, apply, decrypt).
#
#   bash tests/integration/mask_cli.sh build/dengbao
#
# Checks, one line each:
#   - detect: one JSON line per input line with byte offsets (Chinese text, \r\n, a last line
#     without \n, empty lines), --types, --in FILE and stdin, an unknown type -> 2;
#   - apply: text lines and --json lines masked by a policy, role overrides (--role), keys
#     relative to the policy's folder, pseudonyms stable, a policy error -> 2 with file:line,
#     a 0644 key file refused (2), JSON that is not JSON -> 2 naming the line only;
#   - decrypt: encrypt(KEYID) output back to the clear value; a tampered value -> 1; an unknown
#     key id -> 2; no clear value ever on stderr;
#   - a 50 MB input streams through apply: same line count, no clear value left, and the peak
#     memory (VmHWM) stays far below the input size.
# Needs bash, coreutils. Takes a few seconds.
# Ends with "mask_cli: N passed, M failed"; exits 1 if any check failed, 2 if it cannot run.
# shellcheck disable=SC2016,SC2034 # `check NAME eval '...'` expands (and uses variables) when the check runs, on purpose
set -u

BIN=${1:-}
if [[ -z $BIN || ! -x $BIN ]]; then
    echo "usage: $0 path/to/dengbao (got '${BIN}', not an executable)" >&2
    exit 2
fi
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
T=$(mktemp -d "${TMPDIR:-/tmp}/mask_cli.XXXXXX") || exit 2
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

# run CMD...: runs with a time limit; sets RC, OUT (stdout) and ERR (stderr).
run() {
    timeout 60 "$@" >"$T/out" 2>"$T/err"
    RC=$?
    OUT=$(<"$T/out")
    ERR=$(<"$T/err")
}
# run_in FILE CMD...: run with stdin from FILE.
run_in() {
    local f=$1
    shift
    timeout 60 "$@" <"$f" >"$T/out" 2>"$T/err"
    RC=$?
    OUT=$(<"$T/out")
    ERR=$(<"$T/err")
}

why() { echo "exit $RC, stdout '${OUT:0:300}', stderr '${ERR:0:200}'"; }

check() {
    local name=$1
    shift
    if "$@"; then pass "$name"; else fail "$name" "condition failed: $*; last dengbao run: $(why)"; fi
}

# one_err: exactly one line on stderr
one_err() { [[ -n $ERR && $(wc -l <"$T/err") -eq 1 ]]; }

RID=11010519491231002X
TEL=13800138000

# ---- detect -------------------------------------------------------------------------------

printf '身份证%s，电话%s\r\n\nno data here\nlast %s' "$RID" "$TEL" "$TEL" >in.txt
run "$BIN" mask detect --in in.txt
want='{"line":1,"findings":[{"type":"CN_RID18","start":9,"end":27},{"type":"CN_MOBILE","start":36,"end":47}]}
{"line":2,"findings":[]}
{"line":3,"findings":[]}
{"line":4,"findings":[{"type":"CN_MOBILE","start":5,"end":16}]}'
check "detect: JSON lines with byte offsets, CRLF, empty and unterminated lines" eval '[[ $RC -eq 0 && $OUT == "$want" ]]'
run_in in.txt "$BIN" mask detect --types CN_MOBILE
check "detect --types CN_MOBILE from stdin" eval '[[ $RC -eq 0 && $OUT != *CN_RID18* && $(grep -c CN_MOBILE <<<"$OUT") -eq 2 ]]'
run "$BIN" mask detect --types CN_RID18,PHONE --in in.txt
check "detect: unknown type -> 2, one line on stderr, nothing on stdout" eval '[[ $RC -eq 2 && ! -s $T/out ]] && one_err'
run "$BIN" mask detect --in nonexistent.txt
check "detect: missing input file -> 2" eval '[[ $RC -eq 2 ]] && one_err'
: >empty.txt
run "$BIN" mask detect --in empty.txt
check "detect: empty input -> no output" eval '[[ $RC -eq 0 && -z $OUT ]]'

# ---- policy and keys ----------------------------------------------------------------------

mkdir -p pol/keys
printf '000102030405060708090a0b0c0d0e0f\n' >pol/keys/k1.key
printf '101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2f\n' >pol/keys/h1.key
chmod 600 pol/keys/k1.key pol/keys/h1.key
cat >pol/policy.yaml <<'EOF'
keys:
  k1: keys/k1.key
  h1: keys/h1.key
detect:
  types: [CN_RID18, CN_MOBILE]
types:
  CN_RID18: {roles: {doctor: clear, clerk: "encrypt(k1)"}}
  CN_MOBILE: {mask: "keep(3,4)", roles: {analyst: "pseudonym(h1)"}}
fields:
  patient.id_no: {type: CN_RID18}
  patient.name: {type: CN_NAME, roles: {doctor: clear}}
  salary: {mask: "round(1000)"}
EOF

printf 'id %s tel %s\n' "$RID" "$TEL" >text.txt
run "$BIN" mask apply --policy pol/policy.yaml --in text.txt
check "apply: text line masked by the type rules" eval '[[ $RC -eq 0 && $OUT == "id 110105********002X tel 138****8000" ]]'
run "$BIN" mask apply --policy pol/policy.yaml --role nurse --role doctor --in text.txt
check "apply --role doctor: the ID clear, the mobile masked" eval '[[ $RC -eq 0 && $OUT == "id $RID tel 138****8000" ]]'
run "$BIN" mask apply --policy pol/policy.yaml --role analyst --in text.txt
p1=$OUT
run "$BIN" mask apply --policy pol/policy.yaml --role analyst --in text.txt
check "apply --role analyst: pseudonym p_<32 hex>, stable across runs" eval '[[ $RC -eq 0 && $OUT == "$p1" && $OUT =~ tel\ p_[0-9a-f]{32}$ ]]'

printf '{"patient":{"name":"张三丰","id_no":"%s"},"salary":12345,"note":"call %s"}\n\n[1,2]\n' "$RID" "$TEL" >docs.jsonl
run "$BIN" mask apply --policy pol/policy.yaml --json --in docs.jsonl
want='{"patient":{"name":"张**","id_no":"110105********002X"},"salary":12000,"note":"call 138****8000"}

[1,2]'
check "apply --json: field rules, numbers, free-text detection, key order" eval '[[ $RC -eq 0 && $OUT == "$want" ]]'
printf '{"a":"%s"\n' "$TEL" >bad.jsonl
run "$BIN" mask apply --policy pol/policy.yaml --json --in bad.jsonl
check "apply --json: not JSON -> 2 naming the line, no value on stderr" eval '[[ $RC -eq 2 && $ERR == *"line 1"* && $ERR != *$TEL* ]] && one_err'

# ---- decrypt ------------------------------------------------------------------------------

run "$BIN" mask apply --policy pol/policy.yaml --role clerk --in text.txt
enc=$(sed -n 's/^id \(enc1:k1:[A-Za-z0-9_-]*\) tel.*/\1/p' <<<"$OUT")
check "apply --role clerk: enc1:k1:<base64url>" test -n "$enc"
printf '%s\n\n%s\n' "$enc" "$enc" >enc.txt
run "$BIN" mask decrypt --policy pol/policy.yaml --in enc.txt
check "decrypt: enc1 values back to clear" eval '[[ $RC -eq 0 && $OUT == "$RID"$'"'"'\n\n'"'"'"$RID" ]]'
tampered="${enc:0:20}$([[ ${enc:20:1} == A ]] && echo B || echo A)${enc:21}"
printf '%s\n' "$tampered" >tampered.txt
run "$BIN" mask decrypt --policy pol/policy.yaml --in tampered.txt
check "decrypt: tampered value -> 1, one line on stderr" eval '[[ $RC -eq 1 && -z $OUT ]] && one_err'
printf 'enc1:k9:%s\n' "${enc#enc1:k1:}" >unknown.txt
run "$BIN" mask decrypt --policy pol/policy.yaml --in unknown.txt
check "decrypt: unknown key id -> 2" eval '[[ $RC -eq 2 && -z $OUT ]] && one_err'
printf 'not-an-enc1-value %s\n' "$RID" >plain.txt
run "$BIN" mask decrypt --policy pol/policy.yaml --in plain.txt
check "decrypt: not an enc1 value -> 2, the value not echoed" eval '[[ $RC -eq 2 && $ERR != *$RID* ]] && one_err'

# ---- refusals -----------------------------------------------------------------------------

chmod 644 pol/keys/k1.key
run "$BIN" mask apply --policy pol/policy.yaml --in text.txt
check "a 0644 key file is refused (2, file:line and the mode on stderr)" eval '[[ $RC -eq 2 && $ERR == *policy.yaml:2:* && $ERR == *0644* && -z $OUT ]] && one_err'
chmod 600 pol/keys/k1.key
printf 'columns:\n  t.c: {mask: clear}\n' >pol/bad.yaml
run "$BIN" mask apply --policy pol/bad.yaml --in text.txt
check "a policy error -> 2 with file:line" eval '[[ $RC -eq 2 && $ERR == *bad.yaml:2:* ]] && one_err'
run "$BIN" mask apply --in text.txt
check "apply without --policy -> 2 (usage)" eval '[[ $RC -eq 2 && $ERR == *usage* ]] && one_err'
run "$BIN" mask frobnicate
check "unknown mask command -> 2" eval '[[ $RC -eq 2 ]] && one_err'
run "$BIN" mask apply --policy pol/policy.yaml --bogus
check "unknown option -> 2" eval '[[ $RC -eq 2 ]] && one_err'

# ---- no clear value on stderr in any of the runs above is checked per run; help ----------

helps_ok=1
for args in "mask --help" "mask detect --help" "mask apply --help" "mask decrypt --help"; do
    # shellcheck disable=SC2086
    run "$BIN" $args
    if [[ $RC -ne 0 || $OUT != *usage* ]]; then
        helps_ok=0
        echo "  'dengbao $args': $(why)"
    fi
done
check "--help at every level prints usage and exits 0" test $helps_ok -eq 1

# ---- streaming ----------------------------------------------------------------------------

line="patient $RID phone $TEL and some other text to make the line longer ............"
yes "$line" | head -n 580000 >big.txt
start=$(date +%s%N)
"$BIN" mask apply --policy pol/policy.yaml --in big.txt >big.out 2>"$T/err" &
pid=$!
hwm=0
while kill -0 "$pid" 2>/dev/null; do
    if (($(date +%s%N) - start > 60000000000)); then
        kill "$pid"
        break
    fi
    h=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$pid/status" 2>/dev/null)
    [[ -n $h && $h -gt $hwm ]] && hwm=$h
    sleep 0.05
done
wait "$pid"
RC=$?
ms=$((($(date +%s%N) - start) / 1000000))
echo "  apply on $(($(wc -c <big.txt) / 1000000)) MB of text: ${ms} ms, peak memory ${hwm} kB"
check "apply streams 50 MB: same line count, no clear value left" eval '[[ $RC -eq 0 && $(wc -l <big.out) -eq $(wc -l <big.txt) ]] && ! grep -q -e "$RID" -e "$TEL" big.out'
check "apply streams: peak memory below 40 MB (less than the input)" test "$hwm" -lt 40960

echo "mask_cli: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
