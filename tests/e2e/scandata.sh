#!/usr/bin/env bash
# Issue 7's data set: real images built offline and real vulnerability facts, exact findings
# both ways, with the aws CLI, skopeo and docker.
#  - debian/minbase: a `debootstrap --variant=minbase bookworm` rootfs (gzip), Python packages
#    from `pip install --no-deps --target` (gzip), npm packages from `npm install --ignore-scripts`
#    (uncompressed), Debian's fzf (a Go binary) and a binary carrying a `cargo auditable` section
#    (zstd), and a layer whiting out one Python package (zstd).
#  - alpine/synthetic: an apk database; rocky/synthetic: an rpmdb.sqlite written by Debian's
#    rpm (`rpmbuild`, then `rpm --justdb -i`).
#  - OSV records: from the rootfs's changelog.Debian.gz files and the newer bookworm-security
#    versions' changelogs (tests/e2e/debian_osv.py): CVEs fixed after the installed version must
#    be reported (with the first fixed version), CVEs fixed at or before it never; plus records
#    for the Python, npm, Go, Rust and Alpine packages, each with a must-not-report twin.
# Then: scan on push, exact findings, a scan whose server is killed mid-scan finishes after a
# restart, StartImageScan's quota, new data matched without a rescan, and a pull-blocking policy
# refusing `docker pull` until the findings are excepted.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"; need skopeo "apt-get install skopeo"; need debootstrap "apt-get install debootstrap"
need npm "the machine's Node.js"; need rpmbuild "apt-get install rpm"; need objcopy "apt-get install binutils"; need zstd "apt-get install zstd"
[ -x /usr/bin/fzf ] || fail "/usr/bin/fzf missing (apt-get install fzf: the Go binary under test)"
W=$E2E_WORK/scandata; rm -rf "$W"; mkdir -p "$W"/{L1,L2,L3,L4,osv,apk}
ROOTFS=$E2E_WORK/cache/bookworm
if [ ! -f "$ROOTFS/.complete" ]; then
  step "debootstrap --variant=minbase bookworm (once per machine)"
  rm -rf "$ROOTFS"; mkdir -p "$(dirname "$ROOTFS")"
  debootstrap --variant=minbase bookworm "$ROOTFS" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
    || { tail "$W/debootstrap.log"; fail "debootstrap"; }
  touch "$ROOTFS/.complete"
fi
NPKG=$(grep -c '^Status: install ok installed' "$ROOTFS/var/lib/dpkg/status")
step "rootfs has $NPKG Debian packages"
apt-cache madison libc6 | grep -q bookworm-security || apt-get update -qq

step "OSV records from the Debian changelogs (installed and newer bookworm-security versions)"
python3 "$ROOT/tests/e2e/debian_osv.py" "$ROOTFS" "$W/osv" "$W/debs" >"$W/expected-debian.json" || fail "debian_osv.py"

step "layers: Python, npm, Go and Rust binaries, a whiteout"
PY=usr/local/lib/python3.11/dist-packages
pip install -q --no-deps --target "$W/L1/$PY" urllib3==1.26.4 idna==2.10 six==1.16.0 >/dev/null 2>&1 || fail "pip install"
(cd "$W/L2" && mkdir -p srv/app && npm install -s --ignore-scripts --no-audit --no-fund --prefix srv/app lodash@4.17.20 minimist@1.2.6 >/dev/null 2>&1) \
  || fail "npm install"
mkdir -p "$W/L3/usr/local/bin"; cp /usr/bin/fzf "$W/L3/usr/local/bin/fzf"
# Java: Debian's log4j-core jar (Maven coordinates in META-INF/maven), and a Spring-Boot-style
# jar nesting a jackson-databind jar.
(mkdir -p "$W/log4j" && cd "$W/log4j" && apt-get download -qq -o APT::Sandbox::User=root liblog4j2-java >/dev/null 2>&1 \
  && dpkg-deb -x liblog4j2-java_*.deb x) || fail "apt-get download liblog4j2-java"
mkdir -p "$W/L3/usr/share/java" "$W/L3/srv/app"
cp "$W"/log4j/x/usr/share/java/log4j-core-2*.jar "$W/L3/usr/share/java/"
python3 - "$W/L3/srv/app/app.jar" <<'PY'
import io, sys, zipfile
inner = io.BytesIO()
with zipfile.ZipFile(inner, "w") as z:
    z.writestr("META-INF/maven/com.fasterxml.jackson.core/jackson-databind/pom.properties",
               "version=2.9.8\ngroupId=com.fasterxml.jackson.core\nartifactId=jackson-databind\n")
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    z.writestr("BOOT-INF/lib/jackson-databind-2.9.8.jar", inner.getvalue(), compress_type=zipfile.ZIP_STORED)
PY
printf '{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},{"name":"smallvec","version":"1.6.0","source":"crates.io"}]}' \
  | python3 -c 'import sys,zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))' >"$W/deps.zlib"
objcopy --add-section .dep-v0="$W/deps.zlib" /bin/true "$W/L3/usr/local/bin/rustapp"
mkdir -p "$W/L4/$PY"; touch "$W/L4/$PY/.wh.idna-2.10.dist-info" "$W/L4/$PY/.wh.idna"
GOV=$(python3 -c 'import re,sys; b=open("/usr/bin/fzf","rb").read(); print(re.search(rb"go(1\.\d+(\.\d+)?)", b[b.find(b"\xff Go buildinf:"):]).group(1).decode())')

rec() { # FILE ID ALIAS ECOSYSTEM PACKAGE FIXED [CVSS]
  python3 - "$@" <<'PY'
import json, sys
f, id_, alias, eco, pkg, fixed = sys.argv[1:7]
r = {"id": id_, "modified": "2026-11-01T00:00:00Z", "affected": [{"package": {"ecosystem": eco, "name": pkg},
     "ranges": [{"type": "SEMVER" if eco in ("npm", "Go", "crates.io") else "ECOSYSTEM",
                 "events": [{"introduced": "0"}, {"fixed": fixed}]}]}]}
if alias != "-": r["aliases"] = [alias]
if len(sys.argv) > 7: r["severity"] = [{"type": "CVSS_V3", "score": sys.argv[7]}]
json.dump(r, open(f, "w"))
PY
}
O=$W/extra   # zipped below, as OSV publishes its all.zip
mkdir -p "$O"
rec "$O/py1.json" PYSEC-2021-108 CVE-2021-33503 PyPI urllib3 1.26.5 "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"
rec "$O/py2.json" CVE-2024-3651 - PyPI idna 3.7 "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"   # whited out: never
rec "$O/py3.json" PYSEC-TEST-0001 - PyPI six 1.16.0                                                # fixed as installed: never
rec "$O/npm1.json" GHSA-35jh-r3h4-6jhm CVE-2021-23337 npm lodash 4.17.21 "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"
rec "$O/npm2.json" GHSA-xvch-5gv4-984h CVE-2021-44906 npm minimist 1.2.6                          # never
rec "$O/go1.json" GO-2023-1751 CVE-2023-29400 Go stdlib 1.99.0
rec "$O/go2.json" GO-TEST-0001 - Go stdlib 1.2.0                                                   # never
rec "$O/rs1.json" RUSTSEC-2021-0003 CVE-2021-25900 crates.io smallvec 1.6.1 "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
rec "$O/rs2.json" RUSTSEC-TEST-0001 - crates.io smallvec 1.0.0                                     # never
rec "$O/apk1.json" CVE-2023-6129 - Alpine:v3.19 openssl 3.1.4-r3
rec "$O/apk2.json" CVE-2023-42363 - Alpine:v3.19 busybox 1.36.1-r15                               # never (installed)
rec "$O/mvn1.json" GHSA-cmfg-87vq-g5g4 CVE-2019-12086 Maven com.fasterxml.jackson.core:jackson-databind 2.9.9 "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"
rec "$O/mvn2.json" GHSA-jfh8-c2jp-5v3q CVE-2021-44228 Maven org.apache.logging.log4j:log4j-core 2.15.0   # never (2.19 installed)
rec "$O/rpm1.json" RLSA-2099:0001 CVE-2099-1001 "Rocky Linux:9" hello 1:1.2-4.el9
rec "$O/rpm2.json" RLSA-2099:0002 CVE-2099-1002 "Rocky Linux:9" hello 1:1.2-3.el9                  # never (installed)
echo '{"id":"HEX-1","affected":[{"package":{"ecosystem":"Hex","name":"plug"},"versions":["1.0.0"]}]}' >"$O/hex.json"
python3 - "$O" "$W/osv/all.zip" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_DEFLATED) as z:
    for f in sorted(os.listdir(sys.argv[1])):
        z.write(os.path.join(sys.argv[1], f), f)
    z.writestr("README.txt", "not a record")
PY
O=$W/osv
mkdir -p "$W/rpm/etc" "$W/rpm/var/lib/rpm" "$W/rpmbuild"
printf 'NAME="Rocky Linux"\nID=rocky\nVERSION_ID=9.3\n' >"$W/rpm/etc/os-release"
printf 'Name: hello\nVersion: 1.2\nRelease: 3.el9\nEpoch: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n%%description\nt\n%%package -n libhello\nSummary: l\n%%description -n libhello\nl\n%%files\n%%files -n libhello\n' >"$W/hello.spec"
rpmbuild -bb --quiet --define "_topdir $W/rpmbuild" "$W/hello.spec" >/dev/null 2>&1 || fail rpmbuild
rpm --dbpath "$W/rpm/var/lib/rpm" --initdb
rpm --dbpath "$W/rpm/var/lib/rpm" --justdb --nodeps --ignorearch --ignoreos -i "$W"/rpmbuild/RPMS/noarch/*.rpm >/dev/null 2>&1 || fail "rpm --justdb"
rm -f "$W"/rpm/var/lib/rpm/rpmdb.sqlite-* "$W"/rpm/var/lib/rpm/.rpm.lock
mkdir -p "$W/apk/etc" "$W/apk/lib/apk/db"
printf 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.19.1\n' >"$W/apk/etc/os-release"
printf 'P:musl\nV:1.2.4_git20230717-r4\no:musl\n\nP:busybox\nV:1.36.1-r15\no:busybox\n\nP:libcrypto3\nV:3.1.4-r1\no:openssl\n\nP:libssl3\nV:3.1.4-r1\no:openssl\n\n' \
  >"$W/apk/lib/apk/db/installed"

export BERTH_SBOM_REFERRERS=true   # each scan attaches its CycloneDX SBOM as a referrer
start_berth scandata
E=(--endpoint-url "$ECR_URL" --output json)
"$BERTH" vulndb import "$O" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$W/import.out" 2>/dev/null || fail "import: $(cat "$W/import.out")"
step "$(head -1 "$W/import.out")"
nd=$(jq .records "$W/expected-debian.json")
grep -q "imported $((nd + 16)) record(s) from $((nd + 1)) file(s): $((nd + 15)) package entries" "$W/import.out" \
  && grep -q "skipped 1 entries of ecosystem Hex" "$W/import.out" || fail "import ($nd .json files and all.zip with 16 records): $(cat "$W/import.out")"

step "build and push the images (skopeo), scan on push"
python3 "$ROOT/tests/e2e/oci_image.py" "$W/oci-debian" 1 "gz:$ROOTFS" "gz:$W/L1" "tar:$W/L2" "zstd:$W/L3" "zstd:$W/L4" >/dev/null
python3 "$ROOT/tests/e2e/oci_image.py" "$W/oci-alpine" 1 "gz:$W/apk" >/dev/null
python3 "$ROOT/tests/e2e/oci_image.py" "$W/oci-rocky" 1 "gz:$W/rpm" >/dev/null
for r in debian/minbase alpine/synthetic rocky/synthetic; do
  aws ecr create-repository --repository-name $r --image-scanning-configuration scanOnPush=true "${E[@]}" >/dev/null
done
push() { skopeo copy -q --dest-tls-verify=false --dest-creds "AWS:$BERTH_PASSWORD" "oci:$1:1" "docker://$REG/$2" >/dev/null || fail "skopeo copy $2"; }
push "$W/oci-debian" debian/minbase:1
push "$W/oci-alpine" alpine/synthetic:1
push "$W/oci-rocky" rocky/synthetic:1
for r in debian/minbase alpine/synthetic rocky/synthetic; do
  aws ecr wait image-scan-complete --repository-name $r --image-id imageTag=1 "${E[@]}" || fail "waiter $r"
  aws ecr describe-image-scan-findings --repository-name $r --image-id imageTag=1 "${E[@]}" >"$W/findings-${r%%/*}.json"
done

step "exact findings, both ways"
python3 - "$W" "$GOV" "$NPKG" <<'PY' || fail "findings differ"
import json, sys
w, gov, npkg = sys.argv[1], sys.argv[2], int(sys.argv[3])
exp = json.load(open(f"{w}/expected-debian.json"))
def got(name):
    f = json.load(open(f"{w}/findings-{name}.json"))
    assert f["imageScanStatus"]["status"] == "COMPLETE", f["imageScanStatus"]
    out = {}
    for x in f["imageScanFindings"]["findings"]:
        a = {k["key"]: k["value"] for k in x["attributes"]}
        out[(x["name"], a["package_name"])] = (a["package_version"], a.get("fixed_in"), x["severity"])
    return out, f["imageScanFindings"]["findingSeverityCounts"]
deb, counts = got("debian")
want = {(c, p): (v, fix) for c, p, v, fix in exp["findings"]}
gv = tuple(int(x) for x in gov.split("."))
want[("CVE-2021-33503", "urllib3")] = ("1.26.4", "1.26.5")
want[("CVE-2021-23337", "lodash")] = ("4.17.20", "4.17.21")
want[("CVE-2023-29400", "stdlib")] = (gov, "1.99.0")
want[("CVE-2021-25900", "smallvec")] = ("1.6.0", "1.6.1")
want[("CVE-2019-12086", "com.fasterxml.jackson.core:jackson-databind")] = ("2.9.8", "2.9.9")
missing = sorted(set(want) - set(deb)); extra = sorted(set(deb) - set(want))
assert not missing and not extra, f"missing {missing[:20]} extra {extra[:20]}"
for k, (v, fix) in want.items():
    assert deb[k][:2] == (v, fix), (k, deb[k], v, fix)
assert deb[("CVE-2021-23337", "lodash")][2] == "HIGH" and deb[("CVE-2021-25900", "smallvec")][2] == "CRITICAL", deb
apk, _ = got("alpine")
assert set(apk) == {("CVE-2023-6129", "libcrypto3"), ("CVE-2023-6129", "libssl3")}, apk
rpm, _ = got("rocky")
assert rpm == {("CVE-2099-1001", "hello"): ("1:1.2-3.el9", "1:1.2-4.el9", "UNDEFINED"),
               ("CVE-2099-1001", "libhello"): ("1:1.2-3.el9", "1:1.2-4.el9", "UNDEFINED")}, rpm
print(f"  debian/minbase: {len(deb)} findings = {len(exp['findings'])} Debian (from {exp['records']} changelog records, "
      f"{exp['negative']} of them fixed at or before the installed version) + 5 Python/npm/Go/Rust/Java; {counts}")
print(f"  alpine/synthetic: {len(apk)} findings; rocky/synthetic: {len(rpm)} findings")
PY
grep -o 'image scanned.*' "$E2E_WORK/scandata.log" | sed 's/^/  /'
n=$(grep 'image scanned' "$E2E_WORK/scandata.log" | grep debian/minbase | grep -o 'packages=[0-9]*' | cut -d= -f2)
[ "$n" = $((NPKG + 2 + 2 + 1 + 1 + 2)) ] || fail "debian/minbase: $n packages, want $NPKG deb + urllib3 six + lodash minimist + stdlib + smallvec + log4j-core jackson-databind"

step "the SBOM: through the API and attached to the image as an OCI referrer"
D=$(jq -r .imageId.imageDigest "$W/findings-debian.json")
python3 "$ROOT/tests/e2e/ecr_call.py" "$ECR_URL" GetImageSbom '{"repositoryName":"debian/minbase","imageId":{"imageTag":"1"}}' >"$W/sbom.json" \
  || fail "GetImageSbom: $(cat "$W/sbom.json")"
[ "$(jq '.sbom.components | length' "$W/sbom.json")" = $((n + 1)) ] || fail "SBOM components: want $n packages and the OS"
jq -e '[.sbom.components[].purl | strings] | any(test("^pkg:deb/debian/perl-base@[^?]+[?]distro=debian-12&upstream=perl($|%40)"))' "$W/sbom.json" >/dev/null \
  || fail "no perl-base purl naming its source"
curl -fsS -H "Authorization: $BERTH_BASIC" "http://$REG/v2/debian/minbase/referrers/$D" >"$W/referrers.json" || fail "referrers"
[ "$(jq -r '[.manifests[] | select(.artifactType=="application/vnd.cyclonedx+json")] | length' "$W/referrers.json")" = 1 ] \
  || fail "SBOM referrer: $(cat "$W/referrers.json")"
R=$(jq -r '.manifests[0].digest' "$W/referrers.json")
L=$(curl -fsS -H "Authorization: $BERTH_BASIC" -H "Accept: application/vnd.oci.image.manifest.v1+json" "http://$REG/v2/debian/minbase/manifests/$R" | jq -r '.layers[0].digest')
curl -fsS -H "Authorization: $BERTH_BASIC" "http://$REG/v2/debian/minbase/blobs/$L" | jq -e '.bomFormat == "CycloneDX" and (.components | length) > 90' >/dev/null \
  || fail "the attached SBOM"

step "StartImageScan again within a day: LimitExceededException"
out=$(aws ecr start-image-scan --repository-name debian/minbase --image-id imageTag=1 "${E[@]}" 2>&1) && fail "second scan allowed"
grep -q LimitExceededException <<<"$out" || fail "quota: $out"

step "new data: matched against the stored inventory, no rescan, an event"
rec "$O/new.json" CVE-2099-0001 - Debian:12 zlib 1:9.9-1
"$BERTH" vulndb import "$O/new.json" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$W/import2.out" 2>/dev/null
grep -q "1 changed (1 finding(s) appeared, 0 disappeared)" "$W/import2.out" || fail "rematch: $(cat "$W/import2.out")"
aws ecr describe-image-scan-findings --repository-name debian/minbase --image-id imageTag=1 "${E[@]}" >"$W/findings2.json"
jq -e '[.imageScanFindings.findings[] | select(.name=="CVE-2099-0001") | .attributes[] | select(.key=="package_name") | .value] == ["zlib1g"]' \
  "$W/findings2.json" >/dev/null || fail "the new finding is not shown: $(head -c 600 "$W/findings2.json")"
events=$("$BERTH" audit --event ImageScanFindingsChanged --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" 2>/dev/null)
grep -q "+CVE-2099-0001 (zlib1g" <<<"$events" \
  || fail "no ImageScanFindingsChanged event"

step "kill -9 in the middle of a scan; after a restart the scan completes"
# The same image with layers no scan has read (the rootfs zstd-compressed, and 256 MiB more), so
# the scan has to read them; the kill comes as soon as a worker has claimed the scan, not after a
# fixed time.
mkdir -p "$W/big"; [ -f "$W/big/random" ] || head -c 268435456 /dev/urandom >"$W/big/random"
python3 "$ROOT/tests/e2e/oci_image.py" "$W/oci-kill" 1 "zstd:$ROOTFS" "gz:$W/L1" "tar:$W/L2" "zstd:$W/L3" "zstd:$W/L4" "tar:$W/big" >/dev/null
aws ecr create-repository --repository-name debian/copy "${E[@]}" >/dev/null
push "$W/oci-kill" debian/copy:1
claimed() { # whether a worker holds debian/copy's scan
  local q="SELECT COUNT(*) FROM jobs WHERE queue = 'scan' AND payload LIKE '%\"repo\":\"debian/copy\"%' AND claimed_by IS NOT NULL"
  if [ "${E2E_DB:-sqlite}" = postgres ]; then psql "${BERTH_DB_ARGS[1]}" -Atc "$q"
  else python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])' "$BERTH_DATA/berth.db" "$q"; fi
}
aws ecr start-image-scan --repository-name debian/copy --image-id imageTag=1 "${E[@]}" >/dev/null
for _ in $(seq 1 3000); do [ "$(claimed)" = 1 ] && break; sleep 0.01; done
kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
grep 'image scanned' "$E2E_WORK/scandata.log" | grep -q debian/copy && fail "the scan finished before the kill: nothing tested"
[ "$(claimed)" = 1 ] || fail "no worker had claimed the scan when the server was killed"
"$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >>"$E2E_WORK/scandata.log" 2>&1 &
BERTH_PID=$!
wait_http "http://$REG/v2/"
s=$(aws ecr describe-image-scan-findings --repository-name debian/copy --image-id imageTag=1 "${E[@]}" --query imageScanStatus.status --output text)
[ "$s" = IN_PROGRESS ] || fail "after the restart: $s"
t0=$(date +%s)
aws ecr wait image-scan-complete --repository-name debian/copy --image-id imageTag=1 "${E[@]}" || fail "the interrupted scan never completed"
step "  taken up again and completed $(( $(date +%s) - t0 )) s after the restart (the dead node's claim lasts 30 s)"
[ "$(aws ecr describe-image-scan-findings --repository-name debian/copy --image-id imageTag=1 "${E[@]}" --query 'length(imageScanFindings.findings)')" \
  = "$(jq '.imageScanFindings.findings | length + 1' "$W/findings-debian.json")" ] || fail "the resumed scan's findings differ"

step "scan policy: docker pull refused at HIGH, allowed with the findings excepted"
# Debian's Docker 20.10 cannot unpack zstd layers: the same image with gzip layers, scanned on push.
python3 "$ROOT/tests/e2e/oci_image.py" "$W/oci-gz" 1 "gz:$ROOTFS" "gz:$W/L1" "tar:$W/L2" "gz:$W/L3" "gz:$W/L4" >/dev/null
push "$W/oci-gz" debian/minbase:gz
aws ecr wait image-scan-complete --repository-name debian/minbase --image-id imageTag=gz "${E[@]}" || fail "waiter gz"
start_dockerd
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null 2>&1
python3 "$ROOT/tests/e2e/ecr_call.py" "$ECR_URL" PutRepositoryScanPolicy \
  '{"repositoryName":"debian/minbase","scanPolicy":{"blockPullsAtSeverity":"HIGH"}}' >/dev/null || fail "PutRepositoryScanPolicy"
out=$(docker pull "$REG/debian/minbase:gz" 2>&1) && fail "pull of a vulnerable image allowed"
grep -q "refused" <<<"$out" && grep -q "HIGH or higher" <<<"$out" || fail "docker's message: $out"
step "  docker: $(grep -o 'pulls of.*' <<<"$out" | head -c 160)…"
ignore=$(jq -c '[.imageScanFindings.findings[] | select(.severity=="HIGH" or .severity=="CRITICAL") | .name]' "$W/findings-debian.json")
python3 "$ROOT/tests/e2e/ecr_call.py" "$ECR_URL" PutRepositoryScanPolicy \
  "{\"repositoryName\":\"debian/minbase\",\"scanPolicy\":{\"blockPullsAtSeverity\":\"HIGH\",\"ignoredVulnerabilities\":$ignore}}" >/dev/null
docker pull -q "$REG/debian/minbase:gz" >/dev/null || fail "pull with the exceptions"
v=$(docker run --rm --network none "$REG/debian/minbase:gz" cat /etc/debian_version) || fail "docker run"
step "  pulled and ran: Debian $v"
docker rmi -f "$REG/debian/minbase:gz" >/dev/null 2>&1 || true
docker logout "$REG" >/dev/null
echo "PASS scandata"
