#!/usr/bin/env bash
# Replication with the real tools: region A (us-east-1) replicates to region B (eu-west-1, another
# Berth) and to Distribution 2.8.2 (Debian's docker-registry, a plain OCI peer):
#  - aws ecr put-replication-configuration / describe-registry / describe-image-replication-status;
#  - docker push to A; the image pulls from B with docker and from Distribution with skopeo,
#    digests equal;
#  - a multi-arch index (skopeo copy --all) with a cosign-style signature referrer arrives whole;
#  - a tag moved twice quickly ends at the newest on both;
#  - B killed with -9 in the middle of a large layer and restarted: replication completes, and
#    after the restart B receives only that layer (its berth_upload_bytes_total), not the ones
#    it had;
#  - backfill: images pushed before a rule matched are copied by `berth replicate --all`;
#  - deletes are not replicated;
#  - three regions: A replicates edge/ to B and to C (ap-south-1, a third Berth); B, with a rule
#    of its own to C, does not pass on what it received.
# Writes figures to $E2E_WORK/replication.figures.
source "$(dirname "$0")/lib.sh"
need docker-registry "apt-get install docker-registry"
need skopeo "apt-get install skopeo"
need aws "pip install awscli"
start_dockerd
W=$E2E_WORK/replication; rm -rf "$W"; mkdir -p "$W"
FIG=$E2E_WORK/replication.figures; : >"$FIG"
PA=$(free_port); PB=$(free_port); PD=$(free_port); PC=$(free_port)
A=127.0.0.1:$PA; B=127.0.0.1:$PB; D=127.0.0.1:$PD; C=127.0.0.1:$PC
export DOCKER_CONFIG=$W/docker-config REGISTRY_AUTH_FILE=$W/containers-auth.json
mkdir -p "$DOCKER_CONFIG"
unset AWS_ENDPOINT_URL_ECR BERTH_REGION

BPID=; APID=; DPID=; CPID=
# Waits for its own servers only: a Docker engine this test started stays for the next test.
cleanup() { kill "$APID" "$BPID" "$DPID" "$CPID" 2>/dev/null || true; wait $APID $BPID $DPID $CPID 2>/dev/null || true; }
trap cleanup EXIT

BERTH_REGION=ap-south-1 "$BERTH" serve --listen "$C" --data-dir "$W/c-data" >"$W/c.log" 2>&1 &
CPID=$!
wait_http "http://$C/v2/"
cat >"$W/b.toml" <<TOML
region = "eu-west-1"

[[peers]]
region = "ap-south-1"
url = "http://$C"
credentials_file = "$W/c-data/root-credentials"
TOML
start_b() {
  "$BERTH" serve --config "$W/b.toml" --listen "$B" --data-dir "$W/b-data" >>"$W/b.log" 2>&1 &
  BPID=$!
  wait_http "http://$B/v2/"
}
start_b
cat >"$W/dist.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage:
  filesystem: {rootdirectory: $W/dist-data}
  delete: {enabled: true}
http: {addr: $D}
YML
# REGISTRY_* variables are its configuration (REGISTRY_AUTH_FILE is the containers tools' auth file).
env -u AWS_CA_BUNDLE -u REGISTRY_AUTH_FILE docker-registry serve "$W/dist.yml" >"$W/dist.log" 2>&1 &
DPID=$!
wait_http "http://$D/v2/"
cat >"$W/a.toml" <<TOML
region = "us-east-1"

[[peers]]
region = "eu-west-1"
url = "http://$B"
credentials_file = "$W/b-data/root-credentials"

[[peers]]
region = "dist"
kind = "oci"
url = "http://$D"

[[peers]]
region = "ap-south-1"
url = "http://$C"
credentials_file = "$W/c-data/root-credentials"
TOML
"$BERTH" serve --config "$W/a.toml" --listen "$A" --data-dir "$W/a-data" >"$W/a.log" 2>&1 &
APID=$!
wait_http "http://$A/v2/"

aws_a() { AWS_SHARED_CREDENTIALS_FILE=$W/a-data/root-credentials aws --region us-east-1 --endpoint-url "http://$A" "$@"; }
aws_b() { AWS_SHARED_CREDENTIALS_FILE=$W/b-data/root-credentials aws --region eu-west-1 --endpoint-url "http://$B" "$@"; }
PW_A=$("$BERTH" get-login-password --data-dir "$W/a-data")
PW_B=$(BERTH_REGION=eu-west-1 "$BERTH" get-login-password --data-dir "$W/b-data")
PW_C=$(BERTH_REGION=ap-south-1 "$BERTH" get-login-password --data-dir "$W/c-data")
printf %s "$PW_A" | docker login --username AWS --password-stdin "$A" >/dev/null
printf %s "$PW_B" | docker login --username AWS --password-stdin "$B" >/dev/null
metric() { curl -fsS "http://$1/metrics" | awk -v m="$2" '$1==m{print int($2)}'; }

# status REPO DIGEST: "<eu-west-1 status> <dist status>"
status() {
  aws_a ecr describe-image-replication-status --repository-name "$1" --image-id "imageDigest=$2" --output json \
    | python3 -c 'import json,sys; s={x["region"]:x["status"] for x in json.load(sys.stdin)["replicationStatuses"]}; print(s.get("eu-west-1","-"), s.get("dist","-"))'
}
# wait_complete REPO DIGEST [SECONDS] [WHICH: both|b]: waits for COMPLETE; prints the seconds it took.
wait_complete() {
  local t0 s i
  t0=$(date +%s.%N)
  for i in $(seq 1 $((${3:-60} * 5))); do
    s=$(status "$1" "$2")
    case "${4:-both}:$s" in both:"COMPLETE COMPLETE" | b:"COMPLETE "*) python3 -c "print(f'{$(date +%s.%N)-$t0:.2f}')"; return 0 ;; esac
    sleep 0.2
  done
  fail "replication of $1@$2 did not complete: $s"
}
digest_of() { # HOST REPO REF: the manifest digest the registry serves (skopeo, no TLS)
  local creds=()
  [ "$1" = "$A" ] && creds=(--creds "AWS:$PW_A")
  [ "$1" = "$B" ] && creds=(--creds "AWS:$PW_B")
  [ "$1" = "$C" ] && creds=(--creds "AWS:$PW_C")
  skopeo inspect --tls-verify=false "${creds[@]}" --raw "docker://$1/$2:$3" | sha256sum | awk '{print "sha256:"$1}'
}

step "aws ecr put-replication-configuration on A: team/ to eu-west-1 and to Distribution"
aws_a ecr put-replication-configuration --replication-configuration \
  '{"rules":[{"destinations":[{"region":"eu-west-1","registryId":"000000000000"},{"region":"dist","registryId":"000000000000"}],"repositoryFilters":[{"filter":"team/","filterType":"PREFIX_MATCH"}]}]}' >/dev/null
aws_a ecr describe-registry --output json >"$W/registry.json"
grep -q '"filter": "team/"' "$W/registry.json" || fail "describe-registry: $(cat "$W/registry.json")"
out=$(aws_a ecr put-replication-configuration --replication-configuration \
  '{"rules":[{"destinations":[{"region":"mars-1","registryId":"000000000000"}]}]}' 2>&1) && fail "an unknown peer was accepted"
grep -q "InvalidParameterException" <<<"$out" || fail "unknown peer: $out"

step "docker push to A; pulled from B with docker and from Distribution with skopeo"
build() { # DIR MB: an image FROM scratch with busybox and MB of random data
  mkdir -p "$1"; cp /bin/busybox "$1/busybox"; head -c "$(($2 * 1048576))" /dev/urandom >"$1/random.bin"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY random.bin /data/random.bin\nCMD ["/bin/busybox","echo","hello from region A"]\n' >"$1/Dockerfile"
}
build "$W/img1" 2
DOCKER_BUILDKIT=0 docker build -q -t "$A/team/app:1" "$W/img1" >/dev/null
docker push "$A/team/app:1" >/dev/null
d1=$(digest_of "$A" team/app 1)
lag=$(wait_complete team/app "$d1")
echo "first image (2 MiB layer), push to COMPLETE at both: ${lag}s" | tee -a "$FIG"
docker rmi "$A/team/app:1" >/dev/null
docker pull "$B/team/app:1" >/dev/null
out=$(docker run --rm --network none "$B/team/app:1")
[ "$out" = "hello from region A" ] || fail "the image pulled from B printed: $out"
[ "$(digest_of "$B" team/app 1)" = "$d1" ] || fail "B's digest differs"
[ "$(digest_of "$D" team/app 1)" = "$d1" ] || fail "Distribution's digest differs"
skopeo copy -q --src-tls-verify=false "docker://$D/team/app:1" "oci:$W/from-dist:1" || fail "skopeo copy from Distribution failed"
aws_b ecr describe-repositories --repository-names team/app >/dev/null || fail "B has no repository team/app"

step "a multi-arch index with a cosign-style signature referrer (skopeo copy --all)"
L=$E2E_WORK/layouts; build_layouts "$L"
skopeo copy -q --all --dest-tls-verify=false --dest-creds "AWS:$PW_A" "oci:$L/oci:multi" "docker://$A/team/multi:1"
idx=$(digest_of "$A" team/multi 1)
idx_size=$(skopeo inspect --tls-verify=false --creds "AWS:$PW_A" --raw "docker://$A/team/multi:1" | wc -c)
AB="Authorization: Basic $(printf 'AWS:%s' "$PW_A" | base64 -w0)"
sig=$(push_signature "$A" team/multi "$idx" "$idx_size" -H "$AB")
wait_complete team/multi "$idx" >/dev/null
wait_complete team/multi "$sig" >/dev/null
BB="Authorization: Basic $(printf 'AWS:%s' "$PW_B" | base64 -w0)"
curl -fsS -H "$BB" "http://$B/v2/team/multi/referrers/$idx" | grep -q "$sig" || fail "B's referrers of the index lack the signature"
for host in "$B" "$D"; do
  [ "$(digest_of "$host" team/multi 1)" = "$idx" ] || fail "$host: index digest differs"
  rm -rf "$W/multi-out"
  creds=(); [ "$host" = "$B" ] && creds=(--src-creds "AWS:$PW_B")
  skopeo copy -q --all --src-tls-verify=false "${creds[@]}" "docker://$host/team/multi:1" "oci:$W/multi-out:1" \
    || fail "$host: skopeo copy --all of the index failed (a child missing?)"
  h=(); [ "$host" = "$B" ] && h=(-H "$BB")
  code=$(curl -s -o /dev/null -w '%{http_code}' "${h[@]}" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$host/v2/team/multi/manifests/$sig")
  [ "$code" = 200 ] || fail "$host: the signature manifest is missing ($code)"
done

step "a tag moved twice quickly ends at the newest on both"
build "$W/img2" 1; build "$W/img3" 1
DOCKER_BUILDKIT=0 docker build -q -t "$A/team/app:moving" "$W/img2" >/dev/null
docker push "$A/team/app:moving" >/dev/null
DOCKER_BUILDKIT=0 docker build -q -t "$A/team/app:moving" "$W/img3" >/dev/null
docker push "$A/team/app:moving" >/dev/null
d3=$(digest_of "$A" team/app moving)
wait_complete team/app "$d3" >/dev/null
sleep 3
[ "$(digest_of "$B" team/app moving)" = "$d3" ] || fail "B's tag is not the newest"
[ "$(digest_of "$D" team/app moving)" = "$d3" ] || fail "Distribution's tag is not the newest"

step "B killed with -9 in the middle of a large layer, then restarted"
mkdir -p "$W/big"; cp /bin/busybox "$W/big/busybox"; head -c 200000000 /dev/urandom >"$W/big/big.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY big.bin /data/big.bin\n' >"$W/big/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$A/team/big:1" "$W/big" >/dev/null
rm -f "$W/big/big.bin"
before=$(metric "$B" berth_upload_bytes_total)
docker push "$A/team/big:1" >/dev/null
killed=
for _ in $(seq 1 3000); do
  now=$(metric "$B" berth_upload_bytes_total 2>/dev/null || echo 0)
  if [ "${now:-0}" -gt $((before + 30000000)) ]; then kill -9 "$BPID"; killed=$now; break; fi
  sleep 0.02
done
[ -n "$killed" ] || fail "B never received 30 MB of the big layer"
wait "$BPID" 2>/dev/null || true
echo "B killed after receiving $((killed - before)) bytes of the big image" | tee -a "$FIG"
start_b
dbig=$(digest_of "$A" team/big 1)
wait_complete team/big "$dbig" 120 b >/dev/null
after=$(metric "$B" berth_upload_bytes_total)
bigsize=$(skopeo inspect --tls-verify=false --creds "AWS:$PW_A" --raw "docker://$A/team/big:1" \
  | python3 -c 'import json,sys; print(max(l["size"] for l in json.load(sys.stdin)["layers"]))')
echo "after the restart B received $after bytes; the big layer is $bigsize bytes" | tee -a "$FIG"
[ "$after" = "$bigsize" ] || fail "after the restart B received $after bytes, not just the big layer's $bigsize"
[ "$(digest_of "$B" team/big 1)" = "$dbig" ] || fail "B's big image differs"

step "backfill: berth replicate --all copies images pushed before a rule matched"
build "$W/img4" 1
DOCKER_BUILDKIT=0 docker build -q -t "$A/legacy/app:1" "$W/img4" >/dev/null
docker push "$A/legacy/app:1" >/dev/null
sleep 2
code=$(curl -s -o /dev/null -w '%{http_code}' -H "$BB" "http://$B/v2/legacy/app/manifests/1")
[ "$code" = 404 ] || fail "legacy/app reached B before any rule matched it ($code)"
aws_a ecr put-replication-configuration --replication-configuration \
  '{"rules":[{"destinations":[{"region":"eu-west-1","registryId":"000000000000"},{"region":"dist","registryId":"000000000000"}],"repositoryFilters":[{"filter":"team/","filterType":"PREFIX_MATCH"},{"filter":"legacy/","filterType":"PREFIX_MATCH"}]}]}' >/dev/null
"$BERTH" replicate --config "$W/a.toml" --data-dir "$W/a-data" --repository legacy/app --all >"$W/replicate.out" 2>&1 \
  || fail "berth replicate: $(cat "$W/replicate.out")"
grep -q -- "-> eu-west-1/000000000000" "$W/replicate.out" || fail "berth replicate queued nothing: $(cat "$W/replicate.out")"
d4=$(digest_of "$A" legacy/app 1)
wait_complete legacy/app "$d4" >/dev/null
docker pull "$B/legacy/app:1" >/dev/null

step "100 small images: push to COMPLETE at B"
t0=$(date +%s.%N)
python3 "$ROOT/tests/e2e/push_image.py" "$A" "Basic $(printf 'AWS:%s' "$PW_A" | base64 -w0)" team/small $(seq 0 99) >/dev/null
t1=$(date +%s.%N)
for i in $(seq 1 600); do
  n=$(curl -fsS -H "$BB" "http://$B/v2/team/small/tags/list?n=1000" 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("tags") or []))' 2>/dev/null || echo 0)
  [ "$n" = 100 ] && break
  sleep 0.2
done
[ "$n" = 100 ] || fail "B has $n of the 100 small images"
t2=$(date +%s.%N)
python3 -c "print(f'100 small images: pushed in {$t1-$t0:.2f}s; all 100 tags at B {$t2-$t1:.2f}s after the last push ({$t2-$t0:.2f}s from the first)')" | tee -a "$FIG"

step "deletes are not replicated"
aws_a ecr batch-delete-image --repository-name team/app --image-ids imageTag=1 >/dev/null
sleep 3
[ "$(digest_of "$B" team/app 1)" = "$d1" ] || fail "the delete reached B"
[ "$(digest_of "$D" team/app 1)" = "$d1" ] || fail "the delete reached Distribution"
grep -q "replicated" "$W/a.log" || fail "A logged no replication"

step "three regions: A replicates edge/ to B and C; B does not pass on what it received"
aws_b ecr put-replication-configuration --replication-configuration \
  '{"rules":[{"destinations":[{"region":"ap-south-1","registryId":"000000000000"}]}]}' >/dev/null
aws_a ecr put-replication-configuration --replication-configuration \
  '{"rules":[{"destinations":[{"region":"eu-west-1","registryId":"000000000000"},{"region":"dist","registryId":"000000000000"}],"repositoryFilters":[{"filter":"team/","filterType":"PREFIX_MATCH"}]},{"destinations":[{"region":"eu-west-1","registryId":"000000000000"},{"region":"ap-south-1","registryId":"000000000000"}],"repositoryFilters":[{"filter":"edge/","filterType":"PREFIX_MATCH"}]}]}' >/dev/null
build "$W/img5" 1
DOCKER_BUILDKIT=0 docker build -q -t "$A/edge/app:1" "$W/img5" >/dev/null
docker push "$A/edge/app:1" >/dev/null
de=$(digest_of "$A" edge/app 1)
for _ in $(seq 1 300); do
  st=$(aws_a ecr describe-image-replication-status --repository-name edge/app --image-id "imageDigest=$de" \
    --query 'replicationStatuses[].[region,status]' --output text | sort | tr '\t\n' ': ')
  [ "$st" = "ap-south-1:COMPLETE eu-west-1:COMPLETE " ] && break
  sleep 0.2
done
[ "$st" = "ap-south-1:COMPLETE eu-west-1:COMPLETE " ] || fail "edge/app at A: $st"
[ "$(digest_of "$B" edge/app 1)" = "$de" ] || fail "B's edge/app differs"
[ "$(digest_of "$C" edge/app 1)" = "$de" ] || fail "C's edge/app differs"
printf %s "$PW_C" | docker login --username AWS --password-stdin "$C" >/dev/null
docker pull "$C/edge/app:1" >/dev/null || fail "docker pull from C"
sleep 4
[ "$(metric "$B" berth_replication_images_total)" = 0 ] || fail "B replicated what it had received"
repos=$(AWS_SHARED_CREDENTIALS_FILE=$W/c-data/root-credentials aws --region ap-south-1 --endpoint-url "http://$C" \
  ecr describe-repositories --query 'repositories[].repositoryName' --output text)
[ "$repos" = edge/app ] || fail "C holds more than A sent it: $repos"
echo "PASS replication"
