#!/usr/bin/env bash
# compare-etcd.sh — Synod against etcd on this machine, same workloads, one command.
#
# Starts a 3-member etcd (Debian's etcd-server) and a 3-node Synod on loopback, with their data
# under one temporary directory (same disk for both, default fsync behaviour for both), runs the
# same `synod bench` workloads against each, and prints a markdown table with Synod/etcd ratios,
# the machine and the date. Every process it starts is stopped on exit, also on Ctrl-C.
#
# The two clusters are measured one after the other, not side by side: on a 2-core machine an
# idle cluster's heartbeats, timers and garbage collector still take CPU from the one under load.
#
# Usage: bench/compare-etcd.sh [--only both|etcd|synod] [--etcd-members 3] [--duration 10s]
#                              [--warmup 2s] [--no-build] [--out DIR] [--keep-data]
#                              [--engines omnipaxos,vr] [--workloads put-1,put-64,get-1,get-64]
#                              [--coordination]
# --coordination also measures the coordination primitives on each cluster, at its leader:
# lease keep-alives per second (crates/bench/examples/leases.rs) and, when that example is
# built, lock acquire/release latency (crates/bench/examples/locks.rs); both are built with
# `cargo build --release -p synod-bench --examples` unless --no-build.
# --engines runs Synod once per engine (each a fresh 3-node `synod dev --engine E`); the first
# fills the Synod columns of the main table, and a second table puts every engine side by side.
# Environment: SYNOD_BIN (default target/release/synod), BENCH_CMD (default "$SYNOD_BIN bench",
#              e.g. a stand-alone build of crates/bench/examples/bench.rs), WORK_PARENT (where
#              the temporary data directory goes; default target/, i.e. the repository's disk).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ONLY=both
ETCD_MEMBERS=3
DURATION=10s
WARMUP=2s
BUILD=1
KEEP_DATA=0
OUT=""
ENGINES=omnipaxos
ONLY_WORKLOADS=""
COORD=0
# Ports: Synod's dev cluster uses 7000-7022 (member i: base+10(i-1) peer, +1 HTTP, +2 gRPC);
# etcd member i gets client 23800+10(i-1), peer +1 — nothing near Synod's dev ports or etcd's
# 2379/2380 defaults, so a developer's own etcd is not disturbed.
SYNOD_BASE_PORT=${SYNOD_BASE_PORT:-7000}
ETCD_BASE_PORT=${ETCD_BASE_PORT:-23800}
# How long a cluster may take to become healthy.
READY_TIMEOUT_S=60
# How long a stopped process may take to exit before it is killed.
STOP_GRACE_S=10

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --only) ONLY=$2; shift 2 ;;
    --etcd-members) ETCD_MEMBERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    --keep-data) KEEP_DATA=1; shift ;;
    --engines) ENGINES=$2; shift 2 ;;
    --workloads) ONLY_WORKLOADS=$2; shift 2 ;;
    --coordination) COORD=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "compare-etcd.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
case "$ONLY" in both|etcd|synod) ;; *) echo "--only must be both, etcd or synod" >&2; exit 2 ;; esac
[[ "$ETCD_MEMBERS" =~ ^[1-9]$ ]] || { echo "--etcd-members must be 1..9" >&2; exit 2; }

log() { printf '[compare-etcd] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- prerequisites (installs nothing) ------------------------------------------------------
if [[ "$ONLY" != synod ]]; then
  missing=()
  command -v etcd >/dev/null || missing+=(etcd-server)
  command -v etcdctl >/dev/null || missing+=(etcd-client)
  if [[ ${#missing[@]} -gt 0 ]]; then
    die "etcd is not installed. On Debian/Ubuntu: sudo apt-get install -y ${missing[*]}"
  fi
fi
command -v etcdctl >/dev/null || die "etcdctl (health checks) is missing: sudo apt-get install -y etcd-client"
export ETCDCTL_API=3

SYNOD_BIN=${SYNOD_BIN:-$ROOT/target/release/synod}
# The synod binary runs the Synod cluster and, unless BENCH_CMD says otherwise, the bench.
if [[ "$ONLY" != etcd || -z "${BENCH_CMD:-}" ]]; then
  if [[ $BUILD -eq 1 ]]; then
    log "building Synod (cargo build --release --bin synod)"
    (cd "$ROOT" && cargo build --release --bin synod) || die "cargo build failed"
  fi
  [[ -x "$SYNOD_BIN" ]] || die "$SYNOD_BIN not found (build it, or drop --no-build)"
fi
EXAMPLES=${EXAMPLES:-$ROOT/target/release/examples}
if [[ $COORD -eq 1 && $BUILD -eq 1 ]]; then
  log "building the coordination benchmarks (cargo build --release -p synod-bench --examples)"
  (cd "$ROOT" && cargo build --release -p synod-bench --examples) || die "cargo build failed"
fi
[[ $COORD -eq 0 || -x "$EXAMPLES/leases" ]] || die "$EXAMPLES/leases not found (drop --no-build)"
if [[ -n "${BENCH_CMD:-}" ]]; then
  read -r -a BENCH <<<"$BENCH_CMD"
else
  BENCH=("$SYNOD_BIN" bench)
fi
"${BENCH[@]}" --help >/dev/null 2>&1 || die "'${BENCH[*]} --help' failed: this synod has no bench command"

# ---- one temporary directory for everything ------------------------------------------------
WORK_PARENT=${WORK_PARENT:-$ROOT/target}
mkdir -p "$WORK_PARENT"
WORK=$(mktemp -d "$WORK_PARENT/compare-etcd.XXXXXX")
OUT=${OUT:-$WORK_PARENT/compare-etcd-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

PIDS=()          # every process this script started
SYNOD_DEV_PID=""

stop_pids() {
  local sig=$1; shift
  local p
  for p in "$@"; do kill "-$sig" "$p" 2>/dev/null || true; done
}

wait_gone() {   # wait_gone SECONDS PID... → 0 when all have exited
  local deadline=$((SECONDS + $1)); shift
  local p alive
  while :; do
    alive=0
    for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [[ $alive -eq 0 ]] && return 0
    [[ $SECONDS -ge $deadline ]] && return 1
    sleep 0.2
  done
}

stop_all() {
  [[ ${#PIDS[@]} -eq 0 ]] && return 0
  # synod dev stops its members itself on SIGINT (that is its Ctrl-C path); everything else,
  # including the members in case dev cannot, gets SIGTERM, then SIGKILL after the grace period.
  [[ -n "$SYNOD_DEV_PID" ]] && stop_pids INT "$SYNOD_DEV_PID"
  wait_gone 5 "${PIDS[@]}" || stop_pids TERM "${PIDS[@]}"
  wait_gone "$STOP_GRACE_S" "${PIDS[@]}" || { log "killing processes that did not stop"; stop_pids KILL "${PIDS[@]}"; }
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  SYNOD_DEV_PID=""
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  if [[ $KEEP_DATA -eq 1 ]]; then
    log "data kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

wait_healthy() {   # wait_healthy NAME ENDPOINTS PID...
  local name=$1 eps=$2; shift 2
  local deadline=$((SECONDS + READY_TIMEOUT_S)) p
  while ! etcdctl --endpoints="$eps" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; do
    for p in "$@"; do kill -0 "$p" 2>/dev/null || die "$name: process $p exited during start-up (logs in $WORK)"; done
    [[ $SECONDS -lt $deadline ]] || die "$name not healthy within ${READY_TIMEOUT_S}s (logs in $WORK)"
    sleep 0.5
  done
  log "$name healthy: $eps"
}

# ---- clusters ------------------------------------------------------------------------------
ETCD_EPS=""
start_etcd() {
  local i cluster="" eps=() pids=()
  for ((i = 1; i <= ETCD_MEMBERS; i++)); do
    cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ETCD_BASE_PORT + 10 * (i - 1) + 1))"
  done
  mkdir -p "$WORK/etcd"
  for ((i = 1; i <= ETCD_MEMBERS; i++)); do
    local client=$((ETCD_BASE_PORT + 10 * (i - 1))) peer=$((ETCD_BASE_PORT + 10 * (i - 1) + 1))
    etcd --name "e$i" --data-dir "$WORK/etcd/e$i" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token compare-etcd \
      --log-level warn >"$WORK/etcd/e$i.log" 2>&1 </dev/null &
    pids+=($!)
    PIDS+=($!)
    eps+=("127.0.0.1:$client")
  done
  ETCD_EPS=$(IFS=,; echo "${eps[*]}")
  wait_healthy "etcd ($ETCD_MEMBERS members)" "$ETCD_EPS" "${pids[@]}"
}

SYNOD_EPS=""
start_synod() {   # start_synod ENGINE
  local engine=$1 i eps=()
  "$SYNOD_BIN" dev --nodes 3 --engine "$engine" --base-port "$SYNOD_BASE_PORT" --fresh \
    --data-dir "$WORK/synod-$engine" >"$WORK/synod-dev-$engine.log" 2>&1 </dev/null &
  SYNOD_DEV_PID=$!
  PIDS+=("$SYNOD_DEV_PID")
  for ((i = 1; i <= 3; i++)); do eps+=("127.0.0.1:$((SYNOD_BASE_PORT + 10 * (i - 1) + 2))"); done
  SYNOD_EPS=$(IFS=,; echo "${eps[*]}")
  wait_healthy "synod $engine (3 nodes)" "$SYNOD_EPS" "$SYNOD_DEV_PID"
  # The members are dev's children; remember them so they are stopped even if dev cannot.
  local child
  for child in $(pgrep -P "$SYNOD_DEV_PID" 2>/dev/null || true); do PIDS+=("$child"); done
}

# ---- workloads -----------------------------------------------------------------------------
# name | flags; 8-byte keys, 256-byte values, same for both systems.
WORKLOADS=(
  "put-1|--workload put --in-flight 1"
  "put-64|--workload put --in-flight 64"
  "get-1|--workload get --in-flight 1"
  "get-64|--workload get --in-flight 64"
  "get-serializable-64|--workload get-serializable --in-flight 64"
  "txn-cas-64|--workload txn-cas --in-flight 64"
  "mixed-90/10-64|--workload mixed --read-ratio 0.9 --in-flight 64"
  "put-16-watchers-0|--workload put --in-flight 16"
  "put-16-watchers-100|--workload put --in-flight 16 --watchers 100"
  "put-16-watchers-10000|--workload put --in-flight 16 --watchers 10000"
)
if [[ -n "$ONLY_WORKLOADS" ]]; then
  selected=()
  for entry in "${WORKLOADS[@]}"; do
    [[ ",$ONLY_WORKLOADS," == *",${entry%%|*},"* ]] && selected+=("$entry")
  done
  [[ ${#selected[@]} -gt 0 ]] || die "--workloads matched none of: ${WORKLOADS[*]%%|*}"
  WORKLOADS=("${selected[@]}")
fi
IFS=, read -r -a ENGINE_LIST <<<"$ENGINES"
FIRST_ENGINE=${ENGINE_LIST[0]}
COMMON=(--key-size 8 --value-size 256 --keys 10000 --connections 4 --target leader
        --duration "$DURATION" --warmup "$WARMUP")

run_workloads() {   # run_workloads LABEL ENDPOINTS
  local label=$1 eps=$2 entry name flags file
  for entry in "${WORKLOADS[@]}"; do
    name=${entry%%|*}
    flags=${entry#*|}
    file="$OUT/$label-${name//\//_}.json"
    log "$label: $name"
    # shellcheck disable=SC2086  # flags are deliberately split
    "${BENCH[@]}" --endpoints "$eps" --label "$label" $flags "${COMMON[@]}" --json "$file" >&2 \
      || die "$label $name failed"
  done
}

run_coordination() {   # run_coordination LABEL ENDPOINTS
  [[ $COORD -eq 1 ]] || return 0
  local label=$1 eps="http://${2//,/,http://}"
  log "$label: lease keep-alives"
  "$EXAMPLES/leases" --endpoints "$eps" --duration "${DURATION%s}" --warmup "${WARMUP%s}" \
    >"$OUT/$label-lease-keepalive.json" || die "$label lease keep-alives failed"
  if [[ -x "$EXAMPLES/locks" ]]; then
    log "$label: lock acquire/release"
    "$EXAMPLES/locks" --endpoints "$eps" >"$OUT/$label-locks.json" || die "$label locks failed"
  fi
}

# jfield FILE KEY → KEY's number in a one-line JSON object (the coordination examples' output).
jfield() {
  [[ -f "$1" ]] || { echo ""; return; }
  grep -o "\"$2\":[-0-9.eE+]*" "$1" | head -n 1 | cut -d: -f2
}

# fanout FILE KEY → KEY inside the watchers' "fanout" summary.
fanout() {
  [[ -f "$1" ]] || { echo ""; return; }
  sed -n '/"fanout"/,/}/p' "$1" | sed -n "s/.*\"$2\": \([-0-9.eE+]*\).*/\1/p" | head -n 1
}

# field FILE KEY → the first numeric value of "KEY": in the pretty-printed JSON.
field() {
  [[ -f "$1" ]] || { echo ""; return; }
  sed -n "s/.*\"$2\": \([-0-9.eE+]*\).*/\1/p" "$1" | head -n 1
}

if [[ "$ONLY" != synod ]]; then
  start_etcd
  run_workloads etcd "$ETCD_EPS"
  run_coordination etcd "$ETCD_EPS"
  stop_all
fi
if [[ "$ONLY" != etcd ]]; then
  for engine in "${ENGINE_LIST[@]}"; do
    start_synod "$engine"
    run_workloads "synod-$engine" "$SYNOD_EPS"
    run_coordination "synod-$engine" "$SYNOD_EPS"
    stop_all
  done
fi

# ---- report --------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "–"; else printf "%.2f×", a / b }'; }
num() { awk -v a="$1" -v d="$2" 'BEGIN { if (a == "") print "–"; else printf "%.*f", d, a }'; }

{
  echo "## Synod vs etcd — $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(uname -sr)"
  echo "- disk: $(df -h --output=source,fstype "$WORK" | tail -n 1 | tr -s ' ')"
  [[ "$ONLY" != synod ]] && echo "- etcd: $(etcd --version 2>/dev/null | head -n 1 | sed 's/etcd Version: //'), $ETCD_MEMBERS members, fsync on (defaults)"
  [[ "$ONLY" != etcd ]] && echo "- synod: $("$SYNOD_BIN" --version 2>/dev/null | sed -n 's/.*(commit \([0-9a-f]\{12\}\).*/\1/p' | grep . || echo unknown), 3 nodes via synod dev, engine $FIRST_ENGINE (main table)"
  echo "- each run: $DURATION after $WARMUP warm-up, 8-byte keys, 256-byte values, 10000 keys, 4 connections, leader only"
  echo
  echo "| workload | Synod ops/s | etcd ops/s | ops/s Synod/etcd | Synod p50 ms | etcd p50 ms | Synod p99 ms | etcd p99 ms | p99 Synod/etcd | errors Synod / etcd |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for entry in "${WORKLOADS[@]}"; do
    name=${entry%%|*}
    s="$OUT/synod-$FIRST_ENGINE-${name//\//_}.json"
    e="$OUT/etcd-${name//\//_}.json"
    st=$(field "$s" throughput_ops_s); et=$(field "$e" throughput_ops_s)
    s50=$(field "$s" p50_ms); e50=$(field "$e" p50_ms)
    s99=$(field "$s" p99_ms); e99=$(field "$e" p99_ms)
    serr=$(field "$s" errors); eerr=$(field "$e" errors)
    echo "| $name | $(num "$st" 0) | $(num "$et" 0) | $(ratio "$st" "$et") | $(num "$s50" 3) | $(num "$e50" 3) | $(num "$s99" 3) | $(num "$e99" 3) | $(ratio "$s99" "$e99") | ${serr:-–} / ${eerr:-–} |"
  done
  watch_rows=""
  for entry in "${WORKLOADS[@]}"; do
    name=${entry%%|*}
    [[ "$entry" == *--watchers* ]] || continue
    s="$OUT/synod-$FIRST_ENGINE-${name//\//_}.json"
    e="$OUT/etcd-${name//\//_}.json"
    watch_rows+="| $name | $(num "$(field "$s" events_per_s)" 0) | $(num "$(field "$e" events_per_s)" 0) | $(num "$(fanout "$s" p50_ms)" 2) | $(num "$(fanout "$e" p50_ms)" 2) | $(num "$(fanout "$s" p99_ms)" 2) | $(num "$(fanout "$e" p99_ms)" 2) |"$'\n'
  done
  if [[ -n "$watch_rows" ]]; then
    echo
    echo "Watch fan-out (watchers over the whole keyspace on every member; latency = put sent → event received):"
    echo
    echo "| workload | Synod events/s | etcd events/s | Synod fan-out p50 ms | etcd fan-out p50 ms | Synod fan-out p99 ms | etcd fan-out p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$watch_rows"
  fi
  if [[ $COORD -eq 1 ]]; then
    s="$OUT/synod-$FIRST_ENGINE-lease-keepalive.json"; e="$OUT/etcd-lease-keepalive.json"
    echo
    echo "Coordination primitives, at the leader (16 keep-alive streams × 16 outstanding; locks: 500 uncontended rounds, then 16 contenders for 10 s):"
    echo
    echo "| measurement | Synod | etcd | Synod/etcd |"
    echo "|---|---:|---:|---:|"
    sk=$(jfield "$s" keepalives_per_s); ek=$(jfield "$e" keepalives_per_s)
    echo "| lease keep-alives/s | $(num "$sk" 0) | $(num "$ek" 0) | $(ratio "$sk" "$ek") |"
    echo "| keep-alive p50 ms | $(num "$(jfield "$s" p50_ms)" 2) | $(num "$(jfield "$e" p50_ms)" 2) | $(ratio "$(jfield "$s" p50_ms)" "$(jfield "$e" p50_ms)") |"
    echo "| keep-alive p99 ms | $(num "$(jfield "$s" p99_ms)" 2) | $(num "$(jfield "$e" p99_ms)" 2) | $(ratio "$(jfield "$s" p99_ms)" "$(jfield "$e" p99_ms)") |"
    s="$OUT/synod-$FIRST_ENGINE-locks.json"; e="$OUT/etcd-locks.json"
    for k in uncontended_acquire_p50_ms uncontended_acquire_p99_ms uncontended_release_p50_ms uncontended_release_p99_ms contended_acquire_p50_ms contended_acquire_p99_ms contended_locks_per_s; do
      [[ -f "$s" || -f "$e" ]] || break
      echo "| lock ${k//_/ } | $(num "$(jfield "$s" "$k")" 2) | $(num "$(jfield "$e" "$k")" 2) | $(ratio "$(jfield "$s" "$k")" "$(jfield "$e" "$k")") |"
    done
  fi
  if [[ "$ONLY" != etcd && ${#ENGINE_LIST[@]} -gt 1 ]]; then
    echo
    echo "Engines side by side (ops/s, p50 ms):"
    echo
    header="| workload |"; rule="|---|"
    for engine in "${ENGINE_LIST[@]}"; do header+=" $engine ops/s | $engine p50 |"; rule+="---:|---:|"; done
    [[ "$ONLY" != synod ]] && { header+=" etcd ops/s | etcd p50 |"; rule+="---:|---:|"; }
    echo "$header"; echo "$rule"
    for entry in "${WORKLOADS[@]}"; do
      name=${entry%%|*}
      row="| $name |"
      for engine in "${ENGINE_LIST[@]}"; do
        f="$OUT/synod-$engine-${name//\//_}.json"
        row+=" $(num "$(field "$f" throughput_ops_s)" 0) | $(num "$(field "$f" p50_ms)" 3) |"
      done
      if [[ "$ONLY" != synod ]]; then
        f="$OUT/etcd-${name//\//_}.json"
        row+=" $(num "$(field "$f" throughput_ops_s)" 0) | $(num "$(field "$f" p50_ms)" 3) |"
      fi
      echo "$row"
    done
  fi
  echo
  echo "Raw JSON per run: $OUT"
} | tee "$OUT/results.md"
