#!/usr/bin/env bash
# Terraform's AWS provider (from the machine's local mirror) against Berth, in one configuration:
# aws_ecr_repository, aws_ecr_lifecycle_policy, aws_ecr_repository_policy,
# aws_ecr_registry_scanning_configuration, aws_ecr_replication_configuration (to a second
# Berth in eu-west-1) and aws_ecr_pull_through_cache_rule (upstream: that Berth; a second rule
# with its credentials in aws_secretsmanager_secret and _version), with the data sources aws_ecr_repository, aws_ecr_image and
# aws_ecr_authorization_token: apply, a second plan with no changes, the replication rule really
# replicating a push, destroy (and what it removed really gone).
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
T=$E2E_WORK/terraform; rm -rf "$T"; mkdir -p "$T"
terraform_setup "$T"

PB=$(free_port)
BERTH_REGION=eu-west-1 "$BERTH" serve --listen "127.0.0.1:$PB" --data-dir "$T/b-data" >"$T/b.log" 2>&1 &
BPID=$!
wait_http "http://127.0.0.1:$PB/v2/"
cat >"$T/a.toml" <<TOML
[[peers]]
region = "eu-west-1"
url = "http://127.0.0.1:$PB"
credentials_file = "$T/b-data/root-credentials"
TOML
start_berth terraform --config "$T/a.toml"
trap 'stop_berth; kill $BPID 2>/dev/null || true' EXIT
E=(--endpoint-url "$ECR_URL")

step "an image for the aws_ecr_image data source (pushed before the apply)"
aws ecr create-repository "${E[@]}" --repository-name tf/existing >/dev/null
cfg='{"architecture":"amd64","os":"linux"}'; layer='terraform data source layer'
push() { # DATA: monolithic blob upload; prints the digest
  local d; d=sha256:$(printf %s "$1" | sha256sum | cut -d' ' -f1)
  printf %s "$1" | rcurl -fsS -o /dev/null -X POST --data-binary @- "http://$REG/v2/tf/existing/blobs/uploads/?digest=$d" || fail "blob upload"
  echo "$d"
}
cd_=$(push "$cfg"); ld=$(push "$layer")
manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$cd_\",\"size\":${#cfg}},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"$ld\",\"size\":${#layer}}]}"
printf %s "$manifest" | rcurl -fsS -o /dev/null -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
  --data-binary @- "http://$REG/v2/tf/existing/manifests/v1" || fail "manifest push"
image_digest=sha256:$(printf %s "$manifest" | sha256sum | cut -d' ' -f1)

PW_B=$(BERTH_REGION=eu-west-1 "$BERTH" get-login-password --data-dir "$T/b-data")
terraform_provider ecr iam sts secretsmanager >"$T/main.tf"
cat >>"$T/main.tf" <<TF
data "aws_caller_identity" "me" {}
resource "aws_ecr_repository" "app" {
  name                 = "tf/app"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration { scan_on_push = true }
  tags = { team = "platform" }
}
resource "aws_ecr_lifecycle_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1, description = "keep 10"
      selection = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 10 }
      action = { type = "expire" }
    }]
  })
}
resource "aws_ecr_repository_policy" "app" {
  repository = aws_ecr_repository.app.name
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid = "pull", Effect = "Allow", Action = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      Principal = { AWS = "arn:aws:iam::\${data.aws_caller_identity.me.account_id}:root" }
    }]
  })
}
resource "aws_ecr_registry_scanning_configuration" "scan" {
  scan_type = "BASIC"
  rule {
    scan_frequency = "SCAN_ON_PUSH"
    repository_filter {
      filter      = "tf/*"
      filter_type = "WILDCARD"
    }
  }
}
resource "aws_ecr_replication_configuration" "repl" {
  replication_configuration {
    rule {
      destination {
        region      = "eu-west-1"
        registry_id = data.aws_caller_identity.me.account_id
      }
      repository_filter {
        filter      = "tf/"
        filter_type = "PREFIX_MATCH"
      }
    }
  }
}
resource "aws_ecr_pull_through_cache_rule" "mirror" {
  ecr_repository_prefix = "mirror"
  upstream_registry_url = "http://127.0.0.1:$PB"
}
resource "aws_secretsmanager_secret" "upstream" {
  name                    = "ecr-pullthroughcache/tf"
  description             = "the eu-west-1 registry's login"
  recovery_window_in_days = 0
}
resource "aws_secretsmanager_secret_version" "upstream" {
  secret_id     = aws_secretsmanager_secret.upstream.id
  secret_string = jsonencode({ username = "AWS", accessToken = "$PW_B" })
}
resource "aws_ecr_pull_through_cache_rule" "locked" {
  ecr_repository_prefix = "locked"
  upstream_registry_url = "http://127.0.0.1:$PB"
  credential_arn        = aws_secretsmanager_secret.upstream.arn
  depends_on            = [aws_secretsmanager_secret_version.upstream]
}
data "aws_ecr_repository" "existing" { name = "tf/existing" }
data "aws_ecr_image" "existing" {
  repository_name = data.aws_ecr_repository.existing.name
  image_tag       = "v1"
}
data "aws_ecr_authorization_token" "token" {}
output "repo_url" { value = aws_ecr_repository.app.repository_url }
output "image_digest" { value = data.aws_ecr_image.existing.image_digest }
output "proxy" { value = data.aws_ecr_authorization_token.token.proxy_endpoint }
output "user" { value = data.aws_ecr_authorization_token.token.user_name }
TF

step "terraform init, apply"
( cd "$T" && terraform init -input=false -no-color >"$T/init.out" 2>&1 ) || { tail -20 "$T/init.out"; fail "terraform init"; }
( cd "$T" && terraform apply -auto-approve -input=false -no-color >"$T/apply.out" 2>&1 ) || { tail -40 "$T/apply.out"; fail "terraform apply"; }
out() { (cd "$T" && terraform output -raw "$1"); }
[ "$(out image_digest)" = "$image_digest" ] || fail "aws_ecr_image: $(out image_digest), not $image_digest"
[ "$(out repo_url)" = "$REG/tf/app" ] || fail "repository_url: $(out repo_url)"
[ "$(out proxy)" = "http://$REG" ] || fail "proxy_endpoint: $(out proxy)"
[ "$(out user)" = "AWS" ] || fail "user_name: $(out user)"
aws ecr describe-registry "${E[@]}" --output json | grep -q '"filter": "tf/"' || fail "the replication rule is not in DescribeRegistry"
[ "$(aws ecr get-lifecycle-policy "${E[@]}" --repository-name tf/app --query 'lifecyclePolicyText' --output text | grep -c imageCountMoreThan)" = 1 ] \
  || fail "the lifecycle policy"
aws ecr get-repository-policy "${E[@]}" --repository-name tf/app >/dev/null || fail "the repository policy"
[ "$(aws ecr describe-pull-through-cache-rules "${E[@]}" --query 'pullThroughCacheRules[].ecrRepositoryPrefix' --output text)" = "locked	mirror" ] \
  || fail "the pull-through cache rules: $(aws ecr describe-pull-through-cache-rules "${E[@]}" --output json)"
[ "$(aws ecr validate-pull-through-cache-rule "${E[@]}" --ecr-repository-prefix locked --query isValid --output text)" = True ] \
  || fail "the rule whose credentials Terraform stored does not validate"
[ "$(aws secretsmanager get-secret-value --endpoint-url "$ECR_URL" --secret-id ecr-pullthroughcache/tf --query SecretString --output text)" \
  = "{\"accessToken\":\"$PW_B\",\"username\":\"AWS\"}" ] || fail "the secret's value"

step "a second plan has no changes"
set +e; ( cd "$T" && terraform plan -detailed-exitcode -input=false -no-color >"$T/plan.out" 2>&1 ); rc=$?; set -e
[ $rc = 0 ] || { tail -40 "$T/plan.out"; fail "a second plan wants changes (exit $rc)"; }

step "the replication rule Terraform made replicates a push"
d=$(python3 "$ROOT/tests/e2e/push_image.py" "$REG" "$BERTH_BASIC" tf/app 1)
for _ in $(seq 1 100); do
  s=$(aws ecr describe-image-replication-status "${E[@]}" --repository-name tf/app --image-id imageTag=1 \
    --query 'replicationStatuses[0].status' --output text)
  [ "$s" = COMPLETE ] && break
  sleep 0.3
done
[ "$s" = COMPLETE ] || fail "replication status: $s"
AWS_SHARED_CREDENTIALS_FILE=$T/b-data/root-credentials aws ecr describe-images --region eu-west-1 \
  --endpoint-url "http://127.0.0.1:$PB" --repository-name tf/app --image-ids imageTag=1 --query 'imageDetails[0].imageDigest' \
  --output text | grep -qx "$d" || fail "the image is not at the destination"
# The image would keep the repository from being destroyed.
aws ecr batch-delete-image "${E[@]}" --repository-name tf/app --image-ids imageTag=1 >/dev/null

step "terraform destroy"
( cd "$T" && terraform destroy -auto-approve -input=false -no-color >"$T/destroy.out" 2>&1 ) || { tail -40 "$T/destroy.out"; fail "terraform destroy"; }
aws ecr describe-repositories "${E[@]}" --repository-names tf/app >/dev/null 2>&1 && fail "tf/app survived destroy"
[ "$(aws ecr describe-registry "${E[@]}" --query 'length(replicationConfiguration.rules)' --output text)" = 0 ] \
  || fail "the replication rules survived destroy"
[ "$(aws ecr get-registry-scanning-configuration "${E[@]}" --query 'length(scanningConfiguration.rules)' --output text)" = 0 ] \
  || fail "the scanning rules survived destroy"
[ "$(aws ecr describe-pull-through-cache-rules "${E[@]}" --query 'length(pullThroughCacheRules)' --output text)" = 0 ] \
  || fail "the pull-through cache rules survived destroy"
[ "$(aws secretsmanager list-secrets --endpoint-url "$ECR_URL" --query 'length(SecretList)' --output text)" = 0 ] \
  || fail "the secret survived destroy"
echo "PASS terraform"
