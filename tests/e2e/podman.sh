#!/usr/bin/env bash
# podman and buildah (vfs storage): push, pull, list tags; buildah builds FROM scratch and pushes.
source "$(dirname "$0")/lib.sh"
need podman "apt-get install podman"; need buildah "apt-get install buildah"
L=$E2E_WORK/layouts; build_layouts "$L"
RR=/tmp/berth-podman-run     # podman refuses a --runroot longer than 50 characters
rm -rf "$RR" "$E2E_WORK/podman-root"   # its database remembers the runroot: start clean
STORE=(--root "$E2E_WORK/podman-root" --runroot "$RR" --storage-driver vfs)
trap 'stop_berth; rm -rf "$RR"' EXIT
start_berth podman
trap 'stop_berth; rm -rf "$RR"' EXIT
podman() { command podman "${STORE[@]}" "$@"; }
buildah() { command buildah "${STORE[@]}" "$@"; }
step "podman login (buildah shares its auth file)"
printf %s "$BERTH_PASSWORD" | podman login --tls-verify=false --username AWS --password-stdin "$REG" >/dev/null

step "podman push"
podman pull -q "oci:$L/oci:amd64" >/dev/null
podman tag "$(podman images -q | head -n1)" "$REG/e2e/podman:1"
podman push -q --tls-verify=false "$REG/e2e/podman:1"
podman search --list-tags --tls-verify=false "$REG/e2e/podman" | grep -qw 1 || fail "podman search --list-tags lacks tag 1"

step "podman rmi and pull"
podman rmi -f "$REG/e2e/podman:1" >/dev/null
podman pull -q --tls-verify=false "$REG/e2e/podman:1" >/dev/null
podman image exists "$REG/e2e/podman:1" || fail "pulled image missing"

step "buildah from scratch, commit, push"
ctr=$(buildah from scratch)
buildah copy "$ctr" /bin/busybox /bin/busybox >/dev/null
buildah config --cmd '["/bin/busybox","true"]' --label built-by=berth-e2e "$ctr"
buildah commit -q "$ctr" e2e-buildah >/dev/null
buildah push -q --tls-verify=false e2e-buildah "docker://$REG/e2e/buildah:1"
buildah rm "$ctr" >/dev/null
buildah rmi -f e2e-buildah >/dev/null
buildah pull -q --tls-verify=false "$REG/e2e/buildah:1" >/dev/null
label=$(podman inspect --format '{{index .Labels "built-by"}}' "$REG/e2e/buildah:1")
[ "$label" = berth-e2e ] || fail "buildah image label: $label"
[ "$(tags_of e2e/buildah)" = "1" ] || fail "tags: $(tags_of e2e/buildah)"

step "delete by tag (OCI 1.1 tag deletion)"
code=$(rcurl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$REG/v2/e2e/podman/manifests/1")
[ "$code" = 202 ] || fail "DELETE tag gave $code"
podman pull -q --tls-verify=false "$REG/e2e/podman:1" >/dev/null 2>&1 && fail "pull of deleted tag succeeded"
podman rmi -af >/dev/null 2>&1 || true
fsck_clean
echo "PASS podman"
