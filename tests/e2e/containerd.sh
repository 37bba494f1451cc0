#!/usr/bin/env bash
# containerd's ctr: pull a multi-arch index with --plain-http (all platforms), push it back.
source "$(dirname "$0")/lib.sh"
need containerd "apt-get install containerd"; need skopeo "apt-get install skopeo"
L=$E2E_WORK/layouts; build_layouts "$L"
C=$E2E_WORK/containerd; rm -rf "$C"; mkdir -p "$C"
cat >"$C/config.toml" <<TOML
version = 2
root = "$C/root"
state = "$C/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$C/containerd.sock"
TOML
containerd --config "$C/config.toml" >"$C/log" 2>&1 &
CPID=$!
trap 'stop_berth; kill $CPID 2>/dev/null; wait $CPID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do [ -S "$C/containerd.sock" ] && break; sleep 0.2; done
[ -S "$C/containerd.sock" ] || { tail "$C/log"; fail "containerd did not start"; }
ctr() { command ctr --address "$C/containerd.sock" "$@"; }
start_berth containerd
trap 'stop_berth; kill $CPID 2>/dev/null; wait $CPID 2>/dev/null || true' EXIT

skopeo copy -q --all "oci:$L/oci:multi" "docker://$REG/e2e/ctr:multi" --dest-tls-verify=false --dest-creds "AWS:$BERTH_PASSWORD"
step "ctr pull --plain-http --all-platforms"
ctr images pull --user "AWS:$BERTH_PASSWORD" --plain-http --all-platforms --snapshotter native "$REG/e2e/ctr:multi" >"$C/pull.out" \
  || { cat "$C/pull.out"; fail "ctr pull failed"; }
ctr images ls -q | grep -qx "$REG/e2e/ctr:multi" || fail "pulled image not listed"
ctr content ls | grep -c 'sha256:' >"$C/count"
[ "$(cat "$C/count")" -ge 7 ] || fail "expected index + 2 manifests + 2 configs + 2 layers, got $(cat "$C/count") blobs"

step "ctr push --plain-http (the whole index)"
ctr images tag "$REG/e2e/ctr:multi" "$REG/e2e/ctr-pushed:1" >/dev/null
ctr images push --user "AWS:$BERTH_PASSWORD" --plain-http "$REG/e2e/ctr-pushed:1" >"$C/push.out" 2>&1 || { cat "$C/push.out"; fail "ctr push failed"; }
a=$(rcurl -fsS -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/e2e/ctr/manifests/multi" | sha256sum)
b=$(rcurl -fsS -H 'Accept: application/vnd.oci.image.index.v1+json' "http://$REG/v2/e2e/ctr-pushed/manifests/1" | sha256sum)
[ "$a" = "$b" ] || fail "index pushed by ctr differs from the one it pulled"
[ "$(tags_of e2e/ctr-pushed)" = "1" ] || fail "tags: $(tags_of e2e/ctr-pushed)"
code=$(rcurl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$REG/v2/e2e/ctr-pushed/manifests/1")
[ "$code" = 202 ] || fail "DELETE gave $code"
fsck_clean
echo "PASS containerd"
