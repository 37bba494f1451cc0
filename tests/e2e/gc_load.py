"""Concurrent pushes, pulls and deletes against a registry whose garbage collection runs all the
time. Every client pushes images made of a layer shared by everyone (kept alive by a base image),
a layer of its own and a config; pulls random images and checks their bytes; deletes some of its
older images. A push refused because its blob was collected meanwhile (MANIFEST_BLOB_UNKNOWN,
or 503 while the blob is being deleted) is retried from the start, as a client would.

usage: gc_load.py URL BASIC_AUTH CLIENTS ROUNDS OUT_JSON
"""
import hashlib, http.client, json, random, sys, threading, urllib.parse

url, auth, clients, rounds, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
host = urllib.parse.urlparse(url).netloc
OCI = "application/vnd.oci.image.manifest.v1+json"
SHARED = b"shared layer " * 20000  # 260 KB, in every image


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Client:
    def __init__(self):
        self.c = http.client.HTTPConnection(host, timeout=60)

    def req(self, method, path, body=None, headers=None):
        h = {"Authorization": auth}
        h.update(headers or {})
        for attempt in range(3):
            try:
                self.c.request(method, path, body=body, headers=h)
                r = self.c.getresponse()
                return r.status, r.read(), r
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = http.client.HTTPConnection(host, timeout=60)
        raise RuntimeError("connection failed")

    def blob(self, repo, data):
        d = sha(data)
        st, _, _ = self.req("HEAD", f"/v2/{repo}/blobs/{d}")
        if st == 200:
            return d, "skipped"
        st, body, _ = self.req("POST", f"/v2/{repo}/blobs/uploads/?digest={d}", data)
        if st != 201:
            raise PushError(st, body)
        return d, "uploaded"

    def push(self, repo, tag, layers):
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        descs = []
        for data in layers:
            d, _ = self.blob(repo, data)
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(data)})
        cd, _ = self.blob(repo, config)
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI,
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
                        "layers": descs}).encode()
        st, body, _ = self.req("PUT", f"/v2/{repo}/manifests/{tag}", m, {"Content-Type": OCI})
        if st != 201:
            raise PushError(st, body)
        return sha(m), m


class PushError(Exception):
    def __init__(self, status, body):
        self.status, self.body = status, body[:300]


lock = threading.Lock()
stats = {"pushes": 0, "retried_pushes": 0, "clean_refusals": {}, "pulls": 0, "pull_errors": [], "deletes": 0,
         "unexpected": []}
images = {}  # (repo, tag) -> (digest, layers)


def push_with_retry(cl, repo, tag, layers):
    for attempt in range(20):
        try:
            return cl.push(repo, tag, layers)
        except PushError as e:
            text = e.body.decode(errors="replace")
            clean = (e.status == 400 and "MANIFEST_BLOB_UNKNOWN" in text) or e.status == 503
            with lock:
                if not clean:
                    stats["unexpected"].append(f"{e.status} {text}")
                    return None
                key = f"{e.status} {'MANIFEST_BLOB_UNKNOWN' if e.status == 400 else 'UNAVAILABLE'}"
                stats["clean_refusals"][key] = stats["clean_refusals"].get(key, 0) + 1
                stats["retried_pushes"] += 1
    with lock:
        stats["unexpected"].append(f"push of {repo}:{tag} failed 20 times")
    return None


def pull(cl, repo, tag, want_digest, layers):
    st, m, _ = cl.req("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI})
    if st == 404:
        return  # deleted by its owner meanwhile
    if st != 200 or sha(m) != want_digest:
        stats["pull_errors"].append(f"manifest {repo}:{tag} -> {st}")
        return
    for data in layers:
        st, body, _ = cl.req("GET", f"/v2/{repo}/blobs/{sha(data)}")
        if st != 200 or body != data:
            with lock:
                stats["pull_errors"].append(f"blob of {repo}:{tag} -> {st}")
            return
    with lock:
        stats["pulls"] += 1


def worker(n):
    cl = Client()
    rnd = random.Random(n)
    mine = []
    for i in range(rounds):
        repo = f"gc/client{n}"
        tag = f"r{i}"
        own = f"client {n} round {i} ".encode() * rnd.randint(100, 3000)
        layers = [SHARED, own]
        r = push_with_retry(cl, repo, tag, layers)
        if r:
            with lock:
                stats["pushes"] += 1
                images[(repo, tag)] = (r[0], layers)
            mine.append((repo, tag, r[0]))
        with lock:
            pick = rnd.choice(list(images.items())) if images else None
        if pick:
            (prepo, ptag), (pd, pl) = pick
            pull(cl, prepo, ptag, pd, pl)
        if len(mine) > 3 and rnd.random() < 0.5:
            repo_d, tag_d, dig = mine.pop(0)
            with lock:
                images.pop((repo_d, tag_d), None)
            st, _, _ = cl.req("DELETE", f"/v2/{repo_d}/manifests/{dig}")
            with lock:
                if st == 202:
                    stats["deletes"] += 1
                else:
                    stats["unexpected"].append(f"delete {repo_d}@{dig} -> {st}")


base = Client()
b = push_with_retry(base, "gc/base", "keep", [SHARED])
assert b, "base image"
images[("gc/base", "keep")] = (b[0], [SHARED])
threads = [threading.Thread(target=worker, args=(n,)) for n in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
# Every image that should exist is complete.
final = Client()
for (repo, tag), (d, layers) in list(images.items()):
    pull(final, repo, tag, d, layers)
stats["images_left"] = len(images)
json.dump(stats, open(out, "w"), indent=1)
print(json.dumps(stats))
sys.exit(1 if stats["unexpected"] or stats["pull_errors"] else 0)
