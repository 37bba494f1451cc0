#!/usr/bin/env python3
"""Pushes small OCI images as a client would (each blob in one upload, then the manifest):

    push_image.py HOST AUTH REPO TAG... [--random-mib N]

AUTH is the Authorization header's value. One image per tag, each its own config and one layer
(text naming the image, or N MiB of random bytes). Prints each manifest's digest, in tag order.
"""
import argparse, hashlib, json, os, urllib.request

p = argparse.ArgumentParser()
p.add_argument("host"); p.add_argument("auth"); p.add_argument("repo"); p.add_argument("tags", nargs="+")
p.add_argument("--random-mib", type=int, default=0)
a = p.parse_args()


def req(method, path, body=b"", ctype=None):
    r = urllib.request.Request(f"http://{a.host}{path}", data=body, method=method, headers={"Authorization": a.auth})
    if ctype:
        r.add_header("Content-Type", ctype)
    return urllib.request.urlopen(r)


for n, tag in enumerate(a.tags):
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": n, "image": f"{a.repo}:{tag}"}).encode()
    layer = os.urandom(a.random_mib << 20) if a.random_mib else f"layer of {a.repo}:{tag}\n".encode() * 50
    ds = []
    for b in (config, layer):
        d = "sha256:" + hashlib.sha256(b).hexdigest()
        ds.append((d, len(b)))
        req("POST", f"/v2/{a.repo}/blobs/uploads/?digest={d}", b)
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": ds[0][0], "size": ds[0][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ds[1][0], "size": ds[1][1]}]}).encode()
    req("PUT", f"/v2/{a.repo}/manifests/{tag}", m, "application/vnd.oci.image.manifest.v1+json")
    print("sha256:" + hashlib.sha256(m).hexdigest(), flush=True)
