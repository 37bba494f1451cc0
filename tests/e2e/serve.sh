#!/usr/bin/env bash
# The `berth` command itself: help texts, the start-up banner, configuration layers, and a
# SIGTERM that lets a request in flight finish before the server exits.
source "$(dirname "$0")/lib.sh"

step "--help explains every option"
"$BERTH" --help | grep -q "serve" || fail "berth --help does not list serve"
help=$("$BERTH" serve --help)
for opt in --config --listen --data-dir --database-url --log BERTH_LISTEN BERTH_DATA_DIR; do
  grep -q -- "$opt" <<<"$help" || fail "berth serve --help does not mention $opt"
done

step "configuration: TOML file, then BERTH_* environment, then flags"
C=$E2E_WORK/serve-config; rm -rf "$C"; mkdir -p "$C"
p1=$(free_port); p2=$(free_port)
printf 'listen = "127.0.0.1:%s"\ndata_dir = "%s/from-file"\n' "$p1" "$C" >"$C/berth.toml"
BERTH_DATA_DIR=$C/from-env "$BERTH" serve --config "$C/berth.toml" >"$C/out" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$p1/v2/"
grep -q "listening on    http://127.0.0.1:$p1" "$C/out" || fail "banner lacks the address: $(cat "$C/out")"
grep -q "$C/from-env" "$C/out" || fail "BERTH_DATA_DIR did not override the file"
grep -q "docker push 127.0.0.1:$p1/hello:1" "$C/out" || fail "banner lacks the example"
grep -q "authentication required" "$C/out" || fail "banner does not say authentication is required"
grep -q "export AWS_SECRET_ACCESS_KEY=" "$C/out" || fail "first start does not show the new root key"
secret=$(sed -n 's/.*export AWS_SECRET_ACCESS_KEY=//p' "$C/out")
[ "$(stat -c %a "$C/from-env/root-credentials")" = 600 ] || fail "root-credentials is not mode 0600"
grep -qF "$secret" "$C/from-env/root-credentials" || fail "the printed secret is not the saved one"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p1/v2/")
[ "$code" = 401 ] || fail "/v2/ without credentials answered $code, not 401"
curl -sI "http://127.0.0.1:$p1/v2/" | grep -qi '^www-authenticate: Bearer realm="http://127.0.0.1:'"$p1"'/token"' || fail "no Bearer challenge"
kill -TERM $pid; wait $pid || fail "exit status after SIGTERM: $?"
[ -f "$C/from-env/berth.db" ] || fail "no database in the data directory"
BERTH_DATA_DIR=$C/from-env "$BERTH" serve --config "$C/berth.toml" >"$C/out-again" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$p1/v2/"
grep -q "AWS_SECRET_ACCESS_KEY" "$C/out-again" && fail "a restart prints the secret again"
grep -q "root access key AKIA" "$C/out-again" || fail "a restart does not name the key: $(cat "$C/out-again")"
kill -TERM $pid; wait $pid

step "root key from the environment; anonymous mode says so"
BERTH_ROOT_ACCESS_KEY_ID=AKIAENVIRONMENTKEY01 BERTH_ROOT_SECRET_ACCESS_KEY=environment-secret-0123456789 \
  BERTH_ALLOW_ANONYMOUS=true "$BERTH" serve --listen "127.0.0.1:$p2" --data-dir "$C/env-key" >"$C/out-env" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$p2/v2/"
grep -q "root access key AKIAENVIRONMENTKEY01 (from BERTH_ROOT_ACCESS_KEY_ID)" "$C/out-env" || fail "env key not used: $(cat "$C/out-env")"
[ ! -e "$C/env-key/root-credentials" ] || fail "a key file was written although the key came from the environment"
grep -q "ANONYMOUS" "$C/out-env" || fail "the banner does not warn about anonymous access"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p2/v2/")
[ "$code" = 200 ] || fail "anonymous /v2/ answered $code"
kill -TERM $pid; wait $pid
"$BERTH" serve --config "$C/berth.toml" --listen "127.0.0.1:$p2" >"$C/out2" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$p2/v2/"
kill -TERM $pid; wait $pid
printf 'lisen = "x"\n' >"$C/bad.toml"
"$BERTH" serve --config "$C/bad.toml" >"$C/bad" 2>&1 && fail "a misspelt key was accepted"
grep -q "lisen" "$C/bad" || fail "the error does not name the bad key: $(cat "$C/bad")"

step "SIGTERM drains a request in flight"
start_berth serve
python3 - "$REG" "$BERTH_PID" <<'PY'
import hashlib, http.client, os, signal, sys, time
reg, pid = sys.argv[1], int(sys.argv[2])
data = os.urandom(4 << 20)
d = "sha256:" + hashlib.sha256(data).hexdigest()
host, port = reg.split(":")
c = http.client.HTTPConnection(host, int(port))
def slow():
    for i in range(0, len(data), 1 << 19):
        if i == 1 << 20:
            os.kill(pid, signal.SIGTERM)   # mid-body
        time.sleep(0.15)
        yield data[i:i + (1 << 19)]
c.request("POST", f"/v2/drain/blobs/uploads/?digest={d}", body=slow(), encode_chunked=True,
          headers={"Authorization": os.environ["BERTH_BASIC"]})
r = c.getresponse()
assert r.status == 201, f"upload in flight got {r.status} after SIGTERM"
print("upload in flight completed after SIGTERM")
PY
wait "$BERTH_PID"; rc=$?
[ $rc = 0 ] || fail "server exit status $rc after draining"
grep -q "shutting down" "$E2E_WORK/serve.log" || fail "no shutdown message"
"$BERTH" fsck --data-dir "$BERTH_DATA" | grep -q "checked 1 blobs" || fail "the drained upload was not stored"
echo "PASS serve"
