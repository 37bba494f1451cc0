#!/usr/bin/env bash
# The README's walkthrough, as written: `berth serve` on its defaults in a fresh directory, then
# the "Using it" commands in a second shell in that directory (only the port is changed, since
# 5000 may be taken). Keeps the README honest.
source "$(dirname "$0")/lib.sh"
need aws "pip install awscli"
need skopeo "apt-get install skopeo"
[ -x /bin/busybox ] || fail "/bin/busybox missing (apt-get install busybox-static)"
start_dockerd

W=$E2E_WORK/readme; rm -rf "$W"; mkdir -p "$W/bin"
ln -s "$BERTH" "$W/bin/berth"
export PATH=$W/bin:$PATH
port=$(free_port)
# The commands of the README's first shell block under "## Using it".
python3 - "$ROOT/README.md" >"$W/walkthrough.sh" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
section = text.split("## Using it", 1)[1]
block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
print(block)
PY
grep -q "docker push 127.0.0.1:5000/hello:1" "$W/walkthrough.sh" || fail "the README's walkthrough changed shape: $(cat "$W/walkthrough.sh")"
sed -i "s/127\.0\.0\.1:5000/127.0.0.1:$port/g" "$W/walkthrough.sh"

step "berth serve, as the README's first command starts it (on port $port)"
cd "$W"
berth serve --listen "127.0.0.1:$port" >"$W/serve.log" 2>&1 &
BERTH_PID=$!
trap 'stop_berth; docker rmi -f "127.0.0.1:'"$port"'/hello:1" >/dev/null 2>&1 || true' EXIT
wait_http "http://127.0.0.1:$port/v2/"

step "the walkthrough"
export DOCKER_CONFIG=$W/docker-config REGISTRY_AUTH_FILE=$W/containers-auth.json
unset AWS_SHARED_CREDENTIALS_FILE AWS_ENDPOINT_URL_ECR
bash -euo pipefail -x "$W/walkthrough.sh" >"$W/walkthrough.out" 2>&1 || { tail -30 "$W/walkthrough.out"; fail "the README's commands failed"; }
grep -q "hello from berth" "$W/walkthrough.out" || fail "the pulled image did not run: $(tail "$W/walkthrough.out")"
grep -q '"repositoryName": "hello"' "$W/walkthrough.out" || fail "describe-images did not show the image"
grep -q "Login Succeeded" "$W/walkthrough.out" || fail "skopeo login did not succeed"
grep -q "OK: no problems found" "$W/walkthrough.out" || fail "berth fsck did not pass"
echo "PASS readme"
