#!/usr/bin/env bash
# The measurement EPaxos is for: EPaxos vs OmniPaxos vs VR, on 3 and 5 members, puts at 64 in
# flight spread over *all* members, with 0 %, 2 %, 25 % and 100 % of the puts on one hot key.
# Per run: throughput, p50/p99, the share of EPaxos commands that took the fast path (from the
# members' synod_fast_path_commits / synod_slow_path_commits), and CPU per member (from
# /proc/PID/stat). Then one run per engine with one member slowed by SIGSTOP/SIGCONT bursts
# (50 ms stopped out of every 100 ms) — the leader for OmniPaxos and VR, member 1 for EPaxos —
# with the load sent to the other members: does the slowest replica set the pace?
#
# usage: bench/conflicts.sh [--duration 5s] [--warmup 1s] [--engines epaxos,omnipaxos,vr]
#                           [--nodes 3,5] [--hot 0,2,25,100] [--no-slow] [--out DIR]
# Writes DIR/results.md (the README table), DIR/results.json and DIR/throughput.svg.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=5s
WARMUP=1s
ENGINES=epaxos,omnipaxos,vr
NODES=3,5
HOT=0,2,25,100
SLOW=1
OUT=""
BASE_PORT=${BASE_PORT:-7400}

while [[ $# -gt 0 ]]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --warmup) WARMUP=$2; shift 2 ;;
    --engines) ENGINES=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --hot) HOT=$2; shift 2 ;;
    --no-slow) SLOW=0; shift ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "conflicts: $*" >&2; }
die() { log "$*"; exit 1; }
command -v etcdctl >/dev/null || die "etcdctl not found (apt-get install -y etcd-client)"

(cd "$ROOT" && cargo build --release -q --bin synod) || die "build failed"
SYNOD="$ROOT/target/release/synod"
WORK=$(mktemp -d "$ROOT/target/conflicts.XXXXXX")
OUT=${OUT:-$ROOT/target/conflicts-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
HZ=$(getconf CLK_TCK)
DEV_PID=""
STOPPER=""

stop_cluster() {
  [[ -n "$STOPPER" ]] && { kill "$STOPPER" 2>/dev/null || true; wait "$STOPPER" 2>/dev/null || true; STOPPER=""; }
  # Resume anything a burst left stopped, so it can shut down.
  pkill -CONT -f "synod server --config $WORK/" 2>/dev/null || true
  if [[ -n "$DEV_PID" ]]; then
    kill -INT "$DEV_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DEV_PID" 2>/dev/null || true
    pkill -KILL -f "synod server --config $WORK/" 2>/dev/null || true
    wait "$DEV_PID" 2>/dev/null || true
    DEV_PID=""
  fi
}
trap 'stop_cluster; rm -rf "$WORK"' EXIT

# start ENGINE N: a fresh `synod dev` cluster; sets EPS (gRPC) and HTTP (http ports).
start_cluster() {
  local engine=$1 n=$2 i
  "$SYNOD" dev --nodes "$n" --engine "$engine" --base-port "$BASE_PORT" --fresh \
    --data-dir "$WORK/$engine-$n" >"$WORK/dev-$engine-$n.log" 2>&1 </dev/null &
  DEV_PID=$!
  EPS=(); HTTP=()
  for ((i = 1; i <= n; i++)); do
    EPS+=("127.0.0.1:$((BASE_PORT + 10 * (i - 1) + 2))")
    HTTP+=("127.0.0.1:$((BASE_PORT + 10 * (i - 1) + 1))")
  done
  local deadline=$((SECONDS + 60)) all
  all=$(IFS=,; echo "${EPS[*]}")
  until etcdctl --endpoints="$all" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; do
    kill -0 "$DEV_PID" 2>/dev/null || die "synod dev exited (see $WORK/dev-$engine-$n.log)"
    [[ $SECONDS -lt $deadline ]] || die "$engine x$n not healthy in 60 s"
    sleep 0.3
  done
}

member_pid() { pgrep -f "synod server --config $WORK/$1-$2/cluster.toml --id $3( |$)" | head -1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() {  # metric HTTP NAME → value (0 when absent)
  curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2; f=1} END {if (!f) print 0}'
}

# leader_index ENGINE N → the 1-based member the cluster calls leader (1 for EPaxos).
leader_index() {
  local i
  [[ $1 == epaxos ]] && { echo 1; return; }
  for ((i = 1; i <= $2; i++)); do
    if [[ $(metric "${HTTP[$((i - 1))]}" synod_is_leader) == 1 ]]; then echo "$i"; return; fi
  done
  echo 1
}

# run ENGINE N HOT TAG [TARGET_EPS] → one JSON line into $OUT/runs.jsonl
run_one() {
  local engine=$1 n=$2 hot=$3 tag=$4 eps=${5:-}
  [[ -n "$eps" ]] || eps=$(IFS=,; echo "${EPS[*]}")
  local pids=() cpu0=() fast0=0 slow0=0 i
  for ((i = 1; i <= n; i++)); do
    pids+=("$(member_pid "$engine" "$n" "$i")")
    cpu0+=("$(cpu_ticks "${pids[$((i - 1))]}")")
    fast0=$((fast0 + $(metric "${HTTP[$((i - 1))]}" synod_fast_path_commits)))
    slow0=$((slow0 + $(metric "${HTTP[$((i - 1))]}" synod_slow_path_commits)))
  done
  local t0 t1 json="$WORK/run.json"
  t0=$(date +%s.%N)
  "$SYNOD" bench --endpoints "$eps" --target all --in-flight 64 --workload put \
    --hot-key-pct "$hot" --duration "$DURATION" --warmup "$WARMUP" --json "$json" \
    --label "$engine" >"$WORK/bench.log" 2>&1 || die "bench failed: $(tail -3 "$WORK/bench.log")"
  t1=$(date +%s.%N)
  local fast1=0 slow1=0 cpus=""
  for ((i = 1; i <= n; i++)); do
    fast1=$((fast1 + $(metric "${HTTP[$((i - 1))]}" synod_fast_path_commits)))
    slow1=$((slow1 + $(metric "${HTTP[$((i - 1))]}" synod_slow_path_commits)))
    local d=$(( $(cpu_ticks "${pids[$((i - 1))]}") - ${cpu0[$((i - 1))]} ))
    cpus+="${cpus:+,}$(awk -v d="$d" -v hz="$HZ" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", 100 * d / hz / (b - a)}')"
  done
  python3 - "$json" "$engine" "$n" "$hot" "$tag" "$((fast1 - fast0))" "$((slow1 - slow0))" "$cpus" >>"$OUT/runs.jsonl" <<'EOF'
import json, sys
path, engine, n, hot, tag, fast, slow, cpus = sys.argv[1:]
r = json.load(open(path))["results"][0]
fast, slow = int(fast), int(slow)
print(json.dumps({
    "engine": engine, "nodes": int(n), "hot_key_pct": float(hot), "run": tag,
    "ops_s": round(r["throughput_ops_s"]), "p50_ms": r["latency"]["p50_ms"],
    "p99_ms": r["latency"]["p99_ms"], "errors": r["errors"],
    "fast_path_share": (fast / (fast + slow)) if fast + slow else None,
    "cpu_pct_per_member": [int(c) for c in cpus.split(",")],
}))
EOF
  log "$(tail -1 "$OUT/runs.jsonl")"
}

: >"$OUT/runs.jsonl"
IFS=, read -r -a engine_list <<<"$ENGINES"
IFS=, read -r -a node_list <<<"$NODES"
IFS=, read -r -a hot_list <<<"$HOT"
for n in "${node_list[@]}"; do
  for engine in "${engine_list[@]}"; do
    log "$engine, $n members"
    start_cluster "$engine" "$n"
    for hot in "${hot_list[@]}"; do run_one "$engine" "$n" "$hot" conflicts; done
    stop_cluster
  done
done

if [[ $SLOW -eq 1 ]]; then
  for engine in "${engine_list[@]}"; do
    log "$engine, 3 members, one member slowed"
    start_cluster "$engine" 3
    slow=$(leader_index "$engine" 3)
    pid=$(member_pid "$engine" 3 "$slow")
    others=()
    for ((i = 1; i <= 3; i++)); do [[ $i -ne $slow ]] && others+=("${EPS[$((i - 1))]}"); done
    ( while :; do kill -STOP "$pid" 2>/dev/null || exit 0; sleep 0.05; kill -CONT "$pid" 2>/dev/null || exit 0; sleep 0.05; done ) &
    STOPPER=$!
    run_one "$engine" 3 0 "slowed-n$slow" "$(IFS=,; echo "${others[*]}")"
    stop_cluster
  done
fi

python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl")]
json.dump(runs, open(f"{out}/results.json", "w"), indent=1)
def share(r):
    return "—" if r["fast_path_share"] is None else f'{100 * r["fast_path_share"]:.0f} %'
lines = ["| engine | members | hot key | puts/s | p50 ms | p99 ms | fast path | CPU % per member |",
         "|---|---|---|---|---|---|---|---|"]
for r in runs:
    what = f'{r["hot_key_pct"]:.0f} %' if r["run"] == "conflicts" else f'0 %, {r["run"]}'
    lines.append(f'| {r["engine"]} | {r["nodes"]} | {what} | {r["ops_s"]:,} | {r["p50_ms"]:.2f} | '
                 f'{r["p99_ms"]:.2f} | {share(r)} | {" / ".join(map(str, r["cpu_pct_per_member"]))} |')
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
# Throughput against the hot-key share: one line per engine and member count.
conf = [r for r in runs if r["run"] == "conflicts"]
series = {}
for r in conf:
    series.setdefault((r["engine"], r["nodes"]), []).append((r["hot_key_pct"], r["ops_s"]))
hots = sorted({r["hot_key_pct"] for r in conf})
ymax = max([r["ops_s"] for r in conf] + [1]) * 1.1
W, H, L, B = 640, 360, 70, 50
x = lambda h: L + (W - L - 20) * hots.index(h) / max(len(hots) - 1, 1)
y = lambda v: H - B - (H - B - 20) * v / ymax
colors = {"epaxos": "#d62728", "omnipaxos": "#1f77b4", "vr": "#2ca02c"}
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-12}" text-anchor="middle">share of puts on one hot key (%)</text>',
       f'<text x="16" y="{H/2}" transform="rotate(-90 16 {H/2})" text-anchor="middle">puts/s (64 in flight, all members)</text>']
for h in hots:
    svg.append(f'<text x="{x(h)}" y="{H-B+16}" text-anchor="middle">{h:g}</text>')
for i in range(5):
    v = ymax * i / 4
    svg.append(f'<text x="{L-6}" y="{y(v)+4}" text-anchor="end">{v/1000:.0f}k</text>')
for k, (key, pts) in enumerate(sorted(series.items())):
    engine, nodes = key
    c = colors.get(engine, "black")
    dash = "" if nodes == 3 else ' stroke-dasharray="6,4"'
    path = " ".join(f"{x(h)},{y(v)}" for h, v in sorted(pts))
    svg.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"{dash}/>')
    svg.append(f'<text x="{W-150}" y="{30 + 16*k}" fill="{c}">{engine}, {nodes} members</text>')
svg.append("</svg>")
open(f"{out}/throughput.svg", "w").write("\n".join(svg) + "\n")
print(open(f"{out}/results.md").read())
EOF
log "results in $OUT"
