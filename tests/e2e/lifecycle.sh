#!/usr/bin/env bash
# Lifecycle policies with the real aws CLI: put, get, a preview (and its waiter) that names what
# `berth lifecycle run` then expires, the run's audit entries, and docker pulling what stays.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
start_dockerd
start_berth lifecycle
E=(--endpoint-url "$ECR_URL" --output json)
P=$E2E_WORK/lifecycle; rm -rf "$P"; mkdir -p "$P"

step "push five tagged images with docker, then move build-1 to a sixth (the first is left untagged)"
aws ecr create-repository --repository-name web "${E[@]}" >/dev/null
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null 2>&1
cp /bin/busybox "$P/busybox"
for i in 1 2 3 4 5; do
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","echo","build %s"]\n' "$i" >"$P/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$REG/web:build-$i" "$P" >/dev/null
  docker push "$REG/web:build-$i" >/dev/null
  sleep 1.1   # distinct push times, newest last
done
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","echo","build 6"]\n' >"$P/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/web:build-1" "$P" >/dev/null
docker push "$REG/web:build-1" >/dev/null

step "an invalid policy is refused with the rule and field named"
out=$(aws ecr put-lifecycle-policy --repository-name web "${E[@]}" --lifecycle-policy-text \
  '{"rules":[{"rulePriority":1,"selection":{"tagStatus":"any","countType":"imageCountMoreThan","countUnit":"days","countNumber":1},"action":{"type":"expire"}}]}' 2>&1) \
  && fail "invalid lifecycle policy accepted"
grep -q "InvalidParameterException" <<<"$out" && grep -q "countUnit" <<<"$out" || fail "validation message: $out"

step "put-lifecycle-policy, preview, wait, get-lifecycle-policy-preview"
cat >"$P/policy.json" <<'JSON'
{"rules": [
 {"rulePriority": 1, "description": "keep the two newest builds",
  "selection": {"tagStatus": "tagged", "tagPatternList": ["build-*"], "countType": "imageCountMoreThan", "countNumber": 2},
  "action": {"type": "expire"}},
 {"rulePriority": 2, "description": "no untagged images",
  "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 0},
  "action": {"type": "expire"}}]}
JSON
aws ecr put-lifecycle-policy --repository-name web --lifecycle-policy-text "file://$P/policy.json" "${E[@]}" >/dev/null 2>"$P/put.err" \
  && fail "countNumber 0 accepted"
grep -q "countNumber must be a whole number of at least 1" "$P/put.err" || fail "countNumber 0: $(cat "$P/put.err")"
# The valid policy: untagged images go after a day.
sed -i 's/"countType": "imageCountMoreThan", "countNumber": 0}/"countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1}/' "$P/policy.json"
aws ecr put-lifecycle-policy --repository-name web --lifecycle-policy-text "file://$P/policy.json" "${E[@]}" >/dev/null
aws ecr get-lifecycle-policy --repository-name web "${E[@]}" | grep -q "keep the two newest builds" || fail "get-lifecycle-policy"
aws ecr start-lifecycle-policy-preview --repository-name web "${E[@]}" >/dev/null
aws ecr wait lifecycle-policy-preview-complete --repository-name web "${E[@]}" || fail "preview waiter"
aws ecr get-lifecycle-policy-preview --repository-name web "${E[@]}" >"$P/preview.json"
python3 - "$P/preview.json" <<'PY' || fail "preview: $(cat "$P/preview.json")"
import json, sys
p = json.load(open(sys.argv[1]))
tags = sorted(t for r in p["previewResults"] for t in r["imageTags"])
assert p["status"] == "COMPLETE", p["status"]
# The untagged first image is younger than a day: kept. Of the builds the two newest (build-1
# now on the sixth image, build-5) stay.
assert tags == ["build-2", "build-3", "build-4"], tags
assert p["summary"]["expiringImageTotalCount"] == 3, p["summary"]
assert {r["appliedRulePriority"] for r in p["previewResults"]} == {1}
PY
"$BERTH" lifecycle run --dry-run --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/dry.txt" 2>/dev/null || fail "lifecycle --dry-run"
[ "$(grep -c 'would expire' "$P/dry.txt")" = 3 ] || fail "dry run: $(cat "$P/dry.txt")"
[ "$(aws ecr list-images --repository-name web "${E[@]}" | grep -c imageDigest)" = 6 ] || fail "the dry run changed something"

step "berth lifecycle run expires exactly the preview; docker still pulls the rest"
"$BERTH" lifecycle run --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$P/run.txt" 2>&1 || fail "lifecycle run: $(cat "$P/run.txt")"
[ "$(grep -c "web  expired .*\[build-[234]\]  rule 1" "$P/run.txt")" = 3 ] || fail "run: $(cat "$P/run.txt")"
aws ecr describe-images --repository-name web "${E[@]}" >"$P/images.json"
for t in build-1 build-5; do grep -q "\"$t\"" "$P/images.json" || fail "$t should stay"; done
for t in build-2 build-3 build-4; do grep -q "\"$t\"" "$P/images.json" && fail "$t should be expired"; done
[ "$(grep -c imageDigest "$P/images.json")" = 3 ] || fail "the untagged image should stay: $(cat "$P/images.json")"
docker rmi "$REG/web:build-5" >/dev/null
docker pull "$REG/web:build-5" >/dev/null || fail "pull after the run"
[ "$(docker run --rm --network none "$REG/web:build-5")" = "build 5" ] || fail "build-5 does not run"
docker pull "$REG/web:build-2" >/dev/null 2>&1 && fail "an expired image still pulls"
aws ecr get-lifecycle-policy --repository-name web "${E[@]}" | grep -q lastEvaluatedAt || fail "lastEvaluatedAt"
"$BERTH" audit --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" --event PolicyExecutionEvent --json >"$P/audit.json" 2>/dev/null
[ "$(grep -c 'expired by lifecycle rule 1' "$P/audit.json")" = 3 ] || fail "audit: $(cat "$P/audit.json")"
"$BERTH" fsck --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >/dev/null 2>&1 || fail "fsck after the run"
docker logout "$REG" >/dev/null
echo "PASS lifecycle"
