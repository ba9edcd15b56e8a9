#!/usr/bin/env bash
# maskproxy.sh DENGBAO: the PostgreSQL masking proxy end to end, against a real PostgreSQL 15
# started by scripts/services.sh, with psql (simple protocol) and tests/tools/pgclient.c
# (libpq: extended protocol, binary results, COPY, cancel).
#
# The invariant checked after every statement of a masked role: no clear value of the test
# data ever comes back (rows, COPY data, error messages), whatever the bypass tried. A role
# that may see the values sees them clear. Every decision is in the audit log, which verifies,
# and holds no clear value either. A second proxy checks TLS on both sides (clients refused
# without TLS, TLS 1.2+ to PostgreSQL, md5 and SCRAM with channel_binding=disable).
#
# Debugging knobs: MP_WRAP="gdb -q -batch -ex run -ex bt --args" runs the proxy under a wrapper,
# MP_FULL=1 prints the proxy's whole stderr on failure, MP_KEEP=1 keeps the temporary folder.
set -uo pipefail
BIN=${1:?usage: maskproxy.sh DENGBAO}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
PGC=$(dirname "$BIN")/pgclient
T=$(mktemp -d /tmp/maskproxy.XXXXXX)
chmod 755 "$T"
MP_PID=
TLS_PID=

cleanup() {
  if [ -n "$TLS_PID" ]; then
    kill -TERM "$TLS_PID" 2>/dev/null
    wait "$TLS_PID" 2>/dev/null
  fi
  if [ -n "$MP_PID" ]; then
    kill -TERM "$MP_PID" 2>/dev/null
    wait "$MP_PID" 2>/dev/null
  fi
  "$SVC" stop "$T/svc" >/dev/null 2>&1
  [ -n "${MP_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  if [ -f "$T/mp.err" ]; then
    echo "--- maskproxy stderr (last 20 lines):" >&2
    if [ -n "${MP_WRAP:-}${MP_FULL:-}" ]; then cat "$T/mp.err" >&2; else tail -20 "$T/mp.err" >&2; fi
  fi
  exit 1
}
check() { echo "-- $*"; }

"$BIN" maskproxy --help >/dev/null 2>&1 || fail "'$BIN maskproxy --help' does not work"
[ -x "$PGC" ] || fail "pgclient not built next to $BIN"
command -v psql >/dev/null || fail "psql is not installed (scripts/deps.sh)"
command -v openssl >/dev/null || fail "openssl is not installed (scripts/deps.sh)"

# ---- PostgreSQL and the test data --------------------------------------------------------------
mkdir -p "$T/svc"
PGPORT=$("$SVC" start postgres "$T/svc") || fail "cannot start PostgreSQL"
PGSOCK=$(cat "$T/svc/postgres/socket_dir" 2>/dev/null || echo "$T/svc/postgres")
su_sql() { psql -X -h "$PGSOCK" -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

# Fictitious people; the identifiers have valid check digits (so the detectors see them too).
RID1=11010519491231002X RID2=440524188001010014 RID3=310104198506123455
MOB1=13800138000 MOB2=13912345678 MOB3=15011112222
CARD1=6222021234567890128 CARD2=6217000000001234560 CARD3=4367420000111122223
NAME1=张三丰 NAME2=李小龙 NAME3=王小明
CLEAR=("$RID1" "$RID2" "$RID3" "$MOB1" "$MOB2" "$MOB3" "$CARD1" "$CARD2" "$CARD3" "$NAME1" "$NAME2"
  "$NAME3" 0011010519491231002 3131303130353139 e5bca0e4b889e4b8b0)

su_sql -d postgres <<EOF || fail "setup: roles and database"
SET password_encryption = 'scram-sha-256';
CREATE ROLE dengbao_catalog LOGIN PASSWORD 'catpw';
CREATE ROLE doctor LOGIN PASSWORD 'docpw';
CREATE ROLE clerk LOGIN PASSWORD 'clerkpw';
CREATE ROLE auditor LOGIN PASSWORD 'audpw';
SET password_encryption = 'md5';
CREATE ROLE md5user LOGIN PASSWORD 'md5pw';
CREATE DATABASE clinic;
EOF
su_sql -d clinic <<EOF || fail "setup: schema"
CREATE DOMAIN cn_rid AS text;
CREATE TABLE patients(id int PRIMARY KEY, name text, id_no text, mobile text, card text,
                      birth date, notes text);
COMMENT ON COLUMN patients.mobile IS 'contact number @PII:CN_MOBILE';
CREATE TABLE staff(id int, rid cn_rid, dept text);
CREATE TABLE visits(patient_id int, diag text);
CREATE VIEW v_patients AS SELECT id, name, id_no AS ident FROM patients;
CREATE VIEW v_ident AS SELECT ident FROM v_patients;
CREATE FUNCTION lookup(int) RETURNS text LANGUAGE sql AS 'SELECT id_no FROM patients WHERE id = \$1';
INSERT INTO patients VALUES
  (1, '$NAME1', '$RID1', '$MOB1', '$CARD1', '1949-12-31', 'first'),
  (2, '$NAME2', '$RID2', '$MOB2', '$CARD2', '1880-01-01', 'second'),
  (3, '$NAME3', '$RID3', '$MOB3', '$CARD3', '1985-06-12', 'third');
INSERT INTO staff VALUES (1, '$RID2', 'cardiology');
INSERT INTO visits VALUES (1, 'flu'), (2, 'fracture'), (3, 'checkup');
GRANT ALL ON ALL TABLES IN SCHEMA public TO doctor, clerk, auditor, md5user;
GRANT CREATE ON SCHEMA public TO clerk;
EOF

# ---- the proxy --------------------------------------------------------------------------------
"$BIN" audit init --dir "$T/audit" --origin clinic.example/maskproxy >/dev/null 2>&1 ||
  fail "audit init"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/k1.key"
chmod 600 "$T/k1.key"
printf '127.0.0.1:%s:*:dengbao_catalog:catpw\n' "$PGPORT" >"$T/pgpass"
chmod 600 "$T/pgpass"
cat >"$T/mask-policy.yaml" <<EOF
keys:
  k1: k1.key
derived: "replace('***')"
types:
  CN_MOBILE: {roles: {doctor: clear}}
  CN_RID18: {roles: {doctor: clear}}
data_types:
  cn_rid: CN_RID18
columns:
  public.patients.id_no: {type: CN_RID18, roles: {doctor: clear}, predicates: equality}
  patients.name: {type: CN_NAME, roles: {doctor: clear}}
  patients.card: {type: BANK_CARD, mask: "keep(0,4)", roles: {doctor: clear, auditor: "pseudonym(k1)"}}
  patients.birth: {mask: year, roles: {doctor: clear}}
EOF
MPPORT=$("$SVC" freeport)
cat >"$T/mask.yaml" <<EOF
listen: 127.0.0.1:$MPPORT
server: {address: "127.0.0.1:$PGPORT", tls: disable}
policy: mask-policy.yaml
catalog: {conninfo: "host=127.0.0.1 port=$PGPORT user=dengbao_catalog passfile=$T/pgpass", refresh: 2s}
users: {doctor: [doctor], clerk: [clerk], auditor: [auditor]}
audit: {dir: audit, mode: durable}
EOF

check "--check accepts the configuration; a typo is refused with its line"
"$BIN" maskproxy --config "$T/mask.yaml" --check >/dev/null || fail "--check"
sed 's/^policy:/polcy:/' "$T/mask.yaml" >"$T/bad.yaml"
out=$("$BIN" maskproxy --config "$T/bad.yaml" --check 2>&1)
[ $? -eq 2 ] || fail "bad config: exit status"
echo "$out" | grep -q "bad.yaml:3: unknown key 'polcy'" || fail "bad config message: $out"

${MP_WRAP:-} "$BIN" maskproxy --config "$T/mask.yaml" 2>"$T/mp.err" &
MP_PID=$!
for _ in $(seq 1 300); do
  grep -q "maskproxy: listening on" "$T/mp.err" && break
  kill -0 "$MP_PID" 2>/dev/null || fail "maskproxy exited"
  sleep 0.1
done
grep -q "maskproxy: listening on 127.0.0.1:$MPPORT" "$T/mp.err" || fail "no ready line"

as() { # as USER PASSWORD SQL...: psql through the proxy
  local u=$1 pw=$2
  shift 2
  PGPASSWORD=$pw psql -X -h 127.0.0.1 -p "$MPPORT" -U "$u" -d clinic -qAt -v ON_ERROR_STOP=0 \
    "$@" 2>&1
}
clean() { # clean NAME OUTPUT: fails if any clear value appears
  local v
  for v in "${CLEAR[@]}"; do
    case "$2" in
    *"$v"*) fail "$1: a clear value came back: $2" ;;
    esac
  done
}
masked() { # masked NAME SQL [EXPECT-REGEX]: clerk runs SQL; no clear value; output matches
  local out
  out=$(as clerk clerkpw -c "$2")
  clean "$1" "$out"
  if [ -n "${3:-}" ]; then
    echo "$out" | grep -Eq -- "$3" || fail "$1: expected /$3/, got: $out"
  fi
  echo "   $1: ok"
}
refused() { # refused NAME SQL SQLSTATE-or-text
  local out
  out=$(as clerk clerkpw -v VERBOSITY=verbose -c "$2")
  clean "$1" "$out"
  echo "$out" | grep -q "ERROR: *$3" || fail "$1: expected refusal $3, got: $out"
  echo "   $1: refused ($3)"
}

check "a masked role (clerk): direct reads"
masked select "SELECT id_no FROM patients ORDER BY id" '^110105\*{8}002X$'
masked mobile-by-comment-tag "SELECT mobile FROM patients WHERE id = 1" '^138\*{4}8000$'
masked card "SELECT card FROM patients WHERE id = 1" '^\*{15}0128$'
masked name "SELECT name FROM patients WHERE id = 1" '^张\*\*$'
masked year "SELECT birth FROM patients WHERE id = 1" '^1949'
masked data-type-domain "SELECT rid FROM staff" '^440524\*{8}0014$'
masked clear-columns "SELECT id, notes FROM patients ORDER BY id" '^1\|first$'
masked non-sensitive "SELECT count(*) FROM visits" '^3$'

check "a masked role: the bypasses users report in other products"
masked function "SELECT lower(id_no) FROM patients"
masked alias "SELECT p.id_no AS x FROM patients p"
masked star "SELECT * FROM patients"
masked qualified-star "SELECT p.* FROM patients p JOIN visits v ON v.patient_id = p.id"
masked whole-row "SELECT p FROM patients p"
masked row-to-json "SELECT row_to_json(p) FROM patients p"
masked union "SELECT notes FROM patients UNION ALL SELECT id_no FROM patients"
masked subquery-from "SELECT x FROM (SELECT id_no AS x FROM patients) s"
masked subquery-target "SELECT (SELECT id_no FROM patients WHERE id = 1)"
masked cte "WITH c AS (SELECT id_no FROM patients) SELECT * FROM c"
masked recursive-cte "WITH RECURSIVE r(v, n) AS (SELECT id_no, 1 FROM patients WHERE id = 1 UNION ALL SELECT v, n + 1 FROM r WHERE n < 2) SELECT v FROM r"
masked view "SELECT * FROM v_patients"
masked view-over-view "SELECT ident FROM v_ident"
masked json-builder "SELECT json_build_object('id', id_no) FROM patients"
masked case "SELECT CASE WHEN id > 0 THEN id_no ELSE 'x' END FROM patients"
masked cast "SELECT id_no::varchar(30) FROM patients"
masked concat "SELECT 'id:' || id_no FROM patients"
masked string-agg "SELECT string_agg(id_no, ',') FROM patients"
masked returning "UPDATE patients SET notes = notes WHERE id = 1 RETURNING id_no, mobile"
masked lateral "SELECT l.x FROM visits v, LATERAL (SELECT id_no AS x FROM patients p WHERE p.id = v.patient_id) l"
masked quoted-ident 'SELECT "id_no" FROM "public"."patients"'
masked comments "SELECT /* hi */ id_no -- there
FROM patients"
masked error-echo "SELECT id_no::int FROM patients" 'ERROR'
masked equality-predicate "SELECT id FROM patients WHERE id_no = '$RID1'" '^1$'
masked prepare-execute "PREPARE q AS SELECT id_no FROM patients; EXECUTE q"
masked cursor "BEGIN; DECLARE c CURSOR FOR SELECT id_no FROM patients; FETCH ALL FROM c; COMMIT"
masked copy-table "COPY patients TO STDOUT"
masked copy-query-csv "COPY (SELECT name, id_no FROM patients) TO STDOUT WITH (FORMAT csv)"

check "a masked role: what cannot be masked is refused, with the right SQLSTATE"
refused like-predicate "SELECT id FROM patients WHERE id_no LIKE '1101%'" 42501
refused order-by "SELECT id FROM patients ORDER BY id_no" 42501
refused do-block "DO \$\$BEGIN RAISE NOTICE '%', (SELECT id_no FROM patients LIMIT 1); END\$\$" 42501
refused user-function "SELECT lookup(1)" 42501
refused query-to-xml "SELECT query_to_xml('select id_no from patients', true, false, '')" 42501
refused insert-select "INSERT INTO visits SELECT id, id_no FROM patients" 42501
refused create-table-as "CREATE TABLE leak AS SELECT id_no FROM patients" 42501
refused select-into "SELECT id_no INTO leak2 FROM patients" 42501
refused parse-error "SELECT id_no FROM patients WHERE" 42601
refused binary-copy "COPY patients TO STDOUT (FORMAT binary)" '[0-9A-Z]\{5\}'
out=$(su_sql -d clinic -c "SELECT coalesce(to_regclass('public.leak')::text, 'none'), coalesce(to_regclass('public.leak2')::text, 'none')")
[ "$out" = "none|none" ] || fail "a refused CREATE TABLE AS / SELECT INTO ran anyway: $out"
out=$(as clerk clerkpw -c "SELECT 1 FROM no_such_table")
echo "$out" | grep -q 'ERROR: .*no_such_table' || fail "unknown relation: $out"

check "extended protocol (libpq): prepared statements, parameters, binary results"
C_CLERK="host=127.0.0.1 port=$MPPORT dbname=clinic user=clerk password=clerkpw"
out=$("$PGC" "$C_CLERK" prepare 'SELECT id, id_no FROM patients WHERE id = $1' 1)
clean prepared "$out"
[ "$(echo "$out" | grep -c '^1|110105\*\{8\}002X$')" = 2 ] || fail "prepared: $out"
out=$("$PGC" "$C_CLERK" params 'SELECT name, mobile FROM patients WHERE id = $1' 2)
clean params "$out"
echo "$out" | grep -q '^李\*\*|139\*\*\*\*5678$' || fail "params: $out"
out=$("$PGC" "$C_CLERK" binary 'SELECT id_no FROM patients WHERE id = 1')
clean binary "$out"
[ "$out" = "$(printf '110105********002X' | od -An -tx1 | tr -d ' \n')" ] || fail "binary: $out"
out=$("$PGC" "$C_CLERK" prepare 'SELECT id FROM patients WHERE id_no LIKE $1' '1101%')
echo "$out" | grep -q '^ERROR 42501' || fail "prepared refusal: $out"
out=$("$PGC" "$C_CLERK" copy 'COPY (SELECT id, card FROM patients ORDER BY id) TO STDOUT')
clean copy "$out"
echo "$out" | head -1 | grep -q "^1	\*\{15\}0128$" || fail "copy: $out"
out=$("$PGC" "$C_CLERK" cancel)
echo "$out" | grep -q '^ERROR 57014' || fail "cancel: $out"

check "roles that see clear values, and pseudonyms"
out=$(as doctor docpw -c "SELECT id_no, mobile, name FROM patients WHERE id = 1")
[ "$out" = "$RID1|$MOB1|$NAME1" ] || fail "doctor sees clear values: $out"
out=$(as doctor docpw -c "SELECT id FROM patients WHERE id_no LIKE '1101%'")
[ "$out" = "1" ] || fail "doctor may use any predicate: $out"
p1=$(as auditor audpw -c "SELECT card FROM patients WHERE id = 1")
p2=$(as auditor audpw -c "SELECT card FROM patients WHERE id = 1")
echo "$p1" | grep -Eq '^p_[0-9a-f]{32}$' || fail "auditor pseudonym: $p1"
[ "$p1" = "$p2" ] || fail "pseudonyms are stable"
clean auditor "$(as auditor audpw -c 'SELECT * FROM patients')"

check "md5 and SCRAM authentication are relayed; a wrong password is refused"
out=$(PGPASSWORD=md5pw psql -X -h 127.0.0.1 -p "$MPPORT" -U md5user -d clinic -qAt -c "SELECT id_no FROM patients WHERE id = 2" 2>&1)
[ "$out" = "440524********0014" ] || fail "md5user (no role) is masked: $out"
out=$(PGPASSWORD=wrong psql -X -h 127.0.0.1 -p "$MPPORT" -U clerk -d clinic -qAt -c "SELECT 1" 2>&1)
echo "$out" | grep -q 'password authentication failed' || fail "wrong password: $out"

check "TLS on both sides: clients must use TLS (1.2+), the proxy speaks TLS to PostgreSQL"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=maskproxy.test -keyout "$T/proxy.key" -out "$T/proxy.pem" >/dev/null 2>&1 ||
  fail "cannot make a certificate"
chmod 600 "$T/proxy.key"
"$BIN" audit init --dir "$T/audit2" --origin clinic.example/maskproxy-tls >/dev/null 2>&1 ||
  fail "audit init (tls)"
TLSPORT=$("$SVC" freeport)
sed -e "s/^listen: .*/listen: 127.0.0.1:$TLSPORT/" -e 's/tls: disable}/tls: require}/' \
  -e 's/^audit: {dir: audit,/audit: {dir: audit2,/' "$T/mask.yaml" >"$T/mask-tls.yaml"
printf 'tls: {cert: proxy.pem, key: proxy.key, require: true}\n' >>"$T/mask-tls.yaml"
"$BIN" maskproxy --config "$T/mask-tls.yaml" 2>"$T/mp-tls.err" &
TLS_PID=$!
for _ in $(seq 1 300); do
  grep -q "listening on" "$T/mp-tls.err" && break
  kill -0 "$TLS_PID" 2>/dev/null || break
  sleep 0.1
done
grep -q "listening on 127.0.0.1:$TLSPORT" "$T/mp-tls.err" ||
  fail "tls proxy: no ready line; its stderr: $(cat "$T/mp-tls.err")"
tls_as() { # tls_as USER PASSWORD SSLMODE SQL
  PGPASSWORD=$2 psql -X "host=127.0.0.1 port=$TLSPORT dbname=clinic user=$1 sslmode=$3 channel_binding=disable" \
    -qAt -c "$4" 2>&1
}
out=$(tls_as clerk clerkpw require "SELECT id_no FROM patients WHERE id = 1")
[ "$out" = "110105********002X" ] || fail "masked over TLS: $out"
out=$(tls_as doctor docpw require "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
echo "$out" | grep -Eq '^t\|TLSv1\.[23]$' || fail "proxy to PostgreSQL is not TLS 1.2+: $out"
out=$(tls_as md5user md5pw require "SELECT mobile FROM patients WHERE id = 3")
[ "$out" = "150****2222" ] || fail "md5 over TLS both sides: $out"
out=$(tls_as clerk clerkpw disable "SELECT 1")
echo "$out" | grep -qi 'tls\|ssl\|encrypt' || fail "a plain client was not refused: $out"
kill -TERM "$TLS_PID"
wait "$TLS_PID" || fail "tls proxy exit status"
TLS_PID=

check "a table created after start is found by a catalog reload and masked"
su_sql -d clinic -c "CREATE TABLE later(id int, contact text); COMMENT ON COLUMN later.contact IS '@PII:CN_MOBILE'; INSERT INTO later VALUES (1, '$MOB3'); GRANT ALL ON later TO clerk"
masked later-table "SELECT contact FROM later" '^150\*{4}2222$'

check "the audit trail: every decision recorded, verifiable, without clear values"
kill -TERM "$MP_PID"
wait "$MP_PID"
rc=$?
MP_PID=
[ $rc -eq 0 ] || fail "maskproxy exit status $rc"
v=$("$BIN" audit verify --dir "$T/audit" 2>/dev/null) || fail "audit verify: $v"
size=$(echo "$v" | sed -n 's/^OK records=\([0-9]*\) .*/\1/p')
n=$("$BIN" audit get --dir "$T/audit" --index 0 --count "${size:-0}" 2>/dev/null | tee "$T/records" | wc -l)
[ "$n" -ge 40 ] || fail "only $n audit records"
clean audit-records "$(cat "$T/records")"
grep -q '"action":"refuse"' "$T/records" || fail "no refusal record"
# One grep per check, never `grep | grep -q` under pipefail: the second grep exits at its first
# match and the first one dies of SIGPIPE, failing the pipeline on a good log.
grep -q '"action":"refuse".*"sqlstate":"42501"' "$T/records" || fail "refusal without sqlstate"
grep -q '"action":"mask"' "$T/records" || fail "no mask record"
grep -q '"action":"mask".*"fingerprint"' "$T/records" || fail "no fingerprint"
grep -q '"function":"pseudonym(k1)"' "$T/records" || fail "no function in the record"
grep -q '"key_id":"k1"' "$T/records" || fail "no key id in the record"
grep -q '"action":"clear"' "$T/records" || fail "no clear record for the doctor"
echo "maskproxy: all checks passed"
