#!/usr/bin/env bash
# The ECR control plane with the real aws CLI and boto3, and docker logged in with the token it
# issues: the seed's workflow end to end (create-repository, get-login-password | docker login,
# push, pull, describe-images, batch-delete-image, an immutable tag refused), every operation
# through boto3 (tests/e2e/ecr_boto3.py), an image put with PutImage pulled and run by docker,
# and create-on-push turned off. E2E_CHALLENGE=basic runs docker with Basic auth instead of the
# token flow.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
python3 -c 'import boto3' 2>/dev/null || fail "boto3 missing (pip install boto3)"
start_dockerd
start_berth ecr
E=(--endpoint-url "$ECR_URL" --output json)
jqv() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {'d': d}))" "$1"; }

step "aws ecr create-repository (scan on push, AES256)"
aws ecr create-repository --repository-name my-app --image-scanning-configuration scanOnPush=true \
  --encryption-configuration encryptionType=AES256 "${E[@]}" >"$E2E_WORK/create.json"
[ "$(jqv 'd["repository"]["repositoryUri"]' <"$E2E_WORK/create.json")" = "$REG/my-app" ] || fail "repositoryUri: $(cat "$E2E_WORK/create.json")"
[ "$(jqv 'd["repository"]["imageScanningConfiguration"]["scanOnPush"]' <"$E2E_WORK/create.json")" = True ] || fail "scanOnPush"
out=$(aws ecr create-repository --repository-name my-app "${E[@]}" 2>&1) && fail "duplicate create succeeded"
grep -q RepositoryAlreadyExistsException <<<"$out" || fail "duplicate create: $out"

step "/v2/ challenges with ${E2E_CHALLENGE:-bearer}; aws ecr get-login-password | docker login"
want=Bearer; [ "${E2E_CHALLENGE:-bearer}" = basic ] && want=Basic
curl -sI "http://$REG/v2/" | grep -qi "^www-authenticate: $want realm=" || fail "/v2/ does not challenge with $want"
aws ecr get-login-password "${E[@]}" | docker login --username AWS --password-stdin "$REG" >"$E2E_WORK/login.out" 2>&1 \
  || { cat "$E2E_WORK/login.out"; fail "docker login failed"; }
grep -q "Login Succeeded" "$E2E_WORK/login.out" || fail "docker login: $(cat "$E2E_WORK/login.out")"

step "docker build, tag, push, pull"
B=$E2E_WORK/ecr-build; rm -rf "$B"; mkdir -p "$B"
cp /bin/busybox "$B/busybox"
head -c 500000 /dev/urandom >"$B/one.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY one.bin /one.bin\nCMD ["/bin/busybox","echo","my-app v1"]\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t my-app:v1 "$B" >/dev/null
docker tag my-app:v1 "$REG/my-app:v1"
docker push "$REG/my-app:v1" >"$E2E_WORK/push.out" 2>&1 || { cat "$E2E_WORK/push.out"; fail "docker push"; }
docker rmi "$REG/my-app:v1" my-app:v1 >/dev/null
docker pull "$REG/my-app:v1" >/dev/null
[ "$(docker run --rm --network none "$REG/my-app:v1")" = "my-app v1" ] || fail "pulled image does not run"

step "aws ecr describe-images: size and dates of the docker-pushed image"
aws ecr describe-images --repository-name my-app "${E[@]}" >"$E2E_WORK/describe.json"
manifest=$(rcurl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/my-app/manifests/v1")
want=$(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); print(m["config"]["size"]+sum(l["size"] for l in m["layers"]))' "$manifest")
[ "$(jqv 'd["imageDetails"][0]["imageSizeInBytes"]' <"$E2E_WORK/describe.json")" = "$want" ] || fail "imageSizeInBytes: $(cat "$E2E_WORK/describe.json"), want $want"
[ "$(jqv 'd["imageDetails"][0]["imageTags"]' <"$E2E_WORK/describe.json")" = "['v1']" ] || fail "imageTags"
pushed=$(jqv 'd["imageDetails"][0]["imagePushedAt"]' <"$E2E_WORK/describe.json")
python3 -c "import sys,time; t=float(sys.argv[1]); sys.exit(0 if abs(time.time()-t) < 600 else 1)" "$pushed" \
  || fail "imagePushedAt $pushed is not now"
for _ in $(seq 1 400); do   # the pull time is recorded within 10 s (40 s of patience on a loaded machine)
  aws ecr describe-images --repository-name my-app "${E[@]}" >"$E2E_WORK/describe.json"
  grep -q lastRecordedPullTime "$E2E_WORK/describe.json" && break
  sleep 0.2
done
grep -q lastRecordedPullTime "$E2E_WORK/describe.json" || fail "docker pull was not recorded"

step "an immutable tag refuses a different image"
aws ecr put-image-tag-mutability --repository-name my-app --image-tag-mutability IMMUTABLE "${E[@]}" >/dev/null
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","echo","my-app v2"]\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/my-app:v1" "$B" >/dev/null
docker push "$REG/my-app:v1" >"$E2E_WORK/push2.out" 2>&1 && fail "push over an immutable tag succeeded"
grep -q "cannot be overwritten because the tag is immutable" "$E2E_WORK/push2.out" || fail "refusal: $(cat "$E2E_WORK/push2.out")"
docker tag "$REG/my-app:v1" "$REG/my-app:v2"
docker push "$REG/my-app:v2" >/dev/null || fail "a new tag on an immutable repository"
aws ecr list-images --repository-name my-app "${E[@]}" >"$E2E_WORK/list.json"
[ "$(jqv 'sorted(i["imageTag"] for i in d["imageIds"])' <"$E2E_WORK/list.json")" = "['v1', 'v2']" ] || fail "list-images: $(cat "$E2E_WORK/list.json")"

step "aws ecr batch-delete-image"
aws ecr batch-delete-image --repository-name my-app --image-ids imageTag=v1 "${E[@]}" >"$E2E_WORK/del.json"
[ "$(jqv 'd["imageIds"][0]["imageTag"]' <"$E2E_WORK/del.json")" = v1 ] || fail "batch-delete-image: $(cat "$E2E_WORK/del.json")"
docker rmi "$REG/my-app:v1" >/dev/null 2>&1 || true
docker pull "$REG/my-app:v1" >/dev/null 2>&1 && fail "pulled a deleted image"
aws ecr describe-images --repository-name my-app --image-ids imageTag=v1 "${E[@]}" >/dev/null 2>"$E2E_WORK/nf.err" && fail "describe of a deleted tag"
grep -q ImageNotFoundException "$E2E_WORK/nf.err" || fail "describe of a deleted tag: $(cat "$E2E_WORK/nf.err")"

step "boto3: every operation"
python3 "$ROOT/tests/e2e/ecr_boto3.py" || fail "boto3 checks"

step "docker pulls and runs the image boto3 put with PutImage"
docker pull "$REG/boto/app:put" >/dev/null || fail "docker pull of a PutImage image"
[ "$(docker run --rm --network none "$REG/boto/app:put")" = "hello from PutImage" ] || fail "PutImage image does not run"

step "aws CLI: the remaining commands"
aws ecr describe-registry "${E[@]}" | grep -q '"registryId": "000000000000"' || fail "describe-registry"
aws ecr get-account-setting --name BLOB_MOUNTING "${E[@]}" | grep -q ENABLED || fail "get-account-setting"
aws ecr describe-repository-creation-templates "${E[@]}" | grep -q '"prefix": "ROOT"' || fail "templates"
aws ecr list-tags-for-resource --resource-arn "arn:aws:ecr:us-east-1:000000000000:repository/my-app" "${E[@]}" >/dev/null
aws ecr batch-get-image --repository-name my-app --image-ids imageTag=v2 "${E[@]}" | grep -q imageManifest || fail "batch-get-image"
aws ecr delete-repository --repository-name my-app "${E[@]}" >/dev/null 2>"$E2E_WORK/rne.err" && fail "deleted a non-empty repository"
grep -q RepositoryNotEmptyException "$E2E_WORK/rne.err" || fail "delete-repository: $(cat "$E2E_WORK/rne.err")"
aws ecr delete-repository --repository-name my-app --force "${E[@]}" >/dev/null
aws ecr describe-repositories --repository-names my-app "${E[@]}" >/dev/null 2>&1 && fail "repository still there"

step "without the ROOT template, a push to a new repository is refused and says what to do"
aws ecr delete-repository-creation-template --prefix ROOT "${E[@]}" >/dev/null
docker tag "$REG/my-app:v2" "$REG/nowhere/app:1"
docker push "$REG/nowhere/app:1" >"$E2E_WORK/push3.out" 2>&1 && fail "push created a repository without a template"
grep -q "create-repository" "$E2E_WORK/push3.out" || fail "refusal lacks the hint: $(cat "$E2E_WORK/push3.out")"
aws ecr create-repository --repository-name nowhere/app "${E[@]}" >/dev/null
docker push "$REG/nowhere/app:1" >/dev/null || fail "push after create-repository"

step "a wrong password is refused"
printf 'b1.not-a-token' | docker login --username AWS --password-stdin "$REG" >/dev/null 2>&1 && fail "docker login with a bad password"
docker logout "$REG" >/dev/null
fsck_clean
echo "PASS ecr"
