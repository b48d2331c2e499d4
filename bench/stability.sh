#!/usr/bin/env bash
# stability.sh — does a saturating put load alone move leadership? (issue #17, item 6)
#
# Starts a fresh 3-node `synod dev`, runs `synod bench` puts to ALL members for --duration,
# and prints the put latency percentiles, the leader changes the members counted during the
# measured run (`synod_leader_changes_total` after minus before, summed over members; each
# member counts every change of the leader it knows, so one handover shows up as up to 3) and
# the machine's load average before and after, so figures from a shared machine can be judged.
# Each member's /metrics after the run is kept in OUT/metrics-n<i>.txt (engine tick delay and
# persist time histograms: synod_engine_tick_delay_seconds, synod_engine_persist_seconds).
#
# Usage: bench/stability.sh [--duration 60s] [--in-flight 256] [--keys 200000] [--connections 4]
#                           [--engine omnipaxos] [--base-port 7100] [--out DIR]
#                           [--election-timeout-ticks N]
# --election-timeout-ticks runs the members with that election timeout (10 ms ticks) instead of
# `synod dev`'s 10 (100 ms); 100 is `synod server`'s default (1 s, etcd's).
# Environment: SYNOD_BIN (default target/release/synod).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SYNOD_BIN=${SYNOD_BIN:-$ROOT/target/release/synod}
DURATION=60s
IN_FLIGHT=256
KEYS=200000
CONNECTIONS=4
ENGINE=omnipaxos
BASE_PORT=7100
OUT=""
# How long the cluster may take to elect a leader.
READY_TIMEOUT_S=60

while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --in-flight) IN_FLIGHT=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --engine) ENGINE=$2; shift 2 ;;
    --base-port) BASE_PORT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --election-timeout-ticks) export SYNOD_ELECTION_TIMEOUT_TICKS=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$ROOT/target/stability-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

# Everything printed from here on is also kept in OUT/summary.txt.
exec > >(tee "$OUT/summary.txt") 2>&1

DEV_PID=""
cleanup() {
  if [[ -n $DEV_PID ]] && kill -0 "$DEV_PID" 2>/dev/null; then
    kill -INT "$DEV_PID" 2>/dev/null || true
    wait "$DEV_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

http_port() { echo $((BASE_PORT + 10 * ($1 - 1) + 1)); }
grpc_port() { echo $((BASE_PORT + 10 * ($1 - 1) + 2)); }

# Sum over members of one counter from /metrics.
metric_sum() {
  local name=$1 total=0 v
  for i in 1 2 3; do
    v=$(curl -fsS --max-time 2 "http://127.0.0.1:$(http_port "$i")/metrics" \
      | awk -v n="$name" '$1 == n { print $2 }')
    total=$((total + ${v%.*}))
  done
  echo "$total"
}

leaders() {
  for i in 1 2 3; do
    curl -fsS --max-time 2 "http://127.0.0.1:$(http_port "$i")/v1/status" \
      | jq -r --arg n "$i" 'select(.leader != null) | "n\($n) sees leader n\(.leader)"'
  done
}

"$SYNOD_BIN" dev --fresh --engine "$ENGINE" --base-port "$BASE_PORT" \
  --data-dir "$OUT/data" >"$OUT/dev.log" 2>&1 &
DEV_PID=$!
deadline=$((SECONDS + READY_TIMEOUT_S))
until grep -q "leader" "$OUT/dev.log" 2>/dev/null && [[ $(leaders | wc -l) -eq 3 ]]; do
  if ((SECONDS > deadline)); then
    echo "cluster not ready within ${READY_TIMEOUT_S}s; see $OUT" >&2
    exit 1
  fi
  sleep 0.2
done

endpoints="127.0.0.1:$(grpc_port 1),127.0.0.1:$(grpc_port 2),127.0.0.1:$(grpc_port 3)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  commit: $("$SYNOD_BIN" --version | sed -n 's/.*(commit \([0-9a-f]\{12\}\).*/\1/p')"
echo "election timeout: ${SYNOD_ELECTION_TIMEOUT_TICKS:-10} ticks of 10 ms"
echo "load before: $(uptime)"
leaders
before=$(metric_sum synod_leader_changes_total)
"$SYNOD_BIN" bench --endpoints "$endpoints" --target all --workload put \
  --in-flight "$IN_FLIGHT" --connections "$CONNECTIONS" --keys "$KEYS" \
  --duration "$DURATION" --json "$OUT/bench.json" --label stability | tee "$OUT/bench.txt"
after=$(metric_sum synod_leader_changes_total)
for i in 1 2 3; do
  curl -fsS --max-time 2 "http://127.0.0.1:$(http_port "$i")/metrics" >"$OUT/metrics-n$i.txt" || true
done
echo "load after: $(uptime)"
leaders
# Engine stalls per member: ticks run more than 100 ms / 1 s late, persists over 100 ms.
stalls() {
  awk '
    /^synod_engine_tick_delay_seconds_count/ { ticks = $2 }
    /^synod_engine_tick_delay_seconds_bucket\{le="0.1024"\}/ { t100 = $2 }
    /^synod_engine_tick_delay_seconds_bucket\{le="1.6384"\}/ { t1s = $2 }
    /^synod_engine_persist_seconds_count/ { persists = $2 }
    /^synod_engine_persist_seconds_bucket\{le="0.1024"\}/ { p100 = $2 }
    END { if (ticks == 0) { print "no engine histograms (a build before they existed)"; exit }
          printf "%d ticks, %d late > 100 ms, %d late > 1.6 s; %d persists, %d > 100 ms\n",
          ticks, ticks - t100, ticks - t1s, persists, persists - p100 }' "$1"
}
for i in 1 2 3; do
  [[ -s $OUT/metrics-n$i.txt ]] && echo "n$i engine: $(stalls "$OUT/metrics-n$i.txt")"
done
echo "leader changes during the run (sum over members): $((after - before))"
echo "output: $OUT"
