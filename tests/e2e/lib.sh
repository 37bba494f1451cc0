# Shared helpers for the end-to-end tests. Source it; every test is a bash script that exits
# non-zero (with a message saying why) on the first failure.
set -Eeuo pipefail
# A command that fails outside a test's own checks stops the test: say which, and where.
# (Not in background subshells: a test may expect one of those to fail.)
trap 'e2e_rc=$?; [ "$BASHPID" = "$$" ] && echo "FAIL: ${BASH_SOURCE[0]:-test} line $LINENO: \`$BASH_COMMAND\` exited $e2e_rc" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BERTH=${BERTH_BIN:-$ROOT/target/release/berth}
E2E_WORK=${E2E_WORK:-/tmp/berth-e2e}
mkdir -p "$E2E_WORK"

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
need() { command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed (./test.sh installs it: $2)"; }

# free_port: a loopback port no one listens on. With E2E_PORTS=LOW-HIGH (test.sh gives each lane
# its own range, below the kernel's ephemeral ports) they are handed out in turn from that range,
# so suites running at once never pick the same one; otherwise the kernel picks.
free_port() {
  python3 - "${E2E_PORTS:-}" "$E2E_WORK/.next-port" <<'PY'
import fcntl, os, socket, sys
rng, state = sys.argv[1], sys.argv[2]
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return s.getsockname()[1]
    except OSError:
        return None
    finally:
        s.close()
if not rng:
    print(free(0)); sys.exit()
low, high = map(int, rng.split("-"))
with open(state, "a+") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    f.seek(0)
    text = f.read().strip()
    p = int(text) if text else low
    for _ in range(high - low + 1):
        p = p + 1 if low <= p < high else low
        if free(p):
            break
    else:
        sys.exit("no free port in " + rng)
    f.seek(0); f.truncate(); f.write(str(p))
print(p)
PY
}

wait_http() { # URL [seconds]: any HTTP answer will do (/v2/ answers 401 without credentials)
  local i code
  for i in $(seq 1 $((${2:-20} * 10))); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)
    [ "$code" != 000 ] && return 0
    sleep 0.1
  done
  fail "nothing answers at $1"
}

# start_berth NAME [serve flags...]: starts `berth serve` with a fresh data dir; sets BERTH_PID,
# REG (host:port), BERTH_DATA, and the credentials: BERTH_PASSWORD (the docker login password for
# user AWS), BERTH_BASIC (its Basic header value), AWS_SHARED_CREDENTIALS_FILE and AWS_DEFAULT_REGION
# (the root key, for the aws CLI and boto3), ECR_URL (the --endpoint-url).
# The metadata backend comes from E2E_DB (sqlite, the default, or postgres with BERTH_TEST_POSTGRES_URL).
start_berth() {
  local name=$1 port
  port=$(free_port)
  BERTH_DATA=$E2E_WORK/$name-data
  rm -rf "$BERTH_DATA"
  BERTH_DB_ARGS=()
  if [ "${E2E_DB:-sqlite}" = postgres ]; then
    [ -n "${BERTH_TEST_POSTGRES_URL:-}" ] || fail "E2E_DB=postgres needs BERTH_TEST_POSTGRES_URL"
    local db="e2e_${name//-/_}_$$"
    psql "$BERTH_TEST_POSTGRES_URL" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
    BERTH_DB_ARGS=(--database-url "${BERTH_TEST_POSTGRES_URL%/*}/$db")
  fi
  shift
  # E2E_CHALLENGE=basic runs the same test with the Basic challenge (default: bearer, the token flow).
  BERTH_AUTH_CHALLENGE=${E2E_CHALLENGE:-bearer} "$BERTH" serve --listen "127.0.0.1:$port" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" "$@" >"$E2E_WORK/$name.log" 2>&1 &
  BERTH_PID=$!
  REG=127.0.0.1:$port
  trap 'stop_berth' EXIT
  wait_http "http://$REG/v2/"
  login_berth
}

# login_berth: (re)reads the credentials of the running server (see start_berth).
login_berth() {
  export AWS_SHARED_CREDENTIALS_FILE=$BERTH_DATA/root-credentials AWS_DEFAULT_REGION=us-east-1
  export ECR_URL=http://$REG
  BERTH_PASSWORD=$("$BERTH" get-login-password --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}") \
    || fail "berth get-login-password failed"
  BERTH_BASIC="Basic $(printf 'AWS:%s' "$BERTH_PASSWORD" | base64 -w0)"
  export BERTH_PASSWORD BERTH_BASIC
  # Client credential stores of this test run only.
  export DOCKER_CONFIG=$E2E_WORK/docker-config REGISTRY_AUTH_FILE=$E2E_WORK/containers-auth.json
  mkdir -p "$DOCKER_CONFIG"
}

# start_dockerd: a Docker engine on a private socket (vfs storage, no iptables) unless one answers
# there already; defines `docker` as Debian's 20.10 client talking to it.
start_dockerd() {
  DOCKER_BIN=${DOCKER_BIN:-/usr/bin/docker}
  [ -x "$DOCKER_BIN" ] || fail "docker client missing (apt-get install docker.io)"
  need dockerd "apt-get install docker.io"
  local d=$E2E_WORK/dockerd
  export DOCKER_HOST=unix://$d/docker.sock
  if ! "$DOCKER_BIN" info >/dev/null 2>&1; then
    step "starting dockerd on $DOCKER_HOST"
    mkdir -p "$d"
    dockerd --storage-driver=vfs --iptables=false --bridge=none --host "$DOCKER_HOST" --data-root "$d/data" \
      --exec-root "$d/exec" --pidfile "$d/pid" >"$d/log" 2>&1 &
    for _ in $(seq 1 100); do "$DOCKER_BIN" info >/dev/null 2>&1 && break; sleep 0.3; done
    "$DOCKER_BIN" info >/dev/null 2>&1 || { tail -20 "$d/log"; fail "dockerd did not start"; }
  fi
  docker() { "$DOCKER_BIN" "$@"; }
}

# rcurl ARGS...: curl with the registry login.
rcurl() { curl -H "Authorization: $BERTH_BASIC" "$@"; }

stop_berth() {
  if [ -n "${BERTH_PID:-}" ] && kill -0 "$BERTH_PID" 2>/dev/null; then
    kill -TERM "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
  fi
}

# fsck_clean: `berth fsck` on the test's data dir finds no problem.
fsck_clean() {
  "$BERTH" fsck --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >"$E2E_WORK/fsck.out" 2>&1 \
    || { cat "$E2E_WORK/fsck.out"; fail "berth fsck found problems"; }
}

# unpack_fixture NAME DIR: the upgrade fixture tests/upgrade/NAME.tar.gz, for the metadata backend
# E2E_DB (sqlite or postgres), unpacked under DIR; sets F (its folder), BERTH_DATA, BERTH_DB_ARGS
# and, for PostgreSQL, FIXTURE_DB (a database restored from its dump, for the caller to drop).
unpack_fixture() {
  local name=$1 dir=$2 db=${E2E_DB:-sqlite}
  tar -C "$dir" -xzf "$ROOT/tests/upgrade/$name.tar.gz" "$db"
  F=$dir/$db; BERTH_DATA=$F/data; BERTH_DB_ARGS=(); FIXTURE_DB=
  if [ "$db" = postgres ]; then
    [ -n "${BERTH_TEST_POSTGRES_URL:-}" ] || fail "E2E_DB=postgres needs BERTH_TEST_POSTGRES_URL"
    FIXTURE_DB="e2e_fixture_${name//-/_}_$$"
    psql "$BERTH_TEST_POSTGRES_URL" -qc "CREATE DATABASE $FIXTURE_DB" >/dev/null
    psql "${BERTH_TEST_POSTGRES_URL%/*}/$FIXTURE_DB" -q -v ON_ERROR_STOP=1 -f "$F/postgres.sql" >/dev/null 2>"$dir/restore.err" \
      || { cat "$dir/restore.err"; fail "restoring the old database"; }
    BERTH_DB_ARGS=(--database-url "${BERTH_TEST_POSTGRES_URL%/*}/$FIXTURE_DB")
  fi
}

# no_plaintext FILE DIR: no 32-byte piece of FILE (its start, middle and end) is in any file under DIR.
no_plaintext() {
  python3 - "$1" "$2" <<'PY' || fail "plaintext of $1 found under $2"
import os, sys
data = open(sys.argv[1], "rb").read()
pieces = [data[i:i + 32] for i in (0, len(data) // 2, len(data) - 40)]
n = 0
for root, _, files in os.walk(sys.argv[2]):
    for f in files:
        n += 1
        if any(p in open(os.path.join(root, f), "rb").read() for p in pieces):
            sys.exit(f"found in {os.path.join(root, f)}")
print(f"  no piece of {os.path.basename(sys.argv[1])} in {n} files under {sys.argv[2]}")
PY
}

tags_of() { rcurl -fsS "http://$REG/v2/$1/tags/list" | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["tags"]))'; }

# build_layouts DIR: OCI layouts built offline from Debian's busybox-static:
#   DIR/oci:amd64, DIR/oci:arm64 (a second platform: same binary, different content), DIR/oci:multi (index of both).
build_layouts() {
  local dir=$1
  [ -f "$dir/done" ] && return 0
  need umoci "apt-get install umoci"
  [ -x /bin/busybox ] || fail "/bin/busybox missing (apt-get install busybox-static)"
  rm -rf "$dir"; mkdir -p "$dir"
  umoci init --layout "$dir/oci"
  local arch
  for arch in amd64 arm64; do
    umoci new --image "$dir/oci:$arch"
    umoci unpack --rootless --image "$dir/oci:$arch" "$dir/b-$arch" >/dev/null
    mkdir -p "$dir/b-$arch/rootfs/bin" "$dir/b-$arch/rootfs/etc"
    cp /bin/busybox "$dir/b-$arch/rootfs/bin/busybox"
    ln -sf busybox "$dir/b-$arch/rootfs/bin/sh"
    echo "root:x:0:0:root:/root:/bin/sh" >"$dir/b-$arch/rootfs/etc/passwd"
    echo "built for $arch" >"$dir/b-$arch/rootfs/etc/berth-arch"
    umoci repack --image "$dir/oci:$arch" "$dir/b-$arch" >/dev/null
    umoci config --image "$dir/oci:$arch" --config.cmd=/bin/sh --architecture=$arch --os=linux
    rm -rf "$dir/b-$arch"
  done
  python3 - "$dir/oci" <<'PY'
import hashlib, json, os, sys
lay = sys.argv[1]
idx = json.load(open(os.path.join(lay, "index.json")))
by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
children = []
for arch in ("amd64", "arm64"):
    d = dict(by_tag[arch]); d.pop("annotations", None)
    d["platform"] = {"architecture": arch, "os": "linux"}
    children.append(d)
body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children}).encode()
h = hashlib.sha256(body).hexdigest()
open(os.path.join(lay, "blobs", "sha256", h), "wb").write(body)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + h,
    "size": len(body), "annotations": {"org.opencontainers.image.ref.name": "multi"}})
json.dump(idx, open(os.path.join(lay, "index.json"), "w"))
PY
  touch "$dir/done"
}

# push_signature HOST REPO SUBJECT SIZE [CURL_ARGS...]: pushes a cosign-style signature (an OCI
# artifact manifest with a `subject`) of the index SUBJECT (its digest and size) to http://HOST;
# CURL_ARGS carry credentials. Uploads go POST then PUT, which every registry takes. Prints its digest.
push_signature() {
  local host=$1 repo=$2 subject=$3 size=$4; shift 4
  local dir f d loc code ds=()
  dir=$(mktemp -d "$E2E_WORK/sig.XXXXXX")
  printf '{}' >"$dir/empty.json"; printf 'cosign simple signing payload' >"$dir/payload"
  for f in "$dir/empty.json" "$dir/payload"; do
    d=sha256:$(sha256sum <"$f" | cut -d' ' -f1)
    loc=$(curl -fsS -o /dev/null -D - "$@" -X POST "http://$host/v2/$repo/blobs/uploads/" | tr -d '\r' \
      | awk 'tolower($1)=="location:"{print $2}')
    [ -n "$loc" ] || fail "$host: no upload location"
    case $loc in http*) ;; *) loc=http://$host$loc ;; esac
    case $loc in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
    curl -fsS -o /dev/null "$@" -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$f" "$loc" \
      || fail "$host: signature blob upload"
    ds+=("$d")
  done
  cat >"$dir/sig.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"${ds[0]}","size":2},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"${ds[1]}","size":$(wc -c <"$dir/payload")}],"subject":{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"$subject","size":$size}}
JSON
  d=sha256:$(sha256sum <"$dir/sig.json" | cut -d' ' -f1)
  code=$(curl -s -o /dev/null -w '%{http_code}' "$@" -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$dir/sig.json" "http://$host/v2/$repo/manifests/$d")
  [ "$code" = 201 ] || fail "$host: signature push answered $code"
  echo "$d"
}

# terraform_setup DIR: Terraform takes the AWS provider from this machine's local mirror
# (TF_PROVIDER_MIRROR, else the directory holding registry.terraform.io/hashicorp/aws, not a
# working directory's own .terraform copy); writes DIR/cli.tfrc and exports TF_CLI_CONFIG_FILE.
terraform_setup() {
  need terraform "terraform on the PATH (see ../shared/TESTING-NOTES.md)"
  local mirror
  # `|| true`: find complains about files that vanish while it walks (other tests' scratch files).
  mirror=${TF_PROVIDER_MIRROR:-$( (find / -xdev -type d -path '*/registry.terraform.io/hashicorp/aws' -not -path '*/.terraform/*' 2>/dev/null || true) | head -1)}
  mirror=${mirror%/hashicorp/aws}
  [ -d "$mirror" ] || fail "no Terraform provider mirror (registry.terraform.io/hashicorp/aws) on this machine"
  cat >"$1/cli.tfrc" <<TF
provider_installation {
  filesystem_mirror { path = "$(dirname "$mirror")" include = ["registry.terraform.io/hashicorp/aws"] }
  direct { exclude = ["registry.terraform.io/hashicorp/aws"] }
}
TF
  export TF_CLI_CONFIG_FILE=$1/cli.tfrc TF_IN_AUTOMATION=1
}

# terraform_provider SERVICE...: the provider block for the running server (the root key of
# AWS_SHARED_CREDENTIALS_FILE; endpoints for each SERVICE at http://$REG). The registry-scoped
# resources need the account id: the provider asks IAM GetUser (skip_requesting_account_id = false).
terraform_provider() {
  local akid secret s
  akid=$(awk -F' *= *' '/aws_access_key_id/{print $2}' "$AWS_SHARED_CREDENTIALS_FILE")
  secret=$(awk -F' *= *' '/aws_secret_access_key/{print $2}' "$AWS_SHARED_CREDENTIALS_FILE")
  printf 'provider "aws" {\n  region                      = "us-east-1"\n  access_key                  = "%s"\n' "$akid"
  printf '  secret_key                  = "%s"\n  skip_credentials_validation = true\n' "$secret"
  printf '  skip_metadata_api_check     = true\n  skip_requesting_account_id  = false\n  endpoints {\n'
  for s in "$@"; do printf '    %s = "http://%s"\n' "$s" "$REG"; done
  printf '  }\n}\n'
}
