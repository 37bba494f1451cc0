#!/usr/bin/env bash
# The deployment files: the Kubernetes manifests validate against the Kubernetes API schemas
# (kubernetes-validate --strict: unknown and misspelt fields are errors), the Deployment's probes
# name /readyz and /healthz, and the configuration both deploy/cluster.toml and the ConfigMap
# carry is loaded by `berth` and reaches the S3 server (`berth fsck` on an empty registry).
source "$(dirname "$0")/lib.sh"
need kubernetes-validate "pip install kubernetes-validate"
[ -n "${BERTH_TEST_S3_ENDPOINT:-}" ] || fail "needs BERTH_TEST_S3_ENDPOINT (./test.sh starts the S3 server)"
K=$ROOT/deploy/kubernetes
D=$E2E_WORK/deploy; rm -rf "$D"; mkdir -p "$D"

step "Kubernetes manifests against the API schemas"
kubernetes-validate --strict "$K"/*.yaml >"$D/validate.out" 2>&1 || { cat "$D/validate.out"; fail "manifests do not validate"; }
grep -c passed "$D/validate.out" | grep -qx 4 || { cat "$D/validate.out"; fail "not every manifest passed"; }
python3 - "$K" "$D" <<'PY' || fail "the manifests do not fit together"
import sys, yaml, os
k, d = sys.argv[1:]
docs = {}
for f in os.listdir(k):
    for doc in yaml.safe_load_all(open(os.path.join(k, f))):
        docs[doc["kind"]] = doc
dep, svc, cm, sec = docs["Deployment"], docs["Service"], docs["ConfigMap"], docs["Secret"]
labels = dep["spec"]["template"]["metadata"]["labels"]
assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "the selector matches the pods"
assert svc["spec"]["selector"].items() <= labels.items(), "the Service selects the pods"
c = dep["spec"]["template"]["spec"]["containers"][0]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["envFrom"][0]["secretRef"]["name"] == sec["metadata"]["name"]
vol = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
assert vol["config"]["configMap"]["name"] == cm["metadata"]["name"]
for key in ("BERTH_SECRETS_KEY", "BERTH_MASTER_KEY", "BERTH_DATABASE_URL", "BERTH_S3_BUCKET", "BERTH_ROOT_ACCESS_KEY_ID"):
    assert key in sec["stringData"], key
open(os.path.join(d, "configmap.toml"), "w").write(cm["data"]["cluster.toml"])
print("  selectors, probes, the Secret and the ConfigMap fit together")
PY

step "the cluster configuration loads and reaches the bucket"
for f in "$ROOT/deploy/cluster.toml" "$D/configmap.toml"; do
  mkdir -p "$D/data"
  BERTH_S3_BUCKET=berth-test BERTH_S3_ENDPOINT=$BERTH_TEST_S3_ENDPOINT BERTH_S3_PATH_STYLE=true \
    BERTH_S3_PREFIX="deploy-$$" BERTH_S3_ACCESS_KEY_ID=x BERTH_S3_SECRET_ACCESS_KEY=y \
    BERTH_SECRETS_KEY=$(openssl rand -hex 32) BERTH_MASTER_KEY=$(openssl rand -hex 32) \
    "$BERTH" fsck --config "$f" --data-dir "$D/data" --database-url "sqlite://$D/data/berth.db?mode=rwc" >"$D/fsck.out" 2>&1 \
    || { cat "$D/fsck.out"; fail "berth with $(basename "$f")"; }
  grep -q "no problems" "$D/fsck.out" || { cat "$D/fsck.out"; fail "fsck with $(basename "$f")"; }
  rm -rf "$D/data"
done
# A bucket that is not there is named in the error, before anything is served.
mkdir -p "$D/data"
if BERTH_S3_BUCKET=no-such-bucket-here BERTH_S3_ENDPOINT=$BERTH_TEST_S3_ENDPOINT BERTH_S3_PATH_STYLE=true \
  BERTH_S3_ACCESS_KEY_ID=x BERTH_S3_SECRET_ACCESS_KEY=y "$BERTH" fsck --config "$ROOT/deploy/cluster.toml" --data-dir "$D/data" \
  --database-url "sqlite://$D/data/berth.db?mode=rwc" >"$D/bad.out" 2>&1; then fail "a missing bucket was accepted"; fi
grep -q "no such bucket" "$D/bad.out" || { cat "$D/bad.out"; fail "the error does not say the bucket is missing"; }
grep -q "secret" "$D/bad.out" && fail "a secret reached the output"
echo "PASS deploy"
