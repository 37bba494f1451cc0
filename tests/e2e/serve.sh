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
# Standard output is a file here, not a terminal: the secret is not printed, only where it is.
grep -q "AWS_SECRET_ACCESS_KEY" "$C/out" && fail "the secret was printed to a file (not a terminal)"
grep -q "saved in $C/from-env/root-credentials" "$C/out" || fail "the banner does not say where the key was saved: $(cat "$C/out")"
secret=$(sed -n 's/^aws_secret_access_key = //p' "$C/from-env/root-credentials")
[ -n "$secret" ] || fail "root-credentials holds no secret"
grep -qF "$secret" "$C/out" && fail "the banner shows the secret"
[ "$(stat -c %a "$C/from-env/root-credentials")" = 600 ] || fail "root-credentials is not mode 0600"
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

step "a first start on a terminal shows the new secret once"
need script "apt-get install bsdutils"
p3=$(free_port)
( cd "$C" && timeout 20 script -qefc "$BERTH serve --listen 127.0.0.1:$p3 --data-dir $C/tty" "$C/tty.out" >/dev/null ) &
tpid=$!
wait_http "http://127.0.0.1:$p3/v2/"
for _ in $(seq 1 50); do grep -q "Try it" "$C/tty.out" 2>/dev/null && break; sleep 0.1; done
pkill -TERM -f "listen 127.0.0.1:$p3" || true; wait $tpid 2>/dev/null || true
tsecret=$(sed -n 's/^aws_secret_access_key = //p' "$C/tty/root-credentials")
grep -qF "export AWS_SECRET_ACCESS_KEY=$tsecret" "$C/tty.out" || fail "a terminal did not get the new secret: $(cat "$C/tty.out")"

step "file modes: data directory 0700, everything in it 0600, whatever the umask"
[ "$(stat -c %a "$C/from-env")" = 700 ] || fail "the data directory is $(stat -c %a "$C/from-env"), not 700"
for f in berth.db secrets.key root-credentials; do
  [ "$(stat -c %a "$C/from-env/$f")" = 600 ] || fail "$f is $(stat -c %a "$C/from-env/$f"), not 600"
done
# An older data directory left 0755 is tightened at start.
chmod 755 "$C/from-env"; chmod 644 "$C/from-env/berth.db"
umask 022
BERTH_DATA_DIR=$C/from-env "$BERTH" fsck --config "$C/berth.toml" >/dev/null || fail "fsck of the data directory failed"
[ "$(stat -c %a "$C/from-env")" = 700 ] || fail "a 0755 data directory was not tightened"
[ "$(stat -c %a "$C/from-env/berth.db")" = 600 ] || fail "a 0644 database was not tightened"
# A secrets key others can read is refused, with a message that says what to do.
chmod 644 "$C/from-env/secrets.key"
BERTH_DATA_DIR=$C/from-env "$BERTH" serve --config "$C/berth.toml" >"$C/out-key" 2>&1 && fail "started with a world-readable secrets key"
grep -q "secrets.key is readable by other users (mode 0644)" "$C/out-key" || fail "unclear refusal: $(cat "$C/out-key")"
grep -q "chmod 600" "$C/out-key" || fail "the refusal does not say how to fix it"
chmod 600 "$C/from-env/secrets.key"
umask 077

step "the CLI fails loudly on what is not there"
"$BERTH" fsck --data-dir "$C/no-such-dir" >"$C/out-nodir" 2>&1 && fail "fsck of a missing data directory succeeded"
[ -e "$C/no-such-dir" ] && fail "fsck created the missing data directory"
grep -q "there is no data directory at $C/no-such-dir" "$C/out-nodir" || fail "unclear: $(cat "$C/out-nodir")"
"$BERTH" vulndb import "$C/missing.zip" --data-dir "$C/from-env" >"$C/out-vdb" 2>&1 && fail "importing a missing file succeeded"
grep -q "missing.zip" "$C/out-vdb" || fail "the import error does not name the file: $(cat "$C/out-vdb")"
mkdir -p "$C/empty-osv"
"$BERTH" vulndb import "$C/empty-osv" --data-dir "$C/from-env" >"$C/out-vdb2" 2>&1 && fail "importing an empty directory succeeded"
"$BERTH" lifecycle run --repository nosuch --data-dir "$C/from-env" >"$C/out-lc" 2>&1 && fail "a lifecycle run of a missing repository succeeded"
grep -qi "nosuch" "$C/out-lc" || fail "unclear: $(cat "$C/out-lc")"
"$BERTH" get-login-password --data-dir "$C/no-such-dir" >/dev/null 2>&1 && fail "get-login-password without a data directory succeeded"

step "metrics: open by default, on their own listener with metrics_listen"
pm=$(free_port); pa=$(free_port)
BERTH_METRICS_LISTEN=127.0.0.1:$pm BERTH_METRICS_AUTH=true "$BERTH" serve --listen "127.0.0.1:$pa" --data-dir "$C/metrics" >"$C/out-metrics" 2>&1 &
pid=$!
wait_http "http://127.0.0.1:$pa/v2/"; wait_http "http://127.0.0.1:$pm/metrics"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pa/metrics")
[ "$code" = 404 ] || fail "/metrics on the main listener answered $code with metrics_listen set"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pm/metrics")
[ "$code" = 401 ] || fail "/metrics with metrics_auth answered $code without credentials"
mkey=$(sed -n 's/^aws_access_key_id = //p' "$C/metrics/root-credentials")
msec=$(sed -n 's/^aws_secret_access_key = //p' "$C/metrics/root-credentials")
# Read whole, then searched: `grep -q` quitting early would fail curl's write (pipefail).
body=$(curl -sf -u "$mkey:$msec" "http://127.0.0.1:$pm/metrics") || fail "/metrics with an access key as Basic credentials did not answer"
grep -q "^# TYPE berth_gc_runs_total counter" <<<"$body" || fail "/metrics with an access key: $(head -c 300 <<<"$body")"
grep -q "metrics         http://127.0.0.1:$pm/metrics (credentials required)" "$C/out-metrics" || fail "the banner does not say where metrics are"
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

step "berth keys rotate-token-key: passwords issued before stop working"
start_berth serve-rotate
code=$(rcurl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")
[ "$code" = 200 ] || fail "the login password does not work ($code)"
"$BERTH" keys rotate-token-key --data-dir "$BERTH_DATA" | grep -q "rotated the token-signing key" || fail "no rotation message"
ok=""
for _ in $(seq 1 120); do   # servers look every 5 s; patience for a loaded machine
  code=$(rcurl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")
  [ "$code" = 401 ] && { ok=1; break; }
  sleep 0.25
done
[ -n "$ok" ] || fail "a password from before the rotation still works after 30 s"
login_berth
code=$(rcurl -s -o /dev/null -w '%{http_code}' "http://$REG/v2/")
[ "$code" = 200 ] || fail "a new password after the rotation does not work ($code)"
python3 - "$BERTH_DATA/berth.db" <<'PY' || fail "the token key is stored in the clear"
import sqlite3, sys
v = sqlite3.connect(sys.argv[1]).execute("SELECT value FROM settings WHERE name = 'token_key'").fetchone()[0]
assert v.startswith("s1:"), v
PY
echo "PASS serve"
