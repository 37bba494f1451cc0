#!/usr/bin/env python3
"""Writes an OCI image layout from directories, one layer each, for skopeo to push.

    oci_image.py OUT TAG [--os-arch linux/amd64] gz:DIR zstd:DIR tar:DIR ...

An image written to an existing layout joins the others there (replacing one of the same tag). Each DIR is archived with GNU tar (numeric owners, sorted names) and compressed as named; whiteout
files (`.wh.NAME`) are ordinary files in DIR, as in any layer."""
import gzip, hashlib, json, os, subprocess, sys

def blob(out, data, media):
    d = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{out}/blobs/sha256", exist_ok=True)
    with open(f"{out}/blobs/sha256/{d}", "wb") as f:
        f.write(data)
    return {"mediaType": media, "digest": f"sha256:{d}", "size": len(data)}

def main():
    out, tag, specs = sys.argv[1], sys.argv[2], sys.argv[3:]
    os_name, arch = "linux", "amd64"
    if specs[:1] == ["--os-arch"]:
        os_name, arch = specs[1].split("/", 1)
        specs = specs[2:]
    layers, diff_ids = [], []
    for spec in specs:
        kind, path = spec.split(":", 1)
        raw = subprocess.run(["tar", "--numeric-owner", "--sort=name", "--exclude=./var/cache/apt/archives/*.deb",
                              "-C", path, "-cf", "-", "."],
                             check=True, stdout=subprocess.PIPE).stdout
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        if kind == "gz":
            layers.append(blob(out, gzip.compress(raw, 6, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"))
        elif kind == "zstd":
            z = subprocess.run(["zstd", "-q", "-c", "-3"], input=raw, check=True, stdout=subprocess.PIPE).stdout
            layers.append(blob(out, z, "application/vnd.oci.image.layer.v1.tar+zstd"))
        elif kind == "tar":
            layers.append(blob(out, raw, "application/vnd.oci.image.layer.v1.tar"))
        else:
            sys.exit(f"unknown layer kind {kind}")
    config = {"architecture": arch, "os": os_name,
              "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    cfg = blob(out, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cfg, "layers": layers}
    m = blob(out, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {"org.opencontainers.image.ref.name": tag}
    others = []
    if os.path.exists(f"{out}/index.json"):
        others = [x for x in json.load(open(f"{out}/index.json"))["manifests"]
                  if x.get("annotations", {}).get("org.opencontainers.image.ref.name") != tag]
    with open(f"{out}/index.json", "w") as f:
        json.dump({"schemaVersion": 2, "manifests": others + [m]}, f)
    with open(f"{out}/oci-layout", "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    print(m["digest"])

main()
