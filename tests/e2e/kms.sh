#!/usr/bin/env bash
# Encryption at rest with the real clients: the aws CLI's kms and ecr commands, docker, and
# Terraform's aws_kms_key / aws_kms_alias / aws_ecr_repository { encryption_configuration }.
#  - create-key, create-alias, a KMS repository by alias; describe-repositories shows the key ARN;
#  - docker push / pull through it; the layer's plaintext is nowhere in the data directory;
#  - disable-key: docker pull fails with the key named, nothing lost; enable-key: it pulls again;
#  - schedule-key-deletion (window checked), cancel-key-deletion;
#  - rotation: enable-key-rotation / get-key-rotation-status, rotate-key-on-demand, then
#    `berth encryption rewrap` and a pull of the same bytes;
#  - terraform apply, a second plan with no changes, destroy.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
need jq "apt-get install jq"
need terraform "terraform on the PATH (see ../shared/TESTING-NOTES.md)"
start_dockerd
start_berth kms
E=(--endpoint-url "http://$REG")

step "aws kms create-key, create-alias; a KMS repository by alias"
key=$(aws kms create-key "${E[@]}" --description "e2e team key" --query KeyMetadata.KeyId --output text)
aws kms create-alias "${E[@]}" --alias-name alias/team --target-key-id "$key"
arn=$(aws kms describe-key "${E[@]}" --key-id alias/team --query KeyMetadata.Arn --output text)
[ "$arn" = "arn:aws:kms:us-east-1:000000000000:key/$key" ] || fail "describe-key by alias: $arn"
aws kms list-aliases "${E[@]}" --query 'Aliases[].AliasName' --output text | grep -qw alias/team || fail "list-aliases"
aws ecr create-repository "${E[@]}" --repository-name secret \
  --encryption-configuration encryptionType=KMS,kmsKey=alias/team >/dev/null
shown=$(aws ecr describe-repositories "${E[@]}" --repository-names secret --query 'repositories[0].encryptionConfiguration' --output json)
[ "$(jq -r .encryptionType <<<"$shown")" = KMS ] && [ "$(jq -r .kmsKey <<<"$shown")" = "$arn" ] \
  || fail "describe-repositories shows $shown"
aws ecr create-repository "${E[@]}" --repository-name plain >/dev/null
[ "$(aws ecr describe-repositories "${E[@]}" --repository-names plain --query 'repositories[0].encryptionConfiguration.encryptionType' --output text)" = AES256 ] \
  || fail "default encryption is not AES256"
out=$(aws ecr create-repository "${E[@]}" --repository-name nokey --encryption-configuration encryptionType=KMS,kmsKey=alias/none 2>&1) \
  && fail "a repository with an unknown key was created"
grep -q KmsException <<<"$out" || fail "unknown key refused with: $out"

step "docker push and pull through the KMS repository"
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null
B=$E2E_WORK/kms-build; rm -rf "$B"; mkdir -p "$B"
cp /bin/busybox "$B/busybox"
head -c 2000000 /dev/urandom >"$B/secret.bin"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCOPY secret.bin /secret.bin\nCMD ["/bin/busybox","echo","sealed"]\n' >"$B/Dockerfile"
DOCKER_BUILDKIT=0 docker build -q -t "$REG/secret:1" "$B" >/dev/null
docker push "$REG/secret:1" >/dev/null
docker rmi "$REG/secret:1" >/dev/null
docker pull "$REG/secret:1" >/dev/null
got=$(docker run --rm --network none "$REG/secret:1" /bin/busybox sha256sum /secret.bin | cut -d' ' -f1)
[ "$got" = "$(sha256sum <"$B/secret.bin" | cut -d' ' -f1)" ] || fail "the pulled layer differs"
no_plaintext "$B/secret.bin" "$BERTH_DATA"

step "disable-key: pulls fail naming the key; enable-key: they work again"
aws kms disable-key "${E[@]}" --key-id "$key"
sleep 1.2
docker rmi "$REG/secret:1" >/dev/null
if out=$(docker pull "$REG/secret:1" 2>&1); then fail "pulled with the key disabled"; fi
grep -q "disabled" <<<"$out" || fail "docker pull said: $out"
echo "  docker: $(tail -1 <<<"$out")"
out=$(aws ecr batch-get-image "${E[@]}" --repository-name secret --image-ids imageTag=1 2>&1) && fail "batch-get-image with the key disabled"
grep -q KmsException <<<"$out" || fail "batch-get-image said: $out"
aws kms enable-key "${E[@]}" --key-id "$key"
sleep 1.2
docker pull "$REG/secret:1" >/dev/null || fail "no pull after enable-key"

step "schedule-key-deletion honours its window; cancel-key-deletion undoes it"
out=$(aws kms schedule-key-deletion "${E[@]}" --key-id "$key" --pending-window-in-days 3 2>&1) && fail "a 3-day window was accepted"
grep -q ValidationException <<<"$out" || fail "3-day window refused with: $out"
state=$(aws kms schedule-key-deletion "${E[@]}" --key-id "$key" --pending-window-in-days 7 --query KeyState --output text)
[ "$state" = PendingDeletion ] || fail "state $state"
sleep 1.2
out=$(curl -s -H "Authorization: $BERTH_BASIC" -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REG/v2/secret/manifests/1")
grep -q "pending deletion" <<<"$out" || fail "a pull of a repository whose key is pending deletion said: $out"
aws kms cancel-key-deletion "${E[@]}" --key-id "$key" >/dev/null
[ "$(aws kms describe-key "${E[@]}" --key-id "$key" --query KeyMetadata.KeyState --output text)" = Disabled ] || fail "not Disabled after cancel"
aws kms enable-key "${E[@]}" --key-id "$key"

step "rotation: new material for new data keys; old data readable; re-wrap without touching content"
aws kms enable-key-rotation "${E[@]}" --key-id "$key" --rotation-period-in-days 90
[ "$(aws kms get-key-rotation-status "${E[@]}" --key-id "$key" --query KeyRotationEnabled --output text)" = True ] || fail "rotation status"
aws kms rotate-key-on-demand "${E[@]}" --key-id "$key" >/dev/null
[ "$(aws kms list-key-rotations "${E[@]}" --key-id "$key" --query 'Rotations[0].RotationType' --output text)" = ON_DEMAND ] || fail "list-key-rotations"
sleep 1.2
docker rmi "$REG/secret:1" >/dev/null; docker pull "$REG/secret:1" >/dev/null || fail "pull after rotation"
stop_berth
"$BERTH" encryption rewrap --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$E2E_WORK/kms-rewrap.out" 2>&1 || { cat "$E2E_WORK/kms-rewrap.out"; fail "rewrap"; }
tail -1 "$E2E_WORK/kms-rewrap.out" | sed 's/^/  /'
grep -q "^re-wrapped [1-9]" "$E2E_WORK/kms-rewrap.out" || fail "nothing re-wrapped"
fsck_clean
"$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >>"$E2E_WORK/kms.log" 2>&1 &
BERTH_PID=$!
wait_http "http://$REG/v2/"
login_berth
printf %s "$BERTH_PASSWORD" | docker login --username AWS --password-stdin "$REG" >/dev/null
docker rmi "$REG/secret:1" >/dev/null; docker pull "$REG/secret:1" >/dev/null || fail "pull after re-wrap"
got=$(docker run --rm --network none "$REG/secret:1" /bin/busybox sha256sum /secret.bin | cut -d' ' -f1)
[ "$got" = "$(sha256sum <"$B/secret.bin" | cut -d' ' -f1)" ] || fail "the layer differs after re-wrap"

step "terraform: aws_kms_key + aws_kms_alias + aws_ecr_repository with KMS encryption"
T=$E2E_WORK/kms-tf; rm -rf "$T"; mkdir -p "$T"
terraform_setup "$T"
terraform_provider ecr iam sts kms >"$T/main.tf"
cat >>"$T/main.tf" <<TF
resource "aws_kms_key" "k" {
  description             = "terraform key"
  deletion_window_in_days = 7
  enable_key_rotation     = true
  tags                    = { team = "platform" }
}
resource "aws_kms_alias" "a" {
  name          = "alias/tf"
  target_key_id = aws_kms_key.k.key_id
}
resource "aws_ecr_repository" "r" {
  name = "tf/secret"
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = aws_kms_key.k.arn
  }
}
output "repo_key" { value = aws_ecr_repository.r.encryption_configuration[0].kms_key }
output "key_arn" { value = aws_kms_key.k.arn }
TF
( cd "$T" && terraform init -input=false -no-color >"$T/init.out" 2>&1 ) || { tail -20 "$T/init.out"; fail "terraform init"; }
( cd "$T" && terraform apply -auto-approve -input=false -no-color >"$T/apply.out" 2>&1 ) || { tail -30 "$T/apply.out"; fail "terraform apply"; }
[ "$(cd "$T" && terraform output -raw repo_key)" = "$(cd "$T" && terraform output -raw key_arn)" ] || fail "the repository's key is not the key"
set +e; ( cd "$T" && terraform plan -detailed-exitcode -input=false -no-color >"$T/plan.out" 2>&1 ); rc=$?; set -e
[ $rc = 0 ] || { tail -30 "$T/plan.out"; fail "a second plan wants changes (exit $rc)"; }
[ "$(aws kms describe-key "${E[@]}" --key-id alias/tf --query KeyMetadata.KeyState --output text)" = Enabled ] || fail "alias/tf"
( cd "$T" && terraform destroy -auto-approve -input=false -no-color >"$T/destroy.out" 2>&1 ) || { tail -30 "$T/destroy.out"; fail "terraform destroy"; }
aws ecr describe-repositories "${E[@]}" --repository-names tf/secret >/dev/null 2>&1 && fail "the repository survived destroy"
echo "  apply, plan (no changes), destroy: ok"
fsck_clean
echo "PASS kms"
