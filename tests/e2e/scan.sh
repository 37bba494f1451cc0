#!/usr/bin/env bash
# Image scanning with the real aws CLI and docker: an image carrying this machine's real Debian 12
# package database (/var/lib/dpkg/status, /etc/os-release) is pushed to a scan-on-push repository;
# OSV records built from the installed versions are imported with `berth vulndb import`: one
# fixed in a newer glibc (a true finding), one fixed at exactly the installed version and one fixed
# earlier (never reported); `aws ecr wait image-scan-complete` and describe-image-scan-findings
# show exactly the true finding; a later import is matched against the stored inventory at once.
# (The full issue-7 data set is tests/e2e/scandata.sh.)
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
[ -r /var/lib/dpkg/status ] && grep -q '^ID=debian' /etc/os-release || fail "this test reads the machine's Debian package database"
start_dockerd
start_berth scan
E=(--endpoint-url "$ECR_URL" --output json)
P=$E2E_WORK/scan; rm -rf "$P"; mkdir -p "$P/ctx/osv"

ver=$(dpkg-query -W -f='${source:Version}' libc6)
rel=$(. /etc/os-release; echo "$VERSION_ID")
step "OSV records from the installed glibc $ver (Debian:$rel)"
rec() { # ID FIXED
  printf '{"id":"%s","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Debian:%s","name":"glibc"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"%s"}]}],"ecosystem_specific":{"urgency":"medium"}}]}' "$1" "$rel" "$2"
}
rec CVE-2099-0001 "${ver}+zz1" >"$P/ctx/osv/newer.json"      # fixed after what is installed: reported
rec CVE-2099-0002 "$ver" >"$P/ctx/osv/same.json"             # fixed in the installed version: not
rec CVE-2099-0003 "2.36-1" >"$P/ctx/osv/older.json"          # fixed long before: not
"$BERTH" vulndb import "$P/ctx/osv" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/import.out" 2>/dev/null \
  || fail "vulndb import: $(cat "$P/import.out")"
grep -q "imported 3 record" "$P/import.out" || fail "import: $(cat "$P/import.out")"
status=$("$BERTH" vulndb status --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" 2>/dev/null) || fail "vulndb status"
grep -q "3 entries" <<<"$status" && grep -q "scans queued or running: 0" <<<"$status" || fail "vulndb status: $status"

step "push an image with the real package database to a scan-on-push repository"
aws ecr create-repository --repository-name scanned --image-scanning-configuration scanOnPush=true "${E[@]}" >/dev/null
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null 2>&1
cp /bin/busybox "$P/ctx/busybox"; mkdir -p "$P/ctx/dpkg"; cp /var/lib/dpkg/status "$P/ctx/dpkg/status"; cp /etc/os-release "$P/ctx/os-release"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY os-release /etc/os-release\nCOPY dpkg/status /var/lib/dpkg/status\n' >"$P/ctx/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/scanned:1" "$P/ctx" >/dev/null
docker push "$REG/scanned:1" >/dev/null

step "aws ecr wait image-scan-complete; describe-image-scan-findings"
aws ecr wait image-scan-complete --repository-name scanned --image-id imageTag=1 "${E[@]}" || fail "waiter"
aws ecr describe-image-scan-findings --repository-name scanned --image-id imageTag=1 "${E[@]}" >"$P/findings.json"
python3 - "$P/findings.json" "$ver" <<'PY' || fail "findings: $(head -c 2000 "$P/findings.json")"
import json, sys
f = json.load(open(sys.argv[1]))
assert f["imageScanStatus"]["status"] == "COMPLETE", f["imageScanStatus"]
found = f["imageScanFindings"]["findings"]
names = sorted(x["name"] for x in found)
assert names == ["CVE-2099-0001"] * len(names) and names, names   # glibc's binary packages each carry it
attrs = {a["key"]: a["value"] for a in found[0]["attributes"]}
assert attrs["package_version"] == sys.argv[2] and attrs["fixed_in"] == sys.argv[2] + "+zz1", attrs
assert f["imageScanFindings"]["findingSeverityCounts"] == {"MEDIUM": len(found)}, f["imageScanFindings"]["findingSeverityCounts"]
print(f"  {len(found)} finding(s): {names[0]} in {attrs['package_name']} {attrs['package_version']} (fixed in {attrs['fixed_in']})")
PY

step "new data: matched against the stored inventory at import (no rescan); StartImageScan's daily quota"
rec CVE-2099-0004 "${ver}+zz2" | sed 's/"glibc"/"zlib"/; s/"fixed":"[^"]*"/"fixed":"1:9.9-1"/' >"$P/ctx/osv/zlib.json"
"$BERTH" vulndb import "$P/ctx/osv/zlib.json" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/import2.out" 2>/dev/null
grep -q "matched 1 scanned image(s) again" "$P/import2.out" || fail "rematch: $(cat "$P/import2.out")"
aws ecr describe-image-scan-findings --repository-name scanned --image-id imageTag=1 "${E[@]}" \
  --query 'imageScanFindings.findings[].name' --output text | tr '\t' '\n' | sort -u >"$P/names.txt"
[ "$(cat "$P/names.txt" | tr '\n' ' ')" = "CVE-2099-0001 CVE-2099-0004 " ] || fail "rematch: $(cat "$P/names.txt")"
out=$(aws ecr start-image-scan --repository-name scanned --image-id imageTag=1 "${E[@]}" 2>&1) && fail "a second scan the same day"
grep -q LimitExceededException <<<"$out" || fail "quota: $out"
out=$(aws ecr describe-image-scan-findings --repository-name scanned --image-id imageTag=nope "${E[@]}" 2>&1) && fail "unknown tag"
grep -q ImageNotFoundException <<<"$out" || fail "unknown tag: $out"
docker logout "$REG" >/dev/null
echo "PASS scan"
