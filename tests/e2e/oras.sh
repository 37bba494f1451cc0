#!/usr/bin/env bash
# oras (PyPI): push an artifact (monolithic and chunked), attach a referrer, pull, list tags, delete.
source "$(dirname "$0")/lib.sh"
python3 -c 'import oras' 2>/dev/null || fail "python oras missing (pip install oras)"
start_berth oras
W=$E2E_WORK/oras; rm -rf "$W"; mkdir -p "$W/in" "$W/out"
head -c 200000 /dev/urandom >"$W/in/model.bin"
echo "release notes" >"$W/in/notes.txt"
REG=$REG W=$W python3 - <<'PY'
import os, sys, hashlib, json, requests
import oras.client
reg, w = os.environ["REG"], os.environ["W"]
# oras's default "token" backend asks for a token for its first scope and reuses it for every
# later request (pushes too): Berth decides each request by the caller's policies, not by the
# token's scope, so that works (E2E_ORAS_BACKEND=basic sends the login on every request instead).
backend = os.environ.get("E2E_ORAS_BACKEND", "token")
c = oras.client.OrasClient(hostname=reg, insecure=True, auth_backend=backend) if backend != "token" \
    else oras.client.OrasClient(hostname=reg, insecure=True)
c.login(username="AWS", password=os.environ["BERTH_PASSWORD"], hostname=reg, tls_verify=False)
auth = {"Authorization": os.environ["BERTH_BASIC"]}
os.chdir(w + "/in")
def check(cond, msg):
    if not cond:
        print("FAIL:", msg); sys.exit(1)
r = c.push(files=["model.bin", "notes.txt"], target=f"{reg}/e2e/oras:v1")
check(r.status_code == 201, f"push: {r.status_code}")
r = c.push(files=["model.bin"], target=f"{reg}/e2e/oras:chunked", do_chunked=True, chunk_size=65536)
check(r.status_code == 201, f"chunked push: {r.status_code}")
check(sorted(c.get_tags(f"{reg}/e2e/oras")) == ["chunked", "v1"], "tags")
files = c.pull(target=f"{reg}/e2e/oras:v1", outdir=w + "/out")
for f in ("model.bin", "notes.txt"):
    a = open(f"{w}/in/{f}", "rb").read(); b = open(f"{w}/out/{f}", "rb").read()
    check(a == b, f"{f} differs after pull")
# A referrer (subject) and the referrers API.
m = requests.get(f"http://{reg}/v2/e2e/oras/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json", **auth})
subject = m.headers["Docker-Content-Digest"]
import oras.oci
subj = oras.oci.Subject(mediaType=m.headers["Content-Type"], digest=subject, size=len(m.content))
r = c.push(files=["notes.txt"], target=f"{reg}/e2e/oras:sig", subject=subj)
check(r.status_code == 201 and r.headers.get("OCI-Subject") == subject, f"referrer push: {r.status_code} {r.headers}")
idx = requests.get(f"http://{reg}/v2/e2e/oras/referrers/{subject}", headers=auth).json()
check(len(idx["manifests"]) == 1, f"referrers: {idx}")
c.delete_tag(f"{reg}/e2e/oras", "chunked")
check(sorted(c.get_tags(f"{reg}/e2e/oras")) == ["sig", "v1"], "tags after delete")
print("oras checks passed")
PY
fsck_clean
echo "PASS oras"
