#!/usr/bin/env bash
# IAM and STS with the real aws CLI and docker: two users with different managed policies (one
# pushes and pulls, the other only pulls); a role in another account pulls only once both its
# identity policy and the repository policy allow it; forged, altered and deactivated credentials
# are refused; a policy change takes effect on the next request; the catalog shows each caller
# only what it may see.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
start_dockerd
start_berth iam
P=$E2E_WORK/iam; rm -rf "$P"; mkdir -p "$P"
E=(--endpoint-url "$ECR_URL" --output json)
A=000000000000
B=111122223333
js() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# as PROFILE_FILE CMD...: run CMD with the credentials in PROFILE_FILE.
as() { local f=$1; shift; AWS_SHARED_CREDENTIALS_FILE=$f "$@"; }
# key_file NAME JSON: writes an AWS credentials file from create-access-key output.
key_file() {
  KEY_JSON=$2 python3 - "$1" <<'PY'
import json, os, sys
k = json.loads(os.environ["KEY_JSON"])["AccessKey"]
open(sys.argv[1], "w").write("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n" % (k["AccessKeyId"], k["SecretAccessKey"]))
PY
}
docker_login_as() { # CREDENTIALS_FILE
  as "$1" aws ecr get-login-password "${E[@]}" | docker login --username AWS --password-stdin "$REG" >/dev/null 2>&1
}

step "root creates users pusher (PowerUser) and puller (PullOnly) with access keys"
aws iam create-user --user-name pusher "${E[@]}" >/dev/null
aws iam create-user --user-name puller --path /readers/ "${E[@]}" | grep -q '"Arn": "arn:aws:iam::000000000000:user/readers/puller"' \
  || fail "create-user ARN"
aws iam create-user --user-name pusher "${E[@]}" >/dev/null 2>"$P/dup.err" && fail "duplicate user accepted"
grep -q EntityAlreadyExists "$P/dup.err" || fail "duplicate user: $(cat "$P/dup.err")"
aws iam create-group --group-name builders "${E[@]}" >/dev/null
aws iam add-user-to-group --group-name builders --user-name pusher "${E[@]}"
aws iam attach-group-policy --group-name builders --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser "${E[@]}"
aws iam attach-user-policy --user-name puller --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly "${E[@]}"
key_file "$P/pusher.creds" "$(aws iam create-access-key --user-name pusher "${E[@]}")"
key_file "$P/puller.creds" "$(aws iam create-access-key --user-name puller "${E[@]}")"
[ "$(aws iam list-access-keys --user-name pusher "${E[@]}" | js 'len(d["AccessKeyMetadata"])')" = 1 ] || fail "list-access-keys"
aws iam get-policy-version --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly --version-id v1 "${E[@]}" \
  | grep -q '"ecr:DescribeImageScanFindings"' || fail "AWS managed policy document"
as "$P/pusher.creds" aws sts get-caller-identity "${E[@]}" | grep -q "arn:aws:iam::$A:user/pusher" || fail "get-caller-identity"
grep -q "$(sed -n 's/aws_secret_access_key = //p' "$P/pusher.creds")" "$BERTH_DATA"/berth.db 2>/dev/null \
  && fail "an access-key secret is stored in the clear"

step "pusher creates a repository? no (PowerUser cannot); root creates it, pusher pushes"
as "$P/pusher.creds" aws ecr create-repository --repository-name team/app "${E[@]}" >/dev/null 2>"$P/cr.err" \
  && fail "PowerUser created a repository"
grep -q AccessDeniedException "$P/cr.err" || fail "create-repository: $(cat "$P/cr.err")"
aws ecr create-repository --repository-name team/app "${E[@]}" >/dev/null
aws ecr create-repository --repository-name secret/app "${E[@]}" >/dev/null
cp /bin/busybox "$P/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","echo","team app"]\n' >"$P/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/team/app:1" "$P" >/dev/null
docker_login_as "$P/pusher.creds"
docker push "$REG/team/app:1" >"$P/push.out" 2>&1 || { cat "$P/push.out"; fail "pusher could not push"; }

step "puller pulls and runs, but cannot push"
docker logout "$REG" >/dev/null
docker rmi "$REG/team/app:1" >/dev/null
docker_login_as "$P/puller.creds"
docker pull "$REG/team/app:1" >/dev/null || fail "puller could not pull"
[ "$(docker run --rm --network none "$REG/team/app:1")" = "team app" ] || fail "pulled image does not run"
docker tag "$REG/team/app:1" "$REG/team/app:2"
docker push "$REG/team/app:2" >"$P/push2.out" 2>&1 && fail "pull-only user pushed"
grep -qiE "denied|unauthorized|does not grant" "$P/push2.out" || fail "refusal: $(cat "$P/push2.out")"
as "$P/puller.creds" aws ecr describe-images --repository-name team/app "${E[@]}" >/dev/null 2>"$P/di.err" \
  && fail "PullOnly may not describe images"
grep -q AccessDeniedException "$P/di.err" || fail "describe-images: $(cat "$P/di.err")"

step "the catalog shows each caller only what it may see"
PULLER_PW=$(as "$P/puller.creds" aws ecr get-login-password "${E[@]}")
curl -fsS -u "AWS:$PULLER_PW" "http://$REG/v2/_catalog" >"$P/cat.json"
grep -q '"team/app"' "$P/cat.json" || fail "puller's catalog lacks team/app: $(cat "$P/cat.json")"
rcurl -fsS "http://$REG/v2/_catalog" | grep -q '"secret/app"' || fail "root's catalog lacks secret/app"
aws iam put-user-policy --user-name puller --policy-name no-secrets "${E[@]}" --policy-document \
  '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"ecr:*","Resource":"arn:aws:ecr:*:*:repository/secret/*"}]}'
curl -fsS -u "AWS:$PULLER_PW" "http://$REG/v2/_catalog" | grep -q '"secret/app"' && fail "denied repository in the catalog"
curl -fsS -u "AWS:$PULLER_PW" "http://$REG/v2/_catalog" | grep -q '"team/app"' || fail "catalog lost team/app"

step "an altered policy takes effect on the next request"
aws iam detach-user-policy --user-name puller --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly "${E[@]}"
docker rmi "$REG/team/app:1" "$REG/team/app:2" >/dev/null
docker pull "$REG/team/app:1" >"$P/pull2.out" 2>&1 && fail "pull after the policy was detached"
aws iam attach-user-policy --user-name puller --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly "${E[@]}"
docker pull "$REG/team/app:1" >/dev/null || fail "pull after the policy was attached again"

step "a deactivated key and its login are refused; forged signatures too"
PID=$(sed -n 's/aws_access_key_id = //p' "$P/puller.creds")
aws iam update-access-key --user-name puller --access-key-id "$PID" --status Inactive "${E[@]}"
as "$P/puller.creds" aws ecr describe-repositories "${E[@]}" >/dev/null 2>"$P/inactive.err" && fail "inactive key accepted"
grep -q UnrecognizedClientException "$P/inactive.err" || fail "inactive key: $(cat "$P/inactive.err")"
curl -s -o /dev/null -w '%{http_code}' -u "AWS:$PULLER_PW" "http://$REG/v2/team/app/manifests/1" | grep -q 401 \
  || fail "the login of a deactivated key still works"
sed 's/^\(aws_secret_access_key = .*\)$/\1X/' "$P/pusher.creds" >"$P/forged.creds"
as "$P/forged.creds" aws ecr describe-repositories "${E[@]}" >/dev/null 2>"$P/forged.err" && fail "forged signature accepted"
grep -q InvalidSignatureException "$P/forged.err" || fail "forged: $(cat "$P/forged.err")"
aws iam update-access-key --user-name puller --access-key-id "$PID" --status Active "${E[@]}"

step "account $B: a role assumed there pulls from $A only when both sides allow"
"$BERTH" account create "$B" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" | sed "s/\[account-$B\]/[default]/" >"$P/b-root.creds"
grep -q aws_secret_access_key "$P/b-root.creds" || fail "berth account create"
as "$P/b-root.creds" aws sts get-caller-identity "${E[@]}" | grep -q "\"Account\": \"$B\"" || fail "account B root identity"
as "$P/b-root.creds" aws ecr create-repository --repository-name b-only "${E[@]}" >"$P/b-repo.json"
grep -q "\"registryId\": \"$B\"" "$P/b-repo.json" || fail "account B's repository: $(cat "$P/b-repo.json")"
aws ecr describe-repositories "${E[@]}" | grep -q b-only && fail "account B's repository listed in account A"
as "$P/b-root.creds" aws ecr describe-repositories "${E[@]}" | grep -q team/app && fail "account A's repository listed in account B"
as "$P/b-root.creds" aws iam create-user --user-name ci "${E[@]}" >/dev/null
as "$P/b-root.creds" aws iam put-user-policy --user-name ci --policy-name may-assume "${E[@]}" --policy-document \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"sts:AssumeRole\",\"Resource\":\"arn:aws:iam::$B:role/reader\"}]}"
key_file "$P/ci.creds" "$(as "$P/b-root.creds" aws iam create-access-key --user-name ci "${E[@]}")"
as "$P/b-root.creds" aws iam create-role --role-name reader "${E[@]}" --assume-role-policy-document \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"AWS\":\"arn:aws:iam::$B:user/ci\"},\"Action\":\"sts:AssumeRole\"}]}" >/dev/null
as "$P/b-root.creds" aws iam put-role-policy --role-name reader --policy-name pull-team-app "${E[@]}" --policy-document \
  "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":[\"ecr:GetAuthorizationToken\",\"ecr:BatchGetImage\",\"ecr:GetDownloadUrlForLayer\",\"ecr:BatchCheckLayerAvailability\"],\"Resource\":\"*\"}]}"
as "$P/puller.creds" aws sts assume-role --role-arn "arn:aws:iam::$B:role/reader" --role-session-name intruder "${E[@]}" >/dev/null 2>"$P/ar.err" \
  && fail "a user the trust policy does not name assumed the role"
grep -q AccessDenied "$P/ar.err" || fail "assume-role refusal: $(cat "$P/ar.err")"
as "$P/ci.creds" aws sts assume-role --role-arn "arn:aws:iam::$B:role/reader" --role-session-name ci-run --duration-seconds 900 "${E[@]}" >"$P/session.json" \
  || fail "assume-role"
python3 - "$P/session.json" "$P/session.env" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["Credentials"]
open(sys.argv[2], "w").write("export AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_SESSION_TOKEN=%s\n"
                             % (c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"]))
PY
session() { ( unset AWS_SHARED_CREDENTIALS_FILE; source "$P/session.env"; "$@" ); }
session aws sts get-caller-identity "${E[@]}" | grep -q "arn:aws:sts::$B:assumed-role/reader/ci-run" || fail "session identity"
docker logout "$REG" >/dev/null; docker rmi "$REG/team/app:1" >/dev/null
session aws ecr get-login-password "${E[@]}" | docker login --username AWS --password-stdin "$REG" >/dev/null || fail "session login"
docker pull "$REG/team/app:1" >"$P/xpull.out" 2>&1 && fail "cross-account pull without the repository's consent"
cat >"$P/xacct.json" <<JSON
{"Version":"2012-10-17","Statement":[{"Sid":"AccountBReader","Effect":"Allow",
 "Principal":{"AWS":"arn:aws:iam::$B:role/reader"},
 "Action":["ecr:BatchGetImage","ecr:GetDownloadUrlForLayer","ecr:BatchCheckLayerAvailability"]}]}
JSON
aws ecr set-repository-policy --repository-name team/app --policy-text "file://$P/xacct.json" "${E[@]}" >/dev/null
docker pull "$REG/team/app:1" >/dev/null || fail "cross-account pull with both policies"
as "$P/b-root.creds" aws iam delete-role-policy --role-name reader --policy-name pull-team-app "${E[@]}"
docker rmi "$REG/team/app:1" >/dev/null
docker pull "$REG/team/app:1" >/dev/null 2>&1 && fail "cross-account pull after the role lost its identity policy"

step "an altered session token is refused"
python3 - "$P/session.env" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
tok = re.search(r"AWS_SESSION_TOKEN=(\S+)", text).group(1)
i = 12  # a character of the signed payload
bad = tok[:i] + ("B" if tok[i] != "B" else "C") + tok[i + 1:]
open(sys.argv[1], "w").write(text.replace(tok, bad))
PY
session aws sts get-caller-identity "${E[@]}" >/dev/null 2>"$P/tok.err" && fail "altered session token accepted"
grep -qE "InvalidClientTokenId|UnrecognizedClient|invalid" "$P/tok.err" || fail "altered token: $(cat "$P/tok.err")"

step "deleting a user with keys is a conflict; after cleanup it goes"
aws iam delete-user --user-name puller "${E[@]}" 2>"$P/del.err" && fail "deleted a user that still has keys"
grep -q DeleteConflict "$P/del.err" || fail "delete-user: $(cat "$P/del.err")"
aws iam delete-access-key --user-name puller --access-key-id "$PID" "${E[@]}"
aws iam delete-user-policy --user-name puller --policy-name no-secrets "${E[@]}"
aws iam detach-user-policy --user-name puller --policy-arn arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly "${E[@]}"
aws iam delete-user --user-name puller "${E[@]}" || fail "delete-user after cleanup"
out=$(aws iam get-user --user-name puller "${E[@]}" 2>&1) && fail "deleted user still found"
grep -q NoSuchEntity <<<"$out" || fail "get-user of a deleted user: $out"

step "the audit log holds the IAM and STS calls"
sleep 0.5
"$BERTH" audit --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" --event AssumeRole --json >"$P/audit.json" 2>/dev/null
grep -q '"decision":"allow"' "$P/audit.json" && grep -q '"decision":"deny"' "$P/audit.json" || fail "AssumeRole events: $(cat "$P/audit.json")"
docker logout "$REG" >/dev/null
echo "PASS iam"
