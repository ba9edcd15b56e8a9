#!/usr/bin/env bash
# bench/gateway/run.sh [DENGBAO]: the gateway against nginx as a reverse proxy, in the same run,
# with the same upstream, the same load and the same pinning. Called by scripts/bench.sh
# (`make bench`); runs alone too: bench/gateway/run.sh build/dengbao.
#
#   upstream   nginx, 1 worker, answering an 84-byte JSON from memory, keep-alive
#              (scripts/services.sh start nginx)
#   nginx      reverse proxy to it: keepalive 64 upstream connections, keepalive_requests
#              10^7 on both sides, HTTP/1.1 upstream, access log off, worker_processes N
#              (scripts/services.sh start nginx-proxy)
#   dengbao    `dengbao gateway --config` with the same: one cluster of that endpoint,
#              keepalive 64, workers N, no access log, no health checks
#   load       wrk -t2 -c$CONNS -d${DUR}s --latency, after a 2 s warm-up per run
#
# Scenarios (SCENARIOS): pin1 = 1 worker, the proxy on CPU 0, upstream and wrk on CPU 1;
# free2 = 2 workers, nothing pinned. Protocols (PROTOS): http, https (self-signed ECDSA
# P-256 certificate made here; wrk does not verify it; TLS between client and proxy only).
# The proxies run in interleaved rounds (ROUNDS, default 5), so both see the same noise; the
# table gives medians: requests/s, p99 latency, CPU time per request of the proxy process and
# its children (utime + stime from /proc, over the measured run), and requests/s relative to
# nginx. Without a `dengbao gateway` command in DENGBAO, only nginx runs (to test the harness).
#
# Knobs: DUR (10), ROUNDS (5), CONNS (64), SCENARIOS ("pin1 free2"), PROTOS ("http https"),
# PROXIES ("nginx dengbao"), OUT (a directory kept for the raw results; default a temp dir
# removed at exit). Every process is started here and stopped by its PID.
set -uo pipefail
BIN=${1:-build/dengbao}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SVC=$ROOT/scripts/services.sh
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-64}
SCENARIOS=${SCENARIOS:-"pin1 free2"}
PROTOS=${PROTOS:-"http https"}
PROXIES=${PROXIES:-"nginx dengbao"}
if [ -n "${OUT:-}" ]; then
  D=$OUT
  mkdir -p "$D"
  KEEP=1
else
  D=$(mktemp -d /tmp/gwbench.XXXXXX)
  KEEP=
fi
GW_PID=
SVC_DIRS=()

cleanup() {
  local d
  if [ -n "$GW_PID" ]; then
    kill -TERM "$GW_PID" 2>/dev/null
    wait "$GW_PID" 2>/dev/null
  fi
  for d in "${SVC_DIRS[@]}"; do
    "$SVC" stop "$d"
  done
  [ -n "$KEEP" ] || rm -rf "$D"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

for c in nginx wrk curl openssl taskset; do
  if ! command -v "$c" >/dev/null; then
    echo "gateway bench skipped: $c is not installed (scripts/deps.sh)"
    exit 0
  fi
done
if [[ " $PROXIES " == *" dengbao "* ]] && ! "$BIN" gateway --help >/dev/null 2>&1; then
  echo "gateway bench: '$BIN gateway' is not available: nginx only (harness check)"
  PROXIES=${PROXIES//dengbao/}
fi
if [ "$(nproc)" -lt 2 ]; then
  SCENARIOS=${SCENARIOS//pin1/}
fi

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$D/key.pem" \
  -out "$D/cert.pem" -subj "/CN=127.0.0.1" -days 2 \
  -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null || {
  echo "gateway bench: cannot make a certificate" >&2
  exit 1
}

BENCH_NAME="gateway bench"
# shellcheck source=bench/lib.sh
. "$HERE/../lib.sh"

# run_wrk SCENARIO PROTO PROXY URL PID WRKCPUS ROUND
run_wrk() {
  local sc=$1 proto=$2 px=$3 url=$4 pid=$5 wcpu=$6 round=$7 out t0 t1 rps n p50 p99 cpu util errs
  pin "$wcpu" wrk -t2 -c"$CONNS" -d2s "$url" >/dev/null 2>&1 # warm-up
  t0=$(ticks "$pid")
  out=$(pin "$wcpu" wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "$url" 2>&1)
  t1=$(ticks "$pid")
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  n=$(awk '/requests in/ { print $1 }' <<<"$out")
  if [ -z "$rps" ] || [ -z "$n" ] || [ "$n" = 0 ]; then
    echo "gateway bench: wrk failed against $px ($url): $out" >&2
    return 1
  fi
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  errs=$(awk '/Non-2xx|Socket errors/' <<<"$out" | tr -s ' \n' ' ')
  cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="$n" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
  util=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$DUR" 'BEGIN { printf "%.0f", d / hz / s * 100 }')
  printf '  %-5s %-5s %-7s r%d  %9.0f req/s  p50 %7.3f ms  p99 %7.3f ms  %6s us/req  cpu %4s%%  %s\n' \
    "$sc" "$proto" "$px" "$round" "$rps" "$p50" "$p99" "$cpu" "$util" "$errs"
  echo "$sc $proto $px $rps $p99 $cpu" >>"$D/raw.txt"
}

scenario() {
  local sc=$1 w pcpu ucpu wcpu up proto px port url r
  case $sc in
  pin1) w=1 pcpu=0 ucpu=1 wcpu=1 ;;
  free2) w=2 pcpu="" ucpu="" wcpu="" ;;
  free1) w=1 pcpu="" ucpu="" wcpu="" ;;
  *)
    echo "gateway bench: unknown scenario $sc" >&2
    return 1
    ;;
  esac
  SVC_DIRS+=("$D/$sc-up")
  up=$(pin "$ucpu" "$SVC" start nginx "$D/$sc-up" "" 1) || return 1
  for proto in $PROTOS; do
    local tls_args=() pids=() urls=()
    [ "$proto" = https ] && tls_args=("$D/cert.pem" "$D/key.pem")
    for px in $PROXIES; do
      port=$("$SVC" freeport)
      url="$proto://127.0.0.1:$port/"
      case $px in
      nginx)
        SVC_DIRS+=("$D/$sc-$proto-nginx")
        pin "$pcpu" "$SVC" start nginx-proxy "$D/$sc-$proto-nginx" "$port" "$up" "$w" \
          "${tls_args[@]}" >/dev/null || return 1
        pids+=("$(cat "$D/$sc-$proto-nginx/nginx-proxy/pid")")
        ;;
      dengbao)
        {
          echo "workers: $w"
          echo "listeners:"
          echo "  - listen: \"127.0.0.1:$port\""
          [ "$proto" = https ] && echo "    tls: {cert: \"$D/cert.pem\", key: \"$D/key.pem\"}"
          echo "clusters:"
          echo "  - {name: up, endpoints: [\"127.0.0.1:$up\"], keepalive: 64}"
          echo "routes:"
          echo "  - {prefix: /, cluster: up}"
        } >"$D/$sc-$proto-gw.yaml"
        # started as a simple command (not through the pin function, which would run in a
        # subshell) so that $! is the gateway itself (taskset execs it) and TERM reaches it
        if [ -n "$pcpu" ]; then
          taskset -c "$pcpu" "$BIN" gateway --config "$D/$sc-$proto-gw.yaml" \
            2>"$D/$sc-$proto-gw.err" &
        else
          "$BIN" gateway --config "$D/$sc-$proto-gw.yaml" 2>"$D/$sc-$proto-gw.err" &
        fi
        GW_PID=$!
        pids+=("$GW_PID")
        ;;
      *)
        echo "gateway bench: unknown proxy $px" >&2
        return 1
        ;;
      esac
      urls+=("$url")
      wait_url "$url" -k || return 1
    done
    for r in $(seq 1 "$ROUNDS"); do
      local i=0
      for px in $PROXIES; do
        run_wrk "$sc" "$proto" "$px" "${urls[$i]}" "${pids[$i]}" "$wcpu" "$r" || return 1
        i=$((i + 1))
      done
    done
    if [ -n "$GW_PID" ]; then
      kill -TERM "$GW_PID"
      wait "$GW_PID"
      GW_PID=
    fi
    "$SVC" stop "$D/$sc-$proto-nginx"
  done
  "$SVC" stop "$D/$sc-up"
}

: >"$D/raw.txt"
echo "gateway bench: $(date -u +%FT%TZ), nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk -t2 -c$CONNS -d${DUR}s, $ROUNDS interleaved rounds, proxies: $PROXIES"
for sc in $SCENARIOS; do
  scenario "$sc" || exit 1
done
echo "gateway bench: medians over $ROUNDS rounds (CPU: the proxy's processes, per request)"
printf '  %-8s %-6s %-8s %12s %10s %12s %10s\n' scenario proto proxy "req/s" "p99 ms" "cpu us/req" "vs nginx"
awk '
{ k = $1 " " $2 " " $3; n[k]++; r[k, n[k]] = $4; p[k, n[k]] = $5; c[k, n[k]] = $6
  if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
function med(a, k, cnt,   i, j, t, v) {
  for (i = 1; i <= cnt; i++) v[i] = a[k, i]
  for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
  return (cnt % 2) ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
END {
  for (i = 1; i <= m; i++) { k = order[i]; R[k] = med(r, k, n[k]); P[k] = med(p, k, n[k]); C[k] = med(c, k, n[k]) }
  for (i = 1; i <= m; i++) { k = order[i]; split(k, a, " "); base = a[1] " " a[2] " nginx"
    printf "  %-8s %-6s %-8s %12.0f %10.3f %12.2f %10s\n", a[1], a[2], a[3], R[k], P[k], C[k],
      (base in R) ? sprintf("%.3f", R[k] / R[base]) : "-" } }' "$D/raw.txt"
