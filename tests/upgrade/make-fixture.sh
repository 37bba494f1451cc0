#!/usr/bin/env bash
# Writes the data an earlier Berth left behind, for tests/e2e/upgrade.sh to open with today's:
#
#     tests/upgrade/make-fixture.sh OLD_BERTH_BINARY OUT.tar.gz
#
# OLD_BERTH_BINARY is `berth` built from an earlier main (schema-11: commit 849f45d, the last layout
# before jobs and events; schema-13: commit 6fe116e, the last before encryption at rest). Needs BERTH_TEST_POSTGRES_URL, skopeo, the aws CLI.
# For each metadata backend (sqlite/, and postgres/ with its database as postgres.sql) it leaves:
#   - images pushed over /v2/ (skopeo: two tags, one an index of two platforms),
#   - an image put with ECR's PutImage, its layers uploaded with the ECR layer API,
#   - a scan-on-push repository whose scan is queued, not run (scan_workers = 0),
#   - an upload half done (its first half sent),
#   - an IAM user with an access key, and a repository policy;
# and expect.json: every repository:tag with its digest, the upload, the queued scan.
set -euo pipefail
OLD=$(realpath "$1"); OUT=$(realpath -m "$2")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export E2E_WORK=${E2E_WORK:-/tmp/berth-upgrade-fixture}
BERTH=$OLD
source "$ROOT/tests/e2e/lib.sh"
BERTH=$OLD
need skopeo "apt-get install skopeo"
need aws "pip install awscli"
W=$E2E_WORK/make; rm -rf "$W"; mkdir -p "$W/out"

# Small images: a fixture is committed.
mkdir -p "$W/l1/etc" "$W/l2/bin" "$W/l3"
echo "layer one" >"$W/l1/etc/one"; echo "layer two" >"$W/l2/bin/two"; echo "arm" >"$W/l3/arch"
python3 "$ROOT/tests/e2e/oci_image.py" "$W/img" 1 "gz:$W/l1" "gz:$W/l2" >/dev/null
python3 "$ROOT/tests/e2e/oci_image.py" "$W/img" 2 "gz:$W/l1" >/dev/null
python3 "$ROOT/tests/e2e/oci_image.py" "$W/img" arm --os-arch linux/arm64 "gz:$W/l1" "gz:$W/l3" >/dev/null
python3 - "$W/img" <<'PY'
import hashlib, json, os, sys
lay = sys.argv[1]
idx = json.load(open(f"{lay}/index.json"))
by = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
kids = []
for tag, arch in (("1", "amd64"), ("arm", "arm64")):
    d = dict(by[tag]); d.pop("annotations", None); d["platform"] = {"architecture": arch, "os": "linux"}
    kids.append(d)
body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": kids}).encode()
h = hashlib.sha256(body).hexdigest()
open(f"{lay}/blobs/sha256/{h}", "wb").write(body)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + h,
    "size": len(body), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
json.dump(idx, open(f"{lay}/index.json", "w"))
PY

make_one() { # DB: sqlite | postgres
  export E2E_DB=$1
  export BERTH_SCAN_WORKERS=0; start_berth "fixture-$1"; unset BERTH_SCAN_WORKERS
  local E=(--endpoint-url "$ECR_URL")
  for r in app multi put/img; do aws ecr create-repository --repository-name "$r" "${E[@]}" >/dev/null; done
  aws ecr create-repository --repository-name scanned --image-scanning-configuration scanOnPush=true "${E[@]}" >/dev/null
  local c=(--dest-tls-verify=false --dest-creds "AWS:$BERTH_PASSWORD")
  skopeo copy -q "${c[@]}" "oci:$W/img:1" "docker://$REG/app:1"
  skopeo copy -q "${c[@]}" "oci:$W/img:2" "docker://$REG/app:2"
  skopeo copy -q --all "${c[@]}" "oci:$W/img:multi" "docker://$REG/multi:v1"
  skopeo copy -q "${c[@]}" "oci:$W/img:2" "docker://$REG/scanned:latest"
  aws iam create-user --user-name reader --endpoint-url "$ECR_URL" >/dev/null
  aws iam create-access-key --user-name reader --endpoint-url "$ECR_URL" >"$W/out/$1-reader-key.json"
  aws ecr set-repository-policy --repository-name app "${E[@]}" --policy-text \
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:user/reader"},"Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer"]}]}' >/dev/null
  # PutImage with layers sent through the ECR layer API.
  python3 - "$ECR_URL" "$W/img" "$W/out/$1-putimage.json" <<'PY'
import base64, hashlib, json, sys
import botocore.session
ep, lay, out = sys.argv[1:]
ecr = botocore.session.get_session().create_client("ecr", endpoint_url=ep, region_name="us-east-1")
idx = json.load(open(f"{lay}/index.json"))
m = next(x for x in idx["manifests"] if x["annotations"]["org.opencontainers.image.ref.name"] == "2")
body = open(f"{lay}/blobs/{m['digest'].replace(':', '/')}", "rb").read()
man = json.loads(body)
for d in [man["config"]] + man["layers"]:
    data = open(f"{lay}/blobs/{d['digest'].replace(':', '/')}", "rb").read()
    up = ecr.initiate_layer_upload(repositoryName="put/img")["uploadId"]
    ecr.upload_layer_part(repositoryName="put/img", uploadId=up, partFirstByte=0, partLastByte=len(data) - 1, layerPartBlob=data)
    ecr.complete_layer_upload(repositoryName="put/img", uploadId=up, layerDigests=[d["digest"]])
r = ecr.put_image(repositoryName="put/img", imageManifest=body.decode(), imageTag="put1",
                  imageManifestMediaType=man["mediaType"])
json.dump({"digest": r["image"]["imageId"]["imageDigest"]}, open(out, "w"))
PY
  # An upload half done: its first half sent, the rest sent after the upgrade.
  head -c 30000 /dev/urandom >"$W/out/$1-upload.bin"
  local loc
  loc=$(rcurl -fsS -D - -o /dev/null -X POST "http://$REG/v2/app/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  head -c 15000 "$W/out/$1-upload.bin" >"$W/first-half"
  rcurl -fsS -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' -H 'Content-Range: 0-14999' \
    --data-binary "@$W/first-half" "http://$REG$loc"
  echo "$loc" >"$W/out/$1-upload.location"
  [ "$(aws ecr describe-image-scan-findings --repository-name scanned --image-id imageTag=latest "${E[@]}" \
    --query imageScanStatus.status --output text)" = IN_PROGRESS ] || fail "the scan is not left queued"
  stop_berth
  mkdir -p "$W/out/$1"
  cp -a "$BERTH_DATA" "$W/out/$1/data"
  if [ "$1" = postgres ]; then
    pg_dump --no-owner --no-privileges "${BERTH_DB_ARGS[1]}" >"$W/out/$1/postgres.sql"
    psql "$BERTH_TEST_POSTGRES_URL" -qc "DROP DATABASE ${BERTH_DB_ARGS[1]##*/}" >/dev/null
  fi
}
make_one sqlite
make_one postgres

# What was stored: every repository:tag and its digest, as the old server answered.
python3 - "$W/out" "$W/img" <<'PY'
import json, sys, glob
out, lay = sys.argv[1:]
idx = {m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
       for m in json.load(open(f"{lay}/index.json"))["manifests"]}
for db in ("sqlite", "postgres"):
    put = json.load(open(f"{out}/{db}-putimage.json"))["digest"]
    e = {"images": {"app:1": idx["1"], "app:2": idx["2"], "multi:v1": idx["multi"], "scanned:latest": idx["2"],
                    "put/img:put1": put},
         "upload": {"location": open(f"{out}/{db}-upload.location").read().strip(), "sent": 15000},
         "scan": "scanned:latest",
         "reader": json.load(open(f"{out}/{db}-reader-key.json"))["AccessKey"]}
    json.dump(e, open(f"{out}/{db}/expect.json", "w"), indent=1)
PY
for db in sqlite postgres; do cp "$W/out/$db-upload.bin" "$W/out/$db/upload.bin"; done
# The space reserve (zeros) is made again by the server that opens the directory.
tar -C "$W/out" --exclude=space-reserve -czf "$OUT" sqlite postgres
echo "wrote $OUT ($(du -h "$OUT" | cut -f1))"
