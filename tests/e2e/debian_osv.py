#!/usr/bin/env python3
"""OSV records with real vulnerability facts, offline-built from Debian changelogs.

    debian_osv.py ROOTFS OUT_DIR DEB_DIR > expected.json

Every installed package's changelog.Debian.gz (in ROOTFS) names the CVEs fixed in each version:
those fixed at or before the installed version are records the scanner must NEVER report. For
each package with a newer version in the machine's apt sources (bookworm-security), that version
is downloaded (apt-get download) and its changelog read: CVEs fixed after the installed version
are true findings, with the first version fixing them. Prints the expected findings as JSON:
{"findings": [[cve, binary package, installed version, fixed], ...], "negative": N, ...}."""
import gzip, json, os, re, subprocess, sys

rootfs, out, debs = sys.argv[1:4]
os.makedirs(out, exist_ok=True)
os.makedirs(debs, exist_ok=True)
release = re.search(r'^VERSION_ID="?(\d+)', open(f"{rootfs}/etc/os-release").read(), re.M).group(1)
eco = f"Debian:{release}"

def newer(a, b):
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0

rows = subprocess.run(["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W",
                       "-f=${Package}\t${Version}\t${source:Package}\t${source:Version}\t${db:Status-Abbrev}\n"],
                      check=True, capture_output=True, text=True).stdout.splitlines()
installed = [r.split("\t") for r in rows if r.split("\t")[4].startswith("ii")]
by_source = {}
for pkg, ver, src, srcver, _ in installed:
    by_source.setdefault((src, srcver), []).append((pkg, ver))

HEADER = re.compile(r"^(\S+) \(([^)]+)\) [^;]*;")
CVE = re.compile(r"CVE-\d{4}-\d{4,}")

def entries(text):
    """(version, set of CVEs) per changelog entry."""
    out, cur = [], None
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            cur = (m.group(2), set())
            out.append(cur)
        elif cur is not None:
            cur[1].update(CVE.findall(line))
    return out

def changelog_in(root, pkg):
    for name in ("changelog.Debian.gz", "changelog.gz"):
        p = f"{root}/usr/share/doc/{pkg}/{name}"
        # Doc directories may be symlinks to a sibling package's (inside the rootfs).
        d = f"{root}/usr/share/doc/{pkg}"
        if os.path.islink(d):
            p = f"{root}/usr/share/doc/{os.path.basename(os.readlink(d))}/{name}"
        if os.path.exists(p):
            return gzip.open(p, "rt", errors="replace").read()
    return None

def apt_versions(pkg):
    r = subprocess.run(["apt-cache", "madison", pkg], capture_output=True, text=True).stdout
    return [l.split("|")[1].strip() for l in r.splitlines() if "|" in l]

records, expected, negative, newer_versions = {}, [], 0, {}
for (src, srcver), bins in sorted(by_source.items()):
    old = next((c for c in (changelog_in(rootfs, b) for b, _ in bins) if c), None)
    fixed_before = {}
    for v, cves in entries(old or ""):
        if not newer(v, srcver):
            for c in cves:
                fixed_before.setdefault(c, v)  # newest entry naming it first
    # The newest version of any of its binaries in the apt sources.
    best = None
    for b, bver in bins:
        for v in apt_versions(b):
            if newer(v, bver) and (best is None or newer(v, best[1])):
                best = (b, v)
    fixed_after = {}
    if best:
        b, v = best
        subprocess.run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", f"{b}={v}"],
                       cwd=debs, check=True)
        deb = next(f for f in os.listdir(debs) if f.startswith(f"{b}_") and f.endswith(".deb")
                   and v.split(":")[-1].replace(":", "%3a") in f)
        x = f"{debs}/x-{b}"
        os.makedirs(x, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", f"{debs}/{deb}", x], check=True)
        text = changelog_in(x, b) or ""
        # Oldest entry after the installed version naming each CVE: the first fixed version.
        for ev, cves in reversed(entries(text)):
            if newer(ev, srcver):
                for c in cves:
                    fixed_after.setdefault(c, ev)
        newer_versions[src] = (srcver, v)
    for cve, fix in sorted(fixed_after.items()):
        records[(cve, src)] = fix
        for b, bver in bins:
            expected.append([cve, b, bver, fix])
    for cve, fix in sorted(fixed_before.items()):
        if cve not in fixed_after:
            records[(cve, src)] = fix
            negative += 1

for (cve, src), fix in records.items():
    r = {"id": cve, "modified": "2026-11-01T00:00:00Z", "published": "2026-11-01T00:00:00Z",
         "affected": [{"package": {"ecosystem": eco, "name": src},
                       "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fix}]}]}]}
    with open(f"{out}/{cve}-{src}.json", "w") as f:
        json.dump(r, f)
json.dump({"findings": sorted(expected), "negative": negative, "records": len(records),
           "packages": len(installed), "newer": newer_versions}, sys.stdout, indent=1)
