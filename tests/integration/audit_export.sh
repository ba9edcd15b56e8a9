#!/usr/bin/env bash
# audit_export.sh: `dengbao audit export` against real NATS JetStream and ClickHouse servers
# started on 127.0.0.1 by scripts/services.sh: everything checkpointed arrives exactly once by
# index; an exporter killed with SIGKILL in --follow mode resumes without losing or duplicating
# records; a lost local state file changes nothing; an unreachable server is exit 3; a bad
# target is exit 2.
# Usage: audit_export.sh path/to/dengbao
set -uo pipefail
B=${1:?usage: audit_export.sh path/to/dengbao}
here=$(cd "$(dirname "$0")" && pwd)
S="$here/../../scripts/services.sh"
T=$(mktemp -d /tmp/dbao-audit-export.XXXXXX)
cleanup() {
  [ -n "${FPID:-}" ] && kill -KILL "$FPID" 2>/dev/null
  "$S" stop "$T/svc" >/dev/null 2>&1
  rm -rf "$T"
}
trap cleanup EXIT
fails=0
pass=0
ok() { pass=$((pass + 1)); }
bad() {
  echo "FAIL $*"
  fails=$((fails + 1))
}
eq() { # eq NAME GOT WANT
  if [ "$2" = "$3" ]; then ok; else bad "$1: got '$2', want '$3'"; fi
}

NP=$("$S" start nats "$T/svc") || {
  echo "audit_export: cannot start NATS"
  exit 1
}
CP=$("$S" start clickhouse "$T/svc") || {
  echo "audit_export: cannot start ClickHouse"
  exit 1
}
MON=$(cat "$T/svc/nats/monitor_port")
ch() { curl -sS "http://127.0.0.1:$CP/" --data-binary "$1"; }
js_msgs() { curl -s "http://127.0.0.1:$MON/jsz?streams=1" | tr ',' '\n' | grep '"messages"' | tail -1 | tr -dc 0-9; }

gen() { # gen FROM COUNT
  awk -v f="$1" -v n="$2" 'BEGIN{for(i=f;i<f+n;i++) printf "{\"subject\":{\"id\":\"user%d\",\"role\":\"teller\",\"ip\":\"10.1.%d.%d\"},\"event_type\":\"data.read\",\"action\":\"SELECT\",\"object\":\"db/customers/%d\",\"result\":\"success\",\"source\":\"gateway\",\"details\":{\"n\":%d}}\n", i%50, (i/250)%250, i%250, i, i}'
}

D=$T/log
"$B" audit init --dir "$D" --origin bank.example/audit/x >/dev/null || exit 1
gen 0 3000 | "$B" audit append --dir "$D" >/dev/null || exit 1

# one-shot exports
"$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/AUDIT" 2>"$T/err"
eq nats-exit $? 0
"$B" audit export --dir "$D" --to "http://127.0.0.1:$CP" --batch 700 2>"$T/err"
eq ch-exit $? 0
eq nats-count "$(js_msgs)" 3000
eq ch-count "$(ch 'SELECT count(), uniqExact(idx), min(idx), max(idx) FROM dengbao_audit FORMAT TSV')" "$(printf '3000\t3000\t0\t2999')"
eq ch-field "$(ch "SELECT object, subject_ip, result FROM dengbao_audit WHERE idx = 1234 FORMAT TSV")" "$(printf 'db/customers/1234\t10.1.4.234\tsuccess')"
eq ch-details "$(ch "SELECT visitParamExtractUInt(details, 'n') FROM dengbao_audit WHERE idx = 77 FORMAT TSV")" 77
leaf=$("$B" audit prove --dir "$D" --index 5 | sed 's/.*"leaf_hash":"\([^"]*\)".*/\1/' | base64 -d | od -An -tx1 | tr -d ' \n')
eq ch-leaf-hash "$(ch "SELECT leaf_hash FROM dengbao_audit WHERE idx = 5 FORMAT TSV")" "$leaf"

# again: nothing new, nothing duplicated
"$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/AUDIT" 2>"$T/err"
grep -q 'resumed at 3000, exported 0' "$T/err" && ok || bad "nats-rerun: $(cat "$T/err")"
"$B" audit export --dir "$D" --to "http://127.0.0.1:$CP" 2>"$T/err"
grep -q 'resumed at 3000, exported 0' "$T/err" && ok || bad "ch-rerun: $(cat "$T/err")"
# a lost state file: the stream itself says where to resume
rm -rf "$D/export"
"$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/AUDIT" 2>"$T/err"
grep -q 'resumed at 3000, exported 0' "$T/err" && ok || bad "nats-no-state: $(cat "$T/err")"

# --follow, killed with SIGKILL while records keep arriving, then restarted
for round in 1 2 3; do
  "$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/AUDIT" --follow --batch 100 2>/dev/null &
  FPID=$!
  "$B" audit export --dir "$D" --to "http://127.0.0.1:$CP" --follow --batch 100 2>/dev/null &
  CPID=$!
  gen $((3000 + (round - 1) * 4000)) 4000 | "$B" audit append --dir "$D" >/dev/null
  sleep 0.$((RANDOM % 9 + 1))
  kill -KILL "$FPID" "$CPID" 2>/dev/null
  wait "$FPID" "$CPID" 2>/dev/null
  FPID=
done
TOTAL=15000
"$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/AUDIT" 2>"$T/err"
eq nats-resume-exit $? 0
"$B" audit export --dir "$D" --to "http://127.0.0.1:$CP" 2>"$T/err"
eq ch-resume-exit $? 0
eq nats-after-kills "$(js_msgs)" $TOTAL
eq ch-after-kills "$(ch 'SELECT uniqExact(idx), min(idx), max(idx) FROM dengbao_audit FORMAT TSV')" "$(printf '%s\t0\t%s' $TOTAL $((TOTAL - 1)))"
eq ch-final-rows "$(ch 'SELECT count() FROM dengbao_audit FINAL FORMAT TSV')" $TOTAL

# --follow exits cleanly on SIGTERM
"$B" audit export --dir "$D" --to "http://127.0.0.1:$CP" --follow 2>/dev/null &
FPID=$!
sleep 0.5
kill -TERM "$FPID"
wait "$FPID"
eq follow-sigterm $? 0
FPID=

# errors
"$B" audit export --dir "$D" --to "ftp://127.0.0.1:1/x" 2>/dev/null
eq bad-scheme $? 2
"$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/" 2>/dev/null
eq no-stream $? 2
"$S" stop "$T/svc" >/dev/null
"$B" audit export --dir "$D" --to "nats://127.0.0.1:$NP/AUDIT" 2>"$T/err"
eq nats-down $? 3
"$B" audit export --dir "$D" --to "http://127.0.0.1:$CP" 2>"$T/err"
eq ch-down $? 3
grep -q 'cannot reach ClickHouse' "$T/err" && ok || bad "ch-down message: $(cat "$T/err")"

echo "audit_export: $pass checks passed, $fails failed"
[ "$fails" -eq 0 ]
