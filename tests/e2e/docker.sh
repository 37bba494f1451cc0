#!/usr/bin/env bash
# docker (Debian's docker.io): build FROM scratch, push, remove, pull, run; list tags; delete.
source "$(dirname "$0")/lib.sh"
start_dockerd
start_berth docker
step "docker login with the password from berth get-login-password"
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null

step "docker build FROM scratch with busybox-static"
B=$E2E_WORK/docker-build; rm -rf "$B"; mkdir -p "$B"
cp /bin/busybox "$B/busybox"
head -c 3000000 /dev/urandom >"$B/random.bin"   # a layer big enough to need more than one write
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY random.bin /data/random.bin\nCMD ["/bin/busybox","echo","hello from berth"]\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/e2e/docker:1" "$B" >/dev/null
docker tag "$REG/e2e/docker:1" "$REG/e2e/docker:2"

step "docker push"
docker push "$REG/e2e/docker:1" >/dev/null
docker push "$REG/e2e/docker:2" >/dev/null
[ "$(tags_of e2e/docker)" = "1 2" ] || fail "tags: $(tags_of e2e/docker)"

step "docker rmi, pull, run"
docker rmi "$REG/e2e/docker:1" "$REG/e2e/docker:2" >/dev/null
docker pull "$REG/e2e/docker:1" >/dev/null
out=$(docker run --rm --network none "$REG/e2e/docker:1")
[ "$out" = "hello from berth" ] || fail "container printed: $out"
docker run --rm --network none "$REG/e2e/docker:1" /bin/busybox sha256sum /data/random.bin | cut -d' ' -f1 >"$B/got"
[ "$(cat "$B/got")" = "$(sha256sum <"$B/random.bin" | cut -d' ' -f1)" ] || fail "layer content changed"

step "delete the manifest by digest"
digest=$(rcurl -fsSI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/e2e/docker/manifests/1" \
  | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
[ -n "$digest" ] || fail "no Docker-Content-Digest"
code=$(rcurl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$REG/v2/e2e/docker/manifests/$digest")
[ "$code" = 202 ] || fail "DELETE gave $code"
[ "$(tags_of e2e/docker)" = "" ] || fail "tags after delete: $(tags_of e2e/docker)"
docker rmi "$REG/e2e/docker:1" >/dev/null
docker pull "$REG/e2e/docker:1" >/dev/null 2>&1 && fail "pull of a deleted image succeeded"
fsck_clean
echo "PASS docker"
