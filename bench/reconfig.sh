#!/usr/bin/env bash
# Availability while members are replaced, and how long a new member takes to catch up.
#
# A 3-member `synod dev` cluster is preloaded with --keys keys (256-byte values), then a closed-
# loop put load runs against the members that stay (member 1 and 2) while, one after another:
#   (a) member 3 is replaced: n4 added as a learner, started with --join, promoted once it caught
#       up, member 3 removed and stopped;
#   (b) a majority is replaced: n5 and n6 are added and promoted the same way, then members 1 and
#       2 are removed (the load moves to the new members first).
# Throughput per second (synod bench's progress line) is written with the moments of each step;
# the catch-up time is from `--join` to the learner's applied index reaching the leader's.
#
# usage: bench/reconfig.sh [--engine omnipaxos|vr] [--keys 1000000] [--out DIR]
# Writes DIR/timeline-{a,b}.csv, DIR/events.txt and DIR/results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE=omnipaxos
KEYS=1000000
OUT=""
BASE_PORT=${BASE_PORT:-7600}
IN_FLIGHT=32

while [[ $# -gt 0 ]]; do
  case $1 in
    --engine) ENGINE=$2; shift 2 ;;
    --keys) KEYS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

log() { echo "reconfig: $*" >&2; }
die() { log "$*"; exit 1; }
command -v etcdctl >/dev/null || die "etcdctl not found (apt-get install -y etcd-client)"
export ETCDCTL_API=3

(cd "$ROOT" && cargo build --release -q --bin synod) || die "build failed"
SYNOD="$ROOT/target/release/synod"
WORK=$(mktemp -d "$ROOT/target/reconfig.XXXXXX")
OUT=${OUT:-$ROOT/target/reconfig-results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
DEV_PID=""
declare -A JOINED=()

cleanup() {
  for pid in "${JOINED[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  [[ -n "$DEV_PID" ]] && kill -INT "$DEV_PID" 2>/dev/null || true
  sleep 1
  pkill -KILL -f "synod server --config $WORK/" 2>/dev/null || true
  pkill -KILL -f "synod server --join .* --data-dir $WORK/" 2>/dev/null || true
  [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

grpc() { echo "127.0.0.1:$((BASE_PORT + 10 * ($1 - 1) + 2))"; }
http() { echo "127.0.0.1:$((BASE_PORT + 10 * ($1 - 1) + 1))"; }
peer() { echo "127.0.0.1:$((BASE_PORT + 10 * ($1 - 1)))"; }
T0=$(date +%s.%N)
now() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }
event() { echo "$(now) $*" | tee -a "$OUT/events.txt" >&2; }

# applied ID → the member's applied index (0 when it does not answer)
applied() {
  curl -s --max-time 1 "http://$(http "$1")/v1/status" |
    python3 -c 'import json,sys
try: print(json.load(sys.stdin)["applied_index"])
except Exception: print(0)'
}

# add_member ID: member add (learner), start it with --join, wait until caught up, promote it.
add_member() {
  local id=$1 eps=$2 contacts=$3
  local start=$SECONDS
  until { etcdctl --endpoints="$eps" member add "n$id" --learner --peer-urls="http://$(peer "$id")" 2>&1 || true; } |
    grep -qE "added|Peer URLs already exists"; do
    (( SECONDS - start < 60 )) || die "member add n$id failed for 60 s"
    sleep 0.2
  done
  event "n$id added as a learner"
  "$SYNOD" server --join "$contacts" --config "$WORK/cluster/cluster.toml" --name "n$id" \
    --peer-addr "$(peer "$id")" --http-addr "$(http "$id")" --grpc-addr "$(grpc "$id")" \
    --data-dir "$WORK/n$id" >"$WORK/n$id.log" 2>&1 </dev/null &
  JOINED[$id]=$!
  local target
  event "n$id started with --join"
  local t_join; t_join=$(date +%s.%N)
  target=$(applied 1)
  until (( $(applied "$id") >= target )); do
    kill -0 "${JOINED[$id]}" 2>/dev/null || die "n$id exited (see $WORK/n$id.log)"
    (( SECONDS - start < 600 )) || die "n$id did not catch up in 600 s"
    sleep 0.2
  done
  local took; took=$(awk -v a="$t_join" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  event "n$id caught up with the leader's applied index $target in ${took} s"
  echo "n$id catch-up: ${took} s (to applied index $target)" >>"$OUT/catchup.txt"
  # An attempt whose reply was lost (a timeout across the epoch change) may have promoted it.
  until { etcdctl --endpoints="$eps" member promote "$id" 2>&1 || true; } | grep -qE "promoted|can only promote a learner member$"; do
    (( SECONDS - start < 660 )) || die "n$id was never promoted"
    sleep 0.2
  done
  event "n$id promoted"
}

# remove_member ID ENDPOINTS: member remove, then stop its process.
remove_member() {
  local id=$1 eps=$2
  local start=$SECONDS
  # Right after a promotion the new configuration's instance is still electing its leader.
  until { etcdctl --endpoints="$eps" member remove "$id" 2>&1 || true; } | grep -qE "removed|member not found"; do
    (( SECONDS - start < 300 )) || die "member remove $id failed for 300 s"
    sleep 0.2
  done
  event "n$id removed"
  sleep 1
  if [[ -n "${JOINED[$id]:-}" ]]; then kill -INT "${JOINED[$id]}" 2>/dev/null || true
  else pkill -INT -f "synod server --config $WORK/cluster/cluster.toml --id $id( |$)" || true; fi
  event "n$id stopped"
}

"$SYNOD" dev --nodes 3 --engine "$ENGINE" --base-port "$BASE_PORT" --fresh \
  --data-dir "$WORK/cluster" >"$WORK/dev.log" 2>&1 </dev/null &
DEV_PID=$!
ALL="$(grpc 1),$(grpc 2),$(grpc 3)"
deadline=$((SECONDS + 60))
until etcdctl --endpoints="$ALL" --dial-timeout=1s endpoint health >/dev/null 2>&1; do
  [[ $SECONDS -lt $deadline ]] || die "cluster not healthy in 60 s"
  sleep 0.3
done
log "preloading $KEYS keys"
"$SYNOD" bench --endpoints "$ALL" --workload get-serializable --keys "$KEYS" --value-size 256 \
  --count 1 --warmup 0s >"$WORK/preload.log" 2>&1 || die "preload failed: $(tail -2 "$WORK/preload.log")"

# start_load NAME ENDPOINTS: a closed-loop put load; its per-second progress goes to load-NAME.log.
start_load() {
  T0=$(date +%s.%N)
  echo "-- phase $1 (load on $2)" >>"$OUT/events.txt"
  "$SYNOD" bench --endpoints "$2" --target all --workload put --keys "$KEYS" \
    --in-flight "$IN_FLIGHT" --duration 600s --warmup 0s --progress --request-timeout 2s \
    2>"$WORK/load-$1.log" >/dev/null &
  LOAD=$!
  sleep 10
}

# stop_load NAME: ends the load and summarises it (baseline = its first 10 s).
stop_load() {
  sleep 10
  event "phase $1 done"
  kill -TERM "$LOAD" 2>/dev/null || true
  wait "$LOAD" 2>/dev/null || true
  tr '\r' '\n' <"$WORK/load-$1.log" | awk '/ops\/s last second/ {
    for (i = 1; i <= NF; i++) if ($(i+1) == "ops/s" && $(i+2) == "last") { n++; print n "," $i } }' \
    >"$OUT/timeline-$1.csv"
  python3 - "$OUT" "$1" >>"$OUT/results.md" <<'EOF'
import sys, pathlib
out, phase = pathlib.Path(sys.argv[1]), sys.argv[2]
tl = [float(l.split(",")[1]) for l in (out / f"timeline-{phase}.csv").read_text().split()]
base = sum(tl[1:9]) / max(1, len(tl[1:9]))
rest = tl[10:]
low = min(rest) if rest else 0
print(f"phase {phase}: baseline {base:.0f} puts/s (seconds 2-9); during the change (from second 11): "
      f"lowest second {low:.0f} puts/s ({100 * low / max(base, 1):.0f} %), "
      f"mean {sum(rest) / max(1, len(rest)):.0f} puts/s, {sum(1 for x in rest if x < 0.8 * base)} of "
      f"{len(rest)} seconds below 80 % of baseline, {sum(1 for x in rest if x == 0)} with no put completing")
EOF
}

# (a) replace member 3, load on members 1 and 2.
start_load a "$(grpc 1),$(grpc 2)"
add_member 4 "$(grpc 1),$(grpc 2)" "$(http 1),$(http 2),$(http 3)"
remove_member 3 "$(grpc 1),$(grpc 2)"
stop_load a
# (b) replace a majority: two new members, then members 1 and 2; load on member 4.
start_load b "$(grpc 4)"
add_member 5 "$(grpc 4)" "$(http 1),$(http 2),$(http 4)"
add_member 6 "$(grpc 4)" "$(http 1),$(http 2),$(http 4)"
remove_member 1 "$(grpc 4),$(grpc 5)"
remove_member 2 "$(grpc 4),$(grpc 5)"
stop_load b
{ echo; echo "events (seconds since the phase's load started):"; cat "$OUT/events.txt"; cat "$OUT/catchup.txt"; } >>"$OUT/results.md"
cat "$OUT/results.md" >&2
log "results in $OUT"
