# Shared by the side-by-side benchmarks: source it after setting OUT and BIN.

# start_pair BERTH_PORT DIST_PORT: Berth (with the environment the caller exported) and
# Distribution 2.8.2 (Debian's docker-registry, deletes enabled) on loopback with fresh data
# directories under $OUT; both stopped on exit. Sets BP and DP (their pids) and BERTH_PW (the
# docker login password of Berth's root key).
start_pair() {
  local bport=$1 dport=$2 p
  "$BIN/berth" serve --listen "127.0.0.1:$bport" --data-dir "$OUT/berth-data" --log warn >"$OUT/berth.log" 2>&1 &
  BP=$!
  cat >"$OUT/dist.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $OUT/dist-data}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$dport}
YML
  docker-registry serve "$OUT/dist.yml" >"$OUT/dist.log" 2>&1 &
  DP=$!
  trap 'kill $BP $DP 2>/dev/null; wait 2>/dev/null' EXIT
  for p in "$bport" "$dport"; do
    for _ in $(seq 50); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v2/")" != 000 ] && break; sleep 0.2; done
  done
  BERTH_PW=$("$BIN/berth" get-login-password --data-dir "$OUT/berth-data")
}
