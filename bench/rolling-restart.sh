#!/usr/bin/env bash
# Rolling restart of a 3-member cluster under a write load: every member is stopped, restarted
# and waited for in turn (n1, n2, n3), once with SIGTERM — a leader hands leadership to its most
# up-to-date follower before it stops (docs/leader-transfer.md) — and once with SIGKILL (no
# hand-off: the others elect a new leader after an election timeout). Server defaults: 10 ms
# ticks, 1 s election timeout (etcd's).
#
# The load: 4 writers, each putting fresh keys through its own member over HTTP and failing over
# to the next member at once on an error, so a write fails only while no member can take it.
# The downtime of one restart is the longest gap between two acknowledged writes (cluster-wide)
# from the stop signal until the member serves again plus 2 s. At the end every acknowledged
# key is counted back (none may be missing).
#
# usage: bench/rolling-restart.sh [--engine omnipaxos|vr] [--mode both|term|kill] [--out DIR]
# SYNOD=path/to/synod skips the release build. Writes DIR/results.md, DIR/rolling-restart.svg
# (acknowledged writes per 100 ms, stops marked) and DIR/<mode>-*.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE=omnipaxos
MODE=both
OUT=""
BASE_PORT=${BASE_PORT:-7700}
WRITERS=4

while [[ $# -gt 0 ]]; do
  case $1 in
    --engine) ENGINE=$2; shift 2 ;;
    --mode) MODE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "rolling-restart: $*" >&2; }
die() { log "$*"; exit 1; }

if [[ -z "${SYNOD:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q --bin synod) || die "build failed"
  SYNOD="$ROOT/target/release/synod"
fi
OUT=${OUT:-$ROOT/target/rolling-restart/$(date +%Y%m%d-%H%M%S)-$ENGINE}
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rolling.XXXXXX")
declare -A PIDS=()
PROBE=""

cleanup() {
  [[ -n "$PROBE" ]] && kill "$PROBE" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

http() { echo "127.0.0.1:$((BASE_PORT + 10 * ($1 - 1) + 1))"; }
start_member() {
  "$SYNOD" server --config "$WORK/cluster.toml" --id "$1" --data-dir "$WORK/n$1" \
    >>"$WORK/n$1.log" 2>&1 </dev/null &
  PIDS[$1]=$!
}
healthy() { [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$(http "$1")/healthz") == 200 ]]; }
leader_of() {
  curl -s --max-time 1 "http://$(http "$1")/v1/status" |
    python3 -c 'import json,sys
try: print(json.load(sys.stdin)["leader"] or 0)
except Exception: print(0)'
}
wait_healthy() {
  local deadline=$((SECONDS + 60))
  until healthy "$1"; do
    [[ $SECONDS -lt $deadline ]] || die "n$1 not healthy in 60 s (see $WORK/n$1.log)"
    sleep 0.05
  done
}

# The writers (python3, standard library only): one success timestamp per line.
cat >"$WORK/probe.py" <<'EOF'
import http.client, json, sys, threading, time
ports, out, writers = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3])
lock = threading.Lock()
log = open(out, "w", buffering=1)
def writer(w):
    conns, home, n = {}, w % len(ports), 0
    while True:
        for k in range(len(ports)):
            p = ports[(home + k) % len(ports)]
            try:
                c = conns.get(p) or http.client.HTTPConnection("127.0.0.1", int(p), timeout=2)
                conns[p] = c
                c.request("PUT", f"/v1/kv/rr{w}-{n}", json.dumps({"value": str(n)}),
                          {"Content-Type": "application/json"})
                r = c.getresponse(); r.read()
                if r.status == 200:
                    with lock: log.write(f"{time.time():.4f} rr{w}-{n}\n")
                    n += 1
                    break
            except Exception:
                conns.pop(p, None)
                try: c.close()
                except Exception: pass
        else:
            time.sleep(0.002)
for w in range(writers):
    threading.Thread(target=writer, args=(w,), daemon=True).start()
while True: time.sleep(1)
EOF

# run MODE: a fresh cluster, the load, a rolling restart with SIGTERM or SIGKILL.
run() {
  local mode=$1 signal
  [[ $mode == term ]] && signal=TERM || signal=KILL
  rm -rf "$WORK"/n* "$WORK/cluster.toml"
  {
    echo "cluster_name = \"rolling-$mode-$$\""
    echo "engine = \"$ENGINE\""
    for i in 1 2 3; do
      echo; echo "[[members]]"; echo "id = $i"; echo "name = \"n$i\""
      echo "peer_addr = \"127.0.0.1:$((BASE_PORT + 10 * (i - 1)))\""
      echo "http_addr = \"$(http "$i")\""
      echo "grpc_addr = \"127.0.0.1:$((BASE_PORT + 10 * (i - 1) + 2))\""
    done
  } >"$WORK/cluster.toml"
  for i in 1 2 3; do start_member "$i"; done
  for i in 1 2 3; do wait_healthy "$i"; done
  local ports; ports="$(http 1 | cut -d: -f2),$(http 2 | cut -d: -f2),$(http 3 | cut -d: -f2)"
  python3 "$WORK/probe.py" "$ports" "$OUT/$mode-acks.txt" "$WRITERS" &
  PROBE=$!
  # Measurement window, not a wait for readiness: 5 s of undisturbed load as the baseline.
  sleep 5
  : >"$OUT/$mode-events.txt"
  for i in 1 2 3; do
    local was_leader=no
    [[ $(leader_of "$i") == "$i" ]] && was_leader=yes
    echo "$(date +%s.%N) stop n$i leader=$was_leader" >>"$OUT/$mode-events.txt"
    kill -"$signal" "${PIDS[$i]}"
    wait "${PIDS[$i]}" 2>/dev/null || true
    echo "$(date +%s.%N) exited n$i" >>"$OUT/$mode-events.txt"
    start_member "$i"
    wait_healthy "$i"
    echo "$(date +%s.%N) serving n$i" >>"$OUT/$mode-events.txt"
    # Load between restarts, so each restart's dip is measured on its own.
    sleep 3
  done
  # A tail of steady load after the last restart.
  sleep 2
  kill "$PROBE"; wait "$PROBE" 2>/dev/null || true; PROBE=""
  local stored
  stored=$(curl -s --max-time 10 "http://$(http 1)/v1/kv?prefix=rr&count_only=true" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])')
  echo "$stored" >"$OUT/$mode-stored.txt"
  cp "$WORK/cluster.toml" "$OUT/cluster.toml"
  for i in 1 2 3; do grep -hE "handing leadership|handed off|not handed off" "$WORK/n$i.log" >>"$OUT/$mode-handoffs.txt" || true; done
  for i in 1 2 3; do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; wait "${PIDS[$i]}" 2>/dev/null || true; done
  PIDS=()
}

case $MODE in
  both) run term; run kill ;;
  term|kill) run "$MODE" ;;
  *) die "--mode is both, term or kill" ;;
esac

python3 - "$OUT" "$ENGINE" "$MODE" >"$OUT/results.md" <<'EOF'
import pathlib, sys
out, engine, mode = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
modes = ["term", "kill"] if mode == "both" else [mode]
label = {"term": "SIGTERM (leader hands off first)", "kill": "SIGKILL (no hand-off)"}
print(f"rolling restart of 3 members, engine {engine}, 1 s election timeout, {4} writers\n")
print("| stop | member (leader?) | longest gap between acknowledged writes | acknowledged / stored |")
print("|---|---|---|---|")
for m in modes:
    acks = [l.split() for l in (out / f"{m}-acks.txt").read_text().split("\n") if l]
    times = sorted(float(t) for t, _ in acks)
    keys = {k for _, k in acks}
    stored = int((out / f"{m}-stored.txt").read_text())
    ev = [l.split() for l in (out / f"{m}-events.txt").read_text().split("\n") if l]
    stops = [(float(e[0]), e[2], e[3]) for e in ev if e[1] == "stop"]
    serving = [float(e[0]) for e in ev if e[1] == "serving"]
    worst = 0.0
    for (t0, member, leader), t1 in zip(stops, serving):
        inside = [t for t in times if t0 - 1 <= t <= t1 + 2]
        gap = max((b - a for a, b in zip(inside, inside[1:])), default=t1 + 2 - t0)
        worst = max(worst, gap)
        print(f"| {label[m]} | {member} ({leader.split('=')[1]}) | {gap * 1000:.0f} ms | {len(keys)} / {stored} |")
    print(f"| **{label[m]}** | **worst** | **{worst * 1000:.0f} ms** | {'none lost' if stored >= len(keys) else 'LOST WRITES'} |")
EOF
# The chart: acknowledged writes per 100 ms through each run, stops marked (the leader's in red).
python3 - "$OUT" "$ENGINE" "$MODE" >"$OUT/rolling-restart.svg" <<'EOF'
import pathlib, sys
out, engine, mode = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
modes = ["term", "kill"] if mode == "both" else [mode]
title = {"term": "SIGTERM: the leader hands off first", "kill": "SIGKILL: no hand-off"}
W, LEFT, TOP, PH, GAP, BUCKET = 900, 60, 30, 170, 50, 0.1
panels = []
for m in modes:
    times = sorted(float(l.split()[0]) for l in (out / f"{m}-acks.txt").read_text().split("\n") if l)
    ev = [l.split() for l in (out / f"{m}-events.txt").read_text().split("\n") if l]
    t0 = times[0]
    counts = [0] * (int((times[-1] - t0) / BUCKET) + 1)
    for t in times:
        counts[int((t - t0) / BUCKET)] += 1
    stops = [(float(e[0]) - t0, e[2], e[3].endswith("yes")) for e in ev if e[1] == "stop"]
    panels.append((m, counts, stops))
H = TOP + len(panels) * (PH + GAP)
span = max(len(c) for _, c, _ in panels) * BUCKET
peak = max(max(c) for _, c, _ in panels) or 1
x = lambda t: LEFT + (W - LEFT - 20) * t / span
print(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">')
print(f'<rect width="{W}" height="{H}" fill="white"/>')
print(f'<text x="{LEFT}" y="18" font-size="14">Rolling restart of 3 members under load, {engine}: acknowledged writes per 100 ms</text>')
for i, (m, counts, stops) in enumerate(panels):
    top = TOP + i * (PH + GAP) + 20
    y = lambda v: top + PH - PH * v / peak
    print(f'<text x="{LEFT}" y="{top - 6}">{title[m]}</text>')
    print(f'<line x1="{LEFT}" y1="{top + PH}" x2="{W - 20}" y2="{top + PH}" stroke="black"/>')
    print(f'<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{top + PH}" stroke="black"/>')
    print(f'<text x="{LEFT - 6}" y="{top + 4}" text-anchor="end">{peak}</text>')
    print(f'<text x="{LEFT - 6}" y="{top + PH}" text-anchor="end">0</text>')
    for s in range(0, int(span) + 1, 5):
        print(f'<text x="{x(s):.1f}" y="{top + PH + 14}" text-anchor="middle">{s} s</text>')
    for t, member, leader in stops:
        color = "#c0392b" if leader else "#7f8c8d"
        print(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + PH}" stroke="{color}" stroke-dasharray="4,3"/>')
        print(f'<text x="{x(t) + 3:.1f}" y="{top + 12}" fill="{color}">stop {member}{" (leader)" if leader else ""}</text>')
    pts = " ".join(f"{x(k * BUCKET):.1f},{y(c):.1f}" for k, c in enumerate(counts))
    print(f'<polyline points="{pts}" fill="none" stroke="#2c3e50" stroke-width="1"/>')
print("</svg>")
EOF
cat "$OUT/results.md" >&2
log "results in $OUT (chart: rolling-restart.svg)"
