#!/usr/bin/env bash
# Two `berth serve` nodes on one PostgreSQL database (one data directory stands in for shared blob
# storage), running garbage collection and lifecycle every second:
#  - each round of either job runs on exactly one node: the round numbers both logs show are all
#    different, and together they are every round the database counted;
#  - the node holding scan on push (an outbox consumer) is killed with -9; an image then pushed to
#    the other node reads IN_PROGRESS, and is scanned once the dead node's lease has run out; the
#    periodic jobs go on there;
#  - the node copying an image to another region (a third Berth) is killed with -9 in the middle
#    of a large layer; the other node finishes the copy after the lease, and the image arrives;
#  - SIGTERM stops every background worker within the deadline, and the log says so.
source "$(dirname "$0")/lib.sh"
need psql "apt-get install postgresql"
need skopeo "apt-get install skopeo"
need aws "pip install awscli"
[ -n "${BERTH_TEST_POSTGRES_URL:-}" ] || fail "needs BERTH_TEST_POSTGRES_URL (./test.sh starts PostgreSQL)"
P=$E2E_WORK/nodes; rm -rf "$P"; mkdir -p "$P"
db="e2e_nodes_$$"
psql "$BERTH_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
DB_URL="${BERTH_TEST_POSTGRES_URL%/*}/$db"
BERTH_DATA=$P/data
BERTH_DB_ARGS=(--database-url "$DB_URL")
sql() { psql "$DB_URL" -tAc "$1"; }
export BERTH_GC_INTERVAL=1s BERTH_LIFECYCLE_INTERVAL=1s BERTH_GC_GRACE=1h

# Another region, a replication destination of both nodes (identical configuration files).
PR=$(free_port); R=127.0.0.1:$PR
BERTH_REGION=eu-west-1 "$BERTH" serve --listen "$R" --data-dir "$P/region-data" >"$P/region.log" 2>&1 &
PID_r=$!
wait_http "http://$R/v2/"
printf '[[peers]]\nregion = "eu-west-1"\nurl = "http://%s"\ncredentials_file = "%s"\n' "$R" "$P/region-data/root-credentials" >"$P/node.toml"
start_node() { # NAME: sets PID_<NAME>, PORT_<NAME>
  local port; port=$(free_port)
  "$BERTH" serve --config "$P/node.toml" --listen "127.0.0.1:$port" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/$1.log" 2>&1 &
  eval "PID_$1=$! PORT_$1=$port"
  wait_http "http://127.0.0.1:$port/v2/"
}
cleanup() { kill -9 "${PID_a:-}" "${PID_b:-}" "${PID_c:-}" "${PID_r:-}" 2>/dev/null || true; }
trap cleanup EXIT
node_of() { grep -o 'background workers started node=[0-9a-f]*' "$P/$1.log" | head -1 | sed 's/.*node=//'; }
rounds() { # JOB LOG...: the round numbers of JOB's completed rounds in the logs (none: nothing)
  { cat "${@:2}" | grep -F "job=\"$1\"" | grep -E 'garbage collected|lifecycle policies applied' \
    | grep -o ' round=[0-9]*' | cut -d= -f2; } || true
}

step "two nodes on one database"
start_node a
start_node b
REG=127.0.0.1:$PORT_a; login_berth
node_a=$(node_of a); node_b=$(node_of b)
[ -n "$node_a" ] && [ -n "$node_b" ] && [ "$node_a" != "$node_b" ] || fail "node names: '$node_a' '$node_b'"
sleep 8

step "each GC and lifecycle round ran on exactly one node"
check_rounds() { # JOB: unique round numbers, as many as the database counted
  local all dups n runs
  all=$(rounds "$1" "$P/a.log" "$P/b.log" | sort -n)
  dups=$(uniq -d <<<"$all")
  [ -z "$dups" ] || fail "$1 rounds that ran on both nodes: $dups"
  n=$(grep -c . <<<"$all" || true)
  runs=$(sql "SELECT runs FROM jobs WHERE unique_key = 'periodic:$1'")
  # The round in flight now may be counted in one place and not yet in the other.
  [ "$n" -ge 4 ] && [ $((runs - n)) -le 1 ] && [ $((n - runs)) -le 1 ] || fail "$1: $n rounds logged, $runs counted"
  echo "  $1: $n rounds, all different ($(rounds "$1" "$P/a.log" | grep -c . || true) on a, $(rounds "$1" "$P/b.log" | grep -c . || true) on b); the database counts $runs"
}
check_rounds gc
check_rounds lifecycle

step "kill -9 the node that holds scan on push; the other takes it up after the lease"
holder=$(sql "SELECT claimed_by FROM jobs WHERE unique_key = 'consumer:scan_on_push'")
case "$holder" in
  "$node_a") dead=a; live=b ;;
  "$node_b") dead=b; live=a ;;
  *) fail "scan on push is held by '$holder', neither node ($node_a, $node_b)" ;;
esac
eval "dead_pid=\$PID_$dead live_port=\$PORT_$live"
kill -9 "$dead_pid"; wait "$dead_pid" 2>/dev/null || true
killed=$(date +%s)
REG=127.0.0.1:$live_port; login_berth
build_layouts "$E2E_WORK/layouts"
aws ecr create-repository --repository-name watched --image-scanning-configuration scanOnPush=true \
  --endpoint-url "$ECR_URL" >/dev/null
skopeo copy -q --dest-tls-verify=false --dest-creds "AWS:$BERTH_PASSWORD" "oci:$E2E_WORK/layouts/oci:amd64" \
  "docker://$REG/watched:1" || fail "push to node $live"
status() { aws ecr describe-image-scan-findings --repository-name watched --image-id imageTag=1 \
  --endpoint-url "$ECR_URL" --query imageScanStatus.status --output text 2>&1; }
first=$(status)
[ "$first" = IN_PROGRESS ] || fail "right after the push the scan reads '$first'"
for _ in $(seq 1 120); do s=$(status); [ "$s" = IN_PROGRESS ] || break; sleep 0.5; done
took=$(( $(date +%s) - killed ))
[ "$s" = COMPLETE ] || fail "the scan ended '$s'"
[ "$(sql "SELECT claimed_by FROM jobs WHERE unique_key = 'consumer:scan_on_push'")" = "$(node_of $live)" ] \
  || fail "scan on push is not held by node $live"
echo "  scanned $took s after the kill (lease 30 s): scan on push moved to node $live"
# The dead node's GC lease runs out too (30 s after its last renewal); then the live node runs it.
before=$(rounds gc "$P/$live.log" | sort -n | tail -1)
for _ in $(seq 1 90); do
  after=$(rounds gc "$P/$live.log" | sort -n | tail -1)
  [ "${after:-0}" -gt "${before:-0}" ] && break
  sleep 0.5
done
[ "${after:-0}" -gt "${before:-0}" ] || fail "no GC round on node $live in the 45 s after the kill"
echo "  GC rounds go on on node $live ($(( $(date +%s) - killed )) s after the kill)"
check_rounds gc

step "kill -9 the node copying an image to another region; the other node finishes the copy"
start_node c
aws ecr put-replication-configuration --endpoint-url "$ECR_URL" --replication-configuration \
  '{"rules":[{"destinations":[{"region":"eu-west-1","registryId":"000000000000"}],"repositoryFilters":[{"filter":"far/","filterType":"PREFIX_MATCH"}]}]}' >/dev/null
metric() { curl -fsS "http://$R/metrics" | awk -v m="$1" '$1==m{print int($2)}'; }
before=$(metric berth_upload_bytes_total)
# A 300 MiB layer, pushed to the live node as a client would (upload, then manifest).
big=$(python3 "$ROOT/tests/e2e/push_image.py" "$REG" "$BERTH_BASIC" far/big 1 --random-mib 300)
copier=
for _ in $(seq 1 1500); do
  now=$(metric berth_upload_bytes_total 2>/dev/null || echo 0)
  if [ "${now:-0}" -gt $((before + 30000000)) ]; then
    copier=$(sql "SELECT claimed_by FROM jobs WHERE queue = 'replication' AND claimed_by IS NOT NULL LIMIT 1")
    break
  fi
  sleep 0.02
done
[ -n "$copier" ] || fail "no node was copying far/big (the destination received $((${now:-0} - before)) bytes)"
node_c=$(node_of c)
case "$copier" in
  "$(node_of $live)") dead=$live; live=c ;;
  "$node_c") dead=c ;;
  *) fail "the replication job is held by '$copier', not a live node" ;;
esac
eval "dead_pid=\$PID_$dead live_port=\$PORT_$live"
kill -9 "$dead_pid"; wait "$dead_pid" 2>/dev/null || true
killed=$(date +%s)
echo "  node $dead killed after the destination received $((now - before)) bytes"
repl_status() { aws ecr describe-image-replication-status --endpoint-url "http://127.0.0.1:$live_port" --repository-name far/big \
  --image-id "imageDigest=$big" --query 'replicationStatuses[0].status' --output text 2>&1; }
for _ in $(seq 1 180); do s=$(repl_status); [ "$s" = COMPLETE ] && break; sleep 0.5; done
[ "$s" = COMPLETE ] || fail "far/big after the copier's death: $s"
got=$(curl -fsS -o /dev/null -D - -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  -H "Authorization: Basic $(printf 'AWS:%s' "$(BERTH_REGION=eu-west-1 "$BERTH" get-login-password --data-dir "$P/region-data")" | base64 -w0)" \
  "http://$R/v2/far/big/manifests/1" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}')
[ "$got" = "$big" ] || fail "the destination's far/big:1 is '$got', not $big"
echo "  COMPLETE $(( $(date +%s) - killed )) s after the kill (lease 30 s), copied by node $live"

step "SIGTERM stops every worker within the deadline"
eval "live_pid=\$PID_$live"
t0=$(date +%s%N)
kill -TERM "$live_pid"; wait "$live_pid" || fail "node $live exited with an error"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
grep -q 'background workers stopped workers=' "$P/$live.log" || fail "no 'background workers stopped' line: $(tail -5 "$P/$live.log")"
grep -q 'were abandoned' "$P/$live.log" && fail "a worker did not stop in time: $(grep 'were abandoned' "$P/$live.log")"
[ "$ms" -lt 15000 ] || fail "stopping took $ms ms"
echo "  stopped in $ms ms: $(grep -o 'background workers stopped.*' "$P/$live.log")"
[ -z "$(sql "SELECT claimed_by FROM jobs WHERE claimed_by = '$(node_of $live)' AND lease_until > $(date +%s%3N)")" ] \
  || fail "the stopped node still holds leases"
psql "$BERTH_TEST_POSTGRES_URL" -qc "DROP DATABASE $db" >/dev/null || true
echo "PASS"
