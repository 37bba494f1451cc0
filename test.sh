#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit and integration tests (SQLite and PostgreSQL),
# then end-to-end tests with real clients against a running `berth serve`. Installs what the tests
# need (Debian and PyPI packages) when it is missing. Prints "N passed, M failed" at the end.
#   ./test.sh            everything
#   E2E_ONLY=docker ./test.sh   one end-to-end test (after the Rust tests)
set -uo pipefail
cd "$(dirname "$0")"
ROOT=$PWD

# ---- what the tests need ----
APT_PKGS=(docker.io skopeo podman buildah containerd umoci busybox-static postgresql curl python3-pip debootstrap fzf binutils zstd rpm openssl bsdutils jq haproxy iproute2 docker-registry)
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null || { echo "apt-get install failed"; exit 1; }
fi
{ python3 -c 'import oras, requests, boto3, packaging, moto, yaml' && command -v aws moto_server kubernetes-validate; } >/dev/null 2>&1 || {
  echo "== installing PyPI packages: oras requests awscli boto3 packaging moto[server] kubernetes-validate"
  pip install -q oras requests awscli boto3 packaging 'moto[server]' kubernetes-validate || { echo "pip install failed"; exit 1; }
  hash -r
}

PG_URL=$(scripts/postgres-test-server.sh) || { echo "could not start PostgreSQL"; exit 1; }
export BERTH_TEST_POSTGRES_URL=$PG_URL
S3_URL=$(scripts/s3-test-server.sh) || { echo "could not start the S3 server"; exit 1; }
export BERTH_TEST_S3_ENDPOINT=$S3_URL
export E2E_WORK=${E2E_WORK:-/tmp/berth-e2e}

# Results are lines in a file: the end-to-end tests run in two lanes at once (below).
RESULTS=$E2E_WORK.results; : >"$RESULTS"
record() { # NAME EXIT_CODE
  if [ "$2" = 0 ]; then echo "ok: $1" | tee -a "$RESULTS"; else echo "FAILED: $1" | tee -a "$RESULTS"; fi
}

if [ -z "${E2E_ONLY:-}" ]; then
  echo "== cargo fmt --check"
  cargo fmt --all -- --check; record "cargo fmt" $?
  echo "== cargo clippy -D warnings"
  cargo clippy --release --workspace --all-targets -q -- -D warnings; record "cargo clippy" $?
  echo "== the GCS and Azure blob backends build"
  cargo check --release -q -p berth-blob --features gcs,azure; record "cargo check gcs,azure" $?
fi
echo "== cargo build --release"
cargo build --release --workspace -q || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
if [ -z "${E2E_ONLY:-}" ]; then
  echo "== cargo test (SQLite and PostgreSQL)"
  cargo test --release --workspace 2>&1 | tee "$E2E_WORK.cargo-test.log" | grep -E '^test result|FAILED|panicked'
  record "cargo test" "${PIPESTATUS[0]}"
fi

# CI machines share a small disk: after each suite, drop its data directories and images (its
# logs stay). Kept: the Docker engine itself, and what suites build once and share.
free_space() {
  find "$E2E_WORK" -mindepth 1 -maxdepth 1 -type d ! -name dockerd ! -name cache ! -name layouts -exec rm -rf {} +
  if [ -S "$E2E_WORK/dockerd/docker.sock" ]; then
    DOCKER_HOST=unix://$E2E_WORK/dockerd/docker.sock docker system prune -af >/dev/null 2>&1 || true
  fi
}
run_e2e() { # NAME [ENV=VALUE...]
  local name=$1; shift
  [ -n "${E2E_ONLY:-}" ] && [ "$E2E_ONLY" != "$name" ] && return 0
  local label="e2e $name${1:+ ($*)}" start=$SECONDS
  echo "== $label"
  env "$@" timeout 1200 bash "tests/e2e/$name.sh" >"$E2E_WORK/$name.${1:-default}.out" 2>&1
  local rc=$?
  [ $rc = 0 ] || tail -n 30 "$E2E_WORK/$name.${1:-default}.out"
  record "$label ($((SECONDS - start)) s)" $rc
  free_space
}
# lane WORK_DIR PORTS SUITE...: runs the suites one after another, each "NAME[:ENV=VALUE]", in
# a work directory (and Docker engine) of its own, on loopback ports from its own range.
lane() {
  export E2E_WORK=$1 E2E_PORTS=$2; shift 2
  mkdir -p "$E2E_WORK"; free_space
  local s
  for s in "$@"; do run_e2e ${s/:/ }; done
}
echo "== disk: $(df -h --output=avail "$(dirname "$E2E_WORK")" | tail -1 | tr -d ' ') free for the end-to-end tests"
# Two lanes at once (most suites wait on clients and timers more than they compute; they share
# only the PostgreSQL and S3 servers, in databases and buckets of their own). The second lane's
# log is shown when it is done.
LANE1=(serve readme hardening diskfull tls nodes deploy replication pullthrough terraform upgrade sealcrash kms ecr policy iam
  lifecycle gc scan scandata docker skopeo podman containerd oras crash bigblob bench-smoke)
# The Basic challenge (as ECR answers) with every client; the default is the Docker token flow.
LANE1+=(ecr:E2E_CHALLENGE=basic docker:E2E_CHALLENGE=basic skopeo:E2E_CHALLENGE=basic podman:E2E_CHALLENGE=basic
  containerd:E2E_CHALLENGE=basic oras:E2E_ORAS_BACKEND=basic)
LANE2=(cluster)
for t in upgrade sealcrash kms ecr policy iam lifecycle gc scan scandata docker skopeo oras crash; do LANE2+=("$t:E2E_DB=postgres"); done
( lane "$E2E_WORK-2" 26000-31999 "${LANE2[@]}" ) >"$E2E_WORK.lane2.log" 2>&1 &
LANE2_PID=$!
( lane "$E2E_WORK" 20000-25999 "${LANE1[@]}" )
wait "$LANE2_PID"
echo "== the second lane:"; cat "$E2E_WORK.lane2.log"

echo
grep '^FAILED: ' "$RESULTS" | sed 's/^FAILED: /failed: /'
passed=$(grep -c '^ok: ' "$RESULTS"); failed=$(grep -c '^FAILED: ' "$RESULTS")
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
