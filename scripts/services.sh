#!/usr/bin/env bash
# services.sh: starts and stops the real services the tests talk to (../shared/SERVICES.md),
# each bound to 127.0.0.1 on a port the caller chooses (or a free one), with its state in a
# directory the caller owns, stopped by the PID recorded there and reaped.
#
#   scripts/services.sh start nats DIR [PORT]          NATS with JetStream; prints the port
#   scripts/services.sh start clickhouse DIR [PORT]    ClickHouse HTTP; prints the HTTP port
#   scripts/services.sh start nginx DIR [PORT] [WORKERS]
#                        nginx answering every request with an 84-byte JSON from memory
#                        (keep-alive, access log off): a fixed upstream for the gateway's tests
#                        and benchmarks; prints the port
#   scripts/services.sh start nginx-proxy DIR PORT UPSTREAM_PORT [WORKERS] [CERT KEY]
#                        nginx as a reverse proxy to 127.0.0.1:UPSTREAM_PORT (keepalive 64,
#                        HTTP/1.1 upstream, access log off; TLS when CERT and KEY are given):
#                        the gateway's benchmark anchor; prints the port
#   scripts/services.sh start postgres DIR [PORT]      PostgreSQL 15 on 127.0.0.1:PORT (data and
#                        unix socket in DIR/postgres, fsync off, TLS on with a self-signed
#                        certificate DIR/postgres/data/server.crt; pg_hba: trust for postgres on
#                        the local socket, md5 for md5user and scram-sha-256 for everyone else
#                        (host lines and the local socket)); prints the port
#   scripts/services.sh start etcd DIR [PORT]          etcd 3.4, one member (data in DIR/etcd; peer
#                        and metrics ports from freeport; ready on /health); prints the client
#                        port. Started again on the same DIR and PORT it keeps its data (a
#                        restart).
#   scripts/services.sh stop DIR                       stops everything started in DIR
#   scripts/services.sh freeport                       prints a free TCP port on 127.0.0.1
#
# Exit 0 when the service answers its health check, 1 with a message otherwise (the service's
# own log is printed). Safe for tests running in parallel: ports are probed, not assumed.
set -uo pipefail

die() {
  echo "services.sh: $*" >&2
  exit 1
}

# Ports are drawn below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768+ by
# default): a port there can be the local end of some outgoing connection, which a connect probe
# does not see but which makes the service's bind() fail.
freeport() {
  local p lo=32768
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || lo=32768
  [ "$lo" -gt 12000 ] 2>/dev/null || lo=32768
  for _ in $(seq 1 200); do
    p=$((10000 + RANDOM % (lo - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

wait_ready() { # wait_ready NAME PIDFILE LOG CMD...
  local name=$1 pidfile=$2 log=$3
  shift 3
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "services.sh: $name exited during start-up; its log:" >&2
      tail -20 "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "services.sh: $name not ready after 15 s; its log:" >&2
  tail -20 "$log" >&2
  return 1
}

start_nats() {
  local dir=$1 port=${2:-$(freeport)} mon
  mon=$(freeport)
  command -v nats-server >/dev/null || die "nats-server is not installed (scripts/deps.sh)"
  mkdir -p "$dir/nats/js"
  printf 'listen: 127.0.0.1:%s\nhttp: 127.0.0.1:%s\njetstream { store_dir: "%s/nats/js" }\n' \
    "$port" "$mon" "$dir" >"$dir/nats/nats.conf"
  nats-server -c "$dir/nats/nats.conf" >"$dir/nats/log" 2>&1 &
  echo $! >"$dir/nats/pid"
  echo "$mon" >"$dir/nats/monitor_port"
  echo "$port" >"$dir/nats/port"
  wait_ready nats "$dir/nats/pid" "$dir/nats/log" \
    curl -sf "http://127.0.0.1:$mon/healthz?js-enabled-only=true" || return 1
  echo "$port"
}

start_clickhouse() {
  local dir=$1 port=${2:-$(freeport)} tcp inter
  tcp=$(freeport)
  inter=$(freeport)
  command -v clickhouse-server >/dev/null || die "clickhouse-server is not installed (scripts/deps.sh)"
  local d="$dir/clickhouse"
  mkdir -p "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
  # ClickHouse 18.16 (Debian): its own small config; nothing on default ports or paths.
  cat >"$d/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$d/log/server.log</log><errorlog>$d/log/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$port</http_port>
  <tcp_port>$tcp</tcp_port>
  <interserver_http_port>$inter</interserver_http_port>
  <path>$d/data/</path>
  <tmp_path>$d/tmp/</tmp_path>
  <user_files_path>$d/user_files/</user_files_path>
  <format_schema_path>$d/format_schemas/</format_schema_path>
  <users_config>$d/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
EOF
  cat >"$d/users.xml" <<'EOF'
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
  </interval></default></quotas>
</yandex>
EOF
  clickhouse-server --config-file="$d/config.xml" >"$d/log/stdout" 2>&1 &
  echo $! >"$d/pid"
  echo "$port" >"$d/port"
  wait_ready clickhouse "$d/pid" "$d/log/stdout" \
    curl -sf "http://127.0.0.1:$port/?query=SELECT%201" || {
    tail -20 "$d/log/error.log" >&2 2>/dev/null
    return 1
  }
  echo "$port"
}

# nginx_conf DIR NAME WORKERS SERVER_BLOCK: writes DIR/NAME/nginx.conf
nginx_conf() {
  local d=$1/$2 workers=$3
  shift 3
  mkdir -p "$d/tmp"
  cat >"$d/nginx.conf" <<EOF
worker_processes $workers;
$([ "$(id -u)" = 0 ] && echo 'user root;')
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; multi_accept on; }
http {
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    client_body_temp_path $d/tmp/cb;
    proxy_temp_path $d/tmp/px;
    fastcgi_temp_path $d/tmp/fc;
    uwsgi_temp_path $d/tmp/uw;
    scgi_temp_path $d/tmp/sc;
$*
}
EOF
}

# the nginx upstream's answer: 84 bytes of JSON
NGINX_BODY='{"id":1042,"name":"Zhang San","dept":"cardiology","status":"ok","items":[1,2,3,4,5]}'

start_nginx_common() { # DIR NAME PORT
  local d=$1/$2 port=$3
  command -v nginx >/dev/null || die "nginx is not installed (scripts/deps.sh)"
  nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" >"$d/log" 2>&1 &
  echo $! >"$d/pid"
  echo "$port" >"$d/port"
}

start_nginx() {
  local dir=$1 port=${2:-} workers=${3:-1}
  [ -n "$port" ] || port=$(freeport)
  nginx_conf "$dir" nginx "$workers" "    server {
        listen 127.0.0.1:$port backlog=4096;
        location / { default_type application/json; return 200 '$NGINX_BODY'; }
    }"
  start_nginx_common "$dir" nginx "$port"
  wait_ready nginx "$dir/nginx/pid" "$dir/nginx/error.log" \
    curl -sf "http://127.0.0.1:$port/" || return 1
  echo "$port"
}

start_nginx_proxy() {
  local dir=$1 port=$2 up=$3 workers=${4:-1} cert=${5:-} key=${6:-} listen scheme=http
  [ -n "$port" ] && [ -n "$up" ] ||
    die "usage: services.sh start nginx-proxy DIR PORT UPSTREAM_PORT [WORKERS] [CERT KEY]"
  listen="listen 127.0.0.1:$port backlog=4096;"
  if [ -n "$cert" ]; then
    listen="listen 127.0.0.1:$port ssl backlog=4096;
        ssl_certificate $cert;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;"
    scheme=https
  fi
  nginx_conf "$dir" nginx-proxy "$workers" "    upstream up {
        server 127.0.0.1:$up;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        $listen
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
        }
    }"
  start_nginx_common "$dir" nginx-proxy "$port"
  wait_ready nginx-proxy "$dir/nginx-proxy/pid" "$dir/nginx-proxy/error.log" \
    curl -skf "$scheme://127.0.0.1:$port/" || return 1
  echo "$port"
}

start_postgres() {
  local dir=$1 port=${2:-} bin=/usr/lib/postgresql/15/bin d data fixed=${2:-} try
  [ -n "$port" ] || port=$(freeport)
  [ -x "$bin/postgres" ] || die "PostgreSQL 15 is not installed (scripts/deps.sh)"
  d=$(cd "$dir" && pwd)/postgres
  data=$d/data
  local run=()
  mkdir -p "$d" || die "cannot create $d"
  if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse to run as root: run them as postgres (the directories on the
    # way must be traversable by it).
    chown postgres: "$d"
    chmod o+x "$dir" 2>/dev/null
    run=(setpriv --reuid=postgres --regid=postgres --init-groups)
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C \
      >"$d/initdb.log" 2>&1 || {
      tail -20 "$d/initdb.log" >&2
      die "initdb failed"
    }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
      -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
      -keyout "$data/server.key" -out "$data/server.crt" >/dev/null 2>&1 ||
      die "cannot create the TLS certificate"
    chmod 600 "$data/server.key"
    [ "$(id -u)" = 0 ] && chown postgres: "$data/server.key" "$data/server.crt"
    cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$d'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
EOF
    cat >"$data/pg_hba.conf" <<EOF
local all postgres trust
local all md5user md5
local all all scram-sha-256
host all md5user 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
EOF
  fi
  # A port taken between the probe and the bind (another test, an outgoing connection) is not
  # a failure of the service: with no port asked for, try another one.
  for try in 1 2 3 4 5; do
    sed -i "s/^port = .*/port = $port/" "$data/postgresql.conf"
    "${run[@]}" "$bin/postgres" -D "$data" >"$d/log" 2>&1 &
    echo $! >"$d/pid"
    echo "$port" >"$d/port"
    # Ready on its own socket directory: on 127.0.0.1:PORT another server could answer.
    # (PostgreSQL creates its TCP sockets, or exits, before the unix socket.)
    if wait_ready postgres "$d/pid" "$d/log" pg_isready -q -h "$d" -p "$port" 2>"$d/start.err"; then
      echo "$port"
      return 0
    fi
    if [ -z "$fixed" ] && [ "$try" -lt 5 ] && grep -q 'could not bind\|Address already in use' "$d/log"; then
      wait "$(cat "$d/pid")" 2>/dev/null
      port=$(freeport)
      continue
    fi
    cat "$d/start.err" >&2
    return 1
  done
}

start_etcd() {
  local dir=$1 port=${2:-} fixed=${2:-} peer metrics d try
  command -v etcd >/dev/null || die "etcd is not installed (scripts/deps.sh)"
  [ -n "$port" ] || port=$(freeport)
  d=$(cd "$dir" && pwd)/etcd
  mkdir -p "$d" || die "cannot create $d"
  # etcd 3.4 calls arm64 an unsupported architecture and refuses to start without this.
  [ "$(uname -m)" = aarch64 ] && export ETCD_UNSUPPORTED_ARCH=arm64
  for try in 1 2 3 4 5; do
    peer=$(freeport)
    metrics=$(freeport)
    etcd --name n1 --data-dir "$d/data" \
      --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "n1=http://127.0.0.1:$peer" --listen-metrics-urls "http://127.0.0.1:$metrics" \
      >"$d/log" 2>&1 &
    echo $! >"$d/pid"
    echo "$port" >"$d/port"
    if wait_ready etcd "$d/pid" "$d/log" curl -sf "http://127.0.0.1:$port/health" 2>"$d/start.err"; then
      echo "$port"
      return 0
    fi
    if [ "$try" -lt 5 ] && grep -q 'address already in use' "$d/log"; then
      kill -KILL "$(cat "$d/pid")" 2>/dev/null
      wait "$(cat "$d/pid")" 2>/dev/null
      [ -z "$fixed" ] && port=$(freeport)
      sleep 0.2
      continue
    fi
    cat "$d/start.err" >&2
    kill -KILL "$(cat "$d/pid")" 2>/dev/null
    return 1
  done
}

stop_dir() {
  local dir=$1 f pid sig
  for f in "$dir"/nats/pid "$dir"/clickhouse/pid "$dir"/nginx/pid "$dir"/nginx-proxy/pid \
    "$dir"/postgres/pid "$dir"/etcd/pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    sig=TERM
    [ "$f" = "$dir/postgres/pid" ] && sig=INT # PostgreSQL: fast shutdown
    if kill -0 "$pid" 2>/dev/null; then
      kill -"$sig" "$pid" 2>/dev/null
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    rm -f "$f"
  done
  return 0
}

case "${1:-}" in
start)
  [ $# -ge 3 ] || die "usage: services.sh start nats|clickhouse|nginx|nginx-proxy|postgres|etcd DIR [PORT ...]"
  mkdir -p "$3" || die "cannot create $3"
  case "$2" in
  nats) start_nats "$3" "${4:-}" ;;
  clickhouse) start_clickhouse "$3" "${4:-}" ;;
  nginx) start_nginx "$3" "${4:-}" "${5:-}" ;;
  nginx-proxy) start_nginx_proxy "$3" "${4:-}" "${5:-}" "${6:-}" "${7:-}" "${8:-}" ;;
  postgres) start_postgres "$3" "${4:-}" ;;
  etcd) start_etcd "$3" "${4:-}" ;;
  *) die "unknown service '$2' (nats, clickhouse, nginx, nginx-proxy, postgres, etcd)" ;;
  esac
  ;;
stop)
  [ $# -ge 2 ] || die "usage: services.sh stop DIR"
  stop_dir "$2"
  ;;
freeport) freeport ;;
*) die "usage: services.sh start nats|clickhouse|nginx|nginx-proxy|postgres|etcd DIR [PORT ...] | stop DIR | freeport" ;;
esac
