#!/usr/bin/env bash
# bench.sh BUILD_DIR: runs every benchmark pinned to one core (the last one), each printing
# dengbao next to its anchor measured in the same run, and the ratio.
set -euo pipefail
build=${1:-build}
cpu=$(( $(nproc) - 1 ))
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, pinned to cpu $cpu"
for b in "$build"/bench_*; do
  [ -x "$b" ] || continue
  case $(basename "$b") in
  # two threads each, pinned their own way: run by bench/clearing/run.sh below
  bench_ring | bench_clearing_engine) continue ;;
  esac
  echo "== $(basename "$b")"
  # shellcheck disable=SC2086
  taskset -c "$cpu" "$b" ${BENCH_ARGS:-}
done
# The gateway against nginx (reverse proxy to the same nginx upstream, interleaved rounds, both
# pinned alike; its own scenarios and pinning, so not under the taskset above). ROUNDS and DUR
# shorten it; GATEWAY_BENCH=0 skips it.
if [ "${GATEWAY_BENCH:-1}" != 0 ]; then
  echo "== gateway: dengbao gateway vs nginx (bench/gateway/run.sh)"
  "$(dirname "$0")/../bench/gateway/run.sh" "$build/dengbao"
fi
# The masking proxy against direct PostgreSQL (pgbench, interleaved rounds; its own database and
# processes). MASKPROXY_BENCH=0 skips it.
if [ "${MASKPROXY_BENCH:-1}" != 0 ]; then
  echo "== maskproxy: dengbao maskproxy vs direct PostgreSQL 15 (bench/maskproxy/run.sh)"
  "$(dirname "$0")/../bench/maskproxy/run.sh" "$build/dengbao"
fi
# The zero-trust gateway against nginx: (a) HS256 + RBAC + limits + audit, (b) SM2 token mode,
# (c) per-request SM2 signatures, (d) JSON masking of 4 KiB bodies. GATEWAY_ZT_BENCH=0 skips it.
if [ "${GATEWAY_ZT_BENCH:-1}" != 0 ]; then
  echo "== gateway_zt: the zero-trust gateway vs nginx (bench/gateway_zt/run.sh)"
  "$(dirname "$0")/../bench/gateway_zt/run.sh" "$build/dengbao"
fi
# The clearing engine: bench_ring (vs ck_ring and a mutex queue), bench_clearing_engine (in
# process, through rings, open-loop latency), and the daemon end to end over loopback TCP with
# 2,000 and 5,000 connections (open-loop load, durable journal and audit on). CLEARING_BENCH=0
# skips it.
if [ "${CLEARING_BENCH:-1}" != 0 ]; then
  echo "== clearing: rings, the engine, and dengbao clearing end to end (bench/clearing/run.sh)"
  "$(dirname "$0")/../bench/clearing/run.sh" "$build/dengbao"
fi
# The saga coordinator: 2-step transfer sagas with barrier participants on PostgreSQL, store on
# SQLite and on PostgreSQL. SAGA_BENCH=0 skips it.
if [ "${SAGA_BENCH:-1}" != 0 ]; then
  echo "== saga: dengbao saga, 2-step sagas with barriers (bench/saga/run.sh)"
  "$(dirname "$0")/../bench/saga/run.sh" "$build/dengbao" "$build/saga_load"
fi
