# bench/lib.sh — what the bench scripts share (sourced, not run): stopping the processes they
# started, waiting until etcdctl finds endpoints healthy, and starting a 3-member etcd 3.4,
# plain or with client and peer TLS, and naming the commit the measured binary was built from.
# The sourcing script provides: WORK (a scratch directory), PIDS (an array), log(); for TLS,
# C (the directory `synod certs` wrote) and ETCD_TLS (etcdctl's TLS flags).

stop_all() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
# wait_healthy ENDPOINTS [etcdctl TLS flags...]
wait_healthy() {
  local eps=$1; shift
  for _ in $(seq 1 120); do
    etcdctl "$@" --endpoints="$eps" --dial-timeout=1s endpoint health >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  log "not healthy: $eps (logs in $WORK)"; exit 1
}

start_etcd() {   # start_etcd plain|tls
  local mode=$1 scheme=http i cluster="" eps=() extra=()
  [[ $mode == tls ]] && scheme=https && extra=(--cert-file "$C/server.pem" --key-file "$C/server-key.pem"
    --trusted-ca-file "$C/ca.pem" --client-cert-auth --peer-cert-file "$C/server.pem"
    --peer-key-file "$C/server-key.pem" --peer-trusted-ca-file "$C/ca.pem" --peer-client-cert-auth)
  for i in 1 2 3; do cluster+="${cluster:+,}e$i=$scheme://127.0.0.1:$((24800 + 10 * i + 1))"; done
  for i in 1 2 3; do
    local client=$((24800 + 10 * i)) peer=$((24800 + 10 * i + 1))
    etcd --name "e$i" --data-dir "$WORK/etcd-$mode/e$i" "${extra[@]}" \
      --listen-client-urls "$scheme://127.0.0.1:$client" --advertise-client-urls "$scheme://127.0.0.1:$client" \
      --listen-peer-urls "$scheme://127.0.0.1:$peer" --initial-advertise-peer-urls "$scheme://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-state new --log-level warn \
      >"$WORK/etcd-$mode-e$i.log" 2>&1 </dev/null &
    PIDS+=($!)
    eps+=("127.0.0.1:$client")
  done
  EPS=$(IFS=,; echo "${eps[*]}")
  if [[ $mode == tls ]]; then wait_healthy "$EPS" "${ETCD_TLS[@]}"; else wait_healthy "$EPS"; fi
}


# built_commit BINARY: the commit (12 hex digits) `BINARY --version` names, which is what ran —
# the tree's HEAD may be newer than the build. "unknown" for a build without one.
built_commit() {
  "$1" --version 2>/dev/null | sed -n 's/.*(commit \([0-9a-f]\{12\}\)[0-9a-f]*).*/\1/p' | grep . || echo unknown
}
