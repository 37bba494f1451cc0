#!/usr/bin/env bash
# Upgrade: today's `berth serve` opens a data directory (and, with E2E_DB=postgres, a database)
# written by an earlier main, each fixture in tests/upgrade/ (made by tests/upgrade/make-fixture.sh:
# schema-11 with the last build before jobs and events, schema-13 with the last before encryption
# at rest; E2E_FIXTURE=name runs one), and serves it:
#  - every repository and tag the old server stored is listed, and every image pulls (skopeo
#    copies each, checking every blob's digest) with the digest the old server gave it;
#  - the upload the old server left half done takes its second half and completes;
#  - the scan it queued (an old-style scan lease) runs as a job and completes;
#  - an IAM user's access key and a repository policy made before still let that user pull;
#  - what the old server stored in the clear is sealed (the background job at start-up, then
#    `berth encryption run` for the upload completed after it): no plaintext left in blobs/;
#  - berth fsck finds nothing wrong, and a second start serves the same.
source "$(dirname "$0")/lib.sh"
need skopeo "apt-get install skopeo"
need aws "pip install awscli"
need jq "apt-get install jq"
DB=${E2E_DB:-sqlite}
if [ -z "${E2E_FIXTURE:-}" ]; then
  for f in "$ROOT"/tests/upgrade/*.tar.gz; do
    name=$(basename "$f" .tar.gz)
    echo "=== fixture $name"
    E2E_FIXTURE=$name bash "$0" || exit 1
  done
  echo "PASS (every fixture)"
  exit 0
fi
U=$E2E_WORK/upgrade-$DB-$E2E_FIXTURE; rm -rf "$U"; mkdir -p "$U"
unpack_fixture "$E2E_FIXTURE" "$U"
port=$(free_port); REG=127.0.0.1:$port
serve() {
  "$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >>"$U/berth.log" 2>&1 &
  BERTH_PID=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null "http://$REG/v2/" && return 0
    kill -0 "$BERTH_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$U/berth.log"; fail "berth serve did not start on the old data"
}
trap 'stop_berth; [ -n "${FIXTURE_DB:-}" ] && psql "$BERTH_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $FIXTURE_DB" >/dev/null 2>&1 || true' EXIT
E=(--endpoint-url "http://$REG")
expect() { jq -r "$1" "$F/expect.json"; }

step "today's berth opens the old $DB data"
serve
login_berth

step "every repository and tag is there, and every image pulls with its old digest"
want=$(expect '.images | keys[]' | sort)
have=$(for r in $(rcurl -fsS "http://$REG/v2/_catalog" | jq -r '.repositories[]'); do
  rcurl -fsS "http://$REG/v2/$r/tags/list" | jq -r '.name as $n | .tags[] | "\($n):\(.)"'
done | sort)
[ "$have" = "$want" ] || fail "tags after the upgrade: $(echo $have); before: $(echo $want)"
pull_all() {
  local ref digest got
  for ref in $want; do
    digest=$(expect ".images[\"$ref\"]")
    got=$(skopeo inspect --raw --tls-verify=false --creds "AWS:$BERTH_PASSWORD" "docker://$REG/$ref" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$digest" ] || fail "$ref: manifest sha256:$got, stored as $digest"
    rm -rf "$U/pulled"
    skopeo copy -q --all --src-tls-verify=false --src-creds "AWS:$BERTH_PASSWORD" "docker://$REG/${ref%%:*}@$digest" \
      "oci:$U/pulled:x" || fail "pulling $ref"
  done
}
pull_all
echo "  $(wc -w <<<"$want") tags, all pulled: $(echo $want)"

step "the half-done upload takes its second half"
loc=$(expect .upload.location); sent=$(expect .upload.sent); size=$(stat -c %s "$F/upload.bin")
tail -c +$((sent + 1)) "$F/upload.bin" >"$U/rest"
status=$(rcurl -sS -o "$U/patch.out" -w '%{http_code}' -X PATCH -H 'Content-Type: application/octet-stream' \
  -H "Content-Range: $sent-$((size - 1))" --data-binary "@$U/rest" "http://$REG$loc")
[ "$status" = 202 ] || fail "PATCH of the rest: $status $(cat "$U/patch.out")"
digest=sha256:$(sha256sum <"$F/upload.bin" | cut -d' ' -f1)
status=$(rcurl -sS -o "$U/put.out" -w '%{http_code}' -X PUT "http://$REG$loc?digest=$digest")
[ "$status" = 201 ] || fail "completing the upload: $status $(cat "$U/put.out")"
[ "$(rcurl -fsS "http://$REG/v2/app/blobs/$digest" | sha256sum | cut -d' ' -f1)" = "${digest#sha256:}" ] \
  || fail "the completed blob reads back different"
echo "  $sent bytes before the upgrade, $((size - sent)) after: $digest"

step "the scan the old server queued runs as a job"
scan_repo=$(expect .scan | cut -d: -f1); scan_tag=$(expect .scan | cut -d: -f2)
timeout 120 aws ecr wait image-scan-complete --repository-name "$scan_repo" --image-id "imageTag=$scan_tag" "${E[@]}" \
  || fail "the queued scan never completed"
s=$(aws ecr describe-image-scan-findings --repository-name "$scan_repo" --image-id "imageTag=$scan_tag" "${E[@]}" \
  --query imageScanStatus.status --output text)
[ "$s" = COMPLETE ] || fail "scan status $s"

step "an access key and a repository policy from before still work"
out=$(AWS_ACCESS_KEY_ID=$(expect .reader.AccessKeyId) AWS_SECRET_ACCESS_KEY=$(expect .reader.SecretAccessKey) \
  AWS_SHARED_CREDENTIALS_FILE=/dev/null aws ecr batch-get-image --repository-name app --image-ids imageTag=1 "${E[@]}" \
  --query 'images[0].imageId.imageDigest' --output text 2>&1) || fail "the old user's pull: $out"
[ "$out" = "$(expect '.images["app:1"]')" ] || fail "the old user got $out"
out=$(AWS_ACCESS_KEY_ID=$(expect .reader.AccessKeyId) AWS_SECRET_ACCESS_KEY=$(expect .reader.SecretAccessKey) \
  AWS_SHARED_CREDENTIALS_FILE=/dev/null aws ecr batch-get-image --repository-name multi --image-ids imageTag=v1 "${E[@]}" \
  --query 'failures' 2>&1) && fail "the old user pulled from a repository no policy opens to it: $out"
grep -q AccessDenied <<<"$out" || fail "refused with: $out"

step "what the old server stored in the clear is sealed"
for _ in $(seq 1 100); do
  grep -q "blobs stored in the clear sealed" "$U/berth.log" && break
  sleep 0.2
done
grep "blobs stored in the clear sealed" "$U/berth.log" | head -1 | sed 's/^/  /'
grep -q "blobs stored in the clear sealed" "$U/berth.log" || fail "the background job sealed nothing"
stop_berth
"$BERTH" encryption run --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$U/seal.out" 2>&1 || { cat "$U/seal.out"; fail "berth encryption run"; }
sed 's/^/  /' "$U/seal.out" | tail -3
"$BERTH" encryption status --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" 2>/dev/null | grep -q "^0 blob(s)" \
  || fail "blobs left in the clear: $("$BERTH" encryption status --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" 2>&1)"
no_plaintext "$F/upload.bin" "$BERTH_DATA/blobs"

step "fsck is clean; a second start serves the same"
fsck_clean
serve
login_berth
pull_all
echo "PASS"
