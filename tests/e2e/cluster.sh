#!/usr/bin/env bash
# Three `berth serve` nodes over one PostgreSQL database and one S3 bucket (moto's S3 server),
# behind HAProxy (round robin, health-checked on /readyz), each started with deploy/cluster.toml
# unchanged and the same secrets in its environment:
#  - docker, skopeo and the aws CLI push and pull through the balancer; every node answered
#    part of it (berth_http_requests_total);
#  - a node killed with -9 in the middle of a large docker push (the one receiving the layer):
#    docker retries through the balancer and the push completes; the image pulls intact;
#  - garbage collection and lifecycle run on one node while pushes go to the others, and what
#    they delete is really gone while every kept image still pulls;
#  - a tag moved through node A is read through node C: how long it took is printed, and it
#    must be under the documented bound (5 s; normally milliseconds);
#  - SIGTERM drains: /readyz answers 503 at once, a request in flight finishes;
#  - the project's own OCI API tests (crates/berth-api/tests/oci.rs, their `cluster` cases) pass
#    through the balancer, each test in an account of its own;
#  - `berth fsck` is clean at the end.
# Writes figures to $E2E_WORK/cluster.figures.
source "$(dirname "$0")/lib.sh"
need psql "apt-get install postgresql"
need haproxy "apt-get install haproxy"
need skopeo "apt-get install skopeo"
need aws "pip install awscli"
[ -n "${BERTH_TEST_POSTGRES_URL:-}" ] || fail "needs BERTH_TEST_POSTGRES_URL (./test.sh starts PostgreSQL)"
[ -n "${BERTH_TEST_S3_ENDPOINT:-}" ] || fail "needs BERTH_TEST_S3_ENDPOINT (./test.sh starts the S3 server)"
start_dockerd
C=$E2E_WORK/cluster; rm -rf "$C"; mkdir -p "$C"
FIG=$E2E_WORK/cluster.figures; : >"$FIG"

db="e2e_cluster_$$"
psql "$BERTH_TEST_POSTGRES_URL" -qc "CREATE DATABASE $db" >/dev/null
bucket="cluster-$$-$RANDOM"
curl -fsS -X PUT "$BERTH_TEST_S3_ENDPOINT/$bucket" >/dev/null || fail "cannot create bucket $bucket"

LB_PORT=$(free_port)
REG=127.0.0.1:$LB_PORT
# What every node shares (deploy/cluster.toml names these).
export BERTH_DATABASE_URL="${BERTH_TEST_POSTGRES_URL%/*}/$db"
export BERTH_S3_BUCKET=$bucket BERTH_S3_ENDPOINT=$BERTH_TEST_S3_ENDPOINT BERTH_S3_PATH_STYLE=true
export BERTH_S3_ACCESS_KEY_ID=cluster-test BERTH_S3_SECRET_ACCESS_KEY=cluster-test-secret
# The keys of the API tests' harness (crates/berth-api/tests/common), so that its cluster cases
# can run against these nodes; accounts by host name under its account domain.
SEVENS=$(printf '07%.0s' $(seq 32))
export BERTH_SECRETS_KEY=$SEVENS BERTH_MASTER_KEY=$SEVENS BERTH_ACCOUNT_DOMAIN=accounts.test
export BERTH_ROOT_ACCESS_KEY_ID=AKIATESTTESTTESTTEST BERTH_ROOT_SECRET_ACCESS_KEY=test/secret/key/0123456789abcdefghijklmn
export BERTH_PUBLIC_URL=http://$REG BERTH_DRAIN_DELAY=2s BERTH_GC_INTERVAL=off BERTH_LIFECYCLE_INTERVAL=off
export AWS_ACCESS_KEY_ID=$BERTH_ROOT_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$BERTH_ROOT_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
unset AWS_SHARED_CREDENTIALS_FILE
export DOCKER_CONFIG=$C/docker-config REGISTRY_AUTH_FILE=$C/containers-auth.json
mkdir -p "$DOCKER_CONFIG"
PRESET=$ROOT/deploy/cluster.toml

NODES=(a b c)
declare -A PID PORT EXTRA
start_node() { # NAME [ENV=VALUE...]: starts the node on its port (a restart keeps its settings)
  local n=$1; shift
  [ -n "${PORT[$n]:-}" ] || PORT[$n]=$(free_port)
  [ $# -gt 0 ] && EXTRA[$n]="$*"
  # shellcheck disable=SC2086
  env ${EXTRA[$n]:-} "$BERTH" serve --config "$PRESET" --listen "127.0.0.1:${PORT[$n]}" --data-dir "$C/$n-data" >>"$C/$n.log" 2>&1 &
  PID[$n]=$!
  wait_http "http://127.0.0.1:${PORT[$n]}/readyz" 30
}
cleanup() {
  for n in "${NODES[@]}"; do kill -9 "${PID[$n]:-}" 2>/dev/null || true; done
  [ -f "$C/haproxy.pid" ] && kill "$(cat "$C/haproxy.pid")" 2>/dev/null || true
}
trap cleanup EXIT
node_requests() { curl -fsS "http://127.0.0.1:${PORT[$1]}/metrics" | awk '$1=="berth_http_requests_total"{print $2}'; }

step "three nodes on PostgreSQL and s3://$bucket, each with deploy/cluster.toml"
# Node a runs garbage collection and lifecycle every 2 s (the others never do), so that they run
# while the pushes below go to b and c too.
start_node a BERTH_GC_INTERVAL=2s BERTH_LIFECYCLE_INTERVAL=2s BERTH_GC_GRACE=20s
start_node b
start_node c
for n in "${NODES[@]}"; do
  curl -fsS "http://127.0.0.1:${PORT[$n]}/readyz" | grep -q '"ready":true' || fail "node $n not ready"
done

cat >"$C/haproxy.cfg" <<EOF
global
  pidfile $C/haproxy.pid
  maxconn 2000
defaults
  mode http
  timeout connect 2s
  timeout client 300s
  timeout server 300s
  retries 3
  option redispatch
  retry-on conn-failure empty-response response-timeout
frontend registry
  bind 127.0.0.1:$LB_PORT
  default_backend nodes
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 500ms fall 2 rise 2
  server a 127.0.0.1:${PORT[a]} check
  server b 127.0.0.1:${PORT[b]} check
  server c 127.0.0.1:${PORT[c]} check
EOF
haproxy -D -f "$C/haproxy.cfg" || fail "haproxy did not start"
wait_http "http://$REG/healthz"
sleep 2 # every server passed its first checks

step "docker, skopeo and the aws CLI through the balancer"
declare -A BEFORE
for n in "${NODES[@]}"; do BEFORE[$n]=$(node_requests "$n"); done
aws ecr get-login-password --endpoint-url "http://$REG" | docker login --username AWS --password-stdin "$REG" >/dev/null \
  || fail "docker login through the balancer"
B=$C/build; mkdir -p "$B"; cp /bin/busybox "$B/busybox"
head -c 4000000 /dev/urandom >"$B/small.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY small.bin /data/small.bin\nCMD ["/bin/busybox","echo","hello from the cluster"]\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/team/app:1" "$B" >/dev/null
docker push "$REG/team/app:1" >/dev/null || fail "docker push through the balancer"
docker rmi "$REG/team/app:1" >/dev/null
docker pull "$REG/team/app:1" >/dev/null || fail "docker pull through the balancer"
[ "$(docker run --rm --network none "$REG/team/app:1")" = "hello from the cluster" ] || fail "the pulled image does not run"
build_layouts "$E2E_WORK/layouts"
PASS=$(aws ecr get-login-password --endpoint-url "http://$REG")
skopeo copy -q --all --dest-tls-verify=false --dest-creds "AWS:$PASS" "oci:$E2E_WORK/layouts/oci:multi" "docker://$REG/team/multi:1" \
  || fail "skopeo copy --all to the balancer"
skopeo copy -q --all --src-tls-verify=false --src-creds "AWS:$PASS" "docker://$REG/team/multi:1" "oci:$C/back:multi" \
  || fail "skopeo copy --all from the balancer"
[ "$(aws ecr describe-images --endpoint-url "http://$REG" --repository-name team/multi --query 'length(imageDetails)' --output text)" -ge 1 ] \
  || fail "aws ecr describe-images"
for i in $(seq 1 30); do aws ecr describe-repositories --endpoint-url "http://$REG" --repository-names team/app >/dev/null || fail "describe-repositories $i"; done
line="requests per node:"
for n in "${NODES[@]}"; do
  got=$(( $(node_requests "$n") - BEFORE[$n] ))
  [ "$got" -ge 10 ] || fail "node $n answered only $got requests through the balancer"
  line="$line $n=$got"
done
echo "  $line"; echo "$line" >>"$FIG"

step "a node killed with -9 in the middle of a large docker push"
head -c 300000000 /dev/urandom >"$B/big.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY big.bin /data/big.bin\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/team/big:1" "$B" >/dev/null
want=$(sha256sum <"$B/big.bin" | cut -d' ' -f1)
docker push "$REG/team/big:1" >"$C/bigpush.out" 2>&1 &
push=$!
# The node receiving the layer: the one whose sockets take in bytes fastest.
received() { # PORT: bytes received so far on the node's open connections
  ss -tniH state established "( sport = :$1 )" | grep -o 'bytes_received:[0-9]*' | cut -d: -f2 | awk '{s+=$1} END{print s+0}'
}
victim=
for _ in $(seq 1 400); do
  declare -A r0; for n in "${NODES[@]}"; do r0[$n]=$(received "${PORT[$n]}"); done
  sleep 0.3
  best=0
  for n in "${NODES[@]}"; do
    d=$(( $(received "${PORT[$n]}") - r0[$n] ))
    if [ "$d" -gt 2000000 ] && [ "$d" -gt "$best" ]; then best=$d; victim=$n; fi
  done
  [ -n "$victim" ] && break
done
[ -n "$victim" ] || fail "no node was receiving the layer"
kill -9 "${PID[$victim]}"
killed_at=$(date +%s.%N)
echo "  killed node $victim while it received the layer"
wait "$push" || { cat "$C/bigpush.out"; fail "docker push did not complete after node $victim was killed"; }
done_at=$(date +%s.%N)
grep -qi "retrying" "$C/bigpush.out" || echo "  (docker reported no retry: the balancer re-sent a request)"
line=$(python3 -c "print(\"kill -9 of node $victim mid-push: the push completed %.1f s later\" % ($done_at - $killed_at))")
echo "  $line"; echo "$line" >>"$FIG"
start_node "$victim"
docker rmi "$REG/team/big:1" >/dev/null
docker pull "$REG/team/big:1" >/dev/null || fail "pull of the big image"
got=$(docker run --rm --network none --entrypoint /bin/busybox "$REG/team/big:1" sha256sum /data/big.bin | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "the big layer changed"

step "garbage collection and lifecycle on node a while b and c take pushes"
aws ecr put-lifecycle-policy --endpoint-url "http://$REG" --repository-name team/app --lifecycle-policy-text \
  '{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":2},"action":{"type":"expire"}}]}' >/dev/null
for i in 2 3 4 5 6; do
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY small.bin /data/small.bin\nLABEL round=%s\n' "$i" >"$B/Dockerfile"
  head -c 1000000 /dev/urandom >"$B/small.bin"
  DOCKER_BUILDKIT=0 docker build -q -t "$REG/team/app:$i" "$B" >/dev/null
  docker push "$REG/team/app:$i" >/dev/null || fail "push team/app:$i while GC and lifecycle run"
done
# Lifecycle keeps the newest two; GC (grace 20 s) then deletes what only the expired ones used.
t0=$(date +%s)
until [ "$(aws ecr list-images --endpoint-url "http://$REG" --repository-name team/app --query 'length(imageIds)' --output text)" = 2 ]; do
  [ $(( $(date +%s) - t0 )) -lt 60 ] || fail "lifecycle did not expire team/app's older images"
  sleep 1
done
objects() { curl -fsS "$BERTH_TEST_S3_ENDPOINT/$bucket?list-type=2&prefix=berth/blobs/&max-keys=1000" | grep -o '<Key>' | wc -l; }
before=$(objects)
t0=$(date +%s)
until grep -q 'garbage collected.*deleted=[1-9]' "$C/a.log"; do
  [ $(( $(date +%s) - t0 )) -lt 90 ] || fail "garbage collection on node a deleted nothing"
  sleep 2
done
sleep 3
after=$(objects)
[ "$after" -lt "$before" ] || fail "objects in the bucket: $before before GC, $after after"
for n in b c; do grep -q 'garbage collected' "$C/$n.log" && fail "node $n ran garbage collection (only a may)"; done
gc_line=$(grep -o 'garbage collected.*deleted=[1-9][^ ]*.*' "$C/a.log" | head -1)
echo "  node a: $gc_line"; echo "GC on node a: $gc_line; objects under blobs/: $before -> $after" >>"$FIG"
for t in 5 6; do
  docker rmi "$REG/team/app:$t" >/dev/null
  docker pull "$REG/team/app:$t" >/dev/null || fail "kept image team/app:$t does not pull after GC"
done

step "a tag moved through node A, read through node C"
BASIC="Basic $(printf 'AWS:%s' "$PASS" | base64 -w0)"
acc='application/vnd.docker.distribution.manifest.v2+json'
m5=$(curl -fsS -H "Authorization: $BASIC" -H "Accept: $acc" "http://$REG/v2/team/app/manifests/5") || fail "manifest 5"
m6=$(curl -fsS -H "Authorization: $BASIC" -H "Accept: $acc" "http://$REG/v2/team/app/manifests/6") || fail "manifest 6"
d6="sha256:$(printf %s "$m6" | sha256sum | cut -d' ' -f1)"
put_tag() { # PORT BODY
  printf %s "$2" | curl -fsS -o /dev/null -X PUT -H "Authorization: $BASIC" -H "Content-Type: $acc" --data-binary @- \
    "http://127.0.0.1:$1/v2/team/app/manifests/moving" || fail "PUT moving"
}
digest_at() { curl -fsS -o /dev/null -D - -H "Authorization: $BASIC" -H "Accept: $acc" "http://127.0.0.1:$1/v2/team/app/manifests/moving" \
  | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}'; }
worst=0
for round in 1 2 3 4 5; do
  put_tag "${PORT[a]}" "$m5"
  digest_at "${PORT[c]}" >/dev/null; digest_at "${PORT[c]}" >/dev/null   # cached at C now
  put_tag "${PORT[a]}" "$m6"
  ms=$(python3 - "${PORT[c]}" "$d6" "$BASIC" "$acc" <<'PY'
import sys, time, urllib.request
port, want, auth, acc = sys.argv[1:]
t = time.monotonic(); tries = 0
while True:
    tries += 1
    r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v2/team/app/manifests/moving",
        headers={"Authorization": auth, "Accept": acc}))
    if r.headers["Docker-Content-Digest"] == want:
        print(round((time.monotonic() - t) * 1000, 1), tries); break
    if time.monotonic() - t > 5: print(99999, tries); break
PY
)
  read -r ms tries <<<"$ms"
  [ "$tries" = 1 ] || stale=$((${stale:-0} + 1))
  worst=$(python3 -c "print(max($worst, $ms))")
done
python3 -c "import sys; sys.exit(0 if $worst < 5000 else 1)" || fail "a tag move took $worst ms to reach node C (bound 5 s)"
[ -z "${stale:-}" ] || fail "in $stale of 5 rounds node C's first read after the move was stale"
line="tag moved on node a 5 times: node c's first read after each PUT answered saw it (worst $worst ms incl. the read; bound 5 s)"
echo "  $line"; echo "$line" >>"$FIG"

step "the OCI API tests through the balancer"
BERTH_TEST_CLUSTER_URL=http://$REG BERTH_TEST_CLUSTER_DATABASE_URL=$BERTH_DATABASE_URL BERTH_TEST_CLUSTER_S3_BUCKET=$bucket \
  cargo test --release -q --manifest-path "$ROOT/Cargo.toml" -p berth-api --test oci -- --ignored cluster >"$C/oci.out" 2>&1 \
  || { tail -40 "$C/oci.out"; fail "OCI API tests through the balancer"; }
res=$(grep -E '^test result' "$C/oci.out")
echo "  $res"
grep -qE 'test result: ok\. 1[0-9] passed' "$C/oci.out" || fail "fewer OCI cluster cases ran than there are: $res"
echo "OCI API tests through the balancer: $res" >>"$FIG"

step "SIGTERM drains: readiness off first, a request in flight finishes"
curl -fsS -o "$C/inflight.out" -H "Authorization: $BASIC" --limit-rate 20M \
  "http://127.0.0.1:${PORT[b]}/v2/team/big/blobs/$(aws ecr batch-get-image --endpoint-url "http://$REG" --repository-name team/big \
    --image-ids imageTag=1 --query 'images[0].imageManifest' --output text | python3 -c 'import json,sys; print(max(json.load(sys.stdin)["layers"], key=lambda l: l["size"])["digest"])')" &
inflight=$!
sleep 1
kill -TERM "${PID[b]}"
sleep 0.3
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[b]}/readyz")
[ "$code" = 503 ] || fail "/readyz on a draining node answered $code"
wait "$inflight" || fail "the download in flight on node b was cut by SIGTERM"
[ "$(sha256sum <"$C/inflight.out" | cut -d' ' -f1)" != "" ] && [ "$(stat -c %s "$C/inflight.out")" -gt 300000000 ] || fail "the in-flight download is short"
wait "${PID[b]}" 2>/dev/null || true
grep -q 'draining' "$C/b.log" || fail "node b did not log its drain"
start_node b
docker pull "$REG/team/app:6" >/dev/null || fail "pull after node b came back"

step "berth fsck is clean"
"$BERTH" fsck --config "$PRESET" --data-dir "$C/a-data" >"$C/fsck.out" 2>&1 || { cat "$C/fsck.out"; fail "berth fsck found problems"; }
cat "$FIG"
echo "PASS cluster"
