#!/usr/bin/env bash
# Crash safety: kill -9 the server at random moments while clients upload blobs (streamed,
# chunked, monolithic) and push manifests; after every restart `berth fsck` must find every
# stored blob intact and no tag pointing at an incomplete image, and pushes must work again.
source "$(dirname "$0")/lib.sh"
ROUNDS=${CRASH_ROUNDS:-12}
start_berth crash
DRIVER=$E2E_WORK/crash-driver.py
cat >"$DRIVER" <<'PY'
# Pushes images forever (until killed); connection errors from the dying server are expected.
import hashlib, json, os, random, sys, threading, requests
reg, seed = sys.argv[1], int(sys.argv[2])
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def blob(s, repo, data, mode):
    d = sha(data)
    if mode == "mono":
        s.post(f"http://{reg}/v2/{repo}/blobs/uploads/?digest={d}", data=data, timeout=30).raise_for_status()
        return d
    loc = s.post(f"http://{reg}/v2/{repo}/blobs/uploads/", timeout=30).headers["Location"]
    step = len(data) // 4 + 1
    for i in range(0, len(data), step):
        h = {"Content-Range": f"{i}-{min(i+step, len(data))-1}"} if mode == "chunked" else {}
        r = s.patch(f"http://{reg}{loc}", data=data[i:i+step], headers=h, timeout=30)
        r.raise_for_status(); loc = r.headers["Location"]
    s.put(f"http://{reg}{loc}{'&' if '?' in loc else '?'}digest={d}", timeout=30).raise_for_status()
    return d
def worker(n):
    rnd = random.Random(seed * 100 + n); s = requests.Session(); i = 0
    s.headers["Authorization"] = os.environ["BERTH_BASIC"]
    while True:
        i += 1
        try:
            repo = f"crash/r{n}"
            layer = rnd.randbytes(rnd.choice([1000, 300_000, 8_000_000]))
            cfg = json.dumps({"seed": seed, "n": n, "i": i}).encode()
            mode = rnd.choice(["mono", "stream", "chunked"])
            ld, cd = blob(s, repo, layer, mode), blob(s, repo, cfg, "mono")
            m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": len(layer)}]}).encode()
            s.put(f"http://{reg}/v2/{repo}/manifests/t{i % 5}", data=m,
                  headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=30).raise_for_status()
        except Exception:
            pass
for n in range(4):
    threading.Thread(target=worker, args=(n,), daemon=True).start()
threading.Event().wait()
PY

for round in $(seq 1 "$ROUNDS"); do
  python3 "$DRIVER" "$REG" "$round" >/dev/null 2>&1 &
  DPID=$!
  sleep "0.$((RANDOM % 9 + 1))$((RANDOM % 10))"
  kill -9 "$BERTH_PID"; wait "$BERTH_PID" 2>/dev/null || true
  kill "$DPID"; wait "$DPID" 2>/dev/null || true
  fsck_clean
  blobs=$(grep -o 'checked [0-9]* blobs' "$E2E_WORK/fsck.out")
  step "round $round: killed mid-push; fsck clean ($blobs)"
  "$BERTH" serve --listen "$REG" --data-dir "$BERTH_DATA" "${BERTH_DB_ARGS[@]}" >>"$E2E_WORK/crash.log" 2>&1 &
  BERTH_PID=$!
  wait_http "http://$REG/v2/"
done

step "every tag resolves to a complete image whose blobs match their digests"
python3 - "$REG" <<'PY'
import hashlib, json, os, sys, requests
reg = sys.argv[1]; total = 0
S = requests.Session(); S.headers["Authorization"] = os.environ["BERTH_BASIC"]
for repo in S.get(f"http://{reg}/v2/_catalog").json()["repositories"]:
    for tag in S.get(f"http://{reg}/v2/{repo}/tags/list").json()["tags"]:
        m = S.get(f"http://{reg}/v2/{repo}/manifests/{tag}").json()
        for d in [m["config"]] + m["layers"]:
            b = S.get(f"http://{reg}/v2/{repo}/blobs/{d['digest']}").content
            assert "sha256:" + hashlib.sha256(b).hexdigest() == d["digest"] and len(b) == d["size"], (repo, tag, d)
        total += 1
assert total > 0, "no image was completed in any round: the test proved nothing"
print(f"{total} tagged images verified")
# Pushing works again after the crashes.
data = b"after the crashes"; d = "sha256:" + hashlib.sha256(data).hexdigest()
r = S.post(f"http://{reg}/v2/crash/after/blobs/uploads/?digest={d}", data=data)
assert r.status_code == 201, r.text
assert S.get(f"http://{reg}/v2/crash/after/blobs/{d}").content == data
PY
fsck_clean
echo "PASS crash"
