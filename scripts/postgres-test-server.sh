#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster for the tests (Debian's `postgresql` package) and prints
# its URL. Idempotent: a cluster already running in the directory is reused.
#   scripts/postgres-test-server.sh [start|stop]
set -euo pipefail
DIR=${BERTH_PG_DIR:-/tmp/berth-test-pg}
PORT=${BERTH_PG_PORT:-55432}
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$PGBIN" ] || { echo "PostgreSQL server binaries not found: apt-get install postgresql" >&2; exit 1; }
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-start}" in
stop)
  [ -d "$DIR/data" ] && as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  exit 0 ;;
start) ;;
*) echo "usage: $0 [start|stop]" >&2; exit 2 ;;
esac

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  as_pg "$PGBIN/initdb" -D "$DIR/data" -A trust -U berth >"$DIR/initdb.log" 2>&1 \
    || { cat "$DIR/initdb.log" >&2; exit 1; }
fi
if ! as_pg "$PGBIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  # fsync off: test data is disposable, and the durability under test is Berth's own.
  as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null \
    || { cat "$DIR/server.log" >&2; exit 1; }
fi
echo "postgres://berth@127.0.0.1:$PORT/postgres"
