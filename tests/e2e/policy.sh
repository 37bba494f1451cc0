#!/usr/bin/env bash
# Repository policies with the real aws CLI and docker: a public repository is pullable without
# login while pushes are refused; a policy change takes effect on the next request; a deny by
# source address binds even the root key (docker pull and aws ecr alike). E2E_CHALLENGE=bearer
# runs the anonymous pulls through the Docker token flow.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
start_dockerd
start_berth policy
E=(--endpoint-url "$ECR_URL" --output json)
P=$E2E_WORK/policy; rm -rf "$P"; mkdir -p "$P"

step "push an image as root"
aws ecr create-repository --repository-name public/app "${E[@]}" >/dev/null
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null
cp /bin/busybox "$P/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","echo","public image"]\n' >"$P/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/public/app:1" "$P" >/dev/null
docker push "$REG/public/app:1" >/dev/null

step "set-repository-policy: public pull"
cat >"$P/public.json" <<'JSON'
{"Version": "2012-10-17", "Statement": [{"Sid": "AllowPublicPull", "Effect": "Allow", "Principal": "*",
  "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]}]}
JSON
aws ecr set-repository-policy --repository-name public/app --policy-text "file://$P/public.json" "${E[@]}" >/dev/null
aws ecr get-repository-policy --repository-name public/app "${E[@]}" | grep -q AllowPublicPull || fail "get-repository-policy"

step "anonymous docker pull works, anonymous push is refused"
docker logout "$REG" >/dev/null
docker rmi "$REG/public/app:1" >/dev/null
docker pull "$REG/public/app:1" >"$P/pull.out" 2>&1 || { cat "$P/pull.out"; fail "anonymous pull of a public repository"; }
[ "$(docker run --rm --network none "$REG/public/app:1")" = "public image" ] || fail "public image does not run"
docker tag "$REG/public/app:1" "$REG/public/app:2"
docker push "$REG/public/app:2" >"$P/push.out" 2>&1 && fail "an anonymous push succeeded"
grep -qiE "unauthorized|authentication required|no basic auth" "$P/push.out" || fail "anonymous push: $(cat "$P/push.out")"
docker pull "$REG/public/other:1" >/dev/null 2>&1 && fail "anonymous pull of a private repository"

step "delete-repository-policy takes effect on the next request"
aws ecr delete-repository-policy --repository-name public/app "${E[@]}" >/dev/null
docker rmi "$REG/public/app:1" "$REG/public/app:2" >/dev/null
docker pull "$REG/public/app:1" >"$P/pull2.out" 2>&1 && fail "anonymous pull after the policy was deleted"
grep -qiE "unauthorized|authentication required|no basic auth|denied" "$P/pull2.out" || fail "refusal: $(cat "$P/pull2.out")"

step "a deny by source address binds the root key too"
cat >"$P/office.json" <<'JSON'
{"Version": "2012-10-17", "Statement": [{"Sid": "OfficeOnly", "Effect": "Deny", "Principal": "*",
  "NotAction": ["ecr:SetRepositoryPolicy", "ecr:DeleteRepositoryPolicy", "ecr:GetRepositoryPolicy"],
  "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}]}
JSON
aws ecr set-repository-policy --repository-name public/app --policy-text "file://$P/office.json" "${E[@]}" >/dev/null
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null
docker pull "$REG/public/app:1" >"$P/pull3.out" 2>&1 && fail "pull from outside the allowed range"
# Basic auth: 403 denied; the token flow: the token lacks the scope a policy denies.
grep -qiE "denied|does not grant repository:public/app:pull" "$P/pull3.out" || fail "deny: $(cat "$P/pull3.out")"
aws ecr describe-images --repository-name public/app "${E[@]}" >/dev/null 2>"$P/ad.err" && fail "describe-images from outside the range"
grep -q AccessDeniedException "$P/ad.err" || fail "describe-images: $(cat "$P/ad.err")"
sed -i 's#10.0.0.0/8#127.0.0.0/8#' "$P/office.json"
aws ecr set-repository-policy --repository-name public/app --policy-text "file://$P/office.json" "${E[@]}" >/dev/null
docker pull "$REG/public/app:1" >/dev/null || fail "pull from the allowed range"
aws ecr describe-images --repository-name public/app "${E[@]}" >/dev/null || fail "describe-images from the allowed range"

step "malformed policies are refused with the reason"
out=$(aws ecr set-repository-policy --repository-name public/app --policy-text '{"Statement":{"Effect":"Allow","Action":"ecr:*"}}' "${E[@]}" 2>&1) \
  && fail "a policy without Principal was accepted"
grep -q "InvalidParameterException" <<<"$out" && grep -q "Principal" <<<"$out" || fail "malformed policy: $out"
docker logout "$REG" >/dev/null

step "berth audit lists the calls, the writes and the refusals"
sleep 0.5   # events are written in batches
"$BERTH" audit --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" --limit 1000 >"$P/audit.txt" 2>/dev/null || fail "berth audit"
grep -q "SetRepositoryPolicy .*allow .*arn:aws:iam::000000000000:root" "$P/audit.txt" || fail "no SetRepositoryPolicy event: $(head "$P/audit.txt")"
"$BERTH" audit --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" --decision deny --json >"$P/denied.json" 2>/dev/null
grep '"eventName":"DescribeImages"' "$P/denied.json" | grep -q '"decision":"deny"' || fail "the denied describe-images is not in the audit log"
grep -q '"principal":null' "$P/denied.json" || fail "no anonymous refusal in the audit log"
"$BERTH" audit --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" --event PutImage --since 1h >"$P/put.txt" 2>/dev/null
grep -q "PutImage" "$P/put.txt" || fail "docker's manifest push is not in the audit log"
echo "PASS policy"
