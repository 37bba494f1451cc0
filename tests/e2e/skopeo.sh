#!/usr/bin/env bash
# skopeo: copy a single image and a multi-arch index in and out, inspect, list tags, delete.
source "$(dirname "$0")/lib.sh"
need skopeo "apt-get install skopeo"
L=$E2E_WORK/layouts; build_layouts "$L"
start_berth skopeo
step "skopeo login"
printf %s "$BERTH_PASSWORD" | skopeo login --tls-verify=false --username AWS --password-stdin "$REG" >/dev/null
S=(--dest-tls-verify=false)

step "skopeo copy a single image"
skopeo copy -q "oci:$L/oci:amd64" "docker://$REG/e2e/single:1" "${S[@]}"
step "skopeo copy --all a multi-arch index"
skopeo copy -q --all "oci:$L/oci:multi" "docker://$REG/e2e/skopeo:multi" "${S[@]}"

raw=$(skopeo inspect --raw --tls-verify=false "docker://$REG/e2e/skopeo:multi")
echo "$raw" | grep -q '"arm64"' || fail "index does not list the arm64 child: $raw"
want=$(python3 -c "import json;print([m for m in json.load(open('$L/oci/index.json'))['manifests'] if m['annotations']['org.opencontainers.image.ref.name']=='multi'][0]['digest'])")
got=sha256:$(rcurl -fsS -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/e2e/skopeo/manifests/multi" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "index bytes served differ from the bytes pushed"
arch=$(skopeo inspect --tls-verify=false --override-arch arm64 "docker://$REG/e2e/skopeo:multi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Architecture"])')
[ "$arch" = arm64 ] || fail "--override-arch arm64 resolved to $arch"

step "skopeo copy back out and compare"
rm -rf "$E2E_WORK/skopeo-out"
skopeo copy -q --all --src-tls-verify=false "docker://$REG/e2e/skopeo:multi" "oci:$E2E_WORK/skopeo-out:multi"
for arch in amd64 arm64; do
  rm -rf "$E2E_WORK/skopeo-dir-$arch"
  skopeo copy -q --src-tls-verify=false --override-arch $arch "docker://$REG/e2e/skopeo:multi" "dir:$E2E_WORK/skopeo-dir-$arch"
  rm -rf "$E2E_WORK/skopeo-dir-$arch"
done
skopeo copy -q --src-tls-verify=false --dest-tls-verify=false "docker://$REG/e2e/single:1" "docker://$REG/e2e/single:2"
skopeo list-tags --tls-verify=false "docker://$REG/e2e/skopeo" | grep -q '"multi"' || fail "list-tags lacks multi"
[ "$(tags_of e2e/single)" = "1 2" ] || fail "tags are $(tags_of e2e/single)"

step "skopeo delete"
skopeo delete --tls-verify=false "docker://$REG/e2e/single:1"
skopeo inspect --tls-verify=false "docker://$REG/e2e/single:1" >/dev/null 2>&1 && fail "deleted image still inspectable"
# Deleting by digest removes every tag of that manifest.
[ "$(tags_of e2e/single)" = "" ] || fail "tags after delete: $(tags_of e2e/single)"
step "a manifest listed by an index cannot be deleted from under it"
child=$(skopeo inspect --raw --tls-verify=false "docker://$REG/e2e/skopeo:multi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["manifests"][0]["digest"])')
skopeo delete --tls-verify=false "docker://$REG/e2e/skopeo@$child" 2>/dev/null && fail "deleting an index child succeeded"
skopeo inspect --tls-verify=false "docker://$REG/e2e/skopeo:multi" >/dev/null || fail "index damaged"
fsck_clean
echo "PASS skopeo"
