# Shared by the side-by-side benchmarks: source it after setting OUT and BIN.

# start_pair BERTH_PORT DIST_PORT: Berth (with the environment the caller exported) and
# Distribution 2.8.2 (Debian's docker-registry, deletes enabled) on loopback with fresh data
# directories under $OUT; both stopped on exit. Sets BP and DP (their pids) and BERTH_PW (the
# docker login password of Berth's root key).
# STORAGE=s3: both store blobs on an S3 server instead ($S3_ENDPOINT, default the test suite's
# moto server from scripts/s3-test-server.sh), each in a fresh bucket of its own.
start_pair() {
  local bport=$1 dport=$2 p storage
  storage="filesystem: {rootdirectory: $OUT/dist-data}"
  if [ "${STORAGE:-fs}" = s3 ]; then
    S3_ENDPOINT=${S3_ENDPOINT:-$("$ROOT/scripts/s3-test-server.sh")}
    local tag; tag=$(date +%s)-$$
    curl -fsS -X PUT "$S3_ENDPOINT/berth-bench-$tag" >/dev/null && curl -fsS -X PUT "$S3_ENDPOINT/dist-bench-$tag" >/dev/null
    export BERTH_STORAGE=s3 BERTH_S3_BUCKET=berth-bench-$tag BERTH_S3_ENDPOINT=$S3_ENDPOINT BERTH_S3_PATH_STYLE=true \
      BERTH_S3_ACCESS_KEY_ID=bench BERTH_S3_SECRET_ACCESS_KEY=bench-secret
    storage="s3: {region: us-east-1, bucket: dist-bench-$tag, regionendpoint: '$S3_ENDPOINT', accesskey: bench, secretkey: bench-secret, secure: false, v4auth: true}"
  fi
  "$BIN/berth" serve --listen "127.0.0.1:$bport" --data-dir "$OUT/berth-data" --log warn >"$OUT/berth.log" 2>&1 &
  BP=$!
  cat >"$OUT/dist.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  $storage
  delete: {enabled: true}
http: {addr: 127.0.0.1:$dport}
YML
  # AWS_CA_BUNDLE (set on some machines for a proxy) makes its S3 client refuse to start.
  env -u AWS_CA_BUNDLE docker-registry serve "$OUT/dist.yml" >"$OUT/dist.log" 2>&1 &
  DP=$!
  trap 'kill $BP $DP 2>/dev/null; wait 2>/dev/null' EXIT
  for p in "$bport" "$dport"; do
    for _ in $(seq 50); do [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/v2/")" != 000 ] && break; sleep 0.2; done
  done
  BERTH_PW=$("$BIN/berth" get-login-password --data-dir "$OUT/berth-data")
}
