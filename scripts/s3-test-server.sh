#!/usr/bin/env bash
# Starts a throw-away S3-compatible server for the tests (moto's server mode, from PyPI:
# `pip install 'moto[server]'`), creates the bucket `berth-test` and prints the endpoint URL.
# Idempotent: a server already answering on the port is reused.
#   scripts/s3-test-server.sh [start|stop]
# moto keeps objects in memory; it implements multipart uploads, UploadPartCopy, DeleteObjects
# and conditional writes (If-None-Match on PutObject and CompleteMultipartUpload) as S3 does.
set -euo pipefail
DIR=${BERTH_S3_DIR:-/tmp/berth-test-s3}
PORT=${BERTH_S3_PORT:-55433}
URL="http://127.0.0.1:$PORT"

case "${1:-start}" in
stop)
  [ -f "$DIR/pid" ] && kill "$(cat "$DIR/pid")" 2>/dev/null || true
  rm -f "$DIR/pid"; exit 0 ;;
start) ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

command -v moto_server >/dev/null || { echo "moto_server not found: pip install 'moto[server]'" >&2; exit 1; }
mkdir -p "$DIR"
if ! curl -fsS -o /dev/null "$URL/moto-api/" 2>/dev/null; then
  # Threaded, so that parallel tests and the three-node cluster are served at once.
  nohup moto_server -H 127.0.0.1 -p "$PORT" >"$DIR/server.log" 2>&1 &
  echo $! >"$DIR/pid"
  for _ in $(seq 300); do curl -fsS -o /dev/null "$URL/moto-api/" 2>/dev/null && break; sleep 0.1; done
  curl -fsS -o /dev/null "$URL/moto-api/" || { cat "$DIR/server.log" >&2; exit 1; }
fi
# Creating a bucket that exists is answered 409 by moto: fine.
curl -sS -o /dev/null -X PUT "$URL/berth-test" || true
echo "$URL"
