#!/usr/bin/env bash
# engine-threads.sh — what a pool of engine threads buys one member: puts at 256 in flight on a
# ONE-member Synod (OmniPaxos) with 1 group, and with 4 groups worked on by 1 and by 2 engine
# threads (`[partition] engine_threads`, `synod dev --engine-threads`), the three runs
# interleaved for several rounds so that a noisy machine affects them alike. One member, so
# that the member's own cores decide (with 3 members on 2 cores, every core is busy anyway and
# `synod dev` gives each member one thread). Each key goes to its group's range endpoint
# (`synod bench --target ranges`; with one member every range is on it).
#
# usage: bench/engine-threads.sh [--duration 15s] [--warmup 3s] [--rounds 3] [--out DIR]
# SYNOD_BIN (default target/release/synod; build it first). Writes DIR/results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=15s
WARMUP=3s
ROUNDS=3
OUT=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
SYNOD_BIN=${SYNOD_BIN:-$ROOT/target/release/synod}
[[ -x "$SYNOD_BIN" ]] || { echo "$SYNOD_BIN missing: cargo build --release --bin synod" >&2; exit 1; }
OUT=${OUT:-$ROOT/target/engine-threads/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/engine-threads.XXXXXX")
PIDS=()
KEYS=10000
log() { echo "engine-threads: $*" >&2; }
trap 'stop_all; rm -rf "$WORK"' EXIT
source "$ROOT/bench/lib.sh"

run() {   # run GROUPS THREADS ROUND
  local g=$1 t=$2 r=$3 label="g$1-t$2-r$3" splits="" i flags=()
  for ((i = 1; i < g; i++)); do splits+="${splits:+,}$(printf '%08d' $((i * KEYS / g)))"; done
  [[ $g -gt 1 ]] && flags=(--split-keys "$splits")
  "$SYNOD_BIN" dev --nodes 1 --base-port 7900 --fresh --data-dir "$WORK/$label" \
    --engine-threads "$t" "${flags[@]}" >"$WORK/$label.log" 2>&1 </dev/null &
  PIDS+=($!)
  wait_healthy 127.0.0.1:7902
  local route=(--target leader --endpoints 127.0.0.1:7902)
  if [[ $g -gt 1 ]]; then
    local eps
    eps=$(printf '127.0.0.1:7902,%.0s' $(seq 1 "$g"))   # one endpoint per range, all this member
    route=(--target ranges --route-splits "$splits" --endpoints "${eps%,}")
  fi
  log "$label"
  "$SYNOD_BIN" bench "${route[@]}" --label "$label" --workload put --in-flight 256 \
    --key-size 8 --value-size 256 --keys "$KEYS" --connections 6 --duration "$DURATION" \
    --warmup "$WARMUP" --json "$OUT/$label.json" >&2
  stop_all
}

for ((r = 1; r <= ROUNDS; r++)); do
  run 1 1 "$r"
  run 4 1 "$r"
  run 4 2 "$r"
done

field() { sed -n "s/.*\"$2\": \([-0-9.eE+]*\).*/\1/p" "$1" | head -n 1; }
{
  echo "Engine threads, 1 member, $(date -u '+%Y-%m-%d %H:%M UTC'), synod $(built_commit "$SYNOD_BIN"), $(nproc) cores"
  echo
  echo "| round | 1 group | 4 groups, 1 thread | 4 groups, 2 threads | 2 threads vs 1 | 2 threads vs 1 group |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for ((r = 1; r <= ROUNDS; r++)); do
    a=$(field "$OUT/g1-t1-r$r.json" throughput_ops_s)
    b=$(field "$OUT/g4-t1-r$r.json" throughput_ops_s)
    c=$(field "$OUT/g4-t2-r$r.json" throughput_ops_s)
    awk -v r="$r" -v a="$a" -v b="$b" -v c="$c" \
      'BEGIN { printf "| %d | %.0f | %.0f | %.0f | %.2f | %.2f |\n", r, a, b, c, c / b, c / a }'
  done
} | tee "$OUT/results.md"
