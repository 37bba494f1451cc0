#!/usr/bin/env bash
# Pull-through cache with the real tools: a rule pointing at Distribution 2.8.2 (Debian's
# docker-registry) and one at another Berth that wants credentials (a stored secret):
#  - aws ecr create-pull-through-cache-rule / describe / validate;
#  - docker pull of an image through the rule, and skopeo copy --all of a two-platform index;
#  - referrers on request: a signature the upstream lists (Distribution: by the OCI fallback tag)
#    appears in the cache's referrers answer and is cached;
#  - with the upstream stopped, the second docker pull and skopeo copy are served from the cache;
#  - an image never cached, with the upstream stopped: a clear error (502), never a 500;
#  - the Berth upstream with auth, through `berth secret create` and credentialArn, and through
#    a secret made with `aws secretsmanager create-secret`.
source "$(dirname "$0")/lib.sh"
need docker-registry "apt-get install docker-registry"
need skopeo "apt-get install skopeo"
need aws "pip install awscli"
start_dockerd
W=$E2E_WORK/pullthrough; rm -rf "$W"; mkdir -p "$W"
PD=$(free_port); D=127.0.0.1:$PD
cat >"$W/dist.yml" <<YML
version: 0.1
log: {level: info}
storage:
  filesystem: {rootdirectory: $W/dist-data}
http: {addr: $D}
YML
start_dist() {
  # REGISTRY_* variables are its configuration (REGISTRY_AUTH_FILE is the containers tools' auth file).
  env -u AWS_CA_BUNDLE -u REGISTRY_AUTH_FILE docker-registry serve "$W/dist.yml" >>"$W/dist.log" 2>&1 &
  DPID=$!
  wait_http "http://$D/v2/"
}
start_dist
PU=$(free_port); U=127.0.0.1:$PU
BERTH_REGION=eu-west-1 "$BERTH" serve --listen "$U" --data-dir "$W/up-data" >"$W/up.log" 2>&1 &
UPID=$!
wait_http "http://$U/v2/"
start_berth pullthrough
trap 'stop_berth; kill $DPID $UPID 2>/dev/null || true' EXIT
E=(--endpoint-url "$ECR_URL")
# The aws CLI (v1) fetches parameters that look like http:// URLs unless told not to.
printf '[default]\ncli_follow_urlparam = false\n' >"$W/aws-config"
export AWS_CONFIG_FILE=$W/aws-config
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null

# cached REPO N: waits (up to 20 s) until the cache holds N images of REPO; sets n.
cached() {
  for _ in $(seq 1 100); do
    n=$(aws ecr describe-images "${E[@]}" --repository-name "$1" --query 'length(imageDetails)' --output text 2>/dev/null || echo 0)
    [ "$n" = "$2" ] && return 0
    sleep 0.2
  done
  return 1
}

step "images in Distribution: one built with docker, a two-platform index with skopeo"
B=$W/build; mkdir -p "$B"; cp /bin/busybox "$B/busybox"; head -c 2000000 /dev/urandom >"$B/random.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY random.bin /data/random.bin\nCMD ["/bin/busybox","echo","hello through the cache"]\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$D/library/hello:1" "$B" >/dev/null
docker push "$D/library/hello:1" >/dev/null
docker rmi "$D/library/hello:1" >/dev/null
L=$E2E_WORK/layouts; build_layouts "$L"
skopeo copy -q --all --dest-tls-verify=false "oci:$L/oci:multi" "docker://$D/library/multi:1"

step "aws ecr create-pull-through-cache-rule, describe, validate"
aws ecr create-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix dist --upstream-registry-url "http://$D" >/dev/null
aws ecr describe-pull-through-cache-rules "${E[@]}" --output json | grep -q "\"upstreamRegistryUrl\": \"http://$D\"" \
  || fail "describe-pull-through-cache-rules"
[ "$(aws ecr validate-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix dist --query isValid --output text)" = True ] \
  || fail "the rule does not validate"
out=$(aws ecr create-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix far --upstream-registry-url http://registry.example.com 2>&1) \
  && fail "a plain-http upstream off loopback was accepted"
grep -q InvalidParameterException <<<"$out" || fail "plain-http upstream: $out"

step "docker pull and skopeo copy --all through the rule"
docker pull "$REG/dist/library/hello:1" >/dev/null
out=$(docker run --rm --network none "$REG/dist/library/hello:1")
[ "$out" = "hello through the cache" ] || fail "the image pulled through the cache printed: $out"
rm -rf "$W/multi-out"
skopeo copy -q --all --src-tls-verify=false --src-creds "AWS:$BERTH_PASSWORD" "docker://$REG/dist/library/multi:1" "oci:$W/multi-out:1" \
  || fail "skopeo copy --all through the cache"
cached dist/library/multi 3 || fail "dist/library/multi holds $n images, not the index and its two children"

step "referrers on request: a signature of the index at Distribution (no referrers API: the OCI fallback tag)"
IA='Accept: application/vnd.oci.image.index.v1+json'
idx=$(curl -fsS -o /dev/null -D - -H "$IA" "http://$D/v2/library/multi/manifests/1" | tr -d '\r' \
  | awk 'tolower($1)=="docker-content-digest:"{print $2}')
idx_size=$(curl -fsS -H "$IA" "http://$D/v2/library/multi/manifests/1" | wc -c)
sig=$(push_signature "$D" library/multi "$idx" "$idx_size")
sig_size=$(curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$D/v2/library/multi/manifests/$sig" | wc -c)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}]}' \
  "$sig" "$sig_size" >"$W/fallback.json"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "Content-Type: ${IA#Accept: }" --data-binary "@$W/fallback.json" \
  "http://$D/v2/library/multi/manifests/${idx/:/-}")
[ "$code" = 201 ] || fail "the fallback tag's push to Distribution answered $code"
rcurl -fsS "http://$REG/v2/dist/library/multi/referrers/$idx" >"$W/referrers.json" || fail "referrers through the cache"
grep -q "$sig" "$W/referrers.json" || fail "the cache's referrers of the index lack the upstream's signature: $(cat "$W/referrers.json")"
cached dist/library/multi 4 || fail "the signature was not cached: dist/library/multi holds $n images"

step "the upstream stopped: the second pulls are served from the cache"
kill "$DPID"; wait "$DPID" 2>/dev/null || true
docker rmi "$REG/dist/library/hello:1" >/dev/null
docker pull "$REG/dist/library/hello:1" >/dev/null || fail "the cached image did not pull with the upstream stopped"
rm -rf "$W/multi-out"
skopeo copy -q --all --src-tls-verify=false --src-creds "AWS:$BERTH_PASSWORD" "docker://$REG/dist/library/multi:1" "oci:$W/multi-out:1" \
  || fail "skopeo copy --all with the upstream stopped"
rcurl -fsS "http://$REG/v2/dist/library/multi/referrers/$idx" | grep -q "$sig" \
  || fail "the cached signature is not among the referrers with the upstream stopped"
code=$(rcurl -s -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$REG/v2/dist/library/multi/manifests/$sig")
[ "$code" = 200 ] || fail "the cached signature manifest, upstream stopped: $code"
code=$(rcurl -s -o "$W/err.json" -w '%{http_code}' "http://$REG/v2/dist/library/never/manifests/1")
[ "$code" = 502 ] || fail "an image never cached, upstream stopped: $code $(cat "$W/err.json")"
grep -q "did not answer" "$W/err.json" || fail "the error does not say why: $(cat "$W/err.json")"

step "an upstream Berth that wants credentials, through a stored secret"
UPW=$(BERTH_REGION=eu-west-1 "$BERTH" get-login-password --data-dir "$W/up-data")
printf %s "$UPW" | docker login --username AWS --password-stdin "$U" >/dev/null
docker tag "$REG/dist/library/hello:1" "$U/team/app:1"
docker push "$U/team/app:1" >/dev/null
docker rmi "$U/team/app:1" >/dev/null
printf %s "$UPW" >"$W/up.password"
arn=$("$BERTH" secret create --data-dir "$BERTH_DATA" --name ecr-pullthroughcache/up --username AWS --password-file "$W/up.password")
[[ "$arn" == arn:aws:secretsmanager:*:secret:ecr-pullthroughcache/up-* ]] || fail "berth secret create printed: $arn"
grep -rq "$UPW" "$BERTH_DATA" && fail "the upstream password is stored in the clear"
aws ecr create-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix up --upstream-registry-url "http://$U" --credential-arn "$arn" >/dev/null
[ "$(aws ecr validate-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix up --query isValid --output text)" = True ] \
  || fail "the rule with credentials does not validate"
docker pull "$REG/up/team/app:1" >/dev/null || fail "docker pull through the upstream with auth"

step "the same with the secret made as ECR's users make it: aws secretsmanager create-secret"
SM=(--endpoint-url "$ECR_URL")
arn2=$(aws secretsmanager create-secret "${SM[@]}" --name ecr-pullthroughcache/up2 --description "upstream login" \
  --secret-string "{\"username\":\"AWS\",\"accessToken\":\"$UPW\"}" --query ARN --output text)
[[ "$arn2" == arn:aws:secretsmanager:*:secret:ecr-pullthroughcache/up2-* ]] || fail "create-secret printed: $arn2"
[ "$(aws secretsmanager describe-secret "${SM[@]}" --secret-id "$arn2" --query Description --output text)" = "upstream login" ] \
  || fail "describe-secret"
"$BERTH" secret list --data-dir "$BERTH_DATA" | grep -q "ecr-pullthroughcache/up2" || fail "berth secret list lacks the aws-made secret"
grep -rq "$UPW" "$BERTH_DATA" && fail "the upstream password is stored in the clear"
aws ecr create-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix up2 --upstream-registry-url "http://$U" --credential-arn "$arn2" >/dev/null
docker pull "$REG/up2/team/app:1" >/dev/null || fail "docker pull through the rule whose secret the aws CLI made"
out=$(aws secretsmanager get-secret-value "${SM[@]}" --secret-id ecr-pullthroughcache/nope 2>&1) && fail "a missing secret was found"
grep -q ResourceNotFoundException <<<"$out" || fail "a missing secret: $out"
echo "PASS pullthrough"
