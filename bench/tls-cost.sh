#!/usr/bin/env bash
# tls-cost.sh — what TLS costs, Synod and etcd side by side: puts and gets at 1 and 64 in flight
# against a 3-member cluster with plain TCP and with TLS on the client and peer links (client
# certificates required on both), measured one cluster at a time with the same `synod bench`.
#
# Synod runs as `synod dev [--tls]` (OmniPaxos; --tls makes its own throwaway CA); etcd 3.4 as three
# members with `--cert-file --key-file --trusted-ca-file --client-cert-auth` and the peer
# equivalents, using certificates from `synod certs`. Every run: 8-byte keys, 256-byte values,
# 10,000 keys, 4 connections, the leader only.
#
# usage: bench/tls-cost.sh [--duration 8s] [--warmup 2s] [--out DIR]
# SYNOD_BIN (default target/release/synod; build it first). Writes DIR/results.md and the JSON.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=8s
WARMUP=2s
OUT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
SYNOD_BIN=${SYNOD_BIN:-$ROOT/target/release/synod}
[[ -x "$SYNOD_BIN" ]] || { echo "$SYNOD_BIN missing: cargo build --release --bin synod" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd missing: apt-get install -y etcd-server" >&2; exit 1; }
export ETCDCTL_API=3
OUT=${OUT:-$ROOT/target/tls-cost/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/tls-cost.XXXXXX")
PIDS=()
log() { echo "tls-cost: $*" >&2; }
trap 'stop_all; rm -rf "$WORK"' EXIT

source "$ROOT/bench/lib.sh"

"$SYNOD_BIN" certs --dir "$WORK/certs" >/dev/null
C=$WORK/certs
ETCD_TLS=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client-key.pem")

start_synod() {   # start_synod plain|tls
  local mode=$1 flags=()
  [[ $mode == tls ]] && flags=(--tls)
  "$SYNOD_BIN" dev --nodes 3 --base-port 7900 --fresh --data-dir "$WORK/synod-$mode" "${flags[@]}" \
    >"$WORK/synod-$mode.log" 2>&1 </dev/null &
  PIDS+=($!)
  EPS=127.0.0.1:7902,127.0.0.1:7912,127.0.0.1:7922
  local d=$WORK/synod-$mode/tls
  if [[ $mode == tls ]]; then
    for _ in $(seq 1 100); do [[ -f $d/client-key.pem ]] && break; sleep 0.1; done
    SYNOD_TLS=(--cacert "$d/ca.pem" --cert "$d/client.pem" --key "$d/client-key.pem")
    wait_healthy "$EPS" "${SYNOD_TLS[@]}"
  else
    wait_healthy "$EPS"
  fi
}

WORKLOADS=("put-1|--workload put --in-flight 1" "put-64|--workload put --in-flight 64"
           "get-1|--workload get --in-flight 1" "get-64|--workload get --in-flight 64")
run() {   # run LABEL [bench TLS flags...]
  local label=$1; shift
  for entry in "${WORKLOADS[@]}"; do
    local name=${entry%%|*} flags=${entry#*|}
    log "$label $name"
    # shellcheck disable=SC2086
    "$SYNOD_BIN" bench --endpoints "$EPS" --label "$label" $flags "$@" --key-size 8 --value-size 256 \
      --keys 10000 --connections 4 --target leader --duration "$DURATION" --warmup "$WARMUP" \
      --json "$OUT/$label-$name.json" >&2
  done
}

start_etcd plain; run etcd-plain; stop_all
start_etcd tls; run etcd-tls "${ETCD_TLS[@]}"; stop_all
start_synod plain; run synod-plain; stop_all
start_synod tls; run synod-tls "${SYNOD_TLS[@]}"; stop_all

field() { sed -n "s/.*\"$2\": \([-0-9.eE+]*\).*/\1/p" "$1" | head -n 1; }
{
  echo "TLS cost, $(date -u '+%Y-%m-%d %H:%M UTC'), synod $(built_commit "$SYNOD_BIN"), $(etcd --version | head -n 1)"
  echo
  echo "| workload | Synod plain ops/s | Synod TLS ops/s | TLS/plain | etcd plain ops/s | etcd TLS ops/s | TLS/plain | Synod plain p50 ms | Synod TLS p50 ms | etcd plain p50 ms | etcd TLS p50 ms |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for entry in "${WORKLOADS[@]}"; do
    n=${entry%%|*}
    sp=$(field "$OUT/synod-plain-$n.json" throughput_ops_s); st=$(field "$OUT/synod-tls-$n.json" throughput_ops_s)
    ep=$(field "$OUT/etcd-plain-$n.json" throughput_ops_s); et=$(field "$OUT/etcd-tls-$n.json" throughput_ops_s)
    r() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
    i() { awk -v a="$1" 'BEGIN { printf "%.0f", a }'; }
    m() { awk -v a="$1" 'BEGIN { printf "%.3f", a }'; }
    echo "| $n | $(i "$sp") | $(i "$st") | $(r "$st" "$sp") | $(i "$ep") | $(i "$et") | $(r "$et" "$ep") | $(m "$(field "$OUT/synod-plain-$n.json" p50_ms)") | $(m "$(field "$OUT/synod-tls-$n.json" p50_ms)") | $(m "$(field "$OUT/etcd-plain-$n.json" p50_ms)") | $(m "$(field "$OUT/etcd-tls-$n.json" p50_ms)") |"
  done
} | tee "$OUT/results.md"
