#!/usr/bin/env bash
# groups.sh — what partitioning buys on this machine: puts at 256 in flight on a 3-member Synod
# cluster (OmniPaxos) with 1, 2, 4 and 8 consensus groups, and etcd 3.4 beside it, one cluster at
# a time with the same `synod bench`.
#
# The 1-group row is the ordinary, unpartitioned cluster with the load sent to its leader (its
# best case). Partitioned clusters run twice: with the load spread over every member (every
# member leads some groups; a request for a group led elsewhere is forwarded by the member that
# received it), as an etcd client would send it, and "routed", each key sent to its group's
# leader (`synod bench --target ranges`), the partitioned best case as the 1-group row is. Split
# keys cut the bench's key space (10,000 8-digit keys) into equal ranges. Per member, the CPU time
# it used per acknowledged put is read from /proc before and after the timed run.
#
# usage: bench/groups.sh [--duration 10s] [--warmup 3s] [--groups "1 2 4 8"] [--out DIR]
# SYNOD_BIN (default target/release/synod; build it first). Writes DIR/results.md and the JSON.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=10s
WARMUP=3s
GROUP_COUNTS="1 2 4 8"
OUT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --groups) GROUP_COUNTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
SYNOD_BIN=${SYNOD_BIN:-$ROOT/target/release/synod}
[[ -x "$SYNOD_BIN" ]] || { echo "$SYNOD_BIN missing: cargo build --release --bin synod" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd missing: apt-get install -y etcd-server" >&2; exit 1; }
export ETCDCTL_API=3
OUT=${OUT:-$ROOT/target/groups/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/groups.XXXXXX")
PIDS=()
KEYS=10000
log() { echo "groups: $*" >&2; }
trap 'stop_all; rm -rf "$WORK"' EXIT

source "$ROOT/bench/lib.sh"

# Split keys cutting 0..KEYS into $1 equal ranges, as the bench's zero-padded 8-digit keys.
splits() {
  local g=$1 i out=""
  for ((i = 1; i < g; i++)); do out+="${out:+,}$(printf '%08d' $((i * KEYS / g)))"; done
  echo "$out"
}

# Total CPU seconds (user + system) the processes in $MEMBER_PIDS used so far, one per member.
cpu_of() {
  local p tck
  tck=$(getconf CLK_TCK)
  for p in $MEMBER_PIDS; do
    awk -v t="$tck" '{ printf "%.3f ", ($14 + $15) / t }' "/proc/$p/stat"
  done
}

start_synod() {   # start_synod GROUP_COUNTS
  local g=$1 flags=()
  [[ $g -gt 1 ]] && flags=(--split-keys "$(splits "$g")")
  "$SYNOD_BIN" dev --nodes 3 --base-port 7900 --fresh --data-dir "$WORK/synod-$g" "${flags[@]}" \
    >"$WORK/synod-$g.log" 2>&1 </dev/null &
  PIDS+=($!)
  EPS=127.0.0.1:7902,127.0.0.1:7912,127.0.0.1:7922
  wait_healthy "$EPS"
  # Leaders reach their preferred members within a few election timeouts; wait (at most 10 s)
  # until every group but 0 (placed by election priority, never moved) is led by its own.
  if [[ $g -gt 1 ]]; then
    for _ in $(seq 1 100); do
      curl -sf http://127.0.0.1:7901/v1/status | python3 -c 'import json, sys
g = json.load(sys.stdin)["groups"]
sys.exit(0 if all(x["leader"] == x["preferred_leader"] for x in g[1:]) else 1)' && break
      sleep 0.1
    done
  fi
  MEMBER_PIDS=$(pgrep -f "synod-$g/cluster.toml" | tr '\n' ' ')
}

# The layout as `synod bench --target ranges` takes it: "SPLITS ENDPOINTS", each group's range
# start (the first group's excepted) and its leader's gRPC endpoint, in key order. Member n of
# `synod dev --base-port 7900` serves gRPC on 7900 + 10 (n - 1) + 2.
layout_routes() {
  curl -sf http://127.0.0.1:7901/v1/status | python3 -c 'import json, sys
g = sorted(json.load(sys.stdin)["groups"], key=lambda x: x["start"])
assert all(x["leader"] for x in g), "a group without a leader"
print(",".join(x["start"] for x in g[1:]),
      ",".join("127.0.0.1:%d" % (7902 + 10 * (x["leader"] - 1)) for x in g))'
}

run() {   # run LABEL TARGET [ENDPOINTS SPLITS]
  local label=$1 target=$2 eps=${3:-$EPS} before after route=()
  [[ -n ${4:-} ]] && route=(--route-splits "$4")
  log "$label"
  before=$(cpu_of)
  "$SYNOD_BIN" bench --endpoints "$eps" "${route[@]}" --label "$label" --workload put \
    --in-flight 256 --key-size 8 --value-size 256 --keys "$KEYS" --connections 6 \
    --target "$target" --duration "$DURATION" --warmup "$WARMUP" --json "$OUT/$label.json" >&2
  after=$(cpu_of)
  echo "$before" >"$OUT/$label.cpu-before"
  echo "$after" >"$OUT/$label.cpu-after"
}

for g in $GROUP_COUNTS; do
  start_synod "$g"
  if [[ $g -gt 1 ]]; then
    "$ROOT/target/release/synodctl" --endpoints 127.0.0.1:7901 range list >"$OUT/synod-$g.ranges" 2>&1 || true
    run "synod-$g" all
    read -r splits eps < <(layout_routes)
    run "synod-$g-routed" ranges "$eps" "$splits"
  else
    run "synod-$g" leader
  fi
  stop_all
done
start_etcd plain; MEMBER_PIDS="${PIDS[*]}"; run etcd leader; stop_all

field() { sed -n "s/.*\"$2\": \([-0-9.eE+]*\).*/\1/p" "$1" | head -n 1; }
# CPU microseconds per acknowledged put, per member: (after - before) / (ops/s * seconds), the
# warm-up (inside the CPU window) counted at the measured rate.
WARMUP_S=${WARMUP%s}
cpu_per_put() {
  local label=$1 ops secs
  ops=$(field "$OUT/$label.json" throughput_ops_s)
  secs=$(awk -v e="$(field "$OUT/$label.json" elapsed_s)" -v w="$WARMUP_S" 'BEGIN { print e + w }')
  paste -d' ' <(tr ' ' '\n' <"$OUT/$label.cpu-before" | sed '/^$/d') \
              <(tr ' ' '\n' <"$OUT/$label.cpu-after" | sed '/^$/d') |
    awk -v o="$ops" -v s="${secs:-0}" '{ d = $2 - $1; printf "%s%.0f", (NR > 1 ? " / " : ""), (o * s > 0 ? d * 1e6 / (o * s) : 0) }'
}
{
  echo "Partitioning, $(date -u '+%Y-%m-%d %H:%M UTC'), synod $(built_commit "$SYNOD_BIN"), $(etcd --version | head -n 1), $(nproc) cores"
  echo
  echo "| cluster | puts/s at 256 in flight | vs 1 group | p50 ms | p99 ms | CPU µs per put, each member |"
  echo "|---|---:|---:|---:|---:|---|"
  base=$(field "$OUT/synod-1.json" throughput_ops_s)
  for label in $(for g in $GROUP_COUNTS; do echo "synod-$g synod-$g-routed"; done) etcd; do
    [[ -f $OUT/$label.json ]] || continue
    ops=$(field "$OUT/$label.json" throughput_ops_s)
    echo "| $label | $(awk -v a="$ops" 'BEGIN { printf "%.0f", a }') | $(awk -v a="$ops" -v b="$base" 'BEGIN { printf "%.2f", a / b }') | $(awk -v a="$(field "$OUT/$label.json" p50_ms)" 'BEGIN { printf "%.2f", a }') | $(awk -v a="$(field "$OUT/$label.json" p99_ms)" 'BEGIN { printf "%.2f", a }') | $(cpu_per_put "$label") |"
  done
} | tee "$OUT/results.md"
