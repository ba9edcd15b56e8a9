#!/usr/bin/env bash
# deps.sh: installs what dengbao needs to build and test on Debian 12, and nothing else.
# Idempotent: checks first, runs `apt-get update` at most once, installs only what is missing.
# Also installs the npm packages of tests/interop (the independent SM2 implementation used in
# the interoperability tests) when they are missing.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)

pkgs=(
  build-essential cmake pkg-config clang lld libclang-rt-14-dev clang-format
  libssl-dev openssl libjansson-dev libcmocka-dev valgrind
  libuv1-dev node-llhttp libcurl4-openssl-dev curl libnats-dev
  nats-server clickhouse-server clickhouse-client libyaml-dev nginx wrk
  libpcre2-dev libpg-query-dev libprotobuf-c-dev postgresql-15 postgresql-client-15 libpq-dev
  etcd-server etcd-client libsqlite3-dev libck-dev
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
# Node.js runs the sm-crypto interoperability test; any node >= 18 will do.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps.sh: installing ${missing[*]}"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  # Server packages (nats-server, clickhouse-server) must not start their daemons on default
  # ports: the tests start their own on 127.0.0.1 and non-default ports (scripts/services.sh).
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    guard=/usr/sbin/policy-rc.d
    trap '$sudo_cmd rm -f "$guard"' EXIT
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$guard" >/dev/null
    $sudo_cmd chmod 755 "$guard"
  fi
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$guard" ]; then $sudo_cmd rm -f "$guard"; fi
fi

if [ -f "$top/tests/interop/package-lock.json" ] && [ ! -d "$top/tests/interop/node_modules" ]; then
  echo "deps.sh: installing npm packages for tests/interop"
  npm ci --prefix "$top/tests/interop" --no-audit --no-fund --loglevel=error
fi
exit 0
