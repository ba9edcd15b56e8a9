#!/usr/bin/env bash
# audit_cli.sh: the `dengbao audit` command-line contract (issue 4), as scripts outside the
# project call it: init, append (indices only once durable; a bad batch appends nothing and
# exits 2 naming line and field), verify (0 intact, 1 tampered with the index named), checkpoint,
# get, prove, verify-proof offline (0 proven, 1 not), archive and prune refusals.
# Usage: audit_cli.sh path/to/dengbao
set -uo pipefail
B=${1:?usage: audit_cli.sh path/to/dengbao}
T=$(mktemp -d /tmp/dbao-audit-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
pass=0
check() { # check <name> <expected exit> <cmd...>
  local name=$1 want=$2
  shift 2
  "$@" >"$T/out" 2>"$T/err"
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: exit $got, want $want"
    sed 's/^/  | /' "$T/err" | head -5
    fails=$((fails + 1))
  else
    pass=$((pass + 1))
  fi
}
expect_in() { # expect_in <name> <file> <pattern>
  if grep -q -- "$3" "$2"; then pass=$((pass + 1)); else
    echo "FAIL $1: '$3' not found in $(basename "$2"):"
    head -3 "$2" | sed 's/^/  | /'
    fails=$((fails + 1))
  fi
}
rec() { # rec <subject> <n>
  printf '{"subject":{"id":"%s","role":"teller","ip":"10.0.0.%d"},"event_type":"data.read","action":"SELECT","object":"db/customers/%d","result":"success","source":"gateway","details":{"n":%d}}\n' "$1" $(($2 % 250)) "$2" "$2"
}

D=$T/log
check init 0 "$B" audit init --dir "$D" --origin bank.example/audit/1
expect_in init-key-mode <(stat -c %a "$D/signer.key") '^600$'
check init-again-refused 2 "$B" audit init --dir "$D" --origin bank.example/audit/1
check init-no-dir 2 "$B" audit init
check unknown-command 2 "$B" audit frobnicate --dir "$D"

# append: indices in order, one per record
for i in $(seq 0 99); do rec alice "$i"; done >"$T/a.ndjson"
check append 0 "$B" audit append --dir "$D" <"$T/a.ndjson"
expect_in append-count <(wc -l <"$T/out") '^100$'
expect_in append-first <(head -1 "$T/out") '^0$'
expect_in append-last <(tail -1 "$T/out") '^99$'

# a batch with one invalid record appends nothing, exits 2, names line and field
{ rec bob 1; rec bob 2; echo '{"subject":{"id":"bob","ip":"300.1.1.1"},"event_type":"x","action":"y","result":"success","source":"s"}'; rec bob 4; } >"$T/bad.ndjson"
check append-bad 2 "$B" audit append --dir "$D" <"$T/bad.ndjson"
expect_in append-bad-line "$T/err" 'line 3'
expect_in append-bad-field "$T/err" "subject.ip"
check not-json 2 "$B" audit append --dir "$D" <<<'{"subject":'
expect_in not-json-line "$T/err" 'line 1'
check unknown-field 2 "$B" audit append --dir "$D" <<<'{"subject":{"id":"a"},"event_type":"x","action":"y","result":"success","source":"s","extra":1}'
check after-bad-size 0 "$B" audit get --dir "$D" --index 99
check after-bad-nothing-appended 2 "$B" audit get --dir "$D" --index 100

# verify, checkpoint, get
check verify 0 "$B" audit verify --dir "$D" --pub "$D/signer.pub.pem"
expect_in verify-ok "$T/out" 'OK records=100'
check checkpoint 0 "$B" audit checkpoint --dir "$D"
cp "$T/out" "$T/cp100.txt"
expect_in checkpoint-origin <(head -1 "$T/cp100.txt") '^bank.example/audit/1$'
expect_in checkpoint-size <(sed -n 2p "$T/cp100.txt") '^100$'
check get 0 "$B" audit get --dir "$D" --index 42
cp "$T/out" "$T/r42.json"
expect_in get-field "$T/r42.json" '"object":"db/customers/42"'
check get-range 0 "$B" audit get --dir "$D" --index 10 --count 5
expect_in get-range-n <(wc -l <"$T/out") '^5$'
check get-out-of-range 2 "$B" audit get --dir "$D" --index 100
check get-bad-index 2 "$B" audit get --dir "$D" --index -1

# proofs, verified offline with only the public key
cp "$D/signer.pub.pem" "$T/pub.pem"
check prove 0 "$B" audit prove --dir "$D" --index 42
cp "$T/out" "$T/p42.json"
check verify-proof 0 "$B" audit verify-proof --pub "$T/pub.pem" --checkpoint "$T/cp100.txt" --record "$T/r42.json" --proof "$T/p42.json"
"$B" audit get --dir "$D" --index 43 >"$T/r43.json"
check verify-proof-other-record 1 "$B" audit verify-proof --pub "$T/pub.pem" --checkpoint "$T/cp100.txt" --record "$T/r43.json" --proof "$T/p42.json"
sed 's/"db\/customers\/42"/"db\/customers\/420"/' "$T/r42.json" >"$T/r42x.json"
check verify-proof-edited-record 1 "$B" audit verify-proof --pub "$T/pub.pem" --checkpoint "$T/cp100.txt" --record "$T/r42x.json" --proof "$T/p42.json"
"$B" gm keygen --out "$T/other.pem" --pub-out "$T/other.pub.pem" >/dev/null 2>&1 ||
  openssl genpkey -algorithm SM2 -out "$T/other.pem" 2>/dev/null
openssl pkey -in "$T/other.pem" -pubout -out "$T/other.pub.pem" 2>/dev/null
check verify-proof-wrong-key 1 "$B" audit verify-proof --pub "$T/other.pub.pem" --checkpoint "$T/cp100.txt" --record "$T/r42.json" --proof "$T/p42.json"
echo '{"type":"inclusion"}' >"$T/bogus.json"
check verify-proof-malformed 2 "$B" audit verify-proof --pub "$T/pub.pem" --checkpoint "$T/cp100.txt" --record "$T/r42.json" --proof "$T/bogus.json"

# consistency between two checkpoints
for i in $(seq 100 149); do rec carol "$i"; done | "$B" audit append --dir "$D" >/dev/null
"$B" audit checkpoint --dir "$D" >"$T/cp150.txt"
check prove-consistency 0 "$B" audit prove --dir "$D" --from 100 --to 150
cp "$T/out" "$T/c.json"
check verify-consistency 0 "$B" audit verify-proof --pub "$T/pub.pem" --checkpoint "$T/cp150.txt" --old-checkpoint "$T/cp100.txt" --proof "$T/c.json"
check verify-consistency-swapped 1 "$B" audit verify-proof --pub "$T/pub.pem" --checkpoint "$T/cp100.txt" --old-checkpoint "$T/cp150.txt" --proof "$T/c.json"
check prove-usage 2 "$B" audit prove --dir "$D" --index 1 --from 2 --to 3

# one writer at a time
check verify-before-tamper 0 "$B" audit verify --dir "$D"

# tampering: flip one byte inside record 7's frame (segment image: 64-byte header, frames)
SEG="$D/seg/0000000000000000.seg"
off=64
for i in $(seq 0 6); do
  len=$(od -An -tu4 -j "$off" -N4 "$SEG" | tr -d ' ')
  off=$((off + 16 + len))
done
printf '\x01' | dd of="$SEG" bs=1 seek=$((off + 30)) conv=notrunc status=none
check verify-tampered 1 "$B" audit verify --dir "$D" --pub "$T/pub.pem"
expect_in verify-tampered-index "$T/err" 'first bad index 7 '
expect_in verify-tampered-offset "$T/err" "offset $off"
check append-to-tampered-refused 1 "$B" audit append --dir "$D" < <(rec dave 1)

# retention: nothing is sealed yet in a 64 MiB segment: prune removes nothing
D2=$T/log2
"$B" audit init --dir "$D2" --origin bank.example/audit/2 >/dev/null
for i in $(seq 0 9); do rec erin "$i"; done | "$B" audit append --dir "$D2" >/dev/null
check archive 0 "$B" audit archive --dir "$D2" --to "$T/arch"
check prune-nothing 0 "$B" audit prune --dir "$D2" --archive "$T/arch"
expect_in prune-stopped "$T/out" 'stopped'
check prune-bad-date 2 "$B" audit prune --dir "$D2" --archive "$T/arch" --before yesterday

# key rotation: new checkpoints are signed with the new key, old ones stay valid
cp "$D2/signer.pub.pem" "$T/old.pub.pem"
check rotate-key 0 "$B" audit rotate-key --dir "$D2"
newpub=$(ls "$D2"/signer-*.pub.pem | while read -r f; do cmp -s "$f" "$T/old.pub.pem" || echo "$f"; done | head -1)
for i in $(seq 10 19); do rec frank "$i"; done | "$B" audit append --dir "$D2" >/dev/null
check verify-after-rotation 0 "$B" audit verify --dir "$D2"
check verify-both-keys 0 "$B" audit verify --dir "$D2" --pub "$T/old.pub.pem,$newpub"
check verify-old-key-only 1 "$B" audit verify --dir "$D2" --pub "$T/old.pub.pem"
"$B" audit checkpoint --dir "$D2" >"$T/cpr.txt"
"$B" audit get --dir "$D2" --index 15 >"$T/r15.json"
"$B" audit prove --dir "$D2" --index 15 >"$T/p15.json"
check verify-proof-new-key 0 "$B" audit verify-proof --pub "$newpub" --checkpoint "$T/cpr.txt" --record "$T/r15.json" --proof "$T/p15.json"
check verify-proof-old-key 1 "$B" audit verify-proof --pub "$T/old.pub.pem" --checkpoint "$T/cpr.txt" --record "$T/r15.json" --proof "$T/p15.json"
expect_in rotated-key-mode <(stat -c %a "${newpub%.pub.pem}.key") '^600$'

# auditd refuses plain HTTP on anything but loopback
check auditd-plain-public 2 "$B" auditd --dir "$D2" --listen 0.0.0.0:1 --auth /dev/null
expect_in auditd-plain-public-msg "$T/err" 'loopback'

echo "audit_cli: $pass checks passed, $fails failed"
[ "$fails" -eq 0 ]
